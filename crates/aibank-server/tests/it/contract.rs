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

/// The server holds to the shapes the document states, no looser: what the pattern or the
/// nullability refuses is refused, naming the field, and what it allows is taken.
#[tokio::test]
async fn the_server_refuses_what_the_document_refuses() {
    let app = spawn_app().await;
    let agent = app.agent().await;
    let keys = agent.get("/v1/keys").await;
    let key_path = format!("/v1/keys/{}", keys.str("/data/0/id"));

    // A PATCH field that cannot be cleared refuses null; one that can is cleared by it.
    let r = agent
        .patch(&key_path, json!({"tradingEnabled": null}))
        .await;
    r.assert_error(400, "INVALID_INPUT");
    assert_eq!(r.body["field"], "tradingEnabled");
    agent
        .patch(&key_path, json!({"description": null}))
        .await
        .assert_ok();
    let r = app
        .platform()
        .patch(
            &format!("/v1/platform/agents/{}", agent.id),
            json!({"name": null}),
        )
        .await;
    r.assert_error(400, "INVALID_INPUT");
    assert_eq!(r.body["field"], "name");

    // Cursors: the shape `next_cursor` has, and nothing else.
    for bad in [
        "abc",
        "-5.agt_x",
        "+5.agt_x",
        "5.",
        "5.a b",
        "1234567890123456789.x",
    ] {
        let r = agent
            .get(&format!("/v1/usage?cursor={}", urlencode(bad)))
            .await;
        r.assert_error(400, "INVALID_INPUT");
        assert_eq!(r.body["field"], "cursor", "{bad}");
    }
    agent
        .get("/v1/usage?cursor=1764067200000.agt_x")
        .await
        .assert_ok();

    // Times: RFC 3339 with any offset, or plain digits; no sign, no space.
    for good in [
        "2025-11-24T17:30:00.123+01:30",
        "1764000000123",
        "1969-12-31T23:59:59Z",
    ] {
        agent
            .get(&format!("/v1/usage?from={}", urlencode(good)))
            .await
            .assert_ok();
    }
    for bad in ["+5", "-5", "2025-11-24 16:00:00", "2025-02-30T00:00:00Z"] {
        let r = agent
            .get(&format!("/v1/usage?from={}", urlencode(bad)))
            .await;
        r.assert_error(400, "INVALID_INPUT");
        assert_eq!(r.body["field"], "from", "{bad}");
    }

    // Names: counted as sent, before trimming.
    let r = agent
        .post(
            "/v1/keys/create",
            json!({"name": format!(" {}", "x".repeat(100))}),
        )
        .await;
    r.assert_error(400, "INVALID_INPUT");
    assert_eq!(r.body["field"], "name");

    // A transaction hash needs its 0x.
    let bare = "5c8e1f4a3b7d2e9c6f0a1b4d7e2c5f8a9b3d6e1c4f7a0b2d5e8c1f3a6b9d2e4f";
    let r = app.get(&format!("/v1/payments/{bare}"), &[]).await;
    r.assert_error(400, "INVALID_INPUT");
    let r = app.get(&format!("/v1/payments/0x{bare}"), &[]).await;
    assert_eq!(r.status, 404, "{}", r.text);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
