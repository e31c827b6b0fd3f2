//! The platform's audit log: who created, rotated, deleted or paused keys, created or
//! revoked master keys, or changed settings, and when.

use actix_web::web;
use aibank_auth::MasterKeyAuth;
use aibank_core::page::PageQuery;
use aibank_core::{ApiError, Page, Query};
use aibank_store::repo::{audit, cursor_of};
use aibank_store::StoreError;
use serde::Deserialize;

use crate::state::AppState;
use crate::views::audit::AuditView;

/// Every action the log records.
pub const ACTIONS: &[&str] = &[
    "api_key.created",
    "api_key.rotated",
    "api_key.updated",
    "api_key.deleted",
    "agent.updated",
    "agent.keys_paused",
    "agent.keys_resumed",
    "agent.claimed",
    "master_key.created",
    "master_key.revoked",
    "platform.updated",
    "wallet.allowlist_added",
    "wallet.allowlist_removed",
];

/// `?action=&agentId=&limit=&cursor=`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    action: Option<String>,
    #[serde(rename = "agentId")]
    agent_id: Option<String>,
}

/// `GET /v1/platform/audit`: newest first.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn list(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    query: Query<AuditQuery>,
) -> Result<web::Json<Page<AuditView>>, ApiError> {
    let q = query.into_inner();
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    };
    let (limit, cursor) = (page.limit()?, page.cursor()?);
    if let Some(a) = q.action.as_deref() {
        if !ACTIONS.contains(&a) {
            return Err(ApiError::invalid_field(
                "action",
                format!("`action` must be one of {}", ACTIONS.join(", ")),
            ));
        }
    }
    let rows = state
        .pool
        .run(move |c| {
            audit::list_for_platform(
                c,
                &auth.platform_id,
                q.action.as_deref(),
                q.agent_id.as_deref(),
                cursor.as_ref(),
                i64::from(limit) + 1,
            )
            .map_err(StoreError::from)
        })
        .await?;
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |e| cursor_of(e.created_at, &e.id),
        AuditView::from,
    )))
}
