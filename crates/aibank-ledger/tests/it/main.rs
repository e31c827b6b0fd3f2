//! The ledger's integration tests on a real database (SQLite, or PostgreSQL with
//! `AIBANK_TEST_DATABASE_URL`), one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

mod ledger;
