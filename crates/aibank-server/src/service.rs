//! Operations that span several tables, shared by handlers, the CLI and start-up.

use std::sync::Arc;

use actix_web::web;
use aibank_auth::{AuthState, GeneratedKey, KeyKind};
use aibank_core::ids::new_id;
use aibank_core::{ApiError, SharedClock, Usd};
use aibank_ledger::{EntryKind, LedgerError};
use aibank_store::models::{Agent, ApiKey, MasterKey, KEY_STATUS_ACTIVE};
use aibank_store::repo::keys as key_repo;
use aibank_store::{repo, AnyConnection, DbPool, StoreError};
use serde_json::Value;

use crate::config::Config;
use crate::dto::SpendingControls;

/// Everything a handler may need, shared as `web::Data<AppState>`.
pub struct AppState {
    pub pool: DbPool,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub auth: web::Data<AuthState>,
    pub gateway: web::Data<aibank_gateway::Gateway>,
    pub openapi: Arc<Value>,
}

/// What a new agent starts with.
#[derive(Debug)]
pub struct NewAgentSpec {
    pub platform_id: Option<String>,
    pub key_kind: KeyKind,
    pub name: String,
    pub email: Option<String>,
    pub credits: Usd,
    pub grant_kind: EntryKind,
    pub controls: SpendingControls,
}

/// Creates an agent, its key and its account (with the opening credits journaled) in one
/// transaction. Returns the agent and the key, whose full value must be shown exactly once.
pub async fn create_agent(
    state: &AppState,
    spec: NewAgentSpec,
) -> Result<(Agent, GeneratedKey), ApiError> {
    let key = GeneratedKey::new(spec.key_kind);
    let secret_hash = state.auth.hash_key(&key.full).await?;
    let now = state.clock.now_ms();
    let agent = Agent {
        id: new_id("agt"),
        platform_id: spec.platform_id,
        kind: key.kind.db_kind().to_owned(),
        name: spec.name,
        email: spec.email,
        active: true,
        per_tx_limit_micros: spec.controls.per_tx_limit_usd.micros(),
        daily_limit_micros: spec.controls.daily_limit_usd.micros(),
        weekly_limit_micros: spec.controls.weekly_limit_usd.micros(),
        monthly_limit_micros: spec.controls.monthly_limit_usd.micros(),
        created_at: now,
        updated_at: now,
    };
    let row = api_key_row(&key, &agent.id, secret_hash, now);
    let (credits, grant_kind) = (spec.credits, spec.grant_kind);
    let agent = state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                repo::agents::insert(c, &agent)?;
                key_repo::insert_api_key(c, &row)?;
                aibank_ledger::open_account(c, &agent.id, credits, grant_kind, now)?;
                Ok::<_, LedgerError>(agent)
            })
        })
        .await?;
    Ok((agent, key))
}

/// The stored form of a newly generated agent or gateway key.
pub fn api_key_row(key: &GeneratedKey, agent_id: &str, secret_hash: String, now: i64) -> ApiKey {
    ApiKey {
        id: key.id.clone(),
        agent_id: agent_id.to_owned(),
        kind: key.kind.db_kind().to_owned(),
        secret_hash,
        last4: key.last4.clone(),
        status: KEY_STATUS_ACTIVE.to_owned(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    }
}

/// Creates a master key; with `platform_id` `None`, also a new platform named `name`.
pub fn create_master_key(
    conn: &mut AnyConnection,
    platform_id: Option<&str>,
    name: &str,
    owner_email: Option<&str>,
    key: &GeneratedKey,
    secret_hash: String,
    now: i64,
) -> Result<MasterKey, StoreError> {
    let row = MasterKey {
        id: key.id.clone(),
        platform_id: platform_id.map_or_else(|| new_id("plt"), str::to_owned),
        name: name.to_owned(),
        owner_email: owner_email.map(str::to_owned),
        secret_hash,
        last4: key.last4.clone(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    };
    key_repo::create_master_key(conn, &row, platform_id.is_none().then_some(name))?;
    Ok(row)
}
