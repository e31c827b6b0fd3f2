//! Call limits on keys: the models a key may call, as name patterns, and its requests and
//! tokens per minute. A platform sets them on an agent, binding each of its keys; an agent
//! sets them on its own key, only narrower. This module holds their stored form, the
//! pattern language (`*` stands for any run of characters) and what "narrower" means.

use aibank_store::models::Agent;

/// Most patterns in one `allowedModels`.
pub const MAX_MODEL_PATTERNS: usize = 100;
/// Longest pattern.
pub const MAX_PATTERN_LEN: usize = 128;
/// Largest `rpmLimit`.
pub const MAX_RPM: i64 = 10_000_000;
/// Largest `tpmLimit`.
pub const MAX_TPM: i64 = 1_000_000_000_000;

/// Call limits as stored on a key or an agent: model-name patterns (a JSON array of
/// strings), and requests and tokens per minute. `None`: no limit of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyLimits {
    pub allowed_models: Option<String>,
    pub rpm_limit: Option<i64>,
    pub tpm_limit: Option<i64>,
}

impl KeyLimits {
    pub fn of_agent(agent: &Agent) -> KeyLimits {
        KeyLimits {
            allowed_models: agent.allowed_models.clone(),
            rpm_limit: agent.rpm_limit,
            tpm_limit: agent.tpm_limit,
        }
    }

    /// The stored patterns; `None` when any model is allowed. A stored value that does not
    /// parse allows nothing rather than everything.
    pub fn models(&self) -> Option<Vec<String>> {
        self.allowed_models
            .as_deref()
            .map(|s| serde_json::from_str(s).unwrap_or_default())
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters (none
/// included) and every other character itself.
pub fn matches(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut i, mut j) = (0, 0);
    // Where the last `*` was, and the name position it is matched up to.
    let mut star: Option<(usize, usize)> = None;
    while j < n.len() {
        if i < p.len() && p[i] == b'*' {
            star = Some((i, j));
            i += 1;
        } else if i < p.len() && p[i] == n[j] {
            i += 1;
            j += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|&c| c == b'*')
}

/// Whether every model `narrower` matches is matched by one of `wider`: it is when one of
/// them matches `narrower` read as a plain name (its `*` as a character), since a literal
/// run of a pattern cannot span a `*` of the name it is matched against.
pub fn covered(wider: &[String], narrower: &str) -> bool {
    wider.iter().any(|w| matches(w, narrower))
}

/// Whether `model` is one `patterns` allow.
pub fn allows(patterns: &[String], model: &str) -> bool {
    patterns.iter().any(|p| matches(p, model))
}

/// Checks one pattern: printable ASCII without spaces, at most [`MAX_PATTERN_LEN`].
pub fn valid_pattern(p: &str) -> bool {
    !p.is_empty() && p.len() <= MAX_PATTERN_LEN && p.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_with_any_run_for_a_star() {
        for (p, n, want) in [
            ("claude-*", "claude-sonnet-4-5", true),
            ("claude-*", "claude-", true),
            ("claude-*", "gpt-4o", false),
            ("gpt-4o-mini", "gpt-4o-mini", true),
            ("gpt-4o-mini", "gpt-4o-mini-2024", false),
            ("*-mini", "gpt-4o-mini", true),
            ("*", "anything", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXcYYb", false),
            ("a*a", "a", false),
            ("**", "", true),
        ] {
            assert_eq!(matches(p, n), want, "{p} ~ {n}");
        }
    }

    #[test]
    fn a_pattern_is_covered_only_by_a_wider_one() {
        let wider = vec!["claude-*".to_owned(), "gpt-4o-mini".to_owned()];
        assert!(covered(&wider, "claude-3-*"));
        assert!(covered(&wider, "claude-sonnet-4"));
        assert!(covered(&wider, "gpt-4o-mini"));
        assert!(!covered(&wider, "gpt-4o-*"));
        assert!(!covered(&wider, "*"));
        assert!(!covered(&wider, "claude*"), "`claudex` is not `claude-…`");
    }

    #[test]
    fn stored_limits_read_back_and_garbage_allows_nothing() {
        let l = KeyLimits {
            allowed_models: Some(r#"["claude-*"]"#.into()),
            ..KeyLimits::default()
        };
        assert_eq!(l.models(), Some(vec!["claude-*".to_owned()]));
        let bad = KeyLimits {
            allowed_models: Some("not json".into()),
            ..KeyLimits::default()
        };
        assert_eq!(bad.models(), Some(vec![]));
        assert_eq!(KeyLimits::default().models(), None);
        assert!(valid_pattern("gpt-4o*") && !valid_pattern("a b") && !valid_pattern(""));
    }
}
