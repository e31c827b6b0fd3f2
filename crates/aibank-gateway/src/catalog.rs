//! `ANY /v1/proxy/{service_id}/{path…}`: a call to a catalog service, paid per call. This
//! module owns the call's course — the service and its declared operation, the caller
//! (agent key or x402 payment), the hold, the outbound request to the owner's API with the
//! owner's key, and the sale that moves the price on a 2xx — and the sealing of owners'
//! provider keys.
//!
//! Money on every outcome: the price is held before the call goes out (spending limits and
//! debt apply); a 2xx answer captures it and credits the owner the price less the
//! operator's fee, one transaction with journal rows on every side; any other answer, a
//! refused target, a failed connection or an abandoned handler releases it.

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use aibank_auth::{AuthState, Capability};
use aibank_core::{ApiError, ErrorCode, SecretBox, Usd};
use aibank_ledger::{LedgerError, UsageMeta};
use aibank_store::models::Service;
use aibank_store::StoreError;
use bytes::Bytes;
use rust_decimal::Decimal;
use tracing_actix_web::RequestId;

use crate::billing::{FlatFee, HoldGuard};
use crate::headers::{connection_listed, forwardable, response_head};
use crate::metrics::HoldEvent;
use crate::payment::{has_credential, pay, Priced};
use crate::proxy::{upstream_error, upstream_timeout, Gateway};
use crate::pump::read_upstream;
use crate::service_spec::{self, ServiceSpec};

/// The header a caller names the wallet it calls for with; recorded on the usage row.
pub const WALLET_HEADER: &str = "x-wallet-id";

/// How catalog calls go out and what the operator keeps.
pub struct Catalog {
    /// Whether services may be reached on loopback, private and link-local addresses (and
    /// over plain http): `AIBANK_CATALOG_ALLOW_PRIVATE`.
    pub allow_private: bool,
    /// The operator's part of each price, 0..=100: `AIBANK_CATALOG_FEE_PERCENT`.
    pub fee_percent: Decimal,
    client: reqwest::Client,
    /// Parsed specs by `id@updated_at`: a call matches its path without reading the
    /// stored document again, and a changed service (a new `updated_at`) is read afresh.
    specs: aibank_auth::TtlCache<Arc<ServiceSpec>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("allow_private", &self.allow_private)
            .field("fee_percent", &self.fee_percent)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    pub fn new(
        allow_private: bool,
        fee_percent: Decimal,
        connect_timeout: Duration,
    ) -> reqwest::Result<Catalog> {
        Ok(Catalog {
            allow_private,
            fee_percent,
            client: crate::public_net::client(allow_private, connect_timeout)?,
            specs: aibank_auth::TtlCache::new(Duration::from_secs(600), 10_000),
        })
    }
}

impl Catalog {
    /// The service's declared operations, parsed once per version of the service.
    fn spec(&self, service: &aibank_store::models::Service) -> Result<Arc<ServiceSpec>, ApiError> {
        let key = format!("{}@{}", service.id, service.updated_at);
        if let Some(spec) = self.specs.get(&key) {
            return Ok(spec);
        }
        let spec: ServiceSpec = serde_json::from_str(&service.openapi_spec)
            .map_err(|e| ApiError::internal(format!("stored spec of {}: {e}", service.id)))
            .and_then(|v| service_spec::parse(&v).map_err(ApiError::internal))?;
        let spec = Arc::new(spec);
        self.specs.insert(&key, spec.clone());
        Ok(spec)
    }
}

/// The associated data a service's provider key is sealed with: the key opens only for
/// the service it was given to.
fn aad(service_id: &str) -> String {
    format!("service/{service_id}")
}

/// Seals an owner's provider key for the service `service_id`.
pub fn seal_key(secret_box: &SecretBox, service_id: &str, value: &str) -> String {
    secret_box.seal(value.as_bytes(), aad(service_id).as_bytes())
}

fn open_key(secret_box: &SecretBox, service_id: &str, sealed: &str) -> Result<String, ApiError> {
    let plain = secret_box
        .open(sealed, aad(service_id).as_bytes())
        .map_err(ApiError::internal)?;
    String::from_utf8(plain).map_err(ApiError::internal)
}

/// Where a service's price goes: an agent's account is the agent's id; a platform's is its
/// platform id, opened on first sale.
pub fn seller_account(service: &Service) -> &str {
    // Both kinds are paid to the account named by the owner's id: ids never collide, as
    // they differ in prefix (`agt_`, `plt_`).
    &service.owner_id
}

fn not_found(service_id: &str) -> ApiError {
    ApiError::not_found(format!("No active service `{service_id}`"))
}

/// The `X-Wallet-Id` a caller sent, if any: an id, nothing else, so it is safe to record.
fn wallet_of(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get(WALLET_HEADER) else {
        return Ok(None);
    };
    match v.to_str() {
        Ok(s)
            if !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
        {
            Ok(Some(s.to_owned()))
        }
        _ => Err(ApiError::invalid_field(
            "X-Wallet-Id",
            "X-Wallet-Id must be a wallet id",
        )),
    }
}

/// The catalog proxy route.
// The call's course reads best as one sequence of steps.
#[allow(clippy::too_many_lines)]
#[tracing::instrument(skip_all, fields(service_id = %req.match_info().get("service_id").unwrap_or("")))]
pub async fn proxy(
    req: HttpRequest,
    payload: web::Payload,
    gw: web::Data<Gateway>,
    auth: web::Data<AuthState>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let Some(catalog) = gw.catalog.clone() else {
        return Err(ApiError::new(
            ErrorCode::NotImplemented,
            "The service catalog is not configured",
        ));
    };
    let service_id = req
        .match_info()
        .get("service_id")
        .unwrap_or_default()
        .to_owned();
    let tail = crate::path::unescape_slashes(req.match_info().get("tail").unwrap_or_default());
    let id = service_id.clone();
    let service = gw
        .pool()
        .run(move |c| aibank_store::repo::services::find_active(c, &id).map_err(StoreError::from))
        .await?
        .ok_or_else(|| not_found(&service_id))?;
    let spec = catalog.spec(&service)?;
    let method = req.method().as_str().to_owned();
    let path = format!("/{tail}");
    let endpoint = if crate::path::plain_path(&tail) || tail.is_empty() {
        spec.find(&method, &path)
    } else {
        None
    };
    let Some(endpoint) = endpoint else {
        return Err(ApiError::not_found(format!(
            "{method} {path} is not an operation of service `{service_id}`"
        )));
    };
    let operation = format!("{} {}", endpoint.method, endpoint.path);
    let wallet = wallet_of(&req)?;
    let paying = gw.x402.clone().filter(|_| !has_credential(&req));
    let caller = if paying.is_some() {
        None
    } else {
        let caller = auth.authenticate(&req, false).await?;
        caller.require_write("calling a catalog service")?;
        caller.require(Capability::Gateway)?;
        Some(caller)
    };
    let body = aibank_core::extract::read_body(payload.into_inner(), gw.settings.max_body_bytes)
        .await
        .map(Bytes::from)?;
    let price = Usd::from_micros(service.price_micros);
    let meta = UsageMeta {
        api_key_id: caller.as_ref().map(|c| c.key_id.clone()),
        provider: "catalog".into(),
        model: service.id.clone(),
        request_id: Some(request_id.to_string()),
        description: Some(match &wallet {
            Some(w) => format!("{operation} (wallet {w})"),
            None => operation.clone(),
        }),
        ..UsageMeta::default()
    };
    let mut guard = HoldGuard::new(&gw);
    let mut payment_response = None;
    let mut payment = None;
    let buyer = match (caller, paying) {
        (Some(caller), _) => {
            let (agent, now, ttl) = (caller.agent.id.clone(), gw.now_ms(), gw.hold_ttl_ms());
            let reference = request_id.to_string();
            if !price.is_zero() {
                let a = agent.clone();
                guard.hold = Some(
                    gw.pool()
                        .write(move |c| {
                            aibank_ledger::place_hold(c, &a, price, ttl, Some(&reference), now)
                        })
                        .await?,
                );
                gw.count_holds(HoldEvent::Placed, 1);
            }
            agent
        }
        (None, Some(x402)) => {
            let paid = pay(
                &gw,
                &x402,
                &req,
                Priced::Flat {
                    price,
                    meta: meta.clone(),
                },
                &request_id,
            )
            .await?;
            payment_response = paid.response;
            guard.hold = paid.hold;
            if let Some(FlatFee { payment: p, .. }) = paid.flat {
                payment = Some(p);
            }
            // The payer's account is the hold's: the sale settles through the hold.
            String::new()
        }
        (None, None) => return Err(ApiError::internal("no caller and no payment")),
    };
    let out = match outbound(&gw, &catalog, &req, &service, &path, body) {
        Ok(out) => out,
        Err(e) => {
            guard.release().await;
            return Err(e);
        }
    };
    let upstream = match tokio::time::timeout(gw.settings.first_byte_timeout, out.send()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            guard.release().await;
            return Err(send_error(e));
        }
        Err(_) => {
            guard.release().await;
            return Err(upstream_timeout("The service did not answer in time"));
        }
    };
    let mut res = response_head(&upstream, true);
    let success = upstream.status().is_success();
    let body = match read_upstream(upstream, gw.settings.idle_timeout).await {
        Ok(b) => b,
        Err(e) => {
            guard.release().await;
            return Err(e.into_api());
        }
    };
    if success {
        let charged = sell(
            &gw,
            &catalog,
            &service,
            guard.take(),
            &buyer,
            price,
            meta,
            payment,
        )
        .await?;
        res.insert_header(("x-aibank-cost-usd", charged.to_string()));
    } else {
        guard.release().await;
        res.insert_header(("x-aibank-cost-usd", "0.0"));
    }
    if let Some((name, value)) = payment_response {
        res.insert_header((name, value));
    }
    Ok(res.body(body))
}

/// A failed send: a refused target (the service's address is not public at call time) is
/// told apart from an unreachable one. Neither message names the path or the key.
fn send_error(e: reqwest::Error) -> ApiError {
    if let Some(refused) = crate::public_net::refusal(&e) {
        return ApiError::new(
            ErrorCode::UpstreamError,
            format!("The service's address was refused: {refused}"),
        );
    }
    if e.is_timeout() {
        return upstream_timeout("The service did not answer in time");
    }
    upstream_error("Could not reach the service", e.without_url())
}

/// The request to the owner's API: `base_url + path + query`, the caller's headers less
/// aibank's credentials, payment and hop-by-hop headers, and the owner's key.
fn outbound(
    gw: &Gateway,
    catalog: &Catalog,
    req: &HttpRequest,
    service: &Service,
    path: &str,
    body: Bytes,
) -> Result<reqwest::RequestBuilder, ApiError> {
    let base = service.base_url.trim_end_matches('/');
    let query = req.query_string();
    let raw = if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{query}")
    };
    let url = url::Url::parse(&raw).map_err(ApiError::internal)?;
    crate::public_net::check_literal(&url, catalog.allow_private).map_err(|refused| {
        ApiError::new(
            ErrorCode::UpstreamError,
            format!("The service's address was refused: {refused}"),
        )
    })?;
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
        .map_err(ApiError::internal)?;
    let key_header = service
        .provider_key_header
        .as_deref()
        .map(str::to_ascii_lowercase);
    let listed = connection_listed(
        req.headers()
            .get_all("connection")
            .map(actix_web::http::header::HeaderValue::as_bytes),
    );
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in req.headers() {
        let n = name.as_str();
        if forwardable(n)
            && n != WALLET_HEADER
            && key_header.as_deref() != Some(n)
            && !listed.iter().any(|l| l == n)
        {
            if let (Ok(n), Ok(v)) = (
                reqwest::header::HeaderName::from_bytes(n.as_bytes()),
                reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
            ) {
                headers.append(n, v);
            }
        }
    }
    if let (Some(name), Some(sealed)) = (&key_header, &service.provider_key_sealed) {
        let key = open_key(&gw.secret_box, &service.id, sealed)?;
        let name =
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(ApiError::internal)?;
        let mut value = reqwest::header::HeaderValue::from_str(&key).map_err(ApiError::internal)?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    let mut out = catalog.client.request(method, url).headers(headers);
    if !body.is_empty() {
        out = out.body(body);
    }
    Ok(out)
}

/// Settles a served call: the sale (buyer's hold captured, seller and operator credited,
/// the buyer's usage row), the service's counters and an x402 payment's cost, in one
/// transaction. Returns what the buyer was charged.
#[allow(clippy::too_many_arguments)] // The sale's parties and facts, each once.
async fn sell(
    gw: &Gateway,
    catalog: &Catalog,
    service: &Service,
    hold: Option<aibank_ledger::HoldReceipt>,
    buyer: &str,
    price: Usd,
    meta: UsageMeta,
    payment: Option<(String, String)>,
) -> Result<Usd, ApiError> {
    let fee = aibank_ledger::fee_of(price, catalog.fee_percent);
    let (service_id, seller) = (service.id.clone(), seller_account(service).to_owned());
    let (buyer, now) = (buyer.to_owned(), gw.now_ms());
    let res = gw
        .pool()
        .write(move |c| -> Result<Usd, LedgerError> {
            let charged = match &hold {
                Some(hold) => {
                    let reference = meta.request_id.clone().unwrap_or_else(|| hold.id.clone());
                    aibank_ledger::capture_sale(
                        c, &hold.id, price, &seller, fee, &reference, &meta, now,
                    )?;
                    price
                }
                // A free service called with a key: no hold, the usage row only.
                None if !buyer.is_empty() => {
                    aibank_ledger::record_usage(c, &buyer, Usd::ZERO, Usd::ZERO, &meta, now)?;
                    Usd::ZERO
                }
                None => Usd::ZERO,
            };
            aibank_store::repo::services::count_call(c, &service_id, charged.micros(), now)?;
            if let Some((chain, hash)) = &payment {
                aibank_store::repo::payments::set_cost(c, chain, hash, charged.micros())?;
            }
            Ok(charged)
        })
        .await;
    match res {
        Ok(charged) => {
            if !charged.is_zero() {
                gw.count_holds(HoldEvent::Captured, 1);
            }
            Ok(charged)
        }
        Err(e) => {
            tracing::error!(service_id = %service.id, error = %e, "settling a catalog call failed");
            Err(ApiError::internal(e))
        }
    }
}

/// The shared catalog settings, for handlers that check URLs at registration.
pub fn settings(gw: &Gateway) -> Option<Arc<Catalog>> {
    gw.catalog.clone()
}

/// Whether an owner may have its key sent in header `name` (lower case): not one of
/// aibank's credentials or payment headers, nor a hop-by-hop or framing header. The
/// `Authorization` header is allowed: the catalog proxy takes aibank's key from
/// `X-API-Key` only, and strips any `Authorization` a caller sends.
pub fn key_header_allowed(name: &str) -> bool {
    name == "authorization"
        || (forwardable(name) && name != WALLET_HEADER && name != "content-type")
}
