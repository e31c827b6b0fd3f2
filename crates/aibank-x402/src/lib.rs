//! x402: pay for one gateway call with a USDC transfer on Base.
//!
//! A request without credentials gets `402 PAYMENT_REQUIRED` with what to pay, to whom and
//! where (in aibank's shape and x402's `accepts`). The client transfers USDC and repeats the
//! request with `X-Payment: <tx hash>` (and `X-Payment-Chain`). The server reads the receipt
//! over the chain's RPC, checks the USDC `Transfer` to it, and records the hash as used in
//! the same transaction that credits the payment and reserves the call's cost. Whatever the
//! call does not cost stays as credit in the payer's account.

pub mod verify;

use std::time::Duration;

use actix_web::http::header::HeaderMap;
use actix_web::http::header::{HeaderName, HeaderValue};
use aibank_core::{ApiError, ErrorCode, Usd};
use aibank_ledger::{EntryKind, LedgerError};
use aibank_store::models::{Agent, Payment};
use aibank_store::repo;
use aibank_store::{is_unique_violation, AnyConnection, StoreError};
use alloy::primitives::U256;
use serde_json::{json, Value};

pub use aibank_chain::{redact_urls, CallError, Chain, ChainConfig, Endpoint};
pub use alloy::primitives::{Address, B256};
pub use verify::{
    signed_by, ChainClient, Refused, Requirement, Transfer, Unavailable, VerifyError,
};

pub const PAYMENT_HEADER: &str = "x-payment";
pub const PAYMENT_CHAIN_HEADER: &str = "x-payment-chain";
pub const PAYMENT_SIGNATURE_HEADER: &str = "x-payment-signature";

/// How long a client has to pay once it got the 402 (x402's `maxTimeoutSeconds`).
pub const MAX_TIMEOUT_SECONDS: u64 = 600;

#[derive(Debug, Clone)]
pub struct X402Settings {
    pub pay_to: Address,
    pub chains: Vec<ChainConfig>,
    /// The chain assumed when a payment names none.
    pub default_chain: Chain,
    /// Blocks including the payment's (1: mined).
    pub confirmations: u64,
    pub max_age: Option<Duration>,
    /// Refuse payments without an EIP-191 signature of the hash by the payer.
    pub require_signature: bool,
    /// The least a call costs; a call's price is its maximum cost, at least this.
    pub min_price: Usd,
    pub rpc_timeout: Duration,
}

/// The payment a request carries.
#[derive(Debug, Clone)]
pub struct PaymentHeader {
    pub chain: Chain,
    pub hash: B256,
    pub signature: Option<String>,
}

/// Payments: requirements, verification and the used-hash registry.
pub struct X402 {
    pub settings: X402Settings,
    clients: Vec<ChainClient>,
}

impl std::fmt::Debug for X402 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X402")
            .field("pay_to", &self.settings.pay_to)
            .field("chains", &self.clients)
            .finish_non_exhaustive()
    }
}

/// A USDC amount as a decimal string ("0.01").
fn usdc_text(amount: Usd) -> String {
    amount.to_decimal().normalize().to_string()
}

fn invalid(message: impl Into<String>, reason: &str) -> ApiError {
    ApiError::new(ErrorCode::PaymentInvalid, message).with("reason", reason)
}

impl X402 {
    pub fn new(settings: X402Settings) -> Result<Self, String> {
        let clients = settings
            .chains
            .iter()
            .map(|c| ChainClient::new(c.chain, c.rpc_url.expose(), c.usdc, settings.rpc_timeout))
            .collect::<Result<Vec<_>, _>>()?;
        if !clients.iter().any(|c| c.chain == settings.default_chain) {
            return Err(format!(
                "the default payment chain {} has no RPC URL",
                settings.default_chain.name()
            ));
        }
        Ok(X402 { settings, clients })
    }

    pub fn client(&self, chain: Chain) -> Option<&ChainClient> {
        self.clients.iter().find(|c| c.chain == chain)
    }

    /// A call's price: its maximum cost, at least the configured minimum.
    pub fn price(&self, max_cost: Usd) -> Usd {
        if max_cost > self.settings.min_price {
            max_cost
        } else {
            self.settings.min_price
        }
    }

    /// The payment in a request's headers, if any; malformed headers are a 402 that says
    /// what is wrong.
    pub fn payment(&self, headers: &HeaderMap) -> Result<Option<PaymentHeader>, ApiError> {
        let text = |name: &str| {
            headers
                .get(name)
                .map(|v| v.to_str().map(|s| s.trim().to_owned()))
        };
        let Some(hash) = text(PAYMENT_HEADER) else {
            return Ok(None);
        };
        let hash = hash
            .ok()
            .filter(|h| h.len() == 66 && h.starts_with("0x"))
            .and_then(|h| h.parse::<B256>().ok())
            .ok_or_else(|| {
                invalid(
                    "X-Payment must be a transaction hash: 0x followed by 64 hex digits",
                    "malformed",
                )
            })?;
        let chain = match text(PAYMENT_CHAIN_HEADER) {
            None => self.settings.default_chain,
            Some(c) => {
                let accepted = self.accepted_names();
                c.ok()
                    .and_then(|c| Chain::parse(&c))
                    .filter(|c| c.accepts_payments())
                    .filter(|c| self.client(*c).is_some())
                    .ok_or_else(|| {
                        invalid(
                            format!("X-Payment-Chain must be one of: {accepted}"),
                            "wrong_chain",
                        )
                    })?
            }
        };
        let signature = match text(PAYMENT_SIGNATURE_HEADER) {
            None => None,
            Some(Ok(s)) => Some(s),
            Some(Err(_)) => {
                return Err(invalid(
                    "X-Payment-Signature must be a hex signature",
                    "signature_invalid",
                ))
            }
        };
        Ok(Some(PaymentHeader {
            chain,
            hash,
            signature,
        }))
    }

    fn accepted_names(&self) -> String {
        self.clients
            .iter()
            .map(|c| c.chain.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What to pay for a call: the body and headers of `402 PAYMENT_REQUIRED`.
    pub fn required(&self, price: Usd, method: &str, path: &str) -> ApiError {
        let s = &self.settings;
        let default = s.default_chain;
        let amount = usdc_text(price);
        let pay_to = s.pay_to.to_checksum(None);
        let description = format!("API call: {method} {path}");
        let instructions = format!(
            "Transfer at least {amount} USDC to {pay_to} on {} (or another chain in `accepts`), \
             then send this request again with the header X-Payment: <transaction hash> \
             (and X-Payment-Chain: <chain> if not {}). Whatever the call does not cost is \
             credited to your address's account.",
            default.name(),
            default.name()
        );
        let accepts: Vec<Value> = self
            .clients
            .iter()
            .map(|c| {
                json!({
                    "scheme": "exact",
                    "network": c.chain.name(),
                    "maxAmountRequired": price.micros().to_string(),
                    "asset": c.usdc.to_checksum(None),
                    "payTo": pay_to,
                    "resource": path,
                    "description": description,
                    "mimeType": "application/json",
                    "maxTimeoutSeconds": MAX_TIMEOUT_SECONDS,
                    "extra": {"name": "USDC", "decimals": 6},
                })
            })
            .collect();
        let header = |v: &str| HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static(""));
        ApiError::new(ErrorCode::PaymentRequired, "Payment required")
            .with(
                "payment",
                json!({
                    "amount": amount,
                    "currency": "USDC",
                    "recipient": pay_to,
                    "chain": default.name(),
                    "network": default.name(),
                    "chainId": default.chain_id(),
                    "asset": self.client(default).map(|c| c.usdc.to_checksum(None)),
                    "description": description,
                    "instructions": instructions,
                }),
            )
            .with("x402Version", 1)
            .with("accepts", Value::Array(accepts))
            .with_header(
                HeaderName::from_static("x-payment-required"),
                HeaderValue::from_static("true"),
            )
            .with_header(HeaderName::from_static("x-payment-amount"), header(&amount))
            .with_header(
                HeaderName::from_static("x-payment-currency"),
                HeaderValue::from_static("USDC"),
            )
            .with_header(
                HeaderName::from_static("x-payment-recipient"),
                header(&pay_to),
            )
            .with_header(
                HeaderName::from_static("x-payment-chain"),
                HeaderValue::from_static(default.name()),
            )
            .with_header(
                HeaderName::from_static("x-payment-description"),
                header(&description),
            )
    }

    /// Checks a payment on its chain against `price`, and the payer's signature when one is
    /// sent or required. Nothing is recorded: a refused or unverifiable hash stays usable.
    pub async fn verify(
        &self,
        p: &PaymentHeader,
        price: Usd,
        now_ms: i64,
    ) -> Result<Transfer, ApiError> {
        let client = self.client(p.chain).ok_or_else(|| {
            invalid(
                format!("payments on {} are not accepted", p.chain.name()),
                "wrong_chain",
            )
        })?;
        let req = Requirement {
            pay_to: self.settings.pay_to,
            min_amount: U256::from(u64::try_from(price.micros()).unwrap_or(0)),
            confirmations: self.settings.confirmations,
            max_age: self.settings.max_age,
            now_secs: u64::try_from(now_ms / 1000).unwrap_or(0),
        };
        let transfer = client.verify(p.hash, &req).await.map_err(|e| match e {
            VerifyError::Refused(r) => refused(&r),
            VerifyError::Unavailable(u) => self.unavailable(&u),
        })?;
        match &p.signature {
            Some(sig) if !signed_by(p.hash, sig, transfer.payer) => {
                return Err(refused(&Refused::SignatureInvalid {
                    payer: transfer.payer,
                }))
            }
            None if self.settings.require_signature => {
                return Err(refused(&Refused::SignatureMissing {
                    payer: transfer.payer,
                }))
            }
            _ => {}
        }
        if transfer.amount > U256::from(u64::try_from(i64::MAX).unwrap_or(u64::MAX)) {
            return Err(invalid(
                "the payment is larger than this server accepts",
                "too_large",
            ));
        }
        Ok(transfer)
    }

    /// 503: the chain could not be asked. Logged without the RPC URL, which may hold a key.
    fn unavailable(&self, u: &Unavailable) -> ApiError {
        let mut message = u.message.clone();
        for c in &self.settings.chains {
            message = message.replace(c.rpc_url.expose(), "<rpc url>");
        }
        tracing::warn!(chain = u.chain, error = %message, "payment verification unavailable");
        ApiError::unavailable(format!(
            "Payment verification is unavailable: the {} RPC endpoint did not answer. The payment was not used; retry shortly.",
            u.chain
        ))
    }
}

fn refused(r: &Refused) -> ApiError {
    let mut e = invalid(r.to_string(), r.reason());
    if let Refused::Underpaid { paid, required, .. } = r {
        e = e
            .with("paid", paid.to_string())
            .with("required", required.to_string());
    }
    if let Refused::NotEnoughConfirmations { have, need, .. } = r {
        e = e.with("confirmations", *have).with("required", *need);
    }
    e
}

/// The credit account of a payer on a chain: an agent without keys. Per chain, so testnet
/// USDC never becomes credit usable against mainnet payments.
pub fn payer_account_id(chain: Chain, payer: Address) -> String {
    format!("x402_{}_{}", chain.name(), hex_lower(payer))
}

fn hex_lower(a: Address) -> String {
    format!("{a:x}").trim_start_matches("0x").to_owned()
}

/// Limits of payer accounts: the payment is the limit.
const PAYER_LIMIT_MICROS: i64 = 1_000_000_000 * 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("payment already used")]
    AlreadyUsed,
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

impl From<diesel::result::Error> for AcceptError {
    fn from(e: diesel::result::Error) -> Self {
        AcceptError::Ledger(e.into())
    }
}

impl From<StoreError> for AcceptError {
    fn from(e: StoreError) -> Self {
        AcceptError::Ledger(e.into())
    }
}

impl AcceptError {
    pub fn into_api(self, t: &Transfer) -> ApiError {
        match self {
            AcceptError::AlreadyUsed => ApiError::new(
                ErrorCode::PaymentAlreadyUsed,
                format!("Payment {} on {} was already used", t.hash, t.chain.name()),
            ),
            AcceptError::Ledger(e) => e.into(),
        }
    }
}

/// What the accepted payment is recorded with.
#[derive(Debug, Clone)]
pub struct Acceptance {
    pub transfer: Transfer,
    pub resource: String,
    pub request_id: Option<String>,
    pub now: i64,
}

/// In one write transaction: records the hash as used (a second use, even concurrent,
/// loses), credits the payment to the payer's account (created on first payment), then
/// runs `then` with the account id (to reserve or charge the call's cost).
pub fn accept<T>(
    conn: &mut AnyConnection,
    a: &Acceptance,
    then: impl FnOnce(&mut AnyConnection, &str) -> Result<T, LedgerError>,
) -> Result<T, AcceptError> {
    let t = &a.transfer;
    let account = payer_account_id(t.chain, t.payer);
    let amount = i64::try_from(t.amount).unwrap_or(i64::MAX);
    let row = Payment {
        chain: t.chain.name().to_owned(),
        tx_hash: format!("{:x}", t.hash),
        payer: t.payer.to_checksum(None),
        account_id: account.clone(),
        amount_micros: amount,
        cost_micros: 0,
        block_number: i64::try_from(t.block_number).unwrap_or(i64::MAX),
        resource: a.resource.clone(),
        request_id: a.request_id.clone(),
        created_at: a.now,
    };
    conn.write_tx(|c| {
        ensure_payer(c, &account, &row.payer, a.now)?;
        if !repo::payments::insert(c, &row)? {
            return Err(AcceptError::AlreadyUsed);
        }
        let reference = format!("x402:{}:{}", row.chain, row.tx_hash);
        aibank_ledger::credit(
            c,
            &account,
            Usd::from_micros(amount),
            EntryKind::TopUp,
            Some(&reference),
            a.now,
        )?;
        Ok(then(c, &account)?)
    })
}

/// Creates the payer's agent row and account on first payment. A concurrent first payment
/// of the same payer may create them first; the savepoint keeps this transaction usable.
fn ensure_payer(c: &mut AnyConnection, id: &str, payer: &str, now: i64) -> Result<(), AcceptError> {
    if repo::agents::find(c, id)?.is_some() {
        return Ok(());
    }
    let agent = Agent {
        per_tx_limit_micros: PAYER_LIMIT_MICROS,
        daily_limit_micros: PAYER_LIMIT_MICROS,
        weekly_limit_micros: PAYER_LIMIT_MICROS,
        monthly_limit_micros: PAYER_LIMIT_MICROS,
        ..Agent::new(
            id.to_owned(),
            None,
            "gateway",
            format!("x402 payer {payer}"),
            None,
            now,
        )
    };
    let created = c.write_tx(|c| {
        repo::agents::insert(c, &agent)?;
        aibank_ledger::open_account(c, id, Usd::ZERO, EntryKind::TopUp, now)?;
        Ok::<_, LedgerError>(())
    });
    match created {
        Ok(()) => Ok(()),
        Err(LedgerError::Store(StoreError::Query(e))) if is_unique_violation(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
