//! Agent API keys and platform master keys.

use aibank_core::page::Cursor;
use diesel::prelude::*;
use diesel::QueryResult;

use super::after_cursor;
use crate::models::{Agent, ApiKey, MasterKey, Platform, KEY_STATUS_ACTIVE, KEY_STATUS_REVOKED};
use crate::schema::{agents, api_keys, master_keys, platforms};
use crate::AnyConnection;

/// Last-used times are refreshed at most this often, so authenticating is not a write.
pub const LAST_USED_RESOLUTION_MS: i64 = 60_000;

pub fn insert_api_key(conn: &mut AnyConnection, key: &ApiKey) -> QueryResult<()> {
    diesel::insert_into(api_keys::table)
        .values(key)
        .execute(conn)?;
    Ok(())
}

/// A key and the agent holding it, in one indexed lookup.
pub fn find_api_key(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<(ApiKey, Agent)>> {
    api_keys::table
        .inner_join(agents::table)
        .filter(api_keys::id.eq(id))
        .select((ApiKey::as_select(), Agent::as_select()))
        .first(conn)
        .optional()
}

/// Revokes every active key of an agent; returns the ids revoked.
pub fn revoke_agent_keys(
    conn: &mut AnyConnection,
    agent_id: &str,
    now: i64,
) -> QueryResult<Vec<String>> {
    let ids: Vec<String> = api_keys::table
        .filter(api_keys::agent_id.eq(agent_id))
        .filter(api_keys::status.eq(KEY_STATUS_ACTIVE))
        .select(api_keys::id)
        .load(conn)?;
    diesel::update(api_keys::table.filter(api_keys::id.eq_any(&ids)))
        .set((
            api_keys::status.eq(KEY_STATUS_REVOKED),
            api_keys::revoked_at.eq(now),
        ))
        .execute(conn)?;
    Ok(ids)
}

pub fn touch_api_key(conn: &mut AnyConnection, id: &str, now: i64) -> QueryResult<usize> {
    diesel::update(api_keys::table.find(id))
        .set(api_keys::last_used_at.eq(now))
        .execute(conn)
}

pub fn insert_platform(conn: &mut AnyConnection, platform: &Platform) -> QueryResult<()> {
    diesel::insert_into(platforms::table)
        .values(platform)
        .execute(conn)?;
    Ok(())
}

pub fn insert_master_key(conn: &mut AnyConnection, key: &MasterKey) -> QueryResult<()> {
    diesel::insert_into(master_keys::table)
        .values(key)
        .execute(conn)?;
    Ok(())
}

/// Stores a master key; with `new_platform` (its name), first creates the platform the key
/// belongs to. One transaction.
pub fn create_master_key(
    conn: &mut AnyConnection,
    key: &MasterKey,
    new_platform: Option<&str>,
) -> QueryResult<()> {
    conn.write_tx(|c| {
        if let Some(name) = new_platform {
            insert_platform(
                c,
                &Platform {
                    id: key.platform_id.clone(),
                    name: name.to_owned(),
                    created_at: key.created_at,
                    daily_limit_micros: None,
                },
            )?;
        }
        insert_master_key(c, key)
    })
}

pub fn find_master_key(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<MasterKey>> {
    master_keys::table
        .find(id)
        .select(MasterKey::as_select())
        .first(conn)
        .optional()
}

pub fn list_master_keys(
    conn: &mut AnyConnection,
    platform_id: &str,
    cursor: Option<&Cursor>,
    limit: i64,
) -> QueryResult<Vec<MasterKey>> {
    let q = master_keys::table
        .filter(master_keys::platform_id.eq(platform_id))
        .select(MasterKey::as_select())
        .into_boxed();
    after_cursor!(q, master_keys, cursor)
        .limit(limit)
        .load(conn)
}

/// Revokes a platform's master key; 0 when it is not that platform's or already revoked.
pub fn revoke_master_key(
    conn: &mut AnyConnection,
    platform_id: &str,
    id: &str,
    now: i64,
) -> QueryResult<usize> {
    diesel::update(
        master_keys::table
            .find(id)
            .filter(master_keys::platform_id.eq(platform_id))
            .filter(master_keys::revoked_at.is_null()),
    )
    .set(master_keys::revoked_at.eq(now))
    .execute(conn)
}

pub fn touch_master_key(conn: &mut AnyConnection, id: &str, now: i64) -> QueryResult<usize> {
    diesel::update(master_keys::table.find(id))
        .set(master_keys::last_used_at.eq(now))
        .execute(conn)
}
