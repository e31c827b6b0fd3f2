DROP TABLE usage_events;
DROP TABLE journal_entries;
DROP TABLE accounts;
DROP TABLE api_keys;
DROP TABLE agents;
DROP TABLE master_keys;
DROP TABLE platforms;
