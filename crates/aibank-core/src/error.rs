//! The one error envelope every endpoint answers with:
//! `{ "error": "<human message>", "code": "<CODE>", ...extra }`.

use std::fmt;

use http::header::{HeaderName, HeaderValue};
use http::StatusCode;
use serde_json::{Map, Value};

/// Every code the API can answer with, and its HTTP status. The table is the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    Conflict,
    InvalidInput,
    InsufficientCredits,
    PaymentRequired,
    PaymentInvalid,
    PaymentAlreadyUsed,
    PerTxLimitExceeded,
    DailyLimitExceeded,
    WeeklyLimitExceeded,
    MonthlyLimitExceeded,
    AddressNotAllowed,
    TransferFailed,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
    Unavailable,
    Internal,
    NotImplemented,
    InvalidSpec,
    AlreadySubscribed,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 24] = [
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Conflict,
        ErrorCode::InvalidInput,
        ErrorCode::InsufficientCredits,
        ErrorCode::PaymentRequired,
        ErrorCode::PaymentInvalid,
        ErrorCode::PaymentAlreadyUsed,
        ErrorCode::PerTxLimitExceeded,
        ErrorCode::DailyLimitExceeded,
        ErrorCode::WeeklyLimitExceeded,
        ErrorCode::MonthlyLimitExceeded,
        ErrorCode::AddressNotAllowed,
        ErrorCode::TransferFailed,
        ErrorCode::RateLimited,
        ErrorCode::UpstreamError,
        ErrorCode::UpstreamTimeout,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
        ErrorCode::NotImplemented,
        ErrorCode::InvalidSpec,
        ErrorCode::AlreadySubscribed,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::InvalidInput => "INVALID_INPUT",
            ErrorCode::InsufficientCredits => "INSUFFICIENT_CREDITS",
            ErrorCode::PaymentRequired => "PAYMENT_REQUIRED",
            ErrorCode::PaymentInvalid => "PAYMENT_INVALID",
            ErrorCode::PaymentAlreadyUsed => "PAYMENT_ALREADY_USED",
            ErrorCode::PerTxLimitExceeded => "PER_TX_LIMIT_EXCEEDED",
            ErrorCode::DailyLimitExceeded => "DAILY_LIMIT_EXCEEDED",
            ErrorCode::WeeklyLimitExceeded => "WEEKLY_LIMIT_EXCEEDED",
            ErrorCode::MonthlyLimitExceeded => "MONTHLY_LIMIT_EXCEEDED",
            ErrorCode::AddressNotAllowed => "ADDRESS_NOT_ALLOWED",
            ErrorCode::TransferFailed => "TRANSFER_FAILED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::UpstreamError => "UPSTREAM_ERROR",
            ErrorCode::UpstreamTimeout => "UPSTREAM_TIMEOUT",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::NotImplemented => "NOT_IMPLEMENTED",
            ErrorCode::InvalidSpec => "INVALID_SPEC",
            ErrorCode::AlreadySubscribed => "ALREADY_SUBSCRIBED",
        }
    }

    pub const fn status(self) -> StatusCode {
        match self {
            ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorCode::Forbidden
            | ErrorCode::PerTxLimitExceeded
            | ErrorCode::DailyLimitExceeded
            | ErrorCode::WeeklyLimitExceeded
            | ErrorCode::MonthlyLimitExceeded
            | ErrorCode::AddressNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Conflict | ErrorCode::AlreadySubscribed => StatusCode::CONFLICT,
            ErrorCode::InvalidInput | ErrorCode::InvalidSpec => StatusCode::BAD_REQUEST,
            ErrorCode::InsufficientCredits
            | ErrorCode::PaymentRequired
            | ErrorCode::PaymentInvalid
            | ErrorCode::PaymentAlreadyUsed => StatusCode::PAYMENT_REQUIRED,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            // The chain refused or reverted the transfer.
            ErrorCode::UpstreamError | ErrorCode::TransferFailed => StatusCode::BAD_GATEWAY,
            ErrorCode::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::NotImplemented => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error on its way to the client. The message is shown to the client verbatim, so it
/// must never carry a secret; internal detail goes in `source`, which is only logged.
pub struct ApiError(Box<Inner>);

/// Boxed so `Result<T, ApiError>` stays one pointer wide on the happy path.
struct Inner {
    code: ErrorCode,
    message: String,
    extra: Map<String, Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
    source: Option<Source>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError(Box::new(Inner {
            code,
            message: message.into(),
            extra: Map::new(),
            headers: Vec::new(),
            source: None,
        }))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }

    /// Invalid input attributed to one request field, named in the `field` member.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message).with("field", field)
    }

    /// 429 with what a client needs to back off: `limit`, `used`, `resetAt` (epoch ms) and
    /// a `Retry-After` header in whole seconds.
    pub fn rate_limited(
        message: impl Into<String>,
        limit: i64,
        used: i64,
        reset_at_ms: i64,
        now_ms: i64,
    ) -> Self {
        let wait_ms = reset_at_ms.saturating_sub(now_ms).max(0);
        let retry_after = (wait_ms + 999) / 1000;
        Self::new(ErrorCode::RateLimited, message)
            .with("limit", limit)
            .with("used", used)
            .with("resetAt", reset_at_ms)
            .with_header(
                HeaderName::from_static("retry-after"),
                HeaderValue::from(retry_after.max(1)),
            )
    }

    /// 405 for a known path and another method: `allowed` lists its methods, in the body
    /// and in the `Allow` header.
    pub fn method_not_allowed(message: impl Into<String>, allowed: &str) -> Self {
        let e = Self::new(ErrorCode::MethodNotAllowed, message).with("allowed", allowed);
        match HeaderValue::from_str(allowed) {
            Ok(v) => e.with_header(HeaderName::from_static("allow"), v),
            Err(_) => e,
        }
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// A failure the client cannot fix. The source is logged with its chain; the body says
    /// nothing internal.
    pub fn internal(source: impl Into<Source>) -> Self {
        let mut e = Self::new(ErrorCode::Internal, "Internal server error");
        e.0.source = Some(source.into());
        e
    }

    /// Attaches the underlying cause (logged, never sent).
    #[must_use]
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.0.source = Some(source.into());
        self
    }

    /// Adds a member to the JSON body beside `error` and `code`.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.extra.insert(key.to_owned(), value.into());
        self
    }

    #[must_use]
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.0.headers.push((name, value));
        self
    }

    pub fn code(&self) -> ErrorCode {
        self.0.code
    }

    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// A member added to the body with [`ApiError::with`].
    pub fn member(&self, key: &str) -> Option<&Value> {
        self.0.extra.get(key)
    }

    pub fn body(&self) -> Value {
        let mut body = Map::new();
        body.insert("error".into(), Value::String(self.0.message.clone()));
        body.insert("code".into(), Value::String(self.0.code.as_str().into()));
        for (k, v) in &self.0.extra {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }

    #[cfg(feature = "actix")]
    fn log(&self) {
        match (self.0.code, &self.0.source) {
            (ErrorCode::Internal, Some(source)) => {
                tracing::error!(code = %self.0.code, error = %ErrorChain(source.as_ref()), "request failed");
            }
            (
                ErrorCode::Unavailable | ErrorCode::UpstreamError | ErrorCode::UpstreamTimeout,
                Some(source),
            ) => {
                tracing::warn!(code = %self.0.code, message = %self.0.message, error = %ErrorChain(source.as_ref()), "request failed");
            }
            _ => {
                tracing::debug!(code = %self.0.code, message = %self.0.message, "request rejected");
            }
        }
    }
}

/// Renders an error with all its causes: `outer: middle: root`.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiError")
            .field("code", &self.0.code)
            .field("message", &self.0.message)
            .field("extra", &self.0.extra)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.0.code, self.0.message)
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0
            .source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(feature = "actix")]
impl actix_web::ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.code.status()
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        self.log();
        let mut res = actix_web::HttpResponse::build(self.0.code.status());
        for (name, value) in &self.0.headers {
            res.insert_header((name.clone(), value.clone()));
        }
        res.json(self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_the_design() {
        let expected = [
            ("UNAUTHORIZED", 401),
            ("FORBIDDEN", 403),
            ("NOT_FOUND", 404),
            ("METHOD_NOT_ALLOWED", 405),
            ("CONFLICT", 409),
            ("INVALID_INPUT", 400),
            ("INSUFFICIENT_CREDITS", 402),
            ("PAYMENT_REQUIRED", 402),
            ("PAYMENT_INVALID", 402),
            ("PAYMENT_ALREADY_USED", 402),
            ("PER_TX_LIMIT_EXCEEDED", 403),
            ("DAILY_LIMIT_EXCEEDED", 403),
            ("WEEKLY_LIMIT_EXCEEDED", 403),
            ("MONTHLY_LIMIT_EXCEEDED", 403),
            ("ADDRESS_NOT_ALLOWED", 403),
            ("TRANSFER_FAILED", 502),
            ("RATE_LIMITED", 429),
            ("UPSTREAM_ERROR", 502),
            ("UPSTREAM_TIMEOUT", 504),
            ("UNAVAILABLE", 503),
            ("INTERNAL", 500),
            ("NOT_IMPLEMENTED", 501),
            ("INVALID_SPEC", 400),
            ("ALREADY_SUBSCRIBED", 409),
        ];
        let got: Vec<_> = ErrorCode::ALL
            .iter()
            .map(|c| (c.as_str(), c.status().as_u16()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn internal_errors_hide_their_source() {
        let e = ApiError::internal(std::io::Error::other("disk on fire at /secret/path"));
        let body = e.body().to_string();
        assert!(!body.contains("disk"));
        assert_eq!(e.body()["code"], "INTERNAL");
    }

    #[test]
    fn extra_members_ride_along() {
        let e = ApiError::forbidden("nope").with("resetAt", 5);
        assert_eq!(
            e.body(),
            serde_json::json!({"error": "nope", "code": "FORBIDDEN", "resetAt": 5})
        );
    }
}
