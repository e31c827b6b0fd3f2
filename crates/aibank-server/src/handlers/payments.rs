//! x402 payments, as anyone holding the transaction hash may see them. Everything here but
//! the resource and the cost is public on the chain already.

use actix_web::web;
use aibank_core::clock::rfc3339;
use aibank_core::{ApiError, Query, Usd};
use aibank_store::models::Payment;
use aibank_store::repo::payments;
use aibank_store::StoreError;
use aibank_x402::Chain;
use serde::{Deserialize, Serialize};

use crate::service::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentQuery {
    chain: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct PaymentView {
    hash: String,
    chain: String,
    payer: String,
    amount_usdc: Usd,
    /// What the call cost; the rest was credited to the payer's account.
    cost_usd: Usd,
    credited_usd: Usd,
    /// The payer's credit account on this chain.
    account: String,
    block_number: i64,
    resource: String,
    request_id: Option<String>,
    created_at: String,
}

impl From<Payment> for PaymentView {
    fn from(p: Payment) -> Self {
        PaymentView {
            hash: format!("0x{}", p.tx_hash),
            credited_usd: Usd::from_micros(p.amount_micros.saturating_sub(p.cost_micros)),
            amount_usdc: Usd::from_micros(p.amount_micros),
            cost_usd: Usd::from_micros(p.cost_micros),
            chain: p.chain,
            payer: p.payer,
            account: p.account_id,
            block_number: p.block_number,
            resource: p.resource,
            request_id: p.request_id,
            created_at: rfc3339(p.created_at),
        }
    }
}

/// `GET /v1/payments/{hash}[?chain=]`.
#[tracing::instrument(skip_all)]
pub async fn get(
    state: web::Data<AppState>,
    path: web::Path<String>,
    query: Query<PaymentQuery>,
) -> Result<web::Json<PaymentView>, ApiError> {
    let hash = path
        .into_inner()
        .parse::<aibank_x402::B256>()
        .map_err(|_| {
            ApiError::invalid_field("hash", "`hash` must be 0x followed by 64 hex digits")
        })?;
    let chain = query
        .into_inner()
        .chain
        .map(|c| {
            Chain::parse(&c)
                .filter(|c| c.accepts_payments())
                .ok_or_else(|| {
                    ApiError::invalid_field("chain", "`chain` must be base or base-sepolia")
                })
        })
        .transpose()?;
    let key = format!("{hash:x}");
    let mut found = state
        .pool
        .run(move |c| payments::find_by_hash(c, &key).map_err(StoreError::from))
        .await?;
    if let Some(chain) = chain {
        found.retain(|p| p.chain == chain.name());
    }
    match found.len() {
        0 => Err(ApiError::not_found("No payment with this hash")),
        1 => Ok(web::Json(found.remove(0).into())),
        _ => Err(ApiError::invalid_field(
            "chain",
            "This hash paid on several chains: add ?chain=base or ?chain=base-sepolia",
        )),
    }
}
