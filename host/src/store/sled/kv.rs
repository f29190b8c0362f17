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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::store::{Decoded, KvExt, Tree};

    use super::SledStore;

    #[test]
    fn a_decoded_record_is_reused_until_its_bytes_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let cache: Decoded<Vec<u32>> = Decoded::new(Tree::Flows);
        let key = ["t1", "f1"];
        assert!(cache.get(store.as_ref(), &key).unwrap().is_none());

        store.put_json(Tree::Flows, &key, &vec![1, 2]).unwrap();
        let first = cache.get(store.as_ref(), &key).unwrap().unwrap();
        assert_eq!(*first, [1, 2]);
        let again = cache.get(store.as_ref(), &key).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again), "decoded once");

        // Another writer (another node, or this one) changes the record.
        store.put_json(Tree::Flows, &key, &vec![3]).unwrap();
        let changed = cache.get(store.as_ref(), &key).unwrap().unwrap();
        assert_eq!(*changed, [3]);
        // Another key of the same tree is its own entry.
        store
            .put_json(Tree::Flows, &["t1", "f2"], &vec![1, 2])
            .unwrap();
        let other = cache.get(store.as_ref(), &["t1", "f2"]).unwrap().unwrap();
        assert!(!Arc::ptr_eq(&first, &other));

        store.delete(Tree::Flows, &key).unwrap();
        assert!(cache.get(store.as_ref(), &key).unwrap().is_none());
    }
}
