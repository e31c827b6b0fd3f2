//! Unauthenticated service endpoints.

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use aibank_core::clock::rfc3339;
use aibank_core::ApiError;
use aibank_store::StoreError;
use serde::Serialize;

use crate::state::AppState;

#[derive(Debug, Serialize)]
pub struct Health {
    status: &'static str,
    database: &'static str,
    backend: &'static str,
    version: &'static str,
}

/// `GET /v1/health`: 200 when the database answers, 503 otherwise.
#[tracing::instrument(skip_all)]
pub async fn health(state: web::Data<AppState>) -> Result<web::Json<Health>, ApiError> {
    state
        .pool
        .run(|c| aibank_store::repo::ping(c).map_err(StoreError::from))
        .await
        .map_err(|e| ApiError::unavailable("Database is not reachable").with_source(e))?;
    Ok(web::Json(Health {
        status: "ok",
        database: "ok",
        backend: state.pool.backend().as_str(),
        version: env!("CARGO_PKG_VERSION"),
    }))
}

#[derive(Debug, Serialize)]
pub struct ProviderInfo {
    name: String,
    kind: &'static str,
    base_url: String,
    /// A platform-wide upstream key is configured (the key itself is never shown).
    configured: bool,
    /// USD per million tokens, by model (prefix match).
    models: BTreeMap<String, aibank_gateway::Price>,
    /// The price of models not listed, if any.
    default_price: Option<aibank_gateway::Price>,
    /// An http provider's endpoints, each with its price per call.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoints: Option<Vec<aibank_gateway::priced::PricedEndpoint>>,
    /// Whether agents may store their own key for it.
    byok: bool,
    /// Where its calls go, and how each deployment has fared on this instance.
    deployments: Vec<DeploymentInfo>,
}

/// A deployment as `GET /v1/providers` shows it: never its key.
#[derive(Debug, Serialize)]
pub struct DeploymentInfo {
    name: String,
    base_url: String,
    weight: u32,
    /// `ok`, or `cooling`: left out of the choice after a failure until `cooling_until`.
    state: &'static str,
    cooling_until: Option<String>,
    /// `connect`, `timeout`, `rate_limited`, `server_error` or `broken`.
    last_error: Option<aibank_gateway::deployments::Failure>,
    last_error_at: Option<String>,
}

impl DeploymentInfo {
    fn new(d: &aibank_gateway::Deployment, now_ms: i64) -> Self {
        let h = d.health();
        let cooling = d.cooling(now_ms);
        DeploymentInfo {
            name: d.name.clone(),
            base_url: d.base_url.clone(),
            weight: d.weight,
            state: if cooling { "cooling" } else { "ok" },
            cooling_until: h.cooling_until_ms.filter(|_| cooling).map(rfc3339),
            last_error: h.last_error,
            last_error_at: h.last_error_at_ms.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Providers {
    /// The version of the prices in force: what a usage row billed at them records.
    price_version: String,
    providers: Vec<ProviderInfo>,
}

/// `GET /v1/providers`: the upstream providers, their models and prices.
#[tracing::instrument(skip_all)]
pub async fn providers(state: web::Data<AppState>) -> web::Json<Providers> {
    let book = state.config.providers.prices();
    let now = state.clock.now_ms();
    web::Json(Providers {
        price_version: book.version().to_owned(),
        providers: state
            .config
            .providers
            .iter()
            .map(|p| {
                let table = book.table(&p.name).cloned().unwrap_or_default();
                ProviderInfo {
                    name: p.name.clone(),
                    kind: p.dialect.name(),
                    base_url: p.primary().base_url.clone(),
                    configured: p.configured(),
                    models: table.models,
                    default_price: table.default,
                    endpoints: p.priced.as_ref().map(|a| a.endpoints.clone()),
                    byok: p.byok,
                    deployments: p
                        .deployments
                        .iter()
                        .map(|d| DeploymentInfo::new(d, now))
                        .collect(),
                }
            })
            .collect(),
    })
}

/// `GET /openapi.json`: the contract.
pub async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.openapi.as_ref())
}
