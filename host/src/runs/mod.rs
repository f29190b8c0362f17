//! Runs: the durable queue and the executor that takes a flow from its
//! trigger event through its steps.
//!
//! A run is created in the same atomic batch as whatever produced its event
//! (a webhook delivery leaving the inbox, a poll's new cursor), with its
//! de-duplication entry. From then on every state change rewrites the record
//! and its index entries together (the [`RunStore`]): the due-time queue
//! while it waits, the dead-letter list when it failed, the parked list while
//! its connection is paused. A crash loses nothing: queue entries left behind
//! are picked up again at start and the run continues from its next step; a
//! step that ran but whose result was not yet written runs again with the
//! same idempotency key.
//!
//! [`Runs`] is the service; `service.rs` holds what the API and the triggers
//! ask of it, `executor.rs` the dispatchers and the step loop.

mod entity;
mod executor;
mod interpret;
mod limits;
pub mod record;
pub mod retry;
mod service;
mod test_step;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use tokio::sync::{Notify, oneshot};

pub use crate::store::{RunEvent, RunFilter, RunRecord, RunStatus};
pub use retry::{RetryPolicy, Verdict};
pub use service::{EnqueueOutcome, PruneReport};
pub use test_step::StepTest;

use crate::{
    calls::Calls,
    files::Buckets,
    flows::Flows,
    metrics::Metrics,
    store::{EntityStore, IngestCounts, Lane, RunStore},
    tasks::Tasks,
    topics::Topics,
};

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

/// The run service: queues runs, executes them, and answers for them.
pub struct Runs {
    store: Arc<dyn RunStore>,
    entity_store: Arc<dyn EntityStore>,
    flows: Arc<Flows>,
    calls: Arc<Calls>,
    /// Record jobs read and write files in buckets.
    files: Arc<Buckets>,
    topics: Arc<Topics>,
    metrics: Arc<Metrics>,
    tasks: Arc<Tasks>,
    settings: RuntimeSettings,
    /// One per lane: there is new work for its dispatcher.
    wake: [Notify; 2],
    /// Runs executing now, and the flow and connection slots they hold.
    limits: Mutex<limits::Limits>,
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<RunRecord>>>>,
    /// Serialise changes of one run (by id) and de-duplication checks of
    /// one flow, without one global lock.
    stripes: Vec<Mutex<()>>,
    /// Arrival order of runs of one entity: microseconds at start, then up.
    seq: AtomicU64,
}

impl Runs {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn RunStore>,
        entity_store: Arc<dyn EntityStore>,
        flows: Arc<Flows>,
        calls: Arc<Calls>,
        files: Arc<Buckets>,
        topics: Arc<Topics>,
        metrics: Arc<Metrics>,
        tasks: Arc<Tasks>,
        settings: RuntimeSettings,
    ) -> Self {
        Runs {
            store,
            entity_store,
            flows,
            calls,
            files,
            topics,
            metrics,
            tasks,
            settings,
            wake: [Notify::new(), Notify::new()],
            limits: Mutex::default(),
            waiters: Mutex::default(),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            seq: AtomicU64::new(crate::clock::now_ms().saturating_mul(1000)),
        }
    }

    /// Adds to a flow's ingest counts (failures are logged: counts are for
    /// people, not for correctness).
    fn count(&self, tenant: &str, flow: &str, change: impl FnOnce(&mut IngestCounts)) {
        let mut delta = IngestCounts::default();
        change(&mut delta);
        if let Err(e) = self.entity_store.add_counts(tenant, flow, &delta) {
            tracing::warn!(flow, "cannot count the flow's events: {e}");
        }
    }

    /// What a flow's trigger events came to (flows with an entity).
    pub fn ingest_counts(
        &self,
        tenant: &str,
        flow: &str,
    ) -> Result<IngestCounts, crate::error::ServiceError> {
        self.flows.get(tenant, flow)?;
        Ok(self.entity_store.counts(tenant, flow)?)
    }

    /// Forgets what the runs kept of a deleted flow beside its runs: its
    /// entities' states and its event counts.
    pub fn forget_flow(&self, tenant: &str, flow: &str) -> Result<(), crate::error::ServiceError> {
        Ok(self.entity_store.forget_entities(tenant, flow)?)
    }

    /// The next number in the arrival order of entities' runs.
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    }

    /// Starts the lane dispatchers and retention; they stop with the tasks.
    pub fn start(self: &Arc<Self>) {
        self.start_dispatchers();
        let runs = self.clone();
        self.tasks.spawn(async move {
            let mut shutdown = runs.tasks.shutdown_signal();
            loop {
                match runs.prune(crate::clock::now_ms()) {
                    Ok(report) if report.runs + report.dedup_entries > 0 => {
                        tracing::info!(?report, "pruned old runs and de-duplication entries")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!("pruning runs: {e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(300)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        });
    }

    pub fn settings(&self) -> &RuntimeSettings {
        &self.settings
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
    fn wake(&self, lane: Lane) {
        self.wake[lane as usize].notify_one();
    }

    /// A receiver for when the run finishes (succeeded, skipped, failed,
    /// cancelled).
    fn wait_for(&self, run_id: &str) -> oneshot::Receiver<RunRecord> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(run_id.to_string())
            .or_default()
            .push(tx);
        rx
    }

    fn forget_waiter(&self, run_id: &str) {
        self.waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run_id);
    }

    /// A run finished: counted, its waiters answered, and the run that
    /// called it and waits for it woken. Never called under a run's lock.
    fn finished(&self, run: &RunRecord) {
        self.metrics.run(run.status.as_str());
        if run.status == RunStatus::Failed {
            self.metrics.dead_letters.inc();
        }
        self.answer(run);
        if let Some(parent) = &run.parent {
            let woken = self.change_run(&run.tenant, &parent.run, |waiting| {
                if waiting.status != RunStatus::Waiting {
                    return Err(crate::error::ServiceError::State("not waiting".into()));
                }
                let mut next = waiting.clone();
                next.status = RunStatus::Queued;
                next.due_at = crate::clock::now_ms();
                Ok(next)
            });
            if let Err(e) = woken {
                tracing::debug!(run = %parent.run, "the calling run was not woken: {e}");
            }
        }
    }

    /// Hands a run to whoever waits for its answer: its end, or what a
    /// `respond` step answered (a synchronous caller need not wait for
    /// the rest).
    fn answer(&self, run: &RunRecord) {
        let waiting = self
            .waiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&run.id);
        for tx in waiting.into_iter().flatten() {
            let _ = tx.send(run.clone());
        }
    }
}
