//! The run queue's keys in memory, in step with the `run_queue` tree: every
//! write of that tree goes through [`SledStore::apply`](super::SledStore),
//! which tells this copy after sled took the write. The dispatchers walk
//! this copy instead of sled's iterator: a pass looks at the entries of the
//! runs already running before it finds one to start, and sled's iterator
//! over them cost 4.5% of the server's samples under load (BENCHMARKS.md).
//! The tree stays the truth; this copy is rebuilt from it at every start.
//!
//! A key is here a moment after sled has it, and gone a moment after sled
//! lost it: a writer wakes the dispatcher after its write returns, so the
//! pass it wakes sees the new key; a key seen just before its deletion is
//! what sled's iterator could return too (the dispatcher checks the run).

use std::{
    collections::BTreeSet,
    ops::Bound,
    sync::{Arc, Mutex},
};

use super::{Op, backend, keys::QUEUE};
use crate::store::Result;

#[derive(Default)]
pub(super) struct Mirror {
    keys: Mutex<BTreeSet<Arc<[u8]>>>,
}

impl Mirror {
    /// A copy of the tree's keys.
    pub(super) fn load(tree: &sled::Tree) -> Result<Mirror> {
        let keys = tree
            .iter()
            .keys()
            .map(|key| key.map(|k| Arc::from(k.as_ref())).map_err(backend))
            .collect::<Result<_>>()?;
        Ok(Mirror {
            keys: Mutex::new(keys),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<Arc<[u8]>>> {
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the queue's writes among `ops`, which sled has applied.
    pub(super) fn apply(&self, ops: &[Op]) {
        let mut queue = ops.iter().filter(|op| op.tree() == QUEUE).peekable();
        if queue.peek().is_none() {
            return;
        }
        let mut keys = self.lock();
        for op in queue {
            match op {
                Op::Put { key, .. } => keys.insert(Arc::from(key.as_slice())),
                Op::Delete { key, .. } => keys.remove(key.as_slice()),
            };
        }
    }

    /// Up to `n` keys that start with `prefix`, from `from` on, in order.
    pub(super) fn batch(&self, prefix: &[u8], from: Bound<&[u8]>, n: usize) -> Vec<Arc<[u8]>> {
        self.lock()
            .range::<[u8], _>((from, Bound::Unbounded))
            .take_while(|key| key.starts_with(prefix))
            .take(n)
            .cloned()
            .collect()
    }

    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(batch: Vec<Arc<[u8]>>) -> Vec<String> {
        batch
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect()
    }

    #[test]
    fn batches_follow_the_writes_in_key_order_within_a_prefix() {
        let mirror = Mirror::default();
        let put = |key: &str| Op::mark(QUEUE, key.as_bytes().to_vec());
        mirror.apply(&[put("1b"), put("1a"), put("0z"), put("2a"), put("1c")]);
        // Other trees' writes are not the queue's.
        mirror.apply(&[Op::mark("runs", b"1aa".to_vec())]);
        assert_eq!(mirror.len(), 5);
        assert_eq!(
            keys(mirror.batch(b"1", Bound::Included(b"1"), 10)),
            ["1a", "1b", "1c"]
        );
        assert_eq!(keys(mirror.batch(b"1", Bound::Excluded(b"1a"), 1)), ["1b"]);
        mirror.apply(&[Op::delete(QUEUE, b"1b".to_vec()), put("1bb")]);
        assert_eq!(
            keys(mirror.batch(b"1", Bound::Excluded(b"1a"), 10)),
            ["1bb", "1c"]
        );
        assert!(mirror.batch(b"3", Bound::Included(b"3"), 10).is_empty());
    }
}
