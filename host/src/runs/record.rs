//! What a run is on disk: the record with every step's attempts, and the
//! index entries that move with it (the due-time queue, the dead-letter list,
//! runs parked behind a paused connection, the finish-time index that
//! retention walks). Every state change writes the record and its index
//! entries in one atomic batch, so they never disagree after a crash.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    flows::definition::Lane,
    store::{Op, Storage, StorageExt},
};

/// `{tenant}\0{run}` → [`RunRecord`].
pub const RUNS: &str = "runs";
/// `{lane}{due:016x}\0{tenant}\0{flow}\0{run}` → empty: work to do, in due
/// order (the flow is in the key so a dispatcher can pass over a flow at its
/// concurrency limit without reading its runs).
pub const QUEUE: &str = "run_queue";
/// `{tenant}\0{run}` → empty: failed runs waiting for a replay.
pub const DEAD: &str = "dead_letters";
/// `{tenant}\0{connection}\0{run}` → empty: runs waiting for a paused
/// connection to be resumed.
pub const PARKED: &str = "parked_runs";
/// `{finished:016x}\0{tenant}\0{run}` → empty: what retention prunes.
pub const FINISHED: &str = "runs_finished";
/// `{tenant}\0{flow}\0{event}` → first-seen time (ms): the de-duplication window.
pub const DEDUP: &str = "event_dedup";
/// `{seen:016x}\0{tenant}\0{flow}\0{event}` → empty: expiry order of [`DEDUP`].
pub const DEDUP_EXPIRY: &str = "event_dedup_expiry";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for its turn (or running now).
    Queued,
    /// A step failed and waits for its next attempt.
    Retrying,
    /// Parked until a paused connection is resumed.
    Paused,
    Succeeded,
    /// The conditions did not hold for the event.
    Skipped,
    /// Failed for good: in the dead-letter list until replayed.
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Skipped | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Retrying => "retrying",
            RunStatus::Paused => "paused",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Skipped => "skipped",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        serde_json::from_value(Value::String(text.to_string())).ok()
    }
}

/// The event a run was started for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    pub id: String,
    pub payload: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    pub id: String,
    pub tenant: String,
    pub flow_id: String,
    /// The flow version this run executes (kept across retries and replays).
    pub flow_version: u32,
    /// `webhook`, `poll`, `schedule` or `api`.
    pub source: String,
    pub event: RunEvent,
    pub lane: Lane,
    pub status: RunStatus,
    /// The step to run next; steps before it have succeeded.
    pub next_step: usize,
    pub steps: Vec<StepRecord>,
    pub error: Option<RunError>,
    /// When the queue entry is due (ms since the epoch).
    pub due_at: u64,
    pub created_at: u64,
    pub updated_at: u64,
    pub finished_at: Option<u64>,
    /// Connection the run is parked behind while `Paused`.
    #[serde(default)]
    pub parked_on: Option<String>,
    #[serde(default)]
    pub replays: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    pub step: Option<String>,
    /// `transient`, `rate_limited`, `auth`, `invalid_input`, `permanent`,
    /// `timeout`, `trap`, `condition`, `mapping`...
    pub kind: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    pub key: String,
    /// The same for every attempt and replay of this step of this run.
    pub idempotency_key: String,
    pub input: Option<Value>,
    pub output: Option<Value>,
    /// Attempts made, the first included.
    pub attempts: u32,
    pub first_failure_at: Option<u64>,
    /// The latest attempts in full (at most [`KEPT_ATTEMPTS`]).
    pub history: Vec<Attempt>,
}

pub const KEPT_ATTEMPTS: usize = 10;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub started_at: u64,
    pub duration_ms: f64,
    /// The plugin and version that ran it.
    pub plugin: String,
    pub error: Option<Value>,
    /// Log lines and HTTP exchanges of the call, secrets cut out.
    pub journal: Value,
    /// When the next attempt is due, if one is.
    pub retry_at: Option<u64>,
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// A run started by an event has an id derived from the flow and the event,
/// so the same delivery processed twice (after a crash, say) is the same run
/// with the same idempotency keys.
pub fn run_id_for(flow_id: &str, event_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(flow_id)
        .chain_update([0])
        .chain_update(event_id)
        .finalize();
    format!("run_{}", hex::encode(&digest[..12]))
}

pub fn idempotency_key(run_id: &str, step: &str) -> String {
    format!("{run_id}:{step}")
}

fn lane_byte(lane: Lane) -> u8 {
    match lane {
        Lane::Fast => b'0',
        Lane::Normal => b'1',
    }
}

pub fn lane_prefix(lane: Lane) -> [u8; 1] {
    [lane_byte(lane)]
}

pub fn run_key(tenant: &str, id: &str) -> Vec<u8> {
    format!("{tenant}\0{id}").into_bytes()
}

pub fn dedup_key(tenant: &str, flow: &str, event: &str) -> Vec<u8> {
    format!("{tenant}\0{flow}\0{event}").into_bytes()
}

/// Where a queue key points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub due: u64,
    pub tenant: String,
    pub flow: String,
    pub run: String,
}

/// Splits a queue key back into its parts.
pub fn parse_queue_key(key: &[u8]) -> Option<QueueEntry> {
    let text = std::str::from_utf8(key.get(1..)?).ok()?;
    let mut parts = text.splitn(4, '\0');
    let due = u64::from_str_radix(parts.next()?, 16).ok()?;
    Some(QueueEntry {
        due,
        tenant: parts.next()?.to_string(),
        flow: parts.next()?.to_string(),
        run: parts.next()?.to_string(),
    })
}

impl RunRecord {
    pub fn queue_key(&self) -> Vec<u8> {
        let mut key = vec![lane_byte(self.lane)];
        key.extend_from_slice(
            format!(
                "{:016x}\0{}\0{}\0{}",
                self.due_at, self.tenant, self.flow_id, self.id
            )
            .as_bytes(),
        );
        key
    }

    fn finished_key(&self) -> Option<Vec<u8>> {
        self.finished_at
            .map(|at| format!("{at:016x}\0{}\0{}", self.tenant, self.id).into_bytes())
    }

    fn parked_key(&self) -> Option<Vec<u8>> {
        self.parked_on
            .as_ref()
            .map(|c| format!("{}\0{c}\0{}", self.tenant, self.id).into_bytes())
    }

    /// Ops removing every index entry of this state of the run.
    pub fn unindex(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        match self.status {
            RunStatus::Queued | RunStatus::Retrying => ops.push(Op::Delete {
                tree: QUEUE,
                key: self.queue_key(),
            }),
            RunStatus::Paused => ops.extend(
                self.parked_key()
                    .map(|key| Op::Delete { tree: PARKED, key }),
            ),
            RunStatus::Failed => ops.push(Op::Delete {
                tree: DEAD,
                key: run_key(&self.tenant, &self.id),
            }),
            _ => {}
        }
        ops.extend(self.finished_key().map(|key| Op::Delete {
            tree: FINISHED,
            key,
        }));
        ops
    }

    /// Ops writing the record and the index entries of its state.
    pub fn index(&self) -> Vec<Op> {
        let empty = Vec::new;
        let mut ops = vec![Op::put_json(RUNS, &run_key(&self.tenant, &self.id), self)];
        match self.status {
            RunStatus::Queued | RunStatus::Retrying => ops.push(Op::Put {
                tree: QUEUE,
                key: self.queue_key(),
                value: empty(),
            }),
            RunStatus::Paused => ops.extend(self.parked_key().map(|key| Op::Put {
                tree: PARKED,
                key,
                value: empty(),
            })),
            RunStatus::Failed => ops.push(Op::Put {
                tree: DEAD,
                key: run_key(&self.tenant, &self.id),
                value: empty(),
            }),
            _ => {}
        }
        ops.extend(self.finished_key().map(|key| Op::Put {
            tree: FINISHED,
            key,
            value: empty(),
        }));
        ops
    }

    /// Ops moving the run from state `before` to this state.
    pub fn transition(&self, before: &RunRecord) -> Vec<Op> {
        let mut ops = before.unindex();
        ops.extend(self.index());
        ops
    }

    /// The outputs of the steps done so far, as templates see them.
    pub fn context(&self) -> Value {
        let steps: serde_json::Map<String, Value> = self
            .steps
            .iter()
            .take(self.next_step)
            .map(|s| (s.key.clone(), s.output.clone().unwrap_or(Value::Null)))
            .collect();
        serde_json::json!({ "trigger": self.event.payload, "steps": steps })
    }

    /// The output of the last step, once the run succeeded.
    pub fn output(&self) -> Option<&Value> {
        match self.status {
            RunStatus::Succeeded => self.steps.last().and_then(|s| s.output.as_ref()),
            _ => None,
        }
    }
}

/// Filters of the run history.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct RunFilter {
    pub flow: Option<String>,
    pub status: Option<String>,
    /// Created at or after (ms since the epoch).
    pub since: Option<u64>,
    /// Created before (ms since the epoch).
    pub until: Option<u64>,
    pub limit: Option<usize>,
}

impl RunFilter {
    pub fn matches(&self, run: &RunRecord) -> bool {
        self.flow.as_ref().is_none_or(|f| *f == run.flow_id)
            && self
                .status
                .as_ref()
                .is_none_or(|s| s == run.status.as_str())
            && self.since.is_none_or(|t| run.created_at >= t)
            && self.until.is_none_or(|t| run.created_at < t)
    }
}

/// A tenant's runs that match, newest first.
pub fn list_runs(
    store: &dyn Storage,
    tenant: &str,
    filter: &RunFilter,
) -> crate::store::Result<Vec<RunRecord>> {
    let mut runs: Vec<RunRecord> = if filter.status.as_deref() == Some("failed") {
        // The dead-letter list is the index of failed runs.
        store
            .scan_prefix(DEAD, format!("{tenant}\0").as_bytes())?
            .into_iter()
            .filter_map(|(key, _)| store.get_json(RUNS, &key).transpose())
            .collect::<Result<_, _>>()?
    } else {
        store.scan_json(RUNS, format!("{tenant}\0").as_bytes())?
    };
    runs.retain(|r| filter.matches(r));
    runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
    runs.truncate(filter.limit.unwrap_or(100).min(1000));
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(status: RunStatus) -> RunRecord {
        RunRecord {
            id: "run_1".into(),
            tenant: "t".into(),
            flow_id: "flow_1".into(),
            flow_version: 1,
            source: "api".into(),
            event: RunEvent {
                id: "e".into(),
                payload: serde_json::json!({}),
            },
            lane: Lane::Fast,
            status,
            next_step: 0,
            steps: vec![],
            error: None,
            due_at: 0x1234,
            created_at: 1,
            updated_at: 1,
            finished_at: status.is_finished().then_some(99),
            parked_on: (status == RunStatus::Paused).then(|| "conn".to_string()),
            replays: 0,
        }
    }

    #[test]
    fn queue_keys_sort_by_lane_then_due_time_and_parse_back() {
        let mut a = run(RunStatus::Queued);
        a.due_at = 5;
        let mut b = run(RunStatus::Queued);
        b.due_at = 300;
        let mut c = run(RunStatus::Queued);
        c.lane = Lane::Normal;
        c.due_at = 1;
        assert!(a.queue_key() < b.queue_key());
        assert!(b.queue_key() < c.queue_key());
        assert_eq!(
            parse_queue_key(&b.queue_key()),
            Some(QueueEntry {
                due: 300,
                tenant: "t".into(),
                flow: "flow_1".into(),
                run: "run_1".into()
            })
        );
    }

    #[test]
    fn every_state_indexes_where_it_should_and_unindexes_the_same() {
        let trees = |ops: &[Op]| -> Vec<&'static str> {
            ops.iter()
                .map(|op| match op {
                    Op::Put { tree, .. } | Op::Delete { tree, .. } => *tree,
                })
                .collect()
        };
        let table = [
            (RunStatus::Queued, vec![RUNS, QUEUE]),
            (RunStatus::Retrying, vec![RUNS, QUEUE]),
            (RunStatus::Paused, vec![RUNS, PARKED]),
            (RunStatus::Failed, vec![RUNS, DEAD, FINISHED]),
            (RunStatus::Succeeded, vec![RUNS, FINISHED]),
            (RunStatus::Skipped, vec![RUNS, FINISHED]),
            (RunStatus::Cancelled, vec![RUNS, FINISHED]),
        ];
        for (status, expected) in table {
            let r = run(status);
            assert_eq!(trees(&r.index()), expected, "{status:?}");
            assert_eq!(trees(&r.unindex()), expected[1..], "{status:?}");
        }
    }

    #[test]
    fn event_runs_have_stable_ids_per_flow_and_event() {
        assert_eq!(run_id_for("f", "e1"), run_id_for("f", "e1"));
        assert_ne!(run_id_for("f", "e1"), run_id_for("f", "e2"));
        assert_ne!(run_id_for("f", "e1"), run_id_for("g", "e1"));
        // No ambiguity from where the separator falls.
        assert_ne!(run_id_for("ab", "c"), run_id_for("a", "bc"));
    }
}
