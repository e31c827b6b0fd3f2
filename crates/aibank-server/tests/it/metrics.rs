//! `GET /metrics`: off without `AIBANK_METRICS_TOKEN`, behind it as a Bearer token, and,
//! scraped after known calls, parsed by Prometheus's own Python text parser (with
//! `AIBANK_TEST_SDKS=1`, as CI runs) with the counts those calls must have left.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::{spawn_app, spawn_app_with};

const TOKEN: &str = "metrics-token-7f3a";

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
    let off = spawn_app().await;
    off.anonymous()
        .get("/metrics")
        .await
        .assert_error(404, "NOT_FOUND");

    let app = spawn_app_with(|c| c.metrics_token = Some(TOKEN.to_owned().into())).await;
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
async fn gateway_calls_are_counted_by_provider_model_and_outcome() {
    let mock = crate::support::mock_upstream::MockUpstream::start().await;
    let base = mock.base.clone();
    let app = spawn_app_with(move |c| {
        crate::support::use_mock_upstream(c, &base, true);
        c.metrics_token = Some(TOKEN.to_owned().into());
    })
    .await;
    let agent = app
        .platform()
        .agent(serde_json::json!({"credits_usd": 5}))
        .await;
    let hello = serde_json::json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hello"}]});
    let path = "/v1/gateway/anthropic/v1/messages";
    for _ in 0..2 {
        app.post(path, hello.clone(), &[("X-API-Key", &agent.key)])
            .await
            .assert_ok();
    }
    let bad = [
        ("X-API-Key", agent.key.as_str()),
        ("x-mock-behavior", "error-400"),
    ];
    app.post(path, hello, &bad).await.assert_status(400);

    let auth = format!("Bearer {TOKEN}");
    let text = app.get("/metrics", &[("Authorization", &auth)]).await.text;
    for (outcome, n) in [("ok", 2), ("client_error", 1)] {
        let want = format!(
            r#"aibank_gateway_calls_total{{model="claude-sonnet-4-5-20250929",outcome="{outcome}",provider="anthropic"}} {n}"#
        );
        assert!(text.lines().any(|l| l == want), "{want} in\n{text}");
    }
    let want = r#"aibank_gateway_upstream_first_byte_seconds_count{provider="anthropic"} 3"#;
    assert!(text.lines().any(|l| l == want), "{want} in\n{text}");
    assert!(!text.contains(&agent.key) && !text.contains(&agent.id));
}
