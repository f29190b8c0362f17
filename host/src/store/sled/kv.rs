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

    /// This host owns the database: every write goes through `apply`,
    /// which counts it.
    fn writes(&self, tree: Tree) -> Option<u64> {
        let i = Tree::ALL.iter().position(|t| *t == tree)?;
        Some(self.kv_writes[i].load(std::sync::atomic::Ordering::Acquire))
    }
}

fn join(parts: &[String]) -> Vec<u8> {
    parts.join("\0").into_bytes()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::store::{Decoded, Kv, KvExt, Tree};

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

    /// The store, counting the reads that reach it.
    struct Counting(Arc<SledStore>, std::sync::atomic::AtomicUsize);

    impl crate::store::Kv for Counting {
        fn get(&self, tree: Tree, key: &[&str]) -> crate::store::Result<Option<Vec<u8>>> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Kv::get(self.0.as_ref(), tree, key)
        }
        fn scan(
            &self,
            tree: Tree,
            prefix: &[&str],
        ) -> crate::store::Result<Vec<(Vec<String>, Vec<u8>)>> {
            self.0.scan(tree, prefix)
        }
        fn write(&self, writes: Vec<crate::store::Write>) -> crate::store::Result<()> {
            crate::store::Kv::write(self.0.as_ref(), writes)
        }
        fn put_blob(&self, hash: &str, bytes: &[u8]) -> crate::store::Result<()> {
            self.0.put_blob(hash, bytes)
        }
        fn get_blob(&self, hash: &str) -> crate::store::Result<Option<Vec<u8>>> {
            self.0.get_blob(hash)
        }
        fn delete_blob(&self, hash: &str) -> crate::store::Result<()> {
            self.0.delete_blob(hash)
        }
        fn writes(&self, tree: Tree) -> Option<u64> {
            self.0.writes(tree)
        }
    }

    #[test]
    fn an_unwritten_tree_s_record_is_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Counting(SledStore::open(dir.path()).unwrap(), Default::default());
        let reads = || store.1.load(std::sync::atomic::Ordering::SeqCst);
        let cache: Decoded<Vec<u32>> = Decoded::new(Tree::Connections);
        let key = ["t1", "c1"];
        store.put_json(Tree::Connections, &key, &vec![1]).unwrap();
        let before = store.writes(Tree::Connections).unwrap();
        let first = cache.get(&store, &key).unwrap().unwrap();
        assert_eq!(reads(), 1);
        // Writes to other trees (runs, flows) do not count for this one.
        store
            .put_json(Tree::Flows, &["t1", "f1"], &vec![2])
            .unwrap();
        assert_eq!(store.writes(Tree::Connections), Some(before));
        let again = cache.get(&store, &key).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(reads(), 1, "read again with no write to its tree");
        // A write to the tree, of another record: read again, same bytes,
        // the same decoded value; then no read until the next write.
        store
            .put_json(Tree::Connections, &["t1", "c2"], &vec![3])
            .unwrap();
        assert!(store.writes(Tree::Connections) > Some(before));
        let third = cache.get(&store, &key).unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &third));
        cache.get(&store, &key).unwrap();
        assert_eq!(reads(), 2);
        store.put_json(Tree::Connections, &key, &vec![4]).unwrap();
        assert_eq!(*cache.get(&store, &key).unwrap().unwrap(), [4]);
        assert_eq!(reads(), 3);
    }
}
