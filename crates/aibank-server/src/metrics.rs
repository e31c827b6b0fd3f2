//! Prometheus metrics: the HTTP requests the server answered (by route template, method
//! and status) and how long they took, the gateway's (`aibank_gateway::metrics`), and `GET /metrics`, which serves them in the
//! Prometheus text format to a caller presenting `AIBANK_METRICS_TOKEN` as a Bearer token
//! (without the setting the route is off: 404). Labels are route templates, methods and
//! statuses only, never a path with ids in it, a key or a secret.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpRequest, HttpResponse};
use aibank_core::ApiError;
use aibank_gateway::metrics::GatewayMetrics;
use aibank_store::DbPool;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use sha2::{Digest, Sha256};

use crate::state::AppState;

/// The label of a request no route matched.
const UNMATCHED: &str = "unmatched";

pub struct Metrics {
    registry: Registry,
    gateway: Arc<GatewayMetrics>,
    pool: IntGaugeVec,
    http_requests: IntCounterVec,
    http_seconds: HistogramVec,
}

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
        Ok(Metrics {
            registry,
            gateway,
            pool,
            http_requests,
            http_seconds,
        })
    }

    /// The gateway's part, to hand to the gateway.
    pub fn gateway(&self) -> Arc<GatewayMetrics> {
        self.gateway.clone()
    }

    /// Counts one answered request. `route` is the matched template (`None`: no route).
    pub fn observe_http(&self, route: Option<&str>, method: &str, status: u16, took: Duration) {
        let route = route.unwrap_or(UNMATCHED);
        // Only the standard methods: anything else a client sends is one label, not many.
        let method = match method {
            "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD" | "OPTIONS" => method,
            _ => "OTHER",
        };
        self.http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.http_seconds
            .with_label_values(&[route, method])
            .observe(took.as_secs_f64());
    }

    /// Everything, in the Prometheus text format, with `pool`'s connections as they are now.
    pub fn render(&self, pool: &DbPool) -> Result<String, ApiError> {
        let (in_use, idle) = pool.usage();
        self.pool
            .with_label_values(&["in_use"])
            .set(i64::from(in_use));
        self.pool.with_label_values(&["idle"]).set(i64::from(idle));
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
    let method = req.method().as_str().to_owned();
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        m.observe_http(
            res.request().match_pattern().as_deref(),
            &method,
            res.status().as_u16(),
            started.elapsed(),
        );
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
    Ok(HttpResponse::Ok()
        .content_type(TextEncoder::new().format_type())
        .body(state.metrics.render(&state.pool)?))
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
            200,
            Duration::from_millis(3),
        );
        m.observe_http(
            Some("/v1/keys/{id}"),
            "PATCH",
            200,
            Duration::from_millis(4),
        );
        m.observe_http(None, "BREW", 404, Duration::from_millis(1));
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
