//! The human claim flow. Registration hands an agent a claim code (`XKCD-4291`) and a
//! `verificationUri`; the agent passes them to a person, who looks the agent up and claims
//! it for the platform of their email address: as JSON (`/v1/device/…`) or on the
//! server-rendered page (`/device`), both through the same service below.
//!
//! The code is the bearer secret of the flow, so look-ups of unknown codes count against a
//! per-client budget ([`ClaimGuard`]; an IPv4 address or an IPv6 /64): once it is spent,
//! every device request from that client is refused until the window ends, which keeps the
//! code space from being walked. Each request takes its slot before it looks anything up
//! and gives it back unless the code was unknown, so concurrent guesses cannot outrun the
//! count.
//!
//! Who may claim:
//! - an agent registered with an email address can only be claimed with that address
//!   (compared ignoring ASCII case);
//! - an email that already has a platform (an active master key with that `owner_email`)
//!   may only add agents to it with one of that platform's master keys, so nobody can push
//!   agents into someone else's fleet;
//! - a new email gets a new platform, named after it, and its first master key, shown once.

mod page;

use std::net::IpAddr;

use actix_web::{web, HttpRequest, HttpResponse};
use aibank_auth::access::client_ip;
use aibank_auth::ratelimit::{Attempt, FailureLimiter, Limit};
use aibank_auth::{GeneratedKey, KeyKind};
use aibank_core::clock::rfc3339;
use aibank_core::{ApiError, ErrorCode, Json, SharedClock};
use aibank_store::models::{Agent, AgentClaim};
use aibank_store::{repo, AnyConnection, StoreError, TxStop};
use serde::{Deserialize, Serialize};

use crate::audit::{Actor, Audit};
use crate::identities::create_master_key;
use crate::state::AppState;
use crate::validate;
use crate::views::wallets::WalletSummary;

pub use page::error_page;

/// Per-client budget of failed code look-ups, shared by all workers of this instance.
#[derive(Debug)]
pub struct ClaimGuard(FailureLimiter);

impl ClaimGuard {
    pub fn new(limit: Limit, clock: SharedClock) -> Self {
        ClaimGuard(FailureLimiter::new(
            limit,
            clock,
            "Too many unknown claim codes from this IP address",
        ))
    }

    /// A slot for one device request from `ip`, or the 429 when the client's budget is
    /// spent (by failures, or by requests still under way). A request without a peer
    /// address is not limited.
    fn take(&self, ip: Option<IpAddr>) -> Result<Guess<'_>, ApiError> {
        ip.map(|ip| self.0.try_take(ip)).transpose().map(Guess)
    }
}

/// A device request's slot in the [`ClaimGuard`], held while the request is under way: an
/// unknown code keeps it as a guess ([`Guess::wrong`]); every other outcome, an early
/// return or a client that leaves gives it back when it is dropped.
#[must_use = "a guess holds its slot until dropped"]
struct Guess<'a>(Option<Attempt<'a>>);

impl Guess<'_> {
    /// The code was unknown: the guess counts against the client's budget.
    fn wrong(self) {
        if let Some(attempt) = self.0 {
            attempt.fail();
        }
    }
}

/// A claim code as stored (`XKCD-4291`): four letters, a dash, four digits. Readers may
/// type it in any case, with or without the dash; anything else is not a code.
pub fn normalize_code(input: &str) -> Option<String> {
    let s: String = input
        .chars()
        .filter(|c| *c != '-' && !c.is_whitespace())
        .collect();
    let b = s.as_bytes();
    let shaped = b.len() == 8
        && b[..4].iter().all(u8::is_ascii_alphabetic)
        && b[4..].iter().all(u8::is_ascii_digit);
    // All ASCII when shaped, so the byte offsets are character boundaries.
    shaped.then(|| format!("{}-{}", s[..4].to_ascii_uppercase(), &s[4..]))
}

/// An agent found by its claim code, with what the claim page may show of it.
pub struct Found {
    pub claim: AgentClaim,
    pub agent: Agent,
    /// Addresses only: the sealed keys are never loaded past the look-up.
    pub wallet: Option<WalletSummary>,
}

impl Found {
    pub fn is_claimed(&self) -> bool {
        self.claim.claimed_at.is_some()
    }

    /// Whether only the email the agent registered with may claim it.
    pub fn email_locked(&self) -> bool {
        self.agent.email.is_some()
    }
}

fn find(c: &mut AnyConnection, code: &str) -> Result<Option<Found>, StoreError> {
    let Some((claim, agent)) = repo::claims::find_by_code(c, code)? else {
        return Ok(None);
    };
    let wallet = repo::wallets::find_for_agent(c, &agent.id)?.map(|w| WalletSummary::of(&w));
    Ok(Some(Found {
        claim,
        agent,
        wallet,
    }))
}

fn unknown_code() -> ApiError {
    ApiError::not_found("Unknown claim code")
}

fn already_claimed() -> ApiError {
    ApiError::conflict("This agent has already been claimed")
}

fn needs_master_key() -> ApiError {
    ApiError::forbidden(
        "This email address already has an aibank platform: claim with one of that platform's master keys",
    )
    .with("needsMasterKey", true)
}

/// Finds the agent of a code: 404 for an unknown code (which keeps `guess` counted
/// against the client's budget) or an unclaimed one past its expiry. A claimed agent's
/// code keeps showing its status.
async fn lookup(state: &AppState, guess: Guess<'_>, raw: &str) -> Result<Found, ApiError> {
    let found = match normalize_code(raw) {
        None => Ok(None),
        Some(code) => state.pool.run(move |c| find(c, &code)).await,
    };
    let found = match found {
        Ok(Some(found)) => found,
        Ok(None) => {
            guess.wrong();
            return Err(unknown_code());
        }
        Err(e) => return Err(e.into()),
    };
    drop(guess);
    if !found.is_claimed() && found.claim.expires_at <= state.clock.now_ms() {
        return Err(ApiError::not_found("This claim code has expired").with("expired", true));
    }
    Ok(found)
}

/// The platform a claim adds the agent to.
enum Target {
    /// One the claimer holds a master key of.
    Existing { platform_id: String, key_id: String },
    /// A new one for the email, with its first master key (and that key's hash).
    New { key: GeneratedKey, hash: String },
}

/// A successful claim, as `POST /v1/device/claim` answers it.
#[derive(Debug, Serialize)]
pub struct Claimed {
    #[serde(rename = "agentId")]
    pub agent_id: String,
    #[serde(rename = "platformId")]
    pub platform_id: String,
    pub status: &'static str,
    #[serde(rename = "claimedAt")]
    pub claimed_at: String,
    #[serde(rename = "newPlatform")]
    pub new_platform: bool,
    /// The new platform's master key: in this response only.
    #[serde(rename = "masterKey", skip_serializing_if = "Option::is_none")]
    pub master_key: Option<String>,
}

/// Which platform a claim for `email` goes to: the email's own, which takes one of its
/// master keys, or a new one when the email has none yet.
async fn target_for(
    state: &AppState,
    email_lower: &str,
    master_key: Option<&str>,
) -> Result<Target, ApiError> {
    let lookup_email = email_lower.to_owned();
    let platforms = state
        .pool
        .run(move |c| repo::claims::platforms_of_email(c, &lookup_email).map_err(StoreError::from))
        .await?;
    let master_key = master_key.map(str::trim).filter(|k| !k.is_empty());
    if platforms.is_empty() {
        if master_key.is_some() {
            return Err(ApiError::invalid_field(
                "masterKey",
                "This email address has no aibank platform yet: claim without a master key and a new platform is created for it",
            ));
        }
        let key = GeneratedKey::new(KeyKind::Master);
        let hash = state.auth.hash_key(&key.full).await?;
        return Ok(Target::New { key, hash });
    }
    let presented = master_key.ok_or_else(needs_master_key)?;
    let auth = state
        .auth
        .authenticate_master_key(presented)
        .await
        .map_err(|e| {
            if e.code() == ErrorCode::Unauthorized {
                needs_master_key()
            } else {
                e
            }
        })?;
    if !platforms.contains(&auth.platform_id) {
        return Err(needs_master_key());
    }
    Ok(Target::Existing {
        platform_id: auth.platform_id,
        key_id: auth.key_id,
    })
}

/// The claim's writes, in the caller's transaction: the new platform and its master key
/// if any, the conditional claim (0 rows: someone else won, 409), the agent's move to the
/// platform and the audit entry. The platform id and the new master key, if any.
fn commit_claim(
    c: &mut AnyConnection,
    agent_id: &str,
    email: &str,
    target: Target,
    now: i64,
) -> Result<(String, Option<GeneratedKey>), TxStop<ApiError, StoreError>> {
    let (platform_id, actor, new_key) = match target {
        Target::Existing {
            platform_id,
            key_id,
        } => (platform_id, Actor::master_key(&key_id), None),
        Target::New { key, hash } => {
            let email_lower = email.to_ascii_lowercase();
            repo::claims::lock_email(c, &email_lower)?;
            // Another claim may have created the email's platform meanwhile.
            if !repo::claims::platforms_of_email(c, &email_lower)?.is_empty() {
                return Err(TxStop::Stopped(needs_master_key()));
            }
            let row =
                create_master_key(c, &Actor::PUBLIC, None, email, Some(email), &key, hash, now)?;
            (row.platform_id, Actor::PUBLIC, Some(key))
        }
    };
    if !repo::claims::claim(c, agent_id, email, &platform_id, now)? {
        return Err(TxStop::Stopped(already_claimed()));
    }
    Audit {
        actor: &actor,
        action: "agent.claimed",
        platform_id: Some(&platform_id),
        agent_id: Some(agent_id),
        target_id: agent_id,
        details: Some(serde_json::json!({
            "email": email,
            "newPlatform": new_key.is_some(),
        })),
    }
    .write(c, now)?;
    Ok((platform_id, new_key))
}

/// Claims a found agent for `email` (raw input), with `master_key` when the email
/// already has a platform. Everything the claim changes is one transaction; of
/// concurrent claims of one agent exactly one wins, the others get 409.
async fn claim_found(
    state: &AppState,
    found: &Found,
    email: &str,
    master_key: Option<&str>,
) -> Result<Claimed, ApiError> {
    let email = validate::email("email", email)?;
    if found.is_claimed() {
        return Err(already_claimed());
    }
    if let Some(registered) = &found.agent.email {
        if !registered.eq_ignore_ascii_case(&email) {
            return Err(ApiError::forbidden(
                "This agent was registered with a different email address: only that address can claim it",
            )
            .with("emailLocked", true));
        }
    }
    let target = target_for(state, &email.to_ascii_lowercase(), master_key).await?;
    let now = state.clock.now_ms();
    let agent_id = found.agent.id.clone();
    let tx_agent = agent_id.clone();
    let (platform_id, new_key) = state
        .pool
        .run(move |c| c.write_tx(|c| commit_claim(c, &tx_agent, &email, target, now)))
        .await
        .map_err(|e| match e {
            TxStop::Stopped(refusal) => refusal,
            TxStop::Failed(e) => ApiError::from(e),
        })?;
    state.auth.forget_agent(&agent_id);
    tracing::info!(
        agent_id = %agent_id,
        platform_id = %platform_id,
        new_platform = new_key.is_some(),
        "agent claimed"
    );
    Ok(Claimed {
        agent_id,
        platform_id,
        status: "claimed",
        claimed_at: rfc3339(now),
        new_platform: new_key.is_some(),
        master_key: new_key.map(|k| k.full.expose().to_owned()),
    })
}

fn ip_of(req: &HttpRequest, state: &AppState) -> Option<IpAddr> {
    client_ip(req, state.auth.trusted_proxies())
}

#[derive(Debug, Serialize)]
pub struct AgentRef {
    id: String,
    name: String,
}

/// What anyone holding a claim code may see. Never the email the agent registered with,
/// nor who claimed it.
#[derive(Debug, Serialize)]
pub struct DeviceStatus {
    code: String,
    agent: AgentRef,
    wallet: Option<WalletSummary>,
    status: &'static str,
    #[serde(rename = "claimedAt")]
    claimed_at: Option<String>,
    #[serde(rename = "emailLocked")]
    email_locked: bool,
    #[serde(rename = "expiresAt")]
    expires_at: String,
}

impl From<Found> for DeviceStatus {
    fn from(f: Found) -> Self {
        DeviceStatus {
            status: if f.is_claimed() {
                "claimed"
            } else {
                "unclaimed"
            },
            email_locked: f.email_locked(),
            code: f.claim.code,
            agent: AgentRef {
                id: f.agent.id,
                name: f.agent.name,
            },
            wallet: f.wallet,
            claimed_at: f.claim.claimed_at.map(rfc3339),
            expires_at: rfc3339(f.claim.expires_at),
        }
    }
}

/// `GET /v1/device/{code}`: the agent behind a claim code and whether it is claimed.
#[tracing::instrument(skip_all)]
pub async fn status(
    req: HttpRequest,
    state: web::Data<AppState>,
    guard: web::Data<ClaimGuard>,
    path: web::Path<String>,
) -> Result<web::Json<DeviceStatus>, ApiError> {
    let guess = guard.take(ip_of(&req, &state))?;
    let found = lookup(&state, guess, &path).await?;
    Ok(web::Json(found.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    code: String,
    email: String,
}

fn require_code(code: &str) -> Result<&str, ApiError> {
    let code = code.trim();
    if code.is_empty() {
        return Err(ApiError::invalid_field("code", "`code` must not be empty"));
    }
    Ok(code)
}

/// `POST /v1/device/claim`: claims an agent; `X-Master-Key` when the email already has a
/// platform.
#[tracing::instrument(skip_all)]
pub async fn claim(
    req: HttpRequest,
    state: web::Data<AppState>,
    guard: web::Data<ClaimGuard>,
    body: Json<ClaimRequest>,
) -> Result<web::Json<Claimed>, ApiError> {
    let guess = guard.take(ip_of(&req, &state))?;
    let code = require_code(&body.code)?;
    // A value that is not text is a wrong key like any other.
    let master_key = req
        .headers()
        .get(aibank_auth::extract::MASTER_KEY_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let found = lookup(&state, guess, code).await?;
    Ok(web::Json(
        claim_found(&state, &found, &body.email, master_key.as_deref()).await?,
    ))
}

/// `?code=` of the page; anything else in the query is ignored.
#[derive(Debug, Default, Deserialize)]
struct PageQuery {
    code: Option<String>,
}

/// The claim form as posted.
#[derive(Debug, Default, Deserialize)]
struct ClaimForm {
    code: Option<String>,
    email: Option<String>,
    master_key: Option<String>,
}

/// A form body is a few short fields.
const MAX_FORM_BYTES: usize = 8 * 1024;

/// `GET /device`: the code form, or with `?code=` the agent and, while unclaimed, the
/// claim form.
#[tracing::instrument(skip_all)]
pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    guard: web::Data<ClaimGuard>,
) -> HttpResponse {
    let guess = match guard.take(ip_of(&req, &state)) {
        Ok(guess) => guess,
        Err(e) => return error_page(&e),
    };
    let query = web::Query::<PageQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let Some(code) = query
        .code
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    else {
        return page::enter_code(None, None);
    };
    match lookup(&state, guess, code).await {
        Ok(found) => page::agent(&found, None, None),
        Err(e) => page::enter_code(Some(code), Some(&e)),
    }
}

/// `POST /device`: the claim form's submission, answered with the outcome as a page and
/// the status of the API's answer.
#[tracing::instrument(skip_all)]
pub async fn submit(
    req: HttpRequest,
    state: web::Data<AppState>,
    guard: web::Data<ClaimGuard>,
    payload: web::Payload,
) -> HttpResponse {
    let guess = match guard.take(ip_of(&req, &state)) {
        Ok(guess) => guess,
        Err(e) => return error_page(&e),
    };
    let form = match aibank_core::extract::read_body(payload.into_inner(), MAX_FORM_BYTES).await {
        Ok(body) => std::str::from_utf8(&body)
            .ok()
            .and_then(|s| web::Query::<ClaimForm>::from_query(s).ok())
            .map(web::Query::into_inner),
        Err(_) => None,
    };
    let Some(form) = form else {
        let e = ApiError::invalid_field("body", "The form could not be read");
        return page::enter_code(None, Some(&e));
    };
    let code = form.code.as_deref().unwrap_or_default();
    let code = match require_code(code) {
        Ok(c) => c,
        Err(e) => return page::enter_code(None, Some(&e)),
    };
    let found = match lookup(&state, guess, code).await {
        Ok(f) => f,
        Err(e) => return page::enter_code(Some(code), Some(&e)),
    };
    let email = form.email.as_deref().unwrap_or_default();
    match claim_found(&state, &found, email, form.master_key.as_deref()).await {
        Ok(claimed) => page::claimed(&found, &claimed),
        Err(e) => {
            // Show the agent as it is now (another claim may just have won).
            let current = state
                .pool
                .run({
                    let code = found.claim.code.clone();
                    move |c| find(c, &code)
                })
                .await;
            match current {
                Ok(Some(now)) => page::agent(&now, Some(email), Some(&e)),
                _ => page::agent(&found, Some(email), Some(&e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn codes_are_read_in_any_case_with_or_without_the_dash() {
        for input in [
            "XKCD-4291",
            "xkcd-4291",
            "xkcd4291",
            " XkCd4291 ",
            "XKCD 4291",
        ] {
            assert_eq!(
                normalize_code(input).as_deref(),
                Some("XKCD-4291"),
                "{input}"
            );
        }
        for bad in [
            "",
            "XKCD-429",
            "XKCD-42911",
            "XKC1-4291",
            "4291-XKCD",
            "XKCD-42a1",
            "ÄKCD-4291",
        ] {
            assert_eq!(normalize_code(bad), None, "{bad}");
        }
    }
}
