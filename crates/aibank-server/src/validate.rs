//! Input rules shared by handlers. Each failure names the request field.

use aibank_core::{ApiError, Usd};

pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_EMAIL_LEN: usize = 254;
/// Upper bound for any single amount or limit: far above real use, far below overflow.
pub const MAX_AMOUNT: Usd = Usd::from_micros(1_000_000_000 * 1_000_000);

pub fn name(field: &str, v: &str) -> Result<String, ApiError> {
    let v = v.trim();
    let n = v.chars().count();
    if n == 0 {
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
