//! The chain crate's integration tests on a real anvil node, one module per area.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod send;
