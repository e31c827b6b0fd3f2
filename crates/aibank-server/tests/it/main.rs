//! The server's integration tests, one module per area, over real HTTP against the real
//! server on a random port with a fresh database each. `support` starts the server and
//! holds the typed callers; the test kit it re-exports holds what needs no server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::unreadable_literal
)]

mod support;

mod api;
mod bankr;
mod browser;
mod catalog;
mod cli;
mod contract;
mod crash;
mod dashboard;
mod deployments;
mod device;
mod gateway;
mod hyperliquid;
mod instances;
mod key_security;
mod ledger_api;
mod metrics;
mod paid_http;
mod schemathesis;
mod sdk_dropin;
mod wallets;
mod x402;
