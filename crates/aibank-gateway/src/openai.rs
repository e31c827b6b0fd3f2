//! The OpenAI dialect, spoken by OpenAI and every OpenAI-compatible provider: Chat
//! Completions, the Responses API and embeddings (metered), model lists and stored responses
//! (free), the `Authorization: Bearer` credential, and their usage and error shapes.

use reqwest::header::HeaderMap;
use reqwest::RequestBuilder;
use serde_json::Value;

use aibank_core::ApiError;

use crate::dialect::{body_model, n, Call, Dialect, Endpoint, Metered, Seen};
use crate::prices::Tokens;

#[derive(Debug)]
pub struct OpenAi;

pub static DIALECT: OpenAi = OpenAi;

/// `POST v1/chat/completions`.
struct ChatCompletions;
/// `POST v1/responses`.
struct Responses;
/// `POST v1/embeddings`.
struct Embeddings;

impl Dialect for OpenAi {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn endpoint(&self, method: &str, path: &str) -> Option<Endpoint> {
        let one_below = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
        };
        match (method, path) {
            ("POST", "v1/chat/completions") => Some(Endpoint::Metered(&ChatCompletions)),
            ("POST", "v1/responses") => Some(Endpoint::Metered(&Responses)),
            ("POST", "v1/embeddings") => Some(Endpoint::Metered(&Embeddings)),
            // A stored response is read back without being billed again.
            ("GET", _) if one_below("v1/responses/") => Some(Endpoint::Free),
            ("GET", p) if p == "v1/models" || p.starts_with("v1/models/") => Some(Endpoint::Free),
            _ => None,
        }
    }

    fn authenticate(&self, out: RequestBuilder, key: &str, _: &HeaderMap) -> RequestBuilder {
        out.bearer_auth(key)
    }

    fn sets_header(&self, _: &str) -> bool {
        false
    }

    fn forwards_query_param(&self, _: &str) -> bool {
        true
    }

    fn stream_error_event(&self) -> &'static str {
        "data: {\"error\":{\"message\":\"The upstream stream ended early\",\"type\":\"upstream_error\"}}\n\n"
    }

    fn takes_sse_comments(&self) -> bool {
        true
    }
}

/// Usage from a `usage` object: Chat Completions' and embeddings' (`prompt_tokens`,
/// `completion_tokens`) or the Responses API's (`input_tokens`, `output_tokens`). Output
/// counts include reasoning tokens in both.
fn tokens(u: &Value) -> Option<Tokens> {
    if !u.is_object() {
        return None;
    }
    let (prompt, output, cached) = if u.get("prompt_tokens").is_some() {
        (
            n(&u["prompt_tokens"]),
            n(&u["completion_tokens"]),
            n(&u["prompt_tokens_details"]["cached_tokens"]),
        )
    } else {
        (
            n(&u["input_tokens"]),
            n(&u["output_tokens"]),
            n(&u["input_tokens_details"]["cached_tokens"]),
        )
    };
    Some(Tokens {
        input: prompt.saturating_sub(cached),
        output,
        cache_read: cached.min(prompt),
        ..Tokens::default()
    })
}

fn streamed(body: &Value) -> bool {
    body["stream"].as_bool().unwrap_or(false)
}

impl Metered for ChatCompletions {
    fn read(&self, _: &str, _: &str, body: &mut Value, default_max: u64) -> Result<Call, ApiError> {
        let model = body_model(body)?;
        let streamed = streamed(body);
        let mut rewritten = false;
        if streamed && body["stream_options"]["include_usage"].as_bool() != Some(true) {
            // Ask for the final usage chunk, which is what the call is billed from.
            match body.get_mut("stream_options") {
                Some(Value::Object(options)) => {
                    options.insert("include_usage".into(), Value::Bool(true));
                }
                None | Some(Value::Null) => {
                    body["stream_options"] = serde_json::json!({"include_usage": true});
                }
                Some(_) => {
                    return Err(ApiError::invalid_field(
                        "stream_options",
                        "`stream_options` must be an object",
                    ))
                }
            }
            rewritten = true;
        }
        let choices = body["n"].as_u64().unwrap_or(1).max(1);
        let per_choice = ["max_completion_tokens", "max_tokens"]
            .iter()
            .find_map(|f| body[*f].as_u64())
            .unwrap_or(default_max);
        Ok(Call {
            model,
            streamed,
            max_output: per_choice.saturating_mul(choices),
            web_searches: 0,
            rewritten,
        })
    }

    fn usage(&self, answer: &Value) -> Option<Tokens> {
        tokens(&answer["usage"])
    }

    fn stream_event(&self, v: &Value, seen: &mut Seen) {
        if let Some(t) = tokens(&v["usage"]) {
            seen.report(t);
        }
        for c in v["choices"].as_array().into_iter().flatten() {
            let d = &c["delta"];
            let calls = d["tool_calls"].as_array().into_iter().flatten();
            let texts = [&d["content"], &d["refusal"], &d["reasoning_content"]]
                .into_iter()
                .chain(calls.flat_map(|t| [&t["function"]["name"], &t["function"]["arguments"]]));
            for s in texts.filter_map(Value::as_str) {
                seen.text(s);
            }
        }
    }
}

/// Responses stream events whose `delta` is output text (or arguments) being written.
const RESPONSE_TEXT_DELTAS: [&str; 6] = [
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
];

impl Metered for Responses {
    fn read(&self, _: &str, _: &str, body: &mut Value, default_max: u64) -> Result<Call, ApiError> {
        Ok(Call {
            model: body_model(body)?,
            streamed: streamed(body),
            max_output: body["max_output_tokens"].as_u64().unwrap_or(default_max),
            web_searches: 0,
            rewritten: false,
        })
    }

    fn usage(&self, answer: &Value) -> Option<Tokens> {
        tokens(&answer["usage"])
    }

    fn stream_event(&self, v: &Value, seen: &mut Seen) {
        match v["type"].as_str() {
            // The stream's last event carries the response with its usage.
            Some("response.completed" | "response.incomplete" | "response.failed") => {
                if let Some(t) = tokens(&v["response"]["usage"]) {
                    seen.report(t);
                }
            }
            Some(kind) if RESPONSE_TEXT_DELTAS.contains(&kind) => {
                if let Some(s) = v["delta"].as_str() {
                    seen.text(s);
                }
            }
            _ => {}
        }
    }
}

impl Metered for Embeddings {
    fn read(&self, _: &str, _: &str, body: &mut Value, _: u64) -> Result<Call, ApiError> {
        Ok(Call {
            model: body_model(body)?,
            streamed: false,
            max_output: 0,
            web_searches: 0,
            rewritten: false,
        })
    }

    fn usage(&self, answer: &Value) -> Option<Tokens> {
        tokens(&answer["usage"])
    }

    fn stream_event(&self, _: &Value, _: &mut Seen) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::SseMeter;
    use serde_json::json;

    fn t(input: u64, output: u64, cache_read: u64) -> Tokens {
        Tokens {
            input,
            output,
            cache_read,
            ..Tokens::default()
        }
    }

    fn max_out(body: Value) -> u64 {
        let mut body = body;
        body["model"] = json!("m");
        ChatCompletions
            .read("", "", &mut body, 4096)
            .unwrap()
            .max_output
    }

    #[test]
    fn the_most_output_counts_every_choice() {
        assert_eq!(max_out(json!({"max_completion_tokens": 100})), 100);
        assert_eq!(max_out(json!({"max_completion_tokens": 100, "n": 3})), 300);
        assert_eq!(max_out(json!({"max_tokens": 50, "n": 0})), 50);
        assert_eq!(max_out(json!({"n": 2})), 8192);
        assert_eq!(max_out(json!({"max_tokens": u64::MAX, "n": 2})), u64::MAX);
    }

    #[test]
    fn a_chat_stream_is_asked_for_its_usage() {
        let mut body =
            json!({"model": "m", "stream": true, "stream_options": {"include_usage": false}});
        let c = ChatCompletions.read("", "", &mut body, 1).unwrap();
        assert!(c.rewritten && c.streamed);
        assert_eq!(body["stream_options"]["include_usage"], true);
        let mut bad = json!({"model": "m", "stream": true, "stream_options": 1});
        assert!(ChatCompletions.read("", "", &mut bad, 1).is_err());
    }

    #[test]
    fn chat_usage_chunk_and_estimates() {
        let s = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi there\"}}],\"usage\":null}\r\n\r\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":9,\"prompt_tokens_details\":{\"cached_tokens\":10}}}\r\n\r\ndata: [DONE]\r\n\r\n";
        let mut m = SseMeter::new(&ChatCompletions);
        m.feed(s.as_bytes());
        assert!(m.complete());
        assert_eq!(m.billable(1), t(30, 9, 10));
        let mut m = SseMeter::new(&ChatCompletions);
        m.feed(&s.as_bytes()[..s.find("data: {\"choices\":[]").unwrap()]);
        assert_eq!(m.billable(50), t(50, 2, 0));
    }

    #[test]
    fn a_cut_chat_stream_counts_tool_calls_and_refusals_too() {
        let s = concat!(
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":",
            "{\"name\":\"lookup\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":",
            "{\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"refusal\":\"No.\"}}]}\n\n",
        );
        let mut m = SseMeter::new(&ChatCompletions);
        m.feed(s.as_bytes());
        assert!(!m.complete());
        // "lookup" (6) + {"city":"Paris"} (16) + "No." (3) = 25 characters: 7 tokens.
        assert_eq!(m.billable(50).output, 7);
    }

    #[test]
    fn json_usage_of_each_api() {
        let chat = json!({"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}});
        assert_eq!(ChatCompletions.usage(&chat), Some(t(11, 7, 0)));
        let resp = json!({"object": "response", "usage": {"input_tokens": 120,
            "input_tokens_details": {"cached_tokens": 20}, "output_tokens": 50,
            "output_tokens_details": {"reasoning_tokens": 30}, "total_tokens": 170}});
        assert_eq!(Responses.usage(&resp), Some(t(100, 50, 20)));
        let emb = json!({"object": "list", "usage": {"prompt_tokens": 8, "total_tokens": 8}});
        assert_eq!(Embeddings.usage(&emb), Some(t(8, 0, 0)));
        assert_eq!(ChatCompletions.usage(&json!({})), None);
    }

    const RESPONSES: &str = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"usage\":null}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hello there\"}\n\n",
        "event: response.function_call_arguments.delta\ndata: {\"type\":\"response.function_call_arguments.delta\",\"sequence_number\":2,\"item_id\":\"fc_1\",\"output_index\":1,\"delta\":\"{}\"}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":3,\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"usage\":{\"input_tokens\":40,\"input_tokens_details\":{\"cached_tokens\":8},\"output_tokens\":12,\"output_tokens_details\":{\"reasoning_tokens\":4},\"total_tokens\":52}}}\n\n",
    );

    #[test]
    fn a_responses_stream_is_billed_from_its_last_event() {
        let mut m = SseMeter::new(&Responses);
        m.feed(RESPONSES.as_bytes());
        assert!(m.complete());
        assert_eq!(m.billable(1), t(32, 12, 8));
        let incomplete = RESPONSES.replace("response.completed", "response.incomplete");
        let mut m = SseMeter::new(&Responses);
        m.feed(incomplete.as_bytes());
        assert_eq!((m.complete(), m.billable(1)), (true, t(32, 12, 8)));
    }

    #[test]
    fn a_cut_responses_stream_counts_its_deltas() {
        let cut = &RESPONSES[..RESPONSES.find("event: response.completed").unwrap()];
        let mut m = SseMeter::new(&Responses);
        m.feed(cut.as_bytes());
        assert!(!m.complete());
        // "Hello there" (11) + "{}" (2) = 13 characters: 4 tokens; the prompt estimated.
        assert_eq!(m.billable(70), t(70, 4, 0));
    }

    #[test]
    fn responses_and_embeddings_holds() {
        let mut body = json!({"model": "gpt-5", "max_output_tokens": 300, "stream": true});
        let c = Responses.read("v1/responses", "", &mut body, 4096).unwrap();
        assert_eq!((c.max_output, c.streamed, c.rewritten), (300, true, false));
        let mut body = json!({"model": "text-embedding-3-small", "input": "hi"});
        let c = Embeddings
            .read("v1/embeddings", "", &mut body, 4096)
            .unwrap();
        assert_eq!((c.max_output, c.streamed), (0, false));
    }

    #[test]
    fn stored_responses_are_free_and_nothing_else_below_them() {
        let e = |m: &str, p: &str| match OpenAi.endpoint(m, p) {
            None => "none",
            Some(Endpoint::Free) => "free",
            Some(Endpoint::Metered(_)) => "metered",
        };
        assert_eq!(e("POST", "v1/responses"), "metered");
        assert_eq!(e("POST", "v1/embeddings"), "metered");
        assert_eq!(e("GET", "v1/responses/resp_123"), "free");
        assert_eq!(e("GET", "v1/responses"), "none");
        assert_eq!(e("POST", "v1/responses/resp_123"), "none");
        assert_eq!(e("GET", "v1/responses/resp_1/input_items"), "none");
    }
}
