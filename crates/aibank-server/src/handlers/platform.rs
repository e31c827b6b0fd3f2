//! The caller's platform: its fleet-wide daily spending limit.

use actix_web::web;
use aibank_auth::MasterKeyAuth;
use aibank_core::clock::rfc3339;
use aibank_core::{ApiError, Json, Usd};
use aibank_ledger::LedgerError;
use aibank_store::{repo, AnyConnection};
use serde::{Deserialize, Serialize};

use crate::audit::{Actor, Audit};
use crate::state::AppState;
use crate::validate::{self, Patch};

#[derive(Debug, Serialize)]
pub struct PlatformView {
    id: String,
    name: String,
    daily_limit_usd: Option<Usd>,
    spent_today_usd: Usd,
    created_at: String,
}

fn view(c: &mut AnyConnection, platform_id: &str, now: i64) -> Result<PlatformView, LedgerError> {
    let p = repo::platforms::find(c, platform_id)?;
    let spent = aibank_ledger::limits::platform_usage(c, platform_id, now)?;
    Ok(PlatformView {
        daily_limit_usd: p.daily_limit_micros.map(Usd::from_micros),
        spent_today_usd: spent,
        created_at: rfc3339(p.created_at),
        id: p.id,
        name: p.name,
    })
}

/// `GET /v1/platform`.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn get(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
) -> Result<web::Json<PlatformView>, ApiError> {
    let now = state.clock.now_ms();
    let v = state
        .pool
        .run(move |c| view(c, &auth.platform_id, now))
        .await?;
    Ok(web::Json(v))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    #[serde(default)]
    daily_limit_usd: Patch<Usd>,
}

/// `PATCH /v1/platform`: sets (or with `null` removes) the fleet daily limit.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn update(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    body: Json<UpdateRequest>,
) -> Result<web::Json<PlatformView>, ApiError> {
    let limit =
        match body.into_inner().daily_limit_usd {
            Patch::Absent => return Err(ApiError::invalid_field(
                "daily_limit_usd",
                "Nothing to update: send `daily_limit_usd` (a number, or null to remove the limit)",
            )),
            Patch::Null => None,
            Patch::Value(l) => Some(validate::amount("daily_limit_usd", l)?.micros()),
        };
    let now = state.clock.now_ms();
    let v = state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                repo::platforms::set_daily_limit(c, &auth.platform_id, limit)?;
                Audit {
                    actor: &Actor::master_key(&auth.key_id),
                    action: "platform.updated",
                    platform_id: Some(&auth.platform_id),
                    agent_id: None,
                    target_id: &auth.platform_id,
                    details: Some(serde_json::json!({
                        "daily_limit_usd": limit.map(Usd::from_micros)
                    })),
                }
                .write(c, now)?;
                view(c, &auth.platform_id, now)
            })
        })
        .await?;
    tracing::info!(daily_limit = ?v.daily_limit_usd.map(|u| u.to_string()), "platform limit updated");
    Ok(web::Json(v))
}
