DROP INDEX journal_entries_by_account_kind_time;
ALTER TABLE usage_events DROP COLUMN description;
DROP TABLE idempotency_keys;
DROP TABLE holds;
ALTER TABLE platforms DROP COLUMN daily_limit_micros;
ALTER TABLE accounts DROP COLUMN held_micros;
