//! Fleet management for platforms (`X-Master-Key`). A platform sees only its own agents:
//! another platform's agent is indistinguishable from one that does not exist (404).

use actix_web::web;
use aibank_auth::{GeneratedKey, KeyKind, MasterKeyAuth};
use aibank_core::{ApiError, Json, Page, PageQuery, Query, Usd};
use aibank_ledger::{EntryKind, LedgerError};
use aibank_store::models::{Agent, AgentChanges};
use aibank_store::repo::{self, cursor_of, keys as key_repo};
use aibank_store::{AnyConnection, StoreError};
use serde::{Deserialize, Serialize};

use super::{created, Created};
use crate::dto::{AgentCreated, AgentView, SpendingControls};
use crate::service::{api_key_row, create_agent, AppState, NewAgentSpec};
use crate::validate;

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
    let (agent, key) = create_agent(
        &state,
        NewAgentSpec {
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
    tracing::info!(agent_id = %agent.id, "platform agent created");
    Ok(created(AgentCreated::new(agent, &key, credits)))
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
            agents
                .into_iter()
                .map(|a| {
                    let account = aibank_ledger::balance(c, &a.id)?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    name: Option<String>,
    active: Option<bool>,
    daily_limit_usd: Option<Usd>,
    weekly_limit_usd: Option<Usd>,
    monthly_limit_usd: Option<Usd>,
    per_tx_limit_usd: Option<Usd>,
}

fn micros(field: &str, v: Option<Usd>) -> Result<Option<i64>, ApiError> {
    v.map(|v| validate::amount(field, v).map(Usd::micros))
        .transpose()
}

/// `PATCH /v1/platform/agents/{id}`: name, active flag and spending limits.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn update(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    path: web::Path<String>,
    body: Json<UpdateRequest>,
) -> Result<web::Json<AgentView>, ApiError> {
    let b = body.into_inner();
    let changes = AgentChanges {
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
    };
    if changes.name.is_none()
        && changes.active.is_none()
        && changes.per_tx_limit_micros.is_none()
        && changes.daily_limit_micros.is_none()
        && changes.weekly_limit_micros.is_none()
        && changes.monthly_limit_micros.is_none()
    {
        return Err(ApiError::invalid_field(
            "body",
            "Nothing to update: send at least one field",
        ));
    }
    let id = path.into_inner();
    let view = state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                if repo::agents::find_for_platform(c, &auth.platform_id, &id)?.is_none() {
                    return Ok(None);
                }
                repo::agents::update(c, &id, &changes)?;
                load_view(c, &auth.platform_id, &id)
            })
        })
        .await?
        .ok_or_else(agent_not_found)?;
    tracing::info!(agent_id = %view.agent_id, "agent updated");
    Ok(web::Json(view))
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
}

/// `POST /v1/platform/agents/{id}/credits`: adds credits, journaled as a grant that names
/// the master key that gave it.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn grant_credits(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    path: web::Path<String>,
    body: Json<GrantRequest>,
) -> Result<web::Json<GrantResult>, ApiError> {
    let amount = validate::positive_amount("amount_usd", body.amount_usd)?;
    let id = path.into_inner();
    let now = state.clock.now_ms();
    let reference = format!("master_key:{}", auth.key_id);
    let result = state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                let Some(agent) = repo::agents::find_for_platform(c, &auth.platform_id, &id)?
                else {
                    return Ok(None);
                };
                let balance = aibank_ledger::credit(
                    c,
                    &agent.id,
                    amount,
                    EntryKind::Grant,
                    Some(&reference),
                    now,
                )?;
                Ok::<_, LedgerError>(Some((agent.id, balance)))
            })
        })
        .await?;
    let (agent_id, balance) = result.ok_or_else(agent_not_found)?;
    tracing::info!(agent_id = %agent_id, amount = %amount, "credits granted");
    Ok(web::Json(GrantResult {
        agent_id,
        granted_usd: amount,
        credits_usd: balance,
    }))
}

#[derive(Debug, Serialize)]
pub struct Rotated {
    #[serde(rename = "agentId")]
    agent_id: String,
    #[serde(rename = "apiKey")]
    api_key: String,
}

/// `POST /v1/platform/agents/{id}/rotate-key`: a new `ak_` key; every previous key of the
/// agent is revoked in the same transaction and stops working at once.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn rotate_key(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    path: web::Path<String>,
) -> Result<web::Json<Rotated>, ApiError> {
    let id = path.into_inner();
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
                Ok::<_, StoreError>(Some(revoked))
            })
        })
        .await?
        .ok_or_else(agent_not_found)?;
    for old in &revoked {
        state.auth.cache.invalidate(old);
    }
    tracing::info!(agent_id = %agent_id, revoked = revoked.len(), "agent key rotated");
    Ok(web::Json(Rotated {
        agent_id,
        api_key: key.full.expose().to_owned(),
    }))
}
