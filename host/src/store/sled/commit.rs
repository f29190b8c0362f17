//! Group commit: many writers wait for one flush.
//!
//! A synced write costs ~0.6 ms on the reference machine, so flushing once
//! per webhook delivery caps ingest near 1,600/s. Writers instead write (not
//! synced), then ask this committer for durability; one thread flushes the
//! store for every request that arrived before the flush began and answers
//! them all. Flushes start at least [`MIN_GAP`] apart: back to back, under
//! the end-to-end benchmark's load there was about one flush per run, each
//! waking sled's seven I/O threads; paced, the writers of the gap share
//! one (BENCHMARKS.md). Alone, a delivery waits for exactly one flush.

use std::{
    sync::mpsc::{self, RecvTimeoutError},
    thread,
    time::{Duration, Instant},
};

use tokio::sync::oneshot;

type Reply = oneshot::Sender<Result<(), String>>;

/// How close together two flushes may start. A flush is a synced log write
/// plus the wake-ups of sled's I/O threads; back to back under load there
/// was one per run. Paced, the writers that arrive within the gap share the
/// next flush; a writer alone (the last flush longer ago) waits for none.
const MIN_GAP: Duration = Duration::from_millis(2);

/// How long a write that asked only to be flushed [`GroupCommit::soon`] may
/// stay in memory: it joins the next group of waiting writers, or is
/// flushed on its own after this.
const SOON_WITHIN: Duration = Duration::from_millis(20);

enum Request {
    Soon,
    Durable(Reply),
}

/// When the next flush should start (`None`: nothing asks for one). A
/// waiting writer wants it now, a `soon` write within [`SOON_WITHIN`] of
/// its request, and neither earlier than [`MIN_GAP`] after the last.
fn flush_at(
    now: Instant,
    last: Option<Instant>,
    waiting: bool,
    soon_since: Option<Instant>,
) -> Option<Instant> {
    let wanted = if waiting {
        now
    } else {
        soon_since? + SOON_WITHIN
    };
    Some(match last {
        Some(last) => wanted.max(last + MIN_GAP),
        None => wanted,
    })
}

/// Adds a request to what the next flush answers.
fn take(request: Request, waiting: &mut Vec<Reply>, soon_since: &mut Option<Instant>) {
    match request {
        Request::Durable(reply) => waiting.push(reply),
        Request::Soon => {
            soon_since.get_or_insert_with(Instant::now);
        }
    }
}

pub(super) struct GroupCommit {
    requests: mpsc::Sender<Request>,
}

impl GroupCommit {
    /// Starts the flushing thread; it ends when the committer is dropped.
    pub(super) fn start(flush: impl Fn() -> Result<(), String> + Send + 'static) -> GroupCommit {
        let (tx, rx) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("switchyard-commit".into())
            .spawn(move || {
                let mut waiting: Vec<Reply> = Vec::new();
                let mut soon_since: Option<Instant> = None;
                let mut last: Option<Instant> = None;
                loop {
                    let now = Instant::now();
                    let received = match flush_at(now, last, !waiting.is_empty(), soon_since) {
                        Some(at) if at <= now => {
                            // Whatever arrived meanwhile joins this flush.
                            while let Ok(request) = rx.try_recv() {
                                take(request, &mut waiting, &mut soon_since);
                            }
                            last = Some(now);
                            soon_since = None;
                            let result = flush();
                            for reply in waiting.drain(..) {
                                let _ = reply.send(result.clone());
                            }
                            continue;
                        }
                        // A writer waits: the flush is at `at` whatever
                        // else arrives, so nothing needs receiving before.
                        Some(at) if !waiting.is_empty() => {
                            thread::sleep(at - now);
                            continue;
                        }
                        Some(at) => match rx.recv_timeout(at - now) {
                            Ok(request) => request,
                            Err(RecvTimeoutError::Timeout) => continue,
                            Err(RecvTimeoutError::Disconnected) => break,
                        },
                        None => match rx.recv() {
                            Ok(request) => request,
                            Err(_) => break,
                        },
                    };
                    take(received, &mut waiting, &mut soon_since);
                }
            })
            .expect("spawning the commit thread");
        GroupCommit { requests: tx }
    }

    /// Asks for a flush of everything written so far without waiting for
    /// it: the write goes to disk with the next group of waiting writers,
    /// or within [`SOON_WITHIN`].
    pub(super) fn soon(&self) {
        let _ = self.requests.send(Request::Soon);
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

    #[test]
    fn flushes_are_paced_and_soon_writes_wait_for_company() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        // (last flush started, a writer waits, soon asked at) -> flush at
        let cases = [
            // Nothing asks: no flush.
            (None, false, None, None),
            (Some(now - ms(1)), false, None, None),
            // A writer alone, the last flush long ago (or never): now.
            (None, true, None, Some(now)),
            (Some(now - ms(50)), true, None, Some(now)),
            // A writer right after a flush: the gap after that one.
            (Some(now - ms(1)), true, None, Some(now - ms(1) + MIN_GAP)),
            // A soon write alone waits its time, unless a writer comes.
            (
                None,
                false,
                Some(now - ms(5)),
                Some(now - ms(5) + SOON_WITHIN),
            ),
            (None, true, Some(now - ms(5)), Some(now)),
            // One overdue is flushed as soon as the gap allows.
            (Some(now), false, Some(now - ms(60)), Some(now + MIN_GAP)),
        ];
        for (i, (last, waiting, soon, want)) in cases.into_iter().enumerate() {
            assert_eq!(flush_at(now, last, waiting, soon), want, "case {i}");
        }
    }

    #[test]
    fn a_soon_write_alone_is_flushed_within_its_time() {
        let (tx, rx) = std::sync::mpsc::channel();
        let commit = GroupCommit::start(move || {
            let _ = tx.send(Instant::now());
            Ok(())
        });
        let asked = Instant::now();
        commit.soon();
        let flushed = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the soon write was never flushed");
        assert!(flushed >= asked + SOON_WITHIN, "flushed before its time");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_flush_answers_every_writer_waiting_for_it() {
        let flushes = Arc::new(AtomicUsize::new(0));
        let commit = {
            let flushes = flushes.clone();
            Arc::new(GroupCommit::start(move || {
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
}
