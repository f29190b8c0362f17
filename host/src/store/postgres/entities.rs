//! [`EntityStore`] on PostgreSQL: entity states by flow, type and key; an
//! entity's unfinished runs are read from `runs` (an index keeps them in
//! arrival order); per-flow ingest counts, added to under a row lock.

use super::{PgStore, pg};
use crate::store::{EntityState, EntityStore, EntityWrite, IngestCounts, Result, decode, encode};

/// A flow's unfinished runs of one entity, oldest first.
const ENTITY_RUNS: &str = "SELECT id FROM runs
    WHERE tenant = $1 AND flow = $2 AND entity_kind = $3 AND entity_key = $4
      AND status IN ('queued', 'retrying', 'waiting', 'paused')
    ORDER BY entity_seq";

impl PgStore {
    fn entity_run_ids(
        &self,
        tenant: &str,
        flow: &str,
        kind: &str,
        key: &str,
        limit: Option<i64>,
    ) -> Result<Vec<String>> {
        let args = [tenant, flow, kind, key].map(str::to_string);
        self.with(move |c| {
            Box::pin(async move {
                let [tenant, flow, kind, key] = &args;
                let rows = match limit {
                    Some(n) => {
                        let sql = format!("{ENTITY_RUNS} LIMIT {n}");
                        c.query(&sql, &[tenant, flow, kind, key]).await
                    }
                    None => {
                        let stmt = c.prepare_cached(ENTITY_RUNS).await.map_err(pg)?;
                        c.query(&stmt, &[tenant, flow, kind, key]).await
                    }
                }
                .map_err(pg)?;
                Ok(rows.iter().map(|row| row.get(0)).collect())
            })
        })
    }
}

impl EntityStore for PgStore {
    fn entity(
        &self,
        tenant: &str,
        flow: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<EntityState>> {
        let args = [tenant, flow, kind, key].map(str::to_string);
        let bytes: Option<Vec<u8>> = self.with(move |c| {
            Box::pin(async move {
                let [tenant, flow, kind, key] = &args;
                let stmt = c
                    .prepare_cached(
                        "SELECT state FROM entity_state
                         WHERE tenant = $1 AND flow = $2 AND kind = $3 AND key = $4",
                    )
                    .await
                    .map_err(pg)?;
                Ok(c.query_opt(&stmt, &[tenant, flow, kind, key])
                    .await
                    .map_err(pg)?
                    .map(|row| row.get(0)))
            })
        })?;
        bytes.map(|b| decode("entity_state", &b)).transpose()
    }

    fn put_entity(&self, write: &EntityWrite) -> Result<()> {
        let args = [&write.tenant, &write.flow, &write.kind, &write.key].map(String::clone);
        let state = encode(&write.state);
        self.with(move |c| {
            Box::pin(async move {
                let [tenant, flow, kind, key] = &args;
                c.execute(
                    "INSERT INTO entity_state (tenant, flow, kind, key, state)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (tenant, flow, kind, key) DO UPDATE SET state = EXCLUDED.state",
                    &[tenant, flow, kind, key, &state],
                )
                .await
                .map_err(pg)?;
                Ok(())
            })
        })
    }

    fn entity_head(
        &self,
        tenant: &str,
        flow: &str,
        kind: &str,
        key: &str,
    ) -> Result<Option<String>> {
        Ok(self
            .entity_run_ids(tenant, flow, kind, key, Some(1))?
            .into_iter()
            .next())
    }

    fn entity_runs(&self, tenant: &str, flow: &str, kind: &str, key: &str) -> Result<Vec<String>> {
        self.entity_run_ids(tenant, flow, kind, key, None)
    }

    fn counts(&self, tenant: &str, flow: &str) -> Result<IngestCounts> {
        let (tenant, flow) = (tenant.to_string(), flow.to_string());
        let bytes: Option<Vec<u8>> = self.with(move |c| {
            Box::pin(async move {
                Ok(c.query_opt(
                    "SELECT counts FROM ingest_counts WHERE tenant = $1 AND flow = $2",
                    &[&tenant, &flow],
                )
                .await
                .map_err(pg)?
                .map(|row| row.get(0)))
            })
        })?;
        Ok(bytes
            .map(|b| decode("ingest_counts", &b))
            .transpose()?
            .unwrap_or_default())
    }

    fn add_counts(&self, tenant: &str, flow: &str, delta: &IngestCounts) -> Result<()> {
        let (tenant, flow, delta) = (tenant.to_string(), flow.to_string(), delta.clone());
        self.with(move |c| {
            Box::pin(async move {
                // Several hosts add to one flow's counts: read and write
                // under the row's lock.
                let tx = c.transaction().await.map_err(pg)?;
                tx.execute(
                    "INSERT INTO ingest_counts (tenant, flow, counts) VALUES ($1, $2, $3)
                     ON CONFLICT (tenant, flow) DO NOTHING",
                    &[&tenant, &flow, &encode(&IngestCounts::default())],
                )
                .await
                .map_err(pg)?;
                let row = tx
                    .query_one(
                        "SELECT counts FROM ingest_counts WHERE tenant = $1 AND flow = $2 FOR UPDATE",
                        &[&tenant, &flow],
                    )
                    .await
                    .map_err(pg)?;
                let mut counts: IngestCounts = decode("ingest_counts", row.get::<_, &[u8]>(0))?;
                counts.add(&delta);
                tx.execute(
                    "UPDATE ingest_counts SET counts = $3 WHERE tenant = $1 AND flow = $2",
                    &[&tenant, &flow, &encode(&counts)],
                )
                .await
                .map_err(pg)?;
                tx.commit().await.map_err(pg)
            })
        })
    }

    fn forget_entities(&self, tenant: &str, flow: &str) -> Result<()> {
        let (tenant, flow) = (tenant.to_string(), flow.to_string());
        self.with(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await.map_err(pg)?;
                for table in ["entity_state", "ingest_counts"] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE tenant = $1 AND flow = $2"),
                        &[&tenant, &flow],
                    )
                    .await
                    .map_err(pg)?;
                }
                tx.commit().await.map_err(pg)
            })
        })
    }
}
