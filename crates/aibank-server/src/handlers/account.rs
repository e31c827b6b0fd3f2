//! What a key holder can read about itself.

use actix_web::web;
use aibank_auth::{AgentKeyAuth, ApiKeyAuth};
use aibank_core::{ApiError, Query, Usd};
use serde::Serialize;

use super::usage::{self, UsagePage, UsageQuery};
use crate::state::AppState;
use crate::views::agents::AgentView;

#[derive(Debug, Serialize)]
pub struct Balance {
    credits_usd: Usd,
    total_spent: Usd,
    /// Usage served beyond what the balance covered; spending resumes once it is paid.
    owed_usd: Usd,
}

/// `GET /v1/balance` (agent and gateway keys).
#[tracing::instrument(skip_all, fields(agent_id = %auth.agent.id))]
pub async fn balance(
    state: web::Data<AppState>,
    auth: ApiKeyAuth,
) -> Result<web::Json<Balance>, ApiError> {
    let id = auth.agent.id;
    let account = state
        .pool
        .run(move |c| aibank_ledger::balance(c, &id))
        .await?;
    Ok(web::Json(Balance {
        credits_usd: Usd::from_micros(account.balance_micros),
        total_spent: Usd::from_micros(account.total_spent_micros),
        owed_usd: Usd::from_micros(account.owed_micros),
    }))
}

/// `GET /v1/usage` (agent and gateway keys): metered calls, newest first, with totals.
#[tracing::instrument(skip_all, fields(agent_id = %auth.agent.id))]
pub async fn usage(
    state: web::Data<AppState>,
    auth: ApiKeyAuth,
    query: Query<UsageQuery>,
) -> Result<web::Json<UsagePage>, ApiError> {
    Ok(web::Json(
        usage::page(&state.pool, auth.agent.id, query.into_inner()).await?,
    ))
}

/// `GET /v1/agents/me` (agent keys only).
#[tracing::instrument(skip_all, fields(agent_id = %auth.0.agent.id))]
pub async fn me(
    state: web::Data<AppState>,
    auth: AgentKeyAuth,
) -> Result<web::Json<AgentView>, ApiError> {
    let agent = auth.0.agent;
    let id = agent.id.clone();
    let account = state
        .pool
        .run(move |c| aibank_ledger::balance(c, &id))
        .await?;
    Ok(web::Json(AgentView::new(agent, &account)))
}
