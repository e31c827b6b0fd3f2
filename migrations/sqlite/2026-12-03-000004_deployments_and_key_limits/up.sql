-- The provider deployment that served a call.
ALTER TABLE usage_events ADD COLUMN deployment TEXT;

-- Limits a platform sets on an agent (binding each of its keys) and an agent on its own
-- key (only narrower): the models it may call (a JSON array of name patterns; NULL: any),
-- requests and tokens per minute per key (NULL: no limit).
ALTER TABLE agents ADD COLUMN allowed_models TEXT;
ALTER TABLE agents ADD COLUMN rpm_limit BIGINT;
ALTER TABLE agents ADD COLUMN tpm_limit BIGINT;
ALTER TABLE api_keys ADD COLUMN allowed_models TEXT;
ALTER TABLE api_keys ADD COLUMN rpm_limit BIGINT;
ALTER TABLE api_keys ADD COLUMN tpm_limit BIGINT;

-- A key's current minute: when it began (ms), the requests and the tokens counted in it.
-- Shared by every instance on the database, as the daily message window is.
ALTER TABLE api_keys ADD COLUMN minute_window_start BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN minute_requests BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN minute_tokens BIGINT NOT NULL DEFAULT 0;
