//! Wiring: builds the services from the operator's settings, starts their
//! background work and stops it. The only place that names a storage
//! backend. Every operation lives in a service; this file holds none.

use std::sync::{Arc, Weak};

use anyhow::Context as _;

use crate::{
    api::{ApiSettings, ApiState},
    calls::Calls,
    config::ServeConfig,
    connections::Connections,
    console,
    drafts::Drafts,
    engine::{Engine, LoadError},
    error::ServiceError,
    files::Buckets,
    flows::{Flows, HostCatalogue},
    metrics::Metrics,
    oauth::OAuth,
    registry::Registry,
    runs::Runs,
    sandbox::HttpSandbox,
    secrets::MasterKey,
    store::{
        Stores,
        postgres::{PgSettings, PgStore},
        sled::SledStore,
    },
    tasks::Tasks,
    tenants::Tenants,
    topics::{
        Topics,
        streams::Streams,
        webhooks::{FeedSettings, Feeds},
    },
    triggers::{TriggerSettings, Triggers, files::FileTriggers},
    users::Users,
};

/// The running host: every service, built once.
pub struct App {
    pub config: ServeConfig,
    pub engine: Arc<Engine>,
    pub tenants: Arc<Tenants>,
    pub registry: Arc<Registry>,
    pub connections: Arc<Connections>,
    pub oauth: Arc<OAuth>,
    pub calls: Arc<Calls>,
    pub flows: Arc<Flows>,
    pub runs: Arc<Runs>,
    pub triggers: Arc<Triggers>,
    pub buckets: Arc<Buckets>,
    pub file_triggers: Arc<FileTriggers>,
    pub topics: Arc<Topics>,
    pub streams: Arc<Streams>,
    pub feeds: Arc<Feeds>,
    pub metrics: Arc<Metrics>,
    pub users: Arc<Users>,
    pub drafts: Arc<Drafts>,
    tasks: Arc<Tasks>,
    store: Weak<dyn std::any::Any + Send + Sync>,
}

impl App {
    /// Opens the data directory and loads every plugin. Returns the operator
    /// token too when it was generated now (to be shown once).
    pub async fn open(config: ServeConfig) -> anyhow::Result<(App, Option<String>)> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let (store, backend) = open_store(&config)?;
        let (tenants, new_token) = Tenants::open(store.kv.clone(), config.token.as_deref())?;
        let engine = Arc::new(Engine::new(config.engine())?);
        let master_key = Arc::new(MasterKey::load_or_create(
            config.master_key.as_deref(),
            &config.data_dir.join("master.key"),
        )?);
        let registry = Arc::new(
            Registry::open(store.kv.clone(), engine.clone(), master_key.clone())
                .await
                .context("loading the plugin registry")?,
        );
        let connections = Arc::new(Connections::new(
            store.kv.clone(),
            master_key.clone(),
            registry.clone(),
            Default::default(),
        ));
        let sandbox = HttpSandbox::new(config.sandbox())?;
        let metrics = Arc::new(Metrics::default());
        let tasks = Arc::new(Tasks::default());
        let calls = Arc::new(Calls::new(
            registry.clone(),
            connections.clone(),
            sandbox.clone(),
            metrics.clone(),
        ));
        let oauth = Arc::new(OAuth::new(
            store.kv.clone(),
            connections.clone(),
            calls.clone(),
            sandbox.clone(),
        ));
        let topics = Arc::new(Topics::new(
            store.kv.clone(),
            store.topics.clone(),
            tasks.clone(),
        ));
        let streams = Arc::new(Streams::new(store.kv.clone(), topics.clone()));
        let feeds = Arc::new(Feeds::new(
            store.kv.clone(),
            topics.clone(),
            sandbox,
            master_key,
            tasks.clone(),
            FeedSettings {
                public_url: config.public_url.clone(),
                ..FeedSettings::default()
            },
        ));
        let flows = Arc::new(Flows::new(
            store.kv.clone(),
            Arc::new(HostCatalogue {
                registry: registry.clone(),
                connections: connections.clone(),
            }),
        ));
        let files = config.files();
        std::fs::create_dir_all(&files.tempdir)
            .with_context(|| format!("creating {}", files.tempdir.display()))?;
        let buckets = Arc::new(Buckets::new(store.files.clone(), files));
        let settings = config.runtime();
        let runs = Arc::new(Runs::new(
            store.runs.clone(),
            store.entities.clone(),
            flows.clone(),
            calls.clone(),
            buckets.clone(),
            topics.clone(),
            metrics.clone(),
            tasks.clone(),
            settings.clone(),
        ));
        let triggers = Arc::new(Triggers::new(
            store.kv.clone(),
            store.inbox.clone(),
            store.triggers.clone(),
            flows.clone(),
            calls.clone(),
            runs.clone(),
            metrics.clone(),
            tasks.clone(),
            TriggerSettings {
                max_delivery_bytes: config.max_delivery_kib << 10,
                poll_workers: settings.poll_workers,
                retention: settings.retention,
            },
        ));
        let file_triggers = Arc::new(FileTriggers::new(
            flows.clone(),
            runs.clone(),
            buckets.clone(),
            calls.clone(),
            tasks.clone(),
        ));
        let users = Arc::new(Users::new(store.kv.clone(), config.session_secs));
        let drafts = Arc::new(Drafts::new(store.kv.clone()));
        let app = App {
            config,
            engine,
            tenants: Arc::new(tenants),
            registry,
            connections,
            oauth,
            calls,
            flows,
            runs,
            triggers,
            buckets,
            file_triggers,
            topics,
            streams,
            feeds,
            metrics,
            users,
            drafts,
            tasks,
            store: Arc::downgrade(&backend),
        };
        drop(backend);
        app.load_dirs().await;
        Ok((app, new_token))
    }

    /// Starts the background work: run dispatchers, the trigger scheduler,
    /// the webhook inbox worker, retention, batched webhooks and file
    /// triggers. [`App::shutdown`] stops them.
    pub fn start(&self) {
        self.runs.start();
        self.triggers.start();
        self.topics.start();
        self.feeds.start();
        self.file_triggers.start();
        self.buckets.start(&self.tasks);
    }

    /// Stops the background work; runs in flight finish their current step.
    pub async fn shutdown(&self) {
        self.tasks.shutdown().await;
    }

    /// Whether the database is closed: every service that held it is gone
    /// (after [`App::shutdown`] and dropping the app).
    pub fn storage_probe(&self) -> impl Fn() -> bool + Send + 'static {
        let store = self.store.clone();
        move || store.strong_count() == 0
    }

    /// What the API's handlers get: each service as a sub-state.
    pub fn api_state(&self) -> ApiState {
        ApiState {
            tenants: self.tenants.clone(),
            registry: self.registry.clone(),
            connections: self.connections.clone(),
            oauth: self.oauth.clone(),
            calls: self.calls.clone(),
            flows: self.flows.clone(),
            runs: self.runs.clone(),
            triggers: self.triggers.clone(),
            buckets: self.buckets.clone(),
            file_triggers: self.file_triggers.clone(),
            topics: self.topics.clone(),
            streams: self.streams.clone(),
            feeds: self.feeds.clone(),
            metrics: self.metrics.clone(),
            engine: self.engine.clone(),
            users: self.users.clone(),
            drafts: self.drafts.clone(),
            settings: Arc::new(ApiSettings {
                public_url: self.config.public_url.clone(),
                max_upload_bytes: self.config.max_upload_mib << 20,
                max_request_bytes: self.config.max_request_kib << 10,
                max_delivery_bytes: self.config.max_delivery_kib << 10,
                limits: self.config.public_limits(),
                metrics_token: self.config.metrics_token.clone(),
                public_metrics: self.config.public_metrics,
            }),
        }
    }

    /// The name this host goes by among the hosts of a shared store.
    pub fn node_name(config: &ServeConfig) -> String {
        config.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|name| name.trim().to_string())
                .ok()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "switchyard".to_string())
        })
    }

    /// Everything the host serves: the API and, beside it, the console
    /// (which takes the same services).
    pub fn router(&self) -> axum::Router {
        let state = self.api_state();
        crate::api::router(state.clone()).merge(console::router(state))
    }

    async fn load_dirs(&self) {
        for dir in &self.config.load_dirs {
            let entries = match std::fs::read_dir(dir) {
                Ok(entries) => entries,
                Err(e) => {
                    tracing::error!(dir = %dir.display(), "cannot read plugin directory: {e}");
                    continue;
                }
            };
            let mut paths: Vec<_> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|ext| {
                        ["wasm", "yaml", "yml"].contains(&&*ext.to_string_lossy())
                    })
                })
                .collect();
            // Components first: the declarative interpreter must be there
            // before the specs it runs.
            paths.sort_by_key(|p| (p.extension().is_none_or(|e| e != "wasm"), p.clone()));
            for path in paths {
                let result = match std::fs::read(&path) {
                    Ok(bytes) => match self.registry.upload(bytes.clone(), None).await {
                        Err(ServiceError::Load(LoadError::Interpreter)) => {
                            match self.registry.upload_interpreter(bytes).await {
                                Ok((i, _)) => {
                                    tracing::info!(
                                        "loaded the declarative interpreter {} ({})",
                                        i.version,
                                        i.sha256
                                    );
                                    continue;
                                }
                                Err(e) => Err(e.to_string()),
                            }
                        }
                        other => other.map_err(|e| e.to_string()),
                    },
                    Err(e) => Err(e.to_string()),
                };
                match result {
                    Ok((r, true)) => {
                        tracing::info!("loaded {}@{} from {}", r.key, r.version, path.display())
                    }
                    Ok((r, false)) => tracing::debug!("{}@{} already registered", r.key, r.version),
                    Err(e) => tracing::error!(path = %path.display(), "cannot load plugin: {e}"),
                }
            }
        }
    }
}

/// Opens the store the settings name: sled in the data directory, or a
/// shared PostgreSQL database.
fn open_store(
    config: &ServeConfig,
) -> anyhow::Result<(Stores, Arc<dyn std::any::Any + Send + Sync>)> {
    if config.store == "sled" {
        let sled = SledStore::open(&config.data_dir)
            .with_context(|| format!("opening storage in {}", config.data_dir.display()))?;
        return Ok((sled.stores(), sled));
    }
    if !(config.store.starts_with("postgres://") || config.store.starts_with("postgresql://")) {
        anyhow::bail!(
            "--store must be `sled` or a postgres:// URL, not `{}`",
            config.store.split('@').next_back().unwrap_or_default()
        );
    }
    // Every host must open the secrets the others sealed.
    if config.master_key.is_none() {
        anyhow::bail!(
            "with a shared store every host needs the same master key: pass --master-key \
             (or SWITCHYARD_MASTER_KEY)"
        );
    }
    let pg = PgStore::open(PgSettings {
        url: config.store.clone(),
        node: App::node_name(config),
        lease: std::time::Duration::from_secs(config.node_lease_secs),
        connections: 16,
        files_dir: config.data_dir.join("files"),
    })
    .context("opening the PostgreSQL store")?;
    Ok((pg.stores(), pg))
}
