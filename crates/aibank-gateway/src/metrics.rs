//! What the gateway counts for Prometheus: its calls by provider, model and outcome; how
//! long upstreams take to begin answering and to finish; the time aibank itself adds to a
//! call; and the holds calls place and settle, with what usage beyond them left owed. The
//! server registers these beside its own and serves them at `/metrics`. Labels are provider
//! names, priced model names (or an http provider's endpoint template), outcome classes
//! and hold events, never a key or an id.

use std::cell::Cell;
use std::future::Future;
use std::time::{Duration, Instant};

use aibank_core::Usd;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

/// The model label of a call to an endpoint that names no model (a model listing).
pub const NO_MODEL: &str = "-";

pub struct GatewayMetrics {
    calls: IntCounterVec,
    first_byte: HistogramVec,
    upstream: HistogramVec,
    overhead: HistogramVec,
    holds: IntCounterVec,
    owed: IntCounter,
}

/// What a hold became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldEvent {
    Placed,
    Captured,
    Released,
    /// Released by the sweeper when its time was up.
    Expired,
}

impl HoldEvent {
    fn label(self) -> &'static str {
        match self {
            HoldEvent::Placed => "placed",
            HoldEvent::Captured => "captured",
            HoldEvent::Released => "released",
            HoldEvent::Expired => "expired",
        }
    }
}

/// Buckets for the time aibank spends on a call: its ledger steps take tenths of a
/// millisecond to a few milliseconds.
const OVERHEAD_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.003, 0.005, 0.007_5, 0.01, 0.025, 0.05, 0.1, 0.25,
    1.0,
];
const UPSTREAM_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

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
            .buckets(UPSTREAM_BUCKETS.to_vec()),
            &["provider"],
        )?;
        let upstream = HistogramVec::new(
            HistogramOpts::new(
                "aibank_gateway_upstream_seconds",
                "Time spent waiting on the upstream for a whole call: its head, failovers \
                 included, and its body to the last byte (a stream: to its end)",
            )
            .buckets(UPSTREAM_BUCKETS.to_vec()),
            &["provider"],
        )?;
        let overhead = HistogramVec::new(
            HistogramOpts::new(
                "aibank_gateway_overhead_seconds",
                "Time aibank adds to a gateway call that reached an upstream, upstream \
                 excluded: from the request to the answer (a stream: to its head), less the \
                 time spent waiting on the upstream",
            )
            .buckets(OVERHEAD_BUCKETS.to_vec()),
            &["provider"],
        )?;
        let holds = IntCounterVec::new(
            Opts::new(
                "aibank_holds_total",
                "Holds placed on balances for calls, and how they ended (captured, \
                 released, expired)",
            ),
            &["event"],
        )?;
        let owed = IntCounter::new(
            "aibank_owed_micro_usd_total",
            "Usage served beyond a call's hold that the balance did not cover, now owed, \
             in micro-USD",
        )?;
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(first_byte.clone()))?;
        registry.register(Box::new(upstream.clone()))?;
        registry.register(Box::new(overhead.clone()))?;
        registry.register(Box::new(holds.clone()))?;
        registry.register(Box::new(owed.clone()))?;
        for e in [
            HoldEvent::Placed,
            HoldEvent::Captured,
            HoldEvent::Released,
            HoldEvent::Expired,
        ] {
            holds.with_label_values(&[e.label()]);
        }
        Ok(GatewayMetrics {
            calls,
            first_byte,
            upstream,
            overhead,
            holds,
            owed,
        })
    }

    /// Counts `n` holds that became `event`.
    pub fn holds(&self, event: HoldEvent, n: u64) {
        self.holds.with_label_values(&[event.label()]).inc_by(n);
    }

    /// Counts usage that was served beyond its hold and the balance.
    pub(crate) fn owed(&self, amount: Usd) {
        if let Ok(micros) = u64::try_from(amount.micros()) {
            self.owed.inc_by(micros);
        }
    }

    pub(crate) fn upstream(&self, provider: &str, took: Duration) {
        self.upstream
            .with_label_values(&[provider])
            .observe(took.as_secs_f64());
    }

    pub(crate) fn overhead(&self, provider: &str, took: Duration) {
        self.overhead
            .with_label_values(&[provider])
            .observe(took.as_secs_f64());
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

tokio::task_local! {
    /// The time the current gateway call has spent waiting on its upstream so far, and
    /// whether it reached one.
    static WAITED: Cell<Option<Duration>>;
}

/// Runs a gateway call, and tells how long of it was spent waiting on the upstream
/// (`None`: it reached none).
pub(crate) async fn timed<T>(call: impl Future<Output = T>) -> (T, Option<Duration>) {
    WAITED
        .scope(Cell::new(None), async {
            let out = call.await;
            (out, WAITED.with(Cell::get))
        })
        .await
}

/// Awaits `wait`, a step of the upstream's (sending the call, reading its answer), counted
/// as time spent waiting on it by the call [`timed`] runs.
pub(crate) async fn upstream_wait<T>(wait: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = wait.await;
    let took = started.elapsed();
    // Outside a timed call (a stream's pump, a test) there is nothing to add to.
    let _ = WAITED.try_with(|w| w.set(Some(w.get().unwrap_or_default() + took)));
    out
}

/// The time waited on the upstream so far by the current timed call.
pub(crate) fn waited() -> Duration {
    WAITED
        .try_with(|w| w.get().unwrap_or_default())
        .unwrap_or_default()
}
