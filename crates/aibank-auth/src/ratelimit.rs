//! Per-client-IP request limits, kept in this instance's memory: with several instances
//! behind a balancer each enforces its own share. (Per-key limits that must hold across
//! instances live in the database; see `aibank_store::repo::keys::admit_message`.)
//! They count per client: an IPv4 address, or an IPv6 /64 (see `client_key`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
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

/// The client that `ip` counts as: an IPv4 address (also written IPv4-mapped) on its
/// own, an IPv6 address by its /64 prefix. A /64 is the smallest block a network hands a
/// subscriber or a LAN, and a client picks addresses within it at will, so counting the
/// single address would give it a fresh budget with each one.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 @ IpAddr::V4(_) => v4,
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    start: i64,
    used: u32,
}

/// Fixed windows per (client, class), a client as `client_key` has it. Expired windows are
/// dropped when the map grows, so memory stays bounded by the number of clients seen
/// within one window.
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

    /// Counts one request from `ip`'s client; the 429 to answer when it is over the limit.
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
        let w = current(&mut map, (client_key(ip), class), now, window_ms, longest);
        if w.used >= limit.max {
            let reset_at = w.start.saturating_add(window_ms);
            let name = match class {
                Class::General => "ipRequests",
                Class::Public => "ipPublicRequests",
            };
            return Err(ApiError::rate_limited(
                "Too many requests from this IP address",
                i64::from(limit.max),
                i64::from(w.used),
                reset_at,
                now,
            )
            .with("limitName", name));
        }
        w.used += 1;
        Ok(())
    }
}

/// Counts failed attempts (such as guesses of unknown codes) per client (see
/// `client_key`) in fixed windows, and refuses a client outright once its count in the
/// current window reaches the limit. An attempt takes its slot up front, in the same step
/// that checks the limit, so concurrent attempts from one client cannot all slip in
/// before any of them is counted. Only an attempt marked [`Attempt::fail`] keeps its slot;
/// any other gives it back when dropped, so unlike with [`IpRateLimiter`] successful (or
/// abandoned) requests cost nothing.
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

/// One attempt's slot in a [`FailureLimiter`]: held while the attempt is under way, kept
/// as a failure by [`Attempt::fail`], given back when dropped otherwise.
#[must_use = "an attempt holds its slot until dropped; call fail() to count it"]
#[derive(Debug)]
pub struct Attempt<'a> {
    limiter: &'a FailureLimiter,
    /// The client and the start of the window the slot was taken in; `None` when the
    /// limiter is off.
    slot: Option<(IpAddr, i64)>,
}

impl Attempt<'_> {
    /// The attempt failed: its slot stays taken for the rest of its window.
    pub fn fail(mut self) {
        self.slot = None;
    }
}

impl Drop for Attempt<'_> {
    /// Gives the slot back: the attempt did not fail. Nothing to give back when its window
    /// has ended meanwhile, as the next window never counted it. A window left with no
    /// slots taken is dropped, so the next window starts at the next attempt.
    fn drop(&mut self) {
        let Some((key, start)) = self.slot.take() else {
            return;
        };
        let mut map = self.limiter.windows();
        if let Some(w) = map.get_mut(&key) {
            if w.start == start {
                w.used = w.used.saturating_sub(1);
                if w.used == 0 {
                    map.remove(&key);
                }
            }
        }
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

    /// Takes a slot for one attempt from `ip`, held until the attempt is dropped or fails; the
    /// 429 to answer when the client's slots in the current window are all taken (by
    /// failures or by attempts still under way). The window starts at the first attempt.
    pub fn try_take(&self, ip: IpAddr) -> Result<Attempt<'_>, ApiError> {
        if self.limit.max == 0 {
            return Ok(Attempt {
                limiter: self,
                slot: None,
            });
        }
        let key = client_key(ip);
        let now = self.clock.now_ms();
        let window_ms = self.limit.window_ms();
        let mut map = self.windows();
        let w = current(&mut map, key, now, window_ms, window_ms);
        if w.used >= self.limit.max {
            return Err(ApiError::rate_limited(
                self.message,
                i64::from(self.limit.max),
                i64::from(w.used),
                w.start.saturating_add(window_ms),
                now,
            )
            .with("limitName", "ipFailures"));
        }
        w.used += 1;
        Ok(Attempt {
            limiter: self,
            slot: Some((key, w.start)),
        })
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

    fn failure_limiter(max: u32, clock: SharedClock) -> FailureLimiter {
        FailureLimiter::new(
            Limit {
                max,
                window: Duration::from_secs(900),
            },
            clock,
            "Too many failures",
        )
    }

    #[test]
    fn failures_are_counted_and_refused_only_past_the_limit() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let fl = failure_limiter(2, clock.clone());
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        // Attempts that did not fail cost nothing, nor do they start the window.
        for _ in 0..5 {
            drop(fl.try_take(a).unwrap());
        }
        clock.advance(Duration::from_secs(10));
        fl.try_take(a).unwrap().fail();
        clock.advance(Duration::from_secs(10));
        drop(fl.try_take(a).unwrap());
        fl.try_take(a).unwrap().fail();
        let body = fl.try_take(a).unwrap_err().body();
        assert_eq!(body["error"], "Too many failures");
        assert_eq!(body["limit"], 2);
        assert_eq!(body["used"], 2);
        assert_eq!(body["resetAt"], 1_910_000);
        drop(fl.try_take(b).unwrap());
        clock.advance(Duration::from_secs(890));
        fl.try_take(a).unwrap().fail();
        drop(fl.try_take(a).unwrap());

        let off = FailureLimiter::new(Limit::OFF, clock, "x");
        for _ in 0..10 {
            off.try_take(a).unwrap().fail();
        }
        drop(off.try_take(a).unwrap());
    }

    #[test]
    fn concurrent_attempts_past_the_limit_are_refused_before_any_has_failed() {
        const THREADS: usize = 16;
        let clock = Arc::new(ManualClock::new(1_000_000));
        let fl = failure_limiter(4, clock);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let start = std::sync::Barrier::new(THREADS);
        let taken = std::sync::Barrier::new(THREADS);
        // Every thread takes at once and holds its attempt until all have taken: none has
        // failed yet when the others ask.
        let outcomes: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    s.spawn(|| {
                        start.wait();
                        let attempt = fl.try_take(ip);
                        taken.wait();
                        attempt.map(Attempt::fail).is_ok()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 4);
        // The four failed: the window stays spent.
        let body = fl.try_take(ip).unwrap_err().body();
        assert_eq!(body["used"], 4);
    }

    #[test]
    fn refunds_restore_the_budget_of_their_own_window_only() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let fl = failure_limiter(2, clock.clone());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let first = fl.try_take(ip).unwrap();
        let second = fl.try_take(ip).unwrap();
        // Under way, both hold their slots.
        assert_eq!(fl.try_take(ip).unwrap_err().body()["used"], 2);
        drop(second);
        let third = fl.try_take(ip).unwrap();
        drop(third);
        fl.try_take(ip).unwrap().fail();
        assert_eq!(fl.try_take(ip).unwrap_err().body()["used"], 2);
        // `first` outlives its window: its refund leaves the next one alone.
        clock.advance(Duration::from_secs(900));
        let late = fl.try_take(ip).unwrap();
        fl.try_take(ip).unwrap().fail();
        drop(first);
        assert_eq!(fl.try_take(ip).unwrap_err().body()["used"], 2);
        drop(late);
        fl.try_take(ip).unwrap().fail();
        assert_eq!(fl.try_take(ip).unwrap_err().body()["used"], 2);
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let clock = Arc::new(ManualClock::new(1_000_000));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let fl = failure_limiter(2, clock.clone());
        fl.try_take(ip("2001:db8:1:2::1")).unwrap().fail();
        fl.try_take(ip("2001:db8:1:2:ffff:ffff:ffff:fffe"))
            .unwrap()
            .fail();
        for same in ["2001:db8:1:2::1", "2001:db8:1:2:a:b:c:d"] {
            assert_eq!(fl.try_take(ip(same)).unwrap_err().body()["used"], 2);
        }
        for other in ["2001:db8:1:3::1", "2001:db8:1:1:ffff:ffff:ffff:ffff"] {
            drop(fl.try_take(ip(other)).unwrap());
        }
        fl.try_take(ip("192.0.2.1")).unwrap().fail();
        fl.try_take(ip("::ffff:192.0.2.1")).unwrap().fail();
        assert!(fl.try_take(ip("192.0.2.1")).is_err());
        // IPv4 addresses count one by one.
        drop(fl.try_take(ip("192.0.2.2")).unwrap());

        let rl = IpRateLimiter::new(
            Limit {
                max: 1,
                window: Duration::from_secs(60),
            },
            Limit::OFF,
            clock,
        );
        rl.check(ip("2001:db8:1:2::1"), Class::General).unwrap();
        rl.check(ip("2001:db8:1:2::2"), Class::General).unwrap_err();
        rl.check(ip("2001:db8:1:3::1"), Class::General).unwrap();
        rl.check(ip("::ffff:192.0.2.1"), Class::General).unwrap();
        rl.check(ip("192.0.2.1"), Class::General).unwrap_err();
    }
}
