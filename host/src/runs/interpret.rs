//! Executes a run's steps: walks the flow's step tree from the top each
//! time the run is executed, passing over every step its record says is
//! done, so a retry, a wait or a crash resumes at the step (or loop item) it
//! was on and never repeats a finished one. Decisions are recorded before
//! they are acted on (a skipped `if:`, the branches a `paths` step took, a
//! delay's wake-up time, a called flow's run), so a resumed run takes the
//! same path.
//!
//! Progress is written before every plugin call (a crash after the call
//! runs it again, with the same idempotency key) and when the run suspends
//! or ends; the final write carries the last step's result with the run's
//! new state, as before.

mod records;

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::StreamExt;
use rand::Rng;
use semver::Version;
use serde_json::{Map, Value, json};
use tracing::Instrument;

use super::{
    Runs,
    record::idempotency_key,
    retry::{RetryPolicy, Verdict, classify},
};
use crate::{
    calls::{Purpose, Refused, Target, parse_output},
    clock::now_ms,
    engine::CallError,
    error::ServiceError,
    flows::{FlowRecord, PathsMode, StepKind, StepSpec, actions, template},
    registry::parse_plugin_ref,
    schema::check_against,
    store::{
        Attempt, EntityState, EntityWrite, KEPT_ATTEMPTS, ParentRun, RunEntity, RunError,
        RunRecord, RunResponse, RunStatus, StepRecord, StepStatus,
    },
    topics::NewRecord,
};

/// How often a run waiting for a flow it called looks at it, in case the
/// wake-up from the called run's end was lost (a crash in between).
const CHILD_CHECK_MS: u64 = 60_000;

/// How a block of steps ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Every step done: go on after the block.
    Continue,
    /// A `stop` step: the run ends successfully.
    Stop(String),
    /// The run fails.
    Fail(RunError),
    /// The run has nothing to do after all (its full entity did not change,
    /// a newer event of it replaced this one, a condition is false).
    Skip(RunError),
    /// The run waits: for a retry or a delay (`at`), behind a paused
    /// connection, or it was cancelled while a step ran.
    Suspend(Suspend),
}

#[derive(Debug)]
pub(super) enum Suspend {
    At {
        status: RunStatus,
        due: u64,
        error: Option<RunError>,
        /// A delay's end, shown as "waiting until".
        until: Option<u64>,
    },
    Park {
        connection: String,
        error: RunError,
    },
    Cancelled,
}

impl Outcome {
    /// The outcome of items run side by side: the gravest wins; of two
    /// waits, the one due first.
    fn combine(self, other: Outcome) -> Outcome {
        use Outcome::*;
        fn rank(o: &Outcome) -> u8 {
            match o {
                Suspend(self::Suspend::Cancelled) => 5,
                Fail(_) => 4,
                Stop(_) | Skip(_) => 3,
                Suspend(self::Suspend::Park { .. }) => 2,
                Suspend(self::Suspend::At { .. }) => 1,
                Continue => 0,
            }
        }
        match (self, other) {
            (
                Suspend(self::Suspend::At { due: a, .. }),
                b @ Suspend(self::Suspend::At { due: bd, .. }),
            ) if bd < a => b,
            (a @ Suspend(self::Suspend::At { .. }), Suspend(self::Suspend::At { .. })) => a,
            (a, b) => {
                if rank(&b) > rank(&a) {
                    b
                } else {
                    a
                }
            }
        }
    }
}

/// Where in the tree a step runs: its loop items.
#[derive(Debug, Clone, Default)]
struct Scope {
    indices: Vec<usize>,
    item: Option<Value>,
}

impl Scope {
    fn suffix(&self) -> String {
        self.indices.iter().map(|i| format!("[{i}]")).collect()
    }

    /// A step's address in the run: its key, and the items it is in.
    fn address(&self, key: &str) -> String {
        format!("{key}{}", self.suffix())
    }

    /// `<run>:<step>` and, in loops, `:<index>` per loop.
    fn idempotency_key(&self, run: &str, key: &str) -> String {
        let mut k = idempotency_key(run, key);
        for i in &self.indices {
            k.push_str(&format!(":{i}"));
        }
        k
    }

    fn child(&self, index: usize, item: Value) -> Scope {
        let mut indices = self.indices.clone();
        indices.push(index);
        Scope {
            indices,
            item: Some(item),
        }
    }
}

/// The part of a step address after its key (`[2][0]`).
fn suffix_of(address: &str) -> &str {
    address.find('[').map_or("", |at| &address[at..])
}

/// The loop indices of a step address (`create[2][0]` → 2, 0).
fn indices_of(address: &str) -> Vec<usize> {
    suffix_of(address)
        .split(['[', ']'])
        .filter_map(|part| part.parse().ok())
        .collect()
}

fn base_of(address: &str) -> &str {
    address.find('[').map_or(address, |at| &address[..at])
}

pub(super) struct Interpreter<'a> {
    runs: &'a Runs,
    flow: &'a FlowRecord,
    run: Mutex<RunRecord>,
    /// Changes not yet written.
    dirty: AtomicBool,
    /// The pinned version of each action step, by key.
    pins: HashMap<&'a str, &'a Version>,
}

type Boxed<'a> = std::pin::Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

impl<'a> Interpreter<'a> {
    pub(super) fn new(runs: &'a Runs, flow: &'a FlowRecord, run: RunRecord) -> Self {
        let pins = actions(&flow.spec.steps)
            .into_iter()
            .zip(&flow.pinned.steps)
            .map(|(s, v)| (s.key.as_str(), v))
            .chain(flow.pinned.hydrate.as_ref().map(|v| ("hydrate", v)))
            .collect();
        Interpreter {
            runs,
            flow,
            run: Mutex::new(run),
            dirty: AtomicBool::new(false),
            pins,
        }
    }

    pub(super) async fn run(&self) -> Outcome {
        match self.prelude().await {
            Outcome::Continue => self.block(&self.flow.spec.steps, Scope::default()).await,
            other => other,
        }
    }

    /// What comes before the steps for a flow with an entity: a run that a
    /// newer event of its entity replaced steps aside; a thin event is
    /// hydrated, then decided like any other (changes, no-op, out of order,
    /// a loop) and its conditions checked.
    async fn prelude(&self) -> Outcome {
        let Some(spec) = &self.flow.spec.entity else {
            return Outcome::Continue;
        };
        let run = self.lock().clone();
        let Some(entity) = &run.entity else {
            return Outcome::Continue;
        };
        let hydrate = self.flow.spec.hydrate.as_ref();
        let merges = spec.coalesce.is_some() || hydrate.is_some();
        if merges && run.steps.is_empty() {
            let newer = match self.runs.entity_store.entity_runs(
                &run.tenant,
                &run.flow_id,
                &entity.kind,
                &entity.key,
            ) {
                Ok(ids) => ids.last().is_some_and(|last| *last != run.id),
                Err(e) => {
                    tracing::warn!(run = %run.id, "reading the entity's runs: {e}");
                    false
                }
            };
            if newer {
                self.runs.metrics.entity_event("coalesced");
                self.runs
                    .count(&run.tenant, &run.flow_id, |c| c.coalesced += 1);
                return Outcome::Skip(self.error(
                    "entity",
                    "coalesced",
                    format!(
                        "a newer event of {} `{}` replaced this one; its run has the latest state",
                        entity.kind, entity.key
                    ),
                ));
            }
        }
        if spec.echo.is_some() && hydrate.is_none() && run.steps.is_empty() {
            // Decided when it arrived; since then a run of this flow may
            // have written exactly what the event shows (its echo arrived
            // before that run had finished).
            let state =
                self.runs
                    .entity_store
                    .entity(&run.tenant, &run.flow_id, &entity.kind, &entity.key);
            if let Ok(Some(state)) = state
                && state.updated_at > run.created_at
                && state.data == super::entity::project(&run.event.payload, &spec.fields)
            {
                self.runs.metrics.entity_event("no_op");
                self.runs.count(&run.tenant, &run.flow_id, |c| c.no_op += 1);
                return Outcome::Skip(self.error(
                    "entity",
                    "echo",
                    format!(
                        "the event shows what this flow wrote to {} `{}` itself (entity.echo)",
                        entity.kind, entity.key
                    ),
                ));
            }
        }
        let Some(hydrate) = hydrate else {
            return Outcome::Continue;
        };
        if self.record("hydrate").is_some_and(|r| r.status.is_done()) {
            return Outcome::Continue; // hydrated and decided in an earlier attempt
        }
        let step = StepSpec {
            key: "hydrate".into(),
            plugin: if hydrate.plugin.is_empty() {
                self.flow.spec.trigger.plugin.clone()
            } else {
                hydrate.plugin.clone()
            },
            action: hydrate.action.clone(),
            connection: hydrate
                .connection
                .clone()
                .or_else(|| self.flow.spec.trigger.connection.clone()),
            input: hydrate.input.clone(),
            retry: hydrate.retry.clone(),
            ..StepSpec::default()
        };
        let scope = Scope::default();
        let record = self.record("hydrate").unwrap_or_else(|| StepRecord {
            key: "hydrate".into(),
            kind: "hydrate".into(),
            status: StepStatus::Running,
            note: None,
            wake_at: None,
            error: None,
            child: None,
            idempotency_key: scope.idempotency_key(&run.id, "hydrate"),
            input: None,
            output: None,
            attempts: 0,
            first_failure_at: None,
            history: Vec::new(),
        });
        match self.action(&step, &scope, record).await {
            Outcome::Continue => {}
            other => return other,
        }
        let output = self
            .record("hydrate")
            .and_then(|r| r.output)
            .unwrap_or(Value::Null);
        let full = match &hydrate.select {
            Some(path) => path
                .split('.')
                .try_fold(&output, |v, part| v.get(part))
                .cloned()
                .unwrap_or(Value::Null),
            None => output,
        };
        if full.is_null() {
            return Outcome::Skip(self.error(
                "hydrate",
                "not_found",
                format!(
                    "the entity {} `{}` was not found when its event was hydrated",
                    entity.kind, entity.key
                ),
            ));
        }
        self.lock().event.payload = full;
        self.decide_entity(spec, entity)
    }

    /// The entity decision of a hydrated event, and the flow's conditions.
    fn decide_entity(&self, spec: &crate::flows::EntitySpec, entity: &RunEntity) -> Outcome {
        let now = now_ms();
        let (tenant, flow_id, payload) = {
            let run = self.lock();
            (
                run.tenant.clone(),
                run.flow_id.clone(),
                run.event.payload.clone(),
            )
        };
        let context = json!({"trigger": payload, "env": self.flow.spec.env});
        let version = match &spec.version {
            Some(template) => match template::render(&Value::String(template.clone()), &context) {
                Ok(version) => Some(version),
                Err(e) => {
                    return Outcome::Fail(self.error(
                        "entity",
                        "entity",
                        format!("entity.version: {e}"),
                    ));
                }
            },
            None => None,
        };
        let store = &self.runs.entity_store;
        let state = match store.entity(&tenant, &flow_id, &entity.kind, &entity.key) {
            Ok(state) => state,
            Err(e) => return Outcome::Fail(self.error("entity", "entity", e.to_string())),
        };
        let projection = super::entity::project(&payload, &spec.fields);
        let changes = match super::entity::decide(state.as_ref(), &projection, version.as_ref()) {
            super::entity::Decision::Run { changes } => changes,
            super::entity::Decision::NoOp => {
                self.runs.metrics.entity_event("no_op");
                self.runs.count(&tenant, &flow_id, |c| c.no_op += 1);
                return Outcome::Skip(self.error(
                    "entity",
                    "no_op",
                    "nothing that matters changed in the full entity".into(),
                ));
            }
            super::entity::Decision::OutOfOrder => {
                self.runs.metrics.entity_event("out_of_order");
                self.runs.count(&tenant, &flow_id, |c| c.out_of_order += 1);
                return Outcome::Skip(self.error(
                    "entity",
                    "out_of_order",
                    "the full entity is older than what was known".into(),
                ));
            }
        };
        self.runs
            .metrics
            .entity_event(if state.is_some() { "changed" } else { "new" });
        let (next, looping) = super::entity::next_state(
            state.as_ref(),
            projection,
            version,
            now,
            (spec.max_runs, self.flow.resumed_at.unwrap_or(0), false),
        );
        let write = EntityWrite {
            tenant: tenant.clone(),
            flow: flow_id,
            kind: entity.kind.clone(),
            key: entity.key.clone(),
            state: next,
        };
        if let Err(e) = store.put_entity(&write) {
            return Outcome::Fail(self.error("entity", "entity", e.to_string()));
        }
        {
            let mut run = self.lock();
            run.previous = Some(state.map(|s| s.data).unwrap_or(Value::Null));
            run.changes = Some(changes);
        }
        self.dirty.store(true, Ordering::SeqCst);
        if looping {
            let message = super::entity::pause_for_loop(self.runs, self.flow, &entity.key);
            return Outcome::Fail(self.error("entity", "loop", message));
        }
        // The flow's conditions, now that the event is whole.
        let context = super::entity::condition_context(self.flow, &self.lock().clone());
        for (i, condition) in self.flow.spec.conditions.iter().enumerate() {
            match template::condition(condition, &context) {
                Ok(true) => {}
                Ok(false) => {
                    return Outcome::Skip(self.error(
                        "conditions",
                        "condition",
                        format!("conditions[{i}] `{condition}` is false for this event"),
                    ));
                }
                Err(e) => {
                    return Outcome::Fail(self.error(
                        "conditions",
                        "condition",
                        format!("conditions[{i}] `{condition}` cannot be evaluated: {e}"),
                    ));
                }
            }
        }
        Outcome::Continue
    }

    /// What the entity looks like as this flow wrote it (`entity.echo`),
    /// once the run is done: the state takes it, so the third party's echo
    /// of the write is a no-op.
    pub(super) fn echo(&self) -> Option<EntityWrite> {
        let spec = self.flow.spec.entity.as_ref()?;
        let template = spec.echo.as_ref()?;
        let run = self.lock().clone();
        let entity = run.entity.as_ref()?;
        let written = match template::render(
            &Value::String(template.clone()),
            &self.context(&Scope::default()),
        ) {
            Ok(Value::Null) | Err(_) => return None,
            Ok(written) => written,
        };
        let state = self
            .runs
            .entity_store
            .entity(&run.tenant, &run.flow_id, &entity.kind, &entity.key)
            .ok()
            .flatten()?;
        Some(EntityWrite {
            tenant: run.tenant.clone(),
            flow: run.flow_id.clone(),
            kind: entity.kind.clone(),
            key: entity.key.clone(),
            state: EntityState {
                data: super::entity::project(&written, &spec.fields),
                updated_at: now_ms(),
                ..state
            },
        })
    }

    pub(super) fn into_record(self) -> RunRecord {
        self.run.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RunRecord> {
        self.run.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, address: &str) -> Option<StepRecord> {
        self.lock().steps.iter().find(|s| s.key == address).cloned()
    }

    fn upsert(&self, record: StepRecord) {
        let mut run = self.lock();
        match run.steps.iter_mut().find(|s| s.key == record.key) {
            Some(existing) => *existing = record,
            None => run.steps.push(record),
        }
        run.updated_at = now_ms();
        self.dirty.store(true, Ordering::SeqCst);
    }

    /// Writes what changed, unless the run was cancelled meanwhile (then
    /// `false`: stop before doing anything more).
    async fn checkpoint(&self) -> bool {
        if !self.dirty.swap(false, Ordering::SeqCst) {
            return true;
        }
        let snapshot = self.lock().clone();
        let (tenant, id) = (snapshot.tenant.clone(), snapshot.id.clone());
        self.runs
            .write_progress(&tenant, &id, move |current| {
                let mut next = snapshot;
                next.status = current.status;
                next.due_at = current.due_at;
                next
            })
            .is_ok()
    }

    /// What templates see here: `trigger`, `env`, the done steps visible
    /// from this scope, and in a loop `item` and `index`.
    fn context(&self, scope: &Scope) -> Value {
        let run = self.lock();
        let mut steps = Map::new();
        for record in &run.steps {
            // Visible: steps outside loops, and those of this item's loops.
            if !scope.indices.starts_with(&indices_of(&record.key)) {
                continue;
            }
            let value = match record.status {
                StepStatus::Succeeded => record.output.clone().unwrap_or(Value::Null),
                StepStatus::FailedContinued => json!({ "error": record.error }),
                _ => continue,
            };
            steps.insert(base_of(&record.key).to_string(), value);
        }
        let mut context = json!({
            "trigger": run.event.payload,
            "steps": steps,
            "env": self.flow.spec.env,
            "changes": run.changes.clone().unwrap_or(Value::Null),
            "previous": run.previous.clone().unwrap_or(Value::Null),
        });
        if let Some(item) = &scope.item {
            context["item"] = item.clone();
            context["index"] = json!(scope.indices.last());
        }
        context
    }

    fn block<'s>(&'s self, steps: &'s [StepSpec], scope: Scope) -> Boxed<'s> {
        Box::pin(async move {
            for step in steps {
                let span = tracing::info_span!("step", step = %scope.address(&step.key));
                match self.step(step, &scope).instrument(span).await {
                    Outcome::Continue => {}
                    other => return other,
                }
            }
            Outcome::Continue
        })
    }

    async fn step(&self, step: &StepSpec, scope: &Scope) -> Outcome {
        let address = scope.address(&step.key);
        let existing = self.record(&address);
        if existing.as_ref().is_some_and(|r| r.status.is_done()) {
            return Outcome::Continue;
        }
        let kind = step.kind();
        let fresh = || StepRecord {
            key: address.clone(),
            kind: kind.as_str().to_string(),
            status: StepStatus::Running,
            note: None,
            wake_at: None,
            error: None,
            child: None,
            idempotency_key: scope.idempotency_key(&self.lock().id, &step.key),
            input: None,
            output: None,
            attempts: 0,
            first_failure_at: None,
            history: Vec::new(),
        };
        // A step with a record passed its `if:` already.
        if existing.is_none()
            && let Some(condition) = &step.when
        {
            match template::condition(condition, &self.context(scope)) {
                Ok(true) => {}
                Ok(false) => {
                    let mut record = fresh();
                    record.status = StepStatus::Skipped;
                    record.note = Some(format!("skipped: `if: {condition}` is false"));
                    self.upsert(record);
                    return Outcome::Continue;
                }
                Err(e) => {
                    let error = self.error(
                        &address,
                        "condition",
                        format!(
                            "steps[{}].if `{condition}` cannot be evaluated: {e}",
                            step.key
                        ),
                    );
                    return self.failed(step, fresh(), error);
                }
            }
        }
        let record = existing.unwrap_or_else(fresh);
        match kind {
            StepKind::Action => self.action(step, scope, record).await,
            StepKind::Paths => self.paths(step, scope, record).await,
            StepKind::ForEach => self.for_each(step, scope, record).await,
            StepKind::Delay => self.delay(step, scope, record),
            StepKind::Stop => {
                let reason = self.text(step.stop.as_deref().unwrap_or_default(), scope);
                let mut record = record;
                match reason {
                    Ok(reason) => {
                        record.status = StepStatus::Succeeded;
                        record.note = Some(format!("stopped the run: {reason}"));
                        self.upsert(record);
                        Outcome::Stop(reason)
                    }
                    Err(e) => {
                        let error = self.error(&address, "mapping", e);
                        self.failed(step, record, error)
                    }
                }
            }
            StepKind::Fail => {
                let message = self
                    .text(step.fail.as_deref().unwrap_or_default(), scope)
                    .unwrap_or_else(|e| format!("(the message did not render: {e})"));
                let mut record = record;
                let error = self.error(&address, "fail", message);
                record.status = StepStatus::Failed;
                record.error = Some(error.clone());
                self.upsert(record);
                Outcome::Fail(error)
            }
            StepKind::Respond => self.respond(step, scope, record),
            StepKind::CallFlow => self.call_flow(step, scope, record).await,
            StepKind::Records => self.records(step, scope, record).await,
            StepKind::Publish => self.publish(step, scope, record).await,
        }
    }

    /// Appends the step's record to its topic. The step's idempotency key
    /// goes with it, so a step run again after a crash finds its record
    /// instead of writing a second one.
    async fn publish(&self, step: &StepSpec, scope: &Scope, mut record: StepRecord) -> Outcome {
        let publish = step.publish.as_ref().expect("kind says publish");
        let context = self.context(scope);
        let rendered = (|| {
            let key = self.text(&publish.key, scope)?;
            let kind = self.text(&publish.kind, scope)?;
            let data = if publish.delete {
                Value::Null
            } else {
                template::render(&publish.data, &context)?
            };
            Ok::<_, String>((key, kind, data))
        })();
        let (key, kind, data) = match rendered {
            Ok(parts) => parts,
            Err(e) => {
                let error = self.error(
                    &record.key,
                    "mapping",
                    format!("steps[{}].publish: {e}", step.key),
                );
                return self.failed(step, record, error);
            }
        };
        if data.is_null() && !publish.delete {
            let error = self.error(
                &record.key,
                "mapping",
                format!(
                    "steps[{}].publish.data rendered to null; use `delete: true` for a tombstone",
                    step.key
                ),
            );
            return self.failed(step, record, error);
        }
        let tenant = self.lock().tenant.clone();
        record.input =
            Some(json!({"topic": publish.topic, "key": key, "type": kind, "data": data}));
        let new = NewRecord {
            key,
            kind,
            data,
            idempotency: Some(record.idempotency_key.clone()),
        };
        match self
            .runs
            .topics
            .publish(&tenant, &publish.topic, vec![new])
            .await
        {
            Ok(written) => {
                let written = &written[0];
                record.output = Some(json!({
                    "topic": publish.topic,
                    "partition": written.partition,
                    "offset": written.offset,
                }));
                record.status = StepStatus::Succeeded;
                record.attempts += 1;
                self.upsert(record);
                Outcome::Continue
            }
            Err(e) => {
                let kind = match e {
                    ServiceError::BadRequest(_) => "invalid-input",
                    _ => "storage",
                };
                let error = self.error(
                    &record.key,
                    kind,
                    format!("steps[{}].publish: {e}", step.key),
                );
                self.failed(step, record, error)
            }
        }
    }

    fn error(&self, address: &str, kind: &str, message: String) -> RunError {
        // `address` names the step; for the prelude it names the phase.
        RunError {
            step: Some(address.to_string()),
            kind: kind.to_string(),
            message,
        }
    }

    /// A step failed for good: the run fails, or with `on_error: continue`
    /// the error is recorded for later steps and the run goes on.
    fn failed(&self, step: &StepSpec, mut record: StepRecord, error: RunError) -> Outcome {
        record.error = Some(error.clone());
        if step.on_error == crate::flows::OnError::Continue {
            record.status = StepStatus::FailedContinued;
            self.upsert(record);
            Outcome::Continue
        } else {
            record.status = StepStatus::Failed;
            self.upsert(record);
            Outcome::Fail(error)
        }
    }

    fn text(&self, template: &str, scope: &Scope) -> Result<String, String> {
        let rendered =
            template::render(&Value::String(template.to_string()), &self.context(scope))?;
        Ok(match rendered {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }

    async fn action(&self, step: &StepSpec, scope: &Scope, mut record: StepRecord) -> Outcome {
        let address = record.key.clone();
        let now = now_ms();
        let (tenant, run_id) = {
            let run = self.lock();
            (run.tenant.clone(), run.id.clone())
        };
        let plugin = match parse_plugin_ref(&step.plugin) {
            Ok((key, _)) => key,
            Err(e) => {
                let error = self.error(&address, "plugin", e.to_string());
                return self.failed(step, record, error);
            }
        };
        let Some(version) = self.pins.get(step.key.as_str()).copied() else {
            let error = self.error(&address, "flow", "the step has no pinned version".into());
            return self.failed(step, record, error);
        };
        let target = Target {
            tenant: &tenant,
            plugin: &plugin,
            version,
            connection: step.connection.as_deref(),
        };
        let purpose = Purpose::Step {
            run: run_id.clone(),
            step: address.clone(),
        };
        let call = match self.runs.calls.prepare(target, purpose, run_id.clone()) {
            Ok(call) => call,
            Err(Refused::Plugin(e)) => {
                let error = self.error(&address, "plugin", e.to_string());
                return self.failed(step, record, error);
            }
            Err(Refused::Connection(e)) => {
                let error = self.error(&address, "connection", e.to_string());
                return self.failed(step, record, error);
            }
            Err(Refused::Paused { connection, reason }) => {
                let message = format!(
                    "connection `{connection}` is paused ({reason}); fix it and resume the connection to continue"
                );
                let error = self.error(&address, "auth", message);
                return Outcome::Suspend(Suspend::Park { connection, error });
            }
        };
        let input = match template::render(&step.input, &self.context(scope)) {
            Ok(input) => input,
            Err(e) => {
                let error = self.error(
                    &address,
                    "mapping",
                    format!("steps[{}].input: {e}", step.key),
                );
                return self.failed(step, record, error);
            }
        };
        let manifest = &call.plugin.record.manifest;
        let Some(action) = manifest.actions.iter().find(|a| a.key == step.action) else {
            let message = format!("{} has no action `{}`", call.plugin.name(), step.action);
            let error = self.error(&address, "plugin", message);
            return self.failed(step, record, error);
        };
        if let Err(e) = check_against(
            &action.input_schema,
            &input,
            &format!("the mapped input of step `{address}`"),
        ) {
            record.input = Some(input);
            let error = self.error(&address, "invalid_input", e.to_string());
            return self.failed(step, record, error);
        }
        // Results so far are written before another side effect.
        if !self.checkpoint().await {
            return Outcome::Suspend(Suspend::Cancelled);
        }
        let plugin_name = call.plugin.name();
        let connection = call.connection.as_ref().map(|c| c.id.clone());
        let started = std::time::Instant::now();
        let outcome = self
            .runs
            .calls
            .perform(
                call,
                &step.action,
                &input.to_string(),
                &record.idempotency_key,
            )
            .await;
        let metrics = &self.runs.metrics;
        metrics.call(
            &metrics.step_latency,
            &plugin,
            &step.action,
            started.elapsed().as_secs_f64(),
        );
        let result = outcome.result.and_then(parse_output);
        record.input = Some(input);
        record.attempts += 1;
        let mut attempt = Attempt {
            number: record.attempts,
            started_at: now,
            duration_ms: outcome.duration.as_secs_f64() * 1e3,
            plugin: plugin_name,
            error: result.as_ref().err().map(|e| json!(e)),
            journal: serde_json::to_value(&outcome.journal).unwrap_or(Value::Null),
            retry_at: None,
        };
        let error = match result {
            Ok(output) => {
                record.output = Some(output);
                record.status = StepStatus::Succeeded;
                record.error = None;
                keep_attempt(&mut record, attempt);
                self.upsert(record);
                return Outcome::Continue;
            }
            Err(error) => error,
        };
        let first_failure = *record.first_failure_at.get_or_insert(now);
        let verdict = RetryPolicy::for_step(step.retry.as_ref()).decide(
            classify(&error),
            record.attempts,
            first_failure,
            now_ms(),
            rand::rng().random_range(-1.0..=1.0),
        );
        let kind = error_kind(&error);
        match verdict {
            Verdict::RetryAt(at) => {
                attempt.retry_at = Some(at);
                keep_attempt(&mut record, attempt);
                record.status = StepStatus::Retrying;
                self.upsert(record);
                metrics.retries.inc();
                Outcome::Suspend(Suspend::At {
                    status: RunStatus::Retrying,
                    due: at,
                    error: Some(self.error(&address, kind, error.to_string())),
                    until: None,
                })
            }
            Verdict::PauseConnection => {
                keep_attempt(&mut record, attempt);
                let Some(connection) = connection else {
                    let error = self.error(&address, "auth", error.to_string());
                    return self.failed(step, record, error);
                };
                self.upsert(record);
                let message = format!(
                    "{error}; connection `{connection}` is paused until it is fixed and resumed"
                );
                let error = self.error(&address, "auth", message);
                Outcome::Suspend(Suspend::Park { connection, error })
            }
            Verdict::Fail { exhausted } => {
                let message = if exhausted {
                    format!("{error} (gave up after {} attempts)", record.attempts)
                } else {
                    error.to_string()
                };
                keep_attempt(&mut record, attempt);
                let error = self.error(&address, kind, message);
                self.failed(step, record, error)
            }
        }
    }

    async fn paths(&self, step: &StepSpec, scope: &Scope, mut record: StepRecord) -> Outcome {
        let paths = step.paths.as_ref().expect("kind says paths");
        let taken: Vec<String> = match record.output.as_ref().and_then(|o| o.get("taken")) {
            // Decided before a retry or a crash: the same path again.
            Some(Value::Array(names)) => names
                .iter()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect(),
            _ => {
                let context = self.context(scope);
                let mut taken = Vec::new();
                for branch in &paths.branches {
                    let holds = match &branch.when {
                        None => Ok(true),
                        Some(when) => template::condition(when, &context),
                    };
                    match holds {
                        Ok(true) => {
                            taken.push(branch.name.clone());
                            if paths.mode == PathsMode::First {
                                break;
                            }
                        }
                        Ok(false) => {}
                        Err(e) => {
                            let message = format!(
                                "steps[{}].paths.branches[{}].when cannot be evaluated: {e}",
                                step.key, branch.name
                            );
                            let error = self.error(&record.key, "condition", message);
                            return self.failed(step, record, error);
                        }
                    }
                }
                record.note = Some(if taken.is_empty() {
                    "no branch's condition held".to_string()
                } else {
                    format!("took {}", taken.join(", "))
                });
                record.output = Some(json!({ "taken": taken }));
                self.upsert(record.clone());
                taken
            }
        };
        for name in &taken {
            let Some(branch) = paths.branches.iter().find(|b| &b.name == name) else {
                continue;
            };
            match self.block(&branch.steps, scope.clone()).await {
                Outcome::Continue => {}
                other => return other,
            }
        }
        record.status = StepStatus::Succeeded;
        self.upsert(record);
        Outcome::Continue
    }

    async fn for_each(&self, step: &StepSpec, scope: &Scope, mut record: StepRecord) -> Outcome {
        let each = step.for_each.as_ref().expect("kind says for_each");
        let items = match &each.items {
            Value::String(_) => template::render(&each.items, &self.context(scope)),
            literal => Ok(literal.clone()),
        };
        let items = match items {
            Ok(Value::Array(items)) => items,
            Ok(other) => {
                let message = format!(
                    "steps[{}].for_each.items is not an array: {}",
                    step.key,
                    excerpt(&other)
                );
                let error = self.error(&record.key, "for_each", message);
                return self.failed(step, record, error);
            }
            Err(e) => {
                let message = format!("steps[{}].for_each.items: {e}", step.key);
                let error = self.error(&record.key, "mapping", message);
                return self.failed(step, record, error);
            }
        };
        if items.len() > each.max_items {
            let message = format!(
                "steps[{}].for_each has {} items, more than its max_items ({}); raise max_items or split the work",
                step.key,
                items.len(),
                each.max_items
            );
            let error = self.error(&record.key, "for_each", message);
            return self.failed(step, record, error);
        }
        if record.note.is_none() {
            record.note = Some(format!("{} items", items.len()));
            self.upsert(record.clone());
        }
        // Items already done pass over their steps at once. Once an item
        // does not simply finish (it fails, stops the run, or waits for a
        // retry), no further item starts: the loop resumes where it was, and
        // in order when it runs one item at a time.
        let halted = AtomicBool::new(false);
        let outcomes = futures::stream::iter(items.iter().cloned().enumerate())
            .map(|(index, item)| {
                let halted = &halted;
                async move {
                    if halted.load(Ordering::SeqCst) {
                        return Outcome::Continue;
                    }
                    let outcome = self.block(&each.steps, scope.child(index, item)).await;
                    if !matches!(outcome, Outcome::Continue) {
                        halted.store(true, Ordering::SeqCst);
                    }
                    outcome
                }
            })
            .buffer_unordered(each.concurrency.max(1) as usize)
            .collect::<Vec<_>>()
            .await;
        let outcome = outcomes
            .into_iter()
            .fold(Outcome::Continue, Outcome::combine);
        if !matches!(outcome, Outcome::Continue) {
            return outcome;
        }
        // Each item's result: its steps' outputs by key.
        let results: Vec<Value> = (0..items.len())
            .map(|index| {
                let context = self.context(&scope.child(index, Value::Null));
                let own: Map<String, Value> = each
                    .steps
                    .iter()
                    .filter_map(|s| Some((s.key.clone(), context["steps"].get(&s.key)?.clone())))
                    .collect();
                Value::Object(own)
            })
            .collect();
        record.output = Some(Value::Array(results));
        record.status = StepStatus::Succeeded;
        self.upsert(record);
        Outcome::Continue
    }

    fn delay(&self, step: &StepSpec, scope: &Scope, mut record: StepRecord) -> Outcome {
        let now = now_ms();
        let wake = match record.wake_at {
            Some(wake) => wake,
            None => {
                let delay = step.delay.as_ref().expect("kind says delay");
                let wake = match (&delay.seconds, &delay.until) {
                    (Some(seconds), _) => Ok(now.saturating_add(seconds.saturating_mul(1000))),
                    (None, Some(until)) => self.text(until, scope).and_then(|t| parse_time(&t)),
                    (None, None) => Err("the delay has neither `seconds` nor `until`".into()),
                };
                match wake {
                    Ok(wake) => {
                        record.wake_at = Some(wake);
                        record.status = StepStatus::Waiting;
                        record.note = Some(format!("waiting until {}", iso(wake)));
                        self.upsert(record.clone());
                        wake
                    }
                    Err(e) => {
                        let message = format!("steps[{}].delay: {e}", step.key);
                        let error = self.error(&record.key, "mapping", message);
                        return self.failed(step, record, error);
                    }
                }
            }
        };
        if now >= wake {
            record.status = StepStatus::Succeeded;
            record.note = Some(format!("waited until {}", iso(wake)));
            self.upsert(record);
            return Outcome::Continue;
        }
        Outcome::Suspend(Suspend::At {
            status: RunStatus::Waiting,
            due: wake,
            error: None,
            until: Some(wake),
        })
    }

    fn respond(&self, step: &StepSpec, scope: &Scope, mut record: StepRecord) -> Outcome {
        let respond = step.respond.as_ref().expect("kind says respond");
        let context = self.context(scope);
        let rendered = template::render(&respond.body, &context).and_then(|body| {
            let headers = respond
                .headers
                .iter()
                .map(|(name, value)| {
                    let value = template::render(&Value::String(value.clone()), &context)?;
                    Ok((
                        name.clone(),
                        value
                            .as_str()
                            .map_or_else(|| value.to_string(), str::to_string),
                    ))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(RunResponse {
                status: respond.status,
                headers,
                body,
            })
        });
        match rendered {
            Ok(response) => {
                record.output = Some(json!(response));
                record.status = StepStatus::Succeeded;
                self.upsert(record);
                let run = {
                    let mut run = self.lock();
                    run.response = Some(response);
                    run.clone()
                };
                self.runs.answer(&run);
                Outcome::Continue
            }
            Err(e) => {
                let error = self.error(
                    &record.key,
                    "mapping",
                    format!("steps[{}].respond: {e}", step.key),
                );
                self.failed(step, record, error)
            }
        }
    }

    async fn call_flow(&self, step: &StepSpec, scope: &Scope, mut record: StepRecord) -> Outcome {
        let call = step.call_flow.as_ref().expect("kind says call_flow");
        let tenant = self.lock().tenant.clone();
        let now = now_ms();
        if let Some(child) = record.child.clone() {
            // Waiting for it: has it finished?
            let found = match self.runs.store.run(&tenant, &child) {
                Ok(found) => found,
                Err(e) => {
                    tracing::warn!(run = %child, "reading a called run: {e}");
                    None
                }
            };
            return match found {
                Some(done) if done.status.is_finished() => {
                    let summary = json!({
                        "run": done.id,
                        "status": done.status,
                        "output": done.output(),
                    });
                    if matches!(done.status, RunStatus::Succeeded | RunStatus::Skipped) {
                        record.output = Some(summary);
                        record.status = StepStatus::Succeeded;
                        self.upsert(record);
                        Outcome::Continue
                    } else {
                        let why = done
                            .error
                            .map(|e| e.message)
                            .unwrap_or_else(|| done.status.as_str().to_string());
                        record.output = Some(summary);
                        let message = format!(
                            "the called flow's run `{}` {}: {why}",
                            done.id,
                            done.status.as_str()
                        );
                        let error = self.error(&record.key, "call_flow", message);
                        self.failed(step, record, error)
                    }
                }
                _ => Outcome::Suspend(Suspend::At {
                    status: RunStatus::Waiting,
                    due: now + CHILD_CHECK_MS,
                    error: None,
                    until: None,
                }),
            };
        }
        let target = match self.runs.flows.find(&tenant, &call.flow) {
            Ok(target) => target,
            Err(e) => {
                let error = self.error(&record.key, "call_flow", e.to_string());
                return self.failed(step, record, error);
            }
        };
        let event = match template::render(&call.event, &self.context(scope)) {
            Ok(event) => event,
            Err(e) => {
                let error = self.error(
                    &record.key,
                    "mapping",
                    format!("steps[{}].call_flow.event: {e}", step.key),
                );
                return self.failed(step, record, error);
            }
        };
        let parent = ParentRun {
            run: self.lock().id.clone(),
            step: record.key.clone(),
        };
        // The event id is the calling step's: started once, whatever happens.
        let event_id = format!("{}:{}", parent.run, parent.step);
        let parent = call.wait.then_some(parent);
        let child = match self.runs.start_child(&target, event_id, event, parent) {
            Ok(child) => child,
            Err(e) => {
                let error = self.error(&record.key, "call_flow", e.to_string());
                return self.failed(step, record, error);
            }
        };
        record.child = Some(child.clone());
        if call.wait {
            record.status = StepStatus::Waiting;
            record.note = Some(format!("waiting for run `{child}` of flow `{}`", target.id));
            self.upsert(record);
            Outcome::Suspend(Suspend::At {
                status: RunStatus::Waiting,
                due: now + CHILD_CHECK_MS,
                error: None,
                until: None,
            })
        } else {
            record.output = Some(json!({ "run": child }));
            record.status = StepStatus::Succeeded;
            self.upsert(record);
            Outcome::Continue
        }
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

/// An RFC 3339 time, or milliseconds since the epoch.
fn parse_time(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<u64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis().max(0) as u64)
        .map_err(|e| format!("`{text}` is neither an RFC 3339 time nor milliseconds: {e}"))
}

pub(super) fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn excerpt(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 80 {
        format!("{}…", &text[..text.floor_char_boundary(80)])
    } else {
        text
    }
}

pub(super) fn error_kind(error: &CallError) -> &'static str {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(due: u64) -> Outcome {
        Outcome::Suspend(Suspend::At {
            status: RunStatus::Retrying,
            due,
            error: None,
            until: None,
        })
    }

    #[test]
    fn items_side_by_side_end_as_the_gravest_and_wait_for_the_soonest() {
        let fail = || {
            Outcome::Fail(RunError {
                step: None,
                kind: "x".into(),
                message: "m".into(),
            })
        };
        let park = || {
            Outcome::Suspend(Suspend::Park {
                connection: "c".into(),
                error: RunError {
                    step: None,
                    kind: "auth".into(),
                    message: "m".into(),
                },
            })
        };
        let rank = |o: Outcome| format!("{o:?}").split('(').next().unwrap_or("").to_string();
        assert_eq!(rank(Outcome::Continue.combine(at(5))), "Suspend");
        assert!(matches!(
            at(9).combine(at(5)),
            Outcome::Suspend(Suspend::At { due: 5, .. })
        ));
        assert!(matches!(
            at(5).combine(at(9)),
            Outcome::Suspend(Suspend::At { due: 5, .. })
        ));
        assert!(matches!(
            at(5).combine(park()),
            Outcome::Suspend(Suspend::Park { .. })
        ));
        assert!(matches!(park().combine(fail()), Outcome::Fail(_)));
        assert!(matches!(
            fail().combine(Outcome::Suspend(Suspend::Cancelled)),
            Outcome::Suspend(Suspend::Cancelled)
        ));
        assert!(matches!(
            fail().combine(Outcome::Continue),
            Outcome::Fail(_)
        ));
    }

    #[test]
    fn addresses_and_keys_name_the_loop_items() {
        let scope = Scope::default().child(2, Value::Null).child(0, Value::Null);
        assert_eq!(scope.address("create"), "create[2][0]");
        assert_eq!(scope.idempotency_key("run_1", "create"), "run_1:create:2:0");
        assert_eq!(
            Scope::default().idempotency_key("run_1", "create"),
            "run_1:create"
        );
        assert_eq!(suffix_of("create[2][0]"), "[2][0]");
        assert_eq!(indices_of("create[2][10]"), [2, 10]);
        assert!(![1usize, 0].starts_with(&indices_of("x[10]")));
        assert_eq!(base_of("create[2][0]"), "create");
        assert_eq!(parse_time("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Ok(1_767_225_600_000));
        assert!(parse_time("tomorrow").is_err());
    }
}
