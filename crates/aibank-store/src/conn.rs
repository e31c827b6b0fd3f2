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
    ///
    /// SQLite writers also queue on an in-process lock first: SQLite admits one writer at a
    /// time anyway, and a writer that finds the database locked sleeps in growing steps
    /// inside `busy_timeout` (up to 100 ms each), which makes the latency tail under
    /// concurrency long. Waiting on the lock instead wakes the next writer as soon as the
    /// previous one commits. Readers never take it.
    pub fn write_tx<T, E, F>(&mut self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E>,
        E: From<diesel::result::Error>,
    {
        if !self.is_sqlite() {
            return self.transaction(f);
        }
        let writer = SqliteWriter::enter();
        // Nested in a write transaction of this thread (a savepoint), the lock is held.
        let outermost = writer.ticket.is_some();
        self.transaction(|conn| {
            if outermost {
                conn.batch_execute("UPDATE platforms SET id = id WHERE 0 = 1")?;
            }
            f(conn)
        })
    }
}

/// The process-wide SQLite writer lock: a ticket lock, so writers commit in arrival order
/// (no writer waits behind later ones), re-entrant per thread so nested write transactions
/// (savepoints) do not wait on themselves.
struct SqliteWriter {
    ticket: Option<u64>,
}

/// (next ticket to hand out, ticket now served)
static WRITER_TICKETS: std::sync::Mutex<(u64, u64)> = std::sync::Mutex::new((0, 0));
static WRITER_TURN: std::sync::Condvar = std::sync::Condvar::new();

thread_local! {
    static WRITE_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn tickets() -> std::sync::MutexGuard<'static, (u64, u64)> {
    // The state is two counters that are never left half-updated.
    WRITER_TICKETS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl SqliteWriter {
    fn enter() -> Self {
        let depth = WRITE_DEPTH.with(|d| {
            let v = d.get();
            d.set(v + 1);
            v
        });
        if depth > 0 {
            return SqliteWriter { ticket: None };
        }
        let mut t = tickets();
        let mine = t.0;
        t.0 += 1;
        while t.1 != mine {
            t = WRITER_TURN
                .wait(t)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        SqliteWriter { ticket: Some(mine) }
    }
}

impl Drop for SqliteWriter {
    fn drop(&mut self) {
        WRITE_DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
        if self.ticket.take().is_some() {
            tickets().1 += 1;
            WRITER_TURN.notify_all();
        }
    }
}
