//! The `Topics` service: per-tenant, named, append-only logs of change
//! records `{partition, offset, key, type, time, data}` that flows publish
//! (the `publish` step) and partners consume, with the current state per
//! key beside them. Records of one key go to one partition, so their order
//! holds for every reader. Retention drops records by age and by count;
//! the current state per key stays (deletes are tombstones, forgotten
//! after the retention).
//!
//! Readers see a record only once it is durable: offsets are assigned
//! under a per-topic lock and written at once, but the partition's
//! readable end moves only when the group commit has flushed them, so no
//! reader can act on (and commit past) a record a crash would take back.
//!
//! On a store shared by several hosts (PostgreSQL) the store assigns
//! nothing but refuses an offset that is taken: a host whose cached heads
//! fell behind another's appends loads them again and retries. A host
//! commits one append of a topic at a time, so offsets are committed in
//! order (a second host's append of a taken offset waits for the first
//! one's commit, then is refused), and readers take the stored end, which
//! every host's commits move.
//!
//! [`streams`] reads topics with checkpoints and partition leases;
//! [`webhooks`] sends batched, signed webhooks of their changes.

pub mod cursor;
pub mod leases;
pub mod schedule;
pub mod signature;
pub mod streams;
pub mod webhooks;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::{
    clock::now_ms,
    error::ServiceError,
    store::{Kv, KvExt, PartitionHead, StoreError, TopicRecord, TopicStore, Tree, Write},
    tasks::Tasks,
};

/// Partitions of a topic made without saying.
pub const DEFAULT_PARTITIONS: u32 = 4;
/// At most this many partitions per topic.
pub const MAX_PARTITIONS: u32 = 256;
/// Records are kept a week unless the topic says.
pub const DEFAULT_RETENTION_HOURS: u64 = 168;
/// Get-object requests per second per token, unless the tenant's setting says.
pub const DEFAULT_OBJECT_RATE: u32 = 10;

/// A topic's settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    pub name: String,
    pub partitions: u32,
    pub retention_hours: u64,
    /// Records kept per partition at most (0: no limit).
    #[serde(default)]
    pub max_records: u64,
    pub created_at: u64,
}

/// What `POST /v1/topics` takes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    pub name: String,
    #[serde(default)]
    pub partitions: Option<u32>,
    #[serde(default)]
    pub retention_hours: Option<u64>,
    #[serde(default)]
    pub max_records: Option<u64>,
}

/// One record to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRecord {
    pub key: String,
    pub kind: String,
    /// Null: the key was deleted (a tombstone).
    pub data: Value,
    /// Publishing the same key again returns the first record.
    pub idempotency: Option<String>,
}

/// A tenant's settings of the topics' API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicLimits {
    /// Get-object requests per second per token.
    pub object_rate: u32,
}

impl Default for TopicLimits {
    fn default() -> Self {
        TopicLimits {
            object_rate: DEFAULT_OBJECT_RATE,
        }
    }
}

/// Where one partition stands in memory: the next offset to assign and the
/// readable end (what is durable).
#[derive(Debug, Clone, Copy, Default)]
struct Cached {
    next: u64,
    durable: u64,
    last_time: u64,
}

type TopicKey = (String, String);

/// How often one publish assigns offsets again after another host took
/// them, before its publisher gets the conflict (with two hosts racing,
/// each attempt wins about half the time).
const APPEND_ATTEMPTS: u32 = 64;

pub struct Topics {
    kv: Arc<dyn Kv>,
    store: Arc<dyn TopicStore>,
    tasks: Arc<Tasks>,
    /// Per topic: each partition's next and durable offsets, loaded on
    /// first use. The lock is held while offsets are assigned and written.
    heads: Mutex<HashMap<TopicKey, Arc<Mutex<Vec<Cached>>>>>,
    /// Per topic: woken when records become readable.
    changed: Mutex<HashMap<TopicKey, Arc<Notify>>>,
    /// Per topic, on a shared store only: held from assigning offsets to
    /// their commit, so that this host never commits a later offset before
    /// an earlier one (a reader taking the stored end would skip the gap).
    gates: Mutex<HashMap<TopicKey, Arc<tokio::sync::Mutex<()>>>>,
}

impl Topics {
    pub fn new(kv: Arc<dyn Kv>, store: Arc<dyn TopicStore>, tasks: Arc<Tasks>) -> Self {
        Topics {
            kv,
            store,
            tasks,
            heads: Default::default(),
            changed: Default::default(),
            gates: Default::default(),
        }
    }

    /// Starts retention; it stops with the tasks.
    pub fn start(self: &Arc<Self>) {
        let topics = self.clone();
        self.tasks.spawn(async move {
            let mut shutdown = topics.tasks.shutdown_signal();
            loop {
                if let Err(e) = topics.apply_retention(now_ms()) {
                    tracing::error!("topic retention: {e}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        });
    }

    pub fn create(&self, tenant: &str, spec: TopicSpec) -> Result<Topic, ServiceError> {
        check_name("topic", &spec.name)?;
        let partitions = spec.partitions.unwrap_or(DEFAULT_PARTITIONS);
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(ServiceError::BadRequest(format!(
                "partitions: {partitions} is not between 1 and {MAX_PARTITIONS}"
            )));
        }
        let retention_hours = spec.retention_hours.unwrap_or(DEFAULT_RETENTION_HOURS);
        if retention_hours == 0 {
            return Err(ServiceError::BadRequest(
                "retention_hours: must be at least 1".into(),
            ));
        }
        if self
            .kv
            .get_json::<Topic>(Tree::Topics, &[tenant, &spec.name])?
            .is_some()
        {
            return Err(ServiceError::State(format!(
                "topic `{}` already exists",
                spec.name
            )));
        }
        let topic = Topic {
            name: spec.name,
            partitions,
            retention_hours,
            max_records: spec.max_records.unwrap_or(0),
            created_at: now_ms(),
        };
        self.kv
            .put_json(Tree::Topics, &[tenant, &topic.name], &topic)?;
        Ok(topic)
    }

    pub fn get(&self, tenant: &str, name: &str) -> Result<Topic, ServiceError> {
        self.kv
            .get_json(Tree::Topics, &[tenant, name])?
            .ok_or_else(|| ServiceError::NotFound(format!("no topic `{name}`")))
    }

    pub fn list(&self, tenant: &str) -> Result<Vec<Topic>, ServiceError> {
        Ok(self.kv.scan_json(Tree::Topics, &[tenant])?)
    }

    /// Deletes a topic and its records. `users` are the streams and
    /// subscriptions that read it: a topic in use is refused with them.
    pub fn delete(&self, tenant: &str, name: &str, users: &[String]) -> Result<(), ServiceError> {
        self.get(tenant, name)?;
        if !users.is_empty() {
            return Err(ServiceError::State(format!(
                "topic `{name}` is read by {}; delete those first",
                users.join(", ")
            )));
        }
        self.kv
            .write(vec![Write::delete(Tree::Topics, &[tenant, name])])?;
        self.store.drop_topic(tenant, name)?;
        self.forget_heads(tenant, name);
        Ok(())
    }

    /// Appends records, creating the topic with the defaults when it does
    /// not exist; resolves once they are durable. A record whose
    /// idempotency key was published before comes back as first written.
    pub async fn publish(
        &self,
        tenant: &str,
        topic: &str,
        records: Vec<NewRecord>,
    ) -> Result<Vec<TopicRecord>, ServiceError> {
        let meta = match self.get(tenant, topic) {
            Ok(meta) => meta,
            Err(ServiceError::NotFound(_)) => match self.create(
                tenant,
                TopicSpec {
                    name: topic.to_string(),
                    ..Default::default()
                },
            ) {
                Ok(meta) => meta,
                // Made meanwhile by another publisher.
                Err(ServiceError::State(_)) => self.get(tenant, topic)?,
                Err(e) => return Err(e),
            },
            Err(e) => return Err(e),
        };
        for (i, record) in records.iter().enumerate() {
            check_key(&record.key)
                .map_err(|e| ServiceError::BadRequest(format!("records[{i}].key: {e}")))?;
            if record.kind.is_empty() {
                return Err(ServiceError::BadRequest(format!(
                    "records[{i}].type: must not be empty"
                )));
            }
        }
        let gate = self.store.shared().then(|| {
            self.gates
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry((tenant.to_string(), topic.to_string()))
                .or_default()
                .clone()
        });
        let _held = match &gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        };
        let mut attempt = 0;
        loop {
            match self.append(tenant, &meta, &records).await {
                // Another host appended at the offsets this host's cache
                // gave out: load the heads again and assign new ones.
                Err(StoreError::Conflict(e))
                    if self.store.shared() && attempt < APPEND_ATTEMPTS =>
                {
                    tracing::debug!(topic, "offsets taken by another host, assigning again: {e}");
                    self.forget_heads(tenant, topic);
                    attempt += 1;
                    // Both hosts' next appends now start from the same
                    // head: a random pause lets one of them go first.
                    let pause = rand::rng().random_range(0..=attempt.min(10));
                    tokio::time::sleep(Duration::from_millis(pause.into())).await;
                }
                result => return Ok(result?),
            }
        }
    }

    /// Assigns offsets from the cached heads and writes the records;
    /// resolves once they are durable and readable.
    async fn append(
        &self,
        tenant: &str,
        meta: &Topic,
        records: &[NewRecord],
    ) -> Result<Vec<TopicRecord>, StoreError> {
        let topic = meta.name.as_str();
        let heads = self.heads_of(tenant, meta)?;
        let mut out = Vec::with_capacity(records.len());
        let mut fresh = Vec::new();
        let written = {
            let mut heads = heads.lock().unwrap_or_else(|e| e.into_inner());
            for record in records {
                if let Some(key) = &record.idempotency
                    && let Some(done) = self.already(tenant, topic, key, &fresh)?
                {
                    out.push(done);
                    continue;
                }
                let partition = partition_of(&record.key, meta.partitions);
                let head = &mut heads[partition as usize];
                let time = now_ms().max(head.last_time);
                let written = TopicRecord {
                    partition,
                    offset: head.next,
                    key: record.key.clone(),
                    kind: record.kind.clone(),
                    time,
                    data: record.data.clone(),
                    idempotency: record.idempotency.clone(),
                };
                head.next += 1;
                head.last_time = time;
                out.push(written.clone());
                fresh.push(written);
            }
            // The write happens here, under the lock, so offsets land in
            // order; durability is awaited outside it.
            self.store.append(tenant, topic, &fresh)
        };
        written.await?;
        let mut ends: BTreeMap<u32, u64> = BTreeMap::new();
        for record in &fresh {
            ends.insert(record.partition, record.offset + 1);
        }
        {
            let mut heads = heads.lock().unwrap_or_else(|e| e.into_inner());
            for (partition, end) in ends {
                let head = &mut heads[partition as usize];
                head.durable = head.durable.max(end);
            }
        }
        if !fresh.is_empty() {
            self.notify(tenant, topic).notify_waiters();
        }
        Ok(out)
    }

    /// Whether other hosts publish to the same topics (a shared store):
    /// then a reader waiting for records looks again now and then, since
    /// only this host's appends wake it.
    pub fn shared(&self) -> bool {
        self.store.shared()
    }

    /// Drops a topic's cached heads: the next use loads them from the store.
    fn forget_heads(&self, tenant: &str, topic: &str) {
        self.heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(tenant.to_string(), topic.to_string()));
    }

    fn already(
        &self,
        tenant: &str,
        topic: &str,
        key: &str,
        pending: &[TopicRecord],
    ) -> Result<Option<TopicRecord>, StoreError> {
        if let Some(record) = pending
            .iter()
            .find(|r| r.idempotency.as_deref() == Some(key))
        {
            return Ok(Some(record.clone()));
        }
        let Some((partition, offset)) = self.store.published(tenant, topic, key)? else {
            return Ok(None);
        };
        Ok(self
            .store
            .read(tenant, topic, partition, offset, 1)?
            .into_iter()
            .find(|r| r.offset == offset))
    }

    /// Each partition's first kept offset and readable end.
    pub fn heads(&self, tenant: &str, topic: &Topic) -> Result<Vec<PartitionHead>, ServiceError> {
        let cached = self.heads_of(tenant, topic)?;
        let cached = cached.lock().unwrap_or_else(|e| e.into_inner()).clone();
        cached
            .iter()
            .enumerate()
            .map(|(p, c)| {
                let stored = self.store.head(tenant, &topic.name, p as u32)?;
                Ok(if self.store.shared() {
                    // Other hosts append too: the store knows the end.
                    PartitionHead {
                        next: stored.next.max(c.durable),
                        last_time: stored.last_time.max(c.last_time),
                        ..stored
                    }
                } else {
                    PartitionHead {
                        first: stored.first,
                        next: c.durable,
                        last_time: c.last_time,
                    }
                })
            })
            .collect()
    }

    /// Up to `limit` readable records of one partition from `from`.
    pub fn read(
        &self,
        tenant: &str,
        topic: &Topic,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<TopicRecord>, ServiceError> {
        let cached = {
            let heads = self.heads_of(tenant, topic)?;
            let heads = heads.lock().unwrap_or_else(|e| e.into_inner());
            heads
                .get(partition as usize)
                .map(|c| c.durable)
                .ok_or_else(|| ServiceError::BadRequest(format!("no partition {partition}")))?
        };
        let end = if self.store.shared() {
            // What other hosts appended is readable too.
            cached.max(self.store.head(tenant, &topic.name, partition)?.next)
        } else {
            cached
        };
        if from >= end {
            return Ok(Vec::new());
        }
        let limit = limit.min((end - from) as usize);
        Ok(self
            .store
            .read(tenant, &topic.name, partition, from, limit)?)
    }

    /// The first offset of a partition whose record is not older than
    /// `time` (the end when there is none).
    pub fn offset_at(
        &self,
        tenant: &str,
        topic: &Topic,
        partition: u32,
        time: u64,
    ) -> Result<u64, ServiceError> {
        let head = self.heads(tenant, topic)?[partition as usize];
        // Times never go down within a partition: search by offset.
        let (mut low, mut high) = (head.first, head.next);
        while low < high {
            let mid = low + (high - low) / 2;
            match self
                .store
                .read(tenant, &topic.name, partition, mid, 1)?
                .first()
            {
                Some(record) if record.time < time => low = record.offset + 1,
                Some(_) => high = mid,
                None => low = high,
            }
        }
        Ok(low)
    }

    /// The current state of one key (a tombstone when it was deleted).
    pub fn object(
        &self,
        tenant: &str,
        topic: &str,
        key: &str,
    ) -> Result<Option<TopicRecord>, ServiceError> {
        self.get(tenant, topic)?;
        Ok(self.store.object(tenant, topic, key)?)
    }

    /// Current states in key order after `after` (tombstones included).
    pub fn objects(
        &self,
        tenant: &str,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TopicRecord>, ServiceError> {
        self.get(tenant, topic)?;
        Ok(self.store.objects(tenant, topic, after, limit)?)
    }

    /// Woken when records of the topic become readable. Take it (and
    /// `enable` it) before looking, so a record in between is not missed.
    pub fn notify(&self, tenant: &str, topic: &str) -> Arc<Notify> {
        self.changed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((tenant.to_string(), topic.to_string()))
            .or_default()
            .clone()
    }

    pub fn limits(&self, tenant: &str) -> Result<TopicLimits, ServiceError> {
        Ok(self
            .kv
            .get_json(Tree::TopicLimits, &[tenant])?
            .unwrap_or_default())
    }

    pub fn set_limits(&self, tenant: &str, limits: TopicLimits) -> Result<(), ServiceError> {
        if limits.object_rate == 0 {
            return Err(ServiceError::BadRequest(
                "object_rate: must be at least 1 request per second".into(),
            ));
        }
        Ok(self.kv.put_json(Tree::TopicLimits, &[tenant], &limits)?)
    }

    /// Drops records past each topic's age and count limits.
    pub fn apply_retention(&self, now: u64) -> Result<(), ServiceError> {
        for (key, _) in self.kv.scan(Tree::Topics, &[])? {
            let [tenant, name] = key.as_slice() else {
                continue;
            };
            let Ok(topic) = self.get(tenant, name) else {
                continue;
            };
            {
                let tenant = tenant.as_str();
                let cutoff = now.saturating_sub(topic.retention_hours * 3_600_000);
                for (p, head) in self.heads(tenant, &topic)?.into_iter().enumerate() {
                    let p = p as u32;
                    let mut below = self.offset_at(tenant, &topic, p, cutoff)?;
                    if topic.max_records > 0 {
                        below = below.max(head.next.saturating_sub(topic.max_records));
                    }
                    if below > head.first {
                        self.store.truncate(tenant, &topic.name, p, below, cutoff)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn heads_of(&self, tenant: &str, topic: &Topic) -> Result<Arc<Mutex<Vec<Cached>>>, StoreError> {
        let key = (tenant.to_string(), topic.name.clone());
        if let Some(heads) = self
            .heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(heads.clone());
        }
        let loaded = (0..topic.partitions)
            .map(|p| {
                let head = self.store.head(tenant, &topic.name, p)?;
                Ok(Cached {
                    next: head.next,
                    durable: head.next,
                    last_time: head.last_time,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(self
            .heads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key)
            .or_insert_with(|| Arc::new(Mutex::new(loaded)))
            .clone())
    }
}

/// The partition of a key: a stable hash, so a key's records stay in one
/// partition across restarts and hosts.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    let digest = Sha256::digest(key.as_bytes());
    let n = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    n % partitions.max(1)
}

/// Names of topics, streams and subscriptions: what fits in a URL path.
pub fn check_name(what: &str, name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ServiceError::BadRequest(format!(
            "{what} name `{name}`: use 1 to 100 letters, digits, `-`, `_` or `.`"
        )))
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("must not be empty".into());
    }
    if key.len() > 512 {
        return Err(format!("{} bytes is over the 512 byte limit", key.len()));
    }
    crate::store::check_key_part(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_keeps_its_partition_and_keys_spread() {
        assert_eq!(partition_of("order-1", 4), partition_of("order-1", 4));
        let mut seen = [0u32; 4];
        for n in 0..1000 {
            seen[partition_of(&format!("order-{n}"), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
        assert_eq!(partition_of("anything", 1), 0);
    }

    #[test]
    fn names_and_keys_are_checked() {
        for (name, ok) in [
            ("orders", true),
            ("orders.v2-eu_1", true),
            ("", false),
            ("a/b", false),
            ("a b", false),
            (&"x".repeat(101), false),
        ] {
            assert_eq!(check_name("topic", name).is_ok(), ok, "{name}");
        }
        assert!(check_key("SKU-1").is_ok());
        assert!(check_key("").is_err());
        assert!(check_key("a\0b").is_err());
    }
}
