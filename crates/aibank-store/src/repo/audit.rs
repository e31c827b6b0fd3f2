//! The audit log: who changed which key or setting, and when.

use aibank_core::page::Cursor;
use diesel::prelude::*;
use diesel::QueryResult;

use super::after_cursor;
use crate::models::AuditEvent;
use crate::schema::audit_events;
use crate::AnyConnection;

pub fn insert(conn: &mut AnyConnection, event: &AuditEvent) -> QueryResult<()> {
    diesel::insert_into(audit_events::table)
        .values(event)
        .execute(conn)?;
    Ok(())
}

/// A platform's events, newest first, optionally of one action or about one agent.
pub fn list_for_platform(
    conn: &mut AnyConnection,
    platform_id: &str,
    action: Option<&str>,
    agent_id: Option<&str>,
    cursor: Option<&Cursor>,
    limit: i64,
) -> QueryResult<Vec<AuditEvent>> {
    let mut q = audit_events::table
        .filter(audit_events::platform_id.eq(platform_id))
        .select(AuditEvent::as_select())
        .into_boxed();
    if let Some(a) = action {
        q = q.filter(audit_events::action.eq(a.to_owned()));
    }
    if let Some(a) = agent_id {
        q = q.filter(audit_events::agent_id.eq(a.to_owned()));
    }
    after_cursor!(q, audit_events, cursor)
        .limit(limit)
        .load(conn)
}
