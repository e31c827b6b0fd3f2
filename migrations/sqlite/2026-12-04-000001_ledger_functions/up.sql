-- PostgreSQL installs its ledger functions here (see the PostgreSQL migration of the same
-- name). SQLite has none: its ledger steps run on the one writer, which holds the database
-- for the whole transaction, so the number of statements costs CPU there, not lock time.
SELECT 1;
