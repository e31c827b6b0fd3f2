//! Exact money. One unit is a micro-dollar (0.000001 USD), which is also one USDC base unit,
//! so credits and on-chain amounts share a representation and never pass through a float.

use std::fmt;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Micro-units per dollar (and per USDC).
pub const MICROS_PER_USD: i64 = 1_000_000;
/// Decimal places a money amount may carry.
pub const SCALE: u32 = 6;

/// An amount of USD credits (or USDC) in integer micro-units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd(i64);

/// Why a decimal could not become money.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount has more than {SCALE} decimal places")]
    TooPrecise,
    #[error("amount is out of range")]
    OutOfRange,
}

impl Usd {
    pub const ZERO: Usd = Usd(0);

    pub const fn from_micros(micros: i64) -> Self {
        Usd(micros)
    }

    pub const fn micros(self) -> i64 {
        self.0
    }

    /// Whole dollars; `None` on overflow.
    pub fn from_dollars(dollars: i64) -> Option<Self> {
        dollars.checked_mul(MICROS_PER_USD).map(Usd)
    }

    /// Converts an exact decimal; refuses sub-micro precision instead of rounding it away.
    pub fn from_decimal(d: Decimal) -> Result<Self, MoneyError> {
        let micros = d
            .checked_mul(Decimal::from(MICROS_PER_USD))
            .ok_or(MoneyError::OutOfRange)?;
        if !micros.fract().is_zero() {
            return Err(MoneyError::TooPrecise);
        }
        micros.to_i64().map(Usd).ok_or(MoneyError::OutOfRange)
    }

    /// Converts a computed decimal (a cost), rounding up to the next micro-unit so the
    /// house never undercharges by a rounding error.
    pub fn from_decimal_ceil(d: Decimal) -> Result<Self, MoneyError> {
        let micros = d
            .checked_mul(Decimal::from(MICROS_PER_USD))
            .ok_or(MoneyError::OutOfRange)?
            .round_dp_with_strategy(0, RoundingStrategy::ToPositiveInfinity);
        micros.to_i64().map(Usd).ok_or(MoneyError::OutOfRange)
    }

    /// The amount as a decimal with at least one fractional digit (`10.0`, `8.5`, `0.000001`).
    pub fn to_decimal(self) -> Decimal {
        let mut d = Decimal::new(self.0, SCALE).normalize();
        if d.scale() == 0 {
            d.rescale(1);
        }
        d
    }

    pub fn checked_add(self, other: Usd) -> Option<Usd> {
        self.0.checked_add(other.0).map(Usd)
    }

    pub fn checked_sub(self, other: Usd) -> Option<Usd> {
        self.0.checked_sub(other.0).map(Usd)
    }

    pub const fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_decimal(), f)
    }
}

/// Serialized as a JSON number written out exactly (`"credits_usd": 8.5`).
impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        rust_decimal::serde::arbitrary_precision::serialize(&self.to_decimal(), serializer)
    }
}

/// Accepts a JSON number (read from its exact text, never via f64) or a decimal string.
impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let d = rust_decimal::serde::arbitrary_precision::deserialize(deserializer)?;
        Usd::from_decimal(d).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn decimal_round_trip_is_exact() {
        let d = Decimal::from_str("0.1").unwrap();
        assert_eq!(Usd::from_decimal(d).unwrap().micros(), 100_000);
        assert_eq!(Usd::from_micros(8_500_000).to_string(), "8.5");
        assert_eq!(Usd::from_micros(10_000_000).to_string(), "10.0");
        assert_eq!(Usd::from_micros(1).to_string(), "0.000001");
        assert_eq!(Usd::from_micros(-20_000).to_string(), "-0.02");
    }

    #[test]
    fn sub_micro_precision_is_refused_but_costs_round_up() {
        let d = Decimal::from_str("0.0000001").unwrap();
        assert_eq!(Usd::from_decimal(d), Err(MoneyError::TooPrecise));
        assert_eq!(Usd::from_decimal_ceil(d).unwrap().micros(), 1);
        let d = Decimal::from_str("0.0000010").unwrap();
        assert_eq!(Usd::from_decimal_ceil(d).unwrap().micros(), 1);
    }

    #[test]
    fn overflow_is_an_error() {
        let d = Decimal::from_str("99999999999999999").unwrap();
        assert_eq!(Usd::from_decimal(d), Err(MoneyError::OutOfRange));
        assert!(Usd::from_micros(i64::MAX)
            .checked_add(Usd::from_micros(1))
            .is_none());
    }

    #[test]
    fn json_numbers_are_read_exactly() {
        let v: Usd = serde_json::from_str("0.30000000000000004").map_or(Usd::ZERO, |v| v);
        assert_eq!(
            v,
            Usd::ZERO,
            "17 decimal places must be refused, not rounded"
        );
        let v: Usd = serde_json::from_str("1234567.123456").unwrap();
        assert_eq!(v.micros(), 1_234_567_123_456);
        let v: Usd = serde_json::from_str("\"2.5\"").unwrap();
        assert_eq!(v.micros(), 2_500_000);
        let v: Usd = serde_json::from_str("7").unwrap();
        assert_eq!(v.micros(), 7_000_000);
        assert_eq!(
            serde_json::to_string(&Usd::from_micros(8_500_000)).unwrap(),
            "8.5"
        );
        assert_eq!(
            serde_json::to_string(&Usd::from_micros(10_000_000)).unwrap(),
            "10.0"
        );
        assert!(serde_json::from_str::<Usd>("true").is_err());
    }
}
