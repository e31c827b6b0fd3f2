//! Agent API keys and platform master keys.

use aibank_core::page::Cursor;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel::QueryResult;

use super::after_cursor;
use crate::models::{
    Agent, ApiKey, ApiKeyChanges, AuditEvent, MasterKey, Platform, KEY_STATUS_ACTIVE,
    KEY_STATUS_REVOKED,
};
use crate::schema::{agents, api_keys, master_keys, platforms, used_signatures};
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

/// Stores a master key and its audit entry; with `new_platform` (its name), first creates
/// the platform the key belongs to. One transaction.
pub fn create_master_key(
    conn: &mut AnyConnection,
    key: &MasterKey,
    new_platform: Option<&str>,
    audit: &AuditEvent,
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
        insert_master_key(c, key)?;
        super::audit::insert(c, audit)
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

/// An agent's keys (all statuses), newest first, after `cursor`.
pub fn list_agent_keys(
    conn: &mut AnyConnection,
    agent_id: &str,
    cursor: Option<&Cursor>,
    limit: i64,
) -> QueryResult<Vec<ApiKey>> {
    let q = api_keys::table
        .filter(api_keys::agent_id.eq(agent_id))
        .select(ApiKey::as_select())
        .into_boxed();
    after_cursor!(q, api_keys, cursor).limit(limit).load(conn)
}

pub fn count_active_keys(conn: &mut AnyConnection, agent_id: &str) -> QueryResult<i64> {
    api_keys::table
        .filter(api_keys::agent_id.eq(agent_id))
        .filter(api_keys::status.eq(KEY_STATUS_ACTIVE))
        .count()
        .get_result(conn)
}

/// Inserts a key unless its agent already holds `max` active keys; false when it does.
/// The agent's row lock (a no-op write) is held until the caller's transaction ends, so
/// concurrent inserts on PostgreSQL queue instead of each counting before the other's
/// commit. SQLite writers are serial anyway. Run it inside a write transaction.
pub fn insert_api_key_capped(
    conn: &mut AnyConnection,
    key: &ApiKey,
    max: i64,
) -> QueryResult<bool> {
    diesel::update(agents::table.find(&key.agent_id))
        .set(agents::updated_at.eq(agents::updated_at))
        .execute(conn)?;
    if count_active_keys(conn, &key.agent_id)? >= max {
        return Ok(false);
    }
    insert_api_key(conn, key)?;
    Ok(true)
}

/// One of an agent's keys: another agent's key does not exist for it.
pub fn find_agent_key(
    conn: &mut AnyConnection,
    agent_id: &str,
    key_id: &str,
) -> QueryResult<Option<ApiKey>> {
    api_keys::table
        .find(key_id)
        .filter(api_keys::agent_id.eq(agent_id))
        .select(ApiKey::as_select())
        .first(conn)
        .optional()
}

/// Revokes one active key; 0 when it was not active.
pub fn revoke_api_key(conn: &mut AnyConnection, key_id: &str, now: i64) -> QueryResult<usize> {
    diesel::update(
        api_keys::table
            .find(key_id)
            .filter(api_keys::status.eq(KEY_STATUS_ACTIVE)),
    )
    .set((
        api_keys::status.eq(KEY_STATUS_REVOKED),
        api_keys::revoked_at.eq(now),
    ))
    .execute(conn)
}

pub fn update_api_key(
    conn: &mut AnyConnection,
    key_id: &str,
    changes: &ApiKeyChanges,
) -> QueryResult<usize> {
    diesel::update(api_keys::table.find(key_id))
        .set(changes)
        .execute(conn)
}

/// Pauses (`Some(time)`) or resumes (`None`) every key of an agent; returns 1 when the
/// state changed, 0 when it already was so.
pub fn set_keys_paused(
    conn: &mut AnyConnection,
    agent_id: &str,
    paused_at: Option<i64>,
    now: i64,
) -> QueryResult<usize> {
    let target = agents::table.find(agent_id);
    match paused_at {
        Some(t) => diesel::update(target.filter(agents::keys_paused_at.is_null()))
            .set((agents::keys_paused_at.eq(t), agents::updated_at.eq(now)))
            .execute(conn),
        None => diesel::update(target.filter(agents::keys_paused_at.is_not_null()))
            .set((
                agents::keys_paused_at.eq(None::<i64>),
                agents::updated_at.eq(now),
            ))
            .execute(conn),
    }
}

/// A key's daily message window after a call was admitted or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageWindow {
    pub admitted: bool,
    /// Calls admitted in the current window.
    pub used: i64,
    pub window_start: i64,
}

/// Admits one call against a key's rolling window of `window_ms` that starts at the first
/// call, when fewer than `limit` were admitted in it. An admission is one conditional
/// update (a window that has run out starts over at `now`), so instances sharing a
/// database can never admit more than `limit` per window; a refusal reads the window.
/// Run it inside a write transaction.
pub fn admit_message(
    conn: &mut AnyConnection,
    key_id: &str,
    limit: i64,
    window_ms: i64,
    now: i64,
) -> QueryResult<MessageWindow> {
    let expired_before = now.saturating_sub(window_ms);
    // Prepared once per connection: every metered gateway call runs it. Both backends
    // evaluate every SET expression on the row as it was before the update.
    let admitted: Option<(i64, i64)> = crate::stmt!(
        "UPDATE api_keys SET \
         msg_count = CASE WHEN msg_window_start <= ? THEN 1 ELSE msg_count + 1 END, \
         msg_window_start = CASE WHEN msg_window_start <= ? THEN ? ELSE msg_window_start END \
         WHERE id = ? AND (msg_window_start <= ? OR msg_count < ?) \
         RETURNING msg_window_start, msg_count",
    )
    .int(expired_before)
    .int(expired_before)
    .int(now)
    .text(key_id)
    .int(expired_before)
    .int(limit)
    .returning::<(BigInt, BigInt)>()
    .get_result(conn)
    .optional()?;
    let (admitted, (window_start, used)) = match admitted {
        Some(w) => (true, w),
        None => (
            false,
            api_keys::table
                .find(key_id)
                .select((api_keys::msg_window_start, api_keys::msg_count))
                .first(conn)?,
        ),
    };
    Ok(MessageWindow {
        admitted,
        used,
        window_start,
    })
}

/// The per-key minute window of `rpmLimit` and `tpmLimit`.
pub const MINUTE_MS: i64 = 60_000;

/// A key's minute window after a call was admitted or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinuteWindow {
    pub admitted: bool,
    /// Requests admitted in the window (the refused one not counted).
    pub requests: i64,
    /// Tokens counted in the window: estimates of calls under way, usage of settled ones.
    pub tokens: i64,
    pub window_start: i64,
}

/// Admits one call of about `tokens` against a key's minute window (it starts at the
/// first call and lasts [`MINUTE_MS`]) when fewer than `rpm` requests were admitted in it
/// and `tokens` more keep it within `tpm` (a window with no tokens yet admits any one
/// call, so a call larger than the limit is not refused for ever). One conditional update,
/// as [`admit_message`]: instances sharing the database cannot admit beyond the limits.
/// `None`: no limit. Run it inside a write transaction.
pub fn admit_minute(
    conn: &mut AnyConnection,
    key_id: &str,
    rpm: Option<i64>,
    tpm: Option<i64>,
    tokens: i64,
    now: i64,
) -> QueryResult<MinuteWindow> {
    let expired_before = now.saturating_sub(MINUTE_MS);
    let tokens = if tpm.is_some() { tokens.max(0) } else { 0 };
    let room = tpm.map_or(i64::MAX, |t| t.saturating_sub(tokens));
    let admitted: Option<(i64, i64, i64)> = crate::stmt!(
        "UPDATE api_keys SET \
         minute_requests = CASE WHEN minute_window_start <= ? THEN 1 ELSE minute_requests + 1 END, \
         minute_tokens = CASE WHEN minute_window_start <= ? THEN ? ELSE minute_tokens + ? END, \
         minute_window_start = CASE WHEN minute_window_start <= ? THEN ? ELSE minute_window_start END \
         WHERE id = ? AND (minute_window_start <= ? \
         OR (minute_requests < ? AND (minute_tokens = 0 OR minute_tokens <= ?))) \
         RETURNING minute_window_start, minute_requests, minute_tokens",
    )
    .int(expired_before)
    .int(expired_before)
    .int(tokens)
    .int(tokens)
    .int(expired_before)
    .int(now)
    .text(key_id)
    .int(expired_before)
    .int(rpm.unwrap_or(i64::MAX))
    .int(room)
    .returning::<(BigInt, BigInt, BigInt)>()
    .get_result(conn)
    .optional()?;
    let (admitted, (window_start, requests, tokens)) = match admitted {
        Some(w) => (true, w),
        None => (
            false,
            api_keys::table
                .find(key_id)
                .select((
                    api_keys::minute_window_start,
                    api_keys::minute_requests,
                    api_keys::minute_tokens,
                ))
                .first(conn)?,
        ),
    };
    Ok(MinuteWindow {
        admitted,
        requests,
        tokens,
        window_start,
    })
}

/// Replaces a settled call's token estimate with what it used (`delta` = used − estimated)
/// in the minute window it was admitted to; a window that has since started over is left
/// alone.
pub fn reconcile_minute_tokens(
    conn: &mut AnyConnection,
    key_id: &str,
    window_start: i64,
    delta: i64,
) -> QueryResult<()> {
    crate::stmt!(
        "UPDATE api_keys SET minute_tokens = CASE WHEN minute_tokens + ? < 0 THEN 0 \
         ELSE minute_tokens + ? END WHERE id = ? AND minute_window_start = ?",
    )
    .int(delta)
    .int(delta)
    .text(key_id)
    .int(window_start)
    .execute(conn)?;
    Ok(())
}

/// Records an RSA request signature; false when it was already seen (a replay).
pub fn record_signature(
    conn: &mut AnyConnection,
    digest: &str,
    expires_at: i64,
) -> QueryResult<bool> {
    let res = diesel::insert_into(used_signatures::table)
        .values((
            used_signatures::digest.eq(digest),
            used_signatures::expires_at.eq(expires_at),
        ))
        .execute(conn);
    match res {
        Ok(_) => Ok(true),
        Err(e) if crate::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn delete_expired_signatures(conn: &mut AnyConnection, now: i64) -> QueryResult<usize> {
    diesel::delete(used_signatures::table.filter(used_signatures::expires_at.lt(now))).execute(conn)
}
