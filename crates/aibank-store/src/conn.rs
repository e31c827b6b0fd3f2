//! The connection type: one enum over both backends, so queries are written once.

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::sqlite::SqliteConnection;
use diesel::Connection;

#[derive(diesel::MultiConnection)]
pub enum AnyConnection {
    Postgresql(PgConnection),
    Sqlite(SqliteConnection),
}

impl AnyConnection {
    pub fn is_sqlite(&self) -> bool {
        matches!(self, AnyConnection::Sqlite(_))
    }

    /// A read-write transaction that holds the write lock from its first statement.
    ///
    /// SQLite's default deferred transaction takes the write lock at the first write; if
    /// another writer got in after our first read, the upgrade fails with SQLITE_BUSY
    /// without waiting. Starting with a no-op write takes the lock up front, where
    /// `busy_timeout` applies, so concurrent writers queue instead of failing.
    /// PostgreSQL needs nothing special: its row locks do the queueing.
    pub fn write_tx<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        let sqlite = self.is_sqlite();
        self.transaction(|conn| {
            if sqlite {
                conn.batch_execute("UPDATE platforms SET id = id WHERE 0 = 1")?;
            }
            f(conn)
        })
    }
}
