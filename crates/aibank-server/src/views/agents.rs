//! Agents as the API shows them: the answer that creates one (the only one that ever
//! shows its key), its profile with limits and security, and the default spending controls.

use super::wallets::WalletSummary;
use crate::identities::CreatedAgent;
use aibank_auth::access::AllowList;
use aibank_auth::KeyLimits;
use aibank_core::clock::rfc3339;
use aibank_core::Usd;
use aibank_store::models::{Account, Agent};
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
    pub wallet: Option<WalletSummary>,
    /// What a human enters (or follows as `verificationUri`) to claim the agent.
    #[serde(rename = "claimCode")]
    pub claim_code: Option<String>,
    #[serde(rename = "verificationUri")]
    pub verification_uri: Option<String>,
    /// Seconds the claim code stays valid.
    #[serde(rename = "expiresIn")]
    pub expires_in: Option<i64>,
}

impl AgentCreated {
    /// `credits` is the opening balance (the account was just created with it);
    /// `public_url` is the base of `verificationUri`.
    pub fn new(created: CreatedAgent, credits: Usd, public_url: &str) -> Self {
        let CreatedAgent {
            agent,
            key,
            wallet,
            claim,
        } = created;
        AgentCreated {
            spending_controls: SpendingControls::of(&agent),
            agent_id: agent.id,
            api_key: key.full.expose().to_owned(),
            name: agent.name,
            email: agent.email,
            credits_usd: credits,
            wallet: wallet.as_ref().map(WalletSummary::of),
            verification_uri: claim
                .as_ref()
                .map(|c| verification_uri(public_url, &c.code)),
            expires_in: claim
                .as_ref()
                .map(|c| (c.expires_at - agent.created_at).max(0) / 1000),
            claim_code: claim.map(|c| c.code),
        }
    }
}

/// The page a human opens to claim an agent.
pub fn verification_uri(public_url: &str, code: &str) -> String {
    format!("{public_url}/device?code={code}")
}

/// The restrictions a platform puts on one of its agents (binding all its keys).
// Independent flags, one per setting.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentSecurity {
    pub read_only: bool,
    pub allowed_ips: Vec<String>,
    pub gateway_enabled: bool,
    pub wallets_enabled: bool,
    pub trading_enabled: bool,
    pub keys_paused: bool,
    /// Gateway calls per key per rolling day set for this agent; `None`: the server default.
    pub daily_message_limit: Option<i64>,
    /// Model-name patterns each key may call; `None`: any model.
    pub allowed_models: Option<Vec<String>>,
    /// Requests per minute per key; `None`: no limit.
    pub rpm_limit: Option<i64>,
    /// Tokens per minute per key; `None`: no limit.
    pub tpm_limit: Option<i64>,
}

impl AgentSecurity {
    pub fn of(agent: &Agent) -> Self {
        AgentSecurity {
            read_only: agent.read_only,
            allowed_ips: AllowList::from_stored(&agent.allowed_ips).entries(),
            gateway_enabled: agent.gateway_enabled,
            wallets_enabled: agent.wallets_enabled,
            trading_enabled: agent.trading_enabled,
            keys_paused: agent.keys_paused_at.is_some(),
            daily_message_limit: agent.daily_message_limit,
            allowed_models: KeyLimits::of_agent(agent).models(),
            rpm_limit: agent.rpm_limit,
            tpm_limit: agent.tpm_limit,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AgentView {
    #[serde(rename = "agentId")]
    pub agent_id: String,
    /// The platform that manages the agent: its creator, or whoever claimed it; `None`
    /// for a self-registered agent nobody has claimed yet.
    #[serde(rename = "platformId")]
    pub platform_id: Option<String>,
    pub name: String,
    pub email: Option<String>,
    pub kind: String,
    pub active: bool,
    pub credits_usd: Usd,
    pub total_spent: Usd,
    pub owed_usd: Usd,
    pub spending_controls: SpendingControls,
    pub security: AgentSecurity,
    pub created_at: String,
    pub updated_at: String,
}

impl AgentView {
    pub fn new(agent: Agent, account: &Account) -> Self {
        AgentView {
            security: AgentSecurity::of(&agent),
            spending_controls: SpendingControls::of(&agent),
            agent_id: agent.id,
            platform_id: agent.platform_id,
            name: agent.name,
            email: agent.email,
            kind: agent.kind,
            active: agent.active,
            credits_usd: Usd::from_micros(account.balance_micros),
            total_spent: Usd::from_micros(account.total_spent_micros),
            owed_usd: Usd::from_micros(account.owed_micros),
            created_at: rfc3339(agent.created_at),
            updated_at: rfc3339(agent.updated_at),
        }
    }
}
