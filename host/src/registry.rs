//! The plugin registry: uploads, versions side by side, deprecation,
//! deletion, semver resolution, per-version environment variables (plain
//! ones for the guest, secret ones sealed for the host's auth), and the
//! loaded (ready to instantiate) plugins.
//!
//! A version is a component (code) or a declarative spec. A spec runs in
//! the declarative interpreter, a component uploaded once and kept by its
//! hash: a declarative version's record names the interpreter it was pushed
//! with and holds its canonical spec, so a later interpreter never changes
//! a published version.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    time::Duration,
};

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use crate::{
    clock::now_secs,
    connector::{Connector, WasmConnector},
    declarative::{self, Declared},
    engine::{Engine, LoadError, LoadedPlugin},
    error::ServiceError,
    manifest::{self, Manifest},
    secrets::MasterKey,
    store::{Kv, KvExt, Tree},
};

const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which version an upload is stored as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Versioning {
    /// The version the manifest declares; with `Some`, only if it is that one.
    Declared(Option<Version>),
    /// A development build (`switchyard connector watch`): the next
    /// `X.Y.Z-dev.N` pre-release of the declared `X.Y.Z`. Requirements
    /// without a pre-release never match one, so flows keep their release.
    NextDev,
}

/// A stored plugin version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginRecord {
    pub key: String,
    pub version: Version,
    pub sha256: String,
    pub size: usize,
    /// Seconds since the Unix epoch.
    pub uploaded_at: u64,
    pub deprecated: bool,
    pub manifest: Manifest,
    /// Environment variables handed to every call of this version.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Secret environment variables, each sealed under the master key and
    /// bound to `key@version` and its name. Only the host reads them (for
    /// an app's OAuth client or partner key); never the guest, nor the API.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_env: BTreeMap<String, String>,
    /// A component, or a spec run by the interpreter.
    #[serde(default)]
    pub kind: PluginKind,
}

/// What a plugin version is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum PluginKind {
    /// A WebAssembly component (its bytes are the blob `sha256`).
    #[default]
    Component,
    /// A declarative spec (its text is the blob `sha256`), run by the
    /// interpreter component `interpreter` (a sha256).
    Declarative {
        interpreter: String,
        /// The spec as the interpreter reads it (`declarative_spec::Envelope`).
        canonical: String,
    },
}

/// A stored declarative interpreter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InterpreterRecord {
    pub sha256: String,
    pub size: usize,
    /// The version it describes itself with.
    pub version: String,
    pub uploaded_at: u64,
}

/// A plugin version, ready to call.
#[derive(Clone)]
pub struct PluginVersion {
    /// Shared: every call of the version holds it (a manifest is cloned
    /// by no call).
    pub record: Arc<PluginRecord>,
    pub connector: Arc<dyn Connector>,
}

impl PluginVersion {
    /// `key@version`, as runs and logs name it.
    pub fn name(&self) -> String {
        format!("{}@{}", self.record.key, self.record.version)
    }
}

pub struct Registry {
    kv: Arc<dyn Kv>,
    engine: Arc<Engine>,
    /// Interpreters by sha256, compiled once, shared by every declarative
    /// version pushed with them; and the newest, which new pushes use.
    interpreters: RwLock<HashMap<String, LoadedPlugin>>,
    newest_interpreter: RwLock<Option<InterpreterRecord>>,
    /// Seals and opens secret environment variables.
    key: Arc<MasterKey>,
    loaded: RwLock<Loaded>,
    broken: RwLock<Broken>,
    /// Serialises uploads and deletions so check-then-write is atomic.
    writes: tokio::sync::Mutex<()>,
}

/// What a secret variable's seal is bound to: it opens only as the same
/// variable of the same version.
fn env_context(key: &str, version: &Version, name: &str) -> Vec<u8> {
    format!("plugin-env/{key}@{version}/{name}").into_bytes()
}

impl Registry {
    /// Opens the registry and loads every stored version (from the artifact
    /// cache: a restart does not recompile).
    pub async fn open(
        kv: Arc<dyn Kv>,
        engine: Arc<Engine>,
        key: Arc<MasterKey>,
    ) -> Result<Self, ServiceError> {
        let records: Vec<PluginRecord> = kv.scan_json(Tree::Plugins, &[])?;
        let mut interpreters: Vec<InterpreterRecord> = kv.scan_json(Tree::Interpreters, &[])?;
        interpreters.sort_by_key(|i| i.uploaded_at);
        let newest_interpreter = interpreters.last().cloned();
        let (loaded, broken, interpreters) = {
            let kv = kv.clone();
            let engine = engine.clone();
            tokio::task::spawn_blocking(move || load_all(&*kv, &engine, records, interpreters))
                .await
                .expect("loading plugins does not panic")
        };
        Ok(Registry {
            kv,
            engine,
            interpreters: RwLock::new(interpreters),
            newest_interpreter: RwLock::new(newest_interpreter),
            key,
            loaded: RwLock::new(loaded),
            broken: RwLock::new(broken),
            writes: tokio::sync::Mutex::new(()),
        })
    }

    /// Validates and stores a component. Returns the record and whether it
    /// is new (`false`: the same bytes were already stored under its version).
    /// A spec (YAML or JSON text) is pushed as a declarative version; the
    /// interpreter component is refused here with `LoadError::Interpreter`
    /// (see [`Registry::upload_interpreter`]).
    pub async fn upload(
        &self,
        bytes: Vec<u8>,
        expected_version: Option<Version>,
    ) -> Result<(PluginRecord, bool), ServiceError> {
        self.upload_as(bytes, Versioning::Declared(expected_version))
            .await
    }

    /// [`Registry::upload`], stored as `versioning` says.
    pub async fn upload_as(
        &self,
        bytes: Vec<u8>,
        versioning: Versioning,
    ) -> Result<(PluginRecord, bool), ServiceError> {
        if declarative::is_spec(&bytes) {
            let text = String::from_utf8(bytes).map_err(|e| {
                ServiceError::BadRequest(format!("the spec is not UTF-8 text: {e}"))
            })?;
            return self.push_spec_as(&text, versioning).await;
        }
        let sha256 = Engine::content_hash(&bytes);
        let bytes = Arc::new(bytes);
        let plugin = {
            let (engine, bytes, sha256) = (self.engine.clone(), bytes.clone(), sha256.clone());
            // A panic while compiling a hostile component must not take the
            // host down: it becomes a refusal like any other compile error.
            tokio::task::spawn_blocking(move || engine.load(&sha256, &bytes))
                .await
                .map_err(|e| LoadError::Compile(format!("the compiler failed: {e}")))??
        };
        let described = self.engine.describe(&plugin, DESCRIBE_TIMEOUT).await;
        let manifest = described
            .result
            .map_err(ServiceError::Describe)?
            .validate()
            .map_err(ServiceError::Manifest)?;
        self.store(
            manifest,
            sha256,
            bytes,
            versioning,
            PluginKind::Component,
            plugin,
        )
        .await
    }

    /// Checks a declarative spec and stores it as a plugin version run by
    /// the newest interpreter. Nothing is stored unless every check passes.
    pub async fn push_spec(
        &self,
        text: &str,
        expected_version: Option<Version>,
    ) -> Result<(PluginRecord, bool), ServiceError> {
        self.push_spec_as(text, Versioning::Declared(expected_version))
            .await
    }

    async fn push_spec_as(
        &self,
        text: &str,
        versioning: Versioning,
    ) -> Result<(PluginRecord, bool), ServiceError> {
        let Declared {
            manifest,
            canonical,
            ..
        } = declarative::parse(text).map_err(ServiceError::Spec)?;
        let (interpreter, loaded) = self.interpreter()?;
        let sha256 = Engine::content_hash(text.as_bytes());
        let plugin = loaded.with_spec(canonical.as_str().into());
        let kind = PluginKind::Declarative {
            interpreter: interpreter.sha256,
            canonical,
        };
        self.store(
            manifest,
            sha256,
            Arc::new(text.as_bytes().to_vec()),
            versioning,
            kind,
            plugin,
        )
        .await
    }

    /// The newest interpreter, loaded.
    pub fn interpreter(&self) -> Result<(InterpreterRecord, LoadedPlugin), ServiceError> {
        let newest = self
            .newest_interpreter
            .read()
            .expect("registry lock")
            .clone()
            .ok_or_else(|| {
                ServiceError::State(
                    "no declarative interpreter is loaded: upload the interpreter component \
                     (plugins/declarative/interpreter, declarative_interpreter.wasm) first"
                        .to_string(),
                )
            })?;
        let loaded = self
            .interpreters
            .read()
            .expect("registry lock")
            .get(&newest.sha256)
            .cloned()
            .ok_or_else(|| {
                ServiceError::Internal(format!("interpreter {} is not loaded", newest.sha256))
            })?;
        Ok((newest, loaded))
    }

    /// Stores the declarative interpreter component (identical bytes: a
    /// no-op). New declarative pushes use the newest one uploaded.
    pub async fn upload_interpreter(
        &self,
        bytes: Vec<u8>,
    ) -> Result<(InterpreterRecord, bool), ServiceError> {
        let sha256 = Engine::content_hash(&bytes);
        let bytes = Arc::new(bytes);
        let plugin = {
            let (engine, bytes, sha256) = (self.engine.clone(), bytes.clone(), sha256.clone());
            tokio::task::spawn_blocking(move || engine.load_interpreter(&sha256, &bytes))
                .await
                .map_err(|e| LoadError::Compile(format!("the compiler failed: {e}")))??
        };
        // Without a spec it describes itself.
        let described = self.engine.describe(&plugin, DESCRIBE_TIMEOUT).await;
        let version = described.result.map_err(ServiceError::Describe)?.version;
        let _guard = self.writes.lock().await;
        if let Some(existing) = self
            .kv
            .get_json::<InterpreterRecord>(Tree::Interpreters, &[&sha256])?
        {
            return Ok((existing, false));
        }
        let record = InterpreterRecord {
            sha256: sha256.clone(),
            size: bytes.len(),
            version,
            uploaded_at: now_secs(),
        };
        self.kv.put_blob(&sha256, &bytes)?;
        self.kv.put_json(Tree::Interpreters, &[&sha256], &record)?;
        self.interpreters
            .write()
            .expect("registry lock")
            .insert(sha256, plugin);
        *self.newest_interpreter.write().expect("registry lock") = Some(record.clone());
        Ok((record, true))
    }

    /// A declarative version that is not stored, for a live test: the
    /// newest interpreter running `declared` with `limits`.
    pub fn draft(
        &self,
        declared: &Declared,
        limits: declarative::Limits,
    ) -> Result<PluginVersion, ServiceError> {
        let (interpreter, loaded) = self.interpreter()?;
        let canonical = declarative::with_limits(&declared.spec, limits);
        let mut manifest = declared.manifest.clone();
        manifest::add_custom_api_call(&mut manifest);
        let record = PluginRecord {
            key: manifest.key.clone(),
            version: manifest.version.clone(),
            sha256: String::new(),
            size: 0,
            uploaded_at: now_secs(),
            deprecated: false,
            manifest,
            env: BTreeMap::new(),
            secret_env: BTreeMap::new(),
            kind: PluginKind::Declarative {
                interpreter: interpreter.sha256,
                canonical: canonical.clone(),
            },
        };
        Ok(PluginVersion {
            record: Arc::new(record),
            connector: self.connector(loaded.with_spec(canonical.into())),
        })
    }

    /// Stores a checked version (blob first, then the record).
    async fn store(
        &self,
        mut manifest: Manifest,
        sha256: String,
        bytes: Arc<Vec<u8>>,
        versioning: Versioning,
        kind: PluginKind,
        plugin: LoadedPlugin,
    ) -> Result<(PluginRecord, bool), ServiceError> {
        let _guard = self.writes.lock().await;
        match versioning {
            Versioning::Declared(Some(expected)) if expected != manifest.version => {
                return Err(ServiceError::VersionMismatch {
                    expected,
                    found: manifest.version,
                });
            }
            Versioning::Declared(_) => {}
            Versioning::NextDev => {
                if !manifest.version.pre.is_empty() {
                    return Err(ServiceError::BadRequest(format!(
                        "{} declares the pre-release {}: a development build is numbered \
                         from a release version (X.Y.Z)",
                        manifest.key, manifest.version
                    )));
                }
                let existing = self.versions(&manifest.key)?;
                // An unchanged build is the version it already is.
                if let Some(same) = existing.iter().find(|r| r.sha256 == sha256) {
                    return Ok((same.clone(), false));
                }
                let versions: Vec<&Version> = existing.iter().map(|r| &r.version).collect();
                manifest.version = next_dev_version(&manifest.version, &versions);
            }
        }
        manifest::add_custom_api_call(&mut manifest);

        let id = (manifest.key.clone(), manifest.version.clone());
        if let Some(existing) = self
            .kv
            .get_json::<PluginRecord>(Tree::Plugins, &[&id.0, &id.1.to_string()])?
        {
            if existing.sha256 == sha256 {
                return Ok((existing, false));
            }
            return Err(ServiceError::Conflict {
                key: id.0,
                version: id.1,
                existing: existing.sha256,
            });
        }
        // Like Zapier, a new version starts with the newest older version's
        // variables; the secret ones are sealed again for the new version.
        let previous = self
            .versions(&manifest.key)?
            .into_iter()
            .filter(|r| r.version < manifest.version)
            .max_by(|a, b| a.version.cmp(&b.version));
        let (env, secret_env) = match previous {
            Some(previous) => {
                let secret_env = self
                    .secret_env(&previous)?
                    .into_iter()
                    .map(|(name, value)| {
                        let context = env_context(&id.0, &id.1, &name);
                        (name, self.key.seal(&context, value.as_bytes()))
                    })
                    .collect();
                (previous.env, secret_env)
            }
            None => Default::default(),
        };
        let record = PluginRecord {
            key: id.0.clone(),
            version: id.1.clone(),
            sha256: sha256.clone(),
            size: bytes.len(),
            uploaded_at: now_secs(),
            deprecated: false,
            manifest,
            env,
            kind,
            secret_env,
        };
        // The blob first: a crash in between leaves an unreferenced blob, never
        // a record without its code.
        self.kv.put_blob(&sha256, &bytes)?;
        self.kv
            .put_json(Tree::Plugins, &[&id.0, &id.1.to_string()], &record)?;
        self.loaded.write().expect("registry lock").insert(
            id,
            PluginVersion {
                record: Arc::new(record.clone()),
                connector: self.connector(plugin),
            },
        );
        Ok((record, true))
    }

    /// Every stored version of every plugin, by key then version.
    pub fn list(&self) -> Result<Vec<PluginRecord>, ServiceError> {
        let mut records: Vec<PluginRecord> = self.kv.scan_json(Tree::Plugins, &[])?;
        records.sort_by(|a, b| a.key.cmp(&b.key).then(a.version.cmp(&b.version)));
        Ok(records)
    }

    /// Every stored version of one plugin, oldest first.
    pub fn versions(&self, key: &str) -> Result<Vec<PluginRecord>, ServiceError> {
        let mut records: Vec<PluginRecord> = self.kv.scan_json(Tree::Plugins, &[key])?;
        records.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(records)
    }

    pub fn record(&self, key: &str, version: &Version) -> Result<PluginRecord, ServiceError> {
        self.kv
            .get_json(Tree::Plugins, &[key, &version.to_string()])?
            .ok_or_else(|| ServiceError::NotFound(format!("plugin {key}@{version} does not exist")))
    }

    /// The text a declarative version was pushed as (YAML or JSON, as its
    /// author wrote it); `None` for a component.
    pub fn spec_text(&self, key: &str, version: &Version) -> Result<Option<String>, ServiceError> {
        let record = self.record(key, version)?;
        if record.kind == PluginKind::Component {
            return Ok(None);
        }
        let bytes = self.kv.get_blob(&record.sha256)?.ok_or_else(|| {
            ServiceError::Internal(format!("the spec of {key}@{version} is missing"))
        })?;
        String::from_utf8(bytes)
            .map(Some)
            .map_err(|e| ServiceError::Internal(format!("the spec of {key}@{version}: {e}")))
    }

    /// The newest non-deprecated version of `key` that satisfies `req`.
    pub fn resolve(&self, key: &str, req: &VersionReq) -> Result<Version, ServiceError> {
        let versions = self.versions(key)?;
        if versions.is_empty() {
            return Err(ServiceError::NotFound(format!(
                "plugin `{key}` does not exist"
            )));
        }
        let candidates: Vec<(Version, bool)> = versions
            .into_iter()
            .map(|r| (r.version, r.deprecated))
            .collect();
        resolve_version(&candidates, req).ok_or_else(|| {
            ServiceError::NotFound(format!(
                "no non-deprecated version of `{key}` satisfies `{req}`"
            ))
        })
    }

    /// The newest non-deprecated version of `key`, ready to call.
    pub fn newest(&self, key: &str) -> Result<PluginVersion, ServiceError> {
        let version = self.resolve(key, &VersionReq::STAR)?;
        self.get(key, &version)
    }

    /// The version of `key` that satisfies `req` best (see [`Registry::resolve`]).
    pub fn resolved(&self, key: &str, req: &VersionReq) -> Result<PluginVersion, ServiceError> {
        let version = self.resolve(key, req)?;
        self.get(key, &version)
    }

    /// A loaded version, ready to call.
    pub fn get(&self, key: &str, version: &Version) -> Result<PluginVersion, ServiceError> {
        let id = (key.to_string(), version.clone());
        if let Some(found) = self.loaded.read().expect("registry lock").get(&id) {
            return Ok(found.clone());
        }
        if let Some(reason) = self.broken.read().expect("registry lock").get(&id) {
            return Err(ServiceError::Unavailable {
                key: id.0,
                version: id.1,
                reason: reason.clone(),
            });
        }
        // Uploaded through another node of a shared store since this one
        // started: loaded (and compiled into this node's cache) on first use.
        if let Some(record) = self
            .kv
            .get_json::<PluginRecord>(Tree::Plugins, &[key, &version.to_string()])?
        {
            // A declarative version needs its interpreter, which may have
            // come the same way: the ones not loaded here yet come along.
            let missing: Vec<InterpreterRecord> = match &record.kind {
                PluginKind::Declarative { interpreter, .. }
                    if !self
                        .interpreters
                        .read()
                        .expect("registry lock")
                        .contains_key(interpreter) =>
                {
                    self.kv.scan_json(Tree::Interpreters, &[])?
                }
                _ => Vec::new(),
            };
            let known = self.interpreters.read().expect("registry lock").clone();
            let load = || {
                let (loaded, broken, mut interpreters) =
                    load_all(&*self.kv, &self.engine, Vec::new(), missing);
                interpreters.extend(known);
                let (versions, failed) =
                    load_with(&*self.kv, &self.engine, vec![record], &interpreters);
                (
                    loaded.into_iter().chain(versions).collect::<Loaded>(),
                    broken.into_iter().chain(failed).collect::<Broken>(),
                    interpreters,
                )
            };
            let (loaded, broken, interpreters) = match tokio::runtime::Handle::try_current() {
                Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(load)
                }
                _ => load(),
            };
            *self.interpreters.write().expect("registry lock") = interpreters;
            self.loaded.write().expect("registry lock").extend(loaded);
            self.broken.write().expect("registry lock").extend(broken);
            if self.loaded.read().expect("registry lock").contains_key(&id)
                || self.broken.read().expect("registry lock").contains_key(&id)
            {
                return self.get(key, version);
            }
        }
        Err(ServiceError::NotFound(format!(
            "plugin {key}@{version} does not exist"
        )))
    }

    fn connector(&self, plugin: LoadedPlugin) -> Arc<dyn Connector> {
        Arc::new(WasmConnector {
            engine: self.engine.clone(),
            plugin,
        })
    }

    /// The flows pinned to a plugin version.
    pub fn flows_using(&self, key: &str, version: &Version) -> Result<Vec<String>, ServiceError> {
        Ok(self
            .kv
            .keys(Tree::PluginRefs, &[key, &version.to_string()])?
            .into_iter()
            .filter_map(|mut parts| parts.pop())
            .collect())
    }

    pub async fn set_deprecated(
        &self,
        key: &str,
        version: &Version,
        deprecated: bool,
    ) -> Result<PluginRecord, ServiceError> {
        self.update(key, version, |r| r.deprecated = deprecated)
            .await
    }

    pub async fn set_env(
        &self,
        key: &str,
        version: &Version,
        name: &str,
        value: &str,
    ) -> Result<PluginRecord, ServiceError> {
        check_env_name(name)?;
        self.update(key, version, |r| {
            r.secret_env.remove(name);
            r.env.insert(name.to_string(), value.to_string());
        })
        .await
    }

    /// Sets a secret variable (replacing a plain one of the same name).
    pub async fn set_secret_env(
        &self,
        key: &str,
        version: &Version,
        name: &str,
        value: &str,
    ) -> Result<PluginRecord, ServiceError> {
        check_env_name(name)?;
        let sealed = self
            .key
            .seal(&env_context(key, version, name), value.as_bytes());
        self.update(key, version, |r| {
            r.env.remove(name);
            r.secret_env.insert(name.to_string(), sealed);
        })
        .await
    }

    /// A version's secret variables, opened (for the host's auth only).
    pub fn secret_env(
        &self,
        record: &PluginRecord,
    ) -> Result<BTreeMap<String, String>, ServiceError> {
        record
            .secret_env
            .iter()
            .map(|(name, sealed)| {
                let context = env_context(&record.key, &record.version, name);
                let opened = self.key.open(&context, sealed).map_err(|e| {
                    ServiceError::Internal(format!(
                        "{}@{}: secret environment variable `{name}`: {e}",
                        record.key, record.version
                    ))
                })?;
                let value = String::from_utf8(opened).map_err(|_| {
                    ServiceError::Internal(format!(
                        "{}@{}: secret environment variable `{name}` is not UTF-8",
                        record.key, record.version
                    ))
                })?;
                Ok((name.clone(), value))
            })
            .collect()
    }

    pub async fn unset_env(
        &self,
        key: &str,
        version: &Version,
        name: &str,
    ) -> Result<PluginRecord, ServiceError> {
        let record = self.record(key, version)?;
        if !record.env.contains_key(name) && !record.secret_env.contains_key(name) {
            return Err(ServiceError::NotFound(format!(
                "{key}@{version} has no environment variable `{name}`"
            )));
        }
        self.update(key, version, |r| {
            r.env.remove(name);
            r.secret_env.remove(name);
        })
        .await
    }

    async fn update(
        &self,
        key: &str,
        version: &Version,
        change: impl FnOnce(&mut PluginRecord),
    ) -> Result<PluginRecord, ServiceError> {
        let _guard = self.writes.lock().await;
        let mut record = self.record(key, version)?;
        change(&mut record);
        self.kv
            .put_json(Tree::Plugins, &[key, &version.to_string()], &record)?;
        if let Some(loaded) = self
            .loaded
            .write()
            .expect("registry lock")
            .get_mut(&(key.to_string(), version.clone()))
        {
            loaded.record = Arc::new(record.clone());
        }
        Ok(record)
    }

    /// Deletes a version unless a flow is pinned to it.
    pub async fn delete(&self, key: &str, version: &Version) -> Result<(), ServiceError> {
        let _guard = self.writes.lock().await;
        let record = self.record(key, version)?;
        let flows = self.flows_using(key, version)?;
        if !flows.is_empty() {
            return Err(ServiceError::InUse {
                key: key.to_string(),
                version: version.clone(),
                flows,
            });
        }
        self.kv
            .delete(Tree::Plugins, &[key, &version.to_string()])?;
        // A development build and a release may be the same bytes.
        let shared = self
            .versions(key)?
            .iter()
            .any(|r| r.version != *version && r.sha256 == record.sha256);
        if !shared {
            self.kv.delete_blob(&record.sha256)?;
        }
        let id = (key.to_string(), version.clone());
        self.loaded.write().expect("registry lock").remove(&id);
        self.broken.write().expect("registry lock").remove(&id);
        Ok(())
    }
}

/// Loaded plugin versions, and those that failed to load with the reason.
type Loaded = HashMap<(String, Version), PluginVersion>;
type Broken = HashMap<(String, Version), String>;

fn load_all(
    kv: &dyn Kv,
    engine: &Arc<Engine>,
    records: Vec<PluginRecord>,
    interpreter_records: Vec<InterpreterRecord>,
) -> (Loaded, Broken, HashMap<String, LoadedPlugin>) {
    let mut interpreters = HashMap::new();
    for record in interpreter_records {
        let plugin = match kv.get_blob(&record.sha256) {
            Ok(Some(bytes)) => engine
                .load_interpreter(&record.sha256, &bytes)
                .map_err(|e| e.to_string()),
            Ok(None) => Err("its component file is missing from the data directory".to_string()),
            Err(e) => Err(e.to_string()),
        };
        match plugin {
            Ok(plugin) => {
                interpreters.insert(record.sha256, plugin);
            }
            Err(reason) => {
                tracing::error!(interpreter = %record.sha256, "cannot load the interpreter: {reason}")
            }
        }
    }
    let (loaded, broken) = load_with(kv, engine, records, &interpreters);
    (loaded, broken, interpreters)
}

/// Loads plugin versions, declarative ones on these interpreters.
fn load_with(
    kv: &dyn Kv,
    engine: &Arc<Engine>,
    records: Vec<PluginRecord>,
    interpreters: &HashMap<String, LoadedPlugin>,
) -> (Loaded, Broken) {
    let mut loaded = HashMap::new();
    let mut broken = HashMap::new();
    for mut record in records {
        let id = (record.key.clone(), record.version.clone());
        let plugin = match &record.kind {
            PluginKind::Component => match kv.get_blob(&record.sha256) {
                Ok(Some(bytes)) => engine
                    .load(&record.sha256, &bytes)
                    .map_err(|e| e.to_string()),
                Ok(None) => {
                    Err("its component file is missing from the data directory".to_string())
                }
                Err(e) => Err(e.to_string()),
            },
            PluginKind::Declarative {
                interpreter,
                canonical,
            } => interpreters
                .get(interpreter)
                .map(|i: &LoadedPlugin| i.with_spec(canonical.as_str().into()))
                .ok_or_else(|| format!("its interpreter {interpreter} is not loaded")),
        };
        match plugin {
            Ok(plugin) => {
                manifest::add_custom_api_call(&mut record.manifest);
                let connector = Arc::new(WasmConnector {
                    engine: engine.clone(),
                    plugin,
                });
                loaded.insert(
                    id,
                    PluginVersion {
                        record: Arc::new(record),
                        connector,
                    },
                );
            }
            Err(reason) => {
                tracing::error!(plugin = %format!("{}@{}", id.0, id.1), "cannot load plugin: {reason}");
                broken.insert(id, reason);
            }
        }
    }
    (loaded, broken)
}

/// The development build after those in `existing`: `base` (a release
/// version) with the pre-release `dev.N`, N one above the highest `dev.N`
/// of the same release (1 for the first).
pub fn next_dev_version(base: &Version, existing: &[&Version]) -> Version {
    let highest = existing
        .iter()
        .filter(|v| (v.major, v.minor, v.patch) == (base.major, base.minor, base.patch))
        .filter_map(|v| v.pre.as_str().strip_prefix("dev.")?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let mut next = Version::new(base.major, base.minor, base.patch);
    next.pre = semver::Prerelease::new(&format!("dev.{}", highest + 1))
        .expect("dev.N is a valid pre-release");
    next
}

/// Picks the newest non-deprecated version that satisfies `req`.
pub fn resolve_version(versions: &[(Version, bool)], req: &VersionReq) -> Option<Version> {
    versions
        .iter()
        .filter(|(v, deprecated)| !deprecated && req.matches(v))
        .map(|(v, _)| v)
        .max()
        .cloned()
}

fn check_env_name(name: &str) -> Result<(), ServiceError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.starts_with(|c: char| c.is_ascii_uppercase() || c == '_')
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ServiceError::BadRequest(format!(
            "environment variable name `{name}` must be A-Z, 0-9 and `_`, not starting with a digit"
        )))
    }
}

/// Parses `key@requirement` (`shopify@1.2.0` means exactly 1.2.0, `shopify@^1`
/// a range, bare `shopify` the newest).
pub fn parse_plugin_ref(text: &str) -> Result<(String, VersionReq), ServiceError> {
    let (key, req) = text.split_once('@').unwrap_or((text, "*"));
    let req = match Version::parse(req) {
        Ok(exact) => VersionReq::parse(&format!("={exact}")),
        Err(_) => VersionReq::parse(req),
    }
    .map_err(|e| {
        ServiceError::BadRequest(format!(
            "`{req}` in `{text}` is not a version or requirement: {e}"
        ))
    })?;
    Ok((key.to_string(), req))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_table() {
        let v = |s: &str| Version::parse(s).unwrap();
        let versions = vec![
            (v("0.9.0"), false),
            (v("1.0.0"), false),
            (v("1.2.0"), false),
            (v("1.3.0"), true),
            (v("1.4.0-beta.1"), false),
            (v("2.0.0"), false),
            (v("2.1.0"), true),
        ];
        let table = [
            ("*", Some("2.0.0")),
            ("^1", Some("1.2.0")),
            ("^1.0", Some("1.2.0")),
            ("~1.0", Some("1.0.0")),
            ("=1.3.0", None),
            ("=1.2.0", Some("1.2.0")),
            (">=1.4.0-beta.0, <2", Some("1.4.0-beta.1")),
            ("^2", Some("2.0.0")),
            ("^3", None),
            ("<1", Some("0.9.0")),
            (">1.0.0, <1.3.0", Some("1.2.0")),
        ];
        for (req, expected) in table {
            let got = resolve_version(&versions, &VersionReq::parse(req).unwrap());
            assert_eq!(got, expected.map(v), "{req}");
        }
    }

    #[test]
    fn next_dev_versions() {
        let v = |s: &str| Version::parse(s).unwrap();
        let table: &[(&str, &[&str], &str)] = &[
            ("1.2.0", &[], "1.2.0-dev.1"),
            ("1.2.0", &["1.2.0"], "1.2.0-dev.1"),
            ("1.2.0", &["1.2.0", "1.2.0-dev.1"], "1.2.0-dev.2"),
            // The highest, not the count or the newest upload.
            ("1.2.0", &["1.2.0-dev.9", "1.2.0-dev.2"], "1.2.0-dev.10"),
            // Other releases' builds and other pre-releases do not count.
            (
                "1.2.0",
                &["1.1.0-dev.5", "1.2.1-dev.3", "1.2.0-beta.4"],
                "1.2.0-dev.1",
            ),
            ("1.2.0", &["1.2.0-dev.x", "1.2.0-dev"], "1.2.0-dev.1"),
            // Build metadata is not part of a development build's version.
            ("1.2.0+abc", &["1.2.0-dev.1"], "1.2.0-dev.2"),
        ];
        for (base, existing, expected) in table {
            let existing: Vec<Version> = existing.iter().map(|e| v(e)).collect();
            let refs: Vec<&Version> = existing.iter().collect();
            assert_eq!(
                next_dev_version(&v(base), &refs),
                v(expected),
                "{base} after {existing:?}"
            );
        }
        // A development build is never what a requirement without a
        // pre-release resolves to.
        let versions = vec![(v("1.2.0"), false), (v("1.2.0-dev.3"), false)];
        for req in ["*", "^1", "=1.2.0", ">=1.2.0"] {
            let got = resolve_version(&versions, &VersionReq::parse(req).unwrap());
            assert_eq!(got, Some(v("1.2.0")), "{req}");
        }
    }

    #[test]
    fn plugin_refs() {
        let (key, req) = parse_plugin_ref("shopify@1.2.0").unwrap();
        assert_eq!(key, "shopify");
        assert!(req.matches(&Version::new(1, 2, 0)) && !req.matches(&Version::new(1, 2, 1)));
        assert!(
            parse_plugin_ref("shopify")
                .unwrap()
                .1
                .matches(&Version::new(9, 0, 0))
        );
        assert!(
            parse_plugin_ref("shopify@^1")
                .unwrap()
                .1
                .matches(&Version::new(1, 9, 0))
        );
        assert!(parse_plugin_ref("shopify@banana").is_err());
    }

    #[test]
    fn env_names() {
        assert!(check_env_name("API_BASE").is_ok());
        assert!(check_env_name("_X1").is_ok());
        for bad in ["", "lower", "1ABC", "A-B", "A B"] {
            assert!(check_env_name(bad).is_err(), "{bad}");
        }
    }
}
