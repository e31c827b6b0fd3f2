use aibank_core::page::Cursor;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
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

/// A time range in epoch ms: `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Copy, Default)]
pub struct Range {
    pub from: Option<i64>,
    pub to: Option<i64>,
}

fn filtered(
    agent_id: &str,
    range: Range,
) -> usage_events::BoxedQuery<'_, <AnyConnection as diesel::Connection>::Backend> {
    let mut q = usage_events::table
        .filter(usage_events::agent_id.eq(agent_id))
        .into_boxed();
    if let Some(from) = range.from {
        q = q.filter(usage_events::created_at.ge(from));
    }
    if let Some(to) = range.to {
        q = q.filter(usage_events::created_at.lt(to));
    }
    q
}

/// An agent's metered calls in `range`, newest first.
pub fn list_for_agent(
    conn: &mut AnyConnection,
    agent_id: &str,
    range: Range,
    cursor: Option<&Cursor>,
    limit: i64,
) -> QueryResult<Vec<UsageEvent>> {
    let q = filtered(agent_id, range).select(UsageEvent::as_select());
    after_cursor!(q, usage_events, cursor)
        .limit(limit)
        .load(conn)
}

/// Count, input tokens, output tokens and cost of an agent's calls in `range`.
pub fn totals(
    conn: &mut AnyConnection,
    agent_id: &str,
    range: Range,
) -> QueryResult<(i64, i64, i64, i64)> {
    // CAST keeps the sums BIGINT on PostgreSQL (SUM(bigint) is numeric there).
    filtered(agent_id, range)
        .select(sql::<(BigInt, BigInt, BigInt, BigInt)>(
            "CAST(COUNT(*) AS BIGINT), \
             CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(output_tokens), 0) AS BIGINT), \
             CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT)",
        ))
        .first(conn)
}
