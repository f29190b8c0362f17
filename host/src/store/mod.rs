//! Durable storage behind one small trait, so the host can later run on a
//! shared store instead of the embedded sled database.
//!
//! The trait is deliberately key-value shaped: named trees of ordered byte keys,
//! atomic batches across trees, and content-addressed blobs for plugin
//! binaries. Typed records live in the modules that own them (the registry,
//! connections, flows) and are serialised as JSON.

mod sled_store;

use std::sync::Arc;

use serde::{Serialize, de::DeserializeOwned};

pub use sled_store::SledStore;

/// Errors at the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend: {0}")]
    Backend(#[from] sled::Error),
    #[error("storage I/O on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the database in {path} is locked by another process (is another switchyard using this data directory?)"
    )]
    Locked { path: String },
    #[error("corrupt record in tree `{tree}`: {source}")]
    Corrupt {
        tree: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One write in an atomic [`Storage::apply`] batch.
#[derive(Debug, Clone)]
pub enum Op {
    Put {
        tree: &'static str,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        tree: &'static str,
        key: Vec<u8>,
    },
}

/// The storage every part of the host goes through.
pub trait Storage: Send + Sync + 'static {
    fn get(&self, tree: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// All entries whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, tree: &'static str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// Up to `limit` entries whose key starts with `prefix` and is not
    /// below `from`, in key order.
    fn scan_from(
        &self,
        tree: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>>;
    /// How many entries the tree holds (walks it: for gauges, not hot paths).
    fn count(&self, tree: &'static str) -> Result<usize>;
    /// Applies every op or none of them.
    fn apply(&self, ops: Vec<Op>) -> Result<()>;
    /// Makes every write so far durable.
    fn flush(&self) -> Result<()>;
    /// Stores a blob under its content hash (hex SHA-256), durably.
    fn put_blob(&self, hash: &str, bytes: &[u8]) -> Result<()>;
    fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>>;
    fn delete_blob(&self, hash: &str) -> Result<()>;
}

/// Typed helpers over any [`Storage`].
pub trait StorageExt: Storage {
    fn get_json<T: DeserializeOwned>(&self, tree: &'static str, key: &[u8]) -> Result<Option<T>> {
        self.get(tree, key)?
            .map(|bytes| decode(tree, &bytes))
            .transpose()
    }

    fn scan_json<T: DeserializeOwned>(&self, tree: &'static str, prefix: &[u8]) -> Result<Vec<T>> {
        self.scan_prefix(tree, prefix)?
            .into_iter()
            .map(|(_, bytes)| decode(tree, &bytes))
            .collect()
    }

    fn put_json<T: Serialize>(&self, tree: &'static str, key: &[u8], value: &T) -> Result<()> {
        self.apply(vec![Op::put_json(tree, key, value)])
    }
}

impl<S: Storage + ?Sized> StorageExt for S {}

impl Op {
    pub fn put_json<T: Serialize>(tree: &'static str, key: &[u8], value: &T) -> Op {
        Op::Put {
            tree,
            key: key.to_vec(),
            // Serialising our own plain records cannot fail.
            value: serde_json::to_vec(value).expect("records serialise to JSON"),
        }
    }
}

fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt { tree, source })
}

/// The storage handle shared across the host.
pub type SharedStorage = Arc<dyn Storage>;
