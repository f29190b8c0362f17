//! The operations on runs that the triggers, the API and the CLI share:
//! turning events into queued runs (with de-duplication and conditions),
//! manual and synchronous runs, history, replay, cancel, resuming a paused
//! connection's runs, and retention.

use std::{collections::HashSet, sync::Arc, time::Duration};

use rand::RngCore;
use serde_json::Value;

use super::record::{
    self, DEAD, DEDUP, DEDUP_EXPIRY, FINISHED, PARKED, QUEUE, RUNS, RunError, RunEvent, RunFilter,
    RunRecord, RunStatus, StepRecord, dedup_key, now_ms, run_id_for, run_key,
};
use crate::{
    app::App,
    connections::ConnectionStatus,
    engine::Event,
    error::ServiceError,
    flows::{FlowRecord, template},
    store::{Op, StorageExt},
};

/// What became of a batch of events.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct EnqueueOutcome {
    /// Runs created (queued, skipped by conditions, or failed at once).
    pub runs: Vec<String>,
    /// Events dropped as already seen within the window.
    pub duplicates: usize,
}

impl App {
    /// A flow version as its runs execute it, cached (versions never change).
    pub(crate) fn flow_at(
        &self,
        tenant: &str,
        id: &str,
        version: u32,
    ) -> Result<Arc<FlowRecord>, ServiceError> {
        let key = (tenant.to_string(), id.to_string(), version);
        if let Some(flow) = self
            .runtime
            .flow_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(flow.clone());
        }
        let flow = Arc::new(self.flow_version(tenant, id, version)?);
        self.runtime
            .flow_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, flow.clone());
        Ok(flow)
    }

    /// Creates the runs for `events` of `flow`, dropping events seen within
    /// the de-duplication window, in one atomic batch together with `extra`
    /// (the inbox entry to delete, the poll cursor to save). Nothing is
    /// queued unless `extra` is written too, and the other way round.
    pub fn enqueue_events(
        &self,
        flow: &FlowRecord,
        events: Vec<Event>,
        source: &str,
        extra: Vec<Op>,
    ) -> Result<EnqueueOutcome, ServiceError> {
        let now = now_ms();
        let window = self.runtime.settings.dedup_window.as_millis() as u64;
        let _guard = self.runtime.stripe(&flow.id);
        let mut outcome = EnqueueOutcome::default();
        let mut ops = extra;
        let mut seen = HashSet::new();
        for event in events {
            let dedup = dedup_key(&flow.tenant, &flow.id, &event.id);
            let recent = self
                .store
                .get_json::<u64>(DEDUP, &dedup)?
                .is_some_and(|at| now.saturating_sub(at) < window);
            if recent || !seen.insert(event.id.clone()) {
                outcome.duplicates += 1;
                continue;
            }
            ops.push(Op::put_json(DEDUP, &dedup, &now));
            let mut expiry = format!("{now:016x}\0").into_bytes();
            expiry.extend_from_slice(&dedup);
            ops.push(Op::Put {
                tree: DEDUP_EXPIRY,
                key: expiry,
                value: Vec::new(),
            });
            let mut id = run_id_for(&flow.id, &event.id);
            if self.store.get(RUNS, &run_key(&flow.tenant, &id))?.is_some() {
                // Seen before the window: a new run, not the old one again.
                id = run_id_for(&flow.id, &format!("{}\0{now}", event.id));
            }
            let payload = serde_json::from_str(&event.payload);
            let run = self.new_run(flow, id, source, event.id, payload, now);
            outcome.runs.push(run.id.clone());
            ops.extend(run.index());
        }
        self.store.apply(ops)?;
        if !outcome.runs.is_empty() {
            self.runtime.wake(flow.spec.lane);
        }
        Ok(outcome)
    }

    /// A run in its first state: queued, or already decided by the
    /// conditions (skipped, or failed when a condition cannot be evaluated).
    fn new_run(
        &self,
        flow: &FlowRecord,
        id: String,
        source: &str,
        event_id: String,
        payload: Result<Value, serde_json::Error>,
        now: u64,
    ) -> RunRecord {
        let mut run = RunRecord {
            id,
            tenant: flow.tenant.clone(),
            flow_id: flow.id.clone(),
            flow_version: flow.version,
            source: source.to_string(),
            event: RunEvent {
                id: event_id,
                payload: Value::Null,
            },
            lane: flow.spec.lane,
            status: RunStatus::Queued,
            next_step: 0,
            steps: flow
                .spec
                .steps
                .iter()
                .map(|s| StepRecord {
                    key: s.key.clone(),
                    idempotency_key: String::new(),
                    input: None,
                    output: None,
                    attempts: 0,
                    first_failure_at: None,
                    history: Vec::new(),
                })
                .collect(),
            error: None,
            due_at: now,
            created_at: now,
            updated_at: now,
            finished_at: None,
            parked_on: None,
            replays: 0,
        };
        for step in &mut run.steps {
            step.idempotency_key = record::idempotency_key(&run.id, &step.key);
        }
        let fail = |run: &mut RunRecord, kind: &str, message: String| {
            run.status = RunStatus::Failed;
            run.finished_at = Some(now);
            run.error = Some(RunError {
                step: None,
                kind: kind.to_string(),
                message,
            });
        };
        match payload {
            Ok(payload) => run.event.payload = payload,
            Err(e) => {
                fail(
                    &mut run,
                    "event",
                    format!("the trigger produced an event whose payload is not JSON: {e}"),
                );
                return run;
            }
        }
        let context = run.context();
        for (i, condition) in flow.spec.conditions.iter().enumerate() {
            match template::condition(condition, &context) {
                Ok(true) => {}
                Ok(false) => {
                    run.status = RunStatus::Skipped;
                    run.finished_at = Some(now);
                    run.error = Some(RunError {
                        step: None,
                        kind: "condition".into(),
                        message: format!("conditions[{i}] `{condition}` is false for this event"),
                    });
                    break;
                }
                Err(e) => {
                    fail(
                        &mut run,
                        "condition",
                        format!("conditions[{i}] `{condition}` cannot be evaluated: {e}"),
                    );
                    break;
                }
            }
        }
        if run.status.is_finished() {
            self.runtime.finished(&run);
        }
        run
    }

    /// Starts a run of a flow by hand with `payload` as the trigger event
    /// (`POST /v1/flows/{id}/run`); with `wait`, waits up to that long for
    /// the run to finish.
    pub async fn start_run(
        &self,
        tenant: &str,
        flow_id: &str,
        payload: Value,
        wait: Option<Duration>,
    ) -> Result<RunRecord, ServiceError> {
        let flow = self.flow(tenant, flow_id)?;
        let mut bytes = [0u8; 12];
        rand::rng().fill_bytes(&mut bytes);
        let event = Event {
            id: format!("api_{}", hex::encode(bytes)),
            payload: payload.to_string(),
        };
        let run_id = run_id_for(&flow.id, &event.id);
        let done = wait.map(|_| self.runtime.wait_for(&run_id));
        self.enqueue_events(&flow, vec![event], "api", Vec::new())?;
        if let (Some(done), Some(wait)) = (done, wait) {
            match tokio::time::timeout(wait, done).await {
                Ok(Ok(run)) => return Ok(run),
                _ => self.runtime.forget_waiter(&run_id),
            }
        }
        self.run(tenant, &run_id)
    }

    pub fn run(&self, tenant: &str, id: &str) -> Result<RunRecord, ServiceError> {
        self.store
            .get_json(RUNS, &run_key(tenant, id))?
            .ok_or_else(|| ServiceError::NotFound(format!("run `{id}` does not exist")))
    }

    pub fn runs(&self, tenant: &str, filter: &RunFilter) -> Result<Vec<RunRecord>, ServiceError> {
        if let Some(status) = &filter.status
            && RunStatus::parse(status).is_none()
        {
            return Err(ServiceError::BadRequest(format!(
                "unknown run status `{status}` (one of queued, retrying, paused, succeeded, skipped, failed, cancelled)"
            )));
        }
        Ok(record::list_runs(&*self.store, tenant, filter)?)
    }

    /// Changes a run under its lock: `change` gets the current record and
    /// returns the new one, or an error that leaves it alone.
    pub(crate) fn change_run(
        &self,
        tenant: &str,
        id: &str,
        change: impl FnOnce(&RunRecord) -> Result<RunRecord, ServiceError>,
    ) -> Result<RunRecord, ServiceError> {
        let _guard = self.runtime.stripe(id);
        let before = self.run(tenant, id)?;
        let after = change(&before)?;
        self.store.apply(after.transition(&before))?;
        if after.status.is_finished() && !before.status.is_finished() {
            self.runtime.finished(&after);
        }
        if matches!(after.status, RunStatus::Queued) {
            self.runtime.wake(after.lane);
        }
        Ok(after)
    }

    /// Runs a failed (or cancelled) run again from the step that failed,
    /// with the same idempotency keys and a fresh retry schedule.
    pub fn replay_run(&self, tenant: &str, id: &str) -> Result<RunRecord, ServiceError> {
        self.change_run(tenant, id, |run| {
            if !matches!(run.status, RunStatus::Failed | RunStatus::Cancelled) {
                return Err(ServiceError::State(format!(
                    "run `{id}` is {}; only failed and cancelled runs can be replayed",
                    run.status.as_str()
                )));
            }
            let mut run = run.clone();
            let now = now_ms();
            run.status = RunStatus::Queued;
            run.due_at = now;
            run.updated_at = now;
            run.finished_at = None;
            run.error = None;
            run.replays += 1;
            if let Some(step) = run.steps.get_mut(run.next_step) {
                step.attempts = 0;
                step.first_failure_at = None;
            }
            Ok(run)
        })
    }

    /// Replays every failed run of the tenant that matches `filter` (the
    /// dead-letter list, or part of it).
    pub fn replay_runs(
        &self,
        tenant: &str,
        filter: &RunFilter,
    ) -> Result<Vec<String>, ServiceError> {
        let filter = RunFilter {
            status: Some("failed".into()),
            limit: Some(filter.limit.unwrap_or(1000)),
            ..filter.clone()
        };
        let mut replayed = Vec::new();
        for run in self.runs(tenant, &filter)? {
            // A run changed since the listing (replayed by someone else) is skipped.
            if self.replay_run(tenant, &run.id).is_ok() {
                replayed.push(run.id);
            }
        }
        Ok(replayed)
    }

    pub fn cancel_run(&self, tenant: &str, id: &str) -> Result<RunRecord, ServiceError> {
        self.change_run(tenant, id, |run| {
            if run.status.is_finished() {
                return Err(ServiceError::State(format!(
                    "run `{id}` already finished ({})",
                    run.status.as_str()
                )));
            }
            let mut run = run.clone();
            let now = now_ms();
            run.status = RunStatus::Cancelled;
            run.updated_at = now;
            run.finished_at = Some(now);
            run.parked_on = None;
            Ok(run)
        })
    }

    /// Marks a connection active again and queues the runs parked behind it.
    pub fn resume_connection(&self, tenant: &str, id: &str) -> Result<Vec<String>, ServiceError> {
        self.connections
            .set_status(tenant, id, ConnectionStatus::Active)?;
        // A refused sign-in is held until now: the next call may try again.
        self.auth_states.forget(id);
        let parked = self
            .store
            .scan_prefix(PARKED, format!("{tenant}\0{id}\0").as_bytes())?;
        let mut resumed = Vec::new();
        for (key, _) in parked {
            let text = String::from_utf8_lossy(&key);
            let Some(run_id) = text.rsplit('\0').next() else {
                continue;
            };
            let result = self.change_run(tenant, run_id, |run| {
                let mut run = run.clone();
                if run.status != RunStatus::Paused {
                    return Err(ServiceError::State("no longer paused".into()));
                }
                let now = now_ms();
                run.status = RunStatus::Queued;
                run.parked_on = None;
                run.due_at = now;
                run.updated_at = now;
                Ok(run)
            });
            if let Ok(run) = result {
                resumed.push(run.id);
            }
        }
        Ok(resumed)
    }

    /// Deletes finished runs older than the retention, de-duplication
    /// entries older than the window, and rejected deliveries older than the
    /// retention. `now` is a parameter so tests need no clock games.
    pub fn prune(&self, now: u64) -> Result<PruneReport, ServiceError> {
        let settings = &self.runtime.settings;
        let mut report = PruneReport::default();
        let run_cutoff = now.saturating_sub(settings.retention.as_millis() as u64);
        loop {
            let batch = self.store.scan_from(FINISHED, b"", b"", 500)?;
            let mut ops = Vec::new();
            for (key, _) in &batch {
                let text = String::from_utf8_lossy(key);
                let mut parts = text.splitn(3, '\0');
                let (Some(at), Some(tenant), Some(id)) = (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                if u64::from_str_radix(at, 16).unwrap_or(0) >= run_cutoff {
                    break;
                }
                ops.push(Op::Delete {
                    tree: FINISHED,
                    key: key.clone(),
                });
                if let Some(run) = self
                    .store
                    .get_json::<RunRecord>(RUNS, &run_key(tenant, id))?
                {
                    ops.extend(run.unindex());
                    ops.push(Op::Delete {
                        tree: RUNS,
                        key: run_key(tenant, id),
                    });
                }
                report.runs += 1;
            }
            let done = ops.is_empty() || batch.len() < 500;
            self.store.apply(ops)?;
            if done {
                break;
            }
        }
        let dedup_cutoff = now.saturating_sub(settings.dedup_window.as_millis() as u64);
        loop {
            let batch = self.store.scan_from(DEDUP_EXPIRY, b"", b"", 500)?;
            let mut ops = Vec::new();
            for (key, _) in &batch {
                let Some(split) = key.iter().position(|b| *b == 0) else {
                    continue;
                };
                let at = std::str::from_utf8(&key[..split])
                    .ok()
                    .and_then(|t| u64::from_str_radix(t, 16).ok())
                    .unwrap_or(0);
                if at >= dedup_cutoff {
                    break;
                }
                ops.push(Op::Delete {
                    tree: DEDUP_EXPIRY,
                    key: key.clone(),
                });
                let dedup = key[split + 1..].to_vec();
                // A later sighting renewed the entry: keep that one.
                if self
                    .store
                    .get_json::<u64>(DEDUP, &dedup)?
                    .is_some_and(|seen| seen < dedup_cutoff)
                {
                    ops.push(Op::Delete {
                        tree: DEDUP,
                        key: dedup,
                    });
                }
                report.dedup_entries += 1;
            }
            let done = ops.is_empty() || batch.len() < 500;
            self.store.apply(ops)?;
            if done {
                break;
            }
        }
        report.rejected_deliveries = self.prune_rejected(run_cutoff)?;
        Ok(report)
    }

    /// Queue depth for the gauge.
    pub fn queue_depth(&self) -> Result<usize, ServiceError> {
        Ok(self.store.count(QUEUE)?)
    }

    pub fn dead_letter_count(&self, tenant: &str) -> Result<usize, ServiceError> {
        Ok(self
            .store
            .scan_prefix(DEAD, format!("{tenant}\0").as_bytes())?
            .len())
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneReport {
    pub runs: usize,
    pub dedup_entries: usize,
    pub rejected_deliveries: usize,
}
