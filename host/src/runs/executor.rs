//! The dispatchers (one per lane) that take due runs off the queue within
//! the concurrency limits, and the executor that runs a run's remaining
//! steps: render the input, check it against the pinned action's schema,
//! call the plugin with the step's idempotency key, record the attempt, and
//! decide what a failure means (retry at a time, pause the connection, or
//! fail into the dead-letter list).

use std::{
    collections::{BTreeMap, HashSet},
    sync::Arc,
    time::{Duration, Instant},
};

use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::{
    Running,
    record::{
        Attempt, KEPT_ATTEMPTS, QUEUE, RunError, RunRecord, RunStatus, lane_prefix, now_ms,
        parse_queue_key,
    },
    retry::{Verdict, classify},
};
use crate::{
    app::{App, check_against},
    connections::ConnectionStatus,
    engine::CallError,
    error::ServiceError,
    flows::{FlowRecord, RetrySpec, definition::Lane, template},
    registry::parse_plugin_ref,
    store::StorageExt,
};

/// Queue entries looked at per pass of a dispatcher, besides those already
/// running (which stay in the queue until they finish).
const SCAN: usize = 64;

/// When a pass finds only runs that cannot start yet (their flow or
/// connection at its limit), the dispatcher walks on through the queue, this
/// many entries at a time and at most every [`WALK_EVERY`], so that one
/// flow's backlog never holds up another flow's runs behind it.
const WALK: usize = 4_096;
const WALK_EVERY: Duration = Duration::from_millis(50);

/// How long a dispatcher with nothing to start waits, unless woken.
const IDLE: Duration = Duration::from_millis(1000);

/// A dispatcher's walk past the blocked head of its queue.
#[derive(Default)]
struct Walk {
    /// Where the next walk starts, if the last one stopped short.
    resume: Option<Vec<u8>>,
    last: Option<Instant>,
}

/// How a look at some queue entries ended.
enum Pass {
    /// At an entry not due yet: nothing after it is due either.
    NotDue(Duration),
    /// Every worker busy; the entry at this key was not started.
    Full(Vec<u8>),
    /// Every entry looked at.
    End,
}

impl App {
    /// Starts the lane dispatchers. They stop on [`super::Runtime::shutdown`].
    pub(crate) fn start_dispatchers(self: &Arc<Self>) {
        let settings = &self.runtime.settings;
        for (lane, workers) in [
            (Lane::Fast, settings.fast_workers),
            (Lane::Normal, settings.normal_workers),
        ] {
            let app = self.clone();
            self.runtime
                .spawn(async move { app.dispatch(lane, workers).await });
        }
    }

    async fn dispatch(self: Arc<Self>, lane: Lane, workers: usize) {
        let permits = Arc::new(Semaphore::new(workers.max(1)));
        let mut shutdown = self.runtime.shutdown_signal();
        let mut walk = Walk::default();
        loop {
            if *shutdown.borrow() {
                break;
            }
            let wait = match self.dispatch_due(lane, &permits, workers, &mut walk) {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::error!(?lane, "reading the run queue: {e}");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = self.runtime.wake[lane as usize].notified() => {}
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
        walk: &mut Walk,
    ) -> Result<Duration, ServiceError> {
        let prefix = lane_prefix(lane);
        let window = SCAN + workers;
        // Flows found at their (or their connections') limit in this pass.
        let mut blocked = HashSet::new();
        let head = self.store.scan_from(QUEUE, &prefix, &[], window)?;
        let last = match head.last() {
            Some((key, _)) if head.len() == window => key.clone(),
            _ => Vec::new(), // the head is the whole lane
        };
        match self.offer(lane, head, permits, &mut blocked)? {
            Pass::NotDue(wait) => {
                walk.resume = None;
                return Ok(wait);
            }
            Pass::Full(_) => return Ok(IDLE),
            Pass::End if last.is_empty() => {
                walk.resume = None;
                return Ok(IDLE);
            }
            Pass::End => {}
        }
        // The head holds only runs that cannot start now: walk on, bounded.
        if let Some(since) = walk.last.map(|at| at.elapsed())
            && since < WALK_EVERY
        {
            return Ok(WALK_EVERY - since);
        }
        walk.last = Some(Instant::now());
        let after_head = after(&last);
        let from = match walk.resume.take() {
            Some(resume) if resume > after_head => resume,
            _ => after_head,
        };
        let entries = self.store.scan_from(QUEUE, &prefix, &from, WALK)?;
        let rest = match entries.last() {
            Some((key, _)) if entries.len() == WALK => Some(after(key)),
            _ => None, // the walk reached the end of the lane
        };
        Ok(match self.offer(lane, entries, permits, &mut blocked)? {
            Pass::NotDue(wait) => wait,
            Pass::Full(at) => {
                walk.resume = Some(at);
                IDLE
            }
            Pass::End => {
                walk.resume = rest;
                if walk.resume.is_some() {
                    WALK_EVERY
                } else {
                    IDLE
                }
            }
        })
    }

    /// Starts the due runs among `entries` that the limits allow.
    fn offer(
        self: &Arc<Self>,
        lane: Lane,
        entries: Vec<(Vec<u8>, Vec<u8>)>,
        permits: &Arc<Semaphore>,
        blocked: &mut HashSet<String>,
    ) -> Result<Pass, ServiceError> {
        let now = now_ms();
        for (key, _) in entries {
            let Some(entry) = parse_queue_key(&key) else {
                continue;
            };
            if entry.due > now {
                return Ok(Pass::NotDue(Duration::from_millis(
                    (entry.due - now).min(1000),
                )));
            }
            if permits.available_permits() == 0 {
                // A finishing run wakes the dispatcher.
                return Ok(Pass::Full(key));
            }
            if blocked.contains(&entry.flow)
                || self
                    .runtime
                    .inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&entry.run)
            {
                continue;
            }
            let Some(run) = self.store.get_json::<RunRecord>(
                super::record::RUNS,
                &super::record::run_key(&entry.tenant, &entry.run),
            )?
            else {
                // A queue entry without its run cannot happen through the
                // batches; drop it if it does.
                self.store
                    .apply(vec![crate::store::Op::Delete { tree: QUEUE, key }])?;
                continue;
            };
            let flow = match self.flow_at(&entry.tenant, &run.flow_id, run.flow_version) {
                Ok(flow) => flow,
                Err(e) => {
                    self.fail_unrunnable(&run, format!("its flow version is gone: {e}"));
                    continue;
                }
            };
            let connections = step_connections(&flow);
            if !self.claim(&run, &flow, &connections) {
                blocked.insert(entry.flow);
                continue;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                self.release(&run, &flow, &connections);
                return Ok(Pass::Full(key));
            };
            let app = self.clone();
            let span = tracing::info_span!("run", run = %run.id, flow = %run.flow_id, tenant = %run.tenant);
            tokio::spawn(
                async move {
                    app.execute(&run, &flow, permit).await;
                    app.release(&run, &flow, &connections);
                    app.runtime.wake(lane);
                }
                .instrument(span),
            );
        }
        Ok(Pass::End)
    }

    /// Takes the flow's and connections' slots for `run`, if free.
    fn claim(&self, run: &RunRecord, flow: &FlowRecord, connections: &[String]) -> bool {
        let limit = self.runtime.settings.connection_concurrency;
        let mut running = self
            .runtime
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let Running {
            per_flow,
            per_connection,
        } = &mut *running;
        let flow_busy = flow
            .spec
            .concurrency
            .is_some_and(|max| per_flow.get(&flow.id).copied().unwrap_or(0) >= max.max(1));
        let connection_busy = connections
            .iter()
            .any(|c| per_connection.get(c).copied().unwrap_or(0) >= limit.max(1));
        if flow_busy || connection_busy {
            return false;
        }
        if !self
            .runtime
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(run.id.clone())
        {
            return false;
        }
        *per_flow.entry(flow.id.clone()).or_default() += 1;
        for c in connections {
            *per_connection.entry(c.clone()).or_default() += 1;
        }
        true
    }

    fn release(&self, run: &RunRecord, flow: &FlowRecord, connections: &[String]) {
        let mut running = self
            .runtime
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let decrement = |map: &mut std::collections::HashMap<String, u32>, key: &str| {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        };
        decrement(&mut running.per_flow, &flow.id);
        for c in connections {
            decrement(&mut running.per_connection, c);
        }
        self.runtime
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&run.id);
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
        let fail = |mut run: RunRecord, kind: &str, message: String| {
            finish(
                &mut run,
                RunStatus::Failed,
                Some(RunError {
                    step: Some(spec.key.clone()),
                    kind: kind.to_string(),
                    message,
                }),
            );
            run
        };
        let version = &flow.pinned.steps[index];
        let plugin = match parse_plugin_ref(&spec.plugin)
            .and_then(|(key, _)| self.registry.get(&key, version))
        {
            Ok(plugin) => plugin,
            Err(e) => return fail(run, "plugin", e.to_string()),
        };
        let plugin_name = format!("{}@{}", plugin.record.key, plugin.record.version);
        let connection = match spec
            .connection
            .as_deref()
            .map(|id| self.connections.get(&run.tenant, id))
            .transpose()
        {
            Ok(c) => c,
            Err(e) => return fail(run, "connection", e.to_string()),
        };
        if let Some(c) = &connection
            && let ConnectionStatus::Paused { reason } = &c.status
        {
            run.status = RunStatus::Paused;
            run.parked_on = Some(c.id.clone());
            run.error = Some(RunError {
                step: Some(spec.key.clone()),
                kind: "auth".into(),
                message: format!(
                    "connection `{}` is paused ({reason}); fix it and resume the connection to continue",
                    c.id
                ),
            });
            self.runtime.metrics.run("paused");
            return run;
        }
        let input = match template::render(&spec.input, &run.context()) {
            Ok(input) => input,
            Err(e) => return fail(run, "mapping", format!("steps[{}].input: {e}", spec.key)),
        };
        let Some(action) = plugin
            .record
            .manifest
            .actions
            .iter()
            .find(|a| a.key == spec.action)
        else {
            return fail(
                run,
                "plugin",
                format!("{plugin_name} has no action `{}`", spec.action),
            );
        };
        if let Err(e) = check_against(
            &action.input_schema,
            &input,
            &format!("the mapped input of step `{}`", spec.key),
        ) {
            run.steps[index].input = Some(input);
            return fail(run, "invalid_input", e.to_string());
        }
        let started = std::time::Instant::now();
        let setup = self.call_setup(
            &plugin,
            connection.as_ref(),
            BTreeMap::new(),
            run.id.clone(),
        );
        let (env, ctx) = match setup {
            Ok(pair) => pair,
            Err(e) => return fail(run, "connection", e.to_string()),
        };
        let idempotency_key = run.steps[index].idempotency_key.clone();
        let outcome = self
            .engine
            .perform(
                &plugin.plugin,
                env,
                ctx,
                &spec.action,
                &input.to_string(),
                &idempotency_key,
            )
            .await;
        let metrics = &self.runtime.metrics;
        metrics.call(
            &metrics.plugin_call_latency,
            &plugin.record.key,
            "perform",
            outcome.duration.as_secs_f64(),
        );
        let result = outcome.result.and_then(|text| {
            serde_json::from_str::<Value>(&text).map_err(|e| CallError::Trap {
                message: format!("the plugin returned output that is not JSON: {e}"),
            })
        });
        let step = &mut run.steps[index];
        step.input = Some(input);
        step.attempts += 1;
        let mut attempt = Attempt {
            number: step.attempts,
            started_at: now,
            duration_ms: outcome.duration.as_secs_f64() * 1e3,
            plugin: plugin_name,
            error: result.as_ref().err().map(|e| json!(e)),
            journal: serde_json::to_value(&outcome.journal).unwrap_or(Value::Null),
            retry_at: None,
        };
        let finish_attempt = |step: &mut super::record::StepRecord, attempt: Attempt| {
            step.history.push(attempt);
            if step.history.len() > KEPT_ATTEMPTS {
                step.history.remove(0);
            }
        };
        metrics.call(
            &metrics.step_latency,
            &plugin.record.key,
            &spec.action,
            started.elapsed().as_secs_f64(),
        );
        match result {
            Ok(output) => {
                step.output = Some(output);
                finish_attempt(step, attempt);
                run.next_step = index + 1;
                run.status = RunStatus::Queued;
                run.error = None;
                run
            }
            Err(error) => {
                let first_failure = *step.first_failure_at.get_or_insert(now);
                let policy = RetrySpec::policy(spec.retry.as_ref());
                let jitter = rand::rng().random_range(-1.0..=1.0);
                let verdict = policy.decide(
                    classify(&error),
                    step.attempts,
                    first_failure,
                    now_ms(),
                    jitter,
                );
                let run_error = RunError {
                    step: Some(spec.key.clone()),
                    kind: error_kind(&error).to_string(),
                    message: error.to_string(),
                };
                match verdict {
                    Verdict::RetryAt(at) => {
                        attempt.retry_at = Some(at);
                        finish_attempt(step, attempt);
                        run.status = RunStatus::Retrying;
                        run.due_at = at;
                        run.error = Some(run_error);
                        metrics.retries.inc();
                        metrics.run("retrying");
                        run
                    }
                    Verdict::PauseConnection => {
                        finish_attempt(step, attempt);
                        let Some(c) = connection else {
                            return fail(run, "auth", error.to_string());
                        };
                        let reason = format!("step `{}` of run `{}`: {error}", spec.key, run.id);
                        if let Err(e) = self.connections.set_status(
                            &run.tenant,
                            &c.id,
                            ConnectionStatus::Paused { reason },
                        ) {
                            tracing::error!(connection = %c.id, "cannot pause the connection: {e}");
                        }
                        tracing::warn!(connection = %c.id, "connection paused after an auth error: {error}");
                        run.status = RunStatus::Paused;
                        run.parked_on = Some(c.id.clone());
                        run.error = Some(RunError {
                            message: format!(
                                "{error}; connection `{}` is paused until it is fixed and resumed",
                                c.id
                            ),
                            ..run_error
                        });
                        metrics.run("paused");
                        run
                    }
                    Verdict::Fail { exhausted } => {
                        finish_attempt(step, attempt);
                        let message = if exhausted {
                            format!(
                                "{error} (gave up after {} attempts)",
                                run.steps[index].attempts
                            )
                        } else {
                            error.to_string()
                        };
                        fail(run, &run_error.kind, message)
                    }
                }
            }
        }
    }
}

/// The smallest key after `key`.
fn after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
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
