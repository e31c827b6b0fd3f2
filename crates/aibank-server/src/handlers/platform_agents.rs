//! Fleet management for platforms (`X-Master-Key`). A platform sees only its own agents:
//! another platform's agent is indistinguishable from one that does not exist (404).

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use aibank_auth::{GeneratedKey, KeyKind, MasterKeyAuth};
use aibank_core::clock::rfc3339;
use aibank_core::{ApiError, Json, Page, PageQuery, Query, Usd};
use aibank_ledger::{EntryKind, LedgerError, UsageMeta};
use aibank_store::models::{Agent, AgentChanges};
use aibank_store::repo::{self, cursor_of, keys as key_repo};
use aibank_store::{AnyConnection, StoreError};
use serde::{Deserialize, Serialize};
use tracing_actix_web::RequestId;

use super::usage::{UsagePage, UsageQuery};
use super::{created, Created};
use crate::audit::{Actor, Audit};
use crate::idempotency::{amount_part, fingerprint, run_once, IdempotencyKey};
use crate::identities::{api_key_row, create_agent, NewAgentSpec};
use crate::state::AppState;
use crate::validate::{self, CallLimits, Patch, Restrictions};
use crate::views::agents::{AgentCreated, AgentView, SpendingControls};
use crate::views::keys::KeyView;

fn agent_not_found() -> ApiError {
    ApiError::not_found("Agent not found")
}

fn load_view(
    c: &mut AnyConnection,
    platform_id: &str,
    id: &str,
) -> Result<Option<AgentView>, LedgerError> {
    let Some(agent) = repo::agents::find_for_platform(c, platform_id, id)? else {
        return Ok(None);
    };
    let account = aibank_ledger::balance(c, &agent.id)?;
    Ok(Some(AgentView::new(agent, &account)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    email: Option<String>,
    credits_usd: Option<Usd>,
    daily_limit_usd: Option<Usd>,
    weekly_limit_usd: Option<Usd>,
    monthly_limit_usd: Option<Usd>,
    per_tx_limit_usd: Option<Usd>,
}

fn limit(field: &str, v: Option<Usd>, default: Usd) -> Result<Usd, ApiError> {
    v.map_or(Ok(default), |v| validate::amount(field, v))
}

/// `POST /v1/platform/agents`: an agent owned by the caller's platform. Its opening
/// credits (default 0) are journaled as a grant.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn create(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    body: Json<CreateRequest>,
) -> Result<Created<AgentCreated>, ApiError> {
    let b = body.into_inner();
    let name = validate::name("name", &b.name)?;
    let email = validate::email_opt("email", b.email.as_deref())?;
    let credits = limit("credits_usd", b.credits_usd, Usd::ZERO)?;
    let d = SpendingControls::default();
    let controls = SpendingControls {
        daily_limit_usd: limit("daily_limit_usd", b.daily_limit_usd, d.daily_limit_usd)?,
        weekly_limit_usd: limit("weekly_limit_usd", b.weekly_limit_usd, d.weekly_limit_usd)?,
        monthly_limit_usd: limit(
            "monthly_limit_usd",
            b.monthly_limit_usd,
            d.monthly_limit_usd,
        )?,
        per_tx_limit_usd: limit("per_tx_limit_usd", b.per_tx_limit_usd, d.per_tx_limit_usd)?,
    };
    let new_agent = create_agent(
        &state,
        NewAgentSpec {
            actor: Actor::master_key(&auth.key_id),
            platform_id: Some(auth.platform_id),
            key_kind: KeyKind::Agent,
            name,
            email,
            credits,
            grant_kind: EntryKind::Grant,
            controls,
        },
    )
    .await?;
    tracing::info!(agent_id = %new_agent.agent.id, "platform agent created");
    Ok(created(AgentCreated::new(
        new_agent,
        credits,
        &state.public_url,
    )))
}

/// `GET /v1/platform/agents`: this platform's agents, newest first.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn list(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    page: Query<PageQuery>,
) -> Result<web::Json<Page<AgentView>>, ApiError> {
    let (limit, cursor) = (page.limit()?, page.cursor()?);
    let rows = state
        .pool
        .run(move |c| {
            let agents = repo::agents::list_for_platform(
                c,
                &auth.platform_id,
                cursor.as_ref(),
                i64::from(limit) + 1,
            )?;
            let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
            let mut accounts = aibank_ledger::balances(c, &ids)?;
            agents
                .into_iter()
                .map(|a| {
                    let account = accounts.remove(&a.id).ok_or(LedgerError::AccountNotFound)?;
                    Ok((a, account))
                })
                .collect::<Result<Vec<_>, LedgerError>>()
        })
        .await?;
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |(a, _)| cursor_of(a.created_at, &a.id),
        |(a, acc)| AgentView::new(a, &acc),
    )))
}

/// `GET /v1/platform/agents/{id}`.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn get(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    path: web::Path<String>,
) -> Result<web::Json<AgentView>, ApiError> {
    let id = path.into_inner();
    let view = state
        .pool
        .run(move |c| load_view(c, &auth.platform_id, &id))
        .await?
        .ok_or_else(agent_not_found)?;
    Ok(web::Json(view))
}

/// An agent's changes, as `PATCH` sends them and the dashboard's limits form makes them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default, deserialize_with = "validate::present")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "validate::present")]
    pub active: Option<bool>,
    #[serde(default, deserialize_with = "validate::present")]
    pub daily_limit_usd: Option<Usd>,
    #[serde(default, deserialize_with = "validate::present")]
    pub weekly_limit_usd: Option<Usd>,
    #[serde(default, deserialize_with = "validate::present")]
    pub monthly_limit_usd: Option<Usd>,
    #[serde(default, deserialize_with = "validate::present")]
    pub per_tx_limit_usd: Option<Usd>,
    #[serde(rename = "readOnly", default, deserialize_with = "validate::present")]
    pub read_only: Option<bool>,
    #[serde(rename = "allowedIps", default, deserialize_with = "validate::present")]
    pub allowed_ips: Option<Vec<String>>,
    #[serde(
        rename = "gatewayEnabled",
        default,
        deserialize_with = "validate::present"
    )]
    pub gateway_enabled: Option<bool>,
    #[serde(
        rename = "walletsEnabled",
        default,
        deserialize_with = "validate::present"
    )]
    pub wallets_enabled: Option<bool>,
    #[serde(
        rename = "tradingEnabled",
        default,
        deserialize_with = "validate::present"
    )]
    pub trading_enabled: Option<bool>,
    /// `null` returns the agent to the server default.
    #[serde(rename = "dailyMessageLimit", default)]
    pub daily_message_limit: Patch<i64>,
    /// Model-name patterns every key of the agent is limited to; `null`: any model.
    #[serde(rename = "allowedModels", default)]
    pub allowed_models: Patch<Vec<String>>,
    /// Requests per minute per key; `null`: no limit.
    #[serde(rename = "rpmLimit", default)]
    pub rpm_limit: Patch<i64>,
    /// Tokens per minute per key; `null`: no limit.
    #[serde(rename = "tpmLimit", default)]
    pub tpm_limit: Patch<i64>,
}

pub const MAX_DAILY_MESSAGE_LIMIT: i64 = 1_000_000_000;

/// The restrictions in an update, validated, with their API names for the audit log.
fn security_changes(
    b: &UpdateRequest,
    changes: &mut AgentChanges,
) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let mut logged = serde_json::Map::new();
    let r = Restrictions {
        read_only: b.read_only,
        allowed_ips: b.allowed_ips.clone(),
        gateway_enabled: b.gateway_enabled,
        wallets_enabled: b.wallets_enabled,
        trading_enabled: b.trading_enabled,
    }
    .validate(&mut logged)?;
    changes.read_only = r.read_only;
    changes.allowed_ips = r.allowed_ips;
    changes.gateway_enabled = r.gateway_enabled;
    changes.wallets_enabled = r.wallets_enabled;
    changes.trading_enabled = r.trading_enabled;
    if let Some(limit) = b.daily_message_limit.clone().into_change() {
        if let Some(n) = limit {
            if !(1..=MAX_DAILY_MESSAGE_LIMIT).contains(&n) {
                return Err(ApiError::invalid_field(
                    "dailyMessageLimit",
                    format!("`dailyMessageLimit` must be between 1 and {MAX_DAILY_MESSAGE_LIMIT}, or null for the server default"),
                ));
            }
        }
        logged.insert("dailyMessageLimit".into(), limit.into());
        changes.daily_message_limit = Some(limit);
    }
    let limits = CallLimits {
        allowed_models: b.allowed_models.clone(),
        rpm_limit: b.rpm_limit.clone(),
        tpm_limit: b.tpm_limit.clone(),
    }
    .validate(None, &mut logged)?;
    changes.allowed_models = limits.allowed_models;
    changes.rpm_limit = limits.rpm_limit;
    changes.tpm_limit = limits.tpm_limit;
    Ok(logged)
}

fn micros(field: &str, v: Option<Usd>) -> Result<Option<i64>, ApiError> {
    v.map(|v| validate::amount(field, v).map(Usd::micros))
        .transpose()
}

/// `PATCH /v1/platform/agents/{id}`: name, active flag, spending limits and the
/// restrictions that bind every key of the agent. Recorded in the audit log.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn update(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    path: web::Path<String>,
    body: Json<UpdateRequest>,
) -> Result<web::Json<AgentView>, ApiError> {
    Ok(web::Json(
        update_agent(&state, auth, path.into_inner(), body.into_inner()).await?,
    ))
}

/// Validates and applies an agent's changes with the audit entry naming `auth`'s key, in
/// one transaction; 404 for an agent not of `auth`'s platform.
pub async fn update_agent(
    state: &AppState,
    auth: MasterKeyAuth,
    id: String,
    b: UpdateRequest,
) -> Result<AgentView, ApiError> {
    let mut changes = AgentChanges {
        name: b
            .name
            .as_deref()
            .map(|n| validate::name("name", n))
            .transpose()?,
        active: b.active,
        per_tx_limit_micros: micros("per_tx_limit_usd", b.per_tx_limit_usd)?,
        daily_limit_micros: micros("daily_limit_usd", b.daily_limit_usd)?,
        weekly_limit_micros: micros("weekly_limit_usd", b.weekly_limit_usd)?,
        monthly_limit_micros: micros("monthly_limit_usd", b.monthly_limit_usd)?,
        updated_at: Some(state.clock.now_ms()),
        ..AgentChanges::default()
    };
    let mut logged = security_changes(&b, &mut changes)?;
    for (k, v) in [
        ("name", changes.name.clone().map(serde_json::Value::from)),
        ("active", changes.active.map(serde_json::Value::from)),
        (
            "per_tx_limit_usd",
            b.per_tx_limit_usd.map(|u| serde_json::json!(u)),
        ),
        (
            "daily_limit_usd",
            b.daily_limit_usd.map(|u| serde_json::json!(u)),
        ),
        (
            "weekly_limit_usd",
            b.weekly_limit_usd.map(|u| serde_json::json!(u)),
        ),
        (
            "monthly_limit_usd",
            b.monthly_limit_usd.map(|u| serde_json::json!(u)),
        ),
    ] {
        if let Some(v) = v {
            logged.insert(k.into(), v);
        }
    }
    if logged.is_empty() {
        return Err(ApiError::invalid_field(
            "body",
            "Nothing to update: send at least one field",
        ));
    }
    let now = state.clock.now_ms();
    let view = state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                if repo::agents::find_for_platform(c, &auth.platform_id, &id)?.is_none() {
                    return Ok(None);
                }
                repo::agents::update(c, &id, &changes)?;
                Audit {
                    actor: &Actor::master_key(&auth.key_id),
                    action: "agent.updated",
                    platform_id: Some(&auth.platform_id),
                    agent_id: Some(&id),
                    target_id: &id,
                    details: Some(serde_json::Value::Object(logged)),
                }
                .write(c, now)?;
                load_view(c, &auth.platform_id, &id)
            })
        })
        .await?
        .ok_or_else(agent_not_found)?;
    state.auth.forget_agent(&view.agent_id);
    tracing::info!(agent_id = %view.agent_id, "agent updated");
    Ok(view)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantRequest {
    amount_usd: Usd,
}

#[derive(Debug, Serialize)]
pub struct GrantResult {
    #[serde(rename = "agentId")]
    agent_id: String,
    granted_usd: Usd,
    credits_usd: Usd,
    /// What the agent still owes after the grant paid its debt first.
    owed_usd: Usd,
}

/// Idempotency keys are per platform, across its endpoints (as Stripe's are per account).
fn idempotency_scope(auth: &MasterKeyAuth) -> String {
    format!("platform:{}", auth.platform_id)
}

/// `POST /v1/platform/agents/{id}/credits`: adds credits, journaled as a grant that names
/// the master key that gave it. Honours `Idempotency-Key`.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn grant_credits(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    path: web::Path<String>,
    key: IdempotencyKey,
    body: Json<GrantRequest>,
) -> Result<HttpResponse, ApiError> {
    grant(&state, auth, path.into_inner(), body.amount_usd, key).await
}

/// Grants `amount_usd` to one of `auth`'s platform's agents, at most once per `key`: the
/// journal's grant names the master key, and the answer is the API's `GrantResult`.
pub async fn grant(
    state: &AppState,
    auth: MasterKeyAuth,
    id: String,
    amount_usd: Usd,
    key: IdempotencyKey,
) -> Result<HttpResponse, ApiError> {
    let amount = validate::positive_amount("amount_usd", amount_usd)?;
    let now = state.clock.now_ms();
    let reference = format!("master_key:{}", auth.key_id);
    let fp = fingerprint(&["grant", &id, &amount_part(amount)]);
    let scope = idempotency_scope(&auth);
    let res = run_once(state, scope, key, fp, StatusCode::OK, move |c| {
        let agent = repo::agents::find_for_platform(c, &auth.platform_id, &id)
            .map_err(StoreError::from)?
            .ok_or_else(agent_not_found)?;
        let balance = aibank_ledger::credit(
            c,
            &agent.id,
            amount,
            EntryKind::Grant,
            Some(&reference),
            now,
        )?;
        let owed = Usd::from_micros(aibank_ledger::balance(c, &agent.id)?.owed_micros);
        tracing::info!(agent_id = %agent.id, amount = %amount, "credits granted");
        Ok(GrantResult {
            agent_id: agent.id,
            granted_usd: amount,
            credits_usd: balance,
            owed_usd: owed,
        })
    })
    .await?;
    Ok(res)
}

pub const MAX_DESCRIPTION_CHARS: usize = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    amount_usd: Usd,
    description: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ChargeResult {
    id: String,
    #[serde(rename = "agentId")]
    agent_id: String,
    amount_usd: Usd,
    credits_usd: Usd,
    created_at: String,
}

/// `POST /v1/platform/agents/{id}/charges`: the platform charges one of its agents, within
/// the agent's (and the fleet's) spending limits. Honours `Idempotency-Key`.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn charge(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    path: web::Path<String>,
    key: IdempotencyKey,
    request_id: RequestId,
    body: Json<ChargeRequest>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let amount = validate::positive_amount("amount_usd", b.amount_usd)?;
    let description = b
        .description
        .map(|d| {
            if d.chars().count() > MAX_DESCRIPTION_CHARS {
                Err(ApiError::invalid_field(
                    "description",
                    format!("`description` must be at most {MAX_DESCRIPTION_CHARS} characters"),
                ))
            } else {
                Ok(d)
            }
        })
        .transpose()?;
    let id = path.into_inner();
    let now = state.clock.now_ms();
    let fp = fingerprint(&[
        "charge",
        &id,
        &amount_part(amount),
        description.as_deref().unwrap_or(""),
    ]);
    let scope = idempotency_scope(&auth);
    let meta = UsageMeta {
        provider: "platform".into(),
        model: String::new(),
        request_id: Some(request_id.to_string()),
        description,
        ..UsageMeta::default()
    };
    run_once(&state, scope, key, fp, StatusCode::CREATED, move |c| {
        let agent = repo::agents::find_for_platform(c, &auth.platform_id, &id)
            .map_err(StoreError::from)?
            .ok_or_else(agent_not_found)?;
        let (charge_id, balance) = aibank_ledger::charge(c, &agent.id, amount, Some(&meta), now)?;
        tracing::info!(agent_id = %agent.id, charge_id = %charge_id, amount = %amount, "agent charged");
        Ok(ChargeResult {
            id: charge_id,
            agent_id: agent.id,
            amount_usd: amount,
            credits_usd: balance,
            created_at: rfc3339(now),
        })
    })
    .await
}

/// `GET /v1/platform/agents/{id}/usage`: one of the platform's agents' metered charges.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn usage(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    path: web::Path<String>,
    query: Query<UsageQuery>,
) -> Result<web::Json<UsagePage>, ApiError> {
    let id = path.into_inner();
    let agent = state
        .pool
        .run(move |c| {
            repo::agents::find_for_platform(c, &auth.platform_id, &id).map_err(StoreError::from)
        })
        .await?
        .ok_or_else(agent_not_found)?;
    Ok(web::Json(
        super::usage::page(&state.pool, agent.id, query.into_inner()).await?,
    ))
}

/// A rotation's answer: the only one that ever shows the new key.
#[derive(Debug, Serialize)]
pub struct Rotated {
    #[serde(rename = "agentId")]
    pub agent_id: String,
    #[serde(rename = "apiKey")]
    pub api_key: String,
}

/// `POST /v1/platform/agents/{id}/rotate-key`: a new `ak_` key; every previous key of the
/// agent is revoked in the same transaction and stops working at once.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn rotate_key(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    path: web::Path<String>,
) -> Result<web::Json<Rotated>, ApiError> {
    Ok(web::Json(rotate(&state, auth, path.into_inner()).await?))
}

/// Gives one of `auth`'s platform's agents a new `ak_` key and revokes the others, audited
/// as `auth`'s key; 404 for an agent not of its platform.
pub async fn rotate(
    state: &AppState,
    auth: MasterKeyAuth,
    id: String,
) -> Result<Rotated, ApiError> {
    let agent_id = id.clone();
    let key = GeneratedKey::new(KeyKind::Agent);
    let secret_hash = state.auth.hash_key(&key.full).await?;
    let now = state.clock.now_ms();
    let row = api_key_row(&key, &id, secret_hash, now);
    let revoked = state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                let found: Option<Agent> =
                    repo::agents::find_for_platform(c, &auth.platform_id, &id)?;
                if found.is_none() {
                    return Ok(None);
                }
                let revoked = key_repo::revoke_agent_keys(c, &id, now)?;
                key_repo::insert_api_key(c, &row)?;
                Audit {
                    actor: &Actor::master_key(&auth.key_id),
                    action: "api_key.rotated",
                    platform_id: Some(&auth.platform_id),
                    agent_id: Some(&id),
                    target_id: &row.id,
                    details: Some(serde_json::json!({ "revoked": revoked })),
                }
                .write(c, now)?;
                Ok::<_, StoreError>(Some(revoked))
            })
        })
        .await?
        .ok_or_else(agent_not_found)?;
    for old in &revoked {
        state.auth.forget_api_key(old);
    }
    tracing::info!(agent_id = %agent_id, revoked = revoked.len(), "agent key rotated");
    Ok(Rotated {
        agent_id,
        api_key: key.full.expose().to_owned(),
    })
}

/// `GET /v1/platform/agents/{id}/keys`: one of the platform's agents' keys, newest first.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn keys(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    path: web::Path<String>,
    page: Query<PageQuery>,
) -> Result<web::Json<Page<KeyView>>, ApiError> {
    let (limit, cursor) = (page.limit()?, page.cursor()?);
    let id = path.into_inner();
    let (agent, rows) = state
        .pool
        .run(move |c| {
            let Some(agent) = repo::agents::find_for_platform(c, &auth.platform_id, &id)? else {
                return Ok(None);
            };
            let rows =
                key_repo::list_agent_keys(c, &agent.id, cursor.as_ref(), i64::from(limit) + 1)?;
            Ok::<_, StoreError>(Some((agent, rows)))
        })
        .await?
        .ok_or_else(agent_not_found)?;
    let paused = agent.keys_paused_at.is_some();
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |k| cursor_of(k.created_at, &k.id),
        |k| KeyView::new(k, paused, None),
    )))
}

#[derive(Debug, Serialize)]
pub struct PauseState {
    #[serde(rename = "agentId")]
    agent_id: String,
    #[serde(rename = "keysPaused")]
    keys_paused: bool,
    paused_at: Option<String>,
}

/// Pauses or resumes every key of an agent; repeating either is harmless (logged once).
pub async fn set_paused(
    state: &AppState,
    auth: MasterKeyAuth,
    id: String,
    pause: bool,
) -> Result<PauseState, ApiError> {
    let now = state.clock.now_ms();
    let agent = state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                if repo::agents::find_for_platform(c, &auth.platform_id, &id)?.is_none() {
                    return Ok(None);
                }
                let changed = key_repo::set_keys_paused(c, &id, pause.then_some(now), now)?;
                if changed == 1 {
                    Audit {
                        actor: &Actor::master_key(&auth.key_id),
                        action: if pause {
                            "agent.keys_paused"
                        } else {
                            "agent.keys_resumed"
                        },
                        platform_id: Some(&auth.platform_id),
                        agent_id: Some(&id),
                        target_id: &id,
                        details: None,
                    }
                    .write(c, now)?;
                }
                Ok::<_, StoreError>(repo::agents::find(c, &id)?)
            })
        })
        .await?
        .ok_or_else(agent_not_found)?;
    state.auth.forget_agent(&agent.id);
    tracing::info!(agent_id = %agent.id, paused = pause, "agent keys paused state set");
    Ok(PauseState {
        agent_id: agent.id,
        keys_paused: agent.keys_paused_at.is_some(),
        paused_at: agent.keys_paused_at.map(rfc3339),
    })
}

/// `POST /v1/platform/agents/{id}/pause`: every key of the agent answers 403 until resumed.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn pause(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    path: web::Path<String>,
) -> Result<web::Json<PauseState>, ApiError> {
    Ok(web::Json(
        set_paused(&state, auth, path.into_inner(), true).await?,
    ))
}

/// `POST /v1/platform/agents/{id}/resume`.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn resume(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    path: web::Path<String>,
) -> Result<web::Json<PauseState>, ApiError> {
    Ok(web::Json(
        set_paused(&state, auth, path.into_inner(), false).await?,
    ))
}
