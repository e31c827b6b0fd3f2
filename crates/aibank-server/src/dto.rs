//! Response bodies. Field names follow the aibank API docs: `agentId`/`apiKey` in camelCase,
//! everything else snake_case; money as exact JSON numbers.

use aibank_auth::access::AllowList;
use aibank_core::clock::rfc3339;
use aibank_core::Usd;
use aibank_store::models::{
    Account, Agent, ApiKey, AuditEvent, MasterKey, UsageEvent, Wallet, KEY_STATUS_ACTIVE,
    KEY_STATUS_PAUSED, KEY_STATUS_REVOKED,
};
use serde::{Deserialize, Serialize};

use crate::service::CreatedAgent;

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

/// A wallet's public face: never a key.
#[derive(Debug, Serialize)]
pub struct WalletSummary {
    pub id: String,
    pub name: String,
    pub addresses: WalletAddresses,
}

#[derive(Debug, Serialize)]
pub struct WalletAddresses {
    pub ethereum: String,
    pub base: String,
    pub solana: String,
}

impl WalletSummary {
    pub fn of(w: &Wallet) -> Self {
        WalletSummary {
            id: w.id.clone(),
            name: w.name.clone(),
            addresses: WalletAddresses {
                ethereum: w.evm_address.clone(),
                base: w.evm_address.clone(),
                solana: w.solana_address.clone(),
            },
        }
    }
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
    /// The part of the cost the balance could not cover, left owed.
    pub owed_usd: Usd,
    pub request_id: Option<String>,
    pub description: Option<String>,
    /// The price table the call was billed at.
    pub price_version: Option<String>,
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
        }
    }
}

/// One API key as its owner (or the owner's platform) sees it: never the secret, only the
/// last 4 characters (of the secret, or of an RSA key's fingerprint).
// Independent flags, one per setting.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    /// `secret` (sent in `X-API-Key`) or `rsa` (signed requests).
    #[serde(rename = "type")]
    pub key_type: &'static str,
    /// `agent` (`ak_`) or `gateway` (`gw_`).
    pub kind: String,
    pub last4: String,
    /// `active`, `paused` (the platform paused the agent's keys) or `revoked`.
    pub status: &'static str,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
    #[serde(rename = "readOnly")]
    pub read_only: bool,
    #[serde(rename = "allowedIps")]
    pub allowed_ips: Vec<String>,
    #[serde(rename = "gatewayEnabled")]
    pub gateway_enabled: bool,
    #[serde(rename = "walletsEnabled")]
    pub wallets_enabled: bool,
    #[serde(rename = "tradingEnabled")]
    pub trading_enabled: bool,
    /// Whether this is the key that made the request (agent listings only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
}

impl KeyView {
    /// `agent_paused`: the agent's keys are paused; `caller`: the requesting key's id, when
    /// the listing is the agent's own.
    pub fn new(k: ApiKey, agent_paused: bool, caller: Option<&str>) -> Self {
        let status = if k.status != KEY_STATUS_ACTIVE {
            KEY_STATUS_REVOKED
        } else if agent_paused {
            KEY_STATUS_PAUSED
        } else {
            KEY_STATUS_ACTIVE
        };
        KeyView {
            current: caller.map(|c| c == k.id),
            key_type: if k.public_key_pem.is_some() {
                "rsa"
            } else {
                "secret"
            },
            allowed_ips: AllowList::from_stored(&k.allowed_ips).entries(),
            id: k.id,
            name: k.name,
            description: k.description,
            kind: k.kind,
            last4: k.last4,
            status,
            created_at: rfc3339(k.created_at),
            last_used_at: k.last_used_at.map(rfc3339),
            revoked_at: k.revoked_at.map(rfc3339),
            read_only: k.read_only,
            gateway_enabled: k.gateway_enabled,
            wallets_enabled: k.wallets_enabled,
            trading_enabled: k.trading_enabled,
            public_key: k.public_key_pem,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ActorView {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: Option<String>,
}

/// One audit log entry.
#[derive(Debug, Serialize)]
pub struct AuditView {
    pub id: String,
    pub action: String,
    pub actor: ActorView,
    #[serde(rename = "agentId")]
    pub agent_id: Option<String>,
    pub target_id: String,
    pub details: Option<serde_json::Value>,
    pub created_at: String,
}

impl From<AuditEvent> for AuditView {
    fn from(e: AuditEvent) -> Self {
        AuditView {
            id: e.id,
            action: e.action,
            actor: ActorView {
                kind: e.actor_type,
                id: e.actor_id,
            },
            agent_id: e.agent_id,
            target_id: e.target_id,
            details: e.details.and_then(|d| serde_json::from_str(&d).ok()),
            created_at: rfc3339(e.created_at),
        }
    }
}
