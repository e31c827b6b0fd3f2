use aibank_core::page::Cursor;
use diesel::prelude::*;
use diesel::QueryResult;

use super::after_cursor;
use crate::models::{Agent, AgentChanges};
use crate::schema::agents;
use crate::AnyConnection;

pub fn insert(conn: &mut AnyConnection, agent: &Agent) -> QueryResult<()> {
    diesel::insert_into(agents::table)
        .values(agent)
        .execute(conn)?;
    Ok(())
}

pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<Agent>> {
    agents::table
        .find(id)
        .select(Agent::as_select())
        .first(conn)
        .optional()
}

/// An agent, only if it belongs to `platform_id`: other platforms' agents do not exist.
pub fn find_for_platform(
    conn: &mut AnyConnection,
    platform_id: &str,
    id: &str,
) -> QueryResult<Option<Agent>> {
    agents::table
        .find(id)
        .filter(agents::platform_id.eq(platform_id))
        .select(Agent::as_select())
        .first(conn)
        .optional()
}

/// Up to `limit` agents of a platform, newest first, after `cursor`.
pub fn list_for_platform(
    conn: &mut AnyConnection,
    platform_id: &str,
    cursor: Option<&Cursor>,
    limit: i64,
) -> QueryResult<Vec<Agent>> {
    let q = agents::table
        .filter(agents::platform_id.eq(platform_id))
        .select(Agent::as_select())
        .into_boxed();
    after_cursor!(q, agents, cursor).limit(limit).load(conn)
}

pub fn update(conn: &mut AnyConnection, id: &str, changes: &AgentChanges) -> QueryResult<usize> {
    diesel::update(agents::table.find(id))
        .set(changes)
        .execute(conn)
}
