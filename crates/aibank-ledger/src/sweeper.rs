//! The sweep that releases expired holds; the server runs it periodically. Every instance
//! may run it: settlement is a conditional update, so instances sharing a database never
//! release a hold twice.

use aibank_core::SharedClock;
use aibank_store::DbPool;

use crate::{expire_due, LedgerError};

/// Holds released per pass at most; the next pass picks up the rest.
const BATCH: i64 = 500;

/// One pass: releases every hold due by now (up to the batch). Returns how many.
pub async fn sweep_once(pool: &DbPool, clock: &SharedClock) -> Result<usize, LedgerError> {
    let now = clock.now_ms();
    pool.run(move |c| expire_due(c, now, BATCH)).await
}
