CREATE INDEX journal_entries_by_account_kind_time ON journal_entries (account_id, kind, created_at);
DROP INDEX journal_spend_by_account_kind_time;
