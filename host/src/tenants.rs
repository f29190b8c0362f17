//! Tenants (merchants, "clients") and who is calling: the operator, who
//! manages plugins and tenants, or a tenant, who sees and changes only its
//! own connections, flows and runs. Tokens are stored as SHA-256 digests
//! and looked up by digest; the operator token is printed once when it is
//! generated.

use std::sync::Arc;

use anyhow::Context as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    clock::now_secs,
    error::ServiceError,
    store::{Kv, KvExt, Tree, Write},
};

/// The tenant the operator acts for, and the one data from before tenants
/// existed belongs to.
pub const DEFAULT_TENANT: &str = "default";

/// Where the operator token's digest is kept in [`Tree::Meta`].
const OPERATOR_TOKEN: &str = "operator_token_sha256";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: u64,
    token_sha256: String,
}

impl Tenant {
    /// The tenant as the API shows it (without its token's hash).
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({"id": self.id, "name": self.name, "created_at": self.created_at})
    }
}

/// What a member of a tenant may do. The tenant's API token acts as an
/// owner; the operator is above every role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads everything, changes nothing.
    Viewer,
    /// Changes connections and flows, replays and cancels runs.
    Editor,
    /// Everything an editor does, and manages the tenant's users.
    Owner,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Owner, Role::Editor, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    /// A member of a tenant: its API token (an owner, `user` is `None`) or
    /// a signed-in user with that user's role.
    Tenant {
        tenant: String,
        role: Role,
        /// The user's email, for the audit log.
        user: Option<String>,
    },
}

impl Principal {
    /// The tenant's API token: an owner without a user.
    pub fn token_of(tenant: impl Into<String>) -> Principal {
        Principal::Tenant {
            tenant: tenant.into(),
            role: Role::Owner,
            user: None,
        }
    }

    /// The tenant whose data a request reads and writes. The operator acts
    /// for the default tenant.
    pub fn tenant(&self) -> &str {
        match self {
            Principal::Operator => DEFAULT_TENANT,
            Principal::Tenant { tenant, .. } => tenant,
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Operator)
    }

    /// The role within [`Principal::tenant`]: the operator is an owner there.
    pub fn role(&self) -> Role {
        match self {
            Principal::Operator => Role::Owner,
            Principal::Tenant { role, .. } => *role,
        }
    }

    /// May change connections and flows and act on runs.
    pub fn can_write(&self) -> bool {
        self.role() >= Role::Editor
    }

    /// May manage the tenant's users.
    pub fn can_manage_users(&self) -> bool {
        self.role() == Role::Owner
    }

    /// Who this is, as the audit log names it.
    pub fn actor(&self) -> String {
        match self {
            Principal::Operator => "operator".to_string(),
            Principal::Tenant {
                user: Some(email), ..
            } => email.clone(),
            Principal::Tenant { .. } => "API token".to_string(),
        }
    }
}

pub struct Tenants {
    kv: Arc<dyn Kv>,
    operator: [u8; 32],
}

fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn new_token() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    format!("syt_{}", hex::encode(bytes))
}

impl Tenants {
    /// Opens the tenants, with the operator token given by the operator or,
    /// the first time without one, generated. Returns the generated token
    /// too, to be shown once.
    pub fn open(
        kv: Arc<dyn Kv>,
        configured: Option<&str>,
    ) -> anyhow::Result<(Self, Option<String>)> {
        let (operator, generated) = operator_token(&*kv, configured)?;
        Ok((Tenants { kv, operator }, generated))
    }

    /// Who a bearer token belongs to: the operator, a tenant, or nobody.
    pub fn authenticate(&self, token: &str) -> Result<Option<Principal>, ServiceError> {
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Comparing digests leaks nothing useful about the token itself.
        if given == self.operator {
            return Ok(Some(Principal::Operator));
        }
        Ok(self.by_token(token)?.map(Principal::token_of))
    }

    /// Who a token's digest belongs to (a session remembers the digest of
    /// the token it was opened with, so a rotated token ends it).
    pub fn authenticate_digest(&self, digest_hex: &str) -> Result<Option<Principal>, ServiceError> {
        if digest_hex == hex::encode(self.operator) {
            return Ok(Some(Principal::Operator));
        }
        let tenant: Option<String> = self.kv.get_json(Tree::TenantTokens, &[digest_hex])?;
        Ok(tenant.map(Principal::token_of))
    }

    /// The digest under which a token is known.
    pub fn token_digest(token: &str) -> String {
        digest(token)
    }

    /// Creates a tenant; returns it with its API token (shown only now).
    pub fn create(&self, name: &str) -> Result<(Tenant, String), ServiceError> {
        if name.trim().is_empty() {
            return Err(ServiceError::BadRequest("a tenant needs a name".into()));
        }
        let mut id_bytes = [0u8; 8];
        rand::rng().fill_bytes(&mut id_bytes);
        let token = new_token();
        let tenant = Tenant {
            id: format!("ten_{}", hex::encode(id_bytes)),
            name: name.trim().to_string(),
            created_at: now_secs(),
            token_sha256: digest(&token),
        };
        self.kv.write(vec![
            Write::put(Tree::Tenants, &[&tenant.id], &tenant),
            Write::put(Tree::TenantTokens, &[&tenant.token_sha256], &tenant.id),
        ])?;
        Ok((tenant, token))
    }

    pub fn list(&self) -> Result<Vec<Tenant>, ServiceError> {
        Ok(self.kv.scan_json(Tree::Tenants, &[])?)
    }

    pub fn get(&self, id: &str) -> Result<Tenant, ServiceError> {
        self.kv
            .get_json(Tree::Tenants, &[id])?
            .ok_or_else(|| ServiceError::NotFound(format!("tenant `{id}` does not exist")))
    }

    /// Replaces a tenant's token; the old one stops working at once.
    pub fn rotate_token(&self, id: &str) -> Result<String, ServiceError> {
        let mut tenant = self.get(id)?;
        let token = new_token();
        let old = std::mem::replace(&mut tenant.token_sha256, digest(&token));
        self.kv.write(vec![
            Write::delete(Tree::TenantTokens, &[&old]),
            Write::put(Tree::TenantTokens, &[&tenant.token_sha256], &tenant.id),
            Write::put(Tree::Tenants, &[&tenant.id], &tenant),
        ])?;
        Ok(token)
    }

    pub fn delete(&self, id: &str) -> Result<(), ServiceError> {
        let tenant = self.get(id)?;
        self.kv.write(vec![
            Write::delete(Tree::TenantTokens, &[&tenant.token_sha256]),
            Write::delete(Tree::Tenants, &[id]),
        ])?;
        Ok(())
    }

    /// The tenant a token belongs to, if any.
    pub fn by_token(&self, token: &str) -> Result<Option<String>, ServiceError> {
        Ok(self.kv.get_json(Tree::TenantTokens, &[&digest(token)])?)
    }
}

/// The digest of the operator token: the configured one, else the stored
/// one, else a new token (returned, to be shown once; only its digest is kept).
fn operator_token(
    kv: &dyn Kv,
    configured: Option<&str>,
) -> anyhow::Result<([u8; 32], Option<String>)> {
    if let Some(token) = configured {
        anyhow::ensure!(
            token.len() >= 16,
            "the operator token must be at least 16 characters"
        );
        return Ok((Sha256::digest(token.as_bytes()).into(), None));
    }
    if let Some(hex_hash) = kv.get_json::<String>(Tree::Meta, &[OPERATOR_TOKEN])? {
        let mut hash = [0u8; 32];
        hex::decode_to_slice(&hex_hash, &mut hash)
            .context("stored operator token hash is corrupt")?;
        return Ok((hash, None));
    }
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("sy_{}", hex::encode(bytes));
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    kv.put_json(Tree::Meta, &[OPERATOR_TOKEN], &hex::encode(hash))?;
    Ok((hash, Some(token)))
}
