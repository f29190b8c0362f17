//! The admin API (axum): JSON in and out, bearer-token auth on everything but
//! `/health`, the webhook ingress and the OAuth callback. Each handler takes
//! the services it needs as sub-states of [`ApiState`], never the whole host.

mod connections;
mod error;
mod extract;
mod flows;
mod hooks;
mod plugins;
mod runs;
mod tenants;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{FromRef, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use serde_json::{Value, json};

pub use error::ApiError;

use crate::{
    calls::Calls,
    connections::{Connections, oauth::OAuth},
    engine::Engine,
    flows::Flows,
    metrics::Metrics,
    registry::Registry,
    runs::Runs,
    tenants::{Principal, Tenants},
    triggers::Triggers,
};

/// What the handlers may use: one service each, picked by type.
#[derive(Clone, FromRef)]
pub struct ApiState {
    pub tenants: Arc<Tenants>,
    pub registry: Arc<Registry>,
    pub connections: Arc<Connections>,
    pub oauth: Arc<OAuth>,
    pub calls: Arc<Calls>,
    pub flows: Arc<Flows>,
    pub runs: Arc<Runs>,
    pub triggers: Arc<Triggers>,
    pub metrics: Arc<Metrics>,
    pub engine: Arc<Engine>,
    pub settings: Arc<ApiSettings>,
}

/// The operator's settings that the API applies itself.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Where browsers and third parties reach this host (OAuth redirects,
    /// webhook URLs); the request's `Host` when unset.
    pub public_url: Option<String>,
    /// Largest plugin upload accepted.
    pub max_upload_bytes: usize,
}

/// The whole API.
pub fn router(state: ApiState) -> Router {
    let authed = Router::new()
        .route("/v1/status", get(status))
        .merge(plugins::routes(&state.settings))
        .merge(connections::routes())
        .merge(tenants::routes())
        .merge(flows::routes())
        .merge(runs::routes())
        .route_layer(middleware::from_fn_with_state(
            state.tenants.clone(),
            require_token,
        ));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .merge(connections::public_routes())
        .merge(hooks::public_routes())
        .merge(authed)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(state)
}

async fn require_token(
    State(tenants): State<Arc<Tenants>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let Some(token) = token else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>`",
        ));
    };
    match tenants.authenticate(token.trim())? {
        Some(principal) => {
            request.extensions_mut().insert(principal);
            Ok(next.run(request).await)
        }
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not valid",
        )),
    }
}

/// Where this host is reachable from outside: `--public-url`, else the
/// request's `Host`.
pub(crate) fn base_url(
    settings: &ApiSettings,
    headers: &axum::http::HeaderMap,
) -> Result<String, ApiError> {
    match &settings.public_url {
        Some(url) => Ok(url.clone()),
        None => {
            let host = headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .ok_or_else(|| ApiError::bad_request("no Host header; set --public-url"))?;
            Ok(format!("http://{host}"))
        }
    }
}

/// Refuses a request that only the operator may make.
pub(crate) fn operator_only(principal: &Principal, what: &str) -> Result<(), ApiError> {
    if principal.is_operator() {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("only the operator may {what}"),
        ))
    }
}

async fn status(
    State(registry): State<Arc<Registry>>,
    State(engine): State<Arc<Engine>>,
) -> Result<Json<Value>, ApiError> {
    let plugins = registry.list()?.len();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "plugins": plugins,
        "compilations": engine.compilations(),
    })))
}
