//! Hyperliquid's public info API (`POST {HYPERLIQUID_BASE_URL}/info`) for the trading API:
//! the one HTTP client of the process, the request each read makes, and the answers
//! reshaped into aibank's snake_case fields. Prices, sizes and amounts stay the decimal
//! strings Hyperliquid sends, never floats. Nothing here signs or sends an exchange action.
//!
//! Wire shapes: <https://hyperliquid.gitbook.io/hyperliquid-docs/for-developers/api/info-endpoint>
//! and its `perpetuals` page.

use std::collections::BTreeMap;
use std::time::Duration;

use aibank_core::{ApiError, ErrorCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::config::HyperliquidSettings;

/// An answer larger than this is refused rather than buffered: the largest real ones
/// (a user's last 2000 fills, every market's context) are well under a megabyte.
const MAX_ANSWER_BYTES: usize = 8 << 20;

pub struct Hyperliquid {
    client: reqwest::Client,
    info_url: String,
    testnet: bool,
}

impl Hyperliquid {
    pub fn new(settings: &HyperliquidSettings) -> Result<Self, reqwest::Error> {
        // Redirects are not followed: the configured host is the one trusted with the
        // wallet's address and the agent's questions.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
            .timeout(settings.timeout)
            .build()?;
        Ok(Hyperliquid {
            client,
            info_url: format!("{}/info", settings.base_url),
            testnet: settings.base_url.contains("testnet"),
        })
    }

    /// `hyperliquidChain` and `signatureChainId` of user-signed actions (withdrawals,
    /// transfers): Arbitrum One for mainnet, Arbitrum Sepolia for testnet, as Hyperliquid's
    /// own SDK signs them.
    pub fn chain(&self) -> (&'static str, &'static str) {
        if self.testnet {
            ("Testnet", "0x66eee")
        } else {
            ("Mainnet", "0xa4b1")
        }
    }

    /// One info request; every failure is Hyperliquid's (502, or 504 on a timeout), with
    /// nothing internal in the message and the cause logged.
    async fn info<T: DeserializeOwned>(&self, request: &Value) -> Result<T, ApiError> {
        let failed = |message: &str| ApiError::new(ErrorCode::UpstreamError, message);
        let sent = self.client.post(&self.info_url).json(request).send().await;
        let mut res = sent.map_err(|e| transport_error(&e))?;
        let status = res.status();
        if !status.is_success() {
            return Err(
                failed(&format!("Hyperliquid answered HTTP {}", status.as_u16()))
                    .with_source(format!("info {} answered {status}", request["type"])),
            );
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| transport_error(&e))? {
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(failed("Hyperliquid's answer is too large"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| {
            failed("Hyperliquid's answer was not understood")
                .with_source(format!("info {}: {e}", request["type"]))
        })
    }

    pub async fn clearinghouse_state(&self, user: &str) -> Result<ClearinghouseState, ApiError> {
        self.info(&json!({ "type": "clearinghouseState", "user": user }))
            .await
    }

    pub async fn open_orders(&self, user: &str) -> Result<Vec<OpenOrder>, ApiError> {
        self.info(&json!({ "type": "openOrders", "user": user }))
            .await
    }

    pub async fn user_fills(&self, user: &str) -> Result<Vec<Fill>, ApiError> {
        self.info(&json!({ "type": "userFills", "user": user }))
            .await
    }

    pub async fn user_funding(
        &self,
        user: &str,
        start_time: i64,
    ) -> Result<Vec<FundingPayment>, ApiError> {
        let raw: Vec<RawFunding> = self
            .info(&json!({ "type": "userFunding", "user": user, "startTime": start_time }))
            .await?;
        Ok(raw.into_iter().map(FundingPayment::from).collect())
    }

    pub async fn meta(&self) -> Result<Meta, ApiError> {
        self.info(&json!({ "type": "meta" })).await
    }

    /// Every perpetual market with its live context (prices, funding, open interest).
    pub async fn markets(&self) -> Result<Vec<Market>, ApiError> {
        let (meta, ctxs): (Meta, Vec<AssetCtx>) =
            self.info(&json!({ "type": "metaAndAssetCtxs" })).await?;
        if meta.universe.len() != ctxs.len() {
            return Err(ApiError::new(
                ErrorCode::UpstreamError,
                "Hyperliquid's answer was not understood",
            )
            .with_source("metaAndAssetCtxs: universe and contexts differ in length"));
        }
        Ok(meta
            .universe
            .into_iter()
            .zip(ctxs)
            .map(|(asset, ctx)| Market { asset, ctx })
            .collect())
    }

    /// Every market's mid price by symbol.
    pub async fn all_mids(&self) -> Result<BTreeMap<String, String>, ApiError> {
        self.info(&json!({ "type": "allMids" })).await
    }

    /// `None` when Hyperliquid has no such market (it answers `null`).
    pub async fn l2_book(&self, coin: &str) -> Result<Option<Book>, ApiError> {
        let raw: Option<RawBook> = self
            .info(&json!({ "type": "l2Book", "coin": coin }))
            .await?;
        raw.map(Book::try_from).transpose()
    }
}

fn transport_error(e: &reqwest::Error) -> ApiError {
    let source = format!("Hyperliquid info API: {e}");
    if e.is_timeout() {
        ApiError::new(
            ErrorCode::UpstreamTimeout,
            "Hyperliquid did not answer in time",
        )
        .with_source(source)
    } else {
        ApiError::new(ErrorCode::UpstreamError, "Hyperliquid could not be reached")
            .with_source(source)
    }
}

/// Hyperliquid writes `B` (bid, buy) and `A` (ask, sell).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Side {
    #[serde(rename(deserialize = "B", serialize = "buy"))]
    Buy,
    #[serde(rename(deserialize = "A", serialize = "sell"))]
    Sell,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct MarginSummary {
    #[serde(rename(deserialize = "accountValue"))]
    pub account_value: String,
    #[serde(rename(deserialize = "totalNtlPos"))]
    pub total_notional_position: String,
    #[serde(rename(deserialize = "totalRawUsd"))]
    pub total_raw_usd: String,
    #[serde(rename(deserialize = "totalMarginUsed"))]
    pub total_margin_used: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct Leverage {
    /// `cross` or `isolated`.
    #[serde(rename = "type")]
    pub kind: String,
    pub value: u32,
    #[serde(
        rename(deserialize = "rawUsd"),
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub raw_usd: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct CumFunding {
    #[serde(rename(deserialize = "allTime"))]
    pub all_time: String,
    #[serde(rename(deserialize = "sinceOpen"))]
    pub since_open: String,
    #[serde(rename(deserialize = "sinceChange"))]
    pub since_change: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct Position {
    pub coin: String,
    /// Signed: negative is short.
    #[serde(rename(deserialize = "szi"))]
    pub size: String,
    #[serde(rename(deserialize = "entryPx"), default)]
    pub entry_price: Option<String>,
    #[serde(rename(deserialize = "positionValue"))]
    pub position_value: String,
    #[serde(rename(deserialize = "unrealizedPnl"))]
    pub unrealized_pnl: String,
    #[serde(rename(deserialize = "returnOnEquity"))]
    pub return_on_equity: String,
    #[serde(rename(deserialize = "liquidationPx"), default)]
    pub liquidation_price: Option<String>,
    #[serde(rename(deserialize = "marginUsed"))]
    pub margin_used: String,
    pub leverage: Leverage,
    #[serde(rename(deserialize = "maxLeverage"))]
    pub max_leverage: u32,
    #[serde(rename(deserialize = "cumFunding"), default)]
    pub cum_funding: Option<CumFunding>,
}

#[derive(Debug, Deserialize)]
pub struct AssetPosition {
    pub position: Position,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClearinghouseState {
    pub margin_summary: MarginSummary,
    pub cross_margin_summary: MarginSummary,
    #[serde(default)]
    pub cross_maintenance_margin_used: Option<String>,
    pub withdrawable: String,
    pub asset_positions: Vec<AssetPosition>,
    pub time: i64,
}

impl ClearinghouseState {
    pub fn positions(self) -> Vec<Position> {
        self.asset_positions
            .into_iter()
            .map(|p| p.position)
            .collect()
    }
}

#[derive(Debug, Deserialize, Serialize)]
pub struct OpenOrder {
    pub coin: String,
    pub side: Side,
    #[serde(rename(deserialize = "limitPx"))]
    pub limit_price: String,
    /// What is left to fill.
    #[serde(rename(deserialize = "sz"))]
    pub size: String,
    #[serde(
        rename(deserialize = "origSz"),
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub original_size: Option<String>,
    #[serde(rename(deserialize = "oid"))]
    pub order_id: u64,
    /// Epoch milliseconds.
    pub timestamp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloid: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct Fill {
    pub coin: String,
    #[serde(rename(deserialize = "px"))]
    pub price: String,
    #[serde(rename(deserialize = "sz"))]
    pub size: String,
    pub side: Side,
    /// Epoch milliseconds.
    pub time: i64,
    #[serde(rename(deserialize = "startPosition"))]
    pub start_position: String,
    /// `Open Long`, `Close Short`, …
    #[serde(rename(deserialize = "dir"))]
    pub direction: String,
    #[serde(rename(deserialize = "closedPnl"))]
    pub closed_pnl: String,
    pub hash: String,
    #[serde(rename(deserialize = "oid"))]
    pub order_id: u64,
    pub crossed: bool,
    pub fee: String,
    #[serde(rename(deserialize = "feeToken"), default)]
    pub fee_token: Option<String>,
    #[serde(rename(deserialize = "tid"))]
    pub trade_id: u64,
}

#[derive(Debug, Deserialize)]
struct RawFunding {
    time: i64,
    hash: String,
    delta: RawFundingDelta,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFundingDelta {
    coin: String,
    usdc: String,
    szi: String,
    funding_rate: String,
}

/// One funding payment of the wallet's positions.
#[derive(Debug, Serialize)]
pub struct FundingPayment {
    pub time: i64,
    pub coin: String,
    /// Received (positive) or paid (negative), in USDC.
    pub usdc: String,
    /// The position's signed size when it was paid.
    pub size: String,
    pub funding_rate: String,
    pub hash: String,
}

impl From<RawFunding> for FundingPayment {
    fn from(f: RawFunding) -> Self {
        FundingPayment {
            time: f.time,
            coin: f.delta.coin,
            usdc: f.delta.usdc,
            size: f.delta.szi,
            funding_rate: f.delta.funding_rate,
            hash: f.hash,
        }
    }
}

#[derive(Debug, Deserialize, Serialize)]
pub struct Asset {
    pub name: String,
    #[serde(rename(deserialize = "szDecimals"))]
    pub size_decimals: u32,
    #[serde(rename(deserialize = "maxLeverage"))]
    pub max_leverage: u32,
    #[serde(rename(deserialize = "onlyIsolated"), default)]
    pub only_isolated: bool,
    #[serde(rename(deserialize = "isDelisted"), default)]
    pub is_delisted: bool,
}

#[derive(Debug, Deserialize)]
pub struct Meta {
    pub universe: Vec<Asset>,
}

impl Meta {
    /// The asset id of a perpetual (its index in `universe`) with its metadata.
    pub fn asset(&self, symbol: &str) -> Option<(usize, &Asset)> {
        self.universe
            .iter()
            .enumerate()
            .find(|(_, a)| a.name == symbol)
    }
}

#[derive(Debug, Deserialize, Serialize)]
pub struct AssetCtx {
    #[serde(rename(deserialize = "markPx"))]
    pub mark_price: String,
    #[serde(rename(deserialize = "midPx"), default)]
    pub mid_price: Option<String>,
    #[serde(rename(deserialize = "oraclePx"))]
    pub oracle_price: String,
    /// The current hourly funding rate.
    #[serde(rename(deserialize = "funding"))]
    pub funding_rate: String,
    #[serde(rename(deserialize = "openInterest"))]
    pub open_interest: String,
    #[serde(rename(deserialize = "dayNtlVlm"))]
    pub day_notional_volume: String,
    #[serde(rename(deserialize = "prevDayPx"))]
    pub prev_day_price: String,
    #[serde(default)]
    pub premium: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Market {
    #[serde(flatten)]
    pub asset: Asset,
    #[serde(flatten)]
    pub ctx: AssetCtx,
}

#[derive(Debug, Deserialize)]
struct RawBook {
    coin: String,
    time: i64,
    levels: Vec<Vec<RawLevel>>,
}

#[derive(Debug, Deserialize)]
struct RawLevel {
    px: String,
    sz: String,
    n: u32,
}

#[derive(Debug, Serialize)]
pub struct Level {
    pub price: String,
    pub size: String,
    /// How many orders rest at this price.
    pub orders: u32,
}

/// An L2 book, best prices first on each side.
#[derive(Debug, Serialize)]
pub struct Book {
    pub symbol: String,
    pub time: i64,
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
}

impl TryFrom<RawBook> for Book {
    type Error = ApiError;

    fn try_from(raw: RawBook) -> Result<Self, ApiError> {
        let levels = |side: Vec<RawLevel>| {
            side.into_iter()
                .map(|l| Level {
                    price: l.px,
                    size: l.sz,
                    orders: l.n,
                })
                .collect()
        };
        let mut sides = raw.levels.into_iter();
        match (sides.next(), sides.next(), sides.next()) {
            (Some(bids), Some(asks), None) => Ok(Book {
                symbol: raw.coin,
                time: raw.time,
                bids: levels(bids),
                asks: levels(asks),
            }),
            _ => Err(ApiError::new(
                ErrorCode::UpstreamError,
                "Hyperliquid's answer was not understood",
            )
            .with_source("l2Book: levels is not [bids, asks]")),
        }
    }
}
