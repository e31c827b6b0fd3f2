//! Paying per call with USDC (x402) against a real anvil node: a minimal ERC-20 sits at the
//! real Base Sepolia USDC address, payments are real transfers, and the server reads them
//! back over JSON-RPC. The upstream is the mock LLM provider.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    clippy::unreadable_literal
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::anvil::{Anvil, CHAIN_BASE_SEPOLIA, USDC_BASE_SEPOLIA};
use crate::support::mock_upstream::MockUpstream;
use crate::support::Agent;
use crate::support::{spawn_app_with_clock, use_mock_upstream, TestApp};
use aibank_core::{ManualClock, SharedClock, SystemClock, Usd};
use aibank_server::Config;
use aibank_x402::{Address, Chain, ChainConfig, X402Settings, B256};
use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;
use base64::Engine as _;
use serde_json::{json, Value};

const MESSAGES: &str = "/v1/gateway/anthropic/v1/messages";
/// hello() at the mock's default usage (11 in, 7 out) at $3/$15 per million tokens.
const CALL_COST_MICROS: i64 = 11 * 3 + 7 * 15;

fn hello() -> Value {
    json!({"model": "claude-sonnet-4-5-20250929", "max_tokens": 100,
           "messages": [{"role": "user", "content": "Hello"}]})
}

struct Chainside {
    anvil: Anvil,
    payer: String,
    stranger: String,
    pay_to: String,
}

fn settings(anvil: &Anvil, pay_to: &str) -> X402Settings {
    crate::support::x402_settings(anvil, pay_to)
}

async fn chain() -> Chainside {
    let anvil = Anvil::start(CHAIN_BASE_SEPOLIA).await;
    anvil.deploy_erc20(USDC_BASE_SEPOLIA).await;
    let accounts = anvil.accounts().await;
    let (payer, stranger, pay_to) = (
        accounts[1].clone(),
        accounts[2].clone(),
        accounts[9].clone(),
    );
    anvil.mint(USDC_BASE_SEPOLIA, &payer, 100_000_000).await;
    Chainside {
        anvil,
        payer,
        stranger,
        pay_to,
    }
}

async fn server(
    c: &Chainside,
    clock: SharedClock,
    customize: impl FnOnce(&mut Config, &X402Settings) -> Option<X402Settings>,
) -> (TestApp, MockUpstream) {
    let mock = MockUpstream::start().await;
    let base = mock.base.clone();
    let x = settings(&c.anvil, &c.pay_to);
    let app = spawn_app_with_clock(clock, move |cfg| {
        use_mock_upstream(cfg, &base, true);
        cfg.x402 = customize(cfg, &x).or(Some(x));
    })
    .await;
    (app, mock)
}

async fn pay(c: &Chainside, amount: u128) -> String {
    c.anvil
        .transfer(USDC_BASE_SEPOLIA, &c.payer, &c.pay_to, amount)
        .await
}

async fn call_paid(app: &TestApp, hash: &str, extra: &[(&str, &str)]) -> crate::support::Resp {
    let mut h = vec![("X-Payment", hash), ("X-Payment-Chain", "base-sepolia")];
    h.extend_from_slice(extra);
    app.post(MESSAGES, hello(), &h).await
}

fn checksum(addr: &str) -> String {
    addr.parse::<aibank_x402::Address>()
        .unwrap()
        .to_checksum(None)
}

fn system() -> SharedClock {
    Arc::new(SystemClock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_key_gets_402_with_what_to_pay() {
    let c = chain().await;
    let (app, mock) = server(&c, system(), |_, _| None).await;
    let r = app.post(MESSAGES, hello(), &[]).await;
    assert_eq!(r.status, 402, "{}", r.text);
    let pay_to = checksum(&c.pay_to);
    let usdc = checksum(USDC_BASE_SEPOLIA);
    let description = format!("API call: POST {MESSAGES}");
    let instructions = r.body["payment"]["instructions"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(instructions.contains("X-Payment"), "{instructions}");
    assert_eq!(
        r.body,
        json!({
            "error": "Payment required",
            "code": "PAYMENT_REQUIRED",
            "payment": {
                "amount": "0.01", "currency": "USDC", "recipient": pay_to,
                "chain": "base-sepolia", "network": "base-sepolia", "chainId": 84532,
                "asset": usdc, "description": description, "instructions": instructions,
            },
            "x402Version": 1,
            // No settlement account: the standard scheme is not offered (see
            // the_402_offers_x402_v1_and_v2_requirements_when_a_settler_is_set).
            "accepts": [],
        })
    );
    assert!(r.headers.get("payment-required").is_none());
    assert_eq!(r.headers["x-payment-required"], "true");
    assert_eq!(r.headers["x-payment-amount"], "0.01");
    assert_eq!(r.headers["x-payment-currency"], "USDC");
    assert_eq!(r.headers["x-payment-recipient"], pay_to.as_str());
    assert_eq!(r.headers["x-payment-chain"], "base-sepolia");
    assert_eq!(r.headers["x-payment-description"], description.as_str());

    // A call that can cost more than the minimum is priced at its maximum cost.
    let mut big = hello();
    big["max_tokens"] = json!(10_000);
    let r = app.post(MESSAGES, big, &[]).await;
    let max: i64 = 10_000 * 15;
    let quoted = serde_json::from_value::<Usd>(r.body["payment"]["amount"].clone())
        .unwrap()
        .micros();
    assert!(
        quoted > max,
        "{quoted} covers the output tokens ({max}) and the prompt"
    );
    // Free endpoints cost the minimum.
    let r = app.get("/v1/gateway/anthropic/v1/models", &[]).await;
    assert_eq!(r.status, 402);
    assert_eq!(r.body["payment"]["amount"], "0.01");
    // A wrong key is still a 401: credentials never fall back to paying.
    let r = app
        .post(MESSAGES, hello(), &[("X-API-Key", "ak_nope")])
        .await;
    assert_eq!(r.status, 401);
    assert!(mock.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_payment_serves_the_call_once_and_credits_what_it_did_not_cost() {
    let c = chain().await;
    let (app, mock) = server(&c, system(), |_, _| None).await;
    let hash = pay(&c, 50_000).await;
    let r = call_paid(&app, &hash, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["type"], "message");
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.000138");
    assert_eq!(r.headers["x-aibank-balance-usd"], "0.049862");
    assert_eq!(
        c.anvil.balance_of(USDC_BASE_SEPOLIA, &c.pay_to).await,
        50_000
    );

    let account = format!("x402_base-sepolia_{}", &c.payer[2..]);
    let r = app.get(&format!("/v1/payments/{hash}"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let block = r.body["block_number"].clone();
    assert!(block.as_i64().unwrap() > 0);
    assert_eq!(
        r.body,
        json!({
            "hash": hash, "chain": "base-sepolia", "payer": checksum(&c.payer),
            "amount_usdc": 0.05, "cost_usd": 0.000138, "credited_usd": 0.049862,
            "account": account, "block_number": block, "resource": format!("POST {MESSAGES}"),
            "request_id": r.body["request_id"], "created_at": r.body["created_at"],
        })
    );
    let (sum, balance) = app.ledger_state(&account).await;
    assert_eq!(
        (sum, balance),
        (50_000 - CALL_COST_MICROS, 50_000 - CALL_COST_MICROS)
    );

    // The same hash again: refused, nothing forwarded or credited.
    let r = call_paid(&app, &hash, &[]).await;
    assert_eq!(r.status, 402);
    assert_eq!(
        r.body,
        json!({"error": format!("Payment {hash} on base-sepolia was already used"),
               "code": "PAYMENT_ALREADY_USED"})
    );
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(
        app.ledger_state(&account).await.1,
        50_000 - CALL_COST_MICROS
    );

    // A second payment by the same payer adds to the same account.
    let second = pay(&c, 10_000).await;
    assert_eq!(call_paid(&app, &second, &[]).await.status, 200);
    assert_eq!(
        app.ledger_state(&account).await.1,
        60_000 - 2 * CALL_COST_MICROS
    );

    // Free endpoints cost the quoted minimum.
    let third = pay(&c, 10_000).await;
    let r = app
        .get(
            "/v1/gateway/anthropic/v1/models",
            &[("X-Payment", &third), ("X-Payment-Chain", "base-sepolia")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app.get(&format!("/v1/payments/{third}"), &[]).await;
    assert_eq!(r.body["cost_usd"], 0.01);
    assert_eq!(r.body["credited_usd"], 0.0);
    // …and nothing when the provider answers with an error.
    let fourth = pay(&c, 10_000).await;
    let r = app
        .get(
            "/v1/gateway/anthropic/v1/models/no-such-model",
            &[("X-Payment", &fourth), ("X-Payment-Chain", "base-sepolia")],
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.text);
    let r = app.get(&format!("/v1/payments/{fourth}"), &[]).await;
    assert_eq!(
        (r.body["cost_usd"].clone(), r.body["credited_usd"].clone()),
        (json!(0.0), json!(0.01))
    );
    let credit = 80_000 - 2 * CALL_COST_MICROS - 10_000;
    assert_eq!(app.ledger_state(&account).await, (credit, credit));

    // Unknown and malformed hashes.
    let unknown = format!("0x{}", "ab".repeat(32));
    assert_eq!(
        app.get(&format!("/v1/payments/{unknown}"), &[])
            .await
            .status,
        404
    );
    let r = app.get("/v1/payments/0x1234", &[]).await;
    assert_eq!((r.status, r.body["field"].clone()), (400, json!("hash")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_payment_is_refused_with_its_reason_and_recorded_nowhere() {
    let c = chain().await;
    let (app, mock) = server(&c, system(), |_, _| None).await;
    let invalid = |r: &crate::support::Resp, reason: &str| {
        assert_eq!(r.status, 402, "{reason}: {}", r.text);
        assert_eq!(r.body["code"], "PAYMENT_INVALID", "{}", r.text);
        assert_eq!(r.body["reason"], reason, "{}", r.text);
    };

    let unknown = format!("0x{}", "cd".repeat(32));
    let r = call_paid(&app, &unknown, &[]).await;
    invalid(&r, "not_found");
    assert_eq!(
        r.body["error"],
        format!("transaction {unknown} was not found on base-sepolia")
    );

    // Reverted: the stranger holds no USDC.
    let reverted = c
        .anvil
        .transfer(USDC_BASE_SEPOLIA, &c.stranger, &c.pay_to, 10_000)
        .await;
    let receipt = c
        .anvil
        .rpc("eth_getTransactionReceipt", json!([reverted]))
        .await;
    assert_eq!(receipt["status"], "0x0", "{receipt}");
    invalid(&call_paid(&app, &reverted, &[]).await, "reverted");

    // Wrong token: the same contract at another address.
    let fake = "0x00000000000000000000000000000000000fa4e1";
    c.anvil.deploy_erc20(fake).await;
    c.anvil.mint(fake, &c.payer, 1_000_000).await;
    let wrong_token = c.anvil.transfer(fake, &c.payer, &c.pay_to, 50_000).await;
    invalid(&call_paid(&app, &wrong_token, &[]).await, "wrong_token");

    // Wrong recipient.
    let elsewhere = c
        .anvil
        .transfer(USDC_BASE_SEPOLIA, &c.payer, &c.stranger, 50_000)
        .await;
    let r = call_paid(&app, &elsewhere, &[]).await;
    invalid(&r, "wrong_recipient");

    // Underpaid by one base unit.
    let short = pay(&c, 9_999).await;
    let r = call_paid(&app, &short, &[]).await;
    invalid(&r, "underpaid");
    assert_eq!(
        (r.body["paid"].clone(), r.body["required"].clone()),
        (json!("9999"), json!("10000"))
    );

    // A chain this server does not accept; a malformed hash.
    let good = pay(&c, 10_000).await;
    let r = app
        .post(
            MESSAGES,
            hello(),
            &[("X-Payment", &good), ("X-Payment-Chain", "base")],
        )
        .await;
    invalid(&r, "wrong_chain");
    assert_eq!(
        r.body["error"],
        "X-Payment-Chain must be one of: base-sepolia"
    );
    let r = app
        .post(MESSAGES, hello(), &[("X-Payment", "0xnothex")])
        .await;
    invalid(&r, "malformed");

    assert!(mock.requests().is_empty(), "nothing was forwarded");
    for h in [&unknown, &reverted, &wrong_token, &elsewhere, &short, &good] {
        let r = app.get(&format!("/v1/payments/{h}"), &[]).await;
        assert_eq!(r.status, 404, "{h} was not recorded");
    }
    // The good payment was never consumed: it still pays (without a chain header, the
    // default chain is assumed).
    let r = app.post(MESSAGES, hello(), &[("X-Payment", &good)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_chain_rpc_old_payments_and_missing_confirmations_are_refused() {
    let c = chain().await;
    // The RPC configured for Base actually serves Base Sepolia's chain id.
    let (app, _mock) = server(&c, system(), |_, x| {
        let mut x = x.clone();
        x.chains = vec![ChainConfig {
            chain: Chain::Base,
            rpc_url: c.anvil.url.clone().into(),
            usdc: USDC_BASE_SEPOLIA.parse().unwrap(),
            usdc_domain: aibank_x402::exact::TokenDomain::usdc(Chain::Base),
        }];
        x.default_chain = Chain::Base;
        Some(x)
    })
    .await;
    let hash = pay(&c, 10_000).await;
    let r = app
        .post(
            MESSAGES,
            hello(),
            &[("X-Payment", &hash), ("X-Payment-Chain", "base")],
        )
        .await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["reason"], "wrong_chain");
    assert_eq!(
        r.body["error"],
        "the RPC endpoint for base serves chain id 84532, not 8453"
    );

    // Too old: the server's clock is an hour past the block, the limit ten minutes.
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let late = Arc::new(ManualClock::new(now + 3_600_000));
    let (app, _mock) = server(&c, late, |_, x| {
        let mut x = x.clone();
        x.max_age = Some(Duration::from_secs(600));
        Some(x)
    })
    .await;
    let r = call_paid(&app, &hash, &[]).await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["reason"], "too_old");

    // Three confirmations required: refused at one, accepted once two more blocks exist.
    let (app, _mock) = server(&c, system(), |_, x| {
        let mut x = x.clone();
        x.confirmations = 3;
        Some(x)
    })
    .await;
    let fresh = pay(&c, 10_000).await;
    let r = call_paid(&app, &fresh, &[]).await;
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(
        (
            r.body["reason"].clone(),
            r.body["confirmations"].clone(),
            r.body["required"].clone()
        ),
        (json!("not_enough_confirmations"), json!(1), json!(3))
    );
    c.anvil.mine(2).await;
    assert_eq!(call_paid(&app, &fresh, &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_uses_of_one_payment_serve_exactly_one_call() {
    let c = chain().await;
    let (app, mock) = server(&c, system(), |_, _| None).await;
    let hash = pay(&c, 20_000).await;
    let results = futures_util::future::join_all((0..50).map(|_| {
        let (app, hash) = (&app, hash.clone());
        async move { call_paid(app, &hash, &[]).await }
    }))
    .await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let used = results
        .iter()
        .filter(|r| r.status == 402 && r.body["code"] == "PAYMENT_ALREADY_USED")
        .count();
    assert_eq!(
        (ok, used),
        (1, 49),
        "{:?}",
        results.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(mock.requests().len(), 1);
    let account = format!("x402_base-sepolia_{}", &c.payer[2..]);
    let (sum, balance) = app.ledger_state(&account).await;
    assert_eq!(
        (sum, balance),
        (20_000 - CALL_COST_MICROS, 20_000 - CALL_COST_MICROS)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_rpc_is_503_and_the_payment_works_once_it_is_back() {
    let mut c = chain().await;
    let (app, mock) = server(&c, system(), |_, _| None).await;
    let hash = pay(&c, 10_000).await;
    let state = c.anvil.stop().await;
    let r = call_paid(&app, &hash, &[]).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(
        r.body,
        json!({"error": "Payment verification is unavailable: the base-sepolia RPC endpoint did not answer. The payment was not used; retry shortly.",
               "code": "UNAVAILABLE"})
    );
    assert!(
        !r.text.contains("127.0.0.1"),
        "the RPC URL is not disclosed"
    );
    assert!(mock.requests().is_empty());
    c.anvil.resume(state).await;
    let r = call_paid(&app, &hash, &[]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(call_paid(&app, &hash, &[]).await.status, 402);
    // The transfer checks out on chain each time it is presented; only its second use is
    // refused, when it is recorded.
    for (outcome, n) in [("unavailable", 1.0), ("ok", 2.0), ("refused", 0.0)] {
        let series = format!(r#"aibank_x402_verifications_total{{outcome="{outcome}"}}"#);
        assert_eq!(app.metric(&series).await, Some(n), "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payer_signatures_bind_a_payment_to_its_sender() {
    let c = chain().await;
    let (app, mock) = server(&c, system(), |_, x| {
        let mut x = x.clone();
        x.require_signature = true;
        Some(x)
    })
    .await;
    let hash = pay(&c, 10_000).await;
    let payer = checksum(&c.payer);

    // Someone who saw the hash in the mempool cannot spend it without the payer's signature.
    let r = call_paid(&app, &hash, &[]).await;
    assert_eq!(r.status, 402);
    assert_eq!(
        r.body,
        json!({"error": format!("X-Payment-Signature is required: an EIP-191 signature of the transaction hash by the payer {payer}"),
               "code": "PAYMENT_INVALID", "reason": "signature_missing"})
    );
    let forged = c.anvil.sign(&c.stranger, &hash).await;
    let r = call_paid(&app, &hash, &[("X-Payment-Signature", &forged)]).await;
    assert_eq!(r.body["reason"], "signature_invalid", "{}", r.text);
    let r = call_paid(&app, &hash, &[("X-Payment-Signature", "0x1234")]).await;
    assert_eq!(r.body["reason"], "signature_invalid", "{}", r.text);
    assert!(mock.requests().is_empty());

    // The payer's own signature: accepted, and the hash is then used up.
    let signed = c.anvil.sign(&c.payer, &hash).await;
    let r = call_paid(&app, &hash, &[("X-Payment-Signature", &signed)]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = call_paid(&app, &hash, &[("X-Payment-Signature", &signed)]).await;
    assert_eq!(r.body["code"], "PAYMENT_ALREADY_USED");

    // Without the requirement a signature is optional, but a wrong one is still refused.
    let (app, _mock) = server(&c, system(), |_, _| None).await;
    let hash = pay(&c, 10_000).await;
    let forged = c.anvil.sign(&c.stranger, &hash).await;
    let r = call_paid(&app, &hash, &[("X-Payment-Signature", &forged)]).await;
    assert_eq!(r.body["reason"], "signature_invalid");
    assert_eq!(call_paid(&app, &hash, &[]).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_key_never_pays() {
    let c = chain().await;
    let (app, _mock) = server(&c, system(), |_, _| None).await;
    let Agent { key, .. } = app.agent().await;
    let hash = pay(&c, 10_000).await;
    let r = app
        .post(
            MESSAGES,
            hello(),
            &[("X-API-Key", &key), ("X-Payment", &hash)],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["x-aibank-balance-usd"], "9.999862");
    assert_eq!(
        app.get(&format!("/v1/payments/{hash}"), &[]).await.status,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_that_never_answers_times_out_into_503() {
    let c = chain().await;
    // Accepts connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Hosted RPC URLs carry an API key in the path: it must reach no log and no response.
    let url = format!(
        "http://{}/v2/rpc-secret-9f8e7d",
        silent.local_addr().unwrap()
    );
    let held = std::thread::spawn(move || {
        let mut open = Vec::new();
        for conn in silent.incoming().take(8) {
            open.push(conn);
        }
    });
    let (app, mock) = server(&c, system(), |_, x| {
        let mut x = x.clone();
        x.chains[0].rpc_url = url.clone().into();
        x.rpc_timeout = Duration::from_secs(1);
        Some(x)
    })
    .await;
    let hash = pay(&c, 10_000).await;
    let started = std::time::Instant::now();
    let r = call_paid(&app, &hash, &[]).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert_eq!(r.body["code"], "UNAVAILABLE");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(mock.requests().is_empty());
    assert_eq!(
        app.get(&format!("/v1/payments/{hash}"), &[]).await.status,
        404
    );
    assert!(!r.text.contains("rpc-secret"));
    drop(held);

    // Nothing listening at all: the connection error names the URL; it is redacted.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/v2/rpc-secret-9f8e7d",
        closed.local_addr().unwrap()
    );
    drop(closed);
    let (app, _mock) = server(&c, system(), |_, x| {
        let mut x = x.clone();
        x.chains[0].rpc_url = url.clone().into();
        Some(x)
    })
    .await;
    let r = call_paid(&app, &hash, &[]).await;
    assert_eq!(r.status, 503, "{}", r.text);
    assert!(!r.text.contains("rpc-secret"));
    let logs = crate::support::captured_logs();
    assert!(
        logs.contains("payment verification unavailable"),
        "the failure is logged"
    );
    let leaks: Vec<&str> = logs.lines().filter(|l| l.contains("rpc-secret")).collect();
    assert!(leaks.is_empty(), "an RPC URL reached the logs: {leaks:#?}");
}

// ---- Standard x402 payments: signed EIP-3009 authorizations settled by the server ----

/// anvil's first development account: it sends the settlements and pays their gas.
const SETTLER_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

/// A chain with the project's EIP-3009 token at the Base Sepolia USDC address, and payers
/// that hold USDC but no ETH (they never send a transaction).
struct Standard {
    anvil: Anvil,
    pay_to: String,
}

async fn standard_chain() -> Standard {
    let anvil = Anvil::start(CHAIN_BASE_SEPOLIA).await;
    anvil.deploy_eip3009(USDC_BASE_SEPOLIA).await;
    let pay_to = anvil.accounts().await[9].clone();
    Standard { anvil, pay_to }
}

fn standard_settings(s: &Standard) -> X402Settings {
    X402Settings {
        settler_key: Some(SETTLER_KEY.to_owned().into()),
        settle_wait: Duration::from_secs(10),
        ..settings(&s.anvil, &s.pay_to)
    }
}

async fn standard_server(
    s: &Standard,
    customize: impl FnOnce(&mut X402Settings),
) -> (TestApp, MockUpstream) {
    let mock = MockUpstream::start().await;
    let base = mock.base.clone();
    let mut x = standard_settings(s);
    customize(&mut x);
    let app = spawn_app_with_clock(system(), move |cfg| {
        use_mock_upstream(cfg, &base, true);
        cfg.x402 = Some(x);
    })
    .await;
    (app, mock)
}

async fn payer(s: &Standard, usdc: u128) -> PrivateKeySigner {
    let key = PrivateKeySigner::random();
    s.anvil
        .mint_eip3009(USDC_BASE_SEPOLIA, &format!("{:#x}", key.address()), usdc)
        .await;
    key
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(v.to_string())
}

fn unb64(h: &str) -> Value {
    serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(h).unwrap()).unwrap()
}

/// The v2 requirements of a 402.
fn required(r: &crate::support::Resp) -> Value {
    unb64(r.headers["payment-required"].to_str().unwrap())
}

/// What a client signs: the authorization for `offer` (a v2 `accepts` entry).
struct Auth {
    from: Address,
    to: Address,
    value: u64,
    valid_after: u64,
    valid_before: u64,
    nonce: B256,
}

impl Auth {
    fn for_offer(key: &PrivateKeySigner, offer: &Value) -> Auth {
        Auth {
            from: key.address(),
            to: offer["payTo"].as_str().unwrap().parse().unwrap(),
            value: offer["amount"].as_str().unwrap().parse().unwrap(),
            valid_after: 0,
            valid_before: now_secs() + 300,
            nonce: B256::from_slice(&PrivateKeySigner::random().to_bytes()[..]),
        }
    }

    /// The payload's `payload`, signed by `key` in the token's EIP-712 domain.
    fn signed(&self, key: &PrivateKeySigner) -> Value {
        let offer = aibank_x402::exact::Offer {
            chain: Chain::BaseSepolia,
            asset: USDC_BASE_SEPOLIA.parse().unwrap(),
            pay_to: self.to,
            amount: self.value,
            max_timeout_secs: 300,
            domain: aibank_x402::exact::TokenDomain::usdc(Chain::BaseSepolia),
        };
        let a = aibank_x402::exact::Authorization {
            from: self.from,
            to: self.to,
            value: U256::from(self.value),
            valid_after: U256::from(self.valid_after),
            valid_before: U256::from(self.valid_before),
            nonce: self.nonce,
        };
        let sig = key
            .sign_hash_sync(&aibank_x402::exact::signing_hash(&offer, &a))
            .unwrap();
        json!({
            "signature": format!("0x{}", alloy::hex::encode(sig.as_bytes())),
            "authorization": {
                "from": self.from.to_checksum(None), "to": self.to.to_checksum(None),
                "value": self.value.to_string(), "validAfter": self.valid_after.to_string(),
                "validBefore": self.valid_before.to_string(), "nonce": format!("{:#x}", self.nonce),
            }
        })
    }
}

fn v2_header(offer: &Value, payload: Value) -> (&'static str, String) {
    (
        "PAYMENT-SIGNATURE",
        b64(&json!({"x402Version": 2, "accepted": offer, "payload": payload})),
    )
}

fn v1_header(payload: Value) -> (&'static str, String) {
    (
        "X-PAYMENT",
        b64(
            &json!({"x402Version": 1, "scheme": "exact", "network": "base-sepolia",
                    "payload": payload}),
        ),
    )
}

async fn call_with(app: &TestApp, header: &(&str, String)) -> crate::support::Resp {
    app.post(MESSAGES, hello(), &[(header.0, header.1.as_str())])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_402_offers_x402_v1_and_v2_requirements_when_a_settler_is_set() {
    let s = standard_chain().await;
    let (app, _mock) = standard_server(&s, |_| {}).await;
    let r = app.post(MESSAGES, hello(), &[]).await;
    assert_eq!(r.status, 402, "{}", r.text);
    let (pay_to, usdc) = (checksum(&s.pay_to), checksum(USDC_BASE_SEPOLIA));
    let url = format!("{}{MESSAGES}", app.base);
    let description = format!("API call: POST {MESSAGES}");
    assert_eq!(
        r.body["accepts"],
        json!([{
            "scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "10000",
            "asset": usdc, "payTo": pay_to, "resource": url, "description": description,
            "mimeType": "application/json", "maxTimeoutSeconds": 300,
            "extra": {"name": "USDC", "version": "2"},
        }])
    );
    assert_eq!(r.body["payment"]["amount"], "0.01", "aibank's shape stays");
    assert_eq!(r.headers["x-payment-amount"], "0.01");
    assert_eq!(
        required(&r),
        json!({
            "x402Version": 2, "error": "PAYMENT-SIGNATURE header is required",
            "resource": {"url": url, "description": description, "mimeType": "application/json"},
            "accepts": [{
                "scheme": "exact", "network": "eip155:84532", "amount": "10000", "asset": usdc,
                "payTo": pay_to, "maxTimeoutSeconds": 300,
                "extra": {"name": "USDC", "version": "2"},
            }],
        })
    );
    // Without a settlement account the hash flow alone is offered.
    let (plain, _m) = standard_server(&s, |x| x.settler_key = None).await;
    let r = plain.post(MESSAGES, hello(), &[]).await;
    assert_eq!(r.status, 402);
    assert_eq!(r.body["accepts"], json!([]));
    assert!(r.headers.get("payment-required").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_payment_is_settled_on_chain_then_served_and_a_v1_payment_too() {
    let s = standard_chain().await;
    let (app, mock) = standard_server(&s, |_| {}).await;
    let key = payer(&s, 1_000_000).await;
    let offer = required(&app.post(MESSAGES, hello(), &[]).await)["accepts"][0].clone();
    let r = call_with(
        &app,
        &v2_header(&offer, Auth::for_offer(&key, &offer).signed(&key)),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(mock.requests().len(), 1);
    assert!(
        mock.last_request()
            .unwrap()
            .header("payment-signature")
            .is_none(),
        "the payment never goes upstream"
    );
    let settled = unb64(r.headers["payment-response"].to_str().unwrap());
    let tx = settled["transaction"].as_str().unwrap().to_owned();
    assert_eq!(
        settled,
        json!({"success": true, "transaction": tx, "network": "eip155:84532",
               "payer": key.address().to_checksum(None)})
    );
    let payer_hex = format!("{:#x}", key.address());
    assert_eq!(
        s.anvil.balance_of(USDC_BASE_SEPOLIA, &payer_hex).await,
        990_000
    );
    assert_eq!(
        s.anvil.balance_of(USDC_BASE_SEPOLIA, &s.pay_to).await,
        10_000
    );
    // Billed as in the hash flow: the payment credited, the call billed from its usage.
    assert_eq!(r.headers["x-aibank-cost-usd"], "0.000138");
    let account = format!("x402_base-sepolia_{}", &payer_hex[2..]);
    let left = 10_000 - CALL_COST_MICROS;
    assert_eq!(app.ledger_state(&account).await, (left, left));
    let p = app.get(&format!("/v1/payments/{tx}"), &[]).await;
    assert_eq!(p.status, 200, "{}", p.text);
    assert_eq!(p.body["amount_usdc"], json!(0.01));
    assert_eq!(p.body["payer"], key.address().to_checksum(None));

    // x402 v1: X-PAYMENT, answered with X-PAYMENT-RESPONSE; it may pay more than asked.
    let mut a = Auth::for_offer(&key, &offer);
    a.value = 20_000;
    a.valid_after = now_secs() - 600;
    let r = call_with(&app, &v1_header(a.signed(&key))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let settled = unb64(r.headers["x-payment-response"].to_str().unwrap());
    assert_eq!(
        (settled["success"].clone(), settled["network"].clone()),
        (json!(true), json!("base-sepolia"))
    );
    assert!(r.headers.get("payment-response").is_none());
    assert!(mock.last_request().unwrap().header("x-payment").is_none());
    assert_eq!(
        app.ledger_state(&account).await.1,
        left + 20_000 - CALL_COST_MICROS
    );
    assert_eq!(mock.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refused_authorization_has_its_reason_and_nothing_is_forwarded() {
    let s = standard_chain().await;
    let (app, mock) = standard_server(&s, |_| {}).await;
    let key = payer(&s, 1_000_000).await;
    let poor = payer(&s, 5_000).await;
    let offer = required(&app.post(MESSAGES, hello(), &[]).await)["accepts"][0].clone();
    let refused = |r: crate::support::Resp, reason: &str| {
        assert_eq!(r.status, 402, "{reason}: {}", r.text);
        assert_eq!(r.body["code"], "PAYMENT_INVALID", "{reason}");
        assert_eq!(r.body["reason"], reason, "{}", r.text);
        assert!(
            r.headers.contains_key("payment-required"),
            "{reason}: requirements again"
        );
    };
    let good = || Auth::for_offer(&key, &offer);

    let other = PrivateKeySigner::random();
    refused(
        call_with(&app, &v2_header(&offer, good().signed(&other))).await,
        "invalid_signature",
    );
    let mut a = good();
    a.to = Address::repeat_byte(1);
    refused(
        call_with(&app, &v2_header(&offer, a.signed(&key))).await,
        "wrong_recipient",
    );
    let mut a = good();
    a.value = 9_999;
    refused(
        call_with(&app, &v2_header(&offer, a.signed(&key))).await,
        "amount_mismatch",
    );
    let mut cheaper = offer.clone();
    cheaper["amount"] = json!("1");
    refused(
        call_with(&app, &v2_header(&cheaper, good().signed(&key))).await,
        "amount_mismatch",
    );
    let mut a = good();
    a.valid_before = now_secs() + 2;
    refused(
        call_with(&app, &v2_header(&offer, a.signed(&key))).await,
        "expired",
    );
    let mut a = good();
    a.valid_after = now_secs() + 120;
    refused(
        call_with(&app, &v2_header(&offer, a.signed(&key))).await,
        "not_yet_valid",
    );
    let mut mainnet = offer.clone();
    mainnet["network"] = json!("eip155:8453");
    refused(
        call_with(&app, &v2_header(&mainnet, good().signed(&key))).await,
        "wrong_network",
    );
    let mut upto = offer.clone();
    upto["scheme"] = json!("upto");
    refused(
        call_with(&app, &v2_header(&upto, good().signed(&key))).await,
        "unsupported_scheme",
    );
    refused(
        call_with(&app, &("PAYMENT-SIGNATURE", "bm90IGpzb24=".to_owned())).await,
        "malformed",
    );
    refused(
        call_with(
            &app,
            &v2_header(&offer, Auth::for_offer(&poor, &offer).signed(&poor)),
        )
        .await,
        "insufficient_balance",
    );
    // A nonce already used: the second presentation of a settled authorization.
    let used = good();
    let payload = used.signed(&key);
    assert_eq!(
        call_with(&app, &v2_header(&offer, payload.clone()))
            .await
            .status,
        200
    );
    refused(
        call_with(&app, &v2_header(&offer, payload)).await,
        "nonce_used",
    );
    assert_eq!(
        mock.requests().len(),
        1,
        "only the good payment was forwarded"
    );
    assert_eq!(
        s.anvil.balance_of(USDC_BASE_SEPOLIA, &s.pay_to).await,
        10_000,
        "only the good payment was settled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_authorization_presented_twenty_times_at_once_settles_and_serves_once() {
    let s = standard_chain().await;
    let (app, mock) = standard_server(&s, |_| {}).await;
    let key = payer(&s, 1_000_000).await;
    let offer = required(&app.post(MESSAGES, hello(), &[]).await)["accepts"][0].clone();
    let header = v2_header(&offer, Auth::for_offer(&key, &offer).signed(&key));
    let app = Arc::new(app);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (app, header) = (app.clone(), header.clone());
            tokio::spawn(async move { call_with(&app, &header).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            402 | 503 => {}
            other => panic!("{other}: {}", r.text),
        }
    }
    assert_eq!(ok, 1, "served once");
    assert_eq!(mock.requests().len(), 1);
    assert_eq!(
        s.anvil.balance_of(USDC_BASE_SEPOLIA, &s.pay_to).await,
        10_000
    );
    // Sequentially, again: refused.
    let r = call_with(&app, &header).await;
    assert_eq!(
        (r.status, r.body["reason"].clone()),
        (402, json!("nonce_used"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_payers_at_once_settle_eight_times() {
    let s = standard_chain().await;
    let (app, mock) = standard_server(&s, |_| {}).await;
    let offer = required(&app.post(MESSAGES, hello(), &[]).await)["accepts"][0].clone();
    let mut headers = Vec::new();
    for _ in 0..8 {
        let key = payer(&s, 100_000).await;
        headers.push(v2_header(
            &offer,
            Auth::for_offer(&key, &offer).signed(&key),
        ));
    }
    let app = Arc::new(app);
    let tasks: Vec<_> = headers
        .into_iter()
        .map(|h| {
            let app = app.clone();
            tokio::spawn(async move { call_with(&app, &h).await })
        })
        .collect();
    let mut txs = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text);
        txs.insert(unb64(r.headers["payment-response"].to_str().unwrap())["transaction"].clone());
    }
    assert_eq!(txs.len(), 8);
    assert_eq!(mock.requests().len(), 8);
    assert_eq!(
        s.anvil.balance_of(USDC_BASE_SEPOLIA, &s.pay_to).await,
        80_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_rpc_is_503_then_the_same_authorization_pays() {
    let mut s = standard_chain().await;
    let (app, mock) = standard_server(&s, |_| {}).await;
    let key = payer(&s, 1_000_000).await;
    let offer = required(&app.post(MESSAGES, hello(), &[]).await)["accepts"][0].clone();
    let header = v2_header(&offer, Auth::for_offer(&key, &offer).signed(&key));
    let state = s.anvil.stop().await;
    let r = call_with(&app, &header).await;
    assert_eq!(
        (r.status, r.body["code"].clone()),
        (503, json!("UNAVAILABLE")),
        "{}",
        r.text
    );
    assert!(
        !r.text.contains("127.0.0.1"),
        "the RPC URL is not disclosed"
    );
    assert!(mock.requests().is_empty());
    s.anvil.resume(state).await;
    let r = call_with(&app, &header).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        s.anvil.balance_of(USDC_BASE_SEPOLIA, &s.pay_to).await,
        10_000
    );
    for (outcome, n) in [("unavailable", 1.0), ("ok", 1.0), ("refused", 0.0)] {
        let series = format!(r#"aibank_x402_settlements_total{{outcome="{outcome}"}}"#);
        assert_eq!(app.metric(&series).await, Some(n), "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funds_moved_before_settlement_is_a_failed_settlement_and_nothing_is_served() {
    let s = standard_chain().await;
    let (app, mock) = standard_server(&s, |_| {}).await;
    // A payer that can also move its funds itself: an unlocked development account.
    let key: PrivateKeySigner = "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
        .parse()
        .unwrap();
    let from = format!("{:#x}", key.address());
    s.anvil.mint_eip3009(USDC_BASE_SEPOLIA, &from, 10_000).await;
    let offer = required(&app.post(MESSAGES, hello(), &[]).await)["accepts"][0].clone();
    let header = v2_header(&offer, Auth::for_offer(&key, &offer).signed(&key));
    // Blocks are mined by hand: the settlement waits in the pool while the payer's own
    // transfer, with a higher tip, goes first in the same block.
    s.anvil.rpc("evm_setAutomine", json!([false])).await;
    let call = {
        let app = Arc::new(app);
        let a = app.clone();
        (
            tokio::spawn(async move { call_with(&a, &header).await }),
            app,
        )
    };
    for _ in 0..100 {
        let pool = s.anvil.rpc("txpool_content", json!([])).await;
        if pool["pending"].as_object().is_some_and(|p| !p.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain = format!("0xa9059cbb{:0>64}{:0>64x}", &s.pay_to[2..], 10_000);
    let tx = json!({"from": from, "to": USDC_BASE_SEPOLIA, "data": drain, "gas": "0x30000",
                    "maxPriorityFeePerGas": "0x2540be400", "maxFeePerGas": "0x174876e800"});
    s.anvil.rpc("eth_sendTransaction", json!([tx])).await;
    s.anvil.rpc("evm_mine", json!([])).await;
    s.anvil.rpc("evm_setAutomine", json!([true])).await;
    let r = call.0.await.unwrap();
    assert_eq!(r.status, 402, "{}", r.text);
    assert_eq!(r.body["reason"], "settlement_failed");
    let settled = unb64(r.headers["payment-response"].to_str().unwrap());
    assert_eq!(settled["success"], false);
    assert!(mock.requests().is_empty(), "nothing served");
    let _ = call.1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credits_are_bought_with_a_standard_payment_or_a_signed_hash_once() {
    let s = standard_chain().await;
    let (app, _mock) = standard_server(&s, |_| {}).await;
    let Agent {
        id: agent,
        key: api_key,
        ..
    } = app.agent().await;
    let before = app.ledger_state(&agent).await.1;
    let topup = |amount: Value, h: Vec<(&'static str, String)>| {
        let app = &app;
        let api_key = api_key.clone();
        async move {
            let mut headers = vec![("X-API-Key", api_key.clone())];
            headers.extend(h);
            let hs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            app.post("/v1/credits/topup", json!({"amount_usd": amount}), &hs)
                .await
        }
    };
    // Out of bounds.
    for bad in [json!("0.5"), json!("1000.01")] {
        let r = topup(bad, vec![]).await;
        assert_eq!(
            (r.status, r.body["field"].clone()),
            (400, json!("amount_usd")),
            "{}",
            r.text
        );
    }
    let r = topup(json!("5"), vec![]).await;
    assert_eq!(r.status, 402, "{}", r.text);
    let offer = required(&r)["accepts"][0].clone();
    assert_eq!(offer["amount"], "5000000");
    let key = payer(&s, 20_000_000).await;
    let header = v2_header(&offer, Auth::for_offer(&key, &offer).signed(&key));
    let r = topup(json!("5"), vec![header.clone()]).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let tx = r.body["transaction"].as_str().unwrap().to_owned();
    assert_eq!(
        r.body,
        json!({"credits_usd": Usd::from_micros(before + 5_000_000), "paid_usd": 5.0,
               "transaction": tx, "chain": "base-sepolia"})
    );
    assert!(r.headers.contains_key("payment-response"));
    // Replayed: refused, nothing credited.
    let r = topup(json!("5"), vec![header]).await;
    assert_eq!(
        (r.status, r.body["reason"].clone()),
        (402, json!("nonce_used")),
        "{}",
        r.text
    );
    assert_eq!(app.ledger_state(&agent).await.1, before + 5_000_000);

    // With a transaction hash: the payer's signature is required.
    let payer_key: PrivateKeySigner =
        "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
            .parse()
            .unwrap();
    let from = format!("{:#x}", payer_key.address());
    s.anvil
        .mint_eip3009(USDC_BASE_SEPOLIA, &from, 2_000_000)
        .await;
    let hash = s
        .anvil
        .transfer(USDC_BASE_SEPOLIA, &from, &s.pay_to, 2_000_000)
        .await;
    let with = |sig: Option<String>| {
        let mut h = vec![
            ("X-Payment", hash.clone()),
            ("X-Payment-Chain", "base-sepolia".to_owned()),
        ];
        if let Some(sig) = sig {
            h.push(("X-Payment-Signature", sig));
        }
        h
    };
    let r = topup(json!("2"), with(None)).await;
    assert_eq!(
        (r.status, r.body["reason"].clone()),
        (402, json!("signature_missing")),
        "{}",
        r.text
    );
    let sig = payer_key
        .sign_message_sync(hash.parse::<B256>().unwrap().as_slice())
        .unwrap();
    let sig = format!("0x{}", alloy::hex::encode(sig.as_bytes()));
    let r = topup(json!("2"), with(Some(sig.clone()))).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["paid_usd"], json!(2.0));
    assert_eq!(app.ledger_state(&agent).await.1, before + 7_000_000);
    let r = topup(json!("2"), with(Some(sig))).await;
    assert_eq!(
        (r.status, r.body["code"].clone()),
        (402, json!("PAYMENT_ALREADY_USED"))
    );
    assert_eq!(app.ledger_state(&agent).await.1, before + 7_000_000);
    // The journal says what the money was.
    let (pool, id) = (app.pool.clone(), agent.clone());
    let kinds: Vec<String> = tokio::task::spawn_blocking(move || {
        use aibank_store::schema::journal_entries::dsl as j;
        use diesel::prelude::*;
        let mut c = pool.get().unwrap();
        j::journal_entries
            .filter(j::account_id.eq(&id))
            .select(j::kind)
            .load(&mut c)
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        kinds.iter().filter(|k| *k == "x402_topup").count(),
        2,
        "{kinds:?}"
    );
}

/// The official x402 clients, as agents run them: Python `x402[httpx,evm]` and TypeScript
/// `@x402/fetch` + `@x402/evm`, pinned beside their scripts in `tests/x402_clients` and
/// installed by `scripts/install-x402-clients` (CI sets `AIBANK_TEST_X402_CLIENTS=1`, which
/// makes them required; skipped, loudly, without them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_x402_clients_pay_for_calls_and_buy_credits() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/x402_clients");
    let python = format!("{root}/.tools/x402-venv/bin/python");
    let installed = std::path::Path::new(&python).exists()
        && std::path::Path::new(&format!("{dir}/node_modules/@x402/fetch")).exists();
    if !installed {
        assert!(
            std::env::var("AIBANK_TEST_X402_CLIENTS").map_or(true, |v| v != "1"),
            "AIBANK_TEST_X402_CLIENTS=1 but the x402 clients are not installed (scripts/install-x402-clients)"
        );
        eprintln!("SKIPPED: run scripts/install-x402-clients to test the official x402 clients");
        return;
    }
    let s = standard_chain().await;
    let (app, mock) = standard_server(&s, |_| {}).await;
    let Agent {
        id: agent,
        key: api_key,
        ..
    } = app.agent().await;
    let before = app.ledger_state(&agent).await.1;
    let clients = [
        (python.clone(), format!("{dir}/pay.py")),
        ("node".to_owned(), format!("{dir}/pay.mjs")),
    ];
    let mut paid_to_us = 0;
    for (i, (program, script)) in clients.iter().enumerate() {
        let key = payer(&s, 20_000_000).await;
        let key_hex = alloy::hex::encode(key.to_bytes());
        let run = |args: Vec<String>| {
            let (program, script, key_hex) = (program.clone(), script.clone(), key_hex.clone());
            async move {
                let out = tokio::process::Command::new(&program)
                    .arg(&script)
                    .arg("--private-key")
                    .arg(&key_hex)
                    .args(&args)
                    .output()
                    .await
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{script}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                serde_json::from_slice::<Value>(&out.stdout).unwrap()
            }
        };
        // A gateway call, paid with x402 v2 (the server's PAYMENT-REQUIRED header).
        let r = run(vec![
            "--url".into(),
            format!("{}{MESSAGES}", app.base),
            "--method".into(),
            "POST".into(),
            "--json".into(),
            hello().to_string(),
        ])
        .await;
        assert_eq!(r["status"], 200, "{script}: {r}");
        assert_eq!(r["body"]["type"], "message", "{r}");
        let settled = &r["payment_response"];
        assert_eq!(settled["success"], true, "{r}");
        assert_eq!(settled["network"], "eip155:84532");
        assert_eq!(settled["payer"], key.address().to_checksum(None));
        assert_eq!(mock.requests().len(), i + 1);
        paid_to_us += 10_000;
        let tx = settled["transaction"].as_str().unwrap();
        let p = app.get(&format!("/v1/payments/{tx}"), &[]).await;
        assert_eq!(
            (p.status, p.body["cost_usd"].clone()),
            (200, json!(0.000138)),
            "{}",
            p.text
        );

        // Credits bought for the agent's own account (past the clients' default $1 cap).
        let r = run(vec![
            "--url".into(),
            format!("{}/v1/credits/topup", app.base),
            "--method".into(),
            "POST".into(),
            "--json".into(),
            json!({"amount_usd": "5"}).to_string(),
            "--header".into(),
            format!("X-API-Key:{api_key}"),
            "--no-spend-controls".into(),
        ])
        .await;
        assert_eq!(r["status"], 200, "{script}: {r}");
        // Compared as numbers: a client may read 5.0 back as 5.
        assert_eq!(r["body"]["paid_usd"].as_f64(), Some(5.0), "{r}");
        assert_eq!(r["payment_response"]["success"], true);
        paid_to_us += 5_000_000;
        assert_eq!(
            app.ledger_state(&agent).await.1,
            before + 5_000_000 * (i64::try_from(i).unwrap() + 1)
        );
    }
    assert_eq!(
        s.anvil.balance_of(USDC_BASE_SEPOLIA, &s.pay_to).await,
        paid_to_us
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settlement_not_mined_in_time_is_pending_then_resolved_from_the_chain_once() {
    let s = standard_chain().await;
    let (app, mock) = standard_server(&s, |x| x.settle_wait = Duration::from_secs(1)).await;
    let key = payer(&s, 1_000_000).await;
    let offer = required(&app.post(MESSAGES, hello(), &[]).await)["accepts"][0].clone();
    let header = v2_header(&offer, Auth::for_offer(&key, &offer).signed(&key));
    // No block is mined: the settlement waits in the pool past the wait.
    s.anvil.rpc("evm_setAutomine", json!([false])).await;
    let r = call_with(&app, &header).await;
    assert_eq!(
        (r.status, r.body["code"].clone()),
        (503, json!("UNAVAILABLE")),
        "{}",
        r.text
    );
    let tx = r.body["transaction"].as_str().unwrap().to_owned();
    assert!(mock.requests().is_empty(), "nothing served while pending");
    // Still pending: the same answer, the same transaction, nothing sent again.
    let again = call_with(&app, &header).await;
    assert_eq!(
        (again.status, again.body["transaction"].clone()),
        (503, json!(tx))
    );
    let pool = s.anvil.rpc("txpool_content", json!([])).await;
    let pending: usize = pool["pending"]
        .as_object()
        .unwrap()
        .values()
        .map(|txs| txs.as_object().unwrap().len())
        .sum();
    assert_eq!(pending, 1, "one settlement in the pool: {pool}");
    s.anvil.rpc("evm_mine", json!([])).await;
    s.anvil.rpc("evm_setAutomine", json!([true])).await;
    // Mined now: the same authorization is served, once.
    let r = call_with(&app, &header).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let settled = unb64(r.headers["payment-response"].to_str().unwrap());
    assert_eq!(settled["transaction"], tx.as_str());
    assert_eq!(mock.requests().len(), 1);
    let r = call_with(&app, &header).await;
    assert_eq!(
        (r.status, r.body["reason"].clone()),
        (402, json!("nonce_used"))
    );
    assert_eq!(
        s.anvil.balance_of(USDC_BASE_SEPOLIA, &s.pay_to).await,
        10_000
    );
}
