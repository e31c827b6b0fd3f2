//! A bare relay, for benchmarks: the least a proxy on aibank's stack does. It forwards
//! every request's method, path, query and body to the base URL given as the first
//! argument with one shared pooled reqwest client, and answers with the upstream's status,
//! content type and body — no authentication, no metering, no header policy, no logging.
//! Prints its own base URL on the first line of stdout and serves until interrupted.
//!
//! `scripts/bench-gateway` measures it next to the gateway: what the stack itself costs on
//! the machine, against what the gateway adds on top.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpListener;

use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

struct Relay {
    client: reqwest::Client,
    upstream: String,
}

async fn relay(req: HttpRequest, body: web::Bytes, relay: web::Data<Relay>) -> HttpResponse {
    let url = format!("{}{}", relay.upstream, req.uri());
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).unwrap();
    let mut out = relay.client.request(method, url).body(body);
    if let Some(ct) = req.headers().get("content-type") {
        out = out.header("content-type", ct.as_bytes());
    }
    match out.send().await {
        Ok(r) => {
            let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
            let ct = r
                .headers()
                .get("content-type")
                .map(|v| v.as_bytes().to_vec());
            let body = r.bytes().await.unwrap_or_default();
            let mut res = HttpResponse::build(status);
            if let Some(ct) = ct {
                res.insert_header(("content-type", ct));
            }
            res.body(body)
        }
        Err(_) => HttpResponse::BadGateway().finish(),
    }
}

#[actix_web::main]
async fn main() {
    let upstream = std::env::args()
        .nth(1)
        .expect("usage: bare_relay UPSTREAM_BASE_URL");
    // The same client settings as the gateway's.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let state = web::Data::new(Relay {
        client,
        upstream: upstream.trim_end_matches('/').to_owned(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("http://{}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .default_service(web::to(relay))
    })
    .listen(listener)
    .unwrap()
    .run()
    .await
    .unwrap();
}
