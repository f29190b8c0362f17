//! Per-entity state: for each flow, entity type and key, what the flow last
//! saw of the entity (the fields that matter, its version) with no time
//! window, and the flow's recent runs for it; and what the flow's events
//! came to (how many by each path, how many dropped and why).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Result;

/// What a flow knows of one entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityState {
    pub version: Option<Value>,
    /// The projection of the entity's last state.
    pub data: Value,
    pub updated_at: u64,
    /// When the flow's latest runs for it were created (oldest first, a
    /// few): a flow that keeps firing for one entity is in a loop.
    #[serde(default)]
    pub fires: Vec<u64>,
}

/// The entity a run is about, kept in the run's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEntity {
    #[serde(rename = "type")]
    pub kind: String,
    pub key: String,
    /// Arrival order among the flow's runs of this entity.
    pub seq: u64,
}

/// A new state of an entity, written with the runs it started.
#[derive(Debug, Clone)]
pub struct EntityWrite {
    pub tenant: String,
    pub flow: String,
    pub kind: String,
    pub key: String,
    pub state: EntityState,
}

/// What a flow's trigger events came to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestCounts {
    /// Events by the path they came: `webhook`, `poll`, `reconcile`, ...
    #[serde(default)]
    pub by_source: std::collections::BTreeMap<String, u64>,
    /// Dropped: nothing that matters changed.
    #[serde(default)]
    pub no_op: u64,
    /// Dropped: older than what was known.
    #[serde(default)]
    pub out_of_order: u64,
    /// Replaced by a newer event of the same entity (burst coalescing).
    #[serde(default)]
    pub coalesced: u64,
}

impl IngestCounts {
    pub fn is_empty(&self) -> bool {
        *self == IngestCounts::default()
    }

    pub fn add(&mut self, other: &IngestCounts) {
        for (source, n) in &other.by_source {
            *self.by_source.entry(source.clone()).or_default() += n;
        }
        self.no_op += other.no_op;
        self.out_of_order += other.out_of_order;
        self.coalesced += other.coalesced;
    }
}

pub trait EntityStore: Send + Sync + 'static {
    fn entity(
        &self,
        tenant: &str,
        flow: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<EntityState>>;

    fn put_entity(&self, write: &EntityWrite) -> Result<()>;

    /// The flow's oldest unfinished run of one entity: the one that may run.
    fn entity_head(
        &self,
        tenant: &str,
        flow: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<String>>;

    /// The flow's unfinished runs of one entity, in arrival order.
    fn entity_runs(&self, tenant: &str, flow: &str, kind: &str, key: &str) -> Result<Vec<String>>;

    fn counts(&self, tenant: &str, flow: &str) -> Result<IngestCounts>;

    fn add_counts(&self, tenant: &str, flow: &str, delta: &IngestCounts) -> Result<()>;

    /// Forgets a deleted flow's entities and counts.
    fn forget_entities(&self, tenant: &str, flow: &str) -> Result<()>;
}
