//! [`TriggerStore`] on PostgreSQL: trigger states, samples and poll
//! history, and the lease that decides which host fires a trigger. A lease
//! is held by a host at an epoch of its own; it passes to another host only
//! when its holder is silent past the host lease or restarted, and then its
//! epoch grows. The holder's writes (state, cursor with events, poll
//! history) carry its epoch and are refused once it changed.

use super::{
    PgStore,
    batch::{Batch, params},
    ms, pg,
    runs::PUT_STATE,
};
use crate::store::{PollRecord, Result, Sample, TriggerState, TriggerStore, decode, encode};

/// Takes a free, stale or own lease; returns its epoch, or nothing when a
/// live host holds it.
const TAKE_LEASE: &str = "INSERT INTO trigger_leases AS l (tenant, flow, owner, owner_epoch, epoch)
    VALUES ($1, $2, $3, $4, 1)
    ON CONFLICT (tenant, flow) DO UPDATE
        SET owner = EXCLUDED.owner, owner_epoch = EXCLUDED.owner_epoch,
            epoch = CASE WHEN l.owner = EXCLUDED.owner AND l.owner_epoch = EXCLUDED.owner_epoch
                         THEN l.epoch ELSE l.epoch + 1 END
        WHERE (l.owner = EXCLUDED.owner AND l.owner_epoch = EXCLUDED.owner_epoch)
           OR NOT EXISTS (
               SELECT 1 FROM nodes n
               WHERE n.name = l.owner AND n.epoch = l.owner_epoch
                 AND n.heartbeat_at > now() - make_interval(secs => $5))
    RETURNING epoch";

impl PgStore {
    /// Runs `batch`, first checking this host's lease on the trigger when
    /// it holds one.
    fn fenced_trigger_write(&self, tenant: &str, flow: &str, writes: Batch) -> Result<()> {
        let mut batch = Batch::default();
        let fenced = self.fence_lease(tenant, flow, &mut batch);
        batch.append(writes);
        let why = format!("the trigger of flow `{flow}` is now fired by another host");
        let fences = if fenced { vec![(0, why)] } else { Vec::new() };
        self.commit(batch, fences).map(|_| ())
    }
}

impl TriggerStore for PgStore {
    fn lease(&self, tenant: &str, flow: &str, now: u64) -> Result<Option<u64>> {
        let (t, f) = (tenant.to_string(), flow.to_string());
        let (node, epoch) = (self.node.clone(), self.epoch);
        let lease = self.lease;
        let (taken, next_due): (Option<i64>, Option<Vec<u8>>) = self.with(move |c| {
            Box::pin(async move {
                let stmt = c.prepare_cached(TAKE_LEASE).await.map_err(pg)?;
                let taken = c
                    .query_opt(&stmt, &[&t, &f, &node, &epoch, &lease.as_secs_f64()])
                    .await
                    .map_err(pg)?
                    .map(|row| row.get(0));
                if taken.is_some() {
                    return Ok((taken, None));
                }
                let state = c
                    .query_opt(
                        "SELECT state FROM trigger_state WHERE tenant = $1 AND flow = $2",
                        &[&t, &f],
                    )
                    .await
                    .map_err(pg)?
                    .map(|row| row.get(0));
                Ok((None, state))
            })
        })?;
        let key = (tenant.to_string(), flow.to_string());
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        match taken {
            Some(epoch) => {
                if leases.insert(key, epoch).is_some_and(|held| held != epoch) {
                    tracing::info!(flow, epoch, "took the trigger's lease back");
                }
                Ok(None)
            }
            None => {
                leases.remove(&key);
                // The holder fires it when due; look again then, or after
                // half a lease, in case the holder goes silent.
                let due = next_due
                    .and_then(|bytes| decode::<TriggerState>("trigger_state", &bytes).ok())
                    .map_or(0, |state| state.next_due);
                let half = (self.lease.as_millis() as u64 / 2).max(100);
                Ok(Some(due.max(now + half)))
            }
        }
    }

    fn state(&self, tenant: &str, flow: &str) -> Result<Option<TriggerState>> {
        let (tenant, flow) = (tenant.to_string(), flow.to_string());
        let bytes: Option<Vec<u8>> = self.with(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT state FROM trigger_state WHERE tenant = $1 AND flow = $2",
                    )
                    .await
                    .map_err(pg)?;
                Ok(c.query_opt(&stmt, &[&tenant, &flow])
                    .await
                    .map_err(pg)?
                    .map(|row| row.get(0)))
            })
        })?;
        bytes.map(|b| decode("trigger_state", &b)).transpose()
    }

    fn save_state(&self, tenant: &str, flow: &str, state: &TriggerState) -> Result<()> {
        let mut batch = Batch::default();
        batch.push(
            PUT_STATE,
            params![tenant.to_string(), flow.to_string(), encode(state)],
        );
        self.fenced_trigger_write(tenant, flow, batch)
    }

    fn samples(&self, tenant: &str, flow: &str) -> Result<Vec<Sample>> {
        let (tenant, flow) = (tenant.to_string(), flow.to_string());
        let bytes: Option<Vec<u8>> = self.with(move |c| {
            Box::pin(async move {
                Ok(c.query_opt(
                    "SELECT samples FROM trigger_samples WHERE tenant = $1 AND flow = $2",
                    &[&tenant, &flow],
                )
                .await
                .map_err(pg)?
                .map(|row| row.get(0)))
            })
        })?;
        Ok(bytes
            .map(|b| decode("trigger_samples", &b))
            .transpose()?
            .unwrap_or_default())
    }

    fn add_samples(&self, tenant: &str, flow: &str, samples: &[Sample], keep: usize) -> Result<()> {
        // Samples are for editors: the last writer wins, no lock needed.
        let mut all: Vec<Sample> = samples.to_vec();
        all.extend(self.samples(tenant, flow)?);
        all.truncate(keep);
        let (tenant, flow, all) = (tenant.to_string(), flow.to_string(), encode(&all));
        self.with(move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO trigger_samples (tenant, flow, samples) VALUES ($1, $2, $3)
                     ON CONFLICT (tenant, flow) DO UPDATE SET samples = EXCLUDED.samples",
                    &[&tenant, &flow, &all],
                )
                .await
                .map_err(pg)?;
                Ok(())
            })
        })
    }

    fn polls(&self, tenant: &str, flow: &str) -> Result<Vec<PollRecord>> {
        let (tenant, flow) = (tenant.to_string(), flow.to_string());
        let rows: Vec<Vec<u8>> = self.with(move |c| {
            Box::pin(async move {
                Ok(c.query(
                    "SELECT record FROM poll_history WHERE tenant = $1 AND flow = $2
                     ORDER BY at DESC, id DESC",
                    &[&tenant, &flow],
                )
                .await
                .map_err(pg)?
                .iter()
                .map(|row| row.get(0))
                .collect())
            })
        })?;
        rows.iter().map(|b| decode("poll_history", b)).collect()
    }

    fn record_poll(&self, tenant: &str, flow: &str, poll: &PollRecord, keep: usize) -> Result<()> {
        let mut batch = Batch::default();
        batch.push(
            "INSERT INTO poll_history (tenant, flow, at, record) VALUES ($1, $2, $3, $4)",
            params![
                tenant.to_string(),
                flow.to_string(),
                ms(poll.at),
                encode(poll)
            ],
        );
        batch.push(
            "DELETE FROM poll_history p USING (
                 SELECT id FROM poll_history WHERE tenant = $1 AND flow = $2
                 ORDER BY at DESC, id DESC OFFSET $3
             ) old WHERE p.tenant = $1 AND p.flow = $2 AND p.id = old.id",
            params![tenant.to_string(), flow.to_string(), keep as i64],
        );
        self.fenced_trigger_write(tenant, flow, batch)
    }

    fn forget(&self, tenant: &str, flow: &str) -> Result<()> {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(tenant.to_string(), flow.to_string()));
        let (tenant, flow) = (tenant.to_string(), flow.to_string());
        self.with(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await.map_err(pg)?;
                for table in [
                    "trigger_state",
                    "trigger_samples",
                    "poll_history",
                    "trigger_leases",
                    "cron_slots",
                ] {
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
