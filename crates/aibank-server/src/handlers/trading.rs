//! The trading API: `POST /v1/trading/hyperliquid {walletId, action, …}`, one endpoint whose
//! `action` picks the operation, for one of the agent's own wallets (`tradingEnabled`).
//!
//! Read actions ask Hyperliquid's public info API about the wallet's EVM address and are
//! recorded in the wallet's transactions as `trading_query` (no money moves). Write
//! actions are validated and answered `501 NOT_IMPLEMENTED` with the exchange action that
//! would be signed: nothing is signed or sent yet.

use std::str::FromStr;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use aibank_auth::{ApiKeyAuth, AuthState, Capability, KeyKind};
use aibank_core::ids::new_id;
use aibank_core::{ApiError, ErrorCode, Json};
use aibank_store::models::{TradingQuery, Wallet};
use aibank_store::{repo, StoreError};
use futures_util::future::LocalBoxFuture;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tracing_actix_web::RequestId;

use crate::state::AppState;

/// Every action, reads first; the order of the list in a 400.
const ACTIONS: [&str; 14] = [
    "status",
    "positions",
    "orders",
    "fills",
    "markets",
    "funding",
    "ticker",
    "orderbook",
    "order",
    "cancel",
    "cancel_all",
    "set_leverage",
    "withdraw",
    "transfer",
];

/// How far back `funding` looks when no `startTime` is given.
const DEFAULT_FUNDING_WINDOW_MS: i64 = 7 * 86_400_000;
/// The highest leverage Hyperliquid offers on any market.
const MAX_LEVERAGE: u64 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Status,
    Positions,
    Orders,
    Fills,
    Markets,
    Funding,
    Ticker,
    Orderbook,
    Order,
    Cancel,
    CancelAll,
    SetLeverage,
    Withdraw,
    Transfer,
}

impl Action {
    fn parse(name: &str) -> Option<Action> {
        Some(match name {
            "status" => Action::Status,
            "positions" => Action::Positions,
            "orders" => Action::Orders,
            "fills" => Action::Fills,
            "markets" => Action::Markets,
            "funding" => Action::Funding,
            "ticker" => Action::Ticker,
            "orderbook" => Action::Orderbook,
            "order" => Action::Order,
            "cancel" => Action::Cancel,
            "cancel_all" => Action::CancelAll,
            "set_leverage" => Action::SetLeverage,
            "withdraw" => Action::Withdraw,
            "transfer" => Action::Transfer,
            _ => return None,
        })
    }

    fn is_write(self) -> bool {
        matches!(
            self,
            Action::Order
                | Action::Cancel
                | Action::CancelAll
                | Action::SetLeverage
                | Action::Withdraw
                | Action::Transfer
        )
    }
}

/// An agent key with `tradingEnabled`. Unlike other POST routes, a `readOnly` key is let
/// through here: read actions only read; write actions check the key themselves.
pub struct TradingKey(ApiKeyAuth);

impl FromRequest for TradingKey {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let auth = req
                .app_data::<web::Data<AuthState>>()
                .cloned()
                .ok_or_else(|| ApiError::internal("AuthState is not registered as app data"))?
                .authenticate(&req, false)
                .await?;
            if auth.kind == KeyKind::Gateway {
                return Err(ApiError::forbidden(
                    "Gateway-only keys (gw_) can call the gateway, balance and usage endpoints only",
                ));
            }
            auth.require(Capability::Trading)?;
            Ok(TradingKey(auth))
        })
    }
}

/// Every field any action takes; each action reads the ones it needs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TradeRequest {
    wallet_id: Option<String>,
    action: Option<String>,
    symbol: Option<String>,
    start_time: Option<i64>,
    side: Option<String>,
    amount: Option<Value>,
    size: Option<Value>,
    price: Option<Value>,
    #[serde(rename = "type")]
    order_type: Option<String>,
    tif: Option<String>,
    reduce_only: Option<bool>,
    order_id: Option<Value>,
    leverage: Option<Value>,
    cross: Option<bool>,
    destination: Option<String>,
    to_perp: Option<bool>,
}

/// `POST /v1/trading/hyperliquid`.
#[tracing::instrument(skip_all, fields(action))]
pub async fn hyperliquid(
    state: web::Data<AppState>,
    key: TradingKey,
    request_id: RequestId,
    body: Json<TradeRequest>,
) -> Result<web::Json<Value>, ApiError> {
    let auth = key.0;
    let b = body.into_inner();
    let wallet_id = match b.wallet_id.as_deref().map(str::trim) {
        Some(id) if !id.is_empty() && id.len() <= 64 => id.to_owned(),
        _ => {
            return Err(ApiError::invalid_field(
                "walletId",
                "`walletId` is required: the id of one of your wallets (GET /v1/wallets)",
            ))
        }
    };
    let name = b.action.clone().unwrap_or_default();
    let action = Action::parse(&name).ok_or_else(|| {
        ApiError::invalid_field(
            "action",
            format!("`action` must be one of {}", ACTIONS.join(", ")),
        )
        .with("actions", ACTIONS.to_vec())
    })?;
    tracing::Span::current().record("action", name.as_str());
    if action.is_write() {
        auth.require_write(&format!("the Hyperliquid `{name}` action"))?;
    }
    let found = state
        .pool
        .run(move |c| repo::wallets::find_with_platform(c, &wallet_id).map_err(StoreError::from))
        .await?;
    let wallet = match found {
        Some((w, _)) if w.agent_id == auth.agent.id => w,
        _ => return Err(aibank_wallet::WalletError::NotFound.into()),
    };
    if action.is_write() {
        return Err(not_implemented(&state, action, &b, &wallet).await?);
    }
    let (symbol, mut out) = read(&state, action, &b, &wallet).await?;
    let row = TradingQuery {
        id: new_id("tq"),
        wallet_id: wallet.id.clone(),
        agent_id: wallet.agent_id.clone(),
        venue: "hyperliquid".to_owned(),
        action: name.clone(),
        symbol,
        request_id: Some(request_id.to_string()),
        created_at: state.clock.now_ms(),
    };
    let id = row.id.clone();
    state
        .pool
        .write(move |c| repo::trading::insert(c, &row).map_err(StoreError::from))
        .await?;
    out.insert("action".into(), name.into());
    out.insert("wallet_id".into(), wallet.id.into());
    out.insert("address".into(), wallet.evm_address.into());
    out.insert("transaction_id".into(), id.into());
    Ok(web::Json(Value::Object(out)))
}

/// Hyperliquid knows addresses in lower case.
fn user_of(wallet: &Wallet) -> String {
    wallet.evm_address.to_ascii_lowercase()
}

fn to_value(v: impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string()))
}

/// Runs a read; returns the symbol it was about (to record) and the answer's own fields.
async fn read(
    state: &AppState,
    action: Action,
    b: &TradeRequest,
    wallet: &Wallet,
) -> Result<(Option<String>, Map<String, Value>), ApiError> {
    let hl = &state.hyperliquid;
    let user = user_of(wallet);
    let mut out = Map::new();
    let mut symbol = None;
    match action {
        Action::Status => {
            let s = hl.clearinghouse_state(&user).await?;
            out.insert("margin_summary".into(), to_value(&s.margin_summary)?);
            out.insert(
                "cross_margin_summary".into(),
                to_value(&s.cross_margin_summary)?,
            );
            out.insert(
                "cross_maintenance_margin_used".into(),
                to_value(&s.cross_maintenance_margin_used)?,
            );
            out.insert("withdrawable".into(), s.withdrawable.clone().into());
            out.insert("time".into(), s.time.into());
            out.insert("positions".into(), to_value(s.positions())?);
        }
        Action::Positions => {
            let s = hl.clearinghouse_state(&user).await?;
            out.insert("positions".into(), to_value(s.positions())?);
        }
        Action::Orders => {
            out.insert("orders".into(), to_value(hl.open_orders(&user).await?)?);
        }
        Action::Fills => {
            out.insert("fills".into(), to_value(hl.user_fills(&user).await?)?);
        }
        Action::Markets => {
            out.insert("markets".into(), to_value(hl.markets().await?)?);
        }
        Action::Funding => {
            let now = state.clock.now_ms();
            let start = match b.start_time {
                None => now - DEFAULT_FUNDING_WINDOW_MS,
                Some(t) if (0..=now).contains(&t) => t,
                Some(_) => {
                    return Err(ApiError::invalid_field(
                        "startTime",
                        "`startTime` must be epoch milliseconds, not in the future",
                    ))
                }
            };
            out.insert("start_time".into(), start.into());
            out.insert(
                "funding".into(),
                to_value(hl.user_funding(&user, start).await?)?,
            );
        }
        Action::Ticker => {
            let wanted = b.symbol.as_deref().map(parse_symbol).transpose()?;
            let mids = hl.all_mids().await?;
            match wanted {
                Some(s) => {
                    let mid = mids.get(&s).ok_or_else(|| unknown_symbol(&s))?;
                    out.insert("mid_price".into(), mid.clone().into());
                    out.insert("symbol".into(), s.clone().into());
                    symbol = Some(s);
                }
                None => {
                    out.insert("mids".into(), to_value(mids)?);
                }
            }
        }
        Action::Orderbook => {
            let s = parse_symbol(b.symbol.as_deref().unwrap_or("ETH"))?;
            let book = hl.l2_book(&s).await?.ok_or_else(|| unknown_symbol(&s))?;
            out.insert("symbol".into(), book.symbol.into());
            out.insert("time".into(), book.time.into());
            out.insert("bids".into(), to_value(book.bids)?);
            out.insert("asks".into(), to_value(book.asks)?);
            symbol = Some(s);
        }
        _ => return Err(ApiError::internal("a write action reached the reads")),
    }
    Ok((symbol, out))
}

fn unknown_symbol(symbol: &str) -> ApiError {
    ApiError::invalid_field("symbol", format!("Hyperliquid has no market `{symbol}`"))
}

/// A market name as Hyperliquid writes it (`BTC`, `kPEPE`): letters and digits only.
fn parse_symbol(s: &str) -> Result<String, ApiError> {
    if (1..=20).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(s.to_owned())
    } else {
        Err(ApiError::invalid_field(
            "symbol",
            "`symbol` must be a market name of 1 to 20 letters and digits, such as ETH",
        ))
    }
}

fn required_symbol(b: &TradeRequest) -> Result<String, ApiError> {
    match b.symbol.as_deref() {
        Some(s) => parse_symbol(s),
        None => Err(ApiError::invalid_field(
            "symbol",
            "`symbol` is required, such as ETH",
        )),
    }
}

/// A positive decimal string such as `"0.5"`, normalised as Hyperliquid's wire wants it
/// (no exponent, no trailing zeros). Numbers are refused: JSON numbers are floats to most
/// clients, and an amount must arrive exactly as written.
fn positive_decimal(field: &str, v: Option<&Value>) -> Result<Decimal, ApiError> {
    let bad = || {
        ApiError::invalid_field(
            field,
            format!("`{field}` must be a decimal string greater than 0, such as \"0.5\""),
        )
    };
    let Some(v) = v else {
        return Err(ApiError::invalid_field(
            field,
            format!("`{field}` is required: a decimal string such as \"0.5\""),
        ));
    };
    let Value::String(s) = v else {
        return Err(bad());
    };
    let shape = s.len() <= 40
        && s.split('.').count() <= 2
        && s.split('.').all(|part| !part.is_empty())
        && s.chars().all(|c| c.is_ascii_digit() || c == '.');
    if !shape {
        return Err(bad());
    }
    let d = Decimal::from_str(s).map_err(|_| bad())?.normalize();
    if d <= Decimal::ZERO {
        return Err(bad());
    }
    Ok(d)
}

/// A whole number given as a JSON integer or a string of digits.
fn whole_number(field: &str, v: Option<&Value>, what: &str) -> Result<u64, ApiError> {
    let bad = || ApiError::invalid_field(field, format!("`{field}` must be {what}"));
    match v {
        None => Err(ApiError::invalid_field(
            field,
            format!("`{field}` is required: {what}"),
        )),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(bad),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 20 => {
            s.parse::<u64>().map_err(|_| bad())
        }
        Some(_) => Err(bad()),
    }
}

fn parse_destination(b: &TradeRequest) -> Result<String, ApiError> {
    let text = b.destination.as_deref().unwrap_or_default().trim();
    let address: aibank_wallet::Address = text.parse().map_err(|_| {
        ApiError::invalid_field(
            "destination",
            "`destination` must be an EVM address: 0x followed by 40 hex digits",
        )
    })?;
    Ok(format!("{address:#x}"))
}

/// The perpetual `symbol` names, with its asset id and size decimals.
async fn perp(state: &AppState, symbol: &str) -> Result<(usize, u32, u32, bool), ApiError> {
    let meta = state.hyperliquid.meta().await?;
    let (index, asset) = meta
        .asset(symbol)
        .filter(|(_, a)| !a.is_delisted)
        .ok_or_else(|| unknown_symbol(symbol))?;
    Ok((
        index,
        asset.size_decimals,
        asset.max_leverage,
        asset.only_isolated,
    ))
}

/// Validates a write action and builds the exchange action that would be signed; the
/// answer is always an error: 400 for bad input, else 501 carrying that action.
async fn not_implemented(
    state: &AppState,
    action: Action,
    b: &TradeRequest,
    wallet: &Wallet,
) -> Result<ApiError, ApiError> {
    let now = state.clock.now_ms();
    let (chain, signature_chain) = state.hyperliquid.chain();
    let exchange = match action {
        Action::Order => order_action(state, b).await?,
        Action::Cancel => {
            let symbol = required_symbol(b)?;
            let oid = whole_number(
                "orderId",
                b.order_id.as_ref(),
                "the order's id (an integer, as `orders` lists it)",
            )?;
            let (asset, ..) = perp(state, &symbol).await?;
            json!({ "type": "cancel", "cancels": [{ "a": asset, "o": oid }] })
        }
        Action::CancelAll => {
            let symbol = b.symbol.as_deref().map(parse_symbol).transpose()?;
            let hl = &state.hyperliquid;
            let user = user_of(wallet);
            let (meta, orders) = tokio::try_join!(hl.meta(), hl.open_orders(&user))?;
            if let Some(s) = &symbol {
                meta.asset(s).ok_or_else(|| unknown_symbol(s))?;
            }
            // Only perpetual orders have an asset id in `meta`; spot ones are left alone.
            let cancels: Vec<Value> = orders
                .iter()
                .filter(|o| symbol.as_ref().is_none_or(|s| *s == o.coin))
                .filter_map(|o| {
                    let (asset, _) = meta.asset(&o.coin)?;
                    Some(json!({ "a": asset, "o": o.order_id }))
                })
                .collect();
            json!({ "type": "cancel", "cancels": cancels })
        }
        Action::SetLeverage => leverage_action(state, b).await?,
        Action::Withdraw => {
            let amount = positive_decimal("amount", b.amount.as_ref())?;
            let destination = parse_destination(b)?;
            json!({
                "type": "withdraw3",
                "hyperliquidChain": chain,
                "signatureChainId": signature_chain,
                "destination": destination,
                "amount": amount.to_string(),
                "time": now,
            })
        }
        Action::Transfer => transfer_action(b, chain, signature_chain, now)?,
        _ => return Err(ApiError::internal("a read action reached the writes")),
    };
    Ok(ApiError::new(
        ErrorCode::NotImplemented,
        "Hyperliquid write actions are not implemented yet: nothing was signed or sent",
    )
    .with("action", exchange)
    .with("wallet_id", wallet.id.clone())
    .with("address", wallet.evm_address.clone()))
}

/// `set_leverage {symbol, leverage, cross?}`: `updateLeverage`.
async fn leverage_action(state: &AppState, b: &TradeRequest) -> Result<Value, ApiError> {
    let symbol = required_symbol(b)?;
    let what = format!("a whole number from 1 to {MAX_LEVERAGE}");
    let leverage = whole_number("leverage", b.leverage.as_ref(), &what)?;
    if !(1..=MAX_LEVERAGE).contains(&leverage) {
        return Err(ApiError::invalid_field(
            "leverage",
            format!("`leverage` must be {what}"),
        ));
    }
    let cross = b.cross.unwrap_or(true);
    let (asset, _, max, only_isolated) = perp(state, &symbol).await?;
    if leverage > u64::from(max) {
        return Err(ApiError::invalid_field(
            "leverage",
            format!("{symbol} allows at most {max}x leverage"),
        ));
    }
    if cross && only_isolated {
        return Err(ApiError::invalid_field(
            "cross",
            format!("{symbol} is isolated-margin only: set `cross` to false"),
        ));
    }
    Ok(json!({ "type": "updateLeverage", "asset": asset, "isCross": cross, "leverage": leverage }))
}

/// `transfer {amount, toPerp}` moves USDC between the account's spot and perp balances
/// (`usdClassTransfer`); `transfer {amount, destination}` sends it to another Hyperliquid
/// account (`usdSend`).
fn transfer_action(
    b: &TradeRequest,
    chain: &str,
    signature_chain: &str,
    now: i64,
) -> Result<Value, ApiError> {
    let amount = positive_decimal("amount", b.amount.as_ref())?;
    match (b.to_perp, b.destination.is_some()) {
        (Some(to_perp), false) => Ok(json!({
            "type": "usdClassTransfer",
            "hyperliquidChain": chain,
            "signatureChainId": signature_chain,
            "amount": amount.to_string(),
            "toPerp": to_perp,
            "nonce": now,
        })),
        (None, true) => Ok(json!({
            "type": "usdSend",
            "hyperliquidChain": chain,
            "signatureChainId": signature_chain,
            "destination": parse_destination(b)?,
            "amount": amount.to_string(),
            "time": now,
        })),
        _ => Err(ApiError::invalid_field(
            "toPerp",
            "Give either `toPerp` (true: spot to perp, false: perp to spot) or \
             `destination` (USDC to another Hyperliquid account), not both",
        )),
    }
}

/// `order {symbol, side, amount (or size), price, type?, tif?, reduceOnly?}`. Hyperliquid
/// has no price-less order: a market order is an immediate-or-cancel limit order at the
/// worst price accepted, so `price` is required for both types.
async fn order_action(state: &AppState, b: &TradeRequest) -> Result<Value, ApiError> {
    let symbol = required_symbol(b)?;
    let is_buy = match b.side.as_deref() {
        Some("buy") => true,
        Some("sell") => false,
        _ => {
            return Err(ApiError::invalid_field(
                "side",
                "`side` must be buy or sell",
            ))
        }
    };
    let (size_field, size) = match (&b.amount, &b.size) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "size",
                "Give the order's size as `amount` or `size`, not both",
            ))
        }
        (None, Some(s)) => ("size", Some(s)),
        (a, None) => ("amount", a.as_ref()),
    };
    let size = positive_decimal(size_field, size)?;
    let price = positive_decimal("price", b.price.as_ref())?;
    let tif = match (b.order_type.as_deref().unwrap_or("limit"), b.tif.as_deref()) {
        ("market", None) => "Ioc",
        ("market", Some(t)) if t.eq_ignore_ascii_case("ioc") => "Ioc",
        ("market", Some(_)) => {
            return Err(ApiError::invalid_field(
                "tif",
                "A market order is immediate-or-cancel: leave out `tif` or use Ioc",
            ))
        }
        ("limit", None) => "Gtc",
        ("limit", Some(t)) => match t.to_ascii_lowercase().as_str() {
            "gtc" => "Gtc",
            "ioc" => "Ioc",
            "alo" => "Alo",
            _ => {
                return Err(ApiError::invalid_field(
                    "tif",
                    "`tif` must be Gtc, Ioc or Alo",
                ))
            }
        },
        _ => {
            return Err(ApiError::invalid_field(
                "type",
                "`type` must be limit or market",
            ))
        }
    };
    let (asset, size_decimals, ..) = perp(state, &symbol).await?;
    if size.scale() > size_decimals {
        return Err(ApiError::invalid_field(
            size_field,
            format!("{symbol} sizes have at most {size_decimals} decimals"),
        ));
    }
    Ok(json!({
        "type": "order",
        "orders": [{
            "a": asset,
            "b": is_buy,
            "p": price.to_string(),
            "s": size.to_string(),
            "r": b.reduce_only.unwrap_or(false),
            "t": { "limit": { "tif": tif } },
        }],
        "grouping": "na",
    }))
}
