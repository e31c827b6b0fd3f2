//! The Gemini dialect (Google's Generative Language API): `generateContent` and
//! `streamGenerateContent` (metered, the model named in the path), `countTokens` and the
//! model list (free), the `x-goog-api-key` credential (never `?key=`), its `usageMetadata`,
//! its error shape, and the shipped Gemini prices.

use std::collections::BTreeMap;

use reqwest::header::HeaderMap;
use reqwest::RequestBuilder;
use rust_decimal::Decimal;
use serde_json::Value;

use aibank_core::ApiError;

use crate::dialect::{n, Call, Dialect, Endpoint, Metered, Seen};
use crate::prices::{Price, PriceTable, Tokens};

#[derive(Debug)]
pub struct Gemini;

pub static DIALECT: Gemini = Gemini;

/// `POST v1beta/models/{model}:generateContent` and `:streamGenerateContent`.
struct GenerateContent;

/// The model paths of the API's two versions: the Google Gen AI SDKs call `v1` by default,
/// the REST examples `v1beta`.
const MODELS: [&str; 2] = ["v1beta/models/", "v1/models/"];

/// What follows `v1beta/models/` or `v1/models/` in `path`.
fn under_models(path: &str) -> Option<&str> {
    MODELS.iter().find_map(|m| path.strip_prefix(m))
}

/// The model and method of `v1beta/models/{model}:{method}` (or `v1/…`).
fn model_call(path: &str) -> Option<(&str, &str)> {
    let (model, method) = under_models(path)?.rsplit_once(':')?;
    let model = model.strip_prefix("models/").unwrap_or(model);
    (!model.is_empty() && !model.contains('/')).then_some((model, method))
}

impl Dialect for Gemini {
    fn name(&self) -> &'static str {
        "gemini"
    }

    fn endpoint(&self, method: &str, path: &str) -> Option<Endpoint> {
        match (method, model_call(path)) {
            ("POST", Some((_, "generateContent" | "streamGenerateContent"))) => {
                Some(Endpoint::Metered(&GenerateContent))
            }
            ("POST", Some((_, "countTokens"))) => Some(Endpoint::Free),
            ("GET", None) if path == "v1beta/models" || path == "v1/models" => Some(Endpoint::Free),
            ("GET", None)
                if under_models(path).is_some_and(|m| !m.is_empty() && !m.contains(['/', ':'])) =>
            {
                Some(Endpoint::Free)
            }
            _ => None,
        }
    }

    fn authenticate(&self, out: RequestBuilder, key: &str, _: &HeaderMap) -> RequestBuilder {
        out.header("x-goog-api-key", key)
    }

    fn sets_header(&self, _: &str) -> bool {
        false
    }

    /// A `key` in the query would be a caller's credential (ours or theirs) sent on upstream
    /// beside the one the gateway sets.
    fn forwards_query_param(&self, name: &str) -> bool {
        name != "key"
    }

    fn stream_error_event(&self) -> &'static str {
        "data: {\"error\":{\"code\":502,\"message\":\"The upstream stream ended early\",\"status\":\"UNAVAILABLE\"}}\n\n"
    }

    /// The Google Gen AI SDKs read every SSE line as JSON data.
    fn takes_sse_comments(&self) -> bool {
        false
    }
}

/// Usage from `usageMetadata`: the cached part of the prompt is read from the cache; thoughts
/// are output; a tool-use prompt is input.
fn tokens(u: &Value) -> Option<Tokens> {
    if !u.is_object() {
        return None;
    }
    let prompt = n(&u["promptTokenCount"]).saturating_add(n(&u["toolUsePromptTokenCount"]));
    let cached = n(&u["cachedContentTokenCount"]).min(prompt);
    Some(Tokens {
        input: prompt - cached,
        output: n(&u["candidatesTokenCount"]).saturating_add(n(&u["thoughtsTokenCount"])),
        cache_read: cached,
        ..Tokens::default()
    })
}

impl Metered for GenerateContent {
    fn read(
        &self,
        path: &str,
        _: &str,
        body: &mut Value,
        default_max: u64,
    ) -> Result<Call, ApiError> {
        let (model, method) = model_call(path)
            .ok_or_else(|| ApiError::invalid_field("model", "the path names no model"))?;
        let config = &body["generationConfig"];
        let candidates = config["candidateCount"].as_u64().unwrap_or(1).max(1);
        Ok(Call {
            model: model.to_owned(),
            streamed: method == "streamGenerateContent",
            max_output: config["maxOutputTokens"]
                .as_u64()
                .unwrap_or(default_max)
                .saturating_mul(candidates),
            web_searches: 0,
            rewritten: false,
        })
    }

    /// A JSON answer is one response, or (a stream asked for without `alt=sse`) an array of
    /// them whose last report counts.
    fn usage(&self, answer: &Value) -> Option<Tokens> {
        match answer.as_array() {
            Some(chunks) => chunks
                .iter()
                .rev()
                .find_map(|c| tokens(&c["usageMetadata"])),
            None => tokens(&answer["usageMetadata"]),
        }
    }

    /// Each chunk may restate the usage so far; the one that finishes a candidate is final.
    fn stream_event(&self, v: &Value, seen: &mut Seen) {
        let candidates = v["candidates"].as_array().into_iter().flatten();
        let mut finished = false;
        for c in candidates {
            finished |= c["finishReason"].is_string();
            for part in c["content"]["parts"].as_array().into_iter().flatten() {
                if let Some(s) = part["text"].as_str() {
                    seen.text(s);
                }
            }
        }
        let u = &v["usageMetadata"];
        if let Some(t) = tokens(u) {
            seen.tokens = t;
            seen.prompt_reported |= u["promptTokenCount"].is_u64();
            seen.output_reported |= finished;
        }
    }
}

/// Above 200,000 prompt tokens: input and cache reads twice, output 1.5 times.
fn long_prompts(p: Price) -> Price {
    p.long_context_over(200_000, Decimal::TWO, Decimal::new(15, 1))
}

/// Gemini list prices (USD per million tokens, paid tier, text input; thinking is output),
/// after ai.google.dev/gemini-api/docs/pricing (read 2026-12-02). A model whose
/// context-cache price is not published has its cache reads at the input price. Gemini 3.8
/// Flash is at its launch price, which Google gives until 2026-12-31 (then $1.50 / $7.50:
/// see the README on `AIBANK_PRICES_FILE`). The 2.0 models are shut down.
pub fn prices() -> PriceTable {
    let mut models = BTreeMap::new();
    for (m, p) in [
        ("gemini-3.8-flash", Price::listed("0.75", "3.75", None)),
        ("gemini-3.5-flash", Price::listed("1.5", "9", None)),
        ("gemini-3.5-flash-lite", Price::listed("0.3", "2.5", None)),
        (
            "gemini-3.1-pro-preview",
            long_prompts(Price::listed("2", "12", None)),
        ),
        (
            "gemini-2.5-pro",
            long_prompts(Price::listed("1.25", "10", Some("0.125"))),
        ),
        (
            "gemini-2.5-flash",
            Price::listed("0.3", "2.5", Some("0.03")),
        ),
        (
            "gemini-2.5-flash-lite",
            Price::listed("0.1", "0.4", Some("0.01")),
        ),
    ] {
        models.insert(m.to_owned(), p);
    }
    PriceTable {
        models,
        default: None,
    }
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

    #[test]
    fn paths_name_the_model_and_what_is_metered() {
        let e = |m: &str, p: &str| match Gemini.endpoint(m, p) {
            None => "none",
            Some(Endpoint::Free) => "free",
            Some(Endpoint::Metered(_)) => "metered",
        };
        assert_eq!(
            e("POST", "v1beta/models/gemini-2.5-flash:generateContent"),
            "metered"
        );
        assert_eq!(
            e(
                "POST",
                "v1beta/models/gemini-2.5-flash:streamGenerateContent"
            ),
            "metered"
        );
        assert_eq!(
            e("POST", "v1beta/models/gemini-2.5-flash:countTokens"),
            "free"
        );
        assert_eq!(
            e("POST", "v1beta/models/gemini-2.5-flash:embedContent"),
            "none"
        );
        assert_eq!(e("GET", "v1beta/models"), "free");
        assert_eq!(e("GET", "v1/models"), "free");
        assert_eq!(e("POST", "v1/models/gemini-2.5-flash:countTokens"), "free");
        assert_eq!(
            e("POST", "v1/models/gemini-2.5-flash:generateContent"),
            "metered"
        );
        assert_eq!(e("GET", "v1beta/models/gemini-2.5-flash"), "free");
        assert_eq!(e("GET", "v1beta/files"), "none");
        let mut body = json!({"contents": [], "generationConfig": {"maxOutputTokens": 64, "candidateCount": 2}});
        let c = GenerateContent
            .read(
                "v1beta/models/models/gemini-2.5-pro:streamGenerateContent",
                "alt=sse",
                &mut body,
                4096,
            )
            .unwrap();
        assert_eq!(
            (c.model.as_str(), c.streamed, c.max_output),
            ("gemini-2.5-pro", true, 128)
        );
        assert!(!Gemini.forwards_query_param("key"));
        assert!(Gemini.forwards_query_param("alt"));
    }

    #[test]
    fn usage_bills_cached_as_cache_reads_and_thoughts_as_output() {
        let a = json!({"candidates": [], "usageMetadata": {"promptTokenCount": 1000,
            "cachedContentTokenCount": 400, "candidatesTokenCount": 50,
            "thoughtsTokenCount": 120, "totalTokenCount": 1170}});
        assert_eq!(GenerateContent.usage(&a), Some(t(600, 170, 400)));
        let array = json!([{"usageMetadata": {"promptTokenCount": 9}}, {"usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 4}}]);
        assert_eq!(GenerateContent.usage(&array), Some(t(9, 4, 0)));
        assert_eq!(GenerateContent.usage(&json!({})), None);
    }

    const STREAM: &str = concat!(
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hello the\"}],\"role\":\"model\"}}],\"usageMetadata\":{\"promptTokenCount\":30,\"candidatesTokenCount\":2,\"totalTokenCount\":32}}\r\n\r\n",
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"re, friend\"}],\"role\":\"model\"},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":30,\"cachedContentTokenCount\":10,\"candidatesTokenCount\":5,\"thoughtsTokenCount\":7,\"totalTokenCount\":42}}\r\n\r\n",
    );

    #[test]
    fn a_stream_is_billed_from_its_final_chunk() {
        let mut m = SseMeter::new(&GenerateContent);
        m.feed(STREAM.as_bytes());
        assert!(m.complete());
        assert_eq!(m.billable(1), t(20, 12, 10));
    }

    #[test]
    fn a_cut_stream_counts_its_text() {
        let cut = &STREAM[..STREAM.find("\r\n\r\n").unwrap() + 4];
        let mut m = SseMeter::new(&GenerateContent);
        m.feed(cut.as_bytes());
        assert!(!m.complete());
        // "Hello the" is 9 characters: 3 tokens, above the 2 reported so far.
        assert_eq!(m.billable(1), t(30, 3, 0));
    }
}
