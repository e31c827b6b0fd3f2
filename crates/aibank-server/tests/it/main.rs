//! The server's integration tests, one module per area, over real HTTP against the real
//! server on a random port with a fresh database each.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::unreadable_literal
)]

mod bankr;
mod catalog;
mod hyperliquid;
mod paid_http;
