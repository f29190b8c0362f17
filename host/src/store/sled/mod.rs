//! The embedded backend: sled trees in `<data-dir>/db`, blobs as files in
//! `<data-dir>/blobs` (plugins) and `<data-dir>/files` (tenants' files).
//! One [`SledStore`] implements every store trait, so a
//! batch can span them (new runs with the inbox entry they came from, or with
//! their trigger's cursor).

mod commit;
mod entities;
mod files;
mod inbox;
mod keys;
mod kv;
mod queue;
mod runs;
mod topics;
mod triggers;

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use sled::Transactional;

use super::{Result, StoreError, Stores};
use commit::GroupCommit;

pub struct SledStore {
    db: sled::Db,
    blob_dir: PathBuf,
    commit: GroupCommit,
    /// Each lane dispatcher's walk past the blocked head of its queue.
    walks: [Mutex<runs::Walk>; 2],
    /// The run queue's keys, which the dispatchers walk.
    queue: queue::Mirror,
    /// Writes taken by each [`Tree`](super::Tree), in the order of
    /// `Tree::ALL` ([`Kv::writes`](super::Kv::writes)).
    kv_writes: [std::sync::atomic::AtomicU64; super::Tree::ALL.len()],
}

impl SledStore {
    /// Opens (or creates) the database of a data directory. Waits a moment
    /// for a lock that a just-closed database of this process may still
    /// hold; another process's lock is an error that names the directory.
    pub fn open(data_dir: &Path) -> Result<Arc<Self>> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| StoreError::Io { path, source }
        };
        let blob_dir = data_dir.join("blobs");
        fs::create_dir_all(&blob_dir).map_err(io(&blob_dir))?;
        let db = open_db(&data_dir.join("db"))?;
        let queue = queue::Mirror::load(&db.open_tree(keys::QUEUE).map_err(backend)?)?;
        Ok(Arc::new_cyclic(|me: &std::sync::Weak<SledStore>| {
            let me = me.clone();
            SledStore {
                db,
                blob_dir,
                // Weak, so the database closes when the host drops it, not
                // when the commit thread notices.
                commit: GroupCommit::start(commit::LAZY, move || match me.upgrade() {
                    Some(store) => store.flush(),
                    None => Err("the store is closed".to_string()),
                }),
                walks: Default::default(),
                queue,
                kv_writes: Default::default(),
            }
        }))
    }

    /// The store as every trait the services use.
    pub fn stores(self: &Arc<Self>) -> Stores {
        Stores {
            kv: self.clone(),
            runs: self.clone(),
            inbox: self.clone(),
            triggers: self.clone(),
            entities: self.clone(),
            files: self.clone(),
            topics: self.clone(),
        }
    }

    fn tree(&self, name: &'static str) -> Result<sled::Tree> {
        self.db.open_tree(name).map_err(backend)
    }

    /// Makes every write so far durable.
    fn flush(&self) -> std::result::Result<(), String> {
        self.db.flush().map(|_| ()).map_err(|e| e.to_string())
    }

    fn get(&self, tree: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .tree(tree)?
            .get(key)
            .map_err(backend)?
            .map(|v| v.to_vec()))
    }

    fn scan_prefix(&self, tree: &'static str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.tree(tree)?
            .scan_prefix(prefix)
            .map(|entry| {
                let (k, v) = entry.map_err(backend)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// Up to `limit` entries whose key starts with `prefix` and is not below
    /// `from`, in key order.
    fn scan_from(
        &self,
        tree: &'static str,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let start = if from > prefix { from } else { prefix };
        self.tree(tree)?
            .range(start..)
            .take_while(|entry| entry.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(limit)
            .map(|entry| {
                let (k, v) = entry.map_err(backend)?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// Applies the ops one by one, in their order (not flushed): for
    /// writes ordered so that a crash between two of them leaves a state
    /// that is repaired, where a transaction would cost more.
    fn apply_in_order(&self, ops: Vec<Op>) -> Result<()> {
        for op in ops {
            self.apply(vec![op])?;
        }
        Ok(())
    }

    /// Applies every op or none of them (not flushed).
    fn apply(&self, ops: Vec<Op>) -> Result<()> {
        self.write_ops(&ops)?;
        self.queue.apply(&ops);
        for op in &ops {
            if let Some(i) = super::Tree::ALL.iter().position(|t| t.name() == op.tree()) {
                self.kv_writes[i].fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
        }
        Ok(())
    }

    fn write_ops(&self, ops: &[Op]) -> Result<()> {
        match ops {
            // sled's transactions index their first tree.
            [] => return Ok(()),
            // One write is atomic by itself, and a transaction costs more
            // than the write (single writes skipping it took the webhook
            // ingest from ~2,000 to ~2,800 deliveries/s on the reference
            // machine). Keeping every logical tree in one sled tree, so that
            // batches need no transaction either, measured slower.
            [Op::Put { tree, key, value }] => {
                self.tree(tree)?
                    .insert(key.as_slice(), value.as_slice())
                    .map_err(backend)?;
                return Ok(());
            }
            [Op::Delete { tree, key }] => {
                self.tree(tree)?.remove(key.as_slice()).map_err(backend)?;
                return Ok(());
            }
            _ => {}
        }
        let mut names: Vec<&'static str> = ops.iter().map(Op::tree).collect();
        names.sort_unstable();
        names.dedup();
        let trees = names
            .iter()
            .map(|name| self.tree(name))
            .collect::<Result<Vec<_>>>()?;
        let index = |name: &str| {
            names
                .iter()
                .position(|n| *n == name)
                .expect("tree collected above")
        };
        trees
            .as_slice()
            .transaction(|tx| {
                for op in ops {
                    match op {
                        Op::Put { tree, key, value } => {
                            tx[index(tree)].insert(key.as_slice(), value.as_slice())?;
                        }
                        Op::Delete { tree, key } => {
                            tx[index(tree)].remove(key.as_slice())?;
                        }
                    }
                }
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError<()>| match e {
                sled::transaction::TransactionError::Storage(e) => backend(e),
                sled::transaction::TransactionError::Abort(()) => {
                    unreachable!("the transaction body never aborts")
                }
            })
    }

    fn blob_path(&self, hash: &str) -> Result<PathBuf> {
        // Hashes come from our own hashing, but a path is built from them: be strict.
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(StoreError::Io {
                path: hash.to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "not a SHA-256 hex digest",
                ),
            });
        }
        Ok(self.blob_dir.join(hash))
    }

    fn put_blob_file(&self, hash: &str, bytes: &[u8]) -> Result<()> {
        let path = self.blob_path(hash)?;
        if path.exists() {
            return Ok(());
        }
        let tmp = path.with_extension("tmp");
        let io = |source| StoreError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut file = fs::File::create(&tmp).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    fn get_blob_file(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        let path = self.blob_path(hash)?;
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    fn delete_blob_file(&self, hash: &str) -> Result<()> {
        let path = self.blob_path(hash)?;
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Io {
                path: path.display().to_string(),
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// One write in an atomic [`SledStore::apply`] batch.
#[derive(Debug, Clone)]
enum Op {
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

impl Op {
    fn put(tree: &'static str, key: Vec<u8>, value: Vec<u8>) -> Op {
        Op::Put { tree, key, value }
    }

    fn put_json<T: serde::Serialize>(tree: &'static str, key: Vec<u8>, value: &T) -> Op {
        Op::Put {
            tree,
            key,
            value: super::encode(value),
        }
    }

    /// An index entry: the key is everything.
    fn mark(tree: &'static str, key: Vec<u8>) -> Op {
        Op::Put {
            tree,
            key,
            value: Vec::new(),
        }
    }

    fn delete(tree: &'static str, key: Vec<u8>) -> Op {
        Op::Delete { tree, key }
    }

    fn tree(&self) -> &'static str {
        match self {
            Op::Put { tree, .. } | Op::Delete { tree, .. } => tree,
        }
    }

    fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. } | Op::Delete { key, .. } => key,
        }
    }
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// How long `open` waits for a lock that a just-closed database of this
/// process may still hold: sled's I/O threads let go of the file a moment
/// after the last handle is dropped.
const LOCK_WAIT: Duration = Duration::from_secs(5);

fn open_db(path: &Path) -> Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new()
            .path(path)
            .cache_capacity(64 << 20)
            .open()
        {
            // sled has no error variant for this: only its message says so.
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if Instant::now() >= deadline {
                    return Err(StoreError::Locked {
                        path: path.display().to_string(),
                    });
                }
                thread::sleep(Duration::from_millis(20));
            }
            other => return other.map_err(backend),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Kv, KvExt, Tree, Write};

    #[test]
    fn batches_are_atomic_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SledStore::open(dir.path()).unwrap();
            store
                .apply(vec![
                    Op::put_json("a", b"k1".to_vec(), &1),
                    Op::put_json("b", b"k2".to_vec(), &"two"),
                ])
                .unwrap();
            store.apply(vec![Op::delete("a", b"k1".to_vec())]).unwrap();
            store
                .write(vec![
                    Write::put(Tree::Tenants, &["t1"], &"one"),
                    Write::put(Tree::Connections, &["t1", "c1"], &"conn"),
                    Write::put(Tree::Connections, &["t10", "c2"], &"other"),
                ])
                .unwrap();
            store.put_blob(&"ab".repeat(32), b"bytes").unwrap();
            store.flush().unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.get("a", b"k1").unwrap(), None);
        assert_eq!(store.get("b", b"k2").unwrap(), Some(b"\"two\"".to_vec()));
        assert_eq!(
            store.get_json::<String>(Tree::Tenants, &["t1"]).unwrap(),
            Some("one".into())
        );
        // A prefix of parts selects whole parts: `t1` is not `t10`.
        assert_eq!(
            store.keys(Tree::Connections, &["t1"]).unwrap(),
            vec![vec!["t1".to_string(), "c1".to_string()]]
        );
        assert_eq!(
            store.get_blob(&"ab".repeat(32)).unwrap().as_deref(),
            Some(&b"bytes"[..])
        );
        assert!(store.get_blob("../etc/passwd").is_err());
    }

    #[test]
    fn a_directory_in_use_is_refused_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let _held = SledStore::open(dir.path()).unwrap();
        // Another process holding the lock looks the same as this handle
        // holding it; the wait ends and names the directory.
        let err = SledStore::open(dir.path())
            .err()
            .expect("a second open must fail");
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("another"), "{err}");
    }
}
