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

use aibank_core::{ManualClock, SharedClock, SystemClock, Usd};
use aibank_server::Config;
use aibank_testkit::anvil::{Anvil, CHAIN_BASE_SEPOLIA, USDC_BASE_SEPOLIA};
use aibank_testkit::mock_upstream::MockUpstream;
use aibank_testkit::{spawn_app_with_clock, use_mock_upstream, TestApp};
use aibank_x402::{Chain, ChainConfig, X402Settings};
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
    X402Settings {
        pay_to: pay_to.parse().unwrap(),
        chains: vec![ChainConfig {
            chain: Chain::BaseSepolia,
            rpc_url: anvil.url.clone().into(),
            usdc: Chain::BaseSepolia.default_usdc(),
        }],
        default_chain: Chain::BaseSepolia,
        confirmations: 1,
        max_age: None,
        require_signature: false,
        min_price: Usd::from_micros(10_000),
        rpc_timeout: Duration::from_secs(3),
    }
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

async fn call_paid(app: &TestApp, hash: &str, extra: &[(&str, &str)]) -> aibank_testkit::Resp {
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
            "accepts": [{
                "scheme": "exact", "network": "base-sepolia", "maxAmountRequired": "10000",
                "asset": usdc, "payTo": pay_to, "resource": MESSAGES,
                "description": description, "mimeType": "application/json",
                "maxTimeoutSeconds": 600, "extra": {"name": "USDC", "decimals": 6},
            }],
        })
    );
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
    let quoted: i64 = r.body["accepts"][0]["maxAmountRequired"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
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
    let invalid = |r: &aibank_testkit::Resp, reason: &str| {
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
    let (_, key) = app.register().await;
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
    let logs = aibank_testkit::captured_logs();
    assert!(
        logs.contains("payment verification unavailable"),
        "the failure is logged"
    );
    let leaks: Vec<&str> = logs.lines().filter(|l| l.contains("rpc-secret")).collect();
    assert!(leaks.is_empty(), "an RPC URL reached the logs: {leaks:#?}");
}
