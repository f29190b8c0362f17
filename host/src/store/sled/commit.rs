//! Group commit: many writers wait for one flush.
//!
//! A synced write costs ~0.6 ms on the reference machine, so flushing once
//! per webhook delivery caps ingest near 1,600/s. Writers instead write (not
//! synced), then ask this committer for durability; one thread flushes the
//! store for every request that arrived before the flush began and answers
//! them all. Under load a flush covers several deliveries; alone, a
//! delivery waits for exactly one flush.
//!
//! A write nobody waits for (a finished run's new state: after a crash the
//! step runs again under the same idempotency key) asks for a lazy flush
//! instead: it rides along with the next writer's flush, or is flushed on
//! its own after [`LAZY`]. Each flush wakes sled's I/O threads, and giving
//! finished runs flushes of their own made about one flush per run.
//!
//! When the last flush answered more than one writer, writers are coming
//! faster than flushes, and the thread waits [`GATHER`] before the next one
//! so that more join it (PostgreSQL's `commit_delay` does the same). A lone
//! writer never waits. The wait is short on purpose: a 2 ms gap between
//! flushes, and a 1 ms wait, both pushed a latency target over its line at
//! 1,000 deliveries a second (BENCHMARKS.md).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<(), String>>;

/// How long a write that nobody waits for (a finished run's new state) may
/// stay in memory before it is flushed on its own: it rides along with the
/// next acknowledgement's flush when one comes sooner, as one nearly always
/// does under load. A crash in between runs the step again, under the same
/// idempotency key.
pub(super) const LAZY: Duration = Duration::from_millis(20);

/// Under load, how long the commit thread waits for more writers before a
/// flush. Every flush is a write to the log and a wake-up of sled's I/O
/// threads; in the end-to-end benchmark flushes answered two writers on
/// average, and waiting this long halved the flushes and the context
/// switches (BENCHMARKS.md, "Group commit gathers under load").
pub(super) const GATHER: Duration = Duration::from_micros(500);

enum Request {
    /// A writer waits for the flush.
    Durable(Reply),
    /// A write to flush soon; nobody waits.
    Soon,
}

pub(super) struct GroupCommit {
    requests: mpsc::UnboundedSender<Request>,
    /// A lazy write is waiting for a flush: only the first one since the
    /// last flush tells the thread (the others would wake it for nothing).
    lazy: Arc<AtomicBool>,
}

impl GroupCommit {
    /// Starts the flushing thread; it ends when the committer is dropped
    /// (flushing lazy writes first). `lazy_for`: how long a write nobody
    /// waits for may stay unflushed ([`LAZY`] in the store).
    pub(super) fn start(
        lazy_for: Duration,
        flush: impl Fn() -> Result<(), String> + Send + 'static,
    ) -> GroupCommit {
        let (tx, rx) = mpsc::unbounded_channel::<Request>();
        let lazy = Arc::new(AtomicBool::new(false));
        let pending = lazy.clone();
        thread::Builder::new()
            .name("switchyard-commit".into())
            .spawn(move || commit_loop(rx, &pending, lazy_for, flush))
            .expect("spawning the commit thread");
        GroupCommit { requests: tx, lazy }
    }

    /// Asks for a flush of everything written so far without waiting for
    /// it: the write goes to disk with the next group, at the latest
    /// `lazy_for` (see [`GroupCommit::start`]) from now.
    pub(super) fn soon(&self) {
        if !self.lazy.swap(true, Ordering::AcqRel) {
            let _ = self.requests.send(Request::Soon);
        }
    }

    /// Returns once everything written before the call is on disk.
    pub(super) async fn durable(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Durable(tx))
            .map_err(|_| "the commit thread has stopped".to_string())?;
        rx.await
            .map_err(|_| "the commit thread has stopped".to_string())?
    }
}

/// Whether the commit thread waits [`GATHER`] for more writers before it
/// flushes for `waiting` of them: only when the last flush answered more
/// than one, which means writers arrive faster than a flush takes. A lone
/// writer, and a flush for lazy writes alone, never wait.
fn gathers(last_group: usize, waiting: usize) -> bool {
    last_group > 1 && waiting > 0
}

/// Files a request: a writer to answer with the next flush, or a lazy
/// write (only the oldest one's time counts).
fn take(request: Request, waiting: &mut Vec<Reply>, lazy_since: &mut Option<Instant>) {
    match request {
        Request::Durable(reply) => waiting.push(reply),
        Request::Soon => {
            lazy_since.get_or_insert_with(Instant::now);
        }
    }
}

/// The commit thread: flushes for every writer waiting when the flush
/// begins, and for lazy writes once the oldest has waited `lazy_for`.
/// Under load it first waits [`GATHER`] for more writers (see [`gathers`]).
fn commit_loop(
    mut rx: mpsc::UnboundedReceiver<Request>,
    lazy: &AtomicBool,
    lazy_for: Duration,
    flush: impl Fn() -> Result<(), String>,
) {
    // Only to wait for a request with a deadline while lazy writes are
    // pending; otherwise the thread blocks on the channel alone.
    let timer = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("building the commit thread's timer");
    let mut waiting: Vec<Reply> = Vec::new();
    // When the oldest lazy write not flushed yet was asked for.
    let mut lazy_since: Option<Instant> = None;
    let mut open = true;
    // How many writers the last flush answered.
    let mut last_group = 0usize;
    while open {
        let first = match lazy_since {
            None => rx.blocking_recv(),
            Some(since) => {
                let left = (since + lazy_for).saturating_duration_since(Instant::now());
                match timer.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
                    Ok(Some(request)) => Some(request),
                    // Every sender is gone: the lazy writes are flushed last.
                    Ok(None) => {
                        open = false;
                        None
                    }
                    Err(_elapsed) => None,
                }
            }
        };
        if first.is_none() && lazy_since.is_none() {
            // Every sender is gone and nothing is left to flush.
            break;
        }
        for request in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            take(request, &mut waiting, &mut lazy_since);
        }
        let lazy_due = lazy_since.is_some_and(|since| !open || since.elapsed() >= lazy_for);
        if waiting.is_empty() && !lazy_due {
            continue;
        }
        if open && gathers(last_group, waiting.len()) {
            // Writers come faster than flushes: let more join this one.
            thread::sleep(GATHER);
            while let Ok(request) = rx.try_recv() {
                take(request, &mut waiting, &mut lazy_since);
            }
        }
        last_group = waiting.len();
        // A lazy write asked for after this point tells the thread again.
        lazy.store(false, Ordering::Release);
        lazy_since = None;
        let result = flush();
        for reply in waiting.drain(..) {
            let _ = reply.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    use crate::store::{Delivery, Inbox, sled::SledStore};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_are_all_made_durable() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            let writers: Vec<_> = (0..200u64)
                .map(|i| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let delivery = Delivery {
                            tenant: "t".into(),
                            subscription: "s".into(),
                            received_at: i,
                            method: "POST".into(),
                            query: String::new(),
                            headers: Vec::new(),
                            body: String::new(),
                            attempts: 0,
                            next_attempt_at: 0,
                            last_error: None,
                        };
                        store.accept(&delivery).await.unwrap();
                    })
                })
                .collect();
            for w in writers {
                w.await.unwrap();
            }
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.pending(None, 1000).unwrap().len(), 200);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_flush_answers_every_writer_waiting_for_it() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let commit = {
            let flushes = flushes.clone();
            Arc::new(GroupCommit::start(LAZY, move || {
                flushes.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                Ok(())
            }))
        };
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let commit = commit.clone();
                tokio::spawn(async move { commit.durable().await })
            })
            .collect();
        for w in waiters {
            w.await.unwrap().unwrap();
        }
        // Every writer was answered, with fewer flushes than writers.
        assert!(flushes.load(Ordering::SeqCst) < 100);
    }

    #[test]
    fn only_a_flush_after_a_group_waits_for_more_writers() {
        // (writers the last flush answered, writers waiting now, waits)
        let table = [
            (0, 1, false), // the first flush
            (1, 1, false), // one writer at a time: no wait
            (1, 5, false), // a burst after quiet: flush it now
            (2, 1, true),  // writers outpace flushes
            (64, 3, true),
            (2, 0, false), // lazy writes alone: nobody to gather for
            (0, 0, false),
        ];
        for (last_group, waiting, expected) in table {
            assert_eq!(
                gathers(last_group, waiting),
                expected,
                "last flush answered {last_group}, {waiting} waiting"
            );
        }
    }

    /// A committer counting its flushes, lazy writes kept `lazy_for`.
    fn counting(lazy_for: Duration) -> (GroupCommit, Arc<AtomicUsize>) {
        let flushes = Arc::new(AtomicUsize::new(0));
        let counter = flushes.clone();
        let commit = GroupCommit::start(lazy_for, move || {
            counter.fetch_add(1, Ordering::SeqCst);
            Ok(())
        });
        (commit, flushes)
    }

    /// Polls until `flushes` reaches `n`, for at most five seconds.
    fn wait_for_flushes(flushes: &AtomicUsize, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while flushes.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "{} flushes after five seconds, expected {n}",
                flushes.load(Ordering::SeqCst)
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_lazy_write_alone_is_flushed_on_its_own() {
        let (commit, flushes) = counting(Duration::from_millis(30));
        commit.soon();
        wait_for_flushes(&flushes, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lazy_writes_ride_along_with_the_next_durable_flush() {
        // A window far longer than the test: only the durable writer's
        // flush can have taken the lazy writes.
        let (commit, flushes) = counting(Duration::from_secs(600));
        for _ in 0..100 {
            commit.soon();
        }
        commit.durable().await.unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
        // After that flush, a lazy write asks again.
        commit.soon();
        commit.durable().await.unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn closing_the_committer_flushes_lazy_writes_at_once() {
        let (commit, flushes) = counting(Duration::from_secs(600));
        commit.soon();
        drop(commit);
        wait_for_flushes(&flushes, 1);
    }
}
