//! Per-client-IP request limits, kept in this instance's memory: with several instances
//! behind a balancer each enforces its own share. (Per-key limits that must hold across
//! instances live in the database; see `aibank_store::repo::keys::admit_message`.)

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use aibank_core::{ApiError, SharedClock};

/// `max` requests per `window`, the window starting at the first request. `max == 0`: off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub max: u32,
    pub window: Duration,
}

impl Limit {
    pub const OFF: Limit = Limit {
        max: 0,
        window: Duration::from_secs(60),
    };

    fn window_ms(self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Which budget a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Authenticated endpoints.
    General,
    /// Endpoints anyone may call without a credential (sign-up and the like).
    Public,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    used: u32,
}

/// Fixed windows per (IP, class). Expired windows are dropped when the map grows, so memory
/// stays bounded by the number of addresses seen within one window.
pub struct IpRateLimiter {
    general: Limit,
    public: Limit,
    clock: SharedClock,
    windows: Mutex<HashMap<(IpAddr, Class), Window>>,
}

impl std::fmt::Debug for IpRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpRateLimiter")
            .field("general", &self.general)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

const PRUNE_AT: usize = 50_000;

/// `key`'s window at `now`, a fresh one if its last has ended. When the map has grown
/// large, windows older than `keep_ms` are dropped first, so memory stays bounded.
fn current<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Window>,
    key: K,
    now: i64,
    window_ms: i64,
    keep_ms: i64,
) -> &mut Window {
    if map.len() >= PRUNE_AT {
        map.retain(|_, w| now - w.start < keep_ms);
    }
    let w = map.entry(key).or_insert(Window {
        start: now,
        used: 0,
    });
    if now - w.start >= window_ms {
        *w = Window {
            start: now,
            used: 0,
        };
    }
    w
}

impl IpRateLimiter {
    pub fn new(general: Limit, public: Limit, clock: SharedClock) -> Self {
        IpRateLimiter {
            general,
            public,
            clock,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request from `ip`; the 429 to answer when it is over the limit.
    pub fn check(&self, ip: IpAddr, class: Class) -> Result<(), ApiError> {
        let limit = match class {
            Class::General => self.general,
            Class::Public => self.public,
        };
        if limit.max == 0 {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let window_ms = limit.window_ms();
        let mut map = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let longest = self.general.window_ms().max(self.public.window_ms());
        let w = current(&mut map, (ip, class), now, window_ms, longest);
        if w.used >= limit.max {
            let reset_at = w.start.saturating_add(window_ms);
            return Err(ApiError::rate_limited(
                "Too many requests from this IP address",
                i64::from(limit.max),
                i64::from(w.used),
                reset_at,
                now,
            ));
        }
        w.used += 1;
        Ok(())
    }
}

/// Counts failures (such as guesses of unknown codes) per IP in fixed windows, and refuses
/// an IP outright once its failures in the current window reach the limit. Unlike
/// [`IpRateLimiter`], successful requests cost nothing: [`check`] only looks, and
/// [`record_failure`] counts.
///
/// [`check`]: FailureLimiter::check
/// [`record_failure`]: FailureLimiter::record_failure
pub struct FailureLimiter {
    limit: Limit,
    clock: SharedClock,
    message: &'static str,
    windows: Mutex<HashMap<IpAddr, Window>>,
}

impl std::fmt::Debug for FailureLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailureLimiter")
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

impl FailureLimiter {
    /// `message` is the `error` of the 429 it answers.
    pub fn new(limit: Limit, clock: SharedClock, message: &'static str) -> Self {
        FailureLimiter {
            limit,
            clock,
            message,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        // The map holds plain counters that are never left half-updated.
        self.windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The 429 to answer when `ip` has used up its failures in the current window.
    pub fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.limit.max == 0 {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let window_ms = self.limit.window_ms();
        match self.windows().get(&ip) {
            Some(w) if now - w.start < window_ms && w.used >= self.limit.max => {
                Err(ApiError::rate_limited(
                    self.message,
                    i64::from(self.limit.max),
                    i64::from(w.used),
                    w.start.saturating_add(window_ms),
                    now,
                ))
            }
            _ => Ok(()),
        }
    }

    /// Counts one failure of `ip`; the window starts at its first failure.
    pub fn record_failure(&self, ip: IpAddr) {
        if self.limit.max == 0 {
            return;
        }
        let now = self.clock.now_ms();
        let window_ms = self.limit.window_ms();
        let mut map = self.windows();
        let w = current(&mut map, ip, now, window_ms, window_ms);
        w.used = w.used.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use aibank_core::ManualClock;
    use std::sync::Arc;

    #[test]
    fn windows_start_at_the_first_request_and_reset_after_it() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let rl = IpRateLimiter::new(
            Limit {
                max: 2,
                window: Duration::from_secs(60),
            },
            Limit::OFF,
            clock.clone(),
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        rl.check(a, Class::General).unwrap();
        clock.advance(Duration::from_secs(30));
        rl.check(a, Class::General).unwrap();
        let e = rl.check(a, Class::General).unwrap_err();
        let body = e.body();
        assert_eq!(body["resetAt"], 1_060_000);
        assert_eq!(body["limit"], 2);
        assert_eq!(body["used"], 2);
        rl.check(b, Class::General).unwrap();
        rl.check(a, Class::Public).unwrap();
        clock.advance(Duration::from_secs(30));
        rl.check(a, Class::General).unwrap();
    }

    #[test]
    fn failures_are_counted_and_refused_only_past_the_limit() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let fl = FailureLimiter::new(
            Limit {
                max: 2,
                window: Duration::from_secs(900),
            },
            clock.clone(),
            "Too many failures",
        );
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        // Looking costs nothing.
        for _ in 0..5 {
            fl.check(a).unwrap();
        }
        fl.record_failure(a);
        clock.advance(Duration::from_secs(10));
        fl.check(a).unwrap();
        fl.record_failure(a);
        let body = fl.check(a).unwrap_err().body();
        assert_eq!(body["error"], "Too many failures");
        assert_eq!(body["limit"], 2);
        assert_eq!(body["used"], 2);
        assert_eq!(body["resetAt"], 1_900_000);
        fl.check(b).unwrap();
        clock.advance(Duration::from_secs(890));
        fl.check(a).unwrap();
        fl.record_failure(a);
        fl.check(a).unwrap();

        let off = FailureLimiter::new(Limit::OFF, clock, "x");
        for _ in 0..10 {
            off.record_failure(a);
        }
        off.check(a).unwrap();
    }
}
