//! The public catalog: `GET /v1/catalog` lists active services, `GET /v1/catalog/{id}`
//! shows one with its endpoints and a digest for agents, and
//! `POST`/`DELETE /v1/catalog/{id}/subscribe` subscribe an agent's wallet. Reading needs
//! any valid `X-API-Key`; subscribing needs the wallet's agent.

use actix_web::{web, HttpResponse};
use aibank_auth::{AgentKeyAuth, ApiKeyAuth};
use aibank_core::clock::rfc3339;
use aibank_core::{ApiError, ErrorCode, Json, Page, PageQuery, Query, Usd};
use aibank_gateway::service_spec::SpecEndpoint;
use aibank_store::models::ServiceSubscription;
use aibank_store::repo::{self, cursor_of, services as svc_repo};
use aibank_store::{is_unique_violation, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::handlers::services::{spec_of, ServiceView};
use crate::state::AppState;

pub const MAX_SEARCH_CHARS: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    category: Option<String>,
    search: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// `GET /v1/catalog`.
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    _caller: ApiKeyAuth,
    q: Query<ListQuery>,
) -> Result<web::Json<Page<ServiceView>>, ApiError> {
    let q = q.into_inner();
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    let (limit, cursor) = (page.limit()?, page.cursor()?);
    let search = q
        .search
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if search
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_SEARCH_CHARS)
    {
        return Err(ApiError::invalid_field(
            "search",
            format!("`search` must be at most {MAX_SEARCH_CHARS} characters"),
        ));
    }
    let category = q.category.filter(|c| !c.is_empty());
    let rows = state
        .pool
        .run(move |c| {
            svc_repo::list_active(
                c,
                category.as_deref(),
                search.as_deref(),
                cursor.as_ref(),
                i64::from(limit) + 1,
            )
            .map_err(StoreError::from)
        })
        .await?;
    let counts: Vec<usize> = rows
        .iter()
        .map(|s| spec_of(s).map(|(_, spec)| spec.endpoints.len()))
        .collect::<Result<_, _>>()?;
    let mut counts = counts.into_iter();
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |s| cursor_of(s.created_at, &s.id),
        |s| ServiceView::of(&s, counts.next().unwrap_or_default()),
    )))
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    method: String,
    path: String,
    summary: Option<String>,
    parameters: Vec<aibank_gateway::service_spec::SpecParameter>,
}

impl From<SpecEndpoint> for EndpointView {
    fn from(e: SpecEndpoint) -> Self {
        EndpointView {
            method: e.method,
            path: e.path,
            summary: e.summary,
            parameters: e.parameters,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DetailView {
    #[serde(flatten)]
    service: ServiceView,
    openapi_spec: Value,
    endpoints: Vec<EndpointView>,
    agent_summary: String,
}

fn not_found() -> ApiError {
    ApiError::not_found("Service not found")
}

/// `GET /v1/catalog/{id}`.
#[tracing::instrument(skip_all)]
pub async fn get(
    state: web::Data<AppState>,
    _caller: ApiKeyAuth,
    path: web::Path<String>,
) -> Result<web::Json<DetailView>, ApiError> {
    let id = path.into_inner();
    let s = state
        .pool
        .run(move |c| svc_repo::find_active(c, &id).map_err(StoreError::from))
        .await?
        .ok_or_else(not_found)?;
    let (doc, spec) = spec_of(&s)?;
    let proxy_base = format!("{}/v1/proxy/{}", state.public_url, s.id);
    let agent_summary = spec.agent_summary(
        &s.name,
        &s.description,
        &Usd::from_micros(s.price_micros).to_string(),
        &proxy_base,
    );
    let service = ServiceView::of(&s, spec.endpoints.len());
    Ok(web::Json(DetailView {
        service,
        openapi_spec: doc,
        endpoints: spec.endpoints.into_iter().map(EndpointView::from).collect(),
        agent_summary,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    wallet_id: String,
}

#[derive(Debug, Serialize)]
pub struct SubscriptionView {
    service_id: String,
    wallet_id: String,
    active: bool,
    reactivated: bool,
    created_at: String,
}

/// The caller's wallet `id`, else 404.
async fn own_wallet(state: &AppState, caller: &AgentKeyAuth, id: String) -> Result<(), ApiError> {
    let found = state
        .pool
        .run(move |c| repo::wallets::find_with_platform(c, &id).map_err(StoreError::from))
        .await?;
    match found {
        Some((w, _)) if w.agent_id == caller.0.agent.id => Ok(()),
        _ => Err(ApiError::not_found("Wallet not found")),
    }
}

enum Subscribed {
    New(ServiceSubscription),
    Reactivated(ServiceSubscription),
    Already,
    NoService,
}

/// `POST /v1/catalog/{id}/subscribe`: 201 for a new subscription, 200 with
/// `reactivated: true` for one that had been cancelled, 409 `ALREADY_SUBSCRIBED`.
#[tracing::instrument(skip_all)]
pub async fn subscribe(
    state: web::Data<AppState>,
    caller: AgentKeyAuth,
    path: web::Path<String>,
    body: Json<SubscribeRequest>,
) -> Result<HttpResponse, ApiError> {
    let service_id = path.into_inner();
    let wallet_id = body.into_inner().wallet_id;
    own_wallet(&state, &caller, wallet_id.clone()).await?;
    let (agent_id, now) = (caller.0.agent.id.clone(), state.clock.now_ms());
    let res = state
        .pool
        .write(move |c| -> Result<Subscribed, StoreError> {
            if svc_repo::find_active(c, &service_id)?.is_none() {
                return Ok(Subscribed::NoService);
            }
            if let Some(mut sub) = svc_repo::find_subscription(c, &service_id, &wallet_id)? {
                if sub.active {
                    return Ok(Subscribed::Already);
                }
                if svc_repo::set_subscription_active(c, &service_id, &wallet_id, true, now)? {
                    sub.active = true;
                    return Ok(Subscribed::Reactivated(sub));
                }
                return Ok(Subscribed::Already);
            }
            let row = ServiceSubscription {
                service_id,
                wallet_id,
                agent_id,
                active: true,
                created_at: now,
                updated_at: now,
            };
            match svc_repo::insert_subscription(c, &row) {
                Ok(()) => Ok(Subscribed::New(row)),
                Err(e) if is_unique_violation(&e) => Ok(Subscribed::Already),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
    let view = |s: ServiceSubscription, reactivated: bool| SubscriptionView {
        service_id: s.service_id,
        wallet_id: s.wallet_id,
        active: s.active,
        reactivated,
        created_at: rfc3339(s.created_at),
    };
    match res {
        Subscribed::New(s) => Ok(HttpResponse::Created().json(view(s, false))),
        Subscribed::Reactivated(s) => Ok(HttpResponse::Ok().json(view(s, true))),
        Subscribed::Already => Err(ApiError::new(
            ErrorCode::AlreadySubscribed,
            "This wallet is already subscribed to the service",
        )),
        Subscribed::NoService => Err(not_found()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeQuery {
    wallet_id: String,
}

/// `DELETE /v1/catalog/{id}/subscribe?wallet_id=`: 204, or 404 when not subscribed.
#[tracing::instrument(skip_all)]
pub async fn unsubscribe(
    state: web::Data<AppState>,
    caller: AgentKeyAuth,
    path: web::Path<String>,
    q: Query<UnsubscribeQuery>,
) -> Result<HttpResponse, ApiError> {
    let service_id = path.into_inner();
    let wallet_id = q.into_inner().wallet_id;
    own_wallet(&state, &caller, wallet_id.clone()).await?;
    let now = state.clock.now_ms();
    let changed = state
        .pool
        .write(move |c| {
            svc_repo::set_subscription_active(c, &service_id, &wallet_id, false, now)
                .map_err(StoreError::from)
        })
        .await?;
    if changed {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::not_found(
            "This wallet is not subscribed to the service",
        ))
    }
}
