//! The `aibank` server: configuration, start-up, route wiring and HTTP handlers.

pub mod audit;
pub mod bootstrap;
pub mod config;
pub mod handlers;
pub mod hyperliquid;
pub mod idempotency;
pub mod identities;
pub mod metrics;
pub mod routes;
pub mod startup;
pub mod state;
pub mod telemetry;
pub mod validate;
pub mod views;

pub use config::Config;
pub use startup::{Application, StartupError};
