//! Bring your own upstream key: `GET/POST/DELETE /v1/provider-keys/{provider}`.
//!
//! The key is sealed with AES-256-GCM before it is stored and is never returned. Calls
//! through the gateway use the agent's own key first, then the platform-wide key.

use actix_web::web;
use aibank_auth::ApiKeyAuth;
use aibank_core::{ApiError, Json};
use aibank_store::repo::provider_keys;
use aibank_store::StoreError;
use serde::{Deserialize, Serialize};

use crate::proxy::Gateway;

pub const MAX_KEY_CHARS: usize = 512;

/// Associated data binding a sealed key to its owner and provider.
pub fn aad(agent_id: &str, provider: &str) -> String {
    format!("{agent_id}/{provider}")
}

#[derive(Debug, Serialize)]
pub struct KeyStatus {
    provider: String,
    configured: bool,
}

/// `GET /v1/provider-keys/{provider}`.
#[tracing::instrument(skip_all, fields(agent_id = %auth.agent.id))]
pub async fn get(
    gw: web::Data<Gateway>,
    auth: ApiKeyAuth,
    path: web::Path<String>,
) -> Result<web::Json<KeyStatus>, ApiError> {
    let provider = path.into_inner();
    gw.provider(&provider)?;
    let (agent, p) = (auth.agent.id, provider.clone());
    let found = gw
        .pool()
        .run(move |c| provider_keys::find(c, &agent, &p).map_err(StoreError::from))
        .await?;
    Ok(web::Json(KeyStatus {
        provider,
        configured: found.is_some(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutKey {
    #[serde(rename = "apiKey")]
    api_key: String,
}

/// `POST /v1/provider-keys/{provider}`: stores (replaces) the agent's own key.
#[tracing::instrument(skip_all, fields(agent_id = %auth.agent.id))]
pub async fn put(
    gw: web::Data<Gateway>,
    auth: ApiKeyAuth,
    path: web::Path<String>,
    body: Json<PutKey>,
) -> Result<web::Json<KeyStatus>, ApiError> {
    let provider = path.into_inner();
    if !gw.provider(&provider)?.byok {
        return Err(ApiError::forbidden(format!(
            "Provider `{provider}` does not take agents' own keys"
        )));
    }
    let key = body.into_inner().api_key;
    // Counted as sent, as the document's `maxLength` counts it.
    let sent_chars = key.chars().count();
    let key = key.trim();
    if key.is_empty() {
        return Err(ApiError::invalid_field(
            "apiKey",
            "`apiKey` must not be empty",
        ));
    }
    if sent_chars > MAX_KEY_CHARS {
        return Err(ApiError::invalid_field(
            "apiKey",
            format!("`apiKey` must be at most {MAX_KEY_CHARS} characters"),
        ));
    }
    // It is sent as a header value: a key that cannot be one would fail every call.
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid_field(
            "apiKey",
            "`apiKey` must be printable ASCII, without spaces or line breaks",
        ));
    }
    let sealed = gw
        .secret_box
        .seal(key.as_bytes(), aad(&auth.agent.id, &provider).as_bytes());
    let (agent, p, now) = (auth.agent.id.clone(), provider.clone(), gw.now_ms());
    gw.pool()
        .run(move |c| provider_keys::put(c, &agent, &p, &sealed, now).map_err(StoreError::from))
        .await?;
    gw.own_keys.remove(&aad(&auth.agent.id, &provider));
    tracing::info!(provider = %provider, "provider key stored");
    Ok(web::Json(KeyStatus {
        provider,
        configured: true,
    }))
}

/// `DELETE /v1/provider-keys/{provider}`.
#[tracing::instrument(skip_all, fields(agent_id = %auth.agent.id))]
pub async fn delete(
    gw: web::Data<Gateway>,
    auth: ApiKeyAuth,
    path: web::Path<String>,
) -> Result<web::Json<KeyStatus>, ApiError> {
    let provider = path.into_inner();
    gw.provider(&provider)?;
    let (agent, p) = (auth.agent.id.clone(), provider.clone());
    gw.pool()
        .run(move |c| provider_keys::delete(c, &agent, &p).map_err(StoreError::from))
        .await?;
    gw.own_keys.remove(&aad(&auth.agent.id, &provider));
    Ok(web::Json(KeyStatus {
        provider,
        configured: false,
    }))
}
