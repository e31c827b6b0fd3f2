//! Dashboard sessions and their cookies. Signing in with a master key opens a session
//! stored by the SHA-256 of a random token; the cookie holds the token. A session acts
//! as the master key that opened it, for 12 hours, and ends at sign-out or when that key
//! is revoked. Each session has its own CSRF token, which every form posts back.
//!
//! Before a session exists, the sign-in form is guarded by a double-submitted token: a
//! cookie and a hidden field that must match.

use actix_web::http::header;
use actix_web::HttpRequest;
use aibank_auth::MasterKeyAuth;
use aibank_core::ApiError;
use aibank_store::models::DashboardSession;
use aibank_store::repo::dashboard as repo;
use aibank_store::StoreError;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::state::AppState;

/// The session's cookie.
pub const SESSION_COOKIE: &str = "aibank_session";
/// The sign-in form's double-submitted token.
pub const SIGN_IN_COOKIE: &str = "aibank_sign_in";
/// Cookies are sent to the dashboard's paths only.
const COOKIE_PATH: &str = "/dashboard";
pub const SESSION_TTL_MS: i64 = 12 * 3_600_000;
/// Long enough to type a key in; a stale form is simply shown again.
const SIGN_IN_TTL_SECS: i64 = 3_600;

/// A live session.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub auth: MasterKeyAuth,
    pub csrf: String,
    token_hash: String,
}

/// 32 random bytes, hex: unguessable, and safe in a cookie, a form and a header.
pub fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `given` is `expected`, in time independent of where they differ.
pub fn tokens_match(given: Option<&str>, expected: &str) -> bool {
    given.is_some_and(|g| {
        !expected.is_empty() && bool::from(g.as_bytes().ct_eq(expected.as_bytes()))
    })
}

/// The value of the request's cookie `name`.
pub fn cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// A `Set-Cookie` value: never readable by scripts, never sent from another site, and
/// `Secure` when the server is reached over https.
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age_secs: i64) -> String {
    let secure = if state.public_url.starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path={COOKIE_PATH}; Max-Age={max_age_secs}; HttpOnly; SameSite=Strict{secure}")
}

pub fn clear_cookie(state: &AppState, name: &str) -> String {
    set_cookie(state, name, "", 0)
}

pub fn session_cookie(state: &AppState, token: &str) -> String {
    set_cookie(state, SESSION_COOKIE, token, SESSION_TTL_MS / 1000)
}

pub fn sign_in_cookie(state: &AppState, token: &str) -> String {
    set_cookie(state, SIGN_IN_COOKIE, token, SIGN_IN_TTL_SECS)
}

/// Opens a session for `auth`; the token for the cookie. Expired sessions are dropped on
/// the way, so the table holds live ones and the few that expired since the last sign-in.
pub async fn open(state: &AppState, auth: &MasterKeyAuth) -> Result<String, ApiError> {
    let token = random_token();
    let now = state.clock.now_ms();
    let row = DashboardSession {
        token_hash: hash_token(&token),
        platform_id: auth.platform_id.clone(),
        master_key_id: auth.key_id.clone(),
        csrf_token: random_token(),
        created_at: now,
        expires_at: now + SESSION_TTL_MS,
    };
    state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                repo::delete_expired_sessions(c, now)?;
                repo::insert_session(c, &row)
            })
            .map_err(StoreError::from)
        })
        .await?;
    Ok(token)
}

/// The request's live session, if its cookie names one.
pub async fn current(req: &HttpRequest, state: &AppState) -> Result<Option<SignedIn>, ApiError> {
    let Some(token) = cookie(req, SESSION_COOKIE).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let token_hash = hash_token(&token);
    let now = state.clock.now_ms();
    let found = state
        .pool
        .run({
            let token_hash = token_hash.clone();
            move |c| repo::find_live_session(c, &token_hash, now).map_err(StoreError::from)
        })
        .await?;
    Ok(found.map(|s| SignedIn {
        auth: MasterKeyAuth {
            key_id: s.master_key_id,
            platform_id: s.platform_id,
        },
        csrf: s.csrf_token,
        token_hash,
    }))
}

/// Ends a session.
pub async fn close(state: &AppState, session: &SignedIn) -> Result<(), ApiError> {
    let token_hash = session.token_hash.clone();
    state
        .pool
        .run(move |c| repo::delete_session(c, &token_hash).map_err(StoreError::from))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_only_when_equal_and_present() {
        let t = random_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, random_token());
        assert!(tokens_match(Some(&t), &t));
        assert!(!tokens_match(None, &t));
        assert!(!tokens_match(Some(""), &t));
        assert!(!tokens_match(Some(&t[..63]), &t));
        assert!(!tokens_match(Some(""), ""));
    }

    #[test]
    fn the_stored_hash_is_not_the_token() {
        let t = random_token();
        let h = hash_token(&t);
        assert_eq!(h.len(), 64);
        assert_ne!(h, t);
        assert_eq!(h, hash_token(&t));
    }
}
