//! [`EntityStore`] on sled: entity states by flow, type and key; the
//! arrival order of each entity's unfinished runs (an index the run store
//! keeps with each run's state); per-flow ingest counts.

use super::{Op, SledStore, keys, keys::*};
use crate::store::{EntityState, EntityStore, EntityWrite, IngestCounts, Result, decode};

impl EntityStore for SledStore {
    fn entity(
        &self,
        tenant: &str,
        flow: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<EntityState>> {
        self.get(ENTITIES, &keys::join(&[tenant, flow, kind, key]))?
            .map(|bytes| decode(ENTITIES, &bytes))
            .transpose()
    }

    fn put_entity(&self, write: &EntityWrite) -> Result<()> {
        self.apply(vec![Op::put_json(
            ENTITIES,
            keys::join(&[&write.tenant, &write.flow, &write.kind, &write.key]),
            &write.state,
        )])
    }

    fn entity_head(
        &self,
        tenant: &str,
        flow: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<String>> {
        let prefix = keys::prefix(&[tenant, flow, kind, key]);
        Ok(self
            .scan_from(ENTITY_RUNS, &prefix, &prefix, 1)?
            .into_iter()
            .next()
            .map(|(_, run)| String::from_utf8_lossy(&run).into_owned()))
    }

    fn entity_runs(&self, tenant: &str, flow: &str, kind: &str, key: &str) -> Result<Vec<String>> {
        Ok(self
            .scan_prefix(ENTITY_RUNS, &keys::prefix(&[tenant, flow, kind, key]))?
            .into_iter()
            .map(|(_, run)| String::from_utf8_lossy(&run).into_owned())
            .collect())
    }

    fn counts(&self, tenant: &str, flow: &str) -> Result<IngestCounts> {
        Ok(self
            .get(INGEST_COUNTS, &keys::join(&[tenant, flow]))?
            .map(|bytes| decode(INGEST_COUNTS, &bytes))
            .transpose()?
            .unwrap_or_default())
    }

    fn add_counts(&self, tenant: &str, flow: &str, delta: &IngestCounts) -> Result<()> {
        let mut counts = self.counts(tenant, flow)?;
        counts.add(delta);
        self.apply(vec![Op::put_json(
            INGEST_COUNTS,
            keys::join(&[tenant, flow]),
            &counts,
        )])
    }

    fn forget_entities(&self, tenant: &str, flow: &str) -> Result<()> {
        let mut ops: Vec<Op> = self
            .scan_prefix(ENTITIES, &keys::prefix(&[tenant, flow]))?
            .into_iter()
            .map(|(key, _)| Op::delete(ENTITIES, key))
            .collect();
        ops.push(Op::delete(INGEST_COUNTS, keys::join(&[tenant, flow])));
        self.apply(ops)
    }
}
