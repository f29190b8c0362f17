//! [`Kv`] on PostgreSQL: a table per [`Tree`] (`kv_<tree>`), keys as the
//! parts joined with NUL, so a prefix of parts is a key range; plugin
//! binaries in `blobs`, shared by every host (each compiles them into its
//! own artifact cache). A write tells the other hosts which trees changed.

use std::sync::Arc;

use super::{PgStore, nodes::KV_CHANNEL, pg};
use crate::store::{Kv, Result, StoreError, Tree, Write};

fn join(parts: &[impl AsRef<str>]) -> Vec<u8> {
    parts
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join("\0")
        .into_bytes()
}

fn split(key: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(key)
        .split('\0')
        .map(str::to_string)
        .collect()
}

/// The key range of every key that starts with these whole parts:
/// `[low, high)`, or everything for no parts.
fn range(parts: &[&str]) -> Option<(Vec<u8>, Vec<u8>)> {
    if parts.is_empty() {
        return None;
    }
    let mut low = join(parts);
    let mut high = low.clone();
    low.push(0);
    high.push(1);
    Some((low, high))
}

impl Kv for PgStore {
    fn get(&self, tree: Tree, key: &[&str]) -> Result<Option<Vec<u8>>> {
        let key = join(key);
        self.with(move |c| {
            Box::pin(async move {
                let sql = format!("SELECT value FROM kv_{} WHERE key = $1", tree.name());
                let stmt = c.prepare_cached(&sql).await.map_err(pg)?;
                Ok(c.query_opt(&stmt, &[&key])
                    .await
                    .map_err(pg)?
                    .map(|row| row.get(0)))
            })
        })
    }

    fn scan(&self, tree: Tree, prefix: &[&str]) -> Result<Vec<(Vec<String>, Vec<u8>)>> {
        let range = range(prefix);
        self.with(move |c| {
            Box::pin(async move {
                let rows = match &range {
                    Some((low, high)) => {
                        let sql = format!(
                            "SELECT key, value FROM kv_{} WHERE key >= $1 AND key < $2 ORDER BY key",
                            tree.name()
                        );
                        let stmt = c.prepare_cached(&sql).await.map_err(pg)?;
                        c.query(&stmt, &[low, high]).await.map_err(pg)?
                    }
                    None => {
                        let sql = format!("SELECT key, value FROM kv_{} ORDER BY key", tree.name());
                        let stmt = c.prepare_cached(&sql).await.map_err(pg)?;
                        c.query(&stmt, &[]).await.map_err(pg)?
                    }
                };
                Ok(rows
                    .iter()
                    .map(|row| (split(row.get::<_, &[u8]>(0)), row.get(1)))
                    .collect())
            })
        })
    }

    fn write(&self, writes: Vec<Write>) -> Result<()> {
        let node = self.node.clone();
        self.with(move |c| {
            Box::pin(async move {
                let tx = c.transaction().await.map_err(pg)?;
                let mut trees: Vec<Tree> = Vec::new();
                for write in &writes {
                    let tree = match write {
                        Write::Put { tree, key, value } => {
                            let sql = format!(
                                "INSERT INTO kv_{} (key, value) VALUES ($1, $2)
                                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                                tree.name()
                            );
                            let stmt = tx.prepare_cached(&sql).await.map_err(pg)?;
                            tx.execute(&stmt, &[&join(key), value]).await.map_err(pg)?;
                            *tree
                        }
                        Write::Delete { tree, key } => {
                            let sql = format!("DELETE FROM kv_{} WHERE key = $1", tree.name());
                            let stmt = tx.prepare_cached(&sql).await.map_err(pg)?;
                            tx.execute(&stmt, &[&join(key)]).await.map_err(pg)?;
                            *tree
                        }
                    };
                    if !trees.contains(&tree) {
                        trees.push(tree);
                    }
                }
                for tree in trees {
                    tx.execute(
                        "SELECT pg_notify($1, $2)",
                        &[&KV_CHANNEL, &format!("{node}\n{}", tree.name())],
                    )
                    .await
                    .map_err(pg)?;
                }
                tx.commit().await.map_err(pg)
            })
        })
    }

    fn put_blob(&self, hash: &str, bytes: &[u8]) -> Result<()> {
        check_hash(hash)?;
        let (hash, bytes) = (hash.to_string(), bytes.to_vec());
        self.with(move |c| {
            Box::pin(async move {
                c.execute(
                    "INSERT INTO blobs (hash, bytes) VALUES ($1, $2) ON CONFLICT (hash) DO NOTHING",
                    &[&hash, &bytes],
                )
                .await
                .map_err(pg)?;
                Ok(())
            })
        })
    }

    fn get_blob(&self, hash: &str) -> Result<Option<Vec<u8>>> {
        check_hash(hash)?;
        let hash = hash.to_string();
        self.with(move |c| {
            Box::pin(async move {
                Ok(
                    c.query_opt("SELECT bytes FROM blobs WHERE hash = $1", &[&hash])
                        .await
                        .map_err(pg)?
                        .map(|row| row.get(0)),
                )
            })
        })
    }

    fn delete_blob(&self, hash: &str) -> Result<()> {
        check_hash(hash)?;
        let hash = hash.to_string();
        self.with(move |c| {
            Box::pin(async move {
                c.execute("DELETE FROM blobs WHERE hash = $1", &[&hash])
                    .await
                    .map_err(pg)?;
                Ok(())
            })
        })
    }

    fn watch(&self, tree: Tree, changed: Arc<dyn Fn() + Send + Sync>) {
        self.listeners
            .trees
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((tree.name(), changed));
    }
}

/// Blob names are our own SHA-256 digests; anything else is refused.
fn check_hash(hash: &str) -> Result<()> {
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "`{hash}` is not a SHA-256 hex digest"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_of_parts_is_a_range_of_whole_parts() {
        let (low, high) = range(&["t1"]).unwrap();
        let inside = join(&["t1", "c1"]);
        let other = join(&["t10", "c2"]);
        assert!(low <= inside && inside < high);
        assert!(!(low <= other && other < high));
        assert!(!(low <= join(&["t1"]) && join(&["t1"]) < high));
        assert_eq!(split(&inside), ["t1", "c1"]);
        assert!(range(&[]).is_none());
    }
}
