//! The audit log: who changed which connection, flow, user or tenant, and
//! when. Entries are kept per tenant in time order; the API and the console
//! write them through the same call after a change succeeded.

use serde::{Deserialize, Serialize};

use super::{Users, random_hex};
use crate::{
    clock::now_ms,
    error::ServiceError,
    store::{KvExt, Tree},
    tenants::Principal,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Milliseconds since the epoch.
    pub at: u64,
    /// `operator`, a user's email, or `API token`.
    pub actor: String,
    /// What was done, e.g. `connection.create`, `flow.publish`.
    pub action: String,
    /// The id of what it was done to.
    pub target: String,
    /// A short human note (a name, a version), never a secret.
    #[serde(default)]
    pub detail: String,
}

impl Users {
    /// Records that `principal` did `action` to `target` in its tenant.
    pub fn audit(
        &self,
        principal: &Principal,
        action: &str,
        target: &str,
        detail: impl Into<String>,
    ) -> Result<(), ServiceError> {
        self.audit_in(principal.tenant(), principal, action, target, detail)
    }

    /// Records a change made in `tenant` (the operator's changes to a
    /// tenant are recorded in that tenant's log too).
    pub fn audit_in(
        &self,
        tenant: &str,
        principal: &Principal,
        action: &str,
        target: &str,
        detail: impl Into<String>,
    ) -> Result<(), ServiceError> {
        let entry = AuditEntry {
            at: now_ms(),
            actor: principal.actor(),
            action: action.to_string(),
            target: target.to_string(),
            detail: detail.into(),
        };
        let at = format!("{:015}", entry.at);
        self.kv
            .put_json(Tree::Audit, &[tenant, &at, &random_hex(4)], &entry)?;
        Ok(())
    }

    /// A tenant's audit log, newest first, at most `limit` entries.
    pub fn audit_log(&self, tenant: &str, limit: usize) -> Result<Vec<AuditEntry>, ServiceError> {
        let mut entries: Vec<AuditEntry> = self.kv.scan_json(Tree::Audit, &[tenant])?;
        entries.reverse();
        entries.truncate(limit);
        Ok(entries)
    }
}
