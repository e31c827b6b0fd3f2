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

use aibank_core::clock::rfc3339;
use aibank_core::{ManualClock, Usd};
use aibank_testkit::{spawn_app, spawn_app_with_clock, Resp, TestApp};
use serde_json::{json, Value};

const T0: i64 = 1_800_000_000_000;
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

fn master(key: &str) -> [(&str, &str); 1] {
    [("X-Master-Key", key)]
}

async fn fleet_agent(app: &TestApp, body: Value) -> (String, String) {
    let r = app
        .post("/v1/platform/agents", body, &master(&app.master_key))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    (
        r.body["agentId"].as_str().unwrap().to_owned(),
        r.body["apiKey"].as_str().unwrap().to_owned(),
    )
}

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

async fn credits(app: &TestApp, key: &str) -> Value {
    app.get("/v1/balance", &[("X-API-Key", key)]).await.body["credits_usd"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_concurrent_two_cent_charges_against_ten_dollars() {
    let app = spawn_app().await;
    let (id, key) = fleet_agent(&app, json!({"name": "hammer", "credits_usd": 10})).await;
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
    assert_eq!(credits(&app, &key).await, json!(0.0));
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
    let (id, key) = fleet_agent(&app, json!({"name": "c", "credits_usd": 0.05})).await;
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
    assert_eq!(credits(&app, &key).await, json!(0.04));

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
    let (id, _) = fleet_agent(
        &app,
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
    let (weekly, _) = fleet_agent(
        &app,
        json!({"name": "w", "credits_usd": 10, "weekly_limit_usd": 1}),
    )
    .await;
    let (monthly, _) = fleet_agent(
        &app,
        json!({"name": "m", "credits_usd": 10, "monthly_limit_usd": 1}),
    )
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
    let (a, _) = fleet_agent(&app, json!({"name": "a", "credits_usd": 5})).await;
    let (b, _) = fleet_agent(&app, json!({"name": "b", "credits_usd": 5})).await;
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
    let (id, key) = fleet_agent(&app, json!({"name": "i", "credits_usd": 1})).await;
    let first = charge(&app, &id, json!(0.25), Some("order-1")).await;
    assert_eq!(first.status, 201, "{}", first.text);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = charge(&app, &id, json!(0.25), Some("order-1")).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.text, first.text);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(credits(&app, &key).await, json!(0.75));

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
    let (id, key) = fleet_agent(&app, json!({"name": "race", "credits_usd": 10})).await;
    let results = concurrent_charges(&app, &id, 30, json!(1.5), Some("same-one")).await;
    let mut bodies = std::collections::HashSet::new();
    for (status, body) in results {
        assert_eq!(status, 201, "{body}");
        bodies.insert(body);
    }
    assert_eq!(bodies.len(), 1, "every retry sees the one result");
    assert_eq!(credits(&app, &key).await, json!(8.5));
    assert_eq!(app.ledger_state(&id).await, (8_500_000, 8_500_000));
}

#[tokio::test]
async fn idempotency_keys_are_kept_a_day_then_forgotten() {
    let clock = Arc::new(ManualClock::new(T0));
    let app =
        spawn_app_with_clock(clock.clone(), |c| c.sweep_interval = Duration::from_secs(1)).await;
    let (id, key) = fleet_agent(&app, json!({"name": "ttl", "credits_usd": 1})).await;
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
    assert_eq!(credits(&app, &key).await, json!(0.8));
}

#[tokio::test]
async fn the_sweeper_releases_expired_holds() {
    let clock = Arc::new(ManualClock::new(T0));
    let app =
        spawn_app_with_clock(clock.clone(), |c| c.sweep_interval = Duration::from_secs(1)).await;
    let (id, key) = fleet_agent(&app, json!({"name": "h", "credits_usd": 1})).await;
    let (pool, agent) = (app.pool.clone(), id.clone());
    let hold = app
        .pool
        .run(move |c| {
            aibank_ledger::place_hold(c, &agent, Usd::from_micros(400_000), 600_000, None, T0)
        })
        .await
        .unwrap();
    assert_eq!(hold.balance, Usd::from_micros(600_000));
    assert_eq!(credits(&app, &key).await, json!(0.6));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(credits(&app, &key).await, json!(0.6), "not expired yet");
    clock.set(T0 + 600_000);
    let mut released = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if credits(&app, &key).await == json!(1.0) {
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
    let (id, key) = fleet_agent(&app, json!({"name": "u", "credits_usd": 5})).await;
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
