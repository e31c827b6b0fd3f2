//! A provider's deployments: the upstream accounts (base URL, key, weight) its calls are
//! spread over, each one's health as this instance has seen it, and the choice of the
//! deployment for each attempt of a call. Health is kept in memory per instance: a
//! deployment another instance saw fail is tried here until it fails here too.

use std::sync::{Arc, Mutex, PoisonError};

use aibank_core::SecretString;
use serde::{Deserialize, Serialize};

/// The name a provider's one deployment has when none were declared.
pub const DEFAULT_DEPLOYMENT: &str = "default";

/// The largest weight a deployment may have.
pub const MAX_WEIGHT: u32 = 1000;

/// A deployment as declared: in an `AIBANK_PROVIDERS` entry's `deployments`, or, for any
/// provider, in `AIBANK_DEPLOYMENTS`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    /// Unique within its provider; `1`, `2`, … by position when left out.
    #[serde(default)]
    pub name: Option<String>,
    pub base_url: String,
    /// The environment variable holding this deployment's key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Its share of the calls (default 1); `0`: a standby, used only when no deployment
    /// with a weight can be.
    #[serde(default)]
    pub weight: Option<u32>,
}

/// Why a deployment was last seen failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// No connection could be made.
    Connect,
    /// No answer within the first-byte timeout.
    Timeout,
    /// It answered 429.
    RateLimited,
    /// It answered 5xx.
    ServerError,
    /// Its answer broke off or went quiet after it had begun.
    Broken,
}

/// What this instance knows of a deployment's health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// Left out of the choice until then (ms since the epoch).
    pub cooling_until_ms: Option<i64>,
    pub last_error: Option<Failure>,
    pub last_error_at_ms: Option<i64>,
}

/// One upstream account of a provider. Clones share the health.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub name: String,
    /// Without a trailing slash and without `/v1`.
    pub base_url: String,
    /// The platform's key at this deployment.
    pub api_key: Option<SecretString>,
    pub weight: u32,
    health: Arc<Mutex<Health>>,
}

impl Deployment {
    pub fn new(
        name: impl Into<String>,
        base_url: impl Into<String>,
        api_key: Option<SecretString>,
        weight: u32,
    ) -> Self {
        Deployment {
            name: name.into(),
            base_url: base_url.into(),
            api_key,
            weight,
            health: Arc::default(),
        }
    }

    pub fn health(&self) -> Health {
        *self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether it is left out of the choice at `now`.
    pub fn cooling(&self, now_ms: i64) -> bool {
        self.health().cooling_until_ms.is_some_and(|t| now_ms < t)
    }

    /// Notes a failure; the deployment cools for `cooldown_ms`.
    pub(crate) fn failed(&self, failure: Failure, now_ms: i64, cooldown_ms: i64) {
        let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        h.last_error = Some(failure);
        h.last_error_at_ms = Some(now_ms);
        h.cooling_until_ms = (cooldown_ms > 0).then(|| now_ms.saturating_add(cooldown_ms));
    }

    /// Notes an answer: a deployment that answers is no longer cooling.
    pub(crate) fn served(&self) {
        let mut h = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        h.cooling_until_ms = None;
    }
}

/// Checks a provider's declared deployments and makes them, with keys read through `env`.
/// Every deployment has a key or none does: a call on the platform's key must find one
/// wherever it goes.
pub(crate) fn from_specs(
    provider: &str,
    specs: Vec<DeploymentSpec>,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<Deployment>, String> {
    let mut out: Vec<Deployment> = Vec::with_capacity(specs.len());
    for (i, s) in specs.into_iter().enumerate() {
        let name = s.name.unwrap_or_else(|| (i + 1).to_string());
        let at = format!("provider `{provider}`, deployment `{name}`");
        if !crate::providers::valid_name(&name) {
            return Err(format!(
                "{at}: a deployment name must be lowercase letters, digits and -"
            ));
        }
        if out.iter().any(|d| d.name == name) {
            return Err(format!("{at} is declared twice"));
        }
        let base = s.base_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(format!("{at}: base_url must be http:// or https://"));
        }
        let weight = s.weight.unwrap_or(1);
        if weight > MAX_WEIGHT {
            return Err(format!("{at}: weight must be between 0 and {MAX_WEIGHT}"));
        }
        let api_key = match s.api_key_env.as_deref() {
            None => None,
            Some(var) => Some(env(var).map(SecretString::new).ok_or_else(|| {
                format!("{at}: the variable {var} named by api_key_env is not set")
            })?),
        };
        out.push(Deployment::new(name, base, api_key, weight));
    }
    if out.is_empty() {
        return Err(format!(
            "provider `{provider}`: deployments must list at least one"
        ));
    }
    let keyed = out.iter().filter(|d| d.api_key.is_some()).count();
    if keyed != 0 && keyed != out.len() {
        return Err(format!(
            "provider `{provider}`: every deployment needs api_key_env, or none may have it"
        ));
    }
    Ok(out)
}

/// The deployment for a call's next attempt, given those `tried` already: chosen by weight
/// among the untried that are not cooling (standbys only when none with a weight is
/// left); when every untried one is cooling, among those. `None` once all were tried.
/// `roll(n)` is a number in `0..n`.
pub(crate) fn pick(
    deployments: &[Deployment],
    tried: &[usize],
    now_ms: i64,
    roll: impl FnOnce(u64) -> u64,
) -> Option<usize> {
    // Most providers have one deployment: no choice to make, nothing to allocate.
    if deployments.len() == 1 {
        return tried.is_empty().then_some(0);
    }
    let untried: Vec<usize> = (0..deployments.len())
        .filter(|i| !tried.contains(i))
        .collect();
    let warm: Vec<usize> = untried
        .iter()
        .copied()
        .filter(|&i| !deployments[i].cooling(now_ms))
        .collect();
    let pool = if warm.is_empty() { untried } else { warm };
    let weighted: Vec<usize> = pool
        .iter()
        .copied()
        .filter(|&i| deployments[i].weight > 0)
        .collect();
    let (pool, weight): (Vec<usize>, fn(&Deployment) -> u64) = if weighted.is_empty() {
        (pool, |_| 1)
    } else {
        (weighted, |d| u64::from(d.weight))
    };
    let total: u64 = pool.iter().map(|&i| weight(&deployments[i])).sum();
    if total == 0 {
        return None;
    }
    let mut at = roll(total);
    for i in pool {
        let w = weight(&deployments[i]);
        if at < w {
            return Some(i);
        }
        at -= w;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(weights: &[u32]) -> Vec<Deployment> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Deployment::new(i.to_string(), "http://x", None, w))
            .collect()
    }

    #[test]
    fn calls_are_spread_by_weight() {
        let d = deps(&[1, 3]);
        let picks: Vec<_> = (0..4).map(|r| pick(&d, &[], 0, |_| r)).collect();
        assert_eq!(picks, [Some(0), Some(1), Some(1), Some(1)]);
    }

    #[test]
    fn a_tried_or_cooling_deployment_is_left_out_unless_all_are_cooling() {
        let d = deps(&[1, 1, 1]);
        assert_eq!(pick(&d, &[0, 1], 0, |_| 0), Some(2));
        assert_eq!(pick(&d, &[0, 1, 2], 0, |_| 0), None);
        d[0].failed(Failure::ServerError, 1_000, 30_000);
        assert!(d[0].cooling(30_999) && !d[0].cooling(31_000));
        assert_eq!(pick(&d, &[], 2_000, |n| n - 1), Some(2));
        assert_eq!(pick(&d, &[], 2_000, |_| 0), Some(1));
        d[1].failed(Failure::Connect, 1_000, 30_000);
        d[2].failed(Failure::RateLimited, 1_000, 30_000);
        assert_eq!(pick(&d, &[], 2_000, |_| 0), Some(0), "all cooling: any");
        assert_eq!(pick(&d, &[0], 2_000, |_| 0), Some(1));
        d[1].served();
        assert!(!d[1].cooling(2_000));
        assert_eq!(d[1].health().last_error, Some(Failure::Connect));
    }

    #[test]
    fn a_standby_serves_only_when_no_weighted_deployment_can() {
        let d = deps(&[0, 2]);
        assert_eq!(pick(&d, &[], 0, |n| n - 1), Some(1));
        assert_eq!(pick(&d, &[1], 0, |_| 0), Some(0));
        d[1].failed(Failure::Timeout, 0, 10);
        assert_eq!(pick(&d, &[], 5, |_| 0), Some(0));
    }

    #[test]
    fn declarations_are_checked() {
        let env = |v: &str| (v == "K1" || v == "K2").then(|| format!("key-{v}"));
        let spec = |name: Option<&str>, key: Option<&str>| DeploymentSpec {
            name: name.map(str::to_owned),
            base_url: "https://up.example/".into(),
            api_key_env: key.map(str::to_owned),
            weight: None,
        };
        let ok = from_specs(
            "p",
            vec![spec(None, Some("K1")), spec(Some("b"), Some("K2"))],
            &env,
        )
        .unwrap();
        assert_eq!(ok[0].name, "1");
        assert_eq!(ok[1].name, "b");
        assert_eq!(ok[0].base_url, "https://up.example");
        assert_eq!(ok[1].api_key.as_ref().unwrap().expose(), "key-K2");
        assert_eq!(ok[0].weight, 1);
        for (specs, want) in [
            (vec![], "at least one"),
            (vec![spec(Some("a"), None), spec(Some("a"), None)], "twice"),
            (vec![spec(Some("A"), None)], "lowercase"),
            (vec![spec(None, Some("K1")), spec(None, None)], "or none"),
            (vec![spec(None, Some("NOPE"))], "NOPE named by api_key_env"),
            (
                vec![DeploymentSpec {
                    weight: Some(MAX_WEIGHT + 1),
                    ..spec(None, None)
                }],
                "weight",
            ),
            (
                vec![DeploymentSpec {
                    base_url: "ftp://x".into(),
                    ..spec(None, None)
                }],
                "http://",
            ),
        ] {
            let err = from_specs("p", specs, &env).unwrap_err();
            assert!(err.contains(want), "{err} should say {want}");
        }
    }
}
