//! The error type of the host's services, one variant per kind of failure so
//! that `api::ApiError` can answer each with its own status: the caller's
//! mistakes (400, 404, 409, 422), a third party's failure (502, 503, 504),
//! and ours (500, details only in the log).

use semver::Version;

use crate::{
    engine::{CallError, ConnectorError, LoadError},
    schema::SchemaError,
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
    /// A declarative spec failed its checks: every problem, placed.
    #[error("the spec is invalid:\n- {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n- "))]
    Spec(Vec<crate::declarative::Problem>),
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
    #[error("{key}@{version} is used by flows {flows:?}; move them to another version first")]
    InUse {
        key: String,
        version: Version,
        flows: Vec<String>,
    },
    #[error("{0}")]
    NotFound(String),
    /// The request is malformed, or asks for something that cannot work
    /// (an action the plugin does not have, a secret passed in the open).
    #[error("{0}")]
    BadRequest(String),
    /// A value does not satisfy the schema a plugin declares for it.
    #[error(transparent)]
    Schema(SchemaError),
    /// A flow failed its publish-time checks, every problem with its place.
    #[error("the flow is invalid:\n- {}", .0.join("\n- "))]
    InvalidFlow(Vec<String>),
    /// The object is not in a state that allows the operation.
    #[error("{0}")]
    State(String),
    /// More than a limit allows: a tenant's storage quota, a file's size.
    #[error("{0}")]
    TooLarge(String),
    /// The credentials are missing or wrong.
    #[error("{0}")]
    Unauthorized(String),
    /// The caller may not do this (a viewer changing something).
    #[error("{0}")]
    Forbidden(String),
    /// Too many attempts; the caller should wait this many seconds.
    #[error("{message}")]
    TooMany { message: String, retry_after: u64 },
    /// A third party, through its plugin, failed or refused.
    #[error("{message}")]
    Upstream {
        failure: UpstreamFailure,
        message: String,
    },
    #[error("{key}@{version} is registered but could not be loaded: {reason}")]
    Unavailable {
        key: String,
        version: Version,
        reason: String,
    },
    /// A failure of the host itself (a secret the master key cannot open, a
    /// corrupt record): logged in full, answered without details.
    #[error("{0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How a third party failed, which decides the answer's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// It refused or answered something unusable (502).
    Failed,
    /// It is down or rate-limiting us for now (503).
    Unavailable,
    /// It did not answer in time (504).
    Timeout,
}

impl ServiceError {
    /// A plugin call that failed while serving a request, as the caller's
    /// answer: what was being done, and what the third party did.
    pub fn upstream(doing: &str, error: &CallError) -> ServiceError {
        let failure = match error {
            CallError::Timeout { .. } => UpstreamFailure::Timeout,
            CallError::Connector {
                error: ConnectorError::Transient { .. } | ConnectorError::RateLimited { .. },
            } => UpstreamFailure::Unavailable,
            _ => UpstreamFailure::Failed,
        };
        ServiceError::Upstream {
            failure,
            message: format!("{doing}: {error}"),
        }
    }
}

impl From<SchemaError> for ServiceError {
    fn from(e: SchemaError) -> Self {
        match e {
            // Manifests are checked at upload, so an unusable schema is ours.
            SchemaError::Unusable { .. } => ServiceError::Internal(e.to_string()),
            invalid => ServiceError::Schema(invalid),
        }
    }
}
