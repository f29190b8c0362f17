//! What an event means for its entity. The decisions are pure functions
//! with table tests: the projection of the fields that matter, whether an
//! event is new, a change (and which fields), a no-op (nothing that matters
//! changed) or out of order (older than what is known), and whether a flow
//! keeps firing for one entity (a loop). [`Entities`] applies them to a
//! batch of new runs under the flow's lock.

use std::{cmp::Ordering, collections::HashMap};

use serde_json::{Map, Value, json};

use super::Runs;
use crate::{
    error::ServiceError,
    flows::{FlowRecord, RunLimit, template},
    store::{EntityState, EntityWrite, IngestCounts, RunEntity, RunError, RunRecord, RunStatus},
};

/// What to do with an event of a known entity.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Decision {
    /// First seen, or changed: run, with these `changes` (each changed
    /// field with `old` and `new`).
    Run { changes: Value },
    /// Nothing that matters changed.
    NoOp,
    /// Older than the state: dropped.
    OutOfOrder,
}

/// The fields of `event` that matter: the dotted `fields`, or all of it.
pub(super) fn project(event: &Value, fields: &[String]) -> Value {
    if fields.is_empty() {
        return event.clone();
    }
    let mut out = Map::new();
    for field in fields {
        let value = field
            .split('.')
            .try_fold(event, |v, part| v.get(part))
            .cloned()
            .unwrap_or(Value::Null);
        out.insert(field.clone(), value);
    }
    Value::Object(out)
}

/// Compares two versions: numbers as numbers, RFC 3339 times as instants,
/// other text as text. `None` when they cannot be compared (then the event
/// is taken as newer).
pub(super) fn compare_versions(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => {
            let time = |s: &str| chrono::DateTime::parse_from_rfc3339(s).ok();
            match (time(x), time(y)) {
                (Some(x), Some(y)) => Some(x.cmp(&y)),
                _ => match (x.parse::<f64>(), y.parse::<f64>()) {
                    (Ok(x), Ok(y)) => x.partial_cmp(&y),
                    _ => Some(x.cmp(y)),
                },
            }
        }
        _ => None,
    }
}

/// The fields whose values differ between two projections, each with
/// `old` and `new` (a field absent on one side is `null` there).
pub(super) fn changes(old: &Value, new: &Value) -> Value {
    let empty = Map::new();
    let old_map = old.as_object().unwrap_or(&empty);
    let new_map = new.as_object().unwrap_or(&empty);
    let mut out = Map::new();
    if old.is_object() || new.is_object() {
        for key in old_map.keys().chain(new_map.keys()) {
            if out.contains_key(key) {
                continue;
            }
            let (o, n) = (
                old_map.get(key).unwrap_or(&Value::Null),
                new_map.get(key).unwrap_or(&Value::Null),
            );
            if o != n {
                out.insert(key.clone(), json!({"old": o, "new": n}));
            }
        }
    } else if old != new {
        out.insert("value".into(), json!({"old": old, "new": new}));
    }
    Value::Object(out)
}

/// Decides what an event with `projection` and `version` is, given the
/// entity's state.
pub(super) fn decide(
    state: Option<&EntityState>,
    projection: &Value,
    version: Option<&Value>,
) -> Decision {
    let Some(state) = state else {
        return Decision::Run {
            changes: changes(&Value::Null, projection),
        };
    };
    if let (Some(new), Some(known)) = (version, state.version.as_ref())
        && compare_versions(new, known) == Some(Ordering::Less)
    {
        return Decision::OutOfOrder;
    }
    if state.data == *projection {
        return Decision::NoOp;
    }
    Decision::Run {
        changes: changes(&state.data, projection),
    }
}

/// Whether one more run for an entity (its recent run times in `fires`,
/// oldest first) would go over `count` within `window_ms` of `now`.
pub(super) fn too_many_runs(fires: &[u64], now: u64, count: u32, window_ms: u64) -> bool {
    let recent = fires
        .iter()
        .filter(|at| now.saturating_sub(**at) < window_ms)
        .count();
    recent >= count as usize
}

/// The entity decisions of one batch of new runs of a flow, made under the
/// flow's lock: the states they move the entities to (written with the
/// runs), and what the events came to.
pub(super) struct Entities<'a> {
    runs: &'a Runs,
    flow: &'a FlowRecord,
    now: u64,
    /// States decided in this batch, by entity key (a batch may hold
    /// several events of one entity).
    pending: HashMap<String, EntityState>,
    /// For coalescing: the entity's oldest run still waiting to start (in
    /// the store or in this batch): when it was created and the state it
    /// started from.
    waiting: HashMap<String, Option<(u64, Value)>>,
    pub(super) counts: IngestCounts,
}

impl<'a> Entities<'a> {
    pub(super) fn new(runs: &'a Runs, flow: &'a FlowRecord, now: u64) -> Self {
        Entities {
            runs,
            flow,
            now,
            pending: HashMap::new(),
            waiting: HashMap::new(),
            counts: IngestCounts::default(),
        }
    }

    /// Decides a new run's event for its entity: `false` drops the event
    /// (nothing that matters changed, or it is late); otherwise the run
    /// gets its entity, `changes` and `previous`, or fails when the entity
    /// cannot be told (a key template that does not render) or the flow is
    /// in a loop.
    pub(super) fn admit(&mut self, run: &mut RunRecord) -> Result<bool, ServiceError> {
        let Some(spec) = &self.flow.spec.entity else {
            return Ok(true);
        };
        let context = condition_context(self.flow, run);
        let key = match render_text(&spec.key, &context) {
            Ok(key) if !key.is_empty() => key,
            Ok(_) => return Ok(self.fail(run, "entity", "the entity key is empty".into())),
            Err(e) => {
                return Ok(self.fail(run, "entity", format!("entity.key: {e}")));
            }
        };
        run.entity = Some(RunEntity {
            kind: spec.kind.clone(),
            key: key.clone(),
            seq: self.runs.next_seq(),
        });
        let waiting = match spec.coalesce {
            Some(coalesce) => {
                let waiting = self.first_waiting(&key)?;
                let first = waiting.as_ref().map_or(self.now, |(at, _)| *at);
                run.due_at = (self.now + coalesce.window_ms).min(first + coalesce.max_delay_ms);
                waiting
            }
            None => None,
        };
        if self.flow.spec.hydrate.is_some() {
            // The thin event says which entity; what changed is known once
            // the full entity is fetched.
            return Ok(true);
        }
        let version = match &spec.version {
            Some(template) => match template::render(&Value::String(template.clone()), &context) {
                Ok(version) => Some(version),
                Err(e) => return Ok(self.fail(run, "entity", format!("entity.version: {e}"))),
            },
            None => None,
        };
        let projection = project(&run.event.payload, &spec.fields);
        let state = match self.pending.get(&key) {
            Some(state) => Some(state.clone()),
            None => {
                self.runs
                    .entity_store
                    .entity(&self.flow.tenant, &self.flow.id, &spec.kind, &key)?
            }
        };
        let metrics = &self.runs.metrics;
        match decide(state.as_ref(), &projection, version.as_ref()) {
            Decision::OutOfOrder => {
                self.counts.out_of_order += 1;
                metrics.entity_event("out_of_order");
                Ok(false)
            }
            Decision::NoOp => {
                self.counts.no_op += 1;
                metrics.entity_event("no_op");
                if let (Some(mut state), Some(version)) = (state, version) {
                    // Newer, with nothing that matters changed: remember the version.
                    state.version = Some(version);
                    self.pending.insert(key, state);
                }
                Ok(false)
            }
            Decision::Run { changes } => {
                metrics.entity_event(if state.is_some() { "changed" } else { "new" });
                let (next, looping) = next_state(
                    state.as_ref(),
                    projection,
                    version,
                    self.now,
                    (
                        spec.max_runs,
                        self.flow.resumed_at.unwrap_or(0),
                        waiting.is_some(),
                    ),
                );
                self.pending.insert(key.clone(), next);
                let previous = state.map(|s| s.data).unwrap_or(Value::Null);
                match waiting {
                    // This run replaces the waiting one: what changed is
                    // counted from where that one started.
                    Some((_, from)) => {
                        run.changes = Some(self::changes(&from, &projection_of(run, spec)));
                        run.previous = Some(from);
                    }
                    None => {
                        run.changes = Some(changes);
                        run.previous = Some(previous.clone());
                    }
                }
                if spec.coalesce.is_some() {
                    let slot = self.waiting.entry(key.clone()).or_insert(None);
                    if slot.is_none() {
                        *slot = Some((self.now, run.previous.clone().unwrap_or(previous)));
                    }
                }
                if looping {
                    let message = pause_for_loop(self.runs, self.flow, &key);
                    return Ok(self.fail(run, "loop", message));
                }
                Ok(true)
            }
        }
    }

    /// The entity's oldest run still waiting to start (coalescing: the one
    /// a new event replaces): when it was created and the `previous` it
    /// started from.
    fn first_waiting(&mut self, key: &str) -> Result<Option<(u64, Value)>, ServiceError> {
        if let Some(waiting) = self.waiting.get(key) {
            return Ok(waiting.clone());
        }
        let Some(spec) = &self.flow.spec.entity else {
            return Ok(None);
        };
        let ids = self.runs.entity_store.entity_runs(
            &self.flow.tenant,
            &self.flow.id,
            &spec.kind,
            key,
        )?;
        let mut found = None;
        for id in &ids {
            if let Some(run) = self.runs.store.run(&self.flow.tenant, id)?
                && run.status == RunStatus::Queued
                && run.steps.is_empty()
            {
                found = Some((run.created_at, run.previous.unwrap_or(Value::Null)));
                break;
            }
        }
        self.waiting.insert(key.to_string(), found.clone());
        Ok(found)
    }

    fn fail(&mut self, run: &mut RunRecord, kind: &str, message: String) -> bool {
        run.status = RunStatus::Failed;
        run.finished_at = Some(self.now);
        run.error = Some(RunError {
            step: None,
            kind: kind.to_string(),
            message,
        });
        true
    }

    /// The entity writes of the batch, and what its events came to.
    pub(super) fn finish(self) -> (Vec<EntityWrite>, IngestCounts) {
        let writes = match &self.flow.spec.entity {
            Some(spec) => self
                .pending
                .into_iter()
                .map(|(key, state)| EntityWrite {
                    tenant: self.flow.tenant.clone(),
                    flow: self.flow.id.clone(),
                    kind: spec.kind.clone(),
                    key,
                    state,
                })
                .collect(),
            None => Vec::new(),
        };
        let counts = if self.flow.spec.entity.is_some() {
            self.counts
        } else {
            IngestCounts::default()
        };
        (writes, counts)
    }
}

/// An entity's state after an event that changed it, and whether the flow
/// is looping on it (more runs for it than `limit` allows; runs before
/// `since`, when the flow was last resumed, do not count). An event that
/// replaces a run still waiting (coalescing) is not one more run.
pub(super) fn next_state(
    state: Option<&EntityState>,
    projection: Value,
    version: Option<Value>,
    now: u64,
    (limit, since, replaces): (RunLimit, u64, bool),
) -> (EntityState, bool) {
    let window = limit.minutes.saturating_mul(60_000);
    let mut fires: Vec<u64> = state
        .map(|s| s.fires.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|at| now.saturating_sub(*at) < window && *at >= since)
        .collect();
    let looping = !replaces && too_many_runs(&fires, now, limit.count, window);
    if !replaces {
        fires.push(now);
    }
    // At most what the limit needs to be judged.
    let keep = fires.len().saturating_sub(limit.count as usize + 1);
    fires.drain(..keep);
    let next = EntityState {
        version: version.or_else(|| state.and_then(|s| s.version.clone())),
        data: projection,
        updated_at: now,
        fires,
    };
    (next, looping)
}

/// Pauses a flow that keeps firing for one entity; returns the message its
/// refused run records.
pub(super) fn pause_for_loop(runs: &Runs, flow: &FlowRecord, key: &str) -> String {
    let Some(spec) = &flow.spec.entity else {
        return String::new();
    };
    let limit = spec.max_runs;
    let reason = format!(
        "it started {} runs for {} `{key}` within {} minutes: it is probably triggered by its own writes (see `entity.echo`); resume the flow when that is fixed",
        limit.count, spec.kind, limit.minutes
    );
    if let Err(e) = runs
        .flows
        .set_paused(&flow.tenant, &flow.id, Some(reason.clone()))
    {
        tracing::error!(flow = %flow.id, "cannot pause a looping flow: {e}");
    }
    tracing::warn!(flow = %flow.id, "paused: {reason}");
    format!("the flow was paused: {reason}")
}

/// What a flow's conditions (and entity templates) see of a new run:
/// `trigger`, `env`, and for an entity `changes` and `previous`.
pub(super) fn condition_context(flow: &FlowRecord, run: &RunRecord) -> Value {
    json!({
        "trigger": run.event.payload,
        "steps": {},
        "env": flow.spec.env,
        "changes": run.changes.clone().unwrap_or(Value::Null),
        "previous": run.previous.clone().unwrap_or(Value::Null),
    })
}

/// The projection of a run's event (what matters of it).
fn projection_of(run: &RunRecord, spec: &crate::flows::EntitySpec) -> Value {
    project(&run.event.payload, &spec.fields)
}

fn render_text(template: &str, context: &Value) -> Result<String, String> {
    Ok(
        match template::render(&Value::String(template.to_string()), context)? {
            Value::String(text) => text,
            other => other.to_string(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(version: Value, data: Value) -> EntityState {
        EntityState {
            version: Some(version),
            data,
            updated_at: 0,
            fires: Vec::new(),
        }
    }

    #[test]
    fn projections_keep_the_fields_that_matter() {
        let event = json!({"id": 1, "status": "paid", "tags": ["a"], "customer": {"email": "x@y"}});
        assert_eq!(project(&event, &[]), event);
        assert_eq!(
            project(
                &event,
                &["status".into(), "customer.email".into(), "missing".into()]
            ),
            json!({"status": "paid", "customer.email": "x@y", "missing": null})
        );
    }

    #[test]
    fn versions_compare_as_numbers_times_or_text() {
        use Ordering::*;
        let table = [
            (json!(2), json!(10), Some(Less)),
            (
                json!("2026-01-02T00:00:00Z"),
                json!("2026-01-01T23:00:00-02:00"),
                Some(Less),
            ),
            (json!("10"), json!("9"), Some(Greater)),
            (json!("b"), json!("a"), Some(Greater)),
            (json!(1), json!("1"), None),
        ];
        for (a, b, expected) in table {
            assert_eq!(compare_versions(&a, &b), expected, "{a} vs {b}");
        }
    }

    #[test]
    fn events_are_new_changed_unchanged_or_late() {
        let known = state(
            json!("2026-01-01T10:00:00Z"),
            json!({"status": "paid", "tags": ["a"]}),
        );
        let table = [
            // (state, projection, version, decision)
            (
                None,
                json!({"status": "paid"}),
                Some(json!(1)),
                Decision::Run {
                    changes: json!({"status": {"old": null, "new": "paid"}}),
                },
            ),
            (
                Some(&known),
                json!({"status": "paid", "tags": ["a"]}),
                Some(json!("2026-01-01T11:00:00Z")),
                Decision::NoOp,
            ),
            (
                Some(&known),
                json!({"status": "packed", "tags": ["a"]}),
                Some(json!("2026-01-01T11:00:00Z")),
                Decision::Run {
                    changes: json!({"status": {"old": "paid", "new": "packed"}}),
                },
            ),
            (
                Some(&known),
                json!({"status": "packed", "tags": ["a"]}),
                Some(json!("2026-01-01T09:00:00Z")),
                Decision::OutOfOrder,
            ),
            // Without a version, only the data decides.
            (
                Some(&known),
                json!({"status": "paid", "tags": ["a", "b"]}),
                None,
                Decision::Run {
                    changes: json!({"tags": {"old": ["a"], "new": ["a", "b"]}}),
                },
            ),
        ];
        for (state, projection, version, expected) in table {
            assert_eq!(
                decide(state, &projection, version.as_ref()),
                expected,
                "{projection}"
            );
        }
    }

    #[test]
    fn a_loop_is_more_runs_than_allowed_in_the_window() {
        let fires = [1_000, 2_000, 3_000, 4_000];
        assert!(!too_many_runs(&fires, 5_000, 5, 60_000));
        assert!(too_many_runs(&fires, 5_000, 4, 60_000));
        // Old runs do not count.
        assert!(!too_many_runs(&fires, 62_500, 4, 60_000));
    }
}
