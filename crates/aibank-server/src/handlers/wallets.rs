//! Agents' wallets: addresses, on-chain balances, transfers and recipient allowlists.
//!
//! A wallet is visible to its agent (`X-API-Key`, with `walletsEnabled`) and to the
//! agent's platform (`X-Master-Key`); to anyone else it does not exist (404). Transfers are
//! made by the agent itself. The allowlist of a platform's agent is managed by the
//! platform alone (an agent must not lift its own restriction); an agent without a
//! platform manages its own.

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use aibank_auth::extract::MASTER_KEY_HEADER;
use aibank_auth::{AgentKeyAuth, Capability, MasterKeyAuth};
use aibank_core::clock::rfc3339;
use aibank_core::{ApiError, Json, Page, PageQuery, Query};
use aibank_store::models::{AllowedRecipient, TradingQuery, Wallet, WalletTransfer};
use aibank_store::repo::{self, cursor_of};
use aibank_store::StoreError;
use aibank_wallet::{transfer_json, Address, Chain, Currency, Idempotency};
use futures_util::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::audit::{Actor, Audit};
use crate::idempotency::{fingerprint, IdempotencyKey, REPLAYED};
use crate::state::AppState;
use crate::views::wallets::WalletAddresses;

/// Who is asking about a wallet.
#[derive(Debug, Clone)]
pub enum Caller {
    Agent(Box<AgentKeyAuth>),
    Platform(MasterKeyAuth),
}

impl Caller {
    fn actor(&self) -> Actor {
        match self {
            Caller::Agent(a) => Actor::api_key(&a.0.key_id),
            Caller::Platform(p) => Actor::master_key(&p.key_id),
        }
    }
}

/// `X-Master-Key` when present, else `X-API-Key` (agent keys with `walletsEnabled`).
impl FromRequest for Caller {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        if req.headers().contains_key(MASTER_KEY_HEADER) {
            let fut = MasterKeyAuth::from_request(req, payload);
            return Box::pin(async move { Ok(Caller::Platform(fut.await?)) });
        }
        let fut = AgentKeyAuth::from_request(req, payload);
        Box::pin(async move {
            let auth = fut.await?;
            auth.0.require(Capability::Wallets)?;
            Ok(Caller::Agent(Box::new(auth)))
        })
    }
}

fn not_found() -> ApiError {
    aibank_wallet::WalletError::NotFound.into()
}

/// The wallet `id`, if the caller may see it, with its agent's platform.
async fn visible(
    state: &AppState,
    caller: &Caller,
    id: String,
) -> Result<(Wallet, Option<String>), ApiError> {
    let found = state
        .pool
        .run(move |c| repo::wallets::find_with_platform(c, &id).map_err(StoreError::from))
        .await?;
    let (wallet, platform) = found.ok_or_else(not_found)?;
    let allowed = match caller {
        Caller::Agent(a) => wallet.agent_id == a.0.agent.id,
        Caller::Platform(p) => platform.as_deref() == Some(p.platform_id.as_str()),
    };
    if !allowed {
        return Err(not_found());
    }
    Ok((wallet, platform))
}

#[derive(Debug, Serialize)]
pub struct WalletView {
    id: String,
    name: String,
    #[serde(rename = "agentId")]
    agent_id: String,
    addresses: WalletAddresses,
    created_at: String,
}

impl WalletView {
    fn of(w: &Wallet) -> Self {
        let s = crate::views::wallets::WalletSummary::of(w);
        WalletView {
            id: s.id,
            name: s.name,
            agent_id: w.agent_id.clone(),
            addresses: s.addresses,
            created_at: rfc3339(w.created_at),
        }
    }
}

/// `GET /v1/wallets`: the agent's wallet, or every wallet of the platform's agents.
#[tracing::instrument(skip_all)]
pub async fn list(
    state: web::Data<AppState>,
    caller: Caller,
    page: Query<PageQuery>,
) -> Result<web::Json<Page<WalletView>>, ApiError> {
    let (limit, cursor) = (page.limit()?, page.cursor()?);
    let rows = match caller {
        Caller::Agent(a) => {
            // Agents that predate wallets get theirs on first use.
            let w = state.wallets.ensure_wallet(&a.0.agent.id).await?;
            if cursor.is_some() {
                Vec::new()
            } else {
                vec![w]
            }
        }
        Caller::Platform(p) => {
            state
                .pool
                .run(move |c| {
                    repo::wallets::list_for_platform(
                        c,
                        &p.platform_id,
                        cursor.as_ref(),
                        i64::from(limit) + 1,
                    )
                    .map_err(StoreError::from)
                })
                .await?
        }
    };
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |w| cursor_of(w.created_at, &w.id),
        |w| WalletView::of(&w),
    )))
}

/// `GET /v1/wallets/{id}`.
#[tracing::instrument(skip_all)]
pub async fn get(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<web::Json<WalletView>, ApiError> {
    let (w, _) = visible(&state, &caller, path.into_inner()).await?;
    Ok(web::Json(WalletView::of(&w)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancesQuery {
    chains: Option<String>,
}

/// A base-unit amount as a decimal string in whole tokens.
fn units(value: aibank_wallet::U256, decimals: u32) -> String {
    let s = value.to_string();
    let d = decimals as usize;
    let (int, frac) = if s.len() > d {
        s.split_at(s.len() - d)
    } else {
        ("0", s.as_str())
    };
    let frac = format!("{frac:0>d$}");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        int.to_owned()
    } else {
        format!("{int}.{frac}")
    }
}

fn token(currency: Currency, value: aibank_wallet::U256) -> Value {
    json!({
        "currency": currency.as_str(),
        "amount": units(value, currency.decimals()),
        "base_units": value.to_string(),
    })
}

fn unavailable(chain: &str, reason: impl std::fmt::Display) -> Value {
    json!({ "chain": chain, "available": false, "error": reason.to_string() })
}

/// `GET /v1/wallets/{id}/balances?chains=base,base-sepolia,ethereum`: native and USDC
/// balances read from each chain now. A chain without an RPC endpoint, or whose endpoint
/// fails, is reported as unavailable — never as zero.
#[tracing::instrument(skip_all)]
pub async fn balances(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: Query<BalancesQuery>,
) -> Result<web::Json<Value>, ApiError> {
    let (w, _) = visible(&state, &caller, path.into_inner()).await?;
    let names: Vec<String> = match query.into_inner().chains {
        None => Chain::ALL.iter().map(|c| c.name().to_owned()).collect(),
        // Exactly as the document's pattern has it: names, commas, nothing else.
        Some(list) => list.split(',').map(str::to_owned).collect(),
    };
    if names.len() > 10 {
        return Err(ApiError::invalid_field(
            "chains",
            "`chains` must list 1 to 10 chains, comma-separated",
        ));
    }
    let address: Address = w
        .evm_address
        .parse()
        .map_err(|_| ApiError::internal("stored wallet address is not an address"))?;
    // Each chain once, in the order asked; every name checked before any chain is asked.
    let mut chains: Vec<Option<Chain>> = Vec::new();
    for name in &names {
        let chain = if name == "solana" {
            None
        } else {
            Some(
                Chain::ALL
                    .into_iter()
                    .find(|c| c.name() == name)
                    .ok_or_else(|| {
                        ApiError::invalid_field(
                    "chains",
                    format!("Unknown chain `{name}`: use ethereum, base, base-sepolia or solana"),
                )
                    })?,
            )
        };
        if !chains.contains(&chain) {
            chains.push(chain);
        }
    }
    // The chains are asked at once: a slow endpoint costs its own timeout, not everyone's.
    let reads = chains.into_iter().map(|chain| {
        let evm_address = &w.evm_address;
        let wallets = &state.wallets;
        async move {
            let Some(chain) = chain else {
                return unavailable("solana", "Solana balances are not supported yet");
            };
            let Some(rpc) = wallets.rpc(chain) else {
                return unavailable(chain.name(), "no RPC endpoint is configured");
            };
            let read = async {
                rpc.check_chain().await?;
                tokio::try_join!(rpc.native_balance(address), rpc.usdc_balance(address))
            };
            match read.await {
                Ok((native, usdc)) => json!({
                    "chain": chain.name(),
                    "available": true,
                    "address": evm_address,
                    "native": token(Currency::Eth, native),
                    "usdc": token(Currency::Usdc, usdc),
                }),
                Err(e) => unavailable(chain.name(), e),
            }
        }
    });
    let out = futures_util::future::join_all(reads).await;
    Ok(web::Json(json!({ "wallet_id": w.id, "balances": out })))
}

/// `GET /v1/wallets/{id}/transactions`: outgoing transfers (`type: transfer`) and trading
/// queries (`type: trading_query`), newest first; pending transfers are brought up to date
/// with their receipts first.
#[tracing::instrument(skip_all)]
pub async fn transactions(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    page: Query<PageQuery>,
) -> Result<web::Json<Page<Value>>, ApiError> {
    let (w, _) = visible(&state, &caller, path.into_inner()).await?;
    let (limit, cursor) = (page.limit()?, page.cursor()?);
    let (mut transfers, queries) = state
        .pool
        .run(move |c| {
            let n = i64::from(limit) + 1;
            let transfers = repo::wallets::transfers(c, &w.id, cursor.as_ref(), n)?;
            let queries = repo::trading::for_wallet(c, &w.id, cursor.as_ref(), n)?;
            Ok::<_, StoreError>((transfers, queries))
        })
        .await?;
    let order = merge(&transfers, &queries, limit);
    // The extra entry only tells whether there is a next page: it is not shown, nor a
    // transfer in it refreshed.
    let shown = order
        .len()
        .min(usize::try_from(limit).unwrap_or(usize::MAX));
    let shown_transfers = order[..shown]
        .iter()
        .filter(|e| matches!(e, Entry::Transfer(_)))
        .count();
    state
        .wallets
        .refresh(&mut transfers[..shown_transfers])
        .await;
    let rows: Vec<(i64, String, Value)> = order
        .into_iter()
        .map(|e| match e {
            Entry::Transfer(n) => {
                let transfer = &transfers[n];
                let mut entry = transfer_json(transfer);
                entry["type"] = "transfer".into();
                (transfer.created_at, transfer.id.clone(), entry)
            }
            Entry::Query(n) => {
                let query = &queries[n];
                (
                    query.created_at,
                    query.id.clone(),
                    trading_query_json(query),
                )
            }
        })
        .collect();
    Ok(web::Json(Page::from_rows(
        rows,
        limit,
        |(created_at, id, _)| cursor_of(*created_at, id),
        |(_, _, v)| v,
    )))
}

/// An entry of the merged list: an index into the transfers or into the queries.
enum Entry {
    Transfer(usize),
    Query(usize),
}

/// The first `limit + 1` entries of both lists, each newest first by (created_at, id), as
/// the page is.
fn merge(transfers: &[WalletTransfer], queries: &[TradingQuery], limit: u32) -> Vec<Entry> {
    let wanted = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    let mut order = Vec::with_capacity(wanted.min(transfers.len() + queries.len()));
    let (mut next_transfer, mut next_query) = (0, 0);
    while order.len() < wanted {
        let transfer_first = match (transfers.get(next_transfer), queries.get(next_query)) {
            (Some(t), Some(q)) => (t.created_at, &t.id) > (q.created_at, &q.id),
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if transfer_first {
            order.push(Entry::Transfer(next_transfer));
            next_transfer += 1;
        } else {
            order.push(Entry::Query(next_query));
            next_query += 1;
        }
    }
    order
}

fn trading_query_json(q: &TradingQuery) -> Value {
    json!({
        "type": "trading_query",
        "transaction_id": q.id,
        "wallet_id": q.wallet_id,
        "venue": q.venue,
        "action": q.action,
        "symbol": q.symbol,
        "request_id": q.request_id,
        "created_at": rfc3339(q.created_at),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    chain: String,
    to: String,
    amount: String,
    currency: String,
}

/// `POST /v1/wallets/{id}/transfer`: signs and sends USDC or ETH. Honours
/// `Idempotency-Key`: a retry answers with the first transfer and sends nothing.
#[tracing::instrument(skip_all)]
pub async fn transfer(
    state: web::Data<AppState>,
    auth: AgentKeyAuth,
    path: web::Path<String>,
    key: IdempotencyKey,
    body: Json<TransferRequest>,
) -> Result<HttpResponse, ApiError> {
    auth.0.require(Capability::Wallets)?;
    auth.0.require_write("a wallet transfer")?;
    let caller = Caller::Agent(Box::new(auth));
    let (w, _) = visible(&state, &caller, path.into_inner()).await?;
    let b = body.into_inner();
    let spec = state
        .wallets
        .parse_transfer(&b.chain, &b.to, &b.amount, &b.currency)?;
    let idempotency = key.0.map(|k| Idempotency {
        key: k,
        request_hash: fingerprint(&[
            "wallet_transfer",
            &w.id,
            spec.chain.name(),
            &format!("{:#x}", spec.to),
            &spec.base_units.to_string(),
            spec.currency.as_str(),
        ]),
    });
    let (t, replayed) = state.wallets.transfer(&w, &spec, idempotency).await?;
    let mut res = HttpResponse::Ok();
    if replayed {
        res.insert_header((REPLAYED, "true"));
    }
    Ok(res.json(transfer_json(&t)))
}

#[derive(Debug, Serialize)]
pub struct AllowedView {
    address: String,
    label: Option<String>,
    created_at: String,
}

fn allowed_view(a: AllowedRecipient) -> AllowedView {
    AllowedView {
        address: a.address,
        label: a.label,
        created_at: rfc3339(a.created_at),
    }
}

/// 403 unless the caller manages this wallet's allowlist.
fn may_manage(caller: &Caller, platform: Option<&str>) -> Result<(), ApiError> {
    match caller {
        Caller::Agent(a) if platform.is_some() => Err(ApiError::forbidden(
            "This agent belongs to a platform: its platform manages the wallet's recipient allowlist",
        )
        .with("message", "Use X-Master-Key")
        .with("agentId", a.0.agent.id.clone())),
        Caller::Agent(a) => a.0.require_write("changing the recipient allowlist"),
        Caller::Platform(_) => Ok(()),
    }
}

fn parse_recipient(text: &str) -> Result<Address, ApiError> {
    text.trim().parse().map_err(|_| {
        ApiError::invalid_field(
            "address",
            "`address` must be an EVM address: 0x followed by 40 hex digits",
        )
    })
}

/// `GET /v1/wallets/{id}/allowlist`: empty means any recipient.
#[tracing::instrument(skip_all)]
pub async fn allowlist(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<web::Json<Value>, ApiError> {
    let (w, _) = visible(&state, &caller, path.into_inner()).await?;
    let id = w.id.clone();
    let rows = state
        .pool
        .run(move |c| repo::wallets::allowlist(c, &id).map_err(StoreError::from))
        .await?;
    Ok(web::Json(json!({
        "wallet_id": w.id,
        "restricted": !rows.is_empty(),
        "data": rows.into_iter().map(allowed_view).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AllowRequest {
    address: String,
    label: Option<String>,
}

/// `POST /v1/wallets/{id}/allowlist`: adds (or relabels) a recipient.
#[tracing::instrument(skip_all)]
pub async fn allow(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: Json<AllowRequest>,
) -> Result<HttpResponse, ApiError> {
    let (w, platform) = visible(&state, &caller, path.into_inner()).await?;
    may_manage(&caller, platform.as_deref())?;
    let b = body.into_inner();
    let address = format!("{:#x}", parse_recipient(&b.address)?);
    let label = match b.label.as_deref() {
        None => None,
        Some(l) => Some(crate::validate::name("label", l)?),
    };
    let now = state.clock.now_ms();
    let entry = AllowedRecipient {
        wallet_id: w.id.clone(),
        address,
        label,
        created_at: now,
    };
    let actor = caller.actor();
    let (entry, new) = state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                let (entry, new) = repo::wallets::allow(c, &entry)?;
                Audit {
                    actor: &actor,
                    action: "wallet.allowlist_added",
                    platform_id: platform.as_deref(),
                    agent_id: Some(&w.agent_id),
                    target_id: &w.id,
                    details: Some(json!({ "address": entry.address, "label": entry.label })),
                }
                .write(c, now)?;
                Ok::<_, StoreError>((entry, new))
            })
        })
        .await?;
    let status = if new {
        actix_web::http::StatusCode::CREATED
    } else {
        actix_web::http::StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(allowed_view(entry)))
}

/// `DELETE /v1/wallets/{id}/allowlist/{address}`.
#[tracing::instrument(skip_all)]
pub async fn disallow(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, address) = path.into_inner();
    let (w, platform) = visible(&state, &caller, id).await?;
    may_manage(&caller, platform.as_deref())?;
    let address = format!("{:#x}", parse_recipient(&address)?);
    let now = state.clock.now_ms();
    let actor = caller.actor();
    let removed = state
        .pool
        .run(move |c| {
            c.write_tx(|c| {
                let removed = repo::wallets::disallow(c, &w.id, &address)?;
                if removed {
                    Audit {
                        actor: &actor,
                        action: "wallet.allowlist_removed",
                        platform_id: platform.as_deref(),
                        agent_id: Some(&w.agent_id),
                        target_id: &w.id,
                        details: Some(json!({ "address": address })),
                    }
                    .write(c, now)?;
                }
                Ok::<_, StoreError>(removed)
            })
        })
        .await?;
    if !removed {
        return Err(ApiError::not_found(
            "That address is not on this wallet's allowlist",
        ));
    }
    Ok(HttpResponse::NoContent().finish())
}
