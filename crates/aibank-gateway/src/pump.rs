//! The stream pump and answer reading: an SSE answer is moved to the client chunk by chunk
//! as it arrives, metered on the way, and settled when it ends however it ends; a JSON
//! answer is read whole, within the idle timeout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aibank_core::ApiError;
use aibank_ledger::HoldReceipt;
use bytes::Bytes;
use futures_util::StreamExt;

use crate::billing::{settle, Bill, Usage};
use crate::deployments::{Deployment, Failure};
use crate::dialect::Dialect;
use crate::meter::SseMeter;
use crate::proxy::{upstream_error, upstream_timeout, Gateway};

#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

impl ReadError {
    /// 504 when the upstream went quiet, 502 when its answer broke off.
    pub(crate) fn into_api(self) -> ApiError {
        match self {
            ReadError::Timeout => upstream_timeout("The upstream provider stopped answering"),
            ReadError::Http(e) if e.is_timeout() => {
                upstream_timeout("The upstream provider stopped answering")
            }
            ReadError::Http(e) => {
                upstream_error("The upstream response broke off", e.without_url())
            }
        }
    }
}

/// Reads a whole answer; `idle` is the longest silence allowed between two of its chunks.
/// An answer in one chunk (most are) is not copied.
pub(crate) async fn read_upstream(
    r: reqwest::Response,
    idle: Duration,
) -> Result<Bytes, ReadError> {
    crate::metrics::upstream_wait(read_all(r, idle)).await
}

async fn read_all(mut r: reqwest::Response, idle: Duration) -> Result<Bytes, ReadError> {
    let Some(first) = next_chunk(&mut r, idle).await? else {
        return Ok(Bytes::new());
    };
    let Some(second) = next_chunk(&mut r, idle).await? else {
        return Ok(first);
    };
    let mut body = bytes::BytesMut::from(&first[..]);
    body.extend_from_slice(&second);
    while let Some(chunk) = next_chunk(&mut r, idle).await? {
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

async fn next_chunk(r: &mut reqwest::Response, idle: Duration) -> Result<Option<Bytes>, ReadError> {
    match tokio::time::timeout(idle, r.chunk()).await {
        Err(_) => Err(ReadError::Timeout),
        Ok(chunk) => Ok(chunk?),
    }
}

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    ClientGone,
    Idle,
    Broken,
}

/// Moves a streamed answer to the client chunk by chunk, metering it, then settles and
/// appends the cost as an SSE comment. `head_wait` is how long its head took to come: the
/// upstream's time for `/metrics` is that and the stream's.
pub(crate) async fn pump(
    gw: Arc<Gateway>,
    (dialect, deployment, head_wait): (&'static dyn Dialect, Deployment, Duration),
    bill: Bill,
    hold: Option<HoldReceipt>,
    upstream: reqwest::Response,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let started = Instant::now();
    let mut meter = SseMeter::new(bill.api);
    let mut stream = upstream.bytes_stream();
    let end = loop {
        tokio::select! {
            () = tx.closed() => break End::ClientGone,
            next = tokio::time::timeout(gw.settings.idle_timeout, stream.next()) => match next {
                Err(_) => break End::Idle,
                Ok(None) => break End::Complete,
                Ok(Some(Err(_))) => break End::Broken,
                Ok(Some(Ok(chunk))) => {
                    meter.feed(&chunk);
                    if tx.send(chunk).await.is_err() {
                        break End::ClientGone;
                    }
                }
            }
        }
    };
    drop(stream);
    if let Some(m) = gw.metrics() {
        m.upstream(&bill.provider, head_wait + started.elapsed());
    }
    if matches!(end, End::Idle | End::Broken) {
        deployment.failed(Failure::Broken, gw.now_ms(), gw.cooldown_ms());
    }
    let tokens = meter.billable(bill.prompt_estimate);
    let complete = meter.complete();
    if end != End::Complete || !complete {
        tracing::warn!(end = ?end, usage_reported = complete, "stream ended early; billing what was seen");
    }
    let usage = if complete {
        Usage::Reported(tokens)
    } else {
        Usage::Partial {
            estimated: tokens,
            reported: meter.reported(),
        }
    };
    let (cost, balance) = settle(&gw, &bill, hold, usage).await;
    if end == End::ClientGone {
        return;
    }
    if matches!(end, End::Idle | End::Broken) {
        let err = dialect.stream_error_event();
        let _ = tx.send(Bytes::from_static(err.as_bytes())).await;
    }
    if dialect.takes_sse_comments() {
        let balance = balance.map_or_else(String::new, |b| format!(" balance_usd={b}"));
        let trailer = format!(": aibank cost_usd={cost}{balance}\n\n");
        let _ = tx.send(Bytes::from(trailer)).await;
    }
}
