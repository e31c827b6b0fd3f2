//! Per-call priced HTTP providers (`"kind": "http"` in `AIBANK_PROVIDERS`, and Bankr): the
//! endpoints a provider lists with their prices, how its key goes upstream, and the course
//! of one call — hold the endpoint's price, forward, capture it by the endpoint's charge
//! rule (a 2xx answer, or any answer) or release it, and record the usage row.
//!
//! Only listed endpoints are forwarded, and only plain paths (the gateway's path policy);
//! of the caller's request only the method, the query string, `Content-Type` and the body
//! go upstream, so no credential or payment header of ours ever does.

use std::sync::Arc;

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use aibank_auth::ApiKeyAuth;
use aibank_core::{ApiError, Usd};
use aibank_ledger::{LedgerError, UsageMeta};
use aibank_store::TxStop;
use aibank_x402::X402;
use bytes::Bytes;
use reqwest::header::HeaderMap;
use reqwest::RequestBuilder;
use serde::{Deserialize, Serialize};
use tracing_actix_web::RequestId;

use crate::billing::{admit_alone, HoldGuard, Quota};
use crate::deployments::Deployment;
use crate::dialect::{Dialect, Endpoint};
use crate::metrics::HoldEvent;
use crate::payment::{pay, Priced};
use crate::providers::Provider;
use crate::proxy::{platform_key, send_to_deployment, upstream_key, Gateway, UpstreamKey};
use crate::pump::{read_upstream, ReadError};

/// The methods an endpoint may be declared with.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

/// How the upstream key is sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum KeyPlacement {
    /// In header `header`, as `format` with `{key}` replaced by the key.
    Header {
        header: String,
        #[serde(default = "key_alone")]
        format: String,
    },
    /// As query parameter `query`.
    Query { query: String },
}

fn key_alone() -> String {
    "{key}".to_owned()
}

/// When a call's price is taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum Charge {
    /// On a 2xx answer; any other answer releases the hold.
    #[default]
    #[serde(rename = "2xx")]
    Success,
    /// On any answer the upstream gives (a failure to get one still releases it).
    #[serde(rename = "any")]
    Any,
}

/// An endpoint as `AIBANK_PROVIDERS` declares it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    pub method: String,
    /// Segments may be `{param}`, matching any one plain segment.
    pub path: String,
    pub price_usd: Usd,
    #[serde(default)]
    pub charge: Charge,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// A listed endpoint, validated.
#[derive(Debug, Clone, Serialize)]
pub struct PricedEndpoint {
    pub method: String,
    /// Without a leading or trailing `/`.
    pub path: String,
    pub price_usd: Usd,
    pub charge: Charge,
    #[serde(skip)]
    segments: Vec<Segment>,
}

impl PricedEndpoint {
    fn matches(&self, method: &str, segments: &[&str]) -> bool {
        self.method == method
            && self.segments.len() == segments.len()
            && self.segments.iter().zip(segments).all(|(s, got)| match s {
                Segment::Literal(l) => l == got,
                Segment::Param => true,
            })
    }

    /// How the usage row names the call: `METHOD /template`.
    pub fn label(&self) -> String {
        format!("{} /{}", self.method, self.path)
    }
}

/// A provider's priced API.
#[derive(Debug, Clone)]
pub struct PricedApi {
    pub key: KeyPlacement,
    pub endpoints: Vec<PricedEndpoint>,
    /// Whether `/v1/gateway/{name}/…` serves it (Bankr is served by its own routes only,
    /// which ask for the trading capability).
    pub gateway: bool,
}

impl PricedApi {
    /// Validates a declaration: known methods, plain paths, prices of at least zero, no
    /// endpoint twice, and a usable key placement.
    pub fn new(
        key: KeyPlacement,
        specs: Vec<EndpointSpec>,
        gateway: bool,
    ) -> Result<PricedApi, String> {
        match &key {
            KeyPlacement::Header { header, format } => {
                if HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(format!("auth header `{header}` is not a header name"));
                }
                if !format.contains("{key}") {
                    return Err("auth format must contain `{key}`".to_owned());
                }
            }
            KeyPlacement::Query { query } => {
                if query.is_empty()
                    || !query
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(format!(
                        "auth query parameter `{query}` must be letters, digits, -, _ or ."
                    ));
                }
            }
        }
        if specs.is_empty() {
            return Err("an http provider needs at least one endpoint".to_owned());
        }
        let mut endpoints: Vec<PricedEndpoint> = Vec::with_capacity(specs.len());
        for spec in specs {
            let method = spec.method.to_ascii_uppercase();
            if !METHODS.contains(&method.as_str()) {
                return Err(format!(
                    "endpoint method `{}` is not one of {}",
                    spec.method,
                    METHODS.join(", ")
                ));
            }
            let path = spec.path.trim_matches('/').to_owned();
            let segments = parse_template(&path)
                .ok_or_else(|| format!("endpoint path `{}` is not a plain path", spec.path))?;
            if spec.price_usd.is_negative() {
                return Err(format!(
                    "endpoint {method} /{path}: price_usd must not be negative"
                ));
            }
            if endpoints
                .iter()
                .any(|e| e.method == method && e.segments == segments)
            {
                return Err(format!("endpoint {method} /{path} is declared twice"));
            }
            endpoints.push(PricedEndpoint {
                method,
                path,
                price_usd: spec.price_usd,
                charge: spec.charge,
                segments,
            });
        }
        Ok(PricedApi {
            key,
            endpoints,
            gateway,
        })
    }

    /// The endpoint `method tail` calls; `None`: not forwarded. Of overlapping endpoints
    /// (`v1/items/latest` and `v1/items/{id}`) the first listed wins.
    pub fn endpoint(&self, method: &str, tail: &str) -> Option<&PricedEndpoint> {
        if !crate::path::plain_path(tail) {
            return None;
        }
        let segments: Vec<&str> = tail.trim_end_matches('/').split('/').collect();
        self.endpoints.iter().find(|e| e.matches(method, &segments))
    }

    /// The endpoint declared as `method template`.
    pub fn declared(&self, method: &str, template: &str) -> Option<&PricedEndpoint> {
        self.endpoints
            .iter()
            .find(|e| e.method == method && e.path == template)
    }
}

/// A template's segments, or `None` when it is not a plain path (a `{param}` aside).
fn parse_template(path: &str) -> Option<Vec<Segment>> {
    if path.is_empty() {
        return None;
    }
    path.split('/')
        .map(|s| {
            if let Some(name) = s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let ok = !name.is_empty()
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                ok.then_some(Segment::Param)
            } else {
                crate::path::plain_path(s).then(|| Segment::Literal(s.to_owned()))
            }
        })
        .collect()
}

/// The dialect of an http provider: it names no endpoint of its own (its `PricedApi`
/// does) and adds no credential (the priced flow places the key).
#[derive(Debug)]
pub struct Http;

pub static DIALECT: Http = Http;

impl Dialect for Http {
    fn name(&self) -> &'static str {
        "http"
    }
    fn endpoint(&self, _method: &str, _path: &str) -> Option<Endpoint> {
        None
    }
    fn authenticate(
        &self,
        out: RequestBuilder,
        _key: &str,
        _incoming: &HeaderMap,
    ) -> RequestBuilder {
        out
    }
    fn sets_header(&self, _name: &str) -> bool {
        false
    }
    fn forwards_query_param(&self, _name: &str) -> bool {
        true
    }
    fn stream_error_event(&self) -> &'static str {
        ""
    }
    fn takes_sse_comments(&self) -> bool {
        false
    }
}

/// Who pays for a call.
pub(crate) enum Payer {
    /// An agent's key: its credits, or nothing on its own upstream key.
    Agent(Box<ApiKeyAuth>),
    /// A caller without credentials, paying with x402.
    X402(Arc<X402>),
}

impl Payer {
    /// The authenticated caller, else the x402 payer.
    pub(crate) fn of(
        caller: Option<ApiKeyAuth>,
        paying: Option<Arc<X402>>,
    ) -> Result<Payer, ApiError> {
        match (caller, paying) {
            (Some(caller), _) => Ok(Payer::Agent(Box::new(caller))),
            (None, Some(x402)) => Ok(Payer::X402(x402)),
            (None, None) => Err(ApiError::internal("no caller and no payment")),
        }
    }
}

/// One call to make: the endpoint, the upstream path it resolved to, and what to send.
pub(crate) struct Outgoing<'a> {
    pub(crate) endpoint: &'a PricedEndpoint,
    /// Without a leading `/`.
    pub(crate) path: String,
    /// The query string, as the caller wrote it.
    pub(crate) query: String,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Bytes,
}

/// The upstream's answer, and what the call cost.
pub(crate) struct Served {
    pub(crate) status: StatusCode,
    pub(crate) content_type: Option<String>,
    pub(crate) body: Bytes,
    pub(crate) cost: Usd,
    /// A standard payment's settlement header.
    pub(crate) payment_response: Option<(HeaderName, HeaderValue)>,
}

impl Served {
    /// The answer as the upstream gave it, plus the cost.
    pub(crate) fn into_response(self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status);
        if let Some(ct) = &self.content_type {
            res.insert_header(("content-type", ct.as_str()));
        }
        res.insert_header(("x-aibank-cost-usd", self.cost.to_string()));
        if let Some((name, value)) = self.payment_response {
            res.insert_header((name, value));
        }
        res.body(self.body)
    }
}

/// The key to send, whether it is the agent's own, for `payer`. Only a provider that
/// takes agents' keys looks for one.
async fn resolve_key(
    gw: &Gateway,
    provider: &Provider,
    payer: &Payer,
) -> Result<UpstreamKey, ApiError> {
    // Only the missing-key refusal is renamed; any other failure passes as it is.
    let no_key = |e: ApiError| {
        if e.body().get("needsKey").is_some() {
            ApiError::unavailable(format!("No {} API key configured", title(&provider.name)))
                .with("needsKey", true)
        } else {
            e
        }
    };
    match payer {
        Payer::Agent(caller) if provider.byok => upstream_key(gw, &caller.agent.id, provider)
            .await
            .map_err(no_key),
        _ => platform_key(provider).map_err(no_key),
    }
}

/// `bankr` → `Bankr`, as the provider is named in messages.
fn title(name: &str) -> String {
    let mut c = name.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Makes one priced call: resolves the key, holds the price (or takes the payment),
/// forwards, and settles by the endpoint's charge rule.
pub(crate) async fn call(
    gw: &Gateway,
    req: &HttpRequest,
    provider: &Provider,
    api: &PricedApi,
    out: Outgoing<'_>,
    payer: Payer,
    request_id: &RequestId,
) -> Result<Served, ApiError> {
    let key = resolve_key(gw, provider, &payer).await?;
    let own_key = key.own();
    let endpoint = out.endpoint;
    let charged = !own_key || gw.settings.charge_byok;
    let price = if charged {
        endpoint.price_usd
    } else {
        Usd::ZERO
    };
    let mut meta = UsageMeta {
        provider: provider.name.clone(),
        model: endpoint.label(),
        request_id: Some(request_id.to_string()),
        description: own_key.then(|| "own upstream key".to_owned()),
        ..UsageMeta::default()
    };
    let mut guard = HoldGuard::new(gw);
    let mut payment_response = None;
    let agent = match &payer {
        Payer::Agent(caller) => {
            meta.api_key_id = Some(caller.key_id.clone());
            let quota = Quota::of(gw, caller);
            if price.is_zero() {
                if let Some(q) = quota {
                    admit_alone(gw, q).await?;
                }
            } else {
                guard.hold = Some(hold(gw, &caller.agent.id, price, quota, request_id).await?);
            }
            Some(caller.agent.id.clone())
        }
        Payer::X402(x402) => {
            let paid = pay(
                gw,
                x402,
                req,
                Priced::Flat {
                    price,
                    meta: meta.clone(),
                },
                request_id,
            )
            .await?;
            guard.hold = paid.hold;
            guard.flat = paid.flat;
            payment_response = paid.response;
            None
        }
    };
    let sent = send_to_deployment(gw, provider, &meta.model, |d| {
        upstream_request(gw, d, api, &out, key.at(d))
    })
    .await;
    let (upstream, deployment) = match sent {
        Ok(r) => r,
        Err(e) => {
            guard.release().await;
            return Err(e);
        }
    };
    meta.deployment = Some(deployment.name.clone());
    guard.served_by(&deployment.name);
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = upstream
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match read_upstream(upstream, gw.settings.idle_timeout).await {
        Ok(b) => b,
        Err(e) => {
            guard.release().await;
            return Err(ReadError::into_api(e));
        }
    };
    let taken = status.is_success() || endpoint.charge == Charge::Any;
    let cost = if !taken {
        guard.release().await;
        Usd::ZERO
    } else if let Some(agent) = agent {
        settle(gw, &agent, &mut guard, meta).await
    } else {
        guard.capture_flat().await.unwrap_or(Usd::ZERO)
    };
    Ok(Served {
        status,
        content_type,
        body,
        cost,
        payment_response,
    })
}

/// Holds `price` on the agent's account and counts the call against its key's message
/// limit, in one transaction, as an LLM call's hold is.
async fn hold(
    gw: &Gateway,
    agent: &str,
    price: Usd,
    quota: Option<Quota>,
    request_id: &RequestId,
) -> Result<aibank_ledger::HoldReceipt, ApiError> {
    let (agent, now, ttl) = (agent.to_owned(), gw.now_ms(), gw.hold_ttl_ms());
    let reference = request_id.to_string();
    let hold = gw
        .pool()
        .write(move |c| {
            let hold = aibank_ledger::place_hold(c, &agent, price, ttl, Some(&reference), now)
                .map_err(TxStop::Failed)?;
            if let Some(q) = &quota {
                q.admit(c, now)
                    .map_err(|e| TxStop::Failed(LedgerError::from(e)))?
                    .map_err(TxStop::Stopped)?;
            }
            Ok(hold)
        })
        .await
        .map_err(|e: TxStop<ApiError, LedgerError>| match e {
            TxStop::Stopped(refusal) => refusal,
            TxStop::Failed(e) => e.into(),
        })?;
    gw.count_holds(HoldEvent::Placed, 1);
    Ok(hold)
}

/// Captures a served call's hold (if it had one) and records its usage row, in one
/// transaction; the cost taken.
async fn settle(gw: &Gateway, agent: &str, guard: &mut HoldGuard, meta: UsageMeta) -> Usd {
    let hold = guard.take();
    let (agent, now) = (agent.to_owned(), gw.now_ms());
    let res = gw
        .pool()
        .write(move |c| -> Result<(Usd, Usd, bool), LedgerError> {
            let (charged, owed, captured) = match &hold {
                Some(h) => {
                    let got = aibank_ledger::capture_usage(c, &agent, h, h.amount, true, now)?;
                    (got.charged, got.owed, got.captured_hold)
                }
                None => (Usd::ZERO, Usd::ZERO, false),
            };
            aibank_ledger::record_usage(c, &agent, charged, owed, &meta, now)?;
            Ok((charged, owed, captured))
        })
        .await;
    match res {
        Ok((charged, owed, captured)) => {
            if captured {
                gw.count_holds(HoldEvent::Captured, 1);
            }
            gw.count_owed(owed);
            charged
        }
        Err(e) => {
            tracing::error!(error = %e, "settling a priced call failed");
            Usd::ZERO
        }
    }
}

/// The upstream request: the caller's method, the endpoint's path, the caller's query
/// (less a parameter of the key's name), `Content-Type` and body, and the key where the
/// provider wants it.
fn upstream_request(
    gw: &Gateway,
    deployment: &Deployment,
    api: &PricedApi,
    out: &Outgoing<'_>,
    key: &str,
) -> Result<RequestBuilder, ApiError> {
    let mut url = reqwest::Url::parse(&format!("{}/{}", deployment.base_url, out.path))
        .map_err(ApiError::internal)?;
    let key_param = match &api.key {
        KeyPlacement::Query { query } => Some(query.as_str()),
        KeyPlacement::Header { .. } => None,
    };
    let query: Vec<&str> = out
        .query
        .split('&')
        .filter(|pair| {
            !pair.is_empty()
                && key_param.is_none_or(|k| {
                    let name = pair.split('=').next().unwrap_or_default();
                    !name.eq_ignore_ascii_case(k)
                })
        })
        .collect();
    if !query.is_empty() {
        url.set_query(Some(&query.join("&")));
    }
    if let Some(k) = key_param {
        url.query_pairs_mut().append_pair(k, key);
    }
    let method =
        reqwest::Method::from_bytes(out.endpoint.method.as_bytes()).map_err(ApiError::internal)?;
    let mut request = gw.client().request(method, url);
    if let KeyPlacement::Header { header, format } = &api.key {
        request = request.header(header.as_str(), format.replace("{key}", key));
    }
    if let Some(ct) = &out.content_type {
        request = request.header("content-type", ct.as_str());
    }
    if !out.body.is_empty() {
        request = request.body(out.body.clone());
    }
    Ok(request)
}

/// `/v1/gateway/{name}/{path}` for an http provider.
pub(crate) async fn gateway_call(
    gw: &Gateway,
    req: &HttpRequest,
    payload: web::Payload,
    provider: &Provider,
    tail: &str,
    payer: Payer,
    request_id: &RequestId,
) -> Result<HttpResponse, ApiError> {
    let api = provider
        .priced
        .as_deref()
        .ok_or_else(|| ApiError::internal("not an http provider"))?;
    let method = req.method().as_str();
    let endpoint = api
        .endpoint(method, tail)
        .filter(|_| api.gateway)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{method} /{tail} is not available through the {} gateway",
                provider.name
            ))
        })?;
    let body = aibank_core::extract::read_body(payload.into_inner(), gw.settings.max_body_bytes)
        .await
        .map(Bytes::from)?;
    let out = Outgoing {
        endpoint,
        path: tail.trim_end_matches('/').to_owned(),
        query: req.query_string().to_owned(),
        content_type: req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
    };
    let served = call(gw, req, provider, api, out, payer, request_id).await?;
    Ok(served.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(method: &str, path: &str, price: &str) -> EndpointSpec {
        serde_json::from_value(serde_json::json!({
            "method": method, "path": path,
            "price_usd": serde_json::from_str::<serde_json::Value>(price).unwrap(),
        }))
        .unwrap()
    }

    fn header() -> KeyPlacement {
        KeyPlacement::Header {
            header: "X-API-Key".into(),
            format: "{key}".into(),
        }
    }

    #[test]
    fn endpoints_match_by_method_and_template() {
        let api = PricedApi::new(
            header(),
            vec![
                spec("get", "/v1/items/latest", "0"),
                spec("GET", "v1/items/{id}", "0.01"),
                spec("POST", "v1/items", "0.000001"),
            ],
            true,
        )
        .unwrap();
        assert_eq!(
            api.endpoint("GET", "v1/items/42").unwrap().path,
            "v1/items/{id}"
        );
        assert_eq!(
            api.endpoint("GET", "v1/items/42").unwrap().price_usd,
            Usd::from_micros(10_000)
        );
        assert_eq!(
            api.endpoint("GET", "v1/items/latest").unwrap().price_usd,
            Usd::ZERO
        );
        assert_eq!(api.endpoint("POST", "v1/items/").unwrap().path, "v1/items");
        for (m, p) in [
            ("DELETE", "v1/items/42"),
            ("GET", "v1/items"),
            ("GET", "v1/items/42/more"),
            ("GET", "v1/items/.."),
            ("GET", "v1/items/a%2Fb"),
            ("GET", "v1/items//"),
        ] {
            assert!(api.endpoint(m, p).is_none(), "{m} {p}");
        }
    }

    #[test]
    fn a_price_is_read_exactly() {
        let api = PricedApi::new(header(), vec![spec("GET", "a", "0.1")], true).unwrap();
        assert_eq!(api.endpoints[0].price_usd.micros(), 100_000);
        let too_fine: Result<EndpointSpec, _> = serde_json::from_value(serde_json::json!({
            "method": "GET", "path": "a",
            "price_usd": serde_json::from_str::<serde_json::Value>("0.0000001").unwrap(),
        }));
        assert!(too_fine.is_err());
    }

    #[test]
    fn bad_declarations_are_refused() {
        let cases: Vec<(KeyPlacement, Vec<EndpointSpec>, &str)> = vec![
            (header(), vec![], "at least one endpoint"),
            (header(), vec![spec("TRACE", "a", "1")], "method `TRACE`"),
            (
                header(),
                vec![spec("GET", "a/../b", "1")],
                "not a plain path",
            ),
            (header(), vec![spec("GET", "a/{}", "1")], "not a plain path"),
            (header(), vec![spec("GET", "", "1")], "not a plain path"),
            (
                header(),
                vec![spec("GET", "a", "-1")],
                "must not be negative",
            ),
            (
                header(),
                vec![spec("GET", "a/{x}", "1"), spec("get", "/a/{y}/", "2")],
                "declared twice",
            ),
            (
                KeyPlacement::Header {
                    header: "X Key".into(),
                    format: "{key}".into(),
                },
                vec![spec("GET", "a", "1")],
                "not a header name",
            ),
            (
                KeyPlacement::Header {
                    header: "Authorization".into(),
                    format: "Bearer".into(),
                },
                vec![spec("GET", "a", "1")],
                "must contain `{key}`",
            ),
            (
                KeyPlacement::Query {
                    query: String::new(),
                },
                vec![spec("GET", "a", "1")],
                "query parameter",
            ),
        ];
        for (key, specs, want) in cases {
            let err = PricedApi::new(key, specs, true).unwrap_err();
            assert!(err.contains(want), "{err} lacks {want}");
        }
    }

    #[test]
    fn key_placements_parse_from_json() {
        let h: KeyPlacement =
            serde_json::from_str(r#"{"header": "Authorization", "format": "Bearer {key}"}"#)
                .unwrap();
        assert!(matches!(h, KeyPlacement::Header { ref format, .. } if format == "Bearer {key}"));
        let h: KeyPlacement = serde_json::from_str(r#"{"header": "X-API-Key"}"#).unwrap();
        assert!(matches!(h, KeyPlacement::Header { ref format, .. } if format == "{key}"));
        let q: KeyPlacement = serde_json::from_str(r#"{"query": "apikey"}"#).unwrap();
        assert!(matches!(q, KeyPlacement::Query { ref query } if query == "apikey"));
    }

    #[test]
    fn names_are_titled_for_messages() {
        assert_eq!(title("bankr"), "Bankr");
        assert_eq!(title(""), "");
    }
}
