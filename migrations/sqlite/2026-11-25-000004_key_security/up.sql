-- Key security: per-key and per-agent settings, RSA-signed keys, the per-key daily
-- message counter, signature replay protection and the audit log.

-- Settings a platform sets for one of its agents; they bind every key of the agent and
-- the agent's own keys cannot lift them. allowed_ips: comma-separated IPs/CIDRs, '' = any.
ALTER TABLE agents ADD COLUMN read_only BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE agents ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN gateway_enabled BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE agents ADD COLUMN wallets_enabled BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE agents ADD COLUMN trading_enabled BOOLEAN NOT NULL DEFAULT TRUE;
-- Set while the platform has paused all of the agent's keys.
ALTER TABLE agents ADD COLUMN keys_paused_at BIGINT;
-- Gateway calls per key per rolling day; NULL: the server default.
ALTER TABLE agents ADD COLUMN daily_message_limit BIGINT;

-- The owner's settings for one key.
ALTER TABLE api_keys ADD COLUMN name TEXT;
ALTER TABLE api_keys ADD COLUMN description TEXT;
ALTER TABLE api_keys ADD COLUMN read_only BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE api_keys ADD COLUMN allowed_ips TEXT NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN gateway_enabled BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE api_keys ADD COLUMN wallets_enabled BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE api_keys ADD COLUMN trading_enabled BOOLEAN NOT NULL DEFAULT TRUE;
-- RSA-signed keys: the SPKI PEM; such keys have no secret (secret_hash is '').
ALTER TABLE api_keys ADD COLUMN public_key_pem TEXT;
-- The daily message window: starts at the first call, lasts 24 h. Updated with
-- conditional statements so instances sharing the database never over-admit.
ALTER TABLE api_keys ADD COLUMN msg_window_start BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN msg_count BIGINT NOT NULL DEFAULT 0;

-- Signatures of RSA-signed requests seen inside the clock-skew window; the primary key
-- refuses a replay on every instance.
CREATE TABLE used_signatures (
    digest TEXT PRIMARY KEY NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX used_signatures_by_expiry ON used_signatures (expires_at);

-- Who changed which key or setting, and when. Written in the transaction of the change.
CREATE TABLE audit_events (
    id TEXT PRIMARY KEY NOT NULL,
    platform_id TEXT,
    agent_id TEXT,
    actor_type TEXT NOT NULL,
    actor_id TEXT,
    action TEXT NOT NULL,
    target_id TEXT NOT NULL,
    details TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_events_by_platform ON audit_events (platform_id, created_at, id);
CREATE INDEX audit_events_by_agent ON audit_events (agent_id, created_at, id);
