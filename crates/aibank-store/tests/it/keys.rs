//! Key queries whose correctness depends on concurrency, on a real database (SQLite, or
//! PostgreSQL with `AIBANK_TEST_DATABASE_URL`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::Duration;

use aibank_store::models::{Agent, ApiKey};
use aibank_store::repo::{agents, keys};
use aibank_store::DbPool;
use aibank_testkit::{pool_options, TestDb};

fn key(id: &str, agent_id: &str) -> ApiKey {
    ApiKey::new(
        id.into(),
        agent_id.into(),
        "agent",
        String::new(),
        "abcd".into(),
        1,
    )
}

fn setup() -> (DbPool, TestDb) {
    let db = TestDb::fresh();
    let pool = DbPool::connect(&db.url, &pool_options()).unwrap();
    pool.migrate().unwrap();
    let mut c = pool.get().unwrap();
    agents::insert(
        &mut c,
        &Agent::new("agt_1".into(), None, "agent", "a".into(), None, 1),
    )
    .unwrap();
    keys::insert_api_key(&mut c, &key("k0", "agt_1")).unwrap();
    (pool, db)
}

/// A second capped insert that starts while the first one's transaction is still open
/// must count the first one's key: it waits for the agent's lock instead of counting the
/// committed state.
#[test]
fn capped_inserts_of_one_agent_never_overshoot_the_cap() {
    let (pool, _db) = setup();
    let (inserted, go) = mpsc::channel();
    let first = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let mut c = pool.get().unwrap();
            c.write_tx(|c| {
                assert!(keys::insert_api_key_capped(c, &key("k1", "agt_1"), 2)?);
                inserted.send(()).unwrap();
                // Hold the transaction open while the second insert runs.
                std::thread::sleep(Duration::from_millis(300));
                Ok::<_, diesel::result::Error>(())
            })
            .unwrap();
        })
    };
    go.recv().unwrap();
    let mut c = pool.get().unwrap();
    let second = c
        .write_tx(|c| keys::insert_api_key_capped(c, &key("k2", "agt_1"), 2))
        .unwrap();
    first.join().unwrap();
    assert!(!second, "the cap of 2 was overshot");
    assert_eq!(keys::count_active_keys(&mut c, "agt_1").unwrap(), 2);
}

#[test]
fn the_message_window_starts_at_the_first_call_and_admits_at_most_the_limit() {
    let (pool, _db) = setup();
    let mut c = pool.get().unwrap();
    let mut admit = |now| {
        c.write_tx(|c| keys::admit_message(c, "k0", 2, 1000, now))
            .unwrap()
    };
    let w = admit(5000);
    assert_eq!((w.admitted, w.used, w.window_start), (true, 1, 5000));
    assert!(admit(5999).admitted);
    let w = admit(5999);
    assert_eq!((w.admitted, w.used, w.window_start), (false, 2, 5000));
    let w = admit(6000);
    assert_eq!((w.admitted, w.used, w.window_start), (true, 1, 6000));
}
