//! `DbPool::write`: every write is its own transaction, whether it shares a commit with
//! others (SQLite group commit) or not (PostgreSQL).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use aibank_store::schema::platforms;
use aibank_store::{DbPool, StoreError};
use aibank_testkit::{pool_options, TestDb};
use diesel::prelude::*;

#[derive(Debug)]
enum E {
    Store(#[allow(dead_code)] StoreError),
    Refused(usize),
}

impl From<StoreError> for E {
    fn from(e: StoreError) -> Self {
        E::Store(e)
    }
}

impl From<diesel::result::Error> for E {
    fn from(e: diesel::result::Error) -> Self {
        E::Store(e.into())
    }
}

fn insert(c: &mut aibank_store::AnyConnection, id: &str) -> QueryResult<usize> {
    diesel::insert_into(platforms::table)
        .values((
            platforms::id.eq(id),
            platforms::name.eq("p"),
            platforms::created_at.eq(0_i64),
        ))
        .execute(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_commit_or_roll_back_each_on_its_own() {
    let db = TestDb::fresh();
    let pool = DbPool::connect(&db.url, &pool_options()).unwrap();
    pool.migrate().unwrap();
    // 200 writes at once; every fifth writes two rows and then fails, so both must vanish
    // while the writes batched with it commit.
    let writes = (0..200).map(|i| {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.write(move |c| {
                insert(c, &format!("ok_{i}"))?;
                if i % 5 == 0 {
                    insert(c, &format!("undone_{i}"))?;
                    return Err(E::Refused(i));
                }
                Ok(i)
            })
            .await
        })
    });
    let results = futures_util::future::join_all(writes).await;
    let mut refused = 0;
    for (i, r) in results.into_iter().enumerate() {
        match r.unwrap() {
            Ok(n) => assert_eq!(n, i),
            Err(E::Refused(n)) => {
                assert_eq!(n, i);
                refused += 1;
            }
            Err(e) => panic!("write {i}: {e:?}"),
        }
    }
    assert_eq!(refused, 40);
    let mut c = pool.get().unwrap();
    let ids: Vec<String> = platforms::table
        .select(platforms::id)
        .filter(platforms::name.eq("p"))
        .load(&mut c)
        .unwrap();
    assert_eq!(ids.len(), 160);
    assert!(ids.iter().all(|id| {
        let n: usize = id.trim_start_matches("ok_").parse().unwrap();
        n % 5 != 0
    }));

    // A write that breaks a constraint fails alone too.
    let dup = pool.write(|c| insert(c, "ok_1").map_err(E::from)).await;
    assert!(matches!(dup, Err(E::Store(_))));
    let after = pool
        .write(|c| insert(c, "after").map_err(E::from))
        .await
        .unwrap();
    assert_eq!(after, 1);
}

/// The running transaction's commit setting: SQLite's `synchronous` level (2 = FULL, an
/// fsync at every commit; 1 = NORMAL) or PostgreSQL's `synchronous_commit`.
fn commit_setting(c: &mut aibank_store::AnyConnection) -> QueryResult<String> {
    use diesel::sql_types::{BigInt, Text};
    #[derive(QueryableByName)]
    struct Level {
        #[diesel(sql_type = BigInt)]
        synchronous: i64,
    }
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = Text)]
        synchronous_commit: String,
    }
    Ok(if c.is_sqlite() {
        diesel::sql_query("PRAGMA synchronous")
            .get_result::<Level>(c)?
            .synchronous
            .to_string()
    } else {
        diesel::sql_query("SHOW synchronous_commit")
            .get_result::<Setting>(c)?
            .synchronous_commit
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unsynced_write_never_takes_a_durable_one_with_it() {
    let db = TestDb::fresh();
    let pool = DbPool::connect(&db.url, &pool_options()).unwrap();
    pool.migrate().unwrap();
    // SQLite: durable writes keep the connections' setting (FULL), unsynced ones commit
    // with NORMAL. PostgreSQL commits every write without waiting for the log flush, and
    // answers a durable one only after the flush (the test below checks that): inside
    // either, the setting is off, whatever the server's.
    let (durable, unsynced) = if pool.backend() == aibank_store::Backend::Sqlite {
        assert_eq!(commit_setting(&mut pool.get().unwrap()).unwrap(), "2");
        ("2".to_owned(), "1")
    } else {
        ("off".to_owned(), "off")
    };
    // Alone, each gets its own kind of commit.
    let seen = pool
        .write_unsynced(|c| commit_setting(c).map_err(E::from))
        .await
        .unwrap();
    assert_eq!(seen, unsynced);
    let seen = pool
        .write(|c| commit_setting(c).map_err(E::from))
        .await
        .unwrap();
    assert_eq!(seen, durable);
    // Mixed and concurrent (on SQLite they share batches): every durable write is
    // committed durably, and every write is committed and visible.
    let writes = (0..200).map(|i| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let write = move |c: &mut aibank_store::AnyConnection| {
                insert(c, &format!("w_{i}"))?;
                commit_setting(c).map_err(E::from)
            };
            let is_durable = i % 3 == 0;
            let seen = if is_durable {
                pool.write(write).await
            } else {
                pool.write_unsynced(write).await
            };
            (is_durable, seen.unwrap())
        })
    });
    for r in futures_util::future::join_all(writes).await {
        let (is_durable, seen) = r.unwrap();
        if is_durable {
            assert_eq!(
                seen, durable,
                "a durable write was committed without waiting"
            );
        }
    }
    let mut c = pool.get().unwrap();
    let n: i64 = platforms::table
        .filter(platforms::id.like("w_%"))
        .count()
        .get_result(&mut c)
        .unwrap();
    assert_eq!(n, 200);
    // The writer is back to durable commits for the next durable write.
    let seen = pool
        .write(|c| commit_setting(c).map_err(E::from))
        .await
        .unwrap();
    assert_eq!(seen, durable);
}

/// On PostgreSQL: an admin connection and a migrated pool on `db`, which flushes at each
/// commit as a real server does (the throwaway test clusters commit without flushing).
fn flushing_postgres(db: &TestDb) -> Option<(PgConnection, DbPool)> {
    use diesel::connection::SimpleConnection;
    use diesel::sql_types::Text;
    if db.backend != aibank_store::Backend::Postgres {
        return None;
    }
    let mut admin = PgConnection::establish(&db.url).unwrap();
    let name: String = diesel::select(diesel::dsl::sql::<Text>("current_database()"))
        .get_result(&mut admin)
        .unwrap();
    admin
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET synchronous_commit = on"
        ))
        .unwrap();
    let pool = DbPool::connect(&db.url, &pool_options()).unwrap();
    pool.migrate().unwrap();
    Some((admin, pool))
}

/// Asserts the log is flushed past `written` (an LSN), which write `i` was answered after.
fn assert_flushed_past(admin: &mut PgConnection, written: &str, i: usize) {
    use diesel::sql_types::{Bool, Text};
    let (flushed, at): (bool, String) = diesel::select((
        diesel::dsl::sql::<Bool>(&format!(
            "pg_current_wal_flush_lsn() >= '{written}'::pg_lsn"
        )),
        diesel::dsl::sql::<Text>("pg_current_wal_flush_lsn()::text"),
    ))
    .get_result(admin)
    .unwrap();
    assert!(
        flushed,
        "write {i} was answered with the log flushed to {at}, before {written}"
    );
}

/// PostgreSQL commits a durable write without waiting for the log flush (so its row locks
/// go at once), then waits for the flush before answering: once `write` returns, the log
/// is durable past everything the write wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_write_on_postgres_is_answered_once_the_log_is_flushed_past_it() {
    use diesel::sql_types::Text;
    let db = TestDb::fresh();
    let Some((mut admin, pool)) = flushing_postgres(&db) else {
        return;
    };
    for i in 0..20 {
        let written: String = pool
            .write(move |c| {
                insert(c, &format!("f_{i}"))?;
                diesel::select(diesel::dsl::sql::<Text>(
                    "pg_current_wal_insert_lsn()::text",
                ))
                .get_result(c)
                .map_err(E::from)
            })
            .await
            .unwrap();
        assert_flushed_past(&mut admin, &written, i);
    }
}

/// `DbPool::write_at_once`, a durable write with nothing of its key queued behind it: its
/// combiner makes the log flush on the connection it wrote on, so the write takes one
/// connection from the pool, not a second one for the flush (with many agents busy at
/// once, one call each at a time, that is every write), and it is answered once the log is
/// flushed past it. A write that finds its key's combiner still running takes none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_durable_write_at_once_takes_one_connection_and_is_answered_flushed() {
    use aibank_store::Combine;
    use diesel::connection::SimpleConnection;
    use diesel::sql_types::Text;
    let db = TestDb::fresh();
    let Some((mut admin, pool)) = flushing_postgres(&db) else {
        return;
    };
    for i in 0..20 {
        let before = pool.usage().checkouts;
        // Committed without the flush, as the ledger's functions commit.
        let at_once = move |c: &mut aibank_store::AnyConnection| -> Result<Option<String>, E> {
            c.batch_execute(&format!(
                "BEGIN; SET LOCAL synchronous_commit = off; \
                 INSERT INTO platforms (id, name, created_at) VALUES ('lone_{i}', 'p', 0); \
                 COMMIT"
            ))?;
            let lsn = diesel::select(diesel::dsl::sql::<Text>(
                "pg_current_wal_insert_lsn()::text",
            ))
            .get_result(c)?;
            Ok(Some(lsn))
        };
        let combine = Combine {
            key: "lone-key",
            early: false,
        };
        let written = pool
            .write_at_once(true, combine, None, at_once, move |_| Err(E::Refused(i)))
            .await
            .unwrap();
        // A combiner still on its connection from the write before may run this one
        // too, taking none; a new one takes one. Never a second one for the flush.
        let took = pool.usage().checkouts - before;
        if i == 0 {
            assert_eq!(took, 1, "write {i}, the key's first, starts its combiner");
        } else {
            assert!(took <= 1, "write {i} took {took} connections");
        }
        assert_flushed_past(&mut admin, &written, i);
    }
}

/// `DbPool::write_at_once`, one key's writes at once: on PostgreSQL those that queue run
/// together in one transaction; whatever its batch did, each write gets its own answer and
/// leaves exactly its own rows. A write refused in one statement takes the general path;
/// a failing one fails alone, and the writes batched with it are run again and commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_keys_writes_at_once_each_answer_alone_whatever_their_batch_did() {
    one_keys_writes_at_once(false).await;
}

/// The same with every write also given as a function call: on PostgreSQL a batch then
/// runs its writes as one statement, with the same answers and rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_keys_writes_as_calls_each_answer_alone_whatever_their_statement_did() {
    one_keys_writes_at_once(true).await;
}

async fn one_keys_writes_at_once(calls: bool) {
    use aibank_store::{Arg, Call, Combine};
    let db = TestDb::fresh();
    let pool = DbPool::connect(&db.url, &pool_options()).unwrap();
    pool.migrate().unwrap();
    let postgres = db.backend == aibank_store::Backend::Postgres;
    if postgres {
        // The write of the at_once closure below, as a function: `call_{i}` when it ran here.
        diesel::sql_query(
            "CREATE FUNCTION test_write(p_i bigint) RETURNS TABLE (a bigint, b bigint) \
             LANGUAGE plpgsql AS $$ BEGIN \
               IF p_i % 97 = 0 THEN PERFORM 1 / 0; END IF; \
               IF p_i % 7 = 0 THEN RETURN; END IF; \
               INSERT INTO platforms (id, name, created_at) VALUES ('call_' || p_i, 'p', 0); \
               a := p_i; b := NULL; RETURN NEXT; \
             END $$",
        )
        .execute(&mut pool.get().unwrap())
        .unwrap();
    }
    // Rarer than a batch is long (up to 64), so that some batches have none.
    let fails = |i: usize| i % 97 == 0;
    let refused = |i: usize| i % 7 == 0;
    let writes = (0..300).map(|i| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let at_once = move |c: &mut aibank_store::AnyConnection| -> Result<Option<usize>, E> {
                // Long enough for the writes behind it to queue.
                std::thread::sleep(std::time::Duration::from_millis(1));
                if fails(i) {
                    diesel::sql_query("SELECT 1 / 0").execute(c)?;
                }
                if refused(i) {
                    return Ok(None);
                }
                insert(c, &format!("ok_{i}"))?;
                Ok(Some(i))
            };
            let general = move |c: &mut aibank_store::AnyConnection| -> Result<usize, E> {
                if fails(i) {
                    return Err(E::Refused(i));
                }
                let id = if refused(i) { "general" } else { "ok" };
                insert(c, &format!("{id}_{i}"))?;
                Ok(i)
            };
            let call = calls.then(|| Call {
                call: "test_write(?)",
                args: vec![Arg::Int(Some(i64::try_from(i).unwrap()))],
                decode: Box::new(|a, b| {
                    assert_eq!(b, None);
                    usize::try_from(a).unwrap()
                }),
            });
            let combine = Combine {
                key: "one-key",
                early: i % 2 == 0,
            };
            pool.write_at_once(i % 3 == 0, combine, call, at_once, general)
                .await
        })
    });
    let results = futures_util::future::join_all(writes).await;
    let mut expected = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r.unwrap() {
            Ok(n) => {
                assert!(!fails(i), "write {i} should have failed");
                assert_eq!(n, i);
                expected.push(format!("{}_{i}", if refused(i) { "general" } else { "ok" }));
            }
            // SQLite runs the general path, PostgreSQL the statement, alone at the last.
            Err(e) => assert!(fails(i), "write {i}: {e:?}"),
        }
    }
    let mut c = pool.get().unwrap();
    let mut ids: Vec<String> = platforms::table
        .select(platforms::id)
        .filter(platforms::name.eq("p"))
        .load(&mut c)
        .unwrap();
    // A write made by its call, in a batch of calls, is the same write.
    let by_call = ids.iter().filter(|id| id.starts_with("call_")).count();
    for id in &mut ids {
        if let Some(i) = id.strip_prefix("call_") {
            *id = format!("ok_{i}");
        }
    }
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected);
    let usage = pool.usage();
    if postgres {
        assert!(usage.combined_batches > 0, "{usage:?}");
        assert!(usage.combined_writes > usage.combined_batches, "{usage:?}");
        assert_eq!(by_call > 0, calls, "{by_call} writes made by their calls");
    } else {
        assert_eq!(usage.combined_batches, 0);
        assert_eq!(by_call, 0);
    }
}
