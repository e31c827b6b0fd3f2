//! The mock upstream LLM server as a process, for benchmarks: prints its base URL on the
//! first line of stdout and serves until interrupted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;

#[tokio::main]
async fn main() {
    let mock = aibank_testkit::mock_upstream::MockUpstream::start().await;
    println!("{}", mock.base);
    std::io::stdout().flush().unwrap();
    tokio::signal::ctrl_c().await.unwrap();
}
