//! One metered call or charge as the usage listings show it.

use aibank_core::clock::rfc3339;
use aibank_core::Usd;
use aibank_store::models::UsageEvent;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct UsageItem {
    pub id: String,
    pub created_at: String,
    pub provider: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: Usd,
    /// The part of the cost the balance could not cover, left owed.
    pub owed_usd: Usd,
    pub request_id: Option<String>,
    pub description: Option<String>,
    /// The price table the call was billed at.
    pub price_version: Option<String>,
    /// The provider's deployment that served the call.
    pub deployment: Option<String>,
}

impl From<UsageEvent> for UsageItem {
    fn from(u: UsageEvent) -> Self {
        UsageItem {
            id: u.id,
            created_at: rfc3339(u.created_at),
            provider: u.provider,
            model: u.model,
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cost_usd: Usd::from_micros(u.cost_micros),
            owed_usd: Usd::from_micros(u.owed_micros),
            request_id: u.request_id,
            description: u.description,
            price_version: u.price_version,
            deployment: u.deployment,
        }
    }
}
