//! The trading API, `POST /v1/trading/hyperliquid`, against a mock of Hyperliquid's info
//! API: every read action (what Hyperliquid was asked, what the agent is answered, the
//! `trading_query` it leaves in the wallet's transactions), every refusal, Hyperliquid
//! failing, and every write action answered `501` with the exchange action it would sign.

use std::sync::Arc;
use std::time::Duration;

use crate::support::mock_hyperliquid::{self, MockHyperliquid, Mode};
use crate::support::Agent;
use crate::support::{assert_books_balance, spawn_app_with, spawn_app_with_clock, Resp, TestApp};
use aibank_core::ManualClock;
use aibank_store::models::WalletTransfer;
use serde_json::{json, Value};

const PATH: &str = "/v1/trading/hyperliquid";
const T0: i64 = 1_790_000_000_000;

async fn trade(app: &TestApp, key: &str, body: Value) -> Resp {
    app.post(PATH, body, &[("X-API-Key", key)]).await
}

async fn transactions(app: &TestApp, key: &str, wallet: &str, query: &str) -> Resp {
    let r = app
        .get(
            &format!("/v1/wallets/{wallet}/transactions{query}"),
            &[("X-API-Key", key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    r
}

async fn app_with(hl: &MockHyperliquid, clock: &Arc<ManualClock>) -> TestApp {
    let base = hl.base.clone();
    spawn_app_with_clock(clock.clone(), move |c| c.hyperliquid.base_url = base).await
}

#[tokio::test]
async fn every_read_asks_hyperliquid_for_the_wallet_and_is_recorded_as_a_trading_query() {
    let hl = MockHyperliquid::start().await;
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_with(&hl, &clock).await;
    let Agent {
        id: agent_id,
        key,
        wallet,
        ethereum: address,
        ..
    } = app.agent().await;
    let user = address.to_ascii_lowercase();
    assert_ne!(user, address, "the wallet's address is checksummed");

    // Each read: the body sent, the info request Hyperliquid must get, and checks of the
    // answer's own fields.
    let mut ids = Vec::new();
    let mut read = async |body: Value, asked: Value| -> Value {
        clock.advance(Duration::from_secs(1));
        let mut body = body;
        body["walletId"] = wallet.clone().into();
        let action = body["action"].clone();
        let r = trade(&app, &key, body).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(
            hl.last_request().unwrap(),
            asked,
            "what Hyperliquid was asked"
        );
        assert_eq!(r.body["action"], action);
        assert_eq!(r.body["wallet_id"], wallet.as_str());
        assert_eq!(r.body["address"], address.as_str());
        let id = r.body["transaction_id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("tq_"), "{id}");
        ids.push((id, action, r.body["symbol"].clone()));
        r.body
    };

    let status = read(
        json!({"action": "status"}),
        json!({"type": "clearinghouseState", "user": user}),
    )
    .await;
    assert_eq!(
        status["margin_summary"],
        json!({"account_value": "13109.482328", "total_notional_position": "100.02765",
               "total_raw_usd": "13009.454678", "total_margin_used": "4.967826"})
    );
    assert_eq!(
        status["cross_margin_summary"]["account_value"],
        "13104.514502"
    );
    assert_eq!(status["cross_maintenance_margin_used"], "0.0");
    assert_eq!(status["withdrawable"], "13104.514502");
    assert_eq!(status["time"], 1708622398623_i64);
    assert_eq!(status["positions"][0]["coin"], "ETH");

    let positions = read(
        json!({"action": "positions"}),
        json!({"type": "clearinghouseState", "user": user}),
    )
    .await;
    assert_eq!(
        positions["positions"],
        json!([{
            "coin": "ETH", "size": "0.0335", "entry_price": "2986.3",
            "position_value": "100.02765", "unrealized_pnl": "-0.0134",
            "return_on_equity": "-0.0026789", "liquidation_price": "2866.26936529",
            "margin_used": "4.967826",
            "leverage": {"type": "isolated", "value": 20, "raw_usd": "-95.059824"},
            "max_leverage": 50,
            "cum_funding": {"all_time": "514.085417", "since_open": "0.0", "since_change": "0.0"}
        }])
    );

    let orders = read(
        json!({"action": "orders"}),
        json!({"type": "openOrders", "user": user}),
    )
    .await;
    assert_eq!(
        orders["orders"],
        json!([
            {"coin": "BTC", "side": "buy", "limit_price": "29792.0", "size": "0.01",
             "order_id": 91490942, "timestamp": 1681247412573_i64},
            {"coin": "ETH", "side": "sell", "limit_price": "3100.5", "size": "0.5",
             "order_id": 91490943, "timestamp": 1681247412574_i64}
        ])
    );

    let fills = read(
        json!({"action": "fills"}),
        json!({"type": "userFills", "user": user}),
    )
    .await;
    assert_eq!(
        fills["fills"],
        json!([{
            "coin": "AVAX", "price": "18.435", "size": "93.53", "side": "buy",
            "time": 1681222254710_i64, "start_position": "26.86", "direction": "Open Long",
            "closed_pnl": "0.0",
            "hash": "0xa166e3fa63c25663024b03f2e0da011a00307e4017465df020210d3d432e7cb8",
            "order_id": 90542681, "crossed": false, "fee": "0.01", "fee_token": "USDC",
            "trade_id": 118906512037719_i64
        }])
    );

    let markets = read(
        json!({"action": "markets"}),
        json!({"type": "metaAndAssetCtxs"}),
    )
    .await;
    let markets = markets["markets"].as_array().unwrap();
    assert_eq!(markets.len(), 5);
    assert_eq!(
        markets[1],
        json!({
            "name": "ETH", "size_decimals": 4, "max_leverage": 50, "only_isolated": false,
            "is_delisted": false, "mark_price": "3000.4", "mid_price": "3000.5",
            "oracle_price": "3000.4", "funding_rate": "0.0000093", "open_interest": "688.11",
            "day_notional_volume": "1169046.29406", "prev_day_price": "15.322",
            "premium": "0.00031774"
        })
    );
    assert_eq!(markets[4]["name"], "OLD");
    assert_eq!(markets[4]["is_delisted"], true);
    assert_eq!(markets[4]["mid_price"], Value::Null);

    // Funding looks back a week unless told where to start.
    let now = T0 + 6_000;
    let funding = read(
        json!({"action": "funding"}),
        json!({"type": "userFunding", "user": user, "startTime": now - 7 * 86_400_000}),
    )
    .await;
    assert_eq!(funding["start_time"], now - 7 * 86_400_000);
    let start = T0 - 3_600_000;
    let funding = read(
        json!({"action": "funding", "startTime": start}),
        json!({"type": "userFunding", "user": user, "startTime": start}),
    )
    .await;
    assert_eq!(
        funding["funding"],
        json!([{
            "time": start + 3_600_000, "coin": "ETH", "usdc": "-3.625312", "size": "49.1477",
            "funding_rate": "0.0000417",
            "hash": "0x0000000000000000000000000000000000000000000000000000000000000000"
        }])
    );
    assert_eq!(funding["start_time"], start);

    // The ticker: one symbol's mid, or every mid.
    let ticker = read(
        json!({"action": "ticker", "symbol": "ETH"}),
        json!({"type": "allMids"}),
    )
    .await;
    assert_eq!(ticker["symbol"], "ETH");
    assert_eq!(ticker["mid_price"], "3000.5");
    assert!(ticker.get("mids").is_none());
    let all = read(json!({"action": "ticker"}), json!({"type": "allMids"})).await;
    assert_eq!(all["mids"], mock_hyperliquid::all_mids());
    assert!(all.get("mid_price").is_none());

    // The order book: ETH unless a symbol is given.
    let book = read(
        json!({"action": "orderbook"}),
        json!({"type": "l2Book", "coin": "ETH"}),
    )
    .await;
    assert_eq!(book["symbol"], "ETH");
    assert_eq!(book["time"], 1754450974231_i64);
    assert_eq!(
        book["bids"],
        json!([{"price": "3000.4", "size": "1.5", "orders": 3},
               {"price": "2999.0", "size": "10.0", "orders": 7}])
    );
    assert_eq!(
        book["asks"][0],
        json!({"price": "3000.6", "size": "0.8", "orders": 2})
    );
    let btc = read(
        json!({"action": "orderbook", "symbol": "BTC"}),
        json!({"type": "l2Book", "coin": "BTC"}),
    )
    .await;
    assert_eq!(btc["symbol"], "BTC");
    assert_eq!(btc["bids"][0]["price"], "97250.0");
    assert_eq!(hl.requests().len(), 11, "one info request per read");

    // Every read is in the wallet's transactions, newest first, with its type. A confirmed
    // transfer made between the reads is listed in its place among them.
    let pool = app.pool.clone();
    let (wallet_id, from) = (wallet.clone(), address.clone());
    tokio::task::spawn_blocking(move || {
        use diesel::prelude::*;
        let mut c = pool.get().unwrap();
        diesel::insert_into(aibank_store::schema::wallet_transfers::table)
            .values(WalletTransfer {
                id: "wtx_between".into(),
                wallet_id,
                agent_id,
                chain: "base-sepolia".into(),
                from_address: from,
                to_address: "0x000000000000000000000000000000000000dead".into(),
                currency: "USDC".into(),
                amount: "1".into(),
                amount_base: "1000000".into(),
                usd_micros: 1_000_000,
                nonce: Some(0),
                tx_hash: Some(format!("0x{}", "ab".repeat(32))),
                status: "confirmed".into(),
                error: None,
                block_number: Some(1),
                idempotency_key: None,
                request_hash: None,
                // Between the fourth read (fills) and the fifth (markets).
                created_at: T0 + 4_500,
                updated_at: T0 + 4_500,
            })
            .execute(&mut c)
            .unwrap();
    })
    .await
    .unwrap();
    let listed = transactions(&app, &key, &wallet, "").await;
    let data = listed.body["data"].as_array().unwrap();
    assert_eq!(data.len(), ids.len() + 1, "{}", listed.text);
    let mut expected: Vec<(String, Value)> = ids
        .iter()
        .map(|(id, action, _)| (id.clone(), action.clone()))
        .collect();
    expected.insert(4, ("wtx_between".into(), Value::Null));
    expected.reverse();
    for (entry, (id, action)) in data.iter().zip(&expected) {
        assert_eq!(entry["transaction_id"], id.as_str(), "{entry}");
        if action.is_null() {
            assert_eq!(entry["type"], "transfer");
            assert_eq!(entry["status"], "confirmed");
        } else {
            assert_eq!(entry["type"], "trading_query");
            assert_eq!(entry["action"], *action);
            assert_eq!(entry["venue"], "hyperliquid");
            assert_eq!(entry["wallet_id"], wallet.as_str());
            assert!(entry["request_id"].is_string(), "{entry}");
            assert!(entry["created_at"].is_string(), "{entry}");
        }
    }
    let symbols: Vec<&Value> = data.iter().map(|e| &e["symbol"]).collect();
    assert_eq!(symbols[0], "BTC");
    assert_eq!(
        symbols[1], "ETH",
        "the default orderbook symbol is recorded"
    );
    assert_eq!(symbols[2], &Value::Null, "ticker without a symbol");
    assert_eq!(symbols[3], "ETH");

    // Pages of the merged list meet without a gap or an overlap.
    let mut seen = Vec::new();
    let mut query = "?limit=4".to_owned();
    loop {
        let page = transactions(&app, &key, &wallet, &query).await;
        for e in page.body["data"].as_array().unwrap() {
            seen.push(e["transaction_id"].as_str().unwrap().to_owned());
        }
        match page.body["next_cursor"].as_str() {
            Some(c) => query = format!("?limit=4&cursor={c}"),
            None => break,
        }
    }
    let all: Vec<String> = expected.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(seen, all);
    assert_books_balance(&app.pool);
}

#[tokio::test]
async fn refusals_are_checked_before_hyperliquid_is_asked_and_leave_nothing_recorded() {
    let hl = MockHyperliquid::start().await;
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_with(&hl, &clock).await;
    let Agent { key, wallet, .. } = app.agent().await;
    let Agent {
        key: other_key,
        wallet: other_wallet,
        ..
    } = app.agent().await;

    let r = app
        .post(PATH, json!({"walletId": wallet, "action": "status"}), &[])
        .await;
    r.assert_error(401, "UNAUTHORIZED");

    let r = trade(&app, &key, json!({"walletId": wallet, "action": "yolo"})).await;
    r.assert_error(400, "INVALID_INPUT");
    assert_eq!(r.body["field"], "action");
    assert_eq!(
        r.body["actions"],
        json!([
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
            "transfer"
        ])
    );
    assert!(r.body["error"].as_str().unwrap().contains("orderbook"));
    let r = trade(&app, &key, json!({"walletId": wallet})).await;
    assert_eq!(
        (r.status, &r.body["field"]),
        (400, &json!("action")),
        "{}",
        r.text
    );
    let r = trade(&app, &key, json!({"action": "status"})).await;
    assert_eq!(
        (r.status, &r.body["field"]),
        (400, &json!("walletId")),
        "{}",
        r.text
    );
    let r = trade(
        &app,
        &key,
        json!({"walletId": wallet, "action": "status", "colour": 1}),
    )
    .await;
    r.assert_error(400, "INVALID_INPUT");

    // Another agent's wallet, or none at all, does not exist for this agent.
    let r = trade(
        &app,
        &key,
        json!({"walletId": other_wallet, "action": "positions"}),
    )
    .await;
    r.assert_error(404, "NOT_FOUND");
    let r = trade(
        &app,
        &key,
        json!({"walletId": "wal_nope", "action": "positions"}),
    )
    .await;
    r.assert_error(404, "NOT_FOUND");
    let r = trade(
        &app,
        &other_key,
        json!({"walletId": wallet, "action": "order"}),
    )
    .await;
    r.assert_error(404, "NOT_FOUND");

    // Symbols: letters and digits, bounded; a market Hyperliquid does not have is refused.
    for bad in ["ETH-USD", "", "ABCDEFGHIJKLMNOPQRSTU", "ETH "] {
        let r = trade(
            &app,
            &key,
            json!({"walletId": wallet, "action": "orderbook", "symbol": bad}),
        )
        .await;
        r.assert_error(400, "INVALID_INPUT");
        assert_eq!(r.body["field"], "symbol", "{bad}");
    }
    let before = hl.requests().len();
    assert_eq!(before, 0, "bad input never reaches Hyperliquid");
    for action in ["ticker", "orderbook"] {
        let r = trade(
            &app,
            &key,
            json!({"walletId": wallet, "action": action, "symbol": "DOGE"}),
        )
        .await;
        r.assert_error(400, "INVALID_INPUT");
        assert_eq!(r.body["field"], "symbol");
        assert!(
            r.body["error"].as_str().unwrap().contains("DOGE"),
            "{}",
            r.text
        );
    }
    let r = trade(
        &app,
        &key,
        json!({"walletId": wallet, "action": "funding", "startTime": T0 + 1}),
    )
    .await;
    r.assert_error(400, "INVALID_INPUT");
    assert_eq!(r.body["field"], "startTime");

    // A key with tradingEnabled off is refused, naming the flag.
    let keys = app.get("/v1/keys", &[("X-API-Key", &key)]).await;
    let key_id = keys.body["data"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .patch(
            &format!("/v1/keys/{key_id}"),
            json!({"tradingEnabled": false}),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = trade(&app, &key, json!({"walletId": wallet, "action": "status"})).await;
    r.assert_error(403, "FORBIDDEN");
    assert_eq!(r.body["flag"], "tradingEnabled");

    let listed = transactions(&app, &key, &wallet, "").await;
    assert_eq!(
        listed.body["data"],
        json!([]),
        "no refused read is recorded"
    );
}

#[tokio::test]
async fn a_read_only_key_may_read_but_not_ask_for_a_write() {
    let hl = MockHyperliquid::start().await;
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_with(&hl, &clock).await;
    let Agent { key, wallet, .. } = app.agent().await;
    let keys = app.get("/v1/keys", &[("X-API-Key", &key)]).await;
    let key_id = keys.body["data"][0]["id"].as_str().unwrap().to_owned();
    let r = app
        .patch(
            &format!("/v1/keys/{key_id}"),
            json!({"readOnly": true}),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = trade(
        &app,
        &key,
        json!({"walletId": wallet, "action": "ticker", "symbol": "BTC"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["mid_price"], "97250.5");
    let r = trade(
        &app,
        &key,
        json!({"walletId": wallet, "action": "withdraw", "amount": "1",
               "destination": "0x000000000000000000000000000000000000dEaD"}),
    )
    .await;
    r.assert_error(403, "FORBIDDEN");
    assert_eq!(r.body["error"], "Read-only API key");
}

#[tokio::test]
async fn hyperliquid_failing_is_a_502_or_504_that_reveals_nothing_and_records_nothing() {
    let hl = MockHyperliquid::start().await;
    let base = hl.base.clone();
    let app = spawn_app_with(move |c| {
        c.hyperliquid.base_url = base;
        c.hyperliquid.timeout = Duration::from_secs(1);
    })
    .await;
    let Agent { key, wallet, .. } = app.agent().await;
    let status = json!({"walletId": wallet, "action": "status"});

    hl.set_mode(Mode::Fail);
    let r = trade(&app, &key, status.clone()).await;
    r.assert_error(502, "UPSTREAM_ERROR");
    assert_eq!(r.body["error"], "Hyperliquid answered HTTP 500");
    assert!(!r.text.contains("10.0.3.7"), "{}", r.text);
    // Writes that must look a market up fail the same way.
    let r = trade(
        &app,
        &key,
        json!({"walletId": wallet, "action": "cancel", "symbol": "ETH", "orderId": 1}),
    )
    .await;
    r.assert_error(502, "UPSTREAM_ERROR");

    hl.set_mode(Mode::Garbage);
    let r = trade(&app, &key, status.clone()).await;
    r.assert_error(502, "UPSTREAM_ERROR");
    assert_eq!(r.body["error"], "Hyperliquid's answer was not understood");
    assert!(!r.text.contains("maintenance"), "{}", r.text);

    hl.set_mode(Mode::Stall);
    let started = std::time::Instant::now();
    let r = trade(&app, &key, status.clone()).await;
    r.assert_error(504, "UPSTREAM_TIMEOUT");
    assert!(started.elapsed() < Duration::from_secs(10));

    hl.set_mode(Mode::Ok);
    let r = trade(&app, &key, status.clone()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let listed = transactions(&app, &key, &wallet, "").await;
    assert_eq!(
        listed.body["data"].as_array().unwrap().len(),
        1,
        "only the answered read is recorded: {}",
        listed.text
    );

    // Nothing listening at all.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let app = spawn_app_with(move |c| {
        c.hyperliquid.base_url = format!("http://127.0.0.1:{port}");
    })
    .await;
    let Agent { key, wallet, .. } = app.agent().await;
    let r = trade(&app, &key, json!({"walletId": wallet, "action": "orders"})).await;
    r.assert_error(502, "UPSTREAM_ERROR");
    assert_eq!(r.body["error"], "Hyperliquid could not be reached");
    assert!(!r.text.contains("127.0.0.1"), "{}", r.text);
}

#[tokio::test]
async fn every_write_is_validated_and_answered_501_with_the_exchange_action_it_would_sign() {
    let hl = MockHyperliquid::start().await;
    let clock = Arc::new(ManualClock::new(T0));
    let app = app_with(&hl, &clock).await;
    let Agent {
        key,
        wallet,
        ethereum: address,
        ..
    } = app.agent().await;
    let dest = "0x000000000000000000000000000000000000dEaD";
    let dest_lower = dest.to_ascii_lowercase();

    let write = async |body: Value| -> Value {
        let mut body = body;
        body["walletId"] = wallet.clone().into();
        let r = trade(&app, &key, body).await;
        r.assert_error(501, "NOT_IMPLEMENTED");
        assert!(
            r.body["error"]
                .as_str()
                .unwrap()
                .contains("not implemented"),
            "{}",
            r.text
        );
        assert_eq!(r.body["wallet_id"], wallet.as_str());
        assert_eq!(r.body["address"], address.as_str());
        r.body["action"].clone()
    };

    assert_eq!(
        write(
            json!({"action": "order", "symbol": "ETH", "side": "buy", "amount": "0.50",
                     "price": "3000.10"})
        )
        .await,
        json!({"type": "order", "orders": [{"a": 1, "b": true, "p": "3000.1", "s": "0.5",
               "r": false, "t": {"limit": {"tif": "Gtc"}}}], "grouping": "na"})
    );
    assert_eq!(
        write(
            json!({"action": "order", "symbol": "BTC", "side": "sell", "size": "0.001",
                     "price": "90000", "type": "market", "reduceOnly": true})
        )
        .await,
        json!({"type": "order", "orders": [{"a": 0, "b": false, "p": "90000", "s": "0.001",
               "r": true, "t": {"limit": {"tif": "Ioc"}}}], "grouping": "na"})
    );
    assert_eq!(
        write(
            json!({"action": "order", "symbol": "SOL", "side": "buy", "amount": "2",
                     "price": "140", "tif": "alo"})
        )
        .await["orders"][0]["t"],
        json!({"limit": {"tif": "Alo"}})
    );
    assert_eq!(
        write(json!({"action": "cancel", "symbol": "BTC", "orderId": 91490942})).await,
        json!({"type": "cancel", "cancels": [{"a": 0, "o": 91490942}]})
    );
    assert_eq!(
        write(json!({"action": "cancel", "symbol": "ETH", "orderId": "77"})).await,
        json!({"type": "cancel", "cancels": [{"a": 1, "o": 77}]})
    );
    // cancel_all cancels the wallet's open orders, of one market or of all.
    assert_eq!(
        write(json!({"action": "cancel_all"})).await,
        json!({"type": "cancel", "cancels": [{"a": 0, "o": 91490942}, {"a": 1, "o": 91490943}]})
    );
    assert!(hl
        .requests()
        .contains(&json!({"type": "openOrders", "user": address.to_ascii_lowercase()})));
    assert_eq!(
        write(json!({"action": "cancel_all", "symbol": "ETH"})).await,
        json!({"type": "cancel", "cancels": [{"a": 1, "o": 91490943}]})
    );
    assert_eq!(
        write(json!({"action": "cancel_all", "symbol": "SOL"})).await,
        json!({"type": "cancel", "cancels": []})
    );
    assert_eq!(
        write(json!({"action": "set_leverage", "symbol": "SOL", "leverage": 10})).await,
        json!({"type": "updateLeverage", "asset": 2, "isCross": true, "leverage": 10})
    );
    assert_eq!(
        write(json!({"action": "set_leverage", "symbol": "ZK", "leverage": 5, "cross": false}))
            .await,
        json!({"type": "updateLeverage", "asset": 3, "isCross": false, "leverage": 5})
    );
    assert_eq!(
        write(json!({"action": "withdraw", "amount": "25.5", "destination": dest})).await,
        json!({"type": "withdraw3", "hyperliquidChain": "Mainnet", "signatureChainId": "0xa4b1",
               "destination": dest_lower, "amount": "25.5", "time": T0})
    );
    assert_eq!(
        write(json!({"action": "transfer", "amount": "10", "toPerp": true})).await,
        json!({"type": "usdClassTransfer", "hyperliquidChain": "Mainnet",
               "signatureChainId": "0xa4b1", "amount": "10", "toPerp": true, "nonce": T0})
    );
    assert_eq!(
        write(json!({"action": "transfer", "amount": "1.25", "destination": dest})).await,
        json!({"type": "usdSend", "hyperliquidChain": "Mainnet", "signatureChainId": "0xa4b1",
               "destination": dest_lower, "amount": "1.25", "time": T0})
    );
    // Only info requests (market metadata, open orders) were made; nothing was sent.
    for asked in hl.requests() {
        assert!(
            asked["type"] == "meta" || asked["type"] == "openOrders",
            "{asked}"
        );
    }

    // Bad input: 400 naming the field.
    let o = |extra: Value| {
        let mut b = json!({"action": "order", "symbol": "ETH", "side": "buy", "amount": "1",
                           "price": "3000"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                b.as_object_mut().unwrap().remove(k);
            } else {
                b[k] = v.clone();
            }
        }
        b
    };
    let cases = [
        (o(json!({"symbol": null})), "symbol"),
        (o(json!({"symbol": "ETH/USD"})), "symbol"),
        (o(json!({"symbol": "DOGE"})), "symbol"),
        (o(json!({"symbol": "OLD"})), "symbol"),
        (o(json!({"side": "long"})), "side"),
        (o(json!({"side": null})), "side"),
        (o(json!({"amount": null})), "amount"),
        (o(json!({"amount": "0"})), "amount"),
        (o(json!({"amount": "-1"})), "amount"),
        (o(json!({"amount": "1e3"})), "amount"),
        (o(json!({"amount": 1.5})), "amount"),
        (o(json!({"amount": "0.00001"})), "amount"),
        (o(json!({"size": "1"})), "size"),
        (o(json!({"price": null})), "price"),
        (o(json!({"price": "abc"})), "price"),
        (o(json!({"price": "1."})), "price"),
        (o(json!({"type": "stop"})), "type"),
        (o(json!({"tif": "Fok"})), "tif"),
        (o(json!({"type": "market", "tif": "Gtc"})), "tif"),
        (json!({"action": "cancel", "symbol": "ETH"}), "orderId"),
        (
            json!({"action": "cancel", "symbol": "ETH", "orderId": -1}),
            "orderId",
        ),
        (
            json!({"action": "cancel", "symbol": "ETH", "orderId": "x1"}),
            "orderId",
        ),
        (json!({"action": "cancel", "orderId": 1}), "symbol"),
        (json!({"action": "cancel_all", "symbol": "DOGE"}), "symbol"),
        (
            json!({"action": "set_leverage", "symbol": "ETH"}),
            "leverage",
        ),
        (
            json!({"action": "set_leverage", "symbol": "ETH", "leverage": 0}),
            "leverage",
        ),
        (
            json!({"action": "set_leverage", "symbol": "ETH", "leverage": 51}),
            "leverage",
        ),
        (
            json!({"action": "set_leverage", "symbol": "SOL", "leverage": 21}),
            "leverage",
        ),
        (
            json!({"action": "set_leverage", "symbol": "ZK", "leverage": 2}),
            "cross",
        ),
        (json!({"action": "withdraw", "destination": dest}), "amount"),
        (json!({"action": "withdraw", "amount": "1"}), "destination"),
        (
            json!({"action": "withdraw", "amount": "1", "destination": "0x12"}),
            "destination",
        ),
        (json!({"action": "transfer", "amount": "1"}), "toPerp"),
        (
            json!({"action": "transfer", "amount": "1", "toPerp": true, "destination": dest}),
            "toPerp",
        ),
        (json!({"action": "transfer", "toPerp": false}), "amount"),
    ];
    for (body, field) in cases {
        let mut body = body;
        body["walletId"] = wallet.clone().into();
        let r = trade(&app, &key, body.clone()).await;
        r.assert_error(400, "INVALID_INPUT");
        assert_eq!(r.body["field"], field, "{body}: {}", r.text);
    }

    let listed = transactions(&app, &key, &wallet, "").await;
    assert_eq!(
        listed.body["data"],
        json!([]),
        "writes are not recorded as queries"
    );
}

#[tokio::test]
async fn the_testnet_signs_for_its_own_chain() {
    // A transfer between one's own accounts needs no market data: nothing is asked of the
    // (unreachable) testnet host, only the chain names in the action change.
    let app = spawn_app_with(|c| {
        c.hyperliquid.base_url = "https://api.hyperliquid-testnet.xyz".into();
    })
    .await;
    let Agent { key, wallet, .. } = app.agent().await;
    let r = trade(
        &app,
        &key,
        json!({"walletId": wallet, "action": "transfer", "amount": "3", "toPerp": false}),
    )
    .await;
    r.assert_error(501, "NOT_IMPLEMENTED");
    assert_eq!(r.body["action"]["hyperliquidChain"], "Testnet");
    assert_eq!(r.body["action"]["signatureChainId"], "0x66eee");
}
