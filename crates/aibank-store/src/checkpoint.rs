//! WAL checkpoints for SQLite, off the write path.
//!
//! In WAL mode SQLite by default checkpoints on the committing connection whenever the log
//! passes 1000 pages: that commit copies the log into the database file and fsyncs it, about
//! a millisecond on a virtual disk, and the write — a gateway call's hold or capture — waits
//! for it. Every connection of the pool is opened with `wal_autocheckpoint = 0` instead.
//!
//! - This thread checkpoints on a connection of its own: nudged by the group writer after
//!   its commits (at most every [`MIN_GAP`]), and at least every [`IDLE_EVERY`] for writes
//!   made outside it. Its checkpoints are `PASSIVE`: they copy what no reader still needs
//!   and never block a writer or a reader.
//! - SQLite starts the log over only when a write begins with all of it copied, which
//!   never happens while the writer keeps committing during every checkpoint. So once the
//!   log passes [`RESTART_FRAMES`], the group writer runs one `PASSIVE` checkpoint itself,
//!   after answering its batch and before taking the next: with this thread having copied
//!   almost everything, that one copies the last few pages and the next write starts the
//!   log over. The log file is cut back to [`crate::pool`]'s `journal_size_limit` then.
//!
//! What is durable does not change: a commit is durable once it is in the log (fsync'd at
//! `synchronous = FULL`); the checkpoint only moves it into the database file.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use diesel::sql_types::Integer;
use diesel::{QueryableByName, RunQueryDsl};

use crate::{AnyConnection, StoreError};

/// Shortest time between two checkpoints: under load, nudges between them are merged.
pub const MIN_GAP: Duration = Duration::from_millis(20);
/// Longest time between two checkpoints while the database is written to.
pub const IDLE_EVERY: Duration = Duration::from_secs(1);
/// Log length (in pages) past which the group writer finishes a checkpoint itself.
pub const RESTART_FRAMES: i64 = 8192;

/// What the checkpointer has done, for tests and diagnostics.
#[derive(Debug, Default)]
pub struct CheckpointStats {
    /// Checkpoints run to the end (whether or not there was anything to copy).
    pub runs: AtomicU64,
    /// Checkpoints that failed (logged; tried again on the next nudge).
    pub failures: AtomicU64,
    /// Checkpoints the group writer finished itself so that the log starts over.
    pub writer_runs: AtomicU64,
    /// Pages in the log at this thread's last checkpoint.
    pub log_frames: AtomicI64,
}

/// The handle that nudges the checkpointer; its thread ends when every handle is gone.
#[derive(Clone)]
pub(crate) struct Checkpointer {
    nudge: SyncSender<()>,
    stats: Arc<CheckpointStats>,
}

impl Checkpointer {
    /// Starts the checkpointer thread; `open` makes its connection (again after a failure).
    pub(crate) fn start<O>(open: O) -> std::io::Result<Self>
    where
        O: Fn() -> Result<AnyConnection, StoreError> + Send + 'static,
    {
        let (nudge, rx) = sync_channel(1);
        let stats = Arc::new(CheckpointStats::default());
        let s = stats.clone();
        std::thread::Builder::new()
            .name("aibank-sqlite-checkpoint".into())
            .spawn(move || checkpoint_loop(&open, &rx, &s))?;
        Ok(Checkpointer { nudge, stats })
    }

    /// Asks for a checkpoint soon; never blocks (a nudge already waiting covers this one).
    pub(crate) fn nudge(&self) {
        let _ = self.nudge.try_send(());
    }

    pub(crate) fn stats(&self) -> &CheckpointStats {
        &self.stats
    }

    /// Run by the group writer between batches, on its own connection: once the log is
    /// long, copies the rest of it, so that the next write starts it over.
    pub(crate) fn finish_if_long(&self, conn: &mut AnyConnection) {
        if self.stats.log_frames.load(Ordering::Relaxed) < RESTART_FRAMES {
            return;
        }
        match checkpoint(conn) {
            Ok(o) if o.busy == 0 => {
                self.stats.writer_runs.fetch_add(1, Ordering::Relaxed);
                self.stats.log_frames.store(0, Ordering::Relaxed);
            }
            // The checkpointer thread is running one: try again after the next batch.
            Ok(_) => {}
            Err(e) => {
                self.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "SQLite checkpoint failed");
            }
        }
    }
}

/// The row `PRAGMA wal_checkpoint` answers.
#[derive(QueryableByName)]
struct Outcome {
    /// 1 when the checkpoint could not take its lock (another one is running).
    #[diesel(sql_type = Integer)]
    busy: i32,
    /// Pages in the log.
    #[diesel(sql_type = Integer)]
    log: i32,
}

fn checkpoint(conn: &mut AnyConnection) -> Result<Outcome, diesel::result::Error> {
    diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)").get_result(conn)
}

fn checkpoint_loop<O>(open: &O, rx: &Receiver<()>, stats: &CheckpointStats)
where
    O: Fn() -> Result<AnyConnection, StoreError>,
{
    let mut conn: Option<AnyConnection> = None;
    loop {
        match rx.recv_timeout(IDLE_EVERY) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let c = match conn.take().map_or_else(open, Ok) {
            Ok(c) => conn.insert(c),
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "the SQLite checkpointer cannot open its connection");
                std::thread::sleep(IDLE_EVERY);
                continue;
            }
        };
        match checkpoint(c) {
            Ok(o) if o.busy == 0 => {
                stats.runs.fetch_add(1, Ordering::Relaxed);
                stats.log_frames.store(i64::from(o.log), Ordering::Relaxed);
            }
            // Another connection holds the checkpoint lock: the next nudge tries again.
            Ok(_) => {}
            Err(e) => {
                stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "SQLite checkpoint failed");
                conn = None;
            }
        }
        // Nudges that came in meanwhile are served by the next run, after the gap.
        std::thread::sleep(MIN_GAP);
    }
}
