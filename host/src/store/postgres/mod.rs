//! The shared backend: every store trait on one PostgreSQL database, so
//! several hosts can serve one installation. Runs are rows of a `runs`
//! table with a small `run_queue` table beside it that dispatchers claim
//! from with `FOR UPDATE SKIP LOCKED`; claims, trigger leases and inbox
//! entries name the host (and its epoch) that holds them, hosts beat a
//! heartbeat, and every host reaps what silent hosts held. `LISTEN/NOTIFY`
//! only wakes other hosts early: each also looks on its own.
//!
//! The traits are synchronous (sled answers in microseconds, and the engine
//! holds its per-run locks across store calls); the client is async. So
//! every query runs on this store's own runtime, and the caller waits for
//! it with `block_in_place` (on a multi-threaded runtime: the worker's
//! other tasks move to another thread meanwhile), never blocking a tokio
//! worker on network I/O.

mod batch;
mod entities;
mod files;
mod inbox;
mod kv;
mod nodes;
mod runs;
mod schema;
mod topics;
mod triggers;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio_postgres::{NoTls, error::SqlState};

use super::{BoxFuture, Lane, Result, StoreError, Stores, blobs::BlobDir};

/// How a host joins a shared store.
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// This host's name among the others.
    pub node: String,
    /// How long a host may stay silent before the others take over.
    pub lease: Duration,
    /// Connections in the pool.
    pub connections: usize,
    /// Where the bytes of file objects are kept (`<data-dir>/files`): hosts
    /// sharing a store must share it.
    pub files_dir: PathBuf,
}

/// Wakes a lane's dispatcher.
type WakeLane = Arc<dyn Fn(Lane) + Send + Sync>;
/// Tells a service that a tree changed.
type TreeChanged = Arc<dyn Fn() + Send + Sync>;

/// What other hosts' notifications wake on this one.
#[derive(Default)]
struct Listeners {
    lanes: Mutex<Vec<WakeLane>>,
    trees: Mutex<Vec<(&'static str, TreeChanged)>>,
}

impl Listeners {
    fn lane(&self, lane: Lane) {
        let wake = self.lanes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for wake in wake {
            wake(lane);
        }
    }

    fn tree(&self, name: &str) {
        let all = self.trees.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for (tree, changed) in all {
            if tree == name || name == "*" {
                changed();
            }
        }
    }

    /// After a lost connection: notifications may have been missed.
    fn everything(&self) {
        self.lane(Lane::Fast);
        self.lane(Lane::Normal);
        self.tree("*");
    }
}

pub struct PgStore {
    runtime: Option<tokio::runtime::Runtime>,
    handle: Handle,
    pool: Pool,
    node: String,
    epoch: i64,
    lease: Duration,
    /// The runs this host claimed and has not released: (tenant, run) →
    /// the claim (its attempt fences their writes).
    claims: Mutex<HashMap<(String, String), runs::Claim>>,
    /// The trigger leases this host took: (tenant, flow) → their epoch.
    leases: Mutex<HashMap<(String, String), i64>>,
    /// Per lane: flows found at their limit, passed over by claims until
    /// one of their runs is released or a moment has passed.
    blocked: [Mutex<HashMap<String, Instant>>; 2],
    /// Per lane: when this host last told the others of queued work.
    notified: [Mutex<Option<Instant>>; 2],
    listeners: Arc<Listeners>,
    accepts: tokio::sync::mpsc::UnboundedSender<inbox::Accept>,
    file_blobs: BlobDir,
}

impl PgStore {
    /// Connects, applies the migrations the database lacks, joins the hosts
    /// under a new epoch and starts the heartbeat, the reaper, the
    /// notification listener and the inbox's group commit.
    pub fn open(settings: PgSettings) -> Result<Arc<Self>> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("switchyard-pg")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Backend(format!("starting the database runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let config: tokio_postgres::Config = settings.url.parse().map_err(|e| {
            StoreError::Backend(format!("the store URL is not a PostgreSQL URL: {e}"))
        })?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(settings.connections.max(2))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Backend(format!("building the connection pool: {e}")))?;
        let (node, lease) = (settings.node.clone(), settings.lease);
        let epoch = wait(&handle, {
            let (config, node) = (config.clone(), node.clone());
            async move {
                let (mut client, connection) = config.connect(NoTls).await.map_err(|e| {
                    StoreError::Backend(format!("connecting to PostgreSQL: {}", describe(&e)))
                })?;
                let driver = tokio::spawn(connection);
                let applied = schema::migrate(&mut client).await?;
                if !applied.is_empty() {
                    tracing::info!(?applied, "applied schema migrations");
                }
                let epoch = nodes::join(&client, &node).await;
                drop(client);
                let _ = driver.await;
                epoch
            }
        })?;
        tracing::info!(node = %node, epoch, "joined the hosts of the shared store");
        let listeners = Arc::new(Listeners::default());
        let accepts = inbox::start_group_commit(&handle, pool.clone(), node.clone(), epoch);
        nodes::start(
            &handle,
            nodes::Beat {
                pool: pool.clone(),
                config,
                node: node.clone(),
                epoch,
                lease,
                listeners: listeners.clone(),
            },
        );
        Ok(Arc::new(PgStore {
            runtime: Some(runtime),
            handle,
            pool,
            node,
            epoch,
            lease,
            claims: Mutex::default(),
            leases: Mutex::default(),
            blocked: Default::default(),
            notified: Default::default(),
            listeners,
            accepts,
            file_blobs: BlobDir::new(settings.files_dir),
        }))
    }

    /// The store as every trait the services use.
    pub fn stores(self: &Arc<Self>) -> Stores {
        Stores {
            kv: self.clone(),
            runs: self.clone(),
            inbox: self.clone(),
            triggers: self.clone(),
            entities: self.clone(),
            files: self.clone(),
            topics: self.clone(),
        }
    }

    /// This host's epoch (it grows at every start of a host of this name).
    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Runs `work` with a pooled connection on the store's runtime and
    /// waits for it (see the module's comment).
    fn with<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut deadpool_postgres::Client) -> BoxFuture<'c, Result<T>>
            + Send
            + 'static,
    {
        let pool = self.pool.clone();
        wait(&self.handle, async move {
            let mut client = pool.get().await.map_err(pool_error)?;
            work(&mut client).await
        })
    }

    fn forget_claim(&self, tenant: &str, run: &str) {
        self.claims
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(tenant.to_string(), run.to_string()));
    }

    /// Whether to tell the other hosts of work queued in `lane` now: at
    /// most every 50 ms per lane (a `NOTIFY` serialises commits, and a
    /// wake-up is only a hint).
    fn should_notify(&self, lane: Lane) -> bool {
        let mut last = self.notified[lane as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|at| at.elapsed() < Duration::from_millis(50)) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Its tasks (heartbeat, listener, group commit) stop with it; a
        // runtime may not be dropped from async code, so it is let go.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Waits for `work` on the store's runtime; on a multi-threaded tokio
/// runtime with `block_in_place`, so the worker's other tasks go on.
fn wait<T: Send + 'static>(
    handle: &Handle,
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let task = handle.spawn(work);
    let join = move || futures::executor::block_on(task);
    let joined = match Handle::try_current() {
        Ok(current) if current.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(join)
        }
        _ => join(),
    };
    joined.map_err(|e| StoreError::Backend(format!("a database task failed: {e}")))?
}

/// A database error as the store reports it: a repeated unique key is a
/// conflict, the rest names the server's code and message.
fn pg(e: tokio_postgres::Error) -> StoreError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        return StoreError::Conflict(describe(&e));
    }
    StoreError::Backend(describe(&e))
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("PostgreSQL {}: {}", db.code().code(), db.message()),
        None => format!("PostgreSQL: {e}"),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Backend(format!("no database connection: {e}"))
}

/// Milliseconds as the `bigint` columns keep them.
fn ms(at: u64) -> i64 {
    i64::try_from(at).unwrap_or(i64::MAX)
}

fn unms(at: i64) -> u64 {
    u64::try_from(at).unwrap_or(0)
}
