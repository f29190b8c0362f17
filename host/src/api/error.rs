//! The one error shape of the API: `{"error": {"code", "message"}}` with a
//! matching status. Internal details are logged, not returned.

use axum::{
    Json,
    body::to_bytes,
    extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection},
    http::{HeaderValue, StatusCode, header},
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
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
    /// Every problem of a refused spec, placed (`{"path", "line", "message"}`).
    pub problems: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            problems: None,
        }
    }

    /// Tells the client when to try again.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
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
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(problems) = self.problems {
            error["problems"] = problems;
        }
        let body = Json(json!({ "error": error }));
        let mut response = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Gives the error responses axum makes itself the API's shape: an
/// extractor's rejection (413 over a body limit, a malformed body a handler
/// did not inspect), 405. Responses that already are JSON pass unchanged.
pub(super) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // axum's own rejection texts are one line.
    let text = to_bytes(body, 64 << 10)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut shaped = ApiError::new(status, rejection_code(status), message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    // Keep what else axum said (`Allow` of a 405).
    for (name, value) in &parts.headers {
        shaped
            .headers_mut()
            .entry(name)
            .or_insert_with(|| value.clone());
    }
    shaped
}

/// The code of a request axum refused before a handler saw it.
fn rejection_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNAUTHORIZED => "unauthorized",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
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
            ServiceError::Spec(problems) => {
                let mut error = ApiError::new(S::UNPROCESSABLE_ENTITY, "invalid_spec", message);
                error.problems = Some(json!(problems));
                return error;
            }
            ServiceError::VersionMismatch { .. } => (S::UNPROCESSABLE_ENTITY, "version_mismatch"),
            ServiceError::Conflict { .. } => (S::CONFLICT, "conflict"),
            ServiceError::InUse { .. } => (S::CONFLICT, "in_use"),
            ServiceError::NotFound(_) => (S::NOT_FOUND, "not_found"),
            ServiceError::BadRequest(_) | ServiceError::Schema(_) => {
                (S::BAD_REQUEST, "bad_request")
            }
            ServiceError::InvalidFlow(_) => (S::BAD_REQUEST, "invalid_flow"),
            ServiceError::State(_) => (S::CONFLICT, "wrong_state"),
            ServiceError::TooLarge(_) => (S::PAYLOAD_TOO_LARGE, "too_large"),
            ServiceError::Unauthorized(_) => (S::UNAUTHORIZED, "unauthorized"),
            ServiceError::Forbidden(_) => (S::FORBIDDEN, "forbidden"),
            ServiceError::TooMany { retry_after, .. } => {
                return ApiError::new(S::TOO_MANY_REQUESTS, "rate_limited", message)
                    .retry_after(*retry_after);
            }
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
        ApiError::new(e.status(), rejection_code(e.status()), e.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        ApiError::new(e.status(), rejection_code(e.status()), e.body_text())
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
