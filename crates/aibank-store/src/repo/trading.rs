//! The trading API's query log: one row per read an agent made of a venue, listed with
//! its wallet's transfers.

use aibank_core::page::Cursor;
use diesel::prelude::*;
use diesel::QueryResult;

use super::after_cursor;
use crate::models::TradingQuery;
use crate::schema::trading_queries;
use crate::AnyConnection;

pub fn insert(conn: &mut AnyConnection, row: &TradingQuery) -> QueryResult<()> {
    diesel::insert_into(trading_queries::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Up to `limit` queries made for a wallet, newest first, after `cursor`.
pub fn for_wallet(
    conn: &mut AnyConnection,
    wallet_id: &str,
    cursor: Option<&Cursor>,
    limit: i64,
) -> QueryResult<Vec<TradingQuery>> {
    let q = trading_queries::table
        .filter(trading_queries::wallet_id.eq(wallet_id))
        .select(TradingQuery::as_select())
        .into_boxed();
    after_cursor!(q, trading_queries, cursor)
        .limit(limit)
        .load(conn)
}
