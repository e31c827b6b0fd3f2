//! Unauthenticated service endpoints.

use actix_web::{web, HttpResponse};
use aibank_core::ApiError;
use aibank_store::StoreError;
use diesel::connection::SimpleConnection;
use serde::Serialize;

use crate::service::AppState;

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
        .run(|c| c.batch_execute("SELECT 1").map_err(StoreError::from))
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
    name: &'static str,
    kind: &'static str,
    base_url: String,
    /// A platform-wide upstream key is configured (the key itself is never shown).
    configured: bool,
}

#[derive(Debug, Serialize)]
pub struct Providers {
    providers: Vec<ProviderInfo>,
}

/// `GET /v1/providers`: the upstream providers this server knows.
#[tracing::instrument(skip_all)]
pub async fn providers(state: web::Data<AppState>) -> web::Json<Providers> {
    let c = &state.config;
    web::Json(Providers {
        providers: vec![
            ProviderInfo {
                name: "anthropic",
                kind: "anthropic",
                base_url: c.anthropic.base_url.clone(),
                configured: c.anthropic.api_key.is_some(),
            },
            ProviderInfo {
                name: "openai",
                kind: "openai",
                base_url: c.openai.base_url.clone(),
                configured: c.openai.api_key.is_some(),
            },
        ],
    })
}

/// `GET /openapi.json`: the contract.
pub async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(state.openapi.as_ref())
}
