//! The store's integration tests, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod checkpoint;
mod keys;
mod schema;
mod upgrade;
mod writes;
