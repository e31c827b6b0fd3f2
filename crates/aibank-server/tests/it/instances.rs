//! Two `aibank` processes over one PostgreSQL database, loaded at once, as deployments that
//! outgrow one machine run it: one agent's money is spent through both — platform charges
//! and metered gateway calls — until it runs out. Nothing is overspent (the balance never
//! goes below zero, nothing is left owed or held), no acknowledged spend is missing, and
//! every answered call has its usage row: the account's spend is exactly what the clients
//! were told they spent.
//!
//! PostgreSQL only (SQLite is one process's database); skipped with a note on SQLite.

use std::sync::{Arc, Mutex};

use aibank_store::schema::{accounts, usage_events};
use aibank_store::{Backend, DbPool};
use diesel::prelude::*;
use serde_json::{json, Value};

use crate::support::mock_upstream::MockUpstream;
use crate::support::{
    assert_books_balance, pool_options, random_master_key, ServerProcess, TestDb, TEST_SECRET_KEY,
};

const BIN: &str = env!("CARGO_BIN_EXE_aibank");
const CALLS: usize = 400;
const CREDITS_MICROS: i64 = 1_000_000;

/// What the clients saw: spends acknowledged (cost in micro-USD, from the answer) by kind.
#[derive(Default)]
struct Seen {
    charges: Vec<i64>,
    calls: Vec<i64>,
    refused: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_over_one_database_spend_exactly_what_they_answered() {
    let db = tokio::task::spawn_blocking(TestDb::fresh).await.unwrap();
    if db.backend != Backend::Postgres {
        eprintln!("note: two instances share PostgreSQL only; skipped on SQLite");
        return;
    }
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mk = random_master_key();
    let env: Vec<(String, String)> = [
        ("AIBANK_DATABASE_URL", db.url.as_str()),
        ("AIBANK_BOOTSTRAP_MASTER_KEY", mk.as_str()),
        ("AIBANK_SECRET_KEY", TEST_SECRET_KEY),
        ("AIBANK_RATE_LIMIT_PER_MINUTE", "0"),
        // The money, not the message count, is what runs out.
        ("AIBANK_DAILY_MESSAGE_LIMIT", "0"),
        ("ANTHROPIC_BASE_URL", mock.base.as_str()),
        ("ANTHROPIC_API_KEY", "sk-ant-platform"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    let start = |env: Vec<(String, String)>, dir: std::path::PathBuf| {
        tokio::task::spawn_blocking(move || {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            ServerProcess::start(BIN, &dir, &env)
        })
    };
    // One after the other: the second finds the migrations and the bootstrap key done.
    let a = start(env.clone(), dir.path().to_owned()).await.unwrap();
    let b = start(env, dir.path().to_owned()).await.unwrap();
    let bases = [a.base.clone(), b.base.clone()];

    let client = reqwest::Client::new();
    let created: Value = client
        .post(format!("{}/v1/platform/agents", bases[0]))
        .header("X-Master-Key", &mk)
        .json(&json!({"name": "shared", "credits_usd": 1, "per_tx_limit_usd": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let agent = created["agentId"].as_str().unwrap().to_owned();
    let key = created["apiKey"].as_str().unwrap().to_owned();

    let seen = Arc::new(Mutex::new(Seen::default()));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let load: Vec<_> = (0..32)
        .map(|_| {
            let (client, bases, mk, key, agent, seen, next) = (
                client.clone(),
                bases.clone(),
                mk.clone(),
                key.clone(),
                agent.clone(),
                seen.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= CALLS {
                        break;
                    }
                    // Alternate instances, and charges with gateway calls.
                    let base = &bases[i % 2];
                    let charge = (i / 2) % 2 == 0;
                    let res = if charge {
                        client
                            .post(format!("{base}/v1/platform/agents/{agent}/charges"))
                            .header("X-Master-Key", &mk)
                            .json(&json!({"amount_usd": 0.01}))
                    } else {
                        client
                            .post(format!("{base}/v1/gateway/anthropic/v1/messages"))
                            .header("X-API-Key", &key)
                            .json(
                                &json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 50,
                                "messages": [{"role": "user", "content": "Hello"}]}),
                            )
                    }
                    .send()
                    .await
                    .unwrap();
                    let status = res.status().as_u16();
                    let cost = res.headers().get("x-aibank-cost-usd").map(|v| {
                        v.to_str()
                            .unwrap()
                            .parse::<rust_decimal::Decimal>()
                            .unwrap()
                    });
                    let body = res.text().await.unwrap();
                    let mut s = seen.lock().unwrap();
                    match (charge, status) {
                        (true, 201) => s.charges.push(10_000),
                        (false, 200) => {
                            let usd = cost.expect("a served call says its cost");
                            let micros = (usd * rust_decimal::Decimal::from(1_000_000))
                                .try_into()
                                .unwrap();
                            s.calls.push(micros);
                        }
                        (_, 402) => s.refused += 1,
                        other => panic!("unexpected answer {other:?}: {body}"),
                    }
                }
            })
        })
        .collect();
    for t in load {
        t.await.unwrap();
    }
    let (charges, calls, refused) = {
        let s = seen.lock().unwrap();
        (s.charges.clone(), s.calls.clone(), s.refused)
    };
    eprintln!(
        "two instances: {} charges and {} gateway calls served, {refused} refused",
        charges.len(),
        calls.len()
    );
    assert_eq!(charges.len() + calls.len() + refused, CALLS);
    // The money ran out part-way: both kinds were served and refused.
    assert!(refused > 0, "the load never exhausted the balance");
    assert!(
        !charges.is_empty() && !calls.is_empty(),
        "{} charges, {} calls",
        charges.len(),
        calls.len()
    );
    let answered: i64 = charges.iter().chain(&calls).sum();

    let url = db.url.clone();
    tokio::task::spawn_blocking(move || {
        let pool = DbPool::connect(&url, &pool_options()).unwrap();
        assert!(assert_books_balance(&pool) >= 1);
        let mut c = pool.get().unwrap();
        let (balance, held, owed, spent): (i64, i64, i64, i64) = accounts::table
            .find(&agent)
            .select((
                accounts::balance_micros,
                accounts::held_micros,
                accounts::owed_micros,
                accounts::total_spent_micros,
            ))
            .first(&mut c)
            .unwrap();
        assert!(balance >= 0, "overspent: {balance}");
        assert_eq!(
            (held, owed),
            (0, 0),
            "nothing held or owed once all settled"
        );
        assert_eq!(
            CREDITS_MICROS - balance,
            answered,
            "spent what was answered"
        );
        assert_eq!(spent, answered);
        let rows: Vec<(String, i64)> = usage_events::table
            .filter(usage_events::agent_id.eq(&agent))
            .select((usage_events::provider, usage_events::cost_micros))
            .load(&mut c)
            .unwrap();
        let count = |p: &str| rows.iter().filter(|(q, _)| q == p).count();
        assert_eq!(
            count("anthropic"),
            calls.len(),
            "a usage row per served call"
        );
        assert_eq!(rows.len(), charges.len() + calls.len(), "{rows:?}");
        assert_eq!(rows.iter().map(|(_, c)| c).sum::<i64>(), answered);
    })
    .await
    .unwrap();
    drop((a, b));
}
