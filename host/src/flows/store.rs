//! Published flows and their versions. Publishing validates and pins exact
//! plugin versions and records which flow uses which plugin version, so a
//! pinned version cannot be deleted from under a flow.

use std::collections::HashMap;

use rand::RngCore;
use semver::Version;
use serde::{Deserialize, Serialize};

use super::definition::{FlowSpec, Pinned};
use crate::{
    app::App,
    error::ServiceError,
    registry::{PLUGIN_REFS, parse_plugin_ref},
    store::{Op, StorageExt},
};

const FLOWS: &str = "flows";
const FLOW_VERSIONS: &str = "flow_versions";

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
    pub created_at: u64,
    pub updated_at: u64,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn key(tenant: &str, id: &str) -> Vec<u8> {
    format!("{tenant}\0{id}").into_bytes()
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
                self.spec
                    .steps
                    .iter()
                    .zip(&self.pinned.steps)
                    .map(|(s, v)| (key_of(&s.plugin), v.clone())),
            )
            .collect()
    }

    fn ref_ops(&self, put: bool) -> Vec<Op> {
        self.plugins()
            .into_iter()
            .map(|(plugin, version)| {
                let key = format!("{plugin}\0{version}\0{}", self.id).into_bytes();
                if put {
                    Op::Put {
                        tree: PLUGIN_REFS,
                        key,
                        value: b"{}".to_vec(),
                    }
                } else {
                    Op::Delete {
                        tree: PLUGIN_REFS,
                        key,
                    }
                }
            })
            .collect()
    }
}

impl App {
    /// Publishes a new flow, or a new version of `id` keeping its pinned
    /// plugin versions where the requirements still allow them. With
    /// `upgrade`, every plugin is re-resolved to its newest matching version.
    pub fn publish_flow(
        &self,
        tenant: &str,
        id: Option<&str>,
        spec: FlowSpec,
        upgrade: bool,
    ) -> Result<FlowRecord, ServiceError> {
        let previous = id.map(|id| self.flow(tenant, id)).transpose()?;
        let old_refs = previous
            .as_ref()
            .map(|p| p.ref_ops(false))
            .unwrap_or_default();
        let keep: HashMap<String, Version> = match (&previous, upgrade) {
            (Some(p), false) => p.plugins().into_iter().collect(),
            _ => HashMap::new(),
        };
        let pinned = spec.validate(self, tenant, &keep).map_err(|problems| {
            ServiceError::BadRequest(format!("the flow is invalid:\n- {}", problems.join("\n- ")))
        })?;
        let now = now();
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
                    created_at: now,
                    updated_at: now,
                }
            }
        };
        let mut ops = old_refs;
        ops.extend(record.ref_ops(true));
        ops.push(Op::put_json(FLOWS, &key(tenant, &record.id), &record));
        ops.push(Op::put_json(
            FLOW_VERSIONS,
            format!("{tenant}\0{}\0{:010}", record.id, record.version).as_bytes(),
            &record,
        ));
        self.store.apply(ops)?;
        self.store.flush()?;
        Ok(record)
    }

    /// Publishes by name: a new version of the tenant's flow with the same
    /// name, or a new flow (`switchyard flow apply`).
    pub fn apply_flow(&self, tenant: &str, spec: FlowSpec) -> Result<FlowRecord, ServiceError> {
        let existing = self
            .flows(tenant)?
            .into_iter()
            .find(|f| f.spec.name == spec.name);
        self.publish_flow(
            tenant,
            existing.as_ref().map(|f| f.id.as_str()),
            spec,
            false,
        )
    }

    /// One published version of a flow, as runs of that version execute it.
    pub fn flow_version(
        &self,
        tenant: &str,
        id: &str,
        version: u32,
    ) -> Result<FlowRecord, ServiceError> {
        self.store
            .get_json(
                FLOW_VERSIONS,
                format!("{tenant}\0{id}\0{version:010}").as_bytes(),
            )?
            .ok_or_else(|| ServiceError::NotFound(format!("flow `{id}` has no version {version}")))
    }

    pub fn flow(&self, tenant: &str, id: &str) -> Result<FlowRecord, ServiceError> {
        self.store
            .get_json(FLOWS, &key(tenant, id))?
            .ok_or_else(|| ServiceError::NotFound(format!("flow `{id}` does not exist")))
    }

    pub fn flows(&self, tenant: &str) -> Result<Vec<FlowRecord>, ServiceError> {
        Ok(self
            .store
            .scan_json(FLOWS, format!("{tenant}\0").as_bytes())?)
    }

    /// Every tenant's flows (the trigger scheduler's start-up list).
    pub fn all_flows(&self) -> Result<Vec<FlowRecord>, ServiceError> {
        Ok(self.store.scan_json(FLOWS, b"")?)
    }

    /// Rewrites a flow's current record (activation state) without
    /// publishing a new version, with `extra` ops in the same batch.
    pub(crate) fn write_flow(
        &self,
        record: &FlowRecord,
        extra: Vec<Op>,
    ) -> Result<(), ServiceError> {
        let mut ops = extra;
        ops.push(Op::put_json(
            FLOWS,
            &key(&record.tenant, &record.id),
            record,
        ));
        self.store.apply(ops)?;
        self.store.flush()?;
        Ok(())
    }

    /// Every published version of a flow, oldest first.
    pub fn flow_versions(&self, tenant: &str, id: &str) -> Result<Vec<FlowRecord>, ServiceError> {
        self.flow(tenant, id)?;
        Ok(self
            .store
            .scan_json(FLOW_VERSIONS, format!("{tenant}\0{id}\0").as_bytes())?)
    }

    pub fn delete_flow(&self, tenant: &str, id: &str) -> Result<(), ServiceError> {
        let record = self.flow(tenant, id)?;
        let mut ops = record.ref_ops(false);
        ops.push(Op::Delete {
            tree: FLOWS,
            key: key(tenant, id),
        });
        self.store.apply(ops)?;
        self.store.flush()?;
        Ok(())
    }
}
