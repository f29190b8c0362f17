//! The schema, as numbered migrations applied at start. Each is applied
//! once, in its own transaction, under an advisory lock, so several hosts
//! starting at once on one database do not race: the first applies what is
//! missing, the others wait and then find it applied. A migration, once
//! released, is never edited: a change is a new one.

use tokio_postgres::Client;

use super::pg;
use crate::store::{Result, StoreError, Tree};

/// The advisory lock key of migrations (any constant of our own).
const MIGRATION_LOCK: i64 = 0x5357_4954_4348_5944; // "SWITCHYD"

/// A table per key-value tree (`kv_<tree>`): each tree is one kind of
/// record, so an operator reads `kv_flows` like any table, vacuum
/// statistics are per kind, and a tree's scans never touch another's pages.
/// Keys are the parts joined with NUL, as bytea (text cannot hold NUL), so a
/// prefix of parts is a key range. Created for every tree this binary
/// knows at each start (a new tree needs no numbered migration).
fn kv_tables() -> String {
    Tree::ALL
        .iter()
        .map(|tree| {
            format!(
                "CREATE TABLE IF NOT EXISTS kv_{} (key bytea PRIMARY KEY, value bytea NOT NULL);\n",
                tree.name()
            )
        })
        .collect()
}

/// The statements of migration 1: the hosts, runs, inbox and triggers.
fn v1() -> String {
    let mut sql = String::new();
    sql.push_str(
        r#"
CREATE TABLE blobs (hash text PRIMARY KEY, bytes bytea NOT NULL);

-- The hosts sharing the store. A host's epoch grows at every start; its
-- heartbeat is database time, so hosts' clocks do not matter.
CREATE TABLE nodes (
    name text PRIMARY KEY,
    epoch bigint NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);

-- Every run, its record as JSON bytes, and the columns its lists select by.
CREATE TABLE runs (
    tenant text NOT NULL,
    id text NOT NULL,
    flow text NOT NULL,
    status text NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    finished_at bigint,
    parked_on text,
    entity_kind text,
    entity_key text,
    entity_seq bigint,
    record bytea NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE INDEX runs_by_created ON runs (tenant, created_at DESC, id DESC);
CREATE INDEX runs_finished ON runs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX runs_failed ON runs (tenant) WHERE status = 'failed';
CREATE INDEX runs_parked ON runs (tenant, parked_on) WHERE parked_on IS NOT NULL;
CREATE INDEX runs_entity ON runs (tenant, flow, entity_kind, entity_key, entity_seq)
    WHERE entity_kind IS NOT NULL AND status IN ('queued', 'retrying', 'waiting', 'paused');

-- The queue: one small row per run waiting (or running), deleted when the
-- run leaves it. `owner`/`owner_epoch`/`attempt` are the claim that fences
-- the run's writes. Hot: rewritten at every claim, so pages keep room for
-- HOT updates and autovacuum runs early.
CREATE TABLE run_queue (
    tenant text NOT NULL,
    run text NOT NULL,
    flow text NOT NULL,
    lane smallint NOT NULL,
    due_at bigint NOT NULL,
    entity_kind text,
    entity_key text,
    entity_seq bigint,
    owner text,
    owner_epoch bigint,
    attempt integer NOT NULL DEFAULT 0,
    claimed_at timestamptz,
    PRIMARY KEY (tenant, run)
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_vacuum_threshold = 500, autovacuum_analyze_scale_factor = 0.05);
CREATE INDEX run_queue_due ON run_queue (lane, due_at) WHERE owner IS NULL;
CREATE INDEX run_queue_owner ON run_queue (owner, owner_epoch) WHERE owner IS NOT NULL;

CREATE TABLE event_dedup (
    tenant text NOT NULL,
    flow text NOT NULL,
    event text NOT NULL,
    seen_at bigint NOT NULL,
    PRIMARY KEY (tenant, flow, event)
);
CREATE INDEX event_dedup_seen ON event_dedup (seen_at);

-- Deliveries accepted and not yet processed; `owner` is the host
-- processing one (its request, or its inbox worker).
CREATE TABLE inbox (
    key bytea PRIMARY KEY,
    delivery bytea NOT NULL,
    owner text,
    owner_epoch bigint
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
        autovacuum_vacuum_threshold = 500);

CREATE TABLE deliveries_rejected (
    tenant text NOT NULL,
    flow text NOT NULL,
    received_at bigint NOT NULL,
    id bigserial,
    record bytea NOT NULL,
    PRIMARY KEY (tenant, flow, received_at, id)
);
CREATE INDEX deliveries_rejected_received ON deliveries_rejected (received_at);

CREATE TABLE trigger_state (
    tenant text NOT NULL,
    flow text NOT NULL,
    state bytea NOT NULL,
    PRIMARY KEY (tenant, flow)
);
-- Who fires a trigger: the host holding its lease, while that host is
-- alive at the epoch it took it with. `epoch` grows at every takeover.
CREATE TABLE trigger_leases (
    tenant text NOT NULL,
    flow text NOT NULL,
    owner text NOT NULL,
    owner_epoch bigint NOT NULL,
    epoch bigint NOT NULL,
    PRIMARY KEY (tenant, flow)
);
-- One row per schedule slot fired: a slot makes its runs once.
CREATE TABLE cron_slots (
    tenant text NOT NULL,
    flow text NOT NULL,
    fire_at bigint NOT NULL,
    PRIMARY KEY (tenant, flow, fire_at)
);
CREATE TABLE trigger_samples (
    tenant text NOT NULL,
    flow text NOT NULL,
    samples bytea NOT NULL,
    PRIMARY KEY (tenant, flow)
);
CREATE TABLE poll_history (
    tenant text NOT NULL,
    flow text NOT NULL,
    at bigint NOT NULL,
    id bigserial,
    record bytea NOT NULL,
    PRIMARY KEY (tenant, flow, at, id)
);

CREATE TABLE entity_state (
    tenant text NOT NULL,
    flow text NOT NULL,
    kind text NOT NULL,
    key text NOT NULL,
    state bytea NOT NULL,
    PRIMARY KEY (tenant, flow, kind, key)
);
CREATE TABLE ingest_counts (
    tenant text NOT NULL,
    flow text NOT NULL,
    counts bytea NOT NULL,
    PRIMARY KEY (tenant, flow)
);
"#,
    );
    sql
}

/// Migration 2: topics (change records by partition and offset, the
/// current state per key, publishers' idempotency keys).
fn v2() -> String {
    r#"
CREATE TABLE topic_records (
    tenant text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    idempotency text,
    record bytea NOT NULL,
    PRIMARY KEY (tenant, topic, partition, "offset")
);
CREATE TABLE topic_heads (
    tenant text NOT NULL,
    topic text NOT NULL,
    partition integer NOT NULL,
    head bytea NOT NULL,
    PRIMARY KEY (tenant, topic, partition)
);
CREATE TABLE topic_objects (
    tenant text NOT NULL,
    topic text NOT NULL,
    key text NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (tenant, topic, key)
);
CREATE TABLE topic_idempotency (
    tenant text NOT NULL,
    topic text NOT NULL,
    idempotency text NOT NULL,
    partition integer NOT NULL,
    "offset" bigint NOT NULL,
    PRIMARY KEY (tenant, topic, idempotency)
);
"#
    .to_string()
}

/// Migration 3: files (buckets, objects, usage, uploads, file triggers'
/// ledgers, record jobs). Names and paths compare as bytes (`COLLATE "C"`),
/// so a folder lists in the same order as on sled.
fn v3() -> String {
    r#"
CREATE TABLE buckets (
    tenant text NOT NULL,
    name text COLLATE "C" NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (tenant, name)
);
CREATE TABLE file_objects (
    tenant text NOT NULL,
    bucket text NOT NULL,
    path text COLLATE "C" NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (tenant, bucket, path)
);
CREATE TABLE file_usage (
    tenant text PRIMARY KEY,
    bytes bigint NOT NULL
);
CREATE TABLE file_uploads (
    tenant text NOT NULL,
    id text NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (tenant, id)
);
CREATE TABLE file_ledger (
    tenant text NOT NULL,
    flow text NOT NULL,
    key text COLLATE "C" NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (tenant, flow, key)
);
CREATE TABLE record_jobs (
    tenant text NOT NULL,
    run text NOT NULL,
    step text COLLATE "C" NOT NULL,
    record bytea NOT NULL,
    PRIMARY KEY (tenant, run, step)
);
"#
    .to_string()
}

/// Every migration, in order: (version, statements).
fn migrations() -> Vec<(i32, String)> {
    vec![(1, v1()), (2, v2()), (3, v3())]
}

/// Applies the migrations this database lacks; returns the versions applied.
pub(super) async fn migrate(client: &mut Client) -> Result<Vec<i32>> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg)?;
    let applied = apply(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg);
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

async fn apply(client: &mut Client) -> Result<Vec<i32>> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(pg)?;
    let done: Vec<i32> = client
        .query("SELECT version FROM schema_migrations", &[])
        .await
        .map_err(pg)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let known = migrations();
    if let Some(newer) = done.iter().find(|v| !known.iter().any(|(k, _)| k == *v)) {
        return Err(StoreError::Backend(format!(
            "the database has schema version {newer}, which this switchyard does not know: \
             is an older switchyard running against a newer database?"
        )));
    }
    let mut applied = Vec::new();
    for (version, sql) in known {
        if done.contains(&version) {
            continue;
        }
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute(&sql).await.map_err(|e| {
            StoreError::Backend(format!(
                "applying schema migration {version}: {}",
                super::describe(&e)
            ))
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        applied.push(version);
    }
    client.batch_execute(&kv_tables()).await.map_err(pg)?;
    Ok(applied)
}
