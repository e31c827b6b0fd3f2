//! Ledger operations on a real database (SQLite, or PostgreSQL with
//! `AIBANK_TEST_DATABASE_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use std::sync::Arc;

use aibank_core::Usd;
use aibank_ledger::{
    balance, capture, charge, credit, expire_due, open_account, place_hold, release, EntryKind,
    LedgerError,
};
use aibank_store::schema::{accounts, holds};
use aibank_store::{AnyConnection, DbPool};
use aibank_testkit::{assert_account_consistent, pool_options, TestDb};
use diesel::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn pool() -> (DbPool, TestDb) {
    let db = TestDb::fresh();
    let pool = DbPool::connect(&db.url, &pool_options()).unwrap();
    pool.migrate().unwrap();
    (pool, db)
}

fn usd(micros: i64) -> Usd {
    Usd::from_micros(micros)
}

/// The account's invariants, read under its lock so the figures are one consistent state.
fn assert_invariants(c: &mut AnyConnection, account: &str) {
    c.write_tx(|c| {
        diesel::update(accounts::table.find(account))
            .set(accounts::updated_at.eq(accounts::updated_at))
            .execute(c)?;
        assert_account_consistent(c, account);
        Ok::<_, diesel::result::Error>(())
    })
    .unwrap();
}

#[test]
fn credits_and_charges_are_journaled_and_exact() {
    let (pool, _db) = pool();
    let mut c = pool.get().unwrap();
    open_account(&mut c, "acct_a", usd(1_000_000), EntryKind::SignupGrant, 1).unwrap();
    assert_eq!(
        credit(
            &mut c,
            "acct_a",
            usd(100_000),
            EntryKind::Grant,
            Some("ref"),
            2
        )
        .unwrap(),
        usd(1_100_000)
    );
    let (id, bal) = charge(&mut c, "acct_a", usd(1_099_999), None, 3).unwrap();
    assert!(id.starts_with("chg_"));
    assert_eq!(bal, usd(1));
    let acct = balance(&mut c, "acct_a").unwrap();
    assert_eq!(
        (acct.balance_micros, acct.total_spent_micros),
        (1, 1_099_999)
    );
    assert_invariants(&mut c, "acct_a");
}

#[test]
fn a_charge_beyond_the_balance_moves_nothing() {
    let (pool, _db) = pool();
    let mut c = pool.get().unwrap();
    open_account(&mut c, "acct_b", usd(500), EntryKind::SignupGrant, 1).unwrap();
    let err = charge(&mut c, "acct_b", usd(501), None, 2).unwrap_err();
    assert!(matches!(
        err,
        LedgerError::InsufficientCredits { balance, required } if balance == usd(500) && required == usd(501)
    ));
    assert_eq!(balance(&mut c, "acct_b").unwrap().balance_micros, 500);
    assert_invariants(&mut c, "acct_b");
}

#[test]
fn bad_amounts_and_unknown_accounts_are_errors() {
    let (pool, _db) = pool();
    let mut c = pool.get().unwrap();
    open_account(&mut c, "acct_c", Usd::ZERO, EntryKind::SignupGrant, 1).unwrap();
    assert!(matches!(
        credit(&mut c, "acct_c", Usd::ZERO, EntryKind::Grant, None, 2),
        Err(LedgerError::NonPositiveAmount)
    ));
    assert!(matches!(
        charge(&mut c, "acct_c", usd(-1), None, 2),
        Err(LedgerError::NonPositiveAmount)
    ));
    assert!(matches!(
        place_hold(&mut c, "acct_c", Usd::ZERO, 10, None, 2),
        Err(LedgerError::NonPositiveAmount)
    ));
    assert!(matches!(
        credit(&mut c, "nope", usd(1), EntryKind::Grant, None, 2),
        Err(LedgerError::AccountNotFound)
    ));
    assert!(matches!(
        charge(&mut c, "nope", usd(1), None, 2),
        Err(LedgerError::AccountNotFound)
    ));
    credit(&mut c, "acct_c", usd(i64::MAX), EntryKind::Grant, None, 2).unwrap();
    assert!(matches!(
        credit(&mut c, "acct_c", usd(1), EntryKind::Grant, None, 2),
        Err(LedgerError::Overflow)
    ));
    assert_invariants(&mut c, "acct_c");
}

#[test]
fn holds_capture_release_and_expire_exactly_once() {
    let (pool, _db) = pool();
    let mut c = pool.get().unwrap();
    open_account(&mut c, "acct_h", usd(1_000), EntryKind::SignupGrant, 0).unwrap();

    let h1 = place_hold(&mut c, "acct_h", usd(600), 1_000, Some("call-1"), 10).unwrap();
    assert_eq!((h1.balance, h1.expires_at), (usd(400), 1_010));
    assert!(matches!(
        place_hold(&mut c, "acct_h", usd(401), 1_000, None, 11),
        Err(LedgerError::InsufficientCredits { .. })
    ));
    assert!(matches!(
        capture(&mut c, &h1.id, usd(601), None, 12),
        Err(LedgerError::CaptureExceedsHold { .. })
    ));
    let s = capture(&mut c, &h1.id, usd(250), None, 12).unwrap();
    assert_eq!(
        (s.charged, s.released, s.balance),
        (usd(250), usd(350), usd(750))
    );
    assert!(matches!(
        capture(&mut c, &h1.id, usd(1), None, 13),
        Err(LedgerError::HoldNotOpen { .. })
    ));
    assert!(matches!(
        release(&mut c, &h1.id, 13),
        Err(LedgerError::HoldNotOpen { .. })
    ));

    let h2 = place_hold(&mut c, "acct_h", usd(100), 1_000, None, 20).unwrap();
    assert_eq!(release(&mut c, &h2.id, 21).unwrap().balance, usd(750));

    let h3 = place_hold(&mut c, "acct_h", usd(700), 1_000, None, 30).unwrap();
    assert_eq!(expire_due(&mut c, 1_029, 100).unwrap(), 0, "not due yet");
    assert_eq!(expire_due(&mut c, 1_030, 100).unwrap(), 1);
    assert_eq!(expire_due(&mut c, 1_031, 100).unwrap(), 0, "expired once");
    assert!(
        matches!(capture(&mut c, &h3.id, usd(1), None, 1_032), Err(LedgerError::HoldNotOpen { status }) if status == "expired")
    );
    assert!(matches!(
        release(&mut c, "hld_nope", 1),
        Err(LedgerError::HoldNotFound)
    ));

    let a = balance(&mut c, "acct_h").unwrap();
    assert_eq!(
        (a.balance_micros, a.held_micros, a.total_spent_micros),
        (750, 0, 250)
    );
    assert_invariants(&mut c, "acct_h");
}

/// Inside a caller's transaction an operation has no savepoint of its own: every refusal
/// must come before any change, so a caller can catch it, go on, and commit.
#[test]
fn refusals_inside_a_callers_transaction_leave_nothing_to_undo() {
    let (pool, _db) = pool();
    let mut c = pool.get().unwrap();
    open_account(&mut c, "acct_n", usd(1_000), EntryKind::SignupGrant, 0).unwrap();
    open_account(&mut c, "acct_full", usd(1), EntryKind::SignupGrant, 0).unwrap();
    c.write_tx(|c| {
        let h = place_hold(c, "acct_n", usd(600), 1_000, None, 1)?;
        let refusals = [
            place_hold(c, "acct_n", usd(401), 1_000, None, 2).map(|_| ()),
            charge(c, "acct_n", usd(401), None, 2).map(|_| ()),
            capture(c, &h.id, usd(601), None, 3).map(|_| ()),
            place_hold(c, "nope", usd(1), 1_000, None, 3).map(|_| ()),
            credit(c, "acct_full", usd(i64::MAX), EntryKind::Grant, None, 3).map(|_| ()),
        ];
        for r in refusals {
            assert!(
                r.is_err() && !matches!(r, Err(LedgerError::Store(_))),
                "{r:?}"
            );
        }
        capture(c, &h.id, usd(100), None, 4)?;
        assert!(matches!(
            capture(c, &h.id, usd(1), None, 5),
            Err(LedgerError::HoldNotOpen { .. })
        ));
        assert!(matches!(
            release(c, &h.id, 5),
            Err(LedgerError::HoldNotOpen { .. })
        ));
        assert!(matches!(
            release(c, "hld_nope", 5),
            Err(LedgerError::HoldNotFound)
        ));
        assert_eq!(expire_due(c, i64::MAX, 10)?, 0);
        Ok::<_, LedgerError>(())
    })
    .unwrap();
    // What committed is the hold and its capture, nothing of the refusals.
    let a = balance(&mut c, "acct_n").unwrap();
    assert_eq!(
        (a.balance_micros, a.held_micros, a.total_spent_micros),
        (900, 0, 100)
    );
    let kinds: Vec<String> = aibank_store::schema::journal_entries::table
        .filter(aibank_store::schema::journal_entries::account_id.eq("acct_n"))
        .order(aibank_store::schema::journal_entries::id.asc())
        .select(aibank_store::schema::journal_entries::kind)
        .load(&mut c)
        .unwrap();
    assert_eq!(kinds, ["signup_grant", "hold", "release", "capture"]);
    assert_eq!(balance(&mut c, "acct_full").unwrap().balance_micros, 1);
    assert_invariants(&mut c, "acct_n");
    assert_invariants(&mut c, "acct_full");
}

/// Many concurrent charges against one balance: exactly as many succeed as the balance
/// covers, and the balance never goes below zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_charges_never_overdraw() {
    let (pool, _db) = tokio::task::spawn_blocking(pool).await.unwrap();
    let pool = Arc::new(pool);
    pool.run(|c| open_account(c, "acct_d", usd(10_000_000), EntryKind::SignupGrant, 1))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(|c| match charge(c, "acct_d", usd(200_000), None, 2) {
                    Ok(_) => Ok(true),
                    Err(LedgerError::InsufficientCredits { .. }) => Ok(false),
                    Err(e) => Err(e),
                })
                .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() {
            ok += 1;
        }
    }
    assert_eq!(ok, 50);
    let mut c = pool.get().unwrap();
    assert_eq!(balance(&mut c, "acct_d").unwrap().balance_micros, 0);
    assert_invariants(&mut c, "acct_d");
}

/// Workers place, capture and release holds and charge at random (fixed seeds) on a few
/// shared accounts while a sweeper expires holds; after every step the touched account's
/// invariants are checked under its lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_holds_captures_releases_and_sweeps_keep_the_invariants() {
    const ACCOUNTS: [&str; 3] = ["acct_r0", "acct_r1", "acct_r2"];
    const STEPS: usize = 120;
    let (pool, _db) = tokio::task::spawn_blocking(pool).await.unwrap();
    let pool = Arc::new(pool);
    pool.run(|c| {
        for a in ACCOUNTS {
            open_account(c, a, usd(2_000_000), EntryKind::SignupGrant, 0)?;
        }
        Ok::<_, LedgerError>(())
    })
    .await
    .unwrap();
    let clock = Arc::new(std::sync::atomic::AtomicI64::new(1));

    let workers: Vec<_> = (0..4u64)
        .map(|seed| {
            let (pool, clock) = (pool.clone(), clock.clone());
            tokio::task::spawn_blocking(move || {
                let mut rng = StdRng::seed_from_u64(0xA1BA_4C00 + seed);
                let mut c = pool.get().unwrap();
                let mut mine: Vec<(String, i64)> = Vec::new();
                for _ in 0..STEPS {
                    let now = clock
                        .fetch_add(rng.random_range(1..50), std::sync::atomic::Ordering::SeqCst);
                    let account = ACCOUNTS[rng.random_range(0..ACCOUNTS.len())];
                    let touched = match rng.random_range(0..10) {
                        0..=3 => {
                            let amount = rng.random_range(1..300_000);
                            match place_hold(
                                &mut c,
                                account,
                                usd(amount),
                                rng.random_range(10..400),
                                None,
                                now,
                            ) {
                                Ok(h) => mine.push((h.id, amount)),
                                Err(LedgerError::InsufficientCredits { .. }) => {}
                                Err(e) => panic!("{e}"),
                            }
                            account.to_owned()
                        }
                        4..=6 if !mine.is_empty() => {
                            let (id, amount) = mine.swap_remove(rng.random_range(0..mine.len()));
                            match capture(&mut c, &id, usd(rng.random_range(0..=amount)), None, now)
                            {
                                Ok(_) | Err(LedgerError::HoldNotOpen { .. }) => {}
                                Err(e) => panic!("{e}"),
                            }
                            hold_account(&mut c, &id)
                        }
                        7 if !mine.is_empty() => {
                            let (id, _) = mine.swap_remove(rng.random_range(0..mine.len()));
                            match release(&mut c, &id, now) {
                                Ok(_) | Err(LedgerError::HoldNotOpen { .. }) => {}
                                Err(e) => panic!("{e}"),
                            }
                            hold_account(&mut c, &id)
                        }
                        8 => {
                            match charge(
                                &mut c,
                                account,
                                usd(rng.random_range(1..50_000)),
                                None,
                                now,
                            ) {
                                Ok(_) | Err(LedgerError::InsufficientCredits { .. }) => {}
                                Err(e) => panic!("{e}"),
                            }
                            account.to_owned()
                        }
                        _ => {
                            credit(
                                &mut c,
                                account,
                                usd(rng.random_range(1..100_000)),
                                EntryKind::Grant,
                                None,
                                now,
                            )
                            .unwrap();
                            account.to_owned()
                        }
                    };
                    assert_invariants(&mut c, &touched);
                }
            })
        })
        .collect();
    let sweeper = {
        let (pool, clock) = (pool.clone(), clock.clone());
        tokio::task::spawn_blocking(move || {
            let mut c = pool.get().unwrap();
            for _ in 0..40 {
                let now = clock.load(std::sync::atomic::Ordering::SeqCst);
                expire_due(&mut c, now, 50).unwrap();
                for a in ACCOUNTS {
                    assert_invariants(&mut c, a);
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    for w in workers {
        w.await.unwrap();
    }
    sweeper.await.unwrap();

    // Settle what is left; everything returns to the balances.
    let mut c = pool.get().unwrap();
    expire_due(&mut c, i64::MAX, 10_000).unwrap();
    for a in ACCOUNTS {
        assert_invariants(&mut c, a);
        assert_eq!(balance(&mut c, a).unwrap().held_micros, 0);
    }
}

/// A platform, with its fleet's daily limit when given.
fn platform(c: &mut AnyConnection, id: &str, fleet_daily_limit: Option<i64>) {
    use aibank_store::schema::platforms;
    diesel::insert_into(platforms::table)
        .values((
            platforms::id.eq(id),
            platforms::name.eq(id),
            platforms::created_at.eq(0_i64),
            platforms::daily_limit_micros.eq(fleet_daily_limit),
        ))
        .execute(c)
        .unwrap();
}

/// An agent of `platform` whose every spending limit is `limit`, its account opened with
/// `credits`.
fn agent_of(c: &mut AnyConnection, platform: &str, id: &str, limit: i64, credits: Usd) {
    use aibank_store::models::Agent;
    let agent = Agent {
        per_tx_limit_micros: limit,
        daily_limit_micros: limit,
        weekly_limit_micros: limit,
        monthly_limit_micros: limit,
        ..Agent::new(
            id.into(),
            Some(platform.into()),
            "agent",
            id.into(),
            None,
            0,
        )
    };
    aibank_store::repo::agents::insert(c, &agent).unwrap();
    open_account(c, id, credits, EntryKind::Grant, 0).unwrap();
}

fn hold_account(c: &mut AnyConnection, hold_id: &str) -> String {
    holds::table
        .find(hold_id)
        .select(holds::account_id)
        .first(c)
        .unwrap()
}

/// The spending windows, summed from hourly buckets plus the journal of the hour a window
/// starts in, equal a plain sum over the journal at every moment, edges included.
#[test]
fn spending_windows_match_the_journal_at_every_edge() {
    use aibank_ledger::limits::{account_spending, platform_usage, DAY_MS, MONTH_MS, WEEK_MS};
    const HOUR: i64 = 3_600_000;
    let (pool, _db) = pool();
    let mut c = pool.get().unwrap();
    platform(&mut c, "plt_w", None);
    let mut rng = StdRng::seed_from_u64(7);
    let mut spends: Vec<(i64, i64)> = Vec::new();
    for id in ["agt_w1", "agt_w2"] {
        agent_of(&mut c, "plt_w", id, i64::MAX / 4, usd(1 << 40));
    }
    let base = 100 * DAY_MS;
    for _ in 0..400 {
        // Times cluster on hour edges, where the buckets split.
        let hour = rng.random_range(0..40 * 24_i64);
        let t = base
            + hour * HOUR
            + [0, 1, HOUR - 1, rng.random_range(0..HOUR)][rng.random_range(0..4)];
        let amount = rng.random_range(1..1_000_000_i64);
        let who = if rng.random_bool(0.5) {
            "agt_w1"
        } else {
            "agt_w2"
        };
        if who == "agt_w1" {
            spends.push((t, amount));
        }
        if rng.random_bool(0.5) {
            charge(&mut c, who, usd(amount), None, t).unwrap();
        } else {
            let h = place_hold(&mut c, who, usd(amount * 2), 1_000_000, None, t).unwrap();
            capture(&mut c, &h.id, usd(amount), None, t).unwrap();
        }
    }
    for _ in 0..300 {
        let hour = rng.random_range(0..45 * 24_i64);
        let now = base
            + hour * HOUR
            + [0, 1, HOUR - 1, rng.random_range(0..HOUR)][rng.random_range(0..4)];
        let brute = |w: i64| -> i64 {
            spends
                .iter()
                .filter(|(t, _)| *t > now - w)
                .map(|(_, a)| a)
                .sum()
        };
        let got = account_spending(&mut c, "agt_w1", now).unwrap();
        assert_eq!(
            got.map(Usd::micros),
            [brute(DAY_MS), brute(WEEK_MS), brute(MONTH_MS)],
            "at {now}"
        );
        let fleet = platform_usage(&mut c, "plt_w", now).unwrap().micros();
        let other = account_spending(&mut c, "agt_w2", now).unwrap()[0].micros();
        assert_eq!(fleet, got[0].micros() + other, "fleet at {now}");
    }
}

/// Settling a hold with an overage locks the hold, then the account, and takes the
/// overage without a limit check, so it never needs the fleet's platform; a spend from the
/// same account takes the platform, then the account. The two cannot close a cycle
/// (PostgreSQL would abort one as a deadlock). On SQLite one write lock covers everything,
/// so this can only fail on PostgreSQL, where `scripts/test` runs it too.
#[test]
fn an_overage_waits_for_a_spend_holding_the_fleet_instead_of_deadlocking_with_it() {
    use aibank_ledger::capture_usage;
    let (pool, _db) = pool();
    let mut c = pool.get().unwrap();
    platform(&mut c, "plt_o", Some(1_000_000));
    agent_of(&mut c, "plt_o", "agt_o", 1_000_000, usd(10_000));
    let hold = place_hold(&mut c, "agt_o", usd(100), 60_000, None, 1).unwrap();

    // A spend from the account, under way: it holds the platform and is about to lock the
    // account.
    diesel::sql_query("BEGIN").execute(&mut c).unwrap();
    aibank_store::stmt!("UPDATE platforms SET id = id WHERE id = ?")
        .text("plt_o")
        .execute(&mut c)
        .unwrap();
    let settler = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let mut c = pool.get().unwrap();
            capture_usage(&mut c, "agt_o", &hold, usd(150), true, 2)
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(300));
    let spend = aibank_store::stmt!("UPDATE accounts SET updated_at = updated_at WHERE id = ?")
        .text("agt_o")
        .execute(&mut c);
    diesel::sql_query(if spend.is_ok() { "COMMIT" } else { "ROLLBACK" })
        .execute(&mut c)
        .unwrap();
    let settled = settler.join().unwrap();
    assert!(spend.is_ok(), "the spend failed: {spend:?}");
    let got = settled.unwrap();
    assert_eq!((got.charged, got.balance), (usd(150), usd(9_850)));
    assert!(got.owed.is_zero());
    let a = balance(&mut c, "agt_o").unwrap();
    assert_eq!(
        (a.balance_micros, a.held_micros, a.total_spent_micros),
        (9_850, 0, 150)
    );
    assert_invariants(&mut c, "agt_o");
}

/// Usage served beyond a hold is taken from the balance, and what the balance cannot cover
/// is owed: the journal then sums to the balance less the debt, every spend is refused
/// while it stands, and money coming in (a hold's unused part, a grant) pays it first.
#[test]
fn usage_beyond_hold_and_balance_is_owed_refuses_spends_and_is_paid_first() {
    use aibank_ledger::capture_usage;
    let (pool, _db) = pool();
    let mut c = pool.get().unwrap();
    open_account(&mut c, "acct_d", usd(100_000), EntryKind::Grant, 1).unwrap();
    let first = place_hold(&mut c, "acct_d", usd(9_000), 60_000, None, 2).unwrap();
    let second = place_hold(&mut c, "acct_d", usd(1_000), 60_000, None, 2).unwrap();
    assert_eq!(second.balance, usd(90_000));

    // $0.320138 served against a $0.009 hold and $0.09 of balance: $0.221138 owed.
    let got = capture_usage(&mut c, "acct_d", &first, usd(320_138), true, 3).unwrap();
    assert_eq!(
        (got.charged, got.balance, got.owed),
        (usd(320_138), usd(0), usd(221_138))
    );
    let a = balance(&mut c, "acct_d").unwrap();
    assert_eq!(
        (
            a.balance_micros,
            a.held_micros,
            a.owed_micros,
            a.total_spent_micros
        ),
        (0, 1_000, 221_138, 320_138)
    );
    assert_invariants(&mut c, "acct_d");

    for refused in [
        charge(&mut c, "acct_d", usd(1), None, 4).map(|_| ()),
        place_hold(&mut c, "acct_d", usd(1), 60_000, None, 4).map(|_| ()),
    ] {
        match refused {
            Err(LedgerError::Owes { owed, required }) => {
                assert_eq!((owed, required), (usd(221_138), usd(1)));
            }
            other => panic!("a spend while owing: {other:?}"),
        }
    }

    // The other hold's unused part pays the debt, not the balance.
    let got = capture_usage(&mut c, "acct_d", &second, usd(400), true, 5).unwrap();
    assert_eq!(
        (got.charged, got.balance, got.owed),
        (usd(400), usd(0), usd(0))
    );
    assert_eq!(balance(&mut c, "acct_d").unwrap().owed_micros, 220_538);
    assert_invariants(&mut c, "acct_d");

    // A grant pays what is owed first; the rest is balance, and spending resumes.
    let after = credit(&mut c, "acct_d", usd(1_000_000), EntryKind::Grant, None, 6).unwrap();
    assert_eq!(after, usd(779_462));
    let a = balance(&mut c, "acct_d").unwrap();
    assert_eq!((a.balance_micros, a.owed_micros), (779_462, 0));
    charge(&mut c, "acct_d", usd(1), None, 7).unwrap();
    assert_invariants(&mut c, "acct_d");
    assert_eq!(
        aibank_ledger::journal_sum(&mut c, "acct_d").unwrap(),
        779_461
    );
}

/// A grant smaller than the debt pays part of it and leaves no balance.
#[test]
fn a_grant_smaller_than_the_debt_pays_part_of_it() {
    use aibank_ledger::capture_usage;
    let (pool, _db) = pool();
    let mut c = pool.get().unwrap();
    open_account(&mut c, "acct_p", usd(1_000), EntryKind::Grant, 1).unwrap();
    let hold = place_hold(&mut c, "acct_p", usd(1_000), 60_000, None, 2).unwrap();
    capture_usage(&mut c, "acct_p", &hold, usd(5_000), true, 3).unwrap();
    assert_eq!(
        credit(&mut c, "acct_p", usd(1_500), EntryKind::Grant, None, 4).unwrap(),
        usd(0)
    );
    let a = balance(&mut c, "acct_p").unwrap();
    assert_eq!((a.balance_micros, a.owed_micros), (0, 2_500));
    assert_invariants(&mut c, "acct_p");
}

/// A stream cut short is billed from estimates only as far as its hold; a hold that
/// expired under a very long call is settled from the balance, and owed beyond it.
#[test]
fn estimates_stay_within_the_hold_and_an_expired_hold_is_billed_from_the_balance() {
    use aibank_ledger::capture_usage;
    let (pool, _db) = pool();
    let mut c = pool.get().unwrap();
    open_account(&mut c, "acct_e", usd(10_000), EntryKind::Grant, 1).unwrap();
    let cut = place_hold(&mut c, "acct_e", usd(2_000), 60_000, None, 2).unwrap();
    let got = capture_usage(&mut c, "acct_e", &cut, usd(3_000), false, 3).unwrap();
    assert_eq!(
        (got.charged, got.balance, got.owed),
        (usd(2_000), usd(8_000), usd(0))
    );

    let long = place_hold(&mut c, "acct_e", usd(1_000), 10, None, 4).unwrap();
    assert_eq!(expire_due(&mut c, 100, 10).unwrap(), 1);
    let got = capture_usage(&mut c, "acct_e", &long, usd(9_000), true, 200).unwrap();
    assert_eq!(
        (got.charged, got.balance, got.owed),
        (usd(9_000), usd(0), usd(1_000))
    );
    let a = balance(&mut c, "acct_e").unwrap();
    assert_eq!(
        (a.balance_micros, a.owed_micros, a.total_spent_micros),
        (0, 1_000, 11_000)
    );
    assert_invariants(&mut c, "acct_e");
}

/// Everything the ledger wrote for `account`, in order: the journal, the account row, its
/// spend buckets, its holds and its usage rows (ids, which are random, left out).
fn ledger_rows(c: &mut AnyConnection, account: &str) -> Vec<String> {
    use aibank_store::schema::{journal_entries as j, spend_buckets as b, usage_events as u};
    let mut out: Vec<String> = j::table
        .filter(j::account_id.eq(account))
        .order(j::id.asc())
        .select((
            j::kind,
            j::delta_micros,
            j::balance_after_micros,
            j::created_at,
        ))
        .load::<(String, i64, i64, i64)>(c)
        .unwrap()
        .into_iter()
        .map(|r| format!("journal {r:?}"))
        .collect();
    let a = balance(c, account).unwrap();
    out.push(format!(
        "account {} {} {} {}",
        a.balance_micros, a.held_micros, a.owed_micros, a.total_spent_micros
    ));
    out.extend(
        b::table
            .filter(b::account_id.eq(account))
            .order(b::bucket_start.asc())
            .select((b::bucket_start, b::amount_micros))
            .load::<(i64, i64)>(c)
            .unwrap()
            .into_iter()
            .map(|r| format!("bucket {r:?}")),
    );
    out.extend(
        holds::table
            .filter(holds::account_id.eq(account))
            .order(holds::created_at.asc())
            .select((
                holds::amount_micros,
                holds::captured_micros,
                holds::status,
                holds::expires_at,
                holds::settled_at,
            ))
            .load::<(i64, Option<i64>, String, i64, Option<i64>)>(c)
            .unwrap()
            .into_iter()
            .map(|r| format!("hold {r:?}")),
    );
    out.extend(
        u::table
            .filter(u::agent_id.eq(account))
            .order(u::created_at.asc())
            .select((u::cost_micros, u::owed_micros, u::model, u::input_tokens))
            .load::<(i64, i64, String, i64)>(c)
            .unwrap()
            .into_iter()
            .map(|r| format!("usage {r:?}")),
    );
    out
}

/// One seeded run of gateway-style calls (a hold, then a capture of a cost that may pass
/// the hold, with its usage row) and grants, on an agent with limits and a fleet limit:
/// what each step answered, then everything it wrote. `at_once`: take the one-statement
/// steps first, as the gateway does.
fn gateway_run(c: &mut AnyConnection, at_once: bool) -> (Vec<String>, [usize; 2]) {
    use aibank_ledger::{capture_usage, capture_usage_at_once, place_hold_at_once};
    use aibank_ledger::{record_usage, CaptureWith, UsageMeta};
    platform(c, "plt_q", Some(3_000_000));
    agent_of(c, "plt_q", "agt_q", 2_500_000, usd(1_500_000));
    agent_of(c, "plt_q", "agt_q2", 10_000_000, usd(900_000));
    let mut rng = StdRng::seed_from_u64(0xA1BA_4C01);
    let mut said = Vec::new();
    // Holds and captures the one-statement steps made.
    let mut in_one = [0, 0];
    for step in 0..160_i64 {
        let now = 1_000 + step * 400_000;
        let account = if rng.random_range(0..3) == 0 {
            "agt_q2"
        } else {
            "agt_q"
        };
        if rng.random_range(0..12) == 0 {
            credit(
                c,
                account,
                usd(rng.random_range(1..400_000)),
                EntryKind::Grant,
                None,
                now,
            )
            .unwrap();
            said.push("granted".to_owned());
            continue;
        }
        let amount = usd(rng.random_range(1..200_000));
        let placed = if at_once {
            place_hold_at_once(c, account, amount, 60_000, None, now, None).unwrap()
        } else {
            None
        };
        in_one[0] += usize::from(placed.is_some());
        let hold = match placed {
            Some((h, _)) => Ok(h),
            None => place_hold(c, account, amount, 60_000, None, now),
        };
        let hold = match hold {
            Ok(h) => h,
            Err(e) => {
                said.push(format!("refused: {e}"));
                continue;
            }
        };
        said.push(format!("held, balance {}", hold.balance));
        let cost = usd(rng.random_range(0..=hold.amount.micros() * 3 / 2));
        let meta = UsageMeta {
            provider: "p".into(),
            model: format!("m{step}"),
            input_tokens: step,
            ..UsageMeta::default()
        };
        let later = now + 1;
        let id = format!("use_{step}");
        let with = CaptureWith {
            usage: Some((&id, account, &meta)),
            ..CaptureWith::NOTHING
        };
        let got = if at_once {
            capture_usage_at_once(c, &hold, cost, true, later, &with).unwrap()
        } else {
            None
        };
        in_one[1] += usize::from(got.is_some());
        let got = got.unwrap_or_else(|| {
            let g = capture_usage(c, account, &hold, cost, true, later).unwrap();
            record_usage(c, account, g.charged, g.owed, &meta, later).unwrap();
            g
        });
        said.push(format!("captured {got:?}"));
    }
    for a in ["agt_q", "agt_q2"] {
        assert_account_consistent(c, a);
        said.extend(ledger_rows(c, a));
    }
    (said, in_one)
}

/// PostgreSQL's one-statement steps (the gateway's hold and capture) answer and write
/// exactly what the Rust steps do on SQLite, refusals, debts and limits included.
#[test]
fn one_statement_steps_write_what_the_rust_steps_write() {
    let (pool, db) = pool();
    if db.backend != aibank_store::Backend::Postgres {
        eprintln!("one_statement_steps_write_what_the_rust_steps_write: PostgreSQL only");
        return;
    }
    let lite_db = TestDb::sqlite();
    let lite = DbPool::connect(&lite_db.url, &pool_options()).unwrap();
    lite.migrate().unwrap();
    let (on_pg, in_one) = gateway_run(&mut pool.get().unwrap(), true);
    let (on_sqlite, _) = gateway_run(&mut lite.get().unwrap(), false);
    assert!(on_pg.iter().any(|s| s.starts_with("refused")), "{on_pg:#?}");
    assert!(in_one[0] > 20 && in_one[1] > 20, "{in_one:?}");
    assert_eq!(on_pg, on_sqlite);
}

/// On PostgreSQL the spend sums a hold checks its limits against are planned once per
/// connection (generic plans; planned afresh they cost more than the reads), and those plans
/// read a busy agent's journal and buckets by index, not by scanning them.
#[test]
fn spend_sums_use_one_plan_that_reads_by_index() {
    use diesel::sql_types::{BigInt, Nullable, Text};
    #[derive(QueryableByName)]
    struct Config {
        #[diesel(sql_type = Nullable<Text>)]
        config: Option<String>,
    }
    #[derive(QueryableByName, Debug)]
    struct Used {
        #[diesel(sql_type = BigInt)]
        d: i64,
        #[diesel(sql_type = BigInt)]
        m: i64,
    }
    #[derive(QueryableByName, Debug)]
    struct Scans {
        #[diesel(sql_type = Text)]
        relname: String,
        #[diesel(sql_type = BigInt)]
        seq_scan: i64,
        #[diesel(sql_type = BigInt)]
        idx_scan: i64,
    }
    let (pool, db) = pool();
    if db.backend != aibank_store::Backend::Postgres {
        eprintln!("spend_sums_use_one_plan_that_reads_by_index: PostgreSQL only");
        return;
    }
    let mut c = pool.get().unwrap();
    let config = diesel::sql_query(
        "SELECT array_to_string(proconfig, ',') AS config FROM pg_proc WHERE proname = 'aibank_used'",
    )
    .get_result::<Config>(&mut c)
    .unwrap();
    assert_eq!(
        config.config.as_deref(),
        Some("plan_cache_mode=force_generic_plan")
    );

    // Ninety days of agents' charges and holds every five minutes, and their hourly
    // buckets, with the statistics gathered: a table scan is now the worst plan there is.
    let now = 100 * 86_400_000_i64;
    for a in 0..30 {
        let a = if a == 0 {
            "agt_g".into()
        } else {
            format!("agt_{a}")
        };
        open_account(&mut c, &a, usd(1_000_000), EntryKind::SignupGrant, 1).unwrap();
    }
    diesel::sql_query(format!(
        "INSERT INTO journal_entries (account_id, delta_micros, balance_after_micros, kind, \
         reference, created_at) SELECT a, -1, 0, k, NULL, {now} - g::bigint * 300000 \
         FROM generate_series(1, 25920) g, (VALUES ('agt_g'), ('agt_1')) AS a(a), \
         (VALUES ('charge'), ('hold')) AS k(k)"
    ))
    .execute(&mut c)
    .unwrap();
    diesel::sql_query(format!(
        "INSERT INTO spend_buckets (account_id, bucket_start, amount_micros) \
         SELECT a.id, {now} - g::bigint * 3600000, 12 FROM generate_series(1, 2160) g, \
         accounts a"
    ))
    .execute(&mut c)
    .unwrap();
    diesel::sql_query("ANALYZE journal_entries, spend_buckets")
        .execute(&mut c)
        .unwrap();

    // More calls than the plan cache's five custom plans, in one transaction, whose own
    // scan counts pg_stat_xact_user_tables shows.
    diesel::sql_query("BEGIN").execute(&mut c).unwrap();
    for _ in 0..8 {
        let used = diesel::sql_query(format!(
            "SELECT d, m FROM aibank_used(ARRAY['agt_g'], {now} + 1800000)"
        ))
        .get_result::<Used>(&mut c)
        .unwrap();
        // Half an hour into the hour: each window is its whole buckets after the edge
        // bucket (23 of a day, 719 of a month, at 12 each) and the edge bucket's charges
        // inside the window (five, at 1 each); holds are not spending.
        assert_eq!((used.d, used.m), (23 * 12 + 5, 719 * 12 + 5), "{used:?}");
    }
    let scans = diesel::sql_query(
        "SELECT relname::text AS relname, seq_scan, COALESCE(idx_scan, 0) AS idx_scan \
         FROM pg_stat_xact_user_tables \
         WHERE relname IN ('journal_entries', 'spend_buckets') ORDER BY relname",
    )
    .load::<Scans>(&mut c)
    .unwrap();
    diesel::sql_query("ROLLBACK").execute(&mut c).unwrap();
    let tables: Vec<&str> = scans.iter().map(|s| s.relname.as_str()).collect();
    assert_eq!(tables, ["journal_entries", "spend_buckets"]);
    for s in &scans {
        assert!(s.seq_scan == 0 && s.idx_scan >= 8, "{s:?}");
    }
}

/// One agent's concurrent holds and captures as the gateway makes them: on PostgreSQL
/// those that queue run as one statement per batch (each a call of `aibank_hold` or
/// `aibank_capture`). The limit admits exactly as many holds as it allows, each refusal
/// names it, and the account ends exactly as its journal says.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_agents_batched_holds_and_captures_stay_exact() {
    use aibank_ledger::{
        capture_usage, capture_usage_at_once, capture_usage_call, place_hold_at_once,
        place_hold_call, CaptureWith, HoldReceipt,
    };
    use aibank_store::Combine;
    let (pool, db) = pool();
    {
        let mut c = pool.get().unwrap();
        platform(&mut c, "plt_b", None);
        // Credit for 100 holds of 100; the limit allows 80.
        agent_of(&mut c, "plt_b", "agt_b", 8_000, usd(10_000));
    }
    let combine = |early| Combine {
        key: "agt_b",
        early,
    };
    let holds: Vec<_> = (0..120)
        .map(|i| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let now = 10 + i;
                let call = place_hold_call("agt_b", usd(100), 60_000, None, now, None);
                let at_once = move |c: &mut AnyConnection| {
                    place_hold_at_once(c, "agt_b", usd(100), 60_000, None, now, None)
                };
                let general = move |c: &mut AnyConnection| {
                    place_hold(c, "agt_b", usd(100), 60_000, None, now).map(|h| (h, None))
                };
                pool.write_at_once(false, combine(true), Some(call), at_once, general)
                    .await
            })
        })
        .collect();
    let mut placed: Vec<HoldReceipt> = Vec::new();
    for h in holds {
        match h.await.unwrap() {
            Ok((hold, minute)) => {
                assert_eq!((hold.amount, minute), (usd(100), None));
                placed.push(hold);
            }
            Err(e) => assert!(matches!(e, LedgerError::LimitExceeded(_)), "{e:?}"),
        }
    }
    assert_eq!(placed.len(), 80);
    let captures: Vec<_> = placed
        .into_iter()
        .map(|hold| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let with = CaptureWith::NOTHING;
                let call = capture_usage_call(&hold, usd(50), true, 500, &with).unwrap();
                let h = hold.clone();
                let at_once = move |c: &mut AnyConnection| {
                    capture_usage_at_once(c, &h, usd(50), true, 500, &CaptureWith::NOTHING)
                };
                let general = move |c: &mut AnyConnection| {
                    capture_usage(c, "agt_b", &hold, usd(50), true, 500)
                };
                pool.write_at_once(true, combine(false), Some(call), at_once, general)
                    .await
            })
        })
        .collect();
    for h in captures {
        let got = h.await.unwrap().unwrap();
        assert_eq!((got.charged, got.owed), (usd(50), usd(0)));
    }
    let mut c = pool.get().unwrap();
    let a = balance(&mut c, "agt_b").unwrap();
    assert_eq!((a.balance_micros, a.held_micros), (10_000 - 80 * 50, 0));
    assert_invariants(&mut c, "agt_b");
    let usage = pool.usage();
    if db.backend == aibank_store::Backend::Postgres {
        assert!(usage.combined_writes > usage.combined_batches, "{usage:?}");
    }
}
