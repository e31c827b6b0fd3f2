//! The gateway's two ledger steps as one statement each on PostgreSQL: calls of the
//! functions the `ledger_functions` migration installs (`aibank_hold`, `aibank_capture`).
//!
//! One agent's calls serialise on its account row. Run from here statement by statement,
//! a step held that lock for a round trip per statement; as one statement outside a
//! transaction it holds it only while the function runs on the server, and commits at
//! once. A function only takes the path where everything is allowed; when anything would
//! refuse it changes nothing and answers no row, and the caller runs the step in Rust,
//! which finds the same refusal and says exactly what it is. On SQLite these answer `None`
//! at once: its one writer holds the whole database through a transaction anyway.

use aibank_store::{stmt, AnyConnection, Arg, Call, Stmt};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable};

use crate::LedgerError;

/// How a function's commit treats the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Commit {
    /// As the connection's transaction (or, outside one, the server) commits.
    AsCaller,
    /// Without waiting for the log flush: the caller flushes before it answers (see
    /// `DbPool::write_at_once`).
    Unsynced,
}

impl Commit {
    /// The functions' last argument, bound as `? <> 0` (one prepared statement for both).
    fn unsynced(self) -> i64 {
        i64::from(self == Commit::Unsynced)
    }
}

/// `function(?, …, ? <> 0)`: a ledger function's call, its last argument the commit mode.
macro_rules! function {
    ($function:literal, $args:literal) => {
        concat!($function, "(", $args, "? <> 0)")
    };
}

macro_rules! hold_call {
    () => {
        function!("aibank_hold", "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ")
    };
}

macro_rules! capture_call {
    () => {
        function!(
            "aibank_capture",
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
        )
    };
}

const HOLD: &str = concat!("SELECT balance, minute_start FROM ", hold_call!());
const CAPTURE: &str = concat!("SELECT balance, owed FROM ", capture_call!());

/// A call counted against its key's limits in the statement that places its hold: the
/// daily message count (`daily` messages in `window_ms`) and the minute window (`rpm`
/// requests, `tpm` tokens, the call counted at `tokens`).
#[derive(Debug, Clone, Copy)]
pub struct Admission<'a> {
    pub key_id: &'a str,
    pub daily: Option<i64>,
    pub window_ms: i64,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub tokens: i64,
}

/// What a placed hold left: the balance, and the start of its key's minute window when it
/// was counted in one.
pub(crate) struct Placed {
    pub balance: i64,
    pub minute_start: Option<i64>,
}

/// A hold to place, as [`crate::holds::place_hold`] takes it.
pub(crate) struct HoldArgs<'a> {
    pub account_id: &'a str,
    pub amount: i64,
    pub hold_id: &'a str,
    pub reference: Option<&'a str>,
    pub now: i64,
    pub expires_at: i64,
}

impl<'a> HoldArgs<'a> {
    pub fn new(
        account_id: &'a str,
        amount: aibank_core::Usd,
        hold_id: &'a str,
        reference: Option<&'a str>,
        now: i64,
        ttl_ms: i64,
    ) -> Self {
        HoldArgs {
            account_id,
            amount: amount.micros(),
            hold_id,
            reference,
            now,
            expires_at: now.saturating_add(ttl_ms),
        }
    }
}

fn hold_args(h: &HoldArgs<'_>, admission: Option<&Admission<'_>>, commit: Commit) -> Vec<Arg> {
    let a = admission;
    let text = |v: &str| Arg::Text(Some(v.to_owned()));
    vec![
        text(h.account_id),
        Arg::Int(Some(h.amount)),
        text(h.hold_id),
        Arg::Text(h.reference.map(str::to_owned)),
        Arg::Int(Some(h.now)),
        Arg::Int(Some(h.expires_at)),
        Arg::Text(a.map(|a| a.key_id.to_owned())),
        Arg::Int(a.and_then(|a| a.daily)),
        Arg::Int(Some(a.map_or(0, |a| a.window_ms))),
        Arg::Int(a.and_then(|a| a.rpm)),
        Arg::Int(a.and_then(|a| a.tpm)),
        Arg::Int(Some(a.map_or(0, |a| a.tokens))),
        Arg::Int(Some(commit.unsynced())),
    ]
}

pub(crate) fn hold(
    conn: &mut AnyConnection,
    h: &HoldArgs<'_>,
    admission: Option<&Admission<'_>>,
    commit: Commit,
) -> Result<Option<Placed>, LedgerError> {
    if conn.is_sqlite() {
        return Ok(None);
    }
    let args = hold_args(h, admission, commit);
    let row: Option<(i64, Option<i64>)> = args
        .iter()
        .fold(stmt!(HOLD), Stmt::arg)
        .returning::<(BigInt, Nullable<BigInt>)>()
        .get_result(conn)
        .optional()?;
    Ok(row.map(|(balance, minute_start)| Placed {
        balance,
        minute_start,
    }))
}

/// [`hold`] as a call for a batch of the account's writes to run with the others.
pub(crate) fn hold_call(
    h: &HoldArgs<'_>,
    admission: Option<&Admission<'_>>,
    commit: Commit,
) -> Call<Placed> {
    Call {
        call: hold_call!(),
        args: hold_args(h, admission, commit),
        decode: Box::new(|balance, minute_start| Placed {
            balance,
            minute_start,
        }),
    }
}

/// What a gateway call's capture writes with it, in the same statement.
#[derive(Debug, Clone, Copy)]
pub struct CaptureWith<'a> {
    /// The call's usage row: its id, its agent and what it was.
    pub usage: Option<(&'a str, &'a str, &'a crate::UsageMeta)>,
    /// (chain, tx hash) of the x402 payment whose cost it is.
    pub payment: Option<(&'a str, &'a str)>,
    /// (key id, minute window start, tokens to add): the key's minute tokens put right.
    pub minute_tokens: Option<(&'a str, i64, i64)>,
}

impl CaptureWith<'_> {
    pub const NOTHING: CaptureWith<'static> = CaptureWith {
        usage: None,
        payment: None,
        minute_tokens: None,
    };
}

fn capture_args(
    hold_id: &str,
    (taken, beyond): (i64, i64),
    now: i64,
    with: &CaptureWith<'_>,
    commit: Commit,
) -> Vec<Arg> {
    let usage = with.usage;
    let meta = usage.map(|(_, _, m)| m);
    let payment = with.payment;
    let tokens = with.minute_tokens;
    let text = |v: Option<&str>| Arg::Text(v.map(str::to_owned));
    vec![
        text(Some(hold_id)),
        Arg::Int(Some(taken)),
        Arg::Int(Some(beyond)),
        Arg::Int(Some(now)),
        text(usage.map(|(id, _, _)| id)),
        text(usage.map(|(_, agent, _)| agent)),
        text(meta.and_then(|m| m.api_key_id.as_deref())),
        text(meta.map(|m| m.provider.as_str())),
        text(meta.and_then(|m| m.deployment.as_deref())),
        text(meta.map(|m| m.model.as_str())),
        Arg::Int(Some(meta.map_or(0, |m| m.input_tokens))),
        Arg::Int(Some(meta.map_or(0, |m| m.output_tokens))),
        text(meta.and_then(|m| m.request_id.as_deref())),
        text(meta.and_then(|m| m.description.as_deref())),
        text(meta.and_then(|m| m.price_version.as_deref())),
        text(payment.map(|(chain, _)| chain)),
        text(payment.map(|(_, hash)| hash)),
        text(tokens.map(|(key, _, _)| key)),
        Arg::Int(Some(tokens.map_or(0, |(_, start, _)| start))),
        Arg::Int(Some(tokens.map_or(0, |(_, _, delta)| delta))),
        Arg::Int(Some(commit.unsynced())),
    ]
}

/// Captures an open hold for `taken`, `beyond` of which counts as the call's debt when the
/// balance does not cover it; the balance and what this call left owed. `None`: the hold
/// was not open (or the backend is SQLite), and nothing changed.
pub(crate) fn capture(
    conn: &mut AnyConnection,
    hold_id: &str,
    split: (i64, i64),
    now: i64,
    with: &CaptureWith<'_>,
    commit: Commit,
) -> Result<Option<(i64, i64)>, LedgerError> {
    if conn.is_sqlite() {
        return Ok(None);
    }
    let args = capture_args(hold_id, split, now, with, commit);
    Ok(args
        .iter()
        .fold(stmt!(CAPTURE), Stmt::arg)
        .returning::<(BigInt, BigInt)>()
        .get_result(conn)
        .optional()?)
}

/// [`capture`] as a call for a batch of the account's writes to run with the others.
pub(crate) fn capture_call(
    hold_id: &str,
    split: (i64, i64),
    now: i64,
    with: &CaptureWith<'_>,
    commit: Commit,
) -> Call<(i64, i64)> {
    Call {
        call: capture_call!(),
        args: capture_args(hold_id, split, now, with, commit),
        // aibank_capture's owed is an account's owed_micros, which is never null.
        decode: Box::new(|balance, owed| (balance, owed.unwrap_or_default())),
    }
}
