//! A mock of Hyperliquid's info API: a real HTTP server on `127.0.0.1` answering
//! `POST /info` by the body's `type` — `clearinghouseState`, `openOrders`, `userFills`,
//! `userFunding`, `meta`, `metaAndAssetCtxs`, `allMids`, `l2Book` — in the wire shapes
//! of <https://hyperliquid.gitbook.io/hyperliquid-docs/for-developers/api/info-endpoint>
//! and its `perpetuals` page: prices and sizes are decimal strings, times epoch
//! milliseconds, sides `B` (bid) and `A` (ask), and an unknown `coin` has a `null` book.
//!
//! A request Hyperliquid would refuse (no or unknown `type`, a `user` that is not a
//! 42-character 0x address, `userFunding` without `startTime`, `l2Book` without `coin`)
//! gets its `422` with a plain-text reason, so a wrong request fails a test loudly. Every
//! request is recorded; [`MockHyperliquid::set_mode`] makes all answers fail or stall.

// Ids and epoch-millisecond times are written as Hyperliquid's answers carry them.
#![allow(clippy::unreadable_literal)]

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::local_server::LocalServer;
use actix_web::web::{self, Bytes};
use actix_web::{HttpRequest, HttpResponse};
use serde_json::{json, Value};

/// How the mock answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The real shapes (default).
    Ok,
    /// `500` with a plain-text body, as an overloaded node answers.
    Fail,
    /// Nothing for 60 seconds, then the answer.
    Stall,
    /// `200` with a body that is not JSON.
    Garbage,
}

impl Mode {
    fn code(self) -> u8 {
        match self {
            Mode::Ok => 0,
            Mode::Fail => 1,
            Mode::Stall => 2,
            Mode::Garbage => 3,
        }
    }

    fn of(code: u8) -> Mode {
        match code {
            1 => Mode::Fail,
            2 => Mode::Stall,
            3 => Mode::Garbage,
            _ => Mode::Ok,
        }
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<Value>>,
    mode: AtomicU8,
}

/// The running mock; it stops when dropped.
pub struct MockHyperliquid {
    /// `http://127.0.0.1:PORT`, for `HYPERLIQUID_BASE_URL`.
    pub base: String,
    shared: Arc<Shared>,
    _server: LocalServer,
}

impl MockHyperliquid {
    /// Binds `127.0.0.1:0` and serves on the current Tokio runtime.
    #[allow(clippy::unused_async)] // async so that it is only called inside a runtime.
    pub async fn start() -> MockHyperliquid {
        let shared = Arc::new(Shared::default());
        let server = LocalServer::start(shared.clone(), 1, |cfg| {
            cfg.route("/info", web::post().to(info));
        });
        MockHyperliquid {
            base: server.base.clone(),
            shared,
            _server: server,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode.code(), Ordering::SeqCst);
    }

    /// The JSON body of every `POST /info` received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn last_request(&self) -> Option<Value> {
        self.requests().pop()
    }
}

fn refuse(reason: &str) -> HttpResponse {
    HttpResponse::UnprocessableEntity()
        .content_type("text/plain")
        .body(format!(
            "Failed to deserialize the JSON body into the target type: {reason}"
        ))
}

fn is_address(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 42 && s.starts_with("0x") && s[2..].chars().all(|c| c.is_ascii_hexdigit())
    })
}

async fn info(state: web::Data<Shared>, _req: HttpRequest, body: Bytes) -> HttpResponse {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return refuse("body is not JSON");
    };
    state
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(request.clone());
    match Mode::of(state.mode.load(Ordering::SeqCst)) {
        Mode::Ok => {}
        Mode::Fail => {
            return HttpResponse::InternalServerError()
                .content_type("text/plain")
                .body("internal error at 10.0.3.7")
        }
        Mode::Stall => tokio::time::sleep(Duration::from_secs(60)).await,
        Mode::Garbage => {
            return HttpResponse::Ok()
                .content_type("application/json")
                .body("<html>maintenance</html>")
        }
    }
    let kind = request["type"].as_str().unwrap_or_default();
    let needs_user = matches!(
        kind,
        "clearinghouseState" | "openOrders" | "userFills" | "userFunding"
    );
    if needs_user && !is_address(&request["user"]) {
        return refuse("user: expected a 42-character 0x address");
    }
    let answer = match kind {
        "clearinghouseState" => clearinghouse_state(),
        "openOrders" => open_orders(),
        "userFills" => user_fills(),
        "userFunding" => {
            let Some(start) = request["startTime"].as_i64() else {
                return refuse("missing field `startTime`");
            };
            user_funding(start)
        }
        "meta" => meta(),
        "metaAndAssetCtxs" => json!([meta(), asset_ctxs()]),
        "allMids" => all_mids(),
        "l2Book" => {
            let Some(coin) = request["coin"].as_str() else {
                return refuse("missing field `coin`");
            };
            l2_book(coin)
        }
        _ => return refuse("unknown variant of `type`"),
    };
    HttpResponse::Ok().json(answer)
}

/// One ETH long of 0.0335 at 20x isolated.
pub fn clearinghouse_state() -> Value {
    json!({
        "assetPositions": [{
            "position": {
                "coin": "ETH",
                "cumFunding": { "allTime": "514.085417", "sinceChange": "0.0", "sinceOpen": "0.0" },
                "entryPx": "2986.3",
                "leverage": { "rawUsd": "-95.059824", "type": "isolated", "value": 20 },
                "liquidationPx": "2866.26936529",
                "marginUsed": "4.967826",
                "maxLeverage": 50,
                "positionValue": "100.02765",
                "returnOnEquity": "-0.0026789",
                "szi": "0.0335",
                "unrealizedPnl": "-0.0134"
            },
            "type": "oneWay"
        }],
        "crossMaintenanceMarginUsed": "0.0",
        "crossMarginSummary": {
            "accountValue": "13104.514502",
            "totalMarginUsed": "0.0",
            "totalNtlPos": "0.0",
            "totalRawUsd": "13104.514502"
        },
        "marginSummary": {
            "accountValue": "13109.482328",
            "totalMarginUsed": "4.967826",
            "totalNtlPos": "100.02765",
            "totalRawUsd": "13009.454678"
        },
        "time": 1708622398623_i64,
        "withdrawable": "13104.514502"
    })
}

/// A BTC bid and an ETH ask.
pub fn open_orders() -> Value {
    json!([
        { "coin": "BTC", "limitPx": "29792.0", "oid": 91490942, "side": "B", "sz": "0.01",
          "timestamp": 1681247412573_i64 },
        { "coin": "ETH", "limitPx": "3100.5", "oid": 91490943, "side": "A", "sz": "0.5",
          "timestamp": 1681247412574_i64 }
    ])
}

pub fn user_fills() -> Value {
    json!([{
        "closedPnl": "0.0",
        "coin": "AVAX",
        "crossed": false,
        "dir": "Open Long",
        "hash": "0xa166e3fa63c25663024b03f2e0da011a00307e4017465df020210d3d432e7cb8",
        "oid": 90542681,
        "px": "18.435",
        "side": "B",
        "startPosition": "26.86",
        "sz": "93.53",
        "time": 1681222254710_i64,
        "fee": "0.01",
        "feeToken": "USDC",
        "builderFee": "0.01",
        "tid": 118906512037719_i64
    }])
}

/// One funding payment, an hour after `start`.
pub fn user_funding(start: i64) -> Value {
    json!([{
        "delta": {
            "coin": "ETH",
            "fundingRate": "0.0000417",
            "szi": "49.1477",
            "type": "funding",
            "usdc": "-3.625312"
        },
        "hash": "0x0000000000000000000000000000000000000000000000000000000000000000",
        "time": start + 3_600_000
    }])
}

/// BTC, ETH and SOL are the first three perpetuals (asset ids 0, 1, 2); `ZK` is
/// isolated-margin only and `OLD` delisted.
pub fn meta() -> Value {
    json!({
        "universe": [
            { "name": "BTC", "szDecimals": 5, "maxLeverage": 50 },
            { "name": "ETH", "szDecimals": 4, "maxLeverage": 50 },
            { "name": "SOL", "szDecimals": 2, "maxLeverage": 20 },
            { "name": "ZK", "szDecimals": 0, "maxLeverage": 5, "onlyIsolated": true },
            { "name": "OLD", "szDecimals": 1, "maxLeverage": 3, "isDelisted": true }
        ]
    })
}

fn asset_ctxs() -> Value {
    let ctx = |mark: &str, mid: Option<&str>, funding: &str| {
        json!({
            "dayNtlVlm": "1169046.29406",
            "funding": funding,
            "impactPxs": [mark, mark],
            "markPx": mark,
            "midPx": mid,
            "openInterest": "688.11",
            "oraclePx": mark,
            "premium": "0.00031774",
            "prevDayPx": "15.322"
        })
    };
    json!([
        ctx("97250.0", Some("97250.5"), "0.0000125"),
        ctx("3000.4", Some("3000.5"), "0.0000093"),
        ctx("145.25", Some("145.255"), "-0.0000021"),
        ctx("0.1501", Some("0.15015"), "0.0000125"),
        ctx("1.0", None, "0.0")
    ])
}

pub fn all_mids() -> Value {
    json!({ "BTC": "97250.5", "ETH": "3000.5", "SOL": "145.255", "ZK": "0.15015" })
}

/// Two levels a side for BTC and ETH; `null` for any other coin, as Hyperliquid answers.
pub fn l2_book(coin: &str) -> Value {
    let (bid, ask) = match coin {
        "BTC" => ("97250.0", "97251.0"),
        "ETH" => ("3000.4", "3000.6"),
        _ => return Value::Null,
    };
    json!({
        "coin": coin,
        "time": 1754450974231_i64,
        "levels": [
            [ { "px": bid, "sz": "1.5", "n": 3 }, { "px": "2999.0", "sz": "10.0", "n": 7 } ],
            [ { "px": ask, "sz": "0.8", "n": 2 }, { "px": "3002.0", "sz": "4.25", "n": 5 } ]
        ]
    })
}
