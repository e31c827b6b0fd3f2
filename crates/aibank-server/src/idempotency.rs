//! `Idempotency-Key` (Stripe semantics) for requests that move money.
//!
//! The key is recorded, with the response, in the same transaction as the money movement:
//! either both commit or neither does. A retry finds the record and gets the first response
//! again (same status and body, plus `Idempotent-Replayed: true`) without moving anything. Two
//! concurrent requests with one key cannot both commit: the second one's insert of the
//! key fails, its transaction — money movement included — rolls back, and it answers with
//! the first one's stored response. Only successes are stored; a refused request (say,
//! insufficient credits) may be retried with the same key. Keys are scoped to the caller
//! and kept at least 24 hours.

use actix_web::dev::Payload;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse};
use aibank_core::{ApiError, Usd};
use aibank_store::models::IdempotencyRecord;
use aibank_store::repo::idempotency as repo;
use aibank_store::{is_unique_violation, AnyConnection, StoreError};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::state::AppState;

pub const HEADER: &str = "idempotency-key";
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
pub const MAX_KEY_LEN: usize = 255;

/// The request's `Idempotency-Key`, if any.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

impl FromRequest for IdempotencyKey {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let bad = || {
            ApiError::invalid_field(
                "Idempotency-Key",
                format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters"),
            )
        };
        let res = match req.headers().get(HEADER) {
            None => Ok(IdempotencyKey(None)),
            Some(v) => match v.to_str() {
                Ok(s)
                    if !s.is_empty()
                        && s.len() <= MAX_KEY_LEN
                        && s.bytes().all(|b| b.is_ascii_graphic()) =>
                {
                    Ok(IdempotencyKey(Some(s.to_owned())))
                }
                _ => Err(bad()),
            },
        };
        std::future::ready(res)
    }
}

/// What a request is, for telling a retry from a different request under the same key.
pub fn fingerprint(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// `Usd` as the fingerprint writes it.
pub fn amount_part(u: Usd) -> String {
    u.micros().to_string()
}

enum TxError {
    Api(ApiError),
    /// The key was recorded by a concurrent request; everything here rolled back.
    Raced,
}

impl From<ApiError> for TxError {
    fn from(e: ApiError) -> Self {
        TxError::Api(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Api(e.into())
    }
}

impl From<diesel::result::Error> for TxError {
    fn from(e: diesel::result::Error) -> Self {
        StoreError::from(e).into()
    }
}

fn replay(record: &IdempotencyRecord, fingerprint: &str) -> Result<HttpResponse, ApiError> {
    if record.request_hash != fingerprint {
        return Err(ApiError::conflict(
            "Idempotency-Key was already used for a different request",
        ));
    }
    let status = u16::try_from(record.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    Ok(HttpResponse::build(status)
        .insert_header((REPLAYED, HeaderValue::from_static("true")))
        .content_type("application/json")
        .body(record.response_body.clone()))
}

/// Runs `op` — which moves money — in one write transaction, at most once per
/// (`scope`, key). Without a key it simply runs. `op` may return `Ok(None)` for "not found".
pub async fn run_once<T, F>(
    state: &AppState,
    scope: String,
    key: IdempotencyKey,
    fingerprint: String,
    status: StatusCode,
    op: F,
) -> Result<HttpResponse, ApiError>
where
    T: Serialize + Send + 'static,
    F: FnOnce(&mut AnyConnection) -> Result<T, ApiError> + Send + 'static,
{
    let now = state.clock.now_ms();
    let Some(key) = key.0 else {
        let body = state
            .pool
            .run(move |c| c.write_tx(|c| op(c).map_err(TxError::Api)))
            .await
            .map_err(into_api)?;
        return Ok(HttpResponse::build(status).json(body));
    };
    let (s, k) = (scope.clone(), key.clone());
    if let Some(found) = state
        .pool
        .run(move |c| repo::find(c, &s, &k).map_err(StoreError::from))
        .await?
    {
        return replay(&found, &fingerprint);
    }
    let fp = fingerprint.clone();
    let (s, k) = (scope.clone(), key.clone());
    let res = state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                let body = op(c)?;
                let text = serde_json::to_string(&body).map_err(ApiError::internal)?;
                let record = IdempotencyRecord {
                    scope: s,
                    key: k,
                    request_hash: fp,
                    status_code: i32::from(status.as_u16()),
                    response_body: text.clone(),
                    created_at: now,
                };
                match repo::insert(c, &record) {
                    Ok(()) => Ok(text),
                    Err(e) if is_unique_violation(&e) => Err(TxError::Raced),
                    Err(e) => Err(e.into()),
                }
            })
        })
        .await;
    match res {
        Ok(text) => Ok(HttpResponse::build(status)
            .content_type("application/json")
            .body(text)),
        Err(TxError::Raced) => {
            let found = state
                .pool
                .run(move |c| repo::find(c, &scope, &key).map_err(StoreError::from))
                .await?
                .ok_or_else(|| ApiError::internal("idempotency record vanished"))?;
            replay(&found, &fingerprint)
        }
        Err(e) => Err(into_api(e)),
    }
}

fn into_api(e: TxError) -> ApiError {
    match e {
        TxError::Api(a) => a,
        TxError::Raced => ApiError::conflict("Concurrent request with the same Idempotency-Key"),
    }
}
