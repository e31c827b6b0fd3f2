//! Agents' wallets against a real anvil node (chain id 84532, Base Sepolia, with a minimal
//! ERC-20 at the real USDC address): registration, visibility, balances, signed USDC and
//! ETH transfers, every refusal, nonces under concurrency, idempotency, a stopped RPC, and
//! proof that private keys never leave the server.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::unreadable_literal
)]

use std::collections::BTreeSet;
use std::time::Duration;

use crate::support::anvil::{Anvil, CHAIN_BASE_SEPOLIA, USDC_BASE_SEPOLIA};
use crate::support::Agent;
use crate::support::{captured_logs, spawn_app, spawn_app_with, Resp, TestApp, TEST_SECRET_KEY};
use aibank_core::SecretBox;
use aibank_wallet::{Chain, ChainConfig, WalletSettings};
use serde_json::{json, Value};

const ONE_ETH: u128 = 1_000_000_000_000_000_000;

fn settings(anvil: &Anvil) -> WalletSettings {
    WalletSettings {
        chains: vec![ChainConfig {
            chain: Chain::BaseSepolia,
            rpc_url: anvil.url.clone().into(),
            usdc: Chain::BaseSepolia.default_usdc(),
            usdc_domain: aibank_x402::exact::TokenDomain::usdc(Chain::BaseSepolia),
        }],
        eth_usd_price: Some("3000".parse().unwrap()),
        rpc_timeout: Duration::from_secs(3),
        confirm_timeout: Duration::from_secs(10),
    }
}

async fn chain() -> Anvil {
    let anvil = Anvil::start(CHAIN_BASE_SEPOLIA).await;
    anvil.deploy_erc20(USDC_BASE_SEPOLIA).await;
    anvil
}

async fn server(anvil: &Anvil) -> TestApp {
    let s = settings(anvil);
    spawn_app_with(move |c| c.wallets = s).await
}

async fn fund(anvil: &Anvil, address: &str, wei: u128, usdc: u128) {
    anvil
        .rpc("anvil_setBalance", json!([address, format!("0x{wei:x}")]))
        .await;
    anvil.mint(USDC_BASE_SEPOLIA, address, usdc).await;
}

async fn eth_balance(anvil: &Anvil, address: &str) -> u128 {
    let v = anvil
        .rpc("eth_getBalance", json!([address, "latest"]))
        .await;
    u128::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

async fn nonce_of(anvil: &Anvil, address: &str) -> u64 {
    let v = anvil
        .rpc("eth_getTransactionCount", json!([address, "latest"]))
        .await;
    u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

async fn send(app: &TestApp, key: &str, wallet: &str, body: Value, extra: &[(&str, &str)]) -> Resp {
    let mut headers = vec![("X-API-Key", key)];
    headers.extend_from_slice(extra);
    app.post(&format!("/v1/wallets/{wallet}/transfer"), body, &headers)
        .await
}

/// The wallet's transfers, as its agent lists them.
async fn transactions(app: &TestApp, key: &str, wallet: &str) -> Resp {
    app.get(
        &format!("/v1/wallets/{wallet}/transactions"),
        &[("X-API-Key", key)],
    )
    .await
}

fn usdc(to: &str, amount: &str) -> Value {
    json!({"chain": "base-sepolia", "to": to, "amount": amount, "currency": "USDC"})
}

/// A fresh address nobody holds a key for.
fn stranger(n: u8) -> String {
    format!("0x{}", hex::encode([n; 20]))
}

#[tokio::test]
async fn registration_gives_a_wallet_and_a_claim_code() {
    let app = spawn_app().await;
    let r = app
        .post("/v1/agents/register", json!({"name": "a1"}), &[])
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let w = &r.body["wallet"];
    assert!(w["id"].as_str().unwrap().starts_with("wal_"));
    assert_eq!(w["name"], "main");
    let eth = w["addresses"]["ethereum"].as_str().unwrap();
    assert_eq!(w["addresses"]["base"], eth);
    assert_eq!(eth.len(), 42);
    // EIP-55: the checksummed form is what alloy prints.
    let parsed: aibank_wallet::Address = eth.parse().unwrap();
    assert_eq!(parsed.to_checksum(None), eth);
    let sol = w["addresses"]["solana"].as_str().unwrap();
    assert_eq!(bs58::decode(sol).into_vec().unwrap().len(), 32);

    let code = r.body["claimCode"].as_str().unwrap();
    let (letters, digits) = code.split_once('-').unwrap();
    assert!(letters.len() == 4 && letters.bytes().all(|b| b.is_ascii_uppercase()));
    assert!(digits.len() == 4 && digits.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(
        r.body["verificationUri"],
        format!("{}/device?code={code}", app.base)
    );
    assert_eq!(r.body["expiresIn"], 10 * 365 * 86_400);

    // Every agent gets its own wallet and code; platform agents too.
    let r2 = app
        .post(
            "/v1/platform/agents",
            json!({"name": "p1"}),
            &[("X-Master-Key", &app.master_key)],
        )
        .await;
    assert_eq!(r2.status, 201, "{}", r2.text);
    assert_ne!(r2.body["wallet"]["addresses"]["ethereum"], eth);
    assert_ne!(r2.body["claimCode"], code);
    // Gateway-only keys hold credits, not wallets.
    let gw = app
        .post("/v1/keys", json!({"email": "g@example.com"}), &[])
        .await;
    assert_eq!(gw.status, 201);
    assert!(gw.body.get("wallet").is_none(), "{}", gw.text);
}

#[tokio::test]
async fn a_wallet_is_visible_to_its_agent_and_its_platform_only() {
    let app = spawn_app().await;
    let Agent {
        key,
        wallet,
        address,
        ..
    } = app.agent().await;
    let Agent { key: other_key, .. } = app.agent().await;
    let Agent {
        id: fleet_id,
        key: fleet_key,
        wallet: fleet_wallet,
        ..
    } = app.platform().agent(json!({})).await;
    let other_platform = app.new_platform_key().await;

    let r = app.get("/v1/wallets", &[("X-API-Key", &key)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["data"][0]["id"], wallet.as_str());
    assert_eq!(r.body["data"][0]["addresses"]["ethereum"], address.as_str());
    let r = app
        .get(&format!("/v1/wallets/{wallet}"), &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["id"], wallet.as_str());
    for sealed in ["evm_key_sealed", "solana_key_sealed", "private_key"] {
        assert!(!r.text.contains(sealed));
    }

    // Other agents and other platforms: it does not exist.
    for (h, k) in [
        ("X-API-Key", other_key.as_str()),
        ("X-API-Key", fleet_key.as_str()),
        ("X-Master-Key", app.master_key.as_str()),
        ("X-Master-Key", other_platform.as_str()),
    ] {
        for path in [
            format!("/v1/wallets/{wallet}"),
            format!("/v1/wallets/{wallet}/balances"),
            format!("/v1/wallets/{wallet}/transactions"),
            format!("/v1/wallets/{wallet}/allowlist"),
        ] {
            let r = app.get(&path, &[(h, k)]).await;
            assert_eq!(r.status, 404, "{h} on {path}: {}", r.text);
            assert_eq!(r.body["code"], "NOT_FOUND");
        }
    }
    let r = send(&app, &other_key, &wallet, usdc(&stranger(1), "1"), &[]).await;
    assert_eq!(r.status, 404);

    // The platform sees its agents' wallets.
    let r = app
        .get("/v1/wallets", &[("X-Master-Key", &app.master_key)])
        .await;
    assert_eq!(r.status, 200);
    let ids: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![fleet_wallet.as_str()]);
    assert_eq!(r.body["data"][0]["agentId"], fleet_id.as_str());
    let r = app
        .get(
            &format!("/v1/wallets/{fleet_wallet}"),
            &[("X-Master-Key", &app.master_key)],
        )
        .await;
    assert_eq!(r.status, 200);
    let r = app
        .get("/v1/wallets", &[("X-Master-Key", &other_platform)])
        .await;
    assert_eq!(r.body["data"], json!([]));

    // Gateway-only keys and keys with walletsEnabled off are refused.
    let gw = app
        .post("/v1/keys", json!({"email": "g@example.com"}), &[])
        .await;
    let gw_key = gw.body["api_key"].as_str().unwrap();
    let r = app.get("/v1/wallets", &[("X-API-Key", gw_key)]).await;
    assert_eq!(r.status, 403);
    let r = app
        .patch(
            &format!("/v1/platform/agents/{fleet_id}"),
            json!({"walletsEnabled": false}),
            &[("X-Master-Key", &app.master_key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app.get("/v1/wallets", &[("X-API-Key", &fleet_key)]).await;
    assert_eq!(r.status, 403);
    assert_eq!(
        r.body,
        json!({"error": "walletsEnabled is off for this API key", "code": "FORBIDDEN", "flag": "walletsEnabled"})
    );
    let r = send(
        &app,
        &fleet_key,
        &fleet_wallet,
        usdc(&stranger(1), "1"),
        &[],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["flag"], "walletsEnabled");
}

/// Agents created before wallets existed get theirs on first use.
#[tokio::test]
async fn an_agent_without_a_wallet_gets_one_on_first_use() {
    let app = spawn_app().await;
    let Agent {
        id,
        key,
        wallet: old_wallet,
        ..
    } = app.agent().await;
    let pool = app.pool.clone();
    let agent_id = id.clone();
    tokio::task::spawn_blocking(move || {
        use aibank_store::schema::wallets::dsl as w;
        use diesel::prelude::*;
        let mut c = pool.get().unwrap();
        diesel::delete(w::wallets.filter(w::agent_id.eq(agent_id)))
            .execute(&mut c)
            .unwrap();
    })
    .await
    .unwrap();
    let r = app
        .get(&format!("/v1/wallets/{old_wallet}"), &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.status, 404);
    let headers = [("X-API-Key", key.as_str())];
    let results =
        futures_util::future::join_all((0..4).map(|_| app.get("/v1/wallets", &headers))).await;
    let ids: BTreeSet<String> = results
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text);
            r.body["data"][0]["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one wallet, however many asked at once");
    assert_eq!(results[0].body["data"][0]["agentId"], id.as_str());
}

#[tokio::test]
async fn balances_are_read_on_chain_and_missing_chains_are_unavailable() {
    let anvil = chain().await;
    let app = server(&anvil).await;
    let Agent {
        key,
        wallet,
        address,
        ..
    } = app.agent().await;
    fund(&anvil, &address, 2 * ONE_ETH + ONE_ETH / 4, 12_345_678).await;

    let r = app
        .get(
            &format!("/v1/wallets/{wallet}/balances"),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let b = r.body["balances"].as_array().unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!(
        b[0],
        json!({"chain": "ethereum", "available": false, "error": "no RPC endpoint is configured"})
    );
    assert_eq!(b[1]["chain"], "base");
    assert_eq!(b[1]["available"], false);
    assert_eq!(b[2]["chain"], "base-sepolia");
    assert_eq!(b[2]["available"], true);
    assert_eq!(
        b[2]["native"],
        json!({"currency": "ETH", "amount": "2.25", "base_units": "2250000000000000000"})
    );
    assert_eq!(
        b[2]["usdc"],
        json!({"currency": "USDC", "amount": "12.345678", "base_units": "12345678"})
    );

    let r = app
        .get(
            &format!("/v1/wallets/{wallet}/balances?chains=base-sepolia,solana"),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.body["balances"][0]["chain"], "base-sepolia");
    assert_eq!(r.body["balances"][1]["chain"], "solana");
    assert_eq!(r.body["balances"][1]["available"], false);
    let r = app
        .get(
            &format!("/v1/wallets/{wallet}/balances?chains=dogechain"),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.body["field"], "chains");
}

#[tokio::test]
async fn usdc_and_eth_transfers_land_on_chain() {
    let anvil = chain().await;
    let app = server(&anvil).await;
    let Agent {
        key,
        wallet,
        address,
        ..
    } = app.agent().await;
    fund(&anvil, &address, ONE_ETH, 10_000_000).await;
    let to = stranger(0x11);

    let r = send(&app, &key, &wallet, usdc(&to, "1.5"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "confirmed");
    assert_eq!(r.body["from"], address.as_str());
    assert_eq!(r.body["to"].as_str().unwrap().to_lowercase(), to);
    assert_eq!(r.body["amount"], "1.5");
    assert_eq!(r.body["currency"], "USDC");
    assert_eq!(r.body["chain"], "base-sepolia");
    assert!(r.body["transaction_id"]
        .as_str()
        .unwrap()
        .starts_with("wtx_"));
    let hash = r.body["tx_hash"].as_str().unwrap().to_owned();
    let receipt = anvil.rpc("eth_getTransactionReceipt", json!([hash])).await;
    assert_eq!(receipt["status"], "0x1");
    assert_eq!(receipt["from"], address.to_lowercase());
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, &to).await, 1_500_000);
    assert_eq!(
        anvil.balance_of(USDC_BASE_SEPOLIA, &address).await,
        8_500_000
    );

    let r = send(
        &app,
        &key,
        &wallet,
        json!({"chain": "base-sepolia", "to": to, "amount": "0.01", "currency": "ETH"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "confirmed");
    // 0.01 ETH at $3000.
    assert_eq!(r.body["usd_value"], json!(30.0));
    assert_eq!(eth_balance(&anvil, &to).await, ONE_ETH / 100);

    let r = transactions(&app, &key, &wallet).await;
    assert_eq!(r.status, 200);
    let txs = r.body["data"].as_array().unwrap();
    assert_eq!(txs.len(), 2);
    assert_eq!(txs[0]["currency"], "ETH");
    assert_eq!(txs[1]["currency"], "USDC");
    assert_eq!(txs[1]["tx_hash"], hash.as_str());
    assert!(txs.iter().all(|t| t["status"] == "confirmed"));
    assert_eq!(txs[1]["nonce"], 0);
    assert_eq!(txs[0]["nonce"], 1);
    let r = app
        .get(
            &format!("/v1/wallets/{wallet}/balances?chains=base-sepolia"),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.body["balances"][0]["usdc"]["amount"], "8.5");
}

#[tokio::test]
async fn bad_transfer_input_is_refused_before_anything_is_signed() {
    let anvil = chain().await;
    let s = WalletSettings {
        eth_usd_price: None,
        ..settings(&anvil)
    };
    let app = spawn_app_with(move |c| c.wallets = s).await;
    let Agent {
        key,
        wallet,
        address,
        ..
    } = app.agent().await;
    fund(&anvil, &address, ONE_ETH, 10_000_000).await;
    let to = stranger(0x22);
    let cases = [
        (json!({"chain": "dogechain", "to": to, "amount": "1", "currency": "USDC"}), "chain", "Unknown chain `dogechain`: use ethereum, base or base-sepolia"),
        (json!({"chain": "solana", "to": to, "amount": "1", "currency": "USDC"}), "chain", "Solana transfers are not supported yet: the wallet's Solana address can receive funds, but sending from it is not available. Use ethereum, base or base-sepolia"),
        (json!({"chain": "base-sepolia", "to": "0x1234", "amount": "1", "currency": "USDC"}), "to", "`to` must be an EVM address: 0x followed by 40 hex digits"),
        (json!({"chain": "base-sepolia", "to": to, "amount": "-1", "currency": "USDC"}), "amount", "`amount` must be a positive decimal string such as \"1.5\", with at most 6 decimal places for USDC"),
        (json!({"chain": "base-sepolia", "to": to, "amount": "1e3", "currency": "USDC"}), "amount", "`amount` must be a positive decimal string such as \"1.5\", with at most 6 decimal places for USDC"),
        (json!({"chain": "base-sepolia", "to": to, "amount": "0", "currency": "USDC"}), "amount", "`amount` must be greater than zero"),
        (json!({"chain": "base-sepolia", "to": to, "amount": "1.0000001", "currency": "USDC"}), "amount", "`amount` has 7 decimal places; USDC has 6"),
        (json!({"chain": "base-sepolia", "to": to, "amount": "1", "currency": "DOGE"}), "currency", "Unknown currency `DOGE`: use USDC or ETH"),
        (json!({"chain": "base-sepolia", "to": to, "amount": "1", "currency": "ETH"}), "currency", "ETH transfers are disabled on this server: spending limits need an ETH price in USD, and none is configured (AIBANK_ETH_USD_PRICE)"),
    ];
    for (body, field, message) in cases {
        let r = send(&app, &key, &wallet, body.clone(), &[]).await;
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(
            r.body,
            json!({"error": message, "code": "INVALID_INPUT", "field": field}),
            "{body}"
        );
    }
    let r = send(
        &app,
        &key,
        &wallet,
        json!({"chain": "base-sepolia", "to": to, "amount": 1, "currency": "USDC"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 400, "amount must be a string: {}", r.text);
    // Nothing was recorded or sent.
    let r = transactions(&app, &key, &wallet).await;
    assert_eq!(r.body["data"], json!([]));
    assert_eq!(nonce_of(&anvil, &address).await, 0);

    // A chain without an RPC endpoint.
    let r = send(
        &app,
        &key,
        &wallet,
        json!({"chain": "ethereum", "to": to, "amount": "1", "currency": "USDC"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 503);
    assert_eq!(
        r.body,
        json!({"error": "Transfers on ethereum are unavailable: no RPC endpoint is configured", "code": "UNAVAILABLE", "chain": "ethereum"})
    );
}

#[tokio::test]
async fn spending_limits_bound_transfers_and_failed_ones_do_not_count() {
    let anvil = chain().await;
    let app = server(&anvil).await;
    let to = stranger(0x33);

    let Agent {
        key,
        wallet,
        address,
        ..
    } = app.platform().agent(json!({"per_tx_limit_usd": 5})).await;
    fund(&anvil, &address, ONE_ETH, 100_000_000).await;
    let r = send(&app, &key, &wallet, usdc(&to, "5.000001"), &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["code"], "PER_TX_LIMIT_EXCEEDED");
    assert_eq!(r.body["requested_usd"], json!(5.000001));
    // ETH is valued at the configured price: 0.002 ETH = $6.
    let r = send(
        &app,
        &key,
        &wallet,
        json!({"chain": "base-sepolia", "to": to, "amount": "0.002", "currency": "ETH"}),
        &[],
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["code"], "PER_TX_LIMIT_EXCEEDED");
    assert_eq!(nonce_of(&anvil, &address).await, 0, "nothing was signed");

    for (window, code) in [
        ("daily_limit_usd", "DAILY_LIMIT_EXCEEDED"),
        ("weekly_limit_usd", "WEEKLY_LIMIT_EXCEEDED"),
        ("monthly_limit_usd", "MONTHLY_LIMIT_EXCEEDED"),
    ] {
        let Agent {
            key,
            wallet,
            address,
            ..
        } = app.platform().agent(json!({ window: 10 })).await;
        // Not funded yet: the chain refuses, the transfer fails and does not count.
        let r = send(&app, &key, &wallet, usdc(&to, "6"), &[]).await;
        assert_eq!(r.status, 502, "{}", r.text);
        assert_eq!(r.body["code"], "TRANSFER_FAILED");
        assert_eq!(r.body["transaction"]["status"], "failed");
        assert!(
            r.body["reason"]
                .as_str()
                .unwrap()
                .starts_with("insufficient USDC balance"),
            "{}",
            r.text
        );
        fund(&anvil, &address, ONE_ETH, 100_000_000).await;
        let r = send(&app, &key, &wallet, usdc(&to, "6"), &[]).await;
        assert_eq!(r.status, 200, "{window}: {}", r.text);
        let r = send(&app, &key, &wallet, usdc(&to, "4.000001"), &[]).await;
        assert_eq!(r.status, 403, "{window}: {}", r.text);
        assert_eq!(r.body["code"], code);
        assert_eq!(r.body["used_usd"], json!(6.0));
        assert_eq!(r.body["limit_usd"], json!(10.0));
        let r = send(&app, &key, &wallet, usdc(&to, "4"), &[]).await;
        assert_eq!(r.status, 200, "{window}: {}", r.text);
    }
    // Credit spending and transfers share the windows: the agent's usage shows in its
    // limits check, so a charge now would need room the transfers took.
    assert_eq!(
        anvil.balance_of(USDC_BASE_SEPOLIA, &to).await,
        3 * 10_000_000
    );
}

#[tokio::test]
async fn the_recipient_allowlist_is_enforced_and_managed_by_the_right_party() {
    let anvil = chain().await;
    let app = server(&anvil).await;
    let (allowed, other) = (stranger(0x44), stranger(0x55));
    let mk = app.master_key.clone();

    // A platform's agent: only the platform manages the list.
    let Agent {
        key,
        wallet,
        address,
        ..
    } = app.platform().agent(json!({})).await;
    fund(&anvil, &address, ONE_ETH, 100_000_000).await;
    let path = format!("/v1/wallets/{wallet}/allowlist");
    let r = app
        .post(&path, json!({"address": allowed}), &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.status, 403, "{}", r.text);
    let r = app
        .post(
            &path,
            json!({"address": allowed.to_uppercase().replace("0X", "0x"), "label": "treasury"}),
            &[("X-Master-Key", &mk)],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["address"], allowed.as_str());
    let created_at = r.body["created_at"].clone();
    let r = app
        .post(
            &path,
            json!({"address": allowed, "label": "treasury"}),
            &[("X-Master-Key", &mk)],
        )
        .await;
    assert_eq!(r.status, 200, "relabelled, not added: {}", r.text);
    assert_eq!(r.body["created_at"], created_at);
    let r = app.get(&path, &[("X-API-Key", &key)]).await;
    assert_eq!(r.body["restricted"], true);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["data"][0]["label"], "treasury");

    let r = send(&app, &key, &wallet, usdc(&other, "1"), &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let other_checksummed = other
        .parse::<aibank_wallet::Address>()
        .unwrap()
        .to_checksum(None);
    assert_eq!(
        r.body,
        json!({"error": format!("{other_checksummed} is not on this wallet's recipient allowlist"), "code": "ADDRESS_NOT_ALLOWED", "to": other_checksummed})
    );
    let r = send(&app, &key, &wallet, usdc(&allowed, "1"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);

    let r = app
        .delete(&format!("{path}/{allowed}"), &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.status, 403);
    let r = app
        .delete(&format!("{path}/{allowed}"), &[("X-Master-Key", &mk)])
        .await;
    assert_eq!(r.status, 204);
    let r = app
        .delete(&format!("{path}/{allowed}"), &[("X-Master-Key", &mk)])
        .await;
    assert_eq!(r.status, 404);
    let r = send(&app, &key, &wallet, usdc(&other, "1"), &[]).await;
    assert_eq!(
        r.status, 200,
        "an empty list allows any recipient: {}",
        r.text
    );

    // A self-registered agent manages its own list.
    let Agent {
        key: key2,
        wallet: wallet2,
        address: address2,
        ..
    } = app.agent().await;
    fund(&anvil, &address2, ONE_ETH, 100_000_000).await;
    let r = app
        .post(
            &format!("/v1/wallets/{wallet2}/allowlist"),
            json!({"address": allowed}),
            &[("X-API-Key", &key2)],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let r = send(&app, &key2, &wallet2, usdc(&other, "1"), &[]).await;
    assert_eq!(r.body["code"], "ADDRESS_NOT_ALLOWED");

    let audit = app
        .get(
            "/v1/platform/audit?action=wallet.allowlist_added",
            &[("X-Master-Key", &mk)],
        )
        .await;
    // The addition and the relabelling; self-registered agents' changes are in no
    // platform's log.
    assert_eq!(
        audit.body["data"].as_array().unwrap().len(),
        2,
        "{}",
        audit.text
    );
}

#[tokio::test]
async fn read_only_keys_can_look_but_not_send() {
    let anvil = chain().await;
    let app = server(&anvil).await;
    let Agent {
        id,
        key,
        wallet,
        address,
        ..
    } = app.platform().agent(json!({})).await;
    fund(&anvil, &address, ONE_ETH, 100_000_000).await;
    let r = app
        .patch(
            &format!("/v1/platform/agents/{id}"),
            json!({"readOnly": true}),
            &[("X-Master-Key", &app.master_key)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app
        .get(&format!("/v1/wallets/{wallet}"), &[("X-API-Key", &key)])
        .await;
    assert_eq!(r.status, 200);
    let r = send(&app, &key, &wallet, usdc(&stranger(0x66), "1"), &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(r.body["error"], "Read-only API key");
    assert_eq!(r.body["code"], "FORBIDDEN");
    assert_eq!(nonce_of(&anvil, &address).await, 0);
}

#[tokio::test]
async fn ten_parallel_transfers_all_land_with_distinct_nonces() {
    let anvil = chain().await;
    let app = server(&anvil).await;
    let Agent {
        key,
        wallet,
        address,
        ..
    } = app.funded_agent(&anvil).await;
    let to = stranger(0x77);
    let results = futures_util::future::join_all(
        (0..10).map(|_| send(&app, &key, &wallet, usdc(&to, "1"), &[])),
    )
    .await;
    let mut nonces = BTreeSet::new();
    let mut pending = 0;
    for r in &results {
        assert_eq!(r.status, 200, "{}", r.text);
        match r.body["status"].as_str() {
            Some("confirmed") => {}
            Some("pending") => pending += 1,
            _ => panic!("a transfer did not go out: {}", r.text),
        }
        nonces.insert(r.body["nonce"].as_u64().unwrap());
    }
    assert_eq!(nonces, (0..10).collect());
    if pending > 0 {
        // Broadcast in parallel, a transfer can reach the node before the one with the
        // nonce below it; anvil's automine may then leave it in the pool once the gap is
        // filled (foundry-rs/foundry#10122) where a real chain takes it into the next
        // block. Mine that block; the listing then sees every transfer's receipt.
        anvil.mine(1).await;
    }
    let r = transactions(&app, &key, &wallet).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let txs = r.body["data"].as_array().unwrap();
    assert_eq!(txs.len(), 10, "{}", r.text);
    assert!(txs.iter().all(|t| t["status"] == "confirmed"), "{}", r.text);
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, &to).await, 10_000_000);
    assert_eq!(nonce_of(&anvil, &address).await, 10);
}

#[tokio::test]
async fn an_idempotency_key_sends_a_transfer_once() {
    let anvil = chain().await;
    let app = server(&anvil).await;
    let Agent {
        key,
        wallet,
        address,
        ..
    } = app.funded_agent(&anvil).await;
    let to = stranger(0x88);
    let first = send(
        &app,
        &key,
        &wallet,
        usdc(&to, "2"),
        &[("Idempotency-Key", "pay-1")],
    )
    .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = send(
        &app,
        &key,
        &wallet,
        usdc(&to, "2"),
        &[("Idempotency-Key", "pay-1")],
    )
    .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["transaction_id"], first.body["transaction_id"]);
    assert_eq!(again.body["tx_hash"], first.body["tx_hash"]);
    let other = send(
        &app,
        &key,
        &wallet,
        usdc(&to, "3"),
        &[("Idempotency-Key", "pay-1")],
    )
    .await;
    assert_eq!(other.status, 409);
    assert_eq!(other.body["code"], "CONFLICT");

    // Concurrent retries of one request: one transfer.
    let results = futures_util::future::join_all((0..5).map(|_| {
        send(
            &app,
            &key,
            &wallet,
            usdc(&to, "1"),
            &[("Idempotency-Key", "pay-2")],
        )
    }))
    .await;
    let ids: BTreeSet<&str> = results
        .iter()
        .map(|r| {
            assert_eq!(r.status, 200, "{}", r.text);
            r.body["transaction_id"].as_str().unwrap()
        })
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, &to).await, 3_000_000);
    assert_eq!(nonce_of(&anvil, &address).await, 2);
}

#[tokio::test]
async fn a_stopped_rpc_gives_a_clean_error_and_nothing_confirmed() {
    let mut anvil = chain().await;
    let app = server(&anvil).await;
    let Agent {
        key,
        wallet,
        address,
        ..
    } = app.funded_agent(&anvil).await;
    let to = stranger(0x99);
    let r = send(&app, &key, &wallet, usdc(&to, "1"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(nonce_of(&anvil, &address).await, 1);

    let state = anvil.stop().await;
    let retry = [("Idempotency-Key", "while-down")];
    let r = send(&app, &key, &wallet, usdc(&to, "1"), &retry).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["code"], "UNAVAILABLE");
    assert_eq!(r.body["transaction"]["status"], "failed");
    assert!(r.body["transaction"]["tx_hash"].is_null());
    assert!(!r.text.contains(&anvil.url), "the RPC URL is not shown");
    let r = app
        .get(
            &format!("/v1/wallets/{wallet}/balances?chains=base-sepolia"),
            &[("X-API-Key", &key)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["balances"][0]["available"], false);
    let r = transactions(&app, &key, &wallet).await;
    let statuses: Vec<&str> = r.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["failed", "confirmed"]);

    anvil.resume(state).await;
    // Nothing moved, so the same Idempotency-Key really retries.
    let r = send(&app, &key, &wallet, usdc(&to, "1"), &retry).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.headers.get("idempotent-replayed").is_none());
    assert_eq!(r.body["status"], "confirmed");
    assert_eq!(r.body["nonce"], 1, "the failed transfer used no nonce");
    let again = send(&app, &key, &wallet, usdc(&to, "1"), &retry).await;
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["transaction_id"], r.body["transaction_id"]);
    assert_eq!(anvil.balance_of(USDC_BASE_SEPOLIA, &to).await, 2_000_000);
}

/// Everything a private key could look like, for one wallet.
fn key_forms(evm: &[u8], seed: &[u8]) -> Vec<String> {
    let mut keypair = seed.to_vec();
    keypair.extend_from_slice(
        ed25519_dalek::SigningKey::from_bytes(seed.try_into().unwrap())
            .verifying_key()
            .as_bytes(),
    );
    vec![
        hex::encode(evm),
        hex::encode_upper(evm),
        hex::encode(seed),
        hex::encode_upper(seed),
        bs58::encode(seed).into_string(),
        bs58::encode(&keypair).into_string(),
        base64_std(evm),
        base64_std(seed),
    ]
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Every row of every table, as text (PostgreSQL), or the database files' bytes (SQLite).
async fn database_dump(app: &TestApp) -> Vec<u8> {
    use diesel::prelude::*;
    use diesel::sql_types::Text;
    #[derive(QueryableByName)]
    struct Line {
        #[diesel(sql_type = Text)]
        line: String,
    }
    if app.db.admin.is_none() {
        let path = app.db.url.trim_start_matches("sqlite://").to_owned();
        let mut out = Vec::new();
        for suffix in ["", "-wal"] {
            if let Ok(b) = std::fs::read(format!("{path}{suffix}")) {
                out.extend(b);
            }
        }
        assert!(!out.is_empty());
        return out;
    }
    let pool = app.pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut c = pool.get().unwrap();
        let tables: Vec<Line> = diesel::sql_query(
            "SELECT table_name::text AS line FROM information_schema.tables WHERE table_schema = current_schema()",
        )
        .load(&mut c)
        .unwrap();
        assert!(tables.iter().any(|t| t.line == "wallets"));
        let mut out = Vec::new();
        for t in tables {
            let rows: Vec<Line> = diesel::sql_query(format!(
                "SELECT t::text AS line FROM \"{}\" t",
                t.line
            ))
            .load(&mut c)
            .unwrap();
            for r in rows {
                out.extend(r.line.into_bytes());
                out.push(b'\n');
            }
        }
        out
    })
    .await
    .unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn private_keys_appear_in_no_response_log_line_or_column() {
    let anvil = chain().await;
    let app = server(&anvil).await;
    let mut responses = String::new();
    let mut wallets = Vec::new();
    for _ in 0..2 {
        let r = app.post("/v1/agents/register", json!({}), &[]).await;
        responses.push_str(&r.text);
        let key = r.body["apiKey"].as_str().unwrap().to_owned();
        let wallet = r.body["wallet"]["id"].as_str().unwrap().to_owned();
        let address = r.body["wallet"]["addresses"]["base"]
            .as_str()
            .unwrap()
            .to_owned();
        fund(&anvil, &address, ONE_ETH, 10_000_000).await;
        for path in [
            "/v1/wallets".to_owned(),
            format!("/v1/wallets/{wallet}"),
            format!("/v1/wallets/{wallet}/balances"),
        ] {
            responses.push_str(&app.get(&path, &[("X-API-Key", &key)]).await.text);
        }
        responses.push_str(
            &send(&app, &key, &wallet, usdc(&stranger(1), "1"), &[])
                .await
                .text,
        );
        responses.push_str(&send(&app, &key, &wallet, usdc("0x12", "1"), &[]).await.text);
        responses.push_str(&transactions(&app, &key, &wallet).await.text);
        wallets.push(wallet);
    }
    responses.push_str(
        &app.get("/v1/wallets", &[("X-Master-Key", &app.master_key)])
            .await
            .text,
    );

    // Open the sealed keys the way the server does, with the test secret key.
    let sb = SecretBox::from_key_text(TEST_SECRET_KEY).unwrap();
    let pool = app.pool.clone();
    let ids = wallets.clone();
    let sealed: Vec<(String, String, String, String)> = tokio::task::spawn_blocking(move || {
        use aibank_store::schema::wallets::dsl as w;
        use diesel::prelude::*;
        let mut c = pool.get().unwrap();
        w::wallets
            .filter(w::id.eq_any(ids))
            .select((
                w::id,
                w::evm_address,
                w::evm_key_sealed,
                w::solana_key_sealed,
            ))
            .load(&mut c)
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(sealed.len(), 2);
    let dump = database_dump(&app).await;
    let logs = captured_logs();
    assert!(
        logs.contains("wallet transfer broadcast"),
        "log capture works"
    );
    for (id, address, evm_sealed, sol_sealed) in sealed {
        let evm = sb
            .open(&evm_sealed, format!("wallet/{id}/evm").as_bytes())
            .unwrap();
        let seed = sb
            .open(&sol_sealed, format!("wallet/{id}/solana").as_bytes())
            .unwrap();
        // The sealed key really is this wallet's key.
        let signer = alloy_signer_from(&evm);
        assert_eq!(signer, address);
        for form in key_forms(&evm, &seed) {
            assert!(!responses.contains(&form), "a private key in a response");
            assert!(!logs.contains(&form), "a private key in the logs");
            assert!(
                !contains(&dump, form.as_bytes()),
                "a private key in the database"
            );
        }
        assert!(!contains(&dump, &evm), "raw EVM key bytes in the database");
        assert!(
            !contains(&dump, &seed),
            "raw Solana seed bytes in the database"
        );
    }
}

fn alloy_signer_from(secret: &[u8]) -> String {
    let signer = alloy::signers::local::PrivateKeySigner::from_slice(secret).expect("a valid key");
    signer.address().to_checksum(None)
}

/// A transfer row as `reserve` writes it, with this nonce and status.
fn transfer_row(
    id: &str,
    agent: &str,
    wallet: &str,
    chain: &str,
    nonce: Option<i64>,
    status: &str,
) -> aibank_store::models::WalletTransfer {
    aibank_store::models::WalletTransfer {
        id: id.to_owned(),
        wallet_id: wallet.to_owned(),
        agent_id: agent.to_owned(),
        chain: chain.to_owned(),
        from_address: stranger(1),
        to_address: stranger(2),
        currency: "USDC".to_owned(),
        amount: "1".to_owned(),
        amount_base: "1000000".to_owned(),
        usd_micros: 1_000_000,
        nonce,
        tx_hash: None,
        status: status.to_owned(),
        error: None,
        block_number: None,
        idempotency_key: None,
        request_hash: None,
        created_at: 0,
        updated_at: 0,
    }
}

/// Writes a transfer row straight into the database (see [`transfer_row`]).
fn insert_transfer(
    c: &mut aibank_store::AnyConnection,
    row: &aibank_store::models::WalletTransfer,
) {
    use diesel::prelude::*;
    diesel::insert_into(aibank_store::schema::wallet_transfers::table)
        .values(row)
        .execute(c)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_nonce_freed_by_a_failed_transfer_is_taken_again() {
    use aibank_store::repo::wallets::take_nonce;
    use diesel::prelude::*;

    let app = spawn_app().await;
    let Agent {
        id: agent_id,
        wallet,
        ..
    } = app.agent().await;
    let rows = [
        ("held5", "base-sepolia", Some(5), "pending"),
        // Failed before it reached the chain: its nonce is free again.
        ("free6", "base-sepolia", Some(6), "failed"),
        ("held7", "base-sepolia", Some(7), "sending"),
        ("held9", "base-sepolia", Some(9), "confirmed"),
        // Another chain counts its own nonces.
        ("other6", "ethereum", Some(6), "pending"),
    ];
    let mut c = app.pool.get().unwrap();
    for (id, chain, nonce, status) in rows {
        insert_transfer(
            &mut c,
            &transfer_row(id, &agent_id, &wallet, chain, nonce, status),
        );
    }
    let mut take = |id: &str, floor: i64| {
        let row = transfer_row(id, &agent_id, &wallet, "base-sepolia", None, "sending");
        insert_transfer(&mut c, &row);
        take_nonce(&mut c, id, &wallet, "base-sepolia", floor).unwrap()
    };
    // The gap a failed transfer left is filled first, then the next free ones.
    assert_eq!(take("new1", 5), 6);
    assert_eq!(take("new2", 5), 8);
    assert_eq!(take("new3", 5), 10);
    // What the node counts is the floor.
    assert_eq!(take("new4", 12), 12);
    let recorded: Option<i64> = aibank_store::schema::wallet_transfers::table
        .find("new1")
        .select(aibank_store::schema::wallet_transfers::nonce)
        .first(&mut c)
        .unwrap();
    assert_eq!(recorded, Some(6));
    drop(c);

    // Concurrent allocations never hand out one nonce twice.
    let takes = (0..10).map(|i| {
        let (pool, agent_id, wallet) = (app.pool.clone(), agent_id.clone(), wallet.clone());
        tokio::task::spawn_blocking(move || {
            let mut c = pool.get().unwrap();
            let id = format!("par{i}");
            let row = transfer_row(&id, &agent_id, &wallet, "base-sepolia", None, "sending");
            insert_transfer(&mut c, &row);
            take_nonce(&mut c, &id, &wallet, "base-sepolia", 20).unwrap()
        })
    });
    let got: BTreeSet<i64> = futures_util::future::join_all(takes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(got, (20..30).collect());
}

#[tokio::test]
async fn a_settled_transfer_is_never_moved_back_by_a_staler_save() {
    use aibank_store::repo::wallets::record_progress;
    use diesel::prelude::*;

    let app = spawn_app().await;
    let Agent {
        id: agent_id,
        wallet,
        ..
    } = app.agent().await;
    let mut c = app.pool.get().unwrap();
    let status = |c: &mut aibank_store::AnyConnection, id: &str| -> (String, Option<i64>) {
        aibank_store::schema::wallet_transfers::table
            .find(id)
            .select((
                aibank_store::schema::wallet_transfers::status,
                aibank_store::schema::wallet_transfers::block_number,
            ))
            .first(c)
            .unwrap()
    };
    // A listing read the receipt first: the sender's later "pending" changes nothing.
    for settled in ["confirmed", "failed"] {
        let mut row = transfer_row(
            settled,
            &agent_id,
            &wallet,
            "base-sepolia",
            Some(1),
            settled,
        );
        row.block_number = Some(7);
        insert_transfer(&mut c, &row);
        row.status = "pending".to_owned();
        row.block_number = None;
        assert!(!record_progress(&mut c, &row).unwrap());
        assert_eq!(status(&mut c, settled), (settled.to_owned(), Some(7)));
    }
    // Unsettled transfers move on as before.
    for open in ["sending", "pending"] {
        let mut row = transfer_row(open, &agent_id, &wallet, "base-sepolia", Some(2), open);
        insert_transfer(&mut c, &row);
        row.status = "confirmed".to_owned();
        row.block_number = Some(9);
        assert!(record_progress(&mut c, &row).unwrap());
        assert_eq!(status(&mut c, open), ("confirmed".to_owned(), Some(9)));
    }
}

/// The race is PostgreSQL's: on SQLite every write runs alone under the process's writer
/// lock, so the adds never meet in the insert there and this only checks the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_adds_of_one_recipient_list_it_once() {
    let app = spawn_app().await;
    let Agent { wallet, .. } = app.platform().agent(json!({})).await;
    let path = format!("/v1/wallets/{wallet}/allowlist");
    let (app, path) = (&app, &path);
    // Rounds of simultaneous adds, each of a new address: the racing adds meet in the
    // insert, and every one of them must succeed.
    for round in 0..10_u8 {
        let to = stranger(0x60 + round);
        let to = &to;
        let adds = (0..16).map(|i| async move {
            app.post(
                path,
                json!({"address": to, "label": format!("label {i}")}),
                &[("X-Master-Key", &app.master_key)],
            )
            .await
        });
        let statuses: Vec<u16> = futures_util::future::join_all(adds)
            .await
            .into_iter()
            .map(|r| {
                assert!(r.status == 200 || r.status == 201, "{}", r.text);
                r.status
            })
            .collect();
        assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1);
    }
    let r = app.get(path, &[("X-Master-Key", &app.master_key)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["data"].as_array().unwrap().len(), 10);
}
