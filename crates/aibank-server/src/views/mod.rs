//! Response bodies, one module per resource. Field names follow the aibank API docs:
//! `agentId`/`apiKey` in camelCase, everything else snake_case; money as exact JSON numbers.

pub mod agents;
pub mod audit;
pub mod keys;
pub mod usage;
pub mod wallets;
