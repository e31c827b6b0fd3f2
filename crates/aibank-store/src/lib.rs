//! Storage: one diesel codebase over SQLite (embedded default) and PostgreSQL (production),
//! an r2d2 pool, embedded migrations, and the row types of every table.

mod checkpoint;
mod combine;
pub mod conn;
mod error;
mod group;
pub mod models;
pub mod pool;
pub mod repo;
pub mod schema;
pub mod stmt;

pub use checkpoint::{CheckpointStats, RESTART_FRAMES};
pub use combine::{Arg, Call};
pub use conn::AnyConnection;
pub use error::StoreError;
pub use pool::{Backend, Combine, DbPool, PoolOptions, PoolUsage};
pub use stmt::Stmt;

use diesel::result::{DatabaseErrorKind, Error as DieselError};

/// True when a statement failed on a unique constraint (the caller's conflict, not a fault).
pub fn is_unique_violation(e: &DieselError) -> bool {
    matches!(
        e,
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)
    )
}

/// Why a write transaction ended without committing: it stopped on an outcome of its own
/// (a refusal, a lost race; rolled back, not a fault) or it failed.
#[derive(Debug)]
pub enum TxStop<S, E> {
    Stopped(S),
    Failed(E),
}

impl<S, E: From<DieselError>> From<DieselError> for TxStop<S, E> {
    fn from(e: DieselError) -> Self {
        TxStop::Failed(e.into())
    }
}

impl<S, E: From<StoreError>> From<StoreError> for TxStop<S, E> {
    fn from(e: StoreError) -> Self {
        TxStop::Failed(e.into())
    }
}
