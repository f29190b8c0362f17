//! Connections: a tenant's credentials and custom properties for one plugin.
//! Secret properties are sealed with the master key before storage and are
//! never returned by the API or handed to a plugin; the host's own auth state
//! (OAuth and session tokens) is sealed the same way. [`oauth`] runs the
//! authorization code flow that fills that state.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::Arc,
};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::{
    clock::now_secs,
    error::ServiceError,
    manifest::Manifest,
    registry::{PluginVersion, Registry},
    sandbox::auth::{AuthState, AuthStates},
    schema::check_against,
    secrets::MasterKey,
    store::{Decoded, Kv, KvExt, Tree},
};

const REDACTED: &str = "********";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ConnectionStatus {
    Active,
    Paused { reason: String },
}

/// A stored connection. The sealed fields are opaque without the master key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub id: String,
    pub tenant: String,
    /// The plugin key; any version of that plugin can use the connection.
    pub plugin: String,
    pub name: String,
    /// Non-secret properties, as given.
    pub properties: BTreeMap<String, Value>,
    pub secret_names: BTreeSet<String>,
    sealed_secrets: String,
    sealed_auth: Option<String>,
    pub status: ConnectionStatus,
    /// Calls may run in an instance kept from an earlier call of this
    /// connection instead of a fresh one (faster; the connector's memory
    /// carries over between its calls). Off unless asked for.
    #[serde(default)]
    pub warm_instances: bool,
    pub created_at: u64,
    pub updated_at: u64,
}

pub struct Connections {
    kv: Arc<dyn Kv>,
    key: Arc<MasterKey>,
    registry: Arc<Registry>,
    /// The host-held tokens of each connection, in memory.
    auth_states: Arc<AuthStates>,
    /// Serialises read-modify-writes of a record (a pause racing a token
    /// refresh must not be lost), so a connection is also paused once.
    writes: std::sync::Mutex<()>,
    /// Records as calls read them: decoded once per version of their bytes.
    current: Decoded<ConnectionRecord>,
    /// Secrets as calls open them: once per version of the sealed text, by
    /// connection id (in the host's memory, where the master key is too).
    opened: std::sync::Mutex<HashMap<String, Opened>>,
}

/// A connection's sealed secrets and what they open to.
type Opened = (String, Arc<BTreeMap<String, Value>>);

fn not_found(id: &str) -> ServiceError {
    ServiceError::NotFound(format!("connection `{id}` does not exist"))
}

/// Secret and plain properties of a connection, checked against a manifest.
struct Split {
    plain: BTreeMap<String, Value>,
    secret: BTreeMap<String, Value>,
}

impl Connections {
    pub fn new(
        kv: Arc<dyn Kv>,
        key: Arc<MasterKey>,
        registry: Arc<Registry>,
        auth_states: Arc<AuthStates>,
    ) -> Self {
        Connections {
            kv,
            key,
            registry,
            auth_states,
            writes: Default::default(),
            current: Decoded::new(Tree::Connections),
            opened: Default::default(),
        }
    }

    pub fn auth_states(&self) -> &Arc<AuthStates> {
        &self.auth_states
    }

    /// The newest non-deprecated version of a connection's plugin: what
    /// checks its properties and runs its tests and OAuth flow.
    pub fn plugin_for(&self, connection: &ConnectionRecord) -> Result<PluginVersion, ServiceError> {
        self.registry.newest(&connection.plugin)
    }

    /// Creates a connection for the newest version of `plugin_key`.
    pub fn create(
        &self,
        tenant: &str,
        plugin_key: &str,
        name: &str,
        properties: Map<String, Value>,
        warm_instances: bool,
    ) -> Result<ConnectionRecord, ServiceError> {
        let plugin = self.registry.newest(plugin_key)?;
        let manifest = &plugin.record.manifest;
        let mut id_bytes = [0u8; 12];
        rand::rng().fill_bytes(&mut id_bytes);
        let id = format!("conn_{}", hex::encode(id_bytes));
        let split = split(manifest, properties, &BTreeMap::new())?;
        let now = now_secs();
        let record = ConnectionRecord {
            id: id.clone(),
            tenant: tenant.to_string(),
            plugin: manifest.key.clone(),
            name: if name.is_empty() {
                manifest.name.clone()
            } else {
                name.to_string()
            },
            properties: split.plain,
            secret_names: split.secret.keys().cloned().collect(),
            sealed_secrets: self.seal_secrets(&id, &split.secret),
            sealed_auth: None,
            status: ConnectionStatus::Active,
            warm_instances,
            created_at: now,
            updated_at: now,
        };
        self.write(&record)?;
        Ok(record)
    }

    pub fn get(&self, tenant: &str, id: &str) -> Result<ConnectionRecord, ServiceError> {
        self.kv
            .get_json(Tree::Connections, &[tenant, id])?
            .ok_or_else(|| not_found(id))
    }

    /// The connection as it is stored now, shared: what a call holds. The
    /// record is read on every call (an edit or a pause counts at once) but
    /// decoded only when its bytes changed.
    pub fn current(&self, tenant: &str, id: &str) -> Result<Arc<ConnectionRecord>, ServiceError> {
        self.current
            .get(self.kv.as_ref(), &[tenant, id])?
            .ok_or_else(|| not_found(id))
    }

    pub fn list(&self, tenant: &str) -> Result<Vec<ConnectionRecord>, ServiceError> {
        Ok(self.kv.scan_json(Tree::Connections, &[tenant])?)
    }

    /// Changes the name, the warm-instance choice, and merges properties
    /// (`null` removes one). Changing properties drops the host-held tokens
    /// and makes a paused connection active again.
    pub fn update(
        &self,
        tenant: &str,
        id: &str,
        name: Option<&str>,
        changes: Map<String, Value>,
        warm_instances: Option<bool>,
    ) -> Result<ConnectionRecord, ServiceError> {
        let _guard = self.lock();
        let mut record = self.get(tenant, id)?;
        if let Some(name) = name {
            record.name = name.to_string();
        }
        if let Some(warm) = warm_instances {
            record.warm_instances = warm;
        }
        let credentials = !changes.is_empty();
        if credentials {
            let plugin = self.plugin_for(&record)?;
            let manifest = &plugin.record.manifest;
            let mut current = self.open_secrets(&record)?;
            current.extend(record.properties.clone());
            let split = split(manifest, changes, &current)?;
            record.properties = split.plain;
            record.secret_names = split.secret.keys().cloned().collect();
            record.sealed_secrets = self.seal_secrets(id, &split.secret);
            record.sealed_auth = None;
            record.status = ConnectionStatus::Active;
        }
        record.updated_at = now_secs();
        self.write(&record)?;
        if credentials {
            self.auth_states.forget(id);
        }
        Ok(record)
    }

    pub fn delete(&self, tenant: &str, id: &str) -> Result<(), ServiceError> {
        self.get(tenant, id)?;
        self.kv.delete(Tree::Connections, &[tenant, id])?;
        self.auth_states.forget(id);
        self.opened().remove(id);
        Ok(())
    }

    fn opened(&self) -> std::sync::MutexGuard<'_, HashMap<String, Opened>> {
        self.opened.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The connection's secret properties, opened (once per version of
    /// the sealed text: calls of an unchanged connection share them).
    pub fn secrets(
        &self,
        record: &ConnectionRecord,
    ) -> Result<Arc<BTreeMap<String, Value>>, ServiceError> {
        if let Some((sealed, open)) = self.opened().get(&record.id)
            && *sealed == record.sealed_secrets
        {
            return Ok(open.clone());
        }
        let open = Arc::new(self.open_secrets(record)?);
        self.opened().insert(
            record.id.clone(),
            (record.sealed_secrets.clone(), open.clone()),
        );
        Ok(open)
    }

    fn open_secrets(
        &self,
        record: &ConnectionRecord,
    ) -> Result<BTreeMap<String, Value>, ServiceError> {
        // A secret the master key cannot open is the host's problem (a
        // changed or wrong key), not the caller's.
        let bytes = self
            .key
            .open(record.id.as_bytes(), &record.sealed_secrets)
            .map_err(|e| {
                ServiceError::Internal(format!(
                    "connection `{}`: the secrets cannot be opened: {e}",
                    record.id
                ))
            })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ServiceError::Internal(format!(
                "connection `{}`: sealed secrets are corrupt: {e}",
                record.id
            ))
        })
    }

    pub fn auth_state(&self, record: &ConnectionRecord) -> Option<AuthState> {
        let sealed = record.sealed_auth.as_ref()?;
        let bytes = self
            .key
            .open(auth_context(&record.id).as_bytes(), sealed)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores host-obtained tokens (called from the sandbox after a refresh).
    pub fn save_auth_state(
        &self,
        tenant: &str,
        id: &str,
        state: &AuthState,
    ) -> Result<(), ServiceError> {
        let _guard = self.lock();
        let mut record = self.get(tenant, id)?;
        let plain = serde_json::to_vec(state).expect("auth state serialises");
        record.sealed_auth = Some(self.key.seal(auth_context(id).as_bytes(), &plain));
        self.write(&record)
    }

    /// Pauses an active connection with the reason; `false` when it was
    /// paused already (the first reason stays: it names the first failure).
    pub fn pause(&self, tenant: &str, id: &str, reason: &str) -> Result<bool, ServiceError> {
        let _guard = self.lock();
        let mut record = self.get(tenant, id)?;
        if matches!(record.status, ConnectionStatus::Paused { .. }) {
            return Ok(false);
        }
        record.status = ConnectionStatus::Paused {
            reason: reason.to_string(),
        };
        record.updated_at = now_secs();
        self.write(&record)?;
        Ok(true)
    }

    pub fn set_status(
        &self,
        tenant: &str,
        id: &str,
        status: ConnectionStatus,
    ) -> Result<ConnectionRecord, ServiceError> {
        let _guard = self.lock();
        let mut record = self.get(tenant, id)?;
        let resumed = matches!(status, ConnectionStatus::Active);
        record.status = status;
        record.updated_at = now_secs();
        self.write(&record)?;
        if resumed {
            // A refused sign-in is held until now: the next call may try again.
            self.auth_states.forget(id);
        }
        Ok(record)
    }

    /// The connection as the API shows it: secrets replaced by a marker.
    pub fn view(&self, record: &ConnectionRecord) -> Value {
        let auth = self.auth_state(record);
        json!({
            "id": record.id,
            "plugin": record.plugin,
            "name": record.name,
            "properties": record.properties,
            "secrets": record.secret_names.iter().map(|n| (n.clone(), json!(REDACTED))).collect::<Map<_, _>>(),
            "status": record.status,
            "warm_instances": record.warm_instances,
            "authorized": auth.as_ref().is_some_and(|a| a.access_token.is_some() || a.session_token.is_some()),
            "token_expires_at": auth.and_then(|a| a.expires_at),
            "created_at": record.created_at,
            "updated_at": record.updated_at,
        })
    }

    fn seal_secrets(&self, id: &str, secrets: &BTreeMap<String, Value>) -> String {
        let plain = serde_json::to_vec(secrets).expect("secrets serialise");
        self.key.seal(id.as_bytes(), &plain)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self, record: &ConnectionRecord) -> Result<(), ServiceError> {
        self.kv
            .put_json(Tree::Connections, &[&record.tenant, &record.id], record)?;
        Ok(())
    }
}

fn auth_context(id: &str) -> String {
    format!("{id}/auth")
}

/// Merges `changes` into `current`, checks every value against the
/// manifest's property schemas and required flags, and splits secret from
/// plain values.
fn split(
    manifest: &Manifest,
    changes: Map<String, Value>,
    current: &BTreeMap<String, Value>,
) -> Result<Split, ServiceError> {
    let mut merged = current.clone();
    let mut problems = Vec::new();
    for (key, value) in changes {
        let Some(spec) = manifest.connection_properties.iter().find(|p| p.key == key) else {
            let known: Vec<&str> = manifest
                .connection_properties
                .iter()
                .map(|p| p.key.as_str())
                .collect();
            problems.push(format!(
                "`{key}` is not a property of {} (it has: {})",
                manifest.key,
                known.join(", ")
            ));
            continue;
        };
        if value.is_null() {
            merged.remove(&key);
            continue;
        }
        // A secret's value must not be echoed in the error.
        let checked = check_against(&spec.schema, &value, &format!("property `{key}`"));
        match (checked, spec.secret) {
            (Err(_), true) => problems.push(format!("property `{key}` does not match its schema")),
            (Err(e), false) => problems.push(e.to_string()),
            (Ok(()), _) => {
                merged.insert(key, value);
            }
        }
    }
    for spec in &manifest.connection_properties {
        if spec.required && !merged.contains_key(&spec.key) {
            problems.push(format!(
                "property `{}` ({}) is required",
                spec.key, spec.label
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ServiceError::BadRequest(format!(
            "invalid connection for {}: {}",
            manifest.key,
            problems.join("; ")
        )));
    }
    let (secret, plain) = merged.into_iter().partition(|(k, _)| {
        manifest
            .connection_properties
            .iter()
            .any(|p| &p.key == k && p.secret)
    });
    Ok(Split { plain, secret })
}

/// A property value as the text the host uses for auth and templates.
pub fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Every value of a property map as text.
pub fn texts(values: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|(k, v)| (k.clone(), as_text(v)))
        .collect()
}
