#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aibank_testkit::mock_upstream::MockUpstream;
use serde_json::{json, Value};

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn post(
    mock: &MockUpstream,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = client().post(format!("{}{path}", mock.base)).json(&body);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    req.send().await.unwrap()
}

/// Splits an SSE body into (event name, data) pairs.
fn sse(text: &str) -> Vec<(Option<String>, String)> {
    assert!(text.ends_with("\n\n"), "SSE body ends with a blank line");
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let mut event = None;
            let mut data = None;
            for line in e.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = Some(v.to_owned());
                } else {
                    panic!("unexpected SSE line {line:?}");
                }
            }
            (event, data.expect("every event has data"))
        })
        .collect()
}

fn json_of(data: &str) -> Value {
    serde_json::from_str(data).unwrap()
}

#[tokio::test]
async fn anthropic_non_stream() {
    let mock = MockUpstream::start().await;
    let resp = post(
        &mock,
        "/v1/messages",
        json!({"model": "claude-x", "max_tokens": 10, "messages": []}),
        &[("x-mock-usage", "100,20,5,3")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"id":"msg_mock_1","type":"message","role":"assistant","model":"claude-x",
            "content":[{"type":"text","text":"Hello from mock"}],"stop_reason":"end_turn",
            "stop_sequence":null,"usage":{"input_tokens":100,"output_tokens":20,
            "cache_creation_input_tokens":5,"cache_creation":{"ephemeral_5m_input_tokens":5,
            "ephemeral_1h_input_tokens":0},"cache_read_input_tokens":3}})
    );
    assert_eq!(mock.streams_started(), 0);
}

#[tokio::test]
async fn openai_non_stream_and_models() {
    let mock = MockUpstream::start().await;
    let resp = post(
        &mock,
        "/v1/chat/completions",
        json!({"messages": []}),
        &[("x-mock-usage", "40,2,0,8")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], "chatcmpl-mock1");
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "mock-model");
    assert!(body["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(
        body["choices"],
        json!([{"index":0,"message":{"role":"assistant","content":"Hello from mock"},
            "logprobs":null,"finish_reason":"stop"}])
    );
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens":40,"completion_tokens":2,"total_tokens":42,
            "prompt_tokens_details":{"cached_tokens":8}})
    );

    let models: Value = client()
        .get(format!("{}/v1/models", mock.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        models,
        json!({"object":"list","data":[{"id":"mock-model","object":"model"}]})
    );

    let missing = client()
        .get(format!("{}/v1/nope", mock.base))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let err: Value = missing.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn anthropic_stream() {
    let mock = MockUpstream::start().await;
    let resp = post(
        &mock,
        "/v1/messages",
        json!({"model": "claude-s", "stream": true, "messages": []}),
        &[("x-mock-usage", "9,4,2,1"), ("x-mock-chunks", "4")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = sse(&resp.text().await.unwrap());
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_deref().unwrap()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
        ]
    );
    for (name, data) in &events {
        assert_eq!(json_of(data)["type"], name.as_deref().unwrap());
    }
    assert_eq!(events[2].1, r#"{"type": "ping"}"#);
    let start = json_of(&events[0].1);
    assert_eq!(
        start["message"],
        json!({"id":"msg_mock_1","type":"message","role":"assistant","model":"claude-s",
            "content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":9,
            "output_tokens":1,"cache_creation_input_tokens":2,"cache_creation":
            {"ephemeral_5m_input_tokens":2,"ephemeral_1h_input_tokens":0},
            "cache_read_input_tokens":1}})
    );
    let text: String = events[3..7]
        .iter()
        .map(|(_, d)| json_of(d)["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(text, "Hello from mock more");
    assert_eq!(
        json_of(&events[8].1),
        json!({"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},
            "usage":{"output_tokens":4}})
    );
    assert_eq!(mock.streams_started(), 1);
    assert_eq!(mock.streams_completed(), 1);
}

#[tokio::test]
async fn openai_stream_with_and_without_usage() {
    let mock = MockUpstream::start().await;

    let plain = post(
        &mock,
        "/v1/chat/completions",
        json!({"model": "gpt-m", "stream": true}),
        &[],
    )
    .await;
    assert_eq!(
        plain.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let events = sse(&plain.text().await.unwrap());
    assert!(events.iter().all(|(e, _)| e.is_none()));
    assert_eq!(events.len(), 6); // role, 3 contents, finish, [DONE]
    assert_eq!(events[5].1, "[DONE]");
    let chunks: Vec<Value> = events[..5].iter().map(|(_, d)| json_of(d)).collect();
    assert_eq!(
        chunks[0]["choices"],
        json!([{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,
            "finish_reason":null}])
    );
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], "gpt-m");
        assert_eq!(c["id"], chunks[0]["id"]);
        assert!(c.get("usage").is_none());
    }
    let text: String = chunks[1..4]
        .iter()
        .map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(text, "Hello from mock");
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");

    let with_usage = post(
        &mock,
        "/v1/chat/completions",
        json!({"model": "gpt-m", "stream": true, "stream_options": {"include_usage": true}}),
        &[("x-mock-usage", "30,12,0,6")],
    )
    .await;
    let events = sse(&with_usage.text().await.unwrap());
    assert_eq!(events.len(), 7);
    assert_eq!(events[6].1, "[DONE]");
    for (_, d) in &events[..5] {
        assert_eq!(json_of(d)["usage"], Value::Null);
        assert!(json_of(d).get("usage").is_some());
    }
    let usage = json_of(&events[5].1);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens":30,"completion_tokens":12,"total_tokens":42,
            "prompt_tokens_details":{"cached_tokens":6}})
    );
    assert_eq!(mock.streams_started(), 2);
    assert_eq!(mock.streams_completed(), 2);
}

#[tokio::test]
async fn error_behaviours() {
    let mock = MockUpstream::start().await;
    let resp = post(
        &mock,
        "/v1/messages",
        json!({"stream": true}),
        &[("x-mock-behavior", "error-529")],
    )
    .await;
    assert_eq!(resp.status().as_u16(), 529);
    assert_eq!(resp.headers()["x-mock-error"], "true");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        json!({"type":"error","error":{"type":"overloaded_error","message":"mock error"}})
    );

    let resp = post(
        &mock,
        "/v1/chat/completions",
        json!({}),
        &[("x-mock-behavior", "error-429")],
    )
    .await;
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["x-mock-error"], "true");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["message"], "mock error");
    assert_eq!(body["error"]["param"], Value::Null);
    assert_eq!(body["error"]["code"], Value::Null);

    // A typo in a control header fails loudly, without x-mock-error.
    let resp = post(
        &mock,
        "/v1/messages",
        json!({}),
        &[("x-mock-behavior", "eror-500")],
    )
    .await;
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.headers().get("x-mock-error").is_none());
    assert_eq!(mock.streams_started(), 0);
}

#[tokio::test]
async fn cut_streams_and_bodies() {
    let mock = MockUpstream::start().await;
    let mut resp = post(
        &mock,
        "/v1/messages",
        json!({"stream": true}),
        &[("x-mock-behavior", "cut")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut got = Vec::new();
    let err = loop {
        match resp.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => panic!("a cut stream must not end cleanly"),
            Err(e) => break e,
        }
    };
    assert!(err.is_body() || err.is_decode(), "{err:?}");
    let text = String::from_utf8(got).unwrap();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(!text.contains("message_delta"), "{text}");
    assert!(!text.contains("message_stop"), "{text}");
    assert_eq!(mock.streams_started(), 1);
    assert_eq!(mock.streams_completed(), 0);

    let resp = post(
        &mock,
        "/v1/chat/completions",
        json!({"stream": true}),
        &[("x-mock-behavior", "cut")],
    )
    .await;
    assert!(resp.text().await.is_err());

    let resp = post(
        &mock,
        "/v1/chat/completions",
        json!({}),
        &[("x-mock-behavior", "cut")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err());
    assert_eq!(mock.streams_completed(), 0);
}

#[tokio::test]
async fn chunk_delays_arrive_incrementally() {
    let mock = MockUpstream::start().await;
    let started = Instant::now();
    let mut resp = post(
        &mock,
        "/v1/chat/completions",
        json!({"stream": true}),
        &[("x-mock-chunks", "4"), ("x-mock-chunk-delay-ms", "200")],
    )
    .await;
    let first = resp.chunk().await.unwrap().unwrap();
    let first_at = started.elapsed();
    assert!(first_at < Duration::from_millis(150), "{first_at:?}");
    assert!(first.starts_with(b"data: "));
    assert_eq!(mock.streams_started(), 1);
    assert_eq!(mock.streams_completed(), 0);

    let mut whole = first.to_vec();
    while let Some(c) = resp.chunk().await.unwrap() {
        whole.extend_from_slice(&c);
    }
    let total = started.elapsed();
    // 7 events (role, 4 contents, finish, [DONE]): 6 delays of 200 ms.
    assert!(total >= Duration::from_millis(1200), "{total:?}");
    assert_eq!(sse(std::str::from_utf8(&whole).unwrap()).len(), 7);
    assert_eq!(mock.streams_completed(), 1);
}

#[tokio::test]
async fn stall_stream_keeps_the_connection_open() {
    let mock = MockUpstream::start().await;
    let mut resp = post(
        &mock,
        "/v1/messages",
        json!({"stream": true}),
        &[("x-mock-behavior", "stall-stream")],
    )
    .await;
    let mut got = Vec::new();
    let stalled = tokio::time::timeout(Duration::from_millis(300), async {
        while let Some(c) = resp.chunk().await.unwrap() {
            got.extend_from_slice(&c);
        }
    })
    .await;
    assert!(stalled.is_err(), "the stream must not end");
    let text = String::from_utf8(got).unwrap();
    assert!(text.starts_with("event: message_start\n"), "{text}");
    assert!(!text.contains("message_stop"));
    assert_eq!(mock.streams_started(), 1);
    assert_eq!(mock.streams_completed(), 0);
}

#[tokio::test]
async fn stall_delays_the_response() {
    let mock = MockUpstream::start().await;
    let req = client()
        .post(format!("{}/v1/messages", mock.base))
        .header("x-mock-behavior", "stall")
        .json(&json!({}))
        .timeout(Duration::from_millis(200))
        .send()
        .await;
    assert!(req.unwrap_err().is_timeout());
}

#[tokio::test]
async fn records_requests() {
    let mock = MockUpstream::start().await;
    assert!(mock.last_request().is_none());
    let body = json!({"model": "m1", "messages": [{"role": "user", "content": "hi"}]});
    let resp = client()
        .post(format!("{}/v1/messages?beta=true", mock.base))
        .header("X-Api-Key", "sk-upstream")
        .header("Anthropic-Version", "2023-06-01")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    client()
        .get(format!("{}/v1/models", mock.base))
        .send()
        .await
        .unwrap();

    let all = mock.requests();
    assert_eq!(all.len(), 2);
    let first = &all[0];
    assert_eq!(first.method, "POST");
    assert_eq!(first.path, "/v1/messages?beta=true");
    assert!(first
        .headers
        .iter()
        .all(|(n, _)| *n == n.to_ascii_lowercase()));
    assert!(first
        .headers
        .contains(&("x-api-key".to_owned(), "sk-upstream".to_owned())));
    assert_eq!(first.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(first.header("X-API-KEY"), Some("sk-upstream"));
    assert_eq!(first.json(), body);
    assert_eq!(first.body, serde_json::to_vec(&body).unwrap());

    let last = mock.last_request().unwrap();
    assert_eq!(last.method, "GET");
    assert_eq!(last.path, "/v1/models");
    assert!(last.body.is_empty());
}
