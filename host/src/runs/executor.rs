//! The dispatchers (one per lane) that take due runs off the queue within
//! the concurrency limits, and the execution of one run: its steps through
//! the interpreter (`interpret.rs`), then the run's new state written once
//! (succeeded, failed into the dead-letter list, retrying or waiting until
//! a time, parked behind a paused connection).

use std::{sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::{
    Runs,
    interpret::{Interpreter, Outcome, Suspend},
    limits::{Claim, Refusal},
};
use crate::{
    clock::now_ms,
    error::ServiceError,
    flows::{FlowRecord, Lane, actions},
    store::{QueueEntry, RunError, RunRecord, RunStatus, Visit},
};

/// Queue entries looked at per pass of a dispatcher, besides those already
/// running (which stay in the queue until they finish).
const SCAN: usize = 64;

impl Runs {
    /// Starts the lane dispatchers. They stop with the host's tasks.
    pub(super) fn start_dispatchers(self: &Arc<Self>) {
        // Work another node queued wakes the lane as local work does.
        let weak = Arc::downgrade(self);
        self.store.on_queued(Arc::new(move |lane| {
            if let Some(runs) = weak.upgrade() {
                runs.wake(lane);
            }
        }));
        for (lane, workers) in [
            (Lane::Fast, self.settings.fast_workers),
            (Lane::Normal, self.settings.normal_workers),
        ] {
            let runs = self.clone();
            self.tasks
                .spawn(async move { runs.dispatch(lane, workers).await });
        }
    }

    async fn dispatch(self: Arc<Self>, lane: Lane, workers: usize) {
        let permits = Arc::new(Semaphore::new(workers.max(1)));
        let mut shutdown = self.tasks.shutdown_signal();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wait = match self.dispatch_due(lane, &permits, workers) {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::error!(?lane, "reading the run queue: {e}");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = self.wake[lane as usize].notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => {}
            }
        }
        // Let runs in flight finish their step.
        let _ = permits.acquire_many(workers.max(1) as u32).await;
    }

    /// Starts every due run that the limits allow; returns how long to wait
    /// before looking again.
    fn dispatch_due(
        self: &Arc<Self>,
        lane: Lane,
        permits: &Arc<Semaphore>,
        workers: usize,
    ) -> Result<Duration, ServiceError> {
        // Flows found at their (or their connections') limit in this pass.
        let mut blocked = std::collections::HashSet::new();
        let mut failure = None;
        let free = permits.available_permits();
        let wait = self.store.visit_due(lane, now_ms(), SCAN + workers, free, &mut |entry| {
            if permits.available_permits() == 0 {
                // A finishing run wakes the dispatcher.
                return Visit::Full;
            }
            if blocked.contains(&entry.flow) {
                return Visit::Blocked;
            }
            if self.limits().is_running(&entry.run) {
                return Visit::Next;
            }
            let run = match self.store.run(&entry.tenant, &entry.run) {
                Ok(Some(run)) => run,
                Ok(None) => return Visit::Orphan,
                Err(e) => {
                    failure.get_or_insert(e);
                    return Visit::Next;
                }
            };
            if !run.status.is_queued() {
                if let Err(e) = self.repair_queue_entry(entry) {
                    failure.get_or_insert(e);
                }
                return Visit::Next;
            }
            // Runs of one entity go one at a time, in arrival order.
            if let Some(entity) = &run.entity {
                match self.entity_store.entity_head(
                    &run.tenant,
                    &run.flow_id,
                    &entity.kind,
                    &entity.key,
                ) {
                    Ok(Some(head)) if head != run.id => return Visit::Next,
                    Ok(_) => {}
                    Err(e) => {
                        failure.get_or_insert(e);
                        return Visit::Next;
                    }
                }
            }
            let flow = match self.flows.version(&entry.tenant, &run.flow_id, run.flow_version) {
                Ok(flow) => flow,
                Err(e) => {
                    self.fail_unrunnable(&run, format!("its flow version is gone: {e}"));
                    return Visit::Next;
                }
            };
            let connections = step_connections(&flow);
            match self.limits().claim(self.claim_of(&run.id, &flow, &connections)) {
                Ok(()) => {}
                Err(Refusal::AtLimit) => {
                    blocked.insert(entry.flow.clone());
                    return Visit::Blocked;
                }
                Err(Refusal::Running) => return Visit::Next,
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                self.release(&run.id, &flow, &connections);
                return Visit::Full;
            };
            let runs = self.clone();
            let span = tracing::info_span!("run", run = %run.id, flow = %run.flow_id, tenant = %run.tenant);
            let (tenant, id) = (run.tenant.clone(), run.id.clone());
            tokio::spawn(
                async move {
                    runs.execute(run, &flow, permit).await;
                    if let Err(e) = runs.store.release(&tenant, &id) {
                        tracing::warn!(run = %id, "cannot release the run's claim: {e}");
                    }
                    runs.release(&id, &flow, &connections);
                    runs.wake(lane);
                }
                .instrument(span),
            );
            Visit::Start
        })?;
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(wait),
        }
    }

    /// The queue holds `entry`, but its run is no longer queued: a finishing
    /// write was cut short by a crash (the store writes the queue entry
    /// last). Under the run's lock, so that no cancel or replay moves it
    /// meanwhile, the index entries of its state are written again and the
    /// entry goes.
    fn repair_queue_entry(&self, entry: &QueueEntry) -> Result<(), crate::store::StoreError> {
        let _guard = self.stripe(&entry.run);
        let Some(run) = self.store.run(&entry.tenant, &entry.run)? else {
            return Ok(());
        };
        if run.status.is_queued() {
            return Ok(());
        }
        self.store.repair_queue_entry(&run, entry)?;
        tracing::info!(run = %run.id, status = run.status.as_str(), "repaired a queue entry left by a write cut short");
        Ok(())
    }

    fn limits(&self) -> std::sync::MutexGuard<'_, super::limits::Limits> {
        self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slots a run of `flow` needs: its flow's and its steps' connections'.
    fn claim_of<'a>(
        &self,
        run: &'a str,
        flow: &'a FlowRecord,
        connections: &'a [String],
    ) -> Claim<'a> {
        Claim {
            run,
            flow: &flow.id,
            flow_limit: flow.spec.concurrency,
            connections,
            connection_limit: self.settings.connection_concurrency,
        }
    }

    fn release(&self, run: &str, flow: &FlowRecord, connections: &[String]) {
        self.limits().release(self.claim_of(run, flow, connections));
    }

    fn fail_unrunnable(&self, run: &RunRecord, message: String) {
        let result = self.change_run(&run.tenant, &run.id, |current| {
            let mut run = current.clone();
            finish(
                &mut run,
                RunStatus::Failed,
                Some(RunError {
                    step: None,
                    kind: "flow".into(),
                    message: message.clone(),
                }),
            );
            Ok(run)
        });
        if let Err(e) = result {
            tracing::error!(run = %run.id, "cannot fail an unrunnable run: {e}");
        }
    }

    /// Runs the remaining steps of `run` until it finishes, waits (for a
    /// retry, a delay, a called flow), or is parked.
    async fn execute(&self, queued: RunRecord, flow: &FlowRecord, _permit: OwnedSemaphorePermit) {
        let interpreter = Interpreter::new(self, flow, queued);
        let outcome = interpreter.run().await;
        let echo = match outcome {
            Outcome::Continue | Outcome::Stop(_) => interpreter.echo(),
            _ => None,
        };
        let mut run = interpreter.into_record();
        match outcome {
            Outcome::Continue => finish(&mut run, RunStatus::Succeeded, None),
            Outcome::Stop(reason) => {
                run.stopped = Some(reason);
                finish(&mut run, RunStatus::Succeeded, None);
            }
            Outcome::Fail(error) => finish(&mut run, RunStatus::Failed, Some(error)),
            Outcome::Skip(error) => {
                finish(&mut run, RunStatus::Skipped, None);
                run.error = Some(error);
            }
            Outcome::Suspend(Suspend::At {
                status,
                due,
                error,
                until,
            }) => {
                run.status = status;
                run.due_at = due;
                run.waiting_until = until;
                run.updated_at = now_ms();
                if error.is_some() {
                    run.error = error;
                }
                self.metrics.run(status.as_str());
            }
            Outcome::Suspend(Suspend::Park { connection, error }) => {
                run.status = RunStatus::Paused;
                run.parked_on = Some(connection);
                run.error = Some(error);
                run.updated_at = now_ms();
                self.metrics.run("paused");
            }
            Outcome::Suspend(Suspend::Cancelled) => {
                tracing::info!(run = %run.id, "stopped: the run was cancelled while a step ran");
                return;
            }
        }
        if run.status != RunStatus::Waiting {
            run.waiting_until = None;
        }
        // Written under the run's lock, unless someone cancelled it meanwhile.
        let (tenant, id) = (run.tenant.clone(), run.id.clone());
        if let Err(e) = self.write_progress(&tenant, &id, move |_| run) {
            tracing::info!(run = %id, "stopped: {e}");
            return;
        }
        if let Some(echo) = echo
            && let Err(e) = self.entity_store.put_entity(&echo)
        {
            tracing::warn!(run = %id, "cannot record what the flow wrote: {e}");
        }
    }
}

fn finish(run: &mut RunRecord, status: RunStatus, error: Option<RunError>) {
    let now = now_ms();
    run.status = status;
    run.updated_at = now;
    run.finished_at = Some(now);
    run.parked_on = None;
    run.waiting_until = None;
    if error.is_some() || status == RunStatus::Succeeded {
        run.error = error;
    }
}

/// The connections a flow's steps use (their concurrency is limited).
fn step_connections(flow: &FlowRecord) -> Vec<String> {
    let mut ids: Vec<String> = actions(&flow.spec.steps)
        .into_iter()
        .filter_map(|s| s.connection.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}
