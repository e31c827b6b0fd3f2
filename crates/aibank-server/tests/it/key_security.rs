//! Key security: agent key management, read-only keys, capability flags, IP allowlists,
//! RSA-signed requests, pausing, per-IP and per-key rate limits, and the audit log. Every
//! refusal is checked with its exact body, over real HTTP, on the configured backend.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::unreadable_literal
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::mock_upstream::MockUpstream;
use crate::support::Agent;
use crate::support::{
    spawn_app_on, spawn_app_with, spawn_app_with_clock, use_mock_upstream, Resp, TestApp,
};
use aibank_auth::ratelimit::Limit;
use aibank_auth::rsa_keys;
use aibank_core::ManualClock;
use serde_json::{json, Value};

const T0: i64 = 1_790_000_000_000;
const DAY_MS: i64 = 86_400_000;
const MESSAGES: &str = "/v1/gateway/anthropic/v1/messages";

fn hello() -> Value {
    json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 100,
           "messages": [{"role": "user", "content": "Hello"}]})
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

async fn with_mock(customize: impl FnOnce(&mut aibank_server::Config)) -> (TestApp, MockUpstream) {
    let mock = MockUpstream::start().await;
    let base = mock.base.clone();
    let app = spawn_app_with(move |c| {
        use_mock_upstream(c, &base, true);
        customize(c);
    })
    .await;
    (app, mock)
}

async fn new_key(app: &TestApp, key: &str, name: &str) -> (String, String) {
    let r = app
        .post(
            "/v1/keys/create",
            json!({"name": name}),
            &[("X-API-Key", key)],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    (
        r.body["id"].as_str().unwrap().to_owned(),
        r.body["apiKey"].as_str().unwrap().to_owned(),
    )
}

async fn patch_key(app: &TestApp, auth: &str, id: &str, body: Value) -> Resp {
    app.patch(&format!("/v1/keys/{id}"), body, &[("X-API-Key", auth)])
        .await
}

async fn patch_agent(app: &TestApp, id: &str, body: Value) -> Resp {
    let r = app
        .platform()
        .patch(&format!("/v1/platform/agents/{id}"), body)
        .await;
    r.assert_status(200);
    r
}

fn key_id(full: &str) -> String {
    full.split('_').nth(1).unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_created_once_and_listed_with_the_last_four_characters_only() {
    let app = crate::support::spawn_app().await;
    let Agent { key: first, .. } = app.agent().await;
    let r = app
        .post(
            "/v1/keys/create",
            json!({"name": "ci", "description": "deploys"}),
            &[("X-API-Key", &first)],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let second = r.body["apiKey"].as_str().unwrap().to_owned();
    assert!(second.starts_with("ak_"));
    assert_eq!(r.body["id"], key_id(&second));
    assert_eq!(r.body["name"], "ci");
    assert_eq!(r.body["description"], "deploys");
    assert_eq!(r.body["type"], "secret");
    assert_eq!(r.body["status"], "active");
    assert_eq!(r.body["last4"], second[second.len() - 4..]);

    // The new key works, and the listing shows both without their secrets.
    let r = app.get("/v1/keys", &[("X-API-Key", &second)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let data = r.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["id"], key_id(&second));
    assert_eq!(data[0]["current"], true);
    assert_eq!(data[1]["id"], key_id(&first));
    assert_eq!(data[1]["current"], false);
    assert_eq!(data[1]["last4"], first[first.len() - 4..]);
    assert!(data[1]["last_used_at"].is_string(), "{}", r.text);
    for k in [&first, &second] {
        let secret = k.rsplit('_').next().unwrap();
        assert!(!r.text.contains(secret), "a secret was listed: {}", r.text);
    }
    for field in [
        "id",
        "name",
        "description",
        "created_at",
        "last_used_at",
        "status",
        "last4",
    ] {
        assert!(data[0].get(field).is_some(), "{field} missing: {}", r.text);
    }

    // Input rules.
    let r = app
        .post("/v1/keys/create", json!({}), &[("X-API-Key", &first)])
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["field"], "name");
    let r = app
        .post(
            "/v1/keys/create",
            json!({"name": "x", "description": "d".repeat(501)}),
            &[("X-API-Key", &first)],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["field"], "description");

    // Gateway-only holders get gateway-only keys.
    let r = app
        .post("/v1/keys", json!({"email": "gw@example.com"}), &[])
        .await;
    let gw = r.body["api_key"].as_str().unwrap().to_owned();
    let (_, gw2) = new_key(&app, &gw, "second gw").await;
    assert!(gw2.starts_with("gw_"), "{gw2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sixth_active_key_is_refused_even_when_requested_concurrently() {
    let app = crate::support::spawn_app().await;
    let Agent { key: first, .. } = app.agent().await;
    // Ten concurrent requests for four free slots: exactly four win.
    let results = futures_util::future::join_all((0..10).map(|i| {
        let app = &app;
        let first = first.clone();
        async move {
            app.post(
                "/v1/keys/create",
                json!({"name": format!("k{i}")}),
                &[("X-API-Key", &first)],
            )
            .await
        }
    }))
    .await;
    let created: Vec<&Resp> = results.iter().filter(|r| r.status == 201).collect();
    let refused: Vec<&Resp> = results.iter().filter(|r| r.status == 409).collect();
    assert_eq!((created.len(), refused.len()), (4, 6));
    assert_eq!(
        refused[0].body,
        json!({"error": "An agent may hold at most 5 active keys: delete one first",
               "code": "CONFLICT", "limit": 5})
    );
    // Deleting one frees a slot.
    let victim = created[0].body["id"].as_str().unwrap().to_owned();
    let r = app
        .delete(&format!("/v1/keys/{victim}"), &[("X-API-Key", &first)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    new_key(&app, &first, "replacement").await;

    // The limit is configurable.
    let app = spawn_app_with(|c| c.max_keys_per_agent = 1).await;
    let Agent { key: only, .. } = app.agent().await;
    let r = app
        .post(
            "/v1/keys/create",
            json!({"name": "two"}),
            &[("X-API-Key", &only)],
        )
        .await;
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(r.body["limit"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_keys() {
    let app = crate::support::spawn_app().await;
    let agent = app.agent().await;
    let (second_id, second) = new_key(&app, &agent.key, "second").await;
    let second_caller = app.with_key(&second);

    let r = agent
        .delete(&format!("/v1/keys/{}", key_id(&agent.key)))
        .await;
    r.assert_status(409);
    assert_eq!(
        r.body,
        json!({"error": "A key cannot delete itself: use another key of this agent",
               "code": "CONFLICT"})
    );

    // Another agent's key does not exist for this one.
    let stranger = app.agent().await;
    let r = stranger.delete(&format!("/v1/keys/{second_id}")).await;
    r.assert_status(404);
    assert_eq!(
        r.body,
        json!({"error": "API key not found or already deleted", "code": "NOT_FOUND"})
    );
    let r = stranger
        .patch(&format!("/v1/keys/{second_id}"), json!({"name": "mine"}))
        .await;
    r.assert_status(404);
    assert_eq!(
        r.body,
        json!({"error": "API key not found", "code": "NOT_FOUND"})
    );

    // Warm the second key's cache entries, then delete it: it stops at once.
    second_caller.get("/v1/balance").await.assert_ok();
    let r = agent.delete(&format!("/v1/keys/{second_id}")).await;
    r.assert_ok();
    assert_eq!(r.body["id"], second_id);
    assert_eq!(r.body["status"], "revoked");
    let r = second_caller.get("/v1/balance").await;
    r.assert_status(401);
    assert_eq!(r.body["error"], "API key has been revoked");
    agent
        .delete(&format!("/v1/keys/{second_id}"))
        .await
        .assert_status(404);
    agent
        .patch(&format!("/v1/keys/{second_id}"), json!({"name": "back"}))
        .await
        .assert_status(409);
    let listed = agent.get("/v1/keys").await;
    assert_eq!(listed.body["data"][0]["status"], "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_keys_read_but_neither_write_nor_spend() {
    let (app, mock) = with_mock(|_| {}).await;
    let Agent { key: owner, .. } = app.agent().await;
    let (ro_id, ro) = new_key(&app, &owner, "dashboard").await;
    let r = patch_key(&app, &owner, &ro_id, json!({"readOnly": true})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["readOnly"], true);

    for path in ["/v1/balance", "/v1/usage", "/v1/keys", "/v1/agents/me"] {
        let r = app.get(path, &[("X-API-Key", &ro)]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
    }
    let r = app
        .post(
            "/v1/keys/create",
            json!({"name": "escalate"}),
            &[("X-API-Key", &ro)],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body,
        json!({"error": "Read-only API key", "code": "FORBIDDEN",
               "message": "This API key can only read: POST /v1/keys/create needs a key without readOnly"})
    );
    let r = patch_key(&app, &ro, &ro_id, json!({"readOnly": false})).await;
    assert_eq!(
        r.status, 403,
        "a read-only key cannot lift its own restriction"
    );
    let r = app.post(MESSAGES, hello(), &[("X-API-Key", &ro)]).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body,
        json!({"error": "Read-only API key", "code": "FORBIDDEN",
               "message": "This API key can only read: calling the gateway needs a key without readOnly"})
    );
    assert!(mock.requests().is_empty(), "nothing reached the upstream");

    // A platform's readOnly binds every key of its agent.
    let Agent {
        id: agent,
        key: fleet_key,
        ..
    } = app
        .platform()
        .agent(json!({"name": "fleet-1", "credits_usd": 5}))
        .await;
    let r = patch_agent(&app, &agent, json!({"readOnly": true})).await;
    assert_eq!(r.body["security"]["readOnly"], true);
    let r = app
        .post(MESSAGES, hello(), &[("X-API-Key", &fleet_key)])
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error"], "Read-only API key");
    assert_eq!(
        app.get("/v1/balance", &[("X-API-Key", &fleet_key)])
            .await
            .status,
        200
    );
    patch_agent(&app, &agent, json!({"readOnly": false})).await;
    let r = app
        .post(MESSAGES, hello(), &[("X-API-Key", &fleet_key)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_flags_gate_the_gateway_and_a_platforms_flags_cannot_be_lifted() {
    let (app, mock) = with_mock(|_| {}).await;
    let Agent { id: agent, key, .. } = app
        .platform()
        .agent(json!({"name": "fleet-1", "credits_usd": 5}))
        .await;
    let id = key_id(&key);
    let off = json!({"error": "gatewayEnabled is off for this API key", "code": "FORBIDDEN",
                     "flag": "gatewayEnabled"});

    let r = patch_key(
        &app,
        &key,
        &id,
        json!({"gatewayEnabled": false, "tradingEnabled": false}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["gatewayEnabled"], false);
    assert_eq!(r.body["walletsEnabled"], true);
    assert_eq!(r.body["tradingEnabled"], false);
    let r = app.post(MESSAGES, hello(), &[("X-API-Key", &key)]).await;
    assert_eq!((r.status, &r.body), (403, &off));
    // Bearer (the SDKs' header) is held to the same rules.
    let bearer = format!("Bearer {key}");
    let r = app
        .post(MESSAGES, hello(), &[("Authorization", &bearer)])
        .await;
    assert_eq!((r.status, &r.body), (403, &off));

    patch_key(&app, &key, &id, json!({"gatewayEnabled": true})).await;
    let r = app.post(MESSAGES, hello(), &[("X-API-Key", &key)]).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Off at the agent level: the key's own flag cannot turn it back on.
    let r = patch_agent(&app, &agent, json!({"gatewayEnabled": false})).await;
    assert_eq!(r.body["security"]["gatewayEnabled"], false);
    let r = patch_key(&app, &key, &id, json!({"gatewayEnabled": true})).await;
    assert_eq!(r.status, 200);
    let r = app.post(MESSAGES, hello(), &[("X-API-Key", &key)]).await;
    assert_eq!((r.status, &r.body), (403, &off));
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_allowlists_with_ipv4_ipv6_and_cidr() {
    // Behind a trusted proxy (the test client at 127.0.0.1), X-Forwarded-For names the client.
    let app = spawn_app_with(|c| {
        c.trusted_proxies = vec![aibank_auth::access::parse_net("127.0.0.1").unwrap()];
    })
    .await;
    let Agent { key: owner, .. } = app.agent().await;
    let (id, key) = new_key(&app, &owner, "office").await;
    let r = patch_key(
        &app,
        &owner,
        &id,
        json!({"allowedIps": ["203.0.113.7", "10.0.0.0/8", "2001:db8::/32", "::1"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body["allowedIps"],
        json!(["203.0.113.7", "10.0.0.0/8", "2001:db8::/32", "::1"])
    );
    let from = |ip: &'static str| [("X-API-Key", key.as_str()), ("X-Forwarded-For", ip)];
    for ip in [
        "203.0.113.7",
        "10.20.30.40",
        "2001:db8:aa::1",
        "::1",
        "198.51.100.1, 10.0.0.5",
    ] {
        let r = app.get("/v1/balance", &from(ip)).await;
        assert_eq!(r.status, 200, "{ip}: {}", r.text);
    }
    for (ip, client) in [
        ("203.0.113.8", "203.0.113.8"),
        ("11.0.0.1", "11.0.0.1"),
        ("2001:db9::1", "2001:db9::1"),
        // Only the right-most untrusted hop counts: a client cannot claim an address.
        ("10.0.0.5, 198.51.100.1", "198.51.100.1"),
    ] {
        let r = app.get("/v1/balance", &from(ip)).await;
        assert_eq!(r.status, 403, "{ip}");
        assert_eq!(
            r.body,
            json!({"error": "IP address not allowed", "code": "FORBIDDEN", "ip": client})
        );
    }
    // Without the header the client is the proxy itself, which is not on the list.
    let r = app.get("/v1/balance", &[("X-API-Key", &key)]).await;
    assert_eq!(r.status, 403);
    // The allowlist is checked before the key's other restrictions.
    patch_key(&app, &owner, &id, json!({"readOnly": true})).await;
    let r = app
        .post(
            "/v1/keys/create",
            json!({"name": "x"}),
            &[("X-API-Key", &key), ("X-Forwarded-For", "11.0.0.1")],
        )
        .await;
    assert_eq!(r.body["error"], "IP address not allowed");

    // Bad entries are refused with the field named.
    for bad in [
        json!(["10.0.0.0/33"]),
        json!(["example.com"]),
        json!("10.0.0.1"),
    ] {
        let r = patch_key(&app, &owner, &id, json!({"allowedIps": bad})).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text);
        assert_eq!(r.body["field"], "allowedIps");
    }
    // An empty list allows any address again.
    patch_key(&app, &owner, &id, json!({"allowedIps": []})).await;
    assert_eq!(app.get("/v1/balance", &from("11.0.0.1")).await.status, 200);

    // Without trusted proxies, X-Forwarded-For is ignored: the socket peer is the client.
    let app = crate::support::spawn_app().await;
    let Agent { id: agent, key, .. } = app
        .platform()
        .agent(json!({"name": "fleet-1", "credits_usd": 5}))
        .await;
    patch_agent(&app, &agent, json!({"allowedIps": ["10.0.0.0/8"]})).await;
    let r = app
        .get(
            "/v1/balance",
            &[("X-API-Key", &key), ("X-Forwarded-For", "10.1.1.1")],
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["ip"], "127.0.0.1");
    let r = patch_agent(&app, &agent, json!({"allowedIps": ["127.0.0.0/8"]})).await;
    assert_eq!(r.body["security"]["allowedIps"], json!(["127.0.0.0/8"]));
    assert_eq!(
        app.get("/v1/balance", &[("X-API-Key", &key)]).await.status,
        200
    );
}

fn signed_headers(
    key_id: &str,
    private_pem: &str,
    method: &str,
    path: &str,
    ts: i64,
) -> Vec<(String, String)> {
    let ts = ts.to_string();
    let sig =
        rsa_keys::sign_with_private_pem(private_pem, &rsa_keys::signing_message(&ts, method, path))
            .unwrap();
    vec![
        ("X-Aibank-Key-Id".into(), key_id.to_owned()),
        ("X-Aibank-Timestamp".into(), ts),
        ("X-Aibank-Signature".into(), sig),
    ]
}

async fn send_signed(
    app: &TestApp,
    method: &str,
    path: &str,
    headers: &[(String, String)],
) -> Resp {
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    app.send(method, path, None, &h).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_signed_keys_valid_wrong_expired_and_replayed() {
    let app = crate::support::spawn_app().await;
    let Agent { key: owner, .. } = app.agent().await;

    // Register a public key made by the client.
    let (public, private) = tokio::task::spawn_blocking(rsa_keys::generate)
        .await
        .unwrap()
        .unwrap();
    let r = app
        .post(
            "/v1/keys/rsa",
            json!({"name": "signer", "public_key": public.to_pem()}),
            &[("X-API-Key", &owner)],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["type"], "rsa");
    let kid = r.body["id"].as_str().unwrap().to_owned();
    let pem = private.expose().to_owned();

    let h = signed_headers(&kid, &pem, "GET", "/v1/balance", now_ms());
    let r = send_signed(&app, "GET", "/v1/balance", &h).await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Replayed: the same signature is refused.
    let r = send_signed(&app, "GET", "/v1/balance", &h).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        json!({"error": "Request signature has already been used: sign every request anew",
               "code": "UNAUTHORIZED"})
    );

    // Re-encoding the same signature (no padding, URL-safe alphabet) is still a replay.
    let mut h2 = h.clone();
    h2[2].1 = h[2]
        .1
        .trim_end_matches('=')
        .replace('+', "-")
        .replace('/', "_");
    assert_ne!(h2[2].1, h[2].1);
    let r = send_signed(&app, "GET", "/v1/balance", &h2).await;
    assert_eq!(r.status, 401, "{}", r.text);

    // Wrong: signed for another path, or by another key.
    let h = signed_headers(&kid, &pem, "GET", "/v1/usage", now_ms());
    let r = send_signed(&app, "GET", "/v1/balance", &h).await;
    assert_eq!(r.status, 401);
    assert_eq!(
        r.body,
        json!({"error": "Invalid request signature", "code": "UNAUTHORIZED"})
    );
    let (_, other) = tokio::task::spawn_blocking(rsa_keys::generate)
        .await
        .unwrap()
        .unwrap();
    let h = signed_headers(&kid, other.expose(), "GET", "/v1/balance", now_ms());
    assert_eq!(
        send_signed(&app, "GET", "/v1/balance", &h).await.status,
        401
    );
    let mut h = signed_headers(&kid, &pem, "GET", "/v1/balance", now_ms());
    h[2].1 = "bm90IGEgc2lnbmF0dXJl".into();
    assert_eq!(
        send_signed(&app, "GET", "/v1/balance", &h).await.body["error"],
        "Invalid request signature"
    );

    // Expired, or from the future, beyond ±5 minutes.
    for skew in [-301_000, 301_000] {
        let h = signed_headers(&kid, &pem, "GET", "/v1/balance", now_ms() + skew);
        let r = send_signed(&app, "GET", "/v1/balance", &h).await;
        assert_eq!(r.status, 401);
        assert_eq!(
            r.body,
            json!({"error": "Request timestamp is outside the allowed window of ±300 s",
                   "code": "UNAUTHORIZED"})
        );
    }
    let mut h = signed_headers(&kid, &pem, "GET", "/v1/balance", now_ms());
    h[1].1 = "yesterday".into();
    assert_eq!(
        send_signed(&app, "GET", "/v1/balance", &h).await.status,
        401
    );

    // A secret key's id cannot be used to sign, and unknown ids are refused.
    let h = signed_headers(&key_id(&owner), &pem, "GET", "/v1/balance", now_ms());
    let r = send_signed(&app, "GET", "/v1/balance", &h).await;
    assert_eq!(
        r.body["error"],
        "X-Aibank-Key-Id names a secret key: send it in the X-API-Key header"
    );
    let h = signed_headers("0000000000000000", &pem, "GET", "/v1/balance", now_ms());
    assert_eq!(
        send_signed(&app, "GET", "/v1/balance", &h).await.body["error"],
        "Unknown X-Aibank-Key-Id"
    );
    let missing = [("X-Aibank-Key-Id", kid.as_str())];
    let r = app.get("/v1/balance", &missing).await;
    assert_eq!(
        r.body,
        json!({"error": "Missing X-Aibank-Timestamp header", "code": "UNAUTHORIZED"})
    );

    // Signed writes work too (the signature covers the method).
    let h = signed_headers(&kid, &pem, "POST", "/v1/keys/create", now_ms());
    let hr: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = app
        .post("/v1/keys/create", json!({"name": "via rsa"}), &hr)
        .await;
    assert_eq!(r.status, 201, "{}", r.text);

    // Server-generated pairs: the private key is shown once and never listed.
    let r = app
        .post(
            "/v1/keys/rsa/generate",
            json!({"name": "generated"}),
            &[("X-API-Key", &owner)],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let gen_id = r.body["id"].as_str().unwrap().to_owned();
    let gen_pem = r.body["private_key"].as_str().unwrap().to_owned();
    assert!(
        gen_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "{gen_pem}"
    );
    let h = signed_headers(&gen_id, &gen_pem, "GET", "/v1/keys", now_ms());
    let listed = send_signed(&app, "GET", "/v1/keys", &h).await;
    assert_eq!(listed.status, 200, "{}", listed.text);
    let body_line = gen_pem.lines().nth(1).unwrap();
    assert!(!listed.text.contains(body_line), "a private key was listed");
    assert!(!listed.text.contains("PRIVATE KEY"));

    // Bad public keys name the field.
    for bad in [
        "",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----",
        &gen_pem,
    ] {
        let r = app
            .post(
                "/v1/keys/rsa",
                json!({"name": "bad", "public_key": bad}),
                &[("X-API-Key", &owner)],
            )
            .await;
        assert_eq!(r.status, 400, "{}", r.text);
        assert_eq!(r.body["field"], "public_key");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_signature_is_refused_by_another_instance_too() {
    let a = crate::support::spawn_app().await;
    let b = spawn_app_on(a.db.clone(), |_| {}, Arc::new(aibank_core::SystemClock)).await;
    let Agent { key: owner, .. } = a.agent().await;
    let r = a
        .post(
            "/v1/keys/rsa/generate",
            json!({"name": "g"}),
            &[("X-API-Key", &owner)],
        )
        .await;
    let kid = r.body["id"].as_str().unwrap().to_owned();
    let pem = r.body["private_key"].as_str().unwrap().to_owned();
    let h = signed_headers(&kid, &pem, "GET", "/v1/balance", now_ms());
    assert_eq!(send_signed(&a, "GET", "/v1/balance", &h).await.status, 200);
    let r = send_signed(&b, "GET", "/v1/balance", &h).await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_pauses_and_resumes_all_keys_of_an_agent() {
    let app = crate::support::spawn_app().await;
    let Agent { id: agent, key, .. } = app
        .platform()
        .agent(json!({"name": "fleet-1", "credits_usd": 5}))
        .await;
    let (_, second) = new_key(&app, &key, "second").await;
    let mk = [("X-Master-Key", app.master_key.as_str())];
    assert_eq!(
        app.get("/v1/balance", &[("X-API-Key", &key)]).await.status,
        200
    );

    let r = app
        .post(
            &format!("/v1/platform/agents/{agent}/pause"),
            json!({}),
            &mk,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["keysPaused"], true);
    for k in [&key, &second] {
        let r = app.get("/v1/balance", &[("X-API-Key", k)]).await;
        assert_eq!(r.status, 403);
        assert_eq!(
            r.body,
            json!({"error": "API key is paused", "code": "FORBIDDEN",
                   "message": "The platform that manages this agent has paused its keys"})
        );
    }
    let r = app
        .get(&format!("/v1/platform/agents/{agent}/keys"), &mk)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let statuses: Vec<&Value> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["status"])
        .collect();
    assert_eq!(statuses, vec!["paused", "paused"]);
    assert!(r.body["data"][0].get("current").is_none());
    let view = app.get(&format!("/v1/platform/agents/{agent}"), &mk).await;
    assert_eq!(view.body["security"]["keysPaused"], true);
    // Pausing twice is harmless.
    let r = app
        .post(
            &format!("/v1/platform/agents/{agent}/pause"),
            json!({}),
            &mk,
        )
        .await;
    assert_eq!(r.status, 200);

    let r = app
        .post(
            &format!("/v1/platform/agents/{agent}/resume"),
            json!({}),
            &mk,
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["keysPaused"], false);
    assert_eq!(
        app.get("/v1/balance", &[("X-API-Key", &key)]).await.status,
        200
    );

    // Another platform's agent does not exist for it.
    let other = app.new_platform_key().await;
    for path in ["pause", "resume", "keys"] {
        let url = format!("/v1/platform/agents/{agent}/{path}");
        let r = if path == "keys" {
            app.get(&url, &[("X-Master-Key", &other)]).await
        } else {
            app.post(&url, json!({}), &[("X-Master-Key", &other)]).await
        };
        assert_eq!(r.status, 404, "{path}");
        assert_eq!(
            r.body,
            json!({"error": "Agent not found", "code": "NOT_FOUND"})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_message_limit_rolls_over_24_hours_after_the_first_call() {
    let mock = MockUpstream::start().await;
    let base = mock.base.clone();
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), move |c| use_mock_upstream(c, &base, true)).await;
    let Agent { id: agent, key, .. } = app
        .platform()
        .agent(json!({"name": "fleet-1", "credits_usd": 5}))
        .await;
    let r = patch_agent(&app, &agent, json!({"dailyMessageLimit": 3})).await;
    assert_eq!(r.body["security"]["dailyMessageLimit"], 3);
    let call = |k: String| {
        let app = &app;
        async move { app.post(MESSAGES, hello(), &[("X-API-Key", &k)]).await }
    };

    // Calls refused before they go out do not count: over the per-call spending limit,
    // an unpriced model.
    let mut huge = hello();
    huge["max_tokens"] = json!(100_000_000);
    let r = app.post(MESSAGES, huge, &[("X-API-Key", &key)]).await;
    assert_eq!(r.body["code"], "PER_TX_LIMIT_EXCEEDED", "{}", r.text);
    let mut unknown = hello();
    unknown["model"] = json!("no-such-model");
    assert_eq!(
        app.post(MESSAGES, unknown, &[("X-API-Key", &key)])
            .await
            .status,
        400
    );

    assert_eq!(call(key.clone()).await.status, 200);
    clock.advance(Duration::from_secs(12 * 3600));
    assert_eq!(call(key.clone()).await.status, 200);
    assert_eq!(call(key.clone()).await.status, 200);
    let balance_before =
        app.get("/v1/balance", &[("X-API-Key", &key)]).await.body["credits_usd"].clone();
    let r = call(key.clone()).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"error": "Daily message limit reached for this API key", "code": "RATE_LIMITED",
               "limit": 3, "used": 3, "resetAt": T0 + DAY_MS, "limitName": "dailyMessageLimit"})
    );
    assert_eq!(r.headers["retry-after"], "43200");
    assert_eq!(
        mock.requests().len(),
        3,
        "the refused calls never reached the upstream"
    );
    let balance_after =
        app.get("/v1/balance", &[("X-API-Key", &key)]).await.body["credits_usd"].clone();
    assert_eq!(balance_before, balance_after, "and cost nothing");
    // Model listings are not messages.
    let r = app
        .get("/v1/gateway/anthropic/v1/models", &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // Each key has its own window.
    let (_, second) = new_key(&app, &key, "second").await;
    assert_eq!(call(second.clone()).await.status, 200);

    // Still closed a second before the window ends; open at its end.
    clock.advance(Duration::from_secs(12 * 3600 - 1));
    assert_eq!(call(key.clone()).await.status, 429);
    clock.advance(Duration::from_secs(1));
    assert_eq!(call(key.clone()).await.status, 200);
    // The new window started with that call.
    assert_eq!(call(key.clone()).await.status, 200);
    assert_eq!(call(key.clone()).await.status, 200);
    let r = call(key.clone()).await;
    assert_eq!(r.body["resetAt"], T0 + 2 * DAY_MS);

    // null returns the agent to the server default (100 here).
    let r = patch_agent(&app, &agent, json!({"dailyMessageLimit": null})).await;
    assert_eq!(r.body["security"]["dailyMessageLimit"], Value::Null);
    assert_eq!(call(key.clone()).await.status, 200);
    let r = app
        .patch(
            &format!("/v1/platform/agents/{agent}"),
            json!({"dailyMessageLimit": 0}),
            &[("X-Master-Key", &app.master_key)],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["field"], "dailyMessageLimit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_daily_message_limit_holds_across_two_instances_on_one_database() {
    let mock = MockUpstream::start().await;
    let base = mock.base.clone();
    let (base_a, base_b) = (base.clone(), base.clone());
    let a = spawn_app_with(move |c| use_mock_upstream(c, &base_a, true)).await;
    let b = spawn_app_on(
        a.db.clone(),
        move |c| use_mock_upstream(c, &base_b, true),
        Arc::new(aibank_core::SystemClock),
    )
    .await;
    let Agent { id: agent, key, .. } = a
        .platform()
        .agent(json!({"name": "fleet-1", "credits_usd": 5}))
        .await;
    patch_agent(&a, &agent, json!({"dailyMessageLimit": 10})).await;
    let results = futures_util::future::join_all((0..40).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        let key = key.clone();
        async move {
            app.post(MESSAGES, hello(), &[("X-API-Key", &key)])
                .await
                .status
        }
    }))
    .await;
    let ok = results.iter().filter(|s| **s == 200).count();
    let limited = results.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, limited), (10, 30), "{results:?}");
    assert_eq!(mock.requests().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_ip_limits_for_authenticated_and_public_endpoints() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), |c| {
        c.ip_rate_limit = Limit {
            max: 3,
            window: Duration::from_secs(60),
        };
        c.public_rate_limit = Limit {
            max: 2,
            window: Duration::from_secs(900),
        };
    })
    .await;
    let Agent { key, .. } = app.agent().await;
    clock.advance(Duration::from_secs(10));
    for _ in 0..3 {
        assert_eq!(
            app.get("/v1/balance", &[("X-API-Key", &key)]).await.status,
            200
        );
    }
    let r = app.get("/v1/balance", &[("X-API-Key", &key)]).await;
    assert_eq!(r.status, 429);
    assert_eq!(
        r.body,
        json!({"error": "Too many requests from this IP address", "code": "RATE_LIMITED",
               "limit": 3, "used": 3, "resetAt": T0 + 10_000 + 60_000,
               "limitName": "ipRequests"})
    );
    assert_eq!(r.headers["retry-after"], "60");
    assert!(r.headers.contains_key("x-request-id"));
    // Unknown routes count too; the health check never does.
    assert_eq!(app.get("/v1/nope", &[]).await.status, 429);
    for _ in 0..5 {
        assert_eq!(app.get("/v1/health", &[]).await.status, 200);
    }

    // Public endpoints have their own, longer budget: one registration is left.
    assert_eq!(
        app.post("/v1/agents/register", json!({}), &[]).await.status,
        201
    );
    let r = app.post("/v1/agents/register", json!({}), &[]).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.body["resetAt"], T0 + 900_000);
    assert_eq!(app.get("/v1/providers", &[]).await.status, 429);

    clock.advance(Duration::from_secs(60));
    assert_eq!(
        app.get("/v1/balance", &[("X-API-Key", &key)]).await.status,
        200
    );
    assert_eq!(
        app.post("/v1/agents/register", json!({}), &[]).await.status,
        429
    );
    clock.advance(Duration::from_secs(840));
    assert_eq!(
        app.post("/v1/agents/register", json!({}), &[]).await.status,
        201
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_who_changed_what() {
    // One second between actions, so the newest-first order is the order of the actions.
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let tick = || clock.advance(Duration::from_secs(1));
    let mk = [("X-Master-Key", app.master_key.as_str())];
    let mk_id = app.get("/v1/platform/master-keys", &mk).await.body["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    tick();
    let Agent { id: agent, .. } = app
        .platform()
        .agent(json!({"name": "fleet-1", "credits_usd": 5}))
        .await;
    tick();
    let r = app
        .post(
            &format!("/v1/platform/agents/{agent}/rotate-key"),
            json!({}),
            &mk,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let key = r.body["apiKey"].as_str().unwrap().to_owned();
    tick();
    patch_agent(
        &app,
        &agent,
        json!({"gatewayEnabled": false, "dailyMessageLimit": 7}),
    )
    .await;
    for action in ["pause", "resume"] {
        tick();
        let url = format!("/v1/platform/agents/{agent}/{action}");
        assert_eq!(app.post(&url, json!({}), &mk).await.status, 200);
    }
    tick();
    let (new_id, _) = new_key(&app, &key, "ci").await;
    tick();
    let r = patch_key(&app, &key, &new_id, json!({"readOnly": true})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    tick();
    let r = app
        .delete(&format!("/v1/keys/{new_id}"), &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    tick();
    let r = app
        .post(
            "/v1/platform/master-keys",
            json!({"name": "ops", "owner_email": "ops@example.com"}),
            &mk,
        )
        .await;
    let ops = r.body["id"].as_str().unwrap().to_owned();
    tick();
    let r = app
        .delete(&format!("/v1/platform/master-keys/{ops}"), &mk)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    tick();
    let r = app
        .patch("/v1/platform", json!({"daily_limit_usd": 50}), &mk)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    let r = app.get("/v1/platform/audit", &mk).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let events = r.body["data"].as_array().unwrap();
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        vec![
            "platform.updated",
            "master_key.revoked",
            "master_key.created",
            "api_key.deleted",
            "api_key.updated",
            "api_key.created",
            "agent.keys_resumed",
            "agent.keys_paused",
            "agent.updated",
            "api_key.rotated",
            "api_key.created",
            "master_key.created",
        ]
    );
    let master = json!({"type": "master_key", "id": mk_id});
    assert_eq!(events[8]["actor"], master);
    assert_eq!(events[8]["agentId"], agent);
    assert_eq!(
        events[8]["details"],
        json!({"gatewayEnabled": false, "dailyMessageLimit": 7})
    );
    assert_eq!(
        events[4]["actor"],
        json!({"type": "api_key", "id": key_id(&key)})
    );
    assert_eq!(events[4]["target_id"], new_id);
    assert_eq!(events[4]["details"], json!({"readOnly": true}));
    assert_eq!(events[1]["target_id"], ops);
    assert_eq!(events[11]["actor"], json!({"type": "operator", "id": null}));
    assert!(events[0]["created_at"].is_string());
    assert!(!r.text.contains(&key), "no key in the log");

    // Filters and pages.
    let r = app
        .get("/v1/platform/audit?action=api_key.created", &mk)
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 2);
    let r = app
        .get(&format!("/v1/platform/audit?agentId={agent}&limit=3"), &mk)
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 3);
    assert_eq!(r.body["has_more"], true);
    let next = r.body["next_cursor"].as_str().unwrap().to_owned();
    let r = app
        .get(
            &format!("/v1/platform/audit?agentId={agent}&limit=50&cursor={next}"),
            &mk,
        )
        .await;
    assert_eq!(r.body["data"].as_array().unwrap().len(), 5);
    let r = app.get("/v1/platform/audit?action=everything", &mk).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["field"], "action");

    // Another platform sees only its own.
    let other = app.new_platform_key().await;
    let r = app
        .get("/v1/platform/audit", &[("X-Master-Key", &other)])
        .await;
    let actions: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, vec!["master_key.created"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_the_agents_own_upstream_key_count_as_messages_too() {
    let (app, mock) = with_mock(|c| c.secret_key = Some("5e".repeat(32).into())).await;
    let Agent { id: agent, key, .. } = app
        .platform()
        .agent(json!({"name": "fleet-1", "credits_usd": 5}))
        .await;
    patch_agent(&app, &agent, json!({"dailyMessageLimit": 1})).await;
    let r = app
        .post(
            "/v1/provider-keys/anthropic",
            json!({"apiKey": "sk-ant-own"}),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app.post(MESSAGES, hello(), &[("X-API-Key", &key)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.0");
    let r = app.post(MESSAGES, hello(), &[("X-API-Key", &key)]).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.body["used"], 1);
    assert_eq!(mock.requests().len(), 1);
}
