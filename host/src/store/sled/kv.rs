//! [`Kv`] on sled: one sled tree per [`Tree`], key parts joined with NUL.

use super::{Op, SledStore, keys};
use crate::store::{Kv, Result, StoreError, Tree, Write};

impl Kv for SledStore {
    fn get(&self, tree: Tree, key: &[&str]) -> Result<Option<Vec<u8>>> {
        SledStore::get(self, tree.name(), &keys::join(key))
    }

    fn scan(&self, tree: Tree, prefix: &[&str]) -> Result<Vec<(Vec<String>, Vec<u8>)>> {
        Ok(self
            .scan_prefix(tree.name(), &keys::prefix(prefix))?
            .into_iter()
            .map(|(k, v)| (keys::split(&k), v))
            .collect())
    }

    fn write(&self, writes: Vec<Write>) -> Result<()> {
        let ops = writes
            .into_iter()
            .map(|write| match write {
                Write::Put { tree, key, value } => Op::put(tree.name(), join(&key), value),
                Write::Delete { tree, key } => Op::delete(tree.name(), join(&key)),
            })
            .collect();
        self.apply(ops)?;
        self.flush().map_err(StoreError::Backend)
    }

    fn put_blob(&self, hash: &str, bytes: &[u8]) -> Result<()> {
        self.put_blob_file(hash, bytes)
    }

    fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        self.get_blob_file(hash)
    }

    fn delete_blob(&self, hash: &str) -> Result<()> {
        self.delete_blob_file(hash)
    }
}

fn join(parts: &[String]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}
