//! Group commit: many writers wait for one flush.
//!
//! A synced write costs ~0.6 ms on the reference machine, so flushing once
//! per webhook delivery caps ingest near 1,600/s. Writers instead write (not
//! synced), then ask this committer for durability; one thread flushes the
//! store for every request that arrived before the flush began and answers
//! them all. Under load a flush covers hundreds of deliveries; alone, a
//! delivery waits for exactly one flush.

use std::{sync::Arc, thread};

use tokio::sync::{mpsc, oneshot};

use crate::store::{SharedStorage, StoreError};

type Reply = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct GroupCommit {
    requests: mpsc::UnboundedSender<Reply>,
}

impl GroupCommit {
    /// Starts the flushing thread; it ends when every handle is dropped.
    pub fn start(store: SharedStorage) -> GroupCommit {
        let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
        // Weak, so the database closes when the host drops it, not when this
        // thread notices.
        let store = Arc::downgrade(&store);
        thread::Builder::new()
            .name("switchyard-commit".into())
            .spawn(move || {
                let mut batch = Vec::new();
                while let Some(first) = rx.blocking_recv() {
                    batch.push(first);
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let result = match store.upgrade() {
                        Some(store) => store.flush().map_err(|e: StoreError| e.to_string()),
                        None => Err("the store is closed".to_string()),
                    };
                    for reply in batch.drain(..) {
                        let _ = reply.send(result.clone());
                    }
                }
            })
            .expect("spawning the commit thread");
        GroupCommit { requests: tx }
    }

    /// Returns once everything written before the call is on disk.
    pub async fn durable(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .map_err(|_| "the commit thread has stopped".to_string())?;
        rx.await
            .map_err(|_| "the commit thread has stopped".to_string())?
    }
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GroupCommit")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Op, SledStore, Storage};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writers_are_all_made_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStorage = Arc::new(SledStore::open(dir.path()).unwrap());
        let commit = GroupCommit::start(store.clone());
        let writers: Vec<_> = (0..200u32)
            .map(|i| {
                let (store, commit) = (store.clone(), commit.clone());
                tokio::spawn(async move {
                    store
                        .apply(vec![Op::put_json("t", &i.to_be_bytes(), &i)])
                        .unwrap();
                    commit.durable().await.unwrap();
                })
            })
            .collect();
        for w in writers {
            w.await.unwrap();
        }
        drop(commit);
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.count("t").unwrap(), 200);
    }
}
