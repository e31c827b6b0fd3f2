//! Prometheus metrics: the HTTP requests the server answered (by route template, method
//! and status) and how long they took, requests refused by a rate limit (by the limit's
//! name), the database pool's connections and waiters, the gateway's
//! (`aibank_gateway::metrics`) and the payments' (`aibank_x402::metrics`); and
//! `GET /metrics`, which serves them in the Prometheus text format to a caller presenting
//! `AIBANK_METRICS_TOKEN` as a Bearer token (without the setting the route is off: 404),
//! or to anyone reaching `AIBANK_METRICS_LISTEN`, an address of its own. Labels are route
//! templates, methods, statuses, limit names and outcome classes only, never a path with
//! ids in it, a key or a secret.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use aibank_core::ApiError;
use aibank_gateway::metrics::GatewayMetrics;
use aibank_store::DbPool;
use aibank_x402::metrics::X402Metrics;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// The label of a request no route matched.
const UNMATCHED: &str = "unmatched";

pub struct Metrics {
    registry: Registry,
    gateway: Arc<GatewayMetrics>,
    x402: X402Metrics,
    pool: IntGaugeVec,
    pool_waiting: IntGauge,
    writes_pending: IntGauge,
    combined_batches: IntCounter,
    combined_writes: IntCounter,
    rate_limited: IntCounterVec,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
}

/// The names rate-limit refusals are counted by (`limitName` in their body); any other is
/// counted as `other`.
const LIMIT_NAMES: [&str; 7] = [
    "ipRequests",
    "ipPublicRequests",
    "ipFailures",
    "dailyMessageLimit",
    "rpmLimit",
    "tpmLimit",
    "bankr",
];

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new(
                "aibank_http_requests_total",
                "HTTP requests answered, by route template, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "aibank_http_request_duration_seconds",
                "Time to answer an HTTP request (a stream: to its head), by route template and method",
            )
            .buckets(vec![
                0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["route", "method"],
        )?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_seconds.clone()))?;
        let gateway = Arc::new(GatewayMetrics::register(&registry)?);
        let pool = IntGaugeVec::new(
            Opts::new(
                "aibank_db_pool_connections",
                "Database pool connections, by state (in_use, idle), when scraped",
            ),
            &["state"],
        )?;
        registry.register(Box::new(pool.clone()))?;
        let pool_waiting = IntGauge::new(
            "aibank_db_pool_waiters",
            "Callers waiting for a database pool connection, when scraped",
        )?;
        registry.register(Box::new(pool_waiting.clone()))?;
        let writes_pending = IntGauge::new(
            "aibank_db_writes_pending",
            "SQLite: writes queued for the single writer or being committed, when scraped \
             (0 on PostgreSQL)",
        )?;
        registry.register(Box::new(writes_pending.clone()))?;
        let combined_batches = IntCounter::new(
            "aibank_db_combined_batches_total",
            "PostgreSQL: batches of one agent's queued ledger writes run in one transaction",
        )?;
        registry.register(Box::new(combined_batches.clone()))?;
        let combined_writes = IntCounter::new(
            "aibank_db_combined_writes_total",
            "PostgreSQL: ledger writes that ran in those batches",
        )?;
        registry.register(Box::new(combined_writes.clone()))?;
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "aibank_rate_limited_total",
                "Requests refused 429 by one of aibank's limits, by the limit's name \
                 (limitName: ipRequests, ipPublicRequests, ipFailures, dailyMessageLimit, \
                 rpmLimit, tpmLimit, bankr)",
            ),
            &["limit"],
        )?;
        registry.register(Box::new(rate_limited.clone()))?;
        for name in LIMIT_NAMES {
            rate_limited.with_label_values(&[name]);
        }
        let x402 = X402Metrics::register(&registry)?;
        Ok(Metrics {
            registry,
            gateway,
            x402,
            pool,
            pool_waiting,
            writes_pending,
            combined_batches,
            combined_writes,
            rate_limited,
            http_requests,
            http_seconds,
        })
    }

    /// The gateway's part, to hand to the gateway.
    pub fn gateway(&self) -> Arc<GatewayMetrics> {
        self.gateway.clone()
    }

    /// The payments' part, to hand to x402.
    pub fn x402(&self) -> X402Metrics {
        self.x402.clone()
    }

    /// Counts a request refused by the limit named `name` (`None`: unnamed).
    pub fn rate_limited(&self, name: Option<&str>) {
        let name = name.filter(|n| LIMIT_NAMES.contains(n)).unwrap_or("other");
        self.rate_limited.with_label_values(&[name]).inc();
    }

    /// Counts one answered request. `route` is the matched template (`None`: no route).
    pub fn observe_http(
        &self,
        route: Option<&str>,
        method: &str,
        status: StatusCode,
        took: Duration,
    ) {
        let route = route.unwrap_or(UNMATCHED);
        // Only the standard methods: anything else a client sends is one label, not many.
        let method = match method {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => method,
            _ => "OTHER",
        };
        self.http_requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.http_seconds
            .with_label_values(&[route, method])
            .observe(took.as_secs_f64());
    }

    /// Everything, in the Prometheus text format, with `pool`'s connections as they are now.
    pub fn render(&self, pool: &DbPool) -> Result<String, ApiError> {
        let usage = pool.usage();
        self.pool
            .with_label_values(&["in_use"])
            .set(i64::from(usage.in_use));
        self.pool
            .with_label_values(&["idle"])
            .set(i64::from(usage.idle));
        self.pool_waiting.set(i64::from(usage.waiting));
        self.writes_pending.set(i64::from(usage.writes_pending));
        // The pool counts; the counters catch up to it (only a scrape moves them).
        for (counter, now) in [
            (&self.combined_batches, usage.combined_batches),
            (&self.combined_writes, usage.combined_writes),
        ] {
            counter.inc_by(now.saturating_sub(counter.get()));
        }
        self.encode()
    }

    fn encode(&self) -> Result<String, ApiError> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(ApiError::internal)?;
        String::from_utf8(out).map_err(ApiError::internal)
    }
}

/// The middleware that counts every answered request (refusals by the per-IP limit and
/// unknown routes included).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    // A standard method clones without allocating.
    let method = req.method().clone();
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let status = res.status();
        m.observe_http(
            res.request().match_pattern().as_deref(),
            method.as_str(),
            status,
            started.elapsed(),
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            // Ours carry the limit's name; a provider's 429 passed back as is carries none
            // and is counted with the gateway's calls instead.
            let ours = res
                .response()
                .error()
                .and_then(|e| e.as_error::<ApiError>());
            if let Some(e) = ours {
                m.rate_limited(e.member("limitName").and_then(serde_json::Value::as_str));
            }
        }
    }
    Ok(res)
}

/// `GET /metrics`: 404 unless `AIBANK_METRICS_TOKEN` is set, 401 without it as a Bearer
/// token.
pub async fn scrape(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(token) = &state.config.metrics_token else {
        return Err(ApiError::not_found(
            "Metrics are off: set AIBANK_METRICS_TOKEN",
        ));
    };
    serve(&req, &state, Some(token))
}

/// `GET /metrics` on `AIBANK_METRICS_LISTEN`: behind the token only when one is set.
pub async fn scrape_listener(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    serve(&req, &state, state.config.metrics_token.as_ref())
}

fn serve(
    req: &HttpRequest,
    state: &AppState,
    token: Option<&aibank_core::SecretString>,
) -> Result<HttpResponse, ApiError> {
    if let Some(token) = token {
        check_token(req, token)?;
    }
    Ok(HttpResponse::Ok()
        .content_type(TextEncoder::new().format_type())
        .body(state.metrics.render(&state.pool)?))
}

fn check_token(req: &HttpRequest, token: &aibank_core::SecretString) -> Result<(), ApiError> {
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // Digests compared, so the time taken says nothing about the token.
    if Sha256::digest(presented.trim().as_bytes()) != Sha256::digest(token.expose().as_bytes()) {
        return Err(ApiError::unauthorized(
            "Metrics need `Authorization: Bearer <AIBANK_METRICS_TOKEN>`",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_are_counted_by_template_and_odd_methods_share_a_label() {
        let m = Metrics::new().unwrap();
        m.observe_http(
            Some("/v1/keys/{id}"),
            "PATCH",
            StatusCode::OK,
            Duration::from_millis(3),
        );
        m.observe_http(
            Some("/v1/keys/{id}"),
            "PATCH",
            StatusCode::OK,
            Duration::from_millis(4),
        );
        m.observe_http(
            None,
            "BREW",
            StatusCode::NOT_FOUND,
            Duration::from_millis(1),
        );
        let text = m.encode().unwrap();
        assert!(text.contains(
            r#"aibank_http_requests_total{method="PATCH",route="/v1/keys/{id}",status="200"} 2"#
        ));
        assert!(text.contains(
            r#"aibank_http_requests_total{method="OTHER",route="unmatched",status="404"} 1"#
        ));
        assert!(text.contains(
            r#"aibank_http_request_duration_seconds_count{method="PATCH",route="/v1/keys/{id}"} 2"#
        ));
    }
}
