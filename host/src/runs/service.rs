//! The operations on runs that the triggers, the API and the CLI share:
//! turning events into queued runs (with de-duplication and conditions),
//! manual and synchronous runs, history, replay, cancel, resuming a paused
//! connection's runs, and retention.

use std::{collections::HashSet, time::Duration};

use rand::RngCore;
use serde_json::Value;

use super::{
    Runs,
    entity::{Entities, condition_context},
    record::{self, run_id_for},
};
use crate::{
    clock::now_ms,
    engine::Event,
    error::ServiceError,
    flows::{FlowRecord, template},
    store::{
        Along, ParentRun, RunError, RunEvent, RunFilter, RunRecord, RunStatus, Seen, StepStatus,
    },
};

/// What became of a batch of events.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct EnqueueOutcome {
    /// Runs created (queued, skipped by conditions, or failed at once).
    pub runs: Vec<String>,
    /// Events dropped as already seen within the window.
    pub duplicates: usize,
}

impl Runs {
    /// Creates the runs for `events` of `flow`, dropping events seen within
    /// the de-duplication window, in one atomic batch together with `extra`
    /// (the inbox entry to delete, the poll cursor to save). Nothing is
    /// queued unless `extra` is written too, and the other way round.
    pub fn enqueue_events(
        &self,
        flow: &FlowRecord,
        events: Vec<Event>,
        source: &str,
        along: Along<'_>,
    ) -> Result<EnqueueOutcome, ServiceError> {
        let (outcome, runs) = self.create_runs(flow, events, source, along, None)?;
        // After the flow's lock is let go: a finished run may wake its caller.
        for run in runs.iter().filter(|r| r.status.is_finished()) {
            self.finished(run);
        }
        if !outcome.runs.is_empty() {
            self.wake(flow.spec.lane);
        }
        Ok(outcome)
    }

    /// Starts a run of `flow` for a `call_flow` step: `event_id` is the
    /// calling step's, so a retried or resumed step finds the run it started
    /// instead of starting another. Returns the run's id.
    pub(super) fn start_child(
        &self,
        flow: &FlowRecord,
        event_id: String,
        payload: Value,
        parent: Option<ParentRun>,
    ) -> Result<String, ServiceError> {
        let event = Event {
            id: event_id,
            payload: payload.to_string(),
        };
        let id = run_id_for(&flow.id, &event.id);
        if self.store.exists(&flow.tenant, &id)? {
            return Ok(id);
        }
        let (_, runs) = self.create_runs(flow, vec![event], "flow", Along::Nothing, parent)?;
        for run in runs.iter().filter(|r| r.status.is_finished()) {
            self.finished(run);
        }
        self.wake(flow.spec.lane);
        Ok(runs.first().map_or(id, |r| r.id.clone()))
    }

    /// The runs of new events (de-duplicated, and for a flow with an
    /// entity: unchanged and late events dropped), written with `along` and
    /// the entities' new states in one batch under the flow's lock.
    fn create_runs(
        &self,
        flow: &FlowRecord,
        events: Vec<Event>,
        source: &str,
        along: Along<'_>,
        parent: Option<ParentRun>,
    ) -> Result<(EnqueueOutcome, Vec<RunRecord>), ServiceError> {
        let now = now_ms();
        let window = self.settings.dedup_window.as_millis() as u64;
        let _guard = self.stripe(&flow.id);
        let mut outcome = EnqueueOutcome::default();
        let mut runs = Vec::new();
        let mut marks = Vec::new();
        let mut seen = HashSet::new();
        let mut entities = Entities::new(self, flow, now);
        for event in events {
            let recent = self
                .store
                .seen_at(&flow.tenant, &flow.id, &event.id)?
                .is_some_and(|at| now.saturating_sub(at) < window);
            if recent || !seen.insert(event.id.clone()) {
                outcome.duplicates += 1;
                continue;
            }
            marks.push(Seen {
                tenant: flow.tenant.clone(),
                flow: flow.id.clone(),
                event: event.id.clone(),
                at: now,
            });
            let mut id = run_id_for(&flow.id, &event.id);
            if let Some(stored) = self.store.run(&flow.tenant, &id)? {
                if record::creation_cut_short(stored.created_at, now, window) {
                    // Its run is there but not its mark: a crash cut the
                    // run's creation short (a store may write a delivery's
                    // runs one by one, the marks after them). That run it
                    // is: its index entries again, and the mark with the rest.
                    self.store.reindex(&stored)?;
                    tracing::info!(run = %stored.id, "completed a run's creation cut short by a crash");
                    outcome.duplicates += 1;
                    continue;
                }
                // Seen before the window: a new run, not the old one again.
                id = record::run_id_after_window(&flow.id, &event.id, now);
            }
            entities
                .counts
                .by_source
                .entry(source.to_string())
                .and_modify(|n| *n += 1)
                .or_insert(1);
            let payload = serde_json::from_str(&event.payload);
            let mut run = self.new_run(flow, id, source, event.id, payload, now);
            run.parent = parent.clone();
            if let Some(reason) = flow.paused.as_ref().filter(|_| held_while_paused(source))
                && !run.status.is_finished()
            {
                // Kept, not run: replayed once the flow is resumed.
                run.status = RunStatus::Cancelled;
                run.finished_at = Some(now);
                run.error = Some(RunError {
                    step: None,
                    kind: "paused".into(),
                    message: format!(
                        "the flow is paused ({reason}); resume it, then replay this run to process the event"
                    ),
                });
            }
            if !run.status.is_finished() && !entities.admit(&mut run)? {
                continue;
            }
            if run.status == RunStatus::Queued {
                self.conditions(flow, &mut run, now);
            }
            outcome.runs.push(run.id.clone());
            runs.push(run);
        }
        let (writes, counts) = entities.finish();
        self.store.create(&runs, &marks, &writes, along)?;
        if !counts.is_empty() {
            self.entity_store
                .add_counts(&flow.tenant, &flow.id, &counts)?;
        }
        if source == "reconcile" {
            // What the webhooks missed: the events that start a run.
            let started = runs.iter().filter(|r| !r.status.is_finished()).count();
            self.metrics.reconciled.inc_by(started as u64);
        }
        Ok((outcome, runs))
    }

    /// A run in its first state: queued, or failed when its event is not JSON.
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
            steps: Vec::new(),
            error: None,
            due_at: now,
            created_at: now,
            updated_at: now,
            finished_at: None,
            parked_on: None,
            replays: 0,
            waiting_until: None,
            stopped: None,
            response: None,
            parent: None,
            entity: None,
            changes: None,
            previous: None,
        };
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
        run
    }

    /// Decides a new run by the flow's conditions: it goes ahead, is
    /// skipped, or fails when a condition cannot be evaluated. (A flow that
    /// hydrates its events decides when the full entity is there.)
    pub(super) fn conditions(&self, flow: &FlowRecord, run: &mut RunRecord, now: u64) {
        if flow.spec.hydrate.is_some() {
            return;
        }
        let context = condition_context(flow, run);
        for (i, condition) in flow.spec.conditions.iter().enumerate() {
            let (status, kind, message) = match template::condition(condition, &context) {
                Ok(true) => continue,
                Ok(false) => (
                    RunStatus::Skipped,
                    "condition",
                    format!("conditions[{i}] `{condition}` is false for this event"),
                ),
                Err(e) => (
                    RunStatus::Failed,
                    "condition",
                    format!("conditions[{i}] `{condition}` cannot be evaluated: {e}"),
                ),
            };
            run.status = status;
            run.finished_at = Some(now);
            run.error = Some(RunError {
                step: None,
                kind: kind.into(),
                message,
            });
            return;
        }
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
        let flow = self.flows.get(tenant, flow_id)?;
        let mut bytes = [0u8; 12];
        rand::rng().fill_bytes(&mut bytes);
        let event = Event {
            id: format!("api_{}", hex::encode(bytes)),
            payload: payload.to_string(),
        };
        let run_id = run_id_for(&flow.id, &event.id);
        let done = wait.map(|_| self.wait_for(&run_id));
        self.enqueue_events(&flow, vec![event], "api", Along::Nothing)?;
        // Nothing else would make it again after a crash: on disk before
        // the caller hears of it.
        self.durable().await?;
        if let (Some(done), Some(wait)) = (done, wait) {
            match tokio::time::timeout(wait, done).await {
                Ok(Ok(run)) => return Ok(run),
                _ => self.forget_waiter(&run_id),
            }
        }
        self.run(tenant, &run_id)
    }

    /// Returns once every change of runs made so far is on disk: what an
    /// API call that started, replayed, cancelled or resumed runs awaits
    /// before it answers (runs from a webhook or a poll are made again from
    /// their source after a crash; these have no other source).
    pub async fn durable(&self) -> Result<(), ServiceError> {
        Ok(self.store.durable().await?)
    }

    pub fn run(&self, tenant: &str, id: &str) -> Result<RunRecord, ServiceError> {
        self.store
            .run(tenant, id)?
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
        Ok(self.store.runs(tenant, filter)?)
    }

    /// One page of the run history, newest first, and the cursor of the
    /// next page when there are more: the id of the page's last run, which
    /// `before` takes back. Asks for one run more only when the page is full.
    pub fn runs_page(
        &self,
        tenant: &str,
        filter: &RunFilter,
        before: Option<&str>,
    ) -> Result<(Vec<RunRecord>, Option<String>), ServiceError> {
        let mut filter = filter.clone();
        if let Some(id) = before {
            let run = self.run(tenant, id).map_err(|_| {
                ServiceError::BadRequest(format!("`before`: run `{id}` does not exist"))
            })?;
            filter.after = Some((run.created_at, run.id));
        }
        let page = self.runs(tenant, &filter)?;
        let next = match page.last() {
            Some(last) if page.len() == filter.max() => {
                let rest = RunFilter {
                    after: Some((last.created_at, last.id.clone())),
                    limit: Some(1),
                    ..filter
                };
                (!self.runs(tenant, &rest)?.is_empty()).then(|| last.id.clone())
            }
            _ => None,
        };
        Ok((page, next))
    }

    /// Changes a run under its lock: `change` gets the current record and
    /// returns the new one, or an error that leaves it alone.
    pub(crate) fn change_run(
        &self,
        tenant: &str,
        id: &str,
        change: impl FnOnce(&RunRecord) -> Result<RunRecord, ServiceError>,
    ) -> Result<RunRecord, ServiceError> {
        let guard = self.stripe(id);
        let before = self.run(tenant, id)?;
        let after = change(&before)?;
        self.store.update(&before, &after)?;
        drop(guard);
        if after.status.is_finished() && !before.status.is_finished() {
            self.finished(&after);
        }
        if matches!(after.status, RunStatus::Queued) {
            self.wake(after.lane);
        }
        Ok(after)
    }

    /// Writes an executing run's progress, unless it stopped being queued
    /// (cancelled) meanwhile.
    pub(super) fn write_progress(
        &self,
        tenant: &str,
        id: &str,
        next: impl FnOnce(&RunRecord) -> RunRecord,
    ) -> Result<RunRecord, ServiceError> {
        self.change_run(tenant, id, |current| {
            if !current.status.is_queued() {
                return Err(ServiceError::State(format!(
                    "the run became {} while a step ran",
                    current.status.as_str()
                )));
            }
            Ok(next(current))
        })
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
            // The step (or loop item) that failed starts afresh; what
            // succeeded is passed over.
            for step in run
                .steps
                .iter_mut()
                .filter(|s| !s.status.is_done() && s.status != StepStatus::Waiting)
            {
                step.status = StepStatus::Running;
                step.attempts = 0;
                step.first_failure_at = None;
                step.error = None;
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

    /// Queues the runs parked behind a connection (which was just resumed).
    pub fn resume_parked(
        &self,
        tenant: &str,
        connection: &str,
    ) -> Result<Vec<String>, ServiceError> {
        let mut resumed = Vec::new();
        for run_id in self.store.parked(tenant, connection)? {
            let result = self.change_run(tenant, &run_id, |run| {
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

    /// Deletes finished runs older than the retention and de-duplication
    /// entries older than the window. `now` is a parameter so tests need no
    /// clock games.
    pub fn prune(&self, now: u64) -> Result<PruneReport, ServiceError> {
        let settings = &self.settings;
        let (runs, dedup_entries) = self.store.prune(
            now.saturating_sub(settings.retention.as_millis() as u64),
            now.saturating_sub(settings.dedup_window.as_millis() as u64),
        )?;
        Ok(PruneReport {
            runs,
            dedup_entries,
        })
    }

    /// Queue depth for the gauge.
    pub fn queue_depth(&self) -> Result<usize, ServiceError> {
        Ok(self.store.queue_depth()?)
    }

    pub fn dead_letter_count(&self, tenant: &str) -> Result<usize, ServiceError> {
        Ok(self.store.dead_letters(tenant)?)
    }
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PruneReport {
    pub runs: usize,
    pub dedup_entries: usize,
}

/// Whether events from `source` wait while their flow is paused: a
/// trigger's do; a run started by hand or by another flow is someone's
/// explicit wish and goes ahead.
fn held_while_paused(source: &str) -> bool {
    !matches!(source, "api" | "flow")
}
