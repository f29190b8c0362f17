//! Every sled tree of the engine's hot paths and the layout of its keys.
//! (The low-churn trees are named by `Tree` and keyed by their parts joined
//! with NUL.) Times in keys are 16 hex digits, so keys sort by time.

use crate::store::{Lane, QueueEntry, RunRecord};

/// `{tenant}\0{run}` → the run record.
pub(super) const RUNS: &str = "runs";
/// `{lane}{due:016x}\0{tenant}\0{flow}\0{run}` → empty: work to do, in due
/// order (the flow is in the key so a dispatcher can pass over a flow at its
/// concurrency limit without reading its runs).
pub(super) const QUEUE: &str = "run_queue";
/// `{tenant}\0{run}` → empty: failed runs waiting for a replay.
pub(super) const DEAD: &str = "dead_letters";
/// `{tenant}\0{connection}\0{run}` → empty: runs waiting for a paused
/// connection to be resumed.
pub(super) const PARKED: &str = "parked_runs";
/// `{finished:016x}\0{tenant}\0{run}` → empty: what retention prunes.
pub(super) const FINISHED: &str = "runs_finished";
/// `{tenant}\0{flow}\0{event}` → first-seen time (ms): the de-duplication window.
pub(super) const DEDUP: &str = "event_dedup";
/// `{seen:016x}\0{tenant}\0{flow}\0{event}` → empty: expiry order of [`DEDUP`].
pub(super) const DEDUP_EXPIRY: &str = "event_dedup_expiry";
/// `{received:016x}{random:016x}` → a delivery accepted, not yet processed.
pub(super) const INBOX: &str = "inbox";
/// `{tenant}\0{flow}\0{received:016x}{random:08x}` → a rejected delivery.
pub(super) const REJECTED: &str = "deliveries_rejected";
/// `{tenant}\0{flow}` → the trigger's state.
pub(super) const TRIGGER_STATE: &str = "trigger_state";
/// `{tenant}\0{flow}\0{type}\0{key}` → what the flow last saw of an entity.
pub(super) const ENTITIES: &str = "entity_state";
/// `{tenant}\0{flow}\0{type}\0{key}\0{seq:016x}` → run id: a flow's
/// unfinished runs of one entity in arrival order.
pub(super) const ENTITY_RUNS: &str = "entity_runs";
/// `{tenant}\0{flow}` → what the flow's trigger events came to.
pub(super) const INGEST_COUNTS: &str = "ingest_counts";
/// `{tenant}\0{flow}` → the trigger's last events (a list, newest first).
pub(super) const SAMPLES: &str = "trigger_samples";
/// `{tenant}\0{flow}\0{at:016x}` → one poll.
pub(super) const POLLS: &str = "poll_history";

/// `{tenant}\0{topic}\0{partition:08x}{offset:016x}` → a topic's record.
pub(super) const TOPIC_RECORDS: &str = "topic_records";
/// `{tenant}\0{topic}\0{partition:08x}` → the partition's head.
pub(super) const TOPIC_HEADS: &str = "topic_heads";
/// `{tenant}\0{topic}\0{key}` → the key's newest record (the compacted view).
pub(super) const TOPIC_OBJECTS: &str = "topic_objects";
/// `{tenant}\0{topic}\0{idempotency key}` → `{partition}:{offset}`.
pub(super) const TOPIC_IDEMPOTENCY: &str = "topic_idempotency";

/// Joins key parts with NUL (parts never contain one).
pub(super) fn join(parts: &[&str]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

/// The prefix that selects every key beginning with these whole parts.
pub(super) fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut key = join(parts);
    if !parts.is_empty() {
        key.push(0);
    }
    key
}

pub(super) fn split(key: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(key)
        .split('\0')
        .map(str::to_string)
        .collect()
}

pub(super) fn lane_byte(lane: Lane) -> u8 {
    match lane {
        Lane::Fast => b'0',
        Lane::Normal => b'1',
    }
}

pub(super) fn run(tenant: &str, id: &str) -> Vec<u8> {
    join(&[tenant, id])
}

pub(super) fn dedup(tenant: &str, flow: &str, event: &str) -> Vec<u8> {
    join(&[tenant, flow, event])
}

/// `{at:016x}\0` followed by `rest`: an entry of a time-ordered index.
pub(super) fn timed(at: u64, rest: &[u8]) -> Vec<u8> {
    let mut key = format!("{at:016x}\0").into_bytes();
    key.extend_from_slice(rest);
    key
}

/// The time at the front of a [`timed`] key.
pub(super) fn time_of(key: &[u8]) -> Option<(u64, &[u8])> {
    let split = key.iter().position(|b| *b == 0)?;
    let at = u64::from_str_radix(std::str::from_utf8(&key[..split]).ok()?, 16).ok()?;
    Some((at, &key[split + 1..]))
}

pub(super) fn queue(run: &RunRecord) -> Vec<u8> {
    queue_at(run.lane, run.due_at, &run.tenant, &run.flow_id, &run.id)
}

/// The key of a queue entry in `lane` (the inverse of [`parse_queue`]).
pub(super) fn queue_entry(lane: Lane, entry: &QueueEntry) -> Vec<u8> {
    queue_at(lane, entry.due, &entry.tenant, &entry.flow, &entry.run)
}

fn queue_at(lane: Lane, due: u64, tenant: &str, flow: &str, run: &str) -> Vec<u8> {
    let mut key = vec![lane_byte(lane)];
    key.extend_from_slice(format!("{due:016x}\0{tenant}\0{flow}\0{run}").as_bytes());
    key
}

/// Splits a queue key back into its parts.
pub(super) fn parse_queue(key: &[u8]) -> Option<QueueEntry> {
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

pub(super) fn finished(run: &RunRecord) -> Option<Vec<u8>> {
    run.finished_at
        .map(|at| timed(at, &join(&[&run.tenant, &run.id])))
}

pub(super) fn parked(run: &RunRecord) -> Option<Vec<u8>> {
    run.parked_on
        .as_ref()
        .map(|c| join(&[&run.tenant, c, &run.id]))
}

/// The smallest key after `key`.
pub(super) fn after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// A run's entry in its entity's arrival order, while it is unfinished.
pub(super) fn entity_run(run: &RunRecord) -> Option<Vec<u8>> {
    let entity = run.entity.as_ref()?;
    let mut key = prefix(&[&run.tenant, &run.flow_id, &entity.kind, &entity.key]);
    key.extend_from_slice(format!("{:016x}", entity.seq).as_bytes());
    Some(key)
}

/// A topic record's key: by partition, then offset.
pub(super) fn topic_record(tenant: &str, topic: &str, partition: u32, offset: u64) -> Vec<u8> {
    let mut key = prefix(&[tenant, topic]);
    key.extend_from_slice(format!("{partition:08x}{offset:016x}").as_bytes());
    key
}

/// Every record key of one partition starts with this.
pub(super) fn topic_partition(tenant: &str, topic: &str, partition: u32) -> Vec<u8> {
    let mut key = prefix(&[tenant, topic]);
    key.extend_from_slice(format!("{partition:08x}").as_bytes());
    key
}
