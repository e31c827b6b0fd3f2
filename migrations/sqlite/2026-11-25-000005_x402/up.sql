-- x402 payments: one row per accepted on-chain USDC transfer. The primary key is the
-- used-hash registry: a transaction hash pays for one call, once, on each chain.
CREATE TABLE x402_payments (
    chain TEXT NOT NULL,
    tx_hash TEXT NOT NULL,
    payer TEXT NOT NULL,
    -- The payer's credit account (an agent row without keys).
    account_id TEXT NOT NULL REFERENCES agents (id),
    -- USDC base units, which are micro-USD.
    amount_micros BIGINT NOT NULL CHECK (amount_micros > 0),
    -- What the call cost; the rest stays as credit in the payer's account.
    cost_micros BIGINT NOT NULL DEFAULT 0,
    block_number BIGINT NOT NULL,
    resource TEXT NOT NULL,
    request_id TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (chain, tx_hash)
);
CREATE INDEX x402_payments_by_hash ON x402_payments (tx_hash);
