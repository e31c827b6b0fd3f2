//! The platform dashboard (`/dashboard…`): a person signs in with a master key and sees
//! the fleet, one agent at a time, and acts on it: grants credits, sets limits, pauses and
//! resumes keys, rotates a key. Server-rendered HTML, usable without JavaScript (the pages
//! have none; see `pages` for the CSP).
//!
//! Every action runs the API's own service function (`platform_agents`) as the master key
//! that signed in, so validation, the journal and the audit record are the API's. Every
//! form that changes something posts the session's CSRF token back, and is refused (403)
//! without it; the cookie is `SameSite=Strict` as well. The search form is a GET that
//! changes nothing and carries no token, so the token never appears in a URL. Failed
//! sign-ins count against a per-client budget ([`SignInGuard`]).

mod chart;
mod pages;
mod session;

use std::net::IpAddr;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use aibank_auth::access::client_ip;
use aibank_auth::ratelimit::{FailureLimiter, Limit};
use aibank_auth::MasterKeyAuth;
use aibank_core::page::{Cursor, PageQuery};
use aibank_core::{ApiError, ErrorCode, SharedClock, Usd};
use aibank_ledger::limits::account_spending;
use aibank_ledger::LedgerError;
use aibank_store::models::{Account, Agent, ApiKey, AuditEvent, Platform, UsageEvent};
use aibank_store::repo::{self, cursor_of, dashboard as dash_repo};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::handlers::platform_agents::{self, UpdateRequest};
use crate::idempotency::IdempotencyKey;
use crate::state::AppState;
use crate::views::wallets::WalletSummary;
use session::SignedIn;

pub use pages::content_security_policy;

/// Agents per fleet page.
const PAGE_SIZE: u32 = 25;
/// Recent calls and audit entries on an agent's page.
const RECENT: i64 = 20;
/// Days in the spend chart, today included.
const CHART_DAYS: usize = 30;
/// A form body is a few short fields.
const MAX_FORM_BYTES: usize = 8 * 1024;
const SIGN_IN_PATH: &str = "/dashboard/sign-in";

/// Per-client budget of failed sign-ins, shared by all workers of this instance.
#[derive(Debug)]
pub struct SignInGuard(FailureLimiter);

impl SignInGuard {
    pub fn new(limit: Limit, clock: SharedClock) -> Self {
        SignInGuard(FailureLimiter::new(
            limit,
            clock,
            "Too many failed sign-ins from this IP address",
        ))
    }
}

/// What an action did, said on the page it redirects to. Only these fixed messages are
/// ever shown from the query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Granted,
    LimitsSaved,
    Paused,
    Resumed,
}

impl Notice {
    const ALL: [Notice; 4] = [
        Notice::Granted,
        Notice::LimitsSaved,
        Notice::Paused,
        Notice::Resumed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Notice::Granted => "granted",
            Notice::LimitsSaved => "limits",
            Notice::Paused => "paused",
            Notice::Resumed => "resumed",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Notice::Granted => "Credits granted.",
            Notice::LimitsSaved => "Limits saved.",
            Notice::Paused => "Every key of this agent is paused.",
            Notice::Resumed => "The agent's keys work again.",
        }
    }

    fn parse(s: &str) -> Option<Notice> {
        Notice::ALL.into_iter().find(|n| n.as_str() == s)
    }
}

/// One agent on the fleet page.
pub struct FleetRow {
    pub agent: Agent,
    pub account: Account,
    /// Spent in the last day, week and month, as the limits count it.
    pub spent: [Usd; 3],
    pub last_active: Option<i64>,
}

/// A page of the fleet.
pub struct Fleet {
    pub platform: Platform,
    pub rows: Vec<FleetRow>,
    pub search: Option<String>,
    /// The cursor of the next page, if there is one.
    pub next: Option<String>,
    /// Whether this is a later page than the first.
    pub paged: bool,
}

/// Everything an agent's page shows.
pub struct AgentDetail {
    pub platform: Platform,
    pub agent: Agent,
    pub account: Account,
    pub spent: [Usd; 3],
    pub days: Vec<(i64, Usd)>,
    pub keys: Vec<ApiKey>,
    pub calls: Vec<UsageEvent>,
    pub wallet: Option<WalletSummary>,
    pub audit: Vec<AuditEvent>,
}

fn agent_not_found() -> ApiError {
    ApiError::not_found("Agent not found")
}

fn ip_of(req: &HttpRequest, state: &AppState) -> Option<IpAddr> {
    client_ip(req, state.auth.trusted_proxies())
}

/// `303 See Other` to `location`, so a reload after an action does not post it again.
fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

fn agent_path(id: &str) -> String {
    format!("/dashboard/agents/{}", pages::encode(id))
}

/// A refusal as a page, for a request that may have a session (and its platform's name,
/// where it is at hand).
fn refusal(e: &ApiError, session: Option<(&SignedIn, &str)>) -> HttpResponse {
    pages::error_page(e, session)
}

/// A refusal before routing (the per-IP limiter): a page, as people read the dashboard.
pub fn error_page(e: &ApiError) -> HttpResponse {
    pages::error_page(e, None)
}

/// The session of a page view; without one, the answer that sends the reader to sign in.
async fn viewer(req: &HttpRequest, state: &AppState) -> Result<SignedIn, HttpResponse> {
    match session::current(req, state).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(see_other(SIGN_IN_PATH)),
        Err(e) => Err(refusal(&e, None)),
    }
}

fn signed_out() -> ApiError {
    ApiError::unauthorized("Your session has ended: sign in again")
}

fn csrf_refused() -> ApiError {
    ApiError::forbidden(
        "This form has expired or did not come from this dashboard: reload the page and try again",
    )
}

/// A form that carries the CSRF token.
trait Form: DeserializeOwned {
    fn csrf(&self) -> Option<&str>;
}

macro_rules! form {
    ($(#[$doc:meta])* $name:ident { $($field:ident),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Default, Deserialize)]
        struct $name {
            csrf: Option<String>,
            $($field: Option<String>,)*
        }
        impl Form for $name {
            fn csrf(&self) -> Option<&str> {
                self.csrf.as_deref()
            }
        }
    };
}

form!(
    /// The pause, resume, rotate and sign-out buttons: the token alone.
    Button {}
);
form!(GrantForm {
    amount_usd,
    idempotency_key
});
form!(LimitsForm {
    daily_limit_usd,
    weekly_limit_usd,
    monthly_limit_usd,
    per_tx_limit_usd,
});
form!(SignInForm { master_key });

async fn read_form<T: DeserializeOwned>(payload: web::Payload) -> Result<T, ApiError> {
    let unreadable = || ApiError::invalid_field("body", "The form could not be read");
    let body = aibank_core::extract::read_body(payload.into_inner(), MAX_FORM_BYTES)
        .await
        .map_err(|_| unreadable())?;
    let text = std::str::from_utf8(&body).map_err(|_| unreadable())?;
    web::Query::<T>::from_query(text)
        .map(web::Query::into_inner)
        .map_err(|_| unreadable())
}

/// The session and the form of a post that changes something: 401 without a session,
/// 403 without the session's CSRF token.
async fn posted<T: Form>(
    req: &HttpRequest,
    state: &AppState,
    payload: web::Payload,
) -> Result<(SignedIn, T), HttpResponse> {
    let s = match session::current(req, state).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err(refusal(&signed_out(), None)),
        Err(e) => return Err(refusal(&e, None)),
    };
    let form: T = match read_form(payload).await {
        Ok(f) => f,
        Err(e) => return Err(refusal(&e, Some((&s, "")))),
    };
    if !session::tokens_match(form.csrf(), &s.csrf) {
        tracing::warn!(platform_id = %s.auth.platform_id, "dashboard form refused: CSRF token missing or wrong");
        return Err(refusal(&csrf_refused(), Some((&s, ""))));
    }
    Ok((s, form))
}

/// An amount typed in a form, read as the API reads `"8.5"`.
fn amount(field: &str, v: Option<&str>) -> Result<Option<Usd>, ApiError> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    serde_json::from_value::<Usd>(serde_json::Value::String(v.to_owned()))
        .map(Some)
        .map_err(|_| {
            ApiError::invalid_field(
                field,
                format!("`{field}` must be an amount of USD with at most 6 decimal places"),
            )
        })
}

async fn load_platform(state: &AppState, platform_id: String) -> Result<Platform, ApiError> {
    Ok(state
        .pool
        .run(move |c| {
            repo::platforms::find(c, &platform_id).map_err(aibank_store::StoreError::from)
        })
        .await?)
}

/// One of the platform's agents, with the platform.
async fn load_agent_row(
    state: &AppState,
    auth: &MasterKeyAuth,
    id: String,
) -> Result<(Platform, Agent), ApiError> {
    let platform_id = auth.platform_id.clone();
    state
        .pool
        .run(move |c| {
            let Some(agent) = repo::agents::find_for_platform(c, &platform_id, &id)? else {
                return Ok(None);
            };
            Ok::<_, aibank_store::StoreError>(Some((
                repo::platforms::find(c, &platform_id)?,
                agent,
            )))
        })
        .await?
        .ok_or_else(agent_not_found)
}

async fn load_fleet(
    state: &AppState,
    auth: &MasterKeyAuth,
    search: Option<String>,
    cursor: Option<Cursor>,
) -> Result<Fleet, ApiError> {
    let now = state.clock.now_ms();
    let platform_id = auth.platform_id.clone();
    let paged = cursor.is_some();
    let fleet = state
        .pool
        .run(move |c| {
            let platform = repo::platforms::find(c, &platform_id)?;
            let mut agents = dash_repo::search_agents(
                c,
                &platform_id,
                search.as_deref(),
                cursor.as_ref(),
                i64::from(PAGE_SIZE) + 1,
            )?;
            let more = agents.len() > PAGE_SIZE as usize;
            agents.truncate(PAGE_SIZE as usize);
            let next = if more {
                agents
                    .last()
                    .map(|a| cursor_of(a.created_at, &a.id).encode())
            } else {
                None
            };
            let ids: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
            let mut accounts = aibank_ledger::balances(c, &ids)?;
            let last = dash_repo::last_key_use(c, &ids)?;
            let rows = agents
                .into_iter()
                .map(|agent| {
                    let account = accounts
                        .remove(&agent.id)
                        .ok_or(LedgerError::AccountNotFound)?;
                    let spent = account_spending(c, &agent.id, now)?;
                    let last_active = last.get(&agent.id).copied();
                    Ok(FleetRow {
                        agent,
                        account,
                        spent,
                        last_active,
                    })
                })
                .collect::<Result<Vec<_>, LedgerError>>()?;
            Ok::<_, LedgerError>(Fleet {
                platform,
                rows,
                search,
                next,
                paged,
            })
        })
        .await?;
    Ok(fleet)
}

async fn load_agent(
    state: &AppState,
    auth: &MasterKeyAuth,
    id: String,
) -> Result<AgentDetail, ApiError> {
    let now = state.clock.now_ms();
    let platform_id = auth.platform_id.clone();
    state
        .pool
        .run(move |c| {
            let Some(agent) = repo::agents::find_for_platform(c, &platform_id, &id)? else {
                return Ok(None);
            };
            let platform = repo::platforms::find(c, &platform_id)?;
            let account = aibank_ledger::balance(c, &agent.id)?;
            let spent = account_spending(c, &agent.id, now)?;
            let days = aibank_ledger::daily_spending(c, &agent.id, CHART_DAYS, now)?;
            let keys = repo::keys::list_agent_keys(c, &agent.id, None, 100)?;
            let calls = repo::usage::list_for_agent(
                c,
                &agent.id,
                repo::usage::Range::default(),
                None,
                RECENT,
            )?;
            let wallet =
                repo::wallets::find_for_agent(c, &agent.id)?.map(|w| WalletSummary::of(&w));
            let audit = repo::audit::list_for_platform(
                c,
                &platform_id,
                None,
                Some(&agent.id),
                None,
                RECENT,
            )?;
            Ok::<_, LedgerError>(Some(AgentDetail {
                platform,
                agent,
                account,
                spent,
                days,
                keys,
                calls,
                wallet,
                audit,
            }))
        })
        .await?
        .ok_or_else(agent_not_found)
}

/// An agent's page with the outcome of an action; a refusal page when the agent cannot
/// be shown.
async fn agent_page(
    state: &AppState,
    s: &SignedIn,
    id: String,
    notice: Option<Notice>,
    error: Option<&ApiError>,
) -> HttpResponse {
    match load_agent(state, &s.auth, id).await {
        Ok(d) => pages::agent(s, &d, notice, error, &session::random_token()),
        Err(e) => {
            let platform = load_platform(state, s.auth.platform_id.clone())
                .await
                .map(|p| p.name)
                .unwrap_or_default();
            refusal(error.unwrap_or(&e), Some((s, &platform)))
        }
    }
}

/// After an action: back to the agent's page with what it did, or the page again with
/// the refusal and its status.
async fn after_action(
    state: &AppState,
    s: &SignedIn,
    id: String,
    outcome: Result<Notice, ApiError>,
) -> HttpResponse {
    match outcome {
        Ok(n) => see_other(&format!("{}?done={}", agent_path(&id), n.as_str())),
        Err(e) => agent_page(state, s, id, None, Some(&e)).await,
    }
}

/// `?q=&cursor=` of the fleet page.
#[derive(Debug, Default, Deserialize)]
struct FleetQuery {
    q: Option<String>,
    cursor: Option<String>,
}

/// `GET /dashboard`: the fleet, searched and paged.
#[tracing::instrument(skip_all)]
pub async fn fleet(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    let s = match viewer(&req, &state).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    let q = web::Query::<FleetQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or_default();
    let search =
        q.q.map(|q| q.trim().chars().take(100).collect::<String>())
            .filter(|q| !q.is_empty());
    let cursor = PageQuery {
        limit: None,
        cursor: q.cursor.filter(|c| !c.is_empty()),
    }
    .cursor();
    let outcome = match cursor {
        Ok(cursor) => load_fleet(&state, &s.auth, search, cursor).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(f) => pages::fleet(&s, &f),
        Err(e) => refusal(&e, Some((&s, ""))),
    }
}

/// `GET /dashboard/agents/{id}`.
#[tracing::instrument(skip_all)]
pub async fn agent(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> HttpResponse {
    let s = match viewer(&req, &state).await {
        Ok(s) => s,
        Err(res) => return res,
    };
    #[derive(Deserialize)]
    struct Done {
        done: Option<String>,
    }
    let notice = web::Query::<Done>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.into_inner().done)
        .and_then(|d| Notice::parse(&d));
    agent_page(&state, &s, path.into_inner(), notice, None).await
}

/// `GET /dashboard/sign-in`: the form, with a fresh double-submitted token; the fleet
/// for a reader already signed in.
#[tracing::instrument(skip_all)]
pub async fn sign_in_page(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    match session::current(&req, &state).await {
        Ok(Some(_)) => see_other("/dashboard"),
        Ok(None) => sign_in_form(&state, None),
        Err(e) => refusal(&e, None),
    }
}

fn sign_in_form(state: &AppState, error: Option<&ApiError>) -> HttpResponse {
    let token = session::random_token();
    let mut res = pages::sign_in(&token, error);
    if let Ok(v) = header::HeaderValue::from_str(&session::sign_in_cookie(state, &token)) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// `POST /dashboard/sign-in`: checks the master key like `X-Master-Key` and opens a
/// session. A wrong key counts against the client's budget; once it is spent every
/// sign-in from the client is refused (429) until the window ends.
#[tracing::instrument(skip_all)]
pub async fn sign_in(
    req: HttpRequest,
    state: web::Data<AppState>,
    guard: web::Data<SignInGuard>,
    payload: web::Payload,
) -> HttpResponse {
    let attempt = match ip_of(&req, &state)
        .map(|ip| guard.0.try_take(ip))
        .transpose()
    {
        Ok(a) => a,
        Err(e) => return sign_in_form(&state, Some(&e)),
    };
    let form: SignInForm = match read_form(payload).await {
        Ok(f) => f,
        Err(e) => return sign_in_form(&state, Some(&e)),
    };
    let expected = session::cookie(&req, session::SIGN_IN_COOKIE).unwrap_or_default();
    if !session::tokens_match(form.csrf(), &expected) {
        return sign_in_form(&state, Some(&csrf_refused()));
    }
    let key = form
        .master_key
        .as_deref()
        .map(str::trim)
        .unwrap_or_default();
    let auth = match state.auth.authenticate_master_key(key).await {
        Ok(auth) => auth,
        Err(e) => {
            if e.code() == ErrorCode::Unauthorized {
                if let Some(a) = attempt {
                    a.fail();
                }
            }
            return sign_in_form(&state, Some(&e));
        }
    };
    drop(attempt);
    let token = match session::open(&state, &auth).await {
        Ok(t) => t,
        Err(e) => return sign_in_form(&state, Some(&e)),
    };
    tracing::info!(platform_id = %auth.platform_id, key_id = %auth.key_id, "dashboard signed in");
    let mut res = see_other("/dashboard");
    for cookie in [
        session::session_cookie(&state, &token),
        session::clear_cookie(&state, session::SIGN_IN_COOKIE),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(&cookie) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    res
}

/// `POST /dashboard/sign-out`: ends the session.
#[tracing::instrument(skip_all)]
pub async fn sign_out(
    req: HttpRequest,
    state: web::Data<AppState>,
    payload: web::Payload,
) -> HttpResponse {
    let (s, _) = match posted::<Button>(&req, &state, payload).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    if let Err(e) = session::close(&state, &s).await {
        return refusal(&e, Some((&s, "")));
    }
    tracing::info!(platform_id = %s.auth.platform_id, key_id = %s.auth.key_id, "dashboard signed out");
    let mut res = see_other(SIGN_IN_PATH);
    if let Ok(v) =
        header::HeaderValue::from_str(&session::clear_cookie(&state, session::SESSION_COOKIE))
    {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// `POST /dashboard/agents/{id}/credits`: the API's grant, at most once per rendered form
/// (its hidden idempotency key), so a double submission grants once.
#[tracing::instrument(skip_all)]
pub async fn grant(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (s, form) = match posted::<GrantForm>(&req, &state, payload).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let id = path.into_inner();
    let outcome = async {
        let amount = amount("amount_usd", form.amount_usd.as_deref())?.ok_or_else(|| {
            ApiError::invalid_field("amount_usd", "`amount_usd` must be greater than zero")
        })?;
        let key = IdempotencyKey(
            form.idempotency_key
                .filter(|k| k.len() == 64 && k.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(|k| format!("dashboard:{k}")),
        );
        platform_agents::grant(&state, s.auth.clone(), id.clone(), amount, key).await?;
        Ok(Notice::Granted)
    }
    .await;
    after_action(&state, &s, id, outcome).await
}

/// `POST /dashboard/agents/{id}/limits`: the API's update with the limits that changed.
#[tracing::instrument(skip_all)]
pub async fn limits(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (s, form) = match posted::<LimitsForm>(&req, &state, payload).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let id = path.into_inner();
    let outcome = async {
        let (_, current) = load_agent_row(&state, &s.auth, id.clone()).await?;
        // Only what differs, so the audit entry says what changed.
        let changed = |field: &str, v: Option<&str>, now: i64| {
            amount(field, v).map(|v| v.filter(|v| v.micros() != now))
        };
        let update = UpdateRequest {
            daily_limit_usd: changed(
                "daily_limit_usd",
                form.daily_limit_usd.as_deref(),
                current.daily_limit_micros,
            )?,
            weekly_limit_usd: changed(
                "weekly_limit_usd",
                form.weekly_limit_usd.as_deref(),
                current.weekly_limit_micros,
            )?,
            monthly_limit_usd: changed(
                "monthly_limit_usd",
                form.monthly_limit_usd.as_deref(),
                current.monthly_limit_micros,
            )?,
            per_tx_limit_usd: changed(
                "per_tx_limit_usd",
                form.per_tx_limit_usd.as_deref(),
                current.per_tx_limit_micros,
            )?,
            ..UpdateRequest::default()
        };
        platform_agents::update_agent(&state, s.auth.clone(), id.clone(), update).await?;
        Ok(Notice::LimitsSaved)
    }
    .await;
    after_action(&state, &s, id, outcome).await
}

async fn set_paused(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
    pause: bool,
) -> HttpResponse {
    let (s, _) = match posted::<Button>(&req, &state, payload).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let id = path.into_inner();
    let outcome = platform_agents::set_paused(&state, s.auth.clone(), id.clone(), pause)
        .await
        .map(|_| {
            if pause {
                Notice::Paused
            } else {
                Notice::Resumed
            }
        });
    after_action(&state, &s, id, outcome).await
}

/// `POST /dashboard/agents/{id}/pause`: every key of the agent answers 403 until resumed.
#[tracing::instrument(skip_all)]
pub async fn pause(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    set_paused(req, state, path, payload, true).await
}

/// `POST /dashboard/agents/{id}/resume`.
#[tracing::instrument(skip_all)]
pub async fn resume(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    set_paused(req, state, path, payload, false).await
}

/// `POST /dashboard/agents/{id}/rotate-key`: the API's rotation; the new key is shown on
/// this answer only (never in a URL, never stored).
#[tracing::instrument(skip_all)]
pub async fn rotate_key(
    req: HttpRequest,
    state: web::Data<AppState>,
    path: web::Path<String>,
    payload: web::Payload,
) -> HttpResponse {
    let (s, _) = match posted::<Button>(&req, &state, payload).await {
        Ok(p) => p,
        Err(res) => return res,
    };
    let id = path.into_inner();
    let outcome = async {
        let (platform, agent) = load_agent_row(&state, &s.auth, id.clone()).await?;
        let rotated = platform_agents::rotate(&state, s.auth.clone(), id.clone()).await?;
        Ok::<_, ApiError>((platform, agent, rotated))
    }
    .await;
    match outcome {
        Ok((p, a, r)) => pages::rotated(&s, &p.name, &a, &r),
        Err(e) => agent_page(&state, &s, id, None, Some(&e)).await,
    }
}
