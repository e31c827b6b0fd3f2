//! PostgreSQL: the one-statement writes of one key (an account), when several arrive
//! together, run one after another in one transaction on one connection.
//!
//! One agent's calls take turns on its account row. Each of [`crate::DbPool::write_at_once`]'s
//! statements holds that lock only while it runs, but under load every hand-over of the
//! lock from one server process to the next waits for the next to be scheduled, and on a
//! busy machine that wait is the cost of a call. Here the first write of a key starts a
//! combiner task; writes of the same key that arrive while it runs queue behind it, and it
//! takes them all (up to [`MAX_BATCH`]) and runs them in one transaction: one hand-over of
//! the lock for the whole batch and one commit. The commit does not wait for the log
//! flush. When more of the key's writes wait, each caller whose write must be durable
//! waits for the flush on its own connection, so the key's next batch runs meanwhile
//! (PostgreSQL flushes concurrent waiters together); when none waits, the combiner makes
//! the flush on its own connection before it answers, and nobody takes a second one from
//! the pool (with many keys busy at once, one write each at a time, that is every write).
//! A key with no writes waiting costs what it did: a batch of one runs as one statement
//! outside a transaction.
//!
//! A batch is as exact as the same writes one by one: each statement reads what those
//! before it in the transaction wrote and what every other transaction committed, and
//! any order of concurrent writes is an order they could have arrived in. Writes marked
//! early (those that lock a row ahead of the key's row, as a hold locks its fleet's
//! platform) go first, so that a batch takes its locks in the order a lone write does.
//!
//! A write that comes with a [`Call`] (a call of a database function) needs no round trip
//! of its own in a batch: when every write of a batch has one, the batch runs them as one
//! statement, each call a branch of a `UNION ALL` that PostgreSQL runs in order, every
//! call seeing what those before it wrote.
//!
//! What a write gives back decides the rest: a refusal (`None`) is answered with the
//! general path for the caller to run on its own; a failed statement rolls the batch back
//! and every write of it is run alone by its caller, as if never combined; a failed commit
//! fails the whole batch, as a lone write's failed commit fails it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::pg::Pg;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::RunQueryDsl;

use crate::{AnyConnection, StoreError};

/// Most writes one batch carries.
pub const MAX_BATCH: usize = 64;

/// A value bound to a [`Call`]'s `?`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    Int(Option<i64>),
    Text(Option<String>),
}

/// A one-statement write as the call of a database function that answers at most one row
/// of two `bigint` columns (the second may be null), which `decode` makes the answer of.
pub struct Call<T> {
    /// `function(?, ?, …)`: constant text, its `?`s bound to `args` in order.
    pub call: &'static str,
    pub args: Vec<Arg>,
    pub decode: Box<dyn FnOnce(i64, Option<i64>) -> T + Send>,
}

impl<T: 'static> Call<T> {
    /// The same call, its answer passed through `f`.
    #[must_use]
    pub fn map<U>(self, f: impl FnOnce(T) -> U + Send + 'static) -> Call<U> {
        let decode = self.decode;
        Call {
            call: self.call,
            args: self.args,
            decode: Box::new(move |a, b| f(decode(a, b))),
        }
    }
}

/// What a submitted write is answered with.
pub(crate) enum Outcome<T, E, F, G> {
    /// Done (or failed) here.
    Done(Result<T, E>),
    /// Committed without waiting for the log flush, and the write asked for a durable
    /// one: the caller waits for its batch's flush before it answers. The combiner made it
    /// when nothing of the key waited; else the batch's first caller there makes it, the
    /// others wait for that one, and the key's next batch runs meanwhile.
    Flush(T, SharedFlush),
    /// The one-statement write refused; the caller runs the general path.
    General(G),
    /// The batch could not be used; the caller runs the write alone, from the start.
    Alone(F, G),
}

/// One batch's log flush, made once for all its durable writes: its outcome, or why it
/// failed.
pub(crate) type SharedFlush = Arc<tokio::sync::OnceCell<Result<(), String>>>;

/// How a batch ended for its writes.
#[derive(Clone, Copy)]
enum End<'a> {
    Committed(&'a SharedFlush),
    /// Rolled back before its commit: nothing of it was written.
    RolledBack,
    Failed(&'a str),
}

/// One submitted write, type-erased.
trait Job: Send {
    fn early(&self) -> bool;
    /// Runs the one-statement write; `false` if its statement failed.
    fn step(&mut self, conn: &mut AnyConnection) -> bool;
    /// Done, and to be answered only once its commit is durable.
    fn awaits_flush(&self) -> bool;
    /// The write as a function call, when it has one.
    fn call(&self) -> Option<(&'static str, &[Arg])>;
    /// Its call's row (`None`: the call answered none, a refusal).
    fn answer(&mut self, row: Option<(i64, Option<i64>)>);
    fn finish(self: Box<Self>, end: End<'_>);
}

struct Pending<T, E, F, G> {
    synced: bool,
    early: bool,
    at_once: F,
    general: G,
    call: Option<Call<T>>,
    got: Option<Result<Option<T>, E>>,
    reply: tokio::sync::oneshot::Sender<Outcome<T, E, F, G>>,
}

impl<T, E, F, G> Job for Pending<T, E, F, G>
where
    F: FnMut(&mut AnyConnection) -> Result<Option<T>, E> + Send,
    G: Send,
    T: Send,
    E: From<StoreError> + Send,
{
    fn early(&self) -> bool {
        self.early
    }

    fn step(&mut self, conn: &mut AnyConnection) -> bool {
        let got = (self.at_once)(conn);
        let ok = got.is_ok();
        self.got = Some(got);
        ok
    }

    fn awaits_flush(&self) -> bool {
        self.synced && matches!(self.got, Some(Ok(Some(_))))
    }

    fn call(&self) -> Option<(&'static str, &[Arg])> {
        self.call.as_ref().map(|c| (c.call, c.args.as_slice()))
    }

    fn answer(&mut self, row: Option<(i64, Option<i64>)>) {
        let decoded = match (self.call.take(), row) {
            (Some(call), Some((a, b))) => Some((call.decode)(a, b)),
            _ => None,
        };
        self.got = Some(Ok(decoded));
    }

    fn finish(self: Box<Self>, end: End<'_>) {
        let Pending {
            synced,
            at_once,
            general,
            got,
            reply,
            ..
        } = *self;
        let out = match (end, got) {
            (End::Committed(flush), Some(Ok(Some(out)))) if synced => {
                Outcome::Flush(out, Arc::clone(flush))
            }
            (End::Committed(_), Some(Ok(Some(out)))) => Outcome::Done(Ok(out)),
            (End::Committed(_), Some(Ok(None))) => Outcome::General(general),
            // Even the write whose statement failed: it may have failed because of the
            // batch (a deadlock with another transaction, say); alone, it says its own.
            (End::RolledBack, _) | (End::Committed(_), None) => Outcome::Alone(at_once, general),
            // Its own failure is the truer error.
            (_, Some(Err(e))) => Outcome::Done(Err(e)),
            (End::Failed(why), _) => {
                Outcome::Done(Err(StoreError::GroupCommit(why.to_owned()).into()))
            }
        };
        // A caller that went away needs no answer.
        let _ = reply.send(out);
    }
}

/// Where a submitted write's [`Outcome`] arrives.
pub(crate) type Answer<T, E, F, G> = tokio::sync::oneshot::Receiver<Outcome<T, E, F, G>>;

/// The writes waiting, by key; a key is present while its combiner task runs.
#[derive(Default)]
pub(crate) struct Combiner {
    queues: Mutex<HashMap<String, Vec<Box<dyn Job>>>>,
    /// Batches of more than one write run so far, and the writes in them.
    batches: AtomicU64,
    combined: AtomicU64,
}

impl Combiner {
    /// Batches of more than one write run so far, and the writes they carried.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.batches.load(Ordering::Relaxed),
            self.combined.load(Ordering::Relaxed),
        )
    }

    /// Queues a write of `key`; the receiver gets its answer. With a [`Lead`], no
    /// combiner ran for the key: the caller must run it.
    pub(crate) fn submit<T, E, F, G>(
        self: &Arc<Self>,
        key: &str,
        synced: bool,
        early: bool,
        at_once: F,
        general: G,
        call: Option<Call<T>>,
    ) -> (Answer<T, E, F, G>, Option<Lead>)
    where
        F: FnMut(&mut AnyConnection) -> Result<Option<T>, E> + Send + 'static,
        G: Send + 'static,
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Box::new(Pending {
            synced,
            early,
            at_once,
            general,
            call,
            got: None,
            reply,
        });
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let lead = if let Some(waiting) = queues.get_mut(key) {
            waiting.push(job);
            None
        } else {
            queues.insert(key.to_owned(), vec![job]);
            Some(Lead {
                combiner: Arc::clone(self),
                key: key.to_owned(),
                armed: true,
            })
        };
        (answer, lead)
    }

    /// Whether no write of `key` waits to run.
    fn idle(&self, key: &str) -> bool {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .is_none_or(Vec::is_empty)
    }

    /// The next batch of `key`; empty when none waits, and then the key's combiner has
    /// ended (the next write starts another).
    fn take(&self, key: &str) -> Vec<Box<dyn Job>> {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(waiting) = queues.get_mut(key) else {
            return Vec::new();
        };
        if waiting.is_empty() {
            queues.remove(key);
            return Vec::new();
        }
        let n = waiting.len().min(MAX_BATCH);
        waiting.drain(..n).collect()
    }

    /// Ends `key`'s combiner without running what waits: each write fails with `why`.
    fn abandon(&self, key: &str, why: &str) {
        let waiting = self
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key);
        for job in waiting.into_iter().flatten() {
            job.finish(End::Failed(why));
        }
    }
}

/// The duty to run one key's combiner. Dropped before it is done — never run (no
/// connection) or unwound — it fails what waits, so that no write of the key is left
/// waiting for a combiner that will not come.
pub(crate) struct Lead {
    combiner: Arc<Combiner>,
    key: String,
    armed: bool,
}

impl Lead {
    /// Runs the key's batches on `conn` until none waits.
    pub(crate) fn drain(mut self, conn: &mut AnyConnection) {
        loop {
            let batch = self.combiner.take(&self.key);
            if batch.is_empty() {
                break;
            }
            if batch.len() > 1 {
                self.combiner.batches.fetch_add(1, Ordering::Relaxed);
                self.combiner
                    .combined
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
            run_batch(conn, batch, || self.combiner.idle(&self.key));
        }
        self.armed = false;
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if self.armed {
            self.combiner
                .abandon(&self.key, "the write's batch stopped before it ran");
        }
    }
}

fn pg(conn: &mut AnyConnection) -> Option<&mut diesel::pg::PgConnection> {
    match conn {
        AnyConnection::Postgresql(pg) => Some(pg),
        AnyConnection::Sqlite(_) => None,
    }
}

/// Runs one batch on `conn` and answers its writes; `idle` tells whether no later write
/// of the key waits by then.
fn run_batch(conn: &mut AnyConnection, mut batch: Vec<Box<dyn Job>>, idle: impl FnOnce() -> bool) {
    let flush = SharedFlush::default();
    if batch.len() == 1 {
        // Alone: one statement outside a transaction, as without combining.
        for job in &mut batch {
            job.step(conn);
        }
        flush_here(conn, &batch, &flush, idle);
        return finish_all(batch, End::Committed(&flush));
    }
    batch.sort_by_key(|job| !job.early());
    let Some(c) = pg(conn) else {
        return finish_all(batch, End::Failed("only PostgreSQL combines writes"));
    };
    if let Err(e) = AnsiTransactionManager::begin_transaction_sql(
        c,
        "BEGIN; SET LOCAL synchronous_commit = off",
    ) {
        return finish_all(batch, End::Failed(&e.to_string()));
    }
    let ran = if batch.iter().all(|job| job.call().is_some()) {
        match pg(conn) {
            Some(c) => run_calls(c, &mut batch),
            None => false,
        }
    } else {
        batch.iter_mut().all(|job| job.step(conn))
    };
    let Some(c) = pg(conn) else {
        return finish_all(batch, End::Failed("only PostgreSQL combines writes"));
    };
    let end = if ran {
        match AnsiTransactionManager::commit_transaction(c) {
            Ok(()) => {
                flush_here(conn, &batch, &flush, idle);
                Ok(End::Committed(&flush))
            }
            Err(e) => Err(e.to_string()),
        }
    } else {
        match AnsiTransactionManager::rollback_transaction(c) {
            Ok(()) => Ok(End::RolledBack),
            Err(e) => Err(e.to_string()),
        }
    };
    match &end {
        Ok(end) => finish_all(batch, *end),
        Err(why) => finish_all(batch, End::Failed(why)),
    }
}

/// A batch whose writes all have calls: one statement, one round trip. `false` if it
/// failed (the batch is then rolled back, and its writes run alone).
fn run_calls(c: &mut diesel::pg::PgConnection, batch: &mut [Box<dyn Job>]) -> bool {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = BigInt)]
        i: i64,
        #[diesel(sql_type = BigInt)]
        a: i64,
        #[diesel(sql_type = Nullable<BigInt>)]
        b: Option<i64>,
    }
    let mut sql = String::with_capacity(batch.len() * 160);
    let mut n = 0;
    for (i, job) in batch.iter().enumerate() {
        let Some((call, _)) = job.call() else {
            return false;
        };
        if i > 0 {
            sql.push_str(" UNION ALL ");
        }
        sql.push_str("SELECT ");
        sql.push_str(&i.to_string());
        sql.push_str("::int8 AS i, r.a, r.b FROM ");
        let mut parts = call.split('?');
        sql.push_str(parts.next().unwrap_or_default());
        for part in parts {
            n += 1;
            sql.push('$');
            sql.push_str(&n.to_string());
            sql.push_str(part);
        }
        sql.push_str(" AS r(a, b)");
    }
    let mut query = diesel::sql_query(sql).into_boxed::<Pg>();
    for job in batch.iter() {
        for arg in job.call().map_or(&[][..], |(_, args)| args) {
            query = match arg {
                Arg::Int(v) => query.bind::<Nullable<BigInt>, _>(*v),
                Arg::Text(v) => query.bind::<Nullable<Text>, _>(v.clone()),
            };
        }
    }
    let Ok(rows) = query.load::<Row>(c) else {
        return false;
    };
    let mut got = vec![None; batch.len()];
    for row in rows {
        match usize::try_from(row.i).ok().and_then(|i| got.get_mut(i)) {
            Some(slot @ None) => *slot = Some((row.a, row.b)),
            // A function answers at most one row, and only of its own branch.
            _ => return false,
        }
    }
    for (job, row) in batch.iter_mut().zip(got) {
        job.answer(row);
    }
    true
}

/// Makes a committed batch's flush here, when one of its writes awaits it and no later
/// write of the key would wait behind it; its callers then find it made. Failed, it fails
/// them as their own flush would.
fn flush_here(
    conn: &mut AnyConnection,
    batch: &[Box<dyn Job>],
    flush: &SharedFlush,
    idle: impl FnOnce() -> bool,
) {
    if batch.iter().any(|job| job.awaits_flush()) && idle() {
        let _ = flush.set(crate::pool::flush_log(conn).map_err(|e| e.to_string()));
    }
}

fn finish_all(batch: Vec<Box<dyn Job>>, end: End<'_>) {
    for job in batch {
        job.finish(end);
    }
}
