//! Remembers keys that passed argon2, as a SHA-256 digest, so later requests cost a hash and
//! a constant-time compare instead of 20 ms of argon2.
//!
//! An entry is bound to the stored hash it was verified against: a rotated key has a new
//! hash, so the entry stops matching everywhere at once. Status (revoked, paused) is read
//! from the database on every request, so revocation never waits for the cache; the TTL
//! only bounds how long a digest of a key stays in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

struct Entry {
    digest: [u8; 32],
    phc: String,
    at: Instant,
}

pub struct VerifiedCache {
    entries: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
    max_entries: usize,
}

impl std::fmt::Debug for VerifiedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedCache")
            .field("ttl", &self.ttl)
            .field("max_entries", &self.max_entries)
            .finish_non_exhaustive()
    }
}

fn digest(presented: &str) -> [u8; 32] {
    Sha256::digest(presented.as_bytes()).into()
}

impl VerifiedCache {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        VerifiedCache {
            entries: Mutex::new(HashMap::new()),
            ttl,
            max_entries: max_entries.max(1),
        }
    }

    /// True when this exact key was verified against this exact stored hash recently.
    pub fn check(&self, id: &str, presented: &str, phc: &str) -> bool {
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        let Some(e) = entries.get(id) else {
            return false;
        };
        if e.at.elapsed() > self.ttl {
            entries.remove(id);
            return false;
        }
        let same_digest: bool = e.digest.ct_eq(&digest(presented)).into();
        same_digest && e.phc == phc
    }

    pub fn insert(&self, id: &str, presented: &str, phc: &str) {
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.max_entries {
            let ttl = self.ttl;
            entries.retain(|_, e| e.at.elapsed() <= ttl);
        }
        if entries.len() >= self.max_entries {
            // Still full of live entries: drop half; they re-verify on next use.
            let drop: Vec<String> = entries
                .keys()
                .take(self.max_entries / 2 + 1)
                .cloned()
                .collect();
            for k in drop {
                entries.remove(&k);
            }
        }
        entries.insert(
            id.to_owned(),
            Entry {
                digest: digest(presented),
                phc: phc.to_owned(),
                at: Instant::now(),
            },
        );
    }

    pub fn invalidate(&self, id: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(id);
        }
    }

    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_needs_same_key_and_same_hash() {
        let c = VerifiedCache::new(Duration::from_secs(60), 10);
        c.insert("id1", "ak_key", "$hash1");
        assert!(c.check("id1", "ak_key", "$hash1"));
        assert!(!c.check("id1", "ak_other", "$hash1"));
        assert!(
            !c.check("id1", "ak_key", "$hash2"),
            "a rotated hash must miss"
        );
        c.invalidate("id1");
        assert!(!c.check("id1", "ak_key", "$hash1"));
    }

    #[test]
    fn expires_and_stays_bounded() {
        let c = VerifiedCache::new(Duration::from_millis(0), 4);
        c.insert("a", "k", "h");
        std::thread::sleep(Duration::from_millis(2));
        assert!(!c.check("a", "k", "h"));
        let c = VerifiedCache::new(Duration::from_secs(60), 4);
        for i in 0..100 {
            c.insert(&i.to_string(), "k", "h");
        }
        assert!(c.len() <= 4);
    }
}

/// A small bounded map whose entries live for `ttl`; a zero TTL disables it. Used for
/// look-ups that may be a little stale across instances but must be dropped at once on the
/// instance that changes them (callers `remove` on change).
pub struct TtlCache<V> {
    entries: Mutex<HashMap<String, (Instant, V)>>,
    ttl: Duration,
    max_entries: usize,
}

impl<V> std::fmt::Debug for TtlCache<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtlCache")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<V: Clone> TtlCache<V> {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
            ttl,
            max_entries: max_entries.max(1),
        }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let mut entries = self.entries.lock().ok()?;
        match entries.get(key) {
            Some((at, v)) if at.elapsed() < self.ttl => Some(v.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn insert(&self, key: &str, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.max_entries {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
            if entries.len() >= self.max_entries {
                entries.clear();
            }
        }
        entries.insert(key.to_owned(), (Instant::now(), value));
    }

    /// Changes a live entry in place (keeping its age).
    pub fn modify(&self, key: &str, f: impl FnOnce(&mut V)) {
        if let Ok(mut entries) = self.entries.lock() {
            if let Some((_, v)) = entries.get_mut(key) {
                f(v);
            }
        }
    }

    pub fn remove(&self, key: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(key);
        }
    }

    /// Drops every entry `keep` says no to.
    pub fn retain(&self, mut keep: impl FnMut(&V) -> bool) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, (_, v)| keep(v));
        }
    }
}

#[cfg(test)]
mod ttl_tests {
    use super::*;

    #[test]
    fn entries_expire_and_can_be_dropped() {
        let c = TtlCache::new(Duration::from_millis(50), 10);
        c.insert("a", 1);
        assert_eq!(c.get("a"), Some(1));
        c.modify("a", |v| *v = 2);
        assert_eq!(c.get("a"), Some(2));
        c.retain(|v| *v != 2);
        assert_eq!(c.get("a"), None);
        c.insert("b", 3);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get("b"), None);
        let off = TtlCache::new(Duration::ZERO, 10);
        off.insert("a", 1);
        assert_eq!(off.get("a"), None, "a zero TTL disables the cache");
    }
}
