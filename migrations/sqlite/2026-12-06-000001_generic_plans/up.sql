-- PostgreSQL sets how a ledger function's statements are planned here (see the PostgreSQL
-- migration of the same name); SQLite has none.
SELECT 1;
