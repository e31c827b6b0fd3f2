//! Agents' sealed upstream keys. Rows hold ciphertext only; sealing is the gateway's job.

use diesel::prelude::*;
use diesel::QueryResult;

use crate::schema::provider_keys;
use crate::AnyConnection;

pub fn find(
    conn: &mut AnyConnection,
    agent_id: &str,
    provider: &str,
) -> QueryResult<Option<String>> {
    provider_keys::table
        .find((agent_id, provider))
        .select(provider_keys::sealed)
        .first(conn)
        .optional()
}

/// Stores `sealed`, replacing any earlier key for the pair.
pub fn put(
    conn: &mut AnyConnection,
    agent_id: &str,
    provider: &str,
    sealed: &str,
    now: i64,
) -> QueryResult<()> {
    conn.write_tx(|c| {
        diesel::delete(provider_keys::table.find((agent_id, provider))).execute(c)?;
        diesel::insert_into(provider_keys::table)
            .values((
                provider_keys::agent_id.eq(agent_id),
                provider_keys::provider.eq(provider),
                provider_keys::sealed.eq(sealed),
                provider_keys::created_at.eq(now),
            ))
            .execute(c)?;
        Ok(())
    })
}

/// Removes the key; returns whether there was one.
pub fn delete(conn: &mut AnyConnection, agent_id: &str, provider: &str) -> QueryResult<bool> {
    Ok(diesel::delete(provider_keys::table.find((agent_id, provider))).execute(conn)? > 0)
}
