//! `ANY /v1/gateway/{provider}/{path…}`: authenticate, reserve the most the call can cost,
//! forward, stream the answer through, and settle from the usage the upstream reported.
//!
//! Billing on every outcome:
//! - upstream 4xx/5xx, connection failure, timeout before the answer: the hold is released,
//!   nothing is charged;
//! - a complete answer: the reported usage at the price table, captured from the hold;
//! - a stream that is cut off, goes idle, or whose client disconnects: what the upstream had
//!   reported by then, with gaps filled from what was seen (the request size at 3 bytes per
//!   token for an unreported prompt, streamed text at 4 characters per token for unreported
//!   output), never more than the hold;
//! - a handler that is abandoned before the upstream answers (client gone): the hold is
//!   released by a drop guard.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use aibank_auth::{ApiKeyAuth, AuthState, Capability};
use aibank_core::{ApiError, ErrorCode, SharedClock, Usd};
use aibank_ledger::{HoldReceipt, LedgerError, UsageMeta};
use aibank_store::{AnyConnection, DbPool, StoreError, TxStop};
use aibank_x402::X402;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::Value;
use tracing_actix_web::RequestId;

use crate::meter::{tokens_from_json, SseMeter, Wire};
use crate::prices::{Price, Tokens};
use crate::providers::{Provider, Registry};
use aibank_core::SecretBox;

/// Default Anthropic API version when the client sends none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Bytes of request per prompt token when estimating the most a prompt can cost.
pub const BYTES_PER_PROMPT_TOKEN: u64 = 3;

#[derive(Debug, Clone)]
pub struct GatewaySettings {
    pub max_body_bytes: usize,
    /// Output tokens assumed for the hold when the request sets no maximum.
    pub default_max_output_tokens: u64,
    pub hold_ttl: Duration,
    pub connect_timeout: Duration,
    /// Longest wait for the upstream's response headers.
    pub first_byte_timeout: Duration,
    /// Longest silence inside a streamed response.
    pub idle_timeout: Duration,
    /// Whether calls made with an agent's own upstream key are charged credits.
    pub charge_byok: bool,
    /// How long an agent's provider-key lookup may be served from memory.
    pub lookup_ttl: Duration,
    /// Messages (metered calls) per key per rolling day unless the agent's platform set
    /// another limit; 0: unlimited.
    pub daily_message_limit: i64,
}

/// The daily message window: it starts at a key's first call and lasts a day.
pub const MESSAGE_WINDOW_MS: i64 = 86_400_000;

pub struct Gateway {
    pub registry: Registry,
    pub settings: GatewaySettings,
    pub secret_box: Arc<SecretBox>,
    /// Sealed provider keys by `agent/provider` (`None`: the agent has none).
    pub(crate) own_keys: aibank_auth::TtlCache<Option<String>>,
    client: reqwest::Client,
    pool: DbPool,
    clock: SharedClock,
    /// Pay-per-call with USDC, when configured.
    pub x402: Option<Arc<X402>>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("providers", &self.registry.names())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    pub fn new(
        registry: Registry,
        settings: GatewaySettings,
        secret_box: Arc<SecretBox>,
        pool: DbPool,
        clock: SharedClock,
    ) -> Result<Self, reqwest::Error> {
        // Redirects are the client's to follow: followed here, the request would go
        // elsewhere with the upstream key in `x-api-key`, which reqwest does not strip.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()?;
        Ok(Gateway {
            own_keys: aibank_auth::TtlCache::new(settings.lookup_ttl, 100_000),
            registry,
            settings,
            secret_box,
            client,
            pool,
            clock,
            x402: None,
        })
    }

    /// Accepts x402 payments from callers without credentials.
    #[must_use]
    pub fn with_x402(mut self, x402: Option<Arc<X402>>) -> Self {
        self.x402 = x402;
        self
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// A configured provider, or the 404 that lists the known ones.
    pub fn provider(&self, name: &str) -> Result<&Provider, ApiError> {
        self.registry.get(name).ok_or_else(|| {
            ApiError::not_found(format!("Unknown provider `{name}`"))
                .with("providers", self.registry.names())
        })
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn hold_ttl_ms(&self) -> i64 {
        i64::try_from(self.settings.hold_ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

/// What the gateway does with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// A model call, billed from its usage.
    Metered,
    /// Free to forward (model lists, token counting).
    Free,
}

fn endpoint(wire: Wire, method: &str, tail: &str) -> Option<Endpoint> {
    if !plain_path(tail) {
        return None;
    }
    let tail = tail.trim_end_matches('/');
    match (wire, method) {
        (Wire::Anthropic, "POST") if tail == "v1/messages" => Some(Endpoint::Metered),
        (Wire::Anthropic, "POST") if tail == "v1/messages/count_tokens" => Some(Endpoint::Free),
        (Wire::OpenAi, "POST") if tail == "v1/chat/completions" => Some(Endpoint::Metered),
        (_, "GET") if tail == "v1/models" || tail.starts_with("v1/models/") => Some(Endpoint::Free),
        _ => None,
    }
}

/// Whether a path is safe to append to a provider's base URL as it is: segments of
/// letters, digits and `-._~:@+`, none empty (a trailing `/` aside), none `.` or `..`.
/// The URL parser would resolve dot segments (and `\` as `/`) before sending, so
/// `v1/models/../chat/completions` would reach an endpoint the gateway never allowed, with
/// the platform's key. Percent escapes are refused too: the router has decoded the path
/// already, except the escapes (`%25`, `%2B`; `%2F` is read as `/` before this check) an
/// upstream could decode again.
fn plain_path(tail: &str) -> bool {
    let tail = tail.strip_suffix('/').unwrap_or(tail);
    !tail.is_empty()
        && tail.split('/').all(|segment| {
            !matches!(segment, "" | "." | "..")
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~:@+".contains(&b))
        })
}

/// The aibank key: `X-API-Key`, or `Authorization: Bearer` as the OpenAI SDK sends it.
/// Request headers never forwarded: credentials of ours or the client's, hop-by-hop
/// headers, and encodings (the gateway reads the response to meter it).
fn forwardable(name: &str) -> bool {
    !matches!(
        name,
        "host"
            | "content-length"
            | "x-api-key"
            | "x-master-key"
            | "authorization"
            | "cookie"
            | "connection"
            | "keep-alive"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "accept-encoding"
            | "x-forwarded-for"
            | "x-real-ip"
            | "forwarded"
    ) && !name.starts_with("x-payment")
        && !name.starts_with("x-aibank-")
}

/// Response headers not passed back: hop-by-hop ones, cookies, and ours (the gateway
/// sets its own `x-aibank-*` and request id).
fn returnable(name: &str) -> bool {
    !matches!(
        name,
        "content-length"
            | "content-encoding"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "set-cookie"
            | "x-request-id"
    ) && !name.starts_with("x-aibank-")
}

/// Headers that choose or name the account behind an upstream key: a caller may send them
/// with its own key, never with the platform's, and the platform's are not shown to callers.
fn names_the_key_owner(name: &str) -> bool {
    matches!(
        name,
        "openai-organization" | "openai-project" | "anthropic-organization-id"
    )
}

/// The header names the `Connection` header values list: hop-by-hop for this message only.
fn connection_listed<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect()
}

/// Whether a `Content-Type` value is of `media` (compared without regard to case).
fn is_media(content_type: &str, media: &str) -> bool {
    content_type
        .get(..media.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(media))
}

fn upstream_error(
    message: &str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ApiError {
    ApiError::new(ErrorCode::UpstreamError, message).with_source(e)
}

fn upstream_timeout(message: &str) -> ApiError {
    ApiError::new(ErrorCode::UpstreamTimeout, message)
}

/// What a metered call was, for settling it.
struct Bill {
    agent_id: String,
    api_key_id: Option<String>,
    /// (chain, tx hash) of the x402 payment that pays for the call.
    payment: Option<(String, String)>,
    provider: String,
    model: String,
    price: Price,
    prompt_estimate: u64,
    charged: bool,
    request_id: String,
}

impl Bill {
    /// The most the call can cost: what its hold reserves.
    fn max_cost(&self, max_out: u64) -> Usd {
        self.price
            .max_cost(self.prompt_estimate, max_out)
            .max(Usd::from_micros(1))
    }
}

/// Releases a hold that was never settled, even if the handler is dropped.
struct HoldGuard {
    pool: DbPool,
    clock: SharedClock,
    hold: Option<HoldReceipt>,
    /// A paid call not billed from usage: its whole hold is the price.
    flat: Option<FlatFee>,
}

/// What a paid call to a free endpoint records when it is served.
struct FlatFee {
    /// (chain, tx hash) of its payment.
    payment: (String, String),
    meta: UsageMeta,
}

impl HoldGuard {
    fn take(&mut self) -> Option<HoldReceipt> {
        self.hold.take()
    }

    /// Takes a flat-fee call's whole hold (it was served); the cost taken.
    async fn capture_flat(&mut self) -> Option<Usd> {
        let (hold, flat) = (self.hold.take()?, self.flat.take()?);
        let (amount, now) = (hold.amount, self.clock.now_ms());
        let res = self
            .pool
            .write(move |c| {
                aibank_ledger::capture(c, &hold.id, hold.amount, Some(&flat.meta), now)?;
                let (chain, hash) = &flat.payment;
                aibank_store::repo::payments::set_cost(c, chain, hash, hold.amount.micros())?;
                Ok::<_, LedgerError>(())
            })
            .await;
        match res {
            Ok(()) => Some(amount),
            Err(e) => {
                tracing::error!(error = %e, "settling a paid call failed");
                None
            }
        }
    }

    async fn release(&mut self) {
        if let Some(h) = self.hold.take() {
            release_hold(self.pool.clone(), self.clock.now_ms(), h).await;
        }
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        if let Some(h) = self.hold.take() {
            let (pool, now) = (self.pool.clone(), self.clock.now_ms());
            tokio::spawn(release_hold(pool, now, h));
        }
    }
}

async fn release_hold(pool: DbPool, now: i64, hold: HoldReceipt) {
    let id = hold.id.clone();
    match pool
        .write(move |c| aibank_ledger::release(c, &hold.id, now))
        .await
    {
        Ok(_) | Err(LedgerError::HoldNotOpen { .. }) => {}
        Err(e) => {
            tracing::warn!(hold_id = %id, error = %e, "could not release hold; the sweeper will");
        }
    }
}

/// Settles a finished call: captures its cost from the hold (or records free usage).
/// Returns the cost charged and the balance after.
/// `within_hold`: an incomplete stream is never billed beyond its reservation.
async fn settle(
    gw: &Gateway,
    bill: &Bill,
    hold: Option<HoldReceipt>,
    tokens: Tokens,
    within_hold: bool,
) -> (Usd, Option<Usd>) {
    let cost = if bill.charged {
        bill.price.cost(&tokens)
    } else {
        Usd::ZERO
    };
    let meta = UsageMeta {
        api_key_id: bill.api_key_id.clone(),
        provider: bill.provider.clone(),
        model: bill.model.clone(),
        input_tokens: i64::try_from(tokens.prompt()).unwrap_or(i64::MAX),
        output_tokens: i64::try_from(tokens.output).unwrap_or(i64::MAX),
        request_id: Some(bill.request_id.clone()),
        description: (!bill.charged).then(|| "own upstream key".to_owned()),
        price_version: None,
    };
    let now = gw.now_ms();
    let agent = bill.agent_id.clone();
    let payment = bill.payment.clone();
    // One transaction: the capture, any overage and the usage row commit together.
    let res = gw
        .pool
        .write(move |c| -> Result<(Usd, Usd), LedgerError> {
            let got = match hold {
                None => None,
                Some(hold) => Some(aibank_ledger::capture_usage(
                    c,
                    &agent,
                    &hold,
                    cost,
                    !within_hold,
                    now,
                )?),
            };
            let (charged, owed) = got
                .as_ref()
                .map_or((Usd::ZERO, Usd::ZERO), |g| (g.charged, g.owed));
            aibank_ledger::record_usage(c, &agent, charged, owed, &meta, now)?;
            if let Some((chain, hash)) = &payment {
                aibank_store::repo::payments::set_cost(c, chain, hash, charged.micros())?;
            }
            let balance = match got {
                Some(g) => g.balance,
                None => Usd::from_micros(aibank_ledger::balance(c, &agent)?.balance_micros),
            };
            if !owed.is_zero() {
                tracing::warn!(agent_id = %agent, owed = %owed, "usage beyond the balance is owed");
            }
            Ok((charged, balance))
        })
        .await;
    match res {
        Ok((charged, balance)) => (charged, Some(balance)),
        Err(e) => {
            tracing::error!(agent_id = %bill.agent_id, error = %e, "settling a gateway call failed");
            (Usd::ZERO, None)
        }
    }
}

async fn read_body(payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    aibank_core::extract::read_body(payload.into_inner(), limit)
        .await
        .map(Bytes::from)
}

/// The upstream key for this agent and provider: the agent's own, else the platform's.
async fn upstream_key(
    gw: &Gateway,
    agent_id: &str,
    provider: &Provider,
) -> Result<(String, bool), ApiError> {
    let aad = crate::byok::aad(agent_id, &provider.name);
    // The sealed key (or its absence) is served from memory for the look-up TTL; a
    // change on this instance drops the entry at once.
    let sealed = if let Some(cached) = gw.own_keys.get(&aad) {
        cached
    } else {
        let (agent, name) = (agent_id.to_owned(), provider.name.clone());
        let found = gw
            .pool
            .run(move |c| {
                aibank_store::repo::provider_keys::find(c, &agent, &name).map_err(StoreError::from)
            })
            .await?;
        gw.own_keys.insert(&aad, found.clone());
        found
    };
    if let Some(sealed) = sealed {
        let plain = gw
            .secret_box
            .open(&sealed, aad.as_bytes())
            .map_err(ApiError::internal)?;
        let key = String::from_utf8(plain).map_err(ApiError::internal)?;
        return Ok((key, true));
    }
    platform_key(provider).map(|k| (k, false))
}

/// The platform-wide upstream key, or the 503 that says there is none.
fn platform_key(provider: &Provider) -> Result<String, ApiError> {
    match &provider.api_key {
        Some(k) => Ok(k.expose().to_owned()),
        None => Err(
            ApiError::unavailable(format!("No {} API key configured", provider.name))
                .with("needsKey", true),
        ),
    }
}

/// The most output a request may produce, from its own limit fields: per choice, times
/// the `n` choices an OpenAI request may ask for.
fn max_output(wire: Wire, body: &Value, default: u64) -> u64 {
    let (fields, choices): (&[&str], u64) = match wire {
        Wire::Anthropic => (&["max_tokens"], 1),
        Wire::OpenAi => (
            &["max_completion_tokens", "max_tokens"],
            body["n"].as_u64().unwrap_or(1).max(1),
        ),
    };
    fields
        .iter()
        .find_map(|f| body[*f].as_u64())
        .unwrap_or(default)
        .saturating_mul(choices)
}

/// Reads a metered request: its model and price, whether it streams, the most it can
/// cost. May rewrite the body (OpenAI streams are asked for their usage).
/// The bill of a metered call, for the agent (or payer) filled in by the caller.
fn meter_request(
    gw: &Gateway,
    provider: &Provider,
    body: &mut Bytes,
    request_id: &RequestId,
) -> Result<(Bill, u64, bool), ApiError> {
    let mut json: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_field("body", format!("Request body is not valid JSON: {e}"))
    })?;
    let model = json["model"]
        .as_str()
        .ok_or_else(|| ApiError::invalid_field("model", "`model` is required"))?
        .to_owned();
    let price = provider.prices.lookup(&model).ok_or_else(|| {
        ApiError::invalid_field(
            "model",
            format!(
                "No price is configured for model `{model}` at provider `{}`",
                provider.name
            ),
        )
    })?;
    let streamed = json["stream"].as_bool().unwrap_or(false);
    if streamed
        && provider.wire == Wire::OpenAi
        && json["stream_options"]["include_usage"].as_bool() != Some(true)
    {
        // Ask for the final usage chunk, which is what the call is billed from.
        match json.get_mut("stream_options") {
            Some(Value::Object(options)) => {
                options.insert("include_usage".into(), Value::Bool(true));
            }
            None | Some(Value::Null) => {
                json["stream_options"] = serde_json::json!({"include_usage": true});
            }
            Some(_) => {
                return Err(ApiError::invalid_field(
                    "stream_options",
                    "`stream_options` must be an object",
                ))
            }
        }
        *body = Bytes::from(serde_json::to_vec(&json).map_err(ApiError::internal)?);
    }
    let bill = Bill {
        agent_id: String::new(),
        api_key_id: None,
        payment: None,
        provider: provider.name.clone(),
        model,
        price,
        prompt_estimate: (body.len() as u64).div_ceil(BYTES_PER_PROMPT_TOKEN),
        charged: true,
        request_id: request_id.to_string(),
    };
    let max_out = max_output(provider.wire, &json, gw.settings.default_max_output_tokens);
    Ok((bill, max_out, streamed))
}

/// Reserves the most the call can cost, and counts the call against its key's message
/// limit, in one transaction.
async fn reserve(
    gw: &Gateway,
    bill: &Bill,
    max_out: u64,
    quota: Option<Quota>,
) -> Result<HoldReceipt, ApiError> {
    let max = bill.max_cost(max_out);
    let ttl = gw.hold_ttl_ms();
    let (agent, now, reference) = (bill.agent_id.clone(), gw.now_ms(), bill.request_id.clone());
    // Not waiting for the disk: if a crash loses the hold, it loses the call's capture
    // with it (a later durable commit would have saved both), and the account is as if the
    // call had never been made — what the sweeper makes of a durable hold never captured.
    gw.pool
        .write_unsynced(move |c| {
            let hold = aibank_ledger::place_hold(c, &agent, max, ttl, Some(&reference), now)
                .map_err(TxStop::Failed)?;
            // Counted last: the count locks the key's row until the commit, and calls on
            // one key wait for each other only that long. A refused count rolls the hold
            // back; a refused hold is never counted.
            if let Some(q) = &quota {
                q.admit(c, now)?.map_err(TxStop::Stopped)?;
            }
            Ok(hold)
        })
        .await
        .map_err(|e: TxStop<ApiError, LedgerError>| match e {
            TxStop::Stopped(refusal) => refusal,
            TxStop::Failed(e) => e.into(),
        })
}

/// The upstream request: same method, path, query and safe headers, the upstream's
/// credential instead of ours.
fn upstream_request(
    gw: &Gateway,
    req: &HttpRequest,
    provider: &Provider,
    tail: &str,
    key: String,
    own_key: bool,
    body: Bytes,
) -> Result<reqwest::RequestBuilder, ApiError> {
    let query = req.query_string();
    let url = if query.is_empty() {
        format!("{}/{tail}", provider.base_url)
    } else {
        format!("{}/{tail}?{query}", provider.base_url)
    };
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(ApiError::internal)?;
    let mut out = gw.client.request(method, &url);
    let listed = connection_listed(
        req.headers()
            .get_all("connection")
            .map(actix_web::http::header::HeaderValue::as_bytes),
    );
    for (name, value) in req.headers() {
        let name = name.as_str();
        let ours = provider.wire == Wire::Anthropic && name == "anthropic-version";
        if forwardable(name)
            && !ours
            && !listed.iter().any(|n| n == name)
            && (own_key || !names_the_key_owner(name))
        {
            out = out.header(name, value.as_bytes());
        }
    }
    out = match provider.wire {
        Wire::Anthropic => {
            let version = req
                .headers()
                .get("anthropic-version")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(ANTHROPIC_VERSION)
                .to_owned();
            out.header("x-api-key", key)
                .header("anthropic-version", version)
        }
        Wire::OpenAi => out.bearer_auth(key),
    };
    if !body.is_empty() {
        out = out.body(body);
    }
    Ok(out)
}

/// Sends, mapping a missing answer to 504 and a failed connection to 502.
async fn send(gw: &Gateway, out: reqwest::RequestBuilder) -> Result<reqwest::Response, ApiError> {
    match tokio::time::timeout(gw.settings.first_byte_timeout, out.send()).await {
        Err(_) => Err(upstream_timeout(
            "The upstream provider did not answer in time",
        )),
        Ok(Err(e)) if e.is_timeout() => Err(upstream_timeout(
            "The upstream provider did not answer in time",
        )),
        Ok(Err(e)) => Err(upstream_error("Could not reach the upstream provider", e)),
        Ok(Ok(r)) => Ok(r),
    }
}

/// Our response head: the upstream's status and headers, less hop-by-hop ones (and,
/// on the platform's key, those naming its account).
fn response_head(upstream: &reqwest::Response, own_key: bool) -> actix_web::HttpResponseBuilder {
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut res = HttpResponse::build(status);
    let listed = connection_listed(
        upstream
            .headers()
            .get_all("connection")
            .iter()
            .map(reqwest::header::HeaderValue::as_bytes),
    );
    for (name, value) in upstream.headers() {
        let name = name.as_str();
        if returnable(name)
            && !listed.iter().any(|n| n == name)
            && (own_key || !names_the_key_owner(name))
        {
            res.append_header((name, value.as_bytes()));
        }
    }
    if let Some(v) = upstream.headers().get("x-request-id") {
        res.insert_header(("x-upstream-request-id", v.as_bytes()));
    }
    res
}

/// The gateway route.
#[tracing::instrument(skip_all, fields(provider = %req.match_info().get("provider").unwrap_or("")))]
pub async fn proxy(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    auth: web::Data<AuthState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let provider_name = req
        .match_info()
        .get("provider")
        .unwrap_or_default()
        .to_owned();
    // The router keeps `%2F` escaped; SDKs that escape the `/` in a model id (OpenAI's Node
    // SDK) mean a `/`, which is how the other SDKs send it.
    let tail = req.match_info().get("tail").unwrap_or_default();
    let tail = if tail.contains('%') {
        tail.replace("%2F", "/").replace("%2f", "/")
    } else {
        tail.to_owned()
    };
    let paying = gw.x402.clone().filter(|_| !has_credential(&req));
    let caller = if paying.is_some() {
        None
    } else {
        let caller = auth.authenticate(&req, true).await?;
        caller.require_write("calling the gateway")?;
        caller.require(Capability::Gateway)?;
        Some(caller)
    };
    let provider = gw.provider(&provider_name)?;
    let method = req.method().as_str().to_owned();
    let wire = provider.wire;
    let Some(kind) = endpoint(wire, &method, &tail) else {
        return Err(ApiError::not_found(format!(
            "{method} /{tail} is not available through the {provider_name} gateway"
        )));
    };
    let mut body = read_body(payload, gw.settings.max_body_bytes).await?;
    let metered = if kind == Endpoint::Metered {
        Some(meter_request(&gw, provider, &mut body, &request_id)?)
    } else {
        None
    };
    let mut guard = HoldGuard {
        pool: gw.pool.clone(),
        clock: gw.clock.clone(),
        hold: None,
        flat: None,
    };
    let mut streamed = false;
    let (key, own_key, bill) = match (caller, paying) {
        (Some(caller), _) => {
            let (key, own_key) = upstream_key(&gw, &caller.agent.id, provider).await?;
            let bill = match metered {
                Some((mut bill, max_out, s)) => {
                    streamed = s;
                    bill.agent_id.clone_from(&caller.agent.id);
                    bill.api_key_id = Some(caller.key_id.clone());
                    bill.charged = !own_key || gw.settings.charge_byok;
                    let quota = Quota::of(&gw, &caller);
                    if bill.charged {
                        guard.hold = Some(reserve(&gw, &bill, max_out, quota).await?);
                    } else if let Some(q) = quota {
                        admit_alone(&gw, q).await?;
                    }
                    Some(bill)
                }
                None => None,
            };
            (key, own_key, bill)
        }
        (None, Some(x402)) => {
            // Payers have no keys of their own; without the platform's, take no payment.
            let key = platform_key(provider)?;
            let paid = pay(&gw, &x402, &req, metered, &request_id).await?;
            streamed = paid.streamed;
            guard.hold = paid.hold;
            guard.flat = paid.flat;
            (key, false, paid.bill)
        }
        (None, None) => return Err(ApiError::internal("no caller and no payment")),
    };
    let out = upstream_request(&gw, &req, provider, &tail, key, own_key, body)?;
    let upstream = match send(&gw, out).await {
        Ok(r) => r,
        Err(e) => {
            guard.release().await;
            return Err(e);
        }
    };
    respond(gw, wire, bill, guard, upstream, streamed, own_key).await
}

/// Whether the request names a credential (then it never pays with x402).
fn has_credential(req: &HttpRequest) -> bool {
    use aibank_auth::extract::{API_KEY_HEADER, KEY_ID_HEADER, SIGNATURE_HEADER};
    let h = req.headers();
    [
        API_KEY_HEADER,
        "authorization",
        KEY_ID_HEADER,
        SIGNATURE_HEADER,
    ]
    .iter()
    .any(|name| h.contains_key(*name))
}

/// A call paid for with an x402 payment.
struct Paid {
    bill: Option<Bill>,
    hold: Option<HoldReceipt>,
    flat: Option<FlatFee>,
    streamed: bool,
}

/// Prices the call; without `X-Payment`, answers 402 with what to pay. With it, verifies
/// the payment on chain, then in one transaction records the hash as used, credits the
/// payment to the payer's account and reserves the call's price there. A metered call is
/// then billed from its usage like any other; a free endpoint takes its whole price once
/// served. A failed call costs nothing.
async fn pay(
    gw: &Gateway,
    x402: &X402,
    req: &HttpRequest,
    metered: Option<(Bill, u64, bool)>,
    request_id: &RequestId,
) -> Result<Paid, ApiError> {
    let max_cost = metered
        .as_ref()
        .map_or(Usd::ZERO, |(bill, max_out, _)| bill.max_cost(*max_out));
    let price = x402.price(max_cost);
    let Some(payment) = x402.payment(req.headers())? else {
        return Err(x402.required(price, req.method().as_str(), req.path()));
    };
    let now = gw.now_ms();
    let transfer = x402.verify(&payment, price, now).await?;
    let resource = format!("{} {}", req.method(), req.path());
    let (rid, ttl) = (request_id.to_string(), gw.hold_ttl_ms());
    let reference = rid.clone();
    let acceptance = aibank_x402::Acceptance {
        transfer: transfer.clone(),
        resource: resource.clone(),
        request_id: Some(rid.clone()),
        now,
    };
    // One transaction: the hash recorded as used, the payment credited, the price held.
    let hold = gw
        .pool
        .run(move |c| {
            aibank_x402::accept(c, &acceptance, |c, account| {
                aibank_ledger::place_hold(c, account, price, ttl, Some(&reference), now)
            })
            .map_err(|e| e.into_api(&acceptance.transfer))
        })
        .await?;
    let payment = (
        transfer.chain.name().to_owned(),
        format!("{:x}", transfer.hash),
    );
    let paid = if let Some((mut bill, _, streamed)) = metered {
        bill.agent_id = aibank_x402::payer_account_id(transfer.chain, transfer.payer);
        bill.payment = Some(payment);
        Paid {
            bill: Some(bill),
            hold: Some(hold),
            flat: None,
            streamed,
        }
    } else {
        Paid {
            bill: None,
            hold: Some(hold),
            flat: Some(FlatFee {
                payment,
                meta: UsageMeta {
                    provider: "x402".into(),
                    request_id: Some(rid),
                    description: Some(resource),
                    ..UsageMeta::default()
                },
            }),
            streamed: false,
        }
    };
    tracing::info!(chain = transfer.chain.name(), payer = %transfer.payer, amount = %transfer.amount, "x402 payment accepted");
    Ok(paid)
}

/// A metered call's place in its key's daily message limit: the key and the limit.
#[derive(Debug, Clone)]
struct Quota {
    key_id: String,
    limit: i64,
}

impl Quota {
    /// `None` when the limit is off (0) for this caller.
    fn of(gw: &Gateway, caller: &ApiKeyAuth) -> Option<Quota> {
        let limit = caller
            .agent
            .daily_message_limit
            .unwrap_or(gw.settings.daily_message_limit);
        (limit > 0).then(|| Quota {
            key_id: caller.key_id.clone(),
            limit,
        })
    }

    /// Counts one message, on every instance sharing the database; the 429 when the
    /// window is full. Run inside the write transaction that places the call's hold, so a
    /// metered call still commits once before it is forwarded.
    fn admit(&self, c: &mut AnyConnection, now: i64) -> Result<Result<(), ApiError>, StoreError> {
        let w = aibank_store::repo::keys::admit_message(
            c,
            &self.key_id,
            self.limit,
            MESSAGE_WINDOW_MS,
            now,
        )?;
        if w.admitted {
            return Ok(Ok(()));
        }
        Ok(Err(ApiError::rate_limited(
            "Daily message limit reached for this API key",
            self.limit,
            w.used,
            w.window_start.saturating_add(MESSAGE_WINDOW_MS),
            now,
        )))
    }
}

/// Counts a message that places no hold (a call on the agent's own upstream key).
async fn admit_alone(gw: &Gateway, quota: Quota) -> Result<(), ApiError> {
    let now = gw.now_ms();
    gw.pool.write(move |c| quota.admit(c, now)).await?
}

/// Turns the upstream answer into ours and settles the bill.
async fn respond(
    gw: web::Data<Gateway>,
    wire: Wire,
    bill: Option<Bill>,
    mut guard: HoldGuard,
    upstream: reqwest::Response,
    streamed: bool,
    own_key: bool,
) -> Result<HttpResponse, ApiError> {
    let mut res = response_head(&upstream, own_key);
    let content_type = upstream
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let is_sse = is_media(content_type, "text/event-stream");

    // Failures are passed back as the provider wrote them; nothing is charged.
    if !upstream.status().is_success() {
        let body = read_upstream(upstream, gw.settings.idle_timeout).await;
        guard.release().await;
        res.insert_header(("x-aibank-cost-usd", "0.0"));
        return Ok(res.body(body.unwrap_or_default()));
    }
    let Some(bill) = bill else {
        let body = read_upstream(upstream, gw.settings.idle_timeout)
            .await
            .map_err(ReadError::into_api)?;
        if let Some(cost) = guard.capture_flat().await {
            res.insert_header(("x-aibank-cost-usd", cost.to_string()));
        }
        return Ok(res.body(body));
    };
    // A streamed request is relayed as a stream unless the upstream answered plain JSON
    // (a compatible provider may ignore `stream`).
    if is_sse || (streamed && !is_media(content_type, "application/json")) {
        let hold = guard.take();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(32);
        tokio::spawn(pump(gw.into_inner(), wire, bill, hold, upstream, tx));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, actix_web::Error>(b), rx))
        });
        return Ok(res.streaming(stream));
    }
    let body = match read_upstream(upstream, gw.settings.idle_timeout).await {
        Ok(b) => b,
        Err(e) => {
            guard.release().await;
            return Err(e.into_api());
        }
    };
    let tokens = tokens_from_json(wire, &body).unwrap_or(Tokens {
        input: bill.prompt_estimate,
        ..Tokens::default()
    });
    let (cost, balance) = settle(&gw, &bill, guard.take(), tokens, false).await;
    res.insert_header(("x-aibank-cost-usd", cost.to_string()));
    if let Some(b) = balance {
        res.insert_header(("x-aibank-balance-usd", b.to_string()));
    }
    Ok(res.body(body))
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("timed out")]
    Timeout,
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

impl ReadError {
    /// 504 when the upstream went quiet, 502 when its answer broke off.
    fn into_api(self) -> ApiError {
        match self {
            ReadError::Timeout => upstream_timeout("The upstream provider stopped answering"),
            ReadError::Http(e) if e.is_timeout() => {
                upstream_timeout("The upstream provider stopped answering")
            }
            ReadError::Http(e) => upstream_error("The upstream response broke off", e),
        }
    }
}

/// Reads a whole answer; `idle` is the longest silence allowed between two of its chunks.
/// An answer in one chunk (most are) is not copied.
async fn read_upstream(mut r: reqwest::Response, idle: Duration) -> Result<Bytes, ReadError> {
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
/// appends the cost as an SSE comment.
async fn pump(
    gw: Arc<Gateway>,
    wire: Wire,
    bill: Bill,
    hold: Option<HoldReceipt>,
    upstream: reqwest::Response,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let mut meter = SseMeter::new(wire);
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
    let tokens = meter.billable(bill.prompt_estimate);
    let complete = meter.complete();
    if end != End::Complete || !complete {
        tracing::warn!(end = ?end, usage_reported = complete, "stream ended early; billing what was seen");
    }
    let (cost, balance) = settle(&gw, &bill, hold, tokens, !complete).await;
    if end == End::ClientGone {
        return;
    }
    if matches!(end, End::Idle | End::Broken) {
        let err = match wire {
            Wire::Anthropic => "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"The upstream stream ended early\"}}\n\n",
            Wire::OpenAi => "data: {\"error\":{\"message\":\"The upstream stream ended early\",\"type\":\"upstream_error\"}}\n\n",
        };
        let _ = tx.send(Bytes::from_static(err.as_bytes())).await;
    }
    let balance = balance.map_or_else(String::new, |b| format!(" balance_usd={b}"));
    let trailer = format!(": aibank cost_usd={cost}{balance}\n\n");
    let _ = tx.send(Bytes::from(trailer)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_most_output_counts_every_choice() {
        let o = |body: Value| max_output(Wire::OpenAi, &body, 4096);
        assert_eq!(o(json!({"max_completion_tokens": 100})), 100);
        assert_eq!(o(json!({"max_completion_tokens": 100, "n": 3})), 300);
        assert_eq!(o(json!({"max_tokens": 50, "n": 0})), 50);
        assert_eq!(o(json!({"n": 2})), 8192);
        assert_eq!(o(json!({"max_tokens": u64::MAX, "n": 2})), u64::MAX);
        let a = max_output(Wire::Anthropic, &json!({"max_tokens": 100, "n": 3}), 4096);
        assert_eq!(a, 100, "Anthropic has no `n`");
    }

    #[test]
    fn only_plain_paths_are_forwarded() {
        for ok in [
            "v1/messages",
            "v1/models/gpt-4o",
            "v1/models/ft:gpt-4o:org:x@1/",
            "v1/models/meta-llama/Llama-3.3",
        ] {
            assert!(plain_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/",
            "v1/models/..",
            "v1/models/./x",
            "v1//models",
            "v1/models/a%2Fb",
            "v1/models/..\\x",
            "v1/models/a b",
            "v1/models/ä",
        ] {
            assert!(!plain_path(bad), "{bad}");
        }
    }
}
