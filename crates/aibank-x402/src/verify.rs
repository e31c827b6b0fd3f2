//! Reading a USDC payment off the chain: the receipt, its `Transfer` logs, confirmations
//! and age, through each chain's JSON-RPC endpoint.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aibank_chain::{CallError, Chain, Endpoint};
use alloy::eips::BlockNumberOrTag;
use alloy::network::ReceiptResponse as _;
use alloy::primitives::{b256, Address, Signature, B256, U256};
use alloy::providers::Provider;

/// `keccak256("Transfer(address,address,uint256)")`.
pub const TRANSFER_TOPIC: B256 =
    b256!("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");

/// Why a payment was not accepted. Each is final for this hash except
/// [`Refused::NotEnoughConfirmations`] (wait and retry) and [`Refused::NotFound`] (it may
/// not be mined yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("transaction {hash} was not found on {chain}")]
    NotFound { chain: &'static str, hash: B256 },
    #[error("transaction {hash} reverted on {chain}: nothing was transferred")]
    Reverted { chain: &'static str, hash: B256 },
    #[error("the RPC endpoint for {chain} serves chain id {actual}, not {expected}")]
    WrongChain {
        chain: &'static str,
        expected: u64,
        actual: u64,
    },
    #[error("transaction {hash} transfers no USDC (token {usdc} on {chain})")]
    WrongToken {
        chain: &'static str,
        hash: B256,
        usdc: Address,
    },
    #[error("transaction {hash} transfers no USDC to {pay_to}")]
    WrongRecipient { hash: B256, pay_to: Address },
    #[error("transaction {hash} pays {paid} USDC base units; this call needs {required}")]
    Underpaid {
        hash: B256,
        paid: U256,
        required: U256,
    },
    #[error(
        "transaction {hash} is {age_secs} s old; payments older than {max_secs} s are refused"
    )]
    TooOld {
        hash: B256,
        age_secs: u64,
        max_secs: u64,
    },
    #[error("transaction {hash} has {have} confirmation(s); {need} are required: retry shortly")]
    NotEnoughConfirmations { hash: B256, have: u64, need: u64 },
    #[error("X-Payment-Signature is required: an EIP-191 signature of the transaction hash by the payer {payer}")]
    SignatureMissing { payer: Address },
    #[error("X-Payment-Signature is not a signature of the transaction hash by the payer {payer}")]
    SignatureInvalid { payer: Address },
}

impl Refused {
    /// The machine-readable reason, sent as `reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refused::NotFound { .. } => "not_found",
            Refused::Reverted { .. } => "reverted",
            Refused::WrongChain { .. } => "wrong_chain",
            Refused::WrongToken { .. } => "wrong_token",
            Refused::WrongRecipient { .. } => "wrong_recipient",
            Refused::Underpaid { .. } => "underpaid",
            Refused::TooOld { .. } => "too_old",
            Refused::NotEnoughConfirmations { .. } => "not_enough_confirmations",
            Refused::SignatureMissing { .. } => "signature_missing",
            Refused::SignatureInvalid { .. } => "signature_invalid",
        }
    }
}

/// Verification could not complete: the hash was neither accepted nor refused.
#[derive(Debug, thiserror::Error)]
#[error("{chain} RPC: {message}")]
pub struct Unavailable {
    pub chain: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Refused(#[from] Refused),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// What the chain says about one USDC payment to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub chain: Chain,
    pub hash: B256,
    /// The `from` of the (first) USDC transfer to us.
    pub payer: Address,
    /// The sum of the USDC transfers from the payer to us in this transaction.
    pub amount: U256,
    pub block_number: u64,
    pub block_time: u64,
    /// The transfer settled a standard (EIP-3009) payment this server sent itself.
    pub authorized: bool,
}

/// What a payment must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    pub pay_to: Address,
    pub min_amount: U256,
    pub confirmations: u64,
    pub max_age: Option<Duration>,
    /// Seconds since the epoch, for the age check.
    pub now_secs: u64,
}

/// A mined USDC transfer receipt, as far as payments care. Receipts do not change once
/// mined, so they are remembered; only the confirmation count is read again.
#[derive(Debug, Clone)]
struct Seen {
    success: bool,
    block_number: u64,
    block_time: u64,
    /// (token, from, to, value) of every `Transfer` log.
    transfers: Vec<(Address, Address, Address, U256)>,
}

/// One chain's RPC endpoint and its USDC contract.
pub struct ChainClient {
    pub chain: Chain,
    pub usdc: Address,
    endpoint: Endpoint,
    seen: Mutex<HashMap<B256, Seen>>,
}

impl std::fmt::Debug for ChainClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainClient")
            .field("chain", &self.chain)
            .field("usdc", &self.usdc)
            .finish_non_exhaustive()
    }
}

const SEEN_CAP: usize = 100_000;

impl ChainClient {
    pub fn new(
        chain: Chain,
        rpc_url: &str,
        usdc: Address,
        timeout: Duration,
    ) -> Result<Self, String> {
        Ok(ChainClient {
            chain,
            usdc,
            endpoint: Endpoint::new(chain, rpc_url, timeout)?,
            seen: Mutex::new(HashMap::new()),
        })
    }

    fn unavailable(&self, message: impl std::fmt::Display) -> Unavailable {
        Unavailable {
            chain: self.chain.name(),
            message: message.to_string(),
        }
    }

    /// Runs one RPC call within the timeout; any failure leaves the payment unverified.
    async fn call<T>(
        &self,
        what: &str,
        fut: impl std::future::IntoFuture<
            Output = Result<T, alloy::transports::RpcError<alloy::transports::TransportErrorKind>>,
        >,
    ) -> Result<T, Unavailable> {
        self.endpoint
            .call(what, fut)
            .await
            .map_err(|e| self.unavailable(e))
    }

    /// Checks (once per process, while it matches) that the endpoint serves this chain.
    async fn check_chain_id(&self) -> Result<(), VerifyError> {
        match self.endpoint.check_chain().await {
            Ok(()) => Ok(()),
            Err(CallError::WrongChain { expected, actual }) => Err(Refused::WrongChain {
                chain: self.chain.name(),
                expected,
                actual,
            }
            .into()),
            Err(e) => Err(self.unavailable(e).into()),
        }
    }

    async fn receipt(&self, hash: B256) -> Result<Seen, VerifyError> {
        if let Some(s) = self.remembered(hash) {
            return Ok(s);
        }
        let receipt = self
            .call(
                "eth_getTransactionReceipt",
                self.endpoint.provider().get_transaction_receipt(hash),
            )
            .await?;
        let Some(receipt) = receipt else {
            return Err(Refused::NotFound {
                chain: self.chain.name(),
                hash,
            }
            .into());
        };
        let Some(block_number) = receipt.block_number() else {
            return Err(Refused::NotFound {
                chain: self.chain.name(),
                hash,
            }
            .into());
        };
        let block = self
            .call(
                "eth_getBlockByNumber",
                self.endpoint
                    .provider()
                    .get_block_by_number(BlockNumberOrTag::Number(block_number)),
            )
            .await?
            .ok_or_else(|| self.unavailable(format!("block {block_number} is missing")))?;
        let transfers = receipt
            .inner
            .logs()
            .iter()
            .filter_map(|log| {
                let topics = log.topics();
                if topics.len() != 3 || topics[0] != TRANSFER_TOPIC || log.data().data.len() != 32 {
                    return None;
                }
                Some((
                    log.address(),
                    Address::from_word(topics[1]),
                    Address::from_word(topics[2]),
                    U256::from_be_slice(&log.data().data),
                ))
            })
            .collect();
        let seen = Seen {
            success: receipt.status(),
            block_number,
            block_time: block.header.timestamp,
            transfers,
        };
        let mut map = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= SEEN_CAP {
            map.clear();
        }
        map.insert(hash, seen.clone());
        Ok(seen)
    }

    fn remembered(&self, hash: B256) -> Option<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&hash)
            .cloned()
    }

    /// Verifies that `hash` is a successful, confirmed, recent enough transaction that
    /// transfers at least the required USDC to `pay_to`.
    pub async fn verify(&self, hash: B256, req: &Requirement) -> Result<Transfer, VerifyError> {
        self.check_chain_id().await?;
        let seen = self.receipt(hash).await?;
        if !seen.success {
            return Err(Refused::Reverted {
                chain: self.chain.name(),
                hash,
            }
            .into());
        }
        let usdc: Vec<_> = seen
            .transfers
            .iter()
            .filter(|(token, ..)| *token == self.usdc)
            .collect();
        if usdc.is_empty() {
            return Err(Refused::WrongToken {
                chain: self.chain.name(),
                hash,
                usdc: self.usdc,
            }
            .into());
        }
        let Some(&&(_, payer, _, _)) = usdc.iter().find(|(_, _, to, _)| *to == req.pay_to) else {
            return Err(Refused::WrongRecipient {
                hash,
                pay_to: req.pay_to,
            }
            .into());
        };
        let amount = usdc
            .iter()
            .filter(|(_, from, to, _)| *from == payer && *to == req.pay_to)
            .fold(U256::ZERO, |sum, (.., v)| sum.saturating_add(*v));
        if amount < req.min_amount {
            return Err(Refused::Underpaid {
                hash,
                paid: amount,
                required: req.min_amount,
            }
            .into());
        }
        if let Some(max) = req.max_age {
            let age = req.now_secs.saturating_sub(seen.block_time);
            if age > max.as_secs() {
                return Err(Refused::TooOld {
                    hash,
                    age_secs: age,
                    max_secs: max.as_secs(),
                }
                .into());
            }
        }
        if req.confirmations > 1 {
            let head = self
                .call(
                    "eth_blockNumber",
                    self.endpoint.provider().get_block_number(),
                )
                .await?;
            let have = head.saturating_sub(seen.block_number) + 1;
            if have < req.confirmations {
                return Err(Refused::NotEnoughConfirmations {
                    hash,
                    have,
                    need: req.confirmations,
                }
                .into());
            }
        }
        Ok(Transfer {
            chain: self.chain,
            hash,
            payer,
            amount,
            block_number: seen.block_number,
            block_time: seen.block_time,
            authorized: false,
        })
    }
}

/// Whether `signature` (65 bytes, hex) is an EIP-191 signature of the 32 bytes of `hash` by
/// `payer`: what `cast wallet sign <hash>` or `eth_sign` produce.
pub fn signed_by(hash: B256, signature: &str, payer: Address) -> bool {
    signature
        .trim()
        .parse::<Signature>()
        .ok()
        .and_then(|s| s.recover_address_from_msg(hash.as_slice()).ok())
        == Some(payer)
}
