//! Flow drafts: a flow being edited (in the console) and not yet
//! published. A draft is the flow document as JSON, whatever it holds,
//! so an unfinished flow can be kept and a reload loses nothing; only
//! publishing (the flows service) checks it. A draft may start from a
//! published flow, whose id it remembers.

use std::{collections::BTreeMap, sync::Arc};

use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    clock::now_ms,
    error::ServiceError,
    store::{Kv, KvExt, Tree},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Draft {
    pub id: String,
    pub tenant: String,
    /// The published flow this draft edits, if any.
    pub flow: Option<String>,
    /// The flow document (the shape of `FlowSpec`, possibly incomplete).
    pub document: Value,
    pub created_at: u64,
    /// Milliseconds since the epoch.
    pub updated_at: u64,
    pub updated_by: String,
    /// What the editor's tests use and found: the sample trigger event
    /// (`trigger`) and the output of each tested step (`step:<key>`).
    #[serde(default)]
    pub tests: BTreeMap<String, Value>,
}

pub struct Drafts {
    kv: Arc<dyn Kv>,
}

impl Drafts {
    pub fn new(kv: Arc<dyn Kv>) -> Self {
        Drafts { kv }
    }

    pub fn create(
        &self,
        tenant: &str,
        flow: Option<&str>,
        document: Value,
        by: &str,
    ) -> Result<Draft, ServiceError> {
        if !document.is_object() {
            return Err(ServiceError::BadRequest(
                "a flow document is a mapping (name, trigger, steps...)".into(),
            ));
        }
        let mut bytes = [0u8; 10];
        rand::rng().fill_bytes(&mut bytes);
        let now = now_ms();
        let draft = Draft {
            id: format!("draft_{}", hex::encode(bytes)),
            tenant: tenant.to_string(),
            flow: flow.map(str::to_string),
            document,
            created_at: now,
            updated_at: now,
            updated_by: by.to_string(),
            tests: BTreeMap::new(),
        };
        self.kv
            .put_json(Tree::FlowDrafts, &[tenant, &draft.id], &draft)?;
        Ok(draft)
    }

    pub fn get(&self, tenant: &str, id: &str) -> Result<Draft, ServiceError> {
        self.kv
            .get_json(Tree::FlowDrafts, &[tenant, id])?
            .ok_or_else(|| ServiceError::NotFound(format!("draft `{id}` does not exist")))
    }

    /// The tenant's drafts, most recently changed first.
    pub fn list(&self, tenant: &str) -> Result<Vec<Draft>, ServiceError> {
        let mut drafts: Vec<Draft> = self.kv.scan_json(Tree::FlowDrafts, &[tenant])?;
        drafts.sort_by_key(|d| std::cmp::Reverse(d.updated_at));
        Ok(drafts)
    }

    /// The draft that edits `flow`, if one exists.
    pub fn for_flow(&self, tenant: &str, flow: &str) -> Result<Option<Draft>, ServiceError> {
        Ok(self
            .list(tenant)?
            .into_iter()
            .find(|d| d.flow.as_deref() == Some(flow)))
    }

    /// Replaces a draft's document.
    pub fn save(
        &self,
        tenant: &str,
        id: &str,
        document: Value,
        by: &str,
    ) -> Result<Draft, ServiceError> {
        if !document.is_object() {
            return Err(ServiceError::BadRequest(
                "a flow document is a mapping (name, trigger, steps...)".into(),
            ));
        }
        let mut draft = self.get(tenant, id)?;
        draft.document = document;
        draft.updated_at = now_ms();
        draft.updated_by = by.to_string();
        self.kv.put_json(Tree::FlowDrafts, &[tenant, id], &draft)?;
        Ok(draft)
    }

    /// Keeps a test value (the sample event, a tested step's output).
    pub fn set_test(
        &self,
        tenant: &str,
        id: &str,
        key: &str,
        value: Value,
    ) -> Result<Draft, ServiceError> {
        let mut draft = self.get(tenant, id)?;
        draft.tests.insert(key.to_string(), value);
        self.kv.put_json(Tree::FlowDrafts, &[tenant, id], &draft)?;
        Ok(draft)
    }

    /// Records which flow a draft became when it was first published.
    pub fn attach(&self, tenant: &str, id: &str, flow: &str) -> Result<(), ServiceError> {
        let mut draft = self.get(tenant, id)?;
        draft.flow = Some(flow.to_string());
        self.kv.put_json(Tree::FlowDrafts, &[tenant, id], &draft)?;
        Ok(())
    }

    pub fn delete(&self, tenant: &str, id: &str) -> Result<(), ServiceError> {
        self.get(tenant, id)?;
        self.kv.delete(Tree::FlowDrafts, &[tenant, id])?;
        Ok(())
    }
}
