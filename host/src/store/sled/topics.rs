//! [`TopicStore`] on sled: records keyed by partition and offset (so a
//! partition is one range), heads per partition, the compacted view by key,
//! and idempotency keys; an append is one batch made durable by the group
//! commit.

use super::{Op, SledStore, keys, keys::*};
use crate::store::{
    BoxFuture, PartitionHead, Result, StoreError, TopicRecord, TopicStore, decode, encode,
};

impl TopicStore for SledStore {
    fn append<'a>(
        &'a self,
        tenant: &'a str,
        topic: &'a str,
        records: &'a [TopicRecord],
    ) -> BoxFuture<'a, Result<()>> {
        let mut ops = Vec::with_capacity(records.len() * 3 + 1);
        let mut heads: std::collections::BTreeMap<u32, PartitionHead> = Default::default();
        let written = (|| {
            for record in records {
                let head = match heads.get(&record.partition) {
                    Some(head) => *head,
                    None => self.head(tenant, topic, record.partition)?,
                };
                let value = encode(record);
                ops.push(Op::put(
                    TOPIC_RECORDS,
                    keys::topic_record(tenant, topic, record.partition, record.offset),
                    value.clone(),
                ));
                ops.push(Op::put(
                    TOPIC_OBJECTS,
                    keys::join(&[tenant, topic, &record.key]),
                    value,
                ));
                if let Some(idempotency) = &record.idempotency {
                    ops.push(Op::put(
                        TOPIC_IDEMPOTENCY,
                        keys::join(&[tenant, topic, idempotency]),
                        format!("{}:{}", record.partition, record.offset).into_bytes(),
                    ));
                }
                heads.insert(
                    record.partition,
                    PartitionHead {
                        first: head.first,
                        next: record.offset + 1,
                        last_time: record.time,
                    },
                );
            }
            for (partition, head) in &heads {
                ops.push(Op::put_json(
                    TOPIC_HEADS,
                    head_key(tenant, topic, *partition),
                    head,
                ));
            }
            self.apply(std::mem::take(&mut ops))
        })();
        Box::pin(async move {
            written?;
            self.commit.durable().await.map_err(StoreError::Backend)
        })
    }

    fn head(&self, tenant: &str, topic: &str, partition: u32) -> Result<PartitionHead> {
        Ok(self
            .get(TOPIC_HEADS, &head_key(tenant, topic, partition))?
            .map(|bytes| decode(TOPIC_HEADS, &bytes))
            .transpose()?
            .unwrap_or_default())
    }

    fn read(
        &self,
        tenant: &str,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<TopicRecord>> {
        let prefix = keys::topic_partition(tenant, topic, partition);
        let start = keys::topic_record(tenant, topic, partition, from);
        self.scan_from(TOPIC_RECORDS, &prefix, &start, limit)?
            .into_iter()
            .map(|(_, value)| decode(TOPIC_RECORDS, &value))
            .collect()
    }

    fn published(
        &self,
        tenant: &str,
        topic: &str,
        idempotency: &str,
    ) -> Result<Option<(u32, u64)>> {
        let Some(bytes) = self.get(
            TOPIC_IDEMPOTENCY,
            &keys::join(&[tenant, topic, idempotency]),
        )?
        else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&bytes);
        let parsed = text
            .split_once(':')
            .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)));
        match parsed {
            Some(place) => Ok(Some(place)),
            None => Err(StoreError::Corrupt {
                place: TOPIC_IDEMPOTENCY.into(),
                message: format!("`{text}` is not partition:offset"),
            }),
        }
    }

    fn object(&self, tenant: &str, topic: &str, key: &str) -> Result<Option<TopicRecord>> {
        self.get(TOPIC_OBJECTS, &keys::join(&[tenant, topic, key]))?
            .map(|bytes| decode(TOPIC_OBJECTS, &bytes))
            .transpose()
    }

    fn objects(
        &self,
        tenant: &str,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TopicRecord>> {
        let prefix = keys::prefix(&[tenant, topic]);
        let from = after
            .map(|key| keys::after(&keys::join(&[tenant, topic, key])))
            .unwrap_or_default();
        self.scan_from(TOPIC_OBJECTS, &prefix, &from, limit)?
            .into_iter()
            .map(|(_, value)| decode(TOPIC_OBJECTS, &value))
            .collect()
    }

    fn truncate(
        &self,
        tenant: &str,
        topic: &str,
        partition: u32,
        below: u64,
        tombstones_before: u64,
    ) -> Result<()> {
        let mut head = self.head(tenant, topic, partition)?;
        let below = below.min(head.next);
        if below <= head.first {
            return Ok(());
        }
        let prefix = keys::topic_partition(tenant, topic, partition);
        let start = keys::topic_record(tenant, topic, partition, head.first);
        // In slices, so a long backlog is not one huge batch.
        let mut from = start;
        loop {
            let slice = self.scan_from(TOPIC_RECORDS, &prefix, &from, 512)?;
            let mut ops = Vec::new();
            let mut done = slice.len() < 512;
            for (key, value) in &slice {
                let record: TopicRecord = decode(TOPIC_RECORDS, value)?;
                if record.offset >= below {
                    done = true;
                    break;
                }
                ops.push(Op::delete(TOPIC_RECORDS, key.clone()));
                if let Some(idempotency) = &record.idempotency {
                    ops.push(Op::delete(
                        TOPIC_IDEMPOTENCY,
                        keys::join(&[tenant, topic, idempotency]),
                    ));
                }
                if record.is_tombstone() && record.time < tombstones_before {
                    let object = keys::join(&[tenant, topic, &record.key]);
                    let current: Option<TopicRecord> = self
                        .get(TOPIC_OBJECTS, &object)?
                        .map(|bytes| decode(TOPIC_OBJECTS, &bytes))
                        .transpose()?;
                    if current
                        .is_some_and(|c| c.partition == partition && c.offset == record.offset)
                    {
                        ops.push(Op::delete(TOPIC_OBJECTS, object));
                    }
                }
            }
            if let Some((last, _)) = slice.last() {
                from = keys::after(last);
            }
            self.apply(ops)?;
            if done {
                break;
            }
        }
        head.first = below;
        self.apply(vec![Op::put_json(
            TOPIC_HEADS,
            head_key(tenant, topic, partition),
            &head,
        )])
    }

    fn drop_topic(&self, tenant: &str, topic: &str) -> Result<()> {
        let prefix = keys::prefix(&[tenant, topic]);
        for tree in [TOPIC_RECORDS, TOPIC_HEADS, TOPIC_OBJECTS, TOPIC_IDEMPOTENCY] {
            loop {
                let slice = self.scan_from(tree, &prefix, &prefix, 1024)?;
                if slice.is_empty() {
                    break;
                }
                self.apply(
                    slice
                        .into_iter()
                        .map(|(k, _)| Op::delete(tree, k))
                        .collect(),
                )?;
            }
        }
        Ok(())
    }
}

fn head_key(tenant: &str, topic: &str, partition: u32) -> Vec<u8> {
    keys::join(&[tenant, topic, &format!("{partition:08x}")])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn record(partition: u32, offset: u64, key: &str, data: serde_json::Value) -> TopicRecord {
        TopicRecord {
            partition,
            offset,
            key: key.into(),
            kind: "order".into(),
            time: 1_000 + offset,
            data,
            idempotency: Some(format!("run:{partition}:{offset}")),
        }
    }

    #[tokio::test]
    async fn appends_read_back_by_partition_and_truncate_from_the_front() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let batch = [
            record(0, 0, "a", json!({"n": 1})),
            record(1, 0, "b", json!({"n": 1})),
            record(0, 1, "a", json!({"n": 2})),
            record(0, 2, "c", serde_json::Value::Null),
        ];
        store.append("t", "orders", &batch).await.unwrap();
        let head = store.head("t", "orders", 0).unwrap();
        assert_eq!((head.first, head.next, head.last_time), (0, 3, 1_002));
        let read = store.read("t", "orders", 0, 1, 10).unwrap();
        assert_eq!(read, &batch[2..]);
        // Another topic with a name that extends this one's is not read.
        store
            .append("t", "orders2", &[record(0, 0, "z", json!(1))])
            .await
            .unwrap();
        assert_eq!(store.read("t", "orders", 0, 0, 10).unwrap().len(), 3);
        assert_eq!(
            store.object("t", "orders", "a").unwrap().unwrap().data,
            json!({"n": 2})
        );
        let keys: Vec<String> = store
            .objects("t", "orders", Some("a"), 10)
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(
            store.published("t", "orders", "run:0:1").unwrap(),
            Some((0, 1))
        );

        store.truncate("t", "orders", 0, 3, u64::MAX).unwrap();
        assert!(store.read("t", "orders", 0, 0, 10).unwrap().is_empty());
        assert_eq!(store.head("t", "orders", 0).unwrap().first, 3);
        assert_eq!(store.published("t", "orders", "run:0:1").unwrap(), None);
        // The current state stays; the old tombstone goes.
        assert!(store.object("t", "orders", "a").unwrap().is_some());
        assert!(store.object("t", "orders", "c").unwrap().is_none());

        store.drop_topic("t", "orders").unwrap();
        assert!(store.object("t", "orders", "b").unwrap().is_none());
        assert_eq!(store.read("t", "orders2", 0, 0, 10).unwrap().len(), 1);
    }
}
