//! Building and starting the server.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Service as _;
use actix_web::dev::{Server, ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::HttpMessage as _;
use actix_web::{web, App, HttpRequest, HttpServer};
use aibank_auth::access::{client_ip, IpNet};
use aibank_auth::ratelimit::{Class, IpRateLimiter};
use aibank_auth::{AuthState, VerifiedCache};
use aibank_core::extract::JsonLimit;
use aibank_core::{ApiError, SharedClock};
use aibank_store::{DbPool, PoolOptions, StoreError};
use futures_util::future::Either;
use serde_json::Value;
use tracing_actix_web::{RequestId, TracingLogger};

use aibank_core::SecretBox;
use aibank_gateway::metrics::HoldEvent;
use aibank_gateway::Gateway;
use aibank_wallet::Wallets;

use crate::bootstrap::{self, Outcome};
use crate::config::Config;
use crate::handlers::dashboard::{self, SignInGuard};
use crate::handlers::device::{self, ClaimGuard};
use crate::routes;
use crate::state::AppState;

/// Response header carrying the id under which the request was logged.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// The contract, embedded at build time and served as JSON.
pub const OPENAPI_YAML: &str = include_str!("../../../openapi/openapi.yaml");

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("bootstrap master key: {0}")]
    Bootstrap(String),
    #[error("openapi/openapi.yaml is invalid: {0}")]
    OpenApi(String),
    #[error("start-up task failed: {0}")]
    Task(String),
}

impl From<ApiError> for StartupError {
    fn from(e: ApiError) -> Self {
        StartupError::Task(e.to_string())
    }
}

/// Parses the embedded OpenAPI document.
pub fn openapi_document() -> Result<Value, StartupError> {
    serde_yaml_ng::from_str(OPENAPI_YAML).map_err(|e| StartupError::OpenApi(e.to_string()))
}

/// Opens the pool and applies migrations (blocking).
pub fn open_database(config: &Config) -> Result<DbPool, StartupError> {
    let opts = PoolOptions {
        max_size: config.database_pool_size,
        connection_timeout: config.database_timeout,
        create_parent_dir: config.uses_default_database(),
    };
    let pool = DbPool::connect(config.database_url.expose(), &opts)?;
    let applied = pool.migrate()?;
    tracing::info!(
        backend = pool.backend().as_str(),
        applied = applied.len(),
        "database ready"
    );
    Ok(pool)
}

/// The key that seals secrets at rest (wallet keys, agents' provider keys):
/// `AIBANK_SECRET_KEY`, or for SQLite a key file next to the database, created on first
/// start. PostgreSQL deployments share one database across instances, so they must
/// configure the key: every agent gets a wallet, and its key is sealed with it.
fn open_secret_box(config: &Config) -> Result<Arc<SecretBox>, StartupError> {
    if let Some(k) = &config.secret_key {
        let sb = SecretBox::from_key_text(k.expose())
            .map_err(|e| StartupError::Task(format!("AIBANK_SECRET_KEY: {e}")))?;
        return Ok(Arc::new(sb));
    }
    let Some(dir) = config.sqlite_dir() else {
        return Err(StartupError::Task(
            "AIBANK_SECRET_KEY is required with PostgreSQL: it seals agents' wallet keys, and every instance sharing the database needs the same one (generate it with `openssl rand -hex 32`)".into(),
        ));
    };
    let path = dir.join("secret.key");
    let (sb, created) =
        SecretBox::load_or_create(&path).map_err(|e| StartupError::Task(e.to_string()))?;
    if created {
        tracing::info!(path = %path.display(), "created a secret key for sealing stored secrets (mode 0600); back it up with the database");
    }
    Ok(Arc::new(sb))
}

/// Reads `AIBANK_PRICES_FILE` again on every `SIGHUP`. A file that does not load (missing,
/// not JSON, an unknown provider) changes nothing: the prices in force stay.
fn spawn_price_reloader(config: &Config) -> Result<(), StartupError> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups =
        signal(SignalKind::hangup()).map_err(|e| StartupError::Task(format!("SIGHUP: {e}")))?;
    let (providers, file) = (config.providers.clone(), config.prices_file.clone());
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(path) = file.clone() else {
                tracing::warn!("SIGHUP: no AIBANK_PRICES_FILE is set, so no prices to reload");
                continue;
            };
            let providers = providers.clone();
            let shown = path.display().to_string();
            let loaded = tokio::task::spawn_blocking(move || {
                crate::config::load_prices_file(&providers, &path)
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r);
            match loaded {
                Ok(version) => {
                    tracing::info!(price_version = %version, path = %shown, "prices reloaded");
                }
                Err(e) => {
                    tracing::error!(error = %e, "prices not reloaded; the prices in force stay");
                }
            }
        }
    });
    Ok(())
}

/// Releases expired holds and forgets old idempotency keys, every `sweep_interval`.
fn spawn_sweeper(
    pool: DbPool,
    clock: SharedClock,
    config: &Config,
    metrics: Arc<aibank_gateway::metrics::GatewayMetrics>,
) {
    let (every, keep) = (config.sweep_interval, config.idempotency_ttl);
    let keep_ms = i64::try_from(keep.as_millis()).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match aibank_ledger::sweeper::sweep_once(&pool, &clock).await {
                Ok(0) => {}
                Ok(n) => {
                    tracing::info!(released = n, "expired holds released");
                    metrics.holds(HoldEvent::Expired, u64::try_from(n).unwrap_or(u64::MAX));
                }
                Err(e) => tracing::warn!(error = %e, "hold sweep failed"),
            }
            let cutoff = clock.now_ms().saturating_sub(keep_ms);
            let res = pool
                .run(move |c| {
                    aibank_store::repo::idempotency::delete_older_than(c, cutoff)
                        .map_err(StoreError::from)
                })
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "idempotency key clean-up failed");
            }
            let now = clock.now_ms();
            let res = pool
                .run(move |c| {
                    aibank_store::repo::keys::delete_expired_signatures(c, now)
                        .map_err(StoreError::from)
                })
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "used-signature clean-up failed");
            }
        }
    });
}

fn gateway(
    config: &Config,
    (pool, clock): (&DbPool, &SharedClock),
    secret_box: Arc<SecretBox>,
    public_url: &str,
    metrics: &crate::metrics::Metrics,
) -> Result<Gateway, StartupError> {
    let x402 = config
        .x402
        .clone()
        .map(|mut s| {
            public_url.clone_into(&mut s.public_url);
            aibank_x402::X402::new(s, Arc::new(crate::identities::X402Payers))
                .map(|x| x.with_metrics(metrics.x402()))
        })
        .transpose()
        .map_err(|e| StartupError::Task(format!("x402: {e}")))?
        .map(Arc::new);
    if let Some(x) = &x402 {
        tracing::info!(pay_to = %x.settings.pay_to, default_chain = x.settings.default_chain.name(), settler = ?x.settler_address(), "x402 payments accepted");
    }
    Ok(Gateway::new(
        config.providers.clone(),
        config.gateway.clone(),
        secret_box,
        pool.clone(),
        clock.clone(),
    )
    .map_err(|e| StartupError::Task(format!("HTTP client: {e}")))?
    .with_x402(x402)
    .with_metrics(metrics.gateway())
    .with_catalog(
        aibank_gateway::catalog::Catalog::new(
            config.catalog_allow_private,
            config.catalog_fee_percent,
            config.gateway.connect_timeout,
        )
        .map_err(|e| StartupError::Task(format!("catalog HTTP client: {e}")))?,
    ))
}

fn hyperliquid(config: &Config) -> Result<Arc<crate::hyperliquid::Hyperliquid>, StartupError> {
    crate::hyperliquid::Hyperliquid::new(&config.hyperliquid)
        .map(Arc::new)
        .map_err(|e| StartupError::Task(format!("Hyperliquid HTTP client: {e}")))
}

/// Credential checks, the per-IP limiter, the claim code guess budget and the dashboard's
/// sign-in budget, shared by all workers.
fn auth_state(
    config: &Config,
    pool: &DbPool,
    clock: &SharedClock,
) -> (
    web::Data<AuthState>,
    Arc<IpRateLimiter>,
    web::Data<ClaimGuard>,
    web::Data<SignInGuard>,
) {
    let auth = AuthState::new(
        pool.clone(),
        VerifiedCache::new(config.auth_cache_ttl, 100_000),
        clock.clone(),
        config.auth_status_ttl,
    )
    .with_trusted_proxies(config.trusted_proxies.clone());
    let limiter = IpRateLimiter::new(
        config.ip_rate_limit,
        config.public_rate_limit,
        clock.clone(),
    );
    let guard = ClaimGuard::new(config.claim_guess_limit, clock.clone());
    let sign_in = SignInGuard::new(config.dashboard_sign_in_limit, clock.clone());
    (
        web::Data::new(auth),
        Arc::new(limiter),
        web::Data::new(guard),
        web::Data::new(sign_in),
    )
}

/// A listener on `addr`, and the port it got.
fn bind(addr: std::net::SocketAddr) -> Result<(TcpListener, u16), StartupError> {
    let failed = |source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(failed)?;
    let port = listener.local_addr().map_err(failed)?.port();
    Ok((listener, port))
}

/// `GET /metrics` alone on `addr`, with one worker: nothing else is served there.
fn metrics_server(
    addr: std::net::SocketAddr,
    state: &web::Data<AppState>,
) -> Result<(u16, Server), StartupError> {
    let (listener, port) = bind(addr)?;
    let state = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/metrics", web::get().to(crate::metrics::scrape_listener))
            .default_service(web::to(routes::not_found))
    })
    .workers(1)
    .listen(listener)
    .map_err(|source| StartupError::Bind {
        addr: addr.to_string(),
        source,
    })?
    .run();
    tracing::info!(port, "metrics listening");
    Ok((port, server))
}

/// Endpoints anyone may call without a credential draw from the stricter public budget;
/// the health check (probed by load balancers) draws from none.
fn limit_ip(limiter: &IpRateLimiter, trusted: &[IpNet], req: &HttpRequest) -> Result<(), ApiError> {
    let class = match (req.method().as_str(), req.path()) {
        (_, "/v1/health") => return Ok(()),
        ("POST", "/v1/agents/register" | "/v1/keys")
        | ("GET", "/v1/providers" | "/openapi.json")
        | (_, "/device" | "/dashboard/sign-in") => Class::Public,
        ("GET", p) if p.starts_with("/v1/payments/") => Class::Public,
        (_, p) if p.starts_with("/v1/device/") => Class::Public,
        _ => Class::General,
    };
    match client_ip(req, trusted) {
        Some(ip) => limiter.check(ip, class),
        None => Ok(()),
    }
}

/// The id TracingLogger put on this request's log lines, as a header value.
fn request_id(req: &ServiceRequest) -> Option<HeaderValue> {
    let id = req
        .extensions()
        .get::<RequestId>()
        .map(ToString::to_string)?;
    HeaderValue::from_str(&id).ok()
}

/// Echoes the request's id on its answer. A request whose handler panics is answered
/// `500 INTERNAL` (with its id), alone, instead of the panic taking down its worker thread
/// and every connection the worker serves.
async fn answer_with_id<B>(
    id: Option<HeaderValue>,
    answer: impl std::future::Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    use futures_util::FutureExt as _;
    let Ok(answer) = std::panic::AssertUnwindSafe(answer).catch_unwind().await else {
        tracing::error!("a request handler panicked; answered 500");
        let e = ApiError::internal("a request handler panicked");
        return Err(match id {
            Some(v) => e.with_header(REQUEST_ID_HEADER, v),
            None => e,
        }
        .into());
    };
    let mut res = answer?;
    if let Some(v) = id {
        res.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    Ok(res)
}

/// The answer to a request refused before routing: a page on the claim page and the
/// dashboard, which people read, else the JSON envelope.
fn refused(req: ServiceRequest, e: ApiError) -> ServiceResponse {
    if req.path() == "/device" {
        let res = device::error_page(&e);
        return req.into_response(res);
    }
    if req.path() == "/dashboard" || req.path().starts_with("/dashboard/") {
        let res = dashboard::error_page(&e);
        return req.into_response(res);
    }
    req.error_response(e)
}

/// The base of links the server hands out (`verificationUri`): `AIBANK_PUBLIC_URL`, else
/// the address it listens on.
fn public_url(config: &Config, port: u16) -> String {
    if let Some(u) = &config.public_url {
        return u.trim_end_matches('/').to_owned();
    }
    let ip = config.listen.ip();
    let host = if ip.is_unspecified() {
        "localhost".to_owned()
    } else if ip.is_ipv6() {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    format!("http://{host}:{port}")
}

/// A bound, not yet awaited server.
pub struct Application {
    port: u16,
    server: Server,
    pool: DbPool,
    /// `AIBANK_METRICS_LISTEN`'s server and its port.
    metrics: Option<(u16, Server)>,
}

/// Says what became of the bootstrap master key.
fn log_bootstrap(outcome: Outcome) {
    match outcome {
        Outcome::Created { id } => tracing::info!(key_id = %id, "bootstrap master key created"),
        Outcome::Present { id } => tracing::info!(key_id = %id, "bootstrap master key present"),
        Outcome::Revoked { id } => tracing::warn!(
            key_id = %id,
            "bootstrap master key was revoked through the API and stays revoked"
        ),
    }
}

impl Application {
    /// Connects, migrates, bootstraps and binds. The server runs when [`run`] is awaited.
    ///
    /// [`run`]: Application::run
    pub async fn build(config: Config, clock: SharedClock) -> Result<Self, StartupError> {
        for w in &config.warnings {
            tracing::warn!("{w}");
        }
        let openapi = Arc::new(openapi_document()?);
        let cfg = config.clone();
        let boot_clock = clock.clone();
        let pool = tokio::task::spawn_blocking(move || -> Result<DbPool, StartupError> {
            let pool = open_database(&cfg)?;
            if let Some(key) = &cfg.bootstrap_master_key {
                log_bootstrap(bootstrap::ensure_master_key(
                    &pool,
                    key,
                    boot_clock.now_ms(),
                )?);
            }
            Ok(pool)
        })
        .await
        .map_err(|e| StartupError::Task(e.to_string()))??;

        let (listener, port) = bind(config.listen)?;

        let metrics = crate::metrics::Metrics::new()
            .map_err(|e| StartupError::Task(format!("metrics: {e}")))?;
        spawn_sweeper(pool.clone(), clock.clone(), &config, metrics.gateway());
        spawn_price_reloader(&config)?;
        let secret_box = open_secret_box(&config)?;
        let public_url = public_url(&config, port);
        let gateway = web::Data::new(gateway(
            &config,
            (&pool, &clock),
            secret_box.clone(),
            &public_url,
            &metrics,
        )?);
        let wallets = Arc::new(
            Wallets::new(pool.clone(), secret_box, clock.clone(), &config.wallets)
                .map_err(|e| StartupError::Task(format!("wallets: {e}")))?,
        );
        let hyperliquid = hyperliquid(&config)?;
        let (auth, limiter, claim_guard, sign_in_guard) = auth_state(&config, &pool, &clock);
        let workers = config.workers;
        let state = web::Data::new(AppState {
            metrics: Arc::new(metrics),
            pool: pool.clone(),
            config: Arc::new(config),
            clock,
            auth: auth.clone(),
            gateway: gateway.clone(),
            wallets,
            hyperliquid,
            public_url,
            openapi,
        });
        let metrics = match state.config.metrics_listen {
            Some(addr) => Some(metrics_server(addr, &state)?),
            None => None,
        };
        let mut server = HttpServer::new(move || {
            let (limiter, trusted) = (limiter.clone(), auth.trusted_proxies().to_vec());
            App::new()
                .wrap_fn(
                    move |req, srv| match limit_ip(&limiter, &trusted, req.request()) {
                        Ok(()) => Either::Left(srv.call(req)),
                        Err(e) => Either::Right(std::future::ready(Ok(refused(req, e)))),
                    },
                )
                .wrap_fn(|req, srv| answer_with_id(request_id(&req), srv.call(req)))
                .wrap(actix_web::middleware::from_fn(crate::metrics::observe))
                .wrap(TracingLogger::default())
                .app_data(state.clone())
                .app_data(auth.clone())
                .app_data(gateway.clone())
                .app_data(claim_guard.clone())
                .app_data(sign_in_guard.clone())
                .app_data(JsonLimit(state.config.max_json_bytes))
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        });
        if let Some(n) = workers {
            server = server.workers(n);
        }
        let server = server
            .listen(listener)
            .map_err(|source| StartupError::Bind {
                addr: "listener".into(),
                source,
            })?
            .run();
        tracing::info!(port, "aibank listening");
        Ok(Application {
            port,
            server,
            pool,
            metrics,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The port `GET /metrics` is served on alone, with `AIBANK_METRICS_LISTEN`.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics.as_ref().map(|(port, _)| *port)
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Serves until the process is asked to stop (SIGINT/SIGTERM: graceful shutdown).
    pub async fn run(self) -> std::io::Result<()> {
        match self.metrics {
            None => self.server.await,
            Some((_, metrics)) => {
                let (served, metrics) = tokio::join!(self.server, metrics);
                served.and(metrics)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use actix_web::test;

    #[actix_web::test]
    async fn a_handler_that_panics_is_answered_500_and_the_app_goes_on() {
        async fn boom(path: web::Path<String>) -> &'static str {
            // What serde_json does with a key on a number: panic.
            let mut v = serde_json::json!(1);
            v[path.as_str()] = Value::Null;
            "never"
        }
        let app = test::init_service(
            App::new()
                .wrap_fn(|req, srv| answer_with_id(request_id(&req), srv.call(req)))
                .wrap(TracingLogger::default())
                .route("/boom/{key}", web::get().to(boom))
                .route("/ok", web::get().to(|| async { "fine" })),
        )
        .await;
        let err =
            test::try_call_service(&app, test::TestRequest::get().uri("/boom/k").to_request())
                .await
                .expect_err("a panic is an error response");
        let res = err.error_response();
        assert_eq!(res.status(), 500);
        assert!(
            res.headers().contains_key(REQUEST_ID_HEADER),
            "the answer names its request"
        );
        let body = actix_web::body::to_bytes(res.into_body()).await.unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "INTERNAL");
        assert!(
            !body.to_string().contains("panicked"),
            "nothing of it is told"
        );
        let res = test::call_service(&app, test::TestRequest::get().uri("/ok").to_request()).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers().contains_key(REQUEST_ID_HEADER));
    }
}
