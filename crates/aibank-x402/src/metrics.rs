//! What payments count for Prometheus: transfers verified on chain and authorizations
//! settled, by outcome. Labels are outcome classes only, never a payer, a hash or an amount.

use aibank_core::{ApiError, ErrorCode};
use prometheus::{IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct X402Metrics {
    verifications: IntCounterVec,
    settlements: IntCounterVec,
}

impl std::fmt::Debug for X402Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X402Metrics").finish_non_exhaustive()
    }
}

/// The outcome classes, each shown from the first scrape.
const OUTCOMES: [&str; 4] = ["ok", "refused", "unavailable", "error"];

impl X402Metrics {
    /// Made and registered in `registry`.
    pub fn register(registry: &Registry) -> Result<X402Metrics, prometheus::Error> {
        let verifications = IntCounterVec::new(
            Opts::new(
                "aibank_x402_verifications_total",
                "Payment transactions checked on chain (X-Payment), by outcome (ok, refused, \
                 unavailable: the chain could not be asked, error)",
            ),
            &["outcome"],
        )?;
        let settlements = IntCounterVec::new(
            Opts::new(
                "aibank_x402_settlements_total",
                "Standard x402 authorizations checked and settled on chain, by outcome (ok, \
                 refused, unavailable: the chain could not be asked, error)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(verifications.clone()))?;
        registry.register(Box::new(settlements.clone()))?;
        for o in OUTCOMES {
            verifications.with_label_values(&[o]);
            settlements.with_label_values(&[o]);
        }
        Ok(X402Metrics {
            verifications,
            settlements,
        })
    }

    pub(crate) fn verified<T>(&self, r: &Result<T, ApiError>) {
        self.verifications.with_label_values(&[outcome(r)]).inc();
    }

    pub(crate) fn settled<T>(&self, r: &Result<T, ApiError>) {
        self.settlements.with_label_values(&[outcome(r)]).inc();
    }
}

fn outcome<T>(r: &Result<T, ApiError>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => match e.code() {
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "error",
            _ => "refused",
        },
    }
}
