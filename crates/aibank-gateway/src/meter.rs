//! Reading token usage from upstream responses.
//!
//! JSON bodies carry a `usage` object. Streams carry it in events: Anthropic sends the
//! prompt side in `message_start` and the cumulative output count in `message_delta`;
//! OpenAI sends one final chunk with `usage` (the gateway asks for it with
//! `stream_options.include_usage`). When a stream ends without its usage — cut off, timed
//! out, or the client left — the meter still knows what it saw: whatever usage events did
//! arrive, and the text streamed so far, counted as one token per 4 characters.

use serde_json::Value;

use crate::prices::Tokens;

/// Which wire format a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Anthropic,
    OpenAi,
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// Usage from a `usage` object of either API (Chat Completions or Responses shape for
/// OpenAI).
pub fn tokens_from_usage(wire: Wire, u: &Value) -> Option<Tokens> {
    if !u.is_object() {
        return None;
    }
    Some(match wire {
        Wire::Anthropic => {
            // `cache_creation_input_tokens` counts both caches' writes; `cache_creation`
            // splits them by lifetime, priced apart.
            let split = &u["cache_creation"];
            let hour = n(&split["ephemeral_1h_input_tokens"]);
            let written = n(&u["cache_creation_input_tokens"])
                .max(n(&split["ephemeral_5m_input_tokens"]).saturating_add(hour));
            Tokens {
                input: n(&u["input_tokens"]),
                output: n(&u["output_tokens"]),
                cache_write: written - hour.min(written),
                cache_write_1h: hour.min(written),
                cache_read: n(&u["cache_read_input_tokens"]),
                web_searches: n(&u["server_tool_use"]["web_search_requests"]),
            }
        }
        Wire::OpenAi => {
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
            Tokens {
                input: prompt.saturating_sub(cached),
                output,
                cache_write: 0,
                cache_write_1h: 0,
                cache_read: cached.min(prompt),
                web_searches: 0,
            }
        }
    })
}

/// Usage from a complete JSON response body.
pub fn tokens_from_json(wire: Wire, body: &[u8]) -> Option<Tokens> {
    let v: Value = serde_json::from_slice(body).ok()?;
    tokens_from_usage(wire, &v["usage"])
}

/// Characters per token when counting streamed text without a usage report.
pub const CHARS_PER_TOKEN: u64 = 4;
/// An event larger than this without a delimiter is dropped rather than buffered.
const MAX_EVENT_BYTES: usize = 4 << 20;

/// Follows an SSE stream and keeps the usage it reports.
#[derive(Debug)]
pub struct SseMeter {
    wire: Wire,
    buf: Vec<u8>,
    tokens: Tokens,
    prompt_reported: bool,
    output_reported: bool,
    text_chars: u64,
}

impl SseMeter {
    pub fn new(wire: Wire) -> Self {
        SseMeter {
            wire,
            buf: Vec::new(),
            tokens: Tokens::default(),
            prompt_reported: false,
            output_reported: false,
            text_chars: 0,
        }
    }

    /// Feeds raw bytes as they arrive; events may be split anywhere.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        while let Some((end, skip)) = find_event_end(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end + skip).take(end).collect();
            self.event(&event);
        }
        if self.buf.len() > MAX_EVENT_BYTES {
            self.buf.clear();
        }
    }

    fn event(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .map(str::trim_start)
            .collect();
        if data.is_empty() {
            return;
        }
        let Ok(v) = serde_json::from_str::<Value>(&data.join("\n")) else {
            return;
        };
        match self.wire {
            Wire::Anthropic => match v["type"].as_str() {
                Some("message_start") => {
                    if let Some(t) = tokens_from_usage(Wire::Anthropic, &v["message"]["usage"]) {
                        self.tokens = t;
                        self.prompt_reported = true;
                    }
                }
                Some("message_delta") => {
                    let u = &v["usage"];
                    if let Some(out) = u["output_tokens"].as_u64() {
                        self.tokens.output = out;
                        self.output_reported = true;
                    }
                    // Newer streams may also restate the prompt side here.
                    if let Some(i) = u["input_tokens"].as_u64() {
                        self.tokens.input = i;
                        self.prompt_reported = true;
                    }
                    if let Some(s) = u["server_tool_use"]["web_search_requests"].as_u64() {
                        self.tokens.web_searches = s;
                    }
                }
                Some("content_block_delta") => {
                    let d = &v["delta"];
                    for key in ["text", "partial_json", "thinking"] {
                        if let Some(s) = d[key].as_str() {
                            self.text_chars += s.chars().count() as u64;
                        }
                    }
                }
                _ => {}
            },
            Wire::OpenAi => {
                if let Some(t) = tokens_from_usage(Wire::OpenAi, &v["usage"]) {
                    self.tokens = t;
                    self.prompt_reported = true;
                    self.output_reported = true;
                }
                if let Some(choices) = v["choices"].as_array() {
                    for c in choices {
                        let d = &c["delta"];
                        let calls = d["tool_calls"].as_array().into_iter().flatten();
                        let texts = [&d["content"], &d["refusal"], &d["reasoning_content"]]
                            .into_iter()
                            .chain(calls.flat_map(|t| {
                                [&t["function"]["name"], &t["function"]["arguments"]]
                            }));
                        for s in texts.filter_map(Value::as_str) {
                            self.text_chars += s.chars().count() as u64;
                        }
                    }
                }
            }
        }
    }

    /// True once the stream has reported its final usage.
    pub fn complete(&self) -> bool {
        self.prompt_reported && self.output_reported
    }

    /// The usage to bill: what was reported, with gaps filled from what was seen —
    /// `prompt_estimate` when the prompt side never arrived, and streamed text at
    /// [`CHARS_PER_TOKEN`] when the output count never arrived (or is lower).
    pub fn billable(&self, prompt_estimate: u64) -> Tokens {
        let mut t = self.tokens;
        if !self.prompt_reported {
            t.input = prompt_estimate;
        }
        if !self.output_reported {
            t.output = t.output.max(self.text_chars.div_ceil(CHARS_PER_TOKEN));
        }
        t
    }
}

/// The end of the first complete event in `buf` and the delimiter length.
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANTHROPIC: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":4}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello world!\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn anthropic_stream_in_any_split() {
        for split in [1, 3, 7, 64, ANTHROPIC.len()] {
            let mut m = SseMeter::new(Wire::Anthropic);
            for chunk in ANTHROPIC.as_bytes().chunks(split) {
                m.feed(chunk);
            }
            assert!(m.complete());
            assert_eq!(
                m.billable(999),
                Tokens {
                    input: 25,
                    output: 15,
                    cache_write: 3,
                    cache_write_1h: 0,
                    cache_read: 4,
                    web_searches: 0,
                }
            );
        }
    }

    #[test]
    fn a_cut_stream_bills_what_it_saw() {
        let cut = &ANTHROPIC[..ANTHROPIC.find("event: message_delta").unwrap()];
        let mut m = SseMeter::new(Wire::Anthropic);
        m.feed(cut.as_bytes());
        assert!(!m.complete());
        // "Hello world!" is 12 characters: 3 tokens; the prompt side was reported.
        assert_eq!(
            m.billable(999),
            Tokens {
                input: 25,
                output: 3,
                cache_write: 3,
                cache_write_1h: 0,
                cache_read: 4,
                web_searches: 0,
            }
        );
    }

    #[test]
    fn openai_usage_chunk_and_estimates() {
        let s = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi there\"}}],\"usage\":null}\r\n\r\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":9,\"prompt_tokens_details\":{\"cached_tokens\":10}}}\r\n\r\ndata: [DONE]\r\n\r\n";
        let mut m = SseMeter::new(Wire::OpenAi);
        m.feed(s.as_bytes());
        assert!(m.complete());
        assert_eq!(
            m.billable(1),
            Tokens {
                input: 30,
                output: 9,
                cache_write: 0,
                cache_write_1h: 0,
                cache_read: 10,
                web_searches: 0,
            }
        );
        let mut m = SseMeter::new(Wire::OpenAi);
        m.feed(&s.as_bytes()[..s.find("data: {\"choices\":[]").unwrap()]);
        assert_eq!(
            m.billable(50),
            Tokens {
                input: 50,
                output: 2,
                cache_write: 0,
                cache_write_1h: 0,
                cache_read: 0,
                web_searches: 0,
            }
        );
    }

    #[test]
    fn a_cut_openai_stream_counts_tool_calls_and_refusals_too() {
        let s = concat!(
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":",
            "{\"name\":\"lookup\",\"arguments\":\"\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":",
            "{\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}]}}]}\n\n",
            "data: {\"choices\":[{\"delta\":{\"refusal\":\"No.\"}}]}\n\n",
        );
        let mut m = SseMeter::new(Wire::OpenAi);
        m.feed(s.as_bytes());
        assert!(!m.complete());
        // "lookup" (6) + {"city":"Paris"} (16) + "No." (3) = 25 characters: 7 tokens.
        assert_eq!(m.billable(50).output, 7);
    }

    #[test]
    fn json_bodies() {
        let a = br#"{"usage":{"input_tokens":11,"output_tokens":7,"cache_creation_input_tokens":0,"cache_read_input_tokens":2}}"#;
        assert_eq!(
            tokens_from_json(Wire::Anthropic, a),
            Some(Tokens {
                input: 11,
                output: 7,
                cache_write: 0,
                cache_write_1h: 0,
                cache_read: 2,
                web_searches: 0,
            })
        );
        let o = br#"{"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#;
        assert_eq!(
            tokens_from_json(Wire::OpenAi, o),
            Some(Tokens {
                input: 11,
                output: 7,
                cache_write: 0,
                cache_write_1h: 0,
                cache_read: 0,
                web_searches: 0,
            })
        );
        assert_eq!(tokens_from_json(Wire::OpenAi, b"{}"), None);
        let hour = br#"{"usage":{"input_tokens":5,"output_tokens":2,"cache_creation_input_tokens":30,"cache_creation":{"ephemeral_5m_input_tokens":10,"ephemeral_1h_input_tokens":20},"cache_read_input_tokens":1}}"#;
        assert_eq!(
            tokens_from_json(Wire::Anthropic, hour),
            Some(Tokens {
                input: 5,
                output: 2,
                cache_write: 10,
                cache_write_1h: 20,
                cache_read: 1,
                web_searches: 0,
            })
        );
    }
}
