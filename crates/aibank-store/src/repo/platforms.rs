//! Platforms: the fleets master keys manage, and their fleet-wide daily limit.

use diesel::prelude::*;
use diesel::QueryResult;

use crate::models::Platform;
use crate::schema::platforms;
use crate::AnyConnection;

pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Platform> {
    platforms::table
        .find(id)
        .select(Platform::as_select())
        .first(conn)
}

/// Sets the platform's fleet-wide daily limit in micro-USD (`None`: no limit).
pub fn set_daily_limit(conn: &mut AnyConnection, id: &str, micros: Option<i64>) -> QueryResult<()> {
    diesel::update(platforms::table.find(id))
        .set(platforms::daily_limit_micros.eq(micros))
        .execute(conn)?;
    Ok(())
}
