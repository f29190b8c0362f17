//! [`RunStore`] on PostgreSQL: a run is a row of `runs` (its record, and
//! the columns its lists select by); while it waits or runs it also has a
//! row in `run_queue`, which dispatchers claim with one statement (by lane
//! and due time, `FOR UPDATE SKIP LOCKED`). A claim names this host, its
//! epoch and the attempt: until the claim is released, only that host and
//! attempt may write the run, and any other write must replace the record
//! it read (same status and time of change).

use std::time::{Duration, Instant};

use super::{
    PgStore,
    batch::{Batch, params},
    ms,
    nodes::RUNS_CHANNEL,
    pg, unms,
};
use crate::store::{
    Along, EntityWrite, Lane, QueueEntry, Result, RunFilter, RunRecord, RunStore, Seen, StoreError,
    Visit, decode, encode,
};

/// How long a dispatcher with nothing to start waits, unless woken.
const IDLE: Duration = Duration::from_millis(1000);
/// How long a flow found at its limit is passed over (unless one of its
/// runs ends here first).
const BLOCKED_FOR: Duration = Duration::from_millis(500);
/// Claims per pass: each round passes over the flows the last one found
/// at their limit.
const ROUNDS: usize = 4;
/// Rows deleted per statement by retention.
const PRUNE_BATCH: i64 = 500;

/// What this host holds on a run it claimed.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub(super) attempt: i32,
    flow: String,
    lane: Lane,
}

fn lane_code(lane: Lane) -> i16 {
    match lane {
        Lane::Fast => 0,
        Lane::Normal => 1,
    }
}

const INSERT_RUN: &str = "INSERT INTO runs (tenant, id, flow, status, created_at, updated_at,
        finished_at, parked_on, entity_kind, entity_key, entity_seq, record)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";

const UPDATE_RUN: &str = "UPDATE runs SET flow = $3, status = $4, created_at = $5, updated_at = $6,
        finished_at = $7, parked_on = $8, entity_kind = $9, entity_key = $10, entity_seq = $11,
        record = $12
    WHERE tenant = $1 AND id = $2 AND status = $13 AND updated_at = $14";

/// Puts a run in the queue (or moves it); `$9` lets go of its claim.
const QUEUE_RUN: &str = "INSERT INTO run_queue (tenant, run, flow, lane, due_at, entity_kind,
        entity_key, entity_seq)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (tenant, run) DO UPDATE SET flow = EXCLUDED.flow, lane = EXCLUDED.lane,
        due_at = EXCLUDED.due_at, entity_kind = EXCLUDED.entity_kind,
        entity_key = EXCLUDED.entity_key, entity_seq = EXCLUDED.entity_seq,
        owner = CASE WHEN $9 THEN NULL ELSE run_queue.owner END,
        owner_epoch = CASE WHEN $9 THEN NULL ELSE run_queue.owner_epoch END,
        claimed_at = CASE WHEN $9 THEN NULL ELSE run_queue.claimed_at END";

const UNQUEUE_RUN: &str = "DELETE FROM run_queue WHERE tenant = $1 AND run = $2";

/// The claim that fences a write: still this host's, at this attempt.
const HOLDS_CLAIM: &str = "SELECT 1 FROM run_queue
    WHERE tenant = $1 AND run = $2 AND owner = $3 AND owner_epoch = $4 AND attempt = $5
    FOR UPDATE";

const SEEN: &str = "INSERT INTO event_dedup (tenant, flow, event, seen_at) VALUES ($1, $2, $3, $4)
    ON CONFLICT (tenant, flow, event) DO UPDATE SET seen_at = EXCLUDED.seen_at";

const PUT_ENTITY: &str = "INSERT INTO entity_state (tenant, flow, kind, key, state)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (tenant, flow, kind, key) DO UPDATE SET state = EXCLUDED.state";

pub(super) const PUT_STATE: &str =
    "INSERT INTO trigger_state (tenant, flow, state) VALUES ($1, $2, $3)
    ON CONFLICT (tenant, flow) DO UPDATE SET state = EXCLUDED.state";

/// The lease that fences a trigger's writes: still this host's, at this epoch.
pub(super) const HOLDS_LEASE: &str = "SELECT 1 FROM trigger_leases
    WHERE tenant = $1 AND flow = $2 AND owner = $3 AND owner_epoch = $4 AND epoch = $5
    FOR SHARE";

/// Claims up to `$3` due runs of a lane for this host: in due order,
/// passing over the flows in `$4`, runs that are not their entity's oldest
/// unfinished one, and rows another host is claiming right now.
const CLAIM: &str = "WITH picked AS (
        SELECT q.tenant, q.run FROM run_queue q
        WHERE q.lane = $1 AND q.owner IS NULL AND q.due_at <= $2
          AND NOT (q.flow = ANY($4))
          AND (q.entity_kind IS NULL OR NOT EXISTS (
              SELECT 1 FROM runs r
              WHERE r.tenant = q.tenant AND r.flow = q.flow AND r.entity_kind = q.entity_kind
                AND r.entity_key = q.entity_key AND r.entity_seq < q.entity_seq
                AND r.status IN ('queued', 'retrying', 'waiting', 'paused')))
          AND EXISTS (SELECT 1 FROM nodes WHERE name = $5 AND epoch = $6)
        ORDER BY q.due_at
        LIMIT $3
        FOR UPDATE OF q SKIP LOCKED)
    UPDATE run_queue q SET owner = $5, owner_epoch = $6, attempt = q.attempt + 1,
        claimed_at = now()
    FROM picked WHERE q.tenant = picked.tenant AND q.run = picked.run
    RETURNING q.tenant, q.run, q.flow, q.due_at, q.attempt";

const RELEASE: &str = "UPDATE run_queue SET owner = NULL, owner_epoch = NULL, claimed_at = NULL
    WHERE owner = $1 AND owner_epoch = $2
      AND (tenant, run) IN (SELECT * FROM unnest($3::text[], $4::text[]))";

/// A run's columns, in the order of [`INSERT_RUN`] and [`UPDATE_RUN`].
fn run_params(run: &RunRecord) -> Vec<super::batch::Param> {
    let entity = run.entity.as_ref();
    params![
        run.tenant.clone(),
        run.id.clone(),
        run.flow_id.clone(),
        run.status.as_str(),
        ms(run.created_at),
        ms(run.updated_at),
        run.finished_at.map(ms),
        run.parked_on.clone(),
        entity.map(|e| e.kind.clone()),
        entity.map(|e| e.key.clone()),
        entity.map(|e| ms(e.seq)),
        encode(run),
    ]
}

fn queue_params(run: &RunRecord, release: bool) -> Vec<super::batch::Param> {
    let entity = run.entity.as_ref();
    params![
        run.tenant.clone(),
        run.id.clone(),
        run.flow_id.clone(),
        lane_code(run.lane),
        ms(run.due_at),
        entity.map(|e| e.kind.clone()),
        entity.map(|e| e.key.clone()),
        entity.map(|e| ms(e.seq)),
        release,
    ]
}

impl PgStore {
    /// Writes for `along` into an empty `batch`, fenced by the trigger's
    /// lease when this host holds one (a poll's cursor commits only under
    /// its lease): then returns the fence, the batch's first statement.
    fn along(&self, along: &Along<'_>, batch: &mut Batch) -> Option<(usize, String)> {
        let fenced = |flow: &str| {
            (
                0,
                format!("the trigger of flow `{flow}` is now fired by another host"),
            )
        };
        match *along {
            Along::Nothing | Along::Unacknowledged => None,
            Along::InboxDone(key) => {
                batch.push("DELETE FROM inbox WHERE key = $1", params![key.0.clone()]);
                None
            }
            Along::TriggerState {
                tenant,
                flow,
                state,
            } => {
                let fence = self.fence_lease(tenant, flow, batch).then(|| fenced(flow));
                batch.push(
                    PUT_STATE,
                    params![tenant.to_string(), flow.to_string(), encode(state)],
                );
                fence
            }
            Along::Slot {
                tenant,
                flow,
                fire_at,
                state,
            } => {
                let fence = self.fence_lease(tenant, flow, batch).then(|| fenced(flow));
                batch.push(
                    "INSERT INTO cron_slots (tenant, flow, fire_at) VALUES ($1, $2, $3)",
                    params![tenant.to_string(), flow.to_string(), ms(fire_at)],
                );
                batch.push(
                    PUT_STATE,
                    params![tenant.to_string(), flow.to_string(), encode(state)],
                );
                fence
            }
        }
    }

    /// Adds the check of this host's lease on a trigger, if it holds one;
    /// the check's row count must then be 1 (see [`fenced`]).
    pub(super) fn fence_lease(&self, tenant: &str, flow: &str, batch: &mut Batch) -> bool {
        let held = self
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(tenant.to_string(), flow.to_string()))
            .copied();
        match held {
            Some(epoch) => {
                batch.push(
                    HOLDS_LEASE,
                    params![
                        tenant.to_string(),
                        flow.to_string(),
                        self.node.clone(),
                        self.epoch,
                        epoch
                    ],
                );
                true
            }
            None => false,
        }
    }

    /// Tells the other hosts of work queued now in `lanes` (throttled).
    fn notify(&self, lanes: impl IntoIterator<Item = Lane>, batch: &mut Batch) {
        for lane in lanes {
            if self.should_notify(lane) {
                let what = match lane {
                    Lane::Fast => "fast",
                    Lane::Normal => "normal",
                };
                batch.push(
                    "SELECT pg_notify($1, $2)",
                    params![RUNS_CHANNEL, format!("{}\n{what}", self.node)],
                );
            }
        }
    }

    /// Runs `batch` in one transaction; refuses it (rolls back) when one
    /// of the `fences` (indexes of checks in the batch) found no row.
    pub(super) fn commit(&self, batch: Batch, fences: Vec<(usize, String)>) -> Result<Vec<u64>> {
        self.with(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await.map_err(pg)?;
                let counts = batch.run(&tx).await?;
                for (at, why) in &fences {
                    if counts.get(*at) != Some(&1) {
                        tx.rollback().await.map_err(pg)?;
                        return Err(StoreError::Fenced(why.clone()));
                    }
                }
                tx.commit().await.map_err(pg)?;
                Ok(counts)
            })
        })
    }

    /// Claims due runs of a lane (see [`CLAIM`]), in due order.
    fn claim(
        &self,
        lane: Lane,
        now: u64,
        max: usize,
        skip: Vec<String>,
    ) -> Result<Vec<(QueueEntry, i32)>> {
        let (node, epoch) = (self.node.clone(), self.epoch);
        let mut claimed = self.with(move |c| {
            Box::pin(async move {
                let stmt = c.prepare_cached(CLAIM).await.map_err(pg)?;
                let rows = c
                    .query(
                        &stmt,
                        &[
                            &lane_code(lane),
                            &ms(now),
                            &(max as i64),
                            &skip,
                            &node,
                            &epoch,
                        ],
                    )
                    .await
                    .map_err(pg)?;
                Ok(rows
                    .iter()
                    .map(|row| {
                        (
                            QueueEntry {
                                tenant: row.get(0),
                                run: row.get(1),
                                flow: row.get(2),
                                due: unms(row.get(3)),
                            },
                            row.get::<_, i32>(4),
                        )
                    })
                    .collect::<Vec<_>>())
            })
        })?;
        claimed.sort_by_key(|(entry, _)| entry.due);
        Ok(claimed)
    }

    /// Lets go of claims this host holds and did not start.
    fn release_all(&self, entries: Vec<QueueEntry>) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let (tenants, runs): (Vec<String>, Vec<String>) = entries
            .into_iter()
            .map(|e| {
                self.forget_claim(&e.tenant, &e.run);
                (e.tenant, e.run)
            })
            .unzip();
        let (node, epoch) = (self.node.clone(), self.epoch);
        self.with(move |c| {
            Box::pin(async move {
                let stmt = c.prepare_cached(RELEASE).await.map_err(pg)?;
                c.execute(&stmt, &[&node, &epoch, &tenants, &runs])
                    .await
                    .map_err(pg)?;
                Ok(())
            })
        })
    }

    /// Flows of `lane` passed over for now.
    fn skipped(&self, lane: Lane) -> Vec<String> {
        let mut blocked = self.blocked[lane as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        blocked.retain(|_, since| since.elapsed() < BLOCKED_FOR);
        blocked.keys().cloned().collect()
    }

    fn unblock(&self, claim: &Claim) {
        self.blocked[claim.lane as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&claim.flow);
    }

    /// How long until the next run of `lane` is due (at most [`IDLE`]).
    fn next_due(&self, lane: Lane, now: u64) -> Result<Duration> {
        let next: Option<i64> = self.with(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT min(due_at) FROM run_queue
                         WHERE lane = $1 AND owner IS NULL AND due_at > $2",
                    )
                    .await
                    .map_err(pg)?;
                Ok(c.query_one(&stmt, &[&lane_code(lane), &ms(now)])
                    .await
                    .map_err(pg)?
                    .get(0))
            })
        })?;
        Ok(next.map_or(IDLE, |due| {
            Duration::from_millis(unms(due).saturating_sub(now)).min(IDLE)
        }))
    }

    fn decode_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<RunRecord>> {
        rows.iter()
            .map(|row| decode("runs", row.get::<_, &[u8]>(0)))
            .collect()
    }
}

impl RunStore for PgStore {
    /// Every write here is a committed transaction: durable already.
    fn durable(&self) -> crate::store::BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn run(&self, tenant: &str, id: &str) -> Result<Option<RunRecord>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        let bytes: Option<Vec<u8>> = self.with(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached("SELECT record FROM runs WHERE tenant = $1 AND id = $2")
                    .await
                    .map_err(pg)?;
                Ok(c.query_opt(&stmt, &[&tenant, &id])
                    .await
                    .map_err(pg)?
                    .map(|row| row.get(0)))
            })
        })?;
        bytes.map(|b| decode("runs", &b)).transpose()
    }

    fn runs(&self, tenant: &str, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let tenant = tenant.to_string();
        let (flow, status) = (filter.flow.clone(), filter.status.clone());
        let (since, until) = (filter.since.map(ms), filter.until.map(ms));
        let limit = filter.max() as i64;
        let (after_ms, after_id) = match &filter.after {
            Some((created_at, id)) => (Some(ms(*created_at)), Some(id.clone())),
            None => (None, None),
        };
        let rows = self.with(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT record FROM runs
                         WHERE tenant = $1 AND ($2::text IS NULL OR flow = $2)
                           AND ($3::text IS NULL OR status = $3)
                           AND ($4::bigint IS NULL OR created_at >= $4)
                           AND ($5::bigint IS NULL OR created_at < $5)
                           AND ($7::bigint IS NULL OR (created_at, id) < ($7, $8::text))
                         ORDER BY created_at DESC, id DESC
                         LIMIT $6",
                    )
                    .await
                    .map_err(pg)?;
                c.query(
                    &stmt,
                    &[
                        &tenant, &flow, &status, &since, &until, &limit, &after_ms, &after_id,
                    ],
                )
                .await
                .map_err(pg)
            })
        })?;
        Self::decode_rows(&rows)
    }

    fn exists(&self, tenant: &str, id: &str) -> Result<bool> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached("SELECT 1 FROM runs WHERE tenant = $1 AND id = $2")
                    .await
                    .map_err(pg)?;
                Ok(c.query_opt(&stmt, &[&tenant, &id])
                    .await
                    .map_err(pg)?
                    .is_some())
            })
        })
    }

    fn seen_at(&self, tenant: &str, flow: &str, event: &str) -> Result<Option<u64>> {
        let (tenant, flow, event) = (tenant.to_string(), flow.to_string(), event.to_string());
        self.with(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT seen_at FROM event_dedup WHERE tenant = $1 AND flow = $2 AND event = $3",
                    )
                    .await
                    .map_err(pg)?;
                Ok(c.query_opt(&stmt, &[&tenant, &flow, &event])
                    .await
                    .map_err(pg)?
                    .map(|row| unms(row.get(0))))
            })
        })
    }

    fn create(
        &self,
        runs: &[RunRecord],
        seen: &[Seen],
        entities: &[EntityWrite],
        along: Along<'_>,
    ) -> Result<()> {
        let mut batch = Batch::default();
        let fences: Vec<(usize, String)> = self.along(&along, &mut batch).into_iter().collect();
        for mark in seen {
            batch.push(
                SEEN,
                params![
                    mark.tenant.clone(),
                    mark.flow.clone(),
                    mark.event.clone(),
                    ms(mark.at)
                ],
            );
        }
        let mut lanes = Vec::new();
        let now = crate::clock::now_ms();
        for run in runs {
            batch.push(INSERT_RUN, run_params(run));
            if run.status.is_queued() {
                batch.push(QUEUE_RUN, queue_params(run, false));
                if run.due_at <= now + 1000 && !lanes.contains(&run.lane) {
                    lanes.push(run.lane);
                }
            }
        }
        for write in entities {
            batch.push(
                PUT_ENTITY,
                params![
                    write.tenant.clone(),
                    write.flow.clone(),
                    write.kind.clone(),
                    write.key.clone(),
                    encode(&write.state)
                ],
            );
        }
        self.notify(lanes, &mut batch);
        if batch.is_empty() {
            return Ok(());
        }
        self.commit(batch, fences).map(|_| ())
    }

    fn update(&self, before: &RunRecord, after: &RunRecord) -> Result<()> {
        let claim = self
            .claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(after.tenant.clone(), after.id.clone()))
            .cloned();
        let mut batch = Batch::default();
        let mut fences = Vec::new();
        if let Some(claim) = &claim {
            fences.push((
                0,
                format!(
                    "run `{}` was taken over by another host (this host's claim, attempt {}, is void)",
                    after.id, claim.attempt
                ),
            ));
            batch.push(
                HOLDS_CLAIM,
                params![
                    after.tenant.clone(),
                    after.id.clone(),
                    self.node.clone(),
                    self.epoch,
                    claim.attempt
                ],
            );
        }
        fences.push((
            fences.len(),
            format!("run `{}` changed since it was read", after.id),
        ));
        let mut update = run_params(after);
        update.extend(params![before.status.as_str(), ms(before.updated_at)]);
        batch.push(UPDATE_RUN, update);
        // Out of the queue, the claim has nothing left to hold. (A run that
        // stays queued keeps it until the execution ends: `release`.)
        let ends = claim.is_some() && !after.status.is_queued();
        if after.status.is_queued() {
            batch.push(QUEUE_RUN, queue_params(after, false));
            if claim.is_none() && after.due_at <= crate::clock::now_ms() + 1000 {
                self.notify([after.lane], &mut batch);
            }
        } else {
            batch.push(UNQUEUE_RUN, params![after.tenant.clone(), after.id.clone()]);
        }
        let result = self.commit(batch, fences);
        if let Some(claim) = &claim
            && (ends || matches!(result, Err(StoreError::Fenced(_))))
        {
            self.forget_claim(&after.tenant, &after.id);
            self.unblock(claim);
        }
        result.map(|_| ())
    }

    fn visit_due(
        &self,
        lane: Lane,
        now: u64,
        _head: usize,
        free: usize,
        visit: &mut dyn FnMut(&QueueEntry) -> Visit,
    ) -> Result<Duration> {
        let mut free = free;
        if free == 0 {
            return Ok(IDLE);
        }
        let mut skip = self.skipped(lane);
        for _ in 0..ROUNDS {
            let claimed = self.claim(lane, now, free, skip.clone())?;
            let asked = free;
            let got = claimed.len();
            let mut back = Vec::new();
            let mut orphans = Vec::new();
            let (mut full, mut blocked) = (false, false);
            for (entry, attempt) in claimed {
                if full {
                    back.push(entry);
                    continue;
                }
                // Held before the visit: starting it writes under the claim.
                self.claims
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(
                        (entry.tenant.clone(), entry.run.clone()),
                        Claim {
                            attempt,
                            flow: entry.flow.clone(),
                            lane,
                        },
                    );
                match visit(&entry) {
                    Visit::Start => free = free.saturating_sub(1),
                    Visit::Next => back.push(entry),
                    Visit::Blocked => {
                        self.blocked[lane as usize]
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .insert(entry.flow.clone(), Instant::now());
                        if !skip.contains(&entry.flow) {
                            skip.push(entry.flow.clone());
                            blocked = true;
                        }
                        back.push(entry);
                    }
                    Visit::Full => {
                        full = true;
                        back.push(entry);
                    }
                    Visit::Orphan => orphans.push(entry),
                }
            }
            self.release_all(back)?;
            for orphan in orphans {
                self.forget_claim(&orphan.tenant, &orphan.run);
                let (tenant, run) = (orphan.tenant, orphan.run);
                self.with(move |c| {
                    Box::pin(async move {
                        c.execute(UNQUEUE_RUN, &[&tenant, &run]).await.map_err(pg)?;
                        Ok(())
                    })
                })?;
            }
            if full || free == 0 {
                return Ok(IDLE);
            }
            // Fewer than asked: nothing more is due now, unless flows just
            // found blocked hid it (then claim again, passing them over).
            if got < asked && !blocked {
                break;
            }
        }
        self.next_due(lane, now)
    }

    fn release(&self, tenant: &str, run: &str) -> Result<()> {
        let claim = self
            .claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(tenant.to_string(), run.to_string()));
        let Some(claim) = claim else {
            return Ok(()); // its last write ended it
        };
        self.unblock(&claim);
        let (tenant, run) = (tenant.to_string(), run.to_string());
        let (node, epoch) = (self.node.clone(), self.epoch);
        self.with(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "UPDATE run_queue SET owner = NULL, owner_epoch = NULL, claimed_at = NULL
                         WHERE tenant = $1 AND run = $2 AND owner = $3 AND owner_epoch = $4
                           AND attempt = $5",
                    )
                    .await
                    .map_err(pg)?;
                c.execute(&stmt, &[&tenant, &run, &node, &epoch, &claim.attempt])
                    .await
                    .map_err(pg)?;
                Ok(())
            })
        })
    }

    fn on_queued(&self, wake: std::sync::Arc<dyn Fn(Lane) + Send + Sync>) {
        self.listeners
            .lanes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(wake);
    }

    fn parked(&self, tenant: &str, connection: &str) -> Result<Vec<String>> {
        let (tenant, connection) = (tenant.to_string(), connection.to_string());
        self.with(move |c| {
            Box::pin(async move {
                Ok(c.query(
                    "SELECT id FROM runs WHERE tenant = $1 AND parked_on = $2 ORDER BY id",
                    &[&tenant, &connection],
                )
                .await
                .map_err(pg)?
                .iter()
                .map(|row| row.get(0))
                .collect())
            })
        })
    }

    fn dead_letters(&self, tenant: &str) -> Result<usize> {
        let tenant = tenant.to_string();
        self.with(move |c| {
            Box::pin(async move {
                let n: i64 = c
                    .query_one(
                        "SELECT count(*) FROM runs WHERE tenant = $1 AND status = 'failed'",
                        &[&tenant],
                    )
                    .await
                    .map_err(pg)?
                    .get(0);
                Ok(n as usize)
            })
        })
    }

    fn queue_depth(&self) -> Result<usize> {
        self.with(move |c| {
            Box::pin(async move {
                let n: i64 = c
                    .query_one("SELECT count(*) FROM run_queue", &[])
                    .await
                    .map_err(pg)?
                    .get(0);
                Ok(n as usize)
            })
        })
    }

    fn prune(&self, finished_before: u64, seen_before: u64) -> Result<(usize, usize)> {
        let (finished_before, seen_before) = (ms(finished_before), ms(seen_before));
        self.with(move |c| {
            Box::pin(async move {
                // In batches, so no statement holds many row locks or
                // writes much WAL at once.
                let mut runs = 0;
                loop {
                    let n = c
                        .execute(
                            "DELETE FROM runs r USING (
                                 SELECT tenant, id FROM runs WHERE finished_at < $1 LIMIT $2
                             ) old WHERE r.tenant = old.tenant AND r.id = old.id",
                            &[&finished_before, &PRUNE_BATCH],
                        )
                        .await
                        .map_err(pg)?;
                    runs += n as usize;
                    if (n as i64) < PRUNE_BATCH {
                        break;
                    }
                }
                let mut marks = 0;
                loop {
                    let n = c
                        .execute(
                            "DELETE FROM event_dedup d USING (
                                 SELECT tenant, flow, event FROM event_dedup
                                 WHERE seen_at < $1 LIMIT $2
                             ) old WHERE d.tenant = old.tenant AND d.flow = old.flow
                                 AND d.event = old.event",
                            &[&seen_before, &PRUNE_BATCH],
                        )
                        .await
                        .map_err(pg)?;
                    marks += n as usize;
                    if (n as i64) < PRUNE_BATCH {
                        break;
                    }
                }
                c.execute(
                    "DELETE FROM cron_slots WHERE fire_at < $1",
                    &[&finished_before],
                )
                .await
                .map_err(pg)?;
                Ok((runs, marks))
            })
        })
    }
}
