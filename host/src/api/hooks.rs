//! `/hooks/{token}`: the public webhook ingress (no bearer token: the
//! unguessable token is the address, and the plugin verifies the sender's
//! signature). `GET /metrics`: Prometheus text.

use std::sync::Arc;

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};
use base64::{Engine as _, engine::general_purpose::STANDARD as B64};

use super::{ApiError, ApiState, extract::Path};
use crate::{
    clock::now_ms,
    metrics::Metrics,
    runs::Runs,
    store::Delivery,
    triggers::{
        Triggers,
        ingress::{Answer, accepted_body},
    },
};

pub(super) fn public_routes() -> Router<ApiState> {
    Router::new()
        .route("/hooks/{token}", any(deliver))
        .route("/metrics", get(metrics))
}

async fn deliver(
    State(triggers): State<Arc<Triggers>>,
    State(metrics): State<Arc<Metrics>>,
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
    let (parts, body) = request.into_parts();
    let mut delivery = Delivery {
        tenant: target.tenant,
        flow_id: target.flow_id,
        received_at,
        method: parts.method.to_string(),
        query: parts.uri.query().unwrap_or("").to_string(),
        headers: parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: String::new(),
        attempts: 0,
        next_attempt_at: 0,
        last_error: None,
    };
    let limit = triggers.settings().max_delivery_bytes;
    let body = match to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => {
            let reason = format!("the delivery is larger than the {} KiB limit", limit >> 10);
            triggers.reject_delivery(&delivery, &[], &reason, None)?;
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                reason,
            ));
        }
    };
    delivery.body = B64.encode(&body);
    let key = triggers.accept_delivery(&delivery).await.map_err(|e| {
        tracing::error!("a delivery could not be stored: {e}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_stored",
            "the delivery could not be stored; send it again",
        )
    })?;
    metrics.ack_latency.observe(started.elapsed().as_secs_f64());
    // Durable now. Process it while the sender waits, so a plugin can answer
    // a handshake; if processing fails, the inbox worker retries it.
    if !triggers.claim_delivery(&key) {
        return Ok((StatusCode::ACCEPTED, axum::Json(accepted_body(0, 0))).into_response());
    }
    let answer = triggers.process_delivery(&key, &delivery).await;
    triggers.release_delivery(&key);
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
) -> impl IntoResponse {
    if let Ok(depth) = runs.queue_depth() {
        metrics.queue_depth.set(depth as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}
