//! RSA-signed API keys (Kalshi-style): the server holds only a public key, so a database leak
//! yields nothing that can sign requests. Clients sign `timestamp_ms + METHOD + path` with
//! RSA-PSS/SHA-256 (MGF1-SHA256, 32-byte salt) and send the signature base64-encoded.

use std::sync::Arc;

use aibank_core::SecretString;
use base64::alphabet;
use base64::engine::general_purpose::GeneralPurposeConfig;
use base64::engine::{DecodePaddingMode, GeneralPurpose};
use base64::Engine as _;
use rsa::pkcs1::{DecodeRsaPrivateKey, ALGORITHM_OID};
use rsa::pkcs8::der::{pem, Decode};
use rsa::pkcs8::SubjectPublicKeyInfoRef;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::pss::{BlindedSigningKey, Signature, VerifyingKey};
use rsa::rand_core::OsRng;
use rsa::signature::{RandomizedSigner as _, SignatureEncoding as _, Verifier as _};
use rsa::traits::PublicKeyParts as _;
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

/// Below 2048 bits RSA is considered breakable within a key's useful lifetime.
pub const MIN_BITS: usize = 2048;
/// Caps the cost of each verification (and of parsing) an untrusted client can impose.
pub const MAX_BITS: usize = 8192;
/// The smallest safe size: generation time grows steeply with size and the key is only ever
/// used for request signing.
pub const GENERATED_BITS: usize = 2048;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RsaKeyError {
    #[error("not a PEM-encoded RSA public key (expected -----BEGIN PUBLIC KEY----- or -----BEGIN RSA PUBLIC KEY-----)")]
    NotPem,
    #[error("RSA keys must have {MIN_BITS} to {MAX_BITS} bits; this one has {0}")]
    Size(usize),
    #[error("could not generate an RSA key")]
    Generate,
    /// Deliberately carries no detail: the input is a secret and must not leak into messages.
    #[error("not a usable PEM-encoded RSA private key (PKCS#8 or PKCS#1)")]
    BadPrivateKey,
}

/// A parsed, size-checked public key, cheap to clone (the parsed key lives behind an `Arc`,
/// so caches can hand out copies without re-parsing).
#[derive(Clone, Debug)]
pub struct PublicKey(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    verifier: VerifyingKey<Sha256>,
    /// Rendered once at parse time so `to_pem` is infallible and allocation-cheap.
    pem: String,
    bits: usize,
    /// Modulus length in bytes: a valid signature is exactly this long.
    size: usize,
}

impl PublicKey {
    /// Accepts SPKI ("PUBLIC KEY") and PKCS#1 ("RSA PUBLIC KEY") PEM, surrounding whitespace
    /// allowed, because clients export either depending on their tooling (OpenSSL vs. others).
    ///
    /// The DER is decoded by hand rather than through `rsa`'s `Decode*` traits because those
    /// refuse moduli over 4096 bits, and we allow up to [`MAX_BITS`].
    pub fn from_pem(pem_text: &str) -> Result<Self, RsaKeyError> {
        let (label, der) =
            pem::decode_vec(pem_text.trim().as_bytes()).map_err(|_| RsaKeyError::NotPem)?;
        let pkcs1_der: &[u8] = match label {
            "PUBLIC KEY" => {
                let spki =
                    SubjectPublicKeyInfoRef::from_der(&der).map_err(|_| RsaKeyError::NotPem)?;
                if spki.algorithm.oid != ALGORITHM_OID {
                    return Err(RsaKeyError::NotPem);
                }
                spki.subject_public_key
                    .as_bytes()
                    .ok_or(RsaKeyError::NotPem)?
            }
            "RSA PUBLIC KEY" => &der,
            _ => return Err(RsaKeyError::NotPem),
        };
        let parts =
            rsa::pkcs1::RsaPublicKey::from_der(pkcs1_der).map_err(|_| RsaKeyError::NotPem)?;
        let n = BigUint::from_bytes_be(parts.modulus.as_bytes());
        let e = BigUint::from_bytes_be(parts.public_exponent.as_bytes());
        // Size first, so an undersized but otherwise valid key gets the more useful error.
        check_bits(n.bits())?;
        let key =
            RsaPublicKey::new_with_max_size(n, e, MAX_BITS).map_err(|_| RsaKeyError::NotPem)?;
        Self::from_key(key)
    }

    fn from_key(key: RsaPublicKey) -> Result<Self, RsaKeyError> {
        let bits = key.n().bits();
        check_bits(bits)?;
        let pem = key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|_| RsaKeyError::NotPem)?;
        Ok(Self(Arc::new(Inner {
            size: key.size(),
            verifier: VerifyingKey::new(key),
            pem,
            bits,
        })))
    }

    /// Canonical SPKI PEM, what the server stores: one format regardless of what was submitted,
    /// so stored keys compare and re-parse predictably.
    pub fn to_pem(&self) -> String {
        self.0.pem.clone()
    }

    /// Modulus size, for display and audit.
    pub fn bits(&self) -> usize {
        self.0.bits
    }

    /// Verifies a base64 RSA-PSS SHA-256 signature over `message`. Standard alphabet with or
    /// without padding, and URL-safe, are all accepted because client libraries differ. Any
    /// decoding problem is just `false`: callers answer every failure with the same 401 and
    /// must not learn (or leak) why.
    pub fn verify(&self, message: &[u8], signature_b64: &str) -> bool {
        let Some(bytes) = decode_signature(signature_b64.trim()) else {
            return false;
        };
        // Cheap rejection before any bignum work on attacker-sized input.
        if bytes.len() != self.0.size {
            return false;
        }
        let Ok(signature) = Signature::try_from(bytes.as_slice()) else {
            return false;
        };
        self.0.verifier.verify(message, &signature).is_ok()
    }
}

fn check_bits(bits: usize) -> Result<(), RsaKeyError> {
    if (MIN_BITS..=MAX_BITS).contains(&bits) {
        Ok(())
    } else {
        Err(RsaKeyError::Size(bits))
    }
}

const LENIENT_PADDING: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT_PADDING);
const URL_SAFE_ANY_PAD: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT_PADDING);

/// The signature's bytes, whichever base64 variant carried them. Replay protection keys on
/// these bytes, not on the text: one signature re-encoded is still the same signature.
pub fn decode_signature(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    STANDARD_ANY_PAD
        .decode(s)
        .or_else(|_| URL_SAFE_ANY_PAD.decode(s))
        .ok()
}

/// The exact bytes a client signs. Binding the timestamp, method and path stops a captured
/// signature being replayed later or against a different endpoint.
pub fn signing_message(timestamp_ms: &str, method: &str, path: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp_ms.len() + method.len() + path.len());
    message.extend_from_slice(timestamp_ms.as_bytes());
    message.extend_from_slice(method.as_bytes());
    message.extend_from_slice(path.as_bytes());
    message
}

/// A new key pair: the public key plus the PKCS#8 private key PEM
/// ("-----BEGIN PRIVATE KEY-----"), which is handed to the client once and never stored.
/// It comes back as a `SecretString` so it cannot end up in a log via `Debug`; the
/// intermediate buffer `rsa` renders into is zeroized on drop.
///
/// Blocking and slow (prime search, ~tens of ms optimised, highly variable): callers run it
/// on a blocking thread.
pub fn generate() -> Result<(PublicKey, SecretString), RsaKeyError> {
    let private =
        RsaPrivateKey::new(&mut OsRng, GENERATED_BITS).map_err(|_| RsaKeyError::Generate)?;
    let public = PublicKey::from_key(private.to_public_key()).map_err(|_| RsaKeyError::Generate)?;
    let pem = private
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|_| RsaKeyError::Generate)?;
    Ok((public, SecretString::new(pem.as_str())))
}

/// For tests and clients: signs exactly like a client must (RSA-PSS SHA-256, 32-byte salt,
/// standard base64 with padding). Takes the PKCS#8 or PKCS#1 private key PEM.
///
/// Uses RSA blinding so the private-key operation does not leak timing about the key.
pub fn sign_with_private_pem(private_pem: &str, message: &[u8]) -> Result<String, RsaKeyError> {
    let private_pem = private_pem.trim();
    let key = RsaPrivateKey::from_pkcs8_pem(private_pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(private_pem))
        .map_err(|_| RsaKeyError::BadPrivateKey)?;
    let signature = BlindedSigningKey::<Sha256>::new(key)
        .try_sign_with_rng(&mut OsRng, message)
        .map_err(|_| RsaKeyError::BadPrivateKey)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::OnceLock;

    use rsa::pkcs1::{EncodeRsaPrivateKey, EncodeRsaPublicKey};

    use super::*;

    /// Generation is the slow part, so the tests share two key pairs.
    fn pair_a() -> &'static (PublicKey, SecretString) {
        static PAIR: OnceLock<(PublicKey, SecretString)> = OnceLock::new();
        PAIR.get_or_init(|| generate().unwrap())
    }

    fn pair_b() -> &'static (PublicKey, SecretString) {
        static PAIR: OnceLock<(PublicKey, SecretString)> = OnceLock::new();
        PAIR.get_or_init(|| generate().unwrap())
    }

    fn message() -> Vec<u8> {
        signing_message("1703123456789", "GET", "/trade-api/v2/portfolio/balance")
    }

    #[test]
    fn signing_message_is_plain_concatenation() {
        assert_eq!(
            signing_message("1703123456789", "POST", "/v1/x"),
            b"1703123456789POST/v1/x".to_vec()
        );
    }

    #[test]
    fn generate_sign_verify_round_trip() {
        let (public, private) = pair_a();
        assert_eq!(public.bits(), GENERATED_BITS);
        assert!(private.expose().starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(!format!("{private:?}").contains("PRIVATE KEY"));
        let sig = sign_with_private_pem(private.expose(), &message()).unwrap();
        assert!(public.verify(&message(), &sig));
    }

    #[test]
    fn accepts_unpadded_and_url_safe_signatures() {
        let (public, private) = pair_a();
        let sig = sign_with_private_pem(private.expose(), &message()).unwrap();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&sig)
            .unwrap();
        let unpadded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&raw);
        let url_safe = base64::engine::general_purpose::URL_SAFE.encode(&raw);
        let url_safe_no_pad = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&raw);
        assert!(public.verify(&message(), &unpadded));
        assert!(public.verify(&message(), &url_safe));
        assert!(public.verify(&message(), &url_safe_no_pad));
        assert!(public.verify(&message(), &format!("  {sig}\n")));
    }

    #[test]
    fn wrong_message_is_rejected() {
        let (public, private) = pair_a();
        let sig = sign_with_private_pem(private.expose(), &message()).unwrap();
        let other = signing_message("1703123456789", "POST", "/trade-api/v2/portfolio/balance");
        assert!(!public.verify(&other, &sig));
    }

    #[test]
    fn signature_from_another_key_is_rejected() {
        let (public_a, _) = pair_a();
        let (_, private_b) = pair_b();
        let sig = sign_with_private_pem(private_b.expose(), &message()).unwrap();
        assert!(!public_a.verify(&message(), &sig));
    }

    #[test]
    fn pkcs1_v15_signature_is_rejected() {
        let (public, private) = pair_a();
        let key = RsaPrivateKey::from_pkcs8_pem(private.expose()).unwrap();
        let signer = rsa::pkcs1v15::SigningKey::<Sha256>::new(key);
        let sig = rsa::signature::Signer::sign(&signer, &message());
        let b64 = base64::engine::general_purpose::STANDARD.encode(sig.to_bytes());
        assert!(!public.verify(&message(), &b64));
    }

    #[test]
    fn garbage_signatures_are_false() {
        let (public, _) = pair_a();
        let msg = message();
        assert!(!public.verify(&msg, ""));
        assert!(!public.verify(&msg, "   "));
        assert!(!public.verify(&msg, "not base64 at all!!"));
        assert!(!public.verify(&msg, "AAAA"));
        let zeros = base64::engine::general_purpose::STANDARD.encode([0u8; 256]);
        assert!(!public.verify(&msg, &zeros));
        let too_long = base64::engine::general_purpose::STANDARD.encode([1u8; 512]);
        assert!(!public.verify(&msg, &too_long));
    }

    #[test]
    fn spki_and_pkcs1_parse_and_round_trip() {
        let (public, _) = pair_a();
        let spki = public.to_pem();
        assert!(spki.starts_with("-----BEGIN PUBLIC KEY-----"));
        let reparsed = PublicKey::from_pem(&format!("\n  {spki}  \n")).unwrap();
        assert_eq!(reparsed.to_pem(), spki);
        assert_eq!(reparsed.bits(), GENERATED_BITS);

        let rsa_key =
            RsaPublicKey::from(&RsaPrivateKey::from_pkcs8_pem(pair_a().1.expose()).unwrap());
        let pkcs1 = rsa_key.to_pkcs1_pem(LineEnding::CRLF).unwrap();
        assert!(pkcs1.starts_with("-----BEGIN RSA PUBLIC KEY-----"));
        let from_pkcs1 = PublicKey::from_pem(&pkcs1).unwrap();
        assert_eq!(from_pkcs1.to_pem(), spki);
    }

    #[test]
    fn pkcs1_private_key_signs_too() {
        let (public, private) = pair_a();
        let key = RsaPrivateKey::from_pkcs8_pem(private.expose()).unwrap();
        let pkcs1 = key.to_pkcs1_pem(LineEnding::LF).unwrap();
        let sig = sign_with_private_pem(&pkcs1, &message()).unwrap();
        assert!(public.verify(&message(), &sig));
        assert_eq!(
            sign_with_private_pem("nope", &message()),
            Err(RsaKeyError::BadPrivateKey)
        );
    }

    #[test]
    fn small_key_is_refused() {
        let small = RsaPrivateKey::new(&mut OsRng, 1024)
            .unwrap()
            .to_public_key();
        let spki = small.to_public_key_pem(LineEnding::LF).unwrap();
        assert_eq!(
            PublicKey::from_pem(&spki).unwrap_err(),
            RsaKeyError::Size(1024)
        );
        let pkcs1 = small.to_pkcs1_pem(LineEnding::LF).unwrap();
        assert_eq!(
            PublicKey::from_pem(&pkcs1).unwrap_err(),
            RsaKeyError::Size(1024)
        );
    }

    /// `rsa`'s own decoders stop at 4096 bits; ours must accept up to MAX_BITS. A synthetic
    /// odd modulus is enough here (only structure and size are checked), and it avoids
    /// generating a real 8192-bit key.
    #[test]
    fn large_keys_up_to_max_bits() {
        let spki_for = |bits: usize| {
            let n = (BigUint::from(1u8) << (bits - 1)) + BigUint::from(1u8);
            RsaPublicKey::new_unchecked(n, BigUint::from(65_537u32))
                .to_public_key_pem(LineEnding::LF)
                .unwrap()
        };
        assert_eq!(
            PublicKey::from_pem(&spki_for(MAX_BITS)).unwrap().bits(),
            MAX_BITS
        );
        assert_eq!(PublicKey::from_pem(&spki_for(6000)).unwrap().bits(), 6000);
        assert_eq!(
            PublicKey::from_pem(&spki_for(MAX_BITS + 1)).unwrap_err(),
            RsaKeyError::Size(MAX_BITS + 1)
        );
    }

    #[test]
    fn non_pem_is_refused() {
        for text in [
            "",
            "hello",
            "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQ user@host",
            "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert_eq!(
                PublicKey::from_pem(text).unwrap_err(),
                RsaKeyError::NotPem,
                "{text}"
            );
        }
    }

    #[test]
    fn private_key_pem_is_refused_as_public() {
        let (_, private) = pair_a();
        assert_eq!(
            PublicKey::from_pem(private.expose()).unwrap_err(),
            RsaKeyError::NotPem
        );
        let key = RsaPrivateKey::from_pkcs8_pem(private.expose()).unwrap();
        let pkcs1 = key.to_pkcs1_pem(LineEnding::LF).unwrap();
        assert_eq!(
            PublicKey::from_pem(&pkcs1).unwrap_err(),
            RsaKeyError::NotPem
        );
    }
}
