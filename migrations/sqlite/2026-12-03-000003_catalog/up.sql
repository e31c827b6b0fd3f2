-- The service catalog: APIs agents (or platforms) sell per call through /v1/proxy.
-- The provider key is AES-256-GCM sealed under AIBANK_SECRET_KEY, bound to the service id.
CREATE TABLE services (
    id TEXT PRIMARY KEY,
    -- agent | platform
    owner_kind TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    base_url TEXT NOT NULL,
    openapi_spec TEXT NOT NULL,
    price_micros BIGINT NOT NULL CHECK (price_micros >= 0),
    category TEXT NOT NULL,
    provider_key_header TEXT,
    provider_key_sealed TEXT,
    -- active | paused | deleted
    status TEXT NOT NULL,
    total_calls BIGINT NOT NULL DEFAULT 0,
    total_revenue_micros BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX services_catalog ON services (status, created_at, id);
CREATE INDEX services_catalog_category ON services (status, category, created_at, id);
CREATE INDEX services_by_owner ON services (owner_kind, owner_id);

-- Wallets subscribed to a service; a row is kept (inactive) when unsubscribed.
CREATE TABLE service_subscriptions (
    service_id TEXT NOT NULL REFERENCES services (id),
    wallet_id TEXT NOT NULL REFERENCES wallets (id),
    agent_id TEXT NOT NULL REFERENCES agents (id),
    active BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (service_id, wallet_id)
);
