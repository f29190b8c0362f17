//! The error type of the host's services (registry, connections, invoke);
//! `api::ApiError` maps each kind to an HTTP status and code.

use semver::Version;

use crate::{
    engine::{CallError, LoadError},
    store::StoreError,
};

/// What went wrong in a service call, in words meant for the caller.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("describe() failed: {0}")]
    Describe(CallError),
    #[error("the manifest is invalid:\n- {}", .0.join("\n- "))]
    Manifest(Vec<String>),
    #[error("the manifest says version {found}, but the upload was for version {expected}")]
    VersionMismatch { expected: Version, found: Version },
    #[error(
        "{key}@{version} already exists with different content (sha256 {existing}); publish a new version instead"
    )]
    Conflict {
        key: String,
        version: Version,
        existing: String,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{key}@{version} is used by flows {flows:?}; move them to another version first")]
    InUse {
        key: String,
        version: Version,
        flows: Vec<String>,
    },
    #[error("{0}")]
    BadRequest(String),
    /// The object is not in a state that allows the operation.
    #[error("{0}")]
    State(String),
    #[error("{key}@{version} is registered but could not be loaded: {reason}")]
    Unavailable {
        key: String,
        version: Version,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}
