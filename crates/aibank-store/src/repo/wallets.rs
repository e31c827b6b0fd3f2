//! Wallets, their recipient allowlists and their transfers.

use aibank_core::page::Cursor;
use diesel::prelude::*;
use diesel::QueryResult;

use super::after_cursor;
use crate::models::{
    AllowedRecipient, Wallet, WalletTransfer, TRANSFER_CONFIRMED, TRANSFER_FAILED,
};
use crate::schema::{agents, wallet_allowlist, wallet_transfers, wallets};
use crate::AnyConnection;

/// Up to `limit` wallets of a platform's agents, newest first, after `cursor`.
pub fn list_for_platform(
    conn: &mut AnyConnection,
    platform_id: &str,
    cursor: Option<&Cursor>,
    limit: i64,
) -> QueryResult<Vec<Wallet>> {
    let q = wallets::table
        .filter(
            wallets::agent_id.eq_any(
                agents::table
                    .filter(agents::platform_id.eq(platform_id))
                    .select(agents::id),
            ),
        )
        .select(Wallet::as_select())
        .into_boxed();
    after_cursor!(q, wallets, cursor).limit(limit).load(conn)
}

/// Up to `limit` transfers of a wallet, newest first, after `cursor`.
pub fn transfers(
    conn: &mut AnyConnection,
    wallet_id: &str,
    cursor: Option<&Cursor>,
    limit: i64,
) -> QueryResult<Vec<WalletTransfer>> {
    let q = wallet_transfers::table
        .filter(wallet_transfers::wallet_id.eq(wallet_id))
        .select(WalletTransfer::as_select())
        .into_boxed();
    after_cursor!(q, wallet_transfers, cursor)
        .limit(limit)
        .load(conn)
}

pub fn allowlist(conn: &mut AnyConnection, wallet_id: &str) -> QueryResult<Vec<AllowedRecipient>> {
    wallet_allowlist::table
        .filter(wallet_allowlist::wallet_id.eq(wallet_id))
        .order((
            wallet_allowlist::created_at.asc(),
            wallet_allowlist::address.asc(),
        ))
        .select(AllowedRecipient::as_select())
        .load(conn)
}

/// Adds a recipient, or relabels it if listed. Returns the stored entry and whether it
/// was new.
pub fn allow(
    conn: &mut AnyConnection,
    entry: &AllowedRecipient,
) -> QueryResult<(AllowedRecipient, bool)> {
    let listed = wallet_allowlist::table
        .filter(wallet_allowlist::wallet_id.eq(&entry.wallet_id))
        .filter(wallet_allowlist::address.eq(&entry.address));
    // A concurrent add of the same address meets this one here and does nothing (on
    // PostgreSQL after waiting for it): it then relabels the entry the other one made.
    let new = crate::stmt!(
        "INSERT INTO wallet_allowlist (wallet_id, address, label, created_at) \
         VALUES (?, ?, ?, ?) ON CONFLICT (wallet_id, address) DO NOTHING",
    )
    .text(&entry.wallet_id)
    .text(&entry.address)
    .opt_text(entry.label.as_deref())
    .int(entry.created_at)
    .execute(conn)?
        == 1;
    if !new {
        diesel::update(listed)
            .set(wallet_allowlist::label.eq(&entry.label))
            .execute(conn)?;
    }
    let stored = listed.select(AllowedRecipient::as_select()).first(conn)?;
    Ok((stored, new))
}

/// Removes a recipient; returns whether it was listed.
pub fn disallow(conn: &mut AnyConnection, wallet_id: &str, address: &str) -> QueryResult<bool> {
    let n = diesel::delete(
        wallet_allowlist::table
            .filter(wallet_allowlist::wallet_id.eq(wallet_id))
            .filter(wallet_allowlist::address.eq(address)),
    )
    .execute(conn)?;
    Ok(n > 0)
}

/// The transfer an agent sent under an `Idempotency-Key`, if any.
pub fn transfer_by_idempotency_key(
    conn: &mut AnyConnection,
    agent_id: &str,
    key: &str,
) -> QueryResult<Option<WalletTransfer>> {
    wallet_transfers::table
        .filter(wallet_transfers::agent_id.eq(agent_id))
        .filter(wallet_transfers::idempotency_key.eq(key))
        .select(WalletTransfer::as_select())
        .first(conn)
        .optional()
}

/// Frees the `Idempotency-Key` of a transfer that failed (nothing moved), so a retry under
/// that key really retries. A transfer in any other state keeps its key.
pub fn free_failed_idempotency_key(conn: &mut AnyConnection, id: &str) -> QueryResult<()> {
    diesel::update(
        wallet_transfers::table
            .find(id)
            .filter(wallet_transfers::status.eq(TRANSFER_FAILED)),
    )
    .set(wallet_transfers::idempotency_key.eq(None::<String>))
    .execute(conn)?;
    Ok(())
}

/// Whether a wallet may pay `address` (lower-case hex): an empty allowlist allows all.
pub fn allowlist_admits(
    conn: &mut AnyConnection,
    wallet_id: &str,
    address: &str,
) -> QueryResult<bool> {
    let listed = wallet_allowlist::table.filter(wallet_allowlist::wallet_id.eq(wallet_id));
    let entries: i64 = listed.count().get_result(conn)?;
    if entries == 0 {
        return Ok(true);
    }
    let allowed: i64 = listed
        .filter(wallet_allowlist::address.eq(address))
        .count()
        .get_result(conn)?;
    Ok(allowed > 0)
}

/// A new transfer record. An `Idempotency-Key` already used by the agent is a unique
/// violation, which the caller reads as a lost race.
pub fn insert_transfer(conn: &mut AnyConnection, row: &WalletTransfer) -> QueryResult<()> {
    diesel::insert_into(wallet_transfers::table)
        .values(row)
        .execute(conn)?;
    Ok(())
}

/// Records a transfer's progress (status, error, nonce, hash, block), unless the transfer
/// is already settled — confirmed or failed. A listing may read the receipt and settle a
/// transfer while its sender is still between broadcasting and saving `pending`; the
/// sender's staler save must not undo that. Returns whether the row was written.
pub fn record_progress(conn: &mut AnyConnection, row: &WalletTransfer) -> QueryResult<bool> {
    let n = diesel::update(
        wallet_transfers::table
            .find(&row.id)
            .filter(wallet_transfers::status.ne_all([TRANSFER_CONFIRMED, TRANSFER_FAILED])),
    )
    .set((
        wallet_transfers::status.eq(&row.status),
        wallet_transfers::error.eq(&row.error),
        wallet_transfers::nonce.eq(row.nonce),
        wallet_transfers::tx_hash.eq(&row.tx_hash),
        wallet_transfers::block_number.eq(row.block_number),
        wallet_transfers::updated_at.eq(row.updated_at),
    ))
    .execute(conn)?;
    Ok(n == 1)
}

/// A new wallet.
pub fn insert(conn: &mut AnyConnection, w: &Wallet) -> QueryResult<()> {
    diesel::insert_into(wallets::table)
        .values(w)
        .execute(conn)?;
    Ok(())
}

/// The agent's wallet, if it has one.
pub fn find_for_agent(conn: &mut AnyConnection, agent_id: &str) -> QueryResult<Option<Wallet>> {
    wallets::table
        .filter(wallets::agent_id.eq(agent_id))
        .select(Wallet::as_select())
        .first(conn)
        .optional()
}

/// A wallet by id, with the platform of its agent.
pub fn find_with_platform(
    conn: &mut AnyConnection,
    id: &str,
) -> QueryResult<Option<(Wallet, Option<String>)>> {
    wallets::table
        .inner_join(agents::table)
        .filter(wallets::id.eq(id))
        .select((Wallet::as_select(), agents::platform_id))
        .first(conn)
        .optional()
}

/// Gives transfer `transfer_id` its nonce for `wallet_id` on `chain` and records it on the
/// transfer's row, in one transaction: the lowest nonce at or above `floor` (what the node
/// counts, mined and pooled) that no transfer of the wallet on that chain still holds. A
/// transfer holds its nonce until it fails; one that failed before reaching the chain
/// leaves its nonce to the next transfer, so no gap is left for later ones to wait on.
/// Concurrent allocations for one wallet and chain serialise on its `wallet_nonces` row.
pub fn take_nonce(
    conn: &mut AnyConnection,
    transfer_id: &str,
    wallet_id: &str,
    chain: &str,
    floor: i64,
) -> QueryResult<i64> {
    use crate::schema::wallet_nonces;
    conn.write_tx(|c| {
        crate::stmt!(
            "INSERT INTO wallet_nonces (wallet_id, chain, next_nonce) VALUES (?, ?, 0) \
             ON CONFLICT (wallet_id, chain) DO NOTHING",
        )
        .text(wallet_id)
        .text(chain)
        .execute(c)?;
        let lock = wallet_nonces::table
            .filter(wallet_nonces::wallet_id.eq(wallet_id))
            .filter(wallet_nonces::chain.eq(chain));
        diesel::update(lock)
            .set(wallet_nonces::next_nonce.eq(wallet_nonces::next_nonce))
            .execute(c)?;
        let held: Vec<Option<i64>> = wallet_transfers::table
            .filter(wallet_transfers::wallet_id.eq(wallet_id))
            .filter(wallet_transfers::chain.eq(chain))
            .filter(wallet_transfers::status.ne(crate::models::TRANSFER_FAILED))
            .filter(wallet_transfers::nonce.ge(floor))
            .order(wallet_transfers::nonce.asc())
            .select(wallet_transfers::nonce)
            .load(c)?;
        let mut nonce = floor;
        for h in held.into_iter().flatten() {
            if h > nonce {
                break;
            }
            if h == nonce {
                nonce += 1;
            }
        }
        diesel::update(wallet_transfers::table.find(transfer_id))
            .set(wallet_transfers::nonce.eq(nonce))
            .execute(c)?;
        // The highest nonce handed out, plus one (kept for inspection).
        crate::stmt!(
            "UPDATE wallet_nonces SET next_nonce = ? WHERE wallet_id = ? AND chain = ? \
             AND next_nonce < ?",
        )
        .int(nonce + 1)
        .text(wallet_id)
        .text(chain)
        .int(nonce + 1)
        .execute(c)?;
        Ok(nonce)
    })
}
