//! The metered gateway against a mock upstream that speaks the Anthropic and OpenAI wire
//! formats (JSON and SSE): exact billing, incremental streaming, every failure path,
//! bring-your-own-key, and header hygiene. Both hops are real HTTP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::unreadable_literal
)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use crate::support::mock_upstream::MockUpstream;
use crate::support::Agent;
use crate::support::{spawn_app_with, Resp, TestApp};
use aibank_gateway::Registry;
use aibank_server::Config;
use serde_json::{json, Value};

use crate::support::{
    use_mock_upstream as use_mock, MOCK_ANTHROPIC_KEY as ANTHROPIC_KEY,
    MOCK_OPENAI_KEY as OPENAI_KEY,
};

async fn setup(customize: impl FnOnce(&mut Config)) -> (TestApp, MockUpstream) {
    let mock = MockUpstream::start().await;
    let base = mock.base.clone();
    let app = spawn_app_with(move |c| {
        use_mock(c, &base, true);
        customize(c);
    })
    .await;
    (app, mock)
}

fn messages(stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 100, "stream": stream,
           "messages": [{"role": "user", "content": "Hello"}]})
}

fn chat(stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "max_completion_tokens": 100, "stream": stream,
           "messages": [{"role": "user", "content": "Hello"}]})
}

/// An Anthropic Messages call (`messages(stream)`) through the gateway.
async fn anthropic_call(app: &TestApp, stream: bool, headers: &[(&str, &str)]) -> Resp {
    app.post(
        "/v1/gateway/anthropic/v1/messages",
        messages(stream),
        headers,
    )
    .await
}

async fn balance(app: &TestApp, key: &str) -> Value {
    app.get("/v1/balance", &[("X-API-Key", key)]).await.body["credits_usd"].clone()
}

async fn held(app: &TestApp, agent: &str) -> i64 {
    let (pool, id) = (app.pool.clone(), agent.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut c = pool.get().unwrap();
        aibank_ledger::balance(&mut c, &id).unwrap().held_micros
    })
    .await
    .unwrap()
}

/// Waits until background settlement has happened (streams settle after the last byte).
async fn settled(app: &TestApp, agent: &str) {
    for _ in 0..100 {
        if held(app, agent).await == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the hold was never settled");
}

#[tokio::test]
async fn anthropic_json_call_costs_exactly_the_price_table_times_usage() {
    let (app, mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let r = anthropic_call(
        &app,
        false,
        &[
            ("X-API-Key", &key),
            ("x-mock-usage", "1000,500,200,100,50"),
            ("anthropic-beta", "tools-2024"),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["content"][0]["text"], "Hello from mock");
    // 1000×3 + 500×15 + 200×3.75 (5-minute cache writes) + 100×0.3 + 50×6 (1-hour cache
    // writes) = 11 580 micro-dollars.
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.01158");
    assert_eq!(r.headers["x-aibank-balance-usd"], "9.98842");
    assert_eq!(balance(&app, &key).await, json!(9.98842));
    assert_eq!(held(&app, &agent).await, 0);
    assert_eq!(app.ledger_state(&agent).await, (9_988_420, 9_988_420));

    let up = mock.last_request().unwrap();
    assert_eq!(
        (up.method.as_str(), up.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(
        up.header("x-api-key"),
        Some(ANTHROPIC_KEY),
        "the platform key replaces the agent's"
    );
    assert_eq!(up.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(up.header("anthropic-beta"), Some("tools-2024"));
    assert_eq!(up.json()["model"], "claude-sonnet-4-5-20250929");

    let usage = app.get("/v1/usage", &[("X-API-Key", &key)]).await;
    let u = &usage.body["data"][0];
    assert_eq!(
        (
            u["provider"].clone(),
            u["input_tokens"].clone(),
            u["output_tokens"].clone()
        ),
        (json!("anthropic"), json!(1350), json!(500))
    );
    assert_eq!(u["cost_usd"], json!(0.01158));
    assert_eq!(
        u["request_id"].as_str(),
        r.headers["x-request-id"].to_str().ok()
    );
    let providers = app.get("/v1/providers", &[]).await;
    let version = providers.body["price_version"].as_str().unwrap();
    assert_eq!(version.len(), 16, "{version}");
    assert_eq!(
        u["price_version"], version,
        "the row names the prices it was billed at"
    );
}

#[tokio::test]
async fn openai_json_call_with_a_bearer_key_like_the_sdk_sends() {
    let (app, mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let bearer = format!("Bearer {key}");
    let r = app
        .post(
            "/v1/gateway/openai/v1/chat/completions",
            chat(false),
            &[
                ("Authorization", &bearer),
                ("x-mock-usage", "1000,200,0,400"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // 600 uncached × 0.15 + 400 cached × 0.075 + 200 × 0.6 = 240 micro-dollars.
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.00024");
    assert_eq!(app.ledger_state(&agent).await, (9_999_760, 9_999_760));
    let up = mock.last_request().unwrap();
    assert_eq!(
        up.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert!(up.header("x-api-key").is_none());
}

#[tokio::test]
async fn anthropic_stream_arrives_chunk_by_chunk_and_is_billed_at_the_end() {
    let (app, mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let start = Instant::now();
    let mut res = app
        .client
        .post(format!("{}/v1/gateway/anthropic/v1/messages", app.base))
        .header("X-API-Key", &key)
        .header("x-mock-usage", "40,12")
        .header("x-mock-chunks", "4")
        .header("x-mock-chunk-delay-ms", "250")
        .json(&messages(true))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let first = res.chunk().await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("message_start"));
    assert_eq!(
        mock.streams_completed(),
        0,
        "the first chunk reached the client before the upstream finished"
    );
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    let mut all = first.to_vec();
    while let Some(c) = res.chunk().await.unwrap() {
        all.extend_from_slice(&c);
    }
    let text = String::from_utf8(all).unwrap();
    assert!(text.contains("event: message_stop"), "{text}");
    // 40×3 + 12×15 = 300 micro-dollars, reported as an SSE comment after the stream.
    assert!(
        text.trim_end()
            .ends_with(": aibank cost_usd=0.0003 balance_usd=9.9997"),
        "{text}"
    );
    settled(&app, &agent).await;
    assert_eq!(app.ledger_state(&agent).await, (9_999_700, 9_999_700));
}

#[tokio::test]
async fn openai_stream_asks_for_usage_and_is_billed_from_it() {
    let (app, mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let r = app
        .post(
            "/v1/gateway/openai/v1/chat/completions",
            chat(true),
            &[("X-API-Key", &key), ("x-mock-usage", "100,50")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.text.contains("data: [DONE]"), "{}", r.text);
    let sent = mock.last_request().unwrap().json();
    assert_eq!(
        sent["stream_options"]["include_usage"], true,
        "the gateway asked for the usage chunk"
    );
    assert_eq!(sent["messages"][0]["content"], "Hello");
    settled(&app, &agent).await;
    // 100 × 0.15 + 50 × 0.6 = 45 micro-dollars.
    assert_eq!(app.ledger_state(&agent).await, (9_999_955, 9_999_955));
}

#[tokio::test]
async fn upstream_errors_pass_through_and_charge_nothing() {
    let (app, mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    for (behavior, status) in [("error-429", 429), ("error-500", 500), ("error-400", 400)] {
        let r = anthropic_call(
            &app,
            false,
            &[("X-API-Key", &key), ("x-mock-behavior", behavior)],
        )
        .await;
        assert_eq!(r.status, status, "{}", r.text);
        assert_eq!(
            r.body["type"], "error",
            "the provider's own error shape: {}",
            r.text
        );
        assert_eq!(r.headers["x-aibank-cost-usd"], "0.0");
        let r = app
            .post(
                "/v1/gateway/openai/v1/chat/completions",
                chat(true),
                &[("X-API-Key", &key), ("x-mock-behavior", behavior)],
            )
            .await;
        assert_eq!(r.status, status);
        assert!(r.body["error"]["message"].is_string(), "{}", r.text);
    }
    assert_eq!(mock.requests().len(), 6);
    assert_eq!(held(&app, &agent).await, 0, "every hold released");
    assert_eq!(app.ledger_state(&agent).await, (10_000_000, 10_000_000));
}

#[tokio::test]
async fn upstream_redirects_go_back_to_the_client_with_the_key_kept_home() {
    let (app, mock) = setup(|_| {}).await;
    let elsewhere = MockUpstream::start().await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let to = format!("{}/v1/messages", elsewhere.base);
    for path in [
        "/v1/gateway/anthropic/v1/messages",
        "/v1/gateway/openai/v1/chat/completions",
    ] {
        let body = if path.ends_with("messages") {
            messages(false)
        } else {
            chat(false)
        };
        let r = app
            .post(path, body, &[("X-API-Key", &key), ("x-mock-redirect", &to)])
            .await;
        assert_eq!(r.status, 307, "{}", r.text);
        assert_eq!(r.headers["location"], to);
        assert_eq!(r.headers["x-aibank-cost-usd"], "0.0");
    }
    assert_eq!(mock.requests().len(), 2);
    assert!(
        elsewhere.requests().is_empty(),
        "the gateway followed a redirect, upstream key and all"
    );
    assert_eq!(held(&app, &agent).await, 0, "every hold released");
    assert_eq!(app.ledger_state(&agent).await, (10_000_000, 10_000_000));
}

#[tokio::test]
async fn unreachable_and_silent_upstreams_are_502_and_504() {
    let mock = MockUpstream::start().await;
    let base = mock.base.clone();
    let app = spawn_app_with(move |c| {
        use_mock(c, &base, true);
        c.providers = Registry::build(
            (
                "http://127.0.0.1:1".into(),
                Some(ANTHROPIC_KEY.to_owned().into()),
            ),
            (base.clone(), Some(OPENAI_KEY.to_owned().into())),
            ("http://127.0.0.1:1".into(), None),
            Vec::new(),
            BTreeMap::new(),
            std::collections::BTreeMap::new(),
            |_| None,
        )
        .unwrap();
        c.gateway.first_byte_timeout = Duration::from_secs(1);
    })
    .await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let r = anthropic_call(&app, false, &[("X-API-Key", &key)]).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (502, Some("UPSTREAM_ERROR")),
        "{}",
        r.text
    );
    let start = Instant::now();
    let r = app
        .post(
            "/v1/gateway/openai/v1/chat/completions",
            chat(false),
            &[("X-API-Key", &key), ("x-mock-behavior", "stall")],
        )
        .await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (504, Some("UPSTREAM_TIMEOUT")),
        "{}",
        r.text
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    settled(&app, &agent).await;
    assert_eq!(app.ledger_state(&agent).await, (10_000_000, 10_000_000));
}

#[tokio::test]
async fn an_answer_that_breaks_off_or_goes_quiet_costs_nothing() {
    let (app, mock) = setup(|c| c.gateway.idle_timeout = Duration::from_secs(1)).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    for (behavior, status, code) in [
        ("cut", 502, "UPSTREAM_ERROR"),
        ("stall-stream", 504, "UPSTREAM_TIMEOUT"),
    ] {
        let start = Instant::now();
        let r = anthropic_call(
            &app,
            false,
            &[("X-API-Key", &key), ("x-mock-behavior", behavior)],
        )
        .await;
        assert_eq!(
            (r.status, r.body["code"].as_str()),
            (status, Some(code)),
            "{behavior}: {}",
            r.text
        );
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(held(&app, &agent).await, 0, "every hold released");
    assert_eq!(app.ledger_state(&agent).await, (10_000_000, 10_000_000));
}

#[tokio::test]
async fn stream_requests_are_asked_for_usage_and_a_json_answer_to_one_stays_json() {
    let (app, mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let k = [("X-API-Key", key.as_str())];
    let mut bad = chat(true);
    bad["stream_options"] = json!(1);
    let r = app
        .post("/v1/gateway/openai/v1/chat/completions", bad, &k)
        .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (400, Some("stream_options")),
        "{}",
        r.text
    );
    assert!(mock.requests().is_empty());

    // A client that said no to the usage chunk still gets it: the call is billed from it.
    let mut no_usage = chat(true);
    no_usage["stream_options"] = json!({"include_usage": false, "other": 1});
    let r = app
        .post("/v1/gateway/openai/v1/chat/completions", no_usage, &k)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        mock.last_request().unwrap().json()["stream_options"],
        json!({"include_usage": true, "other": 1})
    );
    settled(&app, &agent).await;
    // gpt-4o-mini: 11 × $0.15/M + 7 × $0.60/M = 1.65 + 4.2 → 6 micro-dollars (rounded up).
    assert_eq!(app.ledger_state(&agent).await, (9_999_994, 9_999_994));

    // A provider that answers a stream request with JSON: relayed as it came, billed from
    // its usage.
    let r = app
        .post(
            "/v1/gateway/openai/v1/chat/completions",
            chat(true),
            &[k[0], ("x-mock-stream", "ignore")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["object"], "chat.completion", "{}", r.text);
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.000006");
    assert_eq!(app.ledger_state(&agent).await, (9_999_988, 9_999_988));
}

#[tokio::test]
async fn usage_beyond_the_hold_is_charged_and_what_the_balance_lacks_is_owed() {
    let (app, _mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    // 11 in × $3/M + 5,000 out × $15/M: far beyond the 100 output tokens the hold reserved.
    let r = anthropic_call(
        &app,
        false,
        &[("X-API-Key", &key), ("x-mock-usage", "11,5000")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.075033");
    assert_eq!(r.headers["x-aibank-balance-usd"], "9.924967");
    assert_eq!(app.ledger_state(&agent).await, (9_924_967, 9_924_967));
    // A million output tokens ($15.000033) is more than the account holds: all of it is
    // recorded, the balance taken, and the $5.075066 it could not cover is owed.
    let usage = ("x-mock-usage", "11,1000000");
    let r = anthropic_call(&app, false, &[("X-API-Key", &key), usage]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["x-aibank-cost-usd"], "15.000033");
    assert_eq!(app.ledger_state(&agent).await, (-5_075_066, 0));
    let b = app.get("/v1/balance", &[("X-API-Key", &key)]).await;
    assert_eq!(b.body["owed_usd"], json!(5.075066), "{}", b.text);
    assert_eq!(held(&app, &agent).await, 0);
}

#[tokio::test]
async fn long_prompts_and_web_searches_are_billed_at_their_prices() {
    let (app, _mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let mut spent = 0;
    for stream in [false, true] {
        let r = anthropic_call(
            &app,
            stream,
            &[
                ("X-API-Key", &key),
                ("x-mock-usage", "250000,100"),
                ("x-mock-web-searches", "2"),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text);
        settled(&app, &agent).await;
        // Over 200,000 prompt tokens, Sonnet 4.5's long-context rates: 250,000 × $6 +
        // 100 × $22.50; and two web searches at $10 per 1,000.
        spent += 1_500_000 + 2_250 + 20_000;
        assert_eq!(
            app.ledger_state(&agent).await,
            (10_000_000 - spent, 10_000_000 - spent),
            "stream: {stream}"
        );
    }
}

#[tokio::test]
async fn a_cut_stream_is_billed_for_what_it_delivered_and_says_so() {
    let (app, _mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let r = anthropic_call(
        &app,
        true,
        &[
            ("X-API-Key", &key),
            ("x-mock-behavior", "cut"),
            ("x-mock-usage", "40,12"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.text.contains("message_start") && !r.text.contains("message_stop"),
        "{}",
        r.text
    );
    assert!(
        r.text.contains("event: error"),
        "the client is told the stream broke: {}",
        r.text
    );
    settled(&app, &agent).await;
    // The prompt side (40 × $3/M) was reported; output counted from text seen:
    // "Hello" = 5 characters = 2 tokens × $15/M. 120 + 30 = 150 micro-dollars.
    assert_eq!(app.ledger_state(&agent).await, (9_999_850, 9_999_850));
}

#[tokio::test]
async fn a_cut_stream_pays_its_reported_usage_in_full_beyond_the_hold() {
    let (app, _mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    // `message_start` reports 150,000 prompt tokens (and 1 output token), far beyond the
    // hold for a short request with max_tokens 100; then the stream is cut.
    let r = anthropic_call(
        &app,
        true,
        &[
            ("X-API-Key", &key),
            ("x-mock-behavior", "cut"),
            ("x-mock-usage", "150000,12"),
        ],
    )
    .await;
    assert!(r.text.contains("event: error"), "{}", r.text);
    settled(&app, &agent).await;
    // Reported: 150,000 × $3/M + 1 × $15/M = 450,015 micro-dollars, all charged. The
    // estimate (2 output tokens from "Hello") is more, but only up to the hold.
    assert_eq!(app.ledger_state(&agent).await, (9_549_985, 9_549_985));
    let usage = app.get("/v1/usage", &[("X-API-Key", &key)]).await;
    assert_eq!(usage.body["data"][0]["cost_usd"], json!(0.450015));
    assert_eq!(usage.body["data"][0]["owed_usd"], json!(0.0));
}

#[tokio::test]
async fn an_idle_stream_times_out_and_is_billed_for_what_it_delivered() {
    let (app, _mock) = setup(|c| c.gateway.idle_timeout = Duration::from_secs(1)).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let r = anthropic_call(
        &app,
        true,
        &[
            ("X-API-Key", &key),
            ("x-mock-behavior", "stall-stream"),
            ("x-mock-usage", "40,12"),
        ],
    )
    .await;
    assert!(r.text.contains("event: error"), "{}", r.text);
    settled(&app, &agent).await;
    assert_eq!(app.ledger_state(&agent).await, (9_999_850, 9_999_850));
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_pays_only_for_what_was_streamed() {
    let (app, mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let mut res = app
        .client
        .post(format!("{}/v1/gateway/anthropic/v1/messages", app.base))
        .header("X-API-Key", &key)
        .header("x-mock-usage", "40,1000")
        .header("x-mock-chunks", "20")
        .header("x-mock-chunk-delay-ms", "200")
        .json(&messages(true))
        .send()
        .await
        .unwrap();
    res.chunk().await.unwrap().unwrap();
    drop(res);
    settled(&app, &agent).await;
    assert_eq!(
        mock.streams_completed(),
        0,
        "the upstream stream was abandoned too"
    );
    let (sum, bal) = app.ledger_state(&agent).await;
    assert_eq!(sum, bal);
    // Charged the reported prompt and at most a few streamed tokens, never the 1000
    // output tokens the upstream would have reported at the end.
    let charged = 10_000_000 - bal;
    assert!(
        (120..=120 + 15 * 10).contains(&charged),
        "charged {charged}"
    );
}

#[tokio::test]
async fn refusals_before_forwarding() {
    let (app, mock) = setup(|_| {}).await;
    let Agent { key, .. } = app.agent().await;
    let k = [("X-API-Key", key.as_str())];
    let r = app
        .post("/v1/gateway/nope/v1/messages", messages(false), &k)
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(
        r.body["providers"],
        json!(["anthropic", "openai", "gemini", "compat"])
    );
    let r = app
        .post("/v1/gateway/openai/v1/images/generations", json!({}), &k)
        .await;
    assert_eq!(
        r.status, 404,
        "only metered or free endpoints are forwarded: {}",
        r.text
    );
    let r = app
        .post(
            "/v1/gateway/anthropic/v1/messages",
            json!({"model": "mystery-1", "max_tokens": 5}),
            &k,
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (400, Some("model")),
        "{}",
        r.text
    );
    assert!(r.body["error"].as_str().unwrap().contains("mystery-1"));
    let r = app
        .post(
            "/v1/gateway/anthropic/v1/messages",
            json!({"max_tokens": 5}),
            &k,
        )
        .await;
    assert_eq!(r.status, 400);
    let r = anthropic_call(&app, false, &[]).await;
    assert_eq!(
        r.text,
        r#"{"error":"Missing X-API-Key header","code":"UNAUTHORIZED"}"#
    );

    // Broke: refused before the upstream is called.
    let mk = app.master_key.clone();
    let broke = app
        .post(
            "/v1/platform/agents",
            json!({"name": "broke"}),
            &[("X-Master-Key", &mk)],
        )
        .await;
    let broke_key = broke.body["apiKey"].as_str().unwrap();
    let r = anthropic_call(&app, false, &[("X-API-Key", broke_key)]).await;
    assert_eq!(
        (r.status, r.body["code"].as_str()),
        (402, Some("INSUFFICIENT_CREDITS")),
        "{}",
        r.text
    );
    assert!(mock.requests().is_empty(), "nothing reached the upstream");

    // Gateway-only keys work here.
    let gw = app
        .post("/v1/keys", json!({"email": "g@example.com"}), &[])
        .await;
    let gw_key = gw.body["api_key"].as_str().unwrap();
    let r = app
        .post(
            "/v1/gateway/compat/v1/chat/completions",
            json!({"model": "any-model", "messages": []}),
            &[("X-API-Key", gw_key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        r.headers["x-aibank-cost-usd"], "0.000025",
        "11 × $1/M + 7 × $2/M"
    );
    assert_eq!(
        mock.last_request().unwrap().header("authorization"),
        Some("Bearer sk-compat")
    );
    let r = app.get("/v1/gateway/anthropic/v1/models", &k).await;
    assert_eq!(r.status, 200, "model lists are free: {}", r.text);
    assert!(r.headers.get("x-aibank-cost-usd").is_none());
}

/// Sends `GET {target}` byte for byte (an HTTP client would resolve dot segments before
/// sending) and returns the status code.
async fn raw_get(app: &TestApp, target: &str, key: &str) -> u16 {
    use std::io::{Read, Write};
    let (port, request) = (
        app.port,
        format!(
            "GET {target} HTTP/1.1\r\nHost: localhost\r\nX-API-Key: {key}\r\nConnection: close\r\n\r\n"
        ),
    );
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer[9..12].parse().unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn paths_cannot_climb_out_of_the_allowed_endpoints() {
    let (app, mock) = setup(|_| {}).await;
    let Agent { key, .. } = app.agent().await;
    // A model's page is forwarded (the mock has none: its 404 comes back), with a `/` in
    // its id escaped or not.
    raw_get(&app, "/v1/gateway/openai/v1/models/gpt-4o", &key).await;
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(mock.last_request().unwrap().path, "/v1/models/gpt-4o");
    raw_get(
        &app,
        "/v1/gateway/openai/v1/models/meta-llama%2FLlama-3",
        &key,
    )
    .await;
    assert_eq!(mock.requests().len(), 2);
    assert_eq!(
        mock.last_request().unwrap().path,
        "/v1/models/meta-llama/Llama-3"
    );
    for target in [
        "/v1/gateway/openai/v1/models/../chat/completions",
        "/v1/gateway/openai/v1/models/%2e%2e/chat/completions",
        "/v1/gateway/openai/v1/models/.%2E/.%2e/v1/files",
        "/v1/gateway/openai/v1/models/..%5Cchat/completions",
        "/v1/gateway/openai/v1/models/x/%2E%2E/%2e%2e/chat/completions",
        "/v1/gateway/openai/v1/models/%2F..%2Fchat/completions",
        "/v1/gateway/openai/v1/models/x%2F..%2F..%2Fchat/completions",
        "/v1/gateway/openai/v1/models/%252e%252e/chat/completions",
        "/v1/gateway/openai/v1/models/./gpt-4o",
        "/v1/gateway/openai/v1/models//gpt-4o",
        "/v1/gateway/anthropic/v1/models/../messages/batches",
    ] {
        let status = raw_get(&app, target, &key).await;
        assert!(status == 404 || status == 400, "{target} answered {status}");
    }
    assert_eq!(
        mock.requests().len(),
        2,
        "nothing else reached the upstream: {:?}",
        mock.requests()
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn credentials_and_hop_headers_never_reach_the_upstream() {
    let (app, mock) = setup(|_| {}).await;
    let Agent { key, .. } = app.agent().await;
    let r = app
        .post(
            "/v1/gateway/anthropic/v1/messages?beta=true",
            messages(false),
            &[
                ("X-API-Key", &key),
                ("X-Master-Key", &app.master_key),
                ("X-Payment", "0xabc"),
                ("X-Payment-Chain", "base"),
                ("Cookie", "session=1"),
                ("Accept-Encoding", "gzip"),
                ("x-custom-trace", "t-1"),
                ("anthropic-version", "2023-06-01"),
                ("Connection", "x-hop-only"),
                ("x-hop-only", "1"),
                ("Proxy-Authorization", "Basic c2VjcmV0"),
                ("Forwarded", "for=192.0.2.60"),
                ("X-Forwarded-For", "192.0.2.60"),
                ("X-Real-IP", "192.0.2.60"),
                ("Keep-Alive", "timeout=5"),
                ("OpenAI-Organization", "org-of-the-caller"),
                ("OpenAI-Project", "proj-of-the-caller"),
                // What the upstream answers with (the mock adds these to its response).
                (
                    "x-mock-response-header",
                    "anthropic-organization-id: org-platform",
                ),
                ("x-mock-response-header", "x-aibank-balance-usd: 1000000"),
                ("x-mock-response-header", "proxy-authenticate: Basic"),
                (
                    "x-mock-response-header",
                    "anthropic-ratelimit-requests-limit: 50",
                ),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let up = mock.last_request().unwrap();
    assert_eq!(up.path, "/v1/messages?beta=true");
    let names: Vec<&str> = up.headers.iter().map(|(n, _)| n.as_str()).collect();
    for banned in [
        "x-master-key",
        "x-payment",
        "x-payment-chain",
        "cookie",
        "accept-encoding",
        "x-hop-only",
        "openai-organization",
        "openai-project",
        "proxy-authorization",
        "forwarded",
        "x-forwarded-for",
        "x-real-ip",
        "keep-alive",
    ] {
        assert!(
            !names.contains(&banned),
            "{banned} was forwarded: {names:?}"
        );
    }
    assert_eq!(up.header("x-api-key"), Some(ANTHROPIC_KEY));
    assert_eq!(up.header("x-custom-trace"), Some("t-1"));
    let versions: Vec<&str> = up
        .headers
        .iter()
        .filter(|(n, _)| n == "anthropic-version")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(versions, ["2023-06-01"], "sent once, the caller's");
    // The answer: the upstream's own headers, less what names the platform's account and
    // what would pass for ours.
    assert_eq!(r.headers["anthropic-ratelimit-requests-limit"], "50");
    assert!(r.headers.get("anthropic-organization-id").is_none());
    assert!(r.headers.get("proxy-authenticate").is_none());
    let balances: Vec<_> = r.headers.get_all("x-aibank-balance-usd").iter().collect();
    // $10 less 11 × $3/M + 7 × $15/M.
    assert_eq!(balances, ["9.999862"], "the balance is the ledger's");
    // Where the gateway states no cost (a free endpoint), the upstream cannot state one.
    let r = app
        .get(
            "/v1/gateway/anthropic/v1/models",
            &[
                ("X-API-Key", &key),
                ("x-mock-response-header", "x-aibank-cost-usd: 0.5"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.headers.get("x-aibank-cost-usd").is_none());
    let all: Vec<String> = up.headers.iter().map(|(n, v)| format!("{n}:{v}")).collect();
    let all = all.join(
        "
",
    );
    assert!(!all.contains(&key[5..]), "the aibank key never leaves");
}

#[tokio::test]
async fn bring_your_own_key_wins_and_is_not_charged() {
    let mock = MockUpstream::start().await;
    let base = mock.base.clone();
    let app = spawn_app_with(move |c| {
        use_mock(c, &base, false);
        c.secret_key = Some("5e".repeat(32).into());
    })
    .await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let k = [("X-API-Key", key.as_str())];

    let r = anthropic_call(&app, false, &k).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.text,
        r#"{"error":"No anthropic API key configured","code":"UNAVAILABLE","needsKey":true}"#
    );

    assert_eq!(
        app.get("/v1/provider-keys/anthropic", &k).await.body,
        json!({"provider": "anthropic", "configured": false})
    );
    for (body, field) in [
        (json!({"apiKey": "  "}), "apiKey"),
        (json!({"apiKey": "x".repeat(513)}), "apiKey"),
        (json!({"apiKey": "sk-ant-one\nsk-ant-two"}), "apiKey"),
        (json!({"apiKey": "sk-ant my key"}), "apiKey"),
        (json!({"apiKey": "sk-ant-ключ"}), "apiKey"),
        (json!({}), "apiKey"),
    ] {
        let r = app.post("/v1/provider-keys/anthropic", body, &k).await;
        assert_eq!(
            (r.status, r.body["field"].as_str()),
            (400, Some(field)),
            "{}",
            r.text
        );
    }
    assert_eq!(
        app.post("/v1/provider-keys/nope", json!({"apiKey": "k"}), &k)
            .await
            .status,
        404
    );
    let r = app
        .post(
            "/v1/provider-keys/anthropic",
            json!({"apiKey": "sk-ant-my-own-key"}),
            &k,
        )
        .await;
    assert_eq!(r.body, json!({"provider": "anthropic", "configured": true}));
    assert!(!r.text.contains("sk-ant-my-own"));
    assert_eq!(
        app.get("/v1/provider-keys/anthropic", &k).await.body["configured"],
        true
    );

    let r = anthropic_call(&app, false, &k).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        mock.last_request().unwrap().header("x-api-key"),
        Some("sk-ant-my-own-key")
    );
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.0");
    // On its own key a caller may pick the upstream account's project, and sees its id.
    let r = app
        .post(
            "/v1/gateway/anthropic/v1/messages",
            messages(false),
            &[
                k[0],
                ("OpenAI-Project", "proj-own"),
                (
                    "x-mock-response-header",
                    "anthropic-organization-id: org-own",
                ),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        mock.last_request().unwrap().header("openai-project"),
        Some("proj-own")
    );
    assert_eq!(r.headers["anthropic-organization-id"], "org-own");
    assert_eq!(
        app.ledger_state(&agent).await,
        (10_000_000, 10_000_000),
        "own-key calls are not charged"
    );
    let usage = app.get("/v1/usage", &k).await;
    assert_eq!(
        usage.body["data"][0]["input_tokens"], 11,
        "but they are metered"
    );
    assert_eq!(usage.body["data"][0]["description"], "own upstream key");

    // Sealed at rest.
    let pool = app.pool.clone();
    let stored: Vec<String> = tokio::task::spawn_blocking(move || {
        use diesel::prelude::*;
        let mut c = pool.get().unwrap();
        aibank_store::schema::provider_keys::table
            .select(aibank_store::schema::provider_keys::sealed)
            .load(&mut c)
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains("my-own-key"));

    // Another agent does not get this key.
    let Agent { key: other, .. } = app.agent().await;
    let r = anthropic_call(&app, false, &[("X-API-Key", &other)]).await;
    assert_eq!(r.status, 503);

    let r = app.delete("/v1/provider-keys/anthropic", &k).await;
    assert_eq!(
        r.body,
        json!({"provider": "anthropic", "configured": false})
    );
    assert_eq!(anthropic_call(&app, false, &k).await.status, 503);
}

/// Instances sharing PostgreSQL must share the sealing key, so none is invented there: the
/// server refuses to start without one. The embedded SQLite default creates one next to
/// its database, private to its owner.
#[tokio::test]
async fn without_a_secret_key_postgres_refuses_to_start_and_sqlite_makes_one() {
    let db = tokio::task::spawn_blocking(crate::support::TestDb::fresh)
        .await
        .unwrap();
    if db.backend == aibank_store::Backend::Postgres {
        let mut config = crate::support::test_config(&db, &crate::support::random_master_key());
        config.secret_key = None;
        let err = aibank_server::Application::build(
            config,
            std::sync::Arc::new(aibank_core::SystemClock),
        )
        .await
        .err()
        .expect("no start without AIBANK_SECRET_KEY");
        assert!(
            err.to_string()
                .contains("AIBANK_SECRET_KEY is required with PostgreSQL"),
            "{err}"
        );
        return;
    }
    let (app, _mock) = setup(|c| c.secret_key = None).await;
    let Agent { key, .. } = app.agent().await;
    let r = app
        .post(
            "/v1/provider-keys/openai",
            json!({"apiKey": "sk-own"}),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let dir = app.db.url.strip_prefix("sqlite://").unwrap();
    let key_file = std::path::Path::new(dir)
        .parent()
        .unwrap()
        .join("secret.key");
    let mode = std::fs::metadata(key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn oversize_bodies_and_limit_breaching_holds_are_refused_before_forwarding() {
    let (app, mock) = setup(|c| c.gateway.max_body_bytes = 4096).await;
    let Agent { key, .. } = app.agent().await;
    let big = json!({"model": "claude-sonnet-4-5", "max_tokens": 10,
                     "messages": [{"role": "user", "content": "x".repeat(5000)}]});
    let r = app
        .post(
            "/v1/gateway/anthropic/v1/messages",
            big,
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (400, Some("body")),
        "{}",
        r.text
    );

    // The hold is the most the call can cost, and limits apply to it: 1,000,000 output
    // tokens at opus's $75/M is $75, beyond the default per-call limit of $50.
    let r = app
        .post(
            "/v1/gateway/anthropic/v1/messages",
            json!({"model": "claude-opus-4-1", "max_tokens": 1_000_000, "messages": []}),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["code"], "PER_TX_LIMIT_EXCEEDED");
    assert!(mock.requests().is_empty(), "nothing was forwarded");
}

/// Makes a call and returns the upstream key the mock received with it.
async fn upstream_key_used(app: &TestApp, key: &str, mock: &MockUpstream) -> String {
    let r = anthropic_call(app, false, &[("X-API-Key", key)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    mock.last_request()
        .unwrap()
        .header("x-api-key")
        .unwrap()
        .to_owned()
}

/// Two instances on one database, an agent's provider-key look-up remembered for 2 s.
fn byok_instance(c: &mut Config, base: &str) {
    use_mock(c, base, true);
    c.secret_key = Some("5e".repeat(32).into());
    c.gateway.lookup_ttl = Duration::from_secs(2);
}

#[tokio::test]
async fn a_stored_provider_key_reaches_other_instances_within_the_lookup_ttl() {
    let mock = MockUpstream::start().await;
    let (base_a, base_b) = (mock.base.clone(), mock.base.clone());
    let a = spawn_app_with(move |c| byok_instance(c, &base_a)).await;
    let b = crate::support::spawn_app_on(
        a.db.clone(),
        move |c| byok_instance(c, &base_b),
        std::sync::Arc::new(aibank_core::SystemClock),
    )
    .await;
    let Agent { key, .. } = a.agent().await;
    // A looks the agent up once: no key of its own.
    assert_eq!(upstream_key_used(&a, &key, &mock).await, ANTHROPIC_KEY);
    let r = b
        .post(
            "/v1/provider-keys/anthropic",
            json!({"apiKey": "sk-ant-own"}),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // B, which stored it, uses it at once; A keeps what it remembered until the TTL ends.
    assert_eq!(upstream_key_used(&b, &key, &mock).await, "sk-ant-own");
    assert_eq!(upstream_key_used(&a, &key, &mock).await, ANTHROPIC_KEY);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(upstream_key_used(&a, &key, &mock).await, "sk-ant-own");
}

#[tokio::test]
async fn gemini_gets_the_platform_key_as_x_goog_api_key_and_never_the_caller_s() {
    let (app, mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let body = json!({"contents": [{"parts": [{"text": "Hello"}]}],
                      "generationConfig": {"maxOutputTokens": 50}});
    // The agent key sent as the Gemini SDKs send theirs; a `key` in the query stays home.
    let r = app
        .post(
            "/v1/gateway/gemini/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse&key=caller-secret",
            body,
            &[("x-goog-api-key", &key)],
        )
        .await;
    // 11 × $0.30/M + 7 × $2.50/M = 20.8 µ$, rounded up.
    assert_eq!(r.status, 200, "{}", r.text);
    settled(&app, &agent).await;
    assert_eq!(app.ledger_state(&agent).await, (9_999_979, 9_999_979));
    let up = mock.last_request().unwrap();
    assert_eq!(
        up.path,
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    );
    assert_eq!(
        up.header("x-goog-api-key"),
        Some(crate::support::MOCK_GEMINI_KEY)
    );
    assert!(
        up.headers.iter().all(|(_, v)| !v.contains(&key)),
        "the agent key went upstream"
    );
    // A model without a price is refused before anything is forwarded.
    let before = mock.requests().len();
    let r = app
        .post(
            "/v1/gateway/gemini/v1beta/models/gemini-9:generateContent",
            json!({"contents": []}),
            &[("x-goog-api-key", &key)],
        )
        .await;
    assert_eq!(
        (r.status, mock.requests().len()),
        (400, before),
        "{}",
        r.text
    );
    // An unknown aibank key in x-goog-api-key is refused.
    let r = app
        .post(
            "/v1/gateway/gemini/v1beta/models/gemini-2.5-flash:countTokens",
            json!({"contents": []}),
            &[("x-goog-api-key", "ak_nope_nope")],
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.text);
}

#[tokio::test]
async fn responses_and_embeddings_are_billed_exactly_and_a_stored_response_is_free() {
    let (app, mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let k = [
        ("X-API-Key", key.as_str()),
        ("x-mock-usage", "1000,500,0,200"),
    ];
    let body = |stream: bool| {
        json!({"model": "gpt-4o-mini", "input": "Hello",
                                     "max_output_tokens": 600, "stream": stream})
    };
    let r = app
        .post("/v1/gateway/openai/v1/responses", body(false), &k)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["output"][0]["content"][0]["text"], "Hello from mock");
    // 800 × $0.15 + 200 cached × $0.075 + 500 × $0.6, per million: 435 micro-dollars.
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.000435");
    let r = app
        .post("/v1/gateway/openai/v1/responses", body(true), &k)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("event: response.completed"), "{}", r.text);
    assert!(r.text.contains(": aibank cost_usd=0.000435"), "{}", r.text);
    settled(&app, &agent).await;
    assert_eq!(app.ledger_state(&agent).await, (9_999_130, 9_999_130));

    let r = app
        .get(
            "/v1/gateway/openai/v1/responses/resp_mock1",
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(
        (r.status, r.body["id"].clone()),
        (200, json!("resp_mock1")),
        "{}",
        r.text
    );
    assert_eq!(app.ledger_state(&agent).await, (9_999_130, 9_999_130));

    let e = json!({"model": "text-embedding-3-small", "input": "Hello"});
    let r = app
        .post(
            "/v1/gateway/openai/v1/embeddings",
            e,
            &[("X-API-Key", &key), ("x-mock-usage", "5000,0")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    // 5,000 × $0.02 per million: 100 micro-dollars.
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.0001");
    assert_eq!(app.ledger_state(&agent).await, (9_999_030, 9_999_030));
    assert_eq!(mock.last_request().unwrap().path, "/v1/embeddings");
}

#[tokio::test]
async fn the_hold_counts_the_web_searches_a_request_allows() {
    let (app, _mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    let mut body = messages(true);
    body["tools"] = json!([{"type": "web_search_20250305", "name": "web_search", "max_uses": 3}]);
    let len = i64::try_from(body.to_string().len()).unwrap();
    let (app2, key2) = (app.base.clone(), key.clone());
    let call = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{app2}/v1/gateway/anthropic/v1/messages"))
            .header("X-API-Key", key2)
            .header("x-mock-chunk-delay-ms", "300")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let mut seen = 0;
    for _ in 0..100 {
        seen = held(&app, &agent).await;
        if seen > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The prompt at 3 bytes a token at the dearest input rate ($6, 1-hour cache writes),
    // 100 output tokens at $15, and 3 searches at $10 per 1,000, in micro-dollars.
    assert_eq!(seen, (len + 2) / 3 * 6 + 1_500 + 30_000);
    assert!(call.await.unwrap().contains(": aibank cost_usd="));
    settled(&app, &agent).await;
}

#[tokio::test]
async fn gemini_calls_are_billed_from_usage_metadata_and_token_counts_are_free() {
    let (app, mock) = setup(|_| {}).await;
    let Agent { id: agent, key, .. } = app.agent().await;
    // 1,300 prompt tokens of which 300 cached, 500 answer and 200 thinking tokens.
    let k = [
        ("x-goog-api-key", key.as_str()),
        ("x-mock-usage", "1000,500,200,300"),
    ];
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
                      "generationConfig": {"maxOutputTokens": 1000}});
    let base = "/v1/gateway/gemini/v1beta/models/gemini-2.5-flash";
    let r = app
        .post(&format!("{base}:generateContent"), body.clone(), &k)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["usageMetadata"]["thoughtsTokenCount"], 200);
    // 1,000 × $0.30/M + (500 + 200) × $2.50/M + 300 × $0.03/M = $0.002059.
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.002059");
    assert_eq!(app.ledger_state(&agent).await, (9_997_941, 9_997_941));

    let r = app
        .post(&format!("{base}:streamGenerateContent?alt=sse"), body, &k)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("\"finishReason\":\"STOP\""), "{}", r.text);
    // No cost comment: the Google Gen AI SDKs read every SSE line as data.
    assert!(!r.text.contains("aibank cost_usd"), "{}", r.text);
    settled(&app, &agent).await;
    assert_eq!(app.ledger_state(&agent).await, (9_995_882, 9_995_882));

    let r = app
        .post(
            &format!("{base}:countTokens"),
            json!({"contents": [{"parts": [{"text": "Hello"}]}]}),
            &k,
        )
        .await;
    assert_eq!(
        (r.status, &r.body["totalTokens"]),
        (200, &json!(11)),
        "{}",
        r.text
    );
    let r = app.get("/v1/gateway/gemini/v1beta/models", &[k[0]]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.ledger_state(&agent).await, (9_995_882, 9_995_882));
    assert_eq!(mock.requests().len(), 4);
}
