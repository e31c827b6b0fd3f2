//! Token prices, in USD per million tokens, and the cost of a call.
//!
//! A table key prices the model of that name and its dated versions: the longest key that
//! is the model's name, or the start of it followed by a date (`-20250929`, `-2024-08-06`),
//! `-latest` or `@…`, wins. So `claude-sonnet-4-5` prices `claude-sonnet-4-5-20250929`, and
//! `gpt-4o` prices `gpt-4o-2024-08-06` but not `gpt-4o-mini` (a model of its own), nor
//! `gpt-4o-audio-preview` (a variant priced differently), and `claude-opus-4` does not price
//! a later `claude-opus-4-9`. A provider may have a default price (`*`) for models not
//! in its table; without one, an unknown model is refused before anything is forwarded, so
//! a variant is never billed at its base model's price.
//!
//! Every provider's table together is a [`PriceBook`], named by a version: a digest of its
//! contents, so instances sharing one database and one prices file agree on it, and a
//! usage row says which prices it was billed at.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use aibank_core::Usd;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prices of one model, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub input: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub output: Decimal,
    /// Writing the prompt cache (Anthropic; its 5-minute cache); defaults to the input price.
    #[serde(
        default,
        with = "rust_decimal::serde::arbitrary_precision_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_write: Option<Decimal>,
    /// Writing Anthropic's 1-hour prompt cache; defaults to the cache write price.
    #[serde(
        default,
        with = "rust_decimal::serde::arbitrary_precision_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_write_1h: Option<Decimal>,
    /// Reading the prompt cache; defaults to the input price.
    #[serde(
        default,
        with = "rust_decimal::serde::arbitrary_precision_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub cache_read: Option<Decimal>,
    /// USD per 1,000 web searches the upstream ran for a call (Anthropic's server-side web
    /// search tool); none is free.
    #[serde(
        default,
        with = "rust_decimal::serde::arbitrary_precision_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub web_search_per_1k: Option<Decimal>,
    /// Dearer prices for a call whose prompt is longer than a threshold (Anthropic's long
    /// context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_context: Option<LongContext>,
}

/// For a call whose prompt (cached or not) is more than `above_tokens` tokens: every token
/// of it is priced at the model's prices times these factors (the input factor for input
/// and the prompt cache's reads and writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContext {
    pub above_tokens: u64,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub input_factor: Decimal,
    #[serde(with = "rust_decimal::serde::arbitrary_precision")]
    pub output_factor: Decimal,
}

/// The rates one call is priced at, defaults resolved.
struct Rates {
    input: Decimal,
    output: Decimal,
    cache_write: Decimal,
    cache_write_1h: Decimal,
    cache_read: Decimal,
}

/// Tokens of one call, normalised: `input` excludes cache reads and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    /// Written to the (5-minute) prompt cache.
    pub cache_write: u64,
    /// Written to Anthropic's 1-hour prompt cache.
    pub cache_write_1h: u64,
    pub cache_read: u64,
    /// Server-side web searches the upstream ran.
    pub web_searches: u64,
}

impl Tokens {
    /// Every prompt token, cached or not.
    pub fn prompt(&self) -> u64 {
        self.input
            .saturating_add(self.cache_write)
            .saturating_add(self.cache_write_1h)
            .saturating_add(self.cache_read)
    }
}

const MILLION: i64 = 1_000_000;

impl Price {
    /// The rates for a call with `prompt` tokens of prompt.
    fn rates(&self, prompt: u64) -> Rates {
        let (i, o) = match self.long_context {
            Some(l) if prompt > l.above_tokens => (l.input_factor, l.output_factor),
            _ => (Decimal::ONE, Decimal::ONE),
        };
        let cache_write = self.cache_write.unwrap_or(self.input);
        Rates {
            input: self.input * i,
            output: self.output * o,
            cache_write: cache_write * i,
            cache_write_1h: self.cache_write_1h.unwrap_or(cache_write) * i,
            cache_read: self.cache_read.unwrap_or(self.input) * i,
        }
    }

    /// The cost of `tokens`, rounded up to the micro-dollar.
    pub fn cost(&self, tokens: &Tokens) -> Usd {
        let r = self.rates(tokens.prompt());
        let per_million = Decimal::from(tokens.input) * r.input
            + Decimal::from(tokens.output) * r.output
            + Decimal::from(tokens.cache_write) * r.cache_write
            + Decimal::from(tokens.cache_write_1h) * r.cache_write_1h
            + Decimal::from(tokens.cache_read) * r.cache_read;
        let searches =
            Decimal::from(tokens.web_searches) * self.web_search_per_1k.unwrap_or_default();
        let total = per_million / Decimal::from(MILLION) + searches / Decimal::ONE_THOUSAND;
        Usd::from_decimal_ceil(total).unwrap_or(Usd::from_micros(i64::MAX))
    }

    /// The most `prompt` input tokens and `output` output tokens can cost (input priced at
    /// the dearest of the input rates, since the split into cached and not is unknown).
    pub fn max_cost(&self, prompt: u64, output: u64) -> Usd {
        let r = self.rates(prompt);
        let dearest = r
            .input
            .max(r.cache_write)
            .max(r.cache_write_1h)
            .max(r.cache_read);
        let total = Decimal::from(prompt) * dearest + Decimal::from(output) * r.output;
        Usd::from_decimal_ceil(total / Decimal::from(MILLION)).unwrap_or(Usd::from_micros(i64::MAX))
    }
}

/// A provider's price table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PriceTable {
    pub models: BTreeMap<String, Price>,
    pub default: Option<Price>,
}

/// Price overrides by provider, then model (`"*"`: any model not listed): the shape of
/// `AIBANK_PRICES` and of the file `AIBANK_PRICES_FILE` names.
pub type PriceOverrides = BTreeMap<String, BTreeMap<String, Price>>;

/// Reads price overrides from JSON.
pub fn parse_overrides(json: &str) -> Result<PriceOverrides, String> {
    serde_json::from_str(json)
        .map_err(|e| format!("must be a JSON object of provider -> model -> price: {e}"))
}

/// Every provider's price table, at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceBook {
    version: String,
    tables: BTreeMap<String, PriceTable>,
}

impl PriceBook {
    /// The book of these tables; its version is the start of the SHA-256 of their JSON,
    /// so the same prices always have the same version, on every instance.
    pub fn new(tables: BTreeMap<String, PriceTable>) -> PriceBook {
        let json = serde_json::to_vec(&tables).unwrap_or_default();
        let digest = Sha256::digest(&json);
        let mut version = String::with_capacity(16);
        for b in &digest[..8] {
            let _ = write!(version, "{b:02x}");
        }
        PriceBook { version, tables }
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// The price table of `provider` (empty for one the book does not know).
    pub fn table(&self, provider: &str) -> Option<&PriceTable> {
        self.tables.get(provider)
    }

    /// The price of `model` at `provider`.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<Price> {
        self.table(provider)?.lookup(model)
    }

    /// These tables with `overrides` applied; an override for a provider the book does
    /// not have is refused.
    pub fn with(&self, overrides: PriceOverrides) -> Result<PriceBook, String> {
        let mut tables = self.tables.clone();
        for (provider, prices) in overrides {
            tables
                .get_mut(&provider)
                .ok_or_else(|| format!("names unknown provider `{provider}`"))?
                .merge(prices);
        }
        Ok(PriceBook::new(tables))
    }
}

impl PriceTable {
    /// The price of `model`: the longest key naming it or a dated version of it, else the
    /// default.
    pub fn lookup(&self, model: &str) -> Option<Price> {
        self.models
            .iter()
            .filter(|(k, _)| {
                model
                    .strip_prefix(k.as_str())
                    .is_some_and(is_version_suffix)
            })
            .max_by_key(|(k, _)| k.len())
            .map(|(_, p)| *p)
            .or(self.default)
    }

    /// Applies overrides (`"*"` sets the default).
    pub fn merge(&mut self, overrides: BTreeMap<String, Price>) {
        for (model, price) in overrides {
            if model == "*" {
                self.default = Some(price);
            } else {
                self.models.insert(model, price);
            }
        }
    }
}

/// What may follow a table key in a model name it prices: nothing, a date (`-20250929`,
/// `-2024-08-06`), `-latest`, or `@…` (a dated name on some clouds). A bare number is a
/// version of its own (`claude-opus-4-9` is not `claude-opus-4`).
fn is_version_suffix(rest: &str) -> bool {
    rest.is_empty()
        || rest == "-latest"
        || rest.starts_with('@')
        || rest.strip_prefix('-').is_some_and(is_date)
}

/// `YYYYMMDD` or `YYYY-MM-DD`.
fn is_date(d: &str) -> bool {
    let b = d.as_bytes();
    let digit = |i: usize| b[i].is_ascii_digit();
    match b.len() {
        8 => (0..8).all(digit),
        10 => b[4] == b'-' && b[7] == b'-' && [0, 1, 2, 3, 5, 6, 8, 9].into_iter().all(digit),
        _ => false,
    }
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap_or_default()
}

impl Price {
    /// A listed price: input, output and, when published, cache reads (USD per million
    /// tokens, as decimal text); nothing else.
    pub(crate) fn listed(input: &str, output: &str, cache_read: Option<&str>) -> Price {
        Price {
            input: dec(input),
            output: dec(output),
            cache_write: None,
            cache_write_1h: None,
            cache_read: cache_read.map(dec),
            web_search_per_1k: None,
            long_context: None,
        }
    }

    /// This price, with every token of a call whose prompt is over `above_tokens` priced
    /// at `input_factor` times the input and cache prices and `output_factor` times the
    /// output price.
    pub(crate) fn long_context_over(
        self,
        above_tokens: u64,
        input_factor: Decimal,
        output_factor: Decimal,
    ) -> Price {
        Price {
            long_context: Some(LongContext {
                above_tokens,
                input_factor,
                output_factor,
            }),
            ..self
        }
    }
}

fn p(input: &str, output: &str, cache_write: Option<&str>, cache_read: &str) -> Price {
    Price {
        cache_write: cache_write.map(dec),
        ..Price::listed(input, output, Some(cache_read))
    }
}

/// An Anthropic price: its 5-minute cache writes cost 1.25 times input, its 1-hour ones
/// twice, its cache reads a tenth; web searches $10 per 1,000.
fn anthropic(input: &str, output: &str) -> Price {
    let base = Price::listed(input, output, None);
    let input = base.input;
    Price {
        cache_write: Some((input * Decimal::new(125, 2)).normalize()),
        cache_write_1h: Some((input * Decimal::TWO).normalize()),
        cache_read: Some((input / Decimal::TEN).normalize()),
        web_search_per_1k: Some(Decimal::TEN),
        ..base
    }
}

/// Sonnet 4 and 4.5: a prompt over 200,000 tokens (their 1M-token context) costs twice
/// as much per token, its output 1.5 times.
fn sonnet_long() -> Price {
    anthropic("3", "15").long_context_over(200_000, Decimal::TWO, Decimal::new(15, 1))
}

/// An Anthropic price whose cache reads are not a tenth of its input price.
fn anthropic_read(input: &str, output: &str, cache_read: &str) -> Price {
    Price {
        cache_read: Some(dec(cache_read)),
        ..anthropic(input, output)
    }
}

/// Haiku 5.5: a prompt over 100,000 tokens (cached or not) makes every token of the call
/// five times dearer, output included.
fn haiku_5_5() -> Price {
    anthropic("0.1", "0.5").long_context_over(100_000, Decimal::from(5), Decimal::from(5))
}

/// Anthropic list prices (USD per million tokens) shipped as defaults, after
/// platform.claude.com's pricing and model pages (read 2026-12-02). Models retired from
/// Anthropic's API keep their last prices: an upstream that no longer serves one refuses
/// the call, which is not billed.
pub fn anthropic_defaults() -> PriceTable {
    let mut models = BTreeMap::new();
    for (m, price) in [
        ("claude-fable-5-1", anthropic_read("10", "50", "0.25")),
        ("claude-mythos-5-1", anthropic_read("10", "50", "0.25")),
        ("claude-fable-5", anthropic("10", "50")),
        ("claude-mythos-5", anthropic("10", "50")),
        ("claude-opus-5-5", anthropic_read("4", "20", "0.2")),
        ("claude-opus-5", anthropic("5", "25")),
        ("claude-sonnet-5-5", anthropic_read("2", "10", "0.2")),
        ("claude-sonnet-5", anthropic_read("2", "10", "0.2")),
        ("claude-haiku-5-5", haiku_5_5()),
        ("claude-opus-4-8", anthropic("5", "25")),
        ("claude-opus-4-7", anthropic("5", "25")),
        ("claude-opus-4-6", anthropic("5", "25")),
        ("claude-opus-4-5", anthropic("5", "25")),
        ("claude-opus-4-1", anthropic("15", "75")),
        ("claude-opus-4", anthropic("15", "75")),
        ("claude-opus-4-0", anthropic("15", "75")),
        ("claude-sonnet-4-5", sonnet_long()),
        ("claude-sonnet-4", sonnet_long()),
        ("claude-sonnet-4-0", sonnet_long()),
        ("claude-3-7-sonnet", anthropic("3", "15")),
        ("claude-haiku-4-5", anthropic("1", "5")),
        ("claude-3-5-haiku", anthropic("0.8", "4")),
        (
            "claude-3-haiku",
            Price {
                cache_write_1h: Some(Decimal::new(5, 1)),
                web_search_per_1k: Some(Decimal::TEN),
                ..p("0.25", "1.25", Some("0.3"), "0.03")
            },
        ),
    ] {
        models.insert(m.to_owned(), price);
    }
    PriceTable {
        models,
        default: None,
    }
}

/// GPT-6: a prompt over 272,000 tokens makes every token of the call dearer, input and
/// cache twice, output 1.5 times.
fn gpt_6(input: &str, output: &str, cache_read: Option<&str>) -> Price {
    Price::listed(input, output, cache_read).long_context_over(
        272_000,
        Decimal::TWO,
        Decimal::new(15, 1),
    )
}

/// OpenAI list prices (USD per million tokens, standard tier) shipped as defaults, after
/// developers.openai.com's model pages (read 2026-12-02). A model whose cached-input price
/// is not published has its cache reads at the input price.
pub fn openai_defaults() -> PriceTable {
    let mut models = BTreeMap::new();
    for (m, price) in [
        ("gpt-6.2-astra", gpt_6("8", "40", None)),
        ("gpt-6.2-sol", gpt_6("2", "10", Some("0.1"))),
        ("gpt-6.1-terra", gpt_6("1", "5", None)),
        ("gpt-6-astra", gpt_6("10", "50", None)),
        ("gpt-6-sol", gpt_6("2", "10", Some("0.2"))),
        ("gpt-6-luna", gpt_6("0.1", "0.5", Some("0.01"))),
        ("gpt-5.6", p("4", "20", None, "4")),
        ("gpt-5.6-sol", p("4", "20", None, "4")),
        ("gpt-5.6-terra", p("2", "12", None, "2")),
        ("gpt-5.6-luna", p("0.2", "1.2", None, "0.2")),
        ("gpt-5", p("1.25", "10", None, "0.125")),
        ("gpt-5-chat-latest", p("1.25", "10", None, "0.125")),
        ("gpt-5-codex", p("1.25", "10", None, "0.125")),
        ("gpt-5-pro", p("15", "120", None, "15")),
        ("gpt-5-mini", p("0.25", "2", None, "0.025")),
        ("gpt-5-nano", p("0.05", "0.4", None, "0.005")),
        ("gpt-4.1", p("2", "8", None, "0.5")),
        ("gpt-4.1-mini", p("0.4", "1.6", None, "0.1")),
        ("gpt-4.1-nano", p("0.1", "0.4", None, "0.025")),
        ("gpt-4o", p("2.5", "10", None, "1.25")),
        ("gpt-4o-2024-05-13", p("5", "15", None, "5")),
        ("gpt-4o-mini", p("0.15", "0.6", None, "0.075")),
        ("o3", p("2", "8", None, "0.5")),
        ("o3-mini", p("1.1", "4.4", None, "0.55")),
        ("o3-pro", p("20", "80", None, "20")),
        ("o4-mini", p("1.1", "4.4", None, "0.275")),
        // Embeddings: input only.
        ("text-embedding-3-small", p("0.02", "0", None, "0.02")),
        ("text-embedding-3-large", p("0.13", "0", None, "0.13")),
        ("text-embedding-ada-002", p("0.1", "0", None, "0.1")),
    ] {
        models.insert(m.to_owned(), price);
    }
    PriceTable {
        models,
        default: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_prices_its_dated_versions_not_other_models() {
        let t = openai_defaults();
        let input = |m: &str| t.lookup(m).map(|p| p.input.to_string());
        for (model, price) in [
            ("gpt-4o", Some("2.5")),
            ("gpt-4o-2024-08-06", Some("2.5")),
            ("gpt-4o-2024-05-13", Some("5")),
            ("gpt-4o-mini-2024-07-18", Some("0.15")),
            ("gpt-4o-audio-preview", None),
            ("gpt-4o-mini-search-preview", None),
            ("o3-2025-04-16", Some("2")),
            ("o3-mini", Some("1.1")),
            ("o3-mini-2025-01-31", Some("1.1")),
            ("o3-pro", Some("20")),
            ("o3-deep-research", None),
            ("gpt-5-pro-2025-10-06", Some("15")),
            ("gpt-5-2025-08-07", Some("1.25")),
            ("gpt-5x", None),
            ("gpt-5-1", None),
            ("gpt-4o-2024", None),
            ("o1", None),
        ] {
            assert_eq!(input(model).as_deref(), price, "{model}");
        }
        let a = anthropic_defaults();
        for model in [
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929",
            "claude-sonnet-4-5@20250929",
            "claude-3-7-sonnet-latest",
        ] {
            assert_eq!(a.lookup(model).unwrap().input, Decimal::from(3), "{model}");
        }
        assert_eq!(
            a.lookup("claude-opus-4-1-20250805").unwrap().input,
            Decimal::from(15)
        );
        assert_eq!(
            a.lookup("claude-opus-4-5-20251101").unwrap().input,
            Decimal::from(5)
        );
        assert_eq!(
            a.lookup("claude-opus-4-0").unwrap().input,
            Decimal::from(15)
        );
        assert!(
            a.lookup("claude-opus-4-9").is_none(),
            "a later version is not its base model"
        );
        assert_eq!(
            a.lookup("claude-opus-4-6").unwrap().input,
            Decimal::from(5),
            "a listed later version has its own price"
        );
    }

    #[test]
    fn longest_prefix_wins() {
        let t = openai_defaults();
        assert_eq!(
            t.lookup("gpt-4o-mini-2024-07-18").unwrap().input,
            "0.15".parse().unwrap()
        );
        assert_eq!(
            t.lookup("gpt-4o-2024-08-06").unwrap().input,
            "2.5".parse().unwrap()
        );
        assert!(t.lookup("llama-3").is_none());
        let a = anthropic_defaults();
        assert_eq!(
            a.lookup("claude-sonnet-4-5-20250929").unwrap().output,
            Decimal::from(15)
        );
    }

    #[test]
    fn cost_is_exact_and_rounds_up() {
        let price = p("3", "15", Some("3.75"), "0.3");
        let tokens = Tokens {
            input: 1000,
            output: 500,
            cache_write: 200,
            cache_write_1h: 0,
            cache_read: 100,
            web_searches: 0,
        };
        // 1000*3 + 500*15 + 200*3.75 + 100*0.3 = 3000 + 7500 + 750 + 30 = 11280 / 1e6 USD
        assert_eq!(price.cost(&tokens), Usd::from_micros(11_280));
        let one = Tokens {
            input: 1,
            ..Tokens::default()
        };
        assert_eq!(
            p("0.15", "0.6", None, "0.075").cost(&one),
            Usd::from_micros(1),
            "0.15 micro-dollars rounds up"
        );
        assert_eq!(price.max_cost(1000, 500), Usd::from_micros(3_750 + 7_500));
        // Anthropic's 1-hour cache writes cost twice the input price.
        let sonnet = anthropic_defaults().lookup("claude-sonnet-4-5").unwrap();
        let hour = Tokens {
            cache_write: 100,
            cache_write_1h: 1000,
            ..Tokens::default()
        };
        assert_eq!(sonnet.cost(&hour), Usd::from_micros(375 + 6_000));
        assert_eq!(
            sonnet.max_cost(1000, 0),
            Usd::from_micros(6_000),
            "the dearest rate"
        );
    }

    #[test]
    fn long_prompts_and_web_searches_have_their_own_prices() {
        let sonnet = anthropic_defaults()
            .lookup("claude-sonnet-4-5-20250929")
            .unwrap();
        let at = |input: u64, cache_read: u64| Tokens {
            input,
            output: 1000,
            cache_read,
            ..Tokens::default()
        };
        // 200,000 prompt tokens: the standard rates, 200,000 × $3 + 1,000 × $15.
        assert_eq!(sonnet.cost(&at(200_000, 0)), Usd::from_micros(615_000));
        // One more, counting cached tokens: every token at the long-context rates,
        // 100,000 × $6 + 100,001 × $0.60 + 1,000 × $22.50.
        assert_eq!(
            sonnet.cost(&at(100_000, 100_001)),
            Usd::from_micros(600_000 + 60_001 + 22_500)
        );
        assert_eq!(
            sonnet.max_cost(300_000, 1000),
            Usd::from_micros(3_600_000 + 22_500),
            "300,000 at the dearest long-context input rate (1-hour cache writes, $12)"
        );
        let searches = Tokens {
            web_searches: 3,
            ..Tokens::default()
        };
        assert_eq!(
            sonnet.cost(&searches),
            Usd::from_micros(30_000),
            "$10 per 1,000"
        );
        let gpt = openai_defaults().lookup("gpt-4o").unwrap();
        assert_eq!(gpt.cost(&searches), Usd::ZERO, "no search price, no charge");
        assert_eq!(
            gpt.cost(&at(300_000, 0)),
            Usd::from_micros(750_000 + 10_000),
            "no long-context price"
        );
    }

    #[test]
    fn a_book_is_named_by_its_prices() {
        let tables = || {
            BTreeMap::from([
                ("anthropic".to_owned(), anthropic_defaults()),
                ("openai".to_owned(), openai_defaults()),
            ])
        };
        let book = PriceBook::new(tables());
        assert_eq!(book.version().len(), 16);
        assert!(book.version().bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(PriceBook::new(tables()).version(), book.version(), "stable");

        let file = parse_overrides(r#"{"openai": {"gpt-4o": {"input": 2, "output": 8}}}"#).unwrap();
        let cheaper = book.with(file).unwrap();
        assert_ne!(cheaper.version(), book.version());
        assert_eq!(
            cheaper.lookup("openai", "gpt-4o-2024-08-06").unwrap().input,
            Decimal::TWO
        );
        assert_eq!(
            book.lookup("openai", "gpt-4o").unwrap().input,
            "2.5".parse::<Decimal>().unwrap(),
            "the book it came from is unchanged"
        );
        assert!(book.lookup("gemini", "gemini-2.5-pro").is_none());

        let unknown = parse_overrides(r#"{"nobody": {"*": {"input": 1, "output": 1}}}"#).unwrap();
        assert_eq!(
            book.with(unknown).unwrap_err(),
            "names unknown provider `nobody`"
        );
        let err =
            parse_overrides(r#"{"openai": {"m": {"input": 1, "output": 1, "x": 1}}}"#).unwrap_err();
        assert!(err.contains("unknown field `x`"), "{err}");
    }

    #[test]
    fn overrides_and_defaults() {
        let mut t = PriceTable::default();
        let mut o = BTreeMap::new();
        o.insert("*".to_owned(), p("1", "2", None, "1"));
        o.insert("special".to_owned(), p("9", "9", None, "9"));
        t.merge(o);
        assert_eq!(t.lookup("anything").unwrap().input, Decimal::from(1));
        assert_eq!(
            t.lookup("special-20250101").unwrap().input,
            Decimal::from(9)
        );
        assert_eq!(
            t.lookup("special-v2").unwrap().input,
            Decimal::from(1),
            "a variant of a listed model takes the default"
        );
    }
}
