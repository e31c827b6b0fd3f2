//! Holds: authorise the most a call can cost, then capture its real cost or release it.

use aibank_core::ids::new_ordered_id;
use aibank_core::Usd;
use aibank_store::models::{
    Hold, HOLD_CAPTURED, HOLD_EXPIRED, HOLD_OPEN, HOLD_RELEASED, OPEN_HOLDS,
};
use aibank_store::schema::holds;
use aibank_store::{stmt, AnyConnection, Call};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Text};

use crate::accounts::{debit, journal, journal_capture, move_net, Position};
use crate::limits::{authorize, record_usage_with_id, UsageMeta};
use crate::pg::{self, Admission, CaptureWith, Commit, HoldArgs};
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
    let id = new_ordered_id("hld");
    let args = HoldArgs::new(account_id, amount, &id, reference, now, ttl_ms);
    if let Some(placed) = pg::hold(conn, &args, None, Commit::AsCaller)? {
        return Ok(receipt(&args, placed.balance));
    }
    crate::atomic(conn, |conn| place_hold_step(conn, &args))
}

/// On PostgreSQL and outside any transaction: places a hold and counts the call against
/// its key's limits (`admission`) in one statement, committed at once without waiting for
/// the log flush: the caller flushes before it answers. With the hold, the start of the
/// key's minute window the call was counted in (when it was).
///
/// `None` when it placed nothing: a limit, the balance or a key counter refuses (or the
/// backend is SQLite). The caller then places the hold and counts the call in a
/// transaction of its own, which finds the refusal and says what it is.
pub fn place_hold_at_once(
    conn: &mut AnyConnection,
    account_id: &str,
    amount: Usd,
    ttl_ms: i64,
    reference: Option<&str>,
    now: i64,
    admission: Option<&Admission<'_>>,
) -> Result<Option<(HoldReceipt, Option<i64>)>, LedgerError> {
    let id = new_ordered_id("hld");
    let args = HoldArgs::new(account_id, amount, &id, reference, now, ttl_ms);
    Ok(pg::hold(conn, &args, admission, Commit::Unsynced)?
        .map(|placed| (receipt(&args, placed.balance), placed.minute_start)))
}

/// [`place_hold_at_once`] as a call, for a batch of the account's writes to run with the
/// others in one statement (see `aibank_store::Call`): the same hold, with an id of its own.
#[must_use]
pub fn place_hold_call(
    account_id: &str,
    amount: Usd,
    ttl_ms: i64,
    reference: Option<&str>,
    now: i64,
    admission: Option<&Admission<'_>>,
) -> Call<(HoldReceipt, Option<i64>)> {
    let id = new_ordered_id("hld");
    let args = HoldArgs::new(account_id, amount, &id, reference, now, ttl_ms);
    let made = receipt(&args, 0);
    pg::hold_call(&args, admission, Commit::Unsynced).map(move |placed| {
        let receipt = HoldReceipt {
            balance: Usd::from_micros(placed.balance),
            ..made
        };
        (receipt, placed.minute_start)
    })
}

fn receipt(args: &HoldArgs<'_>, balance: i64) -> HoldReceipt {
    HoldReceipt {
        id: args.hold_id.to_owned(),
        amount: Usd::from_micros(args.amount),
        expires_at: args.expires_at,
        balance: Usd::from_micros(balance),
    }
}

/// [`place_hold`] statement by statement: what `aibank_hold` does on PostgreSQL, and what
/// finds and names a refusal.
fn place_hold_step(
    conn: &mut AnyConnection,
    args: &HoldArgs<'_>,
) -> Result<HoldReceipt, LedgerError> {
    let amount = Usd::from_micros(args.amount);
    authorize(conn, args.account_id, amount, args.now)?;
    let balance = debit(
        conn,
        args.account_id,
        amount,
        EntryKind::Hold,
        Some(args.hold_id),
        args.now,
    )?;
    stmt!(
        "INSERT INTO holds (id, account_id, amount_micros, captured_micros, status, \
         reference, created_at, expires_at, settled_at) \
         VALUES (?, ?, ?, NULL, ?, ?, ?, ?, NULL)",
    )
    .text(args.hold_id)
    .text(args.account_id)
    .int(args.amount)
    .text(HOLD_OPEN)
    .opt_text(args.reference)
    .int(args.now)
    .int(args.expires_at)
    .execute(conn)?;
    Ok(receipt(args, balance.micros()))
}

/// How a hold is to be settled.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    /// Captured for this many micro-USD (at most the hold); the rest is released.
    Captured(i64),
    /// Captured for the cost of usage already served, which may exceed the hold: what the
    /// hold and the balance do not cover is owed.
    Served(i64),
    /// Released in full by its owner.
    Released,
    /// Released in full by the sweeper: only if it is due by this time.
    Expired { due_by: i64 },
}

/// Settles an open hold and moves its money; exactly one settlement wins a race (capture,
/// release and the sweeper all go through here). Returns the settled hold's account and
/// amount, and the account's position after.
///
/// The hold's row is locked first (its conditional `UPDATE`), then its account's: every
/// settlement takes them in that order, and a spend only inserts holds, so two never wait
/// on each other in a cycle.
fn settle(
    conn: &mut AnyConnection,
    hold_id: &str,
    outcome: Outcome,
    now: i64,
) -> Result<(String, i64, Position), LedgerError> {
    let (status, captured, due_by) = match outcome {
        Outcome::Captured(c) | Outcome::Served(c) => (HOLD_CAPTURED, Some(c), i64::MAX),
        Outcome::Released => (HOLD_RELEASED, None, i64::MAX),
        Outcome::Expired { due_by } => (HOLD_EXPIRED, None, due_by),
    };
    let cost = captured.unwrap_or(0);
    // Only served usage may be captured beyond the hold's amount.
    let within = match outcome {
        Outcome::Served(_) => 0,
        _ => cost,
    };
    // A capture or release settles whenever the hold is open (no deadline to meet); a
    // capture only within the hold's amount.
    let settled: Option<(String, i64)> = stmt!(
        "UPDATE holds SET status = ?, captured_micros = ?, settled_at = ? \
         WHERE id = ? AND status = ? AND expires_at <= ? AND amount_micros >= ? \
         RETURNING account_id, amount_micros",
    )
    .text(status)
    .opt_int(captured)
    .int(now)
    .text(hold_id)
    .text(HOLD_OPEN)
    .int(due_by)
    .int(within)
    .returning::<(Text, BigInt)>()
    .get_result(conn)
    .optional()?;
    let Some((account_id, amount)) = settled else {
        return Err(why_unsettled(conn, hold_id, cost)?);
    };
    // Return the reservation to the balance and take the cost from it, in one change.
    let after = move_net(conn, &account_id, amount - cost, amount, cost, now)?;
    if cost > 0 {
        journal_capture(conn, &account_id, hold_id, amount, cost, after.net(), now)?;
    } else {
        journal(
            conn,
            &account_id,
            amount,
            after.net(),
            EntryKind::Release,
            Some(hold_id),
            now,
        )?;
    }
    Ok((account_id, amount, after))
}

/// Why [`settle`] found nothing to settle.
fn why_unsettled(
    conn: &mut AnyConnection,
    hold_id: &str,
    cost: i64,
) -> Result<LedgerError, LedgerError> {
    let hold = holds::table
        .find(hold_id)
        .select(Hold::as_select())
        .first(conn)
        .optional()?;
    Ok(match hold {
        None => LedgerError::HoldNotFound,
        Some(h) if h.status != HOLD_OPEN => LedgerError::HoldNotOpen { status: h.status },
        Some(h) if cost > h.amount_micros => LedgerError::CaptureExceedsHold {
            held: Usd::from_micros(h.amount_micros),
            requested: Usd::from_micros(cost),
        },
        // Open, and not yet due for the sweeper.
        Some(h) => LedgerError::HoldNotOpen { status: h.status },
    })
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
    crate::atomic(conn, |conn| {
        let (account_id, reserved, after) =
            settle(conn, hold_id, Outcome::Captured(amount.micros()), now)?;
        if let Some(meta) = usage {
            record_usage_with_id(conn, hold_id, &account_id, (amount, Usd::ZERO), meta, now)?;
        }
        Ok(Settlement {
            charged: amount,
            released: Usd::from_micros(reserved - amount.micros()),
            balance: Usd::from_micros(after.balance),
        })
    })
}

/// What [`capture_usage`] took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collected {
    /// The cost recorded against the account: from the hold, the balance, and what is owed.
    pub charged: Usd,
    pub balance: Usd,
    /// The part of `charged` that neither the hold nor the balance covered, now owed.
    pub owed: Usd,
    /// The hold was still open and was captured (not: it had expired or been released,
    /// and the cost came from the balance alone).
    pub captured_hold: bool,
}

/// Settles a metered call's hold at its `cost`, the usage already served. With `overage`,
/// all of it is taken even beyond the hold: the rest comes from the balance, and what the
/// balance cannot cover is owed. It is not checked against the spending limits — the call
/// was admitted on its hold and has been served — but counts in them, so a limit it
/// pushes past refuses the next spend. Without `overage` only what the hold covers is
/// taken (a stream cut short, billed from estimates). A hold no longer open (it expired
/// under a very long call) is settled the same way, from the balance alone.
///
/// Never refused for want of money: only a store error, or a hold of another account,
/// makes it fail.
pub fn capture_usage(
    conn: &mut AnyConnection,
    account_id: &str,
    hold: &HoldReceipt,
    cost: Usd,
    overage: bool,
    now: i64,
) -> Result<Collected, LedgerError> {
    if cost.is_negative() {
        return Err(LedgerError::NonPositiveAmount);
    }
    let split = served_split(hold, cost, overage);
    if let Some(got) = captured(
        pg::capture(
            conn,
            &hold.id,
            split,
            now,
            &CaptureWith::NOTHING,
            Commit::AsCaller,
        )?,
        split,
    ) {
        return Ok(got);
    }
    crate::atomic(conn, |conn| {
        capture_usage_step(conn, account_id, hold, split, now)
    })
}

/// On PostgreSQL and outside any transaction: [`capture_usage`] of an open hold, with what
/// `with` adds (the call's usage row, its payment's cost, its key's minute tokens), in one
/// statement committed at once without waiting for the log flush: the caller flushes
/// before it answers. `None` when it changed nothing: the hold is no longer open (or the
/// backend is SQLite); the caller then settles in a transaction of its own.
pub fn capture_usage_at_once(
    conn: &mut AnyConnection,
    hold: &HoldReceipt,
    cost: Usd,
    overage: bool,
    now: i64,
    with: &CaptureWith<'_>,
) -> Result<Option<Collected>, LedgerError> {
    if cost.is_negative() {
        return Err(LedgerError::NonPositiveAmount);
    }
    let split = served_split(hold, cost, overage);
    Ok(captured(
        pg::capture(conn, &hold.id, split, now, with, Commit::Unsynced)?,
        split,
    ))
}

/// [`capture_usage_at_once`] as a call, for a batch of the account's writes to run with
/// the others in one statement (see `aibank_store::Call`). `None` for a negative cost,
/// which [`capture_usage_at_once`] refuses.
#[must_use]
pub fn capture_usage_call(
    hold: &HoldReceipt,
    cost: Usd,
    overage: bool,
    now: i64,
    with: &CaptureWith<'_>,
) -> Option<Call<Collected>> {
    if cost.is_negative() {
        return None;
    }
    let split = served_split(hold, cost, overage);
    Some(
        pg::capture_call(&hold.id, split, now, with, Commit::Unsynced)
            .map(move |row| collected(row, split)),
    )
}

/// What a served call takes (all of its cost with `overage`, else what the hold covers),
/// and the part of that beyond the hold.
fn served_split(hold: &HoldReceipt, cost: Usd, overage: bool) -> (i64, i64) {
    let over = (cost.micros() - hold.amount.micros()).max(0);
    if overage {
        (cost.micros(), over)
    } else {
        (cost.micros() - over, 0)
    }
}

fn captured(row: Option<(i64, i64)>, split: (i64, i64)) -> Option<Collected> {
    row.map(|row| collected(row, split))
}

fn collected((balance, owed): (i64, i64), (taken, _): (i64, i64)) -> Collected {
    Collected {
        charged: Usd::from_micros(taken),
        balance: Usd::from_micros(balance),
        owed: Usd::from_micros(owed),
        captured_hold: true,
    }
}

/// [`capture_usage`] statement by statement: what `aibank_capture` does on PostgreSQL,
/// and the settlement of a hold that is no longer open.
fn capture_usage_step(
    conn: &mut AnyConnection,
    account_id: &str,
    hold: &HoldReceipt,
    (taken, beyond): (i64, i64),
    now: i64,
) -> Result<Collected, LedgerError> {
    let (after, beyond, captured_hold) = match settle(conn, &hold.id, Outcome::Served(taken), now) {
        Ok((_, _, after)) => (after, beyond, true),
        // The hold was already released (or expired): all of the cost is beyond it.
        Err(LedgerError::HoldNotOpen { .. }) if taken > 0 => {
            let after = move_net(conn, account_id, -taken, 0, taken, now)?;
            journal(
                conn,
                account_id,
                -taken,
                after.net(),
                EntryKind::Capture,
                Some(&hold.id),
                now,
            )?;
            (after, taken, false)
        }
        Err(LedgerError::HoldNotOpen { .. }) => {
            let account = crate::accounts::balance(conn, account_id)?;
            return Ok(Collected {
                charged: Usd::ZERO,
                balance: Usd::from_micros(account.balance_micros),
                owed: Usd::ZERO,
                captured_hold: false,
            });
        }
        Err(e) => return Err(e),
    };
    // What this call left owed: its part beyond the hold that the balance did not
    // cover (a debt from before stays the debt it was).
    Ok(Collected {
        charged: Usd::from_micros(taken),
        balance: Usd::from_micros(after.balance),
        owed: Usd::from_micros(after.owed.min(beyond)),
        captured_hold,
    })
}

/// Releases an open hold in full.
pub fn release(
    conn: &mut AnyConnection,
    hold_id: &str,
    now: i64,
) -> Result<Settlement, LedgerError> {
    crate::atomic(conn, |conn| {
        let (_, reserved, after) = settle(conn, hold_id, Outcome::Released, now)?;
        Ok(Settlement {
            charged: Usd::ZERO,
            released: Usd::from_micros(reserved),
            balance: Usd::from_micros(after.balance),
        })
    })
}

/// Releases up to `batch` open holds whose time is up; each in its own transaction, so a
/// capture racing the sweeper either wins or finds the hold expired. Returns how many.
pub fn expire_due(conn: &mut AnyConnection, now: i64, batch: i64) -> Result<usize, LedgerError> {
    let due: Vec<String> = holds::table
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(OPEN_HOLDS))
        .filter(holds::expires_at.le(now))
        .order(holds::expires_at.asc())
        .limit(batch)
        .select(holds::id)
        .load(conn)?;
    let mut expired = 0;
    for id in due {
        match crate::atomic(conn, |c| {
            settle(c, &id, Outcome::Expired { due_by: now }, now)
        }) {
            Ok(_) => expired += 1,
            Err(LedgerError::HoldNotOpen { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(expired)
}
