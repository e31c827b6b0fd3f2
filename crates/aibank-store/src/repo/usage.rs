use aibank_core::page::Cursor;
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::BigInt;
use diesel::QueryResult;

use super::after_cursor;
use crate::models::UsageEvent;
use crate::schema::usage_events;
use crate::AnyConnection;

/// Records one metered call (prepared once per connection: every gateway call writes one).
pub fn insert(conn: &mut AnyConnection, event: &UsageEvent) -> QueryResult<()> {
    crate::stmt!(
        "INSERT INTO usage_events (id, agent_id, api_key_id, provider, model, input_tokens, \
         output_tokens, cost_micros, request_id, created_at, description, owed_micros, \
         price_version, deployment) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .text(&event.id)
    .text(&event.agent_id)
    .opt_text(event.api_key_id.as_deref())
    .text(&event.provider)
    .text(&event.model)
    .int(event.input_tokens)
    .int(event.output_tokens)
    .int(event.cost_micros)
    .opt_text(event.request_id.as_deref())
    .int(event.created_at)
    .opt_text(event.description.as_deref())
    .int(event.owed_micros)
    .opt_text(event.price_version.as_deref())
    .opt_text(event.deployment.as_deref())
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
