//! Catalog services and their subscriptions. Rows hold the sealed provider key only;
//! sealing, spec reading and URL checks are the gateway's and the handlers' jobs.

use aibank_core::page::Cursor;
use diesel::prelude::*;
use diesel::QueryResult;

use crate::models::{Service, ServiceSubscription, SERVICE_ACTIVE, SERVICE_DELETED};
use crate::repo::after_cursor;
use crate::schema::{service_subscriptions, services};
use crate::AnyConnection;

pub fn insert(conn: &mut AnyConnection, row: &Service) -> QueryResult<()> {
    diesel::insert_into(services::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

/// A service that is not deleted.
pub fn find(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<Service>> {
    services::table
        .find(id)
        .filter(services::status.ne(SERVICE_DELETED))
        .select(Service::as_select())
        .first(conn)
        .optional()
}

/// An active service (what the catalog and the proxy serve).
pub fn find_active(conn: &mut AnyConnection, id: &str) -> QueryResult<Option<Service>> {
    services::table
        .find(id)
        .filter(services::status.eq(SERVICE_ACTIVE))
        .select(Service::as_select())
        .first(conn)
        .optional()
}

/// What an owner may change; `None` leaves a field as it is.
#[derive(Debug, Default, Clone, AsChangeset)]
#[diesel(table_name = services)]
pub struct ServiceChanges {
    pub price_micros: Option<i64>,
    pub status: Option<String>,
    pub description: Option<String>,
    pub openapi_spec: Option<String>,
    pub updated_at: i64,
}

/// Applies `changes` to a service that is not deleted; returns the row after.
pub fn update(
    conn: &mut AnyConnection,
    id: &str,
    changes: &ServiceChanges,
) -> QueryResult<Option<Service>> {
    let n = diesel::update(
        services::table
            .find(id)
            .filter(services::status.ne(SERVICE_DELETED)),
    )
    .set(changes)
    .execute(conn)?;
    if n == 0 {
        return Ok(None);
    }
    find(conn, id)
}

/// Points a service somewhere else (kept for operators and tests: the API has no way to
/// change a base URL, which is checked once at registration).
pub fn set_base_url(conn: &mut AnyConnection, id: &str, base_url: &str) -> QueryResult<bool> {
    Ok(diesel::update(services::table.find(id))
        .set(services::base_url.eq(base_url))
        .execute(conn)?
        > 0)
}

/// Marks a service deleted (kept for its journal references); whether it was there.
pub fn mark_deleted(conn: &mut AnyConnection, id: &str, now: i64) -> QueryResult<bool> {
    Ok(diesel::update(
        services::table
            .find(id)
            .filter(services::status.ne(SERVICE_DELETED)),
    )
    .set((
        services::status.eq(SERVICE_DELETED),
        services::updated_at.eq(now),
    ))
    .execute(conn)?
        > 0)
}

/// Counts one paid call and its price, in the transaction that moved the money.
pub fn count_call(
    conn: &mut AnyConnection,
    id: &str,
    revenue_micros: i64,
    now: i64,
) -> QueryResult<()> {
    diesel::update(services::table.find(id))
        .set((
            services::total_calls.eq(services::total_calls + 1),
            services::total_revenue_micros.eq(services::total_revenue_micros + revenue_micros),
            services::updated_at.eq(now),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Active services, newest first, optionally of one category and matching `search` (a
/// case-insensitive substring of the name or description).
pub fn list_active(
    conn: &mut AnyConnection,
    category: Option<&str>,
    search: Option<&str>,
    cursor: Option<&Cursor>,
    limit: i64,
) -> QueryResult<Vec<Service>> {
    let mut q = services::table
        .filter(services::status.eq(SERVICE_ACTIVE))
        .into_boxed();
    if let Some(c) = category {
        q = q.filter(services::category.eq(c.to_owned()));
    }
    if let Some(s) = search {
        let pattern = format!("%{}%", escape_like(&s.to_lowercase()));
        q = q.filter(
            lower(services::name)
                .like(pattern.clone())
                .escape('\\')
                .or(lower(services::description).like(pattern).escape('\\')),
        );
    }
    after_cursor!(q, services, cursor)
        .limit(limit)
        .select(Service::as_select())
        .load(conn)
}

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

/// `%`, `_` and `\` taken literally in a LIKE pattern.
pub(crate) fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// How many wallets are subscribed.
pub fn subscribers(conn: &mut AnyConnection, service_id: &str) -> QueryResult<i64> {
    service_subscriptions::table
        .filter(service_subscriptions::service_id.eq(service_id))
        .filter(service_subscriptions::active.eq(true))
        .count()
        .get_result(conn)
}

pub fn find_subscription(
    conn: &mut AnyConnection,
    service_id: &str,
    wallet_id: &str,
) -> QueryResult<Option<ServiceSubscription>> {
    service_subscriptions::table
        .find((service_id, wallet_id))
        .select(ServiceSubscription::as_select())
        .first(conn)
        .optional()
}

pub fn insert_subscription(conn: &mut AnyConnection, row: &ServiceSubscription) -> QueryResult<()> {
    diesel::insert_into(service_subscriptions::table)
        .values(row)
        .execute(conn)
        .map(|_| ())
}

/// Sets a subscription's `active` flag, only if it differs; whether it changed.
pub fn set_subscription_active(
    conn: &mut AnyConnection,
    service_id: &str,
    wallet_id: &str,
    active: bool,
    now: i64,
) -> QueryResult<bool> {
    Ok(diesel::update(
        service_subscriptions::table
            .find((service_id, wallet_id))
            .filter(service_subscriptions::active.eq(!active)),
    )
    .set((
        service_subscriptions::active.eq(active),
        service_subscriptions::updated_at.eq(now),
    ))
    .execute(conn)?
        > 0)
}
