//! SQLite's write-ahead log is checkpointed off the write path, and still starts over.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use aibank_store::{AnyConnection, DbPool, StoreError, RESTART_FRAMES};
use aibank_testkit::pool_options;
use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Integer, Text};

#[derive(Debug)]
struct E(#[allow(dead_code)] StoreError);

impl From<StoreError> for E {
    fn from(e: StoreError) -> Self {
        E(e)
    }
}

impl From<diesel::result::Error> for E {
    fn from(e: diesel::result::Error) -> Self {
        E(e.into())
    }
}

#[derive(QueryableByName)]
struct AutoCheckpoint {
    #[diesel(sql_type = BigInt)]
    wal_autocheckpoint: i64,
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Integer)]
    round: i32,
    #[diesel(sql_type = Text)]
    filler: String,
}

const PAGE: u64 = 4096;
/// Rows of about a page each, all rewritten by every write: a write adds that many pages
/// to the log, while the database file stays a few pages long.
const ROWS: i32 = 8;

fn rewrite(c: &mut AnyConnection, round: i32) -> QueryResult<()> {
    diesel::sql_query("UPDATE filler SET round = ?, filler = ? ")
        .bind::<Integer, _>(round)
        .bind::<Text, _>(format!("{round:0>3000}"))
        .execute(c)
        .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_never_checkpoint_and_the_log_still_starts_over() {
    let dir = std::env::temp_dir().join(format!(
        "aibank-checkpoint-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.db");
    let url = format!("sqlite://{}", file.display());
    let pool = DbPool::connect(&url, &pool_options()).unwrap();
    pool.migrate().unwrap();

    // No connection of the pool checkpoints as it commits.
    let mut c = pool.get().unwrap();
    let auto: AutoCheckpoint = diesel::sql_query("PRAGMA wal_autocheckpoint")
        .get_result(&mut c)
        .unwrap();
    assert_eq!(auto.wal_autocheckpoint, 0);
    c.batch_execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, round INTEGER NOT NULL, filler TEXT NOT NULL)")
        .unwrap();
    for id in 0..ROWS {
        diesel::sql_query("INSERT INTO filler (id, round, filler) VALUES (?, 0, '')")
            .bind::<Integer, _>(id)
            .execute(&mut c)
            .unwrap();
    }
    drop(c);

    // Three times the pages after which the writer finishes a checkpoint: without the
    // log starting over, it would hold them all.
    let rounds = i32::try_from(3 * RESTART_FRAMES / i64::from(ROWS)).unwrap();
    for round in 1..=rounds {
        pool.write_unsynced(move |c| rewrite(c, round).map_err(E::from))
            .await
            .unwrap();
    }
    // The checkpointer may lag behind on a busy machine; the writer catches up within a
    // few writes of it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = pool.checkpoint_stats().unwrap();
    let mut round = rounds;
    while stats.writer_runs.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the log never started over");
        round += 1;
        pool.write(move |c| rewrite(c, round).map_err(E::from))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(stats.runs.load(Ordering::Relaxed) > 0);
    assert_eq!(stats.failures.load(Ordering::Relaxed), 0);
    // One more durable write starts the log over (and cuts its file back).
    round += 1;
    pool.write(move |c| rewrite(c, round).map_err(E::from))
        .await
        .unwrap();
    let written = u64::try_from(round).unwrap() * u64::try_from(ROWS).unwrap() * PAGE;
    let wal = std::fs::metadata(dir.join("t.db-wal")).unwrap().len();
    assert!(
        wal < written / 2 && wal <= 64 * 1024 * 1024 + 2 * PAGE,
        "the log holds {wal} bytes after {written} bytes of pages were written"
    );

    // Nothing was lost on the way: every row has the last write, read back by a new
    // connection after the pool is gone.
    drop(pool);
    let mut c = diesel::sqlite::SqliteConnection::establish(&file.to_string_lossy()).unwrap();
    let rows: Vec<Row> = diesel::sql_query("SELECT round, filler FROM filler")
        .load(&mut c)
        .unwrap();
    assert_eq!(rows.len(), usize::try_from(ROWS).unwrap());
    for r in rows {
        assert_eq!(r.round, round);
        assert_eq!(r.filler, format!("{round:0>3000}"));
    }
    drop(c);
    std::fs::remove_dir_all(&dir).ok();
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(0_u8)
}
