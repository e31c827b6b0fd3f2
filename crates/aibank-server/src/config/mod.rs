//! Configuration: environment first (12-factor), then an optional TOML file named by
//! `AIBANK_CONFIG` whose keys are the variable names without the `AIBANK_` prefix, in lower
//! case (`listen`, `database_url`, …). The environment wins over the file. Everything is
//! typed and validated at start-up; unknown file keys are errors, unknown `AIBANK_*`
//! variables are reported as warnings (they are usually typos). Each setting is declared
//! once, in `settings`; this module turns the declared values into the typed [`Config`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use aibank_core::{SecretString, Usd};

mod settings;

pub use settings::{markdown as settings_markdown, Kind, Setting, SETTINGS};
use settings::{Values, OTHER_VARIABLES};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:4000";
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/aibank.db";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid TOML: {message}")]
    Toml { path: String, message: String },
    #[error("unknown key `{key}` in config file {path}; known keys: {known}")]
    UnknownKey {
        path: String,
        key: String,
        known: String,
    },
    #[error("invalid {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// May hold a password, hence secret.
    pub database_url: SecretString,
    pub database_pool_size: u32,
    /// How long a request waits for a database connection before answering 503.
    pub database_timeout: Duration,
    /// 32-byte key (hex or base64) for encrypting secrets at rest.
    pub secret_key: Option<SecretString>,
    pub bootstrap_master_key: Option<SecretString>,
    /// The Bearer token `GET /metrics` wants; `None`: the route is off.
    pub metrics_token: Option<SecretString>,
    /// Where `GET /metrics` is also served, alone.
    pub metrics_listen: Option<SocketAddr>,
    pub public_url: Option<String>,
    pub signup_credits: Usd,
    pub max_json_bytes: usize,
    pub auth_cache_ttl: Duration,
    /// How long a key's status (and an agent's provider-key lookup) may be served from
    /// memory; other instances see revocations within it. Zero: always read the database.
    pub auth_status_ttl: Duration,
    pub workers: Option<usize>,
    /// How long an unsettled hold reserves credits before the sweeper releases it.
    pub hold_ttl: Duration,
    /// How often the sweeper looks for expired holds and old idempotency keys.
    pub sweep_interval: Duration,
    /// How long idempotency keys are remembered (at least 24 hours).
    pub idempotency_ttl: Duration,
    pub log_format: LogFormat,
    /// Upstream providers (built-ins plus `AIBANK_PROVIDERS`) with their prices.
    pub providers: aibank_gateway::Registry,
    /// A JSON file of prices over the shipped ones and `AIBANK_PRICES`, read again on
    /// `SIGHUP`.
    pub prices_file: Option<std::path::PathBuf>,
    pub gateway: aibank_gateway::GatewaySettings,
    /// Reverse proxies whose `X-Forwarded-For` names the client; empty: the socket peer is
    /// the client.
    pub trusted_proxies: Vec<aibank_auth::access::IpNet>,
    /// Requests per client IP (per instance) to authenticated endpoints.
    pub ip_rate_limit: aibank_auth::ratelimit::Limit,
    /// Requests per client IP (per instance) to endpoints that need no credential.
    pub public_rate_limit: aibank_auth::ratelimit::Limit,
    /// Active keys one agent may hold.
    pub max_keys_per_agent: i64,
    /// Pay-per-call with USDC: on when `AIBANK_X402_PAY_TO` and a chain's RPC URL are set.
    pub x402: Option<aibank_x402::X402Settings>,
    /// The least and the most one credit top-up (`POST /v1/credits/topup`) may buy.
    pub topup_bounds: (Usd, Usd),
    /// Agents' wallets: the chains with an RPC URL, the ETH price, timeouts.
    pub wallets: aibank_wallet::WalletSettings,
    /// How long an agent's claim code stays valid (`expiresIn`).
    pub claim_code_ttl: Duration,
    /// Unknown claim codes one client IP may try (per instance) before it is refused.
    pub claim_guess_limit: aibank_auth::ratelimit::Limit,
    /// Failed dashboard sign-ins one client IP may make (per instance) before it is refused.
    pub dashboard_sign_in_limit: aibank_auth::ratelimit::Limit,
    /// Where the trading API reads Hyperliquid, and how long it waits.
    pub hyperliquid: HyperliquidSettings,
    /// Whether catalog services may live on loopback, private or link-local addresses
    /// (and plain http): for private deployments and tests only.
    pub catalog_allow_private: bool,
    /// The operator's part of each catalog call's price, in percent (0..=100).
    pub catalog_fee_percent: rust_decimal::Decimal,
    /// Problems worth a log line once logging is up (unknown variables).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct HyperliquidSettings {
    /// Without a trailing slash; its info API is `POST {base_url}/info`.
    pub base_url: String,
    /// Longest wait for one answer of Hyperliquid, connecting included.
    pub timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        let empty: [(String, String); 0] = [];
        // The defaults are valid by construction.
        Config::from_sources(None, empty).unwrap_or_else(|e| unreachable!("default config: {e}"))
    }
}

impl Config {
    /// Reads the process environment and the file named by `AIBANK_CONFIG`, if any.
    pub fn load() -> Result<Config, ConfigError> {
        let file = match std::env::var("AIBANK_CONFIG") {
            Ok(path) if !path.is_empty() => Some(read_file(&path)?),
            _ => None,
        };
        Config::from_sources(file, std::env::vars())
    }

    /// Builds a config from file values and environment pairs.
    // One flat pass over every setting reads better than splitting it up.
    #[allow(clippy::too_many_lines)]
    pub fn from_sources(
        file: Option<BTreeMap<String, String>>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
        if let Some(file) = file {
            for (k, v) in file {
                if let Some(s) = settings::find_by_file_key(&k) {
                    values.insert(s.env, v);
                }
            }
        }
        let mut warnings = Vec::new();
        let mut all_env: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in env {
            all_env.insert(name.clone(), value.clone());
            if let Some(s) = settings::find(&name) {
                values.insert(s.env, value);
            } else if name.starts_with("AIBANK_")
                && !name.starts_with("AIBANK_TEST_")
                && !OTHER_VARIABLES.iter().any(|(v, _)| *v == name)
            {
                warnings.push(format!("ignoring unknown environment variable {name}"));
            }
        }
        let v = Values::new(values);

        let listen = parse_addr(
            "AIBANK_LISTEN",
            v.text("AIBANK_LISTEN")?.unwrap_or(DEFAULT_LISTEN),
        )?;
        let database_url = v
            .secret("AIBANK_DATABASE_URL")?
            .unwrap_or_else(|| SecretString::new(DEFAULT_DATABASE_URL));
        let database_pool_size = v.int("AIBANK_DATABASE_POOL_SIZE")?;
        let database_timeout = Duration::from_secs(v.int("AIBANK_DATABASE_TIMEOUT_SECS")?);
        let secret_key = v.secret("AIBANK_SECRET_KEY")?;
        if let Some(k) = &secret_key {
            validate_secret_key(k.expose())?;
        }
        let bootstrap_master_key = v.secret("AIBANK_BOOTSTRAP_MASTER_KEY")?;
        let signup_credits = v.usd("AIBANK_SIGNUP_CREDITS_USD")?;
        let max_json_bytes = v.int("AIBANK_MAX_JSON_BYTES")?;
        let auth_cache_ttl = Duration::from_secs(v.int("AIBANK_AUTH_CACHE_TTL_SECS")?);
        let auth_status_ttl = Duration::from_millis(v.int("AIBANK_AUTH_STATUS_TTL_MS")?);
        let workers = v.opt_int("AIBANK_WORKERS")?;
        let hold_ttl = Duration::from_secs(v.int("AIBANK_HOLD_TTL_SECS")?);
        let sweep_interval = Duration::from_secs(v.int("AIBANK_SWEEP_INTERVAL_SECS")?);
        let idempotency_ttl =
            Duration::from_secs(3600 * v.int::<u64>("AIBANK_IDEMPOTENCY_TTL_HOURS")?);
        let log_format = match v.choice("AIBANK_LOG_FORMAT")? {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        };
        let anthropic = (
            v.url_or_default("ANTHROPIC_BASE_URL")?,
            v.secret("ANTHROPIC_API_KEY")?,
        );
        let openai = (
            v.url_or_default("OPENAI_BASE_URL")?,
            v.secret("OPENAI_API_KEY")?,
        );
        let gemini = (
            v.url_or_default("GEMINI_BASE_URL")?,
            v.secret("GEMINI_API_KEY")?,
        );
        let mut custom: Vec<aibank_gateway::CustomProvider> = match v.given("AIBANK_PROVIDERS")? {
            None => Vec::new(),
            Some(p) => serde_json::from_str(p).map_err(|e| ConfigError::Invalid {
                name: "AIBANK_PROVIDERS",
                message: format!("must be a JSON array of providers: {e}"),
            })?,
        };
        let bankr_prices = aibank_gateway::bankr::BankrPrices {
            balances: v.usd("AIBANK_BANKR_PRICE_BALANCES_USD")?,
            prompt: v.usd("AIBANK_BANKR_PRICE_PROMPT_USD")?,
            job: v.usd("AIBANK_BANKR_PRICE_JOB_USD")?,
            cancel: v.usd("AIBANK_BANKR_PRICE_CANCEL_USD")?,
        };
        // First, so a declared provider named `bankr` is refused as declared twice.
        custom.insert(
            0,
            aibank_gateway::bankr::provider(
                &v.url_or_default("BANKR_BASE_URL")?,
                v.secret("BANKR_API_KEY")?,
                bankr_prices,
            ),
        );
        let overrides = match v.given("AIBANK_PRICES")? {
            None => BTreeMap::new(),
            Some(p) => {
                aibank_gateway::parse_overrides(p).map_err(|message| ConfigError::Invalid {
                    name: "AIBANK_PRICES",
                    message,
                })?
            }
        };
        let deployments = match v.given("AIBANK_DEPLOYMENTS")? {
            None => BTreeMap::new(),
            Some(d) => serde_json::from_str(d).map_err(|e| ConfigError::Invalid {
                name: "AIBANK_DEPLOYMENTS",
                message: format!(
                    "must be a JSON object of provider name to a list of deployments: {e}"
                ),
            })?,
        };
        for (name, url, key) in [
            ("anthropic", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY"),
            ("openai", "OPENAI_BASE_URL", "OPENAI_API_KEY"),
            ("gemini", "GEMINI_BASE_URL", "GEMINI_API_KEY"),
            ("bankr", "BANKR_BASE_URL", "BANKR_API_KEY"),
        ] {
            if deployments.contains_key(name)
                && (v.given(url)?.is_some() || v.given(key)?.is_some())
            {
                return Err(ConfigError::Invalid {
                    name: "AIBANK_DEPLOYMENTS",
                    message: format!(
                        "gives `{name}` deployments: {url} and {key} go in them instead"
                    ),
                });
            }
        }
        let providers = aibank_gateway::Registry::build(
            anthropic,
            openai,
            gemini,
            custom,
            overrides,
            deployments,
            |var| all_env.get(var).filter(|v| !v.is_empty()).cloned(),
        )
        .map_err(|message| ConfigError::Invalid {
            name: if message.contains("AIBANK_DEPLOYMENTS") {
                "AIBANK_DEPLOYMENTS"
            } else {
                "AIBANK_PROVIDERS"
            },
            message,
        })?;
        let prices_file = v.given("AIBANK_PRICES_FILE")?.map(std::path::PathBuf::from);
        if let Some(path) = &prices_file {
            load_prices_file(&providers, path).map_err(|message| ConfigError::Invalid {
                name: "AIBANK_PRICES_FILE",
                message,
            })?;
        }
        let secs = |name: &'static str| v.int::<u64>(name).map(Duration::from_secs);
        let gateway = aibank_gateway::GatewaySettings {
            max_body_bytes: v.int("AIBANK_GATEWAY_MAX_BODY_BYTES")?,
            default_max_output_tokens: v.int("AIBANK_GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS")?,
            hold_ttl,
            connect_timeout: secs("AIBANK_GATEWAY_CONNECT_TIMEOUT_SECS")?,
            first_byte_timeout: secs("AIBANK_GATEWAY_FIRST_BYTE_TIMEOUT_SECS")?,
            idle_timeout: secs("AIBANK_GATEWAY_IDLE_TIMEOUT_SECS")?,
            lookup_ttl: auth_status_ttl,
            daily_message_limit: v.int("AIBANK_DAILY_MESSAGE_LIMIT")?,
            charge_byok: v.bool("AIBANK_BYOK_CHARGE")?,
            retries: v.int("AIBANK_GATEWAY_RETRIES")?,
            cooldown: secs("AIBANK_GATEWAY_COOLDOWN_SECS")?,
        };
        let trusted_proxies = v
            .given("AIBANK_TRUSTED_PROXIES")?
            .unwrap_or("")
            .split(',')
            .filter(|e| !e.trim().is_empty())
            .map(aibank_auth::access::parse_net)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| ConfigError::Invalid {
                name: "AIBANK_TRUSTED_PROXIES",
                message,
            })?;
        let ip_rate_limit = aibank_auth::ratelimit::Limit {
            max: v.int("AIBANK_RATE_LIMIT_PER_MINUTE")?,
            window: Duration::from_secs(60),
        };
        let public_rate_limit = aibank_auth::ratelimit::Limit {
            max: v.int("AIBANK_PUBLIC_RATE_LIMIT_PER_15_MIN")?,
            window: Duration::from_secs(15 * 60),
        };
        let max_keys_per_agent = v.int("AIBANK_MAX_KEYS_PER_AGENT")?;
        let x402 = x402_settings(&v)?;
        let topup_bounds = topup_bounds(&v)?;
        let wallets = wallet_settings(&v)?;
        let claim_code_ttl = Duration::from_secs(v.int("AIBANK_CLAIM_CODE_TTL_SECS")?);
        let claim_guess_limit = aibank_auth::ratelimit::Limit {
            max: v.int("AIBANK_CLAIM_GUESS_LIMIT_PER_15_MIN")?,
            window: Duration::from_secs(15 * 60),
        };
        let dashboard_sign_in_limit = aibank_auth::ratelimit::Limit {
            max: v.int("AIBANK_DASHBOARD_SIGN_IN_LIMIT_PER_15_MIN")?,
            window: Duration::from_secs(15 * 60),
        };
        let public_url = v.url("AIBANK_PUBLIC_URL")?;
        let hyperliquid = HyperliquidSettings {
            base_url: v.url_or_default("HYPERLIQUID_BASE_URL")?,
            timeout: secs("AIBANK_HYPERLIQUID_TIMEOUT_SECS")?,
        };
        let catalog_allow_private = v.bool("AIBANK_CATALOG_ALLOW_PRIVATE")?;
        let catalog_fee_percent = v.percent("AIBANK_CATALOG_FEE_PERCENT")?;
        Ok(Config {
            metrics_token: v.secret("AIBANK_METRICS_TOKEN")?,
            metrics_listen: v
                .text("AIBANK_METRICS_LISTEN")?
                .map(|a| parse_addr("AIBANK_METRICS_LISTEN", a))
                .transpose()?,
            listen,
            database_url,
            database_pool_size,
            database_timeout,
            secret_key,
            bootstrap_master_key,
            public_url,
            signup_credits,
            max_json_bytes,
            auth_cache_ttl,
            auth_status_ttl,
            workers,
            hold_ttl,
            sweep_interval,
            idempotency_ttl,
            log_format,
            providers,
            prices_file,
            gateway,
            trusted_proxies,
            ip_rate_limit,
            public_rate_limit,
            max_keys_per_agent,
            x402,
            topup_bounds,
            wallets,
            claim_code_ttl,
            claim_guess_limit,
            dashboard_sign_in_limit,
            hyperliquid,
            catalog_allow_private,
            catalog_fee_percent,
            warnings,
        })
    }

    /// The directory of the SQLite database, when that is the backend.
    pub fn sqlite_dir(&self) -> Option<std::path::PathBuf> {
        let url = self.database_url.expose();
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))?;
        let parent = std::path::Path::new(path).parent()?;
        Some(if parent.as_os_str().is_empty() {
            std::path::PathBuf::from(".")
        } else {
            parent.to_path_buf()
        })
    }

    /// True when the database is the embedded default, whose directory may be created.
    pub fn uses_default_database(&self) -> bool {
        self.database_url.expose() == DEFAULT_DATABASE_URL
    }
}

fn parse_address(name: &'static str, v: &str) -> Result<aibank_x402::Address, ConfigError> {
    v.trim().parse().map_err(|_| ConfigError::Invalid {
        name,
        message: format!("`{v}` is not an EVM address (0x followed by 40 hex digits)"),
    })
}

/// x402 is on when a recipient address and at least one chain's RPC URL are configured.
fn x402_settings(v: &Values) -> Result<Option<aibank_x402::X402Settings>, ConfigError> {
    use aibank_x402::{Chain, ChainConfig};
    let Some(pay_to) = v.given("AIBANK_X402_PAY_TO")? else {
        return Ok(None);
    };
    let pay_to = parse_address("AIBANK_X402_PAY_TO", pay_to)?;
    let chains: Vec<ChainConfig> = chain_configs(v)?
        .into_iter()
        .filter(|c| c.chain.accepts_payments())
        .collect();
    let Some(first) = chains.first().map(|c| c.chain) else {
        return Err(ConfigError::Invalid {
            name: "AIBANK_X402_PAY_TO",
            message: "x402 needs a chain to verify payments on: set AIBANK_RPC_URL_BASE and/or AIBANK_RPC_URL_BASE_SEPOLIA".into(),
        });
    };
    let default_chain = match v.given("AIBANK_X402_DEFAULT_CHAIN")? {
        None => first,
        Some(c) => Chain::parse(c)
            .filter(|c| c.accepts_payments() && chains.iter().any(|cc| cc.chain == *c))
            .ok_or_else(|| ConfigError::Invalid {
                name: "AIBANK_X402_DEFAULT_CHAIN",
                message: format!("`{c}` is not a chain with an RPC URL configured"),
            })?,
    };
    let max_age: u64 = v.int("AIBANK_X402_MAX_AGE_SECS")?;
    let secs = |name: &'static str| v.int::<u64>(name).map(Duration::from_secs);
    Ok(Some(aibank_x402::X402Settings {
        pay_to,
        chains,
        default_chain,
        confirmations: v.int("AIBANK_X402_CONFIRMATIONS")?,
        max_age: (max_age > 0).then(|| Duration::from_secs(max_age)),
        require_signature: v.bool("AIBANK_X402_REQUIRE_SIGNATURE")?,
        min_price: v.usd("AIBANK_X402_MIN_PRICE_USD")?,
        rpc_timeout: secs("AIBANK_X402_RPC_TIMEOUT_SECS")?,
        max_timeout_secs: v.int("AIBANK_X402_MAX_TIMEOUT_SECS")?,
        settler_key: match v.given("AIBANK_X402_SETTLER_KEY")? {
            None => None,
            Some(k) => {
                // Checked now, so a bad key stops the start; the message never shows it.
                aibank_x402::parse_settler_key(k).map_err(|message| ConfigError::Invalid {
                    name: "AIBANK_X402_SETTLER_KEY",
                    message,
                })?;
                Some(SecretString::new(k.trim()))
            }
        },
        settle_wait: secs("AIBANK_X402_SETTLE_WAIT_SECS")?,
        // Filled in once the server knows its address.
        public_url: String::new(),
    }))
}

/// What agents may buy in one top-up: `AIBANK_TOPUP_MIN_USD` to `AIBANK_TOPUP_MAX_USD`.
fn topup_bounds(v: &Values) -> Result<(Usd, Usd), ConfigError> {
    let min = v.usd("AIBANK_TOPUP_MIN_USD")?;
    let max = v.usd("AIBANK_TOPUP_MAX_USD")?;
    if min.is_zero() || min > max {
        return Err(ConfigError::Invalid {
            name: "AIBANK_TOPUP_MIN_USD",
            message: "must be more than 0 and at most AIBANK_TOPUP_MAX_USD".into(),
        });
    }
    Ok((min, max))
}

/// A chain's settings: its RPC URL, its USDC contract and that token's EIP-712 domain.
struct ChainVars {
    chain: aibank_x402::Chain,
    rpc: &'static str,
    usdc: &'static str,
    /// The EIP-712 name and version settings, on the chains that take authorizations.
    domain: Option<(&'static str, &'static str)>,
}

const CHAINS: [ChainVars; 3] = [
    ChainVars {
        chain: aibank_x402::Chain::Ethereum,
        rpc: "AIBANK_RPC_URL_ETHEREUM",
        usdc: "AIBANK_USDC_ADDRESS_ETHEREUM",
        domain: None,
    },
    ChainVars {
        chain: aibank_x402::Chain::Base,
        rpc: "AIBANK_RPC_URL_BASE",
        usdc: "AIBANK_USDC_ADDRESS_BASE",
        domain: Some((
            "AIBANK_USDC_EIP712_NAME_BASE",
            "AIBANK_USDC_EIP712_VERSION_BASE",
        )),
    },
    ChainVars {
        chain: aibank_x402::Chain::BaseSepolia,
        rpc: "AIBANK_RPC_URL_BASE_SEPOLIA",
        usdc: "AIBANK_USDC_ADDRESS_BASE_SEPOLIA",
        domain: Some((
            "AIBANK_USDC_EIP712_NAME_BASE_SEPOLIA",
            "AIBANK_USDC_EIP712_VERSION_BASE_SEPOLIA",
        )),
    },
];

/// Every chain whose RPC URL is set, with its USDC contract (Circle's unless overridden).
fn chain_configs(v: &Values) -> Result<Vec<aibank_x402::ChainConfig>, ConfigError> {
    let mut chains = Vec::new();
    for c in &CHAINS {
        let Some(url) = v.given(c.rpc)? else {
            continue;
        };
        let mut domain = aibank_x402::exact::TokenDomain::usdc(c.chain);
        if let Some((name, version)) = c.domain {
            if let Some(n) = v.given(name)? {
                n.trim().clone_into(&mut domain.name);
            }
            if let Some(ver) = v.given(version)? {
                ver.trim().clone_into(&mut domain.version);
            }
        }
        chains.push(aibank_x402::ChainConfig {
            chain: c.chain,
            rpc_url: SecretString::new(url.trim()),
            usdc: match v.given(c.usdc)? {
                Some(a) => parse_address(c.usdc, a)?,
                None => c.chain.default_usdc(),
            },
            usdc_domain: domain,
        });
    }
    Ok(chains)
}

/// Wallets use every chain with an RPC URL.
fn wallet_settings(v: &Values) -> Result<aibank_wallet::WalletSettings, ConfigError> {
    let secs = |name: &'static str| v.int::<u64>(name).map(Duration::from_secs);
    Ok(aibank_wallet::WalletSettings {
        chains: chain_configs(v)?,
        eth_usd_price: v.positive_decimal("AIBANK_ETH_USD_PRICE")?,
        rpc_timeout: secs("AIBANK_WALLET_RPC_TIMEOUT_SECS")?,
        confirm_timeout: secs("AIBANK_WALLET_CONFIRM_TIMEOUT_SECS")?,
    })
}

/// Reads the prices file at `path` and puts its prices in force; the version now in force.
pub fn load_prices_file(
    providers: &aibank_gateway::Registry,
    path: &std::path::Path,
) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let prices =
        aibank_gateway::parse_overrides(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let book = providers
        .load_prices(prices)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(book.version().to_owned())
}

fn read_file(path: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
        path: path.to_owned(),
        source,
    })?;
    parse_toml(path, &text)
}

fn parse_toml(path: &str, text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Toml {
            path: path.to_owned(),
            message: e.message().to_owned(),
        })?;
    let mut out = BTreeMap::new();
    for (k, v) in table {
        if settings::find_by_file_key(&k).is_none() {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key: k,
                known: SETTINGS
                    .iter()
                    .map(Setting::file_key)
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let s = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(_) => {
                return Err(ConfigError::Toml {
                    path: path.to_owned(),
                    message: format!("`{k}`: write decimal amounts as strings, e.g. \"10.5\""),
                })
            }
            toml::Value::Boolean(b) => b.to_string(),
            _ => {
                return Err(ConfigError::Toml {
                    path: path.to_owned(),
                    message: format!("`{k}` must be a string or a number"),
                })
            }
        };
        out.insert(k, s);
    }
    Ok(out)
}

fn parse_addr(name: &'static str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.trim().parse().map_err(|_| ConfigError::Invalid {
        name,
        message: format!("`{v}` is not an address like 127.0.0.1:4000"),
    })
}

fn validate_secret_key(v: &str) -> Result<(), ConfigError> {
    aibank_core::SecretBox::from_key_text(v)
        .map(|_| ())
        .map_err(|e| ConfigError::Invalid {
            name: "AIBANK_SECRET_KEY",
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn deployments_are_declared_for_built_in_and_declared_providers() {
        let built_in = r#"{"openai": [
            {"name": "east", "base_url": "https://east.example/", "api_key_env": "EAST", "weight": 3},
            {"base_url": "https://west.example", "api_key_env": "WEST"}]}"#;
        let declared = r#"[{"name": "compat", "deployments": [
            {"base_url": "https://c1.example"}, {"base_url": "https://c2.example", "weight": 0}]}]"#;
        let c = Config::from_sources(
            None,
            env(&[
                ("AIBANK_DEPLOYMENTS", built_in),
                ("AIBANK_PROVIDERS", declared),
                ("EAST", "sk-east"),
                ("WEST", "sk-west"),
                ("AIBANK_GATEWAY_RETRIES", "1"),
                ("AIBANK_GATEWAY_COOLDOWN_SECS", "5"),
            ]),
        )
        .unwrap();
        let openai = c.providers.get("openai").unwrap();
        let names: Vec<_> = openai.deployments.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["east", "2"]);
        assert_eq!(openai.deployments[0].base_url, "https://east.example");
        assert_eq!(openai.deployments[0].weight, 3);
        assert_eq!(
            openai.deployments[1].api_key.as_ref().unwrap().expose(),
            "sk-west"
        );
        assert!(openai.configured());
        let compat = c.providers.get("compat").unwrap();
        assert_eq!(compat.deployments.len(), 2);
        assert!(!compat.configured());
        assert_eq!(compat.deployments[1].weight, 0);
        assert_eq!(c.gateway.retries, 1);
        assert_eq!(c.gateway.cooldown, Duration::from_secs(5));
        let anthropic = c.providers.get("anthropic").unwrap();
        assert_eq!(anthropic.deployments.len(), 1);
        assert_eq!(anthropic.primary().name, "default");

        for (pairs, want) in [
            (
                vec![
                    ("AIBANK_DEPLOYMENTS", built_in),
                    ("EAST", "k"),
                    ("WEST", "k"),
                    ("OPENAI_BASE_URL", "https://x.example"),
                ],
                "OPENAI_BASE_URL and OPENAI_API_KEY go in them",
            ),
            (
                vec![(
                    "AIBANK_DEPLOYMENTS",
                    r#"{"nope": [{"base_url": "https://x"}]}"#,
                )],
                "unknown provider `nope`",
            ),
            (
                vec![("AIBANK_DEPLOYMENTS", built_in), ("EAST", "k")],
                "WEST named by api_key_env is not set",
            ),
            (
                vec![(
                    "AIBANK_PROVIDERS",
                    r#"[{"name": "x", "base_url": "https://x", "deployments": [{"base_url": "https://y"}]}]"#,
                )],
                "go in each deployment",
            ),
            (vec![("AIBANK_DEPLOYMENTS", "[]")], "JSON object"),
        ] {
            let err = Config::from_sources(None, env(&pairs))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{err} should say {want}");
        }
    }

    #[test]
    fn defaults() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:4000");
        assert!(c.uses_default_database());
        assert_eq!(c.signup_credits.to_string(), "10.0");
        assert_eq!(
            c.providers.get("anthropic").unwrap().primary().base_url,
            "https://api.anthropic.com"
        );
        assert_eq!(
            c.providers.get("openai").unwrap().primary().base_url,
            "https://api.openai.com"
        );
    }

    #[test]
    fn env_beats_file_and_values_are_validated() {
        let mut file = BTreeMap::new();
        file.insert("listen".to_owned(), "0.0.0.0:1".to_owned());
        file.insert("signup_credits_usd".to_owned(), "2.5".to_owned());
        let c = Config::from_sources(Some(file), env(&[("AIBANK_LISTEN", "127.0.0.1:9")])).unwrap();
        assert_eq!(c.listen.port(), 9);
        assert_eq!(c.signup_credits.micros(), 2_500_000);
        for (k, v) in [
            ("AIBANK_LISTEN", "nope"),
            ("AIBANK_DATABASE_POOL_SIZE", "0"),
            ("AIBANK_SIGNUP_CREDITS_USD", "-1"),
            ("AIBANK_SECRET_KEY", "short"),
            ("AIBANK_LOG_FORMAT", "xml"),
            ("OPENAI_BASE_URL", "ftp://x"),
        ] {
            assert!(
                Config::from_sources(None, env(&[(k, v)])).is_err(),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn hyperliquid_settings_default_and_are_checked() {
        let c = Config::default();
        assert_eq!(c.hyperliquid.base_url, "https://api.hyperliquid.xyz");
        assert_eq!(c.hyperliquid.timeout, Duration::from_secs(10));
        let c = Config::from_sources(
            None,
            env(&[
                (
                    "HYPERLIQUID_BASE_URL",
                    "https://api.hyperliquid-testnet.xyz/",
                ),
                ("AIBANK_HYPERLIQUID_TIMEOUT_SECS", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.hyperliquid.base_url,
            "https://api.hyperliquid-testnet.xyz"
        );
        assert_eq!(c.hyperliquid.timeout, Duration::from_secs(3));
        for (k, v) in [
            ("HYPERLIQUID_BASE_URL", "api.hyperliquid.xyz"),
            ("AIBANK_HYPERLIQUID_TIMEOUT_SECS", "0"),
            ("AIBANK_HYPERLIQUID_TIMEOUT_SECS", "301"),
        ] {
            assert!(
                Config::from_sources(None, env(&[(k, v)])).is_err(),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn the_x402_settlement_key_and_standard_payment_settings_are_checked() {
        let key = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d";
        let base = [
            (
                "AIBANK_X402_PAY_TO",
                "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            ),
            ("AIBANK_RPC_URL_BASE_SEPOLIA", "http://127.0.0.1:8545"),
        ];
        let with = |extra: &[(&str, &str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            Config::from_sources(None, env(&pairs))
        };
        let c = with(&[
            ("AIBANK_X402_SETTLER_KEY", key),
            ("AIBANK_X402_MAX_TIMEOUT_SECS", "120"),
            ("AIBANK_USDC_EIP712_NAME_BASE_SEPOLIA", "Test Coin"),
            ("AIBANK_TOPUP_MAX_USD", "50"),
        ])
        .unwrap();
        let x = c.x402.unwrap();
        assert_eq!(x.settler_key.unwrap().expose(), key);
        assert_eq!(x.max_timeout_secs, 120);
        assert_eq!(x.chains[0].usdc_domain.name, "Test Coin");
        assert_eq!(x.chains[0].usdc_domain.version, "2");
        assert_eq!(c.topup_bounds.1, Usd::from_micros(50_000_000));
        let none = with(&[]).unwrap().x402.unwrap();
        assert!(
            none.settler_key.is_none(),
            "only the hash flow without a key"
        );
        for bad in [&key[..63], "0xzz", "not a key"] {
            let err = with(&[("AIBANK_X402_SETTLER_KEY", bad)])
                .unwrap_err()
                .to_string();
            assert!(err.contains("AIBANK_X402_SETTLER_KEY"), "{err}");
            assert!(
                !err.contains(&key[4..60]),
                "the key is never repeated: {err}"
            );
        }
        assert!(with(&[
            ("AIBANK_TOPUP_MIN_USD", "100"),
            ("AIBANK_TOPUP_MAX_USD", "10")
        ])
        .is_err());
    }

    #[test]
    fn bankr_is_built_in_with_its_settings() {
        let c = Config::default();
        let bankr = c.providers.get("bankr").unwrap();
        assert_eq!(bankr.primary().base_url, "https://api.bankr.bot");
        assert!(bankr.primary().api_key.is_none() && bankr.byok);
        let api = bankr.priced.as_ref().unwrap();
        assert!(api.endpoints.iter().all(|e| e.price_usd.is_zero()));

        let c = Config::from_sources(
            None,
            env(&[
                ("BANKR_API_KEY", "bk_platform"),
                ("BANKR_BASE_URL", "http://127.0.0.1:9/"),
                ("AIBANK_BANKR_PRICE_PROMPT_USD", "0.05"),
                ("AIBANK_BANKR_PRICE_CANCEL_USD", "0.000001"),
            ]),
        )
        .unwrap();
        let bankr = c.providers.get("bankr").unwrap();
        assert_eq!(bankr.primary().base_url, "http://127.0.0.1:9");
        assert_eq!(
            bankr.primary().api_key.as_ref().unwrap().expose(),
            "bk_platform"
        );
        let api = bankr.priced.as_ref().unwrap();
        let price = |m: &str, p: &str| api.declared(m, p).unwrap().price_usd.micros();
        assert_eq!(price("POST", "agent/prompt"), 50_000);
        assert_eq!(price("POST", "agent/job/{jobId}/cancel"), 1);
        assert_eq!(price("GET", "agent/job/{jobId}"), 0);
        assert_eq!(price("GET", "agent/balances"), 0);

        for (k, v) in [
            ("AIBANK_BANKR_PRICE_JOB_USD", "-1"),
            ("AIBANK_BANKR_PRICE_BALANCES_USD", "0.0000001"),
            ("BANKR_BASE_URL", "ftp://x"),
            (
                "AIBANK_PROVIDERS",
                r#"[{"name": "bankr", "base_url": "http://x"}]"#,
            ),
        ] {
            assert!(
                Config::from_sources(None, env(&[(k, v)])).is_err(),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn http_providers_are_validated_at_start() {
        let ok = r#"[{"name": "weather", "kind": "http", "base_url": "http://127.0.0.1:9",
            "auth": {"query": "apikey"}, "api_key_env": "WEATHER_KEY", "byok": true,
            "endpoints": [{"method": "GET", "path": "v1/now/{city}", "price_usd": 0.002},
                          {"method": "POST", "path": "v1/alerts", "price_usd": 1, "charge": "any"}]}]"#;
        let c = Config::from_sources(
            None,
            env(&[("AIBANK_PROVIDERS", ok), ("WEATHER_KEY", "wk")]),
        )
        .unwrap();
        let w = c.providers.get("weather").unwrap();
        assert_eq!(w.dialect.name(), "http");
        assert_eq!(w.primary().api_key.as_ref().unwrap().expose(), "wk");
        assert_eq!(
            w.priced.as_ref().unwrap().endpoints[0].price_usd.micros(),
            2_000
        );

        let endpoint = r#"{"method": "GET", "path": "a", "price_usd": 1}"#;
        let http = |extra: &str| {
            format!(r#"[{{"name": "w", "kind": "http", "base_url": "http://x", {extra}}}]"#)
        };
        for (decl, want) in [
            (
                http(&format!(r#""endpoints": [{endpoint}]"#)),
                "needs `auth`",
            ),
            (
                http(r#""auth": {"query": "k"}, "endpoints": []"#),
                "at least one endpoint",
            ),
            (
                http(
                    r#""auth": {"query": "k"}, "endpoints": [{"method": "GET", "path": "../a", "price_usd": 1}]"#,
                ),
                "not a plain path",
            ),
            (
                http(
                    r#""auth": {"query": "k"}, "endpoints": [{"method": "GET", "path": "a", "price_usd": -0.5}]"#,
                ),
                "must not be negative",
            ),
            (
                http(
                    r#""auth": {"query": "k"}, "endpoints": [{"method": "HEAD", "path": "a", "price_usd": 1}]"#,
                ),
                "method `HEAD`",
            ),
            (
                http(&format!(
                    r#""auth": {{"query": "k"}}, "endpoints": [{endpoint}, {endpoint}]"#
                )),
                "declared twice",
            ),
            (
                http(&format!(
                    r#""auth": {{"query": "k"}}, "prices": {{"*": {{"input": 1, "output": 1}}}}, "endpoints": [{endpoint}]"#
                )),
                "priced per endpoint",
            ),
            (
                format!(r#"[{{"name": "o", "base_url": "http://x", "endpoints": [{endpoint}]}}]"#),
                "need \"kind\": \"http\"",
            ),
            (
                format!(
                    r#"[{{"name": "W!", "kind": "http", "base_url": "http://x", "auth": {{"query": "k"}}, "endpoints": [{endpoint}]}}]"#
                ),
                "lowercase letters",
            ),
        ] {
            let err = Config::from_sources(None, env(&[("AIBANK_PROVIDERS", decl.as_str())]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("AIBANK_PROVIDERS") && err.contains(want),
                "{decl}: {err}"
            );
        }
    }

    #[test]
    fn unknown_file_keys_are_errors_and_unknown_env_a_warning() {
        let err =
            parse_toml("a.toml", "listen = \"127.0.0.1:1\"\ndatabse_url = \"x\"").unwrap_err();
        assert!(err.to_string().contains("databse_url"), "{err}");
        let c = Config::from_sources(None, env(&[("AIBANK_DATABSE_URL", "x")])).unwrap();
        assert_eq!(c.warnings.len(), 1);
    }

    #[test]
    fn the_readme_settings_table_is_the_declarations() {
        let readme = include_str!("../../../../README.md");
        let start = readme
            .find("<!-- settings:start")
            .and_then(|i| readme[i..].find("-->\n").map(|j| i + j + 4))
            .expect("README has the settings:start marker");
        let end = readme
            .find("<!-- settings:end -->")
            .expect("README has the settings:end marker");
        assert!(
            readme[start..end] == settings_markdown(),
            "README.md's settings table differs from the declarations in \
             crates/aibank-server/src/config/settings.rs: put the output of \
             `cargo run -q -p aibank-server -- settings` between the settings markers"
        );
    }

    #[test]
    fn every_declared_setting_is_read_and_nothing_undeclared_is() {
        settings::READ.with(|r| r.borrow_mut().clear());
        let all = [
            (
                "AIBANK_X402_PAY_TO",
                "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            ),
            ("AIBANK_RPC_URL_ETHEREUM", "http://127.0.0.1:8545"),
            ("AIBANK_RPC_URL_BASE", "http://127.0.0.1:8545"),
            ("AIBANK_RPC_URL_BASE_SEPOLIA", "http://127.0.0.1:8545"),
        ];
        Config::from_sources(None, env(&all)).unwrap();
        let read = settings::READ.with(|r| r.borrow().clone());
        let declared: std::collections::BTreeSet<&str> = SETTINGS.iter().map(|s| s.env).collect();
        let unread: Vec<_> = declared.difference(&read).collect();
        assert!(unread.is_empty(), "declared but never read: {unread:?}");
        let undeclared: Vec<_> = read.difference(&declared).collect();
        assert!(
            undeclared.is_empty(),
            "read but not declared: {undeclared:?}"
        );
        let mut keys = std::collections::BTreeSet::new();
        for s in SETTINGS {
            assert!(keys.insert(s.file_key()), "{} declared twice", s.env);
        }
    }

    #[test]
    fn declared_defaults_are_the_ones_the_code_names() {
        let default = |env: &str| settings::find(env).and_then(|s| s.default);
        assert_eq!(default("AIBANK_LISTEN"), Some(DEFAULT_LISTEN));
        assert_eq!(default("AIBANK_DATABASE_URL"), Some(DEFAULT_DATABASE_URL));
        assert_eq!(
            default("BANKR_BASE_URL"),
            Some(aibank_gateway::bankr::DEFAULT_BASE_URL)
        );
        assert_eq!(
            default("AIBANK_X402_MAX_TIMEOUT_SECS"),
            Some(aibank_x402::MAX_TIMEOUT_SECONDS.to_string().as_str())
        );
        let documented = |env: &str| {
            settings::find(env)
                .and_then(|s| s.default_doc)
                .map(|d| d.trim_matches('`').to_owned())
        };
        for (chain, name, version) in [
            (
                aibank_x402::Chain::Base,
                "AIBANK_USDC_EIP712_NAME_BASE",
                "AIBANK_USDC_EIP712_VERSION_BASE",
            ),
            (
                aibank_x402::Chain::BaseSepolia,
                "AIBANK_USDC_EIP712_NAME_BASE_SEPOLIA",
                "AIBANK_USDC_EIP712_VERSION_BASE_SEPOLIA",
            ),
        ] {
            let domain = aibank_x402::exact::TokenDomain::usdc(chain);
            assert_eq!(documented(name), Some(domain.name));
            assert_eq!(documented(version), Some(domain.version));
        }
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        let c = Config::from_sources(
            None,
            env(&[
                ("ANTHROPIC_API_KEY", "sk-ant-hidden"),
                ("AIBANK_DATABASE_URL", "postgres://u:pw-hidden@h/db"),
            ]),
        )
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("sk-ant-hidden") && !dbg.contains("pw-hidden"));
    }
}
