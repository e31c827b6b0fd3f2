//! Billing and settlement: a metered request read into its bill, the hold for the most it
//! can cost (with the key's daily message count, in one transaction), the guard that
//! releases a hold nobody settled, and the capture of what the call did cost.

use std::sync::Arc;

use actix_web::HttpRequest;
use aibank_auth::ApiKeyAuth;
use aibank_core::{ApiError, SharedClock, Usd};
use aibank_ledger::{Admission, CaptureWith, HoldReceipt, LedgerError, UsageMeta};
use aibank_store::{repo, AnyConnection, Combine, DbPool, StoreError, TxStop};
use bytes::Bytes;
use serde_json::Value;
use tracing_actix_web::RequestId;

use crate::dialect::Metered;
use crate::metrics::{GatewayMetrics, HoldEvent};
use crate::prices::{Price, Tokens};
use crate::providers::Provider;
use crate::proxy::Gateway;

/// Bytes of request per prompt token when estimating the most a prompt can cost.
pub const BYTES_PER_PROMPT_TOKEN: u64 = 3;

/// The daily message window: it starts at a key's first call and lasts a day.
pub const MESSAGE_WINDOW_MS: i64 = 86_400_000;

/// What a metered call was, for settling it.
pub(crate) struct Bill {
    pub(crate) agent_id: String,
    pub(crate) api_key_id: Option<String>,
    /// (chain, tx hash) of the x402 payment that pays for the call.
    pub(crate) payment: Option<(String, String)>,
    pub(crate) provider: String,
    /// The provider's deployment that served it, once one did.
    pub(crate) deployment: Option<String>,
    /// How the call's answer reports its usage.
    pub(crate) api: &'static dyn Metered,
    pub(crate) model: String,
    pub(crate) price: Price,
    /// The version of the price book `price` is from.
    pub(crate) price_version: String,
    pub(crate) prompt_estimate: u64,
    /// Server-side web searches the request allows, each held at its fee.
    pub(crate) web_searches: u64,
    pub(crate) charged: bool,
    pub(crate) request_id: String,
    /// The tokens the call was counted at against its key's tokens-per-minute limit.
    pub(crate) counted: Option<Counted>,
}

impl Bill {
    /// The most the call can cost: what its hold reserves.
    pub(crate) fn max_cost(&self, max_out: u64) -> Usd {
        let searches = Tokens {
            web_searches: self.web_searches,
            ..Tokens::default()
        };
        self.price
            .max_cost(self.prompt_estimate, max_out)
            .checked_add(self.price.cost(&searches))
            .unwrap_or(Usd::from_micros(i64::MAX))
            .max(Usd::from_micros(1))
    }
}

/// Releases a hold that was never settled, even if the handler is dropped.
pub(crate) struct HoldGuard {
    pool: DbPool,
    clock: SharedClock,
    metrics: Option<Arc<GatewayMetrics>>,
    pub(crate) hold: Option<HoldReceipt>,
    /// A paid call not billed from usage: its whole hold is the price.
    pub(crate) flat: Option<FlatFee>,
}

/// What a paid call to a free endpoint records when it is served.
pub(crate) struct FlatFee {
    /// (chain, tx hash) of its payment.
    pub(crate) payment: (String, String),
    pub(crate) meta: UsageMeta,
}

impl HoldGuard {
    /// Guards no hold yet.
    pub(crate) fn new(gw: &Gateway) -> Self {
        HoldGuard {
            pool: gw.pool().clone(),
            clock: gw.clock().clone(),
            metrics: gw.metrics().cloned(),
            hold: None,
            flat: None,
        }
    }

    /// Names the deployment that served a flat-fee call in its usage row.
    pub(crate) fn served_by(&mut self, deployment: &str) {
        if let Some(flat) = &mut self.flat {
            flat.meta.deployment = Some(deployment.to_owned());
        }
    }

    pub(crate) fn take(&mut self) -> Option<HoldReceipt> {
        self.hold.take()
    }

    /// Takes a flat-fee call's whole hold (it was served); the cost taken.
    pub(crate) async fn capture_flat(&mut self) -> Option<Usd> {
        let (hold, flat) = (self.hold.take()?, self.flat.take()?);
        let (amount, now) = (hold.amount, self.clock.now_ms());
        let res = self
            .pool
            .write(move |c| {
                aibank_ledger::capture(c, &hold.id, hold.amount, Some(&flat.meta), now)?;
                let (chain, hash) = &flat.payment;
                aibank_store::repo::payments::set_cost(c, chain, hash, hold.amount.micros())?;
                Ok::<_, LedgerError>(())
            })
            .await;
        match res {
            Ok(()) => {
                if let Some(m) = &self.metrics {
                    m.holds(HoldEvent::Captured, 1);
                }
                Some(amount)
            }
            Err(e) => {
                tracing::error!(error = %e, "settling a paid call failed");
                None
            }
        }
    }

    pub(crate) async fn release(&mut self) {
        if let Some(h) = self.hold.take() {
            release_hold(
                self.pool.clone(),
                self.metrics.clone(),
                self.clock.now_ms(),
                h,
            )
            .await;
        }
    }
}

impl Drop for HoldGuard {
    fn drop(&mut self) {
        if let Some(h) = self.hold.take() {
            let (pool, now) = (self.pool.clone(), self.clock.now_ms());
            tokio::spawn(release_hold(pool, self.metrics.take(), now, h));
        }
    }
}

pub(crate) async fn release_hold(
    pool: DbPool,
    metrics: Option<Arc<GatewayMetrics>>,
    now: i64,
    hold: HoldReceipt,
) {
    let id = hold.id.clone();
    match pool
        .write(move |c| aibank_ledger::release(c, &hold.id, now))
        .await
    {
        Ok(_) => {
            if let Some(m) = &metrics {
                m.holds(HoldEvent::Released, 1);
            }
        }
        Err(LedgerError::HoldNotOpen { .. }) => {}
        Err(e) => {
            tracing::warn!(hold_id = %id, error = %e, "could not release hold; the sweeper will");
        }
    }
}

/// What a finished call used.
pub(crate) enum Usage {
    /// All of it, as the upstream reported it.
    Reported(Tokens),
    /// A stream that ended before its final usage: what was `reported` by then, and that
    /// with its gaps `estimated` from what was seen.
    Partial { estimated: Tokens, reported: Tokens },
}

impl Usage {
    /// The tokens the usage row records.
    fn tokens(&self) -> Tokens {
        match self {
            Usage::Reported(t) | Usage::Partial { estimated: t, .. } => *t,
        }
    }

    /// What the call costs at `price` with a hold of `held`. What the upstream reported is
    /// billed in full, even beyond the hold; an estimate only within it.
    fn cost(&self, price: &Price, held: Usd) -> Usd {
        match self {
            Usage::Reported(t) => price.cost(t),
            Usage::Partial {
                estimated,
                reported,
            } => price.cost(estimated).min(held).max(price.cost(reported)),
        }
    }
}

/// Settles a finished call: captures its cost from the hold (or records free usage).
/// Returns the cost charged and the balance after.
/// A call's usage row as `tokens` make it.
fn usage_meta(bill: &Bill, tokens: &Tokens) -> UsageMeta {
    UsageMeta {
        api_key_id: bill.api_key_id.clone(),
        provider: bill.provider.clone(),
        deployment: bill.deployment.clone(),
        model: bill.model.clone(),
        input_tokens: i64::try_from(tokens.prompt()).unwrap_or(i64::MAX),
        output_tokens: i64::try_from(tokens.output).unwrap_or(i64::MAX),
        request_id: Some(bill.request_id.clone()),
        description: (!bill.charged).then(|| "own upstream key".to_owned()),
        price_version: bill.charged.then(|| bill.price_version.clone()),
    }
}

/// A capture in one statement, as the settlement reports it: charged, owed, the hold
/// captured, the balance.
fn captured(agent: &str, g: &aibank_ledger::Collected) -> (Usd, Usd, bool, Usd) {
    warn_owed(agent, g.owed);
    (g.charged, g.owed, true, g.balance)
}

/// What a capture writes with it (the call's usage row, with a new id; its payment's cost;
/// its key's minute tokens put right), handed to `f`.
fn with_usage<R>(
    agent: &str,
    meta: &UsageMeta,
    payment: Option<&(String, String)>,
    minute: Option<&(String, i64, i64)>,
    f: impl FnOnce(&CaptureWith<'_>) -> R,
) -> R {
    let usage_id = aibank_core::ids::new_ordered_id("use");
    f(&CaptureWith {
        usage: Some((&usage_id, agent, meta)),
        payment: payment.map(|(chain, hash)| (chain.as_str(), hash.as_str())),
        minute_tokens: minute.map(|(key, start, delta)| (key.as_str(), *start, *delta)),
    })
}

pub(crate) async fn settle(
    gw: &Gateway,
    bill: &Bill,
    hold: Option<HoldReceipt>,
    usage: Usage,
) -> (Usd, Option<Usd>) {
    let tokens = usage.tokens();
    let cost = match &hold {
        Some(h) if bill.charged => usage.cost(&bill.price, h.amount),
        _ => Usd::ZERO,
    };
    let meta = usage_meta(bill, &tokens);
    let now = gw.now_ms();
    let agent = bill.agent_id.clone();
    let payment = bill.payment.clone();
    let counted = bill.counted.clone();
    let used = tokens.prompt().saturating_add(tokens.output);
    // PostgreSQL: the capture, the usage row, the payment's cost and the key's minute
    // tokens in one statement, when the hold is still open.
    let at_once = {
        let (agent, hold, meta) = (agent.clone(), hold.clone(), meta.clone());
        let (payment, counted) = (payment.clone(), counted.clone());
        move |c: &mut AnyConnection| -> Result<Option<(Usd, Usd, bool, Usd)>, LedgerError> {
            let Some(hold) = &hold else { return Ok(None) };
            let minute = counted.as_ref().map(|k| k.correction(used));
            let got = with_usage(&agent, &meta, payment.as_ref(), minute.as_ref(), |with| {
                aibank_ledger::capture_usage_at_once(c, hold, cost, true, now, with)
            })?;
            Ok(got.map(|g| captured(&agent, &g)))
        }
    };
    // The same, for a batch of the agent's writes to run with the others in one statement.
    let call = hold.as_ref().and_then(|hold| {
        let minute = counted.as_ref().map(|k| k.correction(used));
        let call = with_usage(&agent, &meta, payment.as_ref(), minute.as_ref(), |with| {
            aibank_ledger::capture_usage_call(hold, cost, true, now, with)
        });
        let agent = agent.clone();
        call.map(|call| call.map(move |g| captured(&agent, &g)))
    });
    // One transaction: the capture, any overage and the usage row commit together.
    let res = gw
        .pool()
        .write_at_once(
            true,
            Combine {
                key: &bill.agent_id,
                early: false,
            },
            call,
            at_once,
            move |c| -> Result<(Usd, Usd, bool, Usd), LedgerError> {
                let got = match hold {
                    None => None,
                    // The cost is already what may be taken: all of it is.
                    Some(hold) => Some(aibank_ledger::capture_usage(
                        c, &agent, &hold, cost, true, now,
                    )?),
                };
                let (charged, owed, captured) =
                    got.as_ref().map_or((Usd::ZERO, Usd::ZERO, false), |g| {
                        (g.charged, g.owed, g.captured_hold)
                    });
                aibank_ledger::record_usage(c, &agent, charged, owed, &meta, now)?;
                if let Some((chain, hash)) = &payment {
                    aibank_store::repo::payments::set_cost(c, chain, hash, charged.micros())?;
                }
                if let Some(counted) = &counted {
                    counted.reconcile(c, used)?;
                }
                let balance = match got {
                    Some(g) => g.balance,
                    None => Usd::from_micros(aibank_ledger::balance(c, &agent)?.balance_micros),
                };
                warn_owed(&agent, owed);
                Ok((charged, owed, captured, balance))
            },
        )
        .await;
    match res {
        Ok((charged, owed, captured, balance)) => {
            if captured {
                gw.count_holds(HoldEvent::Captured, 1);
            }
            gw.count_owed(owed);
            (charged, Some(balance))
        }
        Err(e) => {
            tracing::error!(agent_id = %bill.agent_id, error = %e, "settling a gateway call failed");
            (Usd::ZERO, None)
        }
    }
}

fn warn_owed(agent: &str, owed: Usd) {
    if !owed.is_zero() {
        tracing::warn!(agent_id = %agent, owed = %owed, "usage beyond the balance is owed");
    }
}

/// Reads a metered request into the bill of the call (for the agent or payer the caller
/// fills in), the most output it may produce and whether it streams. May rewrite the body
/// (streams that must be asked for their usage).
pub(crate) fn meter_request(
    gw: &Gateway,
    provider: &Provider,
    api: &'static dyn Metered,
    req: &HttpRequest,
    tail: &str,
    body: &mut Bytes,
    request_id: &RequestId,
) -> Result<(Bill, u64, bool), ApiError> {
    let mut json: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_field("body", format!("Request body is not valid JSON: {e}"))
    })?;
    let call = api.read(
        tail,
        req.query_string(),
        &mut json,
        gw.settings.default_max_output_tokens,
    )?;
    let book = gw.registry.prices();
    let price = book.lookup(&provider.name, &call.model).ok_or_else(|| {
        ApiError::invalid_field(
            "model",
            format!(
                "No price is configured for model `{}` at provider `{}`",
                call.model, provider.name
            ),
        )
    })?;
    if call.rewritten {
        *body = Bytes::from(serde_json::to_vec(&json).map_err(ApiError::internal)?);
    }
    let bill = Bill {
        agent_id: String::new(),
        api_key_id: None,
        payment: None,
        provider: provider.name.clone(),
        deployment: None,
        api,
        model: call.model,
        price,
        price_version: book.version().to_owned(),
        prompt_estimate: (body.len() as u64).div_ceil(BYTES_PER_PROMPT_TOKEN),
        web_searches: call.web_searches,
        charged: true,
        request_id: request_id.to_string(),
        counted: None,
    };
    Ok((bill, call.max_output, call.streamed))
}

/// Reserves the most the call can cost, and counts the call against its key's limits, in
/// one transaction; the tokens it was counted at, to be replaced by its usage.
pub(crate) async fn reserve(
    gw: &Gateway,
    bill: &Bill,
    max_out: u64,
    quota: Option<Quota>,
) -> Result<(HoldReceipt, Option<Counted>), ApiError> {
    let max = bill.max_cost(max_out);
    let ttl = gw.hold_ttl_ms();
    let (agent, now, reference) = (bill.agent_id.clone(), gw.now_ms(), bill.request_id.clone());
    // Not waiting for the disk: if a crash loses the hold, it loses the call's capture
    // with it (a later durable commit would have saved both), and the account is as if the
    // call had never been made — what the sweeper makes of a durable hold never captured.
    // PostgreSQL: the hold and the count in one statement, unless something refuses.
    let at_once = {
        let (agent, reference, quota) = (agent.clone(), reference.clone(), quota.clone());
        move |c: &mut AnyConnection| -> Result<_, TxStop<ApiError, LedgerError>> {
            let admission = quota.as_ref().map(Quota::admission);
            let placed = aibank_ledger::place_hold_at_once(
                c,
                &agent,
                max,
                ttl,
                Some(&reference),
                now,
                admission.as_ref(),
            )
            .map_err(TxStop::Failed)?;
            Ok(placed.map(|(hold, minute_start)| {
                let counted = quota.as_ref().and_then(|q| q.counted_at(minute_start));
                (hold, counted)
            }))
        }
    };
    // A hold locks its fleet's platform row (when a fleet limit applies) before the
    // account's: it goes first in a batch of the account's writes.
    let combine = Combine {
        key: &bill.agent_id,
        early: true,
    };
    let call = {
        let quota = quota.clone();
        let admission = quota.as_ref().map(Quota::admission);
        aibank_ledger::place_hold_call(&agent, max, ttl, Some(&reference), now, admission.as_ref())
            .map(move |(hold, minute_start)| {
                let counted = quota.as_ref().and_then(|q| q.counted_at(minute_start));
                (hold, counted)
            })
    };
    gw.pool()
        .write_at_once(false, combine, Some(call), at_once, move |c| {
            let hold = aibank_ledger::place_hold(c, &agent, max, ttl, Some(&reference), now)
                .map_err(TxStop::Failed)?;
            // Counted last: the count locks the key's row until the commit, and calls on
            // one key wait for each other only that long. A refused count rolls the hold
            // back; a refused hold is never counted.
            let counted = match &quota {
                Some(q) => q.admit(c, now)?.map_err(TxStop::Stopped)?,
                None => None,
            };
            Ok((hold, counted))
        })
        .await
        .map_err(|e: TxStop<ApiError, LedgerError>| match e {
            TxStop::Stopped(refusal) => refusal,
            TxStop::Failed(e) => e.into(),
        })
        .inspect(|_| gw.count_holds(HoldEvent::Placed, 1))
}

/// A call's place in its key's limits: the daily message limit (metered calls only), and
/// the requests and tokens per minute of the key and its agent, the narrower of each.
#[derive(Debug, Clone)]
pub(crate) struct Quota {
    key_id: String,
    daily: Option<i64>,
    rpm: Option<i64>,
    tpm: Option<i64>,
    /// What the call is counted at until its usage is known.
    tokens: i64,
}

/// The tokens a call was counted at in its key's minute window.
#[derive(Debug, Clone)]
pub(crate) struct Counted {
    key_id: String,
    window_start: i64,
    tokens: i64,
}

fn narrower(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Quota {
    /// `None` when no limit applies to this caller.
    pub(crate) fn of(gw: &Gateway, caller: &ApiKeyAuth) -> Option<Quota> {
        let daily = caller
            .agent
            .daily_message_limit
            .unwrap_or(gw.settings.daily_message_limit);
        let q = Quota {
            key_id: caller.key_id.clone(),
            daily: (daily > 0).then_some(daily),
            rpm: narrower(caller.agent.rpm_limit, caller.limits.rpm_limit),
            tpm: narrower(caller.agent.tpm_limit, caller.limits.tpm_limit),
            tokens: 0,
        };
        (q.daily.is_some() || q.rpm.is_some() || q.tpm.is_some()).then_some(q)
    }

    /// Counted at `tokens` against the tokens-per-minute limit.
    #[must_use]
    pub(crate) fn with_tokens(mut self, tokens: u64) -> Quota {
        self.tokens = i64::try_from(tokens).unwrap_or(i64::MAX);
        self
    }

    /// Not a message: a call the daily message limit does not count (a free endpoint).
    #[must_use]
    pub(crate) fn not_a_message(mut self) -> Option<Quota> {
        self.daily = None;
        (self.rpm.is_some() || self.tpm.is_some()).then_some(self)
    }

    /// The call's count, for the statement that places its hold.
    fn admission(&self) -> Admission<'_> {
        Admission {
            key_id: &self.key_id,
            daily: self.daily,
            window_ms: MESSAGE_WINDOW_MS,
            rpm: self.rpm,
            tpm: self.tpm,
            tokens: self.tokens,
        }
    }

    /// What the call was counted at, in the minute window that started at `minute_start`
    /// (`None` when no tokens-per-minute limit counts it).
    fn counted_at(&self, minute_start: Option<i64>) -> Option<Counted> {
        self.tpm.and(minute_start).map(|window_start| Counted {
            key_id: self.key_id.clone(),
            window_start,
            tokens: self.tokens,
        })
    }

    /// Counts the call, on every instance sharing the database; the 429 when a limit is
    /// reached. Run inside the write transaction that places the call's hold, so a metered
    /// call still commits once before it is forwarded.
    pub(crate) fn admit(
        &self,
        c: &mut AnyConnection,
        now: i64,
    ) -> Result<Result<Option<Counted>, ApiError>, StoreError> {
        if let Some(limit) = self.daily {
            let w = repo::keys::admit_message(c, &self.key_id, limit, MESSAGE_WINDOW_MS, now)?;
            if !w.admitted {
                return Ok(Err(ApiError::rate_limited(
                    "Daily message limit reached for this API key",
                    limit,
                    w.used,
                    w.window_start.saturating_add(MESSAGE_WINDOW_MS),
                    now,
                )
                .with("limitName", "dailyMessageLimit")));
            }
        }
        if self.rpm.is_none() && self.tpm.is_none() {
            return Ok(Ok(None));
        }
        let w = repo::keys::admit_minute(c, &self.key_id, self.rpm, self.tpm, self.tokens, now)?;
        let reset = w.window_start.saturating_add(repo::keys::MINUTE_MS);
        if !w.admitted {
            let refusal = match self.rpm {
                Some(rpm) if w.requests >= rpm => ApiError::rate_limited(
                    "Requests-per-minute limit reached for this API key",
                    rpm,
                    w.requests,
                    reset,
                    now,
                )
                .with("limitName", "rpmLimit"),
                _ => ApiError::rate_limited(
                    "Tokens-per-minute limit reached for this API key",
                    self.tpm.unwrap_or_default(),
                    w.tokens,
                    reset,
                    now,
                )
                .with("limitName", "tpmLimit"),
            };
            return Ok(Err(refusal));
        }
        Ok(Ok(self.tpm.map(|_| Counted {
            key_id: self.key_id.clone(),
            window_start: w.window_start,
            tokens: self.tokens,
        })))
    }
}

impl Counted {
    /// The key, its window and the tokens to add there for a call that used `used`.
    fn correction(&self, used: u64) -> (String, i64, i64) {
        let used = i64::try_from(used).unwrap_or(i64::MAX);
        (
            self.key_id.clone(),
            self.window_start,
            used.saturating_sub(self.tokens),
        )
    }

    /// Puts what the call used in place of what it was counted at.
    pub(crate) fn reconcile(&self, c: &mut AnyConnection, used: u64) -> Result<(), StoreError> {
        let (key, window_start, delta) = self.correction(used);
        repo::keys::reconcile_minute_tokens(c, &key, window_start, delta)?;
        Ok(())
    }
}

/// Counts a call that places no hold (one on the agent's own upstream key, or to a free
/// endpoint).
pub(crate) async fn admit_alone(gw: &Gateway, quota: Quota) -> Result<Option<Counted>, ApiError> {
    let now = gw.now_ms();
    gw.pool().write(move |c| quota.admit(c, now)).await?
}
