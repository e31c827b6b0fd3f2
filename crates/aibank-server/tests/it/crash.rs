//! Kill the server (SIGKILL) in the middle of a load of charges, restart it, and check that
//! no money was lost or doubled: every account's journal sums to its balance, held equals
//! its open holds, and every charge a client saw acknowledged is in the database.
// A crash scenario reads best as one story.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{
    assert_books_balance, pool_options, random_master_key, ServerProcess, TestDb, TEST_SECRET_KEY,
};
use aibank_store::schema::journal_entries;
use aibank_store::DbPool;
use diesel::prelude::*;
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_aibank");

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_load_loses_and_doubles_nothing() {
    let db = tokio::task::spawn_blocking(TestDb::fresh).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mk = random_master_key();
    let env = [
        ("AIBANK_DATABASE_URL", db.url.as_str()),
        ("AIBANK_BOOTSTRAP_MASTER_KEY", mk.as_str()),
        ("AIBANK_SECRET_KEY", TEST_SECRET_KEY),
        // The load comes from one address, far over the per-IP default.
        ("AIBANK_RATE_LIMIT_PER_MINUTE", "0"),
    ];
    let (bin_dir, bin_env) = (
        dir.path().to_owned(),
        env.map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let start = move || {
        let env: Vec<(&str, &str)> = bin_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        ServerProcess::start(BIN, &bin_dir, &env)
    };
    let mut server = tokio::task::spawn_blocking(start.clone()).await.unwrap();
    let client = reqwest::Client::new();

    let mut agents = Vec::new();
    for i in 0..4 {
        let r: Value = client
            .post(format!("{}/v1/platform/agents", server.base))
            .header("X-Master-Key", &mk)
            .json(&json!({"name": format!("crash-{i}"), "credits_usd": 100}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        agents.push(r["agentId"].as_str().unwrap().to_owned());
    }

    // Load: 16 clients charging as fast as they can; remember every acknowledged charge.
    let acknowledged = Arc::new(Mutex::new(HashSet::new()));
    let load: Vec<_> = (0..16)
        .map(|n| {
            let (client, base, mk, agents, acked) = (
                client.clone(),
                server.base.clone(),
                mk.clone(),
                agents.clone(),
                acknowledged.clone(),
            );
            tokio::spawn(async move {
                for i in 0.. {
                    let agent = &agents[(n + i) % agents.len()];
                    let res = client
                        .post(format!("{base}/v1/platform/agents/{agent}/charges"))
                        .header("X-Master-Key", &mk)
                        .json(&json!({"amount_usd": 0.01}))
                        .send()
                        .await;
                    let Ok(res) = res else { break };
                    if res.status().as_u16() == 201 {
                        let Ok(body) = res.json::<Value>().await else {
                            break;
                        };
                        acked
                            .lock()
                            .unwrap()
                            .insert(body["id"].as_str().unwrap().to_owned());
                    }
                }
            })
        })
        .collect();
    // Kill once the load is well under way.
    for _ in 0..200 {
        if acknowledged.lock().unwrap().len() >= 150 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = server.signal_and_wait("KILL");
        drop(server);
        s
    })
    .await
    .unwrap();
    assert!(
        status.is_some_and(|s| !s.success()),
        "killed, not exited: {status:?}"
    );
    for t in load {
        t.await.unwrap();
    }
    let acked: HashSet<String> = acknowledged.lock().unwrap().clone();
    assert!(acked.len() >= 150, "the load ran: {}", acked.len());

    // Restart on the same database: it comes up and serves.
    server = tokio::task::spawn_blocking(start).await.unwrap();
    let health = client
        .get(format!("{}/v1/health", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);

    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let pool = DbPool::connect(&url, &pool_options()).unwrap();
        assert!(assert_books_balance(&pool) >= 4);
        let stored = charge_references(&pool);
        let lost: Vec<_> = acked.difference(&stored).collect();
        assert!(
            lost.is_empty(),
            "acknowledged charges missing after the crash: {lost:?}"
        );
    })
    .await
    .unwrap();
    drop(server);
}

fn charge_references(pool: &DbPool) -> HashSet<String> {
    let mut c = pool.get().unwrap();
    journal_entries::table
        .filter(journal_entries::kind.eq("charge"))
        .select(journal_entries::reference)
        .load::<Option<String>>(&mut c)
        .unwrap()
        .into_iter()
        .flatten()
        .collect()
}
