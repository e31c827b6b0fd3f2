//! x402: pay for one gateway call (or buy credits) with USDC on Base.
//!
//! A request without credentials gets `402 PAYMENT_REQUIRED` with what to pay, to whom and
//! where: in aibank's shape, in x402 v1's `accepts` and in x402 v2's `PAYMENT-REQUIRED`
//! header. A client pays one of two ways:
//! - aibank's own: it transfers USDC itself and repeats the request with
//!   `X-Payment: <tx hash>` (and `X-Payment-Chain`); the server reads the receipt and checks
//!   the USDC `Transfer` to it;
//! - the x402 standard's `exact` scheme (`exact`): it signs an EIP-3009 authorization and
//!   sends it in `X-PAYMENT` (v1) or `PAYMENT-SIGNATURE` (v2); the server checks it and
//!   settles it on chain itself (`settle`) before the call goes out.
//!
//! Either way the payment is recorded as used in the same transaction that credits it to
//! the payer's account and reserves the call's cost. Whatever the call does not cost stays
//! as credit in the payer's account.

pub mod exact;
pub mod metrics;
mod settle;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use aibank_core::{ApiError, ErrorCode, SecretString, Usd};
use aibank_ledger::{EntryKind, LedgerError};
use aibank_store::models::Payment;
use aibank_store::repo;
use aibank_store::{AnyConnection, StoreError};
use alloy::primitives::U256;
use http::header::{HeaderName, HeaderValue};
use serde_json::{json, Value};

pub use aibank_chain::{redact_urls, CallError, Chain, ChainConfig, Endpoint};
pub use alloy::primitives::{Address, B256};
pub use settle::{parse_settler_key, Settled};
pub use verify::{
    signed_by, ChainClient, Refused, Requirement, Transfer, Unavailable, VerifyError,
};

pub const PAYMENT_HEADER: &str = "x-payment";
pub const PAYMENT_CHAIN_HEADER: &str = "x-payment-chain";
pub const PAYMENT_SIGNATURE_HEADER: &str = "x-payment-signature";

/// How long a client has to pay once it got the 402 (x402's `maxTimeoutSeconds`), unless
/// configured.
pub const MAX_TIMEOUT_SECONDS: u64 = 300;

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
    /// How long a client has to pay once it got the 402 (x402's `maxTimeoutSeconds`).
    pub max_timeout_secs: u64,
    /// The key of the account that sends standard payments' settlements (and pays their
    /// gas); without one, only the transaction-hash flow is offered.
    pub settler_key: Option<SecretString>,
    /// The server's public base URL, for the requirements' absolute `resource`.
    pub public_url: String,
    /// How long a standard payment's settlement is waited for before the request is
    /// answered that it is pending.
    pub settle_wait: Duration,
}

/// The payment a request carries.
#[derive(Debug, Clone)]
pub struct PaymentHeader {
    pub chain: Chain,
    pub hash: B256,
    pub signature: Option<String>,
}

/// A payment in one of the two flows.
#[derive(Debug, Clone)]
pub enum Presented {
    /// A transaction hash the payer made itself.
    Hash(PaymentHeader),
    /// A signed EIP-3009 authorization for the server to settle.
    Exact(Box<exact::Signed>),
}

/// Payments: requirements, verification and the used-hash registry.
pub struct X402 {
    pub settings: X402Settings,
    clients: Vec<ChainClient>,
    settlers: Vec<settle::Settler>,
    payers: Arc<dyn PayerAccounts>,
    metrics: Option<metrics::X402Metrics>,
}

impl std::fmt::Debug for X402 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X402")
            .field("pay_to", &self.settings.pay_to)
            .field("chains", &self.clients)
            .finish_non_exhaustive()
    }
}

/// The standard requirements of one request: what its 402 offers, and what a refused
/// payment is answered with again.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// What the request costs.
    pub price: Usd,
    pub offers: Vec<exact::Offer>,
    pub resource: exact::Resource,
}

impl Challenge {
    /// `e` with the `PAYMENT-REQUIRED` header, when standard payments are offered.
    pub fn with_header(&self, e: ApiError, error: &str) -> ApiError {
        if self.offers.is_empty() {
            return e;
        }
        let v = exact::payment_required_header(&self.offers, &self.resource, error);
        match HeaderValue::from_str(&v) {
            Ok(v) => e.with_header(HeaderName::from_static(exact::PAYMENT_REQUIRED_HEADER), v),
            Err(_) => e,
        }
    }

    /// `402 PAYMENT_INVALID` for a refused standard payment: its reason, and the
    /// requirements again.
    pub fn refuse(&self, r: &exact::Refusal) -> ApiError {
        let e = invalid(r.message.clone(), r.reason.code());
        self.with_header(e, &r.message)
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
    /// `payers` creates the accounts of payers who hold none (see [`PayerAccounts`]).
    pub fn new(settings: X402Settings, payers: Arc<dyn PayerAccounts>) -> Result<Self, String> {
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
        let settlers = settle::settlers(
            &settings.chains,
            settings.settler_key.as_ref(),
            settings.rpc_timeout,
            settings.settle_wait,
        )?;
        Ok(X402 {
            settings,
            clients,
            settlers,
            payers,
            metrics: None,
        })
    }

    /// Counts verifications and settlements in `metrics`.
    #[must_use]
    pub fn with_metrics(mut self, metrics: metrics::X402Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Who creates payers' accounts, for [`accept`].
    pub fn payers(&self) -> Arc<dyn PayerAccounts> {
        self.payers.clone()
    }

    /// The settlement account's address, when standard payments are taken.
    pub fn settler_address(&self) -> Option<Address> {
        self.settlers.first().map(|s| s.key.address())
    }

    pub(crate) fn settler(&self, chain: Chain) -> Option<&settle::Settler> {
        self.settlers.iter().find(|s| s.rpc.chain == chain)
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

    /// Whether standard (`exact`) payments are taken: a settlement account is configured.
    pub fn settles(&self) -> bool {
        !self.settlers.is_empty()
    }

    /// The payment in a request's headers, if any: `PAYMENT-SIGNATURE` (x402 v2), or
    /// `X-Payment` holding a transaction hash (aibank's flow) or a v1 payload. Malformed
    /// headers are a 402 that says what is wrong; `offered` is the payment's requirements,
    /// sent again with a refusal. `header` looks a request header up by name.
    pub fn presented<'h>(
        &self,
        header: impl Fn(&str) -> Option<&'h HeaderValue>,
        offered: &Challenge,
    ) -> Result<Option<Presented>, ApiError> {
        let text = |name: &str| header(name).map(|v| v.to_str().map(|s| s.trim().to_owned()));
        let standard = |value: Result<String, _>, version| {
            if !self.settles() {
                return Err(offered.refuse(&exact::Refusal {
                    reason: exact::Reason::UnsupportedScheme,
                    message: "this server takes no signed authorizations; pay with X-Payment: <transaction hash>".into(),
                }));
            }
            let value: String = value.map_err(|_| {
                offered.refuse(&exact::Refusal {
                    reason: exact::Reason::Malformed,
                    message: "the payment header is not text".into(),
                })
            })?;
            exact::decode(&value, version)
                .map(|s| Some(Presented::Exact(Box::new(s))))
                .map_err(|r| offered.refuse(&r))
        };
        if let Some(v) = text(exact::PAYMENT_SIGNATURE_HEADER) {
            return standard(v, exact::Version::V2);
        }
        let Some(hash) = text(PAYMENT_HEADER) else {
            return Ok(None);
        };
        let is_hash = |h: &String| h.len() == 66 && h.starts_with("0x");
        match hash {
            Ok(h) if !is_hash(&h) && !h.starts_with("0x") => {
                return standard(Ok(h), exact::Version::V1)
            }
            Err(e) => return standard(Err(e), exact::Version::V1),
            Ok(_) => {}
        }
        let hash = hash
            .ok()
            .filter(is_hash)
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
        Ok(Some(Presented::Hash(PaymentHeader {
            chain,
            hash,
            signature,
        })))
    }

    /// What standard payments may pay for a request priced `price`: one offer per chain.
    pub fn offers(&self, price: Usd) -> Vec<exact::Offer> {
        if !self.settles() {
            return Vec::new();
        }
        let amount = u64::try_from(price.micros()).unwrap_or(0);
        self.settings
            .chains
            .iter()
            .map(|c| exact::Offer {
                chain: c.chain,
                asset: c.usdc,
                pay_to: self.settings.pay_to,
                amount,
                max_timeout_secs: self.settings.max_timeout_secs,
                domain: c.usdc_domain.clone(),
            })
            .collect()
    }

    /// What a request must pay: `price` for `method path`.
    pub fn challenge(&self, price: Usd, method: &str, path: &str) -> Challenge {
        Challenge {
            price,
            offers: self.offers(price),
            resource: exact::Resource {
                url: format!("{}{path}", self.settings.public_url),
                description: format!("API call: {method} {path}"),
                mime_type: "application/json".into(),
            },
        }
    }

    fn accepted_names(&self) -> String {
        self.clients
            .iter()
            .map(|c| c.chain.name())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// What to pay for a call: the body and headers of `402 PAYMENT_REQUIRED`.
    pub fn required(&self, price: Usd, challenge: &Challenge) -> ApiError {
        let s = &self.settings;
        let default = s.default_chain;
        let amount = usdc_text(price);
        let pay_to = s.pay_to.to_checksum(None);
        let description = challenge.resource.description.clone();
        let standard = if self.settles() {
            " Or sign an x402 `exact` payment (EIP-3009) for one of `accepts` and send it in \
             PAYMENT-SIGNATURE (x402 v2) or X-PAYMENT (v1): the server settles it."
        } else {
            ""
        };
        let instructions = format!(
            "Transfer at least {amount} USDC to {pay_to} on {} (or another chain this server \
             takes), then send this request again with the header X-Payment: <transaction \
             hash> (and X-Payment-Chain: <chain> if not {}). Whatever the call does not cost \
             is credited to your address's account.{standard}",
            default.name(),
            default.name()
        );
        let accepts: Vec<Value> = challenge
            .offers
            .iter()
            .map(|o| o.v1(&challenge.resource))
            .collect();
        let header = |v: &str| HeaderValue::from_str(v).unwrap_or(HeaderValue::from_static(""));
        let e = ApiError::new(ErrorCode::PaymentRequired, "Payment required")
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
            );
        challenge.with_header(e, "PAYMENT-SIGNATURE header is required")
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
            AcceptError::AlreadyUsed if t.authorized => invalid(
                "This authorization already paid for a request",
                exact::Reason::NonceUsed.code(),
            ),
            AcceptError::AlreadyUsed => ApiError::new(
                ErrorCode::PaymentAlreadyUsed,
                format!("Payment {} on {} was already used", t.hash, t.chain.name()),
            ),
            AcceptError::Ledger(e) => e.into(),
        }
    }
}

/// A payment that was checked — a transfer verified, or an authorization settled — and
/// is ready for [`accept`].
#[derive(Debug, Clone)]
pub struct Taken {
    pub transfer: Transfer,
    /// A settled authorization's key, for [`Acceptance::authorization`].
    pub authorization: Option<(String, String, String)>,
    /// `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE` for the answer (standard payments).
    pub response: Option<(HeaderName, HeaderValue)>,
}

impl X402 {
    /// Checks a presented payment for the challenge's price: a transaction hash is verified on chain
    /// (and must carry the payer's signature when `payer_signed`), an authorization is
    /// checked and settled. Nothing is recorded as used yet: [`accept`] does that.
    pub async fn take(
        &self,
        pool: &aibank_store::DbPool,
        presented: Presented,
        challenge: &Challenge,
        resource: &str,
        now_ms: i64,
        payer_signed: bool,
    ) -> Result<Taken, ApiError> {
        match presented {
            Presented::Hash(p) => {
                if payer_signed && p.signature.is_none() {
                    return Err(invalid(
                        "This payment needs X-Payment-Signature: the payer's EIP-191 signature of the transaction hash",
                        "signature_missing",
                    ));
                }
                let verified = self.verify(&p, challenge.price, now_ms).await;
                if let Some(m) = &self.metrics {
                    m.verified(&verified);
                }
                Ok(Taken {
                    transfer: verified?,
                    authorization: None,
                    response: None,
                })
            }
            Presented::Exact(signed) => {
                let settled = self
                    .settle(pool, &signed, challenge, resource, now_ms)
                    .await;
                if let Some(m) = &self.metrics {
                    m.settled(&settled);
                }
                let s = settled?;
                Ok(Taken {
                    transfer: s.transfer,
                    authorization: Some(s.authorization),
                    response: Some(s.header),
                })
            }
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
    /// The standard payment's authorization (chain, payer, nonce) this transfer settled,
    /// marked settled in the same transaction.
    pub authorization: Option<(String, String, String)>,
    /// The account credited: an agent's own (a top-up), or by default the payer's.
    pub credit_to: Option<String>,
}

/// In one write transaction: records the hash as used (a second use, even concurrent,
/// loses), credits the payment to the payer's account (created by `payers` on first
/// payment), then runs `then` with the account id (to reserve or charge the call's cost).
pub fn accept<T>(
    conn: &mut AnyConnection,
    a: &Acceptance,
    payers: &dyn PayerAccounts,
    then: impl FnOnce(&mut AnyConnection, &str) -> Result<T, LedgerError>,
) -> Result<T, AcceptError> {
    let t = &a.transfer;
    let account = a
        .credit_to
        .clone()
        .unwrap_or_else(|| payer_account_id(t.chain, t.payer));
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
        if a.credit_to.is_none() {
            payers.ensure_payer(c, &account, &row.payer, a.now)?;
        }
        if !repo::payments::insert(c, &row)? {
            return Err(AcceptError::AlreadyUsed);
        }
        if let Some((chain, payer, nonce)) = &a.authorization {
            let key = (chain.as_str(), payer.as_str(), nonce.as_str());
            if !repo::payments::resolve_authorization(c, key, repo::payments::AUTH_SETTLED, a.now)?
            {
                return Err(AcceptError::AlreadyUsed);
            }
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

/// The identities payments are credited to when the payer holds no account of its own.
/// The server's services create them; this crate only asks for one.
pub trait PayerAccounts: Send + Sync {
    /// Makes sure the account `account_id` of the payer at address `payer` exists, in the
    /// caller's transaction, creating it on the payer's first payment.
    fn ensure_payer(
        &self,
        conn: &mut AnyConnection,
        account_id: &str,
        payer: &str,
        now: i64,
    ) -> Result<(), LedgerError>;
}
