-- Reads an agent made through the trading API (`POST /v1/trading/{venue}`), listed with the
-- wallet's transfers as `trading_query`. No money moves: a query is recorded so that what an
-- agent asked of a venue, and when, shows in its wallet's history.
CREATE TABLE trading_queries (
    id TEXT PRIMARY KEY,
    wallet_id TEXT NOT NULL REFERENCES wallets (id),
    agent_id TEXT NOT NULL REFERENCES agents (id),
    -- hyperliquid
    venue TEXT NOT NULL,
    -- status | positions | orders | fills | markets | funding | ticker | orderbook
    action TEXT NOT NULL,
    -- The market asked about, when the action names one.
    symbol TEXT,
    request_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX trading_queries_by_wallet ON trading_queries (wallet_id, created_at);
