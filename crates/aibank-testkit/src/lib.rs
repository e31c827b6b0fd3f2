//! Test kit for every crate's tests, without the server: a fresh database per test (a temp
//! SQLite file, or a new PostgreSQL database when `AIBANK_TEST_DATABASE_URL` names a
//! PostgreSQL server, its URL used as the admin connection), the ledger's invariant checks,
//! the `aibank` binary in a child process, mock upstreams speaking the providers' wire
//! formats, and a real anvil chain. The in-process server and its typed clients live beside
//! the server's own tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aibank_core::ids::random_lower;
use aibank_store::{Backend, DbPool, PoolOptions};
use diesel::connection::SimpleConnection;
use diesel::Connection;
use serde_json::Value;
use tempfile::TempDir;

pub mod anvil;
pub mod local_server;
pub mod mock_bankr;
pub mod mock_http_api;
pub mod mock_hyperliquid;
pub mod mock_service;
pub mod mock_upstream;

/// The `AIBANK_SECRET_KEY` of every test server.
pub const TEST_SECRET_KEY: &str =
    "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";

pub const TEST_DATABASE_ENV: &str = "AIBANK_TEST_DATABASE_URL";

/// A database for one test. Dropping it removes a SQLite file; PostgreSQL test databases
/// live in the throwaway cluster the test script starts and stops.
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    /// PostgreSQL only: the admin URL and this database's name.
    pub admin: Option<(String, String)>,
    _dir: Option<TempDir>,
}

impl TestDb {
    pub fn fresh() -> TestDb {
        match std::env::var(TEST_DATABASE_ENV) {
            Ok(admin) if !admin.is_empty() => {
                let name = format!("aibank_t_{}", random_lower(12));
                let mut conn = diesel::pg::PgConnection::establish(&admin)
                    .unwrap_or_else(|e| panic!("{TEST_DATABASE_ENV} is not reachable: {e}"));
                conn.batch_execute(&format!("CREATE DATABASE {name}"))
                    .unwrap();
                let (base, _) = admin
                    .rsplit_once('/')
                    .expect("admin URL has a database path");
                TestDb {
                    url: format!("{base}/{name}"),
                    backend: Backend::Postgres,
                    admin: Some((admin.clone(), name)),
                    _dir: None,
                }
            }
            _ => TestDb::sqlite(),
        }
    }

    /// A SQLite database, whichever backend the run tests.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("aibank.db").display());
        TestDb {
            url,
            backend: Backend::Sqlite,
            admin: None,
            _dir: Some(dir),
        }
    }
}

impl TestDb {
    /// PostgreSQL only: cuts every connection to this database and refuses new ones
    /// (`false`), or lets them in again (`true`).
    pub fn set_reachable(&self, reachable: bool) {
        let (admin, name) = self.admin.as_ref().expect("a PostgreSQL test database");
        let mut conn = diesel::pg::PgConnection::establish(admin).unwrap();
        conn.batch_execute(&format!(
            "ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {reachable}"
        ))
        .unwrap();
        if !reachable {
            conn.batch_execute(&format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ))
            .unwrap();
        }
    }
}

/// The ledger's invariants for one account: balance less debt equals its journal sum, held
/// equals its open holds, none negative, never a debt beside a balance. For a consistent read under concurrency, call it inside a
/// transaction that holds the account's lock.
pub fn assert_account_consistent(c: &mut aibank_store::AnyConnection, id: &str) {
    use aibank_store::models::OPEN_HOLDS;
    use aibank_store::schema::{holds, journal_entries as j, spend_buckets};
    use diesel::prelude::*;
    let account = aibank_ledger::balance(c, id).unwrap();
    let open: i64 = holds::table
        .filter(holds::account_id.eq(id))
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(OPEN_HOLDS))
        .select(holds::amount_micros)
        .load::<i64>(c)
        .unwrap()
        .iter()
        .sum();
    assert_eq!(
        account.held_micros, open,
        "account {id}: held equals its open holds"
    );
    assert!(
        account.balance_micros >= 0 && account.held_micros >= 0 && account.owed_micros >= 0,
        "account {id} is negative"
    );
    assert!(
        account.balance_micros == 0 || account.owed_micros == 0,
        "account {id} owes {} with a balance of {}",
        account.owed_micros,
        account.balance_micros
    );
    // Each journal row states the balance its change left, in the order they were written.
    let rows: Vec<(i64, i64, String)> = j::table
        .filter(j::account_id.eq(id))
        .order(j::id.asc())
        .select((j::delta_micros, j::balance_after_micros, j::kind))
        .load(c)
        .unwrap();
    let (mut running, mut spent) = (0_i64, 0_i64);
    for (delta, after, kind) in &rows {
        running += delta;
        assert_eq!(
            *after, running,
            "account {id}: a {kind} entry's balance after is its running sum"
        );
        if aibank_ledger::SPEND_KINDS.contains(&kind.as_str()) {
            spent -= delta;
        }
    }
    assert_eq!(
        account.balance_micros - account.owed_micros,
        running,
        "account {id}: balance less debt equals its journal"
    );
    // Spending is counted three ways that must agree: the account's total, the journal's
    // spend entries, and the hourly buckets the limits read.
    let buckets: i64 = spend_buckets::table
        .filter(spend_buckets::account_id.eq(id))
        .select(spend_buckets::amount_micros)
        .load::<i64>(c)
        .unwrap()
        .iter()
        .sum();
    assert_eq!(
        (account.total_spent_micros, buckets),
        (spent, spent),
        "account {id}: total spent and spend buckets equal its spend entries"
    );
}

/// Checks every account with [`assert_account_consistent`]. Returns how many there are.
pub fn assert_books_balance(pool: &DbPool) -> usize {
    use aibank_store::schema::accounts;
    use diesel::prelude::*;
    let mut c = pool.get().unwrap();
    let ids: Vec<String> = accounts::table.select(accounts::id).load(&mut c).unwrap();
    for id in &ids {
        assert_account_consistent(&mut c, id);
    }
    ids.len()
}

/// Pool options for tests that open a database directly.
pub fn pool_options() -> PoolOptions {
    PoolOptions {
        max_size: 4,
        ..PoolOptions::default()
    }
}

/// The `aibank` binary at `bin`, run in `cwd` with a clean environment (only `PATH`), so no
/// stray `AIBANK_*` or provider setting of the caller leaks in.
pub fn aibank_command(bin: &str, cwd: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(bin);
    cmd.current_dir(cwd).env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd
}

/// The real `aibank serve` binary in a child process, for tests that kill or restart it.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub port: u16,
    pub base: String,
    /// Every JSON log line the server wrote so far.
    logs: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl ServerProcess {
    /// Starts `bin serve` in `cwd` with a clean environment plus `env`, on a random port
    /// (reported through the JSON log), and waits until it listens.
    pub fn start(bin: &str, cwd: &std::path::Path, env: &[(&str, &str)]) -> ServerProcess {
        use std::io::BufRead;
        let mut cmd = aibank_command(bin, cwd);
        cmd.arg("serve")
            .env("AIBANK_LISTEN", "127.0.0.1:0")
            .env("AIBANK_LOG_FORMAT", "json")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("aibank starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let logs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["fields"]["message"] == "aibank listening" {
                        let _ = tx.send(v["fields"]["port"].as_u64().unwrap());
                    }
                    kept.lock().unwrap().push(v);
                }
            }
        });
        let port = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("server reports its port");
        let port = u16::try_from(port).unwrap();
        ServerProcess {
            child,
            port,
            base: format!("http://127.0.0.1:{port}"),
            logs,
        }
    }

    /// How many log lines with this message the server has written.
    pub fn count_logs(&self, message: &str) -> usize {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["fields"]["message"] == message)
            .count()
    }

    /// Waits up to 30 s for the `n`th log line with this message, and returns it.
    pub fn wait_for_log(&self, message: &str, n: usize) -> Value {
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(30) {
            let found = self
                .logs
                .lock()
                .unwrap()
                .iter()
                .filter(|v| v["fields"]["message"] == message)
                .nth(n.saturating_sub(1))
                .cloned();
            if let Some(v) = found {
                return v;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("the server never logged {message:?} {n} times");
    }

    /// Sends `signal` without waiting for anything.
    pub fn signal(&self, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits up to 30 s for the exit.
    pub fn signal_and_wait(&mut self, signal: &str) -> Option<std::process::ExitStatus> {
        self.signal(signal);
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(30) {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
