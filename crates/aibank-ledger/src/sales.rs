//! Sales between accounts: a catalog call's price moves from the buyer's hold to the
//! seller and the operator, in one transaction with a journal row on every side.
//!
//! The operator's fee is `price × fee_percent / 100` rounded down to the micro-USD, in the
//! seller's favour; the seller gets the rest, so the parts always add up to the price.

use aibank_core::Usd;
use aibank_store::{stmt, AnyConnection};
use diesel::RunQueryDsl;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use crate::accounts::credit;
use crate::holds::{capture, Settlement};
use crate::limits::UsageMeta;
use crate::{EntryKind, LedgerError};

/// The account the operator's catalog fees are paid to.
pub const OPERATOR_REVENUE_ACCOUNT: &str = "operator_revenue";

/// The operator's part of `price` at `fee_percent` (0..=100), rounded down.
pub fn fee_of(price: Usd, fee_percent: Decimal) -> Usd {
    let micros = (Decimal::from(price.micros()) * fee_percent / Decimal::ONE_HUNDRED)
        .floor()
        .to_i64()
        .unwrap_or(0);
    Usd::from_micros(micros.clamp(0, price.micros().max(0)))
}

/// Opens `id` with a zero balance unless it exists (an account opened on first use).
pub fn ensure_account(conn: &mut AnyConnection, id: &str, now: i64) -> Result<(), LedgerError> {
    stmt!(
        "INSERT INTO accounts (id, balance_micros, total_spent_micros, created_at, updated_at, \
         held_micros, owed_micros) VALUES (?, 0, 0, ?, ?, 0, 0) ON CONFLICT (id) DO NOTHING",
    )
    .text(id)
    .int(now)
    .int(now)
    .execute(conn)?;
    Ok(())
}

/// What a sale moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sale {
    /// The buyer's side: the hold captured at the price.
    pub settlement: Settlement,
    pub to_seller: Usd,
    pub fee: Usd,
}

/// Captures the open hold `hold_id` at `price` (at most the hold; the rest is released)
/// with the buyer's usage row, credits the seller `price − fee` (journal `sale`) and the
/// operator's revenue account `fee` (journal `fee`), opening either account on first use.
/// Credits pay a debt first, as every credit does. `reference` names the sale in the
/// seller's and operator's journal rows (the hold's id names it in the buyer's).
#[allow(clippy::too_many_arguments)] // Each is one side or one fact of the sale.
pub fn capture_sale(
    conn: &mut AnyConnection,
    hold_id: &str,
    price: Usd,
    seller_account: &str,
    fee: Usd,
    reference: &str,
    usage: &UsageMeta,
    now: i64,
) -> Result<Sale, LedgerError> {
    if price.is_negative() || fee.is_negative() || fee.micros() > price.micros() {
        return Err(LedgerError::NonPositiveAmount);
    }
    crate::atomic(conn, |conn| {
        let settlement = capture(conn, hold_id, price, Some(usage), now)?;
        let to_seller = Usd::from_micros(price.micros() - fee.micros());
        if !to_seller.is_zero() {
            ensure_account(conn, seller_account, now)?;
            credit(
                conn,
                seller_account,
                to_seller,
                EntryKind::Sale,
                Some(reference),
                now,
            )?;
        }
        if !fee.is_zero() {
            ensure_account(conn, OPERATOR_REVENUE_ACCOUNT, now)?;
            credit(
                conn,
                OPERATOR_REVENUE_ACCOUNT,
                fee,
                EntryKind::Fee,
                Some(reference),
                now,
            )?;
        }
        Ok(Sale {
            settlement,
            to_seller,
            fee,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fee_rounds_down_and_the_parts_add_up() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(
            fee_of(Usd::from_micros(1_000), d("10")),
            Usd::from_micros(100)
        );
        assert_eq!(
            fee_of(Usd::from_micros(999), d("2.5")),
            Usd::from_micros(24)
        );
        assert_eq!(fee_of(Usd::from_micros(1), d("99.9")), Usd::ZERO);
        assert_eq!(fee_of(Usd::from_micros(7), d("100")), Usd::from_micros(7));
        assert_eq!(fee_of(Usd::from_micros(7), d("0")), Usd::ZERO);
    }
}
