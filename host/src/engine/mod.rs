//! The wasmtime engine: compiles connector components once (with an on-disk
//! artifact cache keyed by content hash and engine compatibility), keeps an
//! `InstancePre` per plugin version, and runs every call in a fresh store with
//! an epoch deadline and a memory cap. The hot path's calls (a step's
//! `perform`, a delivery's `handle-webhook`) look up and type-check only
//! their own export; the others load every export of the contract.
//!
//! Two linkers: one for 0.1.0 connectors (exactly the contract's imports),
//! and one for the declarative interpreter, which adds the
//! `switchyard:declarative/spec` import. A declarative plugin version is the
//! interpreter's `InstancePre` (compiled once, shared) and its spec, which
//! the store of each call hands the guest through that import.

mod auth_ext;
mod bindings;
mod call;
mod convert;
mod host;
mod warm;

use std::{
    hash::{Hash, Hasher},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use wasmtime::{
    Config, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
    component::{Component, ComponentExportIndex, Instance, InstancePre, Linker, TypedFunc},
};

pub use bindings::v0_1::switchyard::connector::types::{
    Connection as GuestConnection, Context as GuestContext,
};
use bindings::v0_1::{
    Connector, ConnectorIndices,
    exports::switchyard::connector::plugin::{WebhookOutcome, WebhookRequest},
    switchyard::connector::types::ConnectorError as WitError,
};
pub use call::{
    CallEnv, CallError, CallOutcome, Captured, CapturedMessage, ConnectorError, Journal, LogLevel,
    LogLine,
};
pub use convert::{Event, PollOutput, WebhookInput, WebhookOutput, WebhookReply};
use host::{HostState, Limiter, MemoryLimitHit};
use warm::{Budget, Warm, WarmPool};

use crate::manifest::RawManifest;

/// How often the epoch advances; the granularity of deadlines and of the
/// yields that keep a busy guest from starving other tasks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Wall-clock limit of one plugin call.
    pub call_timeout: Duration,
    /// Cap of each linear memory of an instance, in bytes.
    pub memory_limit: usize,
    /// Instances that may run at once (the pooling allocator's size).
    pub max_instances: u32,
    /// Where compiled artifacts are cached.
    pub cache_dir: PathBuf,
}

/// Why a component was refused at upload.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly binary: {0}")]
    NotWasm(String),
    #[error(
        "this is a core WebAssembly module, not a component; build the connector for \
         wasm32-wasip2 (or wrap the module with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("the component does not compile: {0}")]
    Compile(String),
    #[error(
        "the component imports something Switchyard does not provide ({0}); a connector may \
         import only switchyard:connector@0.1.0 and WASI 0.2 interfaces"
    )]
    Imports(String),
    #[error(
        "the component does not implement the switchyard:connector@0.1.0 `connector` world: {0}"
    )]
    Exports(String),
    #[error(
        "the component imports `switchyard:declarative/spec`: it is a declarative interpreter, \
         not a connector"
    )]
    Interpreter,
    #[error("internal: {0:#}")]
    Internal(anyhow::Error),
}

/// The import that tells the interpreter from a connector.
const SPEC_IMPORT: &str = "switchyard:declarative/spec@0.1.0";

/// The interface every connector exports its operations in.
const PLUGIN_EXPORT: &str = "switchyard:connector/plugin@0.1.0";

/// A plugin version ready to be instantiated.
#[derive(Clone)]
pub struct LoadedPlugin {
    pre: InstancePre<HostState>,
    /// Every export, type-checked when loaded into an instance: for the
    /// calls that are not on the hot path.
    indices: ConnectorIndices,
    /// The exports of the hot path (a step's `perform`, a delivery's
    /// `handle-webhook`), found once: such a call type-checks only its own
    /// export, not all seven (which took a quarter of a fresh instance's
    /// time with the Rust connector).
    hot: HotExports,
    /// A declarative version's spec (canonical JSON), handed to the
    /// interpreter by the `spec` import; `None` for a connector.
    spec: Option<Arc<str>>,
    /// A 0.2.0 connector's view, for its `auth` export.
    auth: Option<bindings::v0_2::ConnectorPre<HostState>>,
    /// Instances kept between calls of connections that opt in.
    warm: Arc<WarmPool>,
}

#[derive(Clone, Copy)]
struct HotExports {
    perform: ComponentExportIndex,
    handle_webhook: ComponentExportIndex,
}

impl HotExports {
    fn find(component: &Component) -> Option<HotExports> {
        let plugin = component.get_export_index(None, PLUGIN_EXPORT)?;
        Some(HotExports {
            perform: component.get_export_index(Some(&plugin), "perform")?,
            handle_webhook: component.get_export_index(Some(&plugin), "handle-webhook")?,
        })
    }
}

impl LoadedPlugin {
    /// Every export of `instance`, type-checked.
    fn connector(
        &self,
        store: &mut Store<HostState>,
        instance: &Instance,
    ) -> wasmtime::Result<Connector> {
        self.indices.load(store, instance)
    }

    /// The interpreter running `spec`: a declarative plugin version.
    pub fn with_spec(&self, spec: Arc<str>) -> LoadedPlugin {
        LoadedPlugin {
            pre: self.pre.clone(),
            indices: self.indices.clone(),
            hot: self.hot,
            spec: Some(spec),
            auth: self.auth.clone(),
            // The guest may keep its parsed spec: a pool of its own.
            warm: Arc::new(WarmPool::new(self.warm.budget())),
        }
    }
}

pub struct Engine {
    engine: wasmtime::Engine,
    linker: Linker<HostState>,
    /// The connector linker plus the `spec` import.
    interpreter_linker: Linker<HostState>,
    config: EngineConfig,
    compat: String,
    compilations: AtomicU64,
    ticker: Option<std::thread::JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// How many instances the warm pools of all versions may keep idle.
    warm_budget: Arc<Budget>,
}

/// How much of a freed slot's linear memory (and table) stays resident,
/// reset in place, for the next instance.
const KEEP_RESIDENT: usize = 1 << 20;

impl Engine {
    pub fn new(config: EngineConfig) -> anyhow::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 8)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 4)
            .total_stacks(config.max_instances)
            .max_memory_size(config.memory_limit)
            .max_core_instances_per_component(256)
            .max_memories_per_component(16)
            .max_tables_per_component(64)
            .max_component_instance_size(1 << 20)
            .max_core_instance_size(1 << 20)
            .table_elements(100_000)
            // Returning pages to the kernel in batches saves syscalls.
            .decommit_batch_size(16)
            // A freed memory's dirty pages (found with Linux's PAGEMAP_SCAN,
            // where the kernel has it) are reset in place up to this much,
            // instead of returned to the kernel and faulted in again by the
            // next instance in the slot.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .wasm_component_model(true);
        let engine = wasmtime::Engine::new(&wasm)
            .map_err(anyhow::Error::from)
            .context("configuring wasmtime")?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(anyhow::Error::from)
            .context("linking WASI")?;
        Connector::add_to_linker::<HostState, wasmtime::component::HasSelf<HostState>>(
            &mut linker,
            |s| s,
        )
        .map_err(anyhow::Error::from)
        .context("linking the connector imports")?;
        let mut interpreter_linker = linker.clone();
        bindings::declarative_v0_1::switchyard::declarative::spec::add_to_linker::<
            HostState,
            wasmtime::component::HasSelf<HostState>,
        >(&mut interpreter_linker, |s| s)
        .map_err(anyhow::Error::from)
        .context("linking the interpreter's spec import")?;

        let mut hasher = Sha256Hasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = hex::encode(&hasher.0.finalize()[..8]);

        std::fs::create_dir_all(&config.cache_dir)
            .with_context(|| format!("creating {}", config.cache_dir.display()))?;

        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ticker = {
            let engine = engine.weak();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("switchyard-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        match engine.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => return,
                        }
                    }
                })
                .context("starting the epoch thread")?
        };

        Ok(Engine {
            engine,
            linker,
            interpreter_linker,
            compat,
            compilations: AtomicU64::new(0),
            ticker: Some(ticker),
            stop,
            // Half the slots at most, so fresh instances always find one.
            warm_budget: Budget::new(config.max_instances as usize / 2),
            config,
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// How many components this engine has compiled (not loaded from cache).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// Hex SHA-256 of a component's bytes, its identity everywhere.
    pub fn content_hash(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// Compiles (or loads from the artifact cache) and links a component.
    /// CPU-heavy: call it from a blocking thread.
    /// A component that imports the spec is refused with
    /// [`LoadError::Interpreter`] (see [`Engine::load_interpreter`]).
    pub fn load(&self, sha256: &str, bytes: &[u8]) -> Result<LoadedPlugin, LoadError> {
        let component = self.compile_cached(sha256, bytes)?;
        if self.imports_spec(&component) {
            return Err(LoadError::Interpreter);
        }
        self.link(&self.linker, &component)
    }

    /// Compiles (or loads from the cache) and links the declarative
    /// interpreter, which imports the spec. CPU-heavy.
    pub fn load_interpreter(&self, sha256: &str, bytes: &[u8]) -> Result<LoadedPlugin, LoadError> {
        let component = self.compile_cached(sha256, bytes)?;
        if !self.imports_spec(&component) {
            return Err(LoadError::Imports(format!(
                "an interpreter must import `{SPEC_IMPORT}`"
            )));
        }
        self.link(&self.interpreter_linker, &component)
    }

    /// Whether a component is the interpreter (it imports the spec).
    /// Compiles it (cached), so the load that follows costs nothing more.
    pub fn is_interpreter(&self, sha256: &str, bytes: &[u8]) -> Result<bool, LoadError> {
        let component = self.compile_cached(sha256, bytes)?;
        Ok(self.imports_spec(&component))
    }

    fn imports_spec(&self, component: &Component) -> bool {
        component
            .component_type()
            .imports(&self.engine)
            .any(|(name, _)| name == SPEC_IMPORT)
    }

    fn link(
        &self,
        linker: &Linker<HostState>,
        component: &Component,
    ) -> Result<LoadedPlugin, LoadError> {
        let pre = linker
            .instantiate_pre(component)
            .map_err(|e| LoadError::Imports(short(&e)))?;
        // A component that also exports the 0.2.0 `auth` declares its scheme there.
        let auth = bindings::v0_2::ConnectorPre::new(pre.clone()).ok();
        let indices = ConnectorIndices::new(&pre).map_err(|e| LoadError::Exports(short(&e)))?;
        let hot = HotExports::find(component).ok_or_else(|| {
            LoadError::Exports(format!(
                "no `perform` or `handle-webhook` in `{PLUGIN_EXPORT}`"
            ))
        })?;
        Ok(LoadedPlugin {
            pre,
            indices,
            hot,
            spec: None,
            auth,
            warm: Arc::new(WarmPool::new(self.warm_budget.clone())),
        })
    }

    fn compile_cached(&self, sha256: &str, bytes: &[u8]) -> Result<Component, LoadError> {
        check_header(bytes)?;
        let artifact = self
            .config
            .cache_dir
            .join(format!("{sha256}-{}.cwasm", self.compat));
        if artifact.exists() {
            // SAFETY: the artifact was written by `Component::serialize` of an
            // engine with the same compatibility hash (it is in the file name),
            // into the host's own data directory, which plugins cannot reach.
            #[allow(unsafe_code)]
            let cached = unsafe { Component::deserialize_file(&self.engine, &artifact) };
            match cached {
                Ok(component) => return Ok(component),
                Err(e) => {
                    tracing::warn!(path = %artifact.display(), "recompiling a bad cached artifact: {e:#}")
                }
            }
        }
        let component =
            Component::new(&self.engine, bytes).map_err(|e| LoadError::Compile(short(&e)))?;
        self.compilations.fetch_add(1, Ordering::Relaxed);
        let write = || -> anyhow::Result<()> {
            let tmp = artifact.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, component.serialize()?)?;
            std::fs::rename(&tmp, &artifact)?;
            Ok(())
        };
        if let Err(e) = write() {
            // The plugin still works; the next start compiles again.
            tracing::warn!(path = %artifact.display(), "could not cache a compiled artifact: {e:#}");
        }
        Ok(component)
    }

    async fn instantiate(
        &self,
        plugin: &LoadedPlugin,
        env: CallEnv,
        timeout: Duration,
    ) -> Result<(Store<HostState>, Instance), CallError> {
        let deadline = Instant::now() + timeout;
        let limiter = Limiter {
            memory_limit: self.config.memory_limit,
        };
        let state = HostState::new(env, limiter, deadline, plugin.spec.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() >= ctx.data().deadline {
                Err(wasmtime::Error::new(DeadlineHit))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        match plugin.pre.instantiate_async(&mut store).await {
            Ok(instance) => Ok((store, instance)),
            Err(e) => Err(self.classify(e, timeout)),
        }
    }

    fn classify(&self, error: wasmtime::Error, timeout: Duration) -> CallError {
        if error.downcast_ref::<DeadlineHit>().is_some() {
            CallError::Timeout {
                limit_ms: timeout.as_millis() as u64,
            }
        } else if let Some(hit) = error.downcast_ref::<MemoryLimitHit>() {
            CallError::MemoryLimit {
                limit: self.config.memory_limit,
                desired: hit.desired,
            }
        } else if error.downcast_ref::<wasmtime::Trap>().is_some() {
            CallError::Trap {
                message: short(&error),
            }
        } else {
            CallError::Instantiate {
                message: short(&error),
            }
        }
    }

    /// Runs one export in a fresh instance (or, for a connection that opts
    /// in, a warm one: see `warm.rs`): instantiates, calls, classifies traps
    /// and collects the journal.
    async fn run<T>(
        &self,
        plugin: &LoadedPlugin,
        env: CallEnv,
        timeout: Duration,
        call: impl AsyncFnOnce(
            &Instance,
            &mut Store<HostState>,
        ) -> wasmtime::Result<Result<T, ConnectorError>>,
    ) -> CallOutcome<T> {
        let started = Instant::now();
        let key = env.warm.clone();
        let (mut store, instance, calls) = match key.as_deref().and_then(|k| plugin.warm.take(k)) {
            Some(mut warm) => {
                warm.store
                    .data_mut()
                    .begin_call(env, Instant::now() + timeout);
                warm.store.set_epoch_deadline(1);
                (warm.store, warm.instance, warm.calls)
            }
            None => match self.instantiate(plugin, env, timeout).await {
                Ok((store, instance)) => (store, instance, 0),
                Err(e) => {
                    return CallOutcome {
                        result: Err(e),
                        journal: Journal::default(),
                        duration: started.elapsed(),
                    };
                }
            },
        };
        // The epoch deadline stops guest code; this stops a host call that
        // outlives it (the sandbox's own timeouts should make it unnecessary).
        let result = match tokio::time::timeout(
            timeout + EPOCH_TICK * 10,
            call(&instance, &mut store),
        )
        .await
        {
            Ok(Ok(Ok(value))) => Ok(value),
            Ok(Ok(Err(error))) => Err(CallError::Connector { error }),
            Ok(Err(trap)) => Err(self.classify(trap, timeout)),
            Err(_) => Err(CallError::Timeout {
                limit_ms: timeout.as_millis() as u64,
            }),
        };
        // Only an instance whose call returned may serve another: after a
        // trap, a deadline or a host call cut short its state is unknown.
        let healthy = matches!(result, Ok(_) | Err(CallError::Connector { .. }));
        let journal = store.data_mut().take_journal();
        // The host's own failed sign-in outranks whatever the guest returned
        // (it may have swallowed the error, retried, or trapped on it).
        let result = match store.data_mut().login_failure.take() {
            Some(failure) => Err(CallError::Connector {
                error: failure.into(),
            }),
            None => result,
        };
        if healthy && let Some(key) = key {
            plugin.warm.put(key, Warm::new(store, instance, calls + 1));
        }
        let result = result.map_err(|e| match e {
            // A guest panic prints its message to stderr just before the trap:
            // keep them together.
            CallError::Trap { message } => match panic_message(&journal) {
                Some(panic) => CallError::Trap {
                    message: format!("{message} ({panic})"),
                },
                None => CallError::Trap { message },
            },
            other => other,
        });
        CallOutcome {
            result,
            journal,
            duration: started.elapsed(),
        }
    }

    /// Asks a plugin for its manifest (not yet validated).
    pub async fn describe(
        &self,
        plugin: &LoadedPlugin,
        timeout: Duration,
    ) -> CallOutcome<RawManifest> {
        let mut outcome = self
            .run(plugin, CallEnv::default(), timeout, async |i, s| {
                Ok(Ok(convert::manifest(
                    (plugin.connector(s, i)?.switchyard_connector_plugin())
                        .call_describe(s)
                        .await?,
                )))
            })
            .await;
        if let Ok(manifest) = &mut outcome.result {
            match self.declared_auth(plugin, timeout).await {
                Ok(Some(scheme)) if manifest.auth == crate::manifest::AuthScheme::None => {
                    manifest.auth = scheme;
                }
                Ok(Some(_)) => {
                    outcome.result = Err(CallError::Trap {
                        message: "the component exports the 0.2.0 `auth` and its manifest declares an auth scheme too; its manifest's `auth` must be `none`".into(),
                    });
                }
                Ok(None) => {}
                Err(message) => outcome.result = Err(CallError::Trap { message }),
            }
        }
        outcome
    }

    pub async fn test_connection(
        &self,
        plugin: &LoadedPlugin,
        env: CallEnv,
        ctx: GuestContext,
    ) -> CallOutcome<()> {
        let timeout = env.timeout.unwrap_or(self.config.call_timeout);
        self.run(plugin, env, timeout, async |i, s| {
            Ok((plugin.connector(s, i)?.switchyard_connector_plugin())
                .call_test_connection(s, &ctx)
                .await?
                .map_err(convert::error))
        })
        .await
    }

    pub async fn perform(
        &self,
        plugin: &LoadedPlugin,
        env: CallEnv,
        ctx: GuestContext,
        action: &str,
        input: &str,
        idempotency_key: &str,
    ) -> CallOutcome<String> {
        let (action, input, idempotency_key) = (
            action.to_string(),
            input.to_string(),
            idempotency_key.to_string(),
        );
        let timeout = env.timeout.unwrap_or(self.config.call_timeout);
        self.run(plugin, env, timeout, async |i, s| {
            let perform = perform_of(plugin, i, s)?;
            let (output,) = perform
                .call_async(s, (&ctx, &action, &input, &idempotency_key))
                .await?;
            Ok(output.map_err(convert::error))
        })
        .await
    }

    /// Calls `perform` `calls` times in one instance and returns the mean
    /// time per call: the reference point for what a fresh instance costs.
    /// Calls share the instance's memory, so this is for benchmarks, never
    /// for tenants' work.
    #[allow(clippy::too_many_arguments)]
    pub async fn perform_warm(
        &self,
        plugin: &LoadedPlugin,
        env: CallEnv,
        ctx: GuestContext,
        action: &str,
        input: &str,
        idempotency_key: &str,
        calls: u32,
    ) -> Result<Duration, CallError> {
        let timeout = Duration::from_secs(3600);
        let (mut store, instance) = self.instantiate(plugin, env, timeout).await?;
        let (action, input) = (action.to_string(), input.to_string());
        let perform =
            perform_of(plugin, &instance, &mut store).map_err(|e| self.classify(e, timeout))?;
        let started = Instant::now();
        for _ in 0..calls {
            perform
                .call_async(&mut store, (&ctx, &action, &input, idempotency_key))
                .await
                .map_err(|trap| self.classify(trap, timeout))?
                .0
                .ok();
        }
        Ok(started.elapsed() / calls.max(1))
    }

    pub async fn poll(
        &self,
        plugin: &LoadedPlugin,
        env: CallEnv,
        ctx: GuestContext,
        trigger: &str,
        params: &str,
        cursor: Option<&str>,
    ) -> CallOutcome<PollOutput> {
        let (trigger, params, cursor) = (
            trigger.to_string(),
            params.to_string(),
            cursor.map(str::to_string),
        );
        let timeout = env.timeout.unwrap_or(self.config.call_timeout);
        self.run(plugin, env, timeout, async |i, s| {
            Ok((plugin.connector(s, i)?.switchyard_connector_plugin())
                .call_poll(s, &ctx, &trigger, &params, cursor.as_deref())
                .await?
                .map(convert::poll_output)
                .map_err(convert::error))
        })
        .await
    }

    pub async fn subscribe(
        &self,
        plugin: &LoadedPlugin,
        env: CallEnv,
        ctx: GuestContext,
        trigger: &str,
        params: &str,
        target_url: &str,
    ) -> CallOutcome<String> {
        let (trigger, params, target_url) = (
            trigger.to_string(),
            params.to_string(),
            target_url.to_string(),
        );
        let timeout = env.timeout.unwrap_or(self.config.call_timeout);
        self.run(plugin, env, timeout, async |i, s| {
            Ok((plugin.connector(s, i)?.switchyard_connector_plugin())
                .call_subscribe(s, &ctx, &trigger, &params, &target_url)
                .await?
                .map_err(convert::error))
        })
        .await
    }

    pub async fn unsubscribe(
        &self,
        plugin: &LoadedPlugin,
        env: CallEnv,
        ctx: GuestContext,
        trigger: &str,
        params: &str,
        state: &str,
    ) -> CallOutcome<()> {
        let (trigger, params, state) = (trigger.to_string(), params.to_string(), state.to_string());
        let timeout = env.timeout.unwrap_or(self.config.call_timeout);
        self.run(plugin, env, timeout, async |i, s| {
            Ok((plugin.connector(s, i)?.switchyard_connector_plugin())
                .call_unsubscribe(s, &ctx, &trigger, &params, &state)
                .await?
                .map_err(convert::error))
        })
        .await
    }

    pub async fn handle_webhook(
        &self,
        plugin: &LoadedPlugin,
        env: CallEnv,
        ctx: GuestContext,
        trigger: &str,
        params: &str,
        request: WebhookInput,
    ) -> CallOutcome<WebhookOutput> {
        let request = convert::webhook_request(request);
        let (trigger, params) = (trigger.to_string(), params.to_string());
        let timeout = env.timeout.unwrap_or(self.config.call_timeout);
        self.run(plugin, env, timeout, async |i, s| {
            let handle = i.get_typed_func::<
                (&GuestContext, &str, &str, &WebhookRequest),
                (Result<WebhookOutcome, WitError>,),
            >(&mut *s, plugin.hot.handle_webhook)?;
            let (outcome,) = handle
                .call_async(s, (&ctx, &trigger, &params, &request))
                .await?;
            Ok(outcome.map(convert::webhook_output).map_err(convert::error))
        })
        .await
    }
}

/// `perform(ctx, action, input, idempotency-key)`.
type PerformFunc<'a> =
    TypedFunc<(&'a GuestContext, &'a str, &'a str, &'a str), (Result<String, WitError>,)>;

/// `perform` of an instance, type-checked alone.
fn perform_of<'a>(
    plugin: &LoadedPlugin,
    instance: &Instance,
    store: &mut Store<HostState>,
) -> wasmtime::Result<PerformFunc<'a>> {
    instance.get_typed_func(store, plugin.hot.perform)
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
    }
}

#[derive(Debug)]
struct DeadlineHit;

impl std::fmt::Display for DeadlineHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline exceeded")
    }
}

impl std::error::Error for DeadlineHit {}

/// Feeds `Hash` output into SHA-256 so the compatibility key is stable across
/// processes (std's hashers make no such promise).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        unreachable!("only the SHA-256 state is read")
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Tells garbage and core modules from components before asking Cranelift.
fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        let preview = String::from_utf8_lossy(&bytes[..bytes.len().min(16)]).into_owned();
        return Err(LoadError::NotWasm(format!(
            "{} bytes that do not start with the `\\0asm` magic (start: {preview:?})",
            bytes.len()
        )));
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Err(LoadError::CoreModule),
        [_, _, 1, 0] => Ok(()),
        _ => Err(LoadError::NotWasm(format!(
            "unknown WebAssembly version/layer {:?}",
            &bytes[4..8]
        ))),
    }
}

/// The last panic message among the warnings and stderr lines of a call.
fn panic_message(journal: &Journal) -> Option<String> {
    let lines: Vec<&str> = journal
        .logs
        .iter()
        .filter(|l| l.level == LogLevel::Warn)
        .map(|l| l.message.as_str())
        .collect();
    let start = lines.iter().rposition(|l| l.contains("panicked"))?;
    Some(
        lines[start..]
            .iter()
            .filter(|l| !l.starts_with("note: run with `RUST_BACKTRACE"))
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The causes of an error on one line, without wasmtime's backtrace frames.
fn short(error: &wasmtime::Error) -> String {
    error
        .chain()
        .map(|cause| cause.to_string())
        .filter(|text| !text.starts_with("error while executing at wasm backtrace"))
        .collect::<Vec<_>>()
        .join(": ")
}
