//! `POST /v1/services` and `GET`/`PUT`/`DELETE /v1/services/{id}`: the services an agent
//! (`X-API-Key`) or a platform (`X-Master-Key`) sells in the catalog. A service is visible
//! here to its owner only; to anyone else it does not exist (404).
//!
//! A request body may be up to [`MAX_SERVICE_BODY_BYTES`] (the OpenAPI document rides in
//! it), more than the other JSON routes take.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use aibank_auth::extract::MASTER_KEY_HEADER;
use aibank_auth::{AgentKeyAuth, MasterKeyAuth};
use aibank_core::clock::rfc3339;
use aibank_core::ids::new_id;
use aibank_core::{ApiError, Usd};
use aibank_gateway::service_spec::{self, ServiceSpec};
use aibank_store::models::{Service, OWNER_AGENT, OWNER_PLATFORM, SERVICE_ACTIVE, SERVICE_PAUSED};
use aibank_store::repo::services as repo;
use aibank_store::StoreError;
use futures_util::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::AppState;
use crate::validate;

/// The largest body `POST`/`PUT /v1/services` read: 1 MiB, the OpenAPI document included.
pub const MAX_SERVICE_BODY_BYTES: usize = 1 << 20;
pub const MAX_SERVICE_DESCRIPTION_CHARS: usize = 2_000;
pub const MAX_CATEGORY_CHARS: usize = 32;
pub const MAX_PROVIDER_KEY_CHARS: usize = 512;

/// Who owns a service: an agent, or a platform.
#[derive(Debug, Clone)]
pub enum Owner {
    Agent(String),
    Platform(String),
}

impl Owner {
    fn kind_and_id(&self) -> (&'static str, &str) {
        match self {
            Owner::Agent(id) => (OWNER_AGENT, id),
            Owner::Platform(id) => (OWNER_PLATFORM, id),
        }
    }

    fn owns(&self, s: &Service) -> bool {
        let (kind, id) = self.kind_and_id();
        s.owner_kind == kind && s.owner_id == id
    }
}

/// `X-Master-Key` when present, else an agent's `X-API-Key`.
impl FromRequest for Owner {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if req.headers().contains_key(MASTER_KEY_HEADER) {
            let fut = MasterKeyAuth::from_request(req, payload);
            return Box::pin(async move { Ok(Owner::Platform(fut.await?.platform_id)) });
        }
        let fut = AgentKeyAuth::from_request(req, payload);
        Box::pin(async move { Ok(Owner::Agent(fut.await?.0.agent.id)) })
    }
}

/// A service as its owner and the catalog see it; never its provider key.
#[derive(Debug, Serialize)]
pub struct ServiceView {
    pub id: String,
    pub name: String,
    pub description: String,
    pub base_url: String,
    pub pricing_model: &'static str,
    pub price_per_call_usd: Usd,
    pub category: String,
    pub endpoints_count: usize,
    pub status: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_calls: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_revenue_usd: Option<Usd>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscribers: Option<i64>,
}

/// The stored document read back (it was checked when stored).
pub fn spec_of(s: &Service) -> Result<(Value, ServiceSpec), ApiError> {
    let v: Value = serde_json::from_str(&s.openapi_spec).map_err(ApiError::internal)?;
    let spec = service_spec::parse(&v).map_err(ApiError::internal)?;
    Ok((v, spec))
}

impl ServiceView {
    pub fn of(s: &Service, endpoints_count: usize) -> ServiceView {
        ServiceView {
            id: s.id.clone(),
            name: s.name.clone(),
            description: s.description.clone(),
            base_url: s.base_url.clone(),
            pricing_model: "per_call",
            price_per_call_usd: Usd::from_micros(s.price_micros),
            category: s.category.clone(),
            endpoints_count,
            status: s.status.clone(),
            created_at: rfc3339(s.created_at),
            total_calls: None,
            total_revenue_usd: None,
            subscribers: None,
        }
    }

    fn with_stats(mut self, s: &Service, subscribers: i64) -> ServiceView {
        self.total_calls = Some(s.total_calls);
        self.total_revenue_usd = Some(Usd::from_micros(s.total_revenue_micros));
        self.subscribers = Some(subscribers);
        self
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderKey {
    header: String,
    value: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    #[serde(default)]
    description: String,
    base_url: String,
    openapi_spec: Value,
    price_per_call_usd: Usd,
    category: String,
    provider_key: Option<ProviderKey>,
}

async fn read_json<T: serde::de::DeserializeOwned>(payload: web::Payload) -> Result<T, ApiError> {
    let body =
        aibank_core::extract::read_body(payload.into_inner(), MAX_SERVICE_BODY_BYTES).await?;
    aibank_core::extract::parse_json(&body)
}

fn description(v: &str) -> Result<String, ApiError> {
    let v = v.trim();
    if v.chars().count() > MAX_SERVICE_DESCRIPTION_CHARS {
        return Err(ApiError::invalid_field(
            "description",
            format!("`description` must be at most {MAX_SERVICE_DESCRIPTION_CHARS} characters"),
        ));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(ApiError::invalid_field(
            "description",
            "`description` must not contain control characters other than newlines and tabs",
        ));
    }
    Ok(v.to_owned())
}

/// `[a-z0-9]` then `[a-z0-9-]`, at most [`MAX_CATEGORY_CHARS`]: `weather`, `data-feeds`.
fn category(v: &str) -> Result<String, ApiError> {
    let ok = !v.is_empty()
        && v.len() <= MAX_CATEGORY_CHARS
        && !v.starts_with('-')
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(ApiError::invalid_field(
            "category",
            format!(
                "`category` must be 1 to {MAX_CATEGORY_CHARS} lower-case letters, digits and \
                 `-`, starting with a letter or digit"
            ),
        ))
    }
}

fn price(v: Usd) -> Result<Usd, ApiError> {
    validate::amount("price_per_call_usd", v)
}

fn spec(v: &Value) -> Result<(String, ServiceSpec), ApiError> {
    let parsed = service_spec::parse(v)?;
    Ok((v.to_string(), parsed))
}

/// The header name (lower case) and value, checked.
fn provider_key(k: &ProviderKey) -> Result<(String, String), ApiError> {
    let name = k.header.trim().to_ascii_lowercase();
    if actix_web::http::header::HeaderName::from_bytes(name.as_bytes()).is_err()
        || !aibank_gateway::catalog::key_header_allowed(&name)
    {
        return Err(ApiError::invalid_field(
            "provider_key.header",
            "`provider_key.header` must be a valid header name that is not an aibank \
             credential, payment or hop-by-hop header",
        ));
    }
    let n = k.value.chars().count();
    if n == 0 || n > MAX_PROVIDER_KEY_CHARS || !k.value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::invalid_field(
            "provider_key.value",
            format!(
                "`provider_key.value` must be 1 to {MAX_PROVIDER_KEY_CHARS} printable ASCII \
                 characters"
            ),
        ));
    }
    Ok((name, k.value.clone()))
}

/// An `https` URL whose host resolves to public addresses only (unless private targets
/// are allowed), stored without a trailing slash.
async fn base_url(state: &AppState, v: &str) -> Result<String, ApiError> {
    let allow = state
        .gateway
        .catalog
        .as_ref()
        .is_some_and(|c| c.allow_private);
    let url = aibank_gateway::public_net::check_url(v.trim(), allow)
        .await
        .map_err(|e| ApiError::invalid_field("base_url", format!("`base_url` is refused: {e}")))?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ApiError::invalid_field(
            "base_url",
            "`base_url` must not have a query or fragment",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `POST /v1/services`.
#[tracing::instrument(skip_all)]
pub async fn create(
    state: web::Data<AppState>,
    owner: Owner,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body: CreateRequest = read_json(payload).await?;
    let name = validate::name("name", &body.name)?;
    let description = description(&body.description)?;
    let category = category(&body.category)?;
    let price = price(body.price_per_call_usd)?;
    let (spec_text, parsed) = spec(&body.openapi_spec)?;
    let key = body.provider_key.as_ref().map(provider_key).transpose()?;
    let base_url = base_url(&state, &body.base_url).await?;
    let id = new_id("svc");
    let (header, sealed) = match key {
        Some((h, v)) => (
            Some(h),
            Some(aibank_gateway::catalog::seal_key(
                &state.gateway.secret_box,
                &id,
                &v,
            )),
        ),
        None => (None, None),
    };
    let (kind, owner_id) = owner.kind_and_id();
    let now = state.clock.now_ms();
    let row = Service {
        id,
        owner_kind: kind.to_owned(),
        owner_id: owner_id.to_owned(),
        name,
        description,
        base_url,
        openapi_spec: spec_text,
        price_micros: price.micros(),
        category,
        provider_key_header: header,
        provider_key_sealed: sealed,
        status: SERVICE_ACTIVE.to_owned(),
        total_calls: 0,
        total_revenue_micros: 0,
        created_at: now,
        updated_at: now,
    };
    let view = ServiceView::of(&row, parsed.endpoints.len());
    state
        .pool
        .write(move |c| repo::insert(c, &row).map_err(StoreError::from))
        .await
        .map_err(ApiError::from)?;
    Ok(HttpResponse::Created().json(view))
}

/// The caller's own service, else 404.
async fn owned(state: &AppState, owner: &Owner, id: String) -> Result<Service, ApiError> {
    let found = state
        .pool
        .run(move |c| repo::find(c, &id).map_err(StoreError::from))
        .await?;
    found
        .filter(|s| owner.owns(s))
        .ok_or_else(|| ApiError::not_found("Service not found"))
}

async fn full_view(state: &AppState, s: Service) -> Result<ServiceView, ApiError> {
    let (_, spec) = spec_of(&s)?;
    let id = s.id.clone();
    let subscribers = state
        .pool
        .run(move |c| repo::subscribers(c, &id).map_err(StoreError::from))
        .await?;
    Ok(ServiceView::of(&s, spec.endpoints.len()).with_stats(&s, subscribers))
}

/// `GET /v1/services/{id}`.
#[tracing::instrument(skip_all)]
pub async fn get(
    state: web::Data<AppState>,
    owner: Owner,
    path: web::Path<String>,
) -> Result<web::Json<ServiceView>, ApiError> {
    let s = owned(&state, &owner, path.into_inner()).await?;
    Ok(web::Json(full_view(&state, s).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    price_per_call_usd: Option<Usd>,
    status: Option<String>,
    description: Option<String>,
    openapi_spec: Option<Value>,
}

/// `PUT /v1/services/{id}`: a partial update of the price, status, description or spec.
#[tracing::instrument(skip_all)]
pub async fn update(
    state: web::Data<AppState>,
    owner: Owner,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<web::Json<ServiceView>, ApiError> {
    let body: UpdateRequest = read_json(payload).await?;
    let status = match body.status.as_deref() {
        None => None,
        Some(s @ (SERVICE_ACTIVE | SERVICE_PAUSED)) => Some(s.to_owned()),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "status",
                "`status` must be `active` or `paused`",
            ))
        }
    };
    let changes = repo::ServiceChanges {
        price_micros: body
            .price_per_call_usd
            .map(price)
            .transpose()?
            .map(Usd::micros),
        status,
        description: body.description.as_deref().map(description).transpose()?,
        openapi_spec: body
            .openapi_spec
            .as_ref()
            .map(spec)
            .transpose()?
            .map(|(text, _)| text),
        updated_at: state.clock.now_ms(),
    };
    let id = owned(&state, &owner, path.into_inner()).await?.id;
    let updated = state
        .pool
        .write(move |c| repo::update(c, &id, &changes).map_err(StoreError::from))
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| ApiError::not_found("Service not found"))?;
    Ok(web::Json(full_view(&state, updated).await?))
}

/// `DELETE /v1/services/{id}`: the service leaves the catalog and the proxy at once; its
/// row stays for the journal rows that name it.
#[tracing::instrument(skip_all)]
pub async fn delete(
    state: web::Data<AppState>,
    owner: Owner,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = owned(&state, &owner, path.into_inner()).await?.id;
    let now = state.clock.now_ms();
    let gone = state
        .pool
        .write(move |c| repo::mark_deleted(c, &id, now).map_err(StoreError::from))
        .await
        .map_err(ApiError::from)?;
    if !gone {
        return Err(ApiError::not_found("Service not found"));
    }
    Ok(HttpResponse::NoContent().finish())
}
