//! The metered gateway: forwards calls to upstream LLM providers, streams their answers
//! through as they arrive, and charges credits from the usage the upstream reports.

pub mod byok;
pub mod meter;
pub mod prices;
pub mod providers;
pub mod proxy;

pub use meter::Wire;
pub use prices::{Price, PriceTable, Tokens};
pub use providers::{CustomProvider, Provider, Registry};
pub use proxy::{Gateway, GatewaySettings};
