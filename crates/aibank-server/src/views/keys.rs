//! Keys as the API shows them: master keys and agent keys, never the secret, only the last
//! four characters.

use aibank_auth::access::AllowList;
use aibank_auth::KeyLimits;
use aibank_core::clock::rfc3339;
use aibank_store::models::{
    ApiKey, MasterKey, KEY_STATUS_ACTIVE, KEY_STATUS_PAUSED, KEY_STATUS_REVOKED,
};
use serde::Serialize;

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
    /// The key's own call limits (its agent's bind it as well): model-name patterns,
    /// requests and tokens per minute; `None`: none of its own.
    #[serde(rename = "allowedModels")]
    pub allowed_models: Option<Vec<String>>,
    #[serde(rename = "rpmLimit")]
    pub rpm_limit: Option<i64>,
    #[serde(rename = "tpmLimit")]
    pub tpm_limit: Option<i64>,
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
            allowed_models: KeyLimits {
                allowed_models: k.allowed_models.clone(),
                ..KeyLimits::default()
            }
            .models(),
            rpm_limit: k.rpm_limit,
            tpm_limit: k.tpm_limit,
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
