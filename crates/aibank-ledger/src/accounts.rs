//! Accounts, credits and the journal.

use aibank_core::Usd;
use aibank_store::models::{Account, NewJournalEntry};
use aibank_store::schema::{accounts, journal_entries};
use aibank_store::AnyConnection;
use diesel::prelude::*;

use crate::{EntryKind, LedgerError};

/// Opens an account, crediting `initial` (journaled) when it is not zero. Runs inside the
/// caller's transaction.
pub fn open_account(
    conn: &mut AnyConnection,
    id: &str,
    initial: Usd,
    kind: EntryKind,
    now: i64,
) -> Result<(), LedgerError> {
    if initial.is_negative() {
        return Err(LedgerError::NonPositiveAmount);
    }
    diesel::insert_into(accounts::table)
        .values(&Account {
            id: id.to_owned(),
            balance_micros: 0,
            total_spent_micros: 0,
            created_at: now,
            updated_at: now,
            held_micros: 0,
        })
        .execute(conn)?;
    if !initial.is_zero() {
        credit(conn, id, initial, kind, None, now)?;
    }
    Ok(())
}

/// Adds credits; returns the new balance.
pub fn credit(
    conn: &mut AnyConnection,
    account_id: &str,
    amount: Usd,
    kind: EntryKind,
    reference: Option<&str>,
    now: i64,
) -> Result<Usd, LedgerError> {
    if amount.micros() <= 0 {
        return Err(LedgerError::NonPositiveAmount);
    }
    conn.write_tx(|conn| {
        let current = lock(conn, account_id)?;
        if current.checked_add(amount.micros()).is_none() {
            return Err(LedgerError::Overflow);
        }
        diesel::update(accounts::table.find(account_id))
            .set((
                accounts::balance_micros.eq(accounts::balance_micros + amount.micros()),
                accounts::updated_at.eq(now),
            ))
            .execute(conn)?;
        journal(conn, account_id, amount.micros(), kind, reference, now)
    })
}

/// Locks the account row for the rest of the transaction (a no-op UPDATE takes the row lock
/// on PostgreSQL; SQLite's write transaction already holds the database) and returns its
/// balance.
pub(crate) fn lock(conn: &mut AnyConnection, account_id: &str) -> Result<i64, LedgerError> {
    let n = diesel::update(accounts::table.find(account_id))
        .set(accounts::updated_at.eq(accounts::updated_at))
        .execute(conn)?;
    if n == 0 {
        return Err(LedgerError::AccountNotFound);
    }
    Ok(accounts::table
        .find(account_id)
        .select(accounts::balance_micros)
        .first(conn)?)
}

/// Takes `amount` from the balance if and only if it covers it (one conditional UPDATE),
/// counting it as spent unless it is a hold; journals it and returns the new balance.
pub(crate) fn debit(
    conn: &mut AnyConnection,
    account_id: &str,
    amount: Usd,
    kind: EntryKind,
    reference: Option<&str>,
    now: i64,
) -> Result<Usd, LedgerError> {
    let (spent, held) = if kind == EntryKind::Hold {
        (0, amount.micros())
    } else {
        (amount.micros(), 0)
    };
    let updated = diesel::update(
        accounts::table
            .find(account_id)
            .filter(accounts::balance_micros.ge(amount.micros())),
    )
    .set((
        accounts::balance_micros.eq(accounts::balance_micros - amount.micros()),
        accounts::total_spent_micros.eq(accounts::total_spent_micros + spent),
        accounts::held_micros.eq(accounts::held_micros + held),
        accounts::updated_at.eq(now),
    ))
    .execute(conn)?;
    if updated == 0 {
        let account = balance(conn, account_id)?;
        return Err(LedgerError::InsufficientCredits {
            balance: Usd::from_micros(account.balance_micros),
            required: amount,
        });
    }
    journal(conn, account_id, -amount.micros(), kind, reference, now)
}

/// Writes one journal row for a change already applied to the account; returns the balance
/// after it.
pub(crate) fn journal(
    conn: &mut AnyConnection,
    account_id: &str,
    delta: i64,
    kind: EntryKind,
    reference: Option<&str>,
    now: i64,
) -> Result<Usd, LedgerError> {
    // Read after our own UPDATE: this transaction holds the row (PostgreSQL) or the
    // database (SQLite) write lock, so the value is the one we produced.
    let after: i64 = accounts::table
        .find(account_id)
        .select(accounts::balance_micros)
        .first(conn)?;
    diesel::insert_into(journal_entries::table)
        .values(&NewJournalEntry {
            account_id,
            delta_micros: delta,
            balance_after_micros: after,
            kind: kind.as_str(),
            reference,
            created_at: now,
        })
        .execute(conn)?;
    if crate::SPEND_KINDS.contains(&kind.as_str()) {
        add_to_bucket(conn, account_id, now, -delta)?;
    }
    Ok(Usd::from_micros(after))
}

/// The spend buckets' width: one hour.
pub(crate) const BUCKET_MS: i64 = 3_600_000;

/// The start of the bucket `at` falls in.
pub(crate) fn bucket_of(at: i64) -> i64 {
    at.div_euclid(BUCKET_MS) * BUCKET_MS
}

/// Adds a spend to its hour's bucket (an upsert: the same statement on both backends).
fn add_to_bucket(
    conn: &mut AnyConnection,
    account_id: &str,
    at: i64,
    amount: i64,
) -> Result<(), LedgerError> {
    use aibank_store::schema::spend_buckets as b;
    let row = (
        b::account_id.eq(account_id),
        b::bucket_start.eq(bucket_of(at)),
        b::amount_micros.eq(amount),
    );
    let add = b::amount_micros.eq(b::amount_micros + amount);
    match conn {
        AnyConnection::Sqlite(c) => diesel::insert_into(b::table)
            .values(row)
            .on_conflict((b::account_id, b::bucket_start))
            .do_update()
            .set(add)
            .execute(c)?,
        AnyConnection::Postgresql(c) => diesel::insert_into(b::table)
            .values(row)
            .on_conflict((b::account_id, b::bucket_start))
            .do_update()
            .set(add)
            .execute(c)?,
    };
    Ok(())
}

pub fn balance(conn: &mut AnyConnection, account_id: &str) -> Result<Account, LedgerError> {
    accounts::table
        .find(account_id)
        .select(Account::as_select())
        .first(conn)
        .optional()?
        .ok_or(LedgerError::AccountNotFound)
}

/// Several accounts in one query, keyed by id (missing ids are absent).
pub fn balances(
    conn: &mut AnyConnection,
    account_ids: &[String],
) -> Result<std::collections::HashMap<String, Account>, LedgerError> {
    Ok(accounts::table
        .filter(accounts::id.eq_any(account_ids))
        .select(Account::as_select())
        .load(conn)?
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect())
}

/// The sum of an account's journal; equals its balance, always.
pub fn journal_sum(conn: &mut AnyConnection, account_id: &str) -> Result<i64, LedgerError> {
    let deltas: Vec<i64> = journal_entries::table
        .filter(journal_entries::account_id.eq(account_id))
        .select(journal_entries::delta_micros)
        .load(conn)?;
    Ok(deltas.iter().sum())
}
