-- The journal's index by account, kind and time holds only the spending rows (charges and
-- captures), the only ones read by kind: the spend windows' edges (`kind = 'charge'` and
-- `kind = 'capture'` written in the statement's text, each implying the condition) and the
-- time a window frees enough (`kind = 'charge' OR kind = 'capture'`). A gateway call
-- journals its hold, its release and its capture; two of those three rows no longer enter
-- this index, whose inserts, in the middle of the index, were a quarter of the pages each
-- commit wrote.
CREATE INDEX journal_spend_by_account_kind_time ON journal_entries (account_id, kind, created_at)
    WHERE kind = 'charge' OR kind = 'capture';
DROP INDEX journal_entries_by_account_kind_time;
