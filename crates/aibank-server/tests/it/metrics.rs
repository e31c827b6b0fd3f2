//! `GET /metrics`: off without `AIBANK_METRICS_TOKEN`, behind it as a Bearer token, alone
//! on `AIBANK_METRICS_LISTEN`, and, scraped after known calls, parsed by Prometheus's own
//! Python text parser (with `AIBANK_TEST_SDKS=1`, as CI runs) with the counts those calls
//! must have left: requests, gateway calls and their timings, holds, refusals by limit.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{sample, spawn_app_with, METRICS_TOKEN as TOKEN};

/// The samples of `text` as `[name, labels, value]`, read by `prometheus_client`.
fn parse_with_prometheus_client(text: &str) -> Vec<Value> {
    let script = r"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse:\n{text}"
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn metrics_are_off_without_a_token_and_behind_it_with_one() {
    let off = spawn_app_with(|c| c.metrics_token = None).await;
    off.anonymous()
        .get("/metrics")
        .await
        .assert_error(404, "NOT_FOUND");

    let app = spawn_app_with(|_| {}).await;
    app.anonymous()
        .get("/metrics")
        .await
        .assert_error(401, "UNAUTHORIZED");
    let wrong = [("Authorization", "Bearer not-it")];
    app.get("/metrics", &wrong)
        .await
        .assert_error(401, "UNAUTHORIZED");

    let agent = app.agent().await;
    for _ in 0..3 {
        agent.get("/v1/balance").await.assert_ok();
    }
    app.anonymous().get("/v1/balance").await.assert_status(401);
    app.anonymous()
        .get("/v1/nope/12345")
        .await
        .assert_status(404);
    let keys = agent.get("/v1/keys").await;
    let key_id = keys.body["data"][0]["id"].as_str().unwrap().to_owned();
    agent
        .patch(
            &format!("/v1/keys/{key_id}"),
            serde_json::json!({"name": "renamed"}),
        )
        .await
        .assert_ok();

    let auth = format!("Bearer {TOKEN}");
    let r = app.get("/metrics", &[("Authorization", &auth)]).await;
    r.assert_ok();
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text;
    for secret in [
        TOKEN,
        agent.key.as_str(),
        key_id.as_str(),
        agent.id.as_str(),
    ] {
        assert!(!text.contains(secret), "{secret} in the metrics");
    }
    let line = |labels: &str| format!("aibank_http_requests_total{{{labels}}}");
    for (labels, n) in [
        (r#"method="GET",route="/v1/balance",status="200""#, 3),
        (r#"method="GET",route="/v1/balance",status="401""#, 1),
        (r#"method="GET",route="unmatched",status="404""#, 1),
        (r#"method="PATCH",route="/v1/keys/{id}",status="200""#, 1),
    ] {
        let want = format!("{} {n}", line(labels));
        assert!(text.lines().any(|l| l == want), "{want} in\n{text}");
    }

    if std::env::var("AIBANK_TEST_SDKS").as_deref() == Ok("1") {
        let samples = parse_with_prometheus_client(&text);
        let value = |name: &str, route: &str, status: Option<&str>| -> f64 {
            samples
                .iter()
                .filter(|s| {
                    s[0] == name
                        && s[1]["route"] == route
                        && status.is_none_or(|st| s[1]["status"] == st)
                })
                .map(|s| s[2].as_f64().unwrap())
                .sum()
        };
        assert!(
            (value("aibank_http_requests_total", "/v1/balance", Some("200")) - 3.0).abs() < 1e-9
        );
        assert!(
            (value(
                "aibank_http_request_duration_seconds_count",
                "/v1/balance",
                None
            ) - 4.0)
                .abs()
                < 1e-9
        );
        assert!(
            value(
                "aibank_http_request_duration_seconds_sum",
                "/v1/balance",
                None
            ) > 0.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_calls_holds_timings_and_refusals_are_counted() {
    let mock = crate::support::mock_upstream::MockUpstream::start().await;
    let base = mock.base.clone();
    let app = spawn_app_with(move |c| crate::support::use_mock_upstream(c, &base, true)).await;
    let agent = app
        .platform()
        .agent(serde_json::json!({"credits_usd": 5}))
        .await;
    let hello = serde_json::json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hello"}]});
    let path = "/v1/gateway/anthropic/v1/messages";
    let before = app.scrape().await;
    for series in [
        r#"aibank_holds_total{event="placed"}"#,
        r#"aibank_holds_total{event="expired"}"#,
        "aibank_owed_micro_usd_total",
        r#"aibank_rate_limited_total{limit="rpmLimit"}"#,
        r#"aibank_x402_verifications_total{outcome="ok"}"#,
        r#"aibank_x402_settlements_total{outcome="refused"}"#,
        "aibank_db_pool_waiters",
        "aibank_db_writes_pending",
        "aibank_db_combined_batches_total",
        "aibank_db_combined_writes_total",
    ] {
        assert_eq!(sample(&before, series), Some(0.0), "{series} in\n{before}");
    }
    for _ in 0..2 {
        app.post(path, hello.clone(), &[("X-API-Key", &agent.key)])
            .await
            .assert_ok();
    }
    let bad = [
        ("X-API-Key", agent.key.as_str()),
        ("x-mock-behavior", "error-400"),
    ];
    app.post(path, hello.clone(), &bad).await.assert_status(400);
    // One more call a minute, then the key's limit refuses the next before any hold.
    app.platform()
        .patch(
            &format!("/v1/platform/agents/{}", agent.id),
            serde_json::json!({"rpmLimit": 1}),
        )
        .await
        .assert_ok();
    app.post(path, hello.clone(), &[("X-API-Key", &agent.key)])
        .await
        .assert_ok();
    app.post(path, hello, &[("X-API-Key", &agent.key)])
        .await
        .assert_error(429, "RATE_LIMITED");

    let text = app.scrape().await;
    let model = r#"model="claude-sonnet-4-5-20250929""#;
    for (series, n) in [
        (
            format!(r#"aibank_gateway_calls_total{{{model},outcome="ok",provider="anthropic"}}"#),
            3.0,
        ),
        (
            format!(
                r#"aibank_gateway_calls_total{{{model},outcome="client_error",provider="anthropic"}}"#
            ),
            1.0,
        ),
        (
            r#"aibank_gateway_upstream_first_byte_seconds_count{provider="anthropic"}"#.into(),
            4.0,
        ),
        (
            r#"aibank_gateway_upstream_seconds_count{provider="anthropic"}"#.into(),
            4.0,
        ),
        // The refused call reached no upstream: no overhead is measured for it.
        (
            r#"aibank_gateway_overhead_seconds_count{provider="anthropic"}"#.into(),
            4.0,
        ),
        (r#"aibank_holds_total{event="placed"}"#.into(), 4.0),
        (r#"aibank_holds_total{event="captured"}"#.into(), 3.0),
        (r#"aibank_holds_total{event="released"}"#.into(), 1.0),
        (r#"aibank_holds_total{event="expired"}"#.into(), 0.0),
        (r#"aibank_rate_limited_total{limit="rpmLimit"}"#.into(), 1.0),
        (r#"aibank_rate_limited_total{limit="ipRequests"}"#.into(), 0.0),
        (
            r#"aibank_http_requests_total{method="POST",route="/v1/gateway/{provider}/{tail:.*}",status="429"}"#
                .into(),
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, &series), Some(n), "{series} in\n{text}");
    }
    // What aibank adds is part of the whole: less than the time the calls took.
    let overhead = sample(
        &text,
        r#"aibank_gateway_overhead_seconds_sum{provider="anthropic"}"#,
    )
    .unwrap();
    let whole = sample(
        &text,
        r#"aibank_http_request_duration_seconds_sum{method="POST",route="/v1/gateway/{provider}/{tail:.*}"}"#,
    )
    .unwrap();
    assert!(overhead > 0.0 && overhead < whole, "{overhead} of {whole}");
    assert!(!text.contains(&agent.key) && !text.contains(&agent.id));
    if std::env::var("AIBANK_TEST_SDKS").as_deref() == Ok("1") {
        let samples = parse_with_prometheus_client(&text);
        let placed = samples
            .iter()
            .find(|s| s[0] == "aibank_holds_total" && s[1]["event"] == "placed")
            .unwrap();
        assert!((placed[2].as_f64().unwrap() - 4.0).abs() < 1e-9);
    }
}

/// A hold whose time runs out under a slow stream is released by the sweeper (counted as
/// expired), and the stream's cost then comes from the balance (no capture is counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_the_sweeper_releases_is_counted_as_expired() {
    let mock = crate::support::mock_upstream::MockUpstream::start().await;
    let base = mock.base.clone();
    let app = spawn_app_with(move |c| {
        crate::support::use_mock_upstream(c, &base, true);
        c.hold_ttl = std::time::Duration::from_millis(300);
        c.gateway.hold_ttl = c.hold_ttl;
        c.sweep_interval = std::time::Duration::from_millis(100);
    })
    .await;
    let agent = app
        .platform()
        .agent(serde_json::json!({"credits_usd": 5}))
        .await;
    let body = serde_json::json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 10,
        "stream": true, "messages": [{"role": "user", "content": "Hello"}]});
    let r = app
        .post(
            "/v1/gateway/anthropic/v1/messages",
            body,
            &[("X-API-Key", &agent.key), ("x-mock-chunk-delay-ms", "150")],
        )
        .await;
    r.assert_ok();
    assert!(r.text.contains("message_stop"), "{}", r.text);
    let text = app.scrape().await;
    for (series, n) in [
        (r#"aibank_holds_total{event="placed"}"#, 1.0),
        (r#"aibank_holds_total{event="expired"}"#, 1.0),
        (r#"aibank_holds_total{event="captured"}"#, 0.0),
        (
            r#"aibank_gateway_upstream_seconds_count{provider="anthropic"}"#,
            1.0,
        ),
        (
            r#"aibank_gateway_overhead_seconds_count{provider="anthropic"}"#,
            1.0,
        ),
    ] {
        assert_eq!(sample(&text, series), Some(n), "{series} in\n{text}");
    }
    // The stream lasted longer than its hold; the upstream's time says so.
    let upstream = sample(
        &text,
        r#"aibank_gateway_upstream_seconds_sum{provider="anthropic"}"#,
    )
    .unwrap();
    assert!(upstream > 0.3, "{upstream}");
}

#[tokio::test]
async fn metrics_listen_serves_metrics_alone_on_its_own_address() {
    let open = spawn_app_with(|c| {
        c.metrics_token = None;
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    // Not on the API's address: the token is unset.
    open.anonymous()
        .get("/metrics")
        .await
        .assert_error(404, "NOT_FOUND");
    let port = open.metrics_port.unwrap();
    assert_ne!(port, open.port);
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains("aibank_db_pool_connections"), "{text}");
    // Nothing else is served there.
    let r = http
        .get(format!("http://127.0.0.1:{port}/v1/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // With a token as well, the listener asks for it too.
    let guarded = spawn_app_with(|c| c.metrics_listen = Some("127.0.0.1:0".parse().unwrap())).await;
    let url = format!("http://127.0.0.1:{}/metrics", guarded.metrics_port.unwrap());
    assert_eq!(http.get(&url).send().await.unwrap().status(), 401);
    let r = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
}
