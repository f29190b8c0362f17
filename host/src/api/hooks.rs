//! `/hooks/{token}`: the public webhook ingress (no bearer token: the
//! unguessable token is the address, and the plugin verifies the sender's
//! signature). `GET /metrics`: Prometheus text.

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::{Path, Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get},
};

use super::{ApiError, AppState};
use crate::{
    runs::record::now_ms,
    triggers::ingress::{Answer, Delivery, accepted_body},
};

pub(super) fn public_routes() -> Router<AppState> {
    Router::new()
        .route("/hooks/{token}", any(deliver))
        .route("/metrics", get(metrics))
}

async fn deliver(
    State(app): State<AppState>,
    Path(token): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let started = std::time::Instant::now();
    let received_at = now_ms();
    let Some(target) = app.hook_target(&token)? else {
        return Err(ApiError::not_found(
            "no active flow receives deliveries at this URL",
        ));
    };
    let (parts, body) = request.into_parts();
    let delivery = Delivery::received(target, received_at, &parts);
    let limit = app.config.max_delivery_kib << 10;
    let body = match to_bytes(body, limit).await {
        Ok(body) => body,
        Err(_) => {
            let reason = format!(
                "the delivery is larger than the {} KiB limit",
                app.config.max_delivery_kib
            );
            app.reject_delivery(&delivery, &[], &reason, Vec::new())?;
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                reason,
            ));
        }
    };
    let delivery = delivery.with_body(&body);
    let key = app
        .accept_delivery(&delivery)
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_stored", e.to_string()))?;
    app.runtime
        .metrics
        .ack_latency
        .observe(started.elapsed().as_secs_f64());
    // Durable now. Process it while the sender waits, so a plugin can answer
    // a handshake; if processing fails, the inbox worker retries it.
    if !app.runtime.claim_delivery(&key) {
        return Ok((StatusCode::ACCEPTED, axum::Json(accepted_body(0, 0))).into_response());
    }
    let answer = app.process_delivery(&key, &delivery).await;
    app.runtime.release_delivery(&key);
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

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    if let Ok(depth) = app.queue_depth() {
        app.runtime.metrics.queue_depth.set(depth as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.runtime.metrics.encode(),
    )
}
