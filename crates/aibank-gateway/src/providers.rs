//! Upstream providers: the built-in Anthropic, OpenAI and Gemini, plus any number of
//! OpenAI-compatible ones declared in configuration.

use std::collections::BTreeMap;

use aibank_core::SecretString;
use serde::Deserialize;

use crate::dialect::Dialect;
use crate::prices::{anthropic_defaults, openai_defaults, Price, PriceTable};

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    /// The wire format it speaks.
    pub dialect: &'static dyn Dialect,
    /// Without a trailing slash and without `/v1`.
    pub base_url: String,
    /// The platform-wide upstream key, if configured.
    pub api_key: Option<SecretString>,
    pub prices: PriceTable,
}

/// An OpenAI-compatible provider from `AIBANK_PROVIDERS` (a JSON array of these).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomProvider {
    pub name: String,
    pub base_url: String,
    /// The environment variable holding its API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Prices per model; `"*"` is the price of any other model.
    #[serde(default)]
    pub prices: BTreeMap<String, Price>,
}

#[derive(Debug, Clone, Default)]
pub struct Registry {
    providers: Vec<Provider>,
}

impl Registry {
    /// The built-ins (with price overrides from `AIBANK_PRICES`, keyed by provider) and the
    /// custom providers, whose keys are read through `env`.
    pub fn build(
        anthropic: (String, Option<SecretString>),
        openai: (String, Option<SecretString>),
        gemini: (String, Option<SecretString>),
        custom: Vec<CustomProvider>,
        mut overrides: BTreeMap<String, BTreeMap<String, Price>>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Registry, String> {
        let mut providers = vec![
            Provider {
                name: "anthropic".into(),
                dialect: &crate::anthropic::DIALECT,
                base_url: anthropic.0,
                api_key: anthropic.1,
                prices: anthropic_defaults(),
            },
            Provider {
                name: "openai".into(),
                dialect: &crate::openai::DIALECT,
                base_url: openai.0,
                api_key: openai.1,
                prices: openai_defaults(),
            },
            Provider {
                name: "gemini".into(),
                dialect: &crate::gemini::DIALECT,
                base_url: gemini.0,
                api_key: gemini.1,
                prices: crate::gemini::prices(),
            },
        ];
        for c in custom {
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
            let mut prices = PriceTable::default();
            prices.merge(c.prices);
            providers.push(Provider {
                api_key: c
                    .api_key_env
                    .as_deref()
                    .and_then(&env)
                    .map(SecretString::new),
                name: c.name,
                dialect: &crate::openai::DIALECT,
                base_url: base,
                prices,
            });
        }
        for p in &mut providers {
            if let Some(o) = overrides.remove(&p.name) {
                p.prices.merge(o);
            }
        }
        if let Some(unknown) = overrides.keys().next() {
            return Err(format!("AIBANK_PRICES names unknown provider `{unknown}`"));
        }
        Ok(Registry { providers })
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
