//! Group commit for SQLite: concurrent write transactions share one durable commit.
//!
//! SQLite admits one writer at a time and, with `synchronous = FULL`, each commit waits for
//! its fsync. Under concurrency the writers queue and every one pays a whole fsync. Here,
//! writes submitted through [`crate::DbPool::write`] go to one writer thread with its own
//! connection. It takes every write waiting (up to [`MAX_BATCH`]), runs each in a savepoint
//! of one transaction — a write that fails rolls back alone — and commits once. Nobody is
//! answered before that commit is durable, so the guarantees are those of one transaction
//! per write: what was answered as done survives a crash, and a failed commit fails every
//! write of the batch.

use std::sync::mpsc::{channel, Receiver, Sender};

use diesel::connection::SimpleConnection;
use diesel::Connection;

use crate::checkpoint::Checkpointer;
use crate::{AnyConnection, StoreError};

/// Most writes one commit carries.
pub const MAX_BATCH: usize = 64;

/// One submitted write, type-erased.
trait Job: Send {
    /// Runs the write in a savepoint of the batch's transaction.
    fn run(&mut self, conn: &mut AnyConnection);
    /// Answers the submitter once the batch committed (`None`) or could not (`Some`).
    fn finish(self: Box<Self>, failure: Option<&str>);
    /// Whether the answer must wait for the commit to be on disk.
    fn synced(&self) -> bool;
}

struct Pending<T, E, F> {
    synced: bool,
    write: Option<F>,
    result: Option<Result<T, E>>,
    reply: tokio::sync::oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> Job for Pending<T, E, F>
where
    F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send,
    T: Send,
    E: From<diesel::result::Error> + From<StoreError> + Send,
{
    fn run(&mut self, conn: &mut AnyConnection) {
        if let Some(write) = self.write.take() {
            // Nested in the batch's transaction, this is a savepoint.
            self.result = Some(conn.transaction(write));
        }
    }

    fn finish(self: Box<Self>, failure: Option<&str>) {
        let out = match (failure, self.result) {
            (None, Some(r)) => r,
            // It failed on its own account; that error is the truer one.
            (Some(_), Some(Err(e))) => Err(e),
            (Some(why), _) => Err(StoreError::GroupCommit(why.to_owned()).into()),
            (None, None) => Err(StoreError::GroupCommit("the write never ran".into()).into()),
        };
        let _ = self.reply.send(out);
    }

    fn synced(&self) -> bool {
        self.synced
    }
}

/// The handle writes are submitted through; the thread ends when every handle is gone.
#[derive(Clone)]
pub(crate) struct GroupWriter {
    jobs: Sender<Box<dyn Job>>,
}

impl GroupWriter {
    /// Starts the writer thread; `open` makes its connection (again after a failure), and
    /// `checkpointer` is nudged after each commit.
    pub(crate) fn start<O>(open: O, checkpointer: Checkpointer) -> std::io::Result<Self>
    where
        O: Fn() -> Result<AnyConnection, StoreError> + Send + 'static,
    {
        let (jobs, rx) = channel();
        std::thread::Builder::new()
            .name("aibank-sqlite-writer".into())
            .spawn(move || writer_loop(&open, &rx, &checkpointer))?;
        Ok(GroupWriter { jobs })
    }

    /// Submits a write; `synced`: answer only once its commit is on disk.
    pub(crate) async fn write<T, E, F>(&self, synced: bool, write: F) -> Result<T, E>
    where
        F: FnOnce(&mut AnyConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<diesel::result::Error> + From<StoreError> + Send + 'static,
    {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Box::new(Pending {
            synced,
            write: Some(write),
            result: None,
            reply,
        });
        if self.jobs.send(job).is_err() {
            return Err(StoreError::GroupCommit("the writer thread has stopped".into()).into());
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::GroupCommit("the writer thread stopped mid-write".into()).into())
        })
    }
}

fn writer_loop<O>(open: &O, rx: &Receiver<Box<dyn Job>>, checkpointer: &Checkpointer)
where
    O: Fn() -> Result<AnyConnection, StoreError>,
{
    let mut conn: Option<AnyConnection> = None;
    // The connection's `synchronous` setting: FULL when opened.
    let mut syncing = true;
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let c = match conn.take().map_or_else(
            || {
                syncing = true;
                open()
            },
            Ok,
        ) {
            Ok(c) => conn.insert(c),
            Err(e) => {
                tracing::warn!(error = %e, "the SQLite writer cannot open its connection");
                let why = e.to_string();
                for job in batch {
                    job.finish(Some(&why));
                }
                continue;
            }
        };
        let sync = batch.iter().any(|j| j.synced());
        if sync != syncing {
            let pragma = if sync {
                "PRAGMA synchronous = FULL"
            } else {
                "PRAGMA synchronous = NORMAL"
            };
            if let Err(e) = c.batch_execute(pragma) {
                tracing::warn!(error = %e, "the SQLite writer cannot set its sync mode");
                let why = e.to_string();
                for job in batch {
                    job.finish(Some(&why));
                }
                conn = None;
                continue;
            }
            syncing = sync;
        }
        // A panic inside a write must not stop every later one: drop the connection (its
        // transaction state is unknown) and answer the batch as failed.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let res = c.write_tx(|c| {
                for job in &mut batch {
                    job.run(c);
                }
                Ok::<_, diesel::result::Error>(())
            });
            (res, batch)
        }));
        match outcome {
            Ok((Ok(()), batch)) => {
                for job in batch {
                    job.finish(None);
                }
                checkpointer.nudge();
                checkpointer.finish_if_long(c);
            }
            Ok((Err(e), batch)) => {
                tracing::warn!(error = %e, writes = batch.len(), "group commit failed");
                let why = e.to_string();
                for job in batch {
                    job.finish(Some(&why));
                }
                conn = None;
            }
            Err(_) => {
                tracing::error!("a write panicked; its batch was rolled back");
                conn = None;
            }
        }
    }
}
