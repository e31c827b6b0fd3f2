//! What the gateway counts for Prometheus: its calls by provider, model and outcome, and
//! how long upstreams take to begin answering. The server registers these beside its own
//! and serves them at `/metrics`. Labels are provider names, priced model names (or an
//! http provider's endpoint template) and outcome classes, never a key or an id.

use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

/// The model label of a call to an endpoint that names no model (a model listing).
pub const NO_MODEL: &str = "-";

pub struct GatewayMetrics {
    calls: IntCounterVec,
    first_byte: HistogramVec,
}

impl std::fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayMetrics").finish_non_exhaustive()
    }
}

impl GatewayMetrics {
    /// Made and registered in `registry`.
    pub fn register(registry: &Registry) -> Result<GatewayMetrics, prometheus::Error> {
        let calls = IntCounterVec::new(
            Opts::new(
                "aibank_gateway_calls_total",
                "Gateway calls that reached an upstream, by provider, model and outcome \
                 (ok, client_error, rate_limited, upstream_error, unreachable)",
            ),
            &["provider", "model", "outcome"],
        )?;
        let first_byte = HistogramVec::new(
            HistogramOpts::new(
                "aibank_gateway_upstream_first_byte_seconds",
                "Time from sending a call upstream to its answer's head, failovers included",
            )
            .buckets(vec![
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ]),
            &["provider"],
        )?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(first_byte.clone()))?;
        Ok(GatewayMetrics { calls, first_byte })
    }

    /// Counts a call whose upstream answered `status` (`None`: none could be reached)
    /// after `took`.
    pub(crate) fn call(&self, provider: &str, model: &str, status: Option<u16>, took: Duration) {
        let outcome = match status {
            None => "unreachable",
            Some(200..=399) => "ok",
            Some(429) => "rate_limited",
            Some(400..=499) => "client_error",
            Some(_) => "upstream_error",
        };
        self.calls
            .with_label_values(&[provider, model, outcome])
            .inc();
        if status.is_some() {
            self.first_byte
                .with_label_values(&[provider])
                .observe(took.as_secs_f64());
        }
    }
}
