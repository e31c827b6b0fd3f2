//! Input rules shared by handlers. Each failure names the request field.

use aibank_core::{ApiError, Usd};

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_EMAIL_LEN: usize = 254;
/// Upper bound for any single amount or limit: far above real use, far below overflow.
pub const MAX_AMOUNT: Usd = Usd::from_micros(1_000_000_000 * 1_000_000);

/// A name as given, at most [`MAX_NAME_CHARS`] (counted before trimming, as the document's
/// `maxLength` counts them), without control characters; stored trimmed, never empty.
pub fn name(field: &str, v: &str) -> Result<String, ApiError> {
    let n = v.chars().count();
    let v = v.trim();
    if v.is_empty() {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` must not be empty"),
        ));
    }
    if n > MAX_NAME_CHARS {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` must be at most {MAX_NAME_CHARS} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` must not contain control characters"),
        ));
    }
    Ok(v.to_owned())
}

/// A plausible address: one `@`, a dotted domain, no spaces. Deliverability is not checked.
pub fn email(field: &str, v: &str) -> Result<String, ApiError> {
    let v = v.trim();
    let bad = || ApiError::invalid_field(field, format!("`{field}` must be a valid email address"));
    if v.len() > MAX_EMAIL_LEN || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = v.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
    {
        return Err(bad());
    }
    Ok(v.to_owned())
}

pub fn email_opt(field: &str, v: Option<&str>) -> Result<Option<String>, ApiError> {
    v.map(|v| email(field, v)).transpose()
}

/// A non-negative amount within bounds (balances, limits).
pub fn amount(field: &str, v: Usd) -> Result<Usd, ApiError> {
    if v.is_negative() {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` must not be negative"),
        ));
    }
    if v > MAX_AMOUNT {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` must be at most {MAX_AMOUNT}"),
        ));
    }
    Ok(v)
}

/// A strictly positive amount within bounds (grants, payments).
pub fn positive_amount(field: &str, v: Usd) -> Result<Usd, ApiError> {
    let v = amount(field, v)?;
    if v.is_zero() {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` must be greater than zero"),
        ));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert!(email("email", "a@b.co").is_ok());
        for bad in [
            "", "a", "a@b", "@b.co", "a@@b.co", "a b@c.de", "a@.co", "a@co.",
        ] {
            assert!(email("email", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_and_amounts() {
        assert_eq!(name("name", "  bot ").unwrap(), "bot");
        assert!(name("name", "   ").is_err());
        assert!(name("name", &"x".repeat(101)).is_err());
        assert!(amount("x", Usd::from_micros(-1)).is_err());
        assert!(positive_amount("x", Usd::ZERO).is_err());
        assert!(amount("x", Usd::from_micros(MAX_AMOUNT.micros() + 1)).is_err());
    }
}

pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// Free text up to [`MAX_DESCRIPTION_CHARS`], trimmed.
pub fn description(field: &str, v: &str) -> Result<String, ApiError> {
    let v = v.trim();
    if v.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(v.to_owned())
}

/// A list of IPv4/IPv6 addresses and CIDR blocks; empty allows any address.
pub fn allowed_ips(field: &str, v: &[String]) -> Result<aibank_auth::access::AllowList, ApiError> {
    aibank_auth::access::AllowList::parse(v)
        .map_err(|e| ApiError::invalid_field(field, format!("`{field}`: {e}")))
}

/// The restrictions an owner sets on a key, or a platform on an agent, as sent.
#[derive(Debug, Clone, Default)]
pub struct Restrictions {
    pub read_only: Option<bool>,
    pub allowed_ips: Option<Vec<String>>,
    pub gateway_enabled: Option<bool>,
    pub wallets_enabled: Option<bool>,
    pub trading_enabled: Option<bool>,
}

/// [`Restrictions`] validated; the allowlist in its stored form.
#[derive(Debug, Clone, Default)]
pub struct ValidRestrictions {
    pub read_only: Option<bool>,
    pub allowed_ips: Option<String>,
    pub gateway_enabled: Option<bool>,
    pub wallets_enabled: Option<bool>,
    pub trading_enabled: Option<bool>,
}

impl Restrictions {
    /// Validates, and notes each change by its API name in `logged` (for the audit log).
    pub fn validate(
        self,
        logged: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<ValidRestrictions, ApiError> {
        let allowed_ips = self
            .allowed_ips
            .map(|ips| allowed_ips("allowedIps", &ips))
            .transpose()?;
        if let Some(list) = &allowed_ips {
            logged.insert("allowedIps".into(), list.entries().into());
        }
        for (k, v) in [
            ("readOnly", self.read_only),
            ("gatewayEnabled", self.gateway_enabled),
            ("walletsEnabled", self.wallets_enabled),
            ("tradingEnabled", self.trading_enabled),
        ] {
            if let Some(v) = v {
                logged.insert(k.into(), v.into());
            }
        }
        Ok(ValidRestrictions {
            read_only: self.read_only,
            allowed_ips: allowed_ips.map(|l| l.to_stored()),
            gateway_enabled: self.gateway_enabled,
            wallets_enabled: self.wallets_enabled,
            trading_enabled: self.trading_enabled,
        })
    }
}

/// For a PATCH field that cannot be cleared, with `#[serde(default, deserialize_with =
/// "validate::present")]`: absent leaves it (`None`), a value sets it, and `null` is refused
/// (the document does not allow it) rather than read as absent.
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d)?
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom("must not be null; leave it out to keep it"))
}

/// A PATCH field: absent (leave it), `null` (clear it) or a value (set it).
#[derive(Debug, Clone, Default)]
pub enum Patch<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Patch<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Option::<T>::deserialize(d).map(|v| v.map_or(Patch::Null, Patch::Value))
    }
}

impl<T> Patch<T> {
    /// As a column change: `None` leaves it, `Some(None)` clears it.
    pub fn into_change(self) -> Option<Option<T>> {
        match self {
            Patch::Absent => None,
            Patch::Null => Some(None),
            Patch::Value(v) => Some(Some(v)),
        }
    }
}

/// Call limits as sent (`allowedModels`, `rpmLimit`, `tpmLimit`), each absent, `null`
/// (none of its own) or a value.
#[derive(Debug, Clone, Default)]
pub struct CallLimits {
    pub allowed_models: Patch<Vec<String>>,
    pub rpm_limit: Patch<i64>,
    pub tpm_limit: Patch<i64>,
}

/// [`CallLimits`] validated: column changes, the patterns as stored.
#[derive(Debug, Clone, Default)]
pub struct ValidCallLimits {
    pub allowed_models: Option<Option<String>>,
    pub rpm_limit: Option<Option<i64>>,
    pub tpm_limit: Option<Option<i64>>,
}

impl CallLimits {
    /// Validates, and notes each change in `logged`. `within`: the agent's limits a key's
    /// may only narrow (a key cannot allow a model or a rate its agent does not).
    pub fn validate(
        self,
        within: Option<&aibank_auth::KeyLimits>,
        logged: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<ValidCallLimits, ApiError> {
        use aibank_auth::limits::{
            covered, valid_pattern, MAX_MODEL_PATTERNS, MAX_PATTERN_LEN, MAX_RPM, MAX_TPM,
        };
        let allowed_models = match self.allowed_models.into_change() {
            None => None,
            Some(None) => Some(None),
            Some(Some(list)) => {
                let field = "allowedModels";
                if list.is_empty() || list.len() > MAX_MODEL_PATTERNS {
                    return Err(ApiError::invalid_field(
                        field,
                        format!("`{field}` must list 1 to {MAX_MODEL_PATTERNS} model-name patterns, or be null for any model"),
                    ));
                }
                if let Some(bad) = list.iter().find(|p| !valid_pattern(p)) {
                    return Err(ApiError::invalid_field(
                        field,
                        format!("`{field}` pattern `{}` must be 1 to {MAX_PATTERN_LEN} printable characters without spaces (`*` stands for any run)", bad.escape_debug()),
                    ));
                }
                if let Some(wider) = within.and_then(aibank_auth::KeyLimits::models) {
                    if let Some(p) = list.iter().find(|p| !covered(&wider, p)) {
                        return Err(ApiError::forbidden(format!(
                            "`{field}` pattern `{p}` allows models the agent's limits do not: a key's limits may only narrow them"
                        ))
                        .with("field", field)
                        .with("allowedModels", wider));
                    }
                }
                let stored = serde_json::to_string(&list).map_err(ApiError::internal)?;
                Some(Some(stored))
            }
        };
        if let Some(m) = &allowed_models {
            let shown = m.as_deref().map(|s| {
                serde_json::from_str::<serde_json::Value>(s).unwrap_or(serde_json::Value::Null)
            });
            logged.insert("allowedModels".into(), shown.into());
        }
        let rate = |field: &'static str,
                    v: Patch<i64>,
                    max: i64,
                    agent: Option<i64>,
                    logged: &mut serde_json::Map<String, serde_json::Value>| {
            let change = v.into_change();
            if let Some(Some(n)) = change {
                if !(1..=max).contains(&n) {
                    return Err(ApiError::invalid_field(
                        field,
                        format!("`{field}` must be between 1 and {max}, or null for no limit"),
                    ));
                }
                if let Some(a) = agent.filter(|&a| n > a) {
                    return Err(ApiError::forbidden(format!(
                        "`{field}` may only narrow the agent's limit of {a}"
                    ))
                    .with("field", field)
                    .with("limit", a));
                }
            }
            if let Some(c) = change {
                logged.insert(field.into(), c.into());
            }
            Ok(change)
        };
        let rpm_limit = rate(
            "rpmLimit",
            self.rpm_limit,
            MAX_RPM,
            within.and_then(|w| w.rpm_limit),
            logged,
        )?;
        let tpm_limit = rate(
            "tpmLimit",
            self.tpm_limit,
            MAX_TPM,
            within.and_then(|w| w.tpm_limit),
            logged,
        )?;
        Ok(ValidCallLimits {
            allowed_models,
            rpm_limit,
            tpm_limit,
        })
    }
}
