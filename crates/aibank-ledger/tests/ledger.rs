//! Ledger operations on a real database (SQLite, or PostgreSQL with
//! `AIBANK_TEST_DATABASE_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use aibank_core::Usd;
use aibank_ledger::{balance, credit, debit, journal_sum, open_account, EntryKind, LedgerError};
use aibank_store::DbPool;
use aibank_testkit::{pool_options, TestDb};

fn pool() -> (DbPool, TestDb) {
    let db = TestDb::fresh();
    let pool = DbPool::connect(&db.url, &pool_options()).unwrap();
    pool.migrate().unwrap();
    (pool, db)
}

fn usd(micros: i64) -> Usd {
    Usd::from_micros(micros)
}

#[test]
fn credits_and_debits_are_journaled_and_exact() {
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
    assert_eq!(
        debit(&mut c, "acct_a", usd(1_099_999), EntryKind::Charge, None, 3).unwrap(),
        usd(1)
    );
    let acct = balance(&mut c, "acct_a").unwrap();
    assert_eq!(
        (acct.balance_micros, acct.total_spent_micros),
        (1, 1_099_999)
    );
    assert_eq!(journal_sum(&mut c, "acct_a").unwrap(), 1);
}

#[test]
fn a_debit_beyond_the_balance_moves_nothing() {
    let (pool, _db) = pool();
    let mut c = pool.get().unwrap();
    open_account(&mut c, "acct_b", usd(500), EntryKind::SignupGrant, 1).unwrap();
    let err = debit(&mut c, "acct_b", usd(501), EntryKind::Charge, None, 2).unwrap_err();
    assert!(matches!(
        err,
        LedgerError::InsufficientCredits { balance, required } if balance == usd(500) && required == usd(501)
    ));
    assert_eq!(balance(&mut c, "acct_b").unwrap().balance_micros, 500);
    assert_eq!(journal_sum(&mut c, "acct_b").unwrap(), 500);
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
        debit(&mut c, "acct_c", usd(-1), EntryKind::Charge, None, 2),
        Err(LedgerError::NonPositiveAmount)
    ));
    assert!(matches!(
        credit(&mut c, "nope", usd(1), EntryKind::Grant, None, 2),
        Err(LedgerError::AccountNotFound)
    ));
    assert!(matches!(
        credit(&mut c, "acct_c", usd(i64::MAX), EntryKind::Grant, None, 2).and_then(|_| credit(
            &mut c,
            "acct_c",
            usd(1),
            EntryKind::Grant,
            None,
            2
        )),
        Err(LedgerError::Overflow)
    ));
    assert_eq!(journal_sum(&mut c, "acct_c").unwrap(), i64::MAX);
}

/// Many concurrent debits against one balance: exactly as many succeed as the balance
/// covers, and the balance never goes below zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_debits_never_overdraw() {
    let (pool, _db) = tokio::task::spawn_blocking(pool).await.unwrap();
    let pool = Arc::new(pool);
    pool.run(|c| open_account(c, "acct_d", usd(10_000_000), EntryKind::SignupGrant, 1))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.run(
                    |c| match debit(c, "acct_d", usd(200_000), EntryKind::Charge, None, 2) {
                        Ok(_) => Ok(true),
                        Err(LedgerError::InsufficientCredits { .. }) => Ok(false),
                        Err(e) => Err(e),
                    },
                )
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
    let (bal, sum) = pool
        .run(|c| Ok::<_, LedgerError>((balance(c, "acct_d")?, journal_sum(c, "acct_d")?)))
        .await
        .unwrap();
    assert_eq!((bal.balance_micros, sum), (0, 0));
}
