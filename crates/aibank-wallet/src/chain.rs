//! One chain's JSON-RPC endpoint, as wallets use it: balances, nonces, gas, signed sends
//! and receipts.

use std::time::Duration;

use aibank_x402::{CallError, Chain, Endpoint};
use alloy::eips::eip2718::Encodable2718;
use alloy::network::{EthereumWallet, TransactionBuilder};
use alloy::primitives::{Address, Bytes, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use alloy::transports::{RpcError as AlloyRpcError, TransportErrorKind};

use crate::Currency;

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

/// A receipt, as far as a transfer cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mined {
    pub success: bool,
    pub block_number: u64,
}

/// A signed transaction, ready to broadcast.
pub struct Signed {
    pub hash: B256,
    raw: Vec<u8>,
}

/// `transfer(address,uint256)`.
const TRANSFER_SELECTOR: [u8; 4] = [0xa9, 0x05, 0x9c, 0xbb];
/// `balanceOf(address)`.
const BALANCE_OF_SELECTOR: [u8; 4] = [0x70, 0xa0, 0x82, 0x31];

fn abi_call(selector: [u8; 4], words: &[B256]) -> Bytes {
    let mut data = selector.to_vec();
    for w in words {
        data.extend_from_slice(w.as_slice());
    }
    data.into()
}

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

    pub async fn balance(&self, currency: Currency, who: Address) -> Result<U256, RpcError> {
        match currency {
            Currency::Eth => self.native_balance(who).await,
            Currency::Usdc => self.usdc_balance(who).await,
        }
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

    /// Builds, prices (gas estimate and EIP-1559 fees) and signs a transfer.
    pub async fn sign_transfer(
        &self,
        signer: PrivateKeySigner,
        currency: Currency,
        to: Address,
        amount: U256,
        nonce: u64,
    ) -> Result<Signed, RpcError> {
        let from = signer.address();
        let tx = match currency {
            Currency::Eth => TransactionRequest::default().with_to(to).with_value(amount),
            Currency::Usdc => {
                TransactionRequest::default()
                    .with_to(self.usdc)
                    .with_input(abi_call(
                        TRANSFER_SELECTOR,
                        &[to.into_word(), B256::from(amount)],
                    ))
            }
        }
        .with_from(from)
        .with_chain_id(self.chain.chain_id())
        .with_nonce(nonce);
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
        let tx = tx
            .with_gas_limit(gas)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas);
        let envelope =
            tx.build(&EthereumWallet::from(signer))
                .await
                .map_err(|e| RpcError::Rejected {
                    chain: self.chain.name(),
                    message: format!("could not sign: {e}"),
                })?;
        Ok(Signed {
            hash: *envelope.tx_hash(),
            raw: envelope.encoded_2718(),
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
