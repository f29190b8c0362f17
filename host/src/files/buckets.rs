//! The `Buckets` service: a tenant's buckets and the files in them. Bytes
//! are streamed to and from blobs (never a whole file in memory), hashed as
//! they pass (the SHA-256 is the ETag), counted against the tenant's quota
//! as they arrive, and made visible only when complete and synced: an
//! object is whole or absent. Large files arrive in parts (an upload), each
//! part a blob, joined into one blob when the upload completes. A retention
//! pass deletes objects older than their bucket's retention and uploads
//! left unfinished for a day.

use std::{
    io::{Read, Write},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::{io::AsyncWriteExt, sync::Notify};

use super::paths::{PathFilter, check_bucket_name, check_path};
use crate::{
    clock::now_ms,
    error::ServiceError,
    store::{BlobFile, BucketRecord, FileStore, ObjectRecord, UploadPart, UploadRecord},
    tasks::Tasks,
};

/// The operator's limits on files.
#[derive(Debug, Clone)]
pub struct FileSettings {
    /// Bytes a tenant's objects may take in all (0: no limit).
    pub tenant_quota_bytes: u64,
    /// The largest file (or part) one request may upload.
    pub max_file_bytes: u64,
    /// Where the XLSX writer keeps its temporary rows.
    pub tempdir: std::path::PathBuf,
}

/// Uploads left unfinished longer than this are aborted.
const UPLOAD_TTL_MS: u64 = 24 * 3600 * 1000;
/// The most parts an upload may have.
pub const MAX_PARTS: u32 = 10_000;
/// A listing looks at no more than this many objects per page, whatever
/// its glob matches, so one request never walks a huge bucket.
const SCAN_PER_PAGE: usize = 10_000;

/// A page of a listing, and where the next one starts.
#[derive(Debug, Serialize)]
pub struct Listing {
    pub objects: Vec<ObjectRecord>,
    /// Pass as `after` for the next page; `None` at the end.
    pub next: Option<String>,
}

pub struct Buckets {
    store: Arc<dyn FileStore>,
    settings: FileSettings,
    /// Serialises changes of records and usage (bytes stream outside it).
    writes: Mutex<()>,
    /// Woken whenever an object appears (file triggers listen).
    created: Arc<Notify>,
}

impl Buckets {
    pub fn new(store: Arc<dyn FileStore>, settings: FileSettings) -> Self {
        Buckets {
            store,
            settings,
            writes: Mutex::new(()),
            created: Arc::new(Notify::new()),
        }
    }

    pub fn store(&self) -> &Arc<dyn FileStore> {
        &self.store
    }

    pub fn settings(&self) -> &FileSettings {
        &self.settings
    }

    /// Notified when an object appears in any bucket.
    pub fn created(&self) -> Arc<Notify> {
        self.created.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the retention pass (every ten minutes); it stops with the tasks.
    pub fn start(self: &Arc<Self>, tasks: &Arc<Tasks>) {
        let buckets = self.clone();
        let mut shutdown = tasks.shutdown_signal();
        tasks.spawn(async move {
            loop {
                let pass = buckets.clone();
                match tokio::task::spawn_blocking(move || pass.prune(now_ms())).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!("retention removed {n} files and uploads"),
                    Ok(Err(e)) => tracing::error!("file retention: {e}"),
                    Err(e) => tracing::error!("file retention: {e}"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(600)) => {}
                    _ = shutdown.changed() => break,
                }
            }
        });
    }

    pub fn create_bucket(
        &self,
        tenant: &str,
        name: &str,
        retention_days: Option<u32>,
    ) -> Result<BucketRecord, ServiceError> {
        check_bucket_name(name).map_err(ServiceError::BadRequest)?;
        if retention_days == Some(0) {
            return Err(ServiceError::BadRequest(
                "retention_days: at least 1 (leave it out to keep files)".into(),
            ));
        }
        let _guard = self.lock();
        if let Some(existing) = self.store.bucket(tenant, name)? {
            return Err(ServiceError::State(format!(
                "bucket `{}` exists already",
                existing.name
            )));
        }
        let bucket = BucketRecord {
            tenant: tenant.to_string(),
            name: name.to_string(),
            created_at: now_ms(),
            retention_days,
        };
        self.store.put_bucket(&bucket)?;
        Ok(bucket)
    }

    /// Changes a bucket's retention (`None`: keep files).
    pub fn set_retention(
        &self,
        tenant: &str,
        name: &str,
        retention_days: Option<u32>,
    ) -> Result<BucketRecord, ServiceError> {
        if retention_days == Some(0) {
            return Err(ServiceError::BadRequest(
                "retention_days: at least 1 (leave it out to keep files)".into(),
            ));
        }
        let _guard = self.lock();
        let mut bucket = self.bucket(tenant, name)?;
        bucket.retention_days = retention_days;
        self.store.put_bucket(&bucket)?;
        Ok(bucket)
    }

    pub fn bucket(&self, tenant: &str, name: &str) -> Result<BucketRecord, ServiceError> {
        self.store
            .bucket(tenant, name)?
            .ok_or_else(|| ServiceError::NotFound(format!("bucket `{name}` does not exist")))
    }

    pub fn buckets(&self, tenant: &str) -> Result<Vec<BucketRecord>, ServiceError> {
        Ok(self.store.buckets(tenant)?)
    }

    /// Deletes an empty bucket.
    pub fn delete_bucket(&self, tenant: &str, name: &str) -> Result<(), ServiceError> {
        let _guard = self.lock();
        self.bucket(tenant, name)?;
        if !self.store.objects(tenant, name, "", None, 1)?.is_empty() {
            return Err(ServiceError::State(format!(
                "bucket `{name}` is not empty; delete its files first"
            )));
        }
        self.store.delete_bucket(tenant, name)?;
        Ok(())
    }

    /// Bytes the tenant's files take, and its quota (0: none).
    pub fn usage(&self, tenant: &str) -> Result<(u64, u64), ServiceError> {
        Ok((self.store.usage(tenant)?, self.settings.tenant_quota_bytes))
    }

    fn check_quota(&self, tenant: &str, adding: u64) -> Result<(), ServiceError> {
        let quota = self.settings.tenant_quota_bytes;
        if quota == 0 {
            return Ok(());
        }
        let used = self.store.usage(tenant)?;
        if used.saturating_add(adding) > quota {
            return Err(ServiceError::TooLarge(format!(
                "the tenant's files would take {} bytes, over its quota of {quota} (it uses {used}); delete files or ask the operator for more",
                used.saturating_add(adding)
            )));
        }
        Ok(())
    }

    /// Streams `body` into a new blob, hashing and counting it against the
    /// quota; the blob is synced when this returns. Deleted on any error.
    async fn receive<S, E>(
        &self,
        tenant: &str,
        mut body: S,
    ) -> Result<(String, u64, String), ServiceError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let BlobFile { id, file, path } = self.store.create_blob(tenant)?;
        let mut file = tokio::fs::File::from_std(file);
        let mut hash = Sha256::new();
        let mut size = 0u64;
        let result: Result<(), ServiceError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk
                    .map_err(|e| ServiceError::BadRequest(format!("reading the upload: {e}")))?;
                size += chunk.len() as u64;
                if size > self.settings.max_file_bytes {
                    return Err(ServiceError::TooLarge(format!(
                        "the upload is larger than {} MiB; send it in parts",
                        self.settings.max_file_bytes >> 20
                    )));
                }
                self.check_quota(tenant, size)?;
                hash.update(&chunk);
                file.write_all(&chunk).await.map_err(|e| {
                    ServiceError::Internal(format!("writing {}: {e}", path.display()))
                })?;
            }
            file.sync_all()
                .await
                .map_err(|e| ServiceError::Internal(format!("syncing {}: {e}", path.display())))
        }
        .await;
        match result {
            Ok(()) => Ok((id, size, hex::encode(hash.finalize()))),
            Err(e) => {
                drop(file);
                let _ = self.store.delete_blob(tenant, &id);
                Err(e)
            }
        }
    }

    /// Makes a complete blob visible as an object (replacing what was at
    /// its path, whose blob is deleted).
    pub fn commit(&self, object: ObjectRecord) -> Result<ObjectRecord, ServiceError> {
        check_path(&object.path).map_err(ServiceError::BadRequest)?;
        let replaced = {
            let _guard = self.lock();
            self.bucket(&object.tenant, &object.bucket)?;
            self.store.put_object(&object)?
        };
        if let Some(old) = replaced.filter(|old| old.blob != object.blob) {
            self.store.delete_blob(&old.tenant, &old.blob)?;
        }
        self.created.notify_waiters();
        Ok(object)
    }

    /// Uploads a file in one request, streamed.
    pub async fn put_object<S, E>(
        &self,
        tenant: &str,
        bucket: &str,
        path: &str,
        content_type: Option<String>,
        body: S,
    ) -> Result<ObjectRecord, ServiceError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        self.bucket(tenant, bucket)?;
        check_path(path).map_err(ServiceError::BadRequest)?;
        let (blob, size, sha256) = self.receive(tenant, body).await?;
        let object = ObjectRecord {
            tenant: tenant.to_string(),
            bucket: bucket.to_string(),
            path: path.to_string(),
            size,
            sha256,
            content_type,
            created_at: now_ms(),
            blob: blob.clone(),
        };
        self.commit(object).inspect_err(|_| {
            let _ = self.store.delete_blob(tenant, &blob);
        })
    }

    pub fn object(
        &self,
        tenant: &str,
        bucket: &str,
        path: &str,
    ) -> Result<ObjectRecord, ServiceError> {
        self.bucket(tenant, bucket)?;
        self.store
            .object(tenant, bucket, path)?
            .ok_or_else(|| ServiceError::NotFound(format!("`{bucket}/{path}` does not exist")))
    }

    /// An object's record and its bytes, to stream.
    pub fn open(
        &self,
        tenant: &str,
        bucket: &str,
        path: &str,
    ) -> Result<(ObjectRecord, std::fs::File), ServiceError> {
        let object = self.object(tenant, bucket, path)?;
        let blob = self.store.open_blob(tenant, &object.blob, false)?;
        Ok((object, blob.file))
    }

    /// A page of a bucket's objects under `prefix` (and matching `glob`),
    /// after `after`, in path order.
    pub fn list(
        &self,
        tenant: &str,
        bucket: &str,
        prefix: Option<&str>,
        glob: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Listing, ServiceError> {
        self.bucket(tenant, bucket)?;
        let filter = PathFilter::new(prefix, glob).map_err(ServiceError::BadRequest)?;
        let limit = limit.clamp(1, 1000);
        let mut objects = Vec::new();
        let mut cursor = after.map(str::to_string);
        let mut scanned = 0;
        loop {
            let page = self.store.objects(
                tenant,
                bucket,
                &filter.prefix,
                cursor.as_deref(),
                limit.min(SCAN_PER_PAGE),
            )?;
            let exhausted = page.len() < limit.min(SCAN_PER_PAGE);
            for object in page {
                scanned += 1;
                cursor = Some(object.path.clone());
                if filter.matches(&object.path) {
                    objects.push(object);
                    if objects.len() == limit {
                        return Ok(Listing {
                            objects,
                            next: cursor,
                        });
                    }
                }
            }
            if exhausted {
                return Ok(Listing {
                    objects,
                    next: None,
                });
            }
            if scanned >= SCAN_PER_PAGE {
                // Come back for more: the glob matched little of this stretch.
                return Ok(Listing {
                    objects,
                    next: cursor,
                });
            }
        }
    }

    pub fn delete_object(
        &self,
        tenant: &str,
        bucket: &str,
        path: &str,
    ) -> Result<ObjectRecord, ServiceError> {
        let removed = {
            let _guard = self.lock();
            self.bucket(tenant, bucket)?;
            self.store.delete_object(tenant, bucket, path)?
        };
        let removed = removed
            .ok_or_else(|| ServiceError::NotFound(format!("`{bucket}/{path}` does not exist")))?;
        self.store.delete_blob(tenant, &removed.blob)?;
        Ok(removed)
    }

    /// Moves an object to another path (and bucket) of the tenant: the
    /// bytes stay where they are, only the record moves.
    pub fn move_object(
        &self,
        tenant: &str,
        bucket: &str,
        path: &str,
        to_bucket: &str,
        to_path: &str,
    ) -> Result<ObjectRecord, ServiceError> {
        check_path(to_path).map_err(ServiceError::BadRequest)?;
        let object = {
            let _guard = self.lock();
            self.bucket(tenant, to_bucket)?;
            let object = self.object(tenant, bucket, path)?;
            let moved = ObjectRecord {
                bucket: to_bucket.to_string(),
                path: to_path.to_string(),
                ..object.clone()
            };
            // Record at the new place first: a crash in between leaves the
            // file at both paths, never at neither.
            let replaced = self.store.put_object(&moved)?;
            self.store.delete_object(tenant, bucket, path)?;
            if let Some(old) = replaced.filter(|old| old.blob != moved.blob) {
                self.store.delete_blob(tenant, &old.blob)?;
            }
            moved
        };
        self.created.notify_waiters();
        Ok(object)
    }

    /// A copy of an object's bytes as a new blob (for a copy or an archive).
    pub fn copy_object(
        &self,
        tenant: &str,
        bucket: &str,
        path: &str,
        to_bucket: &str,
        to_path: &str,
    ) -> Result<ObjectRecord, ServiceError> {
        check_path(to_path).map_err(ServiceError::BadRequest)?;
        let (object, mut from) = self.open(tenant, bucket, path)?;
        self.check_quota(tenant, object.size)?;
        let mut blob = self.store.create_blob(tenant)?;
        let copied = std::io::copy(&mut from, &mut blob.file)
            .and_then(|_| blob.file.sync_all())
            .map_err(|e| {
                ServiceError::Internal(format!("copying to {}: {e}", blob.path.display()))
            });
        if let Err(e) = copied {
            let _ = self.store.delete_blob(tenant, &blob.id);
            return Err(e);
        }
        let copy = ObjectRecord {
            bucket: to_bucket.to_string(),
            path: to_path.to_string(),
            blob: blob.id.clone(),
            created_at: now_ms(),
            ..object
        };
        self.commit(copy).inspect_err(|_| {
            let _ = self.store.delete_blob(tenant, &blob.id);
        })
    }

    /// Writes small bytes as an object (an errors file, a manifest).
    pub fn put_bytes(
        &self,
        tenant: &str,
        bucket: &str,
        path: &str,
        content_type: &str,
        bytes: &[u8],
    ) -> Result<ObjectRecord, ServiceError> {
        self.check_quota(tenant, bytes.len() as u64)?;
        let mut blob = self.store.create_blob(tenant)?;
        let written = blob
            .file
            .write_all(bytes)
            .and_then(|_| blob.file.sync_all())
            .map_err(|e| ServiceError::Internal(format!("writing {}: {e}", blob.path.display())));
        if let Err(e) = written {
            let _ = self.store.delete_blob(tenant, &blob.id);
            return Err(e);
        }
        let object = ObjectRecord {
            tenant: tenant.to_string(),
            bucket: bucket.to_string(),
            path: path.to_string(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            content_type: Some(content_type.to_string()),
            created_at: now_ms(),
            blob: blob.id.clone(),
        };
        self.commit(object).inspect_err(|_| {
            let _ = self.store.delete_blob(tenant, &blob.id);
        })
    }

    pub fn create_upload(
        &self,
        tenant: &str,
        bucket: &str,
        path: &str,
        content_type: Option<String>,
    ) -> Result<UploadRecord, ServiceError> {
        self.bucket(tenant, bucket)?;
        check_path(path).map_err(ServiceError::BadRequest)?;
        let mut bytes = [0u8; 12];
        rand::rng().fill_bytes(&mut bytes);
        let upload = UploadRecord {
            tenant: tenant.to_string(),
            id: format!("upl_{}", hex::encode(bytes)),
            bucket: bucket.to_string(),
            path: path.to_string(),
            content_type,
            created_at: now_ms(),
            parts: Default::default(),
        };
        self.store.put_upload(&upload)?;
        Ok(upload)
    }

    pub fn upload(&self, tenant: &str, id: &str) -> Result<UploadRecord, ServiceError> {
        self.store
            .upload(tenant, id)?
            .ok_or_else(|| ServiceError::NotFound(format!("upload `{id}` does not exist")))
    }

    /// Receives one part (1 to [`MAX_PARTS`]); a part sent again replaces
    /// the earlier one.
    pub async fn put_part<S, E>(
        &self,
        tenant: &str,
        id: &str,
        number: u32,
        body: S,
    ) -> Result<UploadPart, ServiceError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        if !(1..=MAX_PARTS).contains(&number) {
            return Err(ServiceError::BadRequest(format!(
                "part numbers go from 1 to {MAX_PARTS}, not {number}"
            )));
        }
        self.upload(tenant, id)?;
        let (blob, size, sha256) = self.receive(tenant, body).await?;
        let part = UploadPart { blob, size, sha256 };
        let replaced = {
            let _guard = self.lock();
            let mut upload = match self.upload(tenant, id) {
                Ok(upload) => upload,
                Err(e) => {
                    let _ = self.store.delete_blob(tenant, &part.blob);
                    return Err(e);
                }
            };
            let replaced = upload.parts.insert(number, part.clone());
            self.store.put_upload(&upload)?;
            replaced
        };
        if let Some(old) = replaced {
            self.store.delete_blob(tenant, &old.blob)?;
        }
        Ok(part)
    }

    /// Joins the parts (1, 2, ... with none missing) into the object.
    /// Blocking I/O: call it from a blocking thread.
    pub fn complete_upload(&self, tenant: &str, id: &str) -> Result<ObjectRecord, ServiceError> {
        let upload = self.upload(tenant, id)?;
        if upload.parts.is_empty() {
            return Err(ServiceError::BadRequest(format!(
                "upload `{id}` has no parts"
            )));
        }
        for (i, number) in upload.parts.keys().enumerate() {
            if *number != i as u32 + 1 {
                return Err(ServiceError::BadRequest(format!(
                    "upload `{id}` is missing part {} (it has {:?})",
                    i + 1,
                    upload.parts.keys().collect::<Vec<_>>()
                )));
            }
        }
        let total: u64 = upload.parts.values().map(|p| p.size).sum();
        self.check_quota(tenant, total)?;
        let mut blob = self.store.create_blob(tenant)?;
        let mut hash = Sha256::new();
        let joined: Result<(), ServiceError> = (|| {
            let mut buffer = vec![0u8; 1 << 16];
            for part in upload.parts.values() {
                let mut from = self.store.open_blob(tenant, &part.blob, false)?.file;
                loop {
                    let n = from.read(&mut buffer).map_err(|e| {
                        ServiceError::Internal(format!("reading part {}: {e}", part.blob))
                    })?;
                    if n == 0 {
                        break;
                    }
                    hash.update(&buffer[..n]);
                    blob.file.write_all(&buffer[..n]).map_err(|e| {
                        ServiceError::Internal(format!("writing {}: {e}", blob.path.display()))
                    })?;
                }
            }
            blob.file.sync_all().map_err(|e| {
                ServiceError::Internal(format!("syncing {}: {e}", blob.path.display()))
            })
        })();
        if let Err(e) = joined {
            let _ = self.store.delete_blob(tenant, &blob.id);
            return Err(e);
        }
        let object = ObjectRecord {
            tenant: tenant.to_string(),
            bucket: upload.bucket.clone(),
            path: upload.path.clone(),
            size: total,
            sha256: hex::encode(hash.finalize()),
            content_type: upload.content_type.clone(),
            created_at: now_ms(),
            blob: blob.id.clone(),
        };
        let object = self.commit(object).inspect_err(|_| {
            let _ = self.store.delete_blob(tenant, &blob.id);
        })?;
        self.discard_upload(&upload)?;
        Ok(object)
    }

    pub fn abort_upload(&self, tenant: &str, id: &str) -> Result<(), ServiceError> {
        let upload = self.upload(tenant, id)?;
        self.discard_upload(&upload)
    }

    fn discard_upload(&self, upload: &UploadRecord) -> Result<(), ServiceError> {
        self.store.delete_upload(&upload.tenant, &upload.id)?;
        for part in upload.parts.values() {
            self.store.delete_blob(&upload.tenant, &part.blob)?;
        }
        Ok(())
    }

    /// Deletes what retention says is old; returns how many files and
    /// uploads went.
    pub fn prune(&self, now: u64) -> Result<usize, ServiceError> {
        let mut removed = 0;
        for bucket in self.store.all_buckets()? {
            let Some(days) = bucket.retention_days else {
                continue;
            };
            let before = now.saturating_sub(days as u64 * 24 * 3600 * 1000);
            let mut after: Option<String> = None;
            loop {
                let page =
                    self.store
                        .objects(&bucket.tenant, &bucket.name, "", after.as_deref(), 1000)?;
                let Some(last) = page.last() else { break };
                after = Some(last.path.clone());
                for object in page.iter().filter(|o| o.created_at < before) {
                    self.delete_object(&bucket.tenant, &bucket.name, &object.path)?;
                    removed += 1;
                }
                if page.len() < 1000 {
                    break;
                }
            }
        }
        for upload in self.store.uploads()? {
            if now.saturating_sub(upload.created_at) > UPLOAD_TTL_MS {
                self.discard_upload(&upload)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}
