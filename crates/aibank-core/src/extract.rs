//! Request extractors whose failures are `400 INVALID_INPUT` envelopes naming the field,
//! never actix's plain-text errors and never a 500.

use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// Default cap on a JSON request body.
pub const DEFAULT_JSON_LIMIT: usize = 64 * 1024;

/// The JSON body limit in force; put it in app data to change it.
#[derive(Debug, Clone, Copy)]
pub struct JsonLimit(pub usize);

/// A JSON request body. An empty body reads as `{}` so all-optional bodies may be omitted.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Json<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::invalid_field(
        "body",
        format!("Request body is larger than the {limit}-byte limit"),
    )
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let limit = req
            .app_data::<JsonLimit>()
            .map_or(DEFAULT_JSON_LIMIT, |l| l.0);
        let declared = req
            .headers()
            .get(actix_web::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let payload = payload.take();
        Box::pin(async move {
            if declared.is_some_and(|n| n > limit) {
                return Err(too_large(limit));
            }
            let body = read_body(payload, limit).await?;
            parse_json(&body).map(Json)
        })
    }
}

/// Reads a whole request body, refusing it (400, field `body`) past `limit` bytes.
pub async fn read_body(mut payload: Payload, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::invalid_field("body", "Could not read the request body")
                .with_source(e.to_string())
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a JSON body, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    // serde would read a struct from an array positionally; every body here is an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid_field(
            "body",
            "Request body must be a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        // With arbitrary precision a number is read as a one-field map, which the path
        // names; the field is the number's own.
        let path = e.path().to_string();
        let path = path
            .strip_suffix(".$serde_json::private::Number")
            .unwrap_or(&path)
            .to_owned();
        let inner = e.into_inner();
        describe_json_error(&path, &inner)
    })?;
    de.end()
        .map_err(|e| ApiError::invalid_field("body", format!("Malformed JSON body: {e}")))?;
    Ok(value)
}

fn describe_json_error(path: &str, err: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match err.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::invalid_field("body", format!("Malformed JSON body: {err}"))
        }
        Category::Data => {
            let text = strip_position(&err.to_string());
            // For a missing field the path points at its parent; otherwise at the field.
            let missing = text.starts_with("missing field");
            let field = match (path, missing_field(&text)) {
                (".", Some(name)) => name.to_owned(),
                (p, Some(name)) if missing => format!("{p}.{name}"),
                (".", None) => "body".to_owned(),
                (p, _) => p.to_owned(),
            };
            let message = if field == "body" {
                format!("Invalid request body: {text}")
            } else {
                format!("Invalid field `{field}`: {text}")
            };
            ApiError::invalid_field(&field, message)
        }
    }
}

/// serde_json appends " at line L column C"; useful for syntax errors, noise for data errors.
fn strip_position(s: &str) -> String {
    match s.rfind(" at line ") {
        Some(i) => s[..i].to_owned(),
        None => s.to_owned(),
    }
}

/// The field a serde message is about, for the messages that name one in backticks.
fn missing_field(text: &str) -> Option<&str> {
    let rest = text
        .strip_prefix("missing field `")
        .or_else(|| text.strip_prefix("unknown field `"))?;
    rest.split('`').next()
}

/// A query string, with the same error envelope as [`Json`].
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T> Query<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Query<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(
            req.query_string().as_bytes(),
        ));
        let res = serde_path_to_error::deserialize(de)
            .map(Query)
            .map_err(|e| {
                let path = e.path().to_string();
                let text = e.into_inner().to_string();
                match (path.as_str(), missing_field(&text)) {
                    (".", Some(name)) => {
                        ApiError::invalid_field(name, format!("Missing query parameter `{name}`"))
                    }
                    (".", None) => {
                        ApiError::invalid_field("query", format!("Invalid query string: {text}"))
                    }
                    (p, _) => {
                        ApiError::invalid_field(p, format!("Invalid query parameter `{p}`: {text}"))
                    }
                }
            });
        std::future::ready(res)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[allow(dead_code)]
        name: String,
        #[allow(dead_code)]
        limit: Option<crate::Usd>,
    }

    fn field_of(body: &str) -> String {
        let e = parse_json::<Body>(body.as_bytes()).unwrap_err();
        e.body()["field"].as_str().unwrap().to_owned()
    }

    #[test]
    fn names_the_field() {
        assert_eq!(field_of("{}"), "name");
        assert_eq!(field_of(""), "name");
        assert_eq!(field_of(r#"{"name": 5}"#), "name");
        assert_eq!(field_of(r#"{"name": "a", "limit": "x"}"#), "limit");
        assert_eq!(field_of(r#"{"name": "a", "limitt": 1}"#), "limitt");
        assert_eq!(field_of(r#"{"name": "#), "body");
        assert_eq!(field_of(r#"{"name": "a"} trailing"#), "body");
        assert_eq!(field_of(r#"["a", null]"#), "body");
        assert_eq!(field_of("null"), "body");
        assert!(parse_json::<Body>(br#"{"name": "a", "limit": 1.25}"#).is_ok());
        // A number money cannot hold is the field's fault, named as the field.
        assert_eq!(field_of(r#"{"name": "a", "limit": 5e-324}"#), "limit");
        let e = parse_json::<Body>(br#"{"name": "a", "limit": 1e308}"#).unwrap_err();
        assert!(!e.message().contains("serde_json"), "{}", e.message());
    }
}
