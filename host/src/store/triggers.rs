//! Where each polling or scheduled trigger stands: its cursor and its
//! schedule. A new state is saved either on its own (a failed poll) or in
//! the batch that queues the events it covered (see [`super::Along`]).

use serde::{Deserialize, Serialize};

use super::Result;

/// What the scheduler keeps about one flow's trigger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TriggerState {
    pub cursor: Option<String>,
    /// The first poll has run (and recorded where to start).
    pub seeded: bool,
    pub next_due: u64,
    pub last_run_at: Option<u64>,
    pub last_error: Option<String>,
    pub failures: u32,
    pub last_events: usize,
    pub polls: u64,
}

pub trait TriggerStore: Send + Sync + 'static {
    fn state(&self, tenant: &str, flow: &str) -> Result<Option<TriggerState>>;
    fn save_state(&self, tenant: &str, flow: &str, state: &TriggerState) -> Result<()>;
}
