//! Extractors that resolve the caller from `X-API-Key` or `X-Master-Key`.
//!
//! Every rejection is a 401 envelope that names what was missing or wrong, and never
//! repeats the presented value.

use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::Method;
use actix_web::{web, FromRequest, HttpRequest};
use aibank_core::{ApiError, SecretString, SharedClock};
use aibank_store::models::{Agent, ApiKey, KEY_STATUS_ACTIVE};
use aibank_store::repo::keys as key_repo;
use aibank_store::{AnyConnection, DbPool, StoreError};
use futures_util::future::LocalBoxFuture;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::access::{client_ip, AllowList};
use crate::cache::TtlCache;
use crate::keys::{self, KeyKind, ParsedKey};
use crate::limits::KeyLimits;
use crate::rsa_keys;
use crate::VerifiedCache;

pub const API_KEY_HEADER: &str = "x-api-key";
pub const MASTER_KEY_HEADER: &str = "x-master-key";
/// The agent key as Google's Gemini SDKs send an API key (accepted where `Bearer` is).
pub const GOOG_API_KEY_HEADER: &str = "x-goog-api-key";
/// RSA-signed requests: the key id, the time in epoch milliseconds and the signature.
pub const KEY_ID_HEADER: &str = "x-aibank-key-id";
pub const TIMESTAMP_HEADER: &str = "x-aibank-timestamp";
pub const SIGNATURE_HEADER: &str = "x-aibank-signature";
/// How far a signed request's timestamp may be from the server's clock, either way.
pub const SIGNATURE_SKEW: Duration = Duration::from_secs(300);

/// What the extractors need, shared through app data as `web::Data<AuthState>`.
pub struct AuthState {
    pub pool: DbPool,
    pub cache: VerifiedCache,
    pub clock: SharedClock,
    /// Key rows and their agents, kept for a short TTL so most requests skip the database;
    /// dropped at once on this instance when a key or agent changes.
    principals: TtlCache<(ApiKey, Agent)>,
    /// argon2 takes ~19 MiB and a core for ~20 ms: bound how many run at once.
    argon2_permits: Arc<Semaphore>,
    /// Peers whose `X-Forwarded-For` is believed; empty: none.
    trusted_proxies: Vec<IpNet>,
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// The caller of an `X-API-Key` route: an agent (or gateway key holder) and the key used.
/// The settings are the effective ones: the key's own, narrowed by its agent's.
// Independent flags, one per setting.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone)]
pub struct ApiKeyAuth {
    pub agent: Agent,
    pub key_id: String,
    pub kind: KeyKind,
    pub read_only: bool,
    pub gateway_enabled: bool,
    pub wallets_enabled: bool,
    pub trading_enabled: bool,
    /// The key's own call limits; the platform's on the agent bind it as well.
    pub limits: KeyLimits,
}

/// What a key may be allowed to do beyond reading, each behind its own flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    Gateway,
    Wallets,
    Trading,
}

impl Capability {
    /// The setting's name in the API.
    pub fn flag(self) -> &'static str {
        match self {
            Capability::Gateway => "gatewayEnabled",
            Capability::Wallets => "walletsEnabled",
            Capability::Trading => "tradingEnabled",
        }
    }
}

impl ApiKeyAuth {
    /// 403 unless the key may move money or change things; `what` says what was refused.
    pub fn require_write(&self, what: &str) -> Result<(), ApiError> {
        if self.read_only {
            return Err(ApiError::forbidden("Read-only API key").with(
                "message",
                format!("This API key can only read: {what} needs a key without readOnly"),
            ));
        }
        Ok(())
    }

    /// 403 naming the flag when the capability is off for this key or its agent.
    pub fn require(&self, capability: Capability) -> Result<(), ApiError> {
        let on = match capability {
            Capability::Gateway => self.gateway_enabled,
            Capability::Wallets => self.wallets_enabled,
            Capability::Trading => self.trading_enabled,
        };
        if on {
            return Ok(());
        }
        let flag = capability.flag();
        Err(ApiError::forbidden(format!("{flag} is off for this API key")).with("flag", flag))
    }
}

/// Like [`ApiKeyAuth`], but refuses gateway-only `gw_` keys with 403.
#[derive(Debug, Clone)]
pub struct AgentKeyAuth(pub ApiKeyAuth);

/// The caller of an `X-Master-Key` route: one master key of one platform.
#[derive(Debug, Clone)]
pub struct MasterKeyAuth {
    pub key_id: String,
    pub platform_id: String,
}

/// The hash unknown key ids are verified against, made once on a blocking thread (argon2
/// must not run on an actix worker).
async fn dummy_hash() -> &'static str {
    static DUMMY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DUMMY
        .get_or_init(|| async {
            tokio::task::spawn_blocking(|| {
                let k = keys::GeneratedKey::new(KeyKind::Agent);
                keys::hash(&k.full).unwrap_or_default()
            })
            .await
            .unwrap_or_default()
        })
        .await
}

impl AuthState {
    /// `status_ttl`: how long a key's status may be served from memory (zero: read the
    /// database on every request). Other instances see a revocation within it.
    pub fn new(
        pool: DbPool,
        cache: VerifiedCache,
        clock: SharedClock,
        status_ttl: std::time::Duration,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        AuthState {
            pool,
            cache,
            clock,
            principals: TtlCache::new(status_ttl, 100_000),
            argon2_permits: Arc::new(Semaphore::new(cores * 2)),
            trusted_proxies: Vec::new(),
        }
    }

    /// Believe `X-Forwarded-For` from these peers (reverse proxies in front of the server).
    #[must_use]
    pub fn with_trusted_proxies(mut self, proxies: Vec<IpNet>) -> Self {
        self.trusted_proxies = proxies;
        self
    }

    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted_proxies
    }

    /// Hashes a new key with argon2id off the async runtime.
    pub async fn hash_key(&self, key: &SecretString) -> Result<String, ApiError> {
        let _permit = self
            .argon2_permits
            .acquire()
            .await
            .map_err(ApiError::internal)?;
        let key = key.clone();
        tokio::task::spawn_blocking(move || keys::hash(&key))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)
    }

    /// Verifies a presented key against its stored hash, via the cache when possible.
    async fn verify(&self, id: &str, presented: &str, phc: &str) -> Result<bool, ApiError> {
        if self.cache.check(id, presented, phc) {
            return Ok(true);
        }
        let _permit = self
            .argon2_permits
            .acquire()
            .await
            .map_err(ApiError::internal)?;
        // A herd of requests with one new key is larger than the permits: those that had
        // to wait find it verified by an earlier one instead of each spending argon2's
        // time (at most as many verifications as permits run for one key).
        if self.cache.check(id, presented, phc) {
            return Ok(true);
        }
        let (p, h) = (presented.to_owned(), phc.to_owned());
        let ok = tokio::task::spawn_blocking(move || keys::verify(&p, &h))
            .await
            .map_err(ApiError::internal)?;
        if ok {
            self.cache.insert(id, presented, phc);
        }
        Ok(ok)
    }

    /// Spends the same argon2 time for an unknown key id as for a known one, so response
    /// timing does not reveal which ids exist.
    async fn burn(&self, parsed: &ParsedKey, presented: &str) {
        if parsed.standard {
            let _ = self.verify("", presented, dummy_hash().await).await;
        }
    }

    /// Refreshes a key's last-used time in the background, at most once per
    /// [`key_repo::LAST_USED_RESOLUTION_MS`], so authenticating is rarely a write.
    fn record_use(
        &self,
        id: String,
        last_used_at: Option<i64>,
        touch: fn(&mut AnyConnection, &str, i64) -> diesel::QueryResult<usize>,
    ) -> bool {
        let now = self.clock.now_ms();
        if last_used_at.is_some_and(|t| now - t < key_repo::LAST_USED_RESOLUTION_MS) {
            return false;
        }
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let res = pool
                .run(move |c| touch(c, &id, now).map_err(StoreError::from))
                .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "could not record key use");
            }
        });
        true
    }

    /// Forgets what this instance remembers about an API key (after rotation or revocation).
    pub fn forget_api_key(&self, key_id: &str) {
        self.principals.remove(key_id);
        self.cache.invalidate(key_id);
    }

    /// Forgets every remembered key of an agent (after the agent changed).
    pub fn forget_agent(&self, agent_id: &str) {
        self.principals.retain(|(_, agent)| agent.id != agent_id);
    }

    /// A key row and its agent, from memory when recently seen.
    async fn principal(&self, id: &str) -> Result<Option<(ApiKey, Agent)>, ApiError> {
        if let Some(p) = self.principals.get(id) {
            return Ok(Some(p));
        }
        let key_id = id.to_owned();
        let found = self
            .pool
            .run(move |c| key_repo::find_api_key(c, &key_id).map_err(StoreError::from))
            .await?;
        if let Some(p) = &found {
            self.principals.insert(id, p.clone());
        }
        Ok(found)
    }

    /// Checks an `X-API-Key` value; the key's row and agent when it is genuine and active.
    async fn check_secret_key(&self, presented: &str) -> Result<(ApiKey, Agent), ApiError> {
        let invalid = || {
            let msg = if presented.starts_with("mk_") {
                "Invalid API key: master keys (mk_) go in the X-Master-Key header"
            } else {
                "Invalid API key"
            };
            ApiError::unauthorized(msg)
        };
        let Some(parsed) =
            keys::parse(presented).filter(|p| matches!(p.kind, KeyKind::Agent | KeyKind::Gateway))
        else {
            return Err(invalid());
        };
        let Some((key, agent)) = self.principal(&parsed.id).await? else {
            self.burn(&parsed, presented).await;
            return Err(invalid());
        };
        if key.public_key_pem.is_some()
            || key.kind != parsed.kind.db_kind()
            || !self.verify(&key.id, presented, &key.secret_hash).await?
        {
            return Err(invalid());
        }
        Ok((key, agent))
    }

    /// Checks an RSA-signed request: a registered RSA key, a timestamp within
    /// [`SIGNATURE_SKEW`], a valid RSA-PSS signature over timestamp + method + path, and a
    /// signature not used before (on any instance sharing the database).
    async fn check_signed(&self, req: &HttpRequest) -> Result<(ApiKey, Agent), ApiError> {
        let key_id = header_value(req, KEY_ID_HEADER, "X-Aibank-Key-Id")?;
        let timestamp = header_value(req, TIMESTAMP_HEADER, "X-Aibank-Timestamp")?;
        let signature = header_value(req, SIGNATURE_HEADER, "X-Aibank-Signature")?;
        let Ok(ts) = timestamp.parse::<i64>() else {
            return Err(ApiError::unauthorized(
                "Invalid X-Aibank-Timestamp header: expected epoch milliseconds",
            ));
        };
        let now = self.clock.now_ms();
        let skew = i64::try_from(SIGNATURE_SKEW.as_millis()).unwrap_or(i64::MAX);
        if (now - ts).abs() > skew {
            return Err(ApiError::unauthorized(format!(
                "Request timestamp is outside the allowed window of ±{} s",
                SIGNATURE_SKEW.as_secs()
            )));
        }
        let invalid = || ApiError::unauthorized("Invalid request signature");
        let found =
            if key_id.len() == keys::ID_LEN && key_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                self.principal(&key_id).await?
            } else {
                None
            };
        let Some((key, agent)) = found else {
            return Err(ApiError::unauthorized("Unknown X-Aibank-Key-Id"));
        };
        let Some(pem) = key.public_key_pem.clone() else {
            return Err(ApiError::unauthorized(
                "X-Aibank-Key-Id names a secret key: send it in the X-API-Key header",
            ));
        };
        let message = rsa_keys::signing_message(&timestamp, req.method().as_str(), req.path());
        let sig = signature.clone();
        let ok = tokio::task::spawn_blocking(move || {
            rsa_keys::PublicKey::from_pem(&pem).is_ok_and(|k| k.verify(&message, &sig))
        })
        .await
        .map_err(ApiError::internal)?;
        if !ok {
            return Err(invalid());
        }
        let bytes = rsa_keys::decode_signature(&signature).ok_or_else(invalid)?;
        let digest = hex::encode(Sha256::digest(&bytes));
        let expires_at = ts.saturating_add(skew);
        let fresh = self
            .pool
            .run(move |c| {
                key_repo::record_signature(c, &digest, expires_at).map_err(StoreError::from)
            })
            .await?;
        if !fresh {
            return Err(ApiError::unauthorized(
                "Request signature has already been used: sign every request anew",
            ));
        }
        Ok((key, agent))
    }

    /// Authenticates an `X-API-Key` (or, with `allow_bearer`, `Authorization: Bearer` or
    /// `x-goog-api-key`, as the LLM SDKs send their keys) key or
    /// an RSA-signed request, then applies the key's standing: revoked (401), client IP not
    /// allowed (403), paused (403), agent deactivated (403).
    pub async fn authenticate(
        &self,
        req: &HttpRequest,
        allow_bearer: bool,
    ) -> Result<ApiKeyAuth, ApiError> {
        let signed = req.headers().contains_key(KEY_ID_HEADER)
            || req.headers().contains_key(SIGNATURE_HEADER);
        let (key, agent) = if signed && !req.headers().contains_key(API_KEY_HEADER) {
            self.check_signed(req).await?
        } else {
            let h = req.headers();
            let presented = match h.get("authorization") {
                Some(v) if allow_bearer && !h.contains_key(API_KEY_HEADER) => v
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(|t| t.trim().to_owned())
                    .ok_or_else(|| ApiError::unauthorized("Invalid Authorization header"))?,
                None if allow_bearer
                    && !h.contains_key(API_KEY_HEADER)
                    && h.contains_key(GOOG_API_KEY_HEADER) =>
                {
                    header_value(req, GOOG_API_KEY_HEADER, "x-goog-api-key")?
                }
                _ => header_value(req, API_KEY_HEADER, "X-API-Key")?,
            };
            self.check_secret_key(&presented).await?
        };
        if key.status != KEY_STATUS_ACTIVE {
            return Err(ApiError::unauthorized("API key has been revoked"));
        }
        let ip = client_ip(req, &self.trusted_proxies);
        for list in [&key.allowed_ips, &agent.allowed_ips] {
            let list = AllowList::from_stored(list);
            if !list.is_empty() && !ip.is_some_and(|ip| list.allows(ip)) {
                let mut e = ApiError::forbidden("IP address not allowed");
                if let Some(ip) = ip {
                    e = e.with("ip", ip.to_string());
                }
                return Err(e);
            }
        }
        if agent.keys_paused_at.is_some() {
            return Err(ApiError::forbidden("API key is paused").with(
                "message",
                "The platform that manages this agent has paused its keys",
            ));
        }
        if !agent.active {
            return Err(ApiError::forbidden("Agent is deactivated"));
        }
        if self.record_use(key.id.clone(), key.last_used_at, key_repo::touch_api_key) {
            let now = self.clock.now_ms();
            self.principals
                .modify(&key.id, |p| p.0.last_used_at = Some(now));
        }
        let kind = if key.kind == KeyKind::Gateway.db_kind() {
            KeyKind::Gateway
        } else {
            KeyKind::Agent
        };
        Ok(ApiKeyAuth {
            read_only: key.read_only || agent.read_only,
            gateway_enabled: key.gateway_enabled && agent.gateway_enabled,
            wallets_enabled: key.wallets_enabled && agent.wallets_enabled,
            trading_enabled: key.trading_enabled && agent.trading_enabled,
            limits: KeyLimits {
                allowed_models: key.allowed_models,
                rpm_limit: key.rpm_limit,
                tpm_limit: key.tpm_limit,
            },
            agent,
            key_id: key.id,
            kind,
        })
    }

    pub async fn authenticate_master_key(
        &self,
        presented: &str,
    ) -> Result<MasterKeyAuth, ApiError> {
        let invalid = || {
            let msg = if presented.starts_with("ak_") || presented.starts_with("gw_") {
                "Invalid master key: agent keys go in the X-API-Key header"
            } else {
                "Invalid master key"
            };
            ApiError::unauthorized(msg)
        };
        let Some(parsed) = keys::parse(presented).filter(|p| p.kind == KeyKind::Master) else {
            return Err(invalid());
        };
        let id = parsed.id.clone();
        let found = self
            .pool
            .run(move |c| key_repo::find_master_key(c, &id).map_err(StoreError::from))
            .await?;
        let Some(key) = found else {
            self.burn(&parsed, presented).await;
            return Err(invalid());
        };
        if !self.verify(&key.id, presented, &key.secret_hash).await? {
            return Err(invalid());
        }
        if key.revoked_at.is_some() {
            return Err(ApiError::unauthorized("Master key has been revoked"));
        }
        self.record_use(key.id.clone(), key.last_used_at, key_repo::touch_master_key);
        Ok(MasterKeyAuth {
            key_id: key.id,
            platform_id: key.platform_id,
        })
    }
}

/// The header's value, or the 401 that names the header.
fn header_value(req: &HttpRequest, name: &str, display: &str) -> Result<String, ApiError> {
    match req.headers().get(name) {
        None => Err(ApiError::unauthorized(format!("Missing {display} header"))),
        Some(v) => match v.to_str().map(str::trim) {
            Ok(s) if !s.is_empty() => Ok(s.to_owned()),
            _ => Err(ApiError::unauthorized(format!("Invalid {display} header"))),
        },
    }
}

fn state(req: &HttpRequest) -> Result<web::Data<AuthState>, ApiError> {
    req.app_data::<web::Data<AuthState>>()
        .cloned()
        .ok_or_else(|| ApiError::internal("AuthState is not registered as app data"))
}

/// Reads work with any key; anything else needs a key without `readOnly`.
impl FromRequest for ApiKeyAuth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let auth = state(&req)?.authenticate(&req, false).await?;
            if auth.read_only && !matches!(*req.method(), Method::GET | Method::HEAD) {
                auth.require_write(&format!("{} {}", req.method(), req.path()))?;
            }
            Ok(auth)
        })
    }
}

impl FromRequest for AgentKeyAuth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let inner = ApiKeyAuth::from_request(req, payload);
        Box::pin(async move {
            let auth = inner.await?;
            if auth.kind == KeyKind::Gateway {
                return Err(ApiError::forbidden(
                    "Gateway-only keys (gw_) can call the gateway, balance and usage endpoints only",
                ));
            }
            Ok(AgentKeyAuth(auth))
        })
    }
}

impl FromRequest for MasterKeyAuth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let input =
            state(req).and_then(|s| Ok((s, header_value(req, MASTER_KEY_HEADER, "X-Master-Key")?)));
        Box::pin(async move {
            let (state, presented) = input?;
            state.authenticate_master_key(&presented).await
        })
    }
}
