//! Money over HTTP: charges, spending limits, the fleet limit, idempotency, the hold
//! sweeper and usage reporting, against the real server on both backends.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unreadable_literal,
    clippy::too_many_lines
)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::{master, Agent};
use crate::support::{spawn_app, spawn_app_with_clock, Resp, TestApp};
use aibank_core::clock::rfc3339;
use aibank_core::{ManualClock, Usd};
use serde_json::{json, Value};

const T0: i64 = 1_800_000_000_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

async fn charge(app: &TestApp, agent: &str, amount: Value, key: Option<&str>) -> Resp {
    let mut headers = vec![("X-Master-Key", app.master_key.as_str())];
    if let Some(k) = key {
        headers.push(("Idempotency-Key", k));
    }
    app.post(
        &format!("/v1/platform/agents/{agent}/charges"),
        json!({"amount_usd": amount}),
        &headers,
    )
    .await
}

/// `n` charges of `amount` to one agent, all sent at once; their statuses and bodies.
async fn concurrent_charges(
    app: &TestApp,
    agent: &str,
    n: usize,
    amount: Value,
    idempotency_key: Option<&str>,
) -> Vec<(u16, String)> {
    let url = format!("{}/v1/platform/agents/{agent}/charges", app.base);
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let mut req = app
                .client
                .post(&url)
                .header("X-Master-Key", &app.master_key)
                .json(&json!({"amount_usd": amount}));
            if let Some(k) = idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            tokio::spawn(async move {
                let r = req.send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn credits(agent: &Agent) -> Value {
    agent.get("/v1/balance").await.assert_status(200).body["credits_usd"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_two_cent_charges_against_ten_dollars() {
    let app = spawn_app().await;
    let agent = app
        .platform()
        .agent(json!({"name": "hammer", "credits_usd": 10}))
        .await;
    let id = agent.id.clone();
    let results = concurrent_charges(&app, &id, 1000, json!(0.02), None).await;
    let (mut ok, mut refused) = (0, 0);
    for (status, text) in results {
        let body: Value = serde_json::from_str(&text).unwrap();
        match status {
            201 => ok += 1,
            402 => {
                assert_eq!(body["code"], "INSUFFICIENT_CREDITS");
                refused += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, refused), (500, 500));
    assert_eq!(credits(&agent).await, json!(0.0));
    assert_eq!(
        app.ledger_state(&id).await,
        (0, 0),
        "journal sum equals balance, both zero"
    );
    let usage = app
        .get(
            &format!("/v1/platform/agents/{id}/usage?limit=1"),
            &master(&app.master_key),
        )
        .await;
    assert_eq!(
        usage.body["totals"],
        json!({"count": 500, "input_tokens": 0, "output_tokens": 0, "cost_usd": 10.0})
    );
}

#[tokio::test]
async fn charges_answer_with_the_new_balance_and_refuse_what_is_not_there() {
    let app = spawn_app().await;
    let agent = app
        .platform()
        .agent(json!({"name": "c", "credits_usd": 0.05}))
        .await;
    let id = agent.id.clone();
    let r = app
        .post(
            &format!("/v1/platform/agents/{id}/charges"),
            json!({"amount_usd": 0.01, "description": "crawl job 7"}),
            &master(&app.master_key),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert!(r.body["id"].as_str().unwrap().starts_with("chg_"));
    assert_eq!(r.body["agentId"], id.as_str());
    assert_eq!(r.body["amount_usd"], json!(0.01));
    assert_eq!(r.body["credits_usd"], json!(0.04));
    assert_eq!(credits(&agent).await, json!(0.04));

    let r = charge(&app, &id, json!(0.05), None).await;
    assert_eq!(r.status, 402);
    assert_eq!(
        r.text,
        r#"{"error":"Insufficient credits","code":"INSUFFICIENT_CREDITS","credits_usd":0.04,"required_usd":0.05}"#
    );
    for (body, field) in [
        (json!({"amount_usd": 0}), "amount_usd"),
        (json!({"amount_usd": "1e-7"}), "amount_usd"),
        (
            json!({"amount_usd": 0.01, "description": "x".repeat(501)}),
            "description",
        ),
        (json!({"amount": 0.01}), "amount"),
    ] {
        let r = app
            .post(
                &format!("/v1/platform/agents/{id}/charges"),
                body,
                &master(&app.master_key),
            )
            .await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (400, Some(field)),
            "{}",
            r.text
        );
    }
    assert_eq!(
        charge(&app, "agt_nope", json!(0.01), None).await.status,
        404
    );
    let other = app.new_platform_key().await;
    let r = app
        .post(
            &format!("/v1/platform/agents/{id}/charges"),
            json!({"amount_usd": 0.01}),
            &master(&other),
        )
        .await;
    assert_eq!(r.status, 404, "another platform cannot charge this agent");
    assert_eq!(app.ledger_state(&id).await, (40_000, 40_000));
}

#[tokio::test]
async fn per_tx_and_daily_limits_block_and_the_daily_window_rolls() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let Agent { id, .. } = app
        .platform()
        .agent(
            json!({"name": "l", "credits_usd": 10, "daily_limit_usd": 1, "per_tx_limit_usd": 0.5}),
        )
        .await;

    let r = charge(&app, &id, json!(0.6), None).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body,
        json!({"error": "Per-transaction limit exceeded: 0.6 requested, limit 0.5",
               "code": "PER_TX_LIMIT_EXCEEDED", "window": "per_tx", "scope": "agent",
               "limit_usd": 0.5, "used_usd": 0.0, "requested_usd": 0.6})
    );
    app.patch(
        &format!("/v1/platform/agents/{id}"),
        json!({"per_tx_limit_usd": 1}),
        &master(&app.master_key),
    )
    .await;

    assert_eq!(charge(&app, &id, json!(0.6), None).await.status, 201);
    clock.set(T0 + HOUR);
    assert_eq!(charge(&app, &id, json!(0.3), None).await.status, 201);
    let r = charge(&app, &id, json!(0.2), None).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body,
        json!({"error": "Daily spending limit exceeded: 0.9 of 1.0 used in the last 24 hours, 0.2 requested",
               "code": "DAILY_LIMIT_EXCEEDED", "window": "daily", "scope": "agent",
               "limit_usd": 1.0, "used_usd": 0.9, "requested_usd": 0.2,
               "resetAt": T0 + DAY, "reset_at": rfc3339(T0 + DAY)})
    );
    // The charge that fits still goes through.
    assert_eq!(charge(&app, &id, json!(0.1), None).await.status, 201);

    clock.set(T0 + DAY - 1);
    assert_eq!(
        charge(&app, &id, json!(0.2), None).await.status,
        403,
        "not yet rolled"
    );
    clock.set(T0 + DAY);
    let r = charge(&app, &id, json!(0.2), None).await;
    assert_eq!(
        r.status, 201,
        "the 0.6 from T0 has left the window: {}",
        r.text
    );
    // A spend above the limit itself never fits: no reset time.
    let r = charge(&app, &id, json!(1.000001), None).await;
    assert_eq!(
        (r.status, &r.body["resetAt"]),
        (403, &Value::Null),
        "{}",
        r.text
    );
    assert_eq!(app.ledger_state(&id).await, (8_800_000, 8_800_000));
}

#[tokio::test]
async fn weekly_and_monthly_windows_roll_too() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let Agent { id: weekly, .. } = app
        .platform()
        .agent(json!({"name": "w", "credits_usd": 10, "weekly_limit_usd": 1}))
        .await;
    let Agent { id: monthly, .. } = app
        .platform()
        .agent(json!({"name": "m", "credits_usd": 10, "monthly_limit_usd": 1}))
        .await;
    for id in [&weekly, &monthly] {
        assert_eq!(charge(&app, id, json!(0.8), None).await.status, 201);
    }
    clock.set(T0 + 3 * DAY);
    let r = charge(&app, &weekly, json!(0.3), None).await;
    assert_eq!(
        (r.status, &r.body["code"], &r.body["resetAt"]),
        (403, &json!("WEEKLY_LIMIT_EXCEEDED"), &json!(T0 + 7 * DAY))
    );
    let r = charge(&app, &monthly, json!(0.3), None).await;
    assert_eq!(
        (r.status, &r.body["code"], &r.body["resetAt"]),
        (403, &json!("MONTHLY_LIMIT_EXCEEDED"), &json!(T0 + 30 * DAY))
    );
    clock.set(T0 + 7 * DAY);
    assert_eq!(charge(&app, &weekly, json!(0.3), None).await.status, 201);
    assert_eq!(charge(&app, &monthly, json!(0.3), None).await.status, 403);
    clock.set(T0 + 30 * DAY);
    assert_eq!(charge(&app, &monthly, json!(0.3), None).await.status, 201);
}

#[tokio::test]
async fn the_fleet_daily_limit_spans_all_of_a_platforms_agents() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let mk = app.master_key.clone();
    let platform = app.get("/v1/platform", &master(&mk)).await;
    assert_eq!(platform.status, 200, "{}", platform.text);
    assert_eq!(
        (
            platform.body["daily_limit_usd"].clone(),
            platform.body["spent_today_usd"].clone()
        ),
        (Value::Null, json!(0.0))
    );

    let r = app
        .patch("/v1/platform", json!({"daily_limit_usd": 1}), &master(&mk))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["daily_limit_usd"], json!(1.0));
    let Agent { id: a, .. } = app
        .platform()
        .agent(json!({"name": "a", "credits_usd": 5}))
        .await;
    let Agent { id: b, .. } = app
        .platform()
        .agent(json!({"name": "b", "credits_usd": 5}))
        .await;
    assert_eq!(charge(&app, &a, json!(0.7), None).await.status, 201);
    let r = charge(&app, &b, json!(0.4), None).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["code"], "DAILY_LIMIT_EXCEEDED");
    assert_eq!(r.body["scope"], "platform");
    assert_eq!(
        (r.body["used_usd"].clone(), r.body["resetAt"].clone()),
        (json!(0.7), json!(T0 + DAY))
    );
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .starts_with("Platform fleet daily"),
        "{}",
        r.text
    );
    assert_eq!(
        app.get("/v1/platform", &master(&mk)).await.body["spent_today_usd"],
        json!(0.7)
    );

    // Another platform's spending does not count against this one.
    let other = app.new_platform_key().await;
    let r = app
        .post(
            "/v1/platform/agents",
            json!({"name": "x", "credits_usd": 5}),
            &master(&other),
        )
        .await;
    let x = r.body["agentId"].as_str().unwrap();
    let r = app
        .post(
            &format!("/v1/platform/agents/{x}/charges"),
            json!({"amount_usd": 2}),
            &master(&other),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(
        charge(&app, &b, json!(0.3), None).await.status,
        201,
        "0.7 + 0.3 fits exactly"
    );

    let r = app
        .patch(
            "/v1/platform",
            json!({"daily_limit_usd": null}),
            &master(&mk),
        )
        .await;
    assert_eq!(r.body["daily_limit_usd"], Value::Null);
    assert_eq!(charge(&app, &b, json!(0.4), None).await.status, 201);
    for body in [
        json!({}),
        json!({"daily_limit_usd": -1}),
        json!({"daily_limit": 1}),
    ] {
        assert_eq!(
            app.patch("/v1/platform", body, &master(&mk)).await.status,
            400
        );
    }
}

#[tokio::test]
async fn idempotent_charges_and_grants_move_money_once() {
    let app = spawn_app().await;
    let agent = app
        .platform()
        .agent(json!({"name": "i", "credits_usd": 1}))
        .await;
    let id = agent.id.clone();
    let first = charge(&app, &id, json!(0.25), Some("order-1")).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = charge(&app, &id, json!(0.25), Some("order-1")).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.text, first.text);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(credits(&agent).await, json!(0.75));

    let r = charge(&app, &id, json!(0.3), Some("order-1")).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (409, Some("CONFLICT")),
        "{}",
        r.text
    );
    let r = app
        .post(
            &format!("/v1/platform/agents/{id}/credits"),
            json!({"amount_usd": 0.25}),
            &[
                ("X-Master-Key", app.master_key.as_str()),
                ("Idempotency-Key", "order-1"),
            ],
        )
        .await;
    assert_eq!(r.status, 409, "same key, different endpoint: {}", r.text);
    let long = "k".repeat(256);
    let r = charge(&app, &id, json!(0.01), Some(&long)).await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (400, Some("Idempotency-Key"))
    );

    // Grants too.
    for _ in 0..3 {
        let r = app
            .post(
                &format!("/v1/platform/agents/{id}/credits"),
                json!({"amount_usd": 2}),
                &[
                    ("X-Master-Key", app.master_key.as_str()),
                    ("Idempotency-Key", "topup-9"),
                ],
            )
            .await;
        assert_eq!(
            (r.status, r.body["credits_usd"].clone()),
            (200, json!(2.75)),
            "{}",
            r.text
        );
    }
    // A refusal is not stored: the same key works once the money is there.
    let r = charge(&app, &id, json!(5), Some("big-1")).await;
    assert_eq!(r.status, 402);
    app.post(
        &format!("/v1/platform/agents/{id}/credits"),
        json!({"amount_usd": 5}),
        &master(&app.master_key),
    )
    .await;
    let r = charge(&app, &id, json!(5), Some("big-1")).await;
    assert_eq!(
        (r.status, r.body["credits_usd"].clone()),
        (201, json!(2.75)),
        "{}",
        r.text
    );
    assert_eq!(app.ledger_state(&id).await, (2_750_000, 2_750_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_with_one_key_charge_once() {
    let app = spawn_app().await;
    let agent = app
        .platform()
        .agent(json!({"name": "race", "credits_usd": 10}))
        .await;
    let id = agent.id.clone();
    let results = concurrent_charges(&app, &id, 30, json!(1.5), Some("same-one")).await;
    let mut bodies = std::collections::HashSet::new();
    for (status, body) in results {
        assert_eq!(status, 201, "{body}");
        bodies.insert(body);
    }
    assert_eq!(bodies.len(), 1, "every retry sees the one result");
    assert_eq!(credits(&agent).await, json!(8.5));
    assert_eq!(app.ledger_state(&id).await, (8_500_000, 8_500_000));
}

#[tokio::test]
async fn idempotency_keys_are_kept_a_day_then_forgotten() {
    let clock = Arc::new(ManualClock::new(T0));
    let app =
        spawn_app_with_clock(clock.clone(), |c| c.sweep_interval = Duration::from_secs(1)).await;
    let agent = app
        .platform()
        .agent(json!({"name": "ttl", "credits_usd": 1}))
        .await;
    let id = agent.id.clone();
    assert_eq!(
        charge(&app, &id, json!(0.1), Some("daily-job"))
            .await
            .status,
        201
    );
    clock.set(T0 + DAY - HOUR);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = charge(&app, &id, json!(0.1), Some("daily-job")).await;
    assert_eq!(
        r.headers["idempotent-replayed"], "true",
        "still remembered after 23 hours"
    );
    clock.set(T0 + DAY + HOUR);
    let mut forgotten = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = charge(&app, &id, json!(0.1), Some("daily-job")).await;
        if r.headers.get("idempotent-replayed").is_none() {
            forgotten = true;
            break;
        }
    }
    assert!(forgotten, "the sweeper drops keys older than the retention");
    assert_eq!(credits(&agent).await, json!(0.8));
}

#[tokio::test]
async fn the_sweeper_releases_expired_holds() {
    let clock = Arc::new(ManualClock::new(T0));
    let app =
        spawn_app_with_clock(clock.clone(), |c| c.sweep_interval = Duration::from_secs(1)).await;
    let agent = app
        .platform()
        .agent(json!({"name": "h", "credits_usd": 1}))
        .await;
    let id = agent.id.clone();
    let (pool, account) = (app.pool.clone(), id.clone());
    let hold = app
        .pool
        .run(move |c| {
            aibank_ledger::place_hold(c, &account, Usd::from_micros(400_000), 600_000, None, T0)
        })
        .await
        .unwrap();
    assert_eq!(hold.balance, Usd::from_micros(600_000));
    assert_eq!(credits(&agent).await, json!(0.6));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(credits(&agent).await, json!(0.6), "not expired yet");
    clock.set(T0 + 600_000);
    let mut released = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if credits(&agent).await == json!(1.0) {
            released = true;
            break;
        }
    }
    assert!(released, "the background sweeper released the hold");
    assert_eq!(app.ledger_state(&id).await, (1_000_000, 1_000_000));
    drop(pool);
}

#[tokio::test]
async fn usage_filters_by_time_and_totals_the_range() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let Agent { id, key, .. } = app
        .platform()
        .agent(json!({"name": "u", "credits_usd": 5}))
        .await;
    for (i, amount) in [0.1, 0.2, 0.4].iter().enumerate() {
        clock.set(T0 + i64::try_from(i).unwrap() * 1000);
        let r = app
            .post(
                &format!("/v1/platform/agents/{id}/charges"),
                json!({"amount_usd": amount, "description": format!("job {i}")}),
                &master(&app.master_key),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let mk = master(&app.master_key);
    let all = app
        .get(&format!("/v1/platform/agents/{id}/usage"), &mk)
        .await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(
        all.body["totals"],
        json!({"count": 3, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.7})
    );
    let first = &all.body["data"][0];
    assert_eq!(
        (first["description"].clone(), first["provider"].clone()),
        (json!("job 2"), json!("platform"))
    );
    assert!(first["request_id"].as_str().is_some_and(|r| r.len() >= 32));

    let r = app
        .get(
            &format!(
                "/v1/platform/agents/{id}/usage?from={}&to={}",
                T0 + 1000,
                T0 + 2000
            ),
            &mk,
        )
        .await;
    assert_eq!(r.body["totals"]["count"], 1);
    assert_eq!(r.body["data"][0]["description"], "job 1");
    let from = rfc3339(T0 + 1000);
    let r = app
        .get(
            &format!("/v1/usage?from={from}&limit=1"),
            &[("X-API-Key", key.as_str())],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (
            r.body["totals"]["cost_usd"].clone(),
            r.body["has_more"].clone()
        ),
        (json!(0.6), json!(true))
    );
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);

    let r = app
        .get("/v1/usage?from=yesterday", &[("X-API-Key", key.as_str())])
        .await;
    assert_eq!((r.status, r.body["field"].as_str()), (400, Some("from")));
    let other = app.new_platform_key().await;
    assert_eq!(
        app.get(&format!("/v1/platform/agents/{id}/usage"), &master(&other))
            .await
            .status,
        404
    );
}

/// A gateway app whose providers are the mock upstream; the mock with it.
async fn gateway_app() -> (TestApp, crate::support::mock_upstream::MockUpstream) {
    let mock = crate::support::mock_upstream::MockUpstream::start().await;
    let base = mock.base.clone();
    let app = crate::support::spawn_app_with(move |c| {
        crate::support::use_mock_upstream(c, &base, true);
    })
    .await;
    (app, mock)
}

/// A Claude call with the web-search tool, the mock reporting `usage` and `searches`.
async fn web_search_call(app: &TestApp, key: &str, usage: &str, searches: &str) -> Resp {
    app.post(
        "/v1/gateway/anthropic/v1/messages",
        json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
               "tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}],
               "messages": [{"role": "user", "content": "What happened today?"}]}),
        &[
            ("X-API-Key", key),
            ("x-mock-usage", usage),
            ("x-mock-web-searches", searches),
        ],
    )
    .await
}

async fn account(app: &TestApp, agent: &str) -> aibank_store::models::Account {
    let (pool, id) = (app.pool.clone(), agent.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut c = pool.get().unwrap();
        aibank_ledger::balance(&mut c, &id).unwrap()
    })
    .await
    .unwrap()
}

/// The agent's usage rows: (cost, owed) of each, newest first.
async fn usage_rows(app: &TestApp, agent: &str) -> Vec<(i64, i64)> {
    use aibank_store::schema::usage_events as u;
    use diesel::prelude::*;
    let (pool, id) = (app.pool.clone(), agent.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut c = pool.get().unwrap();
        u::table
            .filter(u::agent_id.eq(id))
            .order(u::created_at.desc())
            .select((u::cost_micros, u::owed_micros))
            .load(&mut c)
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn usage_beyond_the_hold_and_the_balance_is_owed_until_a_grant_pays_it() {
    let (app, mock) = gateway_app().await;
    let Agent { id: agent, key, .. } = app
        .platform()
        .agent(json!({"name": "searcher", "credits_usd": 0.1}))
        .await;

    // The searches' results came back as 40,000 more prompt tokens: 40,011 × $3/M +
    // 7 × $15/M + 20 searches × $10/1,000 = $0.320138, against a balance of $0.10.
    let r = web_search_call(&app, &key, "40011,7", "20").await;
    assert_eq!(r.status, 200, "served: {}", r.text);
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.320138");
    let a = account(&app, &agent).await;
    assert_eq!(
        (
            a.balance_micros,
            a.owed_micros,
            a.held_micros,
            a.total_spent_micros
        ),
        (0, 220_138, 0, 320_138)
    );
    assert_eq!(usage_rows(&app, &agent).await, vec![(320_138, 220_138)]);
    let bal = app.get("/v1/balance", &[("X-API-Key", &key)]).await;
    assert_eq!(
        bal.text,
        r#"{"credits_usd":0.0,"total_spent":0.320138,"owed_usd":0.220138}"#
    );
    let view = app
        .get(
            &format!("/v1/platform/agents/{agent}"),
            &master(&app.master_key),
        )
        .await;
    assert_eq!(view.body["owed_usd"], json!(0.220138), "{}", view.text);
    let usage = app.get("/v1/usage", &[("X-API-Key", &key)]).await;
    assert_eq!(
        usage.body["data"][0]["owed_usd"],
        json!(0.220138),
        "{}",
        usage.text
    );
    assert_eq!(usage.body["data"][0]["cost_usd"], json!(0.320138));

    // Nothing more is served, nor charged, while it is owed.
    let upstream_calls = mock.requests().len();
    let r = web_search_call(&app, &key, "10,1", "0").await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["code"], "INSUFFICIENT_CREDITS");
    assert_eq!(r.body["owed_usd"], json!(0.220138));
    assert_eq!(
        mock.requests().len(),
        upstream_calls,
        "forwarded while owing"
    );
    let r = charge(&app, &agent, json!(0.01), None).await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["owed_usd"], json!(0.220138));

    // A grant pays the debt first.
    let g = app
        .post(
            &format!("/v1/platform/agents/{agent}/credits"),
            json!({"amount_usd": 1}),
            &master(&app.master_key),
        )
        .await;
    assert_eq!(
        g.text,
        format!(
            r#"{{"agentId":"{agent}","granted_usd":1.0,"credits_usd":0.779862,"owed_usd":0.0}}"#
        )
    );
    let r = web_search_call(&app, &key, "10,1", "0").await;
    assert_eq!(r.status, 200, "{}", r.text);
    // 10 × $3/M + 1 × $15/M.
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.000045");
    assert_eq!(r.headers["x-aibank-balance-usd"], "0.779817");
    assert!(crate::support::assert_books_balance(&app.pool) > 0);
}

/// 32 calls at once, each served beyond its hold: every one served is recorded in full,
/// what the balance could not cover is owed, and the books agree three ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_drain_beyond_every_hold_records_every_served_call() {
    let (app, _mock) = gateway_app().await;
    let Agent { id: agent, key, .. } = app
        .platform()
        .agent(json!({"name": "drain", "credits_usd": 1}))
        .await;
    // Each call: 40,000 × $3/M + 10 × $15/M + 5 × $10/1,000 = $0.17015, its hold ~$0.022.
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let req = app
                .client
                .post(format!("{}/v1/gateway/anthropic/v1/messages", app.base))
                .header("X-API-Key", &key)
                .header("x-mock-usage", "40000,10")
                .header("x-mock-web-searches", "5")
                .json(&json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
                              "messages": [{"role": "user", "content": "Search"}]}));
            tokio::spawn(async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                let cost = r
                    .headers()
                    .get("x-aibank-cost-usd")
                    .map(|v| v.to_str().unwrap().to_owned());
                (status, cost, r.text().await.unwrap())
            })
        })
        .collect();
    let mut served = Vec::new();
    for t in tasks {
        let (status, cost, text) = t.await.unwrap();
        match status {
            200 => served.push(cost.unwrap()),
            402 => assert!(text.contains("INSUFFICIENT_CREDITS"), "{text}"),
            other => panic!("{other}: {text}"),
        }
    }
    assert!(served.len() >= 5, "only {} served", served.len());
    assert!(served.iter().all(|c| c == "0.17015"), "{served:?}");
    let rows = usage_rows(&app, &agent).await;
    assert_eq!(rows.len(), served.len(), "one usage row per call served");
    let a = account(&app, &agent).await;
    let cost: i64 = rows.iter().map(|r| r.0).sum();
    let owed: i64 = rows.iter().map(|r| r.1).sum();
    assert_eq!(cost, a.total_spent_micros, "usage rows sum to total spent");
    assert_eq!(cost, 170_150 * i64::try_from(served.len()).unwrap());
    assert_eq!(owed, a.owed_micros, "the rows' owed parts sum to the debt");
    assert_eq!(
        a.owed_micros,
        cost - 1_000_000,
        "owed is the cost the balance missed"
    );
    assert_eq!((a.balance_micros, a.held_micros), (0, 0));
    crate::support::assert_books_balance(&app.pool);
}
