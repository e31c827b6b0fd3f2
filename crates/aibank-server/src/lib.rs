//! The `aibank` server: configuration, start-up, route wiring and HTTP handlers.

pub mod bootstrap;
pub mod config;
pub mod dto;
pub mod handlers;
pub mod hyperliquid;
pub mod idempotency;
pub mod routes;
pub mod service;
pub mod startup;
pub mod telemetry;
pub mod validate;

pub use config::Config;
pub use startup::{Application, StartupError};
