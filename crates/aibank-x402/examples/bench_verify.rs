//! Payment verifications per second against a local anvil node: cold (every receipt read
//! over JSON-RPC) and with the receipt already seen (remembered by the verifier), with one
//! required confirmation and with two (which reads the chain head each time).
//! Run by `scripts/bench-x402`; `BENCH_PAYMENTS` sets how many distinct payments (500).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

use std::time::{Duration, Instant};

use aibank_testkit::anvil::{Anvil, CHAIN_BASE_SEPOLIA, USDC_BASE_SEPOLIA};
use aibank_x402::{Chain, ChainClient, Requirement, B256};
use alloy::primitives::U256;

/// Verifies every hash with `concurrency` in flight; returns (verifications/s, p50 ms, p99 ms).
async fn run(
    client: &ChainClient,
    hashes: &[B256],
    req: &Requirement,
    concurrency: usize,
) -> (f64, f64, f64) {
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(hashes.len());
    for chunk in hashes.chunks(concurrency) {
        let results = futures_util::future::join_all(chunk.iter().map(|h| async move {
            let t = Instant::now();
            client.verify(*h, req).await.expect("a valid payment");
            t.elapsed()
        }))
        .await;
        latencies.extend(results);
    }
    let total = start.elapsed();
    latencies.sort();
    let ms = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    (
        hashes.len() as f64 / total.as_secs_f64(),
        ms(0.50),
        ms(0.99),
    )
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_PAYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let anvil = Anvil::start(CHAIN_BASE_SEPOLIA).await;
    anvil.deploy_erc20(USDC_BASE_SEPOLIA).await;
    let accounts = anvil.accounts().await;
    let (payer, pay_to) = (&accounts[1], &accounts[9]);
    anvil
        .mint(USDC_BASE_SEPOLIA, payer, u128::from(u64::MAX))
        .await;
    let mut hashes = Vec::with_capacity(n);
    for _ in 0..n {
        let h = anvil
            .transfer(USDC_BASE_SEPOLIA, payer, pay_to, 10_000)
            .await;
        hashes.push(h.parse::<B256>().unwrap());
    }
    // Every payment then has at least two confirmations.
    anvil.mine(1).await;
    let mut req = Requirement {
        pay_to: pay_to.parse().unwrap(),
        min_amount: U256::from(10_000u64),
        confirmations: 1,
        max_age: None,
        now_secs: 0,
    };
    println!("| case | concurrency | verifications | per second | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for concurrency in [1, 16] {
        // A fresh client per row: nothing remembered.
        let client = ChainClient::new(
            Chain::BaseSepolia,
            &anvil.url,
            Chain::BaseSepolia.default_usdc(),
            Duration::from_secs(10),
        )
        .unwrap();
        req.confirmations = 1;
        let rows = [
            (
                "cold (receipt + block over RPC)",
                run(&client, &hashes, &req, concurrency).await,
            ),
            (
                "receipt already seen",
                run(&client, &hashes, &req, concurrency).await,
            ),
            ("receipt seen, 2 confirmations (head over RPC)", {
                req.confirmations = 2;
                run(&client, &hashes, &req, concurrency).await
            }),
        ];
        for (case, (rate, p50, p99)) in rows {
            println!("| {case} | {concurrency} | {n} | {rate:.0} | {p50:.3} | {p99:.3} |");
        }
    }
}
