//! Pay-per-call with x402: a caller without credentials is priced, answered 402 with what to
//! pay, or has its payment verified, credited and held before the call goes out.

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::HttpRequest;
use aibank_core::{ApiError, Usd};
use aibank_ledger::{HoldReceipt, UsageMeta};
use aibank_x402::X402;
use tracing_actix_web::RequestId;

use crate::billing::{Bill, FlatFee};
use crate::proxy::Gateway;

/// Whether the request names a credential (then it never pays with x402).
pub(crate) fn has_credential(req: &HttpRequest) -> bool {
    use aibank_auth::extract::{
        API_KEY_HEADER, GOOG_API_KEY_HEADER, KEY_ID_HEADER, SIGNATURE_HEADER,
    };
    let h = req.headers();
    [
        API_KEY_HEADER,
        "authorization",
        GOOG_API_KEY_HEADER,
        KEY_ID_HEADER,
        SIGNATURE_HEADER,
    ]
    .iter()
    .any(|name| h.contains_key(*name))
}

/// A call paid for with an x402 payment.
pub(crate) struct Paid {
    pub(crate) bill: Option<Bill>,
    pub(crate) hold: Option<HoldReceipt>,
    pub(crate) flat: Option<FlatFee>,
    pub(crate) streamed: bool,
    /// A standard payment's settlement, for `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`.
    pub(crate) response: Option<(HeaderName, HeaderValue)>,
}

/// What a paid call costs.
// One per call, moved once into `pay`: boxing the bill would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Priced {
    /// Billed from its usage: the bill, the most output it may produce, whether it streams.
    Metered(Box<Bill>, u64, bool),
    /// A fixed price (zero for a free endpoint), taken whole once the call is served, with
    /// the usage row it records (its request id and, when unset, its description are
    /// filled in here).
    Flat { price: Usd, meta: UsageMeta },
}

impl Priced {
    /// A gateway call: billed from its usage when metered, else a free endpoint.
    pub(crate) fn of(metered: Option<(Bill, u64, bool)>) -> Priced {
        match metered {
            Some((bill, max_out, streamed)) => Priced::Metered(Box::new(bill), max_out, streamed),
            None => Priced::Flat {
                price: Usd::ZERO,
                meta: UsageMeta {
                    provider: "x402".into(),
                    ..UsageMeta::default()
                },
            },
        }
    }
}

/// Prices the call; without a payment, answers 402 with what to pay. With a transaction
/// hash, verifies the payment on chain; with a signed authorization, checks it and settles
/// it on chain. Then, in one transaction, it records the payment as used, credits it to the
/// payer's account and reserves the call's price there (at least the smallest payment
/// taken). A metered call is then billed from its usage like any other; a flat-priced one
/// takes its whole hold once served. A failed call costs nothing.
pub(crate) async fn pay(
    gw: &Gateway,
    x402: &X402,
    req: &HttpRequest,
    priced: Priced,
    request_id: &RequestId,
) -> Result<Paid, ApiError> {
    let cost = match &priced {
        Priced::Metered(bill, max_out, _) => bill.max_cost(*max_out),
        Priced::Flat { price, .. } => *price,
    };
    let price = x402.price(cost);
    let challenge = x402.challenge(price, req.method().as_str(), req.path());
    let Some(presented) = x402.presented(|name| req.headers().get(name), &challenge)? else {
        return Err(x402.required(price, &challenge));
    };
    let now = gw.now_ms();
    let resource = format!("{} {}", req.method(), req.path());
    let aibank_x402::Taken {
        transfer,
        authorization,
        response,
    } = x402
        .take(gw.pool(), presented, &challenge, &resource, now, false)
        .await?;
    let (rid, ttl) = (request_id.to_string(), gw.hold_ttl_ms());
    let reference = rid.clone();
    let acceptance = aibank_x402::Acceptance {
        transfer: transfer.clone(),
        resource: resource.clone(),
        request_id: Some(rid.clone()),
        now,
        authorization,
        credit_to: None,
    };
    // One transaction: the hash recorded as used, the payment credited, the price held.
    let payers = x402.payers();
    let hold = gw
        .pool()
        .run(move |c| {
            aibank_x402::accept(c, &acceptance, payers.as_ref(), |c, account| {
                aibank_ledger::place_hold(c, account, price, ttl, Some(&reference), now)
            })
            .map_err(|e| e.into_api(&acceptance.transfer))
        })
        .await?;
    gw.count_holds(crate::metrics::HoldEvent::Placed, 1);
    let payment = (
        transfer.chain.name().to_owned(),
        format!("{:x}", transfer.hash),
    );
    let paid = match priced {
        Priced::Metered(mut bill, _, streamed) => {
            bill.agent_id = aibank_x402::payer_account_id(transfer.chain, transfer.payer);
            bill.payment = Some(payment);
            Paid {
                bill: Some(*bill),
                hold: Some(hold),
                flat: None,
                streamed,
                response,
            }
        }
        Priced::Flat { mut meta, .. } => {
            meta.request_id = Some(rid);
            meta.description.get_or_insert(resource);
            Paid {
                bill: None,
                hold: Some(hold),
                flat: Some(FlatFee { payment, meta }),
                streamed: false,
                response,
            }
        }
    };
    tracing::info!(chain = transfer.chain.name(), payer = %transfer.payer, amount = %transfer.amount, "x402 payment accepted");
    Ok(paid)
}
