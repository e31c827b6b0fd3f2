//! A mock per-call priced HTTP API: a real HTTP server on `127.0.0.1` that answers every
//! request with JSON echoing what it got (method, path, query, headers, body), so a test
//! sees exactly what the gateway sent upstream. The query parameter `status=NNN` chooses
//! the answer's status (default 200); every request is recorded.

use std::sync::{Arc, Mutex, PoisonError};

use crate::local_server::LocalServer;
use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

pub use crate::mock_upstream::RecordedRequest;

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
}

pub struct MockHttpApi {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    shared: Arc<Shared>,
    _server: LocalServer,
}

impl MockHttpApi {
    /// Binds `127.0.0.1:0` and serves on the current Tokio runtime.
    #[allow(clippy::unused_async)] // async so that it is only called inside a runtime.
    pub async fn start() -> MockHttpApi {
        let shared = Arc::new(Shared::default());
        let server = LocalServer::start(shared.clone(), 1, |cfg| {
            cfg.default_service(web::to(echo));
        });
        MockHttpApi {
            base: server.base.clone(),
            shared,
            _server: server,
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
}

async fn echo(req: HttpRequest, body: Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let query = req.query_string().to_owned();
    let status = web::Query::<std::collections::HashMap<String, String>>::from_query(&query)
        .ok()
        .and_then(|q| q.get("status").and_then(|s| s.parse::<u16>().ok()))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let path = if query.is_empty() {
        req.path().to_owned()
    } else {
        format!("{}?{query}", req.path())
    };
    shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(RecordedRequest {
            method: req.method().as_str().to_owned(),
            path,
            headers: headers.clone(),
            body: body.to_vec(),
        });
    let header_map: serde_json::Map<String, Value> = headers
        .into_iter()
        .map(|(n, v)| (n, Value::String(v)))
        .collect();
    HttpResponse::build(status).json(json!({
        "method": req.method().as_str(),
        "path": req.path(),
        "query": query,
        "headers": header_map,
        "body": String::from_utf8_lossy(&body),
    }))
}
