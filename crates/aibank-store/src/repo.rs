//! Queries, one module per table family. Each takes a connection so callers can compose
//! them inside one transaction.

pub mod agents;
pub mod audit;
pub mod claims;
pub mod dashboard;
pub mod idempotency;
pub mod keys;
pub mod payments;
pub mod platforms;
pub mod provider_keys;
pub mod services;
pub mod trading;
pub mod usage;
pub mod wallets;

use aibank_core::page::Cursor;
use diesel::connection::SimpleConnection;
use diesel::QueryResult;

use crate::AnyConnection;

/// A round trip to the database, for health checks.
pub fn ping(conn: &mut AnyConnection) -> QueryResult<()> {
    conn.batch_execute("SELECT 1")
}

/// Newest-first keyset pagination over `(created_at, id)`.
macro_rules! after_cursor {
    ($query:expr, $table:ident, $cursor:expr) => {{
        let mut q = $query;
        if let Some(c) = $cursor {
            q = q.filter(
                $table::created_at.lt(c.created_at).or($table::created_at
                    .eq(c.created_at)
                    .and($table::id.lt(c.id.clone()))),
            );
        }
        q.order(($table::created_at.desc(), $table::id.desc()))
    }};
}
pub(crate) use after_cursor;

/// The cursor of a row with `created_at` and `id`.
pub fn cursor_of(created_at: i64, id: &str) -> Cursor {
    Cursor {
        created_at,
        id: id.to_owned(),
    }
}
