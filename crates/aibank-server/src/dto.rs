//! Response bodies. Field names follow the aibank API docs: `agentId`/`apiKey` in camelCase,
//! everything else snake_case; money as exact JSON numbers.

use aibank_core::clock::rfc3339;
use aibank_core::Usd;
use aibank_store::models::{Account, Agent, MasterKey, UsageEvent};
use serde::{Deserialize, Serialize};

/// Default spending controls of a new agent.
pub const DEFAULT_DAILY_LIMIT: Usd = Usd::from_micros(100_000_000);
pub const DEFAULT_WEEKLY_LIMIT: Usd = Usd::from_micros(500_000_000);
pub const DEFAULT_MONTHLY_LIMIT: Usd = Usd::from_micros(1_000_000_000);
pub const DEFAULT_PER_TX_LIMIT: Usd = Usd::from_micros(50_000_000);

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpendingControls {
    pub daily_limit_usd: Usd,
    pub weekly_limit_usd: Usd,
    pub monthly_limit_usd: Usd,
    pub per_tx_limit_usd: Usd,
}

impl Default for SpendingControls {
    fn default() -> Self {
        SpendingControls {
            daily_limit_usd: DEFAULT_DAILY_LIMIT,
            weekly_limit_usd: DEFAULT_WEEKLY_LIMIT,
            monthly_limit_usd: DEFAULT_MONTHLY_LIMIT,
            per_tx_limit_usd: DEFAULT_PER_TX_LIMIT,
        }
    }
}

impl SpendingControls {
    pub fn of(agent: &Agent) -> Self {
        SpendingControls {
            daily_limit_usd: Usd::from_micros(agent.daily_limit_micros),
            weekly_limit_usd: Usd::from_micros(agent.weekly_limit_micros),
            monthly_limit_usd: Usd::from_micros(agent.monthly_limit_micros),
            per_tx_limit_usd: Usd::from_micros(agent.per_tx_limit_micros),
        }
    }
}

/// The response that creates an agent: the only one that ever shows its key.
#[derive(Debug, Serialize)]
pub struct AgentCreated {
    #[serde(rename = "agentId")]
    pub agent_id: String,
    #[serde(rename = "apiKey")]
    pub api_key: String,
    pub name: String,
    pub email: Option<String>,
    pub credits_usd: Usd,
    pub spending_controls: SpendingControls,
}

impl AgentCreated {
    /// `credits` is the opening balance (the account was just created with it).
    pub fn new(agent: Agent, key: &aibank_auth::GeneratedKey, credits: Usd) -> Self {
        AgentCreated {
            spending_controls: SpendingControls::of(&agent),
            agent_id: agent.id,
            api_key: key.full.expose().to_owned(),
            name: agent.name,
            email: agent.email,
            credits_usd: credits,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AgentView {
    #[serde(rename = "agentId")]
    pub agent_id: String,
    pub name: String,
    pub email: Option<String>,
    pub kind: String,
    pub active: bool,
    pub credits_usd: Usd,
    pub total_spent: Usd,
    pub spending_controls: SpendingControls,
    pub created_at: String,
    pub updated_at: String,
}

impl AgentView {
    pub fn new(agent: Agent, account: &Account) -> Self {
        AgentView {
            spending_controls: SpendingControls::of(&agent),
            agent_id: agent.id,
            name: agent.name,
            email: agent.email,
            kind: agent.kind,
            active: agent.active,
            credits_usd: Usd::from_micros(account.balance_micros),
            total_spent: Usd::from_micros(account.total_spent_micros),
            created_at: rfc3339(agent.created_at),
            updated_at: rfc3339(agent.updated_at),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct MasterKeyView {
    pub id: String,
    pub name: String,
    pub owner_email: Option<String>,
    pub last4: String,
    pub status: &'static str,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

impl From<MasterKey> for MasterKeyView {
    fn from(k: MasterKey) -> Self {
        MasterKeyView {
            status: if k.revoked_at.is_some() {
                "revoked"
            } else {
                "active"
            },
            id: k.id,
            name: k.name,
            owner_email: k.owner_email,
            last4: k.last4,
            created_at: rfc3339(k.created_at),
            last_used_at: k.last_used_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UsageItem {
    pub id: String,
    pub created_at: String,
    pub provider: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_usd: Usd,
    pub request_id: Option<String>,
    pub description: Option<String>,
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
            request_id: u.request_id,
            description: u.description,
        }
    }
}
