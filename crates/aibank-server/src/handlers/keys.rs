//! An agent manages its own keys (`X-API-Key`): list, create, change settings, delete, and
//! register or generate RSA keys for signed requests. Another agent's key does not exist
//! for it (404). Restrictions a platform sets on the agent bind all of these keys on top.

use actix_web::web;
use aibank_auth::rsa_keys::{self, PublicKey};
use aibank_auth::{ApiKeyAuth, GeneratedKey, KeyLimits};
use aibank_core::clock::rfc3339;
use aibank_core::ids::random_lower;
use aibank_core::{ApiError, Json, Page, PageQuery, Query};
use aibank_store::models::{Agent, ApiKey, ApiKeyChanges, KEY_STATUS_ACTIVE};
use aibank_store::repo::{cursor_of, keys as key_repo};
use aibank_store::StoreError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{created, Created};
use crate::audit::{Actor, Audit};
use crate::identities::api_key_row;
use crate::state::AppState;
use crate::validate::{self, CallLimits, Patch, Restrictions};
use crate::views::keys::KeyView;

fn key_not_found() -> ApiError {
    ApiError::not_found("API key not found")
}

/// `GET /v1/keys`: the caller's agent's keys, newest first, with the last 4 characters only.
#[tracing::instrument(skip_all, fields(agent_id = %auth.agent.id))]
pub async fn list(
    state: web::Data<AppState>,
    auth: ApiKeyAuth,
    page: Query<PageQuery>,
) -> Result<web::Json<Page<KeyView>>, ApiError> {
    let (limit, cursor) = (page.limit()?, page.cursor()?);
    let agent_id = auth.agent.id.clone();
    let rows = state
        .pool
        .run(move |c| {
            key_repo::list_agent_keys(c, &agent_id, cursor.as_ref(), i64::from(limit) + 1)
                .map_err(StoreError::from)
        })
        .await?;
    let paused = auth.agent.keys_paused_at.is_some();
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |k| cursor_of(k.created_at, &k.id),
        |k| KeyView::new(k, paused, Some(&auth.key_id)),
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    description: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct KeyCreated {
    #[serde(flatten)]
    key: KeyView,
    #[serde(rename = "apiKey")]
    api_key: String,
}

/// Stores a new key of the caller's agent, within the active-key limit, with its audit entry.
async fn insert_key(
    state: &AppState,
    auth: &ApiKeyAuth,
    row: ApiKey,
    details: Value,
) -> Result<ApiKey, ApiError> {
    let max = state.config.max_keys_per_agent;
    let now = row.created_at;
    let actor = Actor::api_key(&auth.key_id);
    let agent = auth.agent.clone();
    let res = state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                if !key_repo::insert_api_key_capped(c, &row, max)? {
                    return Ok(Err(ApiError::conflict(format!(
                        "An agent may hold at most {max} active keys: delete one first"
                    ))
                    .with("limit", max)));
                }
                Audit {
                    actor: &actor,
                    action: "api_key.created",
                    platform_id: agent.platform_id.as_deref(),
                    agent_id: Some(&agent.id),
                    target_id: &row.id,
                    details: Some(details),
                }
                .write(c, now)?;
                Ok::<_, StoreError>(Ok(row))
            })
        })
        .await??;
    Ok(res)
}

fn description(v: Option<String>) -> Result<Option<String>, ApiError> {
    v.map(|d| validate::description("description", &d))
        .transpose()
}

/// `POST /v1/keys/create`: another secret key for the caller's agent, of the caller's kind
/// (`ak_` or `gw_`), shown once.
#[tracing::instrument(skip_all, fields(agent_id = %auth.agent.id))]
pub async fn create(
    state: web::Data<AppState>,
    auth: ApiKeyAuth,
    body: Json<CreateRequest>,
) -> Result<Created<KeyCreated>, ApiError> {
    let b = body.into_inner();
    let name = validate::name("name", &b.name)?;
    let description = description(b.description)?;
    let key = GeneratedKey::new(auth.kind);
    let secret_hash = state.auth.hash_key(&key.full).await?;
    let mut row = api_key_row(&key, &auth.agent.id, secret_hash, state.clock.now_ms());
    row.name = Some(name.clone());
    row.description = description;
    let row = insert_key(
        &state,
        &auth,
        row,
        serde_json::json!({ "name": name, "type": "secret" }),
    )
    .await?;
    tracing::info!(key_id = %row.id, "api key created");
    Ok(created(KeyCreated {
        key: KeyView::new(row, auth.agent.keys_paused_at.is_some(), None),
        api_key: key.full.expose().to_owned(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RsaRegisterRequest {
    name: String,
    description: Option<String>,
    public_key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RsaGenerateRequest {
    name: String,
    description: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct RsaGenerated {
    #[serde(flatten)]
    key: KeyView,
    private_key: String,
}

/// The row of an RSA key: a fresh id, no secret, the public key in canonical PEM.
fn rsa_row(
    auth: &ApiKeyAuth,
    public: &PublicKey,
    name: String,
    description: Option<String>,
    now: i64,
) -> ApiKey {
    let pem = public.to_pem();
    let fingerprint = hex::encode(Sha256::digest(pem.as_bytes()));
    ApiKey {
        name: Some(name),
        description,
        public_key_pem: Some(pem),
        ..ApiKey::new(
            random_lower(aibank_auth::keys::ID_LEN),
            auth.agent.id.clone(),
            auth.kind.db_kind(),
            String::new(),
            fingerprint[fingerprint.len() - 4..].to_owned(),
            now,
        )
    }
}

/// Stores an RSA key of the caller's agent, within the active-key limit.
async fn store_rsa(
    state: &AppState,
    auth: &ApiKeyAuth,
    public: &PublicKey,
    name: String,
    description: Option<String>,
    generated: bool,
) -> Result<ApiKey, ApiError> {
    let details = serde_json::json!({
        "name": name, "type": "rsa", "bits": public.bits(), "generated": generated
    });
    let row = rsa_row(auth, public, name, description, state.clock.now_ms());
    insert_key(state, auth, row, details).await
}

/// `POST /v1/keys/rsa`: registers an RSA public key (PEM, 2048–8192 bits); requests are
/// then signed with its private key and sent with `X-Aibank-Key-Id`.
#[tracing::instrument(skip_all, fields(agent_id = %auth.agent.id))]
pub async fn register_rsa(
    state: web::Data<AppState>,
    auth: ApiKeyAuth,
    body: Json<RsaRegisterRequest>,
) -> Result<Created<KeyView>, ApiError> {
    let b = body.into_inner();
    let name = validate::name("name", &b.name)?;
    let description = description(b.description)?;
    let public = PublicKey::from_pem(&b.public_key)
        .map_err(|e| ApiError::invalid_field("public_key", e.to_string()))?;
    let row = store_rsa(&state, &auth, &public, name, description, false).await?;
    tracing::info!(key_id = %row.id, "rsa key registered");
    Ok(created(KeyView::new(
        row,
        auth.agent.keys_paused_at.is_some(),
        None,
    )))
}

/// `POST /v1/keys/rsa/generate`: a new RSA key pair; the private key (PKCS#8 PEM) is in this
/// response only and is never stored.
#[tracing::instrument(skip_all, fields(agent_id = %auth.agent.id))]
pub async fn generate_rsa(
    state: web::Data<AppState>,
    auth: ApiKeyAuth,
    body: Json<RsaGenerateRequest>,
) -> Result<Created<RsaGenerated>, ApiError> {
    let b = body.into_inner();
    let name = validate::name("name", &b.name)?;
    let description = description(b.description)?;
    let (public, private) = tokio::task::spawn_blocking(rsa_keys::generate)
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    let row = store_rsa(&state, &auth, &public, name, description, true).await?;
    tracing::info!(key_id = %row.id, "rsa key generated");
    Ok(created(RsaGenerated {
        key: KeyView::new(row, auth.agent.keys_paused_at.is_some(), None),
        private_key: private.expose().to_owned(),
    }))
}

/// A key's own settings in a request (`PATCH /v1/keys/{id}`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpdateRequest {
    #[serde(default, deserialize_with = "validate::present")]
    name: Option<String>,
    #[serde(default)]
    description: Patch<String>,
    #[serde(default, deserialize_with = "validate::present")]
    read_only: Option<bool>,
    #[serde(default, deserialize_with = "validate::present")]
    allowed_ips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "validate::present")]
    gateway_enabled: Option<bool>,
    #[serde(default, deserialize_with = "validate::present")]
    wallets_enabled: Option<bool>,
    #[serde(default, deserialize_with = "validate::present")]
    trading_enabled: Option<bool>,
    #[serde(default)]
    allowed_models: Patch<Vec<String>>,
    #[serde(default)]
    rpm_limit: Patch<i64>,
    #[serde(default)]
    tpm_limit: Patch<i64>,
}

/// Validates the changes (call limits within `agent`'s) and lists them (by their API
/// names) for the audit log.
fn key_changes(
    b: UpdateRequest,
    agent: &Agent,
) -> Result<(ApiKeyChanges, Map<String, Value>), ApiError> {
    let mut logged = Map::new();
    let name = b
        .name
        .as_deref()
        .map(|n| validate::name("name", n))
        .transpose()?;
    if let Some(n) = &name {
        logged.insert("name".into(), n.clone().into());
    }
    let description = match b.description.into_change() {
        Some(Some(d)) => Some(Some(validate::description("description", &d)?)),
        other => other,
    };
    if let Some(d) = &description {
        logged.insert("description".into(), d.clone().into());
    }
    let r = Restrictions {
        read_only: b.read_only,
        allowed_ips: b.allowed_ips,
        gateway_enabled: b.gateway_enabled,
        wallets_enabled: b.wallets_enabled,
        trading_enabled: b.trading_enabled,
    }
    .validate(&mut logged)?;
    let limits = CallLimits {
        allowed_models: b.allowed_models,
        rpm_limit: b.rpm_limit,
        tpm_limit: b.tpm_limit,
    }
    .validate(Some(&KeyLimits::of_agent(agent)), &mut logged)?;
    if logged.is_empty() {
        return Err(ApiError::invalid_field(
            "body",
            "Nothing to update: send at least one field",
        ));
    }
    Ok((
        ApiKeyChanges {
            allowed_models: limits.allowed_models,
            rpm_limit: limits.rpm_limit,
            tpm_limit: limits.tpm_limit,
            name,
            description,
            read_only: r.read_only,
            allowed_ips: r.allowed_ips,
            gateway_enabled: r.gateway_enabled,
            wallets_enabled: r.wallets_enabled,
            trading_enabled: r.trading_enabled,
        },
        logged,
    ))
}

/// `PATCH /v1/keys/{id}`: name, description and the key's own restrictions. The change
/// applies at once on this instance and within the key-status TTL on others.
#[tracing::instrument(skip_all, fields(agent_id = %auth.agent.id))]
pub async fn update(
    state: web::Data<AppState>,
    auth: ApiKeyAuth,
    path: web::Path<String>,
    body: Json<UpdateRequest>,
) -> Result<web::Json<KeyView>, ApiError> {
    let (changes, logged) = key_changes(body.into_inner(), &auth.agent)?;
    let id = path.into_inner();
    let now = state.clock.now_ms();
    let actor = Actor::api_key(&auth.key_id);
    let agent = auth.agent.clone();
    let target = id.clone();
    let row = state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                let Some(found) = key_repo::find_agent_key(c, &agent.id, &target)? else {
                    return Ok(Err(key_not_found()));
                };
                if found.status != KEY_STATUS_ACTIVE {
                    return Ok(Err(ApiError::conflict(
                        "This key has been deleted; its settings can no longer change",
                    )));
                }
                key_repo::update_api_key(c, &target, &changes)?;
                Audit {
                    actor: &actor,
                    action: "api_key.updated",
                    platform_id: agent.platform_id.as_deref(),
                    agent_id: Some(&agent.id),
                    target_id: &target,
                    details: Some(Value::Object(logged)),
                }
                .write(c, now)?;
                let row = key_repo::find_agent_key(c, &agent.id, &target)?;
                Ok::<_, StoreError>(row.ok_or_else(key_not_found))
            })
        })
        .await??;
    state.auth.forget_api_key(&id);
    tracing::info!(key_id = %id, "api key updated");
    Ok(web::Json(KeyView::new(
        row,
        auth.agent.keys_paused_at.is_some(),
        Some(&auth.key_id),
    )))
}

#[derive(Debug, Serialize)]
pub struct Deleted {
    id: String,
    status: &'static str,
    revoked_at: String,
}

/// `DELETE /v1/keys/{id}`: revokes one of the agent's other keys at once.
#[tracing::instrument(skip_all, fields(agent_id = %auth.agent.id))]
pub async fn delete(
    state: web::Data<AppState>,
    auth: ApiKeyAuth,
    path: web::Path<String>,
) -> Result<web::Json<Deleted>, ApiError> {
    let id = path.into_inner();
    if id == auth.key_id {
        return Err(ApiError::conflict(
            "A key cannot delete itself: use another key of this agent",
        ));
    }
    let now = state.clock.now_ms();
    let actor = Actor::api_key(&auth.key_id);
    let agent = auth.agent.clone();
    let target = id.clone();
    state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                if key_repo::find_agent_key(c, &agent.id, &target)?.is_none()
                    || key_repo::revoke_api_key(c, &target, now)? == 0
                {
                    return Ok(Err(ApiError::not_found(
                        "API key not found or already deleted",
                    )));
                }
                Audit {
                    actor: &actor,
                    action: "api_key.deleted",
                    platform_id: agent.platform_id.as_deref(),
                    agent_id: Some(&agent.id),
                    target_id: &target,
                    details: None,
                }
                .write(c, now)?;
                Ok::<_, StoreError>(Ok(()))
            })
        })
        .await??;
    state.auth.forget_api_key(&id);
    tracing::info!(key_id = %id, "api key deleted");
    Ok(web::Json(Deleted {
        id,
        status: "revoked",
        revoked_at: rfc3339(now),
    }))
}
