//! Operator settings for `switchyard serve`, from flags or `SWITCHYARD_*`
//! environment variables, with safe defaults.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;

use crate::{
    api::{PublicLimits, Rate},
    engine::EngineConfig,
    files::FileSettings,
    runs::RuntimeSettings,
    sandbox::SandboxConfig,
};

#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address the admin API listens on.
    #[arg(long, env = "SWITCHYARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the database, plugin binaries and compiled artifacts
    /// (with `--store postgres://...`: only this node's compiled artifacts).
    #[arg(long, env = "SWITCHYARD_DATA_DIR", default_value = "./switchyard-data")]
    pub data_dir: PathBuf,

    /// Where the records live: `sled` (embedded in the data directory, one
    /// host) or a PostgreSQL URL (`postgres://user:pass@host/db`), which
    /// several hosts may share.
    #[arg(
        long,
        env = "SWITCHYARD_STORE",
        default_value = "sled",
        hide_env_values = true
    )]
    pub store: String,

    /// This host's name among the hosts sharing a PostgreSQL store (each
    /// needs its own; a host restarted under its name gets a new epoch and
    /// cannot finish what it claimed before). Default: the machine's name.
    #[arg(long, env = "SWITCHYARD_NODE")]
    pub node: Option<String>,

    /// Seconds a host of a shared store may stay silent before the others
    /// take over its claimed runs, deliveries and trigger leases.
    #[arg(long, env = "SWITCHYARD_NODE_LEASE_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub node_lease_secs: u64,

    /// Operator token for the API. Without one, a token is generated on the
    /// first start, printed once, and only its hash is stored.
    #[arg(long, env = "SWITCHYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Master key sealing secrets at rest (base64 of 32 bytes). Without one,
    /// a key is generated on first start into `<data-dir>/master.key` (0600).
    #[arg(long, env = "SWITCHYARD_MASTER_KEY", hide_env_values = true)]
    pub master_key: Option<String>,

    /// The URL browsers reach this host at, for OAuth redirects (default: the
    /// `Host` of the request that starts the flow).
    #[arg(long, env = "SWITCHYARD_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Upload every `*.wasm` in this directory at start (identical versions
    /// are skipped). May be repeated.
    #[arg(long = "load-dir", env = "SWITCHYARD_LOAD_DIRS", value_delimiter = ',')]
    pub load_dirs: Vec<PathBuf>,

    /// Let plugins reach a network that is otherwise refused (loopback,
    /// private, link-local...), e.g. `127.0.0.1/32` for local fakes. May be
    /// repeated.
    #[arg(
        long = "allow-network",
        env = "SWITCHYARD_ALLOW_NETWORKS",
        value_delimiter = ','
    )]
    pub allow_networks: Vec<IpNet>,

    /// How long a console session lasts after sign-in, in seconds.
    #[arg(long, env = "SWITCHYARD_SESSION_SECS", default_value_t = 12 * 3600)]
    pub session_secs: u64,

    /// Wall-clock limit of one plugin call, in milliseconds.
    #[arg(long, env = "SWITCHYARD_CALL_TIMEOUT_MS", default_value_t = 30_000)]
    pub call_timeout_ms: u64,

    /// Limit of one outbound HTTP request of a plugin, in milliseconds.
    #[arg(long, env = "SWITCHYARD_HTTP_TIMEOUT_MS", default_value_t = 30_000)]
    pub http_timeout_ms: u64,

    /// Memory cap of each plugin instance, in MiB.
    #[arg(long, env = "SWITCHYARD_MEMORY_LIMIT_MIB", default_value_t = 64)]
    pub memory_limit_mib: usize,

    /// Plugin instances that may run at once.
    #[arg(long, env = "SWITCHYARD_MAX_INSTANCES", default_value_t = 256)]
    pub max_instances: u32,

    /// Largest plugin upload accepted, in MiB.
    #[arg(long, env = "SWITCHYARD_MAX_UPLOAD_MIB", default_value_t = 64)]
    pub max_upload_mib: usize,

    /// Largest webhook delivery accepted, in KiB (larger ones get 413 and are
    /// recorded as rejected).
    #[arg(long, env = "SWITCHYARD_MAX_DELIVERY_KIB", default_value_t = 5120)]
    pub max_delivery_kib: usize,

    /// Largest request body of the JSON API, in KiB (plugin uploads and
    /// webhook deliveries have limits of their own).
    #[arg(long, env = "SWITCHYARD_MAX_REQUEST_KIB", default_value_t = 1024)]
    pub max_request_kib: usize,

    /// Requests per second, sustained, that one source address may make to
    /// `/hooks/...` and `/oauth/callback` (0: no limit). Over it: 429.
    #[arg(long, env = "SWITCHYARD_SOURCE_RATE", default_value_t = 300)]
    pub source_rate: u32,

    /// Requests one source address may make at once, above its rate.
    #[arg(long, env = "SWITCHYARD_SOURCE_BURST", default_value_t = 3_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub source_burst: u32,

    /// Deliveries per second, sustained, that one webhook accepts (0: no
    /// limit). Over it: 429, and nothing is stored.
    #[arg(long, env = "SWITCHYARD_HOOK_RATE", default_value_t = 100)]
    pub hook_rate: u32,

    /// Deliveries one webhook accepts at once, above its rate.
    #[arg(long, env = "SWITCHYARD_HOOK_BURST", default_value_t = 1_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub hook_burst: u32,

    /// Reverse proxies in front of the host that append the client's address
    /// to `X-Forwarded-For`. 0: the TCP peer is the source address (the
    /// header is ignored: clients can write anything into it).
    #[arg(long, env = "SWITCHYARD_TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: usize,

    /// A bearer token that may read `/metrics` (as the operator token may),
    /// for a Prometheus scrape config. 16 characters or more.
    #[arg(long, env = "SWITCHYARD_METRICS_TOKEN", hide_env_values = true,
          value_parser = long_token)]
    pub metrics_token: Option<String>,

    /// Serve `/metrics` without a token (when only a trusted network can
    /// reach the host).
    #[arg(long, env = "SWITCHYARD_PUBLIC_METRICS")]
    pub public_metrics: bool,

    /// Runs executing at once in the fast lane (flows with `lane: fast`).
    #[arg(long, env = "SWITCHYARD_FAST_WORKERS", default_value_t = 32)]
    pub fast_workers: usize,

    /// Runs executing at once in the normal lane.
    #[arg(long, env = "SWITCHYARD_NORMAL_WORKERS", default_value_t = 32)]
    pub normal_workers: usize,

    /// Runs executing at once that use the same connection.
    #[arg(long, env = "SWITCHYARD_CONNECTION_CONCURRENCY", default_value_t = 16)]
    pub connection_concurrency: u32,

    /// How long an event id is remembered to drop repeated deliveries, in hours.
    #[arg(long, env = "SWITCHYARD_DEDUP_WINDOW_HOURS", default_value_t = 72)]
    pub dedup_window_hours: u64,

    /// How long finished runs are kept, in hours.
    #[arg(long, env = "SWITCHYARD_RUN_RETENTION_HOURS", default_value_t = 168)]
    pub run_retention_hours: u64,

    /// Space one tenant's files may take in its buckets, in MiB (0: no limit).
    #[arg(long, env = "SWITCHYARD_TENANT_QUOTA_MIB", default_value_t = 10_240)]
    pub tenant_quota_mib: u64,

    /// Largest file (or part of a file) one request may upload, in MiB.
    #[arg(long, env = "SWITCHYARD_MAX_FILE_MIB", default_value_t = 5_120)]
    pub max_file_mib: u64,
}

impl ServeConfig {
    /// Defaults for a data directory (used by tests and benchmarks).
    pub fn for_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        ServeConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            data_dir: data_dir.into(),
            store: "sled".to_string(),
            node: None,
            node_lease_secs: 30,
            token: None,
            master_key: None,
            public_url: None,
            load_dirs: Vec::new(),
            allow_networks: Vec::new(),
            session_secs: 12 * 3600,
            call_timeout_ms: 30_000,
            http_timeout_ms: 30_000,
            memory_limit_mib: 64,
            max_instances: 256,
            max_upload_mib: 64,
            max_delivery_kib: 5120,
            max_request_kib: 1024,
            source_rate: 300,
            source_burst: 3_000,
            hook_rate: 100,
            hook_burst: 1_000,
            trusted_proxy_hops: 0,
            metrics_token: None,
            public_metrics: false,
            fast_workers: 32,
            normal_workers: 32,
            connection_concurrency: 16,
            dedup_window_hours: 72,
            run_retention_hours: 168,
            tenant_quota_mib: 10_240,
            max_file_mib: 5_120,
        }
    }

    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            call_timeout: Duration::from_millis(self.call_timeout_ms),
            memory_limit: self.memory_limit_mib << 20,
            max_instances: self.max_instances,
            cache_dir: self.data_dir.join("artifacts"),
        }
    }

    pub fn runtime(&self) -> RuntimeSettings {
        RuntimeSettings {
            fast_workers: self.fast_workers,
            normal_workers: self.normal_workers,
            connection_concurrency: self.connection_concurrency,
            dedup_window: Duration::from_secs(self.dedup_window_hours * 3600),
            retention: Duration::from_secs(self.run_retention_hours * 3600),
            ..RuntimeSettings::default()
        }
    }

    pub fn files(&self) -> FileSettings {
        FileSettings {
            tenant_quota_bytes: self.tenant_quota_mib << 20,
            max_file_bytes: self.max_file_mib << 20,
            tempdir: self.data_dir.join("tmp"),
        }
    }

    pub fn public_limits(&self) -> PublicLimits {
        PublicLimits {
            source: Rate {
                per_second: self.source_rate,
                burst: self.source_burst,
            },
            hook: Rate {
                per_second: self.hook_rate,
                burst: self.hook_burst,
            },
            proxy_hops: self.trusted_proxy_hops,
        }
    }

    pub fn sandbox(&self) -> SandboxConfig {
        SandboxConfig {
            allow_networks: self.allow_networks.clone(),
            request_timeout: Duration::from_millis(self.http_timeout_ms),
            ..SandboxConfig::default()
        }
    }
}

/// A token is a secret: short ones can be guessed.
fn long_token(value: &str) -> Result<String, String> {
    if value.len() >= 16 {
        Ok(value.to_string())
    } else {
        Err("a token must be at least 16 characters".to_string())
    }
}
