//! The human claim flow over real HTTP, on the configured backend: the status and claim
//! API (`/v1/device/…`), the `/device` pages, who may claim what, concurrent claims, the
//! audit entry, and the per-client budget for unknown codes, concurrent guesses included.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::unreadable_literal
)]

use std::sync::Arc;
use std::time::Duration;

use crate::support::master;
use crate::support::{captured_logs, spawn_app_with_clock, Resp, TestApp};
use aibank_auth::ratelimit::Limit;
use aibank_core::clock::rfc3339;
use aibank_core::ManualClock;
use serde_json::{json, Value};

const T0: i64 = 1_790_000_000_000;
/// The default claim code lifetime (`AIBANK_CLAIM_CODE_TTL_SECS`).
const DEFAULT_TTL_SECS: i64 = 10 * 365 * 86_400;

const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'";

async fn app_at(clock: &Arc<ManualClock>) -> TestApp {
    spawn_app_with_clock(clock.clone(), |_| {}).await
}

async fn register(app: &TestApp, body: Value) -> Value {
    let r = app.post("/v1/agents/register", body, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

fn code_of(reg: &Value) -> String {
    reg["claimCode"].as_str().unwrap().to_owned()
}

fn id_of(reg: &Value) -> String {
    reg["agentId"].as_str().unwrap().to_owned()
}

/// A well-formed code that is not `code`.
fn other_code(code: &str) -> &'static str {
    if code == "QQQQ-0000" {
        "QQQQ-0001"
    } else {
        "QQQQ-0000"
    }
}

async fn status(app: &TestApp, code: &str) -> Resp {
    app.get(&format!("/v1/device/{code}"), &[]).await
}

async fn claim(app: &TestApp, code: &str, email: &str, master_key: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = master_key
        .map(|k| ("X-Master-Key", k))
        .into_iter()
        .collect();
    app.post(
        "/v1/device/claim",
        json!({"code": code, "email": email}),
        &headers,
    )
    .await
}

/// `application/x-www-form-urlencoded`, as a browser encodes a form.
fn form(fields: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => {
                    char::from(b).to_string()
                }
                b' ' => "+".to_owned(),
                b => format!("%{b:02X}"),
            })
            .collect()
    }
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

async fn post_form(app: &TestApp, fields: &[(&str, &str)]) -> Resp {
    let res = app
        .client
        .post(format!("{}/device", app.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(fields))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap();
    Resp {
        status,
        headers,
        text,
        body: Value::Null,
    }
}

fn assert_page(r: &Resp, status: u16) {
    assert_eq!(r.status, status, "{}", r.text);
    assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["content-security-policy"], CSP);
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(r.headers["referrer-policy"], "no-referrer");
    assert!(r.text.starts_with("<!doctype html>"), "{}", r.text);
    assert!(
        !r.text.contains("<script") && !r.text.contains("src="),
        "pages load nothing: {}",
        r.text
    );
}

/// The text of the element with this id (up to its closing tag), for pages without
/// nested markup in it.
fn element_text(html: &str, id: &str) -> String {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let open_end = start + html[start..].find('>').unwrap() + 1;
    let close = open_end + html[open_end..].find("</").unwrap();
    html[open_end..close].to_owned()
}

// ---------------------------------------------------------------- status

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_agent_and_its_wallet_and_whether_it_is_claimed() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    let reg = register(&app, json!({"name": "research-bot"})).await;
    let code = code_of(&reg);
    let b = code.as_bytes();
    assert!(
        code.len() == 9
            && b[..4].iter().all(u8::is_ascii_uppercase)
            && b[4] == b'-'
            && b[5..].iter().all(u8::is_ascii_digit),
        "{code}"
    );
    assert_eq!(
        reg["verificationUri"],
        format!("{}/device?code={code}", app.base)
    );
    assert_eq!(reg["expiresIn"], DEFAULT_TTL_SECS);

    let unclaimed = json!({
        "code": code,
        "agent": {"id": id_of(&reg), "name": "research-bot"},
        "wallet": reg["wallet"],
        "status": "unclaimed",
        "claimedAt": null,
        "emailLocked": false,
        "expiresAt": rfc3339(T0 + DEFAULT_TTL_SECS * 1000),
    });
    let r = status(&app, &code).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, unclaimed);
    assert!(r.body["wallet"]["addresses"]["ethereum"]
        .as_str()
        .unwrap()
        .starts_with("0x"));
    assert!(!r.text.contains("sealed"), "{}", r.text);

    // Any case, with or without the dash.
    for spelling in [
        code.to_lowercase(),
        code.replace('-', ""),
        code.to_lowercase().replace('-', ""),
    ] {
        let r = status(&app, &spelling).await;
        assert_eq!(r.body, unclaimed, "{spelling}");
    }

    // Unknown and malformed codes look alike.
    for bad in [other_code(&code), "not-a-code", "XKCD-42"] {
        let r = status(&app, bad).await;
        assert_eq!(r.status, 404, "{bad}: {}", r.text);
        assert_eq!(
            r.body,
            json!({"error": "Unknown claim code", "code": "NOT_FOUND"})
        );
    }

    // An agent registered with an email is locked to it; the address is never shown.
    let locked = register(&app, json!({"name": "b", "email": "owner@example.com"})).await;
    let r = status(&app, &code_of(&locked)).await;
    assert_eq!(r.body["emailLocked"], true, "{}", r.text);
    assert!(!r.text.contains("owner@"), "{}", r.text);

    clock.advance(Duration::from_secs(5));
    let c = claim(&app, &code, "new@example.com", None).await;
    assert_eq!(c.status, 200, "{}", c.text);
    let r = status(&app, &code).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let mut claimed = unclaimed.clone();
    claimed["status"] = json!("claimed");
    claimed["claimedAt"] = json!(rfc3339(T0 + 5_000));
    assert_eq!(r.body, claimed);
    assert!(!r.text.contains("new@example.com"), "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_codes_are_refused_everywhere() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), |c| {
        c.claim_code_ttl = Duration::from_secs(120);
        // Expired codes are known codes: looking them up spends no guesses.
        c.claim_guess_limit = Limit {
            max: 1,
            window: Duration::from_secs(900),
        };
    })
    .await;
    let reg = register(&app, json!({})).await;
    assert_eq!(reg["expiresIn"], 120);
    let code = code_of(&reg);
    clock.advance(Duration::from_secs(119));
    assert_eq!(status(&app, &code).await.status, 200);
    clock.advance(Duration::from_secs(1));

    let expired =
        json!({"error": "This claim code has expired", "code": "NOT_FOUND", "expired": true});
    for _ in 0..3 {
        let r = status(&app, &code).await;
        assert_eq!(r.status, 404, "{}", r.text);
        assert_eq!(r.body, expired);
    }
    let r = claim(&app, &code, "late@example.com", None).await;
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.body, expired);

    let page = app.get(&format!("/device?code={code}"), &[]).await;
    assert_page(&page, 404);
    assert_eq!(
        element_text(&page.text, "error"),
        "This claim code has expired"
    );
    let page = post_form(&app, &[("code", &code), ("email", "late@example.com")]).await;
    assert_page(&page, 404);
    assert!(!page.text.contains("claim-form"), "{}", page.text);

    // Still unclaimed: nothing was written.
    let r = app
        .get(
            "/v1/agents/me",
            &[("X-API-Key", reg["apiKey"].as_str().unwrap())],
        )
        .await;
    assert_eq!(r.body["platformId"], Value::Null, "{}", r.text);
}

// ---------------------------------------------------------------- claiming

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_email_gets_a_new_platform_and_its_master_key_once() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    let reg = register(&app, json!({"name": "worker"})).await;
    let (code, agent, ak) = (
        code_of(&reg),
        id_of(&reg),
        reg["apiKey"].as_str().unwrap().to_owned(),
    );
    let me = app.get("/v1/agents/me", &[("X-API-Key", &ak)]).await;
    assert_eq!(me.body["platformId"], Value::Null, "{}", me.text);

    clock.advance(Duration::from_secs(1));
    let r = claim(&app, &code, " Alice@Example.com ", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let platform = r.body["platformId"].as_str().unwrap().to_owned();
    let mk = r.body["masterKey"].as_str().unwrap().to_owned();
    assert!(platform.starts_with("plt_"), "{platform}");
    assert!(mk.starts_with("mk_"), "{mk}");
    assert_eq!(
        r.body,
        json!({"agentId": agent, "platformId": platform, "status": "claimed",
               "claimedAt": rfc3339(T0 + 1_000), "newPlatform": true, "masterKey": mk})
    );

    // The master key manages the new platform, which holds the agent.
    let p = app.get("/v1/platform", &master(&mk)).await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.body["id"], platform);
    assert_eq!(p.body["name"], "Alice@Example.com");
    let list = app.get("/v1/platform/agents", &master(&mk)).await;
    assert_eq!(list.status, 200, "{}", list.text);
    let data = list.body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{}", list.text);
    assert_eq!(data[0]["agentId"], agent);
    assert_eq!(data[0]["platformId"], platform);
    let keys = app.get("/v1/platform/master-keys", &master(&mk)).await;
    assert_eq!(keys.body["data"][0]["owner_email"], "Alice@Example.com");
    // The bootstrap platform does not see it.
    let other = app
        .get(
            &format!("/v1/platform/agents/{agent}"),
            &master(&app.master_key),
        )
        .await;
    assert_eq!(other.status, 404, "{}", other.text);

    // The agent's own key sees its platform at once, and what it does now is the
    // platform's to audit.
    let me = app.get("/v1/agents/me", &[("X-API-Key", &ak)]).await;
    assert_eq!(me.body["platformId"], platform, "{}", me.text);
    clock.advance(Duration::from_secs(1));
    let k = app
        .post(
            "/v1/keys/create",
            json!({"name": "second"}),
            &[("X-API-Key", &ak)],
        )
        .await;
    assert_eq!(k.status, 201, "{}", k.text);

    let audit = app.get("/v1/platform/audit", &master(&mk)).await;
    assert_eq!(audit.status, 200, "{}", audit.text);
    let mut actions: Vec<&str> = audit.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    // The claim's two entries share a timestamp, so their listed order is the ids'.
    assert_eq!(actions.remove(0), "api_key.created", "{}", audit.text);
    actions.sort_unstable();
    assert_eq!(
        actions,
        ["agent.claimed", "master_key.created"],
        "{}",
        audit.text
    );
    let claimed = app
        .get("/v1/platform/audit?action=agent.claimed", &master(&mk))
        .await;
    let e = &claimed.body["data"][0];
    assert_eq!(e["actor"], json!({"type": "public", "id": null}));
    assert_eq!(e["agentId"], agent);
    assert_eq!(e["target_id"], agent);
    assert_eq!(
        e["details"],
        json!({"email": "Alice@Example.com", "newPlatform": true})
    );
    assert_eq!(e["created_at"], rfc3339(T0 + 1_000));

    // Claimed once: every later attempt is refused, and the key is never shown again.
    let conflict = json!({"error": "This agent has already been claimed", "code": "CONFLICT"});
    for (email, key) in [
        ("Alice@Example.com", None),
        ("alice@example.com", Some(mk.as_str())),
        ("mallory@example.com", None),
    ] {
        let r = claim(&app, &code, email, key).await;
        assert_eq!(r.status, 409, "{email}: {}", r.text);
        assert_eq!(r.body, conflict);
    }
    let secret = mk.rsplit('_').next().unwrap();
    for r in [
        status(&app, &code).await,
        app.get(&format!("/device?code={code}"), &[]).await,
        app.get("/v1/platform/master-keys", &master(&mk)).await,
    ] {
        assert!(!r.text.contains(secret), "{}", r.text);
    }
    assert!(
        !captured_logs().contains(secret),
        "the master key reached the logs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_registered_email_may_claim_and_input_is_checked() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    let reg = register(&app, json!({"email": "Owner@Example.com"})).await;
    let code = code_of(&reg);

    let r = claim(&app, &code, "someone@example.com", None).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"error": "This agent was registered with a different email address: only that address can claim it",
               "code": "FORBIDDEN", "emailLocked": true})
    );

    // Input rules.
    let r = claim(&app, &code, "not-an-email", None).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["field"], "email");
    let r = claim(&app, " ", "owner@example.com", None).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["field"], "code");
    let r = app
        .post("/v1/device/claim", json!({"code": code}), &[])
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["field"], "email");
    let r = app
        .post(
            "/v1/device/claim",
            json!({"code": code, "email": "owner@example.com", "platform": "x"}),
            &[],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);
    let r = app.get("/v1/device/claim", &[]).await;
    assert_eq!(r.status, 405, "{}", r.text);
    assert_eq!(r.body["allowed"], "POST", "{}", r.text);
    assert_eq!(r.headers["allow"], "POST");

    // The registered address, in any case, claims it.
    let r = claim(&app, &code.to_lowercase(), "owner@EXAMPLE.com", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["newPlatform"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_with_a_platform_claims_only_with_that_platforms_master_key() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    let first = register(&app, json!({})).await;
    let r = claim(&app, &code_of(&first), "ops@acme.test", None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let (platform, mk) = (
        r.body["platformId"].as_str().unwrap().to_owned(),
        r.body["masterKey"].as_str().unwrap().to_owned(),
    );

    let second = register(&app, json!({})).await;
    let code = code_of(&second);
    let needs = json!({
        "error": "This email address already has an aibank platform: claim with one of that platform's master keys",
        "code": "FORBIDDEN",
        "needsMasterKey": true,
    });
    let other_platform = app.new_platform_key().await;
    let final_char = if mk.ends_with('A') { "B" } else { "A" };
    let tampered = format!("{}{final_char}", &mk[..mk.len() - 1]);
    for key in [
        None,
        Some(app.master_key.as_str()),
        Some(other_platform.as_str()),
        Some(tampered.as_str()),
        Some("mk_nope"),
        Some(second["apiKey"].as_str().unwrap()),
    ] {
        let r = claim(&app, &code, "OPS@acme.test", key).await;
        assert_eq!(r.status, 403, "{key:?}: {}", r.text);
        assert_eq!(r.body, needs, "{key:?}");
    }
    assert_eq!(status(&app, &code).await.body["status"], "unclaimed");

    clock.advance(Duration::from_secs(2));
    let r = claim(&app, &code, "OPS@acme.test", Some(&mk)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"agentId": id_of(&second), "platformId": platform, "status": "claimed",
               "claimedAt": rfc3339(T0 + 2_000), "newPlatform": false})
    );

    // Any active master key of the platform will do; a revoked one will not.
    let mk2 = app
        .post(
            "/v1/platform/master-keys",
            json!({"name": "second", "owner_email": "cto@acme.test"}),
            &master(&mk),
        )
        .await;
    assert_eq!(mk2.status, 201, "{}", mk2.text);
    let (mk2_id, mk2) = (
        mk2.body["id"].as_str().unwrap().to_owned(),
        mk2.body["key"].as_str().unwrap().to_owned(),
    );
    let third = register(&app, json!({})).await;
    let r = claim(&app, &code_of(&third), "ops@acme.test", Some(&mk2)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["platformId"], platform);
    let revoked = app
        .delete(&format!("/v1/platform/master-keys/{mk2_id}"), &master(&mk))
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    let fourth = register(&app, json!({})).await;
    let r = claim(&app, &code_of(&fourth), "ops@acme.test", Some(&mk2)).await;
    assert_eq!(r.body, needs, "{}", r.text);

    // A master key is for joining the email's platform; a new email needs none.
    let r = claim(&app, &code_of(&fourth), "fresh@example.com", Some(&mk)).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["field"], "masterKey");

    let list = app.get("/v1/platform/agents", &master(&mk)).await;
    let ids: Vec<&str> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["agentId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{}", list.text);
    for reg in [&first, &second, &third] {
        assert!(ids.contains(&id_of(reg).as_str()), "{}", list.text);
    }
    let audit = app
        .get(
            &format!(
                "/v1/platform/audit?action=agent.claimed&agentId={}",
                id_of(&second)
            ),
            &master(&mk),
        )
        .await;
    let e = &audit.body["data"][0];
    assert_eq!(
        e["actor"],
        json!({"type": "master_key", "id": mk.split('_').nth(1).unwrap()})
    );
    assert_eq!(
        e["details"],
        json!({"email": "OPS@acme.test", "newPlatform": false})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_created_by_a_platform_are_born_claimed() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    let r = app
        .post(
            "/v1/platform/agents",
            json!({"name": "fleet-1"}),
            &master(&app.master_key),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let code = code_of(&r.body);
    let s = status(&app, &code).await;
    assert_eq!(s.body["status"], "claimed", "{}", s.text);
    assert_eq!(s.body["claimedAt"], rfc3339(T0));
    clock.advance(Duration::from_secs(1));
    let c = claim(&app, &code, "thief@example.com", None).await;
    assert_eq!(c.status, 409, "{}", c.text);
    assert_eq!(c.body["code"], "CONFLICT");
    let page = app.get(&format!("/device?code={code}"), &[]).await;
    assert_page(&page, 200);
    assert!(
        page.text.contains(r#"data-status="claimed""#),
        "{}",
        page.text
    );
    assert!(!page.text.contains("claim-form"), "{}", page.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_concurrent_claims_exactly_one_wins() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    let reg = register(&app, json!({})).await;
    let code = code_of(&reg);
    // Ten different new emails: each would create a platform if it won.
    let results = futures_util::future::join_all((0..10).map(|i| {
        let (app, code) = (&app, code.clone());
        async move { claim(app, &code, &format!("racer{i}@example.com"), None).await }
    }))
    .await;
    let won: Vec<&Resp> = results.iter().filter(|r| r.status == 200).collect();
    let lost: Vec<&Resp> = results.iter().filter(|r| r.status == 409).collect();
    assert_eq!(
        (won.len(), lost.len()),
        (1, 9),
        "{:?}",
        results.iter().map(|r| &r.text).collect::<Vec<_>>()
    );
    let platform = won[0].body["platformId"].as_str().unwrap().to_owned();

    // The losers' platforms and keys were rolled back with their claims.
    let pool = app.pool.clone();
    let (platforms, claimed_keys, audits) = tokio::task::spawn_blocking(move || {
        use aibank_store::schema::{audit_events, master_keys, platforms};
        use diesel::prelude::*;
        let mut c = pool.get().unwrap();
        let p: i64 = platforms::table.count().get_result(&mut c).unwrap();
        let k: i64 = master_keys::table
            .filter(master_keys::owner_email.like("racer%"))
            .count()
            .get_result(&mut c)
            .unwrap();
        let a: i64 = audit_events::table
            .filter(audit_events::action.eq("agent.claimed"))
            .count()
            .get_result(&mut c)
            .unwrap();
        (p, k, a)
    })
    .await
    .unwrap();
    assert_eq!((platforms, claimed_keys, audits), (2, 1, 1));
    let me = app
        .get(
            "/v1/agents/me",
            &[("X-API-Key", reg["apiKey"].as_str().unwrap())],
        )
        .await;
    assert_eq!(me.body["platformId"], platform);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_claims_of_one_email_make_one_platform() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    let mut codes = Vec::new();
    for _ in 0..6 {
        codes.push(code_of(&register(&app, json!({})).await));
    }
    let results = futures_util::future::join_all(
        codes
            .iter()
            .map(|code| claim(&app, code, "team@example.com", None)),
    )
    .await;
    // One creates the platform; the others find it and need its master key.
    let statuses: Vec<u16> = results.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 403).count(),
        5,
        "{statuses:?}"
    );
    for r in results.iter().filter(|r| r.status == 403) {
        assert_eq!(r.body["needsMasterKey"], true, "{}", r.text);
    }
}

// ---------------------------------------------------------------- the page

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_claims_an_agent_and_escapes_everything_it_shows() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;

    let r = app.get("/device", &[]).await;
    assert_page(&r, 200);
    assert!(
        r.text
            .contains(r#"<form id="code-form" method="get" action="/device">"#),
        "{}",
        r.text
    );
    assert!(!r.text.contains("id=\"error\""), "{}", r.text);

    let reg = register(&app, json!({"name": "<script>x</script>"})).await;
    let code = code_of(&reg);
    let uri = reg["verificationUri"].as_str().unwrap();
    let path = uri.strip_prefix(&app.base).unwrap();
    let r = app.get(path, &[]).await;
    assert_page(&r, 200);
    assert!(
        r.text.contains("&lt;script&gt;x&lt;/script&gt;"),
        "{}",
        r.text
    );
    assert!(!r.text.contains("<script>x"), "{}", r.text);
    assert_eq!(
        element_text(&r.text, "agent-name"),
        "&lt;script&gt;x&lt;/script&gt;"
    );
    for chain in ["ethereum", "base", "solana"] {
        assert_eq!(
            element_text(&r.text, &format!("address-{chain}")),
            reg["wallet"]["addresses"][chain].as_str().unwrap()
        );
    }
    assert!(
        r.text
            .contains(r#"id="status" class="status" data-status="unclaimed""#),
        "{}",
        r.text
    );
    assert!(r
        .text
        .contains(r#"<form id="claim-form" method="post" action="/device">"#));
    assert!(r.text.contains(&format!(r#"name="code" value="{code}""#)));
    assert!(r.text.contains(r#"name="master_key""#));
    assert!(r
        .text
        .contains("Only if your email already has an aibank platform"));
    // The code as people type it.
    let r = app
        .get(
            &format!("/device?code={}", code.to_lowercase().replace('-', "")),
            &[],
        )
        .await;
    assert_page(&r, 200);
    assert!(r.text.contains("claim-form"));

    // A bad email is shown back escaped, with the form.
    let r = post_form(
        &app,
        &[("code", &code), ("email", "\"><b>x"), ("master_key", "")],
    )
    .await;
    assert_page(&r, 400);
    assert_eq!(
        element_text(&r.text, "error"),
        "`email` must be a valid email address"
    );
    assert!(
        r.text.contains(r#"value="&quot;&gt;&lt;b&gt;x""#),
        "{}",
        r.text
    );
    assert!(r.text.contains("claim-form"));

    // Claiming: the master key is shown once.
    clock.advance(Duration::from_secs(3));
    let r = post_form(
        &app,
        &[
            ("code", &code),
            ("email", "page@example.com"),
            ("master_key", ""),
        ],
    )
    .await;
    assert_page(&r, 200);
    assert!(r.text.contains(r#"data-status="claimed""#), "{}", r.text);
    let mk = element_text(&r.text, "master-key");
    assert!(mk.starts_with("mk_"), "{mk}");
    assert!(r.text.contains("Copy it now, it will not be shown again."));
    assert!(!r.text.contains("claim-form"));
    let list = app.get("/v1/platform/agents", &master(&mk)).await;
    assert_eq!(
        list.body["data"][0]["agentId"],
        id_of(&reg),
        "{}",
        list.text
    );

    // Reloading shows the claim, never the key.
    let r = app.get(path, &[]).await;
    assert_page(&r, 200);
    assert!(r.text.contains(r#"data-status="claimed""#), "{}", r.text);
    assert!(r.text.contains(&rfc3339(T0 + 3_000)));
    assert!(
        !r.text.contains("mk_") && !r.text.contains("master-key"),
        "{}",
        r.text
    );
    assert!(!r.text.contains("claim-form"));

    // A second claim is refused.
    let r = post_form(&app, &[("code", &code), ("email", "page@example.com")]).await;
    assert_page(&r, 409);
    assert_eq!(
        element_text(&r.text, "error"),
        "This agent has already been claimed"
    );
    assert!(!r.text.contains("mk_"));

    // Unknown codes, on either method.
    let unknown = other_code(&code);
    let r = app.get(&format!("/device?code={unknown}"), &[]).await;
    assert_page(&r, 404);
    assert_eq!(element_text(&r.text, "error"), "Unknown claim code");
    assert!(r.text.contains(&format!(r#"value="{unknown}""#)));
    let r = post_form(&app, &[("code", "<i>"), ("email", "a@example.com")]).await;
    assert_page(&r, 404);
    assert!(r.text.contains(r#"value="&lt;i&gt;""#), "{}", r.text);
    let r = post_form(&app, &[("email", "a@example.com")]).await;
    assert_page(&r, 400);
    assert!(r.text.contains("code-form"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_handles_locked_emails_and_existing_platforms() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_at(&clock).await;
    let first = register(&app, json!({})).await;
    let r = claim(&app, &code_of(&first), "fleet@example.com", None).await;
    let (platform, mk) = (
        r.body["platformId"].as_str().unwrap().to_owned(),
        r.body["masterKey"].as_str().unwrap().to_owned(),
    );

    let locked = register(&app, json!({"email": "fleet@example.com"})).await;
    let code = code_of(&locked);
    let r = app.get(&format!("/device?code={code}"), &[]).await;
    assert_page(&r, 200);
    assert!(r.text.contains(r#"id="email-locked""#), "{}", r.text);
    assert!(!r.text.contains("fleet@example.com"), "{}", r.text);

    let r = post_form(&app, &[("code", &code), ("email", "other@example.com")]).await;
    assert_page(&r, 403);
    assert!(element_text(&r.text, "error").contains("only that address can claim it"));

    let r = post_form(
        &app,
        &[
            ("code", &code),
            ("email", "fleet@example.com"),
            ("master_key", ""),
        ],
    )
    .await;
    assert_page(&r, 403);
    assert!(
        element_text(&r.text, "error").contains("master keys"),
        "{}",
        r.text
    );
    assert!(r.text.contains("claim-form"));
    assert!(!r.text.contains(&mk), "a master key is never echoed");

    let r = post_form(
        &app,
        &[
            ("code", &code),
            ("email", "fleet@example.com"),
            ("master_key", &mk),
        ],
    )
    .await;
    assert_page(&r, 200);
    assert!(r.text.contains(r#"id="joined""#), "{}", r.text);
    assert!(r.text.contains(&platform));
    assert!(
        !r.text.contains("master-key") && !r.text.contains(&mk),
        "{}",
        r.text
    );
}

// ---------------------------------------------------------------- guessing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_codes_spend_a_per_ip_budget_then_every_device_request_is_refused() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), |c| {
        c.claim_guess_limit = Limit {
            max: 4,
            window: Duration::from_secs(900),
        };
    })
    .await;
    let reg = register(&app, json!({})).await;
    let code = code_of(&reg);
    let unknown = other_code(&code);
    // Known codes cost nothing.
    for _ in 0..6 {
        assert_eq!(status(&app, &code).await.status, 200);
    }
    clock.advance(Duration::from_secs(10));
    // Four failed look-ups, one of each kind.
    assert_eq!(status(&app, unknown).await.status, 404);
    clock.advance(Duration::from_secs(10));
    assert_eq!(
        app.get(&format!("/device?code={unknown}"), &[])
            .await
            .status,
        404
    );
    assert_eq!(
        claim(&app, unknown, "g@example.com", None).await.status,
        404
    );
    assert_eq!(
        post_form(&app, &[("code", "nope"), ("email", "g@example.com")])
            .await
            .status,
        404
    );

    let limited = json!({"error": "Too many unknown claim codes from this IP address",
                          "code": "RATE_LIMITED", "limit": 4, "used": 4,
                          "resetAt": T0 + 10_000 + 900_000, "limitName": "ipFailures"});
    let r = status(&app, &code).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.body, limited);
    assert_eq!(r.headers["retry-after"], "890");
    let r = claim(&app, &code, "g@example.com", None).await;
    assert_eq!(r.body, limited);
    for r in [
        app.get("/device", &[]).await,
        app.get(&format!("/device?code={code}"), &[]).await,
        post_form(&app, &[("code", &code), ("email", "g@example.com")]).await,
    ] {
        assert_page(&r, 429);
        assert_eq!(r.headers["retry-after"], "890");
        assert_eq!(
            element_text(&r.text, "error"),
            "Too many unknown claim codes from this IP address"
        );
        assert!(!r.text.contains("claim-form"));
    }
    // Other endpoints are not affected.
    assert_eq!(app.get("/v1/providers", &[]).await.status, 200);

    clock.advance(Duration::from_secs(890));
    assert_eq!(status(&app, &code).await.status, 200);
    assert_eq!(status(&app, &code).await.body["status"], "unclaimed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_guesses_from_one_client_never_outrun_the_budget() {
    const LIMIT: u32 = 5;
    const GUESSES: usize = 40;
    const POOL: u32 = 2;
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), |c| {
        c.database_pool_size = POOL;
        c.claim_guess_limit = Limit {
            max: LIMIT,
            window: Duration::from_secs(900),
        };
    })
    .await;
    let reg = register(&app, json!({})).await;
    let code = code_of(&reg);
    let guesses: Vec<String> = (0..)
        .map(|i| format!("QQQQ-{i:04}"))
        .filter(|g| *g != code)
        .take(GUESSES)
        .collect();

    // Every connection is held, so no look-up can answer until they are let go and all
    // requests are under way at once: a budget checked first and counted after the
    // look-up would let every one of them through.
    let pool = app.pool.clone();
    let held = tokio::task::spawn_blocking(move || {
        (0..POOL).map(|_| pool.get().unwrap()).collect::<Vec<_>>()
    })
    .await
    .unwrap();
    let answered = &std::sync::atomic::AtomicUsize::new(0);
    let app = &app;
    // The four ways of looking a code up in turn.
    let requests =
        futures_util::future::join_all(guesses.iter().enumerate().map(|(i, guess)| async move {
            let status = match i % 4 {
                0 => status(app, guess).await.status,
                1 => app.get(&format!("/device?code={guess}"), &[]).await.status,
                2 => claim(app, guess, "g@example.com", None).await.status,
                _ => {
                    post_form(app, &[("code", guess), ("email", "g@example.com")])
                        .await
                        .status
                }
            };
            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            status
        }));
    // Those past the budget are refused without waiting for the database; the
    // connections are let go once they have been, or after a while (well within the
    // pool's checkout timeout) if they are not.
    let release = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while answered.load(std::sync::atomic::Ordering::SeqCst) < GUESSES - LIMIT as usize
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(held);
    };
    let (statuses, ()) = tokio::join!(requests, release);
    let not_found = statuses.iter().filter(|s| **s == 404).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!(not_found <= LIMIT as usize, "{statuses:?}");
    assert_eq!(not_found + limited, GUESSES, "{statuses:?}");
    // None was given back: the budget is spent, all of it and no more.
    assert_eq!(not_found, LIMIT as usize, "{statuses:?}");
    let r = status(app, &code).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(r.body["used"], LIMIT);

    clock.advance(Duration::from_secs(900));
    // Concurrent look-ups of a known code, no more at once than the budget, cost nothing.
    for _ in 0..3 {
        let ok = futures_util::future::join_all((0..LIMIT).map(|_| status(app, &code))).await;
        assert!(ok.iter().all(|r| r.status == 200), "{ok:?}");
    }
    assert_eq!(status(app, &guesses[0]).await.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_requests_draw_from_the_public_per_ip_budget() {
    let clock = Arc::new(ManualClock::new(T0));
    let app = spawn_app_with_clock(clock.clone(), |c| {
        c.public_rate_limit = Limit {
            max: 4,
            window: Duration::from_secs(900),
        };
    })
    .await;
    let reg = register(&app, json!({})).await;
    let code = code_of(&reg);
    assert_eq!(status(&app, &code).await.status, 200);
    assert_eq!(app.get("/device", &[]).await.status, 200);
    assert_eq!(
        post_form(&app, &[("code", &code), ("email", "bad")])
            .await
            .status,
        400
    );

    let r = status(&app, &code).await;
    assert_eq!(r.status, 429, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"error": "Too many requests from this IP address", "code": "RATE_LIMITED",
               "limit": 4, "used": 4, "resetAt": T0 + 900_000,
               "limitName": "ipPublicRequests"})
    );
    assert_eq!(r.headers["retry-after"], "900");
    // The page refuses as a page.
    let r = app.get(&format!("/device?code={code}"), &[]).await;
    assert_page(&r, 429);
    assert_eq!(r.headers["retry-after"], "900");
    assert_eq!(
        element_text(&r.text, "error"),
        "Too many requests from this IP address"
    );
    let r = claim(&app, &code, "a@example.com", None).await;
    assert_eq!(r.status, 429);
}
