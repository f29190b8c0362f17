//! The running host: storage, engine, registry and sandbox wired together,
//! and the operations the API and CLI share.

use std::{collections::BTreeMap, sync::Arc};

use anyhow::Context as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    config::ServeConfig,
    connections::{ConnectionRecord, Connections, as_text, texts},
    engine::{CallEnv, CallError, Engine, GuestConnection, GuestContext, Journal},
    error::ServiceError,
    manifest::{AuthScheme, OAuth2Grant},
    registry::{PluginVersion, Registry, parse_plugin_ref},
    runs::Runtime,
    sandbox::{
        HttpSandbox, Outbound,
        auth::{AuthState, AuthStates, Credentials, PersistState, VersionEnv, pkce_pair},
        policy::HostPattern,
    },
    secrets::MasterKey,
    store::{Op, SharedStorage, SledStore, StorageExt},
    tenants::{Principal, Tenants},
    triggers::{GroupCommit, Scheduler},
};

const META: &str = "meta";
const TOKEN_HASH: &[u8] = b"operator_token_sha256";

pub struct App {
    pub config: ServeConfig,
    pub store: SharedStorage,
    pub engine: Arc<Engine>,
    pub registry: Registry,
    pub connections: Arc<Connections>,
    pub sandbox: HttpSandbox,
    pub auth_states: Arc<AuthStates>,
    pub tenants: Tenants,
    pub runtime: Runtime,
    pub scheduler: Scheduler,
    pub commit: GroupCommit,
    token_hash: [u8; 32],
}

/// The outcome of running one action by hand.
#[derive(Debug, Serialize)]
pub struct Invocation {
    pub plugin: String,
    pub action: String,
    pub output: Option<Value>,
    pub error: Option<CallError>,
    pub duration_ms: f64,
    pub journal: Journal,
}

impl App {
    /// Opens the data directory and loads every plugin. Returns the operator
    /// token too when it was generated now (to be shown once).
    pub async fn open(config: ServeConfig) -> anyhow::Result<(Arc<App>, Option<String>)> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
        let store: SharedStorage = Arc::new(
            SledStore::open(&config.data_dir)
                .with_context(|| format!("opening storage in {}", config.data_dir.display()))?,
        );
        let (token_hash, new_token) = operator_token(&*store, config.token.as_deref())?;
        let engine = Arc::new(Engine::new(config.engine())?);
        let master_key = Arc::new(MasterKey::load_or_create(
            config.master_key.as_deref(),
            &config.data_dir.join("master.key"),
        )?);
        let registry = Registry::open(store.clone(), engine.clone(), master_key.clone())
            .await
            .context("loading the plugin registry")?;
        let connections = Arc::new(Connections::new(store.clone(), master_key));
        let sandbox = HttpSandbox::new(config.sandbox())?;
        let tenants = Tenants::new(store.clone());
        let runtime = Runtime::new(config.runtime());
        let commit = GroupCommit::start(store.clone());
        let app = Arc::new(App {
            config,
            store,
            engine,
            registry,
            connections,
            sandbox,
            auth_states: Default::default(),
            tenants,
            runtime,
            scheduler: Scheduler::default(),
            commit,
            token_hash,
        });
        app.load_dirs().await;
        Ok((app, new_token))
    }

    /// Starts the background work: run dispatchers, the trigger scheduler,
    /// the webhook inbox worker (which also finishes deliveries accepted
    /// before a crash) and retention. [`App::shutdown`] stops them.
    pub fn start(self: &Arc<Self>) {
        self.start_dispatchers();
        self.start_scheduler();
        self.start_inbox_worker();
        let app = self.clone();
        self.runtime.spawn(async move {
            let mut shutdown = app.runtime.shutdown_signal();
            loop {
                match app.prune(crate::runs::record::now_ms()) {
                    Ok(report)
                        if report.runs + report.dedup_entries + report.rejected_deliveries > 0 =>
                    {
                        tracing::info!(?report, "pruned old runs and de-duplication entries")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!("pruning: {e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(300)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        });
    }

    /// Stops the background work; runs in flight finish their current step.
    pub async fn shutdown(&self) {
        self.runtime.shutdown().await;
    }

    /// Who a bearer token belongs to: the operator, a tenant, or nobody.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>, ServiceError> {
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Comparing digests leaks nothing useful about the token itself.
        if given == self.token_hash {
            return Ok(Some(Principal::Operator));
        }
        Ok(self.tenants.by_token(token)?.map(Principal::Tenant))
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
                .filter(|p| p.extension().is_some_and(|ext| ext == "wasm"))
                .collect();
            paths.sort();
            for path in paths {
                let result = match std::fs::read(&path) {
                    Ok(bytes) => self
                        .registry
                        .upload(bytes, None)
                        .await
                        .map_err(|e| e.to_string()),
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

    /// Everything a call of `plugin` needs: what it may reach, the
    /// connection's credentials (kept by the host) and the guest's context
    /// (non-secret properties and environment variables only).
    pub fn call_setup(
        &self,
        plugin: &PluginVersion,
        connection: Option<&ConnectionRecord>,
        adhoc_properties: BTreeMap<String, Value>,
        trace_id: String,
    ) -> Result<(CallEnv, GuestContext), ServiceError> {
        let manifest = &plugin.record.manifest;
        let (plain, secrets, connection_id) = match connection {
            Some(c) => {
                if c.plugin != manifest.key {
                    return Err(ServiceError::BadRequest(format!(
                        "connection `{}` belongs to plugin `{}`, not `{}`",
                        c.id, c.plugin, manifest.key
                    )));
                }
                (
                    c.properties.clone(),
                    self.connections.secrets(c)?,
                    c.id.clone(),
                )
            }
            None => {
                if let Some(secret) = manifest
                    .connection_properties
                    .iter()
                    .find(|p| p.secret && adhoc_properties.contains_key(&p.key))
                {
                    return Err(ServiceError::BadRequest(format!(
                        "property `{}` is secret: create a connection for it instead of passing it here",
                        secret.key
                    )));
                }
                (adhoc_properties, BTreeMap::new(), String::new())
            }
        };
        let allowed: Vec<HostPattern> = manifest
            .allowed_hosts
            .iter()
            .filter_map(|pattern| match HostPattern::parse(pattern, &plain) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::debug!(plugin = %manifest.key, "allowed host left out: {e}");
                    None
                }
            })
            .collect();
        // The version's secret variables serve the host's auth only.
        let secret_env = match connection {
            Some(_) => self.registry.secret_env(&plugin.record)?,
            None => BTreeMap::new(),
        };
        let credentials = connection.map(|c| {
            let mut values = texts(&plain);
            values.extend(texts(&secrets));
            let persist: PersistState = {
                let connections = self.connections.clone();
                let tenant = c.tenant.clone();
                Arc::new(move |id: &str, state: &AuthState| {
                    if let Err(e) = connections.save_auth_state(&tenant, id, state) {
                        tracing::error!(connection = id, "cannot store new tokens: {e}");
                    }
                })
            };
            Arc::new(Credentials {
                connection_id: c.id.clone(),
                scheme: manifest.auth.clone(),
                values,
                secrets: (secrets.values().map(as_text))
                    .chain(secret_env.values().cloned())
                    .collect(),
                env: VersionEnv {
                    plain: plugin.record.env.clone(),
                    secret: secret_env.clone(),
                },
                stored: self.connections.auth_state(c),
                states: self.auth_states.clone(),
                persist: Some(persist),
                tokens: Default::default(),
            })
        });
        let limiter = manifest.rate_limit.as_ref().map(|limit| {
            self.sandbox
                .limiter(&format!("{}:{connection_id}", manifest.key), limit)
        });
        let env = CallEnv {
            outbound: Some(Outbound {
                sandbox: self.sandbox.clone(),
                allowed: allowed.into(),
                credentials,
                limiter,
            }),
            secrets: Arc::new(texts(&secrets)),
        };
        let ctx = GuestContext {
            connection: Some(GuestConnection {
                id: if connection_id.is_empty() {
                    "adhoc".to_string()
                } else {
                    connection_id
                },
                properties: Value::Object(plain.into_iter().collect()).to_string(),
            }),
            env: plugin.record.env.clone().into_iter().collect(),
            trace_id,
        };
        Ok((env, ctx))
    }

    /// The newest non-deprecated version of a connection's plugin.
    fn plugin_for(&self, connection: &ConnectionRecord) -> Result<PluginVersion, ServiceError> {
        let version = self
            .registry
            .resolve(&connection.plugin, &semver::VersionReq::STAR)?;
        self.registry.get(&connection.plugin, &version)
    }

    /// Creates a connection for the newest version of `plugin_key`.
    pub fn create_connection(
        &self,
        tenant: &str,
        plugin_key: &str,
        name: &str,
        properties: serde_json::Map<String, Value>,
    ) -> Result<ConnectionRecord, ServiceError> {
        let version = self
            .registry
            .resolve(plugin_key, &semver::VersionReq::STAR)?;
        let plugin = self.registry.get(plugin_key, &version)?;
        self.connections
            .create(tenant, &plugin.record.manifest, name, properties)
    }

    pub fn update_connection(
        &self,
        tenant: &str,
        id: &str,
        name: Option<&str>,
        properties: serde_json::Map<String, Value>,
    ) -> Result<ConnectionRecord, ServiceError> {
        let record = self.connections.get(tenant, id)?;
        let plugin = self.plugin_for(&record)?;
        let updated =
            self.connections
                .update(tenant, id, &plugin.record.manifest, name, properties)?;
        self.auth_states.forget(id);
        Ok(updated)
    }

    pub fn delete_connection(&self, tenant: &str, id: &str) -> Result<(), ServiceError> {
        self.connections.delete(tenant, id)?;
        self.auth_states.forget(id);
        Ok(())
    }

    /// Runs the plugin's `test-connection` through the sandbox.
    pub async fn test_connection(&self, tenant: &str, id: &str) -> Result<Value, ServiceError> {
        let record = self.connections.get(tenant, id)?;
        let plugin = self.plugin_for(&record)?;
        let (env, ctx) =
            self.call_setup(&plugin, Some(&record), BTreeMap::new(), trace_id("test"))?;
        let outcome = self.engine.test_connection(&plugin.plugin, env, ctx).await;
        Ok(json!({
            "ok": outcome.result.is_ok(),
            "plugin": format!("{}@{}", plugin.record.key, plugin.record.version),
            "error": outcome.result.err(),
            "journal": outcome.journal,
            "duration_ms": outcome.duration.as_secs_f64() * 1e3,
        }))
    }

    /// Starts the OAuth authorization code flow: returns the URL to send the
    /// user to. `base_url` is where this host is reachable by the browser.
    pub fn oauth_authorize(
        &self,
        tenant: &str,
        id: &str,
        base_url: &str,
    ) -> Result<Value, ServiceError> {
        let record = self.connections.get(tenant, id)?;
        let plugin = self.plugin_for(&record)?;
        if !matches!(
            plugin.record.manifest.auth,
            AuthScheme::Oauth2 {
                grant: OAuth2Grant::AuthorizationCode,
                ..
            }
        ) {
            return Err(ServiceError::BadRequest(format!(
                "plugin `{}` does not use the OAuth authorization code grant",
                record.plugin
            )));
        }
        let redirect_uri = format!("{}/oauth/callback", base_url.trim_end_matches('/'));
        let (verifier, challenge) = pkce_pair();
        let mut state_bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut state_bytes);
        let state = hex::encode(state_bytes);
        let (outbound, credentials) = self.oauth_credentials(&plugin, &record)?;
        let url = credentials
            .authorization_url(&outbound.allowed, &redirect_uri, &state, &challenge)
            .map_err(ServiceError::BadRequest)?;
        let pending = PendingOAuth {
            tenant: tenant.to_string(),
            connection_id: id.to_string(),
            verifier,
            redirect_uri: redirect_uri.clone(),
            expires_at: unix_now() + OAUTH_PENDING_SECS,
        };
        self.store
            .put_json(OAUTH_PENDING, state.as_bytes(), &pending)?;
        self.store.flush()?;
        Ok(
            json!({"authorize_url": url, "redirect_uri": redirect_uri, "expires_in": OAUTH_PENDING_SECS}),
        )
    }

    /// Finishes the OAuth flow: exchanges the code and stores the tokens.
    pub async fn oauth_callback(
        &self,
        state: &str,
        code: &str,
    ) -> Result<ConnectionRecord, ServiceError> {
        let pending: PendingOAuth = self
            .store
            .get_json(OAUTH_PENDING, state.as_bytes())?
            .filter(|p: &PendingOAuth| p.expires_at > unix_now())
            .ok_or_else(|| {
                ServiceError::BadRequest("unknown or expired OAuth state; start again".into())
            })?;
        // One use only.
        self.store.apply(vec![Op::Delete {
            tree: OAUTH_PENDING,
            key: state.as_bytes().to_vec(),
        }])?;
        let record = self
            .connections
            .get(&pending.tenant, &pending.connection_id)?;
        let plugin = self.plugin_for(&record)?;
        if !matches!(plugin.record.manifest.auth, AuthScheme::Oauth2 { .. }) {
            return Err(ServiceError::BadRequest(
                "the plugin no longer uses OAuth".into(),
            ));
        }
        let (outbound, credentials) = self.oauth_credentials(&plugin, &record)?;
        let (result, _exchanges) = credentials
            .exchange_code(
                &self.sandbox,
                &outbound.allowed,
                code,
                &pending.redirect_uri,
                &pending.verifier,
            )
            .await;
        let tokens = result
            .map_err(|e| ServiceError::BadRequest(format!("the code exchange failed: {e}")))?;
        self.connections
            .save_auth_state(&pending.tenant, &pending.connection_id, &tokens)?;
        self.auth_states.forget(&pending.connection_id);
        self.connections
            .get(&pending.tenant, &pending.connection_id)
    }

    /// What the OAuth flow signs in with: the connection's credentials as a
    /// call would hold them (the version's client if the connection has
    /// none), and the hosts the plugin may reach.
    fn oauth_credentials(
        &self,
        plugin: &PluginVersion,
        record: &ConnectionRecord,
    ) -> Result<(Outbound, Arc<Credentials>), ServiceError> {
        let (env, _) = self.call_setup(plugin, Some(record), BTreeMap::new(), trace_id("oauth"))?;
        let outbound = env
            .outbound
            .expect("a call with a connection may reach its hosts");
        let credentials = (outbound.credentials.clone()).expect("a connection has credentials");
        Ok((outbound, credentials))
    }

    /// Runs one action of a plugin by hand (`switchyard invoke`), with a
    /// stored connection or with ad-hoc non-secret properties.
    pub async fn invoke(
        &self,
        tenant: &str,
        plugin_ref: &str,
        action: &str,
        input: Value,
        connection: Option<&str>,
        properties: BTreeMap<String, Value>,
    ) -> Result<Invocation, ServiceError> {
        let (key, req) = parse_plugin_ref(plugin_ref)?;
        let version = self.registry.resolve(&key, &req)?;
        let plugin = self.registry.get(&key, &version)?;
        let manifest = &plugin.record.manifest;
        let Some(spec) = manifest.actions.iter().find(|a| a.key == action) else {
            let known: Vec<&str> = manifest.actions.iter().map(|a| a.key.as_str()).collect();
            return Err(ServiceError::BadRequest(format!(
                "{key}@{version} has no action `{action}` (it has: {})",
                known.join(", ")
            )));
        };
        check_against(
            &spec.input_schema,
            &input,
            &format!("input of {key}@{version} action `{action}`"),
        )?;
        let connection = connection
            .map(|id| self.connections.get(tenant, id))
            .transpose()?;
        let (env, ctx) =
            self.call_setup(&plugin, connection.as_ref(), properties, trace_id("invoke"))?;
        let idempotency_key = ctx.trace_id.clone();
        let outcome = self
            .engine
            .perform(
                &plugin.plugin,
                env,
                ctx,
                action,
                &input.to_string(),
                &idempotency_key,
            )
            .await;
        let (output, error) = match outcome.result {
            Ok(text) => match serde_json::from_str(&text) {
                Ok(value) => (Some(value), None),
                Err(e) => (
                    None,
                    Some(CallError::Trap {
                        message: format!("the plugin returned output that is not JSON: {e}"),
                    }),
                ),
            },
            Err(e) => (None, Some(e)),
        };
        Ok(Invocation {
            plugin: format!("{key}@{version}"),
            action: action.to_string(),
            output,
            error,
            duration_ms: outcome.duration.as_secs_f64() * 1e3,
            journal: outcome.journal,
        })
    }
}

const OAUTH_PENDING: &str = "oauth_pending";
const OAUTH_PENDING_SECS: u64 = 600;

/// An authorization code flow waiting for its callback.
#[derive(Serialize, Deserialize)]
struct PendingOAuth {
    tenant: String,
    connection_id: String,
    verifier: String,
    redirect_uri: String,
    expires_at: u64,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn trace_id(kind: &str) -> String {
    format!("{kind}-{:016x}", rand::rng().next_u64())
}

/// Compiled validators by schema text: schemas come from manifests, so there
/// are few of them, and compiling one costs far more than using it.
static VALIDATORS: std::sync::LazyLock<
    std::sync::Mutex<std::collections::HashMap<String, Arc<jsonschema::Validator>>>,
> = std::sync::LazyLock::new(Default::default);

const MAX_CACHED_VALIDATORS: usize = 4096;

fn validator(schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
    let key = schema.to_string();
    let mut cache = VALIDATORS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(v) = cache.get(&key) {
        return Ok(v.clone());
    }
    let compiled = Arc::new(jsonschema::validator_for(schema).map_err(|e| e.to_string())?);
    if cache.len() >= MAX_CACHED_VALIDATORS {
        cache.clear();
    }
    cache.insert(key, compiled.clone());
    Ok(compiled)
}

/// Validates `value` against a JSON Schema from a manifest, naming the place.
pub fn check_against(schema: &Value, value: &Value, what: &str) -> Result<(), ServiceError> {
    let validator = validator(schema).map_err(|e| {
        ServiceError::BadRequest(format!("{what}: the plugin's schema is unusable: {e}"))
    })?;
    let problems: Vec<String> = validator
        .iter_errors(value)
        .map(|e| {
            let at = e.instance_path().to_string();
            format!(
                "{}: {e}",
                if at.is_empty() {
                    "(root)".to_string()
                } else {
                    at
                }
            )
        })
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ServiceError::BadRequest(format!(
            "{what} is invalid: {}",
            problems.join("; ")
        )))
    }
}

fn operator_token(
    store: &dyn crate::store::Storage,
    configured: Option<&str>,
) -> anyhow::Result<([u8; 32], Option<String>)> {
    if let Some(token) = configured {
        anyhow::ensure!(
            token.len() >= 16,
            "the operator token must be at least 16 characters"
        );
        return Ok((Sha256::digest(token.as_bytes()).into(), None));
    }
    if let Some(hex_hash) = store.get_json::<String>(META, TOKEN_HASH)? {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&hex_hash, &mut hash)
            .context("stored operator token hash is corrupt")?;
        return Ok((hash, None));
    }
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("sy_{}", hex::encode(bytes));
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    store.put_json(META, TOKEN_HASH, &hex::encode(hash))?;
    store.flush()?;
    Ok((hash, Some(token)))
}
