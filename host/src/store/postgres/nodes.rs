//! The hosts sharing the store: joining under a new epoch, the heartbeat,
//! the reaper that puts back what silent hosts held (claimed runs, inbox
//! entries), and the listener that turns other hosts' notifications into
//! wake-ups. All of it runs on the store's own runtime.

use std::{sync::Arc, time::Duration};

use deadpool_postgres::Pool;
use futures::StreamExt;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{Listeners, pg, pool_error};
use crate::store::{Lane, Result, StoreError};

/// Channel of "work queued in a lane" (payload `{node}\n{lane}`).
pub(super) const RUNS_CHANNEL: &str = "switchyard_runs";
/// Channel of "records of a tree changed" (payload `{node}\n{tree}`).
pub(super) const KV_CHANNEL: &str = "switchyard_kv";

/// Joins the hosts: a new host gets epoch 1, a known name the next epoch,
/// and what that name held under an older epoch is put back at once.
pub(super) async fn join(client: &Client, node: &str) -> Result<i64> {
    let row = client
        .query_one(
            "INSERT INTO nodes (name, epoch) VALUES ($1, 1)
             ON CONFLICT (name) DO UPDATE
                 SET epoch = nodes.epoch + 1, started_at = now(), heartbeat_at = now()
             RETURNING epoch",
            &[&node],
        )
        .await
        .map_err(pg)?;
    let epoch: i64 = row.get(0);
    release_older(client, node, epoch).await?;
    Ok(epoch)
}

/// What a host of this name held under an older epoch goes back.
async fn release_older(client: &Client, node: &str, epoch: i64) -> Result<()> {
    client
        .execute(
            "UPDATE run_queue SET owner = NULL, owner_epoch = NULL, claimed_at = NULL
             WHERE owner = $1 AND owner_epoch < $2",
            &[&node, &epoch],
        )
        .await
        .map_err(pg)?;
    client
        .execute(
            "UPDATE inbox SET owner = NULL, owner_epoch = NULL
             WHERE owner = $1 AND owner_epoch < $2",
            &[&node, &epoch],
        )
        .await
        .map_err(pg)?;
    Ok(())
}

/// What the heartbeat and the listener need.
pub(super) struct Beat {
    pub(super) pool: Pool,
    pub(super) config: tokio_postgres::Config,
    pub(super) node: String,
    pub(super) epoch: i64,
    pub(super) lease: Duration,
    pub(super) listeners: Arc<Listeners>,
}

pub(super) fn start(handle: &tokio::runtime::Handle, beat: Beat) {
    let beat = Arc::new(beat);
    handle.spawn(heartbeat(beat.clone()));
    handle.spawn(listen(beat));
}

/// Beats three times per lease, and reaps after every beat.
async fn heartbeat(beat: Arc<Beat>) {
    let every = (beat.lease / 3).max(Duration::from_millis(100));
    let mut superseded = false;
    loop {
        tokio::time::sleep(every).await;
        match beat_once(&beat).await {
            Ok(true) => superseded = false,
            Ok(false) if !superseded => {
                superseded = true;
                tracing::error!(
                    node = %beat.node,
                    "another host joined the store under this host's name: \
                     this one's claims and leases are void; give each host its own --node"
                );
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("heartbeat: {e}"),
        }
        match reap(&beat).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(runs = n, "took back the runs of hosts gone silent");
                beat.listeners.lane(Lane::Fast);
                beat.listeners.lane(Lane::Normal);
                let _ = notify_all(&beat).await;
            }
            Err(e) => tracing::warn!("reaping silent hosts' claims: {e}"),
        }
    }
}

/// `false` when the host's name was taken over (a newer epoch joined).
async fn beat_once(beat: &Beat) -> Result<bool> {
    let client = beat.pool.get().await.map_err(pool_error)?;
    let n = client
        .execute(
            "UPDATE nodes SET heartbeat_at = now() WHERE name = $1 AND epoch = $2",
            &[&beat.node, &beat.epoch],
        )
        .await
        .map_err(pg)?;
    Ok(n == 1)
}

/// Puts back the claimed runs and inbox entries of every host that is
/// silent past the lease, or holds them under an epoch it no longer has.
/// Returns how many runs went back.
async fn reap(beat: &Beat) -> Result<u64> {
    let client = beat.pool.get().await.map_err(pool_error)?;
    let lease = beat.lease.as_secs_f64();
    let runs = client
        .execute(
            "UPDATE run_queue q SET owner = NULL, owner_epoch = NULL, claimed_at = NULL
             WHERE q.owner IS NOT NULL AND NOT EXISTS (
                 SELECT 1 FROM nodes n
                 WHERE n.name = q.owner AND n.epoch = q.owner_epoch
                   AND n.heartbeat_at > now() - make_interval(secs => $1))",
            &[&lease],
        )
        .await
        .map_err(pg)?;
    client
        .execute(
            "UPDATE inbox i SET owner = NULL, owner_epoch = NULL
             WHERE i.owner IS NOT NULL AND NOT EXISTS (
                 SELECT 1 FROM nodes n
                 WHERE n.name = i.owner AND n.epoch = i.owner_epoch
                   AND n.heartbeat_at > now() - make_interval(secs => $1))",
            &[&lease],
        )
        .await
        .map_err(pg)?;
    Ok(runs)
}

async fn notify_all(beat: &Beat) -> Result<()> {
    let client = beat.pool.get().await.map_err(pool_error)?;
    for lane in ["fast", "normal"] {
        client
            .execute(
                "SELECT pg_notify($1, $2)",
                &[&RUNS_CHANNEL, &format!("{}\n{lane}", beat.node)],
            )
            .await
            .map_err(pg)?;
    }
    Ok(())
}

/// Listens for the other hosts' notifications, reconnecting when the
/// connection is lost (and then waking everything: some may be missed).
async fn listen(beat: Arc<Beat>) {
    loop {
        if let Err(e) = listen_once(&beat).await {
            tracing::warn!("listening for other hosts' notifications: {e}");
        }
        beat.listeners.everything();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn listen_once(beat: &Arc<Beat>) -> Result<()> {
    let (client, mut connection) = beat
        .config
        .connect(NoTls)
        .await
        .map_err(|e| StoreError::Backend(super::describe(&e)))?;
    let (node, listeners) = (beat.node.clone(), beat.listeners.clone());
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(n)) => {
                    let Some((from, what)) = n.payload().split_once('\n') else {
                        continue;
                    };
                    if from == node {
                        continue;
                    }
                    match (n.channel(), what) {
                        (RUNS_CHANNEL, "fast") => listeners.lane(Lane::Fast),
                        (RUNS_CHANNEL, _) => listeners.lane(Lane::Normal),
                        (_, tree) => listeners.tree(tree),
                    }
                }
                Ok(_) => {}
                Err(e) => return Err(StoreError::Backend(super::describe(&e))),
            }
        }
        Ok(())
    });
    client
        .batch_execute(&format!("LISTEN {RUNS_CHANNEL}; LISTEN {KV_CHANNEL}"))
        .await
        .map_err(pg)?;
    let ended = driver
        .await
        .map_err(|e| StoreError::Backend(format!("the listener failed: {e}")))?;
    drop(client);
    ended
}
