//! A mock of Bankr's Agent API on `127.0.0.1`, in its wire shapes as documented at
//! <https://docs.bankr.bot/agent-api/prompt-endpoint> and
//! <https://docs.bankr.bot/agent-api/job-management>:
//!
//! - `POST /agent/prompt {prompt, threadId?}` → `202 {success, jobId, threadId, status:
//!   "pending", message}`; `400 {error, message}` without a prompt;
//! - `GET /agent/job/{jobId}` → `200 {success, jobId, threadId, status, prompt, createdAt,
//!   cancellable, …}`: `pending` at the first poll, `processing` (with `statusUpdates`) at
//!   the second and third, then `completed` (with `response`, `richData`, `completedAt`);
//!   `404 {error: "Job not found", message}`;
//! - `POST /agent/job/{jobId}/cancel` → `200` the job, `cancelled` with `cancelledAt`
//!   (`400` once it is terminal);
//! - `GET /agent/balances?chains=` → `200 {success, balances: {chain: {…}}}` for the chains
//!   asked (the shape of this one is not in the pages above; it is ours);
//! - every request needs `X-API-Key` with one of the keys the mock was given, else
//!   `401 {error: "Authentication required", message}`.
//!
//! Steering: the prompt `rate-limit` is answered `429 {error: "Daily limit exceeded",
//! message, resetAt, limit, used}` as Bankr answers a spent daily limit, and `fail` with
//! `500 {error, message}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::local_server::LocalServer;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

/// `resetAt` of the mock's 429 (2025-01-15T12:00:00Z), as Bankr's docs show it.
pub const RESET_AT_MS: i64 = 1_736_942_400_000;

#[derive(Default)]
struct Shared {
    keys: Vec<String>,
    /// The key of every request, in order (`None`: sent without one).
    seen: Mutex<Vec<(String, Option<String>)>>,
    jobs: Mutex<BTreeMap<String, Value>>,
    polls: Mutex<BTreeMap<String, u32>>,
}

pub struct MockBankr {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    shared: Arc<Shared>,
    _server: LocalServer,
}

impl MockBankr {
    /// Accepts the API keys `keys`.
    #[allow(clippy::unused_async)] // async so that it is only called inside a runtime.
    pub async fn start(keys: &[&str]) -> MockBankr {
        let shared = Arc::new(Shared {
            keys: keys.iter().map(|k| (*k).to_owned()).collect(),
            ..Shared::default()
        });
        let server = LocalServer::start(shared.clone(), 1, |cfg| {
            cfg.default_service(web::to(handle));
        });
        MockBankr {
            base: server.base.clone(),
            shared,
            _server: server,
        }
    }

    /// (`METHOD /path?query`, the `X-API-Key` sent) of every request so far.
    pub fn seen(&self) -> Vec<(String, Option<String>)> {
        self.shared
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn err(status: u16, error: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).expect("status"))
        .json(json!({ "error": error, "message": message }))
}

async fn handle(req: HttpRequest, body: Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let key = req
        .headers()
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let target = if req.query_string().is_empty() {
        format!("{} {}", req.method(), req.path())
    } else {
        format!("{} {}?{}", req.method(), req.path(), req.query_string())
    };
    shared
        .seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((target, key.clone()));
    if !key.is_some_and(|k| shared.keys.contains(&k)) {
        return err(
            401,
            "Authentication required",
            "Please provide a valid API key",
        );
    }
    let segments: Vec<&str> = req.path().trim_matches('/').split('/').collect();
    match (req.method().as_str(), segments.as_slice()) {
        ("POST", ["agent", "prompt"]) => prompt(&shared, &body),
        ("GET", ["agent", "job", id]) => poll(&shared, id),
        ("POST", ["agent", "job", id, "cancel"]) => cancel(&shared, id),
        ("GET", ["agent", "balances"]) => balances(req.query_string()),
        _ => err(404, "Not found", "No such endpoint"),
    }
}

fn prompt(shared: &Shared, body: &[u8]) -> HttpResponse {
    let mut jobs = shared.jobs.lock().unwrap_or_else(PoisonError::into_inner);
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let Some(prompt) = v.get("prompt").and_then(Value::as_str) else {
        return err(400, "Invalid request", "Request body must include a prompt");
    };
    match prompt {
        "rate-limit" => {
            return HttpResponse::TooManyRequests().json(json!({
                "error": "Daily limit exceeded",
                "message": "You have reached your daily API limit of 100 messages.",
                "resetAt": RESET_AT_MS,
                "limit": 100,
                "used": 100,
            }))
        }
        "fail" => return err(500, "Internal error", "Something went wrong"),
        _ => {}
    }
    let id = format!("job_{}", jobs.len() + 1);
    let thread = v
        .get("threadId")
        .and_then(Value::as_str)
        .map_or_else(|| format!("thr_{}", jobs.len() + 1), str::to_owned);
    jobs.insert(
        id.clone(),
        json!({
            "success": true, "jobId": id, "threadId": thread, "status": "pending",
            "prompt": prompt, "createdAt": "2026-01-15T10:30:00Z", "cancellable": true,
        }),
    );
    HttpResponse::Accepted().json(json!({
        "success": true, "jobId": id, "threadId": thread, "status": "pending",
        "message": "Job created successfully",
    }))
}

fn poll(shared: &Shared, id: &str) -> HttpResponse {
    let mut jobs = shared.jobs.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(job) = jobs.get_mut(id) else {
        return err(404, "Job not found", &format!("No job found with ID {id}"));
    };
    let mut polls = shared.polls.lock().unwrap_or_else(PoisonError::into_inner);
    let n = polls.entry(id.to_owned()).or_insert(0);
    *n += 1;
    let answer = job.clone();
    match job["status"].as_str() {
        Some("processing") if *n < 3 => {}
        Some("pending") => {
            job["status"] = json!("processing");
            job["startedAt"] = json!("2026-01-15T10:30:01Z");
            job["statusUpdates"] =
                json!([{ "message": "Working", "timestamp": "2026-01-15T10:30:01Z" }]);
        }
        Some("processing") => {
            job["status"] = json!("completed");
            job["cancellable"] = json!(false);
            job["response"] = json!("Done.");
            job["richData"] = json!([]);
            job["completedAt"] = json!("2026-01-15T10:30:03Z");
            job["processingTime"] = json!(3000);
        }
        _ => {}
    }
    HttpResponse::Ok().json(answer)
}

fn cancel(shared: &Shared, id: &str) -> HttpResponse {
    let mut jobs = shared.jobs.lock().unwrap_or_else(PoisonError::into_inner);
    let Some(job) = jobs.get_mut(id) else {
        return err(404, "Job not found", &format!("No job found with ID {id}"));
    };
    if !matches!(job["status"].as_str(), Some("pending" | "processing")) {
        return err(
            400,
            "Job cannot be cancelled",
            "The job has already finished",
        );
    }
    job["status"] = json!("cancelled");
    job["cancellable"] = json!(false);
    job["cancelledAt"] = json!("2026-01-15T10:30:02Z");
    HttpResponse::Ok().json(job.clone())
}

fn balances(query: &str) -> HttpResponse {
    let chains = web::Query::<BTreeMap<String, String>>::from_query(query)
        .ok()
        .and_then(|q| q.get("chains").cloned())
        .unwrap_or_default();
    let balances: serde_json::Map<String, Value> = chains
        .split(',')
        .filter(|c| !c.is_empty())
        .map(|c| {
            (
                c.to_owned(),
                json!({ "nativeBalance": "0.05", "nativeUsd": "150.00", "tokenBalances": [] }),
            )
        })
        .collect();
    HttpResponse::Ok().json(json!({ "success": true, "balances": balances }))
}
