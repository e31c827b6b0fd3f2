//! The store's errors, and what each means to a client: a database that cannot be reached is
//! `UNAVAILABLE` (retry shortly), anything else an internal fault whose detail is only logged.

use aibank_core::ApiError;
use diesel::ConnectionError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "unsupported database URL scheme `{0}`: use sqlite://PATH (embedded) or postgres://USER@HOST/DB"
    )]
    UnsupportedScheme(String),
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error("cannot connect to the database")]
    Connect(#[source] ConnectionError),
    #[error("no database connection available")]
    Pool(#[from] r2d2::Error),
    #[error("database query failed")]
    Query(#[from] diesel::result::Error),
    #[error("database migration failed: {0}")]
    Migration(String),
    #[error("blocking database task failed")]
    Join(#[from] tokio::task::JoinError),
    #[error("database write failed: {0}")]
    GroupCommit(String),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Pool(_) | StoreError::Connect(_) => {
                ApiError::unavailable("The database is unavailable; retry shortly").with_source(e)
            }
            other => ApiError::internal(other),
        }
    }
}
