-- Agents' own upstream keys (bring your own key), AES-256-GCM sealed under
-- AIBANK_SECRET_KEY; the agent and provider are the associated data.
CREATE TABLE provider_keys (
    agent_id TEXT NOT NULL REFERENCES agents (id),
    provider TEXT NOT NULL,
    sealed TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (agent_id, provider)
);
