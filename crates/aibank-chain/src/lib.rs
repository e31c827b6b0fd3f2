//! The EVM chains aibank talks to, their JSON-RPC endpoints, and the one transaction
//! sender everything aibank sends on chain goes through: payments are accepted on Base and
//! Base Sepolia; wallets also send on Ethereum.

mod endpoint;
mod sender;

use aibank_core::SecretString;
use alloy::primitives::address;

pub use alloy::primitives::{Address, Bytes, B256, U256};
pub use alloy::signers::local::PrivateKeySigner;
pub use endpoint::{redact_urls, CallError, Endpoint};
pub use sender::{abi_call, Call, ChainRpc, Mined, RpcError, SendError, Sent, Signed, TxRecord};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    Ethereum,
    Base,
    BaseSepolia,
}

impl Chain {
    pub const ALL: [Chain; 3] = [Chain::Ethereum, Chain::Base, Chain::BaseSepolia];

    /// Whether x402 payments may be made on this chain.
    pub fn accepts_payments(self) -> bool {
        self != Chain::Ethereum
    }

    /// The name used in `X-Payment-Chain`, in x402's `network` and in wallet requests.
    pub fn name(self) -> &'static str {
        match self {
            Chain::Ethereum => "ethereum",
            Chain::Base => "base",
            Chain::BaseSepolia => "base-sepolia",
        }
    }

    pub fn chain_id(self) -> u64 {
        match self {
            Chain::Ethereum => 1,
            Chain::Base => 8453,
            Chain::BaseSepolia => 84532,
        }
    }

    /// Circle's USDC contract on this chain.
    pub fn default_usdc(self) -> Address {
        match self {
            Chain::Ethereum => address!("A0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"),
            Chain::Base => address!("833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"),
            Chain::BaseSepolia => address!("036CbD53842c5426634e7929541eC2318f3dCF7e"),
        }
    }

    pub fn parse(s: &str) -> Option<Chain> {
        Chain::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s.trim()))
    }
}

/// One chain with an RPC endpoint, as payments and wallets are configured with it.
#[derive(Debug, Clone)]
pub struct ChainConfig {
    pub chain: Chain,
    /// May embed a provider's API key, hence secret.
    pub rpc_url: SecretString,
    pub usdc: Address,
    /// The token's EIP-712 domain, which signed (EIP-3009) payments are made in.
    pub usdc_domain: TokenDomain,
}

/// A token's EIP-712 domain name and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenDomain {
    pub name: String,
    pub version: String,
}

impl TokenDomain {
    /// Circle's USDC domain on `chain`: "USD Coin" on Base and Ethereum, "USDC" on Base
    /// Sepolia, version "2" on each.
    pub fn usdc(chain: Chain) -> TokenDomain {
        let name = match chain {
            Chain::BaseSepolia => "USDC",
            Chain::Base | Chain::Ethereum => "USD Coin",
        };
        TokenDomain {
            name: name.to_owned(),
            version: "2".to_owned(),
        }
    }
}
