//! The credit ledger.
//!
//! - Balances are integer micro-USD. `balance_micros` is what an account can still spend;
//!   `held_micros` is what open holds have reserved; `owed_micros` is usage already served
//!   that neither a hold nor the balance covered.
//! - Every balance change writes a journal row in the same transaction, so the journal of an
//!   account always sums to its balance less what it owes. An account owes only with a
//!   zero balance: money coming in (a grant, a top-up, a hold's unused part) pays the debt
//!   first, and an account that owes cannot spend.
//! - Every spend (charge or hold) first locks the account row, then checks the spending
//!   limits, then debits with a conditional `UPDATE … WHERE balance_micros >= amount`: limit
//!   checks and debits are atomic, and no interleaving can overdraw, on either backend.
//! - Holds work like card authorisations: reserve the most a call can cost (journal `hold`,
//!   −amount), then capture the real cost (journal `release` +amount, `capture` −cost) or
//!   release it all. Unsettled holds expire and are released by the sweeper. A crash between
//!   hold and capture leaves an open hold: the money is reserved, never lost or doubled.
//! - Every operation refuses (returns any error but [`LedgerError::Store`]) before it
//!   changes anything. So an operation called inside its caller's write transaction joins
//!   it without a savepoint of its own (see [`atomic`]), and a caller that catches a
//!   refusal and goes on has nothing to undo. A store error leaves the caller's
//!   transaction to be rolled back.

mod accounts;
pub mod holds;
pub mod limits;
mod pg;
mod sales;
pub mod sweeper;

pub use accounts::{balance, balances, credit, journal_sum, open_account};
pub use holds::{
    capture, capture_usage, capture_usage_at_once, capture_usage_call, expire_due, place_hold,
    place_hold_at_once, place_hold_call, release, Collected, HoldReceipt, Settlement,
};
pub use limits::{
    authorize, charge, daily_spending, record_usage, LimitBreach, Scope, UsageMeta, Window,
};
pub use pg::{Admission, CaptureWith};
pub use sales::{capture_sale, ensure_account, fee_of, Sale, OPERATOR_REVENUE_ACCOUNT};

use aibank_core::{ApiError, ErrorCode, Usd};
use aibank_store::{AnyConnection, StoreError};

/// Runs a ledger operation as one atomic write: inside the caller's transaction when there
/// is one — its writes then commit or roll back with the caller's — and in a write
/// transaction of its own otherwise.
///
/// No savepoint is needed because operations refuse before they change anything (see the
/// module's notes); a savepoint would cost two more statements per operation, and on
/// PostgreSQL two more round trips.
pub(crate) fn atomic<T, F>(conn: &mut AnyConnection, f: F) -> Result<T, LedgerError>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, LedgerError>,
{
    use diesel::connection::{Connection, TransactionManager};
    type Manager = <AnyConnection as Connection>::TransactionManager;
    let depth = Manager::transaction_manager_status_mut(conn).transaction_depth()?;
    if depth.is_some() {
        f(conn)
    } else {
        conn.write_tx(f)
    }
}

/// Why a journal entry was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Credits given at sign-up.
    SignupGrant,
    /// Credits granted by a platform to one of its agents.
    Grant,
    /// A direct charge.
    Charge,
    /// Money reserved by a hold.
    Hold,
    /// A hold's reservation returned (on capture, release or expiry).
    Release,
    /// The real cost taken when a hold is captured.
    Capture,
    /// Money given back after a charge.
    Refund,
    /// Credits bought with an on-chain payment.
    TopUp,
    /// A seller's part of a catalog call's price.
    Sale,
    /// The operator's fee on a catalog call.
    Fee,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::SignupGrant => "signup_grant",
            EntryKind::Grant => "grant",
            EntryKind::Charge => "charge",
            EntryKind::Hold => "hold",
            EntryKind::Release => "release",
            EntryKind::Capture => "capture",
            EntryKind::Refund => "refund",
            EntryKind::TopUp => "x402_topup",
            EntryKind::Sale => "sale",
            EntryKind::Fee => "fee",
        }
    }
}

/// Journal kinds that are spending, counted by the spending windows.
pub const SPEND_KINDS: [&str; 2] = ["charge", "capture"];

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("account not found")]
    AccountNotFound,
    #[error("insufficient credits")]
    InsufficientCredits { balance: Usd, required: Usd },
    /// The account owes for usage already served; it spends nothing until that is paid.
    #[error("the account owes {owed}")]
    Owes { owed: Usd, required: Usd },
    #[error("amount must be positive")]
    NonPositiveAmount,
    #[error("balance would overflow")]
    Overflow,
    #[error("spending limit exceeded")]
    LimitExceeded(LimitBreach),
    #[error("hold not found")]
    HoldNotFound,
    #[error("hold is {status}, not open")]
    HoldNotOpen { status: String },
    #[error("capture of {requested} exceeds the hold of {held}")]
    CaptureExceedsHold { held: Usd, requested: Usd },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<diesel::result::Error> for LedgerError {
    fn from(e: diesel::result::Error) -> Self {
        LedgerError::Store(StoreError::Query(e))
    }
}

fn usd_json(u: Usd) -> serde_json::Value {
    serde_json::to_value(u).unwrap_or_default()
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::InsufficientCredits { balance, required } => {
                ApiError::new(ErrorCode::InsufficientCredits, "Insufficient credits")
                    .with("credits_usd", usd_json(balance))
                    .with("required_usd", usd_json(required))
            }
            LedgerError::Owes { owed, required } => ApiError::new(
                ErrorCode::InsufficientCredits,
                format!(
                    "This account owes ${owed} for usage already served; \
                     a grant or top-up pays it first"
                ),
            )
            .with("owed_usd", usd_json(owed))
            .with("credits_usd", usd_json(Usd::ZERO))
            .with("required_usd", usd_json(required)),
            LedgerError::LimitExceeded(b) => b.into(),
            LedgerError::AccountNotFound => ApiError::not_found("Account not found"),
            LedgerError::NonPositiveAmount => {
                ApiError::invalid_field("amount_usd", "Amount must be greater than zero")
            }
            LedgerError::Overflow => {
                ApiError::invalid_field("amount_usd", "Amount would overflow the balance")
            }
            LedgerError::HoldNotFound => ApiError::not_found("Hold not found"),
            LedgerError::HoldNotOpen { status } => {
                ApiError::conflict(format!("Hold is already {status}")).with("status", status)
            }
            LedgerError::CaptureExceedsHold { held, requested } => ApiError::invalid_field(
                "amount_usd",
                format!("Capture of {requested} exceeds the hold of {held}"),
            ),
            LedgerError::Store(s) => s.into(),
        }
    }
}
