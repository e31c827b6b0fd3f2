//! Per-call priced HTTP providers (`"kind": "http"`): each listed endpoint's price is held,
//! then captured or released by its charge rule; only listed endpoints are forwarded; the
//! key goes where the provider wants it and ours never does; agents' own keys where the
//! provider takes them; x402 at the endpoint's price.

use crate::support::anvil::{Anvil, CHAIN_BASE_SEPOLIA, USDC_BASE_SEPOLIA};
use crate::support::mock_http_api::MockHttpApi;
use crate::support::Agent;
use crate::support::{assert_books_balance, spawn_app_with, TestApp};
use aibank_core::Usd;
use aibank_server::Config;
use serde_json::{json, Value};

/// The platform keys of the declared providers, by their `api_key_env`.
fn env(var: &str) -> Option<String> {
    match var {
        "HDR_KEY" => Some("k-header-platform".into()),
        "BEARER_KEY" => Some("k-bearer-platform".into()),
        "QUERY_KEY" => Some("k-query-platform".into()),
        _ => None,
    }
}

/// `hdr` (X-API-Key, takes agents' keys), `bearer` (Authorization: Bearer) and `query`
/// (`?apikey=`), all at `base`, with the same endpoints.
fn providers(base: &str) -> Value {
    let endpoints = json!([
        {"method": "GET", "path": "v1/items/{id}", "price_usd": 0.25},
        {"method": "POST", "path": "/v1/items", "price_usd": 1.5},
        {"method": "DELETE", "path": "v1/items/{id}", "price_usd": 0.1, "charge": "any"},
        {"method": "PUT", "path": "v1/costly", "price_usd": 50},
        {"method": "GET", "path": "v1/free", "price_usd": 0},
    ]);
    json!([
        {"name": "hdr", "kind": "http", "base_url": base, "api_key_env": "HDR_KEY",
         "auth": {"header": "X-API-Key", "format": "{key}"}, "byok": true,
         "endpoints": endpoints},
        {"name": "bearer", "kind": "http", "base_url": base, "api_key_env": "BEARER_KEY",
         "auth": {"header": "Authorization", "format": "Bearer {key}"},
         "endpoints": endpoints},
        {"name": "query", "kind": "http", "base_url": base, "api_key_env": "QUERY_KEY",
         "auth": {"query": "apikey"}, "endpoints": endpoints},
    ])
}

fn use_providers(c: &mut Config, base: &str) {
    let unused = |url: &str| (url.to_owned(), None);
    let custom = serde_json::from_value(providers(base)).unwrap();
    c.providers = aibank_gateway::Registry::build(
        unused("http://127.0.0.1:9"),
        unused("http://127.0.0.1:9"),
        unused("http://127.0.0.1:9"),
        custom,
        std::collections::BTreeMap::new(),
        std::collections::BTreeMap::new(),
        env,
    )
    .unwrap();
}

async fn setup() -> (TestApp, MockHttpApi) {
    let mock = MockHttpApi::start().await;
    let base = mock.base.clone();
    let app = spawn_app_with(move |c| use_providers(c, &base)).await;
    (app, mock)
}

async fn credits(app: &TestApp, key: &str) -> i64 {
    let r = app.get("/v1/balance", &[("X-API-Key", key)]).await;
    let v: Usd = serde_json::from_value(r.body["credits_usd"].clone()).unwrap();
    v.micros()
}

async fn usage(app: &TestApp, key: &str) -> Vec<Value> {
    let r = app.get("/v1/usage", &[("X-API-Key", key)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["data"].as_array().unwrap().clone()
}

fn cost(r: &crate::support::Resp) -> &str {
    r.headers
        .get("x-aibank-cost-usd")
        .unwrap()
        .to_str()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_holds_its_price_and_captures_it_exactly_on_a_2xx() {
    let (app, mock) = setup().await;
    let Agent { key, .. } = app.agent().await;
    let before = credits(&app, &key).await;

    let r = app
        .get(
            "/v1/gateway/hdr/v1/items/42?color=red",
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["method"], "GET");
    assert_eq!(r.body["path"], "/v1/items/42");
    assert_eq!(r.body["query"], "color=red");
    assert_eq!(cost(&r), "0.25");
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    assert_eq!(credits(&app, &key).await, before - 250_000);

    let r = app
        .post(
            "/v1/gateway/hdr/v1/items",
            json!({"name": "x"}),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["body"], r#"{"name":"x"}"#);
    assert_eq!(r.body["headers"]["content-type"], "application/json");
    assert_eq!(cost(&r), "1.5");
    assert_eq!(credits(&app, &key).await, before - 1_750_000);

    // A free endpoint is recorded at zero.
    let r = app
        .get("/v1/gateway/hdr/v1/free", &[("X-API-Key", &key)])
        .await;
    assert_eq!((r.status, cost(&r)), (200, "0.0"));
    assert_eq!(credits(&app, &key).await, before - 1_750_000);

    let rows = usage(&app, &key).await;
    let mut seen: Vec<(String, String, String)> = rows
        .iter()
        .map(|u| {
            (
                u["provider"].as_str().unwrap().to_owned(),
                u["model"].as_str().unwrap().to_owned(),
                u["cost_usd"].to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("hdr".into(), "GET /v1/free".into(), "0.0".into()),
            ("hdr".into(), "GET /v1/items/{id}".into(), "0.25".into()),
            ("hdr".into(), "POST /v1/items".into(), "1.5".into()),
        ]
    );
    assert_eq!(mock.requests().len(), 3);
    assert!(assert_books_balance(&app.pool) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_release_the_hold_and_charge_any_captures_on_a_4xx() {
    let (app, mock) = setup().await;
    let Agent { key, .. } = app.agent().await;
    let before = credits(&app, &key).await;

    for status in [404, 500, 503] {
        let r = app
            .get(
                &format!("/v1/gateway/hdr/v1/items/1?status={status}"),
                &[("X-API-Key", &key)],
            )
            .await;
        assert_eq!(r.status, status, "{}", r.text);
        assert_eq!(
            r.body["path"], "/v1/items/1",
            "the upstream's answer, as it wrote it"
        );
        assert_eq!(cost(&r), "0.0");
    }
    assert_eq!(credits(&app, &key).await, before);
    assert!(usage(&app, &key).await.is_empty());

    let r = app
        .delete(
            "/v1/gateway/hdr/v1/items/1?status=404",
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!((r.status, cost(&r)), (404, "0.1"));
    assert_eq!(credits(&app, &key).await, before - 100_000);
    let rows = usage(&app, &key).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["model"], "DELETE /v1/items/{id}");
    assert_eq!(mock.requests().len(), 4);

    // No answer at all: released whatever the rule.
    let dead = spawn_app_with(|c| use_providers(c, "http://127.0.0.1:9")).await;
    let Agent { key, .. } = dead.agent().await;
    let before = credits(&dead, &key).await;
    let r = dead
        .delete("/v1/gateway/hdr/v1/items/1", &[("X-API-Key", &key)])
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (502, Some("UPSTREAM_ERROR"))
    );
    assert_eq!(credits(&dead, &key).await, before);
    // A key placed in the query string stays out of the failure's log line.
    let r = dead
        .get("/v1/gateway/query/v1/items/1", &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert!(!r.text.contains("k-query-platform"));
    let logs = crate::support::captured_logs();
    assert!(
        logs.contains("Could not reach the upstream provider"),
        "the failure is logged"
    );
    assert!(!logs.contains("k-query-platform"), "the key is not");
    assert!(assert_books_balance(&app.pool) > 0);
    assert!(assert_books_balance(&dead.pool) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlisted_paths_and_methods_are_404_and_traversal_is_refused() {
    let (app, mock) = setup().await;
    let Agent { key, .. } = app.agent().await;
    for (method, path) in [
        ("GET", "/v1/gateway/hdr/v1/other"),
        ("GET", "/v1/gateway/hdr/v1/items"),
        ("PATCH", "/v1/gateway/hdr/v1/items/1"),
        ("POST", "/v1/gateway/hdr/v1/items/1"),
        ("GET", "/v1/gateway/hdr/v1/items/1/more"),
        ("GET", "/v1/gateway/hdr/v1/items/%2E%2E"),
        ("GET", "/v1/gateway/hdr/v1/items/a%2Fb"),
        ("GET", "/v1/gateway/hdr/v1/items/a%252Fb"),
        ("GET", "/v1/gateway/hdr/v1/free/..%2F..%2Fadmin"),
        ("GET", "/v1/gateway/hdr/v1//free"),
    ] {
        let r = app.send(method, path, None, &[("X-API-Key", &key)]).await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
        assert_eq!(r.body["code"], "NOT_FOUND", "{method} {path}");
    }
    assert!(mock.requests().is_empty(), "the upstream saw nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_placement_reaches_the_upstream_and_our_key_never_does() {
    let (app, mock) = setup().await;
    let Agent { key, .. } = app.agent().await;
    let bearer = format!("Bearer {key}");
    let ours: [(&str, &str); 3] = [
        ("Authorization", &bearer),
        ("X-Payment-Chain", "base"),
        ("Cookie", "session=1"),
    ];

    let r = app
        .get(
            "/v1/gateway/hdr/v1/items/1",
            &[("X-API-Key", &key), ours[1], ours[2]],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["headers"]["x-api-key"], "k-header-platform");

    let r = app.get("/v1/gateway/bearer/v1/items/2", &ours).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["headers"]["authorization"],
        "Bearer k-bearer-platform"
    );
    assert!(r.body["headers"].get("x-api-key").is_none());

    // The caller's own `apikey` never replaces the provider's.
    let r = app
        .get("/v1/gateway/query/v1/items/3?apikey=mine&x=1", &ours)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["query"], "x=1&apikey=k-query-platform");
    assert!(r.body["headers"].get("authorization").is_none());

    let requests = mock.requests();
    assert_eq!(requests.len(), 3);
    for req in requests {
        for (name, value) in &req.headers {
            assert!(!value.contains(&key), "{name} carried our key");
            assert!(
                !name.starts_with("x-payment") && name != "cookie",
                "{name} went upstream"
            );
        }
        assert!(!req.path.contains(&key));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_own_key_wins_where_the_provider_takes_it_and_is_refused_elsewhere() {
    let (app, mock) = setup().await;
    let Agent { key, .. } = app.agent().await;
    let before = credits(&app, &key).await;

    let r = app
        .post(
            "/v1/provider-keys/hdr",
            json!({"apiKey": "k-header-own"}),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({"provider": "hdr", "configured": true}));
    let r = app
        .get("/v1/gateway/hdr/v1/items/1", &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["headers"]["x-api-key"], "k-header-own");
    assert_eq!(
        cost(&r),
        "0.0",
        "calls on the agent's own key are not charged"
    );
    assert_eq!(credits(&app, &key).await, before);
    let rows = usage(&app, &key).await;
    assert_eq!(rows[0]["description"], "own upstream key");

    let r = app
        .delete("/v1/provider-keys/hdr", &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .get("/v1/gateway/hdr/v1/items/1", &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.body["headers"]["x-api-key"], "k-header-platform");
    assert_eq!(credits(&app, &key).await, before - 250_000);

    // `bearer` does not take agents' keys.
    let r = app
        .post(
            "/v1/provider-keys/bearer",
            json!({"apiKey": "k-bearer-own"}),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (403, Some("FORBIDDEN")),
        "{}",
        r.text
    );
    let r = app
        .get("/v1/provider-keys/bearer", &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.body["configured"], false);
    assert_eq!(mock.requests().len(), 2);

    let r = app.get("/v1/providers", &[]).await;
    let hdr = r.body["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "hdr")
        .unwrap()
        .clone();
    assert_eq!(hdr["kind"], "http");
    assert_eq!(hdr["byok"], true);
    assert_eq!(
        hdr["endpoints"][0],
        json!({"method": "GET", "path": "v1/items/{id}", "price_usd": 0.25, "charge": "2xx"})
    );
    assert_eq!(hdr["endpoints"][2]["charge"], "any");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_credits_is_402_before_anything_is_forwarded() {
    let (app, mock) = setup().await;
    let Agent { key, .. } = app.agent().await;
    let before = credits(&app, &key).await;
    let r = app
        .send(
            "PUT",
            "/v1/gateway/hdr/v1/costly",
            Some("{}".into()),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["code"], "INSUFFICIENT_CREDITS");
    assert!(mock.requests().is_empty(), "the upstream saw nothing");
    assert_eq!(credits(&app, &key).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_x402_payment_pays_for_a_call_at_the_endpoints_price() {
    let anvil = Anvil::start(CHAIN_BASE_SEPOLIA).await;
    anvil.deploy_erc20(USDC_BASE_SEPOLIA).await;
    let accounts = anvil.accounts().await;
    let (payer, pay_to) = (accounts[1].clone(), accounts[9].clone());
    anvil.mint(USDC_BASE_SEPOLIA, &payer, 100_000_000).await;
    let settings = crate::support::x402_settings(&anvil, &pay_to);
    let mock = MockHttpApi::start().await;
    let base = mock.base.clone();
    let app = spawn_app_with(move |c| {
        use_providers(c, &base);
        c.x402 = Some(settings);
    })
    .await;
    let path = "/v1/gateway/query/v1/items/7";

    let r = app.get(path, &[]).await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["code"], "PAYMENT_REQUIRED");
    assert_eq!(r.body["payment"]["amount"], "0.25", "{}", r.text);
    assert!(mock.requests().is_empty());

    let hash = anvil
        .transfer(USDC_BASE_SEPOLIA, &payer, &pay_to, 250_000)
        .await;
    let r = app
        .get(
            path,
            &[("X-Payment", &hash), ("X-Payment-Chain", "base-sepolia")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(cost(&r), "0.25");
    assert_eq!(r.body["query"], "apikey=k-query-platform");
    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].header("x-payment").is_none());

    let account = format!("x402_base-sepolia_{}", &payer[2..]);
    assert_eq!(app.ledger_state(&account).await, (0, 0));
    let r = app.get(&format!("/v1/payments/{hash}"), &[]).await;
    assert_eq!(r.body["cost_usd"], json!(0.25), "{}", r.text);

    // A failed call paid for keeps the payment as credit.
    let hash = anvil
        .transfer(USDC_BASE_SEPOLIA, &payer, &pay_to, 250_000)
        .await;
    let r = app
        .get(
            &format!("{path}?status=500"),
            &[("X-Payment", &hash), ("X-Payment-Chain", "base-sepolia")],
        )
        .await;
    assert_eq!((r.status, cost(&r)), (500, "0.0"));
    assert_eq!(app.ledger_state(&account).await, (250_000, 250_000));
    assert!(assert_books_balance(&app.pool) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priced_calls_count_against_the_keys_daily_message_limit() {
    let mock = MockHttpApi::start().await;
    let base = mock.base.clone();
    let app = spawn_app_with(move |c| {
        use_providers(c, &base);
        c.gateway.daily_message_limit = 2;
    })
    .await;
    let Agent { key, .. } = app.agent().await;
    // Free and priced endpoints alike.
    for path in ["/v1/gateway/hdr/v1/free", "/v1/gateway/hdr/v1/items/1"] {
        let r = app.get(path, &[("X-API-Key", &key)]).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let before = credits(&app, &key).await;
    let r = app
        .get("/v1/gateway/hdr/v1/items/2", &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(
        (r.body["code"].as_str(), r.body["limit"].as_i64()),
        (Some("RATE_LIMITED"), Some(2))
    );
    assert_eq!(
        credits(&app, &key).await,
        before,
        "the refused call's hold is rolled back"
    );
    assert_eq!(mock.requests().len(), 2);
}
