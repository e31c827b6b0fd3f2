//! The provider interface: what the gateway needs to know of a wire format (a dialect) to
//! route, authenticate and meter its calls. Each dialect implements it once, in a module of
//! its own (`anthropic`, `openai`, `gemini`); the rest of the gateway knows no dialect by
//! name.

use reqwest::header::HeaderMap;
use reqwest::RequestBuilder;
use serde_json::Value;

use aibank_core::ApiError;

use crate::prices::Tokens;

/// A wire format spoken by one or more providers.
pub trait Dialect: std::fmt::Debug + Send + Sync {
    /// Its name, as `GET /v1/providers` shows it (`kind`).
    fn name(&self) -> &'static str;

    /// What the gateway does with `method path` (a plain path, without a trailing `/`);
    /// `None`: not forwarded (404), so a platform key is never spent on an unmetered call.
    fn endpoint(&self, method: &str, path: &str) -> Option<Endpoint>;

    /// Adds the upstream credential `key` (and anything the dialect sets with it, from the
    /// caller's `incoming` headers) to a request.
    fn authenticate(&self, out: RequestBuilder, key: &str, incoming: &HeaderMap) -> RequestBuilder;

    /// A caller's request header the dialect sets itself, so it is not forwarded as well.
    fn sets_header(&self, name: &str) -> bool;

    /// Whether a query parameter (by its decoded name) may go upstream.
    fn forwards_query_param(&self, name: &str) -> bool;

    /// The SSE event a still-connected client gets when the upstream's stream broke off.
    fn stream_error_event(&self) -> &'static str;

    /// Whether its clients skip SSE comment lines, so a stream may end with the cost as
    /// one (`: aibank cost_usd=…`). Some official SDKs parse every line as data and fail.
    fn takes_sse_comments(&self) -> bool;
}

/// What the gateway does with a path.
#[derive(Clone, Copy)]
pub enum Endpoint {
    /// A model call, billed from its usage.
    Metered(&'static dyn Metered),
    /// Free to forward (model lists, token counting, stored answers).
    Free,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Metered(_) => f.write_str("Metered"),
            Endpoint::Free => f.write_str("Free"),
        }
    }
}

/// What a metered request asks for, read before it is forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub model: String,
    pub streamed: bool,
    /// The most output the call may produce, every choice counted.
    pub max_output: u64,
    /// Server-side tool uses billed per use that the call may run (web searches).
    pub web_searches: u64,
    /// Whether the request body was changed (it is then sent re-serialised).
    pub rewritten: bool,
}

/// One metered API of a dialect: how its requests and answers are read.
pub trait Metered: Send + Sync {
    /// Reads a request to `path` (its query string apart); may rewrite `body` (streams that
    /// must be asked for their usage). `default_max_output`: the output assumed when the
    /// request sets no maximum.
    fn read(
        &self,
        path: &str,
        query: &str,
        body: &mut Value,
        default_max_output: u64,
    ) -> Result<Call, ApiError>;

    /// The usage a complete JSON answer reports.
    fn usage(&self, answer: &Value) -> Option<Tokens>;

    /// Follows one SSE event's data.
    fn stream_event(&self, event: &Value, seen: &mut Seen);
}

/// What a stream has shown so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    pub tokens: Tokens,
    pub prompt_reported: bool,
    pub output_reported: bool,
    /// Characters of output streamed (text, thinking, tool-call arguments).
    pub text_chars: u64,
}

impl Seen {
    /// A stream's whole final usage.
    pub fn report(&mut self, tokens: Tokens) {
        self.tokens = tokens;
        self.prompt_reported = true;
        self.output_reported = true;
    }

    /// Counts streamed output text.
    pub fn text(&mut self, s: &str) {
        self.text_chars = self.text_chars.saturating_add(s.chars().count() as u64);
    }
}

/// A number of a usage object; absent or not a count: 0.
pub(crate) fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The request's model (`model`, required).
pub(crate) fn body_model(body: &Value) -> Result<String, ApiError> {
    body["model"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| ApiError::invalid_field("model", "`model` is required"))
}
