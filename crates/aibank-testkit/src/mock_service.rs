//! A small third-party API for catalog tests: a real HTTP server on `127.0.0.1` with a few
//! operations and their OpenAPI document ([`openapi`] 3.1, [`openapi_3_0`] 3.0), recording
//! every request it receives so a test can check what aibank forwarded — the owner's key
//! arrived, aibank's own credentials did not, an undeclared operation never got here.
//!
//! Declared operations:
//! - `GET /weather/{city}?units=` — 200 `{"city", "units", "temperature"}`.
//! - `POST /translate` `{"text", "to"}` — 200 `{"translated", "to", "echo"}`, `echo` being
//!   the request body as sent.
//! - `GET /items/{id}` — 200 `{"id"}`; `DELETE /items/{id}` — 204.
//! - `GET /slow?ms=` — 200 after `ms` milliseconds (at most 10 s), for timeouts and races.
//! - `GET /fail` — 500; `GET /teapot` — 418.
//!
//! Served but not declared: `GET /admin` — 200 `{"secret": true}`, so a test shows that
//! aibank refuses an undeclared operation even where the service would answer it.
//! Anything else is a 404. Every request, answered or not, is recorded.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::local_server::LocalServer;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

/// One request the service received.
#[derive(Debug, Clone)]
pub struct ServiceRequest {
    pub method: String,
    /// The path as received, without the query.
    pub path: String,
    pub query: Option<String>,
    /// Every header in arrival order; names are lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ServiceRequest {
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
    requests: Mutex<Vec<ServiceRequest>>,
}

/// The running service; the server stops when this is dropped.
pub struct MockService {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    shared: Arc<Shared>,
    _server: LocalServer,
}

impl MockService {
    /// Binds `127.0.0.1:0` and serves on the current Tokio runtime.
    #[allow(clippy::unused_async)] // async so that it is only called inside a runtime.
    pub async fn start() -> MockService {
        let shared = Arc::new(Shared::default());
        // Two workers, so a slow call does not hold up the others in a concurrent run.
        let server = LocalServer::start(shared.clone(), 2, |cfg| {
            cfg.default_service(web::to(handle));
        });
        MockService {
            base: server.base.clone(),
            shared,
            _server: server,
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<ServiceRequest> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn last_request(&self) -> Option<ServiceRequest> {
        self.requests().pop()
    }
}

async fn handle(req: HttpRequest, body: Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let recorded = ServiceRequest {
        method: req.method().as_str().to_owned(),
        path: req.path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        headers: req
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(recorded);
    let query =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .map(web::Query::into_inner)
            .unwrap_or_default();
    let segments: Vec<&str> = req.path().trim_start_matches('/').split('/').collect();
    match (req.method().as_str(), segments.as_slice()) {
        ("GET", ["weather", city]) if !city.is_empty() => {
            let units = query.get("units").map_or("metric", String::as_str);
            let temperature = if units == "imperial" { 70 } else { 21 };
            HttpResponse::Ok().json(json!({
                "city": city,
                "units": units,
                "temperature": temperature,
            }))
        }
        ("POST", ["translate"]) => {
            let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let text = sent["text"].as_str().unwrap_or_default();
            HttpResponse::Ok().json(json!({
                "translated": text.chars().rev().collect::<String>(),
                "to": sent["to"],
                "echo": sent,
            }))
        }
        ("GET", ["items", id]) if !id.is_empty() => HttpResponse::Ok().json(json!({"id": id})),
        ("DELETE", ["items", id]) if !id.is_empty() => HttpResponse::NoContent().finish(),
        ("GET", ["slow"]) => {
            let ms = query
                .get("ms")
                .and_then(|m| m.parse::<u64>().ok())
                .unwrap_or(100)
                .min(10_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            HttpResponse::Ok().json(json!({"slept_ms": ms}))
        }
        ("GET", ["fail"]) => {
            HttpResponse::InternalServerError().json(json!({"error": "the service failed"}))
        }
        ("GET", ["teapot"]) => HttpResponse::build(actix_web::http::StatusCode::IM_A_TEAPOT)
            .json(json!({"error": "I'm a teapot"})),
        ("GET", ["admin"]) => HttpResponse::Ok().json(json!({"secret": true})),
        (method, _) => HttpResponse::NotFound()
            .json(json!({"error": format!("no route for {method} {}", req.path())})),
    }
}

/// The service's OpenAPI 3.1 document: every declared operation, none of the undeclared.
pub fn openapi() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Mock weather and translation", "version": "1.0.0"},
        "components": {"parameters": {
            "ItemId": {"name": "id", "in": "path", "required": true,
                       "description": "The item's id.", "schema": {"type": "string"}}
        }},
        "paths": {
            "/weather/{city}": {"get": {
                "summary": "Current weather in a city",
                "parameters": [
                    {"name": "city", "in": "path", "required": true,
                     "description": "City name.", "schema": {"type": "string"}},
                    {"name": "units", "in": "query",
                     "description": "metric (default) or imperial.",
                     "schema": {"type": ["string", "null"], "enum": ["metric", "imperial", null]}}
                ],
                "responses": {"200": {"description": "The weather."}}
            }},
            "/translate": {"post": {
                "summary": "Translate a text",
                "requestBody": {"required": true, "content": {"application/json": {"schema": {
                    "type": "object",
                    "required": ["text", "to"],
                    "properties": {"text": {"type": "string"}, "to": {"type": "string"}}
                }}}},
                "responses": {"200": {"description": "The translation."}}
            }},
            "/items/{id}": {
                "parameters": [{"$ref": "#/components/parameters/ItemId"}],
                "get": {"summary": "One item", "responses": {"200": {"description": "The item."}}},
                "delete": {"summary": "Delete an item", "responses": {"204": {"description": "Deleted."}}}
            },
            "/slow": {"get": {
                "summary": "Answer after a delay",
                "parameters": [{"name": "ms", "in": "query", "schema": {"type": "integer"}}],
                "responses": {"200": {"description": "Done."}}
            }},
            "/fail": {"get": {
                "summary": "Always fails",
                "responses": {"500": {"description": "The failure."}}
            }},
            "/teapot": {"get": {
                "summary": "Always a teapot",
                "responses": {"418": {"description": "A teapot."}}
            }}
        }
    })
}

/// The same document in OpenAPI 3.0 form (`nullable` rather than a type list).
pub fn openapi_3_0() -> Value {
    let mut doc = openapi();
    doc["openapi"] = json!("3.0.3");
    doc["paths"]["/weather/{city}"]["get"]["parameters"][1]["schema"] =
        json!({"type": "string", "nullable": true, "enum": ["metric", "imperial", null]});
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn answers_as_documented_and_records_each_request() {
        let svc = MockService::start().await;
        let http = reqwest::Client::new();
        let get = |path: &str| http.get(format!("{}{path}", svc.base));

        let r = get("/weather/paris?units=imperial")
            .header("x-provider-key", "owner-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body,
            json!({"city": "paris", "units": "imperial", "temperature": 70})
        );

        let r = http
            .post(format!("{}/translate", svc.base))
            .json(&json!({"text": "hello", "to": "fr"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["translated"], "olleh");
        assert_eq!(body["echo"], json!({"text": "hello", "to": "fr"}));

        let statuses = [
            ("/items/7", 200),
            ("/fail", 500),
            ("/teapot", 418),
            ("/admin", 200),
            ("/nowhere", 404),
            ("/slow?ms=1", 200),
        ];
        for (path, status) in statuses {
            assert_eq!(get(path).send().await.unwrap().status(), status, "{path}");
        }
        let r = http
            .delete(format!("{}/items/7", svc.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);

        let seen = svc.requests();
        assert_eq!(seen.len(), 9);
        let first = &seen[0];
        assert_eq!(
            (
                first.method.as_str(),
                first.path.as_str(),
                first.query.as_deref()
            ),
            ("GET", "/weather/paris", Some("units=imperial"))
        );
        assert_eq!(first.header("X-Provider-Key"), Some("owner-secret"));
        assert_eq!(first.header("x-api-key"), None);
        assert_eq!(seen[1].json(), json!({"text": "hello", "to": "fr"}));
        assert_eq!(seen[1].query, None);
        assert_eq!(svc.last_request().unwrap().method, "DELETE");
    }
}
