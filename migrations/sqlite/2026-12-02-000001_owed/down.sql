ALTER TABLE usage_events DROP COLUMN price_version;
ALTER TABLE usage_events DROP COLUMN owed_micros;
ALTER TABLE accounts DROP COLUMN owed_micros;
