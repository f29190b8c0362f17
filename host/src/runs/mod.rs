//! Runs: the durable queue and the executor that takes a flow from its
//! trigger event through its steps.
//!
//! A run is created in the same atomic batch as whatever produced its event
//! (a webhook delivery leaving the inbox, a poll's new cursor), with its
//! de-duplication entry. From then on every state change rewrites the record
//! and its index entries together ([`record`]): the due-time queue while it
//! waits, the dead-letter list when it failed, the parked list while its
//! connection is paused. A crash loses nothing: queue entries left behind are
//! picked up again at start and the run continues from its next step; a step
//! that ran but whose result was not yet written runs again with the same
//! idempotency key.

mod executor;
pub mod record;
pub mod retry;
mod service;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{Notify, oneshot, watch};

pub use record::{RunEvent, RunFilter, RunRecord, RunStatus};
pub use retry::{RetryPolicy, Verdict};
pub use service::EnqueueOutcome;

use crate::{flows::FlowRecord, flows::definition::Lane, metrics::Metrics};

/// Limits and windows of the runtime, from the operator's settings.
#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Runs executing at once in the fast lane, and in the normal lane.
    pub fast_workers: usize,
    pub normal_workers: usize,
    /// Runs executing at once that use one connection.
    pub connection_concurrency: u32,
    pub dedup_window: Duration,
    pub retention: Duration,
    /// Polls running at once.
    pub poll_workers: usize,
}

impl Default for RuntimeSettings {
    fn default() -> Self {
        RuntimeSettings {
            fast_workers: 32,
            normal_workers: 32,
            connection_concurrency: 16,
            dedup_window: Duration::from_secs(72 * 3600),
            retention: Duration::from_secs(7 * 24 * 3600),
            poll_workers: 64,
        }
    }
}

const STRIPES: usize = 64;

/// The in-memory half of the runtime: who is running, who waits for whom.
pub struct Runtime {
    pub settings: RuntimeSettings,
    pub metrics: Metrics,
    wake: [Notify; 2],
    inflight: Mutex<HashSet<String>>,
    deliveries: Mutex<HashSet<Vec<u8>>>,
    running: Mutex<Running>,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<RunRecord>>>>,
    /// Serialises writes of one run (by id) and de-duplication checks of one
    /// flow, without one global lock.
    stripes: Vec<Mutex<()>>,
    flow_cache: Mutex<HashMap<(String, String, u32), Arc<FlowRecord>>>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct Running {
    per_flow: HashMap<String, u32>,
    per_connection: HashMap<String, u32>,
}

impl Runtime {
    pub fn new(settings: RuntimeSettings) -> Self {
        Runtime {
            settings,
            metrics: Metrics::default(),
            wake: [Notify::new(), Notify::new()],
            inflight: Mutex::default(),
            deliveries: Mutex::default(),
            running: Mutex::default(),
            waiters: Mutex::default(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            flow_cache: Mutex::default(),
            shutdown: watch::channel(false).0,
            tasks: Mutex::default(),
        }
    }

    fn stripe(&self, key: &str) -> std::sync::MutexGuard<'_, ()> {
        let hash = key.bytes().fold(0xcbf29ce484222325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100000001b3)
        });
        self.stripes[(hash % STRIPES as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the lane's dispatcher there is new work.
    pub fn wake(&self, lane: Lane) {
        self.wake[lane as usize].notify_one();
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(handle);
    }

    /// Stops the background tasks and waits for them (runs in flight finish
    /// their current step first).
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }

    /// A receiver for when the run finishes (succeeded, skipped, failed,
    /// cancelled).
    pub fn wait_for(&self, run_id: &str) -> oneshot::Receiver<RunRecord> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(run_id.to_string())
            .or_default()
            .push(tx);
        rx
    }

    fn finished(&self, run: &RunRecord) {
        self.metrics.run(run.status.as_str());
        if run.status == RunStatus::Failed {
            self.metrics.dead_letters.inc();
        }
        let waiting = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&run.id);
        for tx in waiting.into_iter().flatten() {
            let _ = tx.send(run.clone());
        }
    }

    /// Marks an inbox entry as being processed; false if it already is.
    pub fn claim_delivery(&self, key: &[u8]) -> bool {
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_vec())
    }

    pub fn release_delivery(&self, key: &[u8]) {
        self.deliveries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    pub fn forget_waiter(&self, run_id: &str) {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run_id);
    }
}
