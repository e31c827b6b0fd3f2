//! Credentials: key generation and argon2id hashing, a verified-key cache so argon2 is paid
//! once per key rather than per request, and actix extractors that resolve the caller.

pub mod access;
pub mod cache;
pub mod extract;
pub mod keys;
pub mod limits;
pub mod ratelimit;
pub mod rsa_keys;

pub use cache::{TtlCache, VerifiedCache};
pub use extract::{AgentKeyAuth, ApiKeyAuth, AuthState, Capability, MasterKeyAuth};
pub use keys::{GeneratedKey, KeyKind};
pub use limits::KeyLimits;
