//! Topics: per-tenant append-only logs of change records, cut into
//! partitions by key, with the current state per key beside them (the
//! compacted view) and the publishers' idempotency keys. The log is the one
//! store the streams and batched webhooks read; its metadata (topics,
//! streams, subscriptions, batches) lives in [`super::Kv`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{BoxFuture, Result};

/// One change record. `data` null is a tombstone: the key was deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub partition: u32,
    /// Position in its partition, from 0, never reused.
    pub offset: u64,
    pub key: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Milliseconds since the epoch; never below the partition's previous
    /// record's, so a partition is ordered by time too.
    pub time: u64,
    pub data: Value,
    /// The publisher's idempotency key: publishing it again is a no-op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<String>,
}

impl TopicRecord {
    pub fn is_tombstone(&self) -> bool {
        self.data.is_null()
    }
}

/// Where a partition stands: its oldest kept offset and the next to write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionHead {
    pub first: u64,
    pub next: u64,
    /// The newest record's time (0 when empty).
    #[serde(default)]
    pub last_time: u64,
}

pub trait TopicStore: Send + Sync + 'static {
    /// Writes records (offsets already assigned, contiguous per partition
    /// after its head), each as its key's current state, with the heads and
    /// idempotency keys, in one batch; resolves once durable.
    fn append<'a>(
        &'a self,
        tenant: &'a str,
        topic: &'a str,
        records: &'a [TopicRecord],
    ) -> BoxFuture<'a, Result<()>>;

    fn head(&self, tenant: &str, topic: &str, partition: u32) -> Result<PartitionHead>;

    /// Whether other hosts append to this store as well (PostgreSQL).
    /// Then the stored head is the truth and a host's cached head only a
    /// guess: an append at a taken offset is refused with
    /// [`StoreError::Conflict`](super::StoreError::Conflict), and every
    /// append is durable (and readable) once it returns.
    fn shared(&self) -> bool {
        false
    }

    /// Up to `limit` records of a partition from offset `from`, in order.
    fn read(
        &self,
        tenant: &str,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<TopicRecord>>;

    /// Where a publisher's idempotency key landed: `(partition, offset)`.
    fn published(&self, tenant: &str, topic: &str, idempotency: &str)
    -> Result<Option<(u32, u64)>>;

    /// The current state of one key (a tombstone when it was deleted).
    fn object(&self, tenant: &str, topic: &str, key: &str) -> Result<Option<TopicRecord>>;

    /// Current states in key order after `after`, up to `limit`.
    fn objects(
        &self,
        tenant: &str,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TopicRecord>>;

    /// Drops a partition's records below `below` (and their idempotency
    /// keys) and moves its head's `first` there; the compacted view keeps
    /// every key, but forgets tombstones older than `tombstones_before`.
    fn truncate(
        &self,
        tenant: &str,
        topic: &str,
        partition: u32,
        below: u64,
        tombstones_before: u64,
    ) -> Result<()>;

    /// Forgets a deleted topic: records, heads, states and keys.
    fn drop_topic(&self, tenant: &str, topic: &str) -> Result<()>;
}
