//! Gateway operations: a provider's several deployments (spread by weight, failover before
//! the first byte, cooldown), their health in `GET /v1/providers`, and the per-key call
//! limits (`allowedModels`, `rpmLimit`, `tpmLimit`) a platform sets on an agent and an
//! agent on its own key, with the manual clock, on the configured backend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aibank_core::ManualClock;
use aibank_gateway::{DeploymentSpec, Registry};
use aibank_server::config::Config;
use serde_json::{json, Value};

use crate::support::mock_upstream::MockUpstream;
use crate::support::{spawn_app_on, spawn_app_with_clock, use_mock_upstream, Agent, TestApp};

const T0: i64 = 1_790_000_000_000;
const MESSAGES: &str = "/v1/gateway/anthropic/v1/messages";

fn hello() -> Value {
    json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 100,
           "messages": [{"role": "user", "content": "Hello"}]})
}

/// Gives `anthropic` these deployments `(name, base URL, weight)`, each with its own key
/// `sk-<name>`; no daily message limit.
fn use_deployments(c: &mut Config, deployments: &[(&str, &str, u32)]) {
    let specs = deployments
        .iter()
        .map(|(name, base, weight)| DeploymentSpec {
            name: Some((*name).to_owned()),
            base_url: (*base).to_owned(),
            api_key_env: Some(format!("KEY_{name}")),
            weight: Some(*weight),
        })
        .collect();
    let keys: BTreeMap<String, String> = deployments
        .iter()
        .map(|(name, ..)| (format!("KEY_{name}"), format!("sk-{name}")))
        .collect();
    c.providers = Registry::build(
        ("http://127.0.0.1:9".into(), None),
        ("http://127.0.0.1:9".into(), None),
        ("http://127.0.0.1:9".into(), None),
        Vec::new(),
        BTreeMap::new(),
        BTreeMap::from([("anthropic".to_owned(), specs)]),
        move |var| keys.get(var).cloned(),
    )
    .unwrap();
    c.gateway.daily_message_limit = 0;
}

async fn fleet_agent(app: &TestApp, body: Value) -> Agent {
    let mut body = body;
    body["credits_usd"] = json!(50);
    app.platform().agent(body).await
}

async fn call(
    app: &TestApp,
    agent: &Agent,
    body: Value,
    extra: &[(&str, &str)],
) -> crate::support::Resp {
    let mut headers = vec![("X-API-Key", agent.key.as_str())];
    headers.extend_from_slice(extra);
    app.post(MESSAGES, body, &headers).await
}

/// Sets `limits` on `agent` as its platform (`PATCH /v1/platform/agents/{id}`); the view.
async fn limit_agent(app: &TestApp, agent: &Agent, limits: Value) -> Value {
    let r = app
        .platform()
        .patch(&format!("/v1/platform/agents/{}", agent.id), limits)
        .await;
    r.assert_ok();
    r.body
}

/// `PATCH /v1/keys/{id}` of the agent's first key.
async fn own_key_path(agent: &Agent) -> String {
    let keys = agent.get("/v1/keys").await;
    format!("/v1/keys/{}", keys.str("/data/0/id"))
}

/// The usage rows of `agent`, newest first.
async fn usage(agent: &Agent) -> Vec<Value> {
    let r = agent.get("/v1/usage").await;
    r.assert_ok();
    r.body["data"].as_array().unwrap().clone()
}

async fn deployment_states(app: &TestApp) -> BTreeMap<String, Value> {
    let r = app.anonymous().get("/v1/providers").await;
    r.assert_ok();
    let anthropic = r.body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "anthropic")
        .unwrap()
        .clone();
    assert!(!r.text.contains("sk-"), "no key is shown: {}", r.text);
    anthropic["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["name"].as_str().unwrap().to_owned(), d.clone()))
        .collect()
}

/// What the agent's account holds for calls under way, read from the database.
async fn held(app: &TestApp, agent: &Agent) -> i64 {
    let (pool, id) = (app.pool.clone(), agent.id.clone());
    tokio::task::spawn_blocking(move || {
        let mut c = pool.get().unwrap();
        aibank_ledger::balance(&mut c, &id).unwrap().held_micros
    })
    .await
    .unwrap()
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deployments_are_retried_billed_once_and_cooled_until_the_cooldown_ends() {
    let (a, b, c) = (
        MockUpstream::start().await,
        MockUpstream::start().await,
        MockUpstream::start().await,
    );
    a.behave(Some("error-503"));
    b.behave(Some("error-429"));
    let bases = [a.base.clone(), b.base.clone(), c.base.clone()];
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), move |cfg| {
        // `c` is a standby: `a` and `b` are always tried first, in either order.
        use_deployments(
            cfg,
            &[
                ("a", &bases[0], 500),
                ("b", &bases[1], 500),
                ("c", &bases[2], 0),
            ],
        );
        cfg.gateway.cooldown = Duration::from_secs(30);
    })
    .await;
    let agent = fleet_agent(&app, json!({})).await;
    let before = agent.get("/v1/balance").await.body["credits_usd"].clone();

    let r = call(&app, &agent, hello(), &[]).await;
    r.assert_ok();
    assert_eq!(
        r.body["type"], "message",
        "the client sees the answer alone"
    );
    assert_eq!(
        (a.requests().len(), b.requests().len(), c.requests().len()),
        (1, 1, 1)
    );
    assert_eq!(c.last_request().unwrap().header("x-api-key"), Some("sk-c"));
    let cost: f64 = r.headers["x-aibank-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(cost > 0.0);
    let rows = usage(&agent).await;
    assert_eq!(rows.len(), 1, "billed once: {rows:?}");
    assert_eq!(rows[0]["deployment"], "c");
    let after = agent.get("/v1/balance").await.body["credits_usd"].clone();
    let spent = before.as_f64().unwrap() - after.as_f64().unwrap();
    assert!((spent - cost).abs() < 1e-9, "{before} - {after} = {cost}");

    let states = deployment_states(&app).await;
    assert_eq!(states["a"]["state"], "cooling");
    assert_eq!(states["a"]["last_error"], "server_error");
    assert_eq!(states["b"]["state"], "cooling");
    assert_eq!(states["b"]["last_error"], "rate_limited");
    assert_eq!(states["c"]["state"], "ok");
    assert_eq!(states["c"]["last_error"], Value::Null);
    assert_eq!(
        states["a"]["cooling_until"],
        aibank_core::clock::rfc3339(T0 + 30_000)
    );

    // While they cool, calls go straight to `c`.
    clock.advance(Duration::from_secs(29));
    call(&app, &agent, hello(), &[]).await.assert_ok();
    assert_eq!(
        (a.requests().len(), b.requests().len(), c.requests().len()),
        (1, 1, 2)
    );

    // Once the cooldown is over they are tried again.
    clock.advance(Duration::from_secs(1));
    call(&app, &agent, hello(), &[]).await.assert_ok();
    assert_eq!(
        (a.requests().len(), b.requests().len(), c.requests().len()),
        (2, 2, 3)
    );
    assert_eq!(usage(&agent).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_and_when_retries_run_out_the_last_answer_is_passed_back() {
    let (up, broken) = (MockUpstream::start().await, MockUpstream::start().await);
    broken.behave(Some("error-503"));
    let down = format!("http://127.0.0.1:{}", closed_port());
    let bases = [down.clone(), up.base.clone()];
    let app = spawn_app_with_clock(Arc::new(ManualClock::new(T0)), move |cfg| {
        use_deployments(cfg, &[("down", &bases[0], 1), ("up", &bases[1], 0)]);
    })
    .await;
    let agent = fleet_agent(&app, json!({})).await;
    call(&app, &agent, hello(), &[]).await.assert_ok();
    assert_eq!(up.requests().len(), 1);
    assert_eq!(
        deployment_states(&app).await["down"]["last_error"],
        "connect"
    );

    // No retries: the failure is the client's answer, and nothing is charged.
    let base = broken.base.clone();
    let app = spawn_app_with_clock(Arc::new(ManualClock::new(T0)), move |cfg| {
        use_deployments(cfg, &[("x", &base, 1), ("y", &down, 0)]);
        cfg.gateway.retries = 0;
    })
    .await;
    let agent = fleet_agent(&app, json!({})).await;
    let r = call(&app, &agent, hello(), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.0");
    assert_eq!(broken.requests().len(), 1);
    assert_eq!(
        agent.get("/v1/balance").await.body["credits_usd"].as_f64(),
        Some(50.0)
    );
    assert_eq!(held(&app, &agent).await, 0, "no hold left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_own_4xx_and_a_stream_that_began_are_not_retried() {
    let (first, standby) = (MockUpstream::start().await, MockUpstream::start().await);
    let bases = [first.base.clone(), standby.base.clone()];
    let app = spawn_app_with_clock(Arc::new(ManualClock::new(T0)), move |cfg| {
        use_deployments(cfg, &[("first", &bases[0], 1), ("standby", &bases[1], 0)]);
    })
    .await;
    let agent = fleet_agent(&app, json!({})).await;

    first.behave(Some("error-400"));
    let r = call(&app, &agent, hello(), &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(standby.requests().len(), 0);
    assert_eq!(deployment_states(&app).await["first"]["state"], "ok");

    // The stream's head and first events reached the client before the cut.
    first.behave(Some("cut"));
    let mut streaming = hello();
    streaming["stream"] = json!(true);
    let r = call(&app, &agent, streaming, &[]).await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("message_start"), "{}", r.text);
    assert_eq!(standby.requests().len(), 0, "not retried");
    let rows = usage(&agent).await;
    assert_eq!(rows.len(), 1, "billed once: {rows:?}");
    assert_eq!(rows[0]["deployment"], "first");
    let states = deployment_states(&app).await;
    assert_eq!(states["first"]["state"], "cooling");
    assert_eq!(states["first"]["last_error"], "broken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_spread_by_weight() {
    let (light, heavy) = (MockUpstream::start().await, MockUpstream::start().await);
    let bases = [light.base.clone(), heavy.base.clone()];
    let app = spawn_app_with_clock(Arc::new(ManualClock::new(T0)), move |cfg| {
        use_deployments(cfg, &[("light", &bases[0], 1), ("heavy", &bases[1], 3)]);
    })
    .await;
    let agent = fleet_agent(&app, json!({})).await;
    for _ in 0..200 {
        call(&app, &agent, hello(), &[]).await.assert_ok();
    }
    // Expected 50 and 150; ±25 is four standard deviations of the binomial (6.1).
    let n = light.requests().len();
    assert_eq!(n + heavy.requests().len(), 200);
    assert!((25..=75).contains(&n), "light served {n} of 200");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_models_refuse_other_models_before_a_hold_and_a_key_may_only_narrow_them() {
    let mock = MockUpstream::start().await;
    let base = mock.base.clone();
    let app = spawn_app_with_clock(Arc::new(ManualClock::new(T0)), move |c| {
        use_mock_upstream(c, &base, true);
    })
    .await;
    let agent = fleet_agent(&app, json!({})).await;
    let view = limit_agent(
        &app,
        &agent,
        json!({"allowedModels": ["claude-*", "gpt-4o-mini"]}),
    )
    .await;
    assert_eq!(
        view["security"]["allowedModels"],
        json!(["claude-*", "gpt-4o-mini"])
    );

    call(&app, &agent, hello(), &[]).await.assert_ok();
    let openai = |model: &str| json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}]});
    let r = app
        .post(
            "/v1/gateway/openai/v1/chat/completions",
            openai("gpt-4o"),
            &[("X-API-Key", &agent.key)],
        )
        .await;
    r.assert_error(403, "FORBIDDEN");
    assert_eq!(r.body["field"], "model");
    assert_eq!(r.body["model"], "gpt-4o");
    assert_eq!(r.body["limitedBy"], "agent");
    assert_eq!(mock.requests().len(), 1, "refused before it went out");
    assert_eq!(held(&app, &agent).await, 0, "nothing held");

    // The key narrows its own; it cannot widen past the agent's.
    let path = own_key_path(&agent).await;
    let r = agent
        .patch(&path, json!({"allowedModels": ["gpt-*"]}))
        .await;
    r.assert_error(403, "FORBIDDEN");
    assert_eq!(r.body["field"], "allowedModels");
    let r = agent
        .patch(&path, json!({"allowedModels": ["claude-haiku-*"]}))
        .await;
    r.assert_ok();
    assert_eq!(r.body["allowedModels"], json!(["claude-haiku-*"]));
    let r = call(&app, &agent, hello(), &[]).await;
    r.assert_error(403, "FORBIDDEN");
    assert_eq!(r.body["limitedBy"], "key");
    let mut haiku = hello();
    haiku["model"] = json!("claude-haiku-4-5");
    call(&app, &agent, haiku, &[]).await.assert_ok();
    agent
        .patch(&path, json!({"allowedModels": []}))
        .await
        .assert_invalid("allowedModels");
    agent
        .patch(&path, json!({"allowedModels": null}))
        .await
        .assert_ok();
    call(&app, &agent, hello(), &[]).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rpm_limit_is_the_narrower_of_key_and_agent_and_resets_after_a_minute() {
    let mock = MockUpstream::start().await;
    let base = mock.base.clone();
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), move |c| use_mock_upstream(c, &base, true)).await;
    let agent = fleet_agent(&app, json!({})).await;
    limit_agent(&app, &agent, json!({"rpmLimit": 3})).await;
    let path = own_key_path(&agent).await;
    let r = agent.patch(&path, json!({"rpmLimit": 4})).await;
    r.assert_error(403, "FORBIDDEN");
    assert_eq!(r.body["limit"], 3);
    let r = agent.patch(&path, json!({"rpmLimit": 2})).await;
    r.assert_ok();
    assert_eq!(r.body["rpmLimit"], 2);

    call(&app, &agent, hello(), &[]).await.assert_ok();
    clock.advance(Duration::from_secs(10));
    call(&app, &agent, hello(), &[]).await.assert_ok();
    let r = call(&app, &agent, hello(), &[]).await;
    r.assert_error(429, "RATE_LIMITED");
    assert_eq!(
        r.body,
        json!({"error": "Requests-per-minute limit reached for this API key",
               "code": "RATE_LIMITED", "limit": 2, "used": 2, "resetAt": T0 + 60_000,
               "limitName": "rpmLimit"})
    );
    assert_eq!(r.headers["retry-after"], "50");
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(
        held(&app, &agent).await,
        0,
        "the refused call's hold rolled back"
    );

    clock.advance(Duration::from_secs(50));
    call(&app, &agent, hello(), &[]).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tpm_limit_admits_on_the_estimate_and_counts_the_reported_usage() {
    let mock = MockUpstream::start().await;
    let base = mock.base.clone();
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), move |c| use_mock_upstream(c, &base, true)).await;
    let agent = fleet_agent(&app, json!({})).await;
    limit_agent(&app, &agent, json!({"tpmLimit": 300})).await;
    // Each call is held at its estimate (prompt bytes / 3 + max_tokens) and then counted
    // at the 18 tokens the mock reports (11 in, 7 out).
    let estimate = serde_json::to_vec(&hello()).unwrap().len().div_ceil(3) + 100;
    let admitted = (300 - estimate) / 18 + 1;
    for _ in 0..admitted {
        call(&app, &agent, hello(), &[]).await.assert_ok();
    }
    let r = call(&app, &agent, hello(), &[]).await;
    r.assert_error(429, "RATE_LIMITED");
    assert_eq!(r.body["limitName"], "tpmLimit");
    assert_eq!(r.body["limit"], 300);
    assert_eq!(r.body["used"], 18 * admitted, "{}", r.text);
    assert_eq!(mock.requests().len(), admitted);
    clock.advance(Duration::from_secs(60));
    call(&app, &agent, hello(), &[]).await.assert_ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_one_database_share_the_rpm_counter() {
    let mock = MockUpstream::start().await;
    let base = mock.base.clone();
    let clock = Arc::new(ManualClock::new(T0));
    let a = spawn_app_with_clock(clock.clone(), {
        let base = base.clone();
        move |c| use_mock_upstream(c, &base, true)
    })
    .await;
    let b = spawn_app_on(
        a.db.clone(),
        move |c| use_mock_upstream(c, &base, true),
        clock,
    )
    .await;
    let agent = fleet_agent(&a, json!({})).await;
    limit_agent(&a, &agent, json!({"rpmLimit": 3})).await;
    for app in [&a, &b, &a] {
        call(app, &agent, hello(), &[]).await.assert_ok();
    }
    let r = call(&b, &agent, hello(), &[]).await;
    r.assert_error(429, "RATE_LIMITED");
    assert_eq!(r.body["used"], 3);
    assert_eq!(mock.requests().len(), 3);
}
