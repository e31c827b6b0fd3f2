use aibank_core::page::Cursor;
use diesel::prelude::*;
use diesel::QueryResult;

use super::after_cursor;
use crate::models::UsageEvent;
use crate::schema::usage_events;
use crate::AnyConnection;

pub fn insert(conn: &mut AnyConnection, event: &UsageEvent) -> QueryResult<()> {
    diesel::insert_into(usage_events::table)
        .values(event)
        .execute(conn)?;
    Ok(())
}

/// An agent's metered calls, newest first.
pub fn list_for_agent(
    conn: &mut AnyConnection,
    agent_id: &str,
    cursor: Option<&Cursor>,
    limit: i64,
) -> QueryResult<Vec<UsageEvent>> {
    let q = usage_events::table
        .filter(usage_events::agent_id.eq(agent_id))
        .select(UsageEvent::as_select())
        .into_boxed();
    after_cursor!(q, usage_events, cursor)
        .limit(limit)
        .load(conn)
}
