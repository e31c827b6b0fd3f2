//! Agents' wallets: keys generated and sealed on the server, balances read over each
//! chain's JSON-RPC endpoint, and USDC / ETH transfers signed here and sent through it.
//!
//! A transfer is checked before anything is signed (input, the wallet's recipient
//! allowlist, the agent's spending limits on its USD value), recorded, given a nonce from
//! the database (so concurrent transfers on any instance never share one), signed,
//! broadcast and awaited for a while. Failed transfers do not count against the limits.

mod keys;
mod transfer;

use std::sync::Arc;
use std::time::Duration;

use aibank_core::ids::new_id;
use aibank_core::{ApiError, ErrorCode, SecretBox, SharedClock, Usd};
use aibank_ledger::LedgerError;
use aibank_store::models::Wallet;
use aibank_store::{is_unique_violation, repo, DbPool, StoreError};
use rust_decimal::Decimal;

pub use aibank_chain::{Address, Chain, ChainConfig, ChainRpc, Mined, RpcError, U256};
pub use transfer::{Idempotency, TransferSpec};

/// What a wallet can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Currency {
    Usdc,
    Eth,
}

impl Currency {
    pub fn as_str(self) -> &'static str {
        match self {
            Currency::Usdc => "USDC",
            Currency::Eth => "ETH",
        }
    }

    pub fn decimals(self) -> u32 {
        match self {
            Currency::Usdc => 6,
            Currency::Eth => 18,
        }
    }

    /// The most whole-token digits an amount may have: a USDC amount's micro-USD must fit
    /// the ledger's integers, and a million ETH is beyond any transfer's limits.
    pub fn max_whole_digits(self) -> usize {
        match self {
            Currency::Usdc => 12,
            Currency::Eth => 6,
        }
    }

    pub fn parse(s: &str) -> Option<Currency> {
        match s.trim().to_ascii_uppercase().as_str() {
            "USDC" => Some(Currency::Usdc),
            "ETH" => Some(Currency::Eth),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct WalletSettings {
    /// Chains with an RPC endpoint; the others are reported as unavailable.
    pub chains: Vec<ChainConfig>,
    /// USD per ETH for spending limits; without it ETH transfers are refused.
    pub eth_usd_price: Option<Decimal>,
    pub rpc_timeout: Duration,
    /// How long a transfer waits to be mined before it is answered as `pending`.
    pub confirm_timeout: Duration,
}

impl Default for WalletSettings {
    fn default() -> Self {
        WalletSettings {
            chains: Vec::new(),
            eth_usd_price: None,
            rpc_timeout: Duration::from_secs(10),
            confirm_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalletError {
    #[error("wallet not found")]
    NotFound,
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("{to} is not on this wallet's recipient allowlist")]
    AddressNotAllowed { to: String },
    #[error("no RPC endpoint is configured for {0}")]
    NoRpc(&'static str),
    /// Nothing was sent, or whether it was is unknown (see `transfer`).
    #[error("{0}")]
    Unavailable(RpcError, Option<Box<aibank_store::models::WalletTransfer>>),
    /// The chain refused or reverted the transfer; the record says which.
    #[error("transfer failed: {reason}")]
    Failed {
        reason: String,
        transfer: Box<aibank_store::models::WalletTransfer>,
    },
    #[error("Idempotency-Key was already used with a different transfer")]
    IdempotencyMismatch,
    #[error("the wallet key cannot be opened with the configured AIBANK_SECRET_KEY")]
    KeyUnavailable,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<StoreError> for WalletError {
    fn from(e: StoreError) -> Self {
        WalletError::Ledger(LedgerError::Store(e))
    }
}

impl From<diesel::result::Error> for WalletError {
    fn from(e: diesel::result::Error) -> Self {
        WalletError::Ledger(e.into())
    }
}

/// A transfer as the API shows it.
pub fn transfer_json(t: &aibank_store::models::WalletTransfer) -> serde_json::Value {
    serde_json::json!({
        "transaction_id": t.id,
        "wallet_id": t.wallet_id,
        "tx_hash": t.tx_hash,
        "from": t.from_address,
        "to": t.to_address,
        "amount": t.amount,
        "currency": t.currency,
        "chain": t.chain,
        "status": transfer::public_status(&t.status),
        "nonce": t.nonce,
        "block_number": t.block_number,
        "error": t.error,
        "usd_value": Usd::from_micros(t.usd_micros),
        "created_at": aibank_core::clock::rfc3339(t.created_at),
    })
}

impl From<WalletError> for ApiError {
    fn from(e: WalletError) -> Self {
        match e {
            WalletError::NotFound => ApiError::not_found("Wallet not found"),
            WalletError::Invalid { field, message } => ApiError::invalid_field(field, message),
            WalletError::AddressNotAllowed { to } => ApiError::new(
                ErrorCode::AddressNotAllowed,
                format!("{to} is not on this wallet's recipient allowlist"),
            )
            .with("to", to),
            WalletError::NoRpc(chain) => ApiError::new(
                ErrorCode::Unavailable,
                format!("Transfers on {chain} are unavailable: no RPC endpoint is configured"),
            )
            .with("chain", chain),
            WalletError::Unavailable(rpc, transfer) => {
                let mut e = ApiError::new(ErrorCode::Unavailable, rpc.to_string());
                if let Some(t) = transfer {
                    e = e.with("transaction", transfer_json(&t));
                }
                e
            }
            WalletError::Failed { reason, transfer } => ApiError::new(
                ErrorCode::TransferFailed,
                format!("Transfer failed: {reason}"),
            )
            .with("reason", reason)
            .with("transaction", transfer_json(&transfer)),
            WalletError::IdempotencyMismatch => {
                ApiError::conflict("Idempotency-Key was already used for a different request")
            }
            WalletError::KeyUnavailable => {
                ApiError::internal("The wallet key cannot be opened with the configured secret key")
            }
            WalletError::Ledger(l) => l.into(),
        }
    }
}

/// The wallets service: sealing keys, chain endpoints and the transfer flow.
pub struct Wallets {
    pool: DbPool,
    secret_box: Arc<SecretBox>,
    clock: SharedClock,
    rpcs: Vec<ChainRpc>,
    eth_usd_price: Option<Decimal>,
    confirm_timeout: Duration,
}

impl std::fmt::Debug for Wallets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallets")
            .field("rpcs", &self.rpcs)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_WALLET_NAME: &str = "main";

impl Wallets {
    pub fn new(
        pool: DbPool,
        secret_box: Arc<SecretBox>,
        clock: SharedClock,
        settings: &WalletSettings,
    ) -> Result<Self, String> {
        let rpcs = settings
            .chains
            .iter()
            .map(|c| ChainRpc::new(c.chain, c.rpc_url.expose(), c.usdc, settings.rpc_timeout))
            .collect::<Result<_, _>>()?;
        Ok(Wallets {
            pool,
            secret_box,
            clock,
            rpcs,
            eth_usd_price: settings.eth_usd_price,
            confirm_timeout: settings.confirm_timeout,
        })
    }

    pub fn rpc(&self, chain: Chain) -> Option<&ChainRpc> {
        self.rpcs.iter().find(|r| r.chain == chain)
    }

    /// A new wallet row for `agent_id` with fresh sealed keys; insert it in the
    /// transaction that creates the agent. Key generation is CPU work: call it off the
    /// HTTP workers (inside `DbPool::run`).
    pub fn new_wallet(&self, agent_id: &str, now: i64) -> Wallet {
        new_wallet_row(&self.secret_box, agent_id, now)
    }

    /// The agent's wallet, created now if the agent predates wallets.
    pub async fn ensure_wallet(&self, agent_id: &str) -> Result<Wallet, WalletError> {
        let (agent_id, now, sb) = (
            agent_id.to_owned(),
            self.clock.now_ms(),
            self.secret_box.clone(),
        );
        self.pool
            .run(move |c| {
                if let Some(w) = repo::wallets::find_for_agent(c, &agent_id)? {
                    return Ok(w);
                }
                let row = new_wallet_row(&sb, &agent_id, now);
                match repo::wallets::insert(c, &row) {
                    Ok(()) => Ok(row),
                    // Another request created it first.
                    Err(e) if is_unique_violation(&e) => {
                        repo::wallets::find_for_agent(c, &agent_id)?.ok_or(WalletError::NotFound)
                    }
                    Err(e) => Err(e.into()),
                }
            })
            .await
    }
}

fn new_wallet_row(secret_box: &SecretBox, agent_id: &str, now: i64) -> Wallet {
    let id = new_id("wal");
    let k = keys::generate(secret_box, &id);
    Wallet {
        id,
        agent_id: agent_id.to_owned(),
        name: DEFAULT_WALLET_NAME.to_owned(),
        evm_address: k.evm_address,
        solana_address: k.solana_address,
        evm_key_sealed: k.evm_key_sealed,
        solana_key_sealed: k.solana_key_sealed,
        created_at: now,
    }
}
