//! The platform dashboard: sign-in, sessions and their cookie, CSRF, the per-IP sign-in
//! budget, the pages' headers, and every action checked against the API's own records
//! (balance, journal, audit log, the agent's next call). Then the same in a real browser,
//! with a screenshot.

use std::sync::Arc;
use std::time::Duration;

use aibank_core::ManualClock;
use aibank_store::schema::journal_entries;
use diesel::prelude::*;
use fantoccini::{Client, Locator};
use serde_json::json;

use crate::support::browser::{screenshot, should_run, text_once_shown, Driver, WAIT};
use crate::support::{
    captured_logs, master, spawn_app, spawn_app_with, spawn_app_with_clock, TestApp,
};

/// A browser's part, by hand: the cookie jar of one person using the dashboard.
struct Person<'a> {
    app: &'a TestApp,
    session: Option<String>,
}

/// An answer read whole, with the headers a page test looks at.
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    html: String,
}

impl Page {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }

    fn location(&self) -> &str {
        self.header("location")
    }

    /// The `Set-Cookie` of `name`, whole.
    fn set_cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .find(|c| c.starts_with(&format!("{name}=")))
    }

    /// The value of the first hidden `csrf` field on the page.
    fn csrf(&self) -> String {
        attr_after(&self.html, "name=\"csrf\" value=\"")
    }

    fn error_code(&self) -> String {
        attr_after(&self.html, "data-code=\"")
    }
}

fn attr_after(html: &str, marker: &str) -> String {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {html}"))
        + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The text of the element with `id` (no markup inside it).
fn text_of_id(html: &str, id: &str) -> String {
    let at = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let start = at + html[at..].find('>').unwrap() + 1;
    html[start..].split('<').next().unwrap().to_owned()
}

fn cookie_value(set_cookie: &str) -> String {
    let pair = set_cookie.split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_owned()
}

async fn read(res: reqwest::Response) -> Page {
    Page {
        status: res.status().as_u16(),
        headers: res.headers().clone(),
        html: res.text().await.unwrap(),
    }
}

impl<'a> Person<'a> {
    fn new(app: &'a TestApp) -> Self {
        Person { app, session: None }
    }

    fn cookies(&self, extra: Option<(&str, &str)>) -> String {
        let mut out = Vec::new();
        if let Some(s) = &self.session {
            out.push(format!("aibank_session={s}"));
        }
        if let Some((k, v)) = extra {
            out.push(format!("{k}={v}"));
        }
        out.join("; ")
    }

    async fn get(&self, path: &str) -> Page {
        let res = self
            .app
            .client
            .get(format!("{}{path}", self.app.base))
            .header("cookie", self.cookies(None))
            .send()
            .await
            .unwrap();
        read(res).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)], extra: Option<(&str, &str)>) -> Page {
        let body: Vec<String> = form
            .iter()
            .map(|(k, v)| format!("{k}={}", urlencode(v)))
            .collect();
        let res = self
            .app
            .client
            .post(format!("{}{path}", self.app.base))
            .header("cookie", self.cookies(extra))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"))
            .send()
            .await
            .unwrap();
        read(res).await
    }

    /// Submits the sign-in form as a browser would: its token in the field and the cookie.
    async fn try_sign_in(&mut self, key: &str) -> Page {
        let form = self.get("/dashboard/sign-in").await;
        assert_eq!(form.status, 200, "{}", form.html);
        let cookie = form.set_cookie("aibank_sign_in").expect("a sign-in cookie");
        let token = cookie_value(&cookie);
        assert_eq!(form.csrf(), token);
        let r = self
            .post(
                "/dashboard/sign-in",
                &[("csrf", &token), ("master_key", key)],
                Some(("aibank_sign_in", &token)),
            )
            .await;
        if let Some(c) = r.set_cookie("aibank_session") {
            self.session = Some(cookie_value(&c));
        }
        r
    }

    async fn sign_in(&mut self, key: &str) -> Page {
        let r = self.try_sign_in(key).await;
        assert_eq!(r.status, 303, "{}", r.html);
        assert_eq!(r.location(), "/dashboard");
        r
    }

    /// The CSRF token of the session, from a page's forms.
    async fn csrf(&self) -> String {
        let fleet = self.get("/dashboard").await;
        assert_eq!(fleet.status, 200, "{}", fleet.html);
        fleet.csrf()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn key_id(master_key: &str) -> String {
    aibank_auth::keys::parse(master_key).unwrap().id
}

/// The agent's grants in the journal: (delta, reference).
async fn grants(app: &TestApp, agent: &str) -> Vec<(i64, Option<String>)> {
    let (pool, agent) = (app.pool.clone(), agent.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut c = pool.get().unwrap();
        journal_entries::table
            .filter(journal_entries::account_id.eq(agent))
            .filter(journal_entries::kind.eq("grant"))
            .order(journal_entries::id.asc())
            .select((journal_entries::delta_micros, journal_entries::reference))
            .load(&mut c)
            .unwrap()
    })
    .await
    .unwrap()
}

async fn credits(app: &TestApp, agent: &str) -> String {
    let r = app
        .get(
            &format!("/v1/platform/agents/{agent}"),
            &master(&app.master_key),
        )
        .await;
    r.assert_ok();
    r.body["credits_usd"].to_string()
}

#[tokio::test]
async fn pages_need_a_session() {
    let app = spawn_app().await;
    let agent = app.platform().agent(json!({})).await;
    let nobody = Person::new(&app);
    for path in ["/dashboard", &format!("/dashboard/agents/{}", agent.id)] {
        let r = nobody.get(path).await;
        assert_eq!(r.status, 303, "{path}");
        assert_eq!(r.location(), "/dashboard/sign-in");
    }
    let forged = Person {
        app: &app,
        session: Some("0".repeat(64)),
    };
    for path in ["credits", "limits", "pause", "resume", "rotate-key"] {
        let path = format!("/dashboard/agents/{}/{path}", agent.id);
        for who in [&nobody, &forged] {
            let r = who
                .post(&path, &[("csrf", "x"), ("amount_usd", "5")], None)
                .await;
            assert_eq!(r.status, 401, "{path}: {}", r.html);
            assert_eq!(r.error_code(), "UNAUTHORIZED");
            assert!(r.html.contains("href=\"/dashboard/sign-in\""));
        }
    }
    assert_eq!(forged.get("/dashboard").await.status, 303);
    assert_eq!(credits(&app, &agent.id).await, "0.0");
    // A known path with another method.
    let r = app.delete("/dashboard", &[]).await;
    r.assert_error(405, "METHOD_NOT_ALLOWED");
}

#[tokio::test]
async fn signing_in_takes_a_master_key_and_sets_a_strict_cookie() {
    let app = spawn_app().await;
    let agent = app.platform().agent(json!({"name": "fleet-a"})).await;
    let mut person = Person::new(&app);
    for wrong in [
        "mk_nope_nope".to_owned(),
        agent.key.clone(),
        String::new(),
        format!("{}x", app.master_key),
    ] {
        let r = person.try_sign_in(&wrong).await;
        assert_eq!(r.status, 401, "{wrong}: {}", r.html);
        assert_eq!(r.error_code(), "UNAUTHORIZED");
        assert!(r.set_cookie("aibank_session").is_none());
        assert!(r.html.contains("id=\"sign-in-form\""));
    }
    assert!(person.session.is_none());

    let r = person.sign_in(&app.master_key).await;
    let cookie = r.set_cookie("aibank_session").unwrap();
    for part in [
        "Path=/dashboard",
        "Max-Age=43200",
        "HttpOnly",
        "SameSite=Strict",
    ] {
        assert!(cookie.contains(part), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    let cleared = r.set_cookie("aibank_sign_in").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    // Signed in: the fleet, with the headers every page has.
    let fleet = person.get("/dashboard").await;
    assert_eq!(fleet.status, 200, "{}", fleet.html);
    assert!(fleet.html.contains("fleet-a"));
    assert!(fleet
        .html
        .contains(&format!("data-agent-id=\"{}\"", agent.id)));
    assert!(fleet.html.contains(&key_id(&app.master_key)));
    assert_eq!(fleet.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(fleet.header("cache-control"), "no-store");
    assert_eq!(fleet.header("x-content-type-options"), "nosniff");
    assert_eq!(fleet.header("x-frame-options"), "DENY");
    assert_eq!(fleet.header("referrer-policy"), "no-referrer");
    let csp = fleet.header("content-security-policy");
    for part in [
        "default-src 'none'",
        "style-src 'sha256-",
        "img-src 'self' data:",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(csp.contains(part), "{csp}");
    }
    assert!(!csp.contains("script") && !csp.contains("unsafe"), "{csp}");
    assert!(!fleet.html.contains("<script"));
    assert!(
        !fleet.html.contains(" style="),
        "inline style attributes need 'unsafe-inline'"
    );
    assert!(!fleet.html.contains(&app.master_key));
    // Signed in already: the sign-in page sends to the fleet.
    let again = person.get("/dashboard/sign-in").await;
    assert_eq!(again.status, 303);
    assert_eq!(again.location(), "/dashboard");
}

#[tokio::test]
async fn the_cookie_is_secure_behind_https() {
    let app = spawn_app_with(|c| c.public_url = Some("https://bank.example.com".into())).await;
    let mut person = Person::new(&app);
    let form = person.get("/dashboard/sign-in").await;
    assert!(form
        .set_cookie("aibank_sign_in")
        .unwrap()
        .contains("; Secure"));
    let r = person.sign_in(&app.master_key).await;
    let cookie = r.set_cookie("aibank_session").unwrap();
    assert!(cookie.ends_with("; Secure"), "{cookie}");
}

#[tokio::test]
async fn failed_sign_ins_are_limited_per_ip() {
    let app = spawn_app_with(|c| {
        c.dashboard_sign_in_limit = aibank_auth::ratelimit::Limit {
            max: 3,
            window: Duration::from_secs(900),
        };
    })
    .await;
    let mut person = Person::new(&app);
    // A right key costs nothing.
    person.sign_in(&app.master_key).await;
    person.session = None;
    for _ in 0..3 {
        assert_eq!(person.try_sign_in("mk_wrong_key").await.status, 401);
    }
    for key in ["mk_wrong_key", app.master_key.as_str()] {
        let r = person.try_sign_in(key).await;
        assert_eq!(r.status, 429, "{}", r.html);
        assert_eq!(r.error_code(), "RATE_LIMITED");
        let retry: u64 = r.header("retry-after").parse().unwrap();
        assert!((1..=900).contains(&retry), "{retry}");
        assert!(r.set_cookie("aibank_session").is_none());
    }
}

#[tokio::test]
async fn the_unauthenticated_budget_is_answered_with_a_page() {
    let app = spawn_app_with(|c| {
        c.public_rate_limit = aibank_auth::ratelimit::Limit {
            max: 1,
            window: Duration::from_secs(900),
        };
    })
    .await;
    let person = Person::new(&app);
    assert_eq!(person.get("/dashboard/sign-in").await.status, 200);
    let r = person.get("/dashboard/sign-in").await;
    assert_eq!(r.status, 429, "{}", r.html);
    assert_eq!(r.error_code(), "RATE_LIMITED");
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    assert!(!r.header("retry-after").is_empty());
    // The signed-in pages draw from the general budget, which is off here.
    assert_eq!(person.get("/dashboard").await.status, 303);
}

#[tokio::test]
async fn forms_without_the_sessions_csrf_token_are_refused() {
    let app = spawn_app().await;
    let agent = app.platform().agent(json!({})).await;
    let mut person = Person::new(&app);

    // The sign-in form's token must match its cookie.
    let form = person.get("/dashboard/sign-in").await;
    let token = cookie_value(&form.set_cookie("aibank_sign_in").unwrap());
    for (field, cookie) in [
        (None, Some(token.as_str())),
        (Some(token.as_str()), None),
        (Some("f".repeat(64).as_str()), Some(token.as_str())),
    ] {
        let mut fields = vec![("master_key", app.master_key.as_str())];
        if let Some(f) = field {
            fields.push(("csrf", f));
        }
        let r = person
            .post(
                "/dashboard/sign-in",
                &fields,
                cookie.map(|c| ("aibank_sign_in", c)),
            )
            .await;
        assert_eq!(r.status, 403, "{}", r.html);
        assert_eq!(r.error_code(), "FORBIDDEN");
        assert!(r.set_cookie("aibank_session").is_none());
    }

    person.sign_in(&app.master_key).await;
    let csrf = person.csrf().await;
    let path = format!("/dashboard/agents/{}/credits", agent.id);
    let mut someone_else = Person::new(&app);
    someone_else.sign_in(&app.master_key).await;
    let foreign = someone_else.csrf().await;
    assert_ne!(foreign, csrf, "each session has its own token");
    for bad in [None, Some(""), Some("nope"), Some(foreign.as_str())] {
        let mut fields = vec![("amount_usd", "5")];
        if let Some(b) = bad {
            fields.push(("csrf", b));
        }
        let r = person.post(&path, &fields, None).await;
        assert_eq!(r.status, 403, "{bad:?}: {}", r.html);
        assert_eq!(r.error_code(), "FORBIDDEN");
    }
    let pause = format!("/dashboard/agents/{}/pause", agent.id);
    assert_eq!(person.post(&pause, &[], None).await.status, 403);
    assert_eq!(
        person.post("/dashboard/sign-out", &[], None).await.status,
        403
    );
    assert_eq!(credits(&app, &agent.id).await, "0.0");
    assert_eq!(agent.get("/v1/balance").await.status, 200);
    // With it, the same grant goes through.
    let r = person
        .post(&path, &[("csrf", &csrf), ("amount_usd", "5")], None)
        .await;
    assert_eq!(r.status, 303, "{}", r.html);
    assert_eq!(credits(&app, &agent.id).await, "5.0");
}

#[tokio::test]
async fn sessions_end_after_12_hours_at_sign_out_and_with_their_key() {
    let clock = Arc::new(ManualClock::new(1_800_000_000_000));
    let app = spawn_app_with_clock(clock.clone(), |_| {}).await;
    let mut person = Person::new(&app);
    person.sign_in(&app.master_key).await;
    clock.advance(Duration::from_secs(12 * 3600 - 1));
    assert_eq!(person.get("/dashboard").await.status, 200);
    clock.advance(Duration::from_secs(1));
    let r = person.get("/dashboard").await;
    assert_eq!(r.status, 303, "expired");
    assert_eq!(r.location(), "/dashboard/sign-in");

    // Sign-out deletes the session: the cookie no longer works, even if kept.
    person.sign_in(&app.master_key).await;
    let csrf = person.csrf().await;
    let r = person
        .post("/dashboard/sign-out", &[("csrf", &csrf)], None)
        .await;
    assert_eq!(r.status, 303, "{}", r.html);
    assert_eq!(r.location(), "/dashboard/sign-in");
    assert!(r
        .set_cookie("aibank_session")
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(person.get("/dashboard").await.status, 303);
    let r = person
        .post("/dashboard/sign-out", &[("csrf", &csrf)], None)
        .await;
    assert_eq!(r.status, 401);

    // A session of a revoked master key ends with it.
    let r = app
        .post(
            "/v1/platform/master-keys",
            json!({"name": "ops", "owner_email": "ops@example.com"}),
            &master(&app.master_key),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let (second, second_id) = (r.str("/key"), r.str("/id"));
    person.sign_in(&second).await;
    let page = person.get("/dashboard").await;
    assert_eq!(page.status, 200);
    assert!(page.html.contains(&second_id));
    app.delete(
        &format!("/v1/platform/master-keys/{second_id}"),
        &master(&app.master_key),
    )
    .await
    .assert_ok();
    assert_eq!(person.get("/dashboard").await.status, 303);
    let r = person.try_sign_in(&second).await;
    assert_eq!(r.status, 401, "{}", r.html);
}

#[tokio::test]
async fn actions_run_the_apis_code_journaled_and_audited() {
    let app = spawn_app().await;
    let platform = app.platform();
    let agent = platform
        .agent(json!({"name": "<b>bold</b> & co", "credits_usd": 1}))
        .await;
    let mut person = Person::new(&app);
    person.sign_in(&app.master_key).await;
    let csrf = person.csrf().await;
    let mk_id = key_id(&app.master_key);
    let base = format!("/dashboard/agents/{}", agent.id);

    let page = person.get(&base).await;
    assert_eq!(page.status, 200, "{}", page.html);
    assert!(page.html.contains("&lt;b&gt;bold&lt;/b&gt; &amp; co"));
    assert!(!page.html.contains("<b>bold"));
    assert!(page.html.contains("id=\"balance\" data-micros=\"1000000\""));

    // Grant: the journal names the master key; the form's idempotency key counts it once.
    let grant_key = attr_after(&page.html, "name=\"idempotency_key\" value=\"");
    let form = [
        ("csrf", csrf.as_str()),
        ("amount_usd", "2.5"),
        ("idempotency_key", grant_key.as_str()),
    ];
    for _ in 0..2 {
        let r = person.post(&format!("{base}/credits"), &form, None).await;
        assert_eq!(r.status, 303, "{}", r.html);
        assert_eq!(r.location(), format!("{base}?done=granted"));
    }
    assert_eq!(credits(&app, &agent.id).await, "3.5");
    let reference = Some(format!("master_key:{mk_id}"));
    assert_eq!(
        grants(&app, &agent.id).await,
        vec![(1_000_000, None), (2_500_000, reference)]
    );
    let (sum, balance) = app.ledger_state(&agent.id).await;
    assert_eq!((sum, balance), (3_500_000, 3_500_000));
    let shown = person.get(&format!("{base}?done=granted")).await;
    assert!(shown.html.contains("data-notice=\"granted\""));
    assert!(shown.html.contains("$3.50"));

    // The API's refusals, as the page with the API's status.
    for (amount, field) in [
        ("0", "amount_usd"),
        ("1.0000001", "amount_usd"),
        ("-1", "amount_usd"),
        ("abc", "amount_usd"),
    ] {
        let r = person
            .post(
                &format!("{base}/credits"),
                &[("csrf", &csrf), ("amount_usd", amount)],
                None,
            )
            .await;
        assert_eq!(r.status, 400, "{amount}: {}", r.html);
        assert_eq!(r.error_code(), "INVALID_INPUT");
        assert!(r.html.contains(field));
    }
    assert_eq!(credits(&app, &agent.id).await, "3.5");

    // Limits: only what changed, audited as the master key.
    let r = person
        .post(
            &format!("{base}/limits"),
            &[
                ("csrf", &csrf),
                ("daily_limit_usd", "12.5"),
                ("weekly_limit_usd", "500.0"),
                ("monthly_limit_usd", ""),
                ("per_tx_limit_usd", "50"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.html);
    let view = platform
        .get(&format!("/v1/platform/agents/{}", agent.id))
        .await;
    assert_eq!(
        view.body["spending_controls"]["daily_limit_usd"],
        json!(12.5)
    );
    assert_eq!(
        view.body["spending_controls"]["weekly_limit_usd"],
        json!(500.0)
    );
    let audit = platform
        .get(&format!(
            "/v1/platform/audit?agentId={}&action=agent.updated",
            agent.id
        ))
        .await;
    assert_eq!(
        audit.body["data"][0]["actor"],
        json!({"type": "master_key", "id": mk_id})
    );
    assert_eq!(
        audit.body["data"][0]["details"],
        json!({"daily_limit_usd": 12.5})
    );
    let r = person
        .post(
            &format!("{base}/limits"),
            &[("csrf", &csrf), ("daily_limit_usd", "12.5")],
            None,
        )
        .await;
    assert_eq!(r.status, 400, "nothing changed: {}", r.html);

    // Pause: the agent's next call is 403; resume: it works again.
    let r = person
        .post(&format!("{base}/pause"), &[("csrf", &csrf)], None)
        .await;
    assert_eq!(r.status, 303, "{}", r.html);
    agent
        .get("/v1/balance")
        .await
        .assert_error(403, "FORBIDDEN");
    let page = person.get(&base).await;
    assert!(page.html.contains("data-keys-paused=\"true\""));
    assert!(page.html.contains("id=\"resume-form\""));
    assert!(page.html.contains("data-action=\"agent.keys_paused\""));
    let r = person
        .post(&format!("{base}/resume"), &[("csrf", &csrf)], None)
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(agent.get("/v1/balance").await.status, 200);

    // Rotate: the new key once, on the answer; the old one stops working.
    let r = person
        .post(&format!("{base}/rotate-key"), &[("csrf", &csrf)], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.html);
    assert_eq!(r.header("cache-control"), "no-store");
    let new_key = text_of_id(&r.html, "new-key");
    assert!(new_key.starts_with("ak_"), "{new_key}");
    agent
        .get("/v1/balance")
        .await
        .assert_error(401, "UNAUTHORIZED");
    app.get("/v1/balance", &[("X-API-Key", &new_key)])
        .await
        .assert_ok();
    let page = person.get(&base).await;
    assert!(!page.html.contains(&new_key));
    assert!(page
        .html
        .contains(&format!("ak_…{}", &new_key[new_key.len() - 4..])));
    assert!(page.html.contains("data-status=\"revoked\""));
    assert!(page.html.contains("data-action=\"api_key.rotated\""));
    let logs = captured_logs();
    let session = person.session.clone().unwrap();
    for secret in [
        new_key.as_str(),
        app.master_key.as_str(),
        session.as_str(),
        csrf.as_str(),
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }

    // Another platform's agent does not exist here.
    let other = app.platform_with(&app.new_platform_key().await);
    let theirs = other.agent(json!({})).await;
    let r = person
        .get(&format!("/dashboard/agents/{}", theirs.id))
        .await;
    assert_eq!(r.status, 404);
    let r = person
        .post(
            &format!("/dashboard/agents/{}/credits", theirs.id),
            &[("csrf", &csrf), ("amount_usd", "1")],
            None,
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.html);
    assert_eq!(app.ledger_state(&theirs.id).await, (0, 0));
}

#[tokio::test]
async fn the_fleet_is_searched_and_paged() {
    let app = spawn_app().await;
    let platform = app.platform();
    let mut ids = Vec::new();
    for i in 0..26 {
        let name = if i == 3 {
            "Needle-Finder".to_owned()
        } else {
            format!("hay-{i}")
        };
        ids.push(platform.agent(json!({"name": name})).await.id);
    }
    let mut person = Person::new(&app);
    person.sign_in(&app.master_key).await;
    let first = person.get("/dashboard").await;
    assert_eq!(first.html.matches("<tr data-agent-id=").count(), 25);
    // Newest first: the first agent made is on the second page.
    assert!(!first
        .html
        .contains(&format!("data-agent-id=\"{}\"", ids[0])));
    let next = attr_after(&first.html, "id=\"next-page\" href=\"").replace("&amp;", "&");
    let second = person.get(&next).await;
    assert_eq!(second.status, 200, "{}", second.html);
    assert_eq!(second.html.matches("<tr data-agent-id=").count(), 1);
    assert!(second
        .html
        .contains(&format!("data-agent-id=\"{}\"", ids[0])));
    assert!(!second.html.contains("id=\"next-page\""));
    assert!(second.html.contains("id=\"first-page\""));

    for q in ["needle", "NEEDLE-f", ids[3].as_str()] {
        let found = person.get(&format!("/dashboard?q={}", urlencode(q))).await;
        assert_eq!(found.html.matches("<tr data-agent-id=").count(), 1, "{q}");
        assert!(found
            .html
            .contains(&format!("data-agent-id=\"{}\"", ids[3])));
    }
    let none = person.get("/dashboard?q=%25").await;
    assert!(
        none.html.contains("id=\"no-agents\""),
        "% is taken literally"
    );
    let bad = person.get("/dashboard?cursor=nonsense").await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn the_chart_has_a_bar_a_day_for_30_days() {
    let app = spawn_app().await;
    let platform = app.platform();
    let agent = platform.agent(json!({"credits_usd": 10})).await;
    platform
        .post(
            &format!("/v1/platform/agents/{}/charges", agent.id),
            json!({"amount_usd": 1.25, "description": "report"}),
        )
        .await
        .assert_status(201);
    let mut person = Person::new(&app);
    person.sign_in(&app.master_key).await;
    let page = person.get(&format!("/dashboard/agents/{}", agent.id)).await;
    assert_eq!(page.html.matches("<rect class=\"bar\"").count(), 30);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let today =
        aibank_core::clock::rfc3339(i64::try_from(now.as_millis()).unwrap())[..10].to_owned();
    assert!(page
        .html
        .contains(&format!("data-day=\"{today}\" data-micros=\"1250000\"")));
    assert!(page.html.contains("data-max-micros=\"1250000\""));
    // The charge is a recent call, with its provider and cost.
    assert!(page.html.contains("class=\"call\""));
    assert!(page.html.contains("platform"));
    assert!(page.html.contains("$1.25"));
    assert_eq!(page.html.matches("data-micros=\"0\"><title>").count(), 29);
}

async fn click(c: &Client, id: &str) {
    c.find(Locator::Id(id))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn attr(c: &Client, id: &str, name: &str) -> String {
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id(id))
        .await
        .unwrap()
        .attr(name)
        .await
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_manages_its_fleet_in_a_real_browser() {
    if !should_run() {
        return;
    }
    let app = spawn_app().await;
    let platform = app.platform();
    platform.agent(json!({"name": "bystander"})).await;
    let agent = platform
        .agent(json!({"name": "browser-fleet-bot", "credits_usd": 10}))
        .await;
    platform
        .post(
            &format!("/v1/platform/agents/{}/charges", agent.id),
            json!({"amount_usd": 2.75}),
        )
        .await
        .assert_status(201);

    let mut driver = Driver::start();
    driver.ready().await;
    let c = driver.session().await;
    c.set_window_size(1280, 2200).await.unwrap();

    // Not signed in: sent to the form; a wrong key is refused there.
    c.goto(&format!("{}/dashboard", app.base)).await.unwrap();
    let field = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("master_key"))
        .await
        .unwrap();
    field.send_keys("mk_wrong_key").await.unwrap();
    click(&c, "sign-in-button").await;
    assert_eq!(attr(&c, "error", "data-code").await, "UNAUTHORIZED");
    c.find(Locator::Id("master_key"))
        .await
        .unwrap()
        .send_keys(&app.master_key)
        .await
        .unwrap();
    click(&c, "sign-in-button").await;

    // Find the agent.
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("fleet"))
        .await
        .unwrap();
    c.find(Locator::Id("q"))
        .await
        .unwrap()
        .send_keys("fleet-bot")
        .await
        .unwrap();
    click(&c, "search-button").await;
    // The agent's row is on the unfiltered page too: first the results page, whose field
    // the server fills with the search (typing sets the field's value, not its attribute).
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css("input#q[value='fleet-bot']"))
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Css(&format!("tr[data-agent-id='{}']", agent.id)))
        .await
        .unwrap();
    assert_eq!(
        c.find_all(Locator::Css("#fleet tbody tr"))
            .await
            .unwrap()
            .len(),
        1
    );
    c.find(Locator::Css(".agent-link"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_once_shown(&c, "agent-name").await, "browser-fleet-bot");
    assert_eq!(attr(&c, "balance", "data-micros").await, "7250000");

    // The chart: a bar a day, today's as tall as the chart allows.
    let bars = c
        .find_all(Locator::Css("#spend-chart rect.bar"))
        .await
        .unwrap();
    assert_eq!(bars.len(), 30);
    let today = bars.last().unwrap();
    assert_eq!(today.attr("data-micros").await.unwrap().unwrap(), "2750000");
    let tallest: i64 = today
        .attr("height")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert!(tallest > 100, "{tallest}");
    assert_eq!(bars[0].attr("height").await.unwrap().unwrap(), "0");

    // Grant credits: the balance changes and the journal has the grant.
    c.find(Locator::Id("amount_usd"))
        .await
        .unwrap()
        .send_keys("5")
        .await
        .unwrap();
    click(&c, "grant-button").await;
    assert_eq!(attr(&c, "notice", "data-notice").await, "granted");
    assert_eq!(attr(&c, "balance", "data-micros").await, "12250000");
    let reference = Some(format!("master_key:{}", key_id(&app.master_key)));
    assert_eq!(
        grants(&app, &agent.id).await,
        vec![(10_000_000, None), (5_000_000, reference)]
    );

    // The page the screenshot shows: the agent after the grant.
    let shot = screenshot(&c, "dashboard-agent.png").await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);

    // A forged form: the same grant without the CSRF token is refused.
    c.execute(
        "const f = document.getElementById('grant-form');\
         f.querySelector('input[name=csrf]').remove();\
         document.getElementById('amount_usd').value = '100';\
         f.submit();",
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(attr(&c, "error", "data-code").await, "FORBIDDEN");
    assert_eq!(credits(&app, &agent.id).await, "12.25");

    // Pause the keys: the agent's next call is 403.
    c.goto(&format!("{}/dashboard/agents/{}", app.base, agent.id))
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("pause-button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(attr(&c, "notice", "data-notice").await, "paused");
    assert_eq!(attr(&c, "state", "data-keys-paused").await, "true");
    agent
        .get("/v1/balance")
        .await
        .assert_error(403, "FORBIDDEN");

    // Sign out: the dashboard asks for a key again.
    click(&c, "sign-out-button").await;
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("sign-in-form"))
        .await
        .unwrap();
    c.goto(&format!("{}/dashboard/agents/{}", app.base, agent.id))
        .await
        .unwrap();
    c.wait()
        .at_most(WAIT)
        .for_element(Locator::Id("sign-in-form"))
        .await
        .unwrap();

    c.close().await.unwrap();
}
