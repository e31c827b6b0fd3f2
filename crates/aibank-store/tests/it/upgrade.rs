//! Upgrading a database an older release left, with data in it: the later migrations keep
//! every row and give old rows the documented defaults (SQLite, or PostgreSQL with
//! `AIBANK_TEST_DATABASE_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aibank_store::repo::keys;
use aibank_store::DbPool;
use aibank_testkit::{pool_options, TestDb};
use diesel::connection::SimpleConnection as _;

#[test]
fn keys_and_agents_from_before_key_security_keep_working_with_defaults() {
    let db = TestDb::fresh();
    let pool = DbPool::connect(&db.url, &pool_options()).unwrap();
    // The schema of the release before key security: backbone, ledger, provider keys.
    assert_eq!(pool.migrate_first(3).unwrap().len(), 3);
    let mut c = pool.get().unwrap();
    c.batch_execute(
        "INSERT INTO agents (id, platform_id, kind, name, email, active, per_tx_limit_micros,
             daily_limit_micros, weekly_limit_micros, monthly_limit_micros, created_at, updated_at)
         VALUES ('agt_old', NULL, 'agent', 'old', NULL, TRUE, 1, 2, 3, 4, 10, 10);
         INSERT INTO api_keys (id, agent_id, kind, secret_hash, last4, status, created_at)
         VALUES ('oldkey0000000000', 'agt_old', 'agent', 'phc', 'abcd', 'active', 10);",
    )
    .unwrap();
    drop(c);

    let applied = pool.migrate().unwrap();
    assert!(applied.len() >= 2, "{applied:?}");
    let mut c = pool.get().unwrap();
    let (key, agent) = keys::find_api_key(&mut c, "oldkey0000000000")
        .unwrap()
        .expect("the old key survives");
    assert_eq!(
        (
            key.secret_hash.as_str(),
            key.status.as_str(),
            key.last4.as_str()
        ),
        ("phc", "active", "abcd")
    );
    assert!(!key.read_only && key.gateway_enabled && key.wallets_enabled && key.trading_enabled);
    assert_eq!(
        (key.allowed_ips.as_str(), key.public_key_pem.as_deref()),
        ("", None)
    );
    assert_eq!(key.name, None);
    assert_eq!((agent.name.as_str(), agent.daily_limit_micros), ("old", 2));
    assert!(!agent.read_only && agent.gateway_enabled && agent.keys_paused_at.is_none());
    assert_eq!(agent.daily_message_limit, None);
    // Its message window starts at its first call after the upgrade.
    let w = c
        .write_tx(|c| keys::admit_message(c, "oldkey0000000000", 2, 1000, 5000))
        .unwrap();
    assert_eq!((w.admitted, w.used, w.window_start), (true, 1, 5000));
}

#[test]
fn spending_before_the_hourly_buckets_is_carried_into_them() {
    use aibank_store::schema::spend_buckets as b;
    use diesel::prelude::*;
    let db = TestDb::fresh();
    let pool = DbPool::connect(&db.url, &pool_options()).unwrap();
    // The schema before spend buckets.
    assert_eq!(pool.migrate_first(6).unwrap().len(), 6);
    let mut c = pool.get().unwrap();
    // Two charges and a capture in hour 1, a capture in hour 2; holds, releases and
    // grants are not spending.
    c.batch_execute(
        "INSERT INTO accounts (id, balance_micros, total_spent_micros, created_at, updated_at)
         VALUES ('acct_old', 0, 0, 0, 0);
         INSERT INTO journal_entries (account_id, delta_micros, balance_after_micros, kind, created_at) VALUES
         ('acct_old', 1000000, 1000000, 'grant', 3600000),
         ('acct_old', -10, 0, 'charge', 3600000),
         ('acct_old', -20, 0, 'charge', 7199999),
         ('acct_old', -500, 0, 'hold', 7000000),
         ('acct_old', 500, 0, 'release', 7000001),
         ('acct_old', -30, 0, 'capture', 7000001),
         ('acct_old', -40, 0, 'capture', 7200000);",
    )
    .unwrap();
    drop(c);
    pool.migrate().unwrap();
    let mut c = pool.get().unwrap();
    let rows: Vec<(String, i64, i64)> = b::table
        .select((b::account_id, b::bucket_start, b::amount_micros))
        .order(b::bucket_start)
        .load(&mut c)
        .unwrap();
    assert_eq!(
        rows,
        vec![
            ("acct_old".to_owned(), 3_600_000, 60),
            ("acct_old".to_owned(), 7_200_000, 40)
        ]
    );
}
