//! Settling standard (`exact`) payments: aibank itself sends the payer's EIP-3009
//! authorization to the token (`transferWithAuthorization`), from its settlement account,
//! and waits for the receipt before anything is served.
//!
//! An authorization is claimed in the database (its chain, payer and nonce) before its
//! settlement is signed, and the signed settlement is stored before it is sent. So however
//! often, and however concurrently, the same authorization is presented, on any instance,
//! it is sent once; a later presentation resolves it from the chain (sending the stored
//! transaction again if the node lost it), and the payment pays for one request once (the
//! settlement's hash is the payment's key in `x402_payments`).

use std::time::Duration;

use aibank_chain::{Call, ChainRpc, RpcError, Signed as SignedTx};
use aibank_core::ApiError;
use aibank_store::models::Authorization as Claim;
use aibank_store::repo::payments::{self as repo, AUTH_FAILED, AUTH_SETTLING};
use aibank_store::{DbPool, StoreError};
use alloy::primitives::{Address, B256, U256};
use alloy::signers::local::PrivateKeySigner;
use alloy::sol_types::SolCall;
use http::header::{HeaderName, HeaderValue};

use crate::exact::{
    authorizationStateCall, balanceOfCall, settlement_header, transferWithAuthorizationCall, Offer,
    Reason, Refusal, Signed,
};
use crate::{Challenge, Transfer, X402};

/// A settled standard payment.
#[derive(Debug, Clone)]
pub struct Settled {
    pub transfer: Transfer,
    /// Its authorization's key (chain, payer, nonce), marked settled when it is accepted.
    pub authorization: (String, String, String),
    /// `PAYMENT-RESPONSE` (v2) or `X-PAYMENT-RESPONSE` (v1).
    pub header: (HeaderName, HeaderValue),
}

/// The settlement account and its connection to one chain.
pub(crate) struct Settler {
    pub(crate) rpc: ChainRpc,
    pub(crate) key: PrivateKeySigner,
    /// How long a settlement's receipt is waited for before the request is answered that
    /// it is pending.
    pub(crate) wait: Duration,
}

impl std::fmt::Debug for Settler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settler")
            .field("chain", &self.rpc.chain)
            .field("address", &self.key.address())
            .finish_non_exhaustive()
    }
}

fn hex(bytes: &[u8]) -> String {
    alloy::hex::encode(bytes)
}

fn lower(a: Address) -> String {
    hex(a.as_slice())
}

fn secs(now_ms: i64) -> u64 {
    u64::try_from(now_ms / 1000).unwrap_or(0)
}

fn store(e: StoreError) -> ApiError {
    ApiError::from(e)
}

fn unavailable(e: &RpcError) -> ApiError {
    tracing::warn!(error = %e, "x402 settlement: chain unavailable");
    ApiError::unavailable(
        "Payment settlement is unavailable: the chain's RPC endpoint did not answer. Nothing was charged; send the same payment again shortly.",
    )
}

fn pending(hash: B256) -> ApiError {
    ApiError::unavailable(format!(
        "The payment's settlement {hash:#x} is not mined yet. Send the same payment again to be served once it is; it is never settled twice."
    ))
    .with("transaction", format!("{hash:#x}"))
}

impl X402 {
    /// Checks a standard payment, and settles it on chain (or resolves an earlier
    /// settlement of the same authorization): the transfer it made, once mined.
    pub async fn settle(
        &self,
        pool: &DbPool,
        signed: &Signed,
        challenge: &Challenge,
        resource: &str,
        now_ms: i64,
    ) -> Result<Settled, ApiError> {
        let refuse = |r: Refusal| challenge.refuse(&r);
        let offer = signed
            .check(&challenge.offers, secs(now_ms))
            .map_err(refuse)?;
        let settler = self
            .settler(offer.chain)
            .ok_or_else(|| ApiError::internal("no settlement account for an offered chain"))?;
        let a = signed.authorization;
        let key = (
            offer.chain.name().to_owned(),
            lower(a.from),
            hex(a.nonce.as_slice()),
        );
        let find = {
            let key = key.clone();
            move || {
                let key = key.clone();
                pool.run(move |c| {
                    repo::find_authorization(c, &key.0, &key.1, &key.2).map_err(StoreError::from)
                })
            }
        };
        if let Some(claim) = find().await.map_err(store)? {
            return self
                .resume(pool, claim, signed, offer, challenge, settler, now_ms)
                .await;
        }
        chain_checks(settler, signed, offer, challenge).await?;
        let claim = Claim {
            chain: key.0.clone(),
            payer: key.1.clone(),
            nonce: key.2.clone(),
            value_micros: i64::try_from(a.value).unwrap_or(i64::MAX),
            valid_before: i64::try_from(a.valid_before).unwrap_or(i64::MAX),
            status: AUTH_SETTLING.to_owned(),
            settle_nonce: None,
            tx_hash: None,
            raw_tx: None,
            resource: resource.to_owned(),
            created_at: now_ms,
            updated_at: now_ms,
        };
        let row = claim.clone();
        let claimed = pool
            .write(move |c| repo::claim_authorization(c, &row).map_err(StoreError::from))
            .await
            .map_err(store)?;
        if !claimed {
            // Presented at the same moment elsewhere: that request settles it.
            let Some(claim) = find().await.map_err(store)? else {
                return Err(ApiError::internal("a claimed authorization vanished"));
            };
            return self
                .resume(pool, claim, signed, offer, challenge, settler, now_ms)
                .await;
        }
        let tx = match self.sign(pool, &key, signed, offer, settler, now_ms).await {
            Ok(tx) => tx,
            Err(e) => {
                // Nothing was sent: the authorization may be presented again.
                let k = key.clone();
                let _ = pool
                    .write(move |c| {
                        repo::drop_unsent_claim(c, (&k.0, &k.1, &k.2)).map_err(StoreError::from)
                    })
                    .await;
                return Err(match e {
                    RpcError::Rejected { message, .. } => {
                        tracing::info!(error = %message, "x402 settlement refused in estimation");
                        Self::failed_answer(signed, offer, challenge, None)
                    }
                    e @ RpcError::Unavailable { .. } => unavailable(&e),
                });
            }
        };
        let (hash, raw) = (tx.hash, hex(tx.raw()));
        let k = key.clone();
        pool.write(move |c| {
            repo::set_settlement(c, (&k.0, &k.1, &k.2), &format!("{hash:#x}"), &raw, now_ms)
                .map_err(StoreError::from)
        })
        .await
        .map_err(store)?;
        self.send_and_wait(pool, &key, &tx, signed, offer, challenge, settler, now_ms)
            .await
    }

    /// The settlement of `signed`, signed with the next nonce of the settlement account.
    async fn sign(
        &self,
        pool: &DbPool,
        key: &(String, String, String),
        signed: &Signed,
        offer: &Offer,
        settler: &Settler,
        now_ms: i64,
    ) -> Result<SignedTx, RpcError> {
        // A misconfigured URL never gets a settlement signed for another chain.
        settler.rpc.check_chain().await?;
        let from = settler.key.address();
        let floor = settler.rpc.pending_nonce(from).await?;
        let k = key.clone();
        let address = lower(from);
        let nonce = pool
            .write(move |c| {
                repo::take_settler_nonce(
                    c,
                    (&k.0, &k.1, &k.2),
                    &address,
                    i64::try_from(floor).unwrap_or(i64::MAX),
                    now_ms,
                )
                .map_err(StoreError::from)
            })
            .await
            .map_err(|e| RpcError::Unavailable {
                chain: offer.chain.name(),
                message: format!("choosing the settlement's nonce: {e}"),
            })?;
        let a = signed.authorization;
        let sig = signed.signature;
        let input = transferWithAuthorizationCall {
            from: a.from,
            to: a.to,
            value: a.value,
            validAfter: a.valid_after,
            validBefore: a.valid_before,
            nonce: a.nonce,
            v: if sig.v() { 28 } else { 27 },
            r: sig.r().into(),
            s: sig.s().into(),
        }
        .abi_encode();
        settler
            .rpc
            .sign(
                &settler.key,
                &Call::contract(offer.asset, input.into()),
                u64::try_from(nonce).unwrap_or(0),
            )
            .await
    }

    /// Sends a signed settlement (again, if the node may have lost it) and waits for its
    /// receipt: the transfer once it succeeded.
    #[allow(clippy::too_many_arguments)]
    async fn send_and_wait(
        &self,
        pool: &DbPool,
        key: &(String, String, String),
        tx: &SignedTx,
        signed: &Signed,
        offer: &Offer,
        challenge: &Challenge,
        settler: &Settler,
        now_ms: i64,
    ) -> Result<Settled, ApiError> {
        if settler
            .rpc
            .receipt(tx.hash)
            .await
            .map_err(|e| unavailable(&e))?
            .is_none()
        {
            match settler.rpc.broadcast(tx).await {
                Ok(()) => {}
                Err(e @ RpcError::Unavailable { .. }) => return Err(unavailable(&e)),
                // Already in the pool, or already mined: the receipt tells.
                Err(RpcError::Rejected { message, .. }) => {
                    tracing::info!(tx = %tx.hash, error = %message, "x402 settlement not accepted by the node; looking for its receipt");
                }
            }
        }
        let mined = match settler.rpc.wait_mined(tx.hash, settler.wait).await {
            Ok(Some(m)) => m,
            Ok(None) => return Err(pending(tx.hash)),
            Err(e) => return Err(unavailable(&e)),
        };
        if !mined.success {
            let k = key.clone();
            pool.write(move |c| {
                repo::resolve_authorization(c, (&k.0, &k.1, &k.2), AUTH_FAILED, now_ms)
                    .map_err(StoreError::from)
            })
            .await
            .map_err(store)?;
            tracing::warn!(tx = %tx.hash, "x402 settlement reverted");
            return Err(Self::failed_answer(signed, offer, challenge, Some(tx.hash)));
        }
        self.confirmed(settler, mined.block_number).await?;
        let a = signed.authorization;
        let header = settlement_header(signed.version, offer.chain, Some(tx.hash), a.from, None);
        Ok(Settled {
            transfer: Transfer {
                chain: offer.chain,
                hash: tx.hash,
                payer: a.from,
                amount: a.value,
                block_number: mined.block_number,
                block_time: secs(now_ms),
                authorized: true,
            },
            authorization: key.clone(),
            header: (
                HeaderName::from_static(signed.version.response_header()),
                HeaderValue::from_str(&header).unwrap_or(HeaderValue::from_static("")),
            ),
        })
    }

    /// Waits until the settlement's block has the configured confirmations.
    async fn confirmed(&self, settler: &Settler, block: u64) -> Result<(), ApiError> {
        let need = self.settings.confirmations;
        if need <= 1 {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + settler.wait;
        loop {
            let head = settler
                .rpc
                .block_number()
                .await
                .map_err(|e| unavailable(&e))?;
            if head.saturating_sub(block) + 1 >= need {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(ApiError::unavailable(format!(
                    "The payment's settlement has {} of {need} confirmations; send the same payment again shortly.",
                    head.saturating_sub(block) + 1
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// An authorization presented before: its outcome, from the database and the chain.
    #[allow(clippy::too_many_arguments)]
    async fn resume(
        &self,
        pool: &DbPool,
        claim: Claim,
        signed: &Signed,
        offer: &Offer,
        challenge: &Challenge,
        settler: &Settler,
        now_ms: i64,
    ) -> Result<Settled, ApiError> {
        let key = (
            claim.chain.clone(),
            claim.payer.clone(),
            claim.nonce.clone(),
        );
        match claim.status.as_str() {
            AUTH_SETTLING => {}
            AUTH_FAILED => return Err(Self::failed_answer(signed, offer, challenge, None)),
            _ => {
                return Err(challenge.refuse(&Refusal {
                    reason: Reason::NonceUsed,
                    message: "this authorization already paid for a request".into(),
                }))
            }
        }
        let (Some(_), Some(raw)) = (&claim.tx_hash, &claim.raw_tx) else {
            return Err(challenge.refuse(&Refusal {
                reason: Reason::NonceUsed,
                message: "this authorization is being settled by another request".into(),
            }));
        };
        let raw = alloy::hex::decode(raw)
            .map_err(|_| ApiError::internal("a stored settlement is not hex"))?;
        let tx = SignedTx::from_raw(raw)
            .map_err(|e| ApiError::internal(format!("a stored settlement: {e}")))?;
        self.send_and_wait(pool, &key, &tx, signed, offer, challenge, settler, now_ms)
            .await
    }

    /// `402 PAYMENT_INVALID` (`settlement_failed`) with `success: false` in the payment
    /// response header.
    fn failed_answer(
        signed: &Signed,
        offer: &Offer,
        challenge: &Challenge,
        tx: Option<B256>,
    ) -> ApiError {
        let e = challenge.refuse(&Refusal {
            reason: Reason::SettlementFailed,
            message: "the payment's settlement failed on chain (the payer's funds or the authorization changed since it was checked); nothing was served".into(),
        });
        let header = settlement_header(
            signed.version,
            offer.chain,
            tx,
            signed.authorization.from,
            Some(Reason::SettlementFailed),
        );
        match HeaderValue::from_str(&header) {
            Ok(v) => e.with_header(HeaderName::from_static(signed.version.response_header()), v),
            Err(_) => e,
        }
    }
}

/// What the chain says of an authorization before it is taken: its nonce unused, the
/// payer's funds there.
async fn chain_checks(
    settler: &Settler,
    signed: &Signed,
    offer: &Offer,
    challenge: &Challenge,
) -> Result<(), ApiError> {
    let refuse = |r: Refusal| challenge.refuse(&r);
    let a = signed.authorization;
    let used = settler
        .rpc
        .view(
            offer.asset,
            authorizationStateCall {
                authorizer: a.from,
                nonce: a.nonce,
            }
            .abi_encode()
            .into(),
        )
        .await
        .map_err(|e| unavailable(&e))?;
    if used.get(31).copied().unwrap_or(0) != 0 {
        return Err(refuse(Refusal {
            reason: Reason::NonceUsed,
            message: "this authorization's nonce was already used on chain".into(),
        }));
    }
    let balance = settler
        .rpc
        .view(
            offer.asset,
            balanceOfCall { account: a.from }.abi_encode().into(),
        )
        .await
        .map_err(|e| unavailable(&e))?;
    if U256::from_be_slice(&balance) < a.value {
        return Err(refuse(Refusal {
            reason: Reason::InsufficientBalance,
            message: format!(
                "{} holds less than the {} USDC base units it authorizes",
                a.from.to_checksum(None),
                a.value
            ),
        }));
    }
    Ok(())
}

/// The settlement account of a standard payment's chain, if configured.
pub(crate) fn settlers(
    chains: &[crate::ChainConfig],
    key: Option<&aibank_core::SecretString>,
    timeout: Duration,
    wait: Duration,
) -> Result<Vec<Settler>, String> {
    let Some(key) = key else {
        return Ok(Vec::new());
    };
    let key = parse_settler_key(key.expose())?;
    chains
        .iter()
        .map(|c| {
            Ok(Settler {
                rpc: ChainRpc::new(c.chain, c.rpc_url.expose(), c.usdc, timeout)?,
                key: key.clone(),
                wait,
            })
        })
        .collect()
}

/// The settlement key: 32 bytes of hex, with or without `0x`. The message never repeats
/// the key.
pub fn parse_settler_key(text: &str) -> Result<PrivateKeySigner, String> {
    let t = text.trim();
    let t = t.strip_prefix("0x").unwrap_or(t);
    if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("AIBANK_X402_SETTLER_KEY must be a private key: 64 hex digits".into());
    }
    t.parse::<PrivateKeySigner>()
        .map_err(|_| "AIBANK_X402_SETTLER_KEY is not a valid secp256k1 private key".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settler_key_is_checked_and_never_echoed() {
        let key = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";
        assert_eq!(
            parse_settler_key(&format!("0x{key}")).unwrap().address(),
            alloy::primitives::address!("f39Fd6e51aad88F6F4ce6aB8827279cffFb92266")
        );
        for bad in ["", "0x12", &key[1..], &"0".repeat(64), &format!("{key}zz")] {
            let e = parse_settler_key(bad).unwrap_err();
            assert!(!e.contains(&key[8..40]), "{e}");
        }
    }
}
