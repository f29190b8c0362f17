//! [`Inbox`] on PostgreSQL. Deliveries are written in small batches (a
//! group commit: one transaction, one WAL flush for every delivery waiting
//! at that moment) and each sender is answered once its batch committed.
//! An entry names the host processing it; the others pass over it while
//! that host is alive, and the reaper hands it back when it is not.

use rand::RngCore;
use tokio::sync::{mpsc, oneshot};

use super::{PgStore, pg, pool_error};
use crate::store::{
    BoxFuture, Delivery, Inbox, InboxKey, Rejected, Result, StoreError, decode, encode,
};

/// A delivery waiting for the next group commit.
pub(super) struct Accept {
    key: Vec<u8>,
    delivery: Vec<u8>,
    done: oneshot::Sender<Result<()>>,
}

/// Deliveries written per transaction, at most.
const GROUP: usize = 256;

/// Starts the group commit; returns where deliveries are sent to it.
pub(super) fn start_group_commit(
    handle: &tokio::runtime::Handle,
    pool: deadpool_postgres::Pool,
    node: String,
    epoch: i64,
) -> mpsc::UnboundedSender<Accept> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Accept>();
    handle.spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            while group.len() < GROUP {
                match rx.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
            let keys: Vec<Vec<u8>> = group.iter().map(|a| a.key.clone()).collect();
            let deliveries: Vec<Vec<u8>> = group.iter().map(|a| a.delivery.clone()).collect();
            let written = async {
                let client = pool.get().await.map_err(pool_error)?;
                // The accepting host processes it next: it is held by it.
                let stmt = client
                    .prepare_cached(
                        "INSERT INTO inbox (key, delivery, owner, owner_epoch)
                         SELECT key, delivery, $3, $4 FROM unnest($1::bytea[], $2::bytea[])
                             AS d (key, delivery)",
                    )
                    .await
                    .map_err(pg)?;
                client
                    .execute(&stmt, &[&keys, &deliveries, &node, &epoch])
                    .await
                    .map_err(pg)?;
                Ok::<(), StoreError>(())
            }
            .await;
            for accept in group {
                let answer = match &written {
                    Ok(()) => Ok(()),
                    Err(e) => Err(StoreError::Backend(e.to_string())),
                };
                let _ = accept.done.send(answer);
            }
        }
    });
    tx
}

impl Inbox for PgStore {
    fn accept(&self, delivery: &Delivery) -> BoxFuture<'_, Result<InboxKey>> {
        let mut random = [0u8; 8];
        rand::rng().fill_bytes(&mut random);
        let key = format!("{:016x}{}", delivery.received_at, hex::encode(random)).into_bytes();
        let (done, committed) = oneshot::channel();
        let sent = self.accepts.send(Accept {
            key: key.clone(),
            delivery: encode(delivery),
            done,
        });
        Box::pin(async move {
            if sent.is_err() {
                return Err(StoreError::Backend("the store is closed".into()));
            }
            committed
                .await
                .map_err(|_| StoreError::Backend("the store is closed".into()))??;
            Ok(InboxKey(key))
        })
    }

    fn pending(
        &self,
        after: Option<&InboxKey>,
        limit: usize,
    ) -> Result<Vec<(InboxKey, Result<Delivery>)>> {
        let after = after.map(|k| k.0.clone()).unwrap_or_default();
        let node = self.node.clone();
        let rows: Vec<(Vec<u8>, Vec<u8>)> = self.with(move |c| {
            Box::pin(async move {
                let stmt = c
                    .prepare_cached(
                        "SELECT key, delivery FROM inbox
                         WHERE key > $1 AND (owner IS NULL OR owner = $2)
                         ORDER BY key LIMIT $3",
                    )
                    .await
                    .map_err(pg)?;
                Ok(c.query(&stmt, &[&after, &node, &(limit as i64)])
                    .await
                    .map_err(pg)?
                    .iter()
                    .map(|row| (row.get(0), row.get(1)))
                    .collect())
            })
        })?;
        Ok(rows
            .into_iter()
            .map(|(key, value)| (InboxKey(key), decode("inbox", &value)))
            .collect())
    }

    fn claim(&self, key: &InboxKey) -> Result<bool> {
        let key = key.0.clone();
        let (node, epoch) = (self.node.clone(), self.epoch);
        self.with(move |c| {
            Box::pin(async move {
                let n = c
                    .execute(
                        "UPDATE inbox SET owner = $2, owner_epoch = $3
                         WHERE key = $1 AND (owner IS NULL OR owner = $2)",
                        &[&key, &node, &epoch],
                    )
                    .await
                    .map_err(pg)?;
                Ok(n == 1)
            })
        })
    }

    fn defer(&self, key: &InboxKey, delivery: &Delivery) -> Result<()> {
        let (key, delivery) = (key.0.clone(), encode(delivery));
        self.with(move |c| {
            Box::pin(async move {
                // Let go: any host may take it up when it is due.
                c.execute(
                    "UPDATE inbox SET delivery = $2, owner = NULL, owner_epoch = NULL WHERE key = $1",
                    &[&key, &delivery],
                )
                .await
                .map_err(pg)?;
                Ok(())
            })
        })
    }

    fn discard(&self, key: &InboxKey) -> Result<()> {
        let key = key.0.clone();
        self.with(move |c| {
            Box::pin(async move {
                c.execute("DELETE FROM inbox WHERE key = $1", &[&key])
                    .await
                    .map_err(pg)?;
                Ok(())
            })
        })
    }

    fn reject(
        &self,
        key: Option<&InboxKey>,
        tenant: &str,
        flow: &str,
        rejected: &Rejected,
    ) -> Result<()> {
        let key = key.map(|k| k.0.clone());
        let (tenant, flow) = (tenant.to_string(), flow.to_string());
        let (at, record) = (super::ms(rejected.received_at), encode(rejected));
        self.with(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await.map_err(pg)?;
                if let Some(key) = &key {
                    tx.execute("DELETE FROM inbox WHERE key = $1", &[key])
                        .await
                        .map_err(pg)?;
                }
                tx.execute(
                    "INSERT INTO deliveries_rejected (tenant, flow, received_at, record)
                     VALUES ($1, $2, $3, $4)",
                    &[&tenant, &flow, &at, &record],
                )
                .await
                .map_err(pg)?;
                tx.commit().await.map_err(pg)
            })
        })
    }

    fn rejected(&self, tenant: &str, flow: &str) -> Result<Vec<Rejected>> {
        let (tenant, flow) = (tenant.to_string(), flow.to_string());
        let rows: Vec<Vec<u8>> = self.with(move |c| {
            Box::pin(async move {
                Ok(c.query(
                    "SELECT record FROM deliveries_rejected WHERE tenant = $1 AND flow = $2
                     ORDER BY received_at DESC, id DESC",
                    &[&tenant, &flow],
                )
                .await
                .map_err(pg)?
                .iter()
                .map(|row| row.get(0))
                .collect())
            })
        })?;
        rows.iter()
            .map(|bytes| decode("deliveries_rejected", bytes))
            .collect()
    }

    fn trim_rejected(&self, tenant: &str, flow: &str, keep: usize) -> Result<usize> {
        let (tenant, flow) = (tenant.to_string(), flow.to_string());
        self.with(move |c| {
            Box::pin(async move {
                let n = c
                    .execute(
                        "DELETE FROM deliveries_rejected d USING (
                             SELECT id FROM deliveries_rejected WHERE tenant = $1 AND flow = $2
                             ORDER BY received_at DESC, id DESC OFFSET $3
                         ) old WHERE d.tenant = $1 AND d.flow = $2 AND d.id = old.id",
                        &[&tenant, &flow, &(keep as i64)],
                    )
                    .await
                    .map_err(pg)?;
                Ok(n as usize)
            })
        })
    }

    fn prune_rejected(&self, before: u64, keep: usize) -> Result<usize> {
        let before = super::ms(before);
        self.with(move |c| {
            Box::pin(async move {
                let old = c
                    .execute(
                        "DELETE FROM deliveries_rejected WHERE received_at < $1",
                        &[&before],
                    )
                    .await
                    .map_err(pg)?;
                let excess = c
                    .execute(
                        "DELETE FROM deliveries_rejected d USING (
                             SELECT id FROM (
                                 SELECT id, row_number() OVER (
                                     PARTITION BY tenant, flow ORDER BY received_at DESC, id DESC
                                 ) AS n FROM deliveries_rejected
                             ) ranked WHERE n > $1
                         ) old WHERE d.id = old.id",
                        &[&(keep as i64)],
                    )
                    .await
                    .map_err(pg)?;
                Ok((old + excess) as usize)
            })
        })
    }
}
