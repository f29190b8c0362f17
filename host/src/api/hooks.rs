//! `/hooks/{token}`: the public webhook ingress (no bearer token: the
//! unguessable token is the address, and the plugin verifies the sender's
//! signature; each hook has a rate limit). `GET /metrics`: Prometheus text,
//! for the operator's or the metrics token unless `--public-metrics`.

use std::sync::Arc;

use axum::{
    Extension, Router,
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use sha2::{Digest, Sha256};

use super::{ApiError, ApiSettings, ApiState, extract::Path, limits::Limits};
use crate::{
    clock::now_ms,
    metrics::Metrics,
    runs::Runs,
    store::Delivery,
    tenants::Tenants,
    triggers::{
        Triggers,
        ingress::{Answer, accepted_body},
    },
};

pub(super) fn public_routes() -> Router<ApiState> {
    Router::new().route("/hooks/{token}", any(deliver))
}

pub(super) fn metrics_routes() -> Router<ApiState> {
    Router::new().route("/metrics", get(metrics))
}

async fn deliver(
    State(triggers): State<Arc<Triggers>>,
    State(metrics): State<Arc<Metrics>>,
    Extension(limits): Extension<Arc<Limits>>,
    Path(token): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let received_at = now_ms();
    let Some(target) = triggers.hook_target(&token)? else {
        return Err(ApiError::not_found(
            "no active flow receives deliveries at this URL",
        ));
    };
    // Refused before the body is read: a flood costs no disk.
    limits.check_hook(&token)?;
    let (parts, body) = request.into_parts();
    let delivery = Delivery::received(&target, received_at, &parts);
    let limit = triggers.settings().max_delivery_bytes;
    // A declared length over the limit is refused without reading the body.
    let declared_too_large = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok())
        .is_some_and(|n| n > limit);
    let body = if declared_too_large {
        None
    } else {
        to_bytes(body, limit).await.ok()
    };
    let Some(body) = body else {
        let reason = format!("the delivery is larger than the {} KiB limit", limit >> 10);
        triggers.reject_delivery(&delivery, &[], &reason, None)?;
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            reason,
        ));
    };
    let delivery = delivery.with_body(&body);
    // Processed while the sender waits (so a plugin can answer a
    // handshake), and answered once what it made is on disk.
    let answer = triggers.receive_delivery(&delivery).await.map_err(|e| {
        tracing::error!("a delivery could not be stored: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            "the delivery could not be stored; send it again",
        )
    })?;
    if !matches!(answer, Answer::Rejected(_)) {
        metrics.ack_latency.observe(started.elapsed().as_secs_f64());
    }
    Ok(match answer {
        Answer::Done {
            reply: Some(reply), ..
        } => {
            let mut response = Response::new(Body::from(reply.body));
            *response.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
            for (name, value) in reply.headers {
                if let (Ok(name), Ok(value)) = (
                    HeaderName::try_from(name.as_str()),
                    HeaderValue::try_from(value.as_str()),
                ) {
                    response.headers_mut().append(name, value);
                }
            }
            response
        }
        Answer::Done {
            reply: None,
            runs,
            duplicates,
        } => (StatusCode::OK, axum::Json(accepted_body(runs, duplicates))).into_response(),
        Answer::Deferred(reason) => {
            tracing::warn!("delivery accepted, processing deferred: {reason}");
            (StatusCode::ACCEPTED, axum::Json(accepted_body(0, 0))).into_response()
        }
        Answer::Rejected(reason) => {
            ApiError::new(StatusCode::BAD_REQUEST, "rejected", reason).into_response()
        }
    })
}

async fn metrics(
    State(metrics): State<Arc<Metrics>>,
    State(runs): State<Arc<Runs>>,
    State(tenants): State<Arc<Tenants>>,
    State(settings): State<Arc<ApiSettings>>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    if !settings.public_metrics {
        may_read_metrics(&tenants, &settings, &headers)?;
    }
    if let Ok(depth) = runs.queue_depth() {
        metrics.queue_depth.set(depth as i64);
    }
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    ))
}

/// The metrics token or the operator's: the figures cover every tenant.
fn may_read_metrics(
    tenants: &Tenants,
    settings: &ApiSettings,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    if let (Some(expected), Some(given)) = (&settings.metrics_token, super::bearer(headers)) {
        // Comparing digests leaks nothing useful about the token itself.
        if Sha256::digest(given.as_bytes()) == Sha256::digest(expected.as_bytes()) {
            return Ok(());
        }
    }
    let principal = super::authenticate(tenants, headers)?;
    super::operator_only(&principal, "read the metrics")
}
