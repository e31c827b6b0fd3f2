-- EIP-3009 authorizations (x402's `exact` scheme) this server took: one row per
-- (chain, payer, nonce), inserted before the settlement is sent, so an authorization is
-- settled once and pays for one call once, however often and however concurrently it is
-- presented, on every instance sharing the database.
CREATE TABLE x402_authorizations (
    chain TEXT NOT NULL,
    -- The payer's address, lower-case hex without 0x.
    payer TEXT NOT NULL,
    -- The authorization's nonce, lower-case hex without 0x.
    nonce TEXT NOT NULL,
    -- USDC base units, which are micro-USD.
    value_micros BIGINT NOT NULL CHECK (value_micros > 0),
    -- Unix seconds; past it the authorization can no longer be settled.
    valid_before BIGINT NOT NULL,
    -- settling: the settlement is signed and sent or about to be; settled: it was mined
    -- and succeeded; failed: it reverted, or could no longer be mined.
    status TEXT NOT NULL CHECK (status IN ('settling', 'settled', 'failed')),
    -- The settlement transaction: its nonce on the settlement account, hash and signed
    -- bytes (hex), kept to send it again.
    settle_nonce BIGINT,
    tx_hash TEXT,
    raw_tx TEXT,
    resource TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (chain, payer, nonce)
);
CREATE INDEX x402_authorizations_by_tx ON x402_authorizations (tx_hash);

-- One row per settlement account and chain, locked while a settlement's nonce is chosen,
-- so instances sharing the database never give two settlements the same nonce.
CREATE TABLE x402_settler_nonces (
    chain TEXT NOT NULL,
    address TEXT NOT NULL,
    PRIMARY KEY (chain, address)
);
