//! Spending controls and direct charges.
//!
//! Windows are rolling: daily = the last 24 hours, weekly = the last 7 days, monthly = the
//! last 30 days, each ending at the moment of the spend. What counts in a window is what was
//! charged or captured inside it, plus everything open holds currently reserve (a pending
//! call counts until it settles), plus the USD value of the agent's on-chain wallet
//! transfers that have not failed. The per-transaction limit bounds a single charge or hold.
//! A platform may also set a fleet limit: the same daily window over all of its agents.

use aibank_core::clock::rfc3339;
use aibank_core::ids::{new_id, new_ordered_id};
use aibank_core::{ApiError, ErrorCode, Usd};
use aibank_store::models::UsageEvent;
use aibank_store::schema::{agents, journal_entries, platforms, wallet_transfers};
use aibank_store::{stmt, AnyConnection, Stmt};
use diesel::prelude::*;
use diesel::sql_types::BigInt;

use crate::accounts::{bucket_of, debit, lock, BUCKET_MS};
use crate::{usd_json, EntryKind, LedgerError, SPEND_KINDS};

pub const DAY_MS: i64 = 86_400_000;
pub const WEEK_MS: i64 = 7 * DAY_MS;
pub const MONTH_MS: i64 = 30 * DAY_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    PerTx,
    Daily,
    Weekly,
    Monthly,
}

impl Window {
    pub fn as_str(self) -> &'static str {
        match self {
            Window::PerTx => "per_tx",
            Window::Daily => "daily",
            Window::Weekly => "weekly",
            Window::Monthly => "monthly",
        }
    }

    fn length_ms(self) -> i64 {
        match self {
            Window::PerTx => 0,
            Window::Daily => DAY_MS,
            Window::Weekly => WEEK_MS,
            Window::Monthly => MONTH_MS,
        }
    }

    fn code(self) -> ErrorCode {
        match self {
            Window::PerTx => ErrorCode::PerTxLimitExceeded,
            Window::Daily => ErrorCode::DailyLimitExceeded,
            Window::Weekly => ErrorCode::WeeklyLimitExceeded,
            Window::Monthly => ErrorCode::MonthlyLimitExceeded,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Window::PerTx => "per-transaction",
            Window::Daily => "the last 24 hours",
            Window::Weekly => "the last 7 days",
            Window::Monthly => "the last 30 days",
        }
    }
}

/// Whose limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Agent,
    /// The platform's fleet-wide daily limit.
    Platform,
}

/// A refused spend: which limit, how much of it is used, and when enough frees up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitBreach {
    pub window: Window,
    pub scope: Scope,
    pub limit: Usd,
    pub used: Usd,
    pub requested: Usd,
    /// Epoch ms when enough of the window has rolled off for this spend to fit; `None` when
    /// it never will by time alone (the spend is larger than the limit, or what blocks it
    /// is pending holds).
    pub reset_at: Option<i64>,
}

impl From<LimitBreach> for ApiError {
    fn from(b: LimitBreach) -> Self {
        let who = match b.scope {
            Scope::Agent => "",
            Scope::Platform => "Platform fleet ",
        };
        let message = if b.window == Window::PerTx {
            format!(
                "{who}Per-transaction limit exceeded: {} requested, limit {}",
                b.requested, b.limit
            )
        } else {
            let name = b.window.as_str();
            let mut cap = name.to_owned();
            if who.is_empty() {
                cap[..1].make_ascii_uppercase();
            }
            format!(
                "{who}{cap} spending limit exceeded: {} of {} used in {}, {} requested",
                b.used,
                b.limit,
                b.window.describe(),
                b.requested
            )
        };
        let mut e = ApiError::new(b.window.code(), message)
            .with("window", b.window.as_str())
            .with(
                "scope",
                match b.scope {
                    Scope::Agent => "agent",
                    Scope::Platform => "platform",
                },
            )
            .with("limit_usd", usd_json(b.limit))
            .with("used_usd", usd_json(b.used))
            .with("requested_usd", usd_json(b.requested));
        if let Some(at) = b.reset_at {
            e = e.with("resetAt", at).with("reset_at", rfc3339(at));
        } else if b.window != Window::PerTx {
            e = e.with("resetAt", serde_json::Value::Null);
        }
        e
    }
}

/// The limits in force for an account, read inside the spend's transaction.
#[derive(Debug, Default)]
struct Policy {
    per_tx: Option<i64>,
    windows: Vec<(Window, i64)>,
    fleet: Option<(String, i64)>,
}

/// An agent's platform, per-transaction, daily, weekly and monthly limits, and its
/// platform's fleet limit.
type PolicyRow = (Option<String>, i64, i64, i64, i64, Option<i64>);

fn load_policy(conn: &mut AnyConnection, account_id: &str) -> Result<Policy, LedgerError> {
    // The agent's limits and its platform's fleet limit, in one statement.
    let agent: Option<PolicyRow> = agents::table
        .left_join(platforms::table)
        .filter(agents::id.eq(account_id))
        .select((
            agents::platform_id,
            agents::per_tx_limit_micros,
            agents::daily_limit_micros,
            agents::weekly_limit_micros,
            agents::monthly_limit_micros,
            platforms::daily_limit_micros.nullable(),
        ))
        .first(conn)
        .optional()?;
    // Accounts that are not agents (x402 payers) have no spending controls.
    let Some((platform_id, per_tx, daily, weekly, monthly, fleet_limit)) = agent else {
        return Ok(Policy::default());
    };
    let fleet = platform_id.zip(fleet_limit);
    Ok(Policy {
        per_tx: Some(per_tx),
        windows: vec![
            (Window::Daily, daily),
            (Window::Weekly, weekly),
            (Window::Monthly, monthly),
        ],
        fleet,
    })
}

/// Whose spending a window covers.
#[derive(Debug, Clone, Copy)]
enum Whose<'a> {
    Account(&'a str),
    /// Every agent of a platform (the fleet limit).
    Platform(&'a str),
}

type Db = <AnyConnection as diesel::Connection>::Backend;

/// [`SPEND_KINDS`] as the condition of the index of spending journal rows, in the words
/// of the migration that made it (`2026-12-07-000001_spend_journal_index`): a query uses
/// that index only when its text implies this.
const SPEND_ROWS: &str = "(kind = 'charge' OR kind = 'capture')";

/// The spending journal rows (charges and captures) after `since`.
fn spend_rows(whose: Whose<'_>, since: i64) -> journal_entries::BoxedQuery<'_, Db> {
    let q = journal_entries::table
        // Written out as the spending journal index's condition, so that it is used.
        .filter(diesel::dsl::sql::<diesel::sql_types::Bool>(SPEND_ROWS))
        .filter(journal_entries::created_at.gt(since))
        .into_boxed();
    match whose {
        Whose::Account(a) => q.filter(journal_entries::account_id.eq(a)),
        Whose::Platform(p) => q.filter(
            journal_entries::account_id.eq_any(
                agents::table
                    .filter(agents::platform_id.eq(p))
                    .select(agents::id),
            ),
        ),
    }
}

/// A wallet transfer counts against the limits unless it failed (nothing moved).
pub use aibank_store::models::TRANSFER_FAILED;

/// The wallet transfers that count as spending after `since`.
fn transfer_rows(whose: Whose<'_>, since: i64) -> wallet_transfers::BoxedQuery<'_, Db> {
    let q = wallet_transfers::table
        .filter(wallet_transfers::status.ne(TRANSFER_FAILED))
        .filter(wallet_transfers::created_at.gt(since))
        .into_boxed();
    match whose {
        Whose::Account(a) => q.filter(wallet_transfers::agent_id.eq(a)),
        Whose::Platform(p) => q.filter(
            wallet_transfers::agent_id.eq_any(
                agents::table
                    .filter(agents::platform_id.eq(p))
                    .select(agents::id),
            ),
        ),
    }
}

impl<'a> Whose<'a> {
    fn id(self) -> &'a str {
        match self {
            Whose::Account(id) | Whose::Platform(id) => id,
        }
    }
}

/// A `WHERE` condition on `column` in one of the two scopes: one account's rows
/// (`column = ?`), or those of every agent of a platform; the scope's id is bound at the
/// same place in both.
macro_rules! scoped {
    ($column:literal, one) => {
        concat!($column, " = ?")
    };
    ($column:literal, fleet) => {
        concat!($column, " IN (SELECT id FROM agents WHERE platform_id = ?)")
    };
}

/// Three sums by window (day, week, month: the `?`s are the first two windows' lower
/// bounds) as BIGINT columns `d`, `w` and `m` on both backends.
macro_rules! three_windows {
    ($at:literal, $amount:literal) => {
        concat!(
            "SELECT CAST(COALESCE(SUM(CASE WHEN ",
            $at,
            " > ? THEN ",
            $amount,
            " ELSE 0 END), 0) AS BIGINT) AS d, CAST(COALESCE(SUM(CASE WHEN ",
            $at,
            " > ? THEN ",
            $amount,
            " ELSE 0 END), 0) AS BIGINT) AS w, CAST(COALESCE(SUM(",
            $amount,
            "), 0) AS BIGINT) AS m"
        )
    };
}

/// The journal rows of one spending kind of a scope with `created_at` in (?, ?), summed: a
/// scalar subquery. One kind each, so that the kind is an equality on the second column of
/// the index (account_id, kind, created_at), always a bound of the scan: PostgreSQL may
/// plan a list there as a filter, reading every journal row of the account. The kind is
/// written in the text, not bound: the index holds only the spending kinds' rows, and
/// both backends use it only where the query's text implies its condition.
macro_rules! kind_sum {
    ($form:ident, $kind:literal) => {
        concat!(
            "(SELECT CAST(COALESCE(SUM(delta_micros), 0) AS BIGINT) FROM journal_entries \
             WHERE ",
            scoped!("account_id", $form),
            " AND kind = '",
            $kind,
            "' AND created_at > ? AND created_at < ?)"
        )
    };
}

/// The spending journal rows (both kinds, [`SPEND_KINDS`]) of a scope with `created_at` in
/// (?, ?), summed: one per window's edge.
macro_rules! edge_sum {
    ($form:ident) => {
        concat!(
            "(",
            kind_sum!($form, "charge"),
            " + ",
            kind_sum!($form, "capture"),
            ")"
        )
    };
}

/// Everything a spend check reads, in one statement: the spend buckets' sums by window
/// (`b`), the journal at the three windows' edges (`e`), wallet transfers by window (`t`)
/// and what open holds reserve (`h`). Each derived table is one aggregate row.
macro_rules! usage_sums {
    ($form:ident) => {
        concat!(
            "SELECT b.d, b.w, b.m, e.d, e.w, e.m, t.d, t.w, t.m, h.held FROM (",
            three_windows!("bucket_start", "amount_micros"),
            " FROM spend_buckets WHERE ",
            scoped!("account_id", $form),
            " AND bucket_start > ?) AS b, (SELECT ",
            edge_sum!($form),
            " AS d, ",
            edge_sum!($form),
            " AS w, ",
            edge_sum!($form),
            " AS m) AS e, (",
            three_windows!("created_at", "usd_micros"),
            " FROM wallet_transfers WHERE ",
            scoped!("agent_id", $form),
            " AND status <> ? AND created_at > ?) AS t, \
             (SELECT CAST(COALESCE(SUM(held_micros), 0) AS BIGINT) AS held FROM accounts WHERE ",
            scoped!("id", $form),
            ") AS h"
        )
    };
}

const USAGE_SUMS: [&str; 2] = [usage_sums!(one), usage_sums!(fleet)];

/// What a scope has used: spent in each window (charged or captured, plus wallet
/// transfers), and what its open holds reserve now.
#[derive(Debug, Clone, Copy)]
struct Used {
    spent: [i64; 3],
    held: i64,
}

/// Reads [`Used`] for a scope in one statement.
///
/// A window (now − W, now] is summed as the hourly spend buckets that start after the
/// bucket its start falls in, plus the journal rows of that one bucket that are inside the
/// window: exact to the millisecond, and reading at most an hour of journal per window.
fn used_by(conn: &mut AnyConnection, whose: Whose<'_>, now: i64) -> Result<Used, LedgerError> {
    // One statement per scope: each call site is its own prepared statement.
    let ((d, w, m), (ed, ew, em), (td, tw, tm), held) = match whose {
        Whose::Account(_) => sums(stmt!(USAGE_SUMS[0]), whose, now, conn)?,
        Whose::Platform(_) => sums(stmt!(USAGE_SUMS[1]), whose, now, conn)?,
    };
    Ok(Used {
        spent: [d - ed + td, w - ew + tw, m - em + tm],
        held,
    })
}

type SumsRow = ((i64, i64, i64), (i64, i64, i64), (i64, i64, i64), i64);

/// Binds and runs one form of [`USAGE_SUMS`].
fn sums<Site: 'static>(
    q: Stmt<'_, (), Site>,
    whose: Whose<'_>,
    now: i64,
    conn: &mut AnyConnection,
) -> Result<SumsRow, LedgerError> {
    type Sums = (
        (BigInt, BigInt, BigInt),
        (BigInt, BigInt, BigInt),
        (BigInt, BigInt, BigInt),
        BigInt,
    );
    let starts = [now - DAY_MS, now - WEEK_MS, now - MONTH_MS];
    let first = starts.map(bucket_of);
    let mut q = q.int(first[0]).int(first[1]).text(whose.id()).int(first[2]);
    for (start, first) in starts.into_iter().zip(first) {
        for _ in SPEND_KINDS {
            q = q.text(whose.id()).int(start).int(first + BUCKET_MS);
        }
    }
    Ok(q.int(starts[0])
        .int(starts[1])
        .text(whose.id())
        .text(TRANSFER_FAILED)
        .int(starts[2])
        .text(whose.id())
        .returning::<Sums>()
        .get_result(conn)?)
}

/// When enough of the window's oldest spending rolls off for `need` to be freed.
fn reset_time(
    conn: &mut AnyConnection,
    whose: Whose<'_>,
    window: Window,
    need: i64,
    now: i64,
) -> Result<Option<i64>, LedgerError> {
    let since = now - window.length_ms();
    let mut rows: Vec<(i64, i64)> = spend_rows(whose, since)
        .select((journal_entries::created_at, journal_entries::delta_micros))
        .load::<(i64, i64)>(conn)?
        .into_iter()
        .map(|(at, delta)| (at, -delta))
        .collect();
    rows.extend(
        transfer_rows(whose, since)
            .select((wallet_transfers::created_at, wallet_transfers::usd_micros))
            .load::<(i64, i64)>(conn)?,
    );
    rows.sort_unstable();
    let mut freed = 0;
    for (at, spent) in rows {
        freed += spent;
        if freed >= need {
            return Ok(Some(at + window.length_ms()));
        }
    }
    Ok(None)
}

/// A spend of `amount` that a window limit refuses, with the moment enough of the window
/// rolls off for it to fit (none when it is larger than the limit itself).
#[allow(clippy::too_many_arguments)] // the figures of one breach, all needed
fn window_breach(
    conn: &mut AnyConnection,
    whose: Whose<'_>,
    scope: Scope,
    window: Window,
    limit: i64,
    used: i64,
    amount: i64,
    now: i64,
) -> Result<LedgerError, LedgerError> {
    let reset_at = if amount > limit {
        None
    } else {
        reset_time(conn, whose, window, used + amount - limit, now)?
    };
    Ok(LedgerError::LimitExceeded(LimitBreach {
        window,
        scope,
        limit: Usd::from_micros(limit),
        used: Usd::from_micros(used),
        requested: Usd::from_micros(amount),
        reset_at,
    }))
}

/// Checks every limit for a spend of `amount`. Call with the account (and, when a fleet
/// limit applies, the platform) locked.
fn check(
    conn: &mut AnyConnection,
    account_id: &str,
    policy: &Policy,
    amount: i64,
    now: i64,
) -> Result<(), LedgerError> {
    if let Some(limit) = policy.per_tx.filter(|l| amount > *l) {
        return Err(LedgerError::LimitExceeded(LimitBreach {
            window: Window::PerTx,
            scope: Scope::Agent,
            limit: Usd::from_micros(limit),
            used: Usd::ZERO,
            requested: Usd::from_micros(amount),
            reset_at: None,
        }));
    }
    let agent = Whose::Account(account_id);
    if !policy.windows.is_empty() {
        let Used { spent, held } = used_by(conn, agent, now)?;
        for (i, &(window, limit)) in policy.windows.iter().enumerate() {
            let used = spent[i] + held;
            if used + amount > limit {
                return Err(window_breach(
                    conn,
                    agent,
                    Scope::Agent,
                    window,
                    limit,
                    used,
                    amount,
                    now,
                )?);
            }
        }
    }
    if let Some((platform, limit)) = &policy.fleet {
        let fleet = Whose::Platform(platform);
        let fleet_used = used_by(conn, fleet, now)?;
        let used = fleet_used.spent[0] + fleet_used.held;
        if used + amount > *limit {
            let b = window_breach(
                conn,
                fleet,
                Scope::Platform,
                Window::Daily,
                *limit,
                used,
                amount,
                now,
            )?;
            return Err(b);
        }
    }
    Ok(())
}

/// Locks what a spend must serialise on (the platform first when a fleet limit applies,
/// always in that order so concurrent spends cannot deadlock) and checks the limits; an
/// account that owes anything may not spend at all. Call
/// inside the transaction that records the spend; wallet transfers call it before writing
/// their row.
pub fn authorize(
    conn: &mut AnyConnection,
    account_id: &str,
    amount: Usd,
    now: i64,
) -> Result<(), LedgerError> {
    if amount.micros() <= 0 {
        return Err(LedgerError::NonPositiveAmount);
    }
    let policy = load_policy(conn, account_id)?;
    if let Some((platform, _)) = &policy.fleet {
        lock_platform(conn, platform)?;
    }
    let (_, owed) = lock(conn, account_id)?;
    if owed > 0 {
        return Err(LedgerError::Owes {
            owed: Usd::from_micros(owed),
            required: amount,
        });
    }
    check(conn, account_id, &policy, amount.micros(), now)
}

fn lock_platform(conn: &mut AnyConnection, platform_id: &str) -> Result<(), LedgerError> {
    stmt!("UPDATE platforms SET id = id WHERE id = ?")
        .text(platform_id)
        .execute(conn)?;
    Ok(())
}

/// What a metered call was, recorded with its charge in `usage_events`.
#[derive(Debug, Clone, Default)]
pub struct UsageMeta {
    pub api_key_id: Option<String>,
    pub provider: String,
    /// The provider's deployment that served the call.
    pub deployment: Option<String>,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub request_id: Option<String>,
    pub description: Option<String>,
    /// The version of the price table the call was billed at.
    pub price_version: Option<String>,
}

/// Records a metered call whose money moved elsewhere (a hold's capture) or not at all
/// (one made with the agent's own upstream key): its `cost`, and the part of it left `owed`.
pub fn record_usage(
    conn: &mut AnyConnection,
    agent_id: &str,
    cost: Usd,
    owed: Usd,
    meta: &UsageMeta,
    now: i64,
) -> Result<(), LedgerError> {
    record_usage_with_id(
        conn,
        &new_ordered_id("use"),
        agent_id,
        (cost, owed),
        meta,
        now,
    )
}

pub(crate) fn record_usage_with_id(
    conn: &mut AnyConnection,
    id: &str,
    agent_id: &str,
    (cost, owed): (Usd, Usd),
    meta: &UsageMeta,
    now: i64,
) -> Result<(), LedgerError> {
    aibank_store::repo::usage::insert(
        conn,
        &UsageEvent {
            id: id.to_owned(),
            agent_id: agent_id.to_owned(),
            api_key_id: meta.api_key_id.clone(),
            provider: meta.provider.clone(),
            deployment: meta.deployment.clone(),
            model: meta.model.clone(),
            input_tokens: meta.input_tokens,
            output_tokens: meta.output_tokens,
            cost_micros: cost.micros(),
            request_id: meta.request_id.clone(),
            created_at: now,
            description: meta.description.clone(),
            owed_micros: owed.micros(),
            price_version: meta.price_version.clone(),
        },
    )?;
    Ok(())
}

/// A charge: checks the limits and takes `amount`, atomically; records the usage when
/// given. Returns the charge id (`chg_…`, the journal reference) and the new balance.
pub fn charge(
    conn: &mut AnyConnection,
    account_id: &str,
    amount: Usd,
    usage: Option<&UsageMeta>,
    now: i64,
) -> Result<(String, Usd), LedgerError> {
    crate::atomic(conn, |conn| {
        authorize(conn, account_id, amount, now)?;
        let id = new_id("chg");
        let balance = debit(conn, account_id, amount, EntryKind::Charge, Some(&id), now)?;
        if let Some(meta) = usage {
            record_usage_with_id(conn, &id, account_id, (amount, Usd::ZERO), meta, now)?;
        }
        Ok((id, balance))
    })
}

/// What an account spent (charges, captures and wallet transfers) in the last day, week
/// and month, as the spending limits count it, not counting open holds.
pub fn account_spending(
    conn: &mut AnyConnection,
    account_id: &str,
    now: i64,
) -> Result<[Usd; 3], LedgerError> {
    Ok(used_by(conn, Whose::Account(account_id), now)?
        .spent
        .map(Usd::from_micros))
}

/// What an account spent (charged and captured) on each of the last `days` UTC days, the
/// oldest first and today last, from the hourly spend buckets: one row per day, zero for a
/// day without spending.
pub fn daily_spending(
    conn: &mut AnyConnection,
    account_id: &str,
    days: usize,
    now: i64,
) -> Result<Vec<(i64, Usd)>, LedgerError> {
    use aibank_store::schema::spend_buckets;
    let today = now.div_euclid(DAY_MS) * DAY_MS;
    let span = i64::try_from(days).map_err(|_| LedgerError::Overflow)?;
    let first = today - (span - 1) * DAY_MS;
    let buckets: Vec<(i64, i64)> = spend_buckets::table
        .filter(spend_buckets::account_id.eq(account_id))
        .filter(spend_buckets::bucket_start.ge(first))
        .select((spend_buckets::bucket_start, spend_buckets::amount_micros))
        .load(conn)?;
    let mut out: Vec<(i64, i64)> = (0..span).map(|i| (first + i * DAY_MS, 0)).collect();
    for (start, micros) in buckets {
        let day = usize::try_from((start - first).div_euclid(DAY_MS)).ok();
        if let Some(slot) = day.and_then(|d| out.get_mut(d)) {
            slot.1 += micros;
        }
    }
    Ok(out
        .into_iter()
        .map(|(day, micros)| (day, Usd::from_micros(micros)))
        .collect())
}

/// What a platform's agents spent in the last 24 hours plus what their open holds reserve:
/// the figure its fleet daily limit is checked against.
pub fn platform_usage(
    conn: &mut AnyConnection,
    platform_id: &str,
    now: i64,
) -> Result<Usd, LedgerError> {
    let used = used_by(conn, Whose::Platform(platform_id), now)?;
    Ok(Usd::from_micros(used.spent[0] + used.held))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use aibank_store::{Backend, DbPool};
    use aibank_testkit::{pool_options, TestDb};
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;
    use diesel::sql_types::Text;

    use super::{SPEND_ROWS, USAGE_SUMS};
    use crate::SPEND_KINDS;

    #[derive(QueryableByName)]
    struct SqliteLine {
        #[diesel(sql_type = Text)]
        detail: String,
    }

    #[derive(QueryableByName)]
    struct PgLine {
        #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
        detail: String,
    }

    /// The plan `sql` is given, its `?`s unbound, one line per step. PostgreSQL plans it
    /// as the ledger's functions are planned (generic), with table scans ruled out so that
    /// an empty table's plan still shows the index chosen.
    fn plan(c: &mut aibank_store::AnyConnection, backend: Backend, sql: &str) -> Vec<String> {
        match backend {
            Backend::Sqlite => diesel::sql_query(format!("EXPLAIN QUERY PLAN {sql}"))
                .load::<SqliteLine>(c)
                .unwrap()
                .into_iter()
                .map(|l| l.detail)
                .collect(),
            Backend::Postgres => {
                let mut numbered = String::new();
                for (i, part) in sql.split('?').enumerate() {
                    if i > 0 {
                        numbered.push('$');
                        numbered.push_str(&i.to_string());
                    }
                    numbered.push_str(part);
                }
                c.batch_execute(&format!(
                    "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off; \
                     PREPARE q AS {numbered}"
                ))
                .unwrap();
                let params = vec!["NULL"; sql.matches('?').count()].join(", ");
                let lines = diesel::sql_query(format!("EXPLAIN EXECUTE q({params})"))
                    .load::<PgLine>(c)
                    .unwrap();
                c.batch_execute("DEALLOCATE q").unwrap();
                lines.into_iter().map(|l| l.detail).collect()
            }
        }
    }

    /// Asserts every step of `sql`'s plan that reads `table` reads it by `index`.
    fn assert_read_by(sql: &str, table: &str, index: &str) {
        let db = TestDb::fresh();
        let pool = DbPool::connect(&db.url, &pool_options()).unwrap();
        pool.migrate().unwrap();
        let mut c = pool.get().unwrap();
        let lines = plan(&mut c, db.backend, sql);
        // A step that reads the table: SQLite's SEARCH or SCAN, PostgreSQL's scans.
        let reads: Vec<&String> = lines
            .iter()
            .filter(|l| {
                l.contains(&format!("{table} "))
                    && (l.contains("SEARCH") || l.contains("SCAN") || l.contains("Scan"))
            })
            .collect();
        assert!(!reads.is_empty(), "{lines:#?}");
        for line in reads {
            assert!(line.contains(index), "{line} in {lines:#?}");
        }
    }

    /// The spend checks read the journal by the index that holds only spending rows: the
    /// kinds are written in their text the way the index's condition is, so that both
    /// backends can tell that the index covers what they ask for.
    #[test]
    fn spend_sums_read_the_journal_by_the_spending_index() {
        // The texts name exactly the spending kinds, as the index's condition does.
        let each: Vec<String> = SPEND_KINDS
            .iter()
            .map(|k| format!("kind = '{k}'"))
            .collect();
        assert_eq!(SPEND_ROWS, format!("({})", each.join(" OR ")));
        for sums in USAGE_SUMS {
            for kind in &each {
                assert_eq!(sums.matches(kind.as_str()).count(), 3, "{kind} in {sums}");
            }
            assert_eq!(sums.matches("kind = ").count(), 3 * SPEND_KINDS.len());
        }
        let windows = format!(
            "SELECT created_at, delta_micros FROM journal_entries \
             WHERE {SPEND_ROWS} AND created_at > ? AND account_id = ?"
        );
        for sql in [USAGE_SUMS[0], USAGE_SUMS[1], windows.as_str()] {
            assert_read_by(sql, "journal_entries", "journal_spend_by_account_kind_time");
        }
    }

    /// The sweeper's due holds and an account's open holds are read by the indexes that
    /// hold only open holds.
    #[test]
    fn open_holds_are_read_by_the_open_holds_indexes() {
        use aibank_store::models::{HOLD_OPEN, OPEN_HOLDS};
        assert_eq!(OPEN_HOLDS, format!("status = '{HOLD_OPEN}'"));
        assert_read_by(
            &format!(
                "SELECT id FROM holds WHERE {OPEN_HOLDS} AND expires_at <= ? \
                 ORDER BY expires_at LIMIT ?"
            ),
            "holds",
            "holds_open_by_expiry",
        );
        assert_read_by(
            &format!("SELECT amount_micros FROM holds WHERE account_id = ? AND {OPEN_HOLDS}"),
            "holds",
            "holds_open_by_account",
        );
    }
}
