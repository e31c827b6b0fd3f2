//! The metered gateway: forwards calls to upstream LLM providers, streams their answers
//! through as they arrive, and charges credits from the usage the upstream reports; and
//! per-call priced HTTP providers (Bankr among them), charged a listed price per call.

pub mod anthropic;
pub mod bankr;
mod billing;
pub mod byok;
pub mod catalog;
pub mod deployments;
pub mod dialect;
pub mod gemini;
mod headers;
mod limits;
pub mod meter;
pub mod metrics;
pub mod openai;
mod path;
mod payment;
pub mod priced;
pub mod prices;
pub mod providers;
pub mod proxy;
pub mod public_net;
mod pump;
pub mod service_spec;

pub use deployments::{Deployment, DeploymentSpec};
pub use dialect::Dialect;
pub use prices::{parse_overrides, Price, PriceBook, PriceOverrides, PriceTable, Tokens};
pub use providers::{CustomProvider, Provider, Registry};
pub use proxy::{Gateway, GatewaySettings};
