//! The running host: storage, engine, registry and sandbox wired together,
//! and the operations the API and CLI share.

use std::{collections::BTreeMap, sync::Arc};

use anyhow::Context as _;
use rand::RngCore;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{
    config::ServeConfig,
    engine::{CallEnv, CallError, Engine, GuestConnection, GuestContext, Journal},
    manifest::Manifest,
    registry::{Registry, RegistryError, parse_plugin_ref},
    sandbox::{HttpSandbox, Outbound, policy::HostPattern},
    store::{SharedStorage, SledStore, StorageExt},
};

const META: &str = "meta";
const TOKEN_HASH: &[u8] = b"operator_token_sha256";

pub struct App {
    pub config: ServeConfig,
    pub store: SharedStorage,
    pub engine: Arc<Engine>,
    pub registry: Registry,
    pub sandbox: HttpSandbox,
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
        let registry = Registry::open(store.clone(), engine.clone())
            .await
            .context("loading the plugin registry")?;
        let sandbox = HttpSandbox::new(config.sandbox())?;
        let app = Arc::new(App {
            config,
            store,
            engine,
            registry,
            sandbox,
            token_hash,
        });
        app.load_dirs().await;
        Ok((app, new_token))
    }

    pub fn check_token(&self, token: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Comparing digests leaks nothing useful about the token itself.
        given == self.token_hash
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

    /// What a call of `manifest`'s plugin may reach with these properties.
    pub fn outbound(&self, manifest: &Manifest, properties: &BTreeMap<String, Value>) -> Outbound {
        let allowed: Vec<HostPattern> = manifest
            .allowed_hosts
            .iter()
            .filter_map(|pattern| match HostPattern::parse(pattern, properties) {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::debug!(plugin = %manifest.key, "allowed host left out: {e}");
                    None
                }
            })
            .collect();
        Outbound {
            sandbox: self.sandbox.clone(),
            allowed: allowed.into(),
        }
    }

    /// Runs one action of a plugin by hand (`switchyard invoke`).
    pub async fn invoke(
        &self,
        plugin_ref: &str,
        action: &str,
        input: Value,
        properties: BTreeMap<String, Value>,
    ) -> Result<Invocation, RegistryError> {
        let (key, req) = parse_plugin_ref(plugin_ref)?;
        let version = self.registry.resolve(&key, &req)?;
        let plugin = self.registry.get(&key, &version)?;
        let manifest = &plugin.record.manifest;
        let Some(spec) = manifest.actions.iter().find(|a| a.key == action) else {
            let known: Vec<&str> = manifest.actions.iter().map(|a| a.key.as_str()).collect();
            return Err(RegistryError::BadRequest(format!(
                "{key}@{version} has no action `{action}` (it has: {})",
                known.join(", ")
            )));
        };
        check_against(
            &spec.input_schema,
            &input,
            &format!("input of {key}@{version} action `{action}`"),
        )?;
        let ctx = GuestContext {
            connection: Some(GuestConnection {
                id: "invoke".to_string(),
                properties: Value::Object(properties.clone().into_iter().collect()).to_string(),
            }),
            env: plugin.record.env.clone().into_iter().collect(),
            trace_id: format!("invoke-{:016x}", rand::rng().next_u64()),
        };
        let env = CallEnv {
            outbound: Some(self.outbound(manifest, &properties)),
            secrets: Default::default(),
        };
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

/// Validates `value` against a JSON Schema from a manifest, naming the place.
pub fn check_against(schema: &Value, value: &Value, what: &str) -> Result<(), RegistryError> {
    let validator = jsonschema::validator_for(schema).map_err(|e| {
        RegistryError::BadRequest(format!("{what}: the plugin's schema is unusable: {e}"))
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
        Err(RegistryError::BadRequest(format!(
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
