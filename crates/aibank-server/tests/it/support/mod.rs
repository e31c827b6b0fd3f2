//! The server under test: `spawn_app` starts the real application in this process on a
//! random port over a fresh database (see `aibank_testkit::TestDb`), and [`client`] holds
//! the typed callers tests drive it with. Everything of the test kit is re-exported, so a
//! test module needs only `use crate::support::…`.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use aibank_auth::{keys, GeneratedKey, KeyKind};
use aibank_core::{SecretString, SharedClock, SystemClock};
use aibank_gateway::bankr::BankrPrices;
use aibank_server::config::Config;
use aibank_server::{audit, identities, Application};
use aibank_store::DbPool;
use serde_json::Value;

pub use aibank_testkit::*;

pub mod browser;
pub mod client;
pub use client::{api, master, Agent, Http, Resp};

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
    http: Http,
    pub pool: DbPool,
    /// The bootstrap master key: one platform of this app.
    pub master_key: String,
    pub db: Arc<TestDb>,
    /// `AIBANK_METRICS_LISTEN`'s port, when set.
    pub metrics_port: Option<u16>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

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
        metrics_token: Some(METRICS_TOKEN.to_owned().into()),
        ..Config::default()
    }
}

/// The `AIBANK_METRICS_TOKEN` of test servers ([`TestApp::scrape`]).
pub const METRICS_TOKEN: &str = "metrics-token-7f3a";

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
    let metrics_port = app.metrics_port();
    let pool = app.pool().clone();
    let server = tokio::spawn(app.run());
    let base = format!("http://127.0.0.1:{port}");
    // Redirects are answers to look at, not to follow.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("test HTTP client");
    TestApp {
        http: Http {
            base: base.clone(),
            client: client.clone(),
        },
        base,
        port,
        client,
        pool,
        master_key,
        db,
        metrics_port,
        server,
    }
}

impl TestApp {
    /// `GET /metrics`, as Prometheus would scrape it: the text.
    pub async fn scrape(&self) -> String {
        let auth = format!("Bearer {METRICS_TOKEN}");
        let r = self.get("/metrics", &[("Authorization", &auth)]).await;
        r.assert_ok();
        r.text
    }

    /// The value of the sample written `series` (`name{labels}`, labels in the order
    /// Prometheus writes them: by name) in a scrape now; `None` when there is none.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        sample(&self.scrape().await, series)
    }
    /// Sends a request; `body` is sent verbatim (as JSON content) when given.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        headers: &[(&str, &str)],
    ) -> Resp {
        self.http.send(method, path, body, headers).await
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

    /// A master key of a brand-new platform (as `aibank master-keys create` makes).
    pub async fn new_platform_key(&self) -> String {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let key = GeneratedKey::new(KeyKind::Master);
            let hash = keys::hash(&key.full).unwrap();
            let mut c = pool.get().unwrap();
            identities::create_master_key(
                &mut c,
                &audit::Actor::OPERATOR,
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

/// Points the built-in `bankr` provider at `base`, with `platform_key` as `BANKR_API_KEY`.
pub fn use_mock_bankr(c: &mut Config, base: &str, platform_key: Option<&str>, prices: BankrPrices) {
    let unused = |url: &str| (url.to_owned(), None);
    c.providers = aibank_gateway::Registry::build(
        unused("http://127.0.0.1:9"),
        unused("http://127.0.0.1:9"),
        unused("http://127.0.0.1:9"),
        vec![aibank_gateway::bankr::provider(
            base,
            platform_key.map(SecretString::new),
            prices,
        )],
        BTreeMap::new(),
        std::collections::BTreeMap::new(),
        |_| None,
    )
    .expect("a registry with bankr");
}

/// x402 taken on Base Sepolia against `anvil`, paid to `pay_to`: tx-hash payments of the
/// minimal token, one confirmation, a $0.01 smallest payment, and no settlement account.
pub fn x402_settings(anvil: &anvil::Anvil, pay_to: &str) -> aibank_x402::X402Settings {
    use aibank_x402::{Chain, ChainConfig};
    aibank_x402::X402Settings {
        pay_to: pay_to.parse().expect("an address"),
        chains: vec![ChainConfig {
            chain: Chain::BaseSepolia,
            rpc_url: anvil.url.clone().into(),
            usdc: Chain::BaseSepolia.default_usdc(),
            usdc_domain: aibank_x402::exact::TokenDomain::usdc(Chain::BaseSepolia),
        }],
        default_chain: Chain::BaseSepolia,
        confirmations: 1,
        max_age: None,
        require_signature: false,
        min_price: aibank_core::Usd::from_micros(10_000),
        rpc_timeout: std::time::Duration::from_secs(3),
        max_timeout_secs: aibank_x402::MAX_TIMEOUT_SECONDS,
        settler_key: None,
        public_url: String::new(),
        settle_wait: std::time::Duration::from_secs(10),
    }
}

/// The value of the sample written `series` in Prometheus text `text`.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}
