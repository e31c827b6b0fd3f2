//! The chains payments are accepted on.

use alloy::primitives::{address, Address};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chain {
    Base,
    BaseSepolia,
}

impl Chain {
    pub const ALL: [Chain; 2] = [Chain::Base, Chain::BaseSepolia];

    /// The name used in `X-Payment-Chain` and in x402's `network`.
    pub fn name(self) -> &'static str {
        match self {
            Chain::Base => "base",
            Chain::BaseSepolia => "base-sepolia",
        }
    }

    pub fn chain_id(self) -> u64 {
        match self {
            Chain::Base => 8453,
            Chain::BaseSepolia => 84532,
        }
    }

    /// Circle's USDC contract on this chain.
    pub fn default_usdc(self) -> Address {
        match self {
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
