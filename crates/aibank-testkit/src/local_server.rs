//! The HTTP server every mock runs on: bound to `127.0.0.1:0`, serving on the current Tokio
//! runtime with the mock's shared state as app data, and stopped when dropped.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};

pub struct LocalServer {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl LocalServer {
    /// Serves `routes` with `shared` as `web::Data<T>` on `workers` workers. Must be called
    /// inside a Tokio runtime.
    pub fn start<T: Send + Sync + 'static>(
        shared: Arc<T>,
        workers: usize,
        routes: fn(&mut web::ServiceConfig),
    ) -> LocalServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        let data = web::Data::from(shared);
        let server = HttpServer::new(move || App::new().app_data(data.clone()).configure(routes))
            .workers(workers)
            .disable_signals()
            .listen(listener)
            .expect("mock server listens")
            .run();
        LocalServer {
            base: format!("http://127.0.0.1:{port}"),
            server: tokio::spawn(server),
        }
    }
}
