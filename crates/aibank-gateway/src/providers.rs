//! Upstream providers: the built-in Anthropic, OpenAI and Gemini, plus any number of
//! OpenAI-compatible or per-call priced HTTP ones declared in configuration (Bankr is one
//! of the latter, built in), and the price book they are billed at, which
//! `AIBANK_PRICES_FILE` can replace while the server runs.

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError, RwLock};

use aibank_core::SecretString;
use serde::Deserialize;

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
    /// Without a trailing slash and without `/v1`.
    pub base_url: String,
    /// The platform-wide upstream key, if configured.
    pub api_key: Option<SecretString>,
    /// Whether agents may store their own key for it.
    pub byok: bool,
    /// A per-call priced HTTP API: its endpoints, prices and key placement.
    pub priced: Option<Arc<PricedApi>>,
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
    /// custom providers, whose keys are read through `env`.
    pub fn build(
        anthropic: (String, Option<SecretString>),
        openai: (String, Option<SecretString>),
        gemini: (String, Option<SecretString>),
        custom: Vec<CustomProvider>,
        overrides: PriceOverrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Registry, String> {
        let mut providers = vec![
            Provider {
                name: "anthropic".into(),
                dialect: &crate::anthropic::DIALECT,
                base_url: anthropic.0,
                api_key: anthropic.1,
                byok: true,
                priced: None,
            },
            Provider {
                name: "openai".into(),
                dialect: &crate::openai::DIALECT,
                base_url: openai.0,
                api_key: openai.1,
                byok: true,
                priced: None,
            },
            Provider {
                name: "gemini".into(),
                dialect: &crate::gemini::DIALECT,
                base_url: gemini.0,
                api_key: gemini.1,
                byok: true,
                priced: None,
            },
        ];
        let mut tables = BTreeMap::from([
            ("anthropic".to_owned(), anthropic_defaults()),
            ("openai".to_owned(), openai_defaults()),
            ("gemini".to_owned(), crate::gemini::prices()),
        ]);
        for mut c in custom {
            let valid_name = !c.name.is_empty()
                && c.name.len() <= 40
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !valid_name {
                return Err(format!(
                    "provider name `{}` must be lowercase letters, digits and -",
                    c.name
                ));
            }
            if providers.iter().any(|p| p.name == c.name) {
                return Err(format!("provider `{}` is declared twice", c.name));
            }
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
            let (dialect, byok, priced) = kind_of(&mut c, &mut tables)?;
            providers.push(Provider {
                api_key,
                name: c.name,
                dialect,
                base_url: base,
                byok,
                priced,
            });
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
            |_| None,
        )
        .unwrap_err();
        assert_eq!(err, "AIBANK_PRICES names unknown provider `nobody`");
    }
}
