//! [`TopicStore`] on PostgreSQL: records are rows keyed by partition and
//! offset (a partition is one index range), heads a row per partition, the
//! compacted view a row per key, publishers' idempotency keys a row each.
//! An append is one transaction; a second host appending the same offsets
//! of a partition at the same time is refused by the records' primary key
//! (nothing is overwritten): the topics service reloads the head and
//! assigns the offsets again.

use super::{
    PgStore,
    batch::{Batch, params},
    ms, pg, unms,
};
use crate::store::{
    BoxFuture, PartitionHead, Result, StoreError, TopicRecord, TopicStore, decode, encode,
};

/// Rows deleted per statement when a partition is truncated.
const TRUNCATE_BATCH: i64 = 512;

fn part(partition: u32) -> i32 {
    partition as i32
}

impl TopicStore for PgStore {
    fn append<'a>(
        &'a self,
        tenant: &'a str,
        topic: &'a str,
        records: &'a [TopicRecord],
    ) -> BoxFuture<'a, Result<()>> {
        let mut batch = Batch::default();
        let mut heads: std::collections::BTreeMap<u32, PartitionHead> = Default::default();
        let prepared = (|| {
            for record in records {
                let head = match heads.get(&record.partition) {
                    Some(head) => *head,
                    None => self.head(tenant, topic, record.partition)?,
                };
                let value = encode(record);
                batch.push(
                    "INSERT INTO topic_records (tenant, topic, partition, \"offset\", idempotency, record)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                    params![
                        tenant.to_string(),
                        topic.to_string(),
                        part(record.partition),
                        ms(record.offset),
                        record.idempotency.clone(),
                        value.clone()
                    ],
                );
                batch.push(
                    "INSERT INTO topic_objects (tenant, topic, key, partition, \"offset\", record)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     ON CONFLICT (tenant, topic, key) DO UPDATE SET partition = EXCLUDED.partition,
                         \"offset\" = EXCLUDED.\"offset\", record = EXCLUDED.record",
                    params![
                        tenant.to_string(),
                        topic.to_string(),
                        record.key.clone(),
                        part(record.partition),
                        ms(record.offset),
                        value
                    ],
                );
                if let Some(idempotency) = &record.idempotency {
                    batch.push(
                        "INSERT INTO topic_idempotency (tenant, topic, idempotency, partition, \"offset\")
                         VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (tenant, topic, idempotency) DO UPDATE
                             SET partition = EXCLUDED.partition, \"offset\" = EXCLUDED.\"offset\"",
                        params![
                            tenant.to_string(),
                            topic.to_string(),
                            idempotency.clone(),
                            part(record.partition),
                            ms(record.offset)
                        ],
                    );
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
                batch.push(
                    "INSERT INTO topic_heads (tenant, topic, partition, head) VALUES ($1, $2, $3, $4)
                     ON CONFLICT (tenant, topic, partition) DO UPDATE SET head = EXCLUDED.head",
                    params![
                        tenant.to_string(),
                        topic.to_string(),
                        part(*partition),
                        encode(head)
                    ],
                );
            }
            Ok::<(), StoreError>(())
        })();
        Box::pin(async move {
            prepared?;
            if batch.is_empty() {
                return Ok(());
            }
            // A commit is durable (synchronous commit), as the trait asks.
            let committed = self.commit(batch, Vec::new());
            committed.map(|_| ())
        })
    }

    fn head(&self, tenant: &str, topic: &str, partition: u32) -> Result<PartitionHead> {
        let (tenant, topic) = (tenant.to_string(), topic.to_string());
        let (bytes, last): (Option<Vec<u8>>, Option<i64>) = self.with(move |c| {
            Box::pin(async move {
                // Two hosts' appends commit their head rows in either order,
                // so the row may lag the newest record: the end is whichever
                // is further (the records' index answers the max at once).
                let stmt = c
                    .prepare_cached(
                        "SELECT (SELECT head FROM topic_heads
                                 WHERE tenant = $1 AND topic = $2 AND partition = $3),
                                (SELECT max(\"offset\") FROM topic_records
                                 WHERE tenant = $1 AND topic = $2 AND partition = $3)",
                    )
                    .await
                    .map_err(pg)?;
                let row = c
                    .query_one(&stmt, &[&tenant, &topic, &part(partition)])
                    .await
                    .map_err(pg)?;
                Ok((row.get(0), row.get(1)))
            })
        })?;
        let mut head: PartitionHead = bytes
            .map(|b| decode("topic_heads", &b))
            .transpose()?
            .unwrap_or_default();
        if let Some(last) = last {
            head.next = head.next.max(unms(last) + 1);
        }
        Ok(head)
    }

    fn shared(&self) -> bool {
        true
    }

    fn read(
        &self,
        tenant: &str,
        topic: &str,
        partition: u32,
        from: u64,
        limit: usize,
    ) -> Result<Vec<TopicRecord>> {
        let (tenant, topic) = (tenant.to_string(), topic.to_string());
        let rows: Vec<Vec<u8>> = self.with(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT record FROM topic_records
                         WHERE tenant = $1 AND topic = $2 AND partition = $3 AND \"offset\" >= $4
                         ORDER BY \"offset\" LIMIT $5",
                    )
                    .await
                    .map_err(pg)?;
                Ok(c.query(
                    &stmt,
                    &[
                        &tenant,
                        &topic,
                        &part(partition),
                        &ms(from),
                        &(limit as i64),
                    ],
                )
                .await
                .map_err(pg)?
                .iter()
                .map(|row| row.get(0))
                .collect())
            })
        })?;
        rows.iter().map(|b| decode("topic_records", b)).collect()
    }

    fn published(
        &self,
        tenant: &str,
        topic: &str,
        idempotency: &str,
    ) -> Result<Option<(u32, u64)>> {
        let (tenant, topic, idempotency) = (
            tenant.to_string(),
            topic.to_string(),
            idempotency.to_string(),
        );
        self.with(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT partition, \"offset\" FROM topic_idempotency
                         WHERE tenant = $1 AND topic = $2 AND idempotency = $3",
                    )
                    .await
                    .map_err(pg)?;
                Ok(c.query_opt(&stmt, &[&tenant, &topic, &idempotency])
                    .await
                    .map_err(pg)?
                    .map(|row| (row.get::<_, i32>(0) as u32, unms(row.get(1)))))
            })
        })
    }

    fn object(&self, tenant: &str, topic: &str, key: &str) -> Result<Option<TopicRecord>> {
        let (tenant, topic, key) = (tenant.to_string(), topic.to_string(), key.to_string());
        let bytes: Option<Vec<u8>> = self.with(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT record FROM topic_objects WHERE tenant = $1 AND topic = $2 AND key = $3",
                    )
                    .await
                    .map_err(pg)?;
                Ok(c.query_opt(&stmt, &[&tenant, &topic, &key])
                    .await
                    .map_err(pg)?
                    .map(|row| row.get(0)))
            })
        })?;
        bytes.map(|b| decode("topic_objects", &b)).transpose()
    }

    fn objects(
        &self,
        tenant: &str,
        topic: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<TopicRecord>> {
        let (tenant, topic) = (tenant.to_string(), topic.to_string());
        let after = after.map(str::to_string);
        let rows: Vec<Vec<u8>> = self.with(move |c| {
            Box::pin(async move {
                // Key order as sled's (bytes): the C collation.
                let stmt = c
                    .prepare_cached(
                        "SELECT record FROM topic_objects
                         WHERE tenant = $1 AND topic = $2
                           AND ($3::text IS NULL OR key COLLATE \"C\" > $3 COLLATE \"C\")
                         ORDER BY key COLLATE \"C\" LIMIT $4",
                    )
                    .await
                    .map_err(pg)?;
                Ok(c.query(&stmt, &[&tenant, &topic, &after, &(limit as i64)])
                    .await
                    .map_err(pg)?
                    .iter()
                    .map(|row| row.get(0))
                    .collect())
            })
        })?;
        rows.iter().map(|b| decode("topic_objects", b)).collect()
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
        head.first = below;
        let (t, tp) = (tenant.to_string(), topic.to_string());
        let head_bytes = encode(&head);
        self.with(move |c| {
            Box::pin(async move {
                let p = part(partition);
                // Tombstones older than the cut-off leave the compacted
                // view when the record they are is the key's current one.
                let objects = c
                    .prepare_cached(
                        "DELETE FROM topic_objects o USING topic_records r
                         WHERE o.tenant = $1 AND o.topic = $2 AND o.partition = $3
                           AND o.\"offset\" < $4
                           AND r.tenant = o.tenant AND r.topic = o.topic
                           AND r.partition = o.partition AND r.\"offset\" = o.\"offset\"
                           AND (convert_from(r.record, 'UTF8')::jsonb -> 'data') = 'null'::jsonb
                           AND (convert_from(r.record, 'UTF8')::jsonb ->> 'time')::bigint < $5",
                    )
                    .await
                    .map_err(pg)?;
                c.execute(&objects, &[&t, &tp, &p, &ms(below), &ms(tombstones_before)])
                    .await
                    .map_err(pg)?;
                // In slices, so a long backlog is not one huge transaction.
                let keys = c
                    .prepare_cached(
                        "DELETE FROM topic_idempotency i USING topic_records r
                         WHERE r.tenant = $1 AND r.topic = $2 AND r.partition = $3
                           AND r.\"offset\" < $4 AND r.idempotency IS NOT NULL
                           AND i.tenant = r.tenant AND i.topic = r.topic
                           AND i.idempotency = r.idempotency
                           AND i.partition = r.partition AND i.\"offset\" = r.\"offset\"",
                    )
                    .await
                    .map_err(pg)?;
                c.execute(&keys, &[&t, &tp, &p, &ms(below)])
                    .await
                    .map_err(pg)?;
                let records = c
                    .prepare_cached(
                        "DELETE FROM topic_records r USING (
                             SELECT \"offset\" FROM topic_records
                             WHERE tenant = $1 AND topic = $2 AND partition = $3 AND \"offset\" < $4
                             ORDER BY \"offset\" LIMIT $5
                         ) old WHERE r.tenant = $1 AND r.topic = $2 AND r.partition = $3
                             AND r.\"offset\" = old.\"offset\"",
                    )
                    .await
                    .map_err(pg)?;
                loop {
                    let n = c
                        .execute(&records, &[&t, &tp, &p, &ms(below), &TRUNCATE_BATCH])
                        .await
                        .map_err(pg)?;
                    if (n as i64) < TRUNCATE_BATCH {
                        break;
                    }
                }
                c.execute(
                    "UPDATE topic_heads SET head = $4
                     WHERE tenant = $1 AND topic = $2 AND partition = $3",
                    &[&t, &tp, &p, &head_bytes],
                )
                .await
                .map_err(pg)?;
                Ok(())
            })
        })
    }

    fn drop_topic(&self, tenant: &str, topic: &str) -> Result<()> {
        let (tenant, topic) = (tenant.to_string(), topic.to_string());
        self.with(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await.map_err(pg)?;
                for table in [
                    "topic_records",
                    "topic_heads",
                    "topic_objects",
                    "topic_idempotency",
                ] {
                    tx.execute(
                        &format!("DELETE FROM {table} WHERE tenant = $1 AND topic = $2"),
                        &[&tenant, &topic],
                    )
                    .await
                    .map_err(pg)?;
                }
                tx.commit().await.map_err(pg)
            })
        })
    }
}
