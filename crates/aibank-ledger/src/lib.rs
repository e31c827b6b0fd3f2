//! The credit ledger: balances in integer micro-USD, every change a journal entry written in
//! the same transaction, and debits that cannot overdraw on any backend because they are a
//! single conditional UPDATE.

use aibank_core::{ApiError, Usd};
use aibank_store::models::{Account, NewJournalEntry};
use aibank_store::schema::{accounts, journal_entries};
use aibank_store::{AnyConnection, StoreError};
use diesel::prelude::*;

/// Why a journal entry was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Credits given at sign-up.
    SignupGrant,
    /// Credits granted by a platform to one of its agents.
    Grant,
    /// A metered charge.
    Charge,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::SignupGrant => "signup_grant",
            EntryKind::Grant => "grant",
            EntryKind::Charge => "charge",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("account not found")]
    AccountNotFound,
    #[error("insufficient credits")]
    InsufficientCredits { balance: Usd, required: Usd },
    #[error("amount must be positive")]
    NonPositiveAmount,
    #[error("balance would overflow")]
    Overflow,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel::result::Error> for LedgerError {
    fn from(e: diesel::result::Error) -> Self {
        LedgerError::Store(StoreError::Query(e))
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::InsufficientCredits { balance, required } => ApiError::new(
                aibank_core::ErrorCode::InsufficientCredits,
                "Insufficient credits",
            )
            .with(
                "credits_usd",
                serde_json::to_value(balance).unwrap_or_default(),
            )
            .with(
                "required_usd",
                serde_json::to_value(required).unwrap_or_default(),
            ),
            LedgerError::AccountNotFound => ApiError::not_found("Account not found"),
            LedgerError::NonPositiveAmount => {
                ApiError::invalid_field("amount_usd", "Amount must be greater than zero")
            }
            LedgerError::Overflow => {
                ApiError::invalid_field("amount_usd", "Amount would overflow the balance")
            }
            LedgerError::Store(s) => s.into(),
        }
    }
}

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
        let current: Option<i64> = accounts::table
            .find(account_id)
            .select(accounts::balance_micros)
            .first(conn)
            .optional()?;
        let current = current.ok_or(LedgerError::AccountNotFound)?;
        if current.checked_add(amount.micros()).is_none() {
            return Err(LedgerError::Overflow);
        }
        let updated = diesel::update(accounts::table.find(account_id))
            .set((
                accounts::balance_micros.eq(accounts::balance_micros + amount.micros()),
                accounts::updated_at.eq(now),
            ))
            .execute(conn)?;
        if updated == 0 {
            return Err(LedgerError::AccountNotFound);
        }
        journal(conn, account_id, amount.micros(), kind, reference, now)
    })
}

/// Takes credits if and only if the balance covers them; returns the new balance.
/// The check and the write are one statement, so concurrent debits cannot overdraw.
pub fn debit(
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
        let updated = diesel::update(
            accounts::table
                .find(account_id)
                .filter(accounts::balance_micros.ge(amount.micros())),
        )
        .set((
            accounts::balance_micros.eq(accounts::balance_micros - amount.micros()),
            accounts::total_spent_micros.eq(accounts::total_spent_micros + amount.micros()),
            accounts::updated_at.eq(now),
        ))
        .execute(conn)?;
        if updated == 0 {
            let balance = balance(conn, account_id)?;
            return Err(LedgerError::InsufficientCredits {
                balance: Usd::from_micros(balance.balance_micros),
                required: amount,
            });
        }
        journal(conn, account_id, -amount.micros(), kind, reference, now)
    })
}

fn journal(
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
    Ok(Usd::from_micros(after))
}

pub fn balance(conn: &mut AnyConnection, account_id: &str) -> Result<Account, LedgerError> {
    accounts::table
        .find(account_id)
        .select(Account::as_select())
        .first(conn)
        .optional()?
        .ok_or(LedgerError::AccountNotFound)
}

/// The sum of an account's journal; equals its balance, always.
pub fn journal_sum(conn: &mut AnyConnection, account_id: &str) -> Result<i64, LedgerError> {
    let deltas: Vec<i64> = journal_entries::table
        .filter(journal_entries::account_id.eq(account_id))
        .select(journal_entries::delta_micros)
        .load(conn)?;
    Ok(deltas.iter().sum())
}
