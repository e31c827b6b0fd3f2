//! HTTP handlers, one module per resource.

pub mod account;
pub mod agents;
pub mod audit;
pub mod catalog;
pub mod dashboard;
pub mod device;
pub mod keys;
pub mod master_keys;
pub mod meta;
pub mod payments;
pub mod platform;
pub mod platform_agents;
pub mod services;
pub mod trading;
pub mod usage;
pub mod wallets;

use actix_web::http::StatusCode;
use actix_web::{web, CustomizeResponder, Responder};

/// A `201 Created` JSON response.
pub type Created<T> = CustomizeResponder<web::Json<T>>;

pub fn created<T: serde::Serialize>(body: T) -> Created<T> {
    web::Json(body).customize().with_status(StatusCode::CREATED)
}
