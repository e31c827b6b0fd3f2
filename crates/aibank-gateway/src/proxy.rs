//! `ANY /v1/gateway/{provider}/{path…}`: authenticate, reserve the most the call can cost,
//! forward, stream the answer through, and settle from the usage the upstream reported.
//! This module holds the request's course; its parts are the path policy (`path`), the
//! header policy (`headers`), billing (`billing`), the stream pump (`pump`) and x402
//! payment (`payment`), and each provider's dialect (`anthropic`, `openai`, `gemini`).
//!
//! Billing on every outcome:
//! - upstream 4xx/5xx, connection failure, timeout before the answer: the hold is released,
//!   nothing is charged;
//! - a complete answer: the reported usage at the price table, captured from the hold;
//! - a stream that is cut off, goes idle, or whose client disconnects: what the upstream had
//!   reported by then, in full, or, when more, that with its gaps filled from what was seen
//!   (the request size at 3 bytes per token for an unreported prompt, streamed text at 4
//!   characters per token for unreported output) up to the hold: an estimate is never
//!   billed beyond the hold, reported usage always is;
//! - a handler that is abandoned before the upstream answers (client gone): the hold is
//!   released by a drop guard.

use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{BodySize, MessageBody};
use actix_web::{web, HttpRequest, HttpResponse};
use aibank_auth::{AuthState, Capability};
use aibank_core::{ApiError, ErrorCode, SharedClock, Usd};
use aibank_store::{DbPool, StoreError};
use aibank_x402::X402;
use bytes::Bytes;
use serde_json::Value;
use tracing_actix_web::RequestId;

use crate::billing::{admit_alone, meter_request, reserve, settle, Bill, HoldGuard, Quota, Usage};
use crate::deployments::{Deployment, Failure};
use crate::dialect::{Dialect, Endpoint};
use crate::headers::{is_media, response_head, upstream_request};
use crate::payment::{has_credential, pay, Priced};
use crate::priced::{gateway_call, Payer};
use crate::prices::Tokens;
use crate::providers::{Provider, Registry};
use crate::pump::{pump, read_upstream, ReadError};
use aibank_core::SecretBox;

pub use crate::anthropic::ANTHROPIC_VERSION;
pub use crate::billing::{BYTES_PER_PROMPT_TOKEN, MESSAGE_WINDOW_MS};

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
    /// Further deployments a call is sent to when one fails before answering.
    pub retries: usize,
    /// How long a deployment that failed is left out.
    pub cooldown: Duration,
}

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
    /// The service catalog's proxy, when configured.
    pub catalog: Option<Arc<crate::catalog::Catalog>>,
    /// Where calls are counted for `/metrics`, when the server serves them.
    pub(crate) metrics: Option<Arc<crate::metrics::GatewayMetrics>>,
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
            catalog: None,
            metrics: None,
        })
    }

    /// Accepts x402 payments from callers without credentials.
    #[must_use]
    pub fn with_x402(mut self, x402: Option<Arc<X402>>) -> Self {
        self.x402 = x402;
        self
    }

    /// Counts calls in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::GatewayMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Counts a call that went upstream: its provider, model, the status it got (`None`:
    /// unreachable) and how long the answer took to begin.
    pub(crate) fn count_call(
        &self,
        provider: &str,
        model: &str,
        status: Option<u16>,
        took: Duration,
    ) {
        if let Some(m) = &self.metrics {
            m.call(provider, model, status, took);
        }
    }

    /// Counts `n` holds that became `event`.
    pub(crate) fn count_holds(&self, event: crate::metrics::HoldEvent, n: u64) {
        if let Some(m) = &self.metrics {
            m.holds(event, n);
        }
    }

    /// Counts usage served beyond its hold that the balance did not cover.
    pub(crate) fn count_owed(&self, amount: Usd) {
        if let (Some(m), false) = (&self.metrics, amount.is_zero()) {
            m.owed(amount);
        }
    }

    pub(crate) fn metrics(&self) -> Option<&Arc<crate::metrics::GatewayMetrics>> {
        self.metrics.as_ref()
    }

    /// Serves the service catalog's proxy.
    #[must_use]
    pub fn with_catalog(mut self, catalog: crate::catalog::Catalog) -> Self {
        self.catalog = Some(Arc::new(catalog));
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

    pub(crate) fn clock(&self) -> &SharedClock {
        &self.clock
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    pub(crate) fn cooldown_ms(&self) -> i64 {
        i64::try_from(self.settings.cooldown.as_millis()).unwrap_or(i64::MAX)
    }

    pub(crate) fn hold_ttl_ms(&self) -> i64 {
        i64::try_from(self.settings.hold_ttl.as_millis()).unwrap_or(i64::MAX)
    }
}

pub(crate) fn upstream_error(
    message: &str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> ApiError {
    ApiError::new(ErrorCode::UpstreamError, message).with_source(e)
}

pub(crate) fn upstream_timeout(message: &str) -> ApiError {
    ApiError::new(ErrorCode::UpstreamTimeout, message)
}

async fn read_body(payload: web::Payload, limit: usize) -> Result<Bytes, ApiError> {
    aibank_core::extract::read_body(payload.into_inner(), limit)
        .await
        .map(Bytes::from)
}

/// The key a call goes upstream with.
#[derive(Debug, Clone)]
pub(crate) enum UpstreamKey {
    /// The agent's own, at whichever deployment serves the call.
    Own(String),
    /// The platform's at the deployment that serves the call.
    Platform,
}

impl UpstreamKey {
    pub(crate) fn own(&self) -> bool {
        matches!(self, UpstreamKey::Own(_))
    }

    /// The key to send to `deployment`.
    pub(crate) fn at<'a>(&'a self, deployment: &'a Deployment) -> &'a str {
        match self {
            UpstreamKey::Own(k) => k,
            UpstreamKey::Platform => deployment
                .api_key
                .as_ref()
                .map_or("", aibank_core::SecretString::expose),
        }
    }
}

/// The upstream key for this agent and provider: the agent's own, else the platform's.
pub(crate) async fn upstream_key(
    gw: &Gateway,
    agent_id: &str,
    provider: &Provider,
) -> Result<UpstreamKey, ApiError> {
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
        return Ok(UpstreamKey::Own(key));
    }
    platform_key(provider)
}

/// The platform's key, or the 503 that says there is none.
pub(crate) fn platform_key(provider: &Provider) -> Result<UpstreamKey, ApiError> {
    if provider.configured() {
        Ok(UpstreamKey::Platform)
    } else {
        Err(
            ApiError::unavailable(format!("No {} API key configured", provider.name))
                .with("needsKey", true),
        )
    }
}

/// Why a request got no answer.
enum SendError {
    Timeout,
    /// No connection was made: nothing reached the upstream.
    Connect(reqwest::Error),
    /// The exchange failed after the request may have reached the upstream.
    Broken(reqwest::Error),
}

impl SendError {
    /// 504 for a missing answer, 502 for a failed exchange.
    fn into_api(self) -> ApiError {
        match self {
            SendError::Timeout => upstream_timeout("The upstream provider did not answer in time"),
            // Without the URL: an http provider's key may ride in its query string.
            SendError::Connect(e) | SendError::Broken(e) => {
                upstream_error("Could not reach the upstream provider", e.without_url())
            }
        }
    }

    fn failure(&self) -> Failure {
        match self {
            SendError::Timeout => Failure::Timeout,
            SendError::Connect(_) => Failure::Connect,
            SendError::Broken(_) => Failure::Broken,
        }
    }
}

async fn send_once(
    gw: &Gateway,
    out: reqwest::RequestBuilder,
) -> Result<reqwest::Response, SendError> {
    let sent = tokio::time::timeout(gw.settings.first_byte_timeout, out.send());
    match crate::metrics::upstream_wait(sent).await {
        Err(_) => Err(SendError::Timeout),
        Ok(Err(e)) if e.is_timeout() => Err(SendError::Timeout),
        Ok(Err(e)) if e.is_connect() => Err(SendError::Connect(e)),
        Ok(Err(e)) => Err(SendError::Broken(e)),
        Ok(Ok(r)) => Ok(r),
    }
}

/// Sends a call to one of the provider's deployments (`request` builds it for one), and,
/// while retries are left, to another when the one tried could not be reached or answered
/// 429 or 5xx: nothing of such an answer has reached the client, which sees only the last
/// attempt. A timeout is not retried (the upstream may still be working on the call), nor
/// is any other answer. Each failure cools its deployment; an answer ends its cooling.
/// The call is counted for `/metrics` under `model`.
pub(crate) async fn send_to_deployment<'p>(
    gw: &Gateway,
    provider: &'p Provider,
    model: &str,
    request: impl FnMut(&Deployment) -> Result<reqwest::RequestBuilder, ApiError>,
) -> Result<(reqwest::Response, &'p Deployment), ApiError> {
    let started = std::time::Instant::now();
    let sent = failover(gw, provider, request).await;
    let status = sent.as_ref().ok().map(|(r, _)| r.status().as_u16());
    gw.count_call(&provider.name, model, status, started.elapsed());
    sent
}

async fn failover<'p>(
    gw: &Gateway,
    provider: &'p Provider,
    mut request: impl FnMut(&Deployment) -> Result<reqwest::RequestBuilder, ApiError>,
) -> Result<(reqwest::Response, &'p Deployment), ApiError> {
    let deployments = &provider.deployments;
    let attempts = deployments.len().min(gw.settings.retries.saturating_add(1));
    let mut tried = Vec::with_capacity(attempts);
    loop {
        let now = gw.now_ms();
        let i = crate::deployments::pick(deployments, &tried, now, |n| {
            rand::Rng::random_range(&mut rand::rng(), 0..n)
        })
        .ok_or_else(|| ApiError::internal("a provider without deployments"))?;
        tried.push(i);
        let d = &deployments[i];
        let last = tried.len() >= attempts;
        let failure = match send_once(gw, request(d)?).await {
            Ok(r) if r.status().as_u16() == 429 => (Failure::RateLimited, Ok(r)),
            Ok(r) if r.status().is_server_error() => (Failure::ServerError, Ok(r)),
            Ok(r) => {
                d.served();
                return Ok((r, d));
            }
            Err(e) => (e.failure(), Err(e)),
        };
        let (failure, outcome) = failure;
        d.failed(failure, now, gw.cooldown_ms());
        let retried = !last && matches!(&outcome, Ok(_) | Err(SendError::Connect(_)));
        tracing::warn!(
            provider = %provider.name,
            deployment = %d.name,
            failure = ?failure,
            retried,
            "upstream deployment failed"
        );
        if !retried {
            return match outcome {
                Ok(r) => Ok((r, d)),
                Err(e) => Err(e.into_api()),
            };
        }
    }
}

/// The caller, or, for a request without credentials where x402 is on, the payment's
/// settings.
async fn admit(
    req: &HttpRequest,
    gw: &Gateway,
    auth: &AuthState,
) -> Result<(Option<aibank_auth::ApiKeyAuth>, Option<Arc<X402>>), ApiError> {
    let paying = gw.x402.clone().filter(|_| !has_credential(req));
    if paying.is_some() {
        return Ok((None, paying));
    }
    let caller = auth.authenticate(req, true).await?;
    caller.require_write("calling the gateway")?;
    caller.require(Capability::Gateway)?;
    Ok((Some(caller), None))
}

/// The gateway route. A call that reached an upstream is timed for `/metrics`: what
/// aibank added to it, and (unless it streams: its pump does that) the upstream's part.
#[tracing::instrument(skip_all, fields(provider = %req.match_info().get("provider").unwrap_or("")))]
pub async fn proxy(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    auth: web::Data<AuthState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let started = std::time::Instant::now();
    let Some(metrics) = gw.metrics().cloned() else {
        return call(req, payload, gw, auth, request_id).await;
    };
    let provider = req
        .match_info()
        .get("provider")
        .unwrap_or_default()
        .to_owned();
    // Boxed: the call's state is large, and the scope around it would copy it again.
    let timed = crate::metrics::timed(Box::pin(call(req, payload, gw, auth, request_id)));
    let (res, waited) = timed.await;
    // Only a call that reached an upstream: its provider is a known one.
    if let Some(waited) = waited {
        metrics.overhead(&provider, started.elapsed().saturating_sub(waited));
        let streams = res
            .as_ref()
            .is_ok_and(|r| matches!(MessageBody::size(r.body()), BodySize::Stream));
        if !streams {
            metrics.upstream(&provider, waited);
        }
    }
    res
}

async fn call(
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
    let tail = crate::path::unescape_slashes(req.match_info().get("tail").unwrap_or_default());
    let (caller, paying) = admit(&req, &gw, &auth).await?;
    let provider = gw.provider(&provider_name)?;
    if provider.priced.is_some() {
        let payer = Payer::of(caller, paying)?;
        return gateway_call(&gw, &req, payload, provider, &tail, payer, &request_id).await;
    }
    let method = req.method().as_str().to_owned();
    let dialect = provider.dialect;
    let Some(kind) = crate::path::endpoint(dialect, &method, &tail) else {
        return Err(ApiError::not_found(format!(
            "{method} /{tail} is not available through the {provider_name} gateway"
        )));
    };
    let mut body = read_body(payload, gw.settings.max_body_bytes).await?;
    let metered = match kind {
        Endpoint::Metered(api) => Some(meter_request(
            &gw,
            provider,
            api,
            &req,
            &tail,
            &mut body,
            &request_id,
        )?),
        Endpoint::Free => None,
    };
    let mut guard = HoldGuard::new(&gw);
    let mut payment_response = None;
    let (key, mut bill, streamed) = match (caller, paying) {
        (Some(caller), _) => {
            let key = upstream_key(&gw, &caller.agent.id, provider).await?;
            let (bill, streamed) = bill_agent(&gw, &caller, metered, key.own(), &mut guard).await?;
            (key, bill, streamed)
        }
        (None, Some(x402)) => {
            // Payers have no keys of their own; without the platform's, take no payment.
            let key = platform_key(provider)?;
            let paid = pay(&gw, &x402, &req, Priced::of(metered), &request_id).await?;
            guard.hold = paid.hold;
            guard.flat = paid.flat;
            payment_response = paid.response;
            (key, paid.bill, paid.streamed)
        }
        (None, None) => return Err(ApiError::internal("no caller and no payment")),
    };
    let own_key = key.own();
    let model = bill
        .as_ref()
        .map_or(crate::metrics::NO_MODEL, |b| b.model.as_str());
    let sent = send_to_deployment(&gw, provider, model, |d| {
        upstream_request(
            &gw,
            &req,
            provider,
            d,
            &tail,
            key.at(d),
            own_key,
            body.clone(),
        )
    })
    .await;
    let (upstream, deployment) = match sent {
        Ok(r) => r,
        Err(e) => {
            guard.release().await;
            return Err(e);
        }
    };
    if let Some(b) = &mut bill {
        b.deployment = Some(deployment.name.clone());
    }
    guard.served_by(&deployment.name);
    let served = Served {
        dialect,
        deployment: deployment.clone(),
        streamed,
        own_key,
    };
    let mut res = respond(gw, served, bill, guard, upstream).await?;
    // The payment was settled whatever the upstream answered: what the call did not cost
    // stays as credit.
    if let Some((name, value)) = payment_response {
        res.headers_mut().insert(name, value);
    }
    Ok(res)
}

/// Admits an agent's call within its key's limits (the model it names, requests and tokens
/// per minute, daily messages) and holds what a metered one may cost; its bill, and whether
/// it streams.
async fn bill_agent(
    gw: &Gateway,
    caller: &aibank_auth::ApiKeyAuth,
    metered: Option<(Bill, u64, bool)>,
    own_key: bool,
    guard: &mut HoldGuard,
) -> Result<(Option<Bill>, bool), ApiError> {
    let Some((mut bill, max_out, streamed)) = metered else {
        if let Some(q) = Quota::of(gw, caller).and_then(Quota::not_a_message) {
            admit_alone(gw, q).await?;
        }
        return Ok((None, false));
    };
    bill.agent_id.clone_from(&caller.agent.id);
    bill.api_key_id = Some(caller.key_id.clone());
    bill.charged = !own_key || gw.settings.charge_byok;
    crate::limits::check_model(caller, &bill.model)?;
    let tokens = bill.prompt_estimate.saturating_add(max_out);
    let quota = Quota::of(gw, caller).map(|q| q.with_tokens(tokens));
    if bill.charged {
        let (hold, counted) = reserve(gw, &bill, max_out, quota).await?;
        guard.hold = Some(hold);
        bill.counted = counted;
    } else if let Some(q) = quota {
        bill.counted = admit_alone(gw, q).await?;
    }
    Ok((Some(bill), streamed))
}

/// How a call was served: in which wire format, by which deployment, whether as a stream,
/// on whose key.
struct Served {
    dialect: &'static dyn Dialect,
    deployment: Deployment,
    streamed: bool,
    own_key: bool,
}

/// Turns the upstream answer into ours and settles the bill.
async fn respond(
    gw: web::Data<Gateway>,
    served: Served,
    bill: Option<Bill>,
    mut guard: HoldGuard,
    upstream: reqwest::Response,
) -> Result<HttpResponse, ApiError> {
    let Served {
        dialect,
        deployment,
        streamed,
        own_key,
    } = served;
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
        tokio::spawn(pump(
            gw.into_inner(),
            (dialect, deployment, crate::metrics::waited()),
            bill,
            hold,
            upstream,
            tx,
        ));
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, actix_web::Error>(b), rx))
        });
        return Ok(res.streaming(stream));
    }
    let body = match read_upstream(upstream, gw.settings.idle_timeout).await {
        Ok(b) => b,
        Err(e) => {
            deployment.failed(Failure::Broken, gw.now_ms(), gw.cooldown_ms());
            guard.release().await;
            return Err(e.into_api());
        }
    };
    let usage = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| bill.api.usage(&v));
    let tokens = usage.unwrap_or(Tokens {
        input: bill.prompt_estimate,
        ..Tokens::default()
    });
    let (cost, balance) = settle(&gw, &bill, guard.take(), Usage::Reported(tokens)).await;
    res.insert_header(("x-aibank-cost-usd", cost.to_string()));
    if let Some(b) = balance {
        res.insert_header(("x-aibank-balance-usd", b.to_string()));
    }
    Ok(res.body(body))
}
