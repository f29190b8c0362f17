//! Durable storage: the traits the services write through, the records the
//! engine's hot paths keep, and the backends that implement them.
//!
//! The seam sits where the engine needs it, not at bytes:
//! - [`Kv`]: low-churn records (plugins, tenants, connections, flows, webhook
//!   routes), JSON values in named [`Tree`]s under keys made of parts;
//! - [`RunStore`]: runs and everything that moves with them (the due-time
//!   queue, dead letters, parked runs, retention order, de-duplication);
//! - [`Inbox`]: webhook deliveries accepted and not yet processed, and the
//!   ones that were rejected;
//! - [`TriggerStore`]: where each polling or scheduled trigger stands;
//! - [`EntityStore`]: what each flow last saw of each entity;
//! - [`FileStore`]: buckets and their objects (records here, bytes as
//!   blobs), file triggers' ledgers and record jobs' progress.
//! - [`TopicStore`]: topics' change records by partition and offset, and
//!   the current state per key.
//!
//! Services build neither byte keys nor backend batches: they name a tree and
//! the parts of a key, or call a typed operation. [`sled`] is the embedded
//! backend; `app.rs` is the only place that names it.

mod blobs;
mod entities;
mod files;
mod inbox;
mod kv;
pub mod postgres;
mod runs;
pub mod sled;
mod topics;
mod triggers;

use std::sync::Arc;

pub use entities::{EntityState, EntityStore, EntityWrite, IngestCounts, RunEntity};
pub use files::{
    BlobFile, BucketRecord, FileStore, JobCounts, JobOutput, JobProgress, LedgerEntry,
    LedgerStatus, ObjectRecord, PendingBatch, UploadPart, UploadRecord,
};
pub use inbox::{Delivery, Inbox, InboxKey, Rejected};
pub use kv::{Decoded, Kv, KvExt, Tree, Write};
pub use runs::{
    Along, Attempt, KEPT_ATTEMPTS, Lane, ParentRun, QueueEntry, RunError, RunEvent, RunFilter,
    RunRecord, RunResponse, RunStatus, RunStore, Seen, StepRecord, StepStatus, Visit,
};
pub use topics::{PartitionHead, TopicRecord, TopicStore};
pub use triggers::{PollRecord, Sample, TriggerState, TriggerStore};

/// Errors at the storage boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend: {0}")]
    Backend(String),
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
    #[error("corrupt record in `{place}`: {message}")]
    Corrupt { place: String, message: String },
    /// A write refused because this node no longer holds what it wrote
    /// under (a run's claim, a trigger's lease), or the record changed since
    /// it was read: another node took over.
    #[error("write refused: {0}")]
    Fenced(String),
    /// A write that would repeat something recorded once (a run id, a
    /// schedule's fire slot).
    #[error("already recorded: {0}")]
    Conflict(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Every store of one backend, as the services get them.
#[derive(Clone)]
pub struct Stores {
    pub kv: Arc<dyn Kv>,
    pub runs: Arc<dyn RunStore>,
    pub inbox: Arc<dyn Inbox>,
    pub triggers: Arc<dyn TriggerStore>,
    pub entities: Arc<dyn EntityStore>,
    pub files: Arc<dyn FileStore>,
    pub topics: Arc<dyn TopicStore>,
}

/// A boxed future, for the async operations of object-safe store traits.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Whether text can be a part of a storage key: backends join parts with
/// NUL, so a part must not hold one. Services check names from outside
/// with this before they use them in a key.
pub fn check_key_part(part: &str) -> std::result::Result<(), String> {
    if part.contains('\0') {
        Err("must not contain NUL".into())
    } else {
        Ok(())
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(place: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        place: place.to_string(),
        message: e.to_string(),
    })
}

pub(crate) fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising our own plain records cannot fail.
    serde_json::to_vec(value).expect("records serialise to JSON")
}
