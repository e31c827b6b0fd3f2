-- PostgreSQL replaces a ledger function here (see the PostgreSQL migration of the same
-- name); SQLite has none.
SELECT 1;
