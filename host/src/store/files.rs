//! Files: tenants' buckets and the objects in them, uploads in parts, the
//! ledger each file trigger keeps of the files it saw, and where each record
//! job stands. Records live in the store; the bytes of objects and of the
//! outputs a job is writing are blobs, files the backend keeps (on the
//! host's disk for sled), written and read as streams through [`BlobFile`]
//! handles so that no file is ever held in memory whole.

use std::{collections::BTreeMap, fs::File, path::PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Result;

/// A tenant's bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub tenant: String,
    pub name: String,
    pub created_at: u64,
    /// Objects older than this many days are deleted by the retention pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_days: Option<u32>,
}

/// One object of a bucket: its bytes are the blob `blob`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRecord {
    pub tenant: String,
    pub bucket: String,
    pub path: String,
    pub size: u64,
    /// Hex SHA-256 of the bytes: the object's ETag.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Milliseconds since the epoch when the object was complete.
    pub created_at: u64,
    pub blob: String,
}

/// An upload in parts, until it is completed or aborted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub tenant: String,
    pub id: String,
    pub bucket: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    pub created_at: u64,
    /// By part number: each part is a blob of its own until completion.
    pub parts: BTreeMap<u32, UploadPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadPart {
    pub blob: String,
    pub size: u64,
    pub sha256: String,
}

/// Where a file a trigger saw stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerStatus {
    /// Seen, but too young (or without its done-marker) to be taken.
    Waiting,
    /// Being copied in from a remote location.
    Fetching,
    /// Its run is queued or running.
    Queued,
    /// The run succeeded and the file was moved, deleted or archived.
    Done,
    /// The run failed; the file is under `invalid/` with its errors.
    Failed,
}

impl LedgerStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerStatus::Waiting => "waiting",
            LedgerStatus::Fetching => "fetching",
            LedgerStatus::Queued => "queued",
            LedgerStatus::Done => "done",
            LedgerStatus::Failed => "failed",
        }
    }
}

/// What a file trigger knows of one file: it is processed once, whatever
/// the trigger sees again (the same path with the same content).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The file's identity: path and ETag (or content hash).
    pub key: String,
    pub path: String,
    pub size: u64,
    /// The ETag or content hash the file had when it was seen.
    pub etag: String,
    pub status: LedgerStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Where the file is in a bucket while it is processed (a remote file
    /// is copied into the trigger's staging bucket first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<String>,
    /// Where the file went afterwards (moved, archived, `invalid/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub first_seen: u64,
    pub updated_at: u64,
}

/// A record job's counts: every record read ends good, failed or skipped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounts {
    pub read: u64,
    pub good: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Bytes of the source consumed.
    pub bytes: u64,
}

/// An output a job is writing: a blob that becomes an object when the job
/// is done, and how much of it the last checkpoint covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOutput {
    pub blob: String,
    /// Where it goes when the job is done.
    pub bucket: String,
    pub path: String,
    /// Bytes written as of the checkpoint; a resumed job cuts the blob back
    /// to this length.
    pub length: u64,
    /// Records written as of the checkpoint.
    pub records: u64,
}

/// Where a record job stands: written at every checkpoint, so that a
/// resumed job starts exactly where the last one left off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobProgress {
    pub run: String,
    pub step: String,
    /// `running`, `waiting` (for a retry), `uploading` (the output is
    /// closed and going to a remote destination), `succeeded`, `failed`.
    pub state: String,
    /// What the job reads (the file, with its hash), for people.
    pub source: Value,
    /// Byte offset in the source of the next record to read.
    pub offset: u64,
    /// Index of the next record to read (0-based).
    pub index: u64,
    pub counts: JobCounts,
    /// The source's size, when known: progress is `offset / size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    /// Records sent to the action but not acknowledged at the checkpoint:
    /// a resumed job sends exactly these again, with the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingBatch>,
    /// The outputs being written (`output`, `errors`, `rejected`).
    #[serde(default)]
    pub outputs: BTreeMap<String, JobOutput>,
    /// What a format needs to resume mid-file (a CSV header).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub resume: Value,
    /// The objects the job made, once done.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at: u64,
    pub updated_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<u64>,
}

/// A batch in flight: from record `first` (at byte `offset`) to `last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingBatch {
    pub first: u64,
    pub last: u64,
    pub offset: u64,
    /// Where the source stands after the batch.
    pub next_offset: u64,
}

/// A blob being written or read: the file and where it is.
pub struct BlobFile {
    pub id: String,
    pub file: File,
    /// For the error messages of the service that streams through it.
    pub path: PathBuf,
}

pub trait FileStore: Send + Sync + 'static {
    fn bucket(&self, tenant: &str, name: &str) -> Result<Option<BucketRecord>>;
    fn buckets(&self, tenant: &str) -> Result<Vec<BucketRecord>>;
    /// Every tenant's buckets (the retention pass).
    fn all_buckets(&self) -> Result<Vec<BucketRecord>>;
    fn put_bucket(&self, bucket: &BucketRecord) -> Result<()>;
    /// Deletes an empty bucket's record.
    fn delete_bucket(&self, tenant: &str, name: &str) -> Result<()>;

    fn object(&self, tenant: &str, bucket: &str, path: &str) -> Result<Option<ObjectRecord>>;
    /// Up to `limit` objects whose path starts with `prefix` and comes
    /// after `after`, in path order.
    fn objects(
        &self,
        tenant: &str,
        bucket: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ObjectRecord>>;
    /// Makes `object` visible (replacing what was at its path) and adds its
    /// size to the tenant's usage, in one flushed batch. Returns the object
    /// it replaced, whose blob the caller deletes.
    fn put_object(&self, object: &ObjectRecord) -> Result<Option<ObjectRecord>>;
    /// Removes an object and its size from the usage; returns it (its blob
    /// stays, for the caller to delete), or `None` when it was not there.
    fn delete_object(&self, tenant: &str, bucket: &str, path: &str)
    -> Result<Option<ObjectRecord>>;
    /// Bytes the tenant's objects take.
    fn usage(&self, tenant: &str) -> Result<u64>;

    fn upload(&self, tenant: &str, id: &str) -> Result<Option<UploadRecord>>;
    fn put_upload(&self, upload: &UploadRecord) -> Result<()>;
    fn delete_upload(&self, tenant: &str, id: &str) -> Result<()>;
    /// Every upload not completed (the retention pass aborts old ones).
    fn uploads(&self) -> Result<Vec<UploadRecord>>;

    /// A new, empty blob to write.
    fn create_blob(&self, tenant: &str) -> Result<BlobFile>;
    /// An existing blob, for reading, or for writing on from where the
    /// last checkpoint left off.
    fn open_blob(&self, tenant: &str, id: &str, write: bool) -> Result<BlobFile>;
    fn delete_blob(&self, tenant: &str, id: &str) -> Result<()>;

    fn ledger_entry(&self, tenant: &str, flow: &str, key: &str) -> Result<Option<LedgerEntry>>;
    fn put_ledger_entry(&self, tenant: &str, flow: &str, entry: &LedgerEntry) -> Result<()>;
    /// Up to `limit` entries of a flow's ledger after `after`, in key order.
    fn ledger(
        &self,
        tenant: &str,
        flow: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>>;
    /// Forgets a deleted flow's ledger.
    fn forget_ledger(&self, tenant: &str, flow: &str) -> Result<()>;

    fn job(&self, tenant: &str, run: &str, step: &str) -> Result<Option<JobProgress>>;
    /// Every job of a run, by step.
    fn jobs(&self, tenant: &str, run: &str) -> Result<Vec<JobProgress>>;
    /// Writes a job's progress; `durable` flushes it before returning (a
    /// checkpoint that outputs and calls depend on).
    fn put_job(&self, tenant: &str, progress: &JobProgress, durable: bool) -> Result<()>;
}
