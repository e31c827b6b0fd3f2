//! The OpenAPI document and the route table describe the same API, and no secret ever
//! reaches the logs.
// JSON money literals are written as clients write them; scenario tests run long.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::unreadable_literal,
    clippy::too_many_lines
)]

use std::collections::BTreeSet;

use crate::support::Agent;
use crate::support::{captured_logs, spawn_app};
use aibank_server::routes;
use aibank_server::startup::openapi_document;
use serde_json::json;

fn spec_routes() -> BTreeSet<(String, String)> {
    let doc = openapi_document().expect("openapi.yaml parses");
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "patch", "delete", "head", "options"]
                .contains(&method.as_str())
            {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

fn served_routes() -> BTreeSet<(String, String)> {
    routes::table()
        .iter()
        .map(|d| (d.method.as_str().to_owned(), d.path.to_owned()))
        .collect()
}

#[test]
fn every_route_is_in_the_spec() {
    let spec = spec_routes();
    let missing: Vec<_> = served_routes().difference(&spec).cloned().collect();
    assert!(
        missing.is_empty(),
        "routes missing from openapi/openapi.yaml: {missing:?}"
    );
}

#[test]
fn every_spec_path_is_served() {
    let served = served_routes();
    let extra: Vec<_> = spec_routes().difference(&served).cloned().collect();
    assert!(
        extra.is_empty(),
        "openapi/openapi.yaml documents routes the server lacks: {extra:?}"
    );
}

#[test]
fn spec_documents_every_error_code() {
    let doc = openapi_document().unwrap();
    let codes: BTreeSet<String> = doc["components"]["schemas"]["Error"]["properties"]["code"]
        ["enum"]
        .as_array()
        .expect("Error.code enum")
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    let table: BTreeSet<String> = aibank_core::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    assert_eq!(codes, table);
}

#[tokio::test]
async fn openapi_json_is_served() {
    let app = spawn_app().await;
    let r = app.get("/openapi.json", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["content-type"], "application/json");
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));
    assert!(r.body["paths"]["/v1/agents/register"]["post"].is_object());
}

/// Exercises every way a secret is created or presented, then searches the debug-level log
/// of the whole test process for any of them.
#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let app = spawn_app().await;
    let mk = app.master_key.clone();
    let mut secrets = vec![mk.clone()];

    let Agent { key: ak, .. } = app.agent().await;
    secrets.push(ak.clone());
    let gw = app
        .post("/v1/keys", json!({"email": "s@example.com"}), &[])
        .await;
    secrets.push(gw.body["api_key"].as_str().unwrap().to_owned());
    let fleet = app
        .post(
            "/v1/platform/agents",
            json!({"name": "f"}),
            &[("X-Master-Key", &mk)],
        )
        .await;
    let id = fleet.body["agentId"].as_str().unwrap().to_owned();
    secrets.push(fleet.body["apiKey"].as_str().unwrap().to_owned());
    let rotated = app
        .post(
            &format!("/v1/platform/agents/{id}/rotate-key"),
            json!({}),
            &[("X-Master-Key", &mk)],
        )
        .await;
    secrets.push(rotated.body["apiKey"].as_str().unwrap().to_owned());
    let m2 = app
        .post(
            "/v1/platform/master-keys",
            json!({"name": "n", "owner_email": "o@example.com"}),
            &[("X-Master-Key", &mk)],
        )
        .await;
    secrets.push(m2.body["key"].as_str().unwrap().to_owned());

    // Use them, rightly and wrongly, so every auth path logs what it logs.
    for s in secrets.clone() {
        app.get("/v1/balance", &[("X-API-Key", &s)]).await;
        app.get("/v1/platform/agents", &[("X-Master-Key", &s)])
            .await;
        let tampered = format!("{}Z", &s[..s.len() - 1]);
        app.get("/v1/balance", &[("X-API-Key", &tampered)]).await;
        secrets.push(tampered);
    }
    // Let fire-and-forget last-used updates finish.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    let logs = captured_logs();
    assert!(
        logs.contains("/v1/agents/register"),
        "the log capture must be working"
    );
    assert!(logs.contains("agent key rotated"));
    for s in &secrets {
        let secret_part = s.rsplit('_').next().unwrap();
        assert!(
            !logs.contains(secret_part),
            "a key secret appeared in the logs"
        );
    }
    assert!(
        !logs.contains("$argon2id$"),
        "a key hash appeared in the logs"
    );
}
