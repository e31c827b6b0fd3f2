//! The service catalog: services sold by agents and platforms, the listing, subscriptions,
//! and the paid proxy, with the money checked on every side.

use crate::support::mock_service::{self, openapi, openapi_3_0, MockService};
use crate::support::Agent;
use crate::support::{assert_books_balance, spawn_app_with, TestApp};
use aibank_core::Usd;
use aibank_gateway::service_spec;
use aibank_server::config::Config;
use aibank_store::models::Service;
use serde_json::{json, Value};

const OWNER_KEY: &str = "owner-secret-key-123";

fn private(c: &mut Config) {
    c.catalog_allow_private = true;
}

fn service_body(base: &str, price: &str, category: &str, name: &str) -> Value {
    json!({
        "name": name,
        "description": "Weather and translation for agents",
        "base_url": base,
        "openapi_spec": openapi(),
        "price_per_call_usd": price.parse::<f64>().unwrap(),
        "category": category,
        "provider_key": {"header": "X-Provider-Key", "value": OWNER_KEY},
    })
}

/// Creates a service as `auth` (a header pair); returns its id.
async fn create(app: &TestApp, body: Value, auth: (&str, &str)) -> String {
    let r = app.post("/v1/services", body, &[auth]).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn micros(app: &TestApp, account: &str) -> i64 {
    let (sum, balance) = app.ledger_state(account).await;
    assert_eq!(sum, balance, "journal of {account} equals its balance");
    balance
}

/// The journal kinds and deltas of an account, in order.
async fn journal(app: &TestApp, account: &str) -> Vec<(String, i64)> {
    use aibank_store::schema::journal_entries as j;
    use diesel::prelude::*;
    let (pool, id) = (app.pool.clone(), account.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut c = pool.get().unwrap();
        j::table
            .filter(j::account_id.eq(id))
            .order(j::id.asc())
            .select((j::kind, j::delta_micros))
            .load::<(String, i64)>(&mut c)
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn create_returns_the_service_without_its_key_for_agents_and_platforms() {
    let mock = MockService::start().await;
    let app = spawn_app_with(private).await;
    let Agent { key, .. } = app.agent().await;
    let r = app
        .post(
            "/v1/services",
            service_body(&mock.base, "0.01", "weather", "Weather"),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let b = &r.body;
    assert!(b["id"].as_str().unwrap().starts_with("svc_"));
    assert_eq!(b["name"], "Weather");
    assert_eq!(b["description"], "Weather and translation for agents");
    assert_eq!(b["base_url"], mock.base);
    assert_eq!(b["pricing_model"], "per_call");
    assert_eq!(b["price_per_call_usd"], json!(0.01));
    assert_eq!(b["category"], "weather");
    assert_eq!(b["endpoints_count"], 7);
    assert_eq!(b["status"], "active");
    assert!(b["created_at"].is_string());
    let keys: Vec<&String> = b.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 10, "exactly the documented fields: {keys:?}");
    assert!(
        !r.text.contains(OWNER_KEY),
        "the provider key is never returned"
    );

    let mut body = service_body(&mock.base, "0", "weather", "Platform weather");
    body["openapi_spec"] = openapi_3_0();
    let r = app
        .post("/v1/services", body, &[("X-Master-Key", &app.master_key)])
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["price_per_call_usd"], json!(0.0));
    let id = r.body["id"].as_str().unwrap();
    let got = app
        .get(
            &format!("/v1/services/{id}"),
            &[("X-Master-Key", &app.master_key)],
        )
        .await;
    assert_eq!(got.status, 200, "{}", got.text);
    assert_eq!(got.body["total_calls"], 0);
    assert_eq!(got.body["total_revenue_usd"], json!(0.0));
    assert_eq!(got.body["subscribers"], 0);
    assert!(!got.text.contains(OWNER_KEY));

    // Sealed at rest, bound to the service.
    let (pool, sid) = (app.pool.clone(), id.to_owned());
    let row: Service = tokio::task::spawn_blocking(move || {
        let mut c = pool.get().unwrap();
        aibank_store::repo::services::find(&mut c, &sid)
            .unwrap()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(row.provider_key_header.as_deref(), Some("x-provider-key"));
    assert!(!row.provider_key_sealed.unwrap().contains(OWNER_KEY));
}

#[tokio::test]
async fn bad_specs_are_invalid_spec_and_bad_fields_invalid_input() {
    let mock = MockService::start().await;
    let app = spawn_app_with(private).await;
    let Agent { key, .. } = app.agent().await;
    let auth = [("X-API-Key", key.as_str())];
    for spec in [
        json!({"swagger": "2.0", "paths": {"/a": {"get": {}}}}),
        json!({"openapi": "3.1.0"}),
        json!({"openapi": "3.1.0", "paths": {}}),
        json!({"openapi": "3.0.3", "paths": {"a": {"get": {}}}}),
        json!({"openapi": "3.0.3", "paths": {"/../x": {"get": {}}}}),
        json!("not an object"),
    ] {
        let mut body = service_body(&mock.base, "0.01", "weather", "W");
        body["openapi_spec"] = spec.clone();
        let r = app.post("/v1/services", body, &auth).await;
        assert_eq!(r.status, 400, "{spec}: {}", r.text);
        assert_eq!(r.body["code"], "INVALID_SPEC", "{spec}");
    }
    let cases: Vec<(&str, Value)> = vec![
        ("name", json!("")),
        ("name", json!("a\u{7}b")),
        ("name", json!("x".repeat(101))),
        ("description", json!("d".repeat(2001))),
        ("category", json!("Not Valid")),
        ("category", json!("")),
        ("price_per_call_usd", json!(-1)),
        ("price_per_call_usd", json!(0.000_000_1)),
        ("provider_key", json!({"header": "X-API-Key", "value": "v"})),
        ("provider_key", json!({"header": "x-payment", "value": "v"})),
        (
            "provider_key",
            json!({"header": "connection", "value": "v"}),
        ),
        (
            "provider_key",
            json!({"header": "bad header", "value": "v"}),
        ),
        ("provider_key", json!({"header": "x-k", "value": "a\nb"})),
        (
            "provider_key",
            json!({"header": "x-k", "value": "v".repeat(513)}),
        ),
    ];
    for (field, value) in cases {
        let mut body = service_body(&mock.base, "0.01", "weather", "W");
        body[field] = value.clone();
        let r = app.post("/v1/services", body, &auth).await;
        assert_eq!(r.status, 400, "{field}={value}: {}", r.text);
        assert_eq!(r.body["code"], "INVALID_INPUT", "{field}={value}");
    }
    let r = app
        .post(
            "/v1/services",
            service_body(&mock.base, "0.01", "weather", "W"),
            &[],
        )
        .await;
    assert_eq!(r.status, 401);
}

#[tokio::test]
async fn private_and_loopback_targets_are_refused_at_registration() {
    let app = spawn_app_with(|_| {}).await;
    let Agent { key, .. } = app.agent().await;
    for base in [
        "https://127.0.0.1",
        "https://10.0.0.1",
        "https://169.254.169.254",
        "https://localhost",
        "https://[::1]",
        "http://example.com",
    ] {
        let r = app
            .post(
                "/v1/services",
                service_body(base, "0.01", "weather", "W"),
                &[("X-API-Key", &key)],
            )
            .await;
        assert_eq!(r.status, 400, "{base}: {}", r.text);
        assert_eq!(r.body["field"], "base_url", "{base}: {}", r.text);
    }
}

/// Writes a service row straight through the store (as an operator or a changed DNS
/// record could leave it).
async fn insert_row(app: &TestApp, owner: &str, base_url: &str, price_micros: i64) -> String {
    let id = aibank_core::ids::new_id("svc");
    let row = Service {
        id: id.clone(),
        owner_kind: "agent".into(),
        owner_id: owner.into(),
        name: "Rebound".into(),
        description: String::new(),
        base_url: base_url.into(),
        openapi_spec: openapi().to_string(),
        price_micros,
        category: "weather".into(),
        provider_key_header: None,
        provider_key_sealed: None,
        status: "active".into(),
        total_calls: 0,
        total_revenue_micros: 0,
        created_at: 1,
        updated_at: 1,
    };
    let pool = app.pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = pool.get().unwrap();
        aibank_store::repo::services::insert(&mut c, &row).unwrap();
    })
    .await
    .unwrap();
    id
}

#[tokio::test]
async fn a_target_that_became_private_is_refused_at_call_time_and_nothing_charged() {
    let mock = MockService::start().await;
    let app = spawn_app_with(|_| {}).await;
    let Agent { id: seller, .. } = app.agent().await;
    let Agent { id: buyer, key, .. } = app.agent().await;
    let port = mock.base.rsplit(':').next().unwrap();
    let before = micros(&app, &buyer).await;
    for base in [
        format!("https://127.0.0.1:{port}"),
        format!("https://localhost:{port}"),
        format!("http://127.0.0.1:{port}"),
    ] {
        let id = insert_row(&app, &seller, &base, 10_000).await;
        let r = app
            .get(
                &format!("/v1/proxy/{id}/weather/paris"),
                &[("X-API-Key", &key)],
            )
            .await;
        assert_eq!(r.status, 502, "{base}: {}", r.text);
        assert_eq!(r.body["code"], "UPSTREAM_ERROR");
    }
    assert!(mock.requests().is_empty(), "the private target saw nothing");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(micros(&app, &buyer).await, before, "nothing charged");
    assert_books_balance(&app.pool);
}

#[tokio::test]
async fn only_the_owner_sees_changes_and_deletes_a_service() {
    let mock = MockService::start().await;
    let app = spawn_app_with(private).await;
    let Agent { key: owner, .. } = app.agent().await;
    let Agent { key: other, .. } = app.agent().await;
    let id = create(
        &app,
        service_body(&mock.base, "0.01", "weather", "Mine"),
        ("X-API-Key", &owner),
    )
    .await;
    let path = format!("/v1/services/{id}");
    for auth in [
        ("X-API-Key", other.as_str()),
        ("X-Master-Key", app.master_key.as_str()),
    ] {
        assert_eq!(app.get(&path, &[auth]).await.status, 404);
        let r = app
            .send(
                "PUT",
                &path,
                Some(json!({"status": "paused"}).to_string()),
                &[auth],
            )
            .await;
        assert_eq!(r.status, 404, "{}", r.text);
        assert_eq!(app.delete(&path, &[auth]).await.status, 404);
    }
    let me = [("X-API-Key", owner.as_str())];
    let r = app
        .send(
            "PUT",
            &path,
            Some(json!({"price_per_call_usd": 0.02, "description": "New"}).to_string()),
            &me,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["price_per_call_usd"], json!(0.02));
    assert_eq!(r.body["description"], "New");
    assert_eq!(r.body["name"], "Mine");
    let r = app
        .send(
            "PUT",
            &path,
            Some(json!({"status": "deleted"}).to_string()),
            &me,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = app
        .send(
            "PUT",
            &path,
            Some(json!({"openapi_spec": {"openapi": "3.1.0", "paths": {}}}).to_string()),
            &me,
        )
        .await;
    assert_eq!(r.body["code"], "INVALID_SPEC", "{}", r.text);

    // Paused: out of the catalog and the proxy, back when active.
    let proxied = format!("/v1/proxy/{id}/weather/paris");
    let r = app
        .send(
            "PUT",
            &path,
            Some(json!({"status": "paused"}).to_string()),
            &me,
        )
        .await;
    assert_eq!(r.body["status"], "paused", "{}", r.text);
    assert_eq!(
        app.get(&proxied, &[("X-API-Key", &other)]).await.status,
        404
    );
    assert_eq!(
        app.get(&format!("/v1/catalog/{id}"), &[("X-API-Key", &other)])
            .await
            .status,
        404
    );
    app.send(
        "PUT",
        &path,
        Some(json!({"status": "active"}).to_string()),
        &me,
    )
    .await;
    assert_eq!(
        app.get(&proxied, &[("X-API-Key", &other)]).await.status,
        200
    );

    let r = app.delete(&path, &me).await;
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(app.get(&path, &me).await.status, 404);
    assert_eq!(
        app.get(&proxied, &[("X-API-Key", &other)]).await.status,
        404
    );
    assert_eq!(app.delete(&path, &me).await.status, 404);
}

#[tokio::test]
async fn the_catalog_lists_filters_searches_and_pages_active_services() {
    let mock = MockService::start().await;
    let app = spawn_app_with(private).await;
    let Agent { key, .. } = app.agent().await;
    let auth = ("X-API-Key", key.as_str());
    let a = create(
        &app,
        service_body(&mock.base, "0.01", "weather", "Sunny API"),
        auth,
    )
    .await;
    let mut body = service_body(&mock.base, "0.02", "language", "Translator");
    body["description"] = json!("Turns text into 100% other words");
    let b = create(&app, body, auth).await;
    let c = create(
        &app,
        service_body(&mock.base, "0.03", "weather", "Rainy"),
        auth,
    )
    .await;
    let paused = create(
        &app,
        service_body(&mock.base, "0.03", "weather", "Paused"),
        auth,
    )
    .await;
    app.send(
        "PUT",
        &format!("/v1/services/{paused}"),
        Some(json!({"status": "paused"}).to_string()),
        &[auth],
    )
    .await;
    let ids = |r: &crate::support::Resp| -> Vec<String> {
        r.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = app.get("/v1/catalog", &[auth]).await;
    assert_eq!(all.status, 200, "{}", all.text);
    assert_eq!(
        ids(&all),
        vec![c.clone(), b.clone(), a.clone()],
        "newest first, active only"
    );
    assert_eq!(all.body["data"][0]["endpoints_count"], 7);
    assert!(!all.text.contains(OWNER_KEY));
    let weather = app.get("/v1/catalog?category=weather", &[auth]).await;
    assert_eq!(ids(&weather), vec![c.clone(), a.clone()]);
    let search = app.get("/v1/catalog?search=sunny", &[auth]).await;
    assert_eq!(ids(&search), vec![a.clone()], "name, any case");
    let search = app.get("/v1/catalog?search=100%25", &[auth]).await;
    assert_eq!(
        ids(&search),
        vec![b.clone()],
        "description, % taken literally"
    );
    let search = app
        .get("/v1/catalog?search=weather&category=language", &[auth])
        .await;
    assert!(ids(&search).is_empty());

    let p1 = app.get("/v1/catalog?limit=2", &[auth]).await;
    assert_eq!(ids(&p1), vec![c, b]);
    assert_eq!(p1.body["has_more"], true);
    let cursor = p1.body["next_cursor"].as_str().unwrap();
    let p2 = app
        .get(&format!("/v1/catalog?limit=2&cursor={cursor}"), &[auth])
        .await;
    assert_eq!(ids(&p2), vec![a]);
    assert_eq!(p2.body["has_more"], false);
    assert_eq!(app.get("/v1/catalog?limit=0", &[auth]).await.status, 400);
    assert_eq!(app.get("/v1/catalog", &[]).await.status, 401);
}

#[tokio::test]
async fn the_detail_has_the_spec_endpoints_and_an_agent_summary() {
    let mock = MockService::start().await;
    let app = spawn_app_with(private).await;
    let Agent { key, .. } = app.agent().await;
    let id = create(
        &app,
        service_body(&mock.base, "0.01", "weather", "Weather"),
        ("X-API-Key", &key),
    )
    .await;
    let r = app
        .get(&format!("/v1/catalog/{id}"), &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["openapi_spec"], openapi());
    let endpoints = r.body["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 7);
    let weather = endpoints
        .iter()
        .find(|e| e["path"] == "/weather/{city}")
        .unwrap();
    assert_eq!(weather["method"], "GET");
    assert!(weather["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "city" && p["in"] == "path"));
    let summary = r.body["agent_summary"].as_str().unwrap();
    assert!(summary.contains("Service: Weather"), "{summary}");
    assert!(summary.contains("GET /weather/{city}"), "{summary}");
    assert!(summary.contains(&format!("/v1/proxy/{id}")), "{summary}");
    assert!(summary.contains("$0.01"), "{summary}");
    assert!(!r.text.contains(OWNER_KEY));
    assert_eq!(
        app.get("/v1/catalog/svc_nope", &[("X-API-Key", &key)])
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn wallets_subscribe_once_unsubscribe_and_come_back() {
    let mock = MockService::start().await;
    let app = spawn_app_with(private).await;
    let Agent { key: owner, .. } = app.agent().await;
    let Agent { key, wallet, .. } = app.agent().await;
    let Agent {
        wallet: others_wallet,
        ..
    } = app.agent().await;
    let id = create(
        &app,
        service_body(&mock.base, "0.01", "weather", "Weather"),
        ("X-API-Key", &owner),
    )
    .await;
    let auth = [("X-API-Key", key.as_str())];
    let sub = format!("/v1/catalog/{id}/subscribe");
    let r = app.post(&sub, json!({"wallet_id": wallet}), &auth).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["reactivated"], false);
    assert_eq!(r.body["wallet_id"], wallet);
    let r = app.post(&sub, json!({"wallet_id": wallet}), &auth).await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["code"], "ALREADY_SUBSCRIBED");
    let r = app
        .post(&sub, json!({"wallet_id": others_wallet}), &auth)
        .await;
    assert_eq!(r.status, 404, "another agent's wallet: {}", r.text);
    let r = app
        .post(
            "/v1/catalog/svc_nope/subscribe",
            json!({"wallet_id": wallet}),
            &auth,
        )
        .await;
    assert_eq!(r.status, 404);
    let got = app
        .get(&format!("/v1/services/{id}"), &[("X-API-Key", &owner)])
        .await;
    assert_eq!(got.body["subscribers"], 1);

    let del = format!("{sub}?wallet_id={wallet}");
    assert_eq!(app.delete(&del, &auth).await.status, 204);
    assert_eq!(app.delete(&del, &auth).await.status, 404);
    let got = app
        .get(&format!("/v1/services/{id}"), &[("X-API-Key", &owner)])
        .await;
    assert_eq!(got.body["subscribers"], 0);
    let r = app.post(&sub, json!({"wallet_id": wallet}), &auth).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["reactivated"], true);
    assert_eq!(r.body["active"], true);
}

#[tokio::test]
async fn a_declared_call_is_forwarded_with_the_owners_key_and_paid_on_every_side() {
    let mock = MockService::start().await;
    let app = spawn_app_with(|c| {
        private(c);
        c.catalog_fee_percent = "10".parse().unwrap();
    })
    .await;
    let Agent {
        id: seller,
        key: owner,
        ..
    } = app.agent().await;
    let Agent {
        id: buyer,
        key,
        wallet,
        ..
    } = app.agent().await;
    let id = create(
        &app,
        service_body(&mock.base, "0.0125", "weather", "Weather"),
        ("X-API-Key", &owner),
    )
    .await;
    let (b0, s0) = (micros(&app, &buyer).await, micros(&app, &seller).await);
    let r = app
        .get(
            &format!("/v1/proxy/{id}/weather/paris?units=metric"),
            &[
                ("X-API-Key", &key),
                ("X-Wallet-Id", &wallet),
                ("Authorization", "Bearer caller-thing"),
                ("X-Custom", "kept"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["city"], "paris");
    assert_eq!(r.body["units"], "metric");
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.0125");
    let seen = mock.last_request().unwrap();
    assert_eq!(seen.path, "/weather/paris");
    assert_eq!(seen.query.as_deref(), Some("units=metric"));
    assert_eq!(seen.header("x-provider-key"), Some(OWNER_KEY));
    assert_eq!(seen.header("x-custom"), Some("kept"));
    for stripped in ["x-api-key", "authorization", "x-wallet-id"] {
        assert_eq!(seen.header(stripped), None, "{stripped} is not forwarded");
    }
    // 0.0125 at 10%: fee 0.00125 rounds down to 0.001250 exactly; the seller gets the rest.
    assert_eq!(micros(&app, &buyer).await, b0 - 12_500);
    assert_eq!(micros(&app, &seller).await, s0 + 11_250);
    assert_eq!(
        micros(&app, aibank_ledger::OPERATOR_REVENUE_ACCOUNT).await,
        1_250
    );
    let kinds = |j: Vec<(String, i64)>| j.into_iter().skip(1).collect::<Vec<_>>();
    assert_eq!(
        kinds(journal(&app, &buyer).await),
        vec![
            ("hold".to_owned(), -12_500),
            ("release".to_owned(), 12_500),
            ("capture".to_owned(), -12_500)
        ]
    );
    assert_eq!(
        kinds(journal(&app, &seller).await),
        vec![("sale".to_owned(), 11_250)]
    );
    assert_eq!(
        journal(&app, aibank_ledger::OPERATOR_REVENUE_ACCOUNT).await,
        vec![("fee".to_owned(), 1_250)]
    );
    let usage = app.get("/v1/usage", &[("X-API-Key", &key)]).await;
    assert!(
        usage.text.contains(&id),
        "usage names the service: {}",
        usage.text
    );
    assert!(
        usage.text.contains(&wallet),
        "usage records the wallet: {}",
        usage.text
    );
    let got = app
        .get(&format!("/v1/services/{id}"), &[("X-API-Key", &owner)])
        .await;
    assert_eq!(got.body["total_calls"], 1);
    assert_eq!(got.body["total_revenue_usd"], json!(0.0125));

    // A body goes through as sent.
    let r = app
        .post(
            &format!("/v1/proxy/{id}/translate"),
            json!({"text": "hi", "to": "fr"}),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["echo"], json!({"text": "hi", "to": "fr"}));

    // Undeclared, unknown and traversing paths never reach the service.
    let n = mock.requests().len();
    for (method, path) in [
        ("GET", "admin"),
        ("POST", "weather/paris"),
        ("GET", "weather"),
        ("GET", "weather/paris/extra"),
        ("GET", "weather/..%2Fadmin"),
        ("GET", "items/%2e%2e"),
    ] {
        let r = app
            .send(
                method,
                &format!("/v1/proxy/{id}/{path}"),
                None,
                &[("X-API-Key", &key)],
            )
            .await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
    }
    assert_eq!(
        app.get("/v1/proxy/svc_nope/admin", &[("X-API-Key", &key)])
            .await
            .status,
        404
    );
    assert_eq!(mock.requests().len(), n, "nothing undeclared was forwarded");

    // Failures cost nothing.
    let b1 = micros(&app, &buyer).await;
    for (path, status) in [("fail", 500), ("teapot", 418)] {
        let r = app
            .get(&format!("/v1/proxy/{id}/{path}"), &[("X-API-Key", &key)])
            .await;
        assert_eq!(r.status, status, "{}", r.text);
        assert_eq!(r.headers["x-aibank-cost-usd"], "0.0");
    }
    assert_eq!(micros(&app, &buyer).await, b1);
    let r = app.get(&format!("/v1/proxy/{id}/weather/paris"), &[]).await;
    assert_eq!(r.status, 401, "no key and no x402 configured: {}", r.text);
    assert_books_balance(&app.pool);
}

#[tokio::test]
async fn a_platform_is_paid_for_its_service_and_a_short_buyer_is_refused() {
    let mock = MockService::start().await;
    let app = spawn_app_with(|c| {
        private(c);
        c.signup_credits = Usd::from_micros(5_000);
    })
    .await;
    let platform = app
        .get("/v1/platform", &[("X-Master-Key", &app.master_key)])
        .await;
    let platform_id = platform.body["id"].as_str().unwrap().to_owned();
    let id = create(
        &app,
        service_body(&mock.base, "0.004", "weather", "Platform weather"),
        ("X-Master-Key", &app.master_key),
    )
    .await;
    let Agent { id: buyer, key, .. } = app.agent().await;
    let call = format!("/v1/proxy/{id}/weather/oslo");
    let r = app.get(&call, &[("X-API-Key", &key)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        micros(&app, &platform_id).await,
        4_000,
        "the platform's account is paid"
    );
    assert_eq!(micros(&app, &buyer).await, 1_000);
    let n = mock.requests().len();
    let r = app.get(&call, &[("X-API-Key", &key)]).await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["code"], "INSUFFICIENT_CREDITS");
    assert_eq!(mock.requests().len(), n, "the service saw nothing");
    assert_eq!(micros(&app, &buyer).await, 1_000);
    assert_books_balance(&app.pool);
}

#[tokio::test]
async fn thirty_two_concurrent_calls_never_overspend_nor_lose_revenue() {
    let mock = MockService::start().await;
    let price = 3_000_i64;
    let app = spawn_app_with(|c| {
        private(c);
        c.catalog_fee_percent = "7.5".parse().unwrap();
        // Covers 10 calls and part of an 11th.
        c.signup_credits = Usd::from_micros(price * 10 + 1_234);
    })
    .await;
    let Agent {
        id: seller,
        key: owner,
        ..
    } = app.agent().await;
    let Agent { id: buyer, key, .. } = app.agent().await;
    let id = create(
        &app,
        service_body(&mock.base, "0.003", "weather", "Weather"),
        ("X-API-Key", &owner),
    )
    .await;
    let s0 = micros(&app, &seller).await;
    let app = std::sync::Arc::new(app);
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (app, key, id) = (app.clone(), key.clone(), id.clone());
        tasks.push(tokio::spawn(async move {
            app.get(
                &format!("/v1/proxy/{id}/weather/c{i}"),
                &[("X-API-Key", &key)],
            )
            .await
            .status
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            402 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok, 10, "exactly what the balance covers");
    let fee = price * 75 / 1000; // 225, exact
    assert_eq!(micros(&app, &buyer).await, 1_234);
    assert_eq!(micros(&app, &seller).await - s0, ok * (price - fee));
    assert_eq!(
        micros(&app, aibank_ledger::OPERATOR_REVENUE_ACCOUNT).await,
        ok * fee
    );
    let got = app
        .get(&format!("/v1/services/{id}"), &[("X-API-Key", &owner)])
        .await;
    assert_eq!(got.body["total_calls"], ok);
    assert_eq!(mock.requests().len(), 10, "refused calls never went out");
    assert!(assert_books_balance(&app.pool) >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_without_a_key_pays_with_x402_at_the_services_price() {
    use crate::support::anvil::{Anvil, CHAIN_BASE_SEPOLIA, USDC_BASE_SEPOLIA};
    let anvil = Anvil::start(CHAIN_BASE_SEPOLIA).await;
    anvil.deploy_erc20(USDC_BASE_SEPOLIA).await;
    let accounts = anvil.accounts().await;
    let (payer, pay_to) = (accounts[1].clone(), accounts[9].clone());
    anvil.mint(USDC_BASE_SEPOLIA, &payer, 100_000_000).await;
    let x = crate::support::x402_settings(&anvil, &pay_to);
    let mock = MockService::start().await;
    let app = spawn_app_with(move |c| {
        private(c);
        c.x402 = Some(x);
    })
    .await;
    let Agent {
        id: seller,
        key: owner,
        ..
    } = app.agent().await;
    let id = create(
        &app,
        service_body(&mock.base, "0.02", "weather", "Weather"),
        ("X-API-Key", &owner),
    )
    .await;
    let call = format!("/v1/proxy/{id}/weather/rome");
    let r = app.get(&call, &[]).await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert!(mock.requests().is_empty());
    let s0 = micros(&app, &seller).await;
    let hash = anvil
        .transfer(USDC_BASE_SEPOLIA, &payer, &pay_to, 50_000)
        .await;
    let r = app
        .get(
            &call,
            &[("X-Payment", &hash), ("X-Payment-Chain", "base-sepolia")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.02");
    let account = format!("x402_base-sepolia_{}", &payer[2..]);
    assert_eq!(
        micros(&app, &account).await,
        30_000,
        "paid 0.05, the call cost 0.02"
    );
    assert_eq!(micros(&app, &seller).await, s0 + 20_000);
    assert_books_balance(&app.pool);
}

fn operations(doc: &Value) -> Vec<(String, String)> {
    service_spec::parse(doc)
        .unwrap()
        .endpoints
        .into_iter()
        .map(|e| (e.method, e.path))
        .collect()
}

/// The mock service's documents, read by the catalog's own reader.
#[test]
fn the_mock_services_documents_declare_every_operation_and_nothing_else() {
    let expected: Vec<(String, String)> = [
        ("GET", "/fail"),
        ("DELETE", "/items/{id}"),
        ("GET", "/items/{id}"),
        ("GET", "/slow"),
        ("GET", "/teapot"),
        ("POST", "/translate"),
        ("GET", "/weather/{city}"),
    ]
    .iter()
    .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
    .collect();
    assert_eq!(operations(&mock_service::openapi()), expected);
    assert_eq!(operations(&mock_service::openapi_3_0()), expected);
    let spec = service_spec::parse(&mock_service::openapi()).unwrap();
    assert!(spec.find("GET", "/admin").is_none());
    let weather = spec.find("GET", "/weather/paris").unwrap();
    assert_eq!(weather.parameters[1].schema_type.as_deref(), Some("string"));
    let item = spec.find("DELETE", "/items/7").unwrap();
    assert_eq!(
        item.parameters[0].description.as_deref(),
        Some("The item's id.")
    );
}
