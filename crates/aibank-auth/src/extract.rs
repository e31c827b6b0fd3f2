//! Extractors that resolve the caller from `X-API-Key` or `X-Master-Key`.
//!
//! Every rejection is a 401 envelope that names what was missing or wrong, and never
//! repeats the presented value.

use std::sync::Arc;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use aibank_core::{ApiError, SecretString, SharedClock};
use aibank_store::models::{Agent, ApiKey, KEY_STATUS_ACTIVE};
use aibank_store::repo::keys as key_repo;
use aibank_store::{AnyConnection, DbPool, StoreError};
use futures_util::future::LocalBoxFuture;
use tokio::sync::Semaphore;

use crate::cache::TtlCache;
use crate::keys::{self, KeyKind, ParsedKey};
use crate::VerifiedCache;

pub const API_KEY_HEADER: &str = "x-api-key";
pub const MASTER_KEY_HEADER: &str = "x-master-key";

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
}

impl std::fmt::Debug for AuthState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthState")
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

/// The caller of an `X-API-Key` route: an agent (or gateway key holder) and the key used.
#[derive(Debug, Clone)]
pub struct ApiKeyAuth {
    pub agent: Agent,
    pub key_id: String,
    pub kind: KeyKind,
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
        }
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

    pub async fn authenticate_api_key(&self, presented: &str) -> Result<ApiKeyAuth, ApiError> {
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
        let found = if let Some(p) = self.principals.get(&parsed.id) {
            Some(p)
        } else {
            let id = parsed.id.clone();
            let found = self
                .pool
                .run(move |c| key_repo::find_api_key(c, &id).map_err(StoreError::from))
                .await?;
            if let Some(p) = &found {
                self.principals.insert(&parsed.id, p.clone());
            }
            found
        };
        let Some((key, agent)) = found else {
            self.burn(&parsed, presented).await;
            return Err(invalid());
        };
        if key.kind != parsed.kind.db_kind()
            || !self.verify(&key.id, presented, &key.secret_hash).await?
        {
            return Err(invalid());
        }
        if key.status != KEY_STATUS_ACTIVE {
            return Err(ApiError::unauthorized("API key has been revoked"));
        }
        if !agent.active {
            return Err(ApiError::forbidden("Agent is deactivated"));
        }
        if self.record_use(key.id.clone(), key.last_used_at, key_repo::touch_api_key) {
            let now = self.clock.now_ms();
            self.principals
                .modify(&key.id, |p| p.0.last_used_at = Some(now));
        }
        Ok(ApiKeyAuth {
            agent,
            key_id: key.id,
            kind: parsed.kind,
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

impl FromRequest for ApiKeyAuth {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let input =
            state(req).and_then(|s| Ok((s, header_value(req, API_KEY_HEADER, "X-API-Key")?)));
        Box::pin(async move {
            let (state, presented) = input?;
            state.authenticate_api_key(&presented).await
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
