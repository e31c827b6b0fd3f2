//! The connection pool. Diesel is blocking, so every use goes through [`DbPool::run`], which
//! moves it to tokio's blocking threads and keeps it off the actix workers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::R2D2Connection;
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, ConnectionError};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::checkpoint::{CheckpointStats, Checkpointer};
use crate::combine::{Call, Combiner, Outcome};
use crate::group::GroupWriter;
use crate::{AnyConnection, StoreError};

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Serialises migrations when several instances start against one PostgreSQL at once.
const MIGRATION_LOCK_ID: i64 = 0x0a1b_a4c0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Where the pool connects; parsed once so a typo never becomes a new SQLite file.
#[derive(Debug, Clone)]
enum Target {
    Sqlite(PathBuf),
    Postgres(String),
}

#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub max_size: u32,
    pub connection_timeout: Duration,
    /// Create the SQLite file's directory when missing (the embedded default does;
    /// an explicitly configured path must already exist).
    pub create_parent_dir: bool,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            max_size: 10,
            connection_timeout: Duration::from_secs(5),
            create_parent_dir: false,
        }
    }
}

fn parse_target(url: &str, create_parent_dir: bool) -> Result<Target, StoreError> {
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(StoreError::InvalidUrl(
            "missing a scheme; expected sqlite://PATH or postgres://…".into(),
        ));
    };
    match scheme {
        "postgres" | "postgresql" => Ok(Target::Postgres(url.to_owned())),
        "sqlite" => {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(StoreError::InvalidUrl("sqlite:// needs a file path".into()));
            }
            if path == ":memory:" || path.contains('?') {
                return Err(StoreError::InvalidUrl(
                    "sqlite:// takes a plain file path (no :memory:, no query parameters)".into(),
                ));
            }
            let path = PathBuf::from(path);
            ensure_parent(&path, create_parent_dir)?;
            Ok(Target::Sqlite(path))
        }
        other => Err(StoreError::UnsupportedScheme(
            other.chars().take(32).collect(),
        )),
    }
}

fn ensure_parent(path: &Path, create: bool) -> Result<(), StoreError> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    if parent.is_dir() {
        return Ok(());
    }
    if create {
        return std::fs::create_dir_all(parent).map_err(|e| {
            StoreError::InvalidUrl(format!("cannot create directory {}: {e}", parent.display()))
        });
    }
    Err(StoreError::InvalidUrl(format!(
        "directory {} does not exist (create it first; aibank will not guess)",
        parent.display()
    )))
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Connect(#[from] ConnectionError),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
}

impl From<ManagerError> for StoreError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::Connect(c) => StoreError::Connect(c),
            ManagerError::Query(q) => StoreError::Query(q),
        }
    }
}

/// r2d2 manager that opens the configured backend explicitly and applies per-connection
/// settings.
#[derive(Debug, Clone)]
pub struct Manager {
    target: Target,
}

impl Manager {
    fn open(&self) -> Result<AnyConnection, ManagerError> {
        match &self.target {
            Target::Postgres(url) => Ok(AnyConnection::Postgresql(PgConnection::establish(url)?)),
            Target::Sqlite(path) => {
                let mut conn = SqliteConnection::establish(&path.to_string_lossy())?;
                // busy_timeout first, so switching to WAL waits for other openers.
                // temp_store: the sub-journals of savepoints (every group-committed write
                // runs in one) stay in memory instead of spilling to temporary files.
                // wal_autocheckpoint: no commit checkpoints; the checkpointer thread does
                // (see `checkpoint.rs`), and the log file is cut back to 64 MiB when it
                // starts over.
                conn.batch_execute(
                    "PRAGMA busy_timeout = 10000;
                     PRAGMA journal_mode = WAL;
                     PRAGMA synchronous = FULL;
                     PRAGMA foreign_keys = ON;
                     PRAGMA temp_store = MEMORY;
                     PRAGMA wal_autocheckpoint = 0;
                     PRAGMA journal_size_limit = 67108864;",
                )?;
                Ok(AnyConnection::Sqlite(conn))
            }
        }
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = AnyConnection;
    type Error = ManagerError;

    fn connect(&self) -> Result<AnyConnection, ManagerError> {
        self.open()
    }

    fn is_valid(&self, conn: &mut AnyConnection) -> Result<(), ManagerError> {
        conn.ping().map_err(ManagerError::Query)
    }

    fn has_broken(&self, conn: &mut AnyConnection) -> bool {
        conn.is_broken()
    }
}

pub type PooledConnection = r2d2::PooledConnection<Manager>;

/// A pool's connections at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    pub in_use: u32,
    pub idle: u32,
    /// Callers waiting for a connection.
    pub waiting: u32,
    /// SQLite: writes queued for the writer or being committed (always 0 on PostgreSQL).
    pub writes_pending: u32,
    /// PostgreSQL: batches of one key's one-statement writes run in one transaction so
    /// far (see [`DbPool::write_at_once`]), and the writes they carried.
    pub combined_batches: u64,
    pub combined_writes: u64,
    /// Connections taken from the pool so far, each time one was handed out.
    pub checkouts: u64,
}

#[derive(Clone)]
pub struct DbPool {
    pool: r2d2::Pool<Manager>,
    backend: Backend,
    /// SQLite: the group-commit writer behind [`DbPool::write`].
    writer: Option<GroupWriter>,
    /// SQLite: the thread that checkpoints the write-ahead log.
    checkpointer: Option<Checkpointer>,
    /// Callers waiting for a connection now (r2d2 does not count them).
    waiting: Arc<AtomicU32>,
    /// Connections handed out so far.
    checkouts: Arc<AtomicU64>,
    /// SQLite: writes handed to the writer and not yet answered.
    writes_pending: Arc<AtomicU32>,
    /// PostgreSQL: one key's one-statement writes, combined when they queue.
    combiner: Arc<Combiner>,
}

/// Which one-statement writes [`DbPool::write_at_once`] may run together in one
/// transaction (see `combine.rs`): those of the same `key`, the row they all lock.
#[derive(Debug, Clone, Copy)]
pub struct Combine<'a> {
    pub key: &'a str,
    /// Run before the others of its batch: it locks a row ahead of the key's row.
    pub early: bool,
}

/// Counts one caller as waiting for a connection while it lives.
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn start(n: &'a AtomicU32) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Waiting(n)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn checkout(
    pool: &r2d2::Pool<Manager>,
    waiting: &AtomicU32,
    checkouts: &AtomicU64,
) -> Result<PooledConnection, StoreError> {
    let _waiting = Waiting::start(waiting);
    let conn = pool.get()?;
    checkouts.fetch_add(1, Ordering::Relaxed);
    Ok(conn)
}

impl std::fmt::Debug for DbPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbPool")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl DbPool {
    /// Opens a pool (blocking). Fails fast when the database cannot be reached.
    pub fn connect(url: &str, opts: &PoolOptions) -> Result<Self, StoreError> {
        let target = parse_target(url, opts.create_parent_dir)?;
        let backend = match target {
            Target::Sqlite(_) => Backend::Sqlite,
            Target::Postgres(_) => Backend::Postgres,
        };
        let manager = Manager { target };
        // Prove the target works before building the pool, with the real error in hand.
        manager.open().map_err(StoreError::from)?;
        let (writer, checkpointer) = match backend {
            Backend::Postgres => (None, None),
            Backend::Sqlite => {
                let thread_failed = |e: std::io::Error| StoreError::GroupCommit(e.to_string());
                let m = manager.clone();
                let checkpointer = Checkpointer::start(move || m.open().map_err(StoreError::from))
                    .map_err(thread_failed)?;
                let m = manager.clone();
                let writer = GroupWriter::start(
                    move || m.open().map_err(StoreError::from),
                    checkpointer.clone(),
                )
                .map_err(thread_failed)?;
                (Some(writer), Some(checkpointer))
            }
        };
        let pool = r2d2::Pool::builder()
            // A server connection can die under us (restart, failover), so PostgreSQL
            // connections are pinged on checkout; a SQLite file connection cannot, and the
            // ping would double the statements of every request.
            .test_on_check_out(backend == Backend::Postgres)
            .max_size(opts.max_size)
            .min_idle(Some(1))
            .connection_timeout(opts.connection_timeout)
            .error_handler(Box::new(LogErrors))
            .build(manager)?;
        Ok(DbPool {
            pool,
            backend,
            writer,
            checkpointer,
            waiting: Arc::new(AtomicU32::new(0)),
            checkouts: Arc::new(AtomicU64::new(0)),
            writes_pending: Arc::new(AtomicU32::new(0)),
            combiner: Arc::default(),
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// SQLite: what the checkpointer thread has done so far (`None` on PostgreSQL).
    pub fn checkpoint_stats(&self) -> Option<&CheckpointStats> {
        self.checkpointer.as_ref().map(Checkpointer::stats)
    }

    /// A connection for blocking code that is already off the async runtime.
    pub fn get(&self) -> Result<PooledConnection, StoreError> {
        checkout(&self.pool, &self.waiting, &self.checkouts)
    }

    /// The pool's connections now, and the callers waiting for one.
    pub fn usage(&self) -> PoolUsage {
        let state = self.pool.state();
        let (combined_batches, combined_writes) = self.combiner.counts();
        PoolUsage {
            in_use: state.connections.saturating_sub(state.idle_connections),
            idle: state.idle_connections,
            waiting: self.waiting.load(Ordering::Relaxed),
            writes_pending: self.writes_pending.load(Ordering::Relaxed),
            combined_batches,
            combined_writes,
            checkouts: self.checkouts.load(Ordering::Relaxed),
        }
    }

    /// Runs `f` with a pooled connection on a blocking thread.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (pool, waiting, checkouts) = (
            self.pool.clone(),
            self.waiting.clone(),
            self.checkouts.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let mut conn = checkout(&pool, &waiting, &checkouts)?;
            f(&mut conn)
        })
        .await
        .map_err(StoreError::from)?
    }

    /// Runs `f` as one write transaction (rolled back if it returns an error); the answer
    /// comes once its commit is durable.
    ///
    /// On SQLite, concurrent writes share one durable commit (group commit, see
    /// `group.rs`). On PostgreSQL it is a transaction on a pooled connection that commits
    /// without waiting for the log flush, so the row locks it took are released at once;
    /// the answer then waits for the flush (see [`flush_log`]). Held through the flush, a
    /// lock makes every spend of one account wait a whole flush for the one before it.
    /// The price: another transaction may read the write a flush before it is durable. It
    /// is never answered as done before it is, and whatever builds on it comes later in
    /// the log, so a crash that undoes it undoes those too. If the flush cannot be
    /// confirmed (the connection drops), the write is answered as failed although it
    /// committed, as when a commit's own answer is lost.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + From<diesel::result::Error> + Send + 'static,
    {
        self.write_as(true, f).await
    }

    /// Like [`DbPool::write`], but answered once committed — visible to every later
    /// transaction — without waiting for the commit to reach the disk: a crash of the
    /// machine (on PostgreSQL, of the database server) may undo it. Every later durable
    /// commit makes it durable too (both backends replay their log in order).
    ///
    /// Only for writes whose loss is harmless by construction: a gateway call's hold is one.
    /// If the hold is lost, so is everything the call would have written after it, and
    /// the account is as it was before the call: the same outcome as a durable hold that
    /// nobody captured, which the sweeper releases.
    pub async fn write_unsynced<T, E, F>(&self, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + From<diesel::result::Error> + Send + 'static,
    {
        self.write_as(false, f).await
    }

    /// A write that PostgreSQL can make as one statement: `at_once` runs on a connection
    /// outside any transaction and makes its writes in a single statement that commits
    /// without waiting for the log flush — or makes none and answers `None`, and then
    /// `general` runs as [`DbPool::write`] runs a write. Either way, with `synced` the
    /// answer waits for the flush (see [`flush_log`]); without, it is answered as
    /// [`DbPool::write_unsynced`] is. On SQLite only `general` runs, through the writer.
    ///
    /// A statement outside a transaction holds its row locks only while it runs: no round
    /// trip to this process happens while they are held.
    ///
    /// Writes of the same [`Combine::key`] that queue behind each other run one after
    /// another in one transaction (`combine.rs`): one hand-over of the key's row lock
    /// between server processes and one commit for all of them. So `at_once`
    /// may run more than once (its batch rolled back, it runs again alone); it must write
    /// nothing but through the database. `call`, the same write as a function call, lets a
    /// batch whose every write has one run them all as one statement: one round trip for
    /// the batch instead of one for each write.
    pub async fn write_at_once<T, E, F, G>(
        &self,
        synced: bool,
        combine: Combine<'_>,
        call: Option<Call<T>>,
        at_once: F,
        general: G,
    ) -> Result<T, E>
    where
        F: FnMut(&mut AnyConnection) -> Result<Option<T>, E> + Send + 'static,
        G: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + From<diesel::result::Error> + Send + 'static,
    {
        if self.writer.is_some() {
            return self.write_as(synced, general).await;
        }
        let (answer, lead) =
            self.combiner
                .submit(combine.key, synced, combine.early, at_once, general, call);
        if let Some(lead) = lead {
            let pool = self.clone();
            // Without a connection the closure is dropped unrun, and the lead with it
            // answers every write waiting: the result says nothing more.
            tokio::spawn(async move {
                let _ = pool
                    .run(move |c| {
                        lead.drain(c);
                        Ok::<_, StoreError>(())
                    })
                    .await;
            });
        }
        match answer.await {
            Ok(Outcome::Done(out)) => out,
            Ok(Outcome::Flush(out, flush)) => {
                let pool = self.clone();
                let flushed = flush
                    .get_or_init(|| async move {
                        pool.run(flush_log)
                            .await
                            .map_err(|e: StoreError| e.to_string())
                    })
                    .await;
                match flushed {
                    Ok(()) => Ok(out),
                    // Committed, but whether it is durable is not known: answered as
                    // failed, as a lone write whose flush cannot be confirmed is.
                    Err(why) => Err(StoreError::GroupCommit(why.clone()).into()),
                }
            }
            Ok(Outcome::General(general)) => self.write_as(synced, general).await,
            Ok(Outcome::Alone(at_once, general)) => self.alone(synced, at_once, general).await,
            Err(_) => Err(StoreError::GroupCommit("the write's batch stopped".into()).into()),
        }
    }

    /// [`DbPool::write_at_once`] without combining.
    async fn alone<T, E, F, G>(&self, synced: bool, mut at_once: F, general: G) -> Result<T, E>
    where
        F: FnMut(&mut AnyConnection) -> Result<Option<T>, E> + Send + 'static,
        G: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + From<diesel::result::Error> + Send + 'static,
    {
        self.run(move |c| {
            let out = match at_once(c)? {
                Some(out) => out,
                None => unflushed_tx(c, general)?,
            };
            if synced {
                flush_log(c)?;
            }
            Ok(out)
        })
        .await
    }

    async fn write_as<T, E, F>(&self, synced: bool, f: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + From<diesel::result::Error> + Send + 'static,
    {
        match &self.writer {
            Some(w) => {
                let _pending = Waiting::start(&self.writes_pending);
                w.write(synced, f).await
            }
            None => {
                self.run(move |c| {
                    let out = unflushed_tx(c, f)?;
                    if synced {
                        flush_log(c)?;
                    }
                    Ok(out)
                })
                .await
            }
        }
    }

    /// Applies the first `n` pending migrations only, so upgrade tests can build a database
    /// as an older release left it.
    pub fn migrate_first(&self, n: usize) -> Result<Vec<String>, StoreError> {
        let mut conn = self.get()?;
        match &mut *conn {
            AnyConnection::Sqlite(c) => apply_first(c, SQLITE_MIGRATIONS, n),
            AnyConnection::Postgresql(c) => apply_first(c, POSTGRES_MIGRATIONS, n),
        }
    }

    /// Applies pending migrations (blocking); returns the versions applied.
    pub fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.get()?;
        match &mut *conn {
            AnyConnection::Sqlite(c) => apply(c, SQLITE_MIGRATIONS),
            AnyConnection::Postgresql(c) => {
                c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK_ID})"))?;
                let res = apply(c, POSTGRES_MIGRATIONS);
                c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK_ID})"))?;
                res
            }
        }
    }
}

/// PostgreSQL: runs `f` in a transaction that commits without waiting for the log flush
/// (`synchronous_commit = off`, sent with its `BEGIN`: one round trip for both). Rolled
/// back if `f` fails, as `Connection::transaction` does.
fn unflushed_tx<T, E, F>(c: &mut AnyConnection, f: F) -> Result<T, E>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, E>,
    E: From<StoreError> + From<diesel::result::Error>,
{
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    fn pg(c: &mut AnyConnection) -> Result<&mut PgConnection, StoreError> {
        match c {
            AnyConnection::Postgresql(pg) => Ok(pg),
            AnyConnection::Sqlite(_) => Err(StoreError::GroupCommit(
                "a SQLite write goes through the group writer".into(),
            )),
        }
    }
    AnsiTransactionManager::begin_transaction_sql(
        pg(c)?,
        "BEGIN; SET LOCAL synchronous_commit = off",
    )?;
    match f(c) {
        Ok(out) => {
            AnsiTransactionManager::commit_transaction(pg(c)?)?;
            Ok(out)
        }
        Err(e) => match AnsiTransactionManager::rollback_transaction(pg(c)?) {
            Ok(()) | Err(diesel::result::Error::BrokenTransactionManager) => Err(e),
            Err(rollback) => Err(rollback.into()),
        },
    }
}

/// PostgreSQL: returns once the log is durable up to here, as the server's
/// `synchronous_commit` setting defines durable (flushed to disk, or also on synchronous
/// standbys): one round trip, no rows, no locks. A transaction that writes to the log
/// commits under that setting, and its commit flushes the log up to its record, with every
/// commit before it; writing an empty logical-decoding message (prefix `aibank`, which
/// change-data-capture consumers may see and skip) is the least such a write can be.
/// Assigning a transaction id alone writes nothing, and PostgreSQL skips the flush.
pub(crate) fn flush_log(c: &mut AnyConnection) -> Result<(), StoreError> {
    Ok(c.batch_execute("BEGIN; SELECT pg_logical_emit_message(true, 'aibank', ''); COMMIT")?)
}

fn apply<C>(conn: &mut C, migrations: EmbeddedMigrations) -> Result<Vec<String>, StoreError>
where
    C: MigrationHarness<C::Backend> + Connection,
{
    conn.run_pending_migrations(migrations)
        .map(|v| v.iter().map(ToString::to_string).collect())
        .map_err(|e| StoreError::Migration(e.to_string()))
}

fn apply_first<C>(
    conn: &mut C,
    migrations: EmbeddedMigrations,
    n: usize,
) -> Result<Vec<String>, StoreError>
where
    C: MigrationHarness<C::Backend> + Connection,
{
    let pending = conn
        .pending_migrations(migrations)
        .map_err(|e| StoreError::Migration(e.to_string()))?;
    let mut applied = Vec::new();
    for m in pending.iter().take(n) {
        let v = conn
            .run_migration(m.as_ref())
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        applied.push(v.to_string());
    }
    Ok(applied)
}

#[derive(Debug)]
struct LogErrors;

impl r2d2::HandleError<ManagerError> for LogErrors {
    fn handle_error(&self, error: ManagerError) {
        tracing::warn!(error = %error, "database connection error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_schemes_are_refused() {
        for url in [
            "postgress://x",
            "mysql://x",
            "sqlit://./a.db",
            "./data/aibank.db",
        ] {
            let err = parse_target(url, false).unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::UnsupportedScheme(_) | StoreError::InvalidUrl(_)
                ),
                "{url}: {err}"
            );
        }
        assert!(parse_target("sqlite://:memory:", false).is_err());
        assert!(parse_target("sqlite:///definitely/not/here/a.db", false).is_err());
        assert!(matches!(
            parse_target("postgres://u@h/db", false),
            Ok(Target::Postgres(_))
        ));
    }

    #[test]
    fn unsupported_scheme_message_does_not_echo_the_url() {
        let err = parse_target("postgress://user:hunter2@host/db", false).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
    }

    fn migration_names(backend: &str) -> Vec<String> {
        let dir = format!("{}/../../migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn both_backends_have_the_same_migrations() {
        let sqlite = migration_names("sqlite");
        assert!(!sqlite.is_empty());
        assert_eq!(sqlite, migration_names("postgres"));
    }

    /// Set in `.cargo/config.toml`: without it, every statement with a `LIMIT ?` (diesel's
    /// `.first()`) is compiled again each time it runs, cached or not.
    #[test]
    fn sqlite_is_built_with_the_query_planner_stability_guarantee() {
        use diesel::sql_types::Text;
        #[derive(diesel::QueryableByName)]
        struct Opt {
            #[diesel(sql_type = Text)]
            compile_options: String,
        }
        let mut c = SqliteConnection::establish(":memory:").unwrap();
        let opts: Vec<Opt> =
            diesel::RunQueryDsl::load(diesel::sql_query("PRAGMA compile_options"), &mut c).unwrap();
        assert!(
            opts.iter().any(|o| o.compile_options == "ENABLE_QPSG"),
            "SQLite was built without SQLITE_ENABLE_QPSG (LIBSQLITE3_FLAGS)"
        );
    }

    #[test]
    fn sqlite_pool_migrates() {
        let dir = std::env::temp_dir().join(format!("aibank-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let pool = DbPool::connect(&url, &PoolOptions::default()).unwrap();
        assert_eq!(pool.backend(), Backend::Sqlite);
        let applied = pool.migrate().unwrap();
        assert_eq!(applied.len(), migration_names("sqlite").len());
        assert!(pool.migrate().unwrap().is_empty());
        std::fs::remove_dir_all(&dir).ok();
    }
}
