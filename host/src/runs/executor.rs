//! The dispatchers (one per lane) that take due runs off the queue within
//! the concurrency limits, and the executor that runs a run's remaining
//! steps: render the input, check it against the pinned action's schema,
//! call the plugin with the step's idempotency key, record the attempt, and
//! decide what a failure means (retry at a time, pause the connection, or
//! fail into the dead-letter list).

use std::{sync::Arc, time::Duration};

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::{
    Runs,
    limits::{Claim, Refusal},
    retry::{RetryPolicy, Verdict, classify},
};
use crate::{
    calls::{Purpose, Refused, Target, parse_output},
    clock::now_ms,
    engine::CallError,
    error::ServiceError,
    flows::{FlowRecord, Lane, template},
    registry::parse_plugin_ref,
    schema::check_against,
    store::{Attempt, KEPT_ATTEMPTS, RunError, RunRecord, RunStatus, StepRecord, Visit},
};

/// Queue entries looked at per pass of a dispatcher, besides those already
/// running (which stay in the queue until they finish).
const SCAN: usize = 64;

impl Runs {
    /// Starts the lane dispatchers. They stop with the host's tasks.
    pub(super) fn start_dispatchers(self: &Arc<Self>) {
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
        let wait = self.store.visit_due(lane, now_ms(), SCAN + workers, &mut |entry| {
            if permits.available_permits() == 0 {
                // A finishing run wakes the dispatcher.
                return Visit::Full;
            }
            if blocked.contains(&entry.flow) || self.limits().is_running(&entry.run) {
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
            let flow = match self.flows.version(&entry.tenant, &run.flow_id, run.flow_version) {
                Ok(flow) => flow,
                Err(e) => {
                    self.fail_unrunnable(&run, format!("its flow version is gone: {e}"));
                    return Visit::Next;
                }
            };
            let connections = step_connections(&flow);
            match self.limits().claim(self.claim_of(&run, &flow, &connections)) {
                Ok(()) => {}
                Err(Refusal::AtLimit) => {
                    blocked.insert(entry.flow.clone());
                    return Visit::Next;
                }
                Err(Refusal::Running) => return Visit::Next,
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                self.release(&run, &flow, &connections);
                return Visit::Full;
            };
            let runs = self.clone();
            let span = tracing::info_span!("run", run = %run.id, flow = %run.flow_id, tenant = %run.tenant);
            tokio::spawn(
                async move {
                    runs.execute(&run, &flow, permit).await;
                    runs.release(&run, &flow, &connections);
                    runs.wake(lane);
                }
                .instrument(span),
            );
            Visit::Next
        })?;
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(wait),
        }
    }

    fn limits(&self) -> std::sync::MutexGuard<'_, super::limits::Limits> {
        self.limits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slots `run` needs: its flow's and its steps' connections'.
    fn claim_of<'a>(
        &self,
        run: &'a RunRecord,
        flow: &'a FlowRecord,
        connections: &'a [String],
    ) -> Claim<'a> {
        Claim {
            run: &run.id,
            flow: &flow.id,
            flow_limit: flow.spec.concurrency,
            connections,
            connection_limit: self.settings.connection_concurrency,
        }
    }

    fn release(&self, run: &RunRecord, flow: &FlowRecord, connections: &[String]) {
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

    /// Runs the remaining steps of `run` until it finishes, waits for a
    /// retry, or is parked.
    async fn execute(&self, queued: &RunRecord, flow: &FlowRecord, _permit: OwnedSemaphorePermit) {
        let mut run = queued.clone();
        while run.next_step < flow.spec.steps.len() {
            let step = run.next_step;
            let key = flow.spec.steps[step].key.clone();
            let span =
                tracing::info_span!("step", step = %key, attempt = run.steps[step].attempts + 1);
            let mut next = self.run_step(&run, flow, step).instrument(span).await;
            if next.status == RunStatus::Queued && next.next_step == flow.spec.steps.len() {
                // The last step's result and the run's success: one write.
                finish(&mut next, RunStatus::Succeeded, None);
            }
            // Write under the run's lock, unless someone cancelled it meanwhile.
            let written = self.change_run(&run.tenant, &run.id, |current| {
                if !matches!(current.status, RunStatus::Queued | RunStatus::Retrying) {
                    return Err(ServiceError::State(format!(
                        "the run became {} while a step ran",
                        current.status.as_str()
                    )));
                }
                Ok(next.clone())
            });
            match written {
                Ok(after) => run = after,
                Err(e) => {
                    tracing::info!(run = %run.id, "stopped: {e}");
                    return;
                }
            }
            if run.status != RunStatus::Queued {
                return;
            }
        }
        if run.status == RunStatus::Queued {
            let result = self.change_run(&run.tenant, &run.id, |current| {
                let mut done = current.clone();
                finish(&mut done, RunStatus::Succeeded, None);
                Ok(done)
            });
            if let Err(e) = result {
                tracing::error!(run = %run.id, "cannot record the run's success: {e}");
            }
        }
    }

    /// One attempt of step `index`; returns the run as it should be written.
    async fn run_step(&self, before: &RunRecord, flow: &FlowRecord, index: usize) -> RunRecord {
        let mut run = before.clone();
        let spec = &flow.spec.steps[index];
        let now = now_ms();
        run.updated_at = now;
        let fail = |run, kind: &str, message: String| failed(run, &spec.key, kind, message);
        let plugin = match parse_plugin_ref(&spec.plugin) {
            Ok((key, _)) => key,
            Err(e) => return fail(run, "plugin", e.to_string()),
        };
        let target = Target {
            tenant: &run.tenant,
            plugin: &plugin,
            version: &flow.pinned.steps[index],
            connection: spec.connection.as_deref(),
        };
        let purpose = Purpose::Step {
            run: run.id.clone(),
            step: spec.key.clone(),
        };
        let call = match self.calls.prepare(target, purpose, run.id.clone()) {
            Ok(call) => call,
            Err(Refused::Plugin(e)) => return fail(run, "plugin", e.to_string()),
            Err(Refused::Connection(e)) => return fail(run, "connection", e.to_string()),
            Err(Refused::Paused { connection, reason }) => {
                let message = format!(
                    "connection `{connection}` is paused ({reason}); fix it and resume the connection to continue"
                );
                return self.park(run, &spec.key, connection, message);
            }
        };
        let input = match template::render(&spec.input, &run.context()) {
            Ok(input) => input,
            Err(e) => return fail(run, "mapping", format!("steps[{}].input: {e}", spec.key)),
        };
        let manifest = &call.plugin.record.manifest;
        let Some(action) = manifest.actions.iter().find(|a| a.key == spec.action) else {
            let message = format!("{} has no action `{}`", call.plugin.name(), spec.action);
            return fail(run, "plugin", message);
        };
        if let Err(e) = check_against(
            &action.input_schema,
            &input,
            &format!("the mapped input of step `{}`", spec.key),
        ) {
            run.steps[index].input = Some(input);
            return fail(run, "invalid_input", e.to_string());
        }
        let plugin_name = call.plugin.name();
        let connection = call.connection.as_ref().map(|c| c.id.clone());
        let idempotency_key = run.steps[index].idempotency_key.clone();
        let started = std::time::Instant::now();
        let outcome = self
            .calls
            .perform(call, &spec.action, &input.to_string(), &idempotency_key)
            .await;
        self.metrics.call(
            &self.metrics.step_latency,
            &plugin,
            &spec.action,
            started.elapsed().as_secs_f64(),
        );
        let result = outcome.result.and_then(parse_output);
        let step = &mut run.steps[index];
        step.input = Some(input);
        step.attempts += 1;
        let attempt = Attempt {
            number: step.attempts,
            started_at: now,
            duration_ms: outcome.duration.as_secs_f64() * 1e3,
            plugin: plugin_name,
            error: result.as_ref().err().map(|e| json!(e)),
            journal: serde_json::to_value(&outcome.journal).unwrap_or(Value::Null),
            retry_at: None,
        };
        match result {
            Ok(output) => {
                step.output = Some(output);
                keep_attempt(step, attempt);
                run.next_step = index + 1;
                run.status = RunStatus::Queued;
                run.error = None;
                run
            }
            Err(error) => self.after_failure(run, index, flow, attempt, error, connection),
        }
    }

    /// What a failed attempt leads to: a retry at a time, the run parked
    /// behind its connection (which the call path paused), or a dead letter.
    fn after_failure(
        &self,
        mut run: RunRecord,
        index: usize,
        flow: &FlowRecord,
        mut attempt: Attempt,
        error: CallError,
        connection: Option<String>,
    ) -> RunRecord {
        let spec = &flow.spec.steps[index];
        let step = &mut run.steps[index];
        let first_failure = *step.first_failure_at.get_or_insert(attempt.started_at);
        let verdict = RetryPolicy::for_step(spec.retry.as_ref()).decide(
            classify(&error),
            step.attempts,
            first_failure,
            now_ms(),
            rand::rng().random_range(-1.0..=1.0),
        );
        let kind = error_kind(&error);
        match verdict {
            Verdict::RetryAt(at) => {
                attempt.retry_at = Some(at);
                keep_attempt(step, attempt);
                run.status = RunStatus::Retrying;
                run.due_at = at;
                run.error = Some(RunError {
                    step: Some(spec.key.clone()),
                    kind: kind.to_string(),
                    message: error.to_string(),
                });
                self.metrics.retries.inc();
                self.metrics.run("retrying");
                run
            }
            Verdict::PauseConnection => {
                keep_attempt(step, attempt);
                let Some(connection) = connection else {
                    return failed(run, &spec.key, "auth", error.to_string());
                };
                let message = format!(
                    "{error}; connection `{connection}` is paused until it is fixed and resumed"
                );
                self.park(run, &spec.key, connection, message)
            }
            Verdict::Fail { exhausted } => {
                keep_attempt(step, attempt);
                let message = if exhausted {
                    format!("{error} (gave up after {} attempts)", step.attempts)
                } else {
                    error.to_string()
                };
                failed(run, &spec.key, kind, message)
            }
        }
    }

    /// The run waits behind its paused connection until it is resumed.
    fn park(
        &self,
        mut run: RunRecord,
        step: &str,
        connection: String,
        message: String,
    ) -> RunRecord {
        run.status = RunStatus::Paused;
        run.parked_on = Some(connection);
        run.error = Some(RunError {
            step: Some(step.to_string()),
            kind: "auth".into(),
            message,
        });
        self.metrics.run("paused");
        run
    }
}

/// Keeps an attempt in the step's history, dropping the oldest beyond
/// [`KEPT_ATTEMPTS`].
fn keep_attempt(step: &mut StepRecord, attempt: Attempt) {
    step.history.push(attempt);
    if step.history.len() > KEPT_ATTEMPTS {
        step.history.remove(0);
    }
}

/// The run failed for good at `step`.
fn failed(mut run: RunRecord, step: &str, kind: &str, message: String) -> RunRecord {
    finish(
        &mut run,
        RunStatus::Failed,
        Some(RunError {
            step: Some(step.to_string()),
            kind: kind.to_string(),
            message,
        }),
    );
    run
}

fn finish(run: &mut RunRecord, status: RunStatus, error: Option<RunError>) {
    let now = now_ms();
    run.status = status;
    run.updated_at = now;
    run.finished_at = Some(now);
    run.parked_on = None;
    if error.is_some() || status == RunStatus::Succeeded {
        run.error = error;
    }
}

/// The connections a flow's steps use (their concurrency is limited).
fn step_connections(flow: &FlowRecord) -> Vec<String> {
    let mut ids: Vec<String> = flow
        .spec
        .steps
        .iter()
        .filter_map(|s| s.connection.clone())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn error_kind(error: &CallError) -> &'static str {
    use crate::engine::ConnectorError as C;
    match error {
        CallError::Connector { error } => match error {
            C::Transient { .. } => "transient",
            C::RateLimited { .. } => "rate_limited",
            C::Auth { .. } => "auth",
            C::InvalidInput { .. } => "invalid_input",
            C::Permanent { .. } => "permanent",
        },
        CallError::Timeout { .. } => "timeout",
        CallError::MemoryLimit { .. } => "memory_limit",
        CallError::Trap { .. } => "trap",
        CallError::Instantiate { .. } => "instantiate",
    }
}
