//! The Anthropic dialect: the Messages API (`POST v1/messages`, JSON and SSE), its free
//! endpoints, the `x-api-key` + `anthropic-version` credential, and its usage and error
//! shapes.

use reqwest::header::HeaderMap;
use reqwest::RequestBuilder;
use serde_json::Value;

use aibank_core::ApiError;

use crate::dialect::{body_model, n, Call, Dialect, Endpoint, Metered, Seen};
use crate::prices::Tokens;

/// Default Anthropic API version when the client sends none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Web searches a `web_search_*` tool without `max_uses` is held for. The API sets no
/// limit of its own there; a call that searches more is charged the difference after it.
pub const DEFAULT_WEB_SEARCH_USES: u64 = 5;

#[derive(Debug)]
pub struct Anthropic;

pub static DIALECT: Anthropic = Anthropic;

struct Messages;

impl Dialect for Anthropic {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn endpoint(&self, method: &str, path: &str) -> Option<Endpoint> {
        match (method, path) {
            ("POST", "v1/messages") => Some(Endpoint::Metered(&Messages)),
            ("POST", "v1/messages/count_tokens") => Some(Endpoint::Free),
            ("GET", p) if p == "v1/models" || p.starts_with("v1/models/") => Some(Endpoint::Free),
            _ => None,
        }
    }

    fn authenticate(&self, out: RequestBuilder, key: &str, incoming: &HeaderMap) -> RequestBuilder {
        let version = incoming
            .get("anthropic-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(ANTHROPIC_VERSION);
        out.header("x-api-key", key)
            .header("anthropic-version", version)
    }

    fn sets_header(&self, name: &str) -> bool {
        name == "anthropic-version"
    }

    fn forwards_query_param(&self, _: &str) -> bool {
        true
    }

    fn stream_error_event(&self) -> &'static str {
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"The upstream stream ended early\"}}\n\n"
    }

    fn takes_sse_comments(&self) -> bool {
        true
    }
}

/// Usage from a Messages `usage` object.
fn tokens(u: &Value) -> Option<Tokens> {
    if !u.is_object() {
        return None;
    }
    // `cache_creation_input_tokens` counts both caches' writes; `cache_creation` splits
    // them by lifetime, priced apart.
    let split = &u["cache_creation"];
    let hour = n(&split["ephemeral_1h_input_tokens"]);
    let written = n(&u["cache_creation_input_tokens"])
        .max(n(&split["ephemeral_5m_input_tokens"]).saturating_add(hour));
    Some(Tokens {
        input: n(&u["input_tokens"]),
        output: n(&u["output_tokens"]),
        cache_write: written - hour.min(written),
        cache_write_1h: hour.min(written),
        cache_read: n(&u["cache_read_input_tokens"]),
        web_searches: n(&u["server_tool_use"]["web_search_requests"]),
    })
}

/// The web searches the request's server tools may run.
fn web_searches(body: &Value) -> u64 {
    body["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| {
            t["type"]
                .as_str()
                .is_some_and(|k| k.starts_with("web_search_"))
        })
        .map(|t| t["max_uses"].as_u64().unwrap_or(DEFAULT_WEB_SEARCH_USES))
        .fold(0, u64::saturating_add)
}

impl Metered for Messages {
    fn read(&self, _: &str, _: &str, body: &mut Value, default_max: u64) -> Result<Call, ApiError> {
        Ok(Call {
            model: body_model(body)?,
            streamed: body["stream"].as_bool().unwrap_or(false),
            max_output: body["max_tokens"].as_u64().unwrap_or(default_max),
            web_searches: web_searches(body),
            rewritten: false,
        })
    }

    fn usage(&self, answer: &Value) -> Option<Tokens> {
        tokens(&answer["usage"])
    }

    fn stream_event(&self, v: &Value, seen: &mut Seen) {
        match v["type"].as_str() {
            Some("message_start") => {
                if let Some(t) = tokens(&v["message"]["usage"]) {
                    seen.tokens = t;
                    seen.prompt_reported = true;
                }
            }
            Some("message_delta") => {
                let u = &v["usage"];
                if let Some(out) = u["output_tokens"].as_u64() {
                    seen.tokens.output = out;
                    seen.output_reported = true;
                }
                // Newer streams may also restate the prompt side here.
                if let Some(i) = u["input_tokens"].as_u64() {
                    seen.tokens.input = i;
                    seen.prompt_reported = true;
                }
                if let Some(s) = u["server_tool_use"]["web_search_requests"].as_u64() {
                    seen.tokens.web_searches = s;
                }
            }
            Some("content_block_delta") => {
                let d = &v["delta"];
                for key in ["text", "partial_json", "thinking"] {
                    if let Some(s) = d[key].as_str() {
                        seen.text(s);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::SseMeter;
    use serde_json::json;

    const STREAM: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":4}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello world!\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    fn t(
        input: u64,
        output: u64,
        cache_write: u64,
        cache_write_1h: u64,
        cache_read: u64,
    ) -> Tokens {
        Tokens {
            input,
            output,
            cache_write,
            cache_write_1h,
            cache_read,
            web_searches: 0,
        }
    }

    #[test]
    fn a_stream_in_any_split() {
        for split in [1, 3, 7, 64, STREAM.len()] {
            let mut m = SseMeter::new(&Messages);
            for chunk in STREAM.as_bytes().chunks(split) {
                m.feed(chunk);
            }
            assert!(m.complete());
            assert_eq!(m.billable(999), t(25, 15, 3, 0, 4));
        }
    }

    #[test]
    fn a_cut_stream_bills_what_it_saw() {
        let cut = &STREAM[..STREAM.find("event: message_delta").unwrap()];
        let mut m = SseMeter::new(&Messages);
        m.feed(cut.as_bytes());
        assert!(!m.complete());
        // "Hello world!" is 12 characters: 3 tokens; the prompt side was reported.
        assert_eq!(m.billable(999), t(25, 3, 3, 0, 4));
    }

    #[test]
    fn json_usage_splits_the_caches() {
        let a = json!({"usage":{"input_tokens":11,"output_tokens":7,"cache_creation_input_tokens":0,"cache_read_input_tokens":2}});
        assert_eq!(Messages.usage(&a), Some(t(11, 7, 0, 0, 2)));
        let hour = json!({"usage":{"input_tokens":5,"output_tokens":2,"cache_creation_input_tokens":30,"cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":20},"cache_read_input_tokens":1}});
        assert_eq!(Messages.usage(&hour), Some(t(5, 2, 10, 20, 1)));
        let searched = json!({"usage":{"input_tokens":5,"output_tokens":2,"server_tool_use":{"web_search_requests":3}}});
        assert_eq!(Messages.usage(&searched).unwrap().web_searches, 3);
        assert_eq!(Messages.usage(&json!({})), None);
    }

    #[test]
    fn the_hold_counts_each_web_search_tool_s_uses() {
        let read = |tools: Value| {
            let mut body = json!({"model": "m", "max_tokens": 10, "tools": tools});
            Messages.read("v1/messages", "", &mut body, 4096).unwrap()
        };
        let c = read(json!([
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
            {"type": "web_search_20260101", "name": "other"},
            {"name": "get_weather", "input_schema": {}},
        ]));
        assert_eq!(
            (c.web_searches, c.max_output),
            (3 + DEFAULT_WEB_SEARCH_USES, 10)
        );
        assert_eq!(read(json!(null)).web_searches, 0);
        let mut body = json!({"model": "m"});
        let c = Messages.read("v1/messages", "", &mut body, 4096).unwrap();
        assert_eq!(c.max_output, 4096, "Anthropic has no `n`");
    }
}
