//! The x402 standard's `exact` scheme on EVM chains, as the official clients speak it: the
//! requirements aibank offers for a request (x402 v1 `accepts` entries in the 402 body, the
//! v2 `PaymentRequired` in the `PAYMENT-REQUIRED` header), the signed EIP-3009
//! authorizations clients pay with (`X-PAYMENT` in v1, `PAYMENT-SIGNATURE` in v2), and the
//! checks that need no chain: the requirements the client accepted are ones offered, the
//! authorization pays the right amount to the right address within its validity window,
//! and its EIP-712 signature is the payer's.

use alloy::primitives::{Address, Signature, B256, U256};
use alloy::sol;
use alloy::sol_types::{eip712_domain, SolStruct};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::Chain;

pub const PAYMENT_REQUIRED_HEADER: &str = "payment-required";
pub const PAYMENT_SIGNATURE_HEADER: &str = "payment-signature";
pub const PAYMENT_RESPONSE_HEADER: &str = "payment-response";
pub const X_PAYMENT_RESPONSE_HEADER: &str = "x-payment-response";

/// An authorization must stay valid at least this long after it is checked: the time
/// settlement takes.
pub const MIN_VALIDITY_SECS: u64 = 6;

sol! {
    /// EIP-3009's signed message.
    struct TransferWithAuthorization {
        address from;
        address to;
        uint256 value;
        uint256 validAfter;
        uint256 validBefore;
        bytes32 nonce;
    }

    function transferWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;

    function authorizationState(address authorizer, bytes32 nonce) external view returns (bool);

    function balanceOf(address account) external view returns (uint256);
}

/// The x402 protocol version a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// `X-PAYMENT`, answered with `X-PAYMENT-RESPONSE`.
    V1,
    /// `PAYMENT-SIGNATURE`, answered with `PAYMENT-RESPONSE`.
    V2,
}

impl Version {
    /// The header the settlement's outcome is sent in.
    pub fn response_header(self) -> &'static str {
        match self {
            Version::V1 => X_PAYMENT_RESPONSE_HEADER,
            Version::V2 => PAYMENT_RESPONSE_HEADER,
        }
    }
}

/// Why an authorization is refused: the `reason` of `402 PAYMENT_INVALID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    InvalidSignature,
    WrongRecipient,
    AmountMismatch,
    Expired,
    NotYetValid,
    NonceUsed,
    InsufficientBalance,
    WrongNetwork,
    UnsupportedScheme,
    Malformed,
    SettlementFailed,
}

impl Reason {
    pub fn code(self) -> &'static str {
        match self {
            Reason::InvalidSignature => "invalid_signature",
            Reason::WrongRecipient => "wrong_recipient",
            Reason::AmountMismatch => "amount_mismatch",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::NonceUsed => "nonce_used",
            Reason::InsufficientBalance => "insufficient_balance",
            Reason::WrongNetwork => "wrong_network",
            Reason::UnsupportedScheme => "unsupported_scheme",
            Reason::Malformed => "malformed",
            Reason::SettlementFailed => "settlement_failed",
        }
    }
}

/// A refused authorization: the reason and what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub message: String,
}

fn refuse(reason: Reason, message: impl Into<String>) -> Refusal {
    Refusal {
        reason,
        message: message.into(),
    }
}

pub use aibank_chain::TokenDomain;

/// What a request is: the `resource` of the requirements.
#[derive(Debug, Clone)]
pub struct Resource {
    /// Absolute URL.
    pub url: String,
    pub description: String,
    pub mime_type: String,
}

/// What aibank asks for one request on one chain.
#[derive(Debug, Clone)]
pub struct Offer {
    pub chain: Chain,
    pub asset: Address,
    pub pay_to: Address,
    /// In the token's base units (USDC: micro-dollars).
    pub amount: u64,
    pub max_timeout_secs: u64,
    pub domain: TokenDomain,
}

/// The CAIP-2 name of `chain`, as v2 writes `network`.
pub fn caip2(chain: Chain) -> String {
    format!("eip155:{}", chain.chain_id())
}

/// The chain a `network` names, in v1's (`base-sepolia`) or v2's (`eip155:84532`) form.
pub fn network(name: &str) -> Option<Chain> {
    Chain::ALL
        .into_iter()
        .find(|c| c.accepts_payments() && (c.name() == name || caip2(*c) == name))
}

impl Offer {
    fn extra(&self) -> Value {
        json!({"name": self.domain.name, "version": self.domain.version})
    }

    /// The x402 v1 `accepts` entry (in the 402 body).
    pub fn v1(&self, resource: &Resource) -> Value {
        json!({
            "scheme": "exact",
            "network": self.chain.name(),
            "maxAmountRequired": self.amount.to_string(),
            "asset": self.asset.to_checksum(None),
            "payTo": self.pay_to.to_checksum(None),
            "resource": resource.url,
            "description": resource.description,
            "mimeType": resource.mime_type,
            "maxTimeoutSeconds": self.max_timeout_secs,
            "extra": self.extra(),
        })
    }

    /// The x402 v2 `accepts` entry (in `PAYMENT-REQUIRED`).
    pub fn v2(&self) -> Value {
        json!({
            "scheme": "exact",
            "network": caip2(self.chain),
            "amount": self.amount.to_string(),
            "asset": self.asset.to_checksum(None),
            "payTo": self.pay_to.to_checksum(None),
            "maxTimeoutSeconds": self.max_timeout_secs,
            "extra": self.extra(),
        })
    }
}

/// The `PAYMENT-REQUIRED` header: padded standard base64 of the v2 `PaymentRequired`.
pub fn payment_required_header(offers: &[Offer], resource: &Resource, error: &str) -> String {
    let required = json!({
        "x402Version": 2,
        "error": error,
        "resource": {
            "url": resource.url,
            "description": resource.description,
            "mimeType": resource.mime_type,
        },
        "accepts": offers.iter().map(Offer::v2).collect::<Vec<_>>(),
    });
    base64::engine::general_purpose::STANDARD.encode(required.to_string())
}

/// A settlement's outcome, for `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`: padded standard
/// base64 of `{success, transaction, network, payer}` (and `errorReason` on failure).
pub fn settlement_header(
    version: Version,
    chain: Chain,
    transaction: Option<B256>,
    payer: Address,
    failure: Option<Reason>,
) -> String {
    let network = match version {
        Version::V1 => chain.name().to_owned(),
        Version::V2 => caip2(chain),
    };
    let mut response = json!({
        "success": failure.is_none(),
        "transaction": transaction.map(|t| format!("{t:#x}")).unwrap_or_default(),
        "network": network,
        "payer": payer.to_checksum(None),
    });
    if let Some(r) = failure {
        response["errorReason"] = json!(r.code());
    }
    base64::engine::general_purpose::STANDARD.encode(response.to_string())
}

/// EIP-3009's `authorization`, as the payload carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authorization {
    pub from: Address,
    pub to: Address,
    pub value: U256,
    pub valid_after: U256,
    pub valid_before: U256,
    pub nonce: B256,
}

/// The requirements a v2 client says it accepted, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub scheme: String,
    pub network: String,
    pub amount: String,
    pub asset: String,
    pub pay_to: String,
}

impl Accepted {
    /// Whether these are `offer`'s requirements, field by field (addresses as addresses,
    /// whatever their case).
    fn matches(&self, offer: &Offer) -> Result<(), Refusal> {
        if self.asset.parse::<Address>().ok() != Some(offer.asset) {
            return Err(refuse(
                Reason::WrongNetwork,
                format!(
                    "asset {} is not the token accepted on {}",
                    self.asset,
                    caip2(offer.chain)
                ),
            ));
        }
        if self.pay_to.parse::<Address>().ok() != Some(offer.pay_to) {
            return Err(refuse(
                Reason::WrongRecipient,
                "the accepted payTo is not this server's",
            ));
        }
        if self.amount.parse::<u64>().ok() != Some(offer.amount) {
            return Err(refuse(
                Reason::AmountMismatch,
                format!(
                    "the accepted amount {} is not this request's {}",
                    self.amount, offer.amount
                ),
            ));
        }
        Ok(())
    }
}

/// A payment a client sent: a signed EIP-3009 authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub version: Version,
    pub scheme: String,
    pub network: String,
    /// v2 only.
    pub accepted: Option<Accepted>,
    pub authorization: Authorization,
    pub signature: Signature,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAuthorization {
    from: String,
    to: String,
    value: Number,
    valid_after: Number,
    valid_before: Number,
    nonce: String,
}

/// A number as clients write it: a decimal string, or a JSON number.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Text(String),
    Int(u64),
}

impl Number {
    fn value(&self, field: &str) -> Result<U256, Refusal> {
        match self {
            Number::Int(n) => Ok(U256::from(*n)),
            Number::Text(s) => s
                .parse::<U256>()
                .ok()
                .filter(|_| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .ok_or_else(|| {
                    refuse(
                        Reason::Malformed,
                        format!("authorization.{field} must be a decimal integer"),
                    )
                }),
        }
    }
}

#[derive(Deserialize)]
struct WirePayload {
    signature: String,
    authorization: WireAuthorization,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAccepted {
    scheme: String,
    network: String,
    amount: String,
    asset: String,
    pay_to: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePaymentPayload {
    x402_version: u64,
    /// v1.
    scheme: Option<String>,
    /// v1.
    network: Option<String>,
    /// v2.
    accepted: Option<WireAccepted>,
    payload: WirePayload,
}

fn address(field: &str, s: &str) -> Result<Address, Refusal> {
    s.parse::<Address>()
        .map_err(|_| refuse(Reason::Malformed, format!("{field} is not an address")))
}

/// Reads a payment header's value (base64 JSON `PaymentPayload`) sent in the header of
/// `version`.
pub fn decode(header: &str, version: Version) -> Result<Signed, Refusal> {
    let header = header.trim();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(header)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(header))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header))
        .map_err(|_| refuse(Reason::Malformed, "the payment header is not base64"))?;
    let p: WirePaymentPayload = serde_json::from_slice(&raw).map_err(|e| {
        refuse(
            Reason::Malformed,
            format!("the payment header is not an x402 exact payment payload: {e}"),
        )
    })?;
    let expected = match version {
        Version::V1 => 1,
        Version::V2 => 2,
    };
    if p.x402_version != expected {
        return Err(refuse(
            Reason::Malformed,
            format!(
                "x402Version {} sent in the header of version {expected}",
                p.x402_version
            ),
        ));
    }
    let (scheme, network, accepted) = match (version, p.accepted) {
        (Version::V2, Some(a)) => (
            a.scheme.clone(),
            a.network.clone(),
            Some(Accepted {
                scheme: a.scheme,
                network: a.network,
                amount: a.amount,
                asset: a.asset,
                pay_to: a.pay_to,
            }),
        ),
        (Version::V2, None) => {
            return Err(refuse(
                Reason::Malformed,
                "a v2 payment names what it `accepted`",
            ))
        }
        (Version::V1, _) => (
            p.scheme.unwrap_or_default(),
            p.network.unwrap_or_default(),
            None,
        ),
    };
    let a = &p.payload.authorization;
    let nonce = a
        .nonce
        .parse::<B256>()
        .ok()
        .filter(|_| a.nonce.len() == 66)
        .ok_or_else(|| {
            refuse(
                Reason::Malformed,
                "authorization.nonce must be 32 bytes of hex",
            )
        })?;
    let authorization = Authorization {
        from: address("authorization.from", &a.from)?,
        to: address("authorization.to", &a.to)?,
        value: a.value.value("value")?,
        valid_after: a.valid_after.value("validAfter")?,
        valid_before: a.valid_before.value("validBefore")?,
        nonce,
    };
    let signature = p.payload.signature.parse::<Signature>().map_err(|_| {
        refuse(
            Reason::InvalidSignature,
            "the signature is not 65 bytes of hex",
        )
    })?;
    Ok(Signed {
        version,
        scheme,
        network,
        accepted,
        authorization,
        signature,
    })
}

/// The EIP-712 digest the payer signs for `a` on `offer`'s token.
pub fn signing_hash(offer: &Offer, a: &Authorization) -> B256 {
    let domain = eip712_domain! {
        name: offer.domain.name.clone(),
        version: offer.domain.version.clone(),
        chain_id: offer.chain.chain_id(),
        verifying_contract: offer.asset,
    };
    TransferWithAuthorization {
        from: a.from,
        to: a.to,
        value: a.value,
        validAfter: a.valid_after,
        validBefore: a.valid_before,
        nonce: a.nonce,
    }
    .eip712_signing_hash(&domain)
}

impl Signed {
    /// The chain the payment is on, if it names one payments are taken on.
    pub fn chain(&self) -> Option<Chain> {
        network(&self.network)
    }

    /// Checks the payment against what was offered for this request, at `now` (Unix
    /// seconds): the offer it takes, or why it is refused. Needs no chain.
    pub fn check<'a>(&self, offers: &'a [Offer], now: u64) -> Result<&'a Offer, Refusal> {
        if self.scheme != "exact" {
            return Err(refuse(
                Reason::UnsupportedScheme,
                format!("scheme `{}` is not accepted; only `exact` is", self.scheme),
            ));
        }
        let offer = self
            .chain()
            .and_then(|c| offers.iter().find(|o| o.chain == c))
            .ok_or_else(|| {
                let names: Vec<String> = offers
                    .iter()
                    .map(|o| match self.version {
                        Version::V1 => o.chain.name().to_owned(),
                        Version::V2 => caip2(o.chain),
                    })
                    .collect();
                refuse(
                    Reason::WrongNetwork,
                    format!(
                        "network `{}` is not accepted; pay on: {}",
                        self.network,
                        names.join(", ")
                    ),
                )
            })?;
        if let Some(acc) = &self.accepted {
            acc.matches(offer)?;
        }
        let a = &self.authorization;
        if a.to != offer.pay_to {
            return Err(refuse(
                Reason::WrongRecipient,
                format!(
                    "the authorization pays {}, not {}",
                    a.to.to_checksum(None),
                    offer.pay_to.to_checksum(None)
                ),
            ));
        }
        let amount = U256::from(offer.amount);
        let paid = match self.version {
            Version::V1 => a.value >= amount,
            Version::V2 => a.value == amount,
        };
        if !paid {
            return Err(refuse(
                Reason::AmountMismatch,
                format!(
                    "the authorization's value {} does not pay the required {}",
                    a.value, offer.amount
                ),
            ));
        }
        if a.valid_after > U256::from(now) {
            return Err(refuse(
                Reason::NotYetValid,
                format!("the authorization is valid only after {}", a.valid_after),
            ));
        }
        if a.valid_before < U256::from(now.saturating_add(MIN_VALIDITY_SECS)) {
            return Err(refuse(
                Reason::Expired,
                format!(
                    "the authorization expires at {}; it must stay valid at least {MIN_VALIDITY_SECS} s more",
                    a.valid_before
                ),
            ));
        }
        let signer = self
            .signature
            .recover_address_from_prehash(&signing_hash(offer, a))
            .ok();
        if signer != Some(a.from) {
            return Err(refuse(
                Reason::InvalidSignature,
                "the signature is not the payer's authorization of this transfer",
            ));
        }
        Ok(offer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;
    use alloy::signers::local::PrivateKeySigner;
    use alloy::signers::SignerSync;

    const USDC: Address = address!("036CbD53842c5426634e7929541eC2318f3dCF7e");
    const PAY_TO: Address = address!("209693Bc6afc0C5328bA36FaF03C514EF312287C");
    const NOW: u64 = 1_800_000_000;

    fn offer() -> Offer {
        Offer {
            chain: Chain::BaseSepolia,
            asset: USDC,
            pay_to: PAY_TO,
            amount: 10_000,
            max_timeout_secs: 300,
            domain: TokenDomain::usdc(Chain::BaseSepolia),
        }
    }

    fn resource() -> Resource {
        Resource {
            url: "http://127.0.0.1:8080/v1/gateway/anthropic/v1/messages".into(),
            description: "API call: POST /v1/gateway/anthropic/v1/messages".into(),
            mime_type: "application/json".into(),
        }
    }

    /// A payload as the official clients build it, signed by `key` over `a`.
    fn payload(version: Version, key: &PrivateKeySigner, a: &Authorization, o: &Offer) -> String {
        let sig = key.sign_hash_sync(&signing_hash(o, a)).unwrap();
        let body = json!({
            "signature": format!("0x{}", alloy::hex::encode(sig.as_bytes())),
            "authorization": {
                "from": a.from.to_checksum(None),
                "to": a.to.to_checksum(None),
                "value": a.value.to_string(),
                "validAfter": a.valid_after.to_string(),
                "validBefore": a.valid_before.to_string(),
                "nonce": format!("{:#x}", a.nonce),
            }
        });
        let p = match version {
            Version::V1 => json!({"x402Version": 1, "scheme": "exact",
                                  "network": "base-sepolia", "payload": body}),
            Version::V2 => json!({"x402Version": 2, "resource": {"url": resource().url},
                                  "accepted": o.v2(), "payload": body}),
        };
        base64::engine::general_purpose::STANDARD.encode(p.to_string())
    }

    fn authorization(from: Address) -> Authorization {
        Authorization {
            from,
            to: PAY_TO,
            value: U256::from(10_000),
            valid_after: U256::from(NOW - 600),
            valid_before: U256::from(NOW + 300),
            nonce: B256::repeat_byte(7),
        }
    }

    #[test]
    fn requirements_have_every_member_and_no_nulls() {
        let o = offer();
        let v1 = o.v1(&resource());
        for k in [
            "scheme",
            "network",
            "maxAmountRequired",
            "asset",
            "payTo",
            "resource",
            "description",
            "mimeType",
            "maxTimeoutSeconds",
            "extra",
        ] {
            assert!(!v1[k].is_null(), "{k}");
        }
        assert_eq!(v1["network"], "base-sepolia");
        assert_eq!(v1["maxAmountRequired"], "10000");
        assert_eq!(v1["extra"], json!({"name": "USDC", "version": "2"}));
        let header = payment_required_header(&[o], &resource(), "payment required");
        let decoded: Value = serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(header)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(decoded["x402Version"], 2);
        assert_eq!(decoded["resource"]["mimeType"], "application/json");
        let a = &decoded["accepts"][0];
        assert_eq!(a["network"], "eip155:84532");
        assert_eq!(a["amount"], "10000");
        assert_eq!(a["payTo"], PAY_TO.to_checksum(None));
        assert_eq!(TokenDomain::usdc(Chain::Base).name, "USD Coin");
    }

    #[test]
    fn a_signed_authorization_passes_and_each_fault_has_its_reason() {
        let key = PrivateKeySigner::random();
        let o = offer();
        let offers = [o.clone()];
        for version in [Version::V1, Version::V2] {
            let good = authorization(key.address());
            let s = decode(&payload(version, &key, &good, &o), version).unwrap();
            assert_eq!(s.check(&offers, NOW).unwrap().chain, Chain::BaseSepolia);
            assert_eq!(s.authorization, good);

            let reason = |a: Authorization, signer: &PrivateKeySigner| {
                let s = decode(&payload(version, signer, &a, &o), version).unwrap();
                s.check(&offers, NOW).unwrap_err().reason
            };
            let other = PrivateKeySigner::random();
            assert_eq!(reason(good, &other), Reason::InvalidSignature);
            let to = Authorization {
                to: Address::repeat_byte(1),
                ..good
            };
            assert_eq!(reason(to, &key), Reason::WrongRecipient);
            let less = Authorization {
                value: U256::from(9_999),
                ..good
            };
            assert_eq!(reason(less, &key), Reason::AmountMismatch);
            let more = Authorization {
                value: U256::from(10_001),
                ..good
            };
            let more_ok = decode(&payload(version, &key, &more, &o), version)
                .unwrap()
                .check(&offers, NOW)
                .is_ok();
            assert_eq!(
                more_ok,
                version == Version::V1,
                "v1 pays at least, v2 exactly"
            );
            let early = Authorization {
                valid_after: U256::from(NOW + 1),
                ..good
            };
            assert_eq!(reason(early, &key), Reason::NotYetValid);
            let late = Authorization {
                valid_before: U256::from(NOW + 5),
                ..good
            };
            assert_eq!(reason(late, &key), Reason::Expired);
        }
    }

    #[test]
    fn what_a_v2_client_accepted_is_compared_field_by_field() {
        let key = PrivateKeySigner::random();
        let o = offer();
        let a = authorization(key.address());
        let tweak = |f: &dyn Fn(&mut Value)| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(payload(Version::V2, &key, &a, &o))
                .unwrap();
            let mut v: Value = serde_json::from_slice(&raw).unwrap();
            f(&mut v);
            let s = decode(
                &base64::engine::general_purpose::STANDARD.encode(v.to_string()),
                Version::V2,
            );
            s.and_then(|s| s.check(std::slice::from_ref(&o), NOW).map(|_| ()))
                .unwrap_err()
                .reason
        };
        assert_eq!(
            tweak(&|v| v["accepted"]["scheme"] = json!("upto")),
            Reason::UnsupportedScheme
        );
        assert_eq!(
            tweak(&|v| v["accepted"]["network"] = json!("eip155:8453")),
            Reason::WrongNetwork
        );
        assert_eq!(
            tweak(&|v| v["accepted"]["asset"] = json!(PAY_TO.to_checksum(None))),
            Reason::WrongNetwork
        );
        assert_eq!(
            tweak(&|v| v["accepted"]["payTo"] = json!(USDC.to_checksum(None))),
            Reason::WrongRecipient
        );
        assert_eq!(
            tweak(&|v| v["accepted"]["amount"] = json!("1")),
            Reason::AmountMismatch
        );
        // The same field in another spelling is the same requirement.
        let lower = tweak(&|v| {
            v["accepted"]["asset"] = json!(format!("{USDC:#x}"));
            v["accepted"]["scheme"] = json!("none");
        });
        assert_eq!(
            lower,
            Reason::UnsupportedScheme,
            "asset compared as an address"
        );
        assert_eq!(
            tweak(&|v| v["payload"]["authorization"]["nonce"] = json!("0x01")),
            Reason::Malformed
        );
        assert_eq!(tweak(&|v| v["x402Version"] = json!(1)), Reason::Malformed);
        assert_eq!(
            decode("not base64!", Version::V1).unwrap_err().reason,
            Reason::Malformed
        );
    }

    #[test]
    fn the_settlement_header_says_how_it_went() {
        let payer = Address::repeat_byte(9);
        let tx = B256::repeat_byte(3);
        let decode = |h: String| -> Value {
            serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(h).unwrap())
                .unwrap()
        };
        let ok = decode(settlement_header(
            Version::V2,
            Chain::BaseSepolia,
            Some(tx),
            payer,
            None,
        ));
        assert_eq!(ok["success"], true);
        assert_eq!(ok["network"], "eip155:84532");
        assert_eq!(ok["transaction"], format!("{tx:#x}"));
        assert!(ok.get("errorReason").is_none());
        let failed = decode(settlement_header(
            Version::V1,
            Chain::BaseSepolia,
            None,
            payer,
            Some(Reason::SettlementFailed),
        ));
        assert_eq!(failed["success"], false);
        assert_eq!(failed["network"], "base-sepolia");
        assert_eq!(failed["transaction"], "");
        assert_eq!(failed["errorReason"], "settlement_failed");
    }
}
