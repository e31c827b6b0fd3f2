CREATE INDEX holds_by_status_expiry ON holds (status, expires_at);
CREATE INDEX holds_by_account_status ON holds (account_id, status);
DROP INDEX holds_open_by_expiry;
DROP INDEX holds_open_by_account;
