//! The one error shape of the API: `{"error": {"code", "message"}}` with a
//! matching status. Internal details are logged, not returned.

use axum::{
    Json,
    extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    engine::LoadError,
    error::{ServiceError, UpstreamFailure},
};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(json!({"error": {"code": self.code, "message": self.message}}));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                "www-authenticate",
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        use StatusCode as S;
        let message = e.to_string();
        let (status, code) = match &e {
            ServiceError::Load(LoadError::Internal(_))
            | ServiceError::Store(_)
            | ServiceError::Internal(_) => {
                tracing::error!("{message}");
                return ApiError::new(
                    S::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the host log",
                );
            }
            ServiceError::Load(_) => (S::UNPROCESSABLE_ENTITY, "invalid_plugin"),
            ServiceError::Describe(_) => (S::UNPROCESSABLE_ENTITY, "describe_failed"),
            ServiceError::Manifest(_) => (S::UNPROCESSABLE_ENTITY, "invalid_manifest"),
            ServiceError::VersionMismatch { .. } => (S::UNPROCESSABLE_ENTITY, "version_mismatch"),
            ServiceError::Conflict { .. } => (S::CONFLICT, "conflict"),
            ServiceError::InUse { .. } => (S::CONFLICT, "in_use"),
            ServiceError::NotFound(_) => (S::NOT_FOUND, "not_found"),
            ServiceError::BadRequest(_) | ServiceError::Schema(_) => {
                (S::BAD_REQUEST, "bad_request")
            }
            ServiceError::InvalidFlow(_) => (S::BAD_REQUEST, "invalid_flow"),
            ServiceError::State(_) => (S::CONFLICT, "wrong_state"),
            ServiceError::Upstream { failure, .. } => match failure {
                UpstreamFailure::Failed => (S::BAD_GATEWAY, "upstream_failed"),
                UpstreamFailure::Unavailable => (S::SERVICE_UNAVAILABLE, "upstream_unavailable"),
                UpstreamFailure::Timeout => (S::GATEWAY_TIMEOUT, "upstream_timeout"),
            },
            ServiceError::Unavailable { .. } => (S::SERVICE_UNAVAILABLE, "unavailable"),
        };
        ApiError::new(status, code, message)
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        ApiError::new(e.status(), "bad_request", e.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        let code = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            "payload_too_large"
        } else {
            "bad_request"
        };
        ApiError::new(e.status(), code, e.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        ApiError::new(e.status(), "bad_request", e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        ApiError::new(e.status(), "bad_request", e.body_text())
    }
}
