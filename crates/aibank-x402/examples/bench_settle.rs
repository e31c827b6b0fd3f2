//! Standard (EIP-3009) payments per second against a local anvil node, on the embedded
//! SQLite store: the checks that need no chain (requirements, validity, the EIP-712
//! signature), and whole settlements (the on-chain checks, the claim, the signed
//! `transferWithAuthorization` sent and its receipt awaited), one at a time and eight at
//! once (distinct payers). Run by `scripts/bench-x402`; `BENCH_PAYMENTS` sets how many (500).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss,
    clippy::too_many_lines
)]

use std::time::{Duration, Instant};

use aibank_core::Usd;
use aibank_store::{DbPool, PoolOptions};
use aibank_testkit::anvil::{Anvil, CHAIN_BASE_SEPOLIA, USDC_BASE_SEPOLIA};
use aibank_x402::exact::{self, Authorization, Signed, TokenDomain, Version};
use aibank_x402::{Chain, ChainConfig, X402Settings, B256, X402};
use alloy::primitives::U256;
use alloy::signers::local::PrivateKeySigner;
use alloy::signers::SignerSync;

const SETTLER_KEY: &str = "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

fn quantiles(mut l: Vec<Duration>, total: Duration) -> (f64, f64, f64) {
    l.sort();
    let ms = |q: f64| {
        let i = ((l.len() as f64 * q).ceil() as usize).clamp(1, l.len()) - 1;
        l[i].as_secs_f64() * 1000.0
    };
    (l.len() as f64 / total.as_secs_f64(), ms(0.5), ms(0.99))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("BENCH_PAYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let anvil = Anvil::start(CHAIN_BASE_SEPOLIA).await;
    anvil.deploy_eip3009(USDC_BASE_SEPOLIA).await;
    let pay_to = anvil.accounts().await[9].parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let pool = DbPool::connect(&url, &PoolOptions::default()).unwrap();
    pool.migrate().unwrap();
    let x402 = X402::new(
        X402Settings {
            pay_to,
            chains: vec![ChainConfig {
                chain: Chain::BaseSepolia,
                rpc_url: anvil.url.clone().into(),
                usdc: Chain::BaseSepolia.default_usdc(),
                usdc_domain: TokenDomain::usdc(Chain::BaseSepolia),
            }],
            default_chain: Chain::BaseSepolia,
            confirmations: 1,
            max_age: None,
            require_signature: false,
            min_price: Usd::from_micros(10_000),
            rpc_timeout: Duration::from_secs(10),
            max_timeout_secs: 300,
            settler_key: Some(SETTLER_KEY.to_owned().into()),
            public_url: "http://127.0.0.1".into(),
            settle_wait: Duration::from_secs(30),
        },
        std::sync::Arc::new(NoPayers),
    )
    .unwrap();
    let challenge = x402.challenge(Usd::from_micros(10_000), "POST", "/v1/bench");
    let offer = challenge.offers[0].clone();
    let payers: Vec<PrivateKeySigner> = (0..8).map(|_| PrivateKeySigner::random()).collect();
    for p in &payers {
        let holder = format!("{:#x}", p.address());
        anvil
            .mint_eip3009(USDC_BASE_SEPOLIA, &holder, u128::from(u64::MAX))
            .await;
    }
    let sign = |i: usize| -> Signed {
        let key = &payers[i % payers.len()];
        let a = Authorization {
            from: key.address(),
            to: pay_to,
            value: U256::from(offer.amount),
            valid_after: U256::ZERO,
            valid_before: U256::from(now() + 300),
            nonce: B256::from_slice(&PrivateKeySigner::random().to_bytes()[..]),
        };
        let signature = key
            .sign_hash_sync(&exact::signing_hash(&offer, &a))
            .unwrap();
        Signed {
            version: Version::V2,
            scheme: "exact".into(),
            network: exact::caip2(Chain::BaseSepolia),
            accepted: None,
            authorization: a,
            signature,
        }
    };
    println!("| case | concurrency | payments | per second | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let payments: Vec<Signed> = (0..n).map(sign).collect();
    let start = Instant::now();
    let mut l = Vec::with_capacity(n);
    for p in &payments {
        let t = Instant::now();
        p.check(&challenge.offers, now()).unwrap();
        l.push(t.elapsed());
    }
    let (rate, p50, p99) = quantiles(l, start.elapsed());
    println!("| checks without the chain (signature recovery) | 1 | {n} | {rate:.0} | {p50:.3} | {p99:.3} |");
    for concurrency in [1, 8] {
        let batch: Vec<Signed> = (0..n).map(sign).collect();
        let start = Instant::now();
        let mut l = Vec::with_capacity(n);
        // Each chunk has one payment per payer: distinct payers settle at once.
        for chunk in batch.chunks(concurrency) {
            let done = futures_util::future::join_all(chunk.iter().map(|p| {
                let (x402, pool, challenge) = (&x402, &pool, &challenge);
                async move {
                    let t = Instant::now();
                    x402.settle(
                        pool,
                        p,
                        challenge,
                        "POST /v1/bench",
                        i64::try_from(now() * 1000).unwrap(),
                    )
                    .await
                    .unwrap();
                    t.elapsed()
                }
            }))
            .await;
            l.extend(done);
        }
        let (rate, p50, p99) = quantiles(l, start.elapsed());
        println!("| settlements (on-chain checks, claim, send, receipt) | {concurrency} | {n} | {rate:.0} | {p50:.3} | {p99:.3} |");
    }
}

/// Settlements here credit no account, so no payer account is ever asked for.
struct NoPayers;

impl aibank_x402::PayerAccounts for NoPayers {
    fn ensure_payer(
        &self,
        _: &mut aibank_store::AnyConnection,
        _: &str,
        _: &str,
        _: i64,
    ) -> Result<(), aibank_ledger::LedgerError> {
        Ok(())
    }
}
