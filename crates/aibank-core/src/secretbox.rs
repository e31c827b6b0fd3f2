//! AES-256-GCM sealing of secrets at rest (agents' upstream keys, wallet private keys).
//!
//! The key is `AIBANK_SECRET_KEY` (32 bytes as hex or base64). For the embedded SQLite
//! default without one, a key is generated once into a file next to the database with
//! 0600 permissions. A sealed value is `base64(nonce || ciphertext || tag)`, bound to its
//! owner by associated data, so a row copied to another agent does not open.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

#[derive(Debug, thiserror::Error)]
pub enum SecretBoxError {
    #[error("secret key must be 32 bytes as 64 hex or 44 base64 characters")]
    BadKey,
    #[error("cannot use key file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("sealed value is corrupt or was sealed under another key")]
    Open,
}

pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox([redacted])")
    }
}

fn decode_key(text: &str) -> Result<[u8; 32], SecretBoxError> {
    let text = text.trim();
    let bytes = if text.len() == 64 {
        hex::decode(text).map_err(|_| SecretBoxError::BadKey)?
    } else {
        STANDARD.decode(text).map_err(|_| SecretBoxError::BadKey)?
    };
    bytes.try_into().map_err(|_| SecretBoxError::BadKey)
}

impl SecretBox {
    pub fn from_key_text(text: &str) -> Result<Self, SecretBoxError> {
        let key = decode_key(text)?;
        Ok(SecretBox {
            cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)),
        })
    }

    /// Reads the key file, or creates it (0600) with a fresh random key. Returns whether
    /// it was created.
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), SecretBoxError> {
        let err = |source| SecretBoxError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Self::from_key_text(&text)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                rand::Rng::fill(&mut rand::rng(), &mut key);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(err)?;
                f.write_all(hex::encode(key).as_bytes()).map_err(err)?;
                f.sync_all().map_err(err)?;
                Ok((Self::from_key_text(&hex::encode(key))?, true))
            }
            Err(e) => Err(err(e)),
        }
    }

    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let mut nonce = [0u8; 12];
        rand::Rng::fill(&mut rand::rng(), &mut nonce);
        // Encryption with a valid key and a 12-byte nonce cannot fail.
        let ct = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ct);
        STANDARD.encode(out)
    }

    pub fn open(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, SecretBoxError> {
        let raw = STANDARD.decode(sealed).map_err(|_| SecretBoxError::Open)?;
        if raw.len() < 12 + 16 {
            return Err(SecretBoxError::Open);
        }
        let (nonce, ct) = raw.split_at(12);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map_err(|_| SecretBoxError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_with_the_same_key_and_owner() {
        let b = SecretBox::from_key_text(&"ab".repeat(32)).unwrap();
        let sealed = b.seal(b"sk-ant-secret", b"agt_1/anthropic");
        assert!(!sealed.contains("sk-ant"));
        assert_eq!(
            b.open(&sealed, b"agt_1/anthropic").unwrap(),
            b"sk-ant-secret"
        );
        assert!(b.open(&sealed, b"agt_2/anthropic").is_err());
        let other = SecretBox::from_key_text(&"cd".repeat(32)).unwrap();
        assert!(other.open(&sealed, b"agt_1/anthropic").is_err());
        assert!(SecretBox::from_key_text("short").is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("aibank-sb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret.key");
        let (a, created) = SecretBox::load_or_create(&path).unwrap();
        assert!(created);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (b, created) = SecretBox::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(b.open(&a.seal(b"x", b"y"), b"y").unwrap(), b"x");
        std::fs::remove_dir_all(&dir).ok();
    }
}
