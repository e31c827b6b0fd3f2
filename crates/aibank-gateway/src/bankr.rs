//! Bankr, built in: the `bankr` http provider (its Agent API endpoints, each priced by a
//! setting of its own, key sent as `X-API-Key`) and the `/v1/trading/bankr/*` routes, thin
//! handlers that check the caller may trade, validate, and make the priced call.
//!
//! Bankr's answers come back as Bankr wrote them; its failures do not: a 429 becomes our
//! `RATE_LIMITED` with Bankr's `resetAt`, `limit` and `used`, and any other non-2xx an
//! `UPSTREAM_ERROR` carrying Bankr's status (and its JSON body under `upstream`), so a
//! client tells Bankr's refusals from ours by the envelope alone.
//!
//! Upstream paths and shapes: <https://docs.bankr.bot/agent-api/prompt-endpoint> and
//! <https://docs.bankr.bot/agent-api/job-management>.

use actix_web::{web, HttpRequest, HttpResponse};
use aibank_auth::{ApiKeyAuth, AuthState, Capability};
use aibank_core::{ApiError, ErrorCode, Json, SecretString, Usd};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing_actix_web::RequestId;

use crate::priced::{call, EndpointSpec, KeyPlacement, Outgoing, Payer};
use crate::providers::{CustomProvider, ProviderKind};
use crate::proxy::Gateway;

pub const NAME: &str = "bankr";
pub const DEFAULT_BASE_URL: &str = "https://api.bankr.bot";
/// The chains `GET /v1/trading/bankr/balances` asks for when the caller names none.
pub const DEFAULT_CHAINS: &str = "base,polygon,mainnet,solana,unichain";
pub const MAX_PROMPT_CHARS: usize = 10_000;

const BALANCES: &str = "agent/balances";
const PROMPT: &str = "agent/prompt";
const JOB: &str = "agent/job/{jobId}";
const CANCEL: &str = "agent/job/{jobId}/cancel";

/// The price of each Bankr route, charged when the platform's key is used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BankrPrices {
    pub balances: Usd,
    pub prompt: Usd,
    pub job: Usd,
    pub cancel: Usd,
}

/// The built-in provider: at `base_url`, with the platform-wide key if there is one.
pub fn provider(
    base_url: &str,
    api_key: Option<SecretString>,
    prices: BankrPrices,
) -> CustomProvider {
    let endpoint = |method: &str, path: &str, price: Usd| EndpointSpec {
        method: method.to_owned(),
        path: path.to_owned(),
        price_usd: price,
        charge: crate::priced::Charge::Success,
    };
    CustomProvider {
        name: NAME.to_owned(),
        kind: ProviderKind::Http,
        base_url: base_url.to_owned(),
        api_key,
        auth: Some(KeyPlacement::Header {
            header: "X-API-Key".to_owned(),
            format: "{key}".to_owned(),
        }),
        byok: Some(true),
        endpoints: vec![
            endpoint("GET", BALANCES, prices.balances),
            endpoint("POST", PROMPT, prices.prompt),
            endpoint("POST", CANCEL, prices.cancel),
            endpoint("GET", JOB, prices.job),
        ],
        routes_only: true,
        ..CustomProvider::default()
    }
}

/// Authenticates a caller that may trade (and, for `write`, change something).
async fn trader(
    req: &HttpRequest,
    auth: &AuthState,
    write: Option<&str>,
) -> Result<ApiKeyAuth, ApiError> {
    let caller = auth.authenticate(req, true).await?;
    caller.require(Capability::Trading)?;
    if let Some(what) = write {
        caller.require_write(what)?;
    }
    Ok(caller)
}

/// Calls Bankr's `method template` at `path` and maps its answer.
#[allow(clippy::too_many_arguments)]
async fn forward(
    gw: &Gateway,
    req: &HttpRequest,
    caller: ApiKeyAuth,
    method: &str,
    template: &str,
    path: String,
    query: String,
    body: Option<Value>,
    request_id: &RequestId,
) -> Result<HttpResponse, ApiError> {
    let provider = gw.provider(NAME)?;
    let api = provider
        .priced
        .as_deref()
        .ok_or_else(|| ApiError::internal("bankr is not an http provider"))?;
    let endpoint = api
        .declared(method, template)
        .ok_or_else(|| ApiError::internal("bankr endpoint not declared"))?;
    let (content_type, body) = match body {
        Some(v) => (
            Some("application/json".to_owned()),
            Bytes::from(serde_json::to_vec(&v).map_err(ApiError::internal)?),
        ),
        None => (None, Bytes::new()),
    };
    let out = Outgoing {
        endpoint,
        path,
        query,
        content_type,
        body,
    };
    let served = call(
        gw,
        req,
        provider,
        api,
        out,
        Payer::Agent(Box::new(caller)),
        request_id,
    )
    .await?;
    if served.status.is_success() {
        return Ok(served.into_response());
    }
    let upstream: Option<Value> = serde_json::from_slice(&served.body).ok();
    let field = |name: &str| upstream.as_ref().and_then(|v| v.get(name));
    let message = field("message")
        .or_else(|| field("error"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if served.status.as_u16() == 429 {
        let num = |name: &str| field(name).and_then(Value::as_i64).unwrap_or(0);
        return Err(ApiError::rate_limited(
            message.unwrap_or_else(|| "Bankr rate limit reached".to_owned()),
            num("limit"),
            num("used"),
            num("resetAt"),
            gw.now_ms(),
        )
        .with("limitName", "bankr"));
    }
    // A job Bankr does not know is the caller's to hear about, not a gateway failure.
    let mut err = if served.status.as_u16() == 404 {
        ApiError::not_found(message.unwrap_or_else(|| "Bankr has no such job".to_owned()))
    } else {
        ApiError::new(
            ErrorCode::UpstreamError,
            format!("Bankr answered {}", served.status.as_u16()),
        )
    }
    .with("status", served.status.as_u16());
    if let Some(v) = upstream {
        err = err.with("upstream", v);
    }
    Err(err)
}

/// A job id Bankr's path can carry as one segment.
fn job_id(id: Option<&str>) -> Result<String, ApiError> {
    let id = id.unwrap_or_default();
    if id.is_empty() {
        return Err(ApiError::invalid_field("jobId", "`jobId` is required"));
    }
    let plain = id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
    if !plain {
        return Err(ApiError::invalid_field(
            "jobId",
            "`jobId` must be letters, digits, - and _",
        ));
    }
    Ok(id.to_owned())
}

#[derive(Debug, Deserialize)]
pub struct BalancesQuery {
    chains: Option<String>,
}

/// `GET /v1/trading/bankr/balances?chains=`.
#[tracing::instrument(skip_all)]
pub async fn balances(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    auth: web::Data<AuthState>,
    query: web::Query<BalancesQuery>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let caller = trader(&req, &auth, None).await?;
    let chains = query
        .into_inner()
        .chains
        .unwrap_or_else(|| DEFAULT_CHAINS.to_owned());
    let valid = chains.split(',').all(|c| {
        !c.is_empty()
            && c.len() <= 40
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    if !valid {
        return Err(ApiError::invalid_field(
            "chains",
            "`chains` must be a comma-separated list of chain names",
        ));
    }
    let query = format!("chains={chains}");
    forward(
        &gw,
        &req,
        caller,
        "GET",
        BALANCES,
        BALANCES.to_owned(),
        query,
        None,
        &request_id,
    )
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptBody {
    prompt: String,
    #[serde(rename = "threadId", default)]
    thread_id: Option<String>,
}

/// `POST /v1/trading/bankr/prompt {prompt, threadId?}`: starts a Bankr job.
#[tracing::instrument(skip_all)]
pub async fn prompt(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    auth: web::Data<AuthState>,
    body: Json<PromptBody>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let caller = trader(&req, &auth, Some("prompting Bankr")).await?;
    let body = body.into_inner();
    if body.prompt.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "prompt",
            "`prompt` must not be empty",
        ));
    }
    if body.prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(ApiError::invalid_field(
            "prompt",
            format!("`prompt` must be at most {MAX_PROMPT_CHARS} characters"),
        ));
    }
    let mut upstream = json!({ "prompt": body.prompt });
    if let Some(t) = body.thread_id.filter(|t| !t.is_empty()) {
        upstream["threadId"] = Value::String(t);
    }
    forward(
        &gw,
        &req,
        caller,
        "POST",
        PROMPT,
        PROMPT.to_owned(),
        String::new(),
        Some(upstream),
        &request_id,
    )
    .await
}

async fn job_status(
    req: &HttpRequest,
    gw: &Gateway,
    auth: &AuthState,
    id: Option<&str>,
    request_id: &RequestId,
) -> Result<HttpResponse, ApiError> {
    let caller = trader(req, auth, None).await?;
    let id = job_id(id)?;
    forward(
        gw,
        req,
        caller,
        "GET",
        JOB,
        format!("agent/job/{id}"),
        String::new(),
        None,
        request_id,
    )
    .await
}

/// `GET /v1/trading/bankr/jobs/{jobId}`.
#[tracing::instrument(skip_all)]
pub async fn job(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    auth: web::Data<AuthState>,
    path: web::Path<String>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    job_status(&req, &gw, &auth, Some(path.as_str()), &request_id).await
}

#[derive(Debug, Deserialize)]
pub struct JobQuery {
    #[serde(rename = "jobId")]
    job_id: Option<String>,
}

/// `GET /v1/trading/bankr/job?jobId=`.
#[tracing::instrument(skip_all)]
pub async fn job_by_query(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    auth: web::Data<AuthState>,
    query: web::Query<JobQuery>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    job_status(&req, &gw, &auth, query.job_id.as_deref(), &request_id).await
}

/// `POST /v1/trading/bankr/jobs/{jobId}/cancel`.
#[tracing::instrument(skip_all)]
pub async fn cancel(
    req: HttpRequest,
    gw: web::Data<Gateway>,
    auth: web::Data<AuthState>,
    path: web::Path<String>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let caller = trader(&req, &auth, Some("cancelling a Bankr job")).await?;
    let id = job_id(Some(path.as_str()))?;
    forward(
        &gw,
        &req,
        caller,
        "POST",
        CANCEL,
        format!("agent/job/{id}/cancel"),
        String::new(),
        None,
        &request_id,
    )
    .await
}
