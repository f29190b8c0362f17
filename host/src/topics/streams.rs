//! The `Streams` service: a stream reads one topic for one consumer, with a
//! committed checkpoint per partition that the consumer moves after it has
//! processed records, a filter on type and fields, and readers that share
//! the partitions by lease (see [`super::leases`]).
//!
//! A read starts where the reader's last batch ended when it passes that
//! batch's cursor, and at the committed checkpoint otherwise: a reader that
//! loses its connection and comes back without a cursor sees again only
//! what it had not committed. A seek (to a time, a cursor, the earliest or
//! latest record) moves the checkpoint and makes older cursors stale.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Topic, Topics, check_name, cursor::Cursor, leases::Leases};
use crate::{
    clock::now_ms,
    error::ServiceError,
    store::{Kv, KvExt, TopicRecord, Tree},
};

/// A reader's lease lasts this long unless the stream says.
pub const DEFAULT_LEASE_MS: u64 = 10_000;
/// Records per read unless the reader says, and at most.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1_000;
/// How often a long-polling reader on a store shared by several hosts
/// looks for records that another host appended.
const SHARED_RECHECK_MS: u64 = 100;

/// A stream as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    pub id: String,
    pub topic: String,
    /// Record types to deliver (empty: every type).
    #[serde(default)]
    pub types: Vec<String>,
    /// Dotted field paths of `data` and the values they must equal.
    #[serde(default)]
    pub filter: BTreeMap<String, Value>,
    /// Stream partitions: stream partition `s` reads the topic partitions
    /// `p` with `p % partitions == s`, so a key stays in one of them.
    pub partitions: u32,
    pub lease_ms: u64,
    /// Topic partition → the next offset to read (the checkpoint).
    pub committed: BTreeMap<u32, u64>,
    /// How many seeks there have been: cursors carry it.
    pub generation: u64,
    pub created_at: u64,
}

/// What `POST /v1/streams` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    pub topic: String,
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub filter: BTreeMap<String, Value>,
    /// At most the topic's; the topic's by default.
    #[serde(default)]
    pub partitions: Option<u32>,
    #[serde(default)]
    pub lease_ms: Option<u64>,
    /// `earliest` (the default) or `latest`.
    #[serde(default)]
    pub start: Option<String>,
}

/// Where a seek goes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seek {
    /// `earliest` or `latest`.
    #[serde(default)]
    pub to: Option<String>,
    /// Milliseconds since the epoch, or RFC 3339.
    #[serde(default)]
    pub time: Option<Value>,
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One read's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Batch {
    pub records: Vec<TopicRecord>,
    /// Pass it to the next read to go on, or commit it once processed.
    pub cursor: String,
    /// The stream partitions this reader holds.
    pub partitions: Vec<u32>,
    pub lease_ms: u64,
}

/// Why a read or commit was refused.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The records a cursor points at were removed by retention.
    #[error(
        "partition {partition} no longer has offset {offset}: retention removed records below {first}; seek to `earliest` to go on from the oldest kept record, or true up from GET /v1/topics/{topic}/objects"
    )]
    Gone {
        topic: String,
        partition: u32,
        offset: u64,
        first: u64,
    },
}

impl From<crate::store::StoreError> for StreamError {
    fn from(e: crate::store::StoreError) -> Self {
        StreamError::Service(e.into())
    }
}

type SharedLeases = Arc<Mutex<Leases>>;

pub struct Streams {
    kv: Arc<dyn Kv>,
    topics: Arc<Topics>,
    /// Per stream: its readers' leases. Also serialises changes of the
    /// stream's record.
    leases: Mutex<HashMap<(String, String), SharedLeases>>,
}

impl Streams {
    pub fn new(kv: Arc<dyn Kv>, topics: Arc<Topics>) -> Self {
        Streams {
            kv,
            topics,
            leases: Default::default(),
        }
    }

    pub fn create(&self, tenant: &str, spec: StreamSpec) -> Result<Stream, ServiceError> {
        let topic = self.topics.get(tenant, &spec.topic)?;
        let partitions = spec.partitions.unwrap_or(topic.partitions);
        if partitions == 0 || partitions > topic.partitions {
            return Err(ServiceError::BadRequest(format!(
                "partitions: {partitions} must be between 1 and the topic's {}",
                topic.partitions
            )));
        }
        let lease_ms = spec.lease_ms.unwrap_or(DEFAULT_LEASE_MS);
        if !(1_000..=600_000).contains(&lease_ms) {
            return Err(ServiceError::BadRequest(format!(
                "lease_ms: {lease_ms} must be between 1000 and 600000"
            )));
        }
        for path in spec.filter.keys() {
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(ServiceError::BadRequest(format!(
                    "filter: `{path}` is not a dotted field path"
                )));
            }
        }
        let heads = self.topics.heads(tenant, &topic)?;
        let committed = ends(&heads, "start", spec.start.as_deref().unwrap_or("earliest"))?;
        let stream = Stream {
            id: format!("str_{}", hex::encode(rand::random::<[u8; 12]>())),
            topic: topic.name,
            types: spec.types,
            filter: spec.filter,
            partitions,
            lease_ms,
            committed,
            generation: 0,
            created_at: now_ms(),
        };
        self.kv
            .put_json(Tree::Streams, &[tenant, &stream.id], &stream)?;
        Ok(stream)
    }

    pub fn get(&self, tenant: &str, id: &str) -> Result<Stream, ServiceError> {
        self.kv
            .get_json(Tree::Streams, &[tenant, id])?
            .ok_or_else(|| ServiceError::NotFound(format!("no stream `{id}`")))
    }

    pub fn list(&self, tenant: &str) -> Result<Vec<Stream>, ServiceError> {
        Ok(self.kv.scan_json(Tree::Streams, &[tenant])?)
    }

    pub fn delete(&self, tenant: &str, id: &str) -> Result<(), ServiceError> {
        self.get(tenant, id)?;
        self.kv.delete(Tree::Streams, &[tenant, id])?;
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(tenant.to_string(), id.to_string()));
        Ok(())
    }

    /// The streams reading a topic (a topic in use is not deleted).
    pub fn readers_of(&self, tenant: &str, topic: &str) -> Result<Vec<String>, ServiceError> {
        Ok(self
            .list(tenant)?
            .into_iter()
            .filter(|s| s.topic == topic)
            .map(|s| format!("stream {}", s.id))
            .collect())
    }

    /// A batch for `reader`: up to `limit` records of the partitions it
    /// holds, from `cursor` (or the checkpoint), waiting up to `wait` for
    /// records when there are none.
    pub async fn read(
        &self,
        tenant: &str,
        id: &str,
        reader: &str,
        cursor: Option<&str>,
        limit: usize,
        wait: Duration,
    ) -> Result<Batch, StreamError> {
        check_name("reader", reader)?;
        let limit = limit.clamp(1, MAX_LIMIT);
        let cursor = cursor
            .map(Cursor::parse)
            .transpose()
            .map_err(ServiceError::BadRequest)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let stream = self.get(tenant, id)?;
            let topic = self.topics.get(tenant, &stream.topic)?;
            let notify = self.topics.notify(tenant, &topic.name);
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let held = self
                .leases_of(tenant, &stream)
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .acquire(reader, now_ms(), stream.lease_ms);
            let batch = self.read_once(tenant, &stream, &topic, &held, cursor.as_ref(), limit)?;
            if !batch.records.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(batch);
            }
            // Wake before the lease runs out, to renew it; on a shared
            // store also to see other hosts' appends, which wake no one here.
            let mut nap_ms = stream.lease_ms / 2;
            if self.topics.shared() {
                nap_ms = nap_ms.min(SHARED_RECHECK_MS);
            }
            let nap = deadline.min(tokio::time::Instant::now() + Duration::from_millis(nap_ms));
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(nap) => {}
            }
        }
    }

    fn read_once(
        &self,
        tenant: &str,
        stream: &Stream,
        topic: &Topic,
        held: &[usize],
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<Batch, StreamError> {
        // A cursor from before the last seek is stale: start at the checkpoint.
        let cursor = cursor.filter(|c| c.generation == stream.generation);
        let heads = self.topics.heads(tenant, topic)?;
        let mut positions = BTreeMap::new();
        let mut records = Vec::new();
        for p in 0..topic.partitions {
            if !held.contains(&((p % stream.partitions) as usize)) {
                continue;
            }
            let mut next = cursor
                .and_then(|c| c.positions.get(&p).copied())
                .unwrap_or_else(|| stream.committed.get(&p).copied().unwrap_or(0));
            let head = heads[p as usize];
            if next < head.first {
                return Err(StreamError::Gone {
                    topic: topic.name.clone(),
                    partition: p,
                    offset: next,
                    first: head.first,
                });
            }
            while records.len() < limit && next < head.next {
                let slice = self.topics.read(tenant, topic, p, next, limit)?;
                let Some(last) = slice.last() else { break };
                next = last.offset + 1;
                for record in slice {
                    if records.len() >= limit {
                        next = record.offset;
                        break;
                    }
                    if matches(stream, &record) {
                        records.push(record);
                    }
                }
            }
            positions.insert(p, next);
        }
        Ok(Batch {
            records,
            cursor: Cursor {
                generation: stream.generation,
                positions,
            }
            .to_string(),
            partitions: held.iter().map(|&s| s as u32).collect(),
            lease_ms: stream.lease_ms,
        })
    }

    /// Moves the checkpoint to `cursor` for the partitions `reader` holds.
    /// A checkpoint never moves back by a commit (only by a seek).
    pub fn commit(
        &self,
        tenant: &str,
        id: &str,
        reader: &str,
        cursor: &str,
    ) -> Result<Stream, ServiceError> {
        let cursor = Cursor::parse(cursor).map_err(ServiceError::BadRequest)?;
        let stream = self.get(tenant, id)?;
        let leases = self.leases_of(tenant, &stream);
        let mut leases = leases.lock().unwrap_or_else(|e| e.into_inner());
        // Read again under the lock: a commit or seek may have just landed.
        let mut stream = self.get(tenant, id)?;
        if cursor.generation != stream.generation {
            return Err(ServiceError::State(format!(
                "the cursor is from before the stream's last seek (generation {} now {}); read again from the checkpoint",
                cursor.generation, stream.generation
            )));
        }
        let held = leases.renew(reader, now_ms(), stream.lease_ms);
        let topic = self.topics.get(tenant, &stream.topic)?;
        let heads = self.topics.heads(tenant, &topic)?;
        for (&p, &next) in &cursor.positions {
            let Some(head) = heads.get(p as usize) else {
                return Err(ServiceError::BadRequest(format!(
                    "the cursor names partition {p}; the topic has {}",
                    topic.partitions
                )));
            };
            let slot = (p % stream.partitions) as usize;
            if !held.contains(&slot) {
                return Err(ServiceError::State(format!(
                    "reader `{reader}` does not hold stream partition {slot} (its lease ended or another reader has it); read again"
                )));
            }
            if next > head.next {
                return Err(ServiceError::BadRequest(format!(
                    "the cursor's offset {next} of partition {p} is past its end {}",
                    head.next
                )));
            }
            let committed = stream.committed.entry(p).or_insert(0);
            *committed = (*committed).max(next);
        }
        self.kv.put_json(Tree::Streams, &[tenant, id], &stream)?;
        Ok(stream)
    }

    /// Moves the checkpoint of every partition (or those of a cursor).
    pub fn seek(&self, tenant: &str, id: &str, seek: Seek) -> Result<Stream, ServiceError> {
        let stream = self.get(tenant, id)?;
        let leases = self.leases_of(tenant, &stream);
        let mut leases = leases.lock().unwrap_or_else(|e| e.into_inner());
        let mut stream = self.get(tenant, id)?;
        let topic = self.topics.get(tenant, &stream.topic)?;
        let heads = self.topics.heads(tenant, &topic)?;
        let positions: BTreeMap<u32, u64> = match (&seek.to, &seek.time, &seek.cursor) {
            (Some(to), None, None) => ends(&heads, "to", to)?,
            (None, Some(time), None) => {
                let at = parse_time(time).map_err(ServiceError::BadRequest)?;
                (0..topic.partitions)
                    .map(|p| Ok((p, self.topics.offset_at(tenant, &topic, p, at)?)))
                    .collect::<Result<_, ServiceError>>()?
            }
            (None, None, Some(cursor)) => {
                let cursor = Cursor::parse(cursor).map_err(ServiceError::BadRequest)?;
                for (&p, &next) in &cursor.positions {
                    let head = heads.get(p as usize).ok_or_else(|| {
                        ServiceError::BadRequest(format!(
                            "the cursor names partition {p}; the topic has {}",
                            topic.partitions
                        ))
                    })?;
                    if next > head.next {
                        return Err(ServiceError::BadRequest(format!(
                            "the cursor's offset {next} of partition {p} is past its end {}",
                            head.next
                        )));
                    }
                }
                cursor.positions
            }
            _ => {
                return Err(ServiceError::BadRequest(
                    "say exactly one of `to` (earliest or latest), `time` or `cursor`".into(),
                ));
            }
        };
        stream.committed.extend(positions);
        stream.generation += 1;
        self.kv.put_json(Tree::Streams, &[tenant, id], &stream)?;
        leases.release_all();
        Ok(stream)
    }

    /// Per partition: the checkpoint, the end, the lag, and who reads it.
    pub fn stats(&self, tenant: &str, id: &str) -> Result<Value, ServiceError> {
        let stream = self.get(tenant, id)?;
        let topic = self.topics.get(tenant, &stream.topic)?;
        let heads = self.topics.heads(tenant, &topic)?;
        let now = now_ms();
        let leases = self
            .leases_of(tenant, &stream)
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let partitions: Vec<Value> = heads
            .iter()
            .enumerate()
            .map(|(p, head)| {
                let committed = stream.committed.get(&(p as u32)).copied().unwrap_or(0);
                let slot = p % stream.partitions as usize;
                let holder = leases.holders[slot].as_ref().filter(|l| l.until >= now);
                serde_json::json!({
                    "partition": p,
                    "stream_partition": slot,
                    "committed": committed,
                    "first": head.first,
                    "end": head.next,
                    "lag": head.next.saturating_sub(committed.max(head.first)),
                    "reader": holder.map(|l| l.reader.clone()),
                    "lease_left_ms": holder.map(|l| l.until - now),
                })
            })
            .collect();
        let total: u64 = partitions
            .iter()
            .map(|p| p["lag"].as_u64().unwrap_or(0))
            .sum();
        Ok(serde_json::json!({
            "stream": stream.id,
            "topic": stream.topic,
            "lag": total,
            "readers": leases.seen.keys().collect::<Vec<_>>(),
            "partitions": partitions,
        }))
    }

    fn leases_of(&self, tenant: &str, stream: &Stream) -> Arc<Mutex<Leases>> {
        self.leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((tenant.to_string(), stream.id.clone()))
            .or_insert_with(|| Arc::new(Mutex::new(Leases::new(stream.partitions as usize))))
            .clone()
    }
}

/// Every partition at its oldest kept record (`earliest`) or after its
/// newest (`latest`); `field` names the request's field in the error.
fn ends(
    heads: &[crate::store::PartitionHead],
    field: &str,
    which: &str,
) -> Result<BTreeMap<u32, u64>, ServiceError> {
    let end = |h: &crate::store::PartitionHead| match which {
        "earliest" => Some(h.first),
        "latest" => Some(h.next),
        _ => None,
    };
    heads
        .iter()
        .enumerate()
        .map(|(p, h)| end(h).map(|offset| (p as u32, offset)))
        .collect::<Option<_>>()
        .ok_or_else(|| {
            ServiceError::BadRequest(format!(
                "{field}: `{which}` is neither `earliest` nor `latest`"
            ))
        })
}

/// Whether a record passes a stream's type and field filter.
pub fn matches(stream: &Stream, record: &TopicRecord) -> bool {
    if !stream.types.is_empty() && !stream.types.contains(&record.kind) {
        return false;
    }
    stream.filter.iter().all(|(path, expected)| {
        path.split('.')
            .try_fold(&record.data, |value, part| value.get(part))
            == Some(expected)
    })
}

/// Milliseconds since the epoch, from a number or RFC 3339 text.
pub fn parse_time(value: &Value) -> Result<u64, String> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("time: {n} is not milliseconds since the epoch")),
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp_millis().max(0) as u64)
            .map_err(|e| format!("time: `{text}` is not RFC 3339: {e}")),
        other => Err(format!(
            "time: {other} is neither a number nor RFC 3339 text"
        )),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn stream(types: &[&str], filter: Value) -> Stream {
        Stream {
            id: "s".into(),
            topic: "t".into(),
            types: types.iter().map(|t| t.to_string()).collect(),
            filter: serde_json::from_value(filter).unwrap(),
            partitions: 1,
            lease_ms: 1_000,
            committed: BTreeMap::new(),
            generation: 0,
            created_at: 0,
        }
    }

    fn record(kind: &str, data: Value) -> TopicRecord {
        TopicRecord {
            partition: 0,
            offset: 0,
            key: "k".into(),
            kind: kind.into(),
            time: 0,
            data,
            idempotency: None,
        }
    }

    #[test]
    fn filters_by_type_and_nested_fields() {
        let cases = [
            (stream(&[], json!({})), record("order", json!({})), true),
            (
                stream(&["order"], json!({})),
                record("order", json!({})),
                true,
            ),
            (
                stream(&["shipment"], json!({})),
                record("order", json!({})),
                false,
            ),
            (
                stream(&[], json!({"status": "paid"})),
                record("order", json!({"status": "paid"})),
                true,
            ),
            (
                stream(&[], json!({"address.country": "IN"})),
                record("order", json!({"address": {"country": "IN"}})),
                true,
            ),
            (
                stream(&[], json!({"address.country": "IN"})),
                record("order", json!({"address": {"country": "DE"}})),
                false,
            ),
            (
                stream(&[], json!({"status": "paid"})),
                record("order", Value::Null),
                false,
            ),
        ];
        for (stream, record, expected) in cases {
            assert_eq!(matches(&stream, &record), expected, "{stream:?} {record:?}");
        }
    }

    #[test]
    fn times_are_numbers_or_rfc3339() {
        assert_eq!(
            parse_time(&json!(1_700_000_000_000u64)),
            Ok(1_700_000_000_000)
        );
        assert_eq!(
            parse_time(&json!("2023-11-14T22:13:20Z")),
            Ok(1_700_000_000_000)
        );
        assert!(
            parse_time(&json!("yesterday"))
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(parse_time(&json!(-1)).is_err());
    }
}
