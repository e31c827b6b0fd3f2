-- Money reserved by open holds. balance_micros is what can still be spent.
ALTER TABLE accounts ADD COLUMN held_micros BIGINT NOT NULL DEFAULT 0 CHECK (held_micros >= 0);

-- A platform-wide daily spending limit over all its agents (NULL: none).
ALTER TABLE platforms ADD COLUMN daily_limit_micros BIGINT CHECK (daily_limit_micros >= 0);

-- Authorisations: reserve the most a call can cost, then capture what it did cost.
CREATE TABLE holds (
    id TEXT PRIMARY KEY NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    amount_micros BIGINT NOT NULL CHECK (amount_micros > 0),
    captured_micros BIGINT CHECK (captured_micros >= 0),
    status TEXT NOT NULL CHECK (status IN ('open', 'captured', 'released', 'expired')),
    reference TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    settled_at BIGINT
);
CREATE INDEX holds_by_status_expiry ON holds (status, expires_at);
CREATE INDEX holds_by_account_status ON holds (account_id, status);

-- Stored results of requests sent with an Idempotency-Key, written in the same
-- transaction as the money they moved.
CREATE TABLE idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code INTEGER NOT NULL,
    response_body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (created_at);

ALTER TABLE usage_events ADD COLUMN description TEXT;

-- Spending windows sum an account's charges by time.
CREATE INDEX journal_entries_by_account_kind_time ON journal_entries (account_id, kind, created_at);
