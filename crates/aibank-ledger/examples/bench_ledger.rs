//! Ledger charge throughput: `clients` threads each charge their own agent account
//! ($0.01 per charge, spending limits checked) for a fixed time, on the database named by
//! `AIBANK_TEST_DATABASE_URL` (PostgreSQL) or a fresh SQLite file. Run through
//! `scripts/bench-ledger`.
// A benchmark reports rates as floats; no money is computed here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aibank_core::{Clock, SystemClock, Usd};
use aibank_ledger::{charge, open_account, EntryKind};
use aibank_store::models::Agent;
use aibank_store::{DbPool, PoolOptions};
use aibank_testkit::TestDb;

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let levels: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,8,64".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let db = TestDb::fresh();
    let backend = db.backend.as_str();
    println!("| backend | clients | charges | seconds | charges/s | p50 ms | p99 ms |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for clients in levels {
        let pool = DbPool::connect(
            &db.url,
            &PoolOptions {
                max_size: u32::try_from(clients).unwrap().max(2),
                connection_timeout: Duration::from_secs(30),
                create_parent_dir: false,
            },
        )
        .unwrap();
        pool.migrate().unwrap();
        let accounts = setup_accounts(&pool, clients);
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let threads: Vec<_> = accounts
            .into_iter()
            .map(|account| {
                let (pool, stop, count) = (pool.clone(), stop.clone(), count.clone());
                std::thread::spawn(move || {
                    let mut latencies = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let mut c = pool.get().unwrap();
                        charge(
                            &mut c,
                            &account,
                            Usd::from_micros(10_000),
                            None,
                            SystemClock.now_ms(),
                        )
                        .unwrap();
                        drop(c);
                        latencies.push(t.elapsed());
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    latencies
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(seconds));
        stop.store(true, Ordering::Relaxed);
        let mut latencies: Vec<Duration> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        let elapsed = started.elapsed().as_secs_f64();
        latencies.sort();
        let pct = |p: usize| latencies[(latencies.len() - 1) * p / 100].as_secs_f64() * 1000.0;
        let n = count.load(Ordering::Relaxed);
        println!(
            "| {backend} | {clients} | {n} | {elapsed:.1} | {:.0} | {:.2} | {:.2} |",
            n as f64 / elapsed,
            pct(50),
            pct(99)
        );
    }
}

/// One agent account per client, with spending limits far above what the run can spend
/// (so they are checked on every charge but never refuse one).
fn setup_accounts(pool: &DbPool, clients: usize) -> Vec<String> {
    let now = SystemClock.now_ms();
    (0..clients)
        .map(|i| {
            let id = format!("agt_bench_{clients}_{i}");
            let mut c = pool.get().unwrap();
            aibank_store::repo::agents::insert(
                &mut c,
                &Agent {
                    per_tx_limit_micros: 50_000_000,
                    daily_limit_micros: 1_000_000_000_000,
                    weekly_limit_micros: 1_000_000_000_000,
                    monthly_limit_micros: 1_000_000_000_000,
                    ..Agent::new(id.clone(), None, "agent", "bench".into(), None, now)
                },
            )
            .unwrap();
            open_account(
                &mut c,
                &id,
                Usd::from_micros(1_000_000_000_000),
                EntryKind::Grant,
                now,
            )
            .unwrap();
            id
        })
        .collect()
}
