//! Where each polling or scheduled trigger stands: its cursor and its
//! schedule. A new state is saved either on its own (a failed poll) or in
//! the batch that queues the events it covered (see [`super::Along`]). Also
//! what an editor and an operator look at: the last few events a flow's
//! trigger produced (samples) and its last polls.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Result;

/// What the scheduler keeps about one flow's trigger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TriggerState {
    pub cursor: Option<String>,
    /// The trigger has caught up with the items there before its flow (a
    /// poll returned no events, or a cursor that did not move): its events
    /// fire from now on. Until then a flow without `include_existing` only
    /// records the cursors.
    pub seeded: bool,
    pub next_due: u64,
    pub last_run_at: Option<u64>,
    pub last_error: Option<String>,
    pub failures: u32,
    pub last_events: usize,
    pub polls: u64,
}

/// An event a flow's trigger produced, kept so an editor can offer its fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub at: u64,
    /// `webhook`, `poll` or `schedule`.
    pub source: String,
    pub event_id: String,
    pub payload: Value,
}

/// One poll of a flow's trigger, as its history shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PollRecord {
    pub at: u64,
    pub duration_ms: f64,
    /// Events the poll returned (before de-duplication).
    pub events: usize,
    pub cursor_before: Option<String>,
    pub cursor_after: Option<String>,
    pub error: Option<String>,
    /// The poll's log lines and HTTP exchanges (secrets cut out), bounded.
    pub journal: Value,
}

pub trait TriggerStore: Send + Sync + 'static {
    /// Takes (or keeps) the lease of a flow's trigger before a poll or a
    /// schedule tick: `None` when this node holds it and may fire, `Some(at)`
    /// when another live node does (look again at `at`, ms). A store shared
    /// by several nodes refuses a poll's writes (its cursor and events, its
    /// state) once its lease was taken over; the epoch of a lease grows at
    /// every takeover. One node always holds every lease.
    fn lease(&self, _tenant: &str, _flow: &str, _now: u64) -> Result<Option<u64>> {
        Ok(None)
    }

    fn state(&self, tenant: &str, flow: &str) -> Result<Option<TriggerState>>;
    fn save_state(&self, tenant: &str, flow: &str, state: &TriggerState) -> Result<()>;

    /// A flow's samples, newest first.
    fn samples(&self, tenant: &str, flow: &str) -> Result<Vec<Sample>>;
    /// Puts samples in front (newest first), keeping `keep` in all.
    fn add_samples(&self, tenant: &str, flow: &str, samples: &[Sample], keep: usize) -> Result<()>;

    /// A flow's last polls, newest first.
    fn polls(&self, tenant: &str, flow: &str) -> Result<Vec<PollRecord>>;
    /// Records a poll, keeping the flow's newest `keep`.
    fn record_poll(&self, tenant: &str, flow: &str, poll: &PollRecord, keep: usize) -> Result<()>;

    /// Forgets a deleted flow's state, samples and polls.
    fn forget(&self, tenant: &str, flow: &str) -> Result<()>;
}
