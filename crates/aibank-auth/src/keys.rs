//! Key format: `<prefix>_<id>_<secret>`, e.g. `ak_3k9x0c1v2b7n4m5q_Xy…` — a 16-character
//! public id (lowercase alphanumeric, used to find the key without a scan) and a
//! 40-character alphanumeric secret (238 bits). Only an argon2id hash of the whole key is
//! stored.

use aibank_core::ids::{random_alnum, random_lower};
use aibank_core::SecretString;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

pub const ID_LEN: usize = 16;
pub const SECRET_LEN: usize = 40;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// `ak_`: an agent's full key.
    Agent,
    /// `gw_`: gateway-only key.
    Gateway,
    /// `mk_`: a platform's master key.
    Master,
}

impl KeyKind {
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Agent => "ak",
            KeyKind::Gateway => "gw",
            KeyKind::Master => "mk",
        }
    }

    fn from_prefix(p: &str) -> Option<Self> {
        match p {
            "ak" => Some(KeyKind::Agent),
            "gw" => Some(KeyKind::Gateway),
            "mk" => Some(KeyKind::Master),
            _ => None,
        }
    }

    /// The value stored in `api_keys.kind`.
    pub fn db_kind(self) -> &'static str {
        match self {
            KeyKind::Agent | KeyKind::Master => "agent",
            KeyKind::Gateway => "gateway",
        }
    }
}

/// A freshly generated key. The full value is shown to its owner once and then dropped.
#[derive(Debug)]
pub struct GeneratedKey {
    pub kind: KeyKind,
    pub id: String,
    pub full: SecretString,
    pub last4: String,
}

impl GeneratedKey {
    pub fn new(kind: KeyKind) -> Self {
        let id = random_lower(ID_LEN);
        let secret = random_alnum(SECRET_LEN);
        let last4 = secret[SECRET_LEN - 4..].to_owned();
        let full = SecretString::new(format!("{}_{id}_{secret}", kind.prefix()));
        GeneratedKey {
            kind,
            id,
            full,
            last4,
        }
    }
}

/// What a presented key says about itself, before any verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    pub kind: KeyKind,
    pub id: String,
    /// Whether the key has the generated shape (a bootstrap key chosen by an operator may not).
    pub standard: bool,
}

/// Maximum length of a presented key; longer header values are rejected before hashing.
pub const MAX_KEY_LEN: usize = 256;

/// Splits a presented key. Keys in the generated shape carry their id; any other key with a
/// known prefix (an operator-chosen bootstrap key) gets an id derived from its SHA-256, so
/// every key is still found by id.
pub fn parse(presented: &str) -> Option<ParsedKey> {
    if presented.len() > MAX_KEY_LEN || !presented.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let (prefix, rest) = presented.split_once('_')?;
    let kind = KeyKind::from_prefix(prefix)?;
    if let Some((id, secret)) = rest.split_once('_') {
        let id_ok = id.len() == ID_LEN
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase());
        let secret_ok =
            secret.len() == SECRET_LEN && secret.bytes().all(|b| b.is_ascii_alphanumeric());
        if id_ok && secret_ok {
            return Some(ParsedKey {
                kind,
                id: id.to_owned(),
                standard: true,
            });
        }
    }
    if rest.is_empty() {
        return None;
    }
    let digest = Sha256::digest(presented.as_bytes());
    Some(ParsedKey {
        kind,
        id: format!("x{}", &hex::encode(digest)[..ID_LEN - 1]),
        standard: false,
    })
}

/// Minimum length of an operator-chosen key (prefix included).
pub const MIN_CUSTOM_KEY_LEN: usize = 32;

/// The last four characters, shown in listings so owners can tell keys apart.
pub fn last4(presented: &str) -> String {
    let n = presented.len();
    presented[n.saturating_sub(4)..].to_owned()
}

#[derive(Debug, thiserror::Error)]
#[error("key hashing failed: {0}")]
pub struct HashError(String);

/// argon2id (m = 19 MiB, t = 2, p = 1: the OWASP baseline) PHC string of the whole key.
pub fn hash(presented: &SecretString) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    rand::Rng::fill(&mut rand::rng(), &mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
    Argon2::default()
        .hash_password(presented.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// Checks a key against its stored hash (constant-time inside argon2).
pub fn verify(presented: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(presented.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_to_their_id() {
        let k = GeneratedKey::new(KeyKind::Agent);
        assert!(k.full.expose().starts_with("ak_"));
        assert_eq!(k.full.expose().len(), 3 + ID_LEN + 1 + SECRET_LEN);
        let p = parse(k.full.expose()).unwrap();
        assert_eq!(
            p,
            ParsedKey {
                kind: KeyKind::Agent,
                id: k.id.clone(),
                standard: true
            }
        );
        assert_eq!(last4(k.full.expose()), k.last4);
    }

    #[test]
    fn custom_keys_get_a_stable_derived_id() {
        let a = parse("mk_my-operator-chosen-bootstrap-key-123").unwrap();
        let b = parse("mk_my-operator-chosen-bootstrap-key-123").unwrap();
        assert_eq!(a, b);
        assert!(!a.standard);
        assert_eq!(a.id.len(), ID_LEN);
        assert_ne!(
            a.id,
            parse("mk_my-operator-chosen-bootstrap-key-124").unwrap().id
        );
    }

    #[test]
    fn junk_is_not_a_key() {
        for k in [
            "",
            "ak",
            "ak_",
            "zz_abc_def",
            "ak_with space",
            &"a".repeat(300),
        ] {
            assert!(parse(k).is_none(), "{k}");
        }
    }

    #[test]
    fn hash_verifies_only_the_same_key() {
        let k = GeneratedKey::new(KeyKind::Master);
        let h = hash(&k.full).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains(k.full.expose()));
        assert!(verify(k.full.expose(), &h));
        assert!(!verify(
            GeneratedKey::new(KeyKind::Master).full.expose(),
            &h
        ));
        assert!(!verify(k.full.expose(), "not a phc string"));
    }
}
