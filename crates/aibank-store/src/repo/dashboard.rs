//! What the dashboard reads and writes beyond the API's own queries: its sign-in sessions,
//! the fleet searched by name, and when each agent's keys were last used.

use std::collections::HashMap;

use aibank_core::page::Cursor;
use diesel::dsl::max;
use diesel::prelude::*;
use diesel::QueryResult;

use super::after_cursor;
use super::services::escape_like;
use crate::models::{Agent, DashboardSession};
use crate::schema::{agents, api_keys, dashboard_sessions, master_keys};
use crate::AnyConnection;

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

pub fn insert_session(conn: &mut AnyConnection, session: &DashboardSession) -> QueryResult<()> {
    diesel::insert_into(dashboard_sessions::table)
        .values(session)
        .execute(conn)?;
    Ok(())
}

/// The session whose token hashes to `token_hash`, while it has not expired at `now` and
/// the master key that opened it is not revoked.
pub fn find_live_session(
    conn: &mut AnyConnection,
    token_hash: &str,
    now: i64,
) -> QueryResult<Option<DashboardSession>> {
    dashboard_sessions::table
        .inner_join(master_keys::table)
        .filter(dashboard_sessions::token_hash.eq(token_hash))
        .filter(dashboard_sessions::expires_at.gt(now))
        .filter(master_keys::revoked_at.is_null())
        .select(DashboardSession::as_select())
        .first(conn)
        .optional()
}

/// Ends a session (signing out); `false` when there was none.
pub fn delete_session(conn: &mut AnyConnection, token_hash: &str) -> QueryResult<bool> {
    let n = diesel::delete(dashboard_sessions::table.find(token_hash)).execute(conn)?;
    Ok(n == 1)
}

/// Drops sessions that expired at or before `now`; how many.
pub fn delete_expired_sessions(conn: &mut AnyConnection, now: i64) -> QueryResult<usize> {
    diesel::delete(dashboard_sessions::table.filter(dashboard_sessions::expires_at.le(now)))
        .execute(conn)
}

/// Up to `limit` agents of a platform, newest first, after `cursor`; with `search`, only
/// those whose id is `search` or whose name contains it (ignoring case).
pub fn search_agents(
    conn: &mut AnyConnection,
    platform_id: &str,
    search: Option<&str>,
    cursor: Option<&Cursor>,
    limit: i64,
) -> QueryResult<Vec<Agent>> {
    let mut q = agents::table
        .filter(agents::platform_id.eq(platform_id))
        .select(Agent::as_select())
        .into_boxed();
    if let Some(s) = search {
        let pattern = format!("%{}%", escape_like(&s.to_lowercase()));
        q = q.filter(
            agents::id
                .eq(s.to_owned())
                .or(lower(agents::name).like(pattern).escape('\\')),
        );
    }
    after_cursor!(q, agents, cursor).limit(limit).load(conn)
}

/// When any key of each of `agent_ids` was last used (agents whose keys were never used
/// are absent).
pub fn last_key_use(
    conn: &mut AnyConnection,
    agent_ids: &[String],
) -> QueryResult<HashMap<String, i64>> {
    let rows: Vec<(String, Option<i64>)> = api_keys::table
        .filter(api_keys::agent_id.eq_any(agent_ids))
        .group_by(api_keys::agent_id)
        .select((api_keys::agent_id, max(api_keys::last_used_at)))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, at)| at.map(|at| (id, at)))
        .collect())
}
