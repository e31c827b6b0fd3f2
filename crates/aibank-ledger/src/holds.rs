//! Holds: authorise the most a call can cost, then capture its real cost or release it.

use aibank_core::ids::new_id;
use aibank_core::Usd;
use aibank_store::models::{Hold, HOLD_CAPTURED, HOLD_EXPIRED, HOLD_OPEN, HOLD_RELEASED};
use aibank_store::schema::holds;
use aibank_store::{stmt, AnyConnection};
use diesel::prelude::*;
use diesel::sql_types::BigInt;

use crate::accounts::{debit, journal, lock};
use crate::limits::{authorize, record_usage_with_id, UsageMeta};
use crate::{EntryKind, LedgerError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldReceipt {
    pub id: String,
    pub amount: Usd,
    pub expires_at: i64,
    /// Spendable balance after the reservation.
    pub balance: Usd,
}

/// How a hold was settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub charged: Usd,
    pub released: Usd,
    pub balance: Usd,
}

/// Reserves `amount` (checked against the limits like a charge) for `ttl_ms`.
pub fn place_hold(
    conn: &mut AnyConnection,
    account_id: &str,
    amount: Usd,
    ttl_ms: i64,
    reference: Option<&str>,
    now: i64,
) -> Result<HoldReceipt, LedgerError> {
    conn.write_tx(|conn| {
        authorize(conn, account_id, amount, now)?;
        let id = new_id("hld");
        let balance = debit(conn, account_id, amount, EntryKind::Hold, Some(&id), now)?;
        let expires_at = now.saturating_add(ttl_ms);
        stmt(
            "INSERT INTO holds (id, account_id, amount_micros, captured_micros, status, \
             reference, created_at, expires_at, settled_at) \
             VALUES (?, ?, ?, NULL, ?, ?, ?, ?, NULL)",
        )
        .text(&id)
        .text(account_id)
        .int(amount.micros())
        .text(HOLD_OPEN)
        .opt_text(reference)
        .int(now)
        .int(expires_at)
        .execute(conn)?;
        Ok(HoldReceipt {
            id,
            amount,
            expires_at,
            balance,
        })
    })
}

/// Moves an open hold to `status`; exactly one settlement wins a race (capture, release and
/// the sweeper all go through here).
fn settle(
    conn: &mut AnyConnection,
    hold: &Hold,
    status: &str,
    captured: Option<i64>,
    expired_by: Option<i64>,
    now: i64,
) -> Result<(), LedgerError> {
    let hold_id = hold.id.as_str();
    lock(conn, &hold.account_id)?;
    // A capture or release settles whenever the hold is open (no deadline to meet).
    let n = stmt(
        "UPDATE holds SET status = ?, captured_micros = ?, settled_at = ? \
         WHERE id = ? AND status = ? AND expires_at <= ?",
    )
    .text(status)
    .opt_int(captured)
    .int(now)
    .text(hold_id)
    .text(HOLD_OPEN)
    .int(expired_by.unwrap_or(i64::MAX))
    .execute(conn)?;
    if n == 0 {
        let status = holds::table
            .find(hold_id)
            .select(holds::status)
            .first::<String>(conn)?;
        return Err(LedgerError::HoldNotOpen { status });
    }
    // Return the reservation to the balance.
    let after: i64 = stmt(
        "UPDATE accounts SET balance_micros = balance_micros + ?, \
         held_micros = held_micros - ?, updated_at = ? WHERE id = ? RETURNING balance_micros",
    )
    .int(hold.amount_micros)
    .int(hold.amount_micros)
    .int(now)
    .text(&hold.account_id)
    .returning::<BigInt>()
    .get_result(conn)?;
    journal(
        conn,
        &hold.account_id,
        hold.amount_micros,
        after,
        EntryKind::Release,
        Some(hold_id),
        now,
    )?;
    Ok(())
}

/// A hold as placed. Its amount and account never change, so they may be read before the
/// account is locked; its status is only ever changed by [`settle`], under the lock.
fn load(conn: &mut AnyConnection, hold_id: &str) -> Result<Hold, LedgerError> {
    holds::table
        .find(hold_id)
        .select(Hold::as_select())
        .first(conn)
        .optional()?
        .ok_or(LedgerError::HoldNotFound)
}

/// Captures `amount` (at most the hold) and releases the rest, with the usage recorded.
pub fn capture(
    conn: &mut AnyConnection,
    hold_id: &str,
    amount: Usd,
    usage: Option<&UsageMeta>,
    now: i64,
) -> Result<Settlement, LedgerError> {
    if amount.is_negative() {
        return Err(LedgerError::NonPositiveAmount);
    }
    conn.write_tx(|conn| {
        let hold = load(conn, hold_id)?;
        let reserved = hold.amount_micros;
        if amount.micros() > reserved {
            return Err(LedgerError::CaptureExceedsHold {
                held: Usd::from_micros(reserved),
                requested: amount,
            });
        }
        settle(conn, &hold, HOLD_CAPTURED, Some(amount.micros()), None, now)?;
        // The reservation covered it, so this debit cannot fail for lack of credits.
        let balance = if amount.is_zero() {
            crate::balance(conn, &hold.account_id).map(|a| Usd::from_micros(a.balance_micros))?
        } else {
            debit(
                conn,
                &hold.account_id,
                amount,
                EntryKind::Capture,
                Some(hold_id),
                now,
            )?
        };
        if let Some(meta) = usage {
            record_usage_with_id(conn, hold_id, &hold.account_id, amount, meta, now)?;
        }
        Ok(Settlement {
            charged: amount,
            released: Usd::from_micros(reserved - amount.micros()),
            balance,
        })
    })
}

/// Releases an open hold in full.
pub fn release(
    conn: &mut AnyConnection,
    hold_id: &str,
    now: i64,
) -> Result<Settlement, LedgerError> {
    conn.write_tx(|conn| {
        let hold = load(conn, hold_id)?;
        settle(conn, &hold, HOLD_RELEASED, None, None, now)?;
        let balance = crate::balance(conn, &hold.account_id)?.balance_micros;
        Ok(Settlement {
            charged: Usd::ZERO,
            released: Usd::from_micros(hold.amount_micros),
            balance: Usd::from_micros(balance),
        })
    })
}

/// Releases up to `batch` open holds whose time is up; each in its own transaction, so a
/// capture racing the sweeper either wins or finds the hold expired. Returns how many.
pub fn expire_due(conn: &mut AnyConnection, now: i64, batch: i64) -> Result<usize, LedgerError> {
    let due: Vec<String> = holds::table
        .filter(holds::status.eq(HOLD_OPEN))
        .filter(holds::expires_at.le(now))
        .order(holds::expires_at.asc())
        .limit(batch)
        .select(holds::id)
        .load(conn)?;
    let mut expired = 0;
    for id in due {
        match conn.write_tx(|c| {
            load(c, &id).and_then(|h| settle(c, &h, HOLD_EXPIRED, None, Some(now), now))
        }) {
            Ok(()) => expired += 1,
            Err(LedgerError::HoldNotOpen { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(expired)
}
