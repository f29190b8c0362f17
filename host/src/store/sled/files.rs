//! [`FileStore`] on sled: buckets, objects (keyed by path so that a prefix
//! scan lists a folder in order), each tenant's usage, uploads in parts,
//! the file triggers' ledgers and the record jobs' progress. Blobs are files
//! under `<data-dir>/files/<tenant>/`, named by a random id.

use super::{Op, SledStore, backend, keys};
use crate::store::{
    BlobFile, BucketRecord, FileStore, JobProgress, LedgerEntry, ObjectRecord, Result, StoreError,
    UploadRecord, blobs::BlobDir, decode, encode,
};

/// `{tenant}\0{bucket}` → the bucket.
const BUCKETS: &str = "buckets";
/// `{tenant}\0{bucket}\0{path}` → an object.
const OBJECTS: &str = "objects";
/// `{tenant}` → bytes its objects take (decimal text).
const USAGE: &str = "file_usage";
/// `{tenant}\0{upload}` → an upload in parts.
const UPLOADS: &str = "uploads";
/// `{tenant}\0{flow}\0{file key}` → what a file trigger knows of a file.
const LEDGER: &str = "file_ledger";
/// `{tenant}\0{run}\0{step}` → a record job's progress.
const JOBS: &str = "record_jobs";

impl SledStore {
    fn file_blobs(&self) -> BlobDir {
        BlobDir::new(self.blob_dir.with_file_name("files"))
    }

    fn usage_after(&self, tenant: &str, add: u64, remove: u64) -> Result<Op> {
        let now = self.usage(tenant)?;
        Ok(Op::put(
            USAGE,
            tenant.as_bytes().to_vec(),
            (now.saturating_add(add).saturating_sub(remove))
                .to_string()
                .into_bytes(),
        ))
    }

    fn scan_json<T: serde::de::DeserializeOwned>(
        &self,
        tree: &'static str,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<T>> {
        let from = match after {
            Some(after) => keys::after(after),
            None => prefix.to_vec(),
        };
        self.scan_from(tree, prefix, &from, limit)?
            .into_iter()
            .map(|(_, v)| decode(tree, &v))
            .collect()
    }

    fn durable(&self) -> Result<()> {
        self.flush().map_err(StoreError::Backend)
    }
}

impl FileStore for SledStore {
    fn bucket(&self, tenant: &str, name: &str) -> Result<Option<BucketRecord>> {
        self.get(BUCKETS, &keys::join(&[tenant, name]))?
            .map(|v| decode(BUCKETS, &v))
            .transpose()
    }

    fn buckets(&self, tenant: &str) -> Result<Vec<BucketRecord>> {
        let prefix = keys::prefix(&[tenant]);
        self.scan_json(BUCKETS, &prefix, None, usize::MAX)
    }

    fn all_buckets(&self) -> Result<Vec<BucketRecord>> {
        self.scan_json(BUCKETS, &[], None, usize::MAX)
    }

    fn put_bucket(&self, bucket: &BucketRecord) -> Result<()> {
        self.apply(vec![Op::put_json(
            BUCKETS,
            keys::join(&[&bucket.tenant, &bucket.name]),
            bucket,
        )])?;
        self.durable()
    }

    fn delete_bucket(&self, tenant: &str, name: &str) -> Result<()> {
        self.apply(vec![Op::delete(BUCKETS, keys::join(&[tenant, name]))])?;
        self.durable()
    }

    fn object(&self, tenant: &str, bucket: &str, path: &str) -> Result<Option<ObjectRecord>> {
        self.get(OBJECTS, &keys::join(&[tenant, bucket, path]))?
            .map(|v| decode(OBJECTS, &v))
            .transpose()
    }

    fn objects(
        &self,
        tenant: &str,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>> {
        let folder = keys::prefix(&[tenant, bucket]);
        let mut start = folder.clone();
        start.extend_from_slice(prefix.as_bytes());
        let after = after.map(|a| keys::join(&[tenant, bucket, a]));
        self.scan_json(OBJECTS, &start, after.as_deref(), limit)
    }

    fn put_object(&self, object: &ObjectRecord) -> Result<Option<ObjectRecord>> {
        let key = keys::join(&[&object.tenant, &object.bucket, &object.path]);
        let replaced: Option<ObjectRecord> = self
            .get(OBJECTS, &key)?
            .map(|v| decode(OBJECTS, &v))
            .transpose()?;
        let freed = replaced.as_ref().map_or(0, |r| r.size);
        self.apply(vec![
            Op::put(OBJECTS, key, encode(object)),
            self.usage_after(&object.tenant, object.size, freed)?,
        ])?;
        self.durable()?;
        Ok(replaced)
    }

    fn delete_object(
        &self,
        tenant: &str,
        bucket: &str,
        path: &str,
    ) -> Result<Option<ObjectRecord>> {
        let key = keys::join(&[tenant, bucket, path]);
        let Some(existing) = self.get(OBJECTS, &key)? else {
            return Ok(None);
        };
        let existing: ObjectRecord = decode(OBJECTS, &existing)?;
        self.apply(vec![
            Op::delete(OBJECTS, key),
            self.usage_after(tenant, 0, existing.size)?,
        ])?;
        self.durable()?;
        Ok(Some(existing))
    }

    fn usage(&self, tenant: &str) -> Result<u64> {
        Ok(self
            .get(USAGE, tenant.as_bytes())?
            .and_then(|v| String::from_utf8_lossy(&v).parse().ok())
            .unwrap_or(0))
    }

    fn upload(&self, tenant: &str, id: &str) -> Result<Option<UploadRecord>> {
        self.get(UPLOADS, &keys::join(&[tenant, id]))?
            .map(|v| decode(UPLOADS, &v))
            .transpose()
    }

    fn put_upload(&self, upload: &UploadRecord) -> Result<()> {
        self.apply(vec![Op::put_json(
            UPLOADS,
            keys::join(&[&upload.tenant, &upload.id]),
            upload,
        )])?;
        self.durable()
    }

    fn delete_upload(&self, tenant: &str, id: &str) -> Result<()> {
        self.apply(vec![Op::delete(UPLOADS, keys::join(&[tenant, id]))])?;
        self.durable()
    }

    fn uploads(&self) -> Result<Vec<UploadRecord>> {
        self.scan_json(UPLOADS, &[], None, usize::MAX)
    }

    fn create_blob(&self, tenant: &str) -> Result<BlobFile> {
        self.file_blobs().create(tenant)
    }

    fn open_blob(&self, tenant: &str, id: &str, write: bool) -> Result<BlobFile> {
        self.file_blobs().open(tenant, id, write)
    }

    fn delete_blob(&self, tenant: &str, id: &str) -> Result<()> {
        self.file_blobs().delete(tenant, id)
    }

    fn ledger_entry(&self, tenant: &str, flow: &str, key: &str) -> Result<Option<LedgerEntry>> {
        self.get(LEDGER, &keys::join(&[tenant, flow, key]))?
            .map(|v| decode(LEDGER, &v))
            .transpose()
    }

    fn put_ledger_entry(&self, tenant: &str, flow: &str, entry: &LedgerEntry) -> Result<()> {
        self.apply(vec![Op::put_json(
            LEDGER,
            keys::join(&[tenant, flow, &entry.key]),
            entry,
        )])?;
        self.durable()
    }

    fn ledger(
        &self,
        tenant: &str,
        flow: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>> {
        let prefix = keys::prefix(&[tenant, flow]);
        let after = after.map(|a| keys::join(&[tenant, flow, a]));
        self.scan_json(LEDGER, &prefix, after.as_deref(), limit)
    }

    fn forget_ledger(&self, tenant: &str, flow: &str) -> Result<()> {
        let ops = self
            .scan_prefix(LEDGER, &keys::prefix(&[tenant, flow]))?
            .into_iter()
            .map(|(key, _)| Op::delete(LEDGER, key))
            .collect();
        self.apply(ops)
    }

    fn job(&self, tenant: &str, run: &str, step: &str) -> Result<Option<JobProgress>> {
        self.get(JOBS, &keys::join(&[tenant, run, step]))?
            .map(|v| decode(JOBS, &v))
            .transpose()
    }

    fn jobs(&self, tenant: &str, run: &str) -> Result<Vec<JobProgress>> {
        self.scan_json(JOBS, &keys::prefix(&[tenant, run]), None, usize::MAX)
    }

    fn put_job(&self, tenant: &str, progress: &JobProgress, durable: bool) -> Result<()> {
        self.tree(JOBS)?
            .insert(
                keys::join(&[tenant, &progress.run, &progress.step]),
                encode(progress),
            )
            .map_err(backend)?;
        if durable { self.durable() } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FileStore, JobCounts};

    fn object(path: &str, size: u64) -> ObjectRecord {
        ObjectRecord {
            tenant: "t1".into(),
            bucket: "in".into(),
            path: path.into(),
            size,
            sha256: "00".into(),
            content_type: None,
            created_at: 1,
            blob: "ab".repeat(16),
        }
    }

    #[test]
    fn objects_list_by_prefix_in_pages_and_usage_follows_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        for (path, size) in [
            ("a/1.csv", 10),
            ("a/2.csv", 20),
            ("a/3.csv", 30),
            ("b/1.csv", 5),
        ] {
            assert_eq!(store.put_object(&object(path, size)).unwrap(), None);
        }
        assert_eq!(store.usage("t1").unwrap(), 65);
        // Replacing an object counts only the new size.
        let replaced = store.put_object(&object("a/2.csv", 2)).unwrap();
        assert_eq!(replaced.map(|r| r.size), Some(20));
        assert_eq!(store.usage("t1").unwrap(), 47);
        let page: Vec<String> = store
            .objects("t1", "in", "a/", None, 2)
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .collect();
        assert_eq!(page, ["a/1.csv", "a/2.csv"]);
        let next: Vec<String> = store
            .objects("t1", "in", "a/", Some("a/2.csv"), 2)
            .unwrap()
            .into_iter()
            .map(|o| o.path)
            .collect();
        assert_eq!(next, ["a/3.csv"]);
        assert_eq!(store.objects("t1", "in", "", None, 10).unwrap().len(), 4);
        // Another bucket whose name starts the same is not listed.
        let mut other = object("x", 1);
        other.bucket = "in2".into();
        store.put_object(&other).unwrap();
        assert_eq!(store.objects("t1", "in", "", None, 10).unwrap().len(), 4);
        let gone = store.delete_object("t1", "in", "a/1.csv").unwrap();
        assert_eq!(gone.map(|o| o.size), Some(10));
        assert_eq!(store.delete_object("t1", "in", "a/1.csv").unwrap(), None);
        assert_eq!(store.usage("t1").unwrap(), 38);
    }

    #[test]
    fn blobs_are_files_of_their_tenant_and_ids_are_checked() {
        use std::io::{Read, Write};
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut blob = store.create_blob("t1").unwrap();
        blob.file.write_all(b"hello").unwrap();
        let mut text = String::new();
        store
            .open_blob("t1", &blob.id, false)
            .unwrap()
            .file
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello");
        assert!(store.open_blob("t2", &blob.id, false).is_err());
        assert!(store.open_blob("t1", "../../etc/passwd", false).is_err());
        assert!(store.create_blob("../x").is_err());
        store.delete_blob("t1", &blob.id).unwrap();
        assert!(store.open_blob("t1", &blob.id, false).is_err());
    }

    #[test]
    fn a_job_checkpoint_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let progress = JobProgress {
            run: "run_1".into(),
            step: "import".into(),
            state: "running".into(),
            source: serde_json::json!({"path": "a.csv"}),
            offset: 1234,
            index: 56,
            counts: JobCounts {
                read: 56,
                good: 55,
                failed: 1,
                skipped: 0,
                bytes: 1234,
            },
            total_bytes: Some(9999),
            pending: None,
            outputs: Default::default(),
            resume: serde_json::Value::Null,
            files: Default::default(),
            error: None,
            started_at: 1,
            updated_at: 2,
            finished_at: None,
        };
        {
            let store = SledStore::open(dir.path()).unwrap();
            store.put_job("t1", &progress, true).unwrap();
        }
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(store.job("t1", "run_1", "import").unwrap(), Some(progress));
        assert_eq!(store.jobs("t1", "run_1").unwrap().len(), 1);
        assert!(store.jobs("t1", "run_2").unwrap().is_empty());
    }
}
