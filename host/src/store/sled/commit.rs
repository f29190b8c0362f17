//! Group commit: many writers wait for one flush.
//!
//! A synced write costs ~0.6 ms on the reference machine, so flushing once
//! per webhook delivery caps ingest near 1,600/s. Writers instead write (not
//! synced), then ask this committer for durability; one thread flushes the
//! store for every request that arrived before the flush began and answers
//! them all. Under load a flush covers hundreds of deliveries; alone, a
//! delivery waits for exactly one flush.

use std::thread;

use tokio::sync::{mpsc, oneshot};

type Reply = oneshot::Sender<Result<(), String>>;

pub(super) struct GroupCommit {
    requests: mpsc::UnboundedSender<Reply>,
}

impl GroupCommit {
    /// Starts the flushing thread; it ends when the committer is dropped.
    pub(super) fn start(flush: impl Fn() -> Result<(), String> + Send + 'static) -> GroupCommit {
        let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
        thread::Builder::new()
            .name("switchyard-commit".into())
            .spawn(move || {
                let mut batch = Vec::new();
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let result = flush();
                    for reply in batch.drain(..) {
                        let _ = reply.send(result.clone());
                    }
                }
            })
            .expect("spawning the commit thread");
        GroupCommit { requests: tx }
    }

    /// Asks for a flush of everything written so far without waiting for
    /// it: the write goes to disk with the next group, as soon as the
    /// thread is free.
    pub(super) fn soon(&self) {
        let (tx, _) = oneshot::channel();
        let _ = self.requests.send(tx);
    }

    /// Returns once everything written before the call is on disk.
    pub(super) async fn durable(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
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
