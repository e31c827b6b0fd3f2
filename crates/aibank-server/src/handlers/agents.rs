//! Self-service sign-up: agents (`ak_` keys) and gateway-only keys (`gw_`).

use actix_web::web;
use aibank_auth::KeyKind;
use aibank_core::{ApiError, Json};
use aibank_ledger::EntryKind;
use serde::{Deserialize, Serialize};

use super::{created, Created};
use crate::audit::Actor;
use crate::identities::{create_agent, NewAgentSpec};
use crate::state::AppState;
use crate::validate;
use crate::views::agents::{AgentCreated, SpendingControls};

pub const DEFAULT_AGENT_NAME: &str = "unnamed-agent";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    name: Option<String>,
    email: Option<String>,
}

/// `POST /v1/agents/register`: a new agent with the sign-up credits and default limits.
#[tracing::instrument(skip_all)]
pub async fn register(
    state: web::Data<AppState>,
    body: Json<RegisterRequest>,
) -> Result<Created<AgentCreated>, ApiError> {
    let body = body.into_inner();
    let name = match body.name.as_deref() {
        None => DEFAULT_AGENT_NAME.to_owned(),
        Some(n) => validate::name("name", n)?,
    };
    let email = validate::email_opt("email", body.email.as_deref())?;
    let controls = SpendingControls::default();
    let credits = state.config.signup_credits;
    let new_agent = create_agent(
        &state,
        NewAgentSpec {
            actor: Actor::PUBLIC,
            platform_id: None,
            key_kind: KeyKind::Agent,
            name,
            email,
            credits,
            grant_kind: EntryKind::SignupGrant,
            controls,
        },
    )
    .await?;
    tracing::info!(agent_id = %new_agent.agent.id, "agent registered");
    Ok(created(AgentCreated::new(
        new_agent,
        credits,
        &state.public_url,
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayKeyRequest {
    email: String,
}

#[derive(Debug, Serialize)]
pub struct GatewayKeyCreated {
    api_key: String,
    credits_usd: aibank_core::Usd,
}

/// `POST /v1/keys`: a gateway-only key with its own credit balance.
#[tracing::instrument(skip_all)]
pub async fn create_gateway_key(
    state: web::Data<AppState>,
    body: Json<GatewayKeyRequest>,
) -> Result<Created<GatewayKeyCreated>, ApiError> {
    let email = validate::email("email", &body.email)?;
    let credits = state.config.signup_credits;
    let new_agent = create_agent(
        &state,
        NewAgentSpec {
            actor: Actor::PUBLIC,
            platform_id: None,
            key_kind: KeyKind::Gateway,
            name: "gateway-key".to_owned(),
            email: Some(email),
            credits,
            grant_kind: EntryKind::SignupGrant,
            controls: SpendingControls::default(),
        },
    )
    .await?;
    tracing::info!(agent_id = %new_agent.agent.id, "gateway key created");
    Ok(created(GatewayKeyCreated {
        api_key: new_agent.key.full.expose().to_owned(),
        credits_usd: credits,
    }))
}
