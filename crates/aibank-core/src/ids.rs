//! Random identifiers and key material.

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;

const LOWER_ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `n` characters from `[0-9a-z]`, uniformly, from the thread-local CSPRNG.
pub fn random_lower(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from(LOWER_ALNUM[rng.random_range(0..LOWER_ALNUM.len())]))
        .collect()
}

/// `n` characters from `[A-Za-z0-9]` (5.95 bits each), from the thread-local CSPRNG.
pub fn random_alnum(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

/// A new public identifier such as `agt_3k9x…` (16 characters, 82 bits).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_lower(16))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_distinct_and_well_formed() {
        let a = super::new_id("agt");
        let b = super::new_id("agt");
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
        assert!(a[4..]
            .bytes()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        assert_eq!(super::random_alnum(40).len(), 40);
    }
}
