-- Every agent's wallet: one EVM key (the same address on every EVM chain) and one Solana
-- key, both sealed with AES-256-GCM under AIBANK_SECRET_KEY and bound to the wallet id.
-- Private keys never leave the server in any form.
CREATE TABLE wallets (
    id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL UNIQUE REFERENCES agents (id),
    name TEXT NOT NULL,
    -- EIP-55 checksummed.
    evm_address TEXT NOT NULL UNIQUE,
    -- base58 of the ed25519 public key.
    solana_address TEXT NOT NULL UNIQUE,
    evm_key_sealed TEXT NOT NULL,
    solana_key_sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Recipients a wallet may send to; a wallet without entries may send anywhere.
CREATE TABLE wallet_allowlist (
    wallet_id TEXT NOT NULL REFERENCES wallets (id),
    -- Lower-case 0x-hex.
    address TEXT NOT NULL,
    label TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (wallet_id, address)
);

-- The next nonce this server hands out per wallet and chain; allocated under the row's
-- lock so concurrent transfers (on any instance) never share one.
CREATE TABLE wallet_nonces (
    wallet_id TEXT NOT NULL REFERENCES wallets (id),
    chain TEXT NOT NULL,
    next_nonce BIGINT NOT NULL,
    PRIMARY KEY (wallet_id, chain)
);

-- Outgoing transfers. A row is written before anything is signed; it counts against the
-- agent's spending limits unless its status is `failed`.
CREATE TABLE wallet_transfers (
    id TEXT PRIMARY KEY,
    wallet_id TEXT NOT NULL REFERENCES wallets (id),
    agent_id TEXT NOT NULL REFERENCES agents (id),
    chain TEXT NOT NULL,
    from_address TEXT NOT NULL,
    to_address TEXT NOT NULL,
    currency TEXT NOT NULL,
    -- As requested (decimal string) and in the token's base units (decimal string).
    amount TEXT NOT NULL,
    amount_base TEXT NOT NULL,
    usd_micros BIGINT NOT NULL CHECK (usd_micros >= 0),
    nonce BIGINT,
    tx_hash TEXT,
    -- sending | pending | confirmed | failed
    status TEXT NOT NULL,
    error TEXT,
    block_number BIGINT,
    idempotency_key TEXT,
    request_hash TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX wallet_transfers_by_wallet ON wallet_transfers (wallet_id, created_at);
CREATE INDEX wallet_transfers_by_agent ON wallet_transfers (agent_id, created_at);
CREATE UNIQUE INDEX wallet_transfers_idempotency ON wallet_transfers (agent_id, idempotency_key);

-- The human claim flow: a code per agent, shown as verificationUri, and who claimed it.
CREATE TABLE agent_claims (
    agent_id TEXT PRIMARY KEY REFERENCES agents (id),
    code TEXT NOT NULL UNIQUE,
    expires_at BIGINT NOT NULL,
    claimed_at BIGINT,
    claimed_email TEXT,
    claimed_platform_id TEXT REFERENCES platforms (id)
);
