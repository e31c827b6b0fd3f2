//! x402 payments and the used-hash registry.

use diesel::prelude::*;
use diesel::QueryResult;

use crate::models::Payment;
use crate::schema::x402_payments;
use crate::AnyConnection;

/// Records a payment; false when its (chain, hash) was already used. On PostgreSQL a
/// concurrent insert of the same key waits for the first to commit, then loses. Inside a
/// transaction, call it first: a lost race aborts the transaction on PostgreSQL.
pub fn insert(conn: &mut AnyConnection, payment: &Payment) -> QueryResult<bool> {
    match diesel::insert_into(x402_payments::table)
        .values(payment)
        .execute(conn)
    {
        Ok(_) => Ok(true),
        Err(e) if crate::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn set_cost(
    conn: &mut AnyConnection,
    chain: &str,
    tx_hash: &str,
    cost_micros: i64,
) -> QueryResult<usize> {
    diesel::update(x402_payments::table.find((chain, tx_hash)))
        .set(x402_payments::cost_micros.eq(cost_micros))
        .execute(conn)
}

/// Every payment made with this hash (one per chain at most).
pub fn find_by_hash(conn: &mut AnyConnection, tx_hash: &str) -> QueryResult<Vec<Payment>> {
    x402_payments::table
        .filter(x402_payments::tx_hash.eq(tx_hash))
        .select(Payment::as_select())
        .order(x402_payments::chain)
        .load(conn)
}
