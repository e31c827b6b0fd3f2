//! A platform's master keys. Any active master key of a platform can create and revoke the
//! platform's other master keys, but not itself (so a platform cannot lock itself out by
//! accident with the key in hand).

use actix_web::web;
use aibank_auth::{GeneratedKey, KeyKind, MasterKeyAuth};
use aibank_core::clock::rfc3339;
use aibank_core::{ApiError, Json, Page, PageQuery, Query};
use aibank_store::repo::{cursor_of, keys as key_repo};
use aibank_store::StoreError;
use serde::{Deserialize, Serialize};

use super::{created, Created};
use crate::audit::{Actor, Audit};
use crate::identities::create_master_key;
use crate::state::AppState;
use crate::validate;
use crate::views::keys::MasterKeyView;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    name: String,
    owner_email: String,
}

#[derive(Debug, Serialize)]
pub struct MasterKeyCreated {
    id: String,
    key: String,
    name: String,
    owner_email: Option<String>,
    created_at: String,
}

/// `POST /v1/platform/master-keys`: another master key for the caller's platform.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn create(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    body: Json<CreateRequest>,
) -> Result<Created<MasterKeyCreated>, ApiError> {
    let name = validate::name("name", &body.name)?;
    let owner_email = validate::email("owner_email", &body.owner_email)?;
    let key = GeneratedKey::new(KeyKind::Master);
    let secret_hash = state.auth.hash_key(&key.full).await?;
    let now = state.clock.now_ms();
    let actor = Actor::master_key(&auth.key_id);
    let (row, key) = state
        .pool
        .run(move |c| {
            create_master_key(
                c,
                &actor,
                Some(&auth.platform_id),
                &name,
                Some(&owner_email),
                &key,
                secret_hash,
                now,
            )
            .map(|row| (row, key))
        })
        .await?;
    tracing::info!(key_id = %row.id, "master key created");
    Ok(created(MasterKeyCreated {
        id: row.id,
        key: key.full.expose().to_owned(),
        name: row.name,
        owner_email: row.owner_email,
        created_at: rfc3339(row.created_at),
    }))
}

/// `GET /v1/platform/master-keys`: the platform's keys, without secrets.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn list(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    page: Query<PageQuery>,
) -> Result<web::Json<Page<MasterKeyView>>, ApiError> {
    let (limit, cursor) = (page.limit()?, page.cursor()?);
    let rows = state
        .pool
        .run(move |c| {
            key_repo::list_master_keys(c, &auth.platform_id, cursor.as_ref(), i64::from(limit) + 1)
                .map_err(StoreError::from)
        })
        .await?;
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |k| cursor_of(k.created_at, &k.id),
        MasterKeyView::from,
    )))
}

#[derive(Debug, Serialize)]
pub struct RevokedKey {
    id: String,
    status: &'static str,
    revoked_at: String,
}

/// `DELETE /v1/platform/master-keys/{id}`.
#[tracing::instrument(skip_all, fields(platform_id = %auth.platform_id))]
pub async fn revoke(
    state: web::Data<AppState>,
    auth: MasterKeyAuth,
    path: web::Path<String>,
) -> Result<web::Json<RevokedKey>, ApiError> {
    let id = path.into_inner();
    if id == auth.key_id {
        return Err(ApiError::conflict(
            "A master key cannot revoke itself; use another master key of this platform",
        ));
    }
    let now = state.clock.now_ms();
    let target = id.clone();
    let n = state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                let n = key_repo::revoke_master_key(c, &auth.platform_id, &target, now)?;
                if n == 1 {
                    Audit {
                        actor: &Actor::master_key(&auth.key_id),
                        action: "master_key.revoked",
                        platform_id: Some(&auth.platform_id),
                        agent_id: None,
                        target_id: &target,
                        details: None,
                    }
                    .write(c, now)?;
                }
                Ok::<_, StoreError>(n)
            })
        })
        .await?;
    if n == 0 {
        return Err(ApiError::not_found(
            "Master key not found or already revoked",
        ));
    }
    state.auth.cache.invalidate(&id);
    tracing::info!(key_id = %id, "master key revoked");
    Ok(web::Json(RevokedKey {
        id,
        status: "revoked",
        revoked_at: rfc3339(now),
    }))
}
