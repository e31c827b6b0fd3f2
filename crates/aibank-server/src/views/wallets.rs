//! Wallets as the API shows them: ids and addresses, never a key.

use aibank_store::models::Wallet;
use serde::Serialize;

/// A wallet's public face: never a key.
#[derive(Debug, Serialize)]
pub struct WalletSummary {
    pub id: String,
    pub name: String,
    pub addresses: WalletAddresses,
}

#[derive(Debug, Serialize)]
pub struct WalletAddresses {
    pub ethereum: String,
    pub base: String,
    pub solana: String,
}

impl WalletSummary {
    pub fn of(w: &Wallet) -> Self {
        WalletSummary {
            id: w.id.clone(),
            name: w.name.clone(),
            addresses: WalletAddresses {
                ethereum: w.evm_address.clone(),
                base: w.evm_address.clone(),
                solana: w.solana_address.clone(),
            },
        }
    }
}
