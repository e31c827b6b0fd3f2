//! Agents' claim codes and the claim itself: finding an agent by its code, the platforms an
//! email address owns, the per-email lock that keeps two claims from creating two platforms
//! for one address, and the conditional claim that exactly one claimer wins.

use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryResult;
use sha2::{Digest, Sha256};

use crate::models::{Agent, AgentClaim};
use crate::schema::{agent_claims, agents, master_keys};
use crate::AnyConnection;

diesel::define_sql_function! {
    /// SQL `lower()`; on SQLite it folds ASCII only, so addresses are compared that way.
    fn lower(x: Nullable<Text>) -> Nullable<Text>;
}

/// A new agent's claim code. A code already in use is a unique violation, for the caller
/// to draw another.
pub fn insert(conn: &mut AnyConnection, claim: &AgentClaim) -> QueryResult<()> {
    diesel::insert_into(agent_claims::table)
        .values(claim)
        .execute(conn)?;
    Ok(())
}

/// The claim with this code (as stored, `XKCD-4291`) and its agent.
pub fn find_by_code(
    conn: &mut AnyConnection,
    code: &str,
) -> QueryResult<Option<(AgentClaim, Agent)>> {
    agent_claims::table
        .inner_join(agents::table)
        .filter(agent_claims::code.eq(code))
        .select((AgentClaim::as_select(), Agent::as_select()))
        .first::<(AgentClaim, Agent)>(conn)
        .optional()
}

/// The platforms an email address (lower case) owns: those with an active master key
/// issued to it.
pub fn platforms_of_email(conn: &mut AnyConnection, email_lower: &str) -> QueryResult<Vec<String>> {
    master_keys::table
        .filter(lower(master_keys::owner_email).eq(email_lower))
        .filter(master_keys::revoked_at.is_null())
        .select(master_keys::platform_id)
        .distinct()
        .load(conn)
}

/// Serialises the creation of a platform for one email address (lower case) across
/// PostgreSQL sessions until the transaction ends. SQLite needs nothing: its write
/// transactions already admit one writer at a time.
pub fn lock_email(conn: &mut AnyConnection, email_lower: &str) -> QueryResult<()> {
    if let AnyConnection::Postgresql(pg) = conn {
        let digest = Sha256::digest(format!("aibank.claim.email:{email_lower}"));
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<BigInt, _>(i64::from_be_bytes(first))
            .execute(pg)?;
    }
    Ok(())
}

/// Claims an unclaimed agent for `platform_id` and moves the agent there. `false`: the
/// agent was already claimed (someone else won) and nothing changed.
pub fn claim(
    conn: &mut AnyConnection,
    agent_id: &str,
    email: &str,
    platform_id: &str,
    now: i64,
) -> QueryResult<bool> {
    let won = diesel::update(
        agent_claims::table
            .filter(agent_claims::agent_id.eq(agent_id))
            .filter(agent_claims::claimed_at.is_null()),
    )
    .set((
        agent_claims::claimed_at.eq(now),
        agent_claims::claimed_email.eq(email),
        agent_claims::claimed_platform_id.eq(platform_id),
    ))
    .execute(conn)?;
    if won == 0 {
        return Ok(false);
    }
    diesel::update(agents::table.find(agent_id))
        .set((
            agents::platform_id.eq(platform_id),
            agents::updated_at.eq(now),
        ))
        .execute(conn)?;
    Ok(true)
}
