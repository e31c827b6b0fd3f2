//! Sending transactions on one chain: EIP-1559 transactions to an account or a contract,
//! with nonces from the caller's durable record, priced from the node's estimates, signed
//! with a key the caller holds, broadcast and followed to their receipts; and the reads
//! that go with it (balances, nonces). Wallet transfers and anything else aibank sends go
//! through [`ChainRpc::send`], so all of them get nonces, fees and receipts the same way.

use std::time::Duration;

use alloy::consensus::{SignableTransaction as _, Transaction as _, TxEnvelope};
use alloy::eips::eip1559::Eip1559Estimation;
use alloy::eips::eip2718::{Decodable2718 as _, Encodable2718};
use alloy::network::{TransactionBuilder, TxSignerSync as _};
use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError as AlloyRpcError, TransportErrorKind};

use crate::{CallError, Chain, Endpoint};

/// What went wrong talking to a chain.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// The endpoint could not be reached or did not answer in time: nothing is known.
    #[error("{chain} RPC unavailable: {message}")]
    Unavailable {
        chain: &'static str,
        message: String,
    },
    /// The node answered and refused (an invalid transaction, a revert in estimation).
    #[error("{chain} refused the transaction: {message}")]
    Rejected {
        chain: &'static str,
        message: String,
    },
}

/// A receipt, as far as a sender cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mined {
    pub success: bool,
    pub block_number: u64,
}

/// What a transaction does: where it goes, the wei it carries and its calldata. One shape
/// for plain ETH transfers, ERC-20 transfers and any other contract call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub to: Address,
    pub value: U256,
    pub input: Bytes,
}

/// `transfer(address,uint256)`.
const TRANSFER_SELECTOR: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// `balanceOf(address)`.
const BALANCE_OF_SELECTOR: [u8; 4] = [0x70, 0xa0, 0x82, 0x31];

/// ABI calldata for a function whose arguments are all static 32-byte words.
pub fn abi_call(selector: [u8; 4], words: &[B256]) -> Bytes {
    let mut data = selector.to_vec();
    for w in words {
        data.extend_from_slice(w.as_slice());
    }
    data.into()
}

impl Call {
    /// `value` wei to `to`.
    pub fn native(to: Address, value: U256) -> Call {
        Call {
            to,
            value,
            input: Bytes::new(),
        }
    }

    /// `token.transfer(to, amount)`.
    pub fn erc20_transfer(token: Address, to: Address, amount: U256) -> Call {
        Call::contract(
            token,
            abi_call(TRANSFER_SELECTOR, &[to.into_word(), B256::from(amount)]),
        )
    }

    /// A call of `contract` with ABI-encoded `input`, carrying no ETH.
    pub fn contract(contract: Address, input: Bytes) -> Call {
        Call {
            to: contract,
            value: U256::ZERO,
            input,
        }
    }
}

/// A signed transaction, ready to broadcast.
#[derive(Debug, Clone)]
pub struct Signed {
    pub hash: B256,
    pub nonce: u64,
    raw: Vec<u8>,
}

impl Signed {
    /// The signed transaction's bytes (EIP-2718), for keeping it to send again.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// A transaction signed earlier, from its bytes.
    pub fn from_raw(raw: Vec<u8>) -> Result<Signed, String> {
        let envelope = TxEnvelope::decode_2718(&mut raw.as_slice()).map_err(|e| e.to_string())?;
        Ok(Signed {
            hash: *envelope.tx_hash(),
            nonce: envelope.nonce(),
            raw,
        })
    }
}

/// The unpriced transaction for `call` from `from`; value and input are left out when
/// empty, as a node expects of a plain transfer or a call without ETH.
fn request(chain: Chain, from: Address, call: &Call, nonce: u64) -> TransactionRequest {
    let mut tx = TransactionRequest::default().with_to(call.to);
    if !call.value.is_zero() {
        tx = tx.with_value(call.value);
    }
    if !call.input.is_empty() {
        tx = tx.with_input(call.input.clone());
    }
    tx.with_from(from)
        .with_chain_id(chain.chain_id())
        .with_nonce(nonce)
}

/// Prices `tx` as EIP-1559 and signs it; no RPC involved.
fn sign_priced(
    tx: TransactionRequest,
    gas: u64,
    fees: Eip1559Estimation,
    signer: &PrivateKeySigner,
) -> Result<Signed, String> {
    let mut unsigned = tx
        .with_gas_limit(gas)
        .with_max_fee_per_gas(fees.max_fee_per_gas)
        .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas)
        .build_unsigned()
        .map_err(|e| e.to_string())?;
    let signature = signer
        .sign_transaction_sync(&mut unsigned)
        .map_err(|e| e.to_string())?;
    let nonce = unsigned.nonce();
    let envelope: TxEnvelope = unsigned.into_signed(signature).into();
    Ok(Signed {
        hash: *envelope.tx_hash(),
        nonce,
        raw: envelope.encoded_2718(),
    })
}

/// The caller's durable record of a transaction it sends with [`ChainRpc::send`].
///
/// The node alone cannot hand out nonces: it does not count a transaction signed and not
/// yet broadcast, so two sends from one account (on any instance) could get the same one.
/// The caller's records can, and they hold the hash before the broadcast, so a
/// transaction that may be on chain is never missing from them.
pub trait TxRecord {
    type Error;

    /// This transaction's nonce, allocated durably: at least `chain_nonce` (what the node
    /// counts, mined and pooled) and held by no other unsettled transaction of the account.
    fn take_nonce(
        &mut self,
        chain_nonce: u64,
    ) -> impl std::future::Future<Output = Result<u64, Self::Error>> + Send;

    /// Records the signed transaction's hash; it is broadcast only once this succeeded.
    fn signed(
        &mut self,
        hash: B256,
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send;
}

/// Why [`ChainRpc::send`] did not broadcast, or does not know whether it did.
#[derive(Debug, thiserror::Error)]
pub enum SendError<E> {
    /// Nothing reached the chain: the node could not be asked before signing, or it refused
    /// the transaction (in estimation or at broadcast). A recorded hash is void.
    #[error("{0}")]
    NotSent(RpcError),
    /// No nonce was allocated; nothing was signed.
    #[error("no nonce could be allocated: {0}")]
    Nonce(E),
    /// The signed transaction could not be recorded, so it was not broadcast.
    #[error("the signed transaction could not be recorded: {0}")]
    Record(E),
    /// The broadcast went unanswered: the node may or may not have the transaction, whose
    /// nonce and hash are on record.
    #[error("{0}")]
    Unknown(RpcError),
}

/// A broadcast transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub hash: B256,
    pub nonce: u64,
}

/// One chain's JSON-RPC endpoint and its USDC contract, as senders use them.
pub struct ChainRpc {
    pub chain: Chain,
    pub usdc: Address,
    endpoint: Endpoint,
}

impl std::fmt::Debug for ChainRpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainRpc")
            .field("chain", &self.chain)
            .field("usdc", &self.usdc)
            .finish_non_exhaustive()
    }
}

impl ChainRpc {
    pub fn new(
        chain: Chain,
        rpc_url: &str,
        usdc: Address,
        timeout: Duration,
    ) -> Result<Self, String> {
        Ok(ChainRpc {
            chain,
            usdc,
            endpoint: Endpoint::new(chain, rpc_url, timeout)?,
        })
    }

    fn failed(&self, e: CallError) -> RpcError {
        let chain = self.chain.name();
        match e {
            CallError::Refused(message) => RpcError::Rejected { chain, message },
            other => RpcError::Unavailable {
                chain,
                message: other.to_string(),
            },
        }
    }

    /// Runs one RPC call within the timeout; a JSON-RPC error answer is a refusal, anything
    /// else that fails leaves the outcome unknown.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl std::future::IntoFuture<Output = Result<T, AlloyRpcError<TransportErrorKind>>>,
    ) -> Result<T, RpcError> {
        self.endpoint
            .call(what, fut)
            .await
            .map_err(|e| self.failed(e))
    }

    /// Checks (once per process, while it matches) that the endpoint serves this chain, so
    /// a misconfigured URL never gets a transaction signed for another chain.
    pub async fn check_chain(&self) -> Result<(), RpcError> {
        // A wrong chain is the endpoint's misconfiguration: unavailable, never a refusal.
        self.endpoint
            .check_chain()
            .await
            .map_err(|e| self.failed(e))
    }

    pub async fn native_balance(&self, who: Address) -> Result<U256, RpcError> {
        self.call("eth_getBalance", self.endpoint.provider().get_balance(who))
            .await
    }

    pub async fn usdc_balance(&self, who: Address) -> Result<U256, RpcError> {
        let tx = TransactionRequest::default()
            .with_to(self.usdc)
            .with_input(abi_call(BALANCE_OF_SELECTOR, &[who.into_word()]));
        let out = self
            .call("eth_call", self.endpoint.provider().call(tx))
            .await?;
        if out.len() != 32 {
            return Err(RpcError::Rejected {
                chain: self.chain.name(),
                message: format!("the USDC contract {} answered balanceOf with {} bytes; is it deployed on this chain?", self.usdc, out.len()),
            });
        }
        Ok(U256::from_be_slice(&out))
    }

    /// `eth_call` of `input` on `to`, on the latest block: what it returned.
    pub async fn view(&self, to: Address, input: Bytes) -> Result<Bytes, RpcError> {
        let tx = TransactionRequest::default().with_to(to).with_input(input);
        self.call("eth_call", self.endpoint.provider().call(tx))
            .await
    }

    /// The chain's latest block number.
    pub async fn block_number(&self) -> Result<u64, RpcError> {
        self.call(
            "eth_blockNumber",
            self.endpoint.provider().get_block_number(),
        )
        .await
    }

    /// The account's next nonce, counting transactions still in the node's pool.
    pub async fn pending_nonce(&self, who: Address) -> Result<u64, RpcError> {
        self.call(
            "eth_getTransactionCount",
            self.endpoint
                .provider()
                .get_transaction_count(who)
                .pending(),
        )
        .await
    }

    /// Builds, prices (gas estimate and EIP-1559 fees) and signs `call` from the signer's
    /// account with `nonce`. The key is only borrowed: a long-lived key signs many.
    pub async fn sign(
        &self,
        signer: &PrivateKeySigner,
        call: &Call,
        nonce: u64,
    ) -> Result<Signed, RpcError> {
        let tx = request(self.chain, signer.address(), call, nonce);
        let gas = self
            .call(
                "eth_estimateGas",
                self.endpoint.provider().estimate_gas(tx.clone()),
            )
            .await?;
        let fees = self
            .call(
                "eth_feeHistory",
                self.endpoint.provider().estimate_eip1559_fees(),
            )
            .await?;
        sign_priced(tx, gas, fees, signer).map_err(|e| RpcError::Rejected {
            chain: self.chain.name(),
            message: format!("could not sign: {e}"),
        })
    }

    pub async fn broadcast(&self, signed: &Signed) -> Result<(), RpcError> {
        self.call(
            "eth_sendRawTransaction",
            self.endpoint.provider().send_raw_transaction(&signed.raw),
        )
        .await
        .map(|_| ())
    }

    /// Sends `call` from the signer's account: checks the chain, takes a nonce from
    /// `record` at or above the node's pending count, prices and signs, records the hash,
    /// broadcasts. Await the receipt with [`ChainRpc::wait_mined`].
    pub async fn send<R: TxRecord>(
        &self,
        signer: &PrivateKeySigner,
        call: &Call,
        record: &mut R,
    ) -> Result<Sent, SendError<R::Error>> {
        self.check_chain().await.map_err(SendError::NotSent)?;
        let chain_nonce = self
            .pending_nonce(signer.address())
            .await
            .map_err(SendError::NotSent)?;
        let nonce = record
            .take_nonce(chain_nonce)
            .await
            .map_err(SendError::Nonce)?;
        let tx = self
            .sign(signer, call, nonce)
            .await
            .map_err(SendError::NotSent)?;
        record.signed(tx.hash).await.map_err(SendError::Record)?;
        match self.broadcast(&tx).await {
            Ok(()) => Ok(Sent {
                hash: tx.hash,
                nonce,
            }),
            Err(e @ RpcError::Rejected { .. }) => Err(SendError::NotSent(e)),
            Err(e) => Err(SendError::Unknown(e)),
        }
    }

    pub async fn receipt(&self, hash: B256) -> Result<Option<Mined>, RpcError> {
        let r = self
            .call(
                "eth_getTransactionReceipt",
                self.endpoint.provider().get_transaction_receipt(hash),
            )
            .await?;
        Ok(r.and_then(|r| {
            Some(Mined {
                success: r.status(),
                block_number: r.block_number?,
            })
        }))
    }

    /// Polls for the receipt until `wait` has passed.
    pub async fn wait_mined(&self, hash: B256, wait: Duration) -> Result<Option<Mined>, RpcError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut every = Duration::from_millis(50);
        loop {
            if let Some(m) = self.receipt(hash).await? {
                return Ok(Some(m));
            }
            if tokio::time::Instant::now() + every > deadline {
                return Ok(None);
            }
            tokio::time::sleep(every).await;
            every = (every * 2).min(Duration::from_secs(1));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use alloy::eips::eip2718::Decodable2718;
    use alloy::primitives::{address, bytes};

    #[test]
    fn erc20_transfers_are_abi_encoded() {
        let token = address!("036CbD53842c5426634e7929541eC2318f3dCF7e");
        let to = address!("00000000000000000000000000000000000000aa");
        let call = Call::erc20_transfer(token, to, U256::from(1_500_000u64));
        assert_eq!(call.to, token);
        assert_eq!(call.value, U256::ZERO);
        assert_eq!(
            call.input,
            bytes!(
                "a9059cbb"
                "00000000000000000000000000000000000000000000000000000000000000aa"
                "000000000000000000000000000000000000000000000000000000000016e360"
            )
        );
    }

    #[test]
    fn a_contract_call_is_signed_as_eip1559_with_its_calldata() {
        let key = PrivateKeySigner::from_bytes(&B256::repeat_byte(0x11)).unwrap();
        let token = Chain::BaseSepolia.default_usdc();
        let input = bytes!("e3ee160e0102030405");
        let call = Call::contract(token, input.clone());
        let fees = Eip1559Estimation {
            max_fee_per_gas: 2_000_000_000,
            max_priority_fee_per_gas: 1_000_000,
        };
        let tx = request(Chain::BaseSepolia, key.address(), &call, 7);
        let signed = sign_priced(tx, 90_000, fees, &key).unwrap();
        assert_eq!(signed.nonce, 7);

        let envelope = TxEnvelope::decode_2718(&mut signed.raw.as_slice()).unwrap();
        assert_eq!(*envelope.tx_hash(), signed.hash);
        let tx = envelope.as_eip1559().unwrap();
        assert_eq!(tx.recover_signer().unwrap(), key.address());
        let tx = tx.tx();
        assert_eq!(tx.chain_id, Chain::BaseSepolia.chain_id());
        assert_eq!(tx.nonce, 7);
        assert_eq!(tx.to, token.into());
        assert_eq!(tx.value, U256::ZERO);
        assert_eq!(tx.input, input);
        assert_eq!(tx.gas_limit, 90_000);
        assert_eq!(tx.max_fee_per_gas, 2_000_000_000);
        assert_eq!(tx.max_priority_fee_per_gas, 1_000_000);

        let native = Call::native(token, U256::from(5u64));
        let tx = request(Chain::Base, key.address(), &native, 0);
        assert_eq!(tx.input.input(), None);
        assert_eq!(tx.value, Some(U256::from(5u64)));
    }
}
