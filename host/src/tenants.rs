//! Tenants (merchants, "clients") and who is calling: the operator, who
//! manages plugins and tenants, or a tenant, who sees and changes only its
//! own connections (and, with the flow engine, its flows and runs).

use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{
    connections::DEFAULT_TENANT,
    error::ServiceError,
    store::{Op, SharedStorage, StorageExt},
};

const TENANTS: &str = "tenants";
/// `sha256(token)` -> tenant id, to find a tenant by its token.
const TENANT_TOKENS: &str = "tenant_tokens";

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

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Operator,
    Tenant(String),
}

impl Principal {
    /// The tenant whose data a request reads and writes. The operator acts
    /// for the default tenant.
    pub fn tenant(&self) -> &str {
        match self {
            Principal::Operator => DEFAULT_TENANT,
            Principal::Tenant(id) => id,
        }
    }

    pub fn is_operator(&self) -> bool {
        matches!(self, Principal::Operator)
    }
}

pub struct Tenants {
    store: SharedStorage,
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
    pub fn new(store: SharedStorage) -> Self {
        Tenants { store }
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
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            token_sha256: digest(&token),
        };
        self.store.apply(vec![
            Op::put_json(TENANTS, tenant.id.as_bytes(), &tenant),
            Op::put_json(TENANT_TOKENS, tenant.token_sha256.as_bytes(), &tenant.id),
        ])?;
        self.store.flush()?;
        Ok((tenant, token))
    }

    pub fn list(&self) -> Result<Vec<Tenant>, ServiceError> {
        Ok(self.store.scan_json(TENANTS, b"")?)
    }

    pub fn get(&self, id: &str) -> Result<Tenant, ServiceError> {
        self.store
            .get_json(TENANTS, id.as_bytes())?
            .ok_or_else(|| ServiceError::NotFound(format!("tenant `{id}` does not exist")))
    }

    /// Replaces a tenant's token; the old one stops working at once.
    pub fn rotate_token(&self, id: &str) -> Result<String, ServiceError> {
        let mut tenant = self.get(id)?;
        let token = new_token();
        let old = std::mem::replace(&mut tenant.token_sha256, digest(&token));
        self.store.apply(vec![
            Op::Delete {
                tree: TENANT_TOKENS,
                key: old.into_bytes(),
            },
            Op::put_json(TENANT_TOKENS, tenant.token_sha256.as_bytes(), &tenant.id),
            Op::put_json(TENANTS, tenant.id.as_bytes(), &tenant),
        ])?;
        self.store.flush()?;
        Ok(token)
    }

    pub fn delete(&self, id: &str) -> Result<(), ServiceError> {
        let tenant = self.get(id)?;
        self.store.apply(vec![
            Op::Delete {
                tree: TENANT_TOKENS,
                key: tenant.token_sha256.into_bytes(),
            },
            Op::Delete {
                tree: TENANTS,
                key: id.as_bytes().to_vec(),
            },
        ])?;
        self.store.flush()?;
        Ok(())
    }

    /// The tenant a token belongs to, if any.
    pub fn by_token(&self, token: &str) -> Result<Option<String>, ServiceError> {
        Ok(self
            .store
            .get_json(TENANT_TOKENS, digest(token).as_bytes())?)
    }
}
