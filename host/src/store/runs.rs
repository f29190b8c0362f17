//! What a run is on disk, and the trait of the store that keeps runs: the
//! record with every step's attempts, and what moves with it (the due-time
//! queue while it waits, the dead-letter list when it failed, the parked list
//! while its connection is paused, the finish order that retention walks) and
//! the de-duplication marks of the events that started runs.
//!
//! The records are here, below the services, because the store indexes them;
//! what runs *do* with them lives in `runs/`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{BoxFuture, EntityWrite, InboxKey, Result, RunEntity, TriggerState};

/// Which dispatcher a flow's runs go to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Events that must not wait behind bulk work (orders, inventory).
    Fast,
    #[default]
    Normal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for its turn (or running now).
    Queued,
    /// A step failed and waits for its next attempt.
    Retrying,
    /// Waiting for a durable delay to pass, or for a flow it called.
    Waiting,
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
    pub const ALL: [RunStatus; 8] = [
        RunStatus::Queued,
        RunStatus::Retrying,
        RunStatus::Waiting,
        RunStatus::Paused,
        RunStatus::Succeeded,
        RunStatus::Skipped,
        RunStatus::Failed,
        RunStatus::Cancelled,
    ];

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Succeeded | RunStatus::Skipped | RunStatus::Failed | RunStatus::Cancelled
        )
    }

    /// Waiting in the queue (due now or later).
    pub fn is_queued(self) -> bool {
        matches!(
            self,
            RunStatus::Queued | RunStatus::Retrying | RunStatus::Waiting
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Retrying => "retrying",
            RunStatus::Waiting => "waiting",
            RunStatus::Paused => "paused",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Skipped => "skipped",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<RunStatus> {
        RunStatus::ALL.into_iter().find(|s| s.as_str() == text)
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
    /// Every step that started, in the order it did: a step in a loop once
    /// per item (`create[2]`), skipped steps with why, branches taken.
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
    /// While `Waiting` for a delay: when it ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_until: Option<u64>,
    /// Why a `stop` step ended the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// What a `respond` step answered the run's caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<RunResponse>,
    /// The run (and its step) that started this one with `call_flow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentRun>,
    /// The entity the event is about (a flow with `entity:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<RunEntity>,
    /// What changed in the entity: each field with `old` and `new`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Value>,
    /// The entity's state before this event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Value>,
}

/// A synchronous run's answer, from its `respond` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

/// The run that called this one and waits for it (or not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRun {
    pub run: String,
    pub step: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    pub step: Option<String>,
    /// `transient`, `rate_limited`, `auth`, `invalid_input`, `permanent`,
    /// `timeout`, `trap`, `condition`, `mapping`...
    pub kind: String,
    pub message: String,
}

/// Where a step of a run stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Started, not finished (an action about to be called).
    #[default]
    Running,
    Succeeded,
    /// Its `if:` was false.
    Skipped,
    /// Waits for its next attempt.
    Retrying,
    /// A delay, or a called flow it waits for.
    Waiting,
    /// Failed, and the run failed with it (until a replay).
    Failed,
    /// Failed with `on_error: continue`: the run went on.
    FailedContinued,
}

impl StepStatus {
    /// Done for good: a resumed run passes over it.
    pub fn is_done(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded | StepStatus::Skipped | StepStatus::FailedContinued
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's key; in a loop, with the item's index (`create[2]`).
    pub key: String,
    /// `action`, `paths`, `for_each`, `delay`, `stop`, `fail`, `respond`, `call_flow`.
    #[serde(default = "action_kind")]
    pub kind: String,
    #[serde(default)]
    pub status: StepStatus,
    /// Why it was skipped, which branches were taken, until when it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When a waiting step (a delay) is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wake_at: Option<u64>,
    /// The error of a failed step, as later steps see it (`steps.<key>.error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// A run this step started (`call_flow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<String>,
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

fn action_kind() -> String {
    "action".to_string()
}

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
    /// A page's cursor: only the runs listed after this one (older, or as
    /// old with a smaller id), in the listing's order.
    #[serde(skip)]
    pub after: Option<(u64, String)>,
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
            && self
                .after
                .as_ref()
                .is_none_or(|(created_at, id)| (run.created_at, &run.id) < (*created_at, id))
    }

    /// How many runs a listing returns: 100 unless asked, at most 1,000.
    pub fn max(&self) -> usize {
        self.limit.unwrap_or(100).min(1000)
    }
}

/// An event seen by a flow, remembered for the de-duplication window.
#[derive(Debug, Clone)]
pub struct Seen {
    pub tenant: String,
    pub flow: String,
    pub event: String,
    pub at: u64,
}

/// What is written in the same atomic batch as new runs: the source of
/// their events moves on only together with them.
pub enum Along<'a> {
    Nothing,
    /// The webhook delivery the events came from is done.
    InboxDone(&'a InboxKey),
    /// The events of a webhook delivery not acknowledged yet, and stored
    /// nowhere else: its acknowledgement waits until they are on disk, and
    /// until then its sender sends it again, which routes it again. So a
    /// store may write them one by one, as it does with [`Along::InboxDone`].
    Unacknowledged,
    /// The trigger's new state (its cursor) after the poll that found them.
    TriggerState {
        tenant: &'a str,
        flow: &'a str,
        state: &'a TriggerState,
    },
    /// A schedule's fire slot (its due time) and the trigger's new state:
    /// a slot makes its runs once, whichever node fires it.
    Slot {
        tenant: &'a str,
        flow: &'a str,
        fire_at: u64,
        state: &'a TriggerState,
    },
}

/// A queued run as its queue entry names it (no record read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub due: u64,
    pub tenant: String,
    pub flow: String,
    pub run: String,
}

/// What a dispatcher made of one due queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visit {
    /// Started on this node: a store that claims keeps the claim until
    /// [`RunStore::release`].
    Start,
    /// Not startable now (running here already, not its entity's turn): go
    /// on to the next entry.
    Next,
    /// Its flow or a connection of its steps is at its limit: go on, and
    /// pass over the flow's other entries for a while.
    Blocked,
    /// Every worker is busy: stop here.
    Full,
    /// The entry has no run record (it cannot happen through the store's
    /// batches): drop it.
    Orphan,
}

/// The store of runs. Changes of one run are serialised by the caller (the
/// run service's per-run lock), so `update` needs no read of its own.
///
/// A store shared by several nodes also fences: a run is *claimed* before
/// it is offered to a dispatcher ([`RunStore::visit_due`]), and until the
/// claim is released only the node and attempt that claimed it may write
/// it; every other `update` is refused unless the record it replaces is
/// still the stored one. On one node (sled) claims cost nothing.
pub trait RunStore: Send + Sync + 'static {
    fn run(&self, tenant: &str, id: &str) -> Result<Option<RunRecord>>;

    /// A tenant's runs that match, newest first, at most [`RunFilter::max`].
    fn runs(&self, tenant: &str, filter: &RunFilter) -> Result<Vec<RunRecord>>;

    fn exists(&self, tenant: &str, id: &str) -> Result<bool>;

    /// When `event` was last seen by the flow (within whatever is kept).
    fn seen_at(&self, tenant: &str, flow: &str, event: &str) -> Result<Option<u64>>;

    /// Writes new runs (in any state), the de-duplication marks of their
    /// events, the new states of their entities and `along`, all or nothing.
    /// Except that a store may write the runs of a webhook delivery
    /// (`Along::InboxDone` or `Along::Unacknowledged`, no entity) as single
    /// writes, in an order a crash can cut anywhere: each run's record
    /// before its index entries, the marks after the runs, the inbox entry
    /// last. The delivery is then routed again (from the inbox, or sent
    /// again by its sender), and finds a run without its event's mark: see
    /// [`RunStore::reindex`].
    fn create(
        &self,
        runs: &[RunRecord],
        seen: &[Seen],
        entities: &[EntityWrite],
        along: Along<'_>,
    ) -> Result<()>;

    /// Returns once everything written before the call is on disk. Runs
    /// that come from a durable source (an inbox entry, a poll's cursor)
    /// need no flush of their own: after a crash the source makes them
    /// again with the same ids. A run started by an API call, or by a
    /// webhook delivery not acknowledged yet, has no such source, so its
    /// creation is made durable before the call is answered.
    fn durable(&self) -> BoxFuture<'_, Result<()>>;

    /// Moves a run from `before` to `after`: the record and every index
    /// entry of both states. In one batch, except that a store may write a
    /// queued run's move to a finished state as single writes, in an order
    /// a crash can cut anywhere: the record first, its queue entry last
    /// (see [`RunStore::repair_queue_entry`]).
    fn update(&self, before: &RunRecord, after: &RunRecord) -> Result<()>;

    /// Writes the index entries of the run's state (its queue entry, its
    /// finished mark...) again, not the record: for a run found without
    /// its event's mark, whose creation a crash cut short. A store whose
    /// creations are always one batch never gets here (and does nothing).
    fn reindex(&self, _run: &RunRecord) -> Result<()> {
        Ok(())
    }

    /// `entry` is in the queue but its run, read under the run's lock, is
    /// no longer queued: a finishing write was cut short by a crash. Writes
    /// the index entries of the run's state again and removes `entry`, in
    /// one batch. A store whose updates are always one batch never gets
    /// here (and does nothing).
    fn repair_queue_entry(&self, _run: &RunRecord, _entry: &QueueEntry) -> Result<()> {
        Ok(())
    }

    /// Offers the due entries of a lane's queue to `visit`, in due order,
    /// until it says [`Visit::Full`] or nothing more is due. Starts at the
    /// head; when the head holds only entries that `visit` passed over, the
    /// next calls walk on through the queue, resuming where they stopped, so
    /// a backlog that cannot start never hides what is behind it. `head` is
    /// how many entries the head is (running ones included), `free` how many
    /// runs the caller could start now: a store that claims claims at most
    /// that many, and puts back every entry not answered [`Visit::Start`].
    /// Returns how long to wait before looking again unless woken.
    fn visit_due(
        &self,
        lane: Lane,
        now: u64,
        head: usize,
        free: usize,
        visit: &mut dyn FnMut(&QueueEntry) -> Visit,
    ) -> Result<Duration>;

    /// The execution this node started for a run ([`Visit::Start`]) has
    /// ended: its claim is let go (its new state was written by `update`).
    fn release(&self, _tenant: &str, _run: &str) -> Result<()> {
        Ok(())
    }

    /// Registers what to call when another node queued work in a lane (a
    /// wake-up only: dispatchers look at the queue on their own too). It is
    /// called on the store's own thread and must only signal.
    fn on_queued(&self, _wake: std::sync::Arc<dyn Fn(Lane) + Send + Sync>) {}

    /// The ids of the runs parked behind a connection.
    fn parked(&self, tenant: &str, connection: &str) -> Result<Vec<String>>;

    /// How many of a tenant's runs are in the dead-letter list.
    fn dead_letters(&self, tenant: &str) -> Result<usize>;

    /// Runs waiting in every lane's queue (walks it: for gauges).
    fn queue_depth(&self) -> Result<usize>;

    /// Deletes runs that finished before `finished_before` and
    /// de-duplication marks older than `seen_before`; returns how many of each.
    fn prune(&self, finished_before: u64, seen_before: u64) -> Result<(usize, usize)>;
}
