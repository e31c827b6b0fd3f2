//! x402 payments and the used-hash registry, and the EIP-3009 authorizations taken for
//! settlement.

use diesel::prelude::*;
use diesel::QueryResult;

use crate::models::{Authorization, Payment};
use crate::schema::{x402_authorizations, x402_payments};
use crate::AnyConnection;

pub const AUTH_SETTLING: &str = "settling";
pub const AUTH_SETTLED: &str = "settled";
pub const AUTH_FAILED: &str = "failed";

/// Takes an authorization for settlement; false when its (chain, payer, nonce) was taken
/// before (by this or another instance; a concurrent insert on PostgreSQL waits for the
/// first to commit, then loses).
pub fn claim_authorization(conn: &mut AnyConnection, a: &Authorization) -> QueryResult<bool> {
    match diesel::insert_into(x402_authorizations::table)
        .values(a)
        .execute(conn)
    {
        Ok(_) => Ok(true),
        Err(e) if crate::is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

pub fn find_authorization(
    conn: &mut AnyConnection,
    chain: &str,
    payer: &str,
    nonce: &str,
) -> QueryResult<Option<Authorization>> {
    x402_authorizations::table
        .find((chain, payer, nonce))
        .select(Authorization::as_select())
        .first(conn)
        .optional()
}

/// Chooses the nonce of a claimed authorization's settlement, sent from `settler` on
/// `chain`: the chain's next nonce for the account (`floor`, pending transactions
/// counted), unless settlements still in flight already took it and later ones. `now` is
/// in milliseconds. The settlement account's row is locked until
/// the commit, so concurrent choices, on any instance, take turns.
pub fn take_settler_nonce(
    conn: &mut AnyConnection,
    key: (&str, &str, &str),
    settler: &str,
    floor: i64,
    now: i64,
) -> QueryResult<i64> {
    use crate::schema::x402_settler_nonces;
    conn.write_tx(|c| {
        crate::stmt!(
            "INSERT INTO x402_settler_nonces (chain, address) VALUES (?, ?) \
             ON CONFLICT (chain, address) DO NOTHING",
        )
        .text(key.0)
        .text(settler)
        .execute(c)?;
        diesel::update(x402_settler_nonces::table.find((key.0, settler)))
            .set(x402_settler_nonces::address.eq(settler))
            .execute(c)?;
        let in_flight: Option<i64> = x402_authorizations::table
            .filter(x402_authorizations::chain.eq(key.0))
            .filter(x402_authorizations::status.eq(AUTH_SETTLING))
            // An expired authorization's settlement can no longer pay: if it never reached
            // the chain, its nonce is the chain's next and is taken again.
            .filter(x402_authorizations::valid_before.ge(now / 1000))
            .select(diesel::dsl::max(x402_authorizations::settle_nonce))
            .first(c)?;
        let nonce = in_flight.map_or(floor, |n| floor.max(n + 1));
        diesel::update(x402_authorizations::table.find(key))
            .set((
                x402_authorizations::settle_nonce.eq(nonce),
                x402_authorizations::updated_at.eq(now),
            ))
            .execute(c)?;
        Ok(nonce)
    })
}

/// Records the signed settlement of a claimed authorization, before it is sent.
pub fn set_settlement(
    conn: &mut AnyConnection,
    key: (&str, &str, &str),
    tx_hash: &str,
    raw_tx: &str,
    now: i64,
) -> QueryResult<usize> {
    diesel::update(x402_authorizations::table.find(key))
        .set((
            x402_authorizations::tx_hash.eq(tx_hash),
            x402_authorizations::raw_tx.eq(raw_tx),
            x402_authorizations::updated_at.eq(now),
        ))
        .execute(conn)
}

/// Moves an authorization from `settling` to `status`; false when it was no longer
/// settling (another request resolved it first).
pub fn resolve_authorization(
    conn: &mut AnyConnection,
    key: (&str, &str, &str),
    status: &str,
    now: i64,
) -> QueryResult<bool> {
    diesel::update(
        x402_authorizations::table
            .find(key)
            .filter(x402_authorizations::status.eq(AUTH_SETTLING)),
    )
    .set((
        x402_authorizations::status.eq(status),
        x402_authorizations::updated_at.eq(now),
    ))
    .execute(conn)
    .map(|n| n == 1)
}

/// Forgets a claim whose settlement was never signed (nothing can be on chain for it), so
/// the same authorization can be presented again.
pub fn drop_unsent_claim(conn: &mut AnyConnection, key: (&str, &str, &str)) -> QueryResult<usize> {
    diesel::delete(
        x402_authorizations::table
            .find(key)
            .filter(x402_authorizations::tx_hash.is_null()),
    )
    .execute(conn)
}

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
