//! Wallets, their recipient allowlists and their transfers.

use aibank_core::page::Cursor;
use diesel::prelude::*;
use diesel::QueryResult;

use super::after_cursor;
use crate::models::{AllowedRecipient, Wallet, WalletTransfer};
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
    let updated = diesel::update(listed)
        .set(wallet_allowlist::label.eq(&entry.label))
        .execute(conn)?;
    if updated == 0 {
        diesel::insert_into(wallet_allowlist::table)
            .values(entry)
            .execute(conn)?;
    }
    let stored = listed.select(AllowedRecipient::as_select()).first(conn)?;
    Ok((stored, updated == 0))
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
