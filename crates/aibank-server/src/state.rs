//! What every handler may reach: the pool, the configuration, the clock and the shared
//! services, handed to actix as `web::Data<AppState>`.

use std::sync::Arc;

use actix_web::web;
use aibank_auth::AuthState;
use aibank_core::SharedClock;
use aibank_store::DbPool;
use serde_json::Value;

use crate::config::Config;

/// Everything a handler may need, shared as `web::Data<AppState>`.
pub struct AppState {
    pub pool: DbPool,
    pub config: Arc<Config>,
    pub clock: SharedClock,
    pub auth: web::Data<AuthState>,
    pub gateway: web::Data<aibank_gateway::Gateway>,
    pub wallets: Arc<aibank_wallet::Wallets>,
    /// The trading API's client of Hyperliquid's info API.
    pub hyperliquid: Arc<crate::hyperliquid::Hyperliquid>,
    /// The base of links handed out, without a trailing slash.
    pub public_url: String,
    pub openapi: Arc<Value>,
    pub metrics: Arc<crate::metrics::Metrics>,
}
