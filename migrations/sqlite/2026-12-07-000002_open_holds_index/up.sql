-- The holds' indexes by status hold only the open holds, the only ones looked up by status:
-- the sweeper's due holds (`status = 'open'` written in its text) and an account's open
-- holds. A capture or release then takes its hold out of both instead of moving it into
-- the settled holds' part of each, which grew by one row per call for ever.
CREATE INDEX holds_open_by_expiry ON holds (expires_at) WHERE status = 'open';
CREATE INDEX holds_open_by_account ON holds (account_id) WHERE status = 'open';
DROP INDEX holds_by_status_expiry;
DROP INDEX holds_by_account_status;
