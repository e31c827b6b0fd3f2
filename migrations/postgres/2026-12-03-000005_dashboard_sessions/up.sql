-- Signed-in dashboard sessions. The cookie holds a random token; only its SHA-256 is
-- stored, so a copy of the database signs nobody in. A session acts as the master key
-- that signed in and stops working when that key is revoked or the session expires.
CREATE TABLE dashboard_sessions (
    token_hash TEXT PRIMARY KEY NOT NULL,
    platform_id TEXT NOT NULL REFERENCES platforms (id),
    master_key_id TEXT NOT NULL REFERENCES master_keys (id),
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX dashboard_sessions_by_expiry ON dashboard_sessions (expires_at);
