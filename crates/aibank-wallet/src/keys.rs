//! Wallet keys: generated on the server, sealed at once, opened only to sign.
//!
//! Each wallet has one secp256k1 key (its address is the same on every EVM chain) and one
//! ed25519 key (its Solana address). Both are sealed with AES-256-GCM under
//! `AIBANK_SECRET_KEY`, with the wallet id and key type as associated data, so a sealed
//! key copied to another wallet's row does not open. Plaintext key bytes live only in
//! zeroizing buffers, and nothing here implements `Debug` or `Serialize` over them.

use aibank_core::SecretBox;
use alloy::primitives::B256;
use alloy::signers::local::PrivateKeySigner;
use zeroize::Zeroizing;

use crate::WalletError;

/// A new wallet's public addresses and sealed keys, ready for its row.
pub struct NewWalletKeys {
    /// EIP-55 checksummed.
    pub evm_address: String,
    /// base58 of the ed25519 public key.
    pub solana_address: String,
    pub evm_key_sealed: String,
    pub solana_key_sealed: String,
}

fn aad(wallet_id: &str, kind: &str) -> Vec<u8> {
    format!("wallet/{wallet_id}/{kind}").into_bytes()
}

fn random_32() -> Zeroizing<[u8; 32]> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::Rng::fill(&mut rand::rng(), &mut bytes[..]);
    bytes
}

/// Generates both keys for wallet `wallet_id` and seals them.
pub fn generate(secret_box: &SecretBox, wallet_id: &str) -> NewWalletKeys {
    // A random 32-byte string is a valid secp256k1 key unless it is zero or at least the
    // group order (probability about 2^-128); draw again in that case.
    let (evm_secret, signer) = loop {
        let secret = random_32();
        if let Ok(signer) = PrivateKeySigner::from_bytes(&B256::from(*secret)) {
            break (secret, signer);
        }
    };
    let seed = random_32();
    let solana_public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    NewWalletKeys {
        evm_address: signer.address().to_checksum(None),
        solana_address: bs58::encode(solana_public).into_string(),
        evm_key_sealed: secret_box.seal(&evm_secret[..], &aad(wallet_id, "evm")),
        solana_key_sealed: secret_box.seal(&seed[..], &aad(wallet_id, "solana")),
    }
}

/// Opens a wallet's EVM key for signing; checks it still derives the stored address.
pub fn evm_signer(
    secret_box: &SecretBox,
    wallet_id: &str,
    sealed: &str,
    address: &str,
) -> Result<PrivateKeySigner, WalletError> {
    let bytes = Zeroizing::new(
        secret_box
            .open(sealed, &aad(wallet_id, "evm"))
            .map_err(|_| WalletError::KeyUnavailable)?,
    );
    if bytes.len() != 32 {
        return Err(WalletError::KeyUnavailable);
    }
    // Straight from the zeroizing buffer: no copy of the key is left behind.
    let signer = PrivateKeySigner::from_slice(&bytes).map_err(|_| WalletError::KeyUnavailable)?;
    if !signer
        .address()
        .to_checksum(None)
        .eq_ignore_ascii_case(address)
    {
        return Err(WalletError::KeyUnavailable);
    }
    Ok(signer)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_are_sealed_bound_to_the_wallet_and_open_to_their_address() {
        let sb = SecretBox::from_key_text(&"ab".repeat(32)).unwrap();
        let k = generate(&sb, "wal_1");
        assert!(k.evm_address.starts_with("0x") && k.evm_address.len() == 42);
        assert_ne!(k.evm_address, k.evm_address.to_lowercase());
        let sol = bs58::decode(&k.solana_address).into_vec().unwrap();
        assert_eq!(sol.len(), 32);
        let signer = evm_signer(&sb, "wal_1", &k.evm_key_sealed, &k.evm_address).unwrap();
        assert_eq!(signer.address().to_checksum(None), k.evm_address);
        assert!(evm_signer(&sb, "wal_2", &k.evm_key_sealed, &k.evm_address).is_err());
        let other = generate(&sb, "wal_1");
        assert_ne!(other.evm_address, k.evm_address);
        assert_ne!(other.solana_address, k.solana_address);
    }
}
