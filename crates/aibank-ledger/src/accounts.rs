//! Accounts, credits and the journal.

use aibank_core::Usd;
use aibank_store::models::Account;
use aibank_store::schema::{accounts, journal_entries};
use aibank_store::{stmt, AnyConnection};
use diesel::prelude::*;
use diesel::sql_types::BigInt;

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
            owed_micros: 0,
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
    crate::atomic(conn, |conn| {
        let (current, _) = lock(conn, account_id)?;
        if current.checked_add(amount.micros()).is_none() {
            return Err(LedgerError::Overflow);
        }
        let moved = move_net(conn, account_id, amount.micros(), 0, 0, now)?;
        journal(
            conn,
            account_id,
            amount.micros(),
            moved.net(),
            kind,
            reference,
            now,
        )?;
        Ok(Usd::from_micros(moved.balance))
    })
}

/// An account's balance and debt after a change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Position {
    pub balance: i64,
    pub owed: i64,
}

impl Position {
    /// What the journal sums to: the balance less the debt.
    pub fn net(self) -> i64 {
        self.balance - self.owed
    }
}

/// Changes an account's net position (balance less debt) by `delta`, in one statement:
/// money coming in pays the debt first, money going out beyond the balance becomes debt,
/// so the balance never goes negative and at most one of the two is not zero. Also
/// returns `released` from the held amount and counts `spent` as spending.
///
/// Only for money that must move whatever the balance (credits, and the settlement of
/// usage already served); a spend that may be refused is a [`debit`].
pub(crate) fn move_net(
    conn: &mut AnyConnection,
    account_id: &str,
    delta: i64,
    released: i64,
    spent: i64,
    now: i64,
) -> Result<Position, LedgerError> {
    let (balance, owed): (i64, i64) = stmt!(
        "UPDATE accounts SET \
         balance_micros = CASE WHEN balance_micros - owed_micros + ? > 0 \
             THEN balance_micros - owed_micros + ? ELSE 0 END, \
         owed_micros = CASE WHEN balance_micros - owed_micros + ? < 0 \
             THEN owed_micros - balance_micros - ? ELSE 0 END, \
         held_micros = held_micros - ?, total_spent_micros = total_spent_micros + ?, \
         updated_at = ? WHERE id = ? RETURNING balance_micros, owed_micros",
    )
    .int(delta)
    .int(delta)
    .int(delta)
    .int(delta)
    .int(released)
    .int(spent)
    .int(now)
    .text(account_id)
    .returning::<(BigInt, BigInt)>()
    .get_result(conn)
    .optional()?
    .ok_or(LedgerError::AccountNotFound)?;
    Ok(Position { balance, owed })
}

/// Locks the account row for the rest of the transaction (a no-op UPDATE takes the row lock
/// on PostgreSQL; SQLite's write transaction already holds the database) and returns its
/// balance and debt.
pub(crate) fn lock(conn: &mut AnyConnection, account_id: &str) -> Result<(i64, i64), LedgerError> {
    stmt!(
        "UPDATE accounts SET updated_at = updated_at WHERE id = ? \
         RETURNING balance_micros, owed_micros",
    )
    .text(account_id)
    .returning::<(BigInt, BigInt)>()
    .get_result(conn)
    .optional()?
    .ok_or(LedgerError::AccountNotFound)
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
    let after: Option<i64> = stmt!(
        "UPDATE accounts SET balance_micros = balance_micros - ?, \
         total_spent_micros = total_spent_micros + ?, held_micros = held_micros + ?, \
         updated_at = ? WHERE id = ? AND balance_micros >= ? RETURNING balance_micros",
    )
    .int(amount.micros())
    .int(spent)
    .int(held)
    .int(now)
    .text(account_id)
    .int(amount.micros())
    .returning::<BigInt>()
    .get_result(conn)
    .optional()?;
    let Some(after) = after else {
        let account = balance(conn, account_id)?;
        return Err(LedgerError::InsufficientCredits {
            balance: Usd::from_micros(account.balance_micros),
            required: amount,
        });
    };
    journal(
        conn,
        account_id,
        -amount.micros(),
        after,
        kind,
        reference,
        now,
    )
}

/// Writes one journal row for a change already applied to the account, whose balance it
/// left at `after`; returns that balance.
pub(crate) fn journal(
    conn: &mut AnyConnection,
    account_id: &str,
    delta: i64,
    after: i64,
    kind: EntryKind,
    reference: Option<&str>,
    now: i64,
) -> Result<Usd, LedgerError> {
    stmt!(
        "INSERT INTO journal_entries \
         (account_id, delta_micros, balance_after_micros, kind, reference, created_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .text(account_id)
    .int(delta)
    .int(after)
    .text(kind.as_str())
    .opt_text(reference)
    .int(now)
    .execute(conn)?;
    if crate::SPEND_KINDS.contains(&kind.as_str()) {
        add_to_bucket(conn, account_id, now, -delta)?;
    }
    Ok(Usd::from_micros(after))
}

/// Journals a hold captured for `cost` (more than zero) out of the `reserved` amount, the
/// account left at `after`: the reservation's release and the capture, in one statement
/// and in that order; the cost goes to its spend bucket as [`journal`] would put it.
pub(crate) fn journal_capture(
    conn: &mut AnyConnection,
    account_id: &str,
    hold_id: &str,
    reserved: i64,
    cost: i64,
    after: i64,
    now: i64,
) -> Result<(), LedgerError> {
    stmt!(
        "INSERT INTO journal_entries \
         (account_id, delta_micros, balance_after_micros, kind, reference, created_at) \
         VALUES (?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?)",
    )
    .text(account_id)
    .int(reserved)
    .int(after + cost)
    .text(EntryKind::Release.as_str())
    .text(hold_id)
    .int(now)
    .text(account_id)
    .int(-cost)
    .int(after)
    .text(EntryKind::Capture.as_str())
    .text(hold_id)
    .int(now)
    .execute(conn)?;
    add_to_bucket(conn, account_id, now, cost)
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
    stmt!(
        "INSERT INTO spend_buckets (account_id, bucket_start, amount_micros) VALUES (?, ?, ?) \
         ON CONFLICT (account_id, bucket_start) \
         DO UPDATE SET amount_micros = spend_buckets.amount_micros + excluded.amount_micros",
    )
    .text(account_id)
    .int(bucket_of(at))
    .int(amount)
    .execute(conn)?;
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

/// The sum of an account's journal; equals its balance less what it owes, always.
pub fn journal_sum(conn: &mut AnyConnection, account_id: &str) -> Result<i64, LedgerError> {
    let deltas: Vec<i64> = journal_entries::table
        .filter(journal_entries::account_id.eq(account_id))
        .select(journal_entries::delta_micros)
        .load(conn)?;
    Ok(deltas.iter().sum())
}
