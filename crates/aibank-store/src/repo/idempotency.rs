use diesel::prelude::*;
use diesel::QueryResult;

use crate::models::IdempotencyRecord;
use crate::schema::idempotency_keys;
use crate::AnyConnection;

pub fn find(
    conn: &mut AnyConnection,
    scope: &str,
    key: &str,
) -> QueryResult<Option<IdempotencyRecord>> {
    idempotency_keys::table
        .find((scope, key))
        .select(IdempotencyRecord::as_select())
        .first(conn)
        .optional()
}

/// Fails with a unique violation when the key was recorded meanwhile.
pub fn insert(conn: &mut AnyConnection, record: &IdempotencyRecord) -> QueryResult<()> {
    diesel::insert_into(idempotency_keys::table)
        .values(record)
        .execute(conn)?;
    Ok(())
}

/// Forgets keys recorded before `cutoff`; returns how many.
pub fn delete_older_than(conn: &mut AnyConnection, cutoff: i64) -> QueryResult<usize> {
    diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(cutoff)))
        .execute(conn)
}
