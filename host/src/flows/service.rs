//! Published flows and their versions. Publishing validates against the
//! catalogue and pins exact plugin versions, and records which flow uses
//! which plugin version (in the same batch), so a pinned version cannot be
//! deleted from under a flow.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use rand::RngCore;
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};

use super::definition::{Catalogue, FlowSpec, Pinned, StepKind, actions, walk};
use crate::{
    clock::{now_ms, now_secs},
    connections::Connections,
    error::ServiceError,
    manifest::{Manifest, TriggerKind},
    registry::{Registry, parse_plugin_ref},
    store::{Decoded, Kv, KvExt, Tree, Write},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FlowRecord {
    pub id: String,
    pub tenant: String,
    /// Increases with every publish; runs record the version they ran.
    pub version: u32,
    pub spec: FlowSpec,
    pub pinned: Pinned,
    pub active: bool,
    /// The secret part of the webhook URL while a webhook flow is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_token: Option<String>,
    /// What the plugin's `subscribe` returned, for `unsubscribe`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    /// Why the flow was paused (it kept firing for one entity: a loop);
    /// its trigger's events start no runs until it is resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<String>,
    /// When the flow was last resumed: what it did for an entity before
    /// then does not count towards a loop again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_at: Option<u64>,
    pub created_at: u64,
    pub updated_at: u64,
}

/// A version as a key part that sorts numerically.
fn version_part(version: u32) -> String {
    format!("{version:010}")
}

impl FlowRecord {
    /// (plugin key, pinned version) of the trigger and of every step.
    fn plugins(&self) -> Vec<(String, Version)> {
        let key_of = |r: &str| parse_plugin_ref(r).map(|(k, _)| k).unwrap_or_default();
        self.pinned
            .trigger
            .iter()
            .map(|v| (key_of(&self.spec.trigger.plugin), v.clone()))
            .chain(
                actions(&self.spec.steps)
                    .into_iter()
                    .zip(&self.pinned.steps)
                    .map(|(s, v)| (key_of(&s.plugin), v.clone())),
            )
            .chain(super::records::pinned_plugins(self))
            .chain(self.pinned.hydrate.iter().map(|v| {
                let plugin = self
                    .spec
                    .hydrate
                    .as_ref()
                    .map(|h| h.plugin.as_str())
                    .filter(|p| !p.is_empty())
                    .unwrap_or(&self.spec.trigger.plugin);
                (key_of(plugin), v.clone())
            }))
            .collect()
    }

    /// The pins of this flow as plugin references, put or deleted.
    fn refs(&self, put: bool) -> Vec<Write> {
        self.plugins()
            .into_iter()
            .map(|(plugin, version)| {
                let key = [plugin.as_str(), &version.to_string(), &self.id];
                if put {
                    Write::put(Tree::PluginRefs, &key, &serde_json::json!({}))
                } else {
                    Write::delete(Tree::PluginRefs, &key)
                }
            })
            .collect()
    }

    /// The plugin key of the trigger (empty for a pure schedule).
    pub fn trigger_plugin(&self) -> String {
        parse_plugin_ref(&self.spec.trigger.plugin)
            .map(|(k, _)| k)
            .unwrap_or_default()
    }
}

/// The catalogue of a running host: its registry and its tenants'
/// connections.
pub struct HostCatalogue {
    pub registry: Arc<Registry>,
    pub connections: Arc<Connections>,
}

impl Catalogue for HostCatalogue {
    fn resolve(&self, key: &str, req: &VersionReq) -> Result<Version, ServiceError> {
        self.registry.resolve(key, req)
    }

    fn manifest(&self, key: &str, version: &Version) -> Result<Manifest, ServiceError> {
        Ok(self.registry.get(key, version)?.record.manifest.clone())
    }

    fn connection_plugin(&self, tenant: &str, id: &str) -> Result<String, ServiceError> {
        Ok(self.connections.get(tenant, id)?.plugin)
    }
}

pub struct Flows {
    kv: Arc<dyn Kv>,
    catalogue: Arc<dyn Catalogue>,
    /// Published versions as runs execute them (versions never change).
    versions: Mutex<HashMap<(String, String, u32), Arc<FlowRecord>>>,
    /// Current records as deliveries route to them.
    current: Decoded<FlowRecord>,
    /// Serialises pausing and resuming.
    pausing: Mutex<()>,
}

impl Flows {
    pub fn new(kv: Arc<dyn Kv>, catalogue: Arc<dyn Catalogue>) -> Self {
        Flows {
            kv,
            catalogue,
            versions: Mutex::default(),
            current: Decoded::new(Tree::Flows),
            pausing: Mutex::default(),
        }
    }

    /// Publishes a new flow, or a new version of `id` keeping its pinned
    /// plugin versions where the requirements still allow them. With
    /// `upgrade`, every plugin is re-resolved to its newest matching version.
    pub fn publish(
        &self,
        tenant: &str,
        id: Option<&str>,
        spec: FlowSpec,
        upgrade: bool,
    ) -> Result<FlowRecord, ServiceError> {
        let previous = id.map(|id| self.get(tenant, id)).transpose()?;
        let old_refs = previous.as_ref().map(|p| p.refs(false)).unwrap_or_default();
        let keep: HashMap<String, Version> = match (&previous, upgrade) {
            (Some(p), false) => p.plugins().into_iter().collect(),
            _ => HashMap::new(),
        };
        let pinned = self.check(tenant, id, &spec, &keep)?;
        let now = now_secs();
        let record = match previous {
            Some(p) => FlowRecord {
                version: p.version + 1,
                spec,
                pinned,
                updated_at: now,
                ..p
            },
            None => {
                let mut bytes = [0u8; 10];
                rand::rng().fill_bytes(&mut bytes);
                FlowRecord {
                    id: format!("flow_{}", hex::encode(bytes)),
                    tenant: tenant.to_string(),
                    version: 1,
                    spec,
                    pinned,
                    active: false,
                    webhook_token: None,
                    subscription: None,
                    paused: None,
                    resumed_at: None,
                    created_at: now,
                    updated_at: now,
                }
            }
        };
        let mut writes = old_refs;
        writes.extend(record.refs(true));
        writes.push(Write::put(Tree::Flows, &[tenant, &record.id], &record));
        writes.push(Write::put(
            Tree::FlowVersions,
            &[tenant, &record.id, &version_part(record.version)],
            &record,
        ));
        self.kv.write(writes)?;
        Ok(record)
    }

    /// Every publish-time check of a flow (`id` when it is a new version of
    /// an existing flow); returns the versions to pin.
    pub fn check(
        &self,
        tenant: &str,
        id: Option<&str>,
        spec: &FlowSpec,
        keep: &HashMap<String, Version>,
    ) -> Result<Pinned, ServiceError> {
        let validated = spec.validate(&*self.catalogue, tenant, keep);
        let mut problems = validated.as_ref().err().cloned().unwrap_or_default();
        for step in walk(&spec.steps) {
            let Some(call) = step
                .call_flow
                .as_ref()
                .filter(|_| step.kind() == StepKind::CallFlow)
            else {
                continue;
            };
            let at = format!("steps[{}].call_flow.flow", step.key);
            match self.find(tenant, &call.flow) {
                Ok(target) if Some(target.id.as_str()) == id || target.spec.name == spec.name => {
                    problems.push(format!("{at}: a flow cannot call itself"))
                }
                Ok(_) => {}
                Err(e) => problems.push(format!("{at}: {e}")),
            }
        }
        match validated {
            Ok(pinned) if problems.is_empty() => Ok(pinned),
            _ => Err(ServiceError::InvalidFlow(problems)),
        }
    }

    /// A tenant's flow by id, or else by name.
    pub fn find(&self, tenant: &str, id_or_name: &str) -> Result<FlowRecord, ServiceError> {
        match self.get(tenant, id_or_name) {
            Err(ServiceError::NotFound(_)) => self
                .list(tenant)?
                .into_iter()
                .find(|f| f.spec.name == id_or_name)
                .ok_or_else(|| {
                    ServiceError::NotFound(format!(
                        "flow `{id_or_name}` does not exist (by id or name)"
                    ))
                }),
            other => other,
        }
    }

    /// Publishes by name: a new version of the tenant's flow with the same
    /// name, or a new flow (`switchyard flow apply`).
    pub fn apply(&self, tenant: &str, spec: FlowSpec) -> Result<FlowRecord, ServiceError> {
        let existing = self
            .list(tenant)?
            .into_iter()
            .find(|f| f.spec.name == spec.name);
        self.publish(
            tenant,
            existing.as_ref().map(|f| f.id.as_str()),
            spec,
            false,
        )
    }

    /// One published version of a flow, as runs of that version execute it
    /// (cached: versions never change).
    pub fn version(
        &self,
        tenant: &str,
        id: &str,
        version: u32,
    ) -> Result<Arc<FlowRecord>, ServiceError> {
        let key = (tenant.to_string(), id.to_string(), version);
        if let Some(flow) = self
            .versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(flow.clone());
        }
        let flow: FlowRecord = self
            .kv
            .get_json(Tree::FlowVersions, &[tenant, id, &version_part(version)])?
            .ok_or_else(|| {
                ServiceError::NotFound(format!("flow `{id}` has no version {version}"))
            })?;
        let flow = Arc::new(flow);
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, flow.clone());
        Ok(flow)
    }

    pub fn get(&self, tenant: &str, id: &str) -> Result<FlowRecord, ServiceError> {
        self.kv
            .get_json(Tree::Flows, &[tenant, id])?
            .ok_or_else(|| ServiceError::NotFound(format!("flow `{id}` does not exist")))
    }

    /// The flow's current record, shared: what a delivery routes by
    /// (decoded again only when the record changed).
    pub fn current(&self, tenant: &str, id: &str) -> Result<Arc<FlowRecord>, ServiceError> {
        self.current
            .get(self.kv.as_ref(), &[tenant, id])?
            .ok_or_else(|| ServiceError::NotFound(format!("flow `{id}` does not exist")))
    }

    pub fn list(&self, tenant: &str) -> Result<Vec<FlowRecord>, ServiceError> {
        Ok(self.kv.scan_json(Tree::Flows, &[tenant])?)
    }

    /// Every tenant's flows (the trigger scheduler's start-up list).
    pub fn all(&self) -> Result<Vec<FlowRecord>, ServiceError> {
        Ok(self.kv.scan_json(Tree::Flows, &[])?)
    }

    /// Rewrites a flow's current record (activation state) without
    /// publishing a new version, with `extra` writes in the same batch.
    pub fn write(&self, record: &FlowRecord, extra: Vec<Write>) -> Result<(), ServiceError> {
        let mut writes = extra;
        writes.push(Write::put(
            Tree::Flows,
            &[&record.tenant, &record.id],
            record,
        ));
        self.kv.write(writes)?;
        Ok(())
    }

    /// Pauses a flow with the reason (once: the first reason stays), or
    /// resumes it with `None`; returns whether it changed.
    pub fn set_paused(
        &self,
        tenant: &str,
        id: &str,
        reason: Option<String>,
    ) -> Result<bool, ServiceError> {
        let _guard = self.pausing.lock().unwrap_or_else(|e| e.into_inner());
        let mut record = self.get(tenant, id)?;
        if reason.is_some() && record.paused.is_some()
            || reason.is_none() && record.paused.is_none()
        {
            return Ok(false);
        }
        if reason.is_none() {
            record.resumed_at = Some(now_ms());
        }
        record.paused = reason;
        self.write(&record, Vec::new())?;
        Ok(true)
    }

    /// Every published version of a flow, oldest first.
    pub fn versions(&self, tenant: &str, id: &str) -> Result<Vec<FlowRecord>, ServiceError> {
        self.get(tenant, id)?;
        Ok(self.kv.scan_json(Tree::FlowVersions, &[tenant, id])?)
    }

    pub fn delete(&self, tenant: &str, id: &str) -> Result<(), ServiceError> {
        let record = self.get(tenant, id)?;
        let mut writes = record.refs(false);
        writes.push(Write::delete(Tree::Flows, &[tenant, id]));
        self.kv.write(writes)?;
        Ok(())
    }

    /// The kind of a flow's trigger: `None` for a pure schedule or a file
    /// trigger.
    pub fn trigger_kind(&self, flow: &FlowRecord) -> Result<Option<TriggerKind>, ServiceError> {
        if flow.spec.trigger.file.is_some() {
            return Ok(None); // a file trigger: neither a webhook nor a poll
        }
        let Some(version) = &flow.pinned.trigger else {
            return Ok(None);
        };
        let key = flow.trigger_plugin();
        let manifest = self.catalogue.manifest(&key, version)?;
        manifest
            .triggers
            .iter()
            .find(|t| t.key == flow.spec.trigger.trigger)
            .map(|t| Some(t.kind))
            .ok_or_else(|| {
                ServiceError::State(format!(
                    "{key}@{version} has no trigger `{}`",
                    flow.spec.trigger.trigger
                ))
            })
    }
}
