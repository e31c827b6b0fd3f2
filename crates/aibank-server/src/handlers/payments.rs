//! x402 payments, as anyone holding the transaction hash may see them. Everything here but
//! the resource and the cost is public on the chain already.

use actix_web::web;
use aibank_core::clock::rfc3339;
use aibank_core::{ApiError, Json, Query, Usd};
use aibank_store::models::Payment;
use aibank_store::repo::payments;
use aibank_store::StoreError;
use aibank_x402::Chain;
use serde::{Deserialize, Serialize};

use crate::state::AppState;

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
    let raw = path.into_inner();
    // The prefix is required (the parser alone would take bare hex too).
    let hash = Some(raw.as_str())
        .filter(|h| h.len() == 66 && h.starts_with("0x"))
        .and_then(|h| h.parse::<aibank_x402::B256>().ok())
        .ok_or_else(|| {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopupBody {
    amount_usd: Usd,
}

#[derive(Debug, Serialize)]
pub struct Topup {
    /// The caller's balance after the top-up.
    credits_usd: Usd,
    /// What the payment brought (a v1 authorization or a transfer may pay more than asked).
    paid_usd: Usd,
    transaction: String,
    chain: String,
}

/// `POST /v1/credits/topup` (agent and gateway keys): buys `amount_usd` of credits with
/// USDC. Without a payment, answers 402 with the requirements for exactly that amount.
/// Paid with a standard x402 payment, or with `X-Payment: <tx hash>` and the payer's
/// `X-Payment-Signature` (required here: the key holder is not otherwise bound to the
/// payer), it credits the caller's own account, once per payment.
#[tracing::instrument(skip_all, fields(agent_id = %auth.agent.id))]
pub async fn topup(
    state: web::Data<AppState>,
    auth: aibank_auth::ApiKeyAuth,
    req: actix_web::HttpRequest,
    body: Json<TopupBody>,
) -> Result<actix_web::HttpResponse, ApiError> {
    auth.require_write("buying credits")?;
    let Some(x402) = state.gateway.x402.clone() else {
        return Err(ApiError::unavailable(
            "Buying credits with USDC is not configured on this server (AIBANK_X402_PAY_TO and a chain's RPC URL)",
        ));
    };
    let amount = crate::validate::positive_amount("amount_usd", body.amount_usd)?;
    let (min, max) = state.config.topup_bounds;
    if amount < min || amount > max {
        return Err(ApiError::invalid_field(
            "amount_usd",
            format!("A top-up buys from {min} to {max} USD"),
        ));
    }
    let challenge = x402.challenge(amount, "POST", req.path());
    let Some(presented) = x402.presented(|name| req.headers().get(name), &challenge)? else {
        return Err(x402.required(amount, &challenge));
    };
    let now = state.clock.now_ms();
    let resource = format!("POST {} (agent {})", req.path(), auth.agent.id);
    // The key holder is not otherwise bound to the payer of a transfer: it must sign.
    let aibank_x402::Taken {
        transfer,
        authorization,
        response,
    } = x402
        .take(&state.pool, presented, &challenge, &resource, now, true)
        .await?;
    let acceptance = aibank_x402::Acceptance {
        transfer: transfer.clone(),
        resource,
        request_id: None,
        now,
        authorization,
        credit_to: Some(auth.agent.id.clone()),
    };
    let payers = x402.payers();
    let balance = state
        .pool
        .run(move |c| {
            aibank_x402::accept(c, &acceptance, payers.as_ref(), |c, account| {
                aibank_ledger::balance(c, account)
            })
            .map_err(|e| e.into_api(&acceptance.transfer))
        })
        .await?;
    tracing::info!(chain = transfer.chain.name(), payer = %transfer.payer, amount = %transfer.amount, "credits bought with USDC");
    let mut res = actix_web::HttpResponse::Ok();
    if let Some((name, value)) = response {
        res.insert_header((name, value));
    }
    Ok(res.json(Topup {
        credits_usd: Usd::from_micros(balance.balance_micros),
        paid_usd: Usd::from_micros(i64::try_from(transfer.amount).unwrap_or(i64::MAX)),
        transaction: format!("{:#x}", transfer.hash),
        chain: transfer.chain.name().to_owned(),
    }))
}
