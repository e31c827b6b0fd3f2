//! Random identifiers and key material.

use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;

const LOWER_ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// `n` characters from `[0-9a-z]`, uniformly, from the thread-local CSPRNG.
pub fn random_lower(n: usize) -> String {
    lower_chars(n).collect()
}

fn lower_chars(n: usize) -> impl Iterator<Item = char> {
    let mut rng = rand::rng();
    (0..n).map(move |_| char::from(LOWER_ALNUM[rng.random_range(0..LOWER_ALNUM.len())]))
}

/// `n` characters from `[A-Za-z0-9]` (5.95 bits each), from the thread-local CSPRNG.
pub fn random_alnum(n: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), n)
}

/// A new public identifier such as `agt_3k9x…` (16 characters, 82 bits).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", random_lower(16))
}

/// A new identifier for rows written on every call (holds, usage): `hld_` and 20
/// characters, the first 9 the creation time in milliseconds (base 36, fixed width, so
/// that ids sort by time until the year 5000) and 11 random (56 bits). The indexes on such
/// ids then grow at one end: a batch of inserts changes a page or two of each, where
/// random ids change one page per row.
pub fn new_ordered_id(prefix: &str) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut time = [b'0'; 9];
    let mut left = ms;
    for digit in time.iter_mut().rev() {
        *digit = LOWER_ALNUM[usize::try_from(left % 36).unwrap_or(0)];
        left /= 36;
    }
    let mut id = String::with_capacity(prefix.len() + 21);
    id.push_str(prefix);
    id.push('_');
    id.extend(time.iter().map(|&b| char::from(b)));
    id.extend(lower_chars(11));
    id
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

    #[test]
    fn ordered_ids_sort_by_the_time_they_were_made() {
        let mut made = Vec::new();
        for _ in 0..3 {
            made.push(super::new_ordered_id("hld"));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        let mut sorted = made.clone();
        sorted.sort();
        assert_eq!(made, sorted);
        assert_ne!(made[0][4..13], made[2][4..13], "the time part moves");
        for id in &made {
            assert_eq!(id.len(), 24, "{id}");
            assert!(id.starts_with("hld_"));
            assert!(id[4..]
                .bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        }
        // The first nine characters are the time it was made, in milliseconds.
        let ms = u128::from_str_radix(&made[2][4..13], 36).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        assert!(now >= ms && now - ms < 60_000, "{ms} against {now}");
        let unique: std::collections::HashSet<String> =
            (0..10_000).map(|_| super::new_ordered_id("use")).collect();
        assert_eq!(unique.len(), 10_000);
    }
}
