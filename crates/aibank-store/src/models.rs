//! Rows as stored. API DTOs live with their handlers and are built from these.

use diesel::prelude::*;

use crate::schema::{
    accounts, agent_claims, agents, api_keys, audit_events, dashboard_sessions, holds,
    idempotency_keys, journal_entries, master_keys, platforms, service_subscriptions, services,
    trading_queries, usage_events, wallet_allowlist, wallet_transfers, wallets,
    x402_authorizations, x402_payments,
};

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = platforms)]
pub struct Platform {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    /// Fleet-wide daily spending limit; `None`: no limit.
    pub daily_limit_micros: Option<i64>,
}

/// A platform's master key. `secret_hash` is an argon2id PHC string; `Debug` never shows it.
#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = master_keys)]
pub struct MasterKey {
    pub id: String,
    pub platform_id: String,
    pub name: String,
    pub owner_email: Option<String>,
    pub secret_hash: String,
    pub last4: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("platform_id", &self.platform_id)
            .field("name", &self.name)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

// One column per flag, as stored.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = agents)]
pub struct Agent {
    pub id: String,
    pub platform_id: Option<String>,
    pub kind: String,
    pub name: String,
    pub email: Option<String>,
    pub active: bool,
    pub per_tx_limit_micros: i64,
    pub daily_limit_micros: i64,
    pub weekly_limit_micros: i64,
    pub monthly_limit_micros: i64,
    pub created_at: i64,
    pub updated_at: i64,
    /// The platform's restrictions, binding every key of the agent.
    pub read_only: bool,
    pub allowed_ips: String,
    pub gateway_enabled: bool,
    pub wallets_enabled: bool,
    pub trading_enabled: bool,
    pub keys_paused_at: Option<i64>,
    pub daily_message_limit: Option<i64>,
    /// The platform's call limits, binding each key: model-name patterns (a JSON array;
    /// `None`: any model), requests and tokens per minute per key.
    pub allowed_models: Option<String>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
}

impl Agent {
    /// A new agent's row with default settings and no spending allowed until limits are set.
    pub fn new(
        id: String,
        platform_id: Option<String>,
        kind: &str,
        name: String,
        email: Option<String>,
        now: i64,
    ) -> Agent {
        Agent {
            id,
            platform_id,
            kind: kind.to_owned(),
            name,
            email,
            active: true,
            per_tx_limit_micros: 0,
            daily_limit_micros: 0,
            weekly_limit_micros: 0,
            monthly_limit_micros: 0,
            created_at: now,
            updated_at: now,
            read_only: false,
            allowed_ips: String::new(),
            gateway_enabled: true,
            wallets_enabled: true,
            trading_enabled: true,
            keys_paused_at: None,
            daily_message_limit: None,
            allowed_models: None,
            rpm_limit: None,
            tpm_limit: None,
        }
    }
}

/// Changes to an agent; `None` leaves a column alone.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = agents)]
pub struct AgentChanges {
    pub name: Option<String>,
    pub active: Option<bool>,
    pub per_tx_limit_micros: Option<i64>,
    pub daily_limit_micros: Option<i64>,
    pub weekly_limit_micros: Option<i64>,
    pub monthly_limit_micros: Option<i64>,
    pub updated_at: Option<i64>,
    pub read_only: Option<bool>,
    pub allowed_ips: Option<String>,
    pub gateway_enabled: Option<bool>,
    pub wallets_enabled: Option<bool>,
    pub trading_enabled: Option<bool>,
    /// `Some(None)` clears the column (back to the server default).
    pub daily_message_limit: Option<Option<i64>>,
    pub allowed_models: Option<Option<String>>,
    pub rpm_limit: Option<Option<i64>>,
    pub tpm_limit: Option<Option<i64>>,
}

pub const AGENT_KIND_AGENT: &str = "agent";
pub const AGENT_KIND_GATEWAY: &str = "gateway";
pub const KEY_STATUS_ACTIVE: &str = "active";
pub const KEY_STATUS_REVOKED: &str = "revoked";
/// Not stored: how a key of a paused agent is reported.
pub const KEY_STATUS_PAUSED: &str = "paused";

// One column per flag, as stored.
#[allow(clippy::struct_excessive_bools)]
#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    pub id: String,
    pub agent_id: String,
    pub kind: String,
    pub secret_hash: String,
    pub last4: String,
    pub status: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub read_only: bool,
    pub allowed_ips: String,
    pub gateway_enabled: bool,
    pub wallets_enabled: bool,
    pub trading_enabled: bool,
    /// Set for RSA-signed keys, which have no secret.
    pub public_key_pem: Option<String>,
    /// The owner's call limits on this key, within the agent's.
    pub allowed_models: Option<String>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
}

impl ApiKey {
    /// A new active key's row with default settings.
    pub fn new(
        id: String,
        agent_id: String,
        kind: &str,
        secret_hash: String,
        last4: String,
        now: i64,
    ) -> ApiKey {
        ApiKey {
            id,
            agent_id,
            kind: kind.to_owned(),
            secret_hash,
            last4,
            status: KEY_STATUS_ACTIVE.to_owned(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
            name: None,
            description: None,
            read_only: false,
            allowed_ips: String::new(),
            gateway_enabled: true,
            wallets_enabled: true,
            trading_enabled: true,
            public_key_pem: None,
            allowed_models: None,
            rpm_limit: None,
            tpm_limit: None,
        }
    }
}

/// Changes to a key's own settings; `None` leaves a column alone.
#[derive(Debug, Clone, Default, AsChangeset)]
#[diesel(table_name = api_keys)]
pub struct ApiKeyChanges {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub read_only: Option<bool>,
    pub allowed_ips: Option<String>,
    pub gateway_enabled: Option<bool>,
    pub wallets_enabled: Option<bool>,
    pub trading_enabled: Option<bool>,
    /// `Some(None)` clears the column (no limit of the key's own).
    pub allowed_models: Option<Option<String>>,
    pub rpm_limit: Option<Option<i64>>,
    pub tpm_limit: Option<Option<i64>>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("agent_id", &self.agent_id)
            .field("kind", &self.kind)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = accounts)]
pub struct Account {
    pub id: String,
    pub balance_micros: i64,
    pub total_spent_micros: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub held_micros: i64,
    /// Served usage neither a hold nor the balance covered; while not zero the balance is
    /// zero and every spend is refused.
    pub owed_micros: i64,
}

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = journal_entries)]
pub struct JournalEntry {
    pub id: i64,
    pub account_id: String,
    pub delta_micros: i64,
    pub balance_after_micros: i64,
    pub kind: String,
    pub reference: Option<String>,
    pub created_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = usage_events)]
pub struct UsageEvent {
    pub id: String,
    pub agent_id: String,
    pub api_key_id: Option<String>,
    pub provider: String,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cost_micros: i64,
    pub request_id: Option<String>,
    pub created_at: i64,
    pub description: Option<String>,
    /// The part of `cost_micros` the balance could not cover, left owed.
    pub owed_micros: i64,
    /// The price table the call was billed at.
    pub price_version: Option<String>,
    /// The provider's deployment that served the call.
    pub deployment: Option<String>,
}

/// The status of a wallet transfer that moved nothing (it counts against no limit and
/// holds no nonce).
pub const TRANSFER_FAILED: &str = "failed";
/// The status of a wallet transfer mined and successful.
pub const TRANSFER_CONFIRMED: &str = "confirmed";

pub const HOLD_OPEN: &str = "open";
pub const HOLD_CAPTURED: &str = "captured";
pub const HOLD_RELEASED: &str = "released";
pub const HOLD_EXPIRED: &str = "expired";
/// [`HOLD_OPEN`] as the condition of the open holds' indexes, in the words of the migration
/// that made them (`2026-12-07-000002_open_holds_index`): a query uses those indexes only
/// when its text implies this, so it is written out, not bound.
pub const OPEN_HOLDS: &str = "status = 'open'";

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = holds)]
pub struct Hold {
    pub id: String,
    pub account_id: String,
    pub amount_micros: i64,
    pub captured_micros: Option<i64>,
    pub status: String,
    pub reference: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub settled_at: Option<i64>,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = audit_events)]
pub struct AuditEvent {
    pub id: String,
    pub platform_id: Option<String>,
    pub agent_id: Option<String>,
    /// `master_key`, `api_key`, `public` (unauthenticated sign-up) or `operator` (CLI).
    pub actor_type: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_id: String,
    /// A JSON object; never holds a secret.
    pub details: Option<String>,
    pub created_at: i64,
}

/// An accepted x402 payment; its key (chain, tx_hash) is never accepted again.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = x402_payments)]
pub struct Payment {
    pub chain: String,
    pub tx_hash: String,
    pub payer: String,
    pub account_id: String,
    pub amount_micros: i64,
    pub cost_micros: i64,
    pub block_number: i64,
    pub resource: String,
    pub request_id: Option<String>,
    pub created_at: i64,
}

/// An EIP-3009 authorization taken for settlement; its key (chain, payer, nonce) is taken
/// once.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, Insertable)]
#[diesel(table_name = x402_authorizations)]
pub struct Authorization {
    pub chain: String,
    pub payer: String,
    pub nonce: String,
    pub value_micros: i64,
    pub valid_before: i64,
    pub status: String,
    pub settle_nonce: Option<i64>,
    pub tx_hash: Option<String>,
    pub raw_tx: Option<String>,
    pub resource: String,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = idempotency_keys)]
pub struct IdempotencyRecord {
    pub scope: String,
    pub key: String,
    pub request_hash: String,
    pub status_code: i32,
    pub response_body: String,
    pub created_at: i64,
}

/// An agent's wallet. The sealed keys are ciphertext; `Debug` leaves them out anyway.
#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = wallets)]
pub struct Wallet {
    pub id: String,
    pub agent_id: String,
    pub name: String,
    pub evm_address: String,
    pub solana_address: String,
    pub evm_key_sealed: String,
    pub solana_key_sealed: String,
    pub created_at: i64,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("id", &self.id)
            .field("agent_id", &self.agent_id)
            .field("evm_address", &self.evm_address)
            .field("solana_address", &self.solana_address)
            .finish_non_exhaustive()
    }
}

/// A recipient a wallet may send to.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = wallet_allowlist)]
pub struct AllowedRecipient {
    pub wallet_id: String,
    pub address: String,
    pub label: Option<String>,
    pub created_at: i64,
}

/// An outgoing on-chain transfer.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = wallet_transfers)]
pub struct WalletTransfer {
    pub id: String,
    pub wallet_id: String,
    pub agent_id: String,
    pub chain: String,
    pub from_address: String,
    pub to_address: String,
    pub currency: String,
    pub amount: String,
    pub amount_base: String,
    pub usd_micros: i64,
    pub nonce: Option<i64>,
    pub tx_hash: Option<String>,
    pub status: String,
    pub error: Option<String>,
    pub block_number: Option<i64>,
    pub idempotency_key: Option<String>,
    pub request_hash: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A read an agent made of a trading venue for one of its wallets.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = trading_queries)]
pub struct TradingQuery {
    pub id: String,
    pub wallet_id: String,
    pub agent_id: String,
    pub venue: String,
    pub action: String,
    pub symbol: Option<String>,
    pub request_id: Option<String>,
    pub created_at: i64,
}

/// An agent's claim code and who claimed it.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = agent_claims)]
pub struct AgentClaim {
    pub agent_id: String,
    pub code: String,
    pub expires_at: i64,
    pub claimed_at: Option<i64>,
    pub claimed_email: Option<String>,
    pub claimed_platform_id: Option<String>,
}

pub const SERVICE_ACTIVE: &str = "active";
pub const SERVICE_PAUSED: &str = "paused";
pub const SERVICE_DELETED: &str = "deleted";
pub const OWNER_AGENT: &str = "agent";
pub const OWNER_PLATFORM: &str = "platform";

/// A catalog service: an API its owner sells per call through the proxy.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = services)]
pub struct Service {
    pub id: String,
    /// [`OWNER_AGENT`] or [`OWNER_PLATFORM`].
    pub owner_kind: String,
    pub owner_id: String,
    pub name: String,
    pub description: String,
    pub base_url: String,
    /// The OpenAPI document as JSON text.
    pub openapi_spec: String,
    pub price_micros: i64,
    pub category: String,
    pub provider_key_header: Option<String>,
    /// Ciphertext only; sealing is the gateway's job.
    pub provider_key_sealed: Option<String>,
    pub status: String,
    pub total_calls: i64,
    pub total_revenue_micros: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A wallet's subscription to a service.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = service_subscriptions)]
pub struct ServiceSubscription {
    pub service_id: String,
    pub wallet_id: String,
    pub agent_id: String,
    pub active: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A signed-in dashboard session, found by the SHA-256 of the token its cookie holds.
/// `Debug` shows neither the hash nor the CSRF token.
#[derive(Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = dashboard_sessions)]
pub struct DashboardSession {
    pub token_hash: String,
    pub platform_id: String,
    /// The master key that signed in: the session acts as it, and ends with it.
    pub master_key_id: String,
    pub csrf_token: String,
    pub created_at: i64,
    pub expires_at: i64,
}

impl std::fmt::Debug for DashboardSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DashboardSession")
            .field("platform_id", &self.platform_id)
            .field("master_key_id", &self.master_key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}
