//! Upstream providers: the built-in Anthropic, OpenAI and Gemini, plus any number of
//! OpenAI-compatible or per-call priced HTTP ones declared in configuration (Bankr is one
//! of the latter, built in), and the price book they are billed at, which
//! `AIBANK_PRICES_FILE` can replace while the server runs.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use aibank_core::SecretString;
use serde::Deserialize;

use crate::deployments::{from_specs, Deployment, DeploymentSpec, DEFAULT_DEPLOYMENT};
use crate::dialect::Dialect;
use crate::priced::{EndpointSpec, KeyPlacement, PricedApi};
use crate::prices::{
    anthropic_defaults, openai_defaults, Price, PriceBook, PriceOverrides, PriceTable,
};

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    /// The wire format it speaks.
    pub dialect: &'static dyn Dialect,
    /// Where its calls go: one or more upstream accounts, each with its base URL and the
    /// platform's key there (all have a key, or none has).
    pub deployments: Vec<Deployment>,
    /// Whether agents may store their own key for it.
    pub byok: bool,
    /// A per-call priced HTTP API: its endpoints, prices and key placement.
    pub priced: Option<Arc<PricedApi>>,
}

impl Provider {
    /// Whether the platform has a key for it (at every deployment).
    pub fn configured(&self) -> bool {
        self.deployments.iter().all(|d| d.api_key.is_some())
    }

    /// The deployment a call goes to when there is one alone, or the first declared.
    pub fn primary(&self) -> &Deployment {
        &self.deployments[0]
    }
}

/// Whether `name` may name a provider or a deployment.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

type Kind = (&'static dyn Dialect, bool, Option<Arc<PricedApi>>);

/// What a provider from `AIBANK_PROVIDERS` is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// OpenAI-compatible, billed from reported token usage.
    #[default]
    Openai,
    /// Per-call priced HTTP endpoints.
    Http,
}

/// A provider from `AIBANK_PROVIDERS` (a JSON array of these): OpenAI-compatible, or
/// (`"kind": "http"`) per-call priced HTTP endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomProvider {
    pub name: String,
    #[serde(default)]
    pub kind: ProviderKind,
    /// Where it is, when it has one deployment (else `deployments`).
    #[serde(default)]
    pub base_url: String,
    /// The environment variable holding its API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// The key itself, for built-ins whose key is a setting of its own.
    #[serde(skip)]
    pub api_key: Option<SecretString>,
    /// Prices per model; `"*"` is the price of any other model.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
    /// `http` only: how the key goes upstream.
    #[serde(default)]
    pub auth: Option<KeyPlacement>,
    /// `http` only: whether agents may store their own key (OpenAI-compatible ones may).
    #[serde(default)]
    pub byok: Option<bool>,
    /// `http` only: the endpoints forwarded, each with its price.
    #[serde(default)]
    pub endpoints: Vec<EndpointSpec>,
    /// Several upstream accounts to spread its calls over, instead of `base_url` and
    /// `api_key_env`.
    #[serde(default)]
    pub deployments: Vec<DeploymentSpec>,
    /// Served only through routes of its own, not `/v1/gateway/{name}/…`.
    #[serde(skip)]
    pub routes_only: bool,
}

/// The providers, and the prices in force. Clones share the prices: a reload is seen by
/// every clone.
#[derive(Debug, Clone)]
pub struct Registry {
    providers: Vec<Provider>,
    /// The prices before any prices file: shipped, declared with a provider, and
    /// `AIBANK_PRICES`.
    base: Arc<PriceBook>,
    prices: Arc<RwLock<Arc<PriceBook>>>,
}

impl Registry {
    /// The built-ins (with price overrides from `AIBANK_PRICES`, keyed by provider) and the
    /// custom providers, whose keys are read through `env`; `deployments` gives any of them
    /// several upstream accounts (`AIBANK_DEPLOYMENTS`).
    pub fn build(
        anthropic: (String, Option<SecretString>),
        openai: (String, Option<SecretString>),
        gemini: (String, Option<SecretString>),
        custom: Vec<CustomProvider>,
        overrides: PriceOverrides,
        mut deployments: BTreeMap<String, Vec<DeploymentSpec>>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Registry, String> {
        let single = |(url, key): (String, Option<SecretString>)| {
            vec![Deployment::new(DEFAULT_DEPLOYMENT, url, key, 1)]
        };
        let builtin = |name: &str, dialect: &'static dyn Dialect, at| Provider {
            name: name.into(),
            dialect,
            deployments: single(at),
            byok: true,
            priced: None,
        };
        let mut providers = vec![
            builtin("anthropic", &crate::anthropic::DIALECT, anthropic),
            builtin("openai", &crate::openai::DIALECT, openai),
            builtin("gemini", &crate::gemini::DIALECT, gemini),
        ];
        for p in &mut providers {
            if let Some(specs) = deployments.remove(&p.name) {
                p.deployments = from_specs(&p.name, specs, &env)?;
            }
        }
        let mut tables = BTreeMap::from([
            ("anthropic".to_owned(), anthropic_defaults()),
            ("openai".to_owned(), openai_defaults()),
            ("gemini".to_owned(), crate::gemini::prices()),
        ]);
        for mut c in custom {
            if !valid_name(&c.name) {
                return Err(format!(
                    "provider name `{}` must be lowercase letters, digits and -",
                    c.name
                ));
            }
            if providers.iter().any(|p| p.name == c.name) {
                return Err(format!("provider `{}` is declared twice", c.name));
            }
            let (dialect, byok, priced) = kind_of(&mut c, &mut tables)?;
            let listed = match deployments.remove(&c.name) {
                Some(_) if !c.deployments.is_empty() => {
                    return Err(format!(
                        "provider `{}`: its deployments are declared twice",
                        c.name
                    ))
                }
                Some(specs) => specs,
                None => std::mem::take(&mut c.deployments),
            };
            let deployments = if listed.is_empty() {
                let base = c.base_url.trim_end_matches('/').to_owned();
                if !(base.starts_with("http://") || base.starts_with("https://")) {
                    return Err(format!(
                        "provider `{}`: base_url must be http:// or https://",
                        c.name
                    ));
                }
                let api_key = c.api_key.clone().or_else(|| {
                    c.api_key_env
                        .as_deref()
                        .and_then(&env)
                        .map(SecretString::new)
                });
                single((base, api_key))
            } else if !c.base_url.is_empty() || c.api_key_env.is_some() {
                return Err(format!(
                    "provider `{}`: base_url and api_key_env go in each deployment when it has deployments",
                    c.name
                ));
            } else {
                from_specs(&c.name, listed, &env)?
            };
            providers.push(Provider {
                name: c.name,
                dialect,
                deployments,
                byok,
                priced,
            });
        }
        if let Some(name) = deployments.keys().next() {
            return Err(format!(
                "AIBANK_DEPLOYMENTS names unknown provider `{name}`"
            ));
        }
        let base = PriceBook::new(tables)
            .with(overrides)
            .map_err(|e| format!("AIBANK_PRICES {e}"))?;
        let base = Arc::new(base);
        Ok(Registry {
            providers,
            prices: Arc::new(RwLock::new(base.clone())),
            base,
        })
    }

    /// The prices in force now. A call keeps the book it was held at until it is settled.
    pub fn prices(&self) -> Arc<PriceBook> {
        self.prices
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts `file`'s prices in force, over the shipped ones and `AIBANK_PRICES` (not over
    /// an earlier file's: a model the file no longer lists has its price from before the
    /// file). Refused, and nothing changed, when it names a provider there is not.
    pub fn load_prices(&self, file: PriceOverrides) -> Result<Arc<PriceBook>, String> {
        let book = Arc::new(self.base.with(file)?);
        *self.prices.write().unwrap_or_else(PoisonError::into_inner) = book.clone();
        Ok(book)
    }

    pub fn get(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name == name)
    }

    pub fn names(&self) -> Vec<&str> {
        self.providers.iter().map(|p| p.name.as_str()).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Provider> {
        self.providers.iter()
    }
}

/// What a declared provider is: its dialect, whether agents may bring their keys, and its
/// priced API (`http` providers); an OpenAI-compatible one's prices go into `tables`.
fn kind_of(
    c: &mut CustomProvider,
    tables: &mut BTreeMap<String, PriceTable>,
) -> Result<Kind, String> {
    Ok(match c.kind {
        ProviderKind::Openai => {
            if c.auth.is_some() || c.byok.is_some() || !c.endpoints.is_empty() {
                return Err(format!(
                    "provider `{}`: auth, byok and endpoints need \"kind\": \"http\"",
                    c.name
                ));
            }
            let mut prices = PriceTable::default();
            prices.merge(std::mem::take(&mut c.prices));
            tables.insert(c.name.clone(), prices);
            (&crate::openai::DIALECT, true, None)
        }
        ProviderKind::Http => {
            if !c.prices.is_empty() {
                return Err(format!(
                    "provider `{}`: an http provider is priced per endpoint, not by `prices`",
                    c.name
                ));
            }
            let auth = c
                .auth
                .take()
                .ok_or_else(|| format!("provider `{}`: an http provider needs `auth`", c.name))?;
            let api = PricedApi::new(auth, std::mem::take(&mut c.endpoints), !c.routes_only)
                .map_err(|e| format!("provider `{}`: {e}", c.name))?;
            (
                &crate::priced::DIALECT,
                c.byok.unwrap_or(false),
                Some(Arc::new(api)),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prices::parse_overrides;

    fn registry(overrides: &str) -> Registry {
        let at = |url: &str| (url.to_owned(), None);
        Registry::build(
            at("https://a.example"),
            at("https://o.example"),
            at("https://g.example"),
            Vec::new(),
            parse_overrides(overrides).unwrap(),
            BTreeMap::new(),
            |_| None,
        )
        .unwrap()
    }

    #[test]
    fn a_prices_file_goes_over_the_environment_and_every_clone_sees_it() {
        let r = registry(r#"{"openai": {"mine": {"input": 1, "output": 1}}}"#);
        let copy = r.clone();
        let before = r.prices();
        assert!(before.lookup("openai", "mine").is_some());

        let file = r#"{"anthropic": {"claude-x": {"input": 7, "output": 9}}}"#;
        let loaded = r.load_prices(parse_overrides(file).unwrap()).unwrap();
        assert_ne!(loaded.version(), before.version());
        assert_eq!(copy.prices().version(), loaded.version(), "clones share it");
        let now = copy.prices();
        assert!(now.lookup("anthropic", "claude-x").is_some());
        assert!(
            now.lookup("openai", "mine").is_some(),
            "AIBANK_PRICES stays"
        );
        assert_eq!(
            before.lookup("anthropic", "claude-x"),
            None,
            "a call holding the old book keeps its prices"
        );

        // A second file replaces the first; a refused one changes nothing.
        let other = r#"{"openai": {"gpt-4o": {"input": 1, "output": 1}}}"#;
        r.load_prices(parse_overrides(other).unwrap()).unwrap();
        assert!(r.prices().lookup("anthropic", "claude-x").is_none());
        let in_force = r.prices().version().to_owned();
        let bad = r#"{"nobody": {"m": {"input": 1, "output": 1}}}"#;
        assert!(r.load_prices(parse_overrides(bad).unwrap()).is_err());
        assert_eq!(r.prices().version(), in_force);

        // The environment's prices refuse an unknown provider as before.
        let err = Registry::build(
            ("a".into(), None),
            ("o".into(), None),
            ("g".into(), None),
            Vec::new(),
            parse_overrides(bad).unwrap(),
            BTreeMap::new(),
            |_| None,
        )
        .unwrap_err();
        assert_eq!(err, "AIBANK_PRICES names unknown provider `nobody`");
    }
}
