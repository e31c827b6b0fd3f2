//! The HTTP API over real HTTP on a random port, against a fresh database per test:
//! SQLite by default, PostgreSQL when `AIBANK_TEST_DATABASE_URL` is set.
// JSON money literals are written as clients write them; scenario tests run long.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unreadable_literal,
    clippy::too_many_lines
)]

use std::collections::HashSet;

use crate::support::{api, master, Agent};
use crate::support::{spawn_app, spawn_app_with};
use serde_json::{json, Value};

// ---------------------------------------------------------------- self-service agents

#[tokio::test]
async fn register_gives_a_key_ten_dollars_and_default_limits() {
    let app = spawn_app().await;
    let r = app.post("/v1/agents/register", json!({}), &[]).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let b = &r.body;
    assert!(b["agentId"].as_str().unwrap().starts_with("agt_"));
    let key = b["apiKey"].as_str().unwrap();
    assert!(key.starts_with("ak_") && key.len() >= 40);
    assert_eq!(b["name"], "unnamed-agent");
    assert_eq!(b["email"], Value::Null);
    assert!(r.text.contains(r#""credits_usd":10.0"#), "{}", r.text);
    assert_eq!(
        b["spending_controls"],
        json!({"daily_limit_usd": 100.0, "weekly_limit_usd": 500.0, "monthly_limit_usd": 1000.0, "per_tx_limit_usd": 50.0})
    );

    let bal = app.get("/v1/balance", &api(key)).await;
    assert_eq!(bal.status, 200, "{}", bal.text);
    assert_eq!(
        bal.text,
        r#"{"credits_usd":10.0,"total_spent":0.0,"owed_usd":0.0}"#
    );

    let (sum, balance) = app.ledger_state(b["agentId"].as_str().unwrap()).await;
    assert_eq!(
        (sum, balance),
        (10_000_000, 10_000_000),
        "the sign-up grant is journaled"
    );
}

#[tokio::test]
async fn register_accepts_name_email_and_no_body_at_all() {
    let app = spawn_app().await;
    let r = app
        .post(
            "/v1/agents/register",
            json!({"name": "  scout ", "email": "ops@example.com"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["name"], "scout");
    assert_eq!(r.body["email"], "ops@example.com");

    let r = app.send("POST", "/v1/agents/register", None, &[]).await;
    assert_eq!(
        r.status, 201,
        "an empty body registers with defaults: {}",
        r.text
    );
}

#[tokio::test]
async fn bad_input_is_400_naming_the_field_never_500() {
    let app = spawn_app().await;
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "/v1/agents/register",
            json!({"name": 5}).to_string(),
            "name",
        ),
        (
            "/v1/agents/register",
            json!({"name": ""}).to_string(),
            "name",
        ),
        (
            "/v1/agents/register",
            json!({"name": "x".repeat(101)}).to_string(),
            "name",
        ),
        (
            "/v1/agents/register",
            json!({"email": "not-an-email"}).to_string(),
            "email",
        ),
        (
            "/v1/agents/register",
            json!({"nmae": "typo"}).to_string(),
            "nmae",
        ),
        ("/v1/agents/register", "{\"name\": ".to_owned(), "body"),
        ("/v1/agents/register", "[1, 2]".to_owned(), "body"),
        ("/v1/agents/register", "{} trailing".to_owned(), "body"),
        ("/v1/keys", json!({}).to_string(), "email"),
        (
            "/v1/keys",
            json!({"email": ["a@b.co"]}).to_string(),
            "email",
        ),
    ];
    for (path, body, field) in cases {
        let r = app.send("POST", path, Some(body.clone()), &[]).await;
        r.assert_invalid(field);
        assert!(
            !r.body["error"].as_str().unwrap().is_empty(),
            "{path} {body}"
        );
    }
}

#[tokio::test]
async fn oversize_bodies_are_refused() {
    let app = spawn_app().await;
    let big = json!({"name": "x".repeat(70 * 1024)}).to_string();
    let r = app
        .send("POST", "/v1/agents/register", Some(big), &[])
        .await;
    r.assert_invalid("body");
    assert!(
        r.body["error"].as_str().unwrap().contains("65536"),
        "{}",
        r.text
    );

    // The limit is configurable.
    let app = spawn_app_with(|c| c.max_json_bytes = 2048).await;
    let r = app
        .send(
            "POST",
            "/v1/agents/register",
            Some(json!({"name": "y".repeat(3000)}).to_string()),
            &[],
        )
        .await;
    r.assert_invalid("body");
}

#[tokio::test]
async fn two_hundred_parallel_registrations_all_succeed_with_distinct_keys() {
    let app = spawn_app().await;
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (client, url) = (
                app.client.clone(),
                format!("{}/v1/agents/register", app.base),
            );
            tokio::spawn(async move {
                let r = client.post(url).json(&json!({})).send().await.unwrap();
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut keys = HashSet::new();
    let mut ids = HashSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 201, "{body}");
        keys.insert(body["apiKey"].as_str().unwrap().to_owned());
        ids.insert(body["agentId"].as_str().unwrap().to_owned());
    }
    assert_eq!(keys.len(), 200);
    assert_eq!(ids.len(), 200);
    // Every key works.
    for key in keys.iter().take(20) {
        assert_eq!(app.get("/v1/balance", &api(key)).await.status, 200);
    }
}

// ---------------------------------------------------------------- gateway-only keys

#[tokio::test]
async fn gateway_keys_have_credits_but_only_gateway_routes() {
    let app = spawn_app().await;
    let r = app
        .post("/v1/keys", json!({"email": "dev@example.com"}), &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.body["api_key"].as_str().unwrap();
    assert!(key.starts_with("gw_"));
    assert_eq!(
        r.text,
        format!(r#"{{"api_key":"{key}","credits_usd":10.0}}"#)
    );

    assert_eq!(app.get("/v1/balance", &api(key)).await.status, 200);
    assert_eq!(app.get("/v1/usage", &api(key)).await.status, 200);
    let me = app.get("/v1/agents/me", &api(key)).await;
    me.assert_error(403, "FORBIDDEN");

    let Agent { key: ak, .. } = app.agent().await;
    let me = app.get("/v1/agents/me", &api(&ak)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(me.body["kind"], "agent");
    assert_eq!(me.body["name"], "unnamed-agent");
}

// ---------------------------------------------------------------- authentication

#[tokio::test]
async fn api_key_errors_name_what_is_wrong() {
    let app = spawn_app().await;
    let r = app.get("/v1/balance", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.text,
        r#"{"error":"Missing X-API-Key header","code":"UNAUTHORIZED"}"#
    );

    let Agent { key, .. } = app.agent().await;
    let wrong_secret = format!(
        "{}{}",
        &key[..key.len() - 4],
        if key.ends_with("AAAA") {
            "BBBB"
        } else {
            "AAAA"
        }
    );
    for bad in [
        "garbage",
        "ak_",
        &wrong_secret,
        "gw_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    ] {
        let r = app.get("/v1/balance", &api(bad)).await;
        assert_eq!(r.status, 401, "{bad}");
        assert_eq!(
            r.text, r#"{"error":"Invalid API key","code":"UNAUTHORIZED"}"#,
            "{bad}"
        );
    }
    // The right secret under the wrong prefix is not the same key.
    let as_gw = key.replacen("ak_", "gw_", 1);
    app.get("/v1/balance", &api(&as_gw))
        .await
        .assert_error(401, "UNAUTHORIZED");

    let r = app.get("/v1/balance", &api(&app.master_key)).await;
    r.assert_error(401, "UNAUTHORIZED");
    assert!(r.text.contains("X-Master-Key"), "{}", r.text);
    assert!(
        !r.text.contains(&app.master_key),
        "never echo a presented key"
    );

    let r = app.get("/v1/platform/agents", &[]).await;
    assert_eq!(
        r.text,
        r#"{"error":"Missing X-Master-Key header","code":"UNAUTHORIZED"}"#
    );
    let r = app.get("/v1/platform/agents", &master(&key)).await;
    r.assert_error(401, "UNAUTHORIZED");
    assert!(r.text.contains("X-API-Key"), "{}", r.text);
    let r = app.get("/v1/platform/agents", &master("mk_nope")).await;
    assert_eq!(
        r.text,
        r#"{"error":"Invalid master key","code":"UNAUTHORIZED"}"#
    );
}

#[tokio::test]
async fn repeated_requests_use_the_verified_cache_and_still_check_the_secret() {
    let app = spawn_app().await;
    let Agent { key, .. } = app.agent().await;
    for _ in 0..20 {
        assert_eq!(app.get("/v1/balance", &api(&key)).await.status, 200);
    }
    // A cached key id does not let a different secret in.
    let forged = format!(
        "{}{}",
        &key[..key.len() - 1],
        if key.ends_with('x') { 'y' } else { 'x' }
    );
    assert_eq!(app.get("/v1/balance", &api(&forged)).await.status, 401);
}

// ---------------------------------------------------------------- usage

#[tokio::test]
async fn usage_is_paginated_newest_first_and_private() {
    let app = spawn_app().await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let Agent { key: other_key, .. } = app.agent().await;
    let pool = app.pool.clone();
    let a = agent.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = pool.get().unwrap();
        for i in 0..3 {
            aibank_store::repo::usage::insert(
                &mut c,
                &aibank_store::models::UsageEvent {
                    id: format!("use_{i}"),
                    agent_id: a.clone(),
                    api_key_id: None,
                    provider: "anthropic".into(),
                    model: "claude-sonnet-4-5".into(),
                    input_tokens: 100 * i,
                    output_tokens: 10 * i,
                    cost_micros: 1_500 * i,
                    request_id: Some(format!("req-{i}")),
                    created_at: 1_764_000_000_000 + i,
                    description: None,
                    owed_micros: 0,
                    price_version: None,
                    deployment: None,
                },
            )
            .unwrap();
        }
    })
    .await
    .unwrap();

    let p1 = app.get("/v1/usage?limit=2", &api(&key)).await;
    assert_eq!(p1.status, 200, "{}", p1.text);
    let data = p1.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["id"], "use_2");
    assert_eq!(data[0]["input_tokens"], 200);
    assert_eq!(data[0]["cost_usd"], json!(0.003));
    assert_eq!(data[0]["created_at"], "2025-11-24T16:00:00.002Z");
    assert_eq!(p1.body["has_more"], true);
    let cursor = p1.body["next_cursor"].as_str().unwrap();
    let p2 = app
        .get(&format!("/v1/usage?limit=2&cursor={cursor}"), &api(&key))
        .await;
    let data = p2.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["id"], "use_0");
    assert_eq!(p2.body["has_more"], false);
    assert_eq!(p2.body["next_cursor"], Value::Null);

    let other = app.get("/v1/usage", &api(&other_key)).await;
    assert_eq!(other.body["data"], json!([]));

    app.get("/v1/usage?limit=0", &api(&key))
        .await
        .assert_invalid("limit");
    app.get("/v1/usage?limit=201", &api(&key))
        .await
        .assert_invalid("limit");
    app.get("/v1/usage?limit=abc", &api(&key))
        .await
        .assert_invalid("limit");
    app.get("/v1/usage?cursor=zzz", &api(&key))
        .await
        .assert_invalid("cursor");
    app.get("/v1/usage?page=2", &api(&key))
        .await
        .assert_invalid("page");
}

// ---------------------------------------------------------------- meta

#[tokio::test]
async fn health_reports_the_backend() {
    let app = spawn_app().await;
    let r = app.get("/v1/health", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "ok");
    assert_eq!(r.body["database"], "ok");
    assert_eq!(r.body["backend"], app.db.backend.as_str());
}

/// A database that goes away turns health (and every data endpoint) into 503, and the
/// server recovers by itself when it comes back. Cutting connections from outside needs a
/// database server, so this runs in the PostgreSQL pass.
#[tokio::test]
async fn health_is_503_while_the_database_is_gone_and_recovers() {
    let app = spawn_app_with(|c| c.database_timeout = std::time::Duration::from_secs(1)).await;
    if app.db.backend != aibank_store::Backend::Postgres {
        eprintln!("skipped on SQLite: needs a database server to cut");
        return;
    }
    let Agent { key, .. } = app.agent().await;
    let db = app.db.clone();
    tokio::task::spawn_blocking(move || db.set_reachable(false))
        .await
        .unwrap();
    let r = app.get("/v1/health", &[]).await;
    r.assert_error(503, "UNAVAILABLE");
    assert!(!r.text.contains("postgres://"), "{}", r.text);
    app.get("/v1/balance", &api(&key))
        .await
        .assert_error(503, "UNAVAILABLE");

    let db = app.db.clone();
    tokio::task::spawn_blocking(move || db.set_reachable(true))
        .await
        .unwrap();
    let r = app.get("/v1/health", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.get("/v1/balance", &api(&key)).await.status, 200);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let ok = app.get("/v1/health", &[]).await;
    let err = app.get("/v1/balance", &[]).await;
    let missing = app.get("/v1/nope", &[]).await;
    let ids: Vec<String> = [&ok, &err, &missing]
        .iter()
        .map(|r| r.headers["x-request-id"].to_str().unwrap().to_owned())
        .collect();
    assert!(ids.iter().all(|id| id.len() >= 32), "{ids:?}");
    assert_ne!(ids[0], ids[1]);
}

#[tokio::test]
async fn providers_show_configuration_and_prices_but_no_secret() {
    let app = spawn_app_with(|c| {
        c.providers = aibank_gateway::Registry::build(
            (
                "https://api.anthropic.com".into(),
                Some("sk-ant-very-secret-value".to_owned().into()),
            ),
            ("http://127.0.0.1:9".into(), None),
            ("http://127.0.0.1:9".into(), None),
            Vec::new(),
            std::collections::BTreeMap::new(),
            std::collections::BTreeMap::new(),
            |_| None,
        )
        .unwrap();
    })
    .await;
    let r = app.get("/v1/providers", &[]).await;
    assert_eq!(r.status, 200);
    assert!(!r.text.contains("very-secret"), "{}", r.text);
    let p = r.body["providers"].as_array().unwrap();
    assert_eq!(
        (
            &p[0]["name"],
            &p[0]["kind"],
            &p[0]["base_url"],
            &p[0]["configured"]
        ),
        (
            &json!("anthropic"),
            &json!("anthropic"),
            &json!("https://api.anthropic.com"),
            &json!(true)
        )
    );
    assert_eq!(
        p[0]["models"]["claude-sonnet-4-5"],
        json!({"input": 3, "output": 15, "cache_write": 3.75, "cache_write_1h": 6, "cache_read": 0.3,
               "web_search_per_1k": 10,
               "long_context": {"above_tokens": 200000, "input_factor": 2, "output_factor": 1.5}})
    );
    assert_eq!(
        (&p[1]["name"], &p[1]["base_url"], &p[1]["configured"]),
        (
            &json!("openai"),
            &json!("http://127.0.0.1:9"),
            &json!(false)
        )
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_envelope() {
    let app = spawn_app().await;
    let r = app.get("/v1/nope", &[]).await;
    r.assert_error(404, "NOT_FOUND");
    let r = app.delete("/v1/balance", &[]).await;
    r.assert_error(405, "METHOD_NOT_ALLOWED");
    assert_eq!(r.body["allowed"], "GET");
    assert_eq!(r.headers["allow"], "GET");
}

// ---------------------------------------------------------------- platform: agents

#[tokio::test]
async fn platform_creates_agents_with_credits_and_limits() {
    let app = spawn_app().await;
    let mk = app.master_key.clone();
    let r = app
        .post(
            "/v1/platform/agents",
            json!({"name": "worker-1", "email": "w1@example.com", "credits_usd": 2.5,
                   "daily_limit_usd": 1, "weekly_limit_usd": "5.5", "monthly_limit_usd": 20.000001,
                   "per_tx_limit_usd": 0.25}),
            &master(&mk),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["name"], "worker-1");
    assert_eq!(r.body["email"], "w1@example.com");
    assert_eq!(r.body["credits_usd"], json!(2.5));
    assert_eq!(
        r.body["spending_controls"],
        json!({"daily_limit_usd": 1.0, "weekly_limit_usd": 5.5, "monthly_limit_usd": 20.000001, "per_tx_limit_usd": 0.25})
    );
    let id = r.body["agentId"].as_str().unwrap();
    let key = r.body["apiKey"].as_str().unwrap();
    let bal = app.get("/v1/balance", &api(key)).await;
    assert_eq!(
        bal.text,
        r#"{"credits_usd":2.5,"total_spent":0.0,"owed_usd":0.0}"#
    );
    assert_eq!(app.ledger_state(id).await, (2_500_000, 2_500_000));

    // Defaults: no credits, standard limits.
    let r = app
        .post(
            "/v1/platform/agents",
            json!({"name": "worker-2"}),
            &master(&mk),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["credits_usd"], json!(0.0));
    assert_eq!(r.body["spending_controls"]["per_tx_limit_usd"], json!(50.0));

    for (body, field) in [
        (json!({}), "name"),
        (json!({"name": "a", "credits_usd": -1}), "credits_usd"),
        (
            json!({"name": "a", "credits_usd": 0.0000001}),
            "credits_usd",
        ),
        (
            json!({"name": "a", "daily_limit_usd": "lots"}),
            "daily_limit_usd",
        ),
        (json!({"name": "a", "email": "nope"}), "email"),
        (json!({"name": "a", "credits": 5}), "credits"),
    ] {
        let r = app
            .post("/v1/platform/agents", body.clone(), &master(&mk))
            .await;
        r.assert_invalid(field);
    }
}

#[tokio::test]
async fn platform_lists_gets_and_updates_its_agents() {
    let app = spawn_app().await;
    let mk = app.master_key.clone();
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            app.platform_with(&mk)
                .agent(json!({"name": format!("a{i}")}))
                .await
                .id,
        );
    }
    // A self-registered agent is nobody's fleet.
    app.agent().await;

    let p1 = app.get("/v1/platform/agents?limit=2", &master(&mk)).await;
    assert_eq!(p1.status, 200, "{}", p1.text);
    assert_eq!(p1.body["data"].as_array().unwrap().len(), 2);
    assert_eq!(p1.body["has_more"], true);
    let cursor = p1.body["next_cursor"].as_str().unwrap();
    let p2 = app
        .get(
            &format!("/v1/platform/agents?limit=2&cursor={cursor}"),
            &master(&mk),
        )
        .await;
    assert_eq!(p2.body["data"].as_array().unwrap().len(), 1);
    let mut seen: Vec<String> = p1.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2.body["data"].as_array().unwrap())
        .map(|a| a["agentId"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    ids.sort();
    assert_eq!(seen, ids);
    assert!(
        !p1.text.contains("apiKey") && !p1.text.contains("ak_"),
        "lists never show keys"
    );

    let id = &ids[0];
    let g = app
        .get(&format!("/v1/platform/agents/{id}"), &master(&mk))
        .await;
    assert_eq!(g.status, 200, "{}", g.text);
    assert_eq!(g.body["agentId"], id.as_str());
    assert_eq!(g.body["active"], true);
    assert_eq!(g.body["credits_usd"], json!(0.0));
    assert!(g.body["created_at"].as_str().unwrap().ends_with('Z'));

    let u = app
        .patch(
            &format!("/v1/platform/agents/{id}"),
            json!({"name": "renamed", "daily_limit_usd": 7.5, "per_tx_limit_usd": 0}),
            &master(&mk),
        )
        .await;
    assert_eq!(u.status, 200, "{}", u.text);
    assert_eq!(u.body["name"], "renamed");
    assert_eq!(u.body["spending_controls"]["daily_limit_usd"], json!(7.5));
    assert_eq!(u.body["spending_controls"]["per_tx_limit_usd"], json!(0.0));
    assert_eq!(
        u.body["spending_controls"]["weekly_limit_usd"],
        json!(500.0)
    );

    app.patch(
        &format!("/v1/platform/agents/{id}"),
        json!({}),
        &master(&mk),
    )
    .await
    .assert_invalid("body");
    app.patch(
        &format!("/v1/platform/agents/{id}"),
        json!({"active": "yes"}),
        &master(&mk),
    )
    .await
    .assert_invalid("active");
    app.patch(
        &format!("/v1/platform/agents/{id}"),
        json!({"weekly_limit_usd": -3}),
        &master(&mk),
    )
    .await
    .assert_invalid("weekly_limit_usd");
    app.get("/v1/platform/agents/agt_nope", &master(&mk))
        .await
        .assert_error(404, "NOT_FOUND");
    app.patch(
        "/v1/platform/agents/agt_nope",
        json!({"name": "x"}),
        &master(&mk),
    )
    .await
    .assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn deactivated_agents_are_refused_until_reactivated() {
    let app = spawn_app().await;
    let mk = app.master_key.clone();
    let Agent { id, key, .. } = app
        .platform_with(&mk)
        .agent(json!({"name": "sleepy"}))
        .await;
    let r = app
        .patch(
            &format!("/v1/platform/agents/{id}"),
            json!({"active": false}),
            &master(&mk),
        )
        .await;
    assert_eq!(r.body["active"], false);
    let r = app.get("/v1/balance", &api(&key)).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.text,
        r#"{"error":"Agent is deactivated","code":"FORBIDDEN"}"#
    );
    app.patch(
        &format!("/v1/platform/agents/{id}"),
        json!({"active": true}),
        &master(&mk),
    )
    .await;
    assert_eq!(app.get("/v1/balance", &api(&key)).await.status, 200);
}

#[tokio::test]
async fn platform_grants_credits_exactly_and_journaled() {
    let app = spawn_app().await;
    let mk = app.master_key.clone();
    let Agent { id, key, .. } = app
        .platform_with(&mk)
        .agent(json!({"name": "w", "credits_usd": 1}))
        .await;
    let path = format!("/v1/platform/agents/{id}/credits");
    let r = app
        .post(&path, json!({"amount_usd": 0.1}), &master(&mk))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.text,
        format!(r#"{{"agentId":"{id}","granted_usd":0.1,"credits_usd":1.1,"owed_usd":0.0}}"#)
    );
    let r = app
        .post(&path, json!({"amount_usd": 0.2}), &master(&mk))
        .await;
    assert_eq!(
        r.body["credits_usd"],
        json!(1.3),
        "0.1 + 0.2 is exactly 0.3 here"
    );
    assert_eq!(
        app.get("/v1/balance", &api(&key)).await.body["credits_usd"],
        json!(1.3)
    );
    assert_eq!(app.ledger_state(&id).await, (1_300_000, 1_300_000));

    for (body, field) in [
        (json!({"amount_usd": 0}), "amount_usd"),
        (json!({"amount_usd": -5}), "amount_usd"),
        (json!({"amount_usd": 0.0000001}), "amount_usd"),
        (json!({"amount_usd": 1e12}), "amount_usd"),
        (json!({}), "amount_usd"),
    ] {
        app.post(&path, body, &master(&mk))
            .await
            .assert_invalid(field);
    }
    app.post(
        "/v1/platform/agents/agt_nope/credits",
        json!({"amount_usd": 1}),
        &master(&mk),
    )
    .await
    .assert_error(404, "NOT_FOUND");
    assert_eq!(
        app.ledger_state(&id).await,
        (1_300_000, 1_300_000),
        "failed grants move nothing"
    );
}

#[tokio::test]
async fn rotating_a_key_kills_the_old_one_at_once() {
    let app = spawn_app().await;
    let mk = app.master_key.clone();
    let Agent { id, key: old, .. } = app.platform_with(&mk).agent(json!({"name": "r"})).await;
    // Warm the verified cache with the old key.
    assert_eq!(app.get("/v1/balance", &api(&old)).await.status, 200);
    let r = app
        .post(
            &format!("/v1/platform/agents/{id}/rotate-key"),
            json!({}),
            &master(&mk),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["agentId"], id.as_str());
    let new = r.body["apiKey"].as_str().unwrap();
    assert!(new.starts_with("ak_") && new != old);

    let r = app.get("/v1/balance", &api(&old)).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.text,
        r#"{"error":"API key has been revoked","code":"UNAUTHORIZED"}"#
    );
    assert_eq!(app.get("/v1/balance", &api(new)).await.status, 200);
    app.post(
        "/v1/platform/agents/agt_nope/rotate-key",
        json!({}),
        &master(&mk),
    )
    .await
    .assert_error(404, "NOT_FOUND");
}

#[tokio::test]
async fn platforms_cannot_see_or_touch_each_others_agents() {
    let app = spawn_app().await;
    let mk_a = app.master_key.clone();
    let mk_b = app.new_platform_key().await;
    let Agent { id, key, .. } = app
        .platform_with(&mk_a)
        .agent(json!({"name": "private", "credits_usd": 1}))
        .await;
    let Agent {
        id: self_registered,
        ..
    } = app.agent().await;

    for target in [&id, &self_registered] {
        let b = master(&mk_b);
        app.get(&format!("/v1/platform/agents/{target}"), &b)
            .await
            .assert_error(404, "NOT_FOUND");
        app.patch(
            &format!("/v1/platform/agents/{target}"),
            json!({"active": false}),
            &b,
        )
        .await
        .assert_error(404, "NOT_FOUND");
        app.post(
            &format!("/v1/platform/agents/{target}/credits"),
            json!({"amount_usd": 5}),
            &b,
        )
        .await
        .assert_error(404, "NOT_FOUND");
        app.post(
            &format!("/v1/platform/agents/{target}/rotate-key"),
            json!({}),
            &b,
        )
        .await
        .assert_error(404, "NOT_FOUND");
    }
    assert_eq!(
        app.get("/v1/platform/agents", &master(&mk_b)).await.body["data"],
        json!([])
    );
    // Nothing moved, nothing broke.
    assert_eq!(
        app.get("/v1/balance", &api(&key)).await.body["credits_usd"],
        json!(1.0)
    );
    assert_eq!(
        app.get(&format!("/v1/platform/agents/{id}"), &master(&mk_a))
            .await
            .body["active"],
        true
    );
}

// ---------------------------------------------------------------- platform: master keys

#[tokio::test]
async fn master_keys_are_created_listed_and_revoked() {
    let app = spawn_app().await;
    let mk = app.master_key.clone();
    let r = app
        .post(
            "/v1/platform/master-keys",
            json!({"name": "ci", "owner_email": "ci@example.com"}),
            &master(&mk),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let second = r.body["key"].as_str().unwrap().to_owned();
    let second_id = r.body["id"].as_str().unwrap().to_owned();
    assert!(second.starts_with("mk_"));
    assert_eq!(r.body["name"], "ci");
    assert_eq!(r.body["owner_email"], "ci@example.com");
    assert!(r.body["created_at"].as_str().unwrap().ends_with('Z'));

    // Same platform: the new key sees the same fleet.
    let Agent { id: agent, .. } = app
        .platform_with(&mk)
        .agent(json!({"name": "shared"}))
        .await;
    assert_eq!(
        app.get(&format!("/v1/platform/agents/{agent}"), &master(&second))
            .await
            .status,
        200
    );

    let list = app.get("/v1/platform/master-keys", &master(&mk)).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let data = list.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let secret_part = second.rsplit('_').next().unwrap();
    assert!(
        !list.text.contains(secret_part) && !list.text.contains(&mk),
        "{}",
        list.text
    );
    assert!(!list.text.contains("secret_hash") && !list.text.contains("argon2"));
    let entry = data.iter().find(|k| k["id"] == second_id.as_str()).unwrap();
    assert_eq!(entry["status"], "active");
    assert_eq!(entry["last4"], &second[second.len() - 4..]);

    for (body, field) in [
        (json!({"name": "x"}), "owner_email"),
        (json!({"owner_email": "a@b.co"}), "name"),
        (json!({"name": "x", "owner_email": "bad"}), "owner_email"),
    ] {
        app.post("/v1/platform/master-keys", body, &master(&mk))
            .await
            .assert_invalid(field);
    }

    // A key cannot revoke itself...
    let r = app
        .delete(
            &format!("/v1/platform/master-keys/{second_id}"),
            &master(&second),
        )
        .await;
    r.assert_error(409, "CONFLICT");
    // ...but another key of the platform can, and then it stops working at once.
    let r = app
        .delete(
            &format!("/v1/platform/master-keys/{second_id}"),
            &master(&mk),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "revoked");
    let r = app.get("/v1/platform/agents", &master(&second)).await;
    assert_eq!(
        r.text,
        r#"{"error":"Master key has been revoked","code":"UNAUTHORIZED"}"#
    );
    app.delete(
        &format!("/v1/platform/master-keys/{second_id}"),
        &master(&mk),
    )
    .await
    .assert_error(404, "NOT_FOUND");
    let list = app.get("/v1/platform/master-keys", &master(&mk)).await;
    let entry = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == second_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(entry["status"], "revoked");
    assert!(entry["revoked_at"].is_string());

    // Another platform's keys are out of reach.
    let other = app.new_platform_key().await;
    let other_id = aibank_auth::keys::parse(&other).unwrap().id;
    app.delete(
        &format!("/v1/platform/master-keys/{other_id}"),
        &master(&mk),
    )
    .await
    .assert_error(404, "NOT_FOUND");
    assert_eq!(
        app.get("/v1/platform/agents", &master(&other)).await.status,
        200
    );
}

// ---------------------------------------------------------------- several instances

/// Key status is served from memory for `AIBANK_AUTH_STATUS_TTL_MS`: a rotation is
/// immediate on the instance that made it and reaches the others within the TTL.
#[tokio::test]
async fn other_instances_see_a_rotation_within_the_status_ttl() {
    let ttl = std::time::Duration::from_millis(400);
    let a = spawn_app_with(|c| c.auth_status_ttl = ttl).await;
    let mk = a.master_key.clone();
    let boot = mk.clone();
    let b = crate::support::spawn_app_on(
        a.db.clone(),
        move |c| {
            c.auth_status_ttl = ttl;
            c.bootstrap_master_key = Some(boot.into());
        },
        std::sync::Arc::new(aibank_core::SystemClock),
    )
    .await;
    let Agent { id, key: old, .. } = a.platform_with(&mk).agent(json!({"name": "shared"})).await;
    assert_eq!(
        b.get("/v1/balance", &api(&old)).await.status,
        200,
        "instance b remembers the key"
    );

    let r = a
        .post(
            &format!("/v1/platform/agents/{id}/rotate-key"),
            json!({}),
            &master(&mk),
        )
        .await;
    let new = r.body["apiKey"].as_str().unwrap().to_owned();
    assert_eq!(
        a.get("/v1/balance", &api(&old)).await.status,
        401,
        "immediate where it happened"
    );
    assert_eq!(
        b.get("/v1/balance", &api(&new)).await.status,
        200,
        "the new key works everywhere at once"
    );
    tokio::time::sleep(ttl + std::time::Duration::from_millis(100)).await;
    assert_eq!(
        b.get("/v1/balance", &api(&old)).await.status,
        401,
        "and the old one dies everywhere within the TTL"
    );

    // Deactivation follows the same rule.
    assert_eq!(b.get("/v1/balance", &api(&new)).await.status, 200);
    a.patch(
        &format!("/v1/platform/agents/{id}"),
        json!({"active": false}),
        &master(&mk),
    )
    .await;
    assert_eq!(a.get("/v1/balance", &api(&new)).await.status, 403);
    tokio::time::sleep(ttl + std::time::Duration::from_millis(100)).await;
    assert_eq!(b.get("/v1/balance", &api(&new)).await.status, 403);
}
