-- Platforms own fleets of agents; every master key belongs to exactly one platform.
CREATE TABLE platforms (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE master_keys (
    id TEXT PRIMARY KEY NOT NULL,
    platform_id TEXT NOT NULL REFERENCES platforms (id),
    name TEXT NOT NULL,
    owner_email TEXT,
    secret_hash TEXT NOT NULL,
    last4 TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX master_keys_by_platform ON master_keys (platform_id, created_at, id);

-- An agent is a credit holder. kind 'gateway' holders come from POST /v1/keys.
CREATE TABLE agents (
    id TEXT PRIMARY KEY NOT NULL,
    platform_id TEXT REFERENCES platforms (id),
    kind TEXT NOT NULL CHECK (kind IN ('agent', 'gateway')),
    name TEXT NOT NULL,
    email TEXT,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    per_tx_limit_micros BIGINT NOT NULL CHECK (per_tx_limit_micros >= 0),
    daily_limit_micros BIGINT NOT NULL CHECK (daily_limit_micros >= 0),
    weekly_limit_micros BIGINT NOT NULL CHECK (weekly_limit_micros >= 0),
    monthly_limit_micros BIGINT NOT NULL CHECK (monthly_limit_micros >= 0),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX agents_by_platform ON agents (platform_id, created_at, id);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents (id),
    kind TEXT NOT NULL CHECK (kind IN ('agent', 'gateway')),
    secret_hash TEXT NOT NULL,
    last4 TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    created_at BIGINT NOT NULL,
    last_used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX api_keys_by_agent ON api_keys (agent_id);

-- Balances in integer micro-USD. The CHECK is a last line of defence: debits are
-- conditional updates and never rely on it.
CREATE TABLE accounts (
    id TEXT PRIMARY KEY NOT NULL,
    balance_micros BIGINT NOT NULL CHECK (balance_micros >= 0),
    total_spent_micros BIGINT NOT NULL DEFAULT 0 CHECK (total_spent_micros >= 0),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Every balance change, written in the same transaction as the change.
-- Invariant: SUM(delta_micros) per account = accounts.balance_micros.
CREATE TABLE journal_entries (
    id BIGSERIAL PRIMARY KEY,
    account_id TEXT NOT NULL REFERENCES accounts (id),
    delta_micros BIGINT NOT NULL,
    balance_after_micros BIGINT NOT NULL,
    kind TEXT NOT NULL,
    reference TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX journal_entries_by_account ON journal_entries (account_id, id);

-- Metered calls (filled by the gateway), listed by GET /v1/usage.
CREATE TABLE usage_events (
    id TEXT PRIMARY KEY NOT NULL,
    agent_id TEXT NOT NULL REFERENCES agents (id),
    api_key_id TEXT,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_micros BIGINT NOT NULL,
    request_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX usage_events_by_agent ON usage_events (agent_id, created_at, id);
