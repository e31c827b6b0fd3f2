-- The journal's index by account, kind and time holds only the spending rows (charges and
-- captures), the only ones read by kind: the spend windows' edges (aibank_used, whose
-- `kind = 'charge'` and `kind = 'capture'` imply the condition) and the time a window
-- frees enough (`kind = 'charge' OR kind = 'capture'`). A gateway call journals its hold,
-- its release and its capture; two of those three rows no longer enter this index.
CREATE INDEX journal_spend_by_account_kind_time ON journal_entries (account_id, kind, created_at)
    WHERE kind = 'charge' OR kind = 'capture';
DROP INDEX journal_entries_by_account_kind_time;
