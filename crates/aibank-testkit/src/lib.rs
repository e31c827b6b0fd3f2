//! Test kit: the real server on a random port over real HTTP, with a fresh database per
//! test — a temp SQLite file, or a new PostgreSQL database when `AIBANK_TEST_DATABASE_URL`
//! names a PostgreSQL server (its URL is used as the admin connection).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use aibank_auth::{keys, GeneratedKey, KeyKind};
use aibank_core::ids::random_lower;
use aibank_core::{SharedClock, SystemClock};
use aibank_server::config::Config;
use aibank_server::{service, Application};
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
            _ => {
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

/// Logs of every server in this test process, for asserting what is (not) logged.
fn log_buffer() -> &'static Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| Arc::new(Mutex::new(Vec::new())))
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captures all logs at debug level into memory (once per test process).
pub fn capture_logs() {
    static INIT: OnceLock<()> = OnceLock::new();
    INIT.get_or_init(|| {
        let buf = log_buffer().clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(aibank_server::telemetry::secret_safe(
                tracing_subscriber::EnvFilter::new("debug"),
            ))
            .with_ansi(false)
            .with_writer(move || BufWriter(buf.clone()))
            .try_init();
    });
}

pub fn captured_logs() -> String {
    String::from_utf8_lossy(&log_buffer().lock().unwrap()).into_owned()
}

/// A fresh master key in the generated shape, for `AIBANK_BOOTSTRAP_MASTER_KEY`.
pub fn random_master_key() -> String {
    GeneratedKey::new(KeyKind::Master).full.expose().to_owned()
}

pub struct TestApp {
    pub base: String,
    pub port: u16,
    pub client: reqwest::Client,
    pub pool: DbPool,
    /// The bootstrap master key: one platform of this app.
    pub master_key: String,
    pub db: Arc<TestDb>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    pub body: Value,
}

/// The `AIBANK_SECRET_KEY` of every test server.
pub const TEST_SECRET_KEY: &str =
    "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2";

pub fn test_config(db: &TestDb, master_key: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database_url: db.url.clone().into(),
        database_pool_size: 8,
        workers: Some(2),
        bootstrap_master_key: Some(master_key.to_owned().into()),
        // PostgreSQL needs one; SQLite would otherwise write a key file beside the database.
        secret_key: Some(TEST_SECRET_KEY.to_owned().into()),
        // Suites send hundreds of requests from 127.0.0.1; the limiter has its own tests.
        ip_rate_limit: aibank_auth::ratelimit::Limit::OFF,
        public_rate_limit: aibank_auth::ratelimit::Limit::OFF,
        claim_guess_limit: aibank_auth::ratelimit::Limit::OFF,
        ..Config::default()
    }
}

/// The platform-wide upstream keys [`use_mock_upstream`] configures.
pub const MOCK_ANTHROPIC_KEY: &str = "sk-ant-platform-secret";
pub const MOCK_OPENAI_KEY: &str = "sk-openai-platform-secret";
pub const MOCK_GEMINI_KEY: &str = "gemini-platform-secret";

/// Points every provider at a mock upstream; also declares `compat`, an OpenAI-compatible
/// provider priced at $1/$2 per million tokens for every model. Without `with_keys` no
/// platform-wide upstream key is configured.
pub fn use_mock_upstream(c: &mut Config, base: &str, with_keys: bool) {
    let key = |k: &str| with_keys.then(|| k.to_owned().into());
    let mut prices = std::collections::BTreeMap::new();
    prices.insert(
        "*".to_owned(),
        serde_json::from_value(serde_json::json!({"input": 1, "output": 2})).unwrap(),
    );
    c.providers = aibank_gateway::Registry::build(
        (base.to_owned(), key(MOCK_ANTHROPIC_KEY)),
        (base.to_owned(), key(MOCK_OPENAI_KEY)),
        (base.to_owned(), key(MOCK_GEMINI_KEY)),
        vec![aibank_gateway::CustomProvider {
            name: "compat".into(),
            base_url: base.to_owned(),
            api_key_env: Some("COMPAT_KEY".into()),
            prices,
            ..aibank_gateway::CustomProvider::default()
        }],
        std::collections::BTreeMap::new(),
        |var| (var == "COMPAT_KEY").then(|| "sk-compat".to_owned()),
    )
    .unwrap();
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customize: impl FnOnce(&mut Config)) -> TestApp {
    let db = tokio::task::spawn_blocking(TestDb::fresh).await.unwrap();
    spawn_app_on(Arc::new(db), customize, Arc::new(SystemClock)).await
}

/// A server on a fresh database whose clock is `clock`.
pub async fn spawn_app_with_clock(
    clock: SharedClock,
    customize: impl FnOnce(&mut Config),
) -> TestApp {
    let db = tokio::task::spawn_blocking(TestDb::fresh).await.unwrap();
    spawn_app_on(Arc::new(db), customize, clock).await
}

/// Starts a server on an existing database (a second instance, or a restart).
pub async fn spawn_app_on(
    db: Arc<TestDb>,
    customize: impl FnOnce(&mut Config),
    clock: SharedClock,
) -> TestApp {
    capture_logs();
    let master_key = random_master_key();
    let mut config = test_config(&db, &master_key);
    customize(&mut config);
    let master_key = config
        .bootstrap_master_key
        .as_ref()
        .map_or_else(String::new, |k| k.expose().to_owned());
    let app = Application::build(config, clock)
        .await
        .expect("server starts");
    let port = app.port();
    let pool = app.pool().clone();
    let server = tokio::spawn(app.run());
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        port,
        // Redirects are answers to look at, not to follow.
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("test HTTP client"),
        pool,
        master_key,
        db,
        server,
    }
}

impl TestApp {
    /// Sends a request; `body` is sent verbatim (as JSON content) when given.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            body,
        }
    }

    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("GET", path, None, headers).await
    }

    pub async fn post(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Resp {
        self.send("POST", path, Some(body.to_string()), headers)
            .await
    }

    pub async fn patch(&self, path: &str, body: Value, headers: &[(&str, &str)]) -> Resp {
        self.send("PATCH", path, Some(body.to_string()), headers)
            .await
    }

    pub async fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        self.send("DELETE", path, None, headers).await
    }

    /// Registers a self-service agent; returns (agentId, apiKey).
    pub async fn register(&self) -> (String, String) {
        let r = self
            .post("/v1/agents/register", serde_json::json!({}), &[])
            .await;
        assert_eq!(r.status, 201, "{}", r.text);
        (
            r.body["agentId"].as_str().unwrap().to_owned(),
            r.body["apiKey"].as_str().unwrap().to_owned(),
        )
    }

    /// A master key of a brand-new platform (as `aibank master-keys create` makes).
    pub async fn new_platform_key(&self) -> String {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let key = GeneratedKey::new(KeyKind::Master);
            let hash = keys::hash(&key.full).unwrap();
            let mut c = pool.get().unwrap();
            service::create_master_key(
                &mut c,
                &service::Actor::OPERATOR,
                None,
                "other",
                None,
                &key,
                hash,
                0,
            )
            .unwrap();
            key.full.expose().to_owned()
        })
        .await
        .unwrap()
    }

    /// Journal sum and balance of an account, read straight from the database.
    pub async fn ledger_state(&self, account_id: &str) -> (i64, i64) {
        let (pool, id) = (self.pool.clone(), account_id.to_owned());
        tokio::task::spawn_blocking(move || {
            let mut c = pool.get().unwrap();
            let sum = aibank_ledger::journal_sum(&mut c, &id).unwrap();
            let bal = aibank_ledger::balance(&mut c, &id).unwrap().balance_micros;
            (sum, bal)
        })
        .await
        .unwrap()
    }
}

/// The ledger's invariants for one account: balance less debt equals its journal sum, held
/// equals its open holds, none negative, never a debt beside a balance. For a consistent read under concurrency, call it inside a
/// transaction that holds the account's lock.
pub fn assert_account_consistent(c: &mut aibank_store::AnyConnection, id: &str) {
    use aibank_store::models::HOLD_OPEN;
    use aibank_store::schema::{holds, journal_entries as j, spend_buckets};
    use diesel::prelude::*;
    let account = aibank_ledger::balance(c, id).unwrap();
    let open: i64 = holds::table
        .filter(holds::account_id.eq(id))
        .filter(holds::status.eq(HOLD_OPEN))
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
