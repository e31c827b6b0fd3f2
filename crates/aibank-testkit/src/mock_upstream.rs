//! A mock upstream LLM provider: a real HTTP server on `127.0.0.1` speaking the wire formats
//! of the Anthropic Messages API (`POST /v1/messages`) and the OpenAI Chat Completions API
//! (`POST /v1/chat/completions`), its Responses API (`POST /v1/responses`, JSON and SSE, and
//! `GET /v1/responses/{id}`) and embeddings (`POST /v1/embeddings`), plus `GET /v1/models`,
//! and Gemini's `models/{model}:generateContent`, `:streamGenerateContent?alt=sse` and
//! `:countTokens` (under `/v1beta` or `/v1`) with `GET /v1beta/models`. For Gemini the
//! `x-mock-usage` cache read is the prompt's cached part and the cache write its thinking.
//!
//! Each response is steered by request headers (a gateway forwards them untouched):
//!
//! - `x-mock-usage: IN,OUT[,CACHE_WRITE[,CACHE_READ[,CACHE_WRITE_1H]]]` — token counts to
//!   report (default `11,7,0,0,0`); Anthropic's cache writes are reported in total and
//!   split into the 5-minute (`CACHE_WRITE`) and 1-hour (`CACHE_WRITE_1H`) caches.
//! - `x-mock-web-searches: N` — Anthropic: report N server-side web searches
//!   (`usage.server_tool_use.web_search_requests`; default none).
//! - `x-mock-behavior:` `ok` (default, or what [`MockUpstream::behave`] set),
//!   `error-400|401|429|500|503|529`, `stall` (60 s before
//!   anything), `cut` (streams: first half of the events, then the connection is cut;
//!   non-stream: the first 20 bytes of the JSON body, then cut), `stall-stream` (streams:
//!   first half of the events, then silence with the connection held open; non-stream: the
//!   first 20 bytes of the JSON body, then silence).
//! - `x-mock-stream: ignore` — answer JSON even to a request that asks for a stream, as
//!   some compatible providers do.
//! - `x-mock-chunk-delay-ms: N` — delay before each SSE event after the first (default 0).
//! - `x-mock-chunks: N` — number of text deltas (default 3): "Hello", " from", " mock",
//!   then " more" repeated.
//! - `x-mock-redirect: URL` — answer `307 Temporary Redirect` to `URL`, nothing else.
//! - `x-mock-response-header: NAME: VALUE` (may repeat) — add this header to the answer,
//!   whatever it is.
//!
//! An unknown behaviour or a malformed control header is answered with a 400 in the
//! provider's error shape (without `x-mock-error`), so a typo in a test fails loudly.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::dev::Service;
use actix_web::http::header::{HeaderName, HeaderValue, CONTENT_LENGTH};
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use futures_util::stream;
use serde_json::{json, Value};

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// The path, plus `?query` when there is one.
    pub path: String,
    /// Every header in arrival order; names are lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RecordedRequest {
    /// The first value of header `name` (matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON; panics when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "recorded body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    streams_started: AtomicUsize,
    streams_completed: AtomicUsize,
    next_id: AtomicU64,
    /// The behaviour of requests without `x-mock-behavior` (see [`MockUpstream::behave`]).
    behavior: Mutex<Option<String>>,
}

impl Shared {
    fn fallback(&self) -> Option<String> {
        self.behavior
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The running mock; the server stops when this is dropped.
pub struct MockUpstream {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl MockUpstream {
    /// Binds `127.0.0.1:0` and serves on the current Tokio runtime.
    #[allow(clippy::unused_async)] // async so that it is only called inside a runtime.
    pub async fn start() -> MockUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared::default());
        let data = web::Data::from(shared.clone());
        let server = HttpServer::new(move || {
            App::new()
                .wrap_fn(|req, service| {
                    let extra: Vec<(String, String)> = req
                        .headers()
                        .get_all("x-mock-response-header")
                        .filter_map(|v| v.to_str().ok()?.split_once(':'))
                        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
                        .collect();
                    let answer = service.call(req);
                    async move {
                        let mut res = answer.await?;
                        for (name, value) in extra {
                            if let (Ok(n), Ok(v)) = (
                                HeaderName::try_from(name.as_str()),
                                HeaderValue::try_from(value.as_str()),
                            ) {
                                res.headers_mut().append(n, v);
                            }
                        }
                        Ok(res)
                    }
                })
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
                .default_service(web::to(handle))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("mock upstream listens")
        .run();
        let server = tokio::spawn(server);
        MockUpstream {
            base: format!("http://127.0.0.1:{port}"),
            shared,
            server,
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last()
            .cloned()
    }

    /// Answers every request that sends no `x-mock-behavior` as if it sent `behavior`
    /// (`None`: as `ok`): one of several upstreams can fail while the others serve.
    pub fn behave(&self, behavior: Option<&str>) {
        *self
            .shared
            .behavior
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = behavior.map(str::to_owned);
    }

    /// How many SSE streams have handed their final event (`message_stop` / `[DONE]`) to
    /// the response.
    pub fn streams_completed(&self) -> usize {
        self.shared.streams_completed.load(Ordering::SeqCst)
    }

    /// How many SSE streams have handed their first event to the response.
    pub fn streams_started(&self) -> usize {
        self.shared.streams_started.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Provider {
    Anthropic,
    OpenAi,
    /// OpenAI's Responses API.
    Responses,
    /// OpenAI's embeddings.
    Embeddings,
    /// Gemini's `generateContent` (streamed with `streamGenerateContent?alt=sse`).
    Gemini,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Behavior {
    Ok,
    Error(u16),
    Stall,
    Cut,
    StallStream,
}

#[derive(Clone, Copy)]
struct Usage {
    input: u64,
    output: u64,
    cache_write: u64,
    cache_write_1h: u64,
    cache_read: u64,
    web_searches: u64,
}

/// What a call reports without `x-mock-usage`.
const DEFAULT_USAGE: Usage = Usage {
    input: 11,
    output: 7,
    cache_write: 0,
    cache_write_1h: 0,
    cache_read: 0,
    web_searches: 0,
};

struct Controls {
    redirect: Option<String>,
    ignore_stream: bool,
    behavior: Behavior,
    usage: Usage,
    delay: Duration,
    chunks: usize,
}

fn record(req: &HttpRequest, body: &Bytes, shared: &Shared) {
    let path = match req.uri().query() {
        Some(q) => format!("{}?{q}", req.path()),
        None => req.path().to_owned(),
    };
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(RecordedRequest {
            method: req.method().as_str().to_owned(),
            path,
            headers,
            body: body.to_vec(),
        });
}

/// Gemini names the model and the action in the path: `v1beta/models/{model}:{action}`
/// (or `v1/…`, as the Google Gen AI SDKs call it).
fn gemini_call(path: &str) -> Option<(String, String)> {
    ["/v1beta/models/", "/v1/models/"]
        .iter()
        .find_map(|m| path.strip_prefix(m))
        .and_then(|rest| rest.split_once(':'))
        .map(|(model, action)| (model.to_owned(), action.to_owned()))
}

/// Gemini's free answers: token counts and the model list.
fn gemini_free(path: &str, method: &str, call: Option<&(String, String)>) -> Option<HttpResponse> {
    match (method, call) {
        ("POST", Some((_, action))) if action == "countTokens" => {
            Some(HttpResponse::Ok().json(json!({"totalTokens": 11})))
        }
        ("GET", None) if path == "/v1beta/models" => {
            Some(HttpResponse::Ok().json(json!({"models": [{
                "name": "models/gemini-2.5-flash", "displayName": "Gemini 2.5 Flash",
                "supportedGenerationMethods": ["generateContent", "countTokens"]}]})))
        }
        _ => None,
    }
}

/// The model a request names and whether it asks for a stream: in its path for Gemini, in
/// its body for the others.
fn model_and_stream(
    provider: Provider,
    gemini: Option<&(String, String)>,
    request: &Value,
) -> (String, bool) {
    match gemini {
        Some((model, action)) if provider == Provider::Gemini => {
            (model.clone(), action == "streamGenerateContent")
        }
        _ => (
            request
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("mock-model")
                .to_owned(),
            request.get("stream").and_then(Value::as_bool) == Some(true),
        ),
    }
}

async fn handle(req: HttpRequest, body: Bytes, shared: web::Data<Shared>) -> HttpResponse {
    record(&req, &body, &shared);
    let method = req.method().as_str();
    let gemini = gemini_call(req.path());
    if let Some(answer) = gemini_free(req.path(), method, gemini.as_ref()) {
        return answer;
    }
    let gemini = gemini.filter(|(_, a)| a == "generateContent" || a == "streamGenerateContent");
    let provider = match req.path() {
        _ if method == "POST" && gemini.is_some() => Provider::Gemini,
        "/v1/messages" if method == "POST" => Provider::Anthropic,
        "/v1/chat/completions" if method == "POST" => Provider::OpenAi,
        "/v1/responses" if method == "POST" => Provider::Responses,
        "/v1/embeddings" if method == "POST" => Provider::Embeddings,
        p if method == "GET" && p.starts_with("/v1/responses/") => {
            return stored_response(p.trim_start_matches("/v1/responses/"));
        }
        "/v1/models" if method == "GET" => {
            return HttpResponse::Ok()
                .json(json!({"object":"list","data":[{"id":"mock-model","object":"model"}]}));
        }
        p => {
            let anthropic = p.contains("messages")
                || req.headers().contains_key("anthropic-version")
                || req.headers().contains_key("x-api-key");
            let provider = if anthropic {
                Provider::Anthropic
            } else {
                Provider::OpenAi
            };
            let message = format!("mock upstream: no route for {method} {p}");
            return error_response(provider, StatusCode::NOT_FOUND, &message, false);
        }
    };

    let controls = match controls(&req, shared.fallback()) {
        Ok(c) => c,
        Err(message) => {
            return error_response(provider, StatusCode::BAD_REQUEST, &message, false);
        }
    };
    if let Some(to) = controls.redirect {
        return HttpResponse::TemporaryRedirect()
            .insert_header(("location", to))
            .finish();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error_response(
            provider,
            StatusCode::BAD_REQUEST,
            "mock upstream: the request body is not JSON",
            false,
        );
    };

    match controls.behavior {
        Behavior::Error(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return error_response(provider, status, "mock error", true);
        }
        Behavior::Stall => tokio::time::sleep(Duration::from_secs(60)).await,
        Behavior::Ok | Behavior::Cut | Behavior::StallStream => {}
    }

    let (model, asked_to_stream) = model_and_stream(provider, gemini.as_ref(), &request);
    let streaming = asked_to_stream && !controls.ignore_stream;
    let n = shared.next_id.fetch_add(1, Ordering::SeqCst) + 1;
    let texts = texts(controls.chunks);

    if streaming {
        let events = match provider {
            Provider::Anthropic => anthropic_events(n, &model, controls.usage, &texts),
            Provider::Responses => responses_events(n, &model, controls.usage, &texts),
            Provider::Gemini => gemini_events(&model, controls.usage, &texts),
            Provider::Embeddings => vec![Bytes::from(
                embedding_list(&model, controls.usage).to_string(),
            )],
            Provider::OpenAi => {
                let include_usage = request
                    .pointer("/stream_options/include_usage")
                    .and_then(Value::as_bool)
                    == Some(true);
                openai_events(n, &model, controls.usage, &texts, include_usage)
            }
        };
        sse_response(events, &controls, shared.into_inner())
    } else {
        let full = texts.concat();
        let body = json_answer(provider, n, &model, controls.usage, &full);
        let bytes = Bytes::from(body.to_string());
        if controls.behavior == Behavior::Cut {
            truncated_json(bytes, false)
        } else if controls.behavior == Behavior::StallStream {
            truncated_json(bytes, true)
        } else {
            HttpResponse::Ok()
                .content_type("application/json")
                .body(bytes)
        }
    }
}

fn controls(req: &HttpRequest, fallback: Option<String>) -> Result<Controls, String> {
    let header = |name: &str| -> Result<Option<String>, String> {
        req.headers()
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(|s| s.trim().to_owned())
                    .map_err(|_| format!("mock upstream: {name} is not ASCII"))
            })
            .transpose()
    };
    let behavior = match header("x-mock-behavior")?.or(fallback).as_deref() {
        None | Some("ok") => Behavior::Ok,
        Some("error-400") => Behavior::Error(400),
        Some("error-401") => Behavior::Error(401),
        Some("error-429") => Behavior::Error(429),
        Some("error-500") => Behavior::Error(500),
        Some("error-503") => Behavior::Error(503),
        Some("error-529") => Behavior::Error(529),
        Some("stall") => Behavior::Stall,
        Some("cut") => Behavior::Cut,
        Some("stall-stream") => Behavior::StallStream,
        Some(other) => return Err(format!("mock upstream: unknown x-mock-behavior {other:?}")),
    };
    let mut usage = match header("x-mock-usage")? {
        None => DEFAULT_USAGE,
        Some(v) => {
            let parts = v
                .split(',')
                .map(|p| p.trim().parse::<u64>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("mock upstream: bad x-mock-usage {v:?}: {e}"))?;
            if !(2..=5).contains(&parts.len()) {
                return Err(format!(
                    "mock upstream: x-mock-usage wants IN,OUT[,CACHE_WRITE[,CACHE_READ[,CACHE_WRITE_1H]]], got {v:?}"
                ));
            }
            Usage {
                input: parts[0],
                output: parts[1],
                cache_write: parts.get(2).copied().unwrap_or(0),
                cache_read: parts.get(3).copied().unwrap_or(0),
                cache_write_1h: parts.get(4).copied().unwrap_or(0),
                web_searches: 0,
            }
        }
    };
    let number = |name: &str, default: u64| -> Result<u64, String> {
        header(name)?.map_or(Ok(default), |v| {
            v.parse::<u64>()
                .map_err(|e| format!("mock upstream: bad {name} {v:?}: {e}"))
        })
    };
    usage.web_searches = number("x-mock-web-searches", 0)?;
    let delay = Duration::from_millis(number("x-mock-chunk-delay-ms", 0)?);
    let chunks = usize::try_from(number("x-mock-chunks", 3)?)
        .map_err(|_| "mock upstream: x-mock-chunks is too large".to_owned())?;
    Ok(Controls {
        redirect: header("x-mock-redirect")?,
        ignore_stream: match header("x-mock-stream")?.as_deref() {
            None => false,
            Some("ignore") => true,
            Some(other) => return Err(format!("mock upstream: unknown x-mock-stream {other:?}")),
        },
        behavior,
        usage,
        delay,
        chunks,
    })
}

fn texts(chunks: usize) -> Vec<&'static str> {
    (0..chunks)
        .map(|i| match i {
            0 => "Hello",
            1 => " from",
            2 => " mock",
            _ => " more",
        })
        .collect()
}

fn error_response(
    provider: Provider,
    status: StatusCode,
    message: &str,
    mock_error: bool,
) -> HttpResponse {
    let body = match provider {
        Provider::Anthropic => {
            let kind = match status.as_u16() {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            json!({"type":"error","error":{"type":kind,"message":message}})
        }
        Provider::Gemini => {
            let kind = match status.as_u16() {
                400 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                429 => "RESOURCE_EXHAUSTED",
                503 | 529 => "UNAVAILABLE",
                _ => "INTERNAL",
            };
            json!({"error":{"code":status.as_u16(),"message":message,"status":kind}})
        }
        Provider::OpenAi | Provider::Responses | Provider::Embeddings => {
            let kind = match status.as_u16() {
                400 | 404 => "invalid_request_error",
                401 => "authentication_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "server_error",
            };
            json!({"error":{"message":message,"type":kind,"param":null,"code":null}})
        }
    };
    let mut response = HttpResponse::build(status);
    if mock_error {
        response.insert_header(("x-mock-error", "true"));
    }
    response.json(body)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Anthropic's usage object, as a message or a stream's `message_start` carries it.
fn anthropic_usage(u: Usage, output: u64) -> Value {
    let mut usage = json!({
        "input_tokens": u.input,
        "output_tokens": output,
        "cache_creation_input_tokens": u.cache_write + u.cache_write_1h,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_write,
            "ephemeral_1h_input_tokens": u.cache_write_1h,
        },
        "cache_read_input_tokens": u.cache_read,
    });
    if u.web_searches > 0 {
        usage["server_tool_use"] = json!({"web_search_requests": u.web_searches});
    }
    usage
}

fn anthropic_message(n: u64, model: &str, u: Usage, text: &str) -> Value {
    json!({
        "id": format!("msg_mock_{n}"),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "stop_sequence": null,
        "usage": anthropic_usage(u, u.output),
    })
}

fn openai_usage(u: Usage) -> Value {
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cache_read},
    })
}

fn openai_completion(n: u64, model: &str, u: Usage, text: &str) -> Value {
    json!({
        "id": format!("chatcmpl-mock{n}"),
        "object": "chat.completion",
        "created": unix_now(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": null,
            "finish_reason": "stop",
        }],
        "usage": openai_usage(u),
    })
}

/// A complete JSON answer in the provider's shape.
fn json_answer(provider: Provider, n: u64, model: &str, u: Usage, full: &str) -> Value {
    match provider {
        Provider::Anthropic => anthropic_message(n, model, u, full),
        Provider::OpenAi => openai_completion(n, model, u, full),
        Provider::Responses => {
            response_object(&format!("resp_mock{n}"), model, u, full, "completed")
        }
        Provider::Embeddings => embedding_list(model, u),
        Provider::Gemini => gemini_chunk(model, &[full], Some(u)),
    }
}

/// Gemini's `usageMetadata`: the prompt counts its cached part (the `CACHE_READ` of
/// `x-mock-usage`); `CACHE_WRITE` stands for thinking tokens, which Gemini counts apart
/// from the answer's.
fn gemini_usage(u: Usage) -> Value {
    let mut m = json!({
        "promptTokenCount": u.input + u.cache_read,
        "candidatesTokenCount": u.output,
        "totalTokenCount": u.input + u.cache_read + u.output + u.cache_write,
    });
    if u.cache_read > 0 {
        m["cachedContentTokenCount"] = json!(u.cache_read);
    }
    if u.cache_write > 0 {
        m["thoughtsTokenCount"] = json!(u.cache_write);
    }
    m
}

/// One `GenerateContentResponse`: the whole answer, or one chunk of a stream (the last,
/// with `usage`, says why it finished).
fn gemini_chunk(model: &str, texts: &[&str], usage: Option<Usage>) -> Value {
    let parts: Vec<Value> = texts.iter().map(|t| json!({"text": t})).collect();
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    let mut chunk = json!({"modelVersion": model, "responseId": "mock-gemini"});
    if let Some(u) = usage {
        candidate["finishReason"] = json!("STOP");
        chunk["usageMetadata"] = gemini_usage(u);
    }
    chunk["candidates"] = json!([candidate]);
    chunk
}

/// `streamGenerateContent?alt=sse`: one chunk per text delta, the last with the usage.
fn gemini_events(model: &str, u: Usage, texts: &[&str]) -> Vec<Bytes> {
    let last = texts.len().saturating_sub(1);
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let chunk = gemini_chunk(model, &[t], (i == last).then_some(u));
            Bytes::from(format!("data: {chunk}\r\n\r\n"))
        })
        .collect()
}

/// `GET /v1/responses/{id}`: a stored response, as it was answered.
fn stored_response(id: &str) -> HttpResponse {
    let u = DEFAULT_USAGE;
    HttpResponse::Ok().json(response_object(
        id,
        "mock-model",
        u,
        "Hello from mock",
        "completed",
    ))
}

/// A Responses API `response` object (what a JSON answer is, and what a stream's
/// `response.completed` carries).
fn response_object(id: &str, model: &str, u: Usage, text: &str, status: &str) -> Value {
    json!({
        "id": id,
        "object": "response",
        "created_at": unix_now(),
        "status": status,
        "model": model,
        "output": [{
            "type": "message",
            "id": format!("msg_{id}"),
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }],
        "usage": {
            "input_tokens": u.input,
            "input_tokens_details": {"cached_tokens": u.cache_read},
            "output_tokens": u.output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.input + u.output,
        },
    })
}

fn responses_events(n: u64, model: &str, u: Usage, texts: &[&str]) -> Vec<Bytes> {
    let id = format!("resp_mock{n}");
    let event = |seq: usize, mut data: Value| {
        let kind = data["type"].as_str().unwrap_or_default().to_owned();
        data["sequence_number"] = json!(seq);
        Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
    };
    let mut created = response_object(&id, model, u, "", "in_progress");
    created["output"] = json!([]);
    created["usage"] = Value::Null;
    let mut events = vec![event(
        0,
        json!({"type": "response.created", "response": created}),
    )];
    for text in texts {
        events.push(event(
            events.len(),
            json!({"type": "response.output_text.delta",
            "item_id": format!("msg_{id}"), "output_index": 0, "content_index": 0, "delta": text}),
        ));
    }
    let done = response_object(&id, model, u, &texts.concat(), "completed");
    events.push(event(
        events.len(),
        json!({"type": "response.completed", "response": done}),
    ));
    events
}

fn embedding_list(model: &str, u: Usage) -> Value {
    json!({
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 0.125]}],
        "model": model,
        "usage": {"prompt_tokens": u.input, "total_tokens": u.input},
    })
}

fn anthropic_event(kind: &str, data: &str) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

fn anthropic_events(n: u64, model: &str, u: Usage, texts: &[&str]) -> Vec<Bytes> {
    let start = json!({
        "type": "message_start",
        "message": {
            "id": format!("msg_mock_{n}"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": anthropic_usage(Usage { web_searches: 0, ..u }, 1),
        },
    });
    let mut events = vec![
        anthropic_event("message_start", &start.to_string()),
        anthropic_event(
            "content_block_start",
            &json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}})
                .to_string(),
        ),
        // The real API sends exactly this spacing.
        anthropic_event("ping", r#"{"type": "ping"}"#),
    ];
    for text in texts {
        let delta = json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":text}});
        events.push(anthropic_event("content_block_delta", &delta.to_string()));
    }
    events.push(anthropic_event(
        "content_block_stop",
        &json!({"type":"content_block_stop","index":0}).to_string(),
    ));
    let mut delta = json!({
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": u.output},
    });
    if u.web_searches > 0 {
        delta["usage"]["server_tool_use"] = json!({"web_search_requests": u.web_searches});
    }
    events.push(anthropic_event("message_delta", &delta.to_string()));
    events.push(anthropic_event(
        "message_stop",
        &json!({"type":"message_stop"}).to_string(),
    ));
    events
}

fn openai_events(n: u64, model: &str, u: Usage, texts: &[&str], include_usage: bool) -> Vec<Bytes> {
    let id = format!("chatcmpl-mock{n}");
    let created = unix_now();
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        Bytes::from(format!("data: {c}\n\n"))
    };
    let mut events = vec![chunk(json!({"role":"assistant","content":""}), Value::Null)];
    for text in texts {
        events.push(chunk(json!({ "content": text }), Value::Null));
    }
    events.push(chunk(json!({}), json!("stop")));
    if include_usage {
        let c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [],
            "usage": openai_usage(u),
        });
        events.push(Bytes::from(format!("data: {c}\n\n")));
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StreamEnd {
    Complete,
    Cut,
    Stall,
}

struct SseState {
    events: Vec<Bytes>,
    next: usize,
    delay: Duration,
    end: StreamEnd,
    finished: bool,
    shared: Arc<Shared>,
}

fn sse_response(mut events: Vec<Bytes>, controls: &Controls, shared: Arc<Shared>) -> HttpResponse {
    let end = match controls.behavior {
        Behavior::Cut => StreamEnd::Cut,
        Behavior::StallStream => StreamEnd::Stall,
        _ => StreamEnd::Complete,
    };
    if end != StreamEnd::Complete {
        events.truncate((events.len() / 2).max(1));
    }
    let state = SseState {
        events,
        next: 0,
        delay: controls.delay,
        end,
        finished: false,
        shared,
    };
    let body = stream::unfold(state, |mut st| async move {
        if st.next < st.events.len() {
            if st.next > 0 && !st.delay.is_zero() {
                tokio::time::sleep(st.delay).await;
            }
            let item = st.events[st.next].clone();
            st.next += 1;
            if st.next == 1 {
                st.shared.streams_started.fetch_add(1, Ordering::SeqCst);
            }
            if st.next == st.events.len() && st.end == StreamEnd::Complete {
                st.shared.streams_completed.fetch_add(1, Ordering::SeqCst);
            }
            return Some((Ok::<_, actix_web::Error>(item), st));
        }
        match st.end {
            StreamEnd::Stall => {
                std::future::pending::<()>().await;
                None
            }
            StreamEnd::Cut if !st.finished => {
                st.finished = true;
                // Let the dispatcher flush what was sent: an error item drops the connection
                // together with anything still in its write buffer.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((
                    Err(actix_web::error::ErrorInternalServerError("mock cut")),
                    st,
                ))
            }
            StreamEnd::Complete | StreamEnd::Cut => None,
        }
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("cache-control", "no-cache"))
        .streaming(body)
}

/// Announces the whole JSON body's length, sends its first 20 bytes, then cuts the
/// connection.
/// The first 20 bytes of a JSON body, then the connection is cut (or, `stall`, held
/// open in silence for a minute).
fn truncated_json(full: Bytes, stall: bool) -> HttpResponse {
    let len = full.len();
    let head = full.slice(..len.min(20));
    let parts: Vec<Result<Bytes, actix_web::Error>> = vec![
        Ok(head),
        Err(actix_web::error::ErrorInternalServerError("mock cut")),
    ];
    let body = stream::unfold(parts.into_iter(), move |mut it| async move {
        let item = it.next()?;
        if item.is_err() {
            let pause = if stall { 60_000 } else { 20 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        Some((item, it))
    });
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((CONTENT_LENGTH, len))
        .streaming(body)
}
