//! Every setting, declared once: its variable, what it holds, its default, its bounds and
//! its documentation. Parsing asks this table for a setting by name ([`Values`]), the file
//! and environment checks use it to tell a setting from a typo, and the README's settings
//! table is rendered from it ([`markdown`]; a test keeps the README in step).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use aibank_core::{SecretString, Usd};

use super::ConfigError;

/// What a setting holds, and so how it is checked and documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A whole number from `min` to `max`.
    Int { min: u64, max: u64 },
    /// `true` or `false` (also `1` or `0`).
    Bool,
    /// A non-negative amount of USD with at most 6 decimals.
    Usd,
    /// A percentage from 0 to 100 with at most 4 decimals.
    Percent,
    /// A positive decimal number.
    Decimal,
    /// An `http://` or `https://` URL.
    Url,
    /// An EVM address.
    EvmAddress,
    /// An address to listen on, `host:port`.
    SocketAddr,
    /// One of these words.
    Choice(&'static [&'static str]),
    /// A JSON document.
    Json,
    /// A path to a file.
    Path,
    /// Comma-separated IP addresses or CIDR networks.
    NetList,
    /// Text the code that uses it checks.
    Text,
    /// A credential, or text that may embed one: never logged or shown.
    Secret,
}

/// One setting.
#[derive(Debug)]
pub struct Setting {
    /// The environment variable. The configuration file's key is the same name without the
    /// `AIBANK_` prefix, in lower case.
    pub env: &'static str,
    pub kind: Kind,
    /// The value in force when the setting is unset; `None`: unset means off or derived.
    pub default: Option<&'static str>,
    /// How the README states the default when it is not `default` itself.
    pub default_doc: Option<&'static str>,
    /// The README's explanation.
    pub doc: &'static str,
}

impl Setting {
    /// The key in the configuration file.
    pub fn file_key(&self) -> String {
        self.env
            .strip_prefix("AIBANK_")
            .unwrap_or(self.env)
            .to_ascii_lowercase()
    }
}

const fn int(min: u64, max: u64) -> Kind {
    Kind::Int { min, max }
}

macro_rules! settings {
    ($($env:literal, $kind:expr, $default:expr, $default_doc:expr, $doc:literal;)*) => {
        /// Every setting, in the order the README lists them.
        pub const SETTINGS: &[Setting] = &[$(Setting {
            env: $env,
            kind: $kind,
            default: $default,
            default_doc: $default_doc,
            doc: $doc,
        }),*];
    };
}

settings! {
    "AIBANK_LISTEN", Kind::SocketAddr, Some("127.0.0.1:4000"), None,
        "address to listen on";
    "AIBANK_DATABASE_URL", Kind::Secret, Some("sqlite://./data/aibank.db"), None,
        "`sqlite://PATH` or `postgres://USER:PASS@HOST/DB`; any other scheme is refused. The directory of an explicit SQLite path must exist (only the default `./data` is created).";
    "AIBANK_DATABASE_POOL_SIZE", int(1, 1000), Some("10"), None,
        "connections per instance";
    "AIBANK_DATABASE_TIMEOUT_SECS", int(1, 300), Some("5"), None,
        "how long a request waits for a database connection before answering 503 `UNAVAILABLE`";
    "AIBANK_BOOTSTRAP_MASTER_KEY", Kind::Secret, None, None,
        "a master key (`mk_…`, ≥ 32 characters) that must exist; created with its own platform on first start. A key revoked through the API stays revoked.";
    "AIBANK_SIGNUP_CREDITS_USD", Kind::Usd, Some("10.0"), None,
        "credits given to self-registered agents and `gw_` keys";
    "AIBANK_MAX_JSON_BYTES", int(1024, 64 << 20), Some("65536"), None,
        "request body limit for JSON endpoints";
    "AIBANK_AUTH_CACHE_TTL_SECS", int(0, 86_400), Some("60"), None,
        "how long a verified key's digest stays in memory";
    "AIBANK_AUTH_STATUS_TTL_MS", int(0, 60_000), Some("2000"), None,
        "how long a key's status and an agent's provider-key look-up are served from memory; a rotation, revocation or deactivation is immediate on the instance that made it and reaches other instances within this time (`0`: read the database on every request)";
    "AIBANK_WORKERS", int(1, 1024), None, Some("CPU count"),
        "HTTP worker threads";
    "AIBANK_HOLD_TTL_SECS", int(1, 7 * 86_400), Some("600"), None,
        "how long an unsettled hold reserves credits before it is released";
    "AIBANK_SWEEP_INTERVAL_SECS", int(1, 3600), Some("30"), None,
        "how often expired holds are released and old idempotency keys dropped";
    "AIBANK_IDEMPOTENCY_TTL_HOURS", int(24, 24 * 365), Some("24"), None,
        "how long `Idempotency-Key`s are remembered";
    "AIBANK_METRICS_TOKEN", Kind::Secret, None, None,
        "Bearer token `GET /metrics` (Prometheus text format) asks for; unset, the route is off (404)";
    "AIBANK_METRICS_LISTEN", Kind::SocketAddr, None, None,
        "an address of its own where `GET /metrics` is served, to anyone who can reach it unless `AIBANK_METRICS_TOKEN` is set too (`127.0.0.1:9464`, say; keep it off the public network)";
    "AIBANK_LOG_FORMAT", Kind::Choice(&["text", "json"]), Some("text"), None,
        "log format (logs go to stderr)";
    "AIBANK_SECRET_KEY", Kind::Secret, None, Some("— (SQLite: generated into `secret.key` beside the database)"),
        "32 bytes (64 hex or 44 base64 chars) sealing wallet keys and stored upstream keys; required for PostgreSQL (`openssl rand -hex 32`), the same on every instance";
    "AIBANK_PUBLIC_URL", Kind::Url, None, Some("`http://<listen address>`"),
        "public base URL of links such as `verificationUri`";
    "AIBANK_CLAIM_CODE_TTL_SECS", int(60, 100 * 365 * 86_400), Some("315360000"), Some("`315360000` (10 years)"),
        "how long an agent's claim code works while the agent is unclaimed";
    "AIBANK_CLAIM_GUESS_LIMIT_PER_15_MIN", int(0, 10_000_000), Some("20"), None,
        "look-ups of unknown claim codes per client IP (IPv6: per /64) per 15 minutes, per instance, before every claim request from it is refused (`0`: off)";
    "AIBANK_DASHBOARD_SIGN_IN_LIMIT_PER_15_MIN", int(0, 10_000_000), Some("10"), None,
        "failed dashboard sign-ins per client IP (IPv6: per /64) per 15 minutes, per instance, before every sign-in from it is refused (`0`: off)";
    "ANTHROPIC_API_KEY", Kind::Secret, None, None,
        "the platform-wide Anthropic key";
    "ANTHROPIC_BASE_URL", Kind::Url, Some("https://api.anthropic.com"), None,
        "where Anthropic is";
    "OPENAI_API_KEY", Kind::Secret, None, None,
        "the platform-wide OpenAI key";
    "OPENAI_BASE_URL", Kind::Url, Some("https://api.openai.com"), None,
        "where OpenAI is";
    "GEMINI_API_KEY", Kind::Secret, None, None,
        "the platform-wide Gemini key";
    "GEMINI_BASE_URL", Kind::Url, Some("https://generativelanguage.googleapis.com"), None,
        "where Gemini is";
    "HYPERLIQUID_BASE_URL", Kind::Url, Some("https://api.hyperliquid.xyz"), None,
        "Hyperliquid API the trading endpoint reads (`…/info`); `https://api.hyperliquid-testnet.xyz` for the testnet";
    "AIBANK_HYPERLIQUID_TIMEOUT_SECS", int(1, 300), Some("10"), None,
        "longest wait for one Hyperliquid answer, connecting included";
    "AIBANK_PROVIDERS", Kind::Json, None, None,
        "extra OpenAI-compatible and per-call priced http providers (JSON array, see the gateway section)";
    "BANKR_API_KEY", Kind::Secret, None, None,
        "Bankr's Agent API: the platform-wide key";
    "BANKR_BASE_URL", Kind::Url, Some("https://api.bankr.bot"), None,
        "where Bankr's Agent API is";
    "AIBANK_BANKR_PRICE_BALANCES_USD", Kind::Usd, Some("0"), None,
        "price of `GET /v1/trading/bankr/balances` on the platform's Bankr key";
    "AIBANK_BANKR_PRICE_PROMPT_USD", Kind::Usd, Some("0"), None,
        "price of `POST /v1/trading/bankr/prompt` on the platform's Bankr key";
    "AIBANK_BANKR_PRICE_JOB_USD", Kind::Usd, Some("0"), None,
        "price of a Bankr job status call on the platform's Bankr key";
    "AIBANK_BANKR_PRICE_CANCEL_USD", Kind::Usd, Some("0"), None,
        "price of `POST /v1/trading/bankr/jobs/{jobId}/cancel` on the platform's Bankr key";
    "AIBANK_DEPLOYMENTS", Kind::Json, None, None,
        "several upstream accounts for any provider, `{\"provider\": [{\"name\", \"base_url\", \"api_key_env\", \"weight\"}]}` (see the gateway section); replaces its base URL and key settings";
    "AIBANK_GATEWAY_RETRIES", int(0, 10), Some("2"), None,
        "other deployments a call is sent to when one cannot be reached or answers 429 or 5xx before any byte reaches the client";
    "AIBANK_GATEWAY_COOLDOWN_SECS", int(0, 86_400), Some("30"), None,
        "how long a deployment that failed is left out of the choice, per instance, unless all are cooling (`0`: never)";
    "AIBANK_PRICES", Kind::Json, None, None,
        "price overrides, `{\"provider\": {\"model\": {\"input\", \"output\", \"cache_write\", \"cache_write_1h\", \"cache_read\", \"web_search_per_1k\", \"long_context\": {\"above_tokens\", \"input_factor\", \"output_factor\"}}}}` (USD per million tokens, per 1,000 searches; `*` = any model)";
    "AIBANK_PRICES_FILE", Kind::Path, None, None,
        "a JSON file of prices in the shape of `AIBANK_PRICES`, over it; read again on `SIGHUP`";
    "AIBANK_GATEWAY_MAX_BODY_BYTES", int(1024, 256 << 20), Some("10485760"), None,
        "largest request body the gateway forwards";
    "AIBANK_GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS", int(1, 10_000_000), Some("4096"), None,
        "output assumed for the hold when a request sets no maximum";
    "AIBANK_GATEWAY_CONNECT_TIMEOUT_SECS", int(1, 86_400), Some("10"), None,
        "upstream connect timeout";
    "AIBANK_GATEWAY_FIRST_BYTE_TIMEOUT_SECS", int(1, 86_400), Some("600"), None,
        "longest wait for the upstream's answer to begin";
    "AIBANK_GATEWAY_IDLE_TIMEOUT_SECS", int(1, 86_400), Some("120"), None,
        "longest silence inside an answer (between two chunks)";
    "AIBANK_BYOK_CHARGE", Kind::Bool, Some("false"), None,
        "charge credits for calls made with an agent's own key";
    "AIBANK_CATALOG_ALLOW_PRIVATE", Kind::Bool, Some("false"), None,
        "let catalog services live on loopback, private and link-local addresses (and plain `http`); for private deployments and tests only";
    "AIBANK_CATALOG_FEE_PERCENT", Kind::Percent, Some("0"), None,
        "the operator's part of each catalog call's price, rounded down";
    "AIBANK_MAX_KEYS_PER_AGENT", int(1, 1000), Some("5"), None,
        "active keys (secret and RSA) one agent may hold";
    "AIBANK_TRUSTED_PROXIES", Kind::NetList, None, None,
        "reverse proxies whose `X-Forwarded-For` is believed";
    "AIBANK_RATE_LIMIT_PER_MINUTE", int(0, 10_000_000), Some("120"), None,
        "requests per client IP (IPv6: per /64) per minute, per instance (`0`: off)";
    "AIBANK_PUBLIC_RATE_LIMIT_PER_15_MIN", int(0, 10_000_000), Some("100"), None,
        "requests per client IP (IPv6: per /64) per 15 minutes to unauthenticated endpoints, per instance (`0`: off)";
    "AIBANK_DAILY_MESSAGE_LIMIT", int(0, 1_000_000_000), Some("100"), None,
        "gateway messages per key per rolling 24 h unless the platform set the agent's own (`0`: unlimited)";
    "AIBANK_RPC_URL_ETHEREUM", Kind::Secret, None, None,
        "Ethereum's RPC endpoint (may embed a provider key: never logged)";
    "AIBANK_RPC_URL_BASE", Kind::Secret, None, None,
        "Base's RPC endpoint (may embed a provider key: never logged)";
    "AIBANK_RPC_URL_BASE_SEPOLIA", Kind::Secret, None, None,
        "Base Sepolia's RPC endpoint (may embed a provider key: never logged)";
    "AIBANK_X402_PAY_TO", Kind::EvmAddress, None, None,
        "address that receives x402 payments; with a Base or Base Sepolia RPC URL, turns x402 on";
    "AIBANK_X402_DEFAULT_CHAIN", Kind::Choice(&["base", "base-sepolia"]), None, Some("first configured"),
        "chain assumed when a payment has no `X-Payment-Chain`";
    "AIBANK_X402_CONFIRMATIONS", int(1, 1000), Some("1"), None,
        "blocks a payment or a settlement needs, its own included";
    "AIBANK_X402_MAX_AGE_SECS", int(0, 365 * 86_400), Some("0"), None,
        "refuse payments older than this (`0`: no limit)";
    "AIBANK_X402_REQUIRE_SIGNATURE", Kind::Bool, Some("false"), None,
        "require the payer's EIP-191 signature of the hash";
    "AIBANK_X402_MIN_PRICE_USD", Kind::Usd, Some("0.01"), None,
        "least a paid call costs";
    "AIBANK_X402_RPC_TIMEOUT_SECS", int(1, 300), Some("10"), None,
        "longest wait for a chain's RPC";
    "AIBANK_X402_SETTLER_KEY", Kind::Secret, None, None,
        "secp256k1 key (64 hex digits, `0x` optional) of the settlement account that submits x402 authorizations and pays their gas; turns on the x402 clients' flow";
    "AIBANK_X402_SETTLE_WAIT_SECS", int(1, 600), Some("30"), None,
        "longest wait for a settlement to be mined and confirmed before the call answers 503";
    "AIBANK_X402_MAX_TIMEOUT_SECS", int(10, 86_400), Some("300"), None,
        "`maxTimeoutSeconds` offered in payment requirements";
    "AIBANK_USDC_EIP712_NAME_BASE", Kind::Text, None, Some("`USD Coin`"),
        "EIP-712 domain name of Base's USDC, for authorizations";
    "AIBANK_USDC_EIP712_VERSION_BASE", Kind::Text, None, Some("`2`"),
        "EIP-712 domain version of Base's USDC";
    "AIBANK_USDC_EIP712_NAME_BASE_SEPOLIA", Kind::Text, None, Some("`USDC`"),
        "EIP-712 domain name of Base Sepolia's USDC";
    "AIBANK_USDC_EIP712_VERSION_BASE_SEPOLIA", Kind::Text, None, Some("`2`"),
        "EIP-712 domain version of Base Sepolia's USDC";
    "AIBANK_TOPUP_MIN_USD", Kind::Usd, Some("1"), None,
        "least `amount_usd` of `POST /v1/credits/topup` (more than 0)";
    "AIBANK_TOPUP_MAX_USD", Kind::Usd, Some("1000"), None,
        "most `amount_usd` of `POST /v1/credits/topup`";
    "AIBANK_USDC_ADDRESS_BASE", Kind::EvmAddress, None, Some("Circle's USDC"),
        "the token payments on Base must be in, and wallets hold";
    "AIBANK_USDC_ADDRESS_BASE_SEPOLIA", Kind::EvmAddress, None, Some("Circle's USDC"),
        "the token payments on Base Sepolia must be in, and wallets hold";
    "AIBANK_USDC_ADDRESS_ETHEREUM", Kind::EvmAddress, None, Some("Circle's USDC"),
        "the USDC contract wallets use on Ethereum";
    "AIBANK_ETH_USD_PRICE", Kind::Decimal, None, None,
        "USD per ETH for spending limits on ETH transfers; unset: ETH transfers are refused";
    "AIBANK_WALLET_RPC_TIMEOUT_SECS", int(1, 3600), Some("10"), None,
        "longest wait for one RPC call of a wallet";
    "AIBANK_WALLET_CONFIRM_TIMEOUT_SECS", int(1, 3600), Some("30"), None,
        "how long a transfer waits to be mined before it answers `pending`";
}

/// Variables with the prefix that are read but are not settings of the server's
/// configuration, with their default and documentation (`None`: not in the README).
pub const OTHER_VARIABLES: &[(&str, Option<(&str, &str)>)] = &[
    (
        "AIBANK_CONFIG",
        Some(("—", "a TOML file of settings (see above)")),
    ),
    (
        "AIBANK_LOG",
        Some((
            "`info`",
            "log filter, e.g. `aibank_server=debug,info` (`RUST_LOG` too)",
        )),
    ),
    ("AIBANK_PG_DIR", None),
    ("AIBANK_PG_PORT", None),
    ("AIBANK_SKIP_POSTGRES", None),
    ("AIBANK_ANVIL", None),
];

pub fn find(env: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.env == env)
}

pub fn find_by_file_key(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.file_key() == key)
}

#[cfg(test)]
thread_local! {
    /// Every setting the parser asked for on this thread, for the test that no declared
    /// setting goes unread.
    pub static READ: std::cell::RefCell<std::collections::BTreeSet<&'static str>> =
        std::cell::RefCell::default();
}

/// The values given for the settings (file and environment merged), read by name with the
/// declaration's default, bounds and checks.
pub struct Values {
    given: BTreeMap<&'static str, String>,
}

impl Values {
    pub fn new(given: BTreeMap<&'static str, String>) -> Values {
        Values { given }
    }

    fn setting(env: &'static str) -> Result<&'static Setting, ConfigError> {
        #[cfg(test)]
        READ.with(|r| r.borrow_mut().insert(env));
        find(env).ok_or(ConfigError::Invalid {
            name: env,
            message: "is read but not declared in the settings table".into(),
        })
    }

    /// The value given, trimmed of nothing; blank counts as unset.
    pub fn given(&self, env: &'static str) -> Result<Option<&str>, ConfigError> {
        Self::setting(env)?;
        Ok(self
            .given
            .get(env)
            .map(String::as_str)
            .filter(|v| !v.trim().is_empty()))
    }

    /// The value given, else the declared default.
    pub fn text(&self, env: &'static str) -> Result<Option<&str>, ConfigError> {
        let s = Self::setting(env)?;
        Ok(self.given(env)?.or(s.default))
    }

    /// A whole number within the declared bounds; the default when unset.
    pub fn int<T: TryFrom<u64>>(&self, env: &'static str) -> Result<T, ConfigError> {
        self.opt_int(env)?.ok_or(ConfigError::Invalid {
            name: env,
            message: "has no default and must be set".into(),
        })
    }

    /// A whole number within the declared bounds; `None` when unset without a default.
    pub fn opt_int<T: TryFrom<u64>>(&self, env: &'static str) -> Result<Option<T>, ConfigError> {
        let s = Self::setting(env)?;
        let Kind::Int { min, max } = s.kind else {
            return Err(Self::not_a(env, "whole number"));
        };
        let Some(v) = self.text(env)? else {
            return Ok(None);
        };
        v.trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .and_then(|n| T::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| ConfigError::Invalid {
                name: env,
                message: format!("`{v}` is not a whole number from {min} to {max}"),
            })
    }

    pub fn bool(&self, env: &'static str) -> Result<bool, ConfigError> {
        match self.text(env)?.map(str::trim) {
            Some("true" | "1") => Ok(true),
            None | Some("false" | "0") => Ok(false),
            Some(other) => Err(ConfigError::Invalid {
                name: env,
                message: format!("`{other}` is not true or false"),
            }),
        }
    }

    /// An amount of USD; the default when unset.
    pub fn usd(&self, env: &'static str) -> Result<Usd, ConfigError> {
        let v = self.text(env)?.ok_or(ConfigError::Invalid {
            name: env,
            message: "has no default and must be set".into(),
        })?;
        let d: rust_decimal::Decimal = v.trim().parse().map_err(|_| ConfigError::Invalid {
            name: env,
            message: format!("`{v}` is not a decimal amount"),
        })?;
        match Usd::from_decimal(d) {
            Ok(u) if !u.is_negative() => Ok(u),
            _ => Err(ConfigError::Invalid {
                name: env,
                message: "must be a non-negative amount with at most 6 decimal places".into(),
            }),
        }
    }

    /// A percentage from 0 to 100, with at most 4 decimal places.
    pub fn percent(&self, env: &'static str) -> Result<rust_decimal::Decimal, ConfigError> {
        let v = self.text(env)?.unwrap_or("0");
        match v.trim().parse::<rust_decimal::Decimal>() {
            Ok(d)
                if d >= rust_decimal::Decimal::ZERO
                    && d <= rust_decimal::Decimal::ONE_HUNDRED
                    && d.scale() <= 4 =>
            {
                Ok(d)
            }
            _ => Err(ConfigError::Invalid {
                name: env,
                message: format!("`{v}` is not a percentage from 0 to 100 (at most 4 decimals)"),
            }),
        }
    }

    /// A positive decimal number, or `None` when unset.
    pub fn positive_decimal(
        &self,
        env: &'static str,
    ) -> Result<Option<rust_decimal::Decimal>, ConfigError> {
        let Some(v) = self.text(env)? else {
            return Ok(None);
        };
        v.trim()
            .parse::<rust_decimal::Decimal>()
            .ok()
            .filter(|p| *p > rust_decimal::Decimal::ZERO)
            .map(Some)
            .ok_or_else(|| ConfigError::Invalid {
                name: env,
                message: format!("`{v}` is not a positive decimal number of USD"),
            })
    }

    /// An `http(s)://` URL without its trailing slash; the default when unset.
    pub fn url(&self, env: &'static str) -> Result<Option<String>, ConfigError> {
        self.text(env)?.map(|v| parse_url(env, v)).transpose()
    }

    /// A URL that has a default.
    pub fn url_or_default(&self, env: &'static str) -> Result<String, ConfigError> {
        self.url(env)?.ok_or(ConfigError::Invalid {
            name: env,
            message: "has no default and must be set".into(),
        })
    }

    /// A secret, trimmed; `None` when unset.
    pub fn secret(&self, env: &'static str) -> Result<Option<SecretString>, ConfigError> {
        Ok(self.text(env)?.map(|v| SecretString::new(v.trim())))
    }

    /// One of the declared words.
    pub fn choice(&self, env: &'static str) -> Result<Option<&str>, ConfigError> {
        let s = Self::setting(env)?;
        let Kind::Choice(words) = s.kind else {
            return Err(Self::not_a(env, "choice"));
        };
        match self.text(env)? {
            Some(v) if !words.contains(&v) => Err(ConfigError::Invalid {
                name: env,
                message: format!("`{v}` is not one of {}", words.join(", ")),
            }),
            other => Ok(other),
        }
    }

    fn not_a(env: &'static str, what: &str) -> ConfigError {
        ConfigError::Invalid {
            name: env,
            message: format!("is declared as something other than a {what}"),
        }
    }
}

pub fn parse_url(name: &'static str, v: &str) -> Result<String, ConfigError> {
    let v = v.trim().trim_end_matches('/');
    if (v.starts_with("http://") || v.starts_with("https://")) && v.len() > "https://".len() {
        Ok(v.to_owned())
    } else {
        Err(ConfigError::Invalid {
            name,
            message: "must be an http:// or https:// URL".into(),
        })
    }
}

fn values_doc(kind: Kind) -> String {
    match kind {
        Kind::Int { min, max } => format!("{min} to {max}"),
        Kind::Bool => "`true`, `false`".into(),
        Kind::Usd => "USD, ≤ 6 decimals".into(),
        Kind::Percent => "0 to 100, ≤ 4 decimals".into(),
        Kind::Decimal => "a positive number".into(),
        Kind::Url => "an `http(s)://` URL".into(),
        Kind::EvmAddress => "`0x` and 40 hex digits".into(),
        Kind::SocketAddr => "`host:port`".into(),
        Kind::Choice(words) => words
            .iter()
            .map(|w| format!("`{w}`"))
            .collect::<Vec<_>>()
            .join(", "),
        Kind::Json => "JSON".into(),
        Kind::Path => "a file".into(),
        Kind::NetList => "IPs and CIDRs, comma-separated".into(),
        Kind::Text => "text".into(),
        Kind::Secret => "secret".into(),
    }
}

/// The README's settings table, rendered from the declarations.
pub fn markdown() -> String {
    let mut out =
        String::from("| Variable | Default | Values | Meaning |\n| --- | --- | --- | --- |\n");
    for s in SETTINGS {
        let default = match (s.default_doc, s.default) {
            (Some(d), _) => d.to_owned(),
            (None, Some(d)) => format!("`{d}`"),
            (None, None) => "—".to_owned(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "| `{}` | {default} | {} | {} |",
            s.env,
            values_doc(s.kind),
            s.doc
        );
    }
    for (env, doc) in OTHER_VARIABLES {
        if let Some((default, doc)) = doc {
            let _ = writeln!(out, "| `{env}` | {default} | | {doc} |");
        }
    }
    out
}
