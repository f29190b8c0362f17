//! The admin API (axum): JSON in and out, bearer-token auth on everything but
//! `/health`, `/metrics` (a token of its own) and the public endpoints
//! (`/hooks/...`, `/oauth/callback`, rate-limited); a body limit on every
//! route. Each handler takes the services it needs as sub-states of
//! [`ApiState`], never the whole host.

mod connections;
mod error;
mod extract;
mod flows;
mod hooks;
mod limits;
mod plugins;
mod runs;
mod tenants;
mod topics;

use std::sync::Arc;

use axum::{
    Extension, Json, Router,
    extract::{DefaultBodyLimit, FromRef, Request, State},
    http::{HeaderMap, StatusCode},
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use serde_json::{Value, json};

pub use error::ApiError;
pub use limits::{PublicLimits, Rate};

use crate::{
    calls::Calls,
    connections::Connections,
    engine::Engine,
    flows::Flows,
    metrics::Metrics,
    oauth::OAuth,
    registry::Registry,
    runs::Runs,
    tenants::{Principal, Tenants},
    topics::{Topics, streams::Streams, webhooks::Feeds},
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
    pub topics: Arc<Topics>,
    pub streams: Arc<Streams>,
    pub feeds: Arc<Feeds>,
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
    /// Largest body of any other API request.
    pub max_request_bytes: usize,
    /// Largest webhook delivery accepted.
    pub max_delivery_bytes: usize,
    /// The rate limits of the public endpoints.
    pub limits: PublicLimits,
    /// A bearer token that may read `/metrics` besides the operator's.
    pub metrics_token: Option<String>,
    /// `/metrics` without a token.
    pub public_metrics: bool,
}

/// The whole API. Serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`: the rate limits of
/// the public endpoints key on the TCP peer.
pub fn router(state: ApiState) -> Router {
    let settings = state.settings.clone();
    let limits = Arc::new(limits::Limits::new(
        settings.limits,
        state.metrics.rate_limited.clone(),
    ));
    let per_source = middleware::from_fn_with_state(limits.clone(), limits::per_source);
    // The bearer token is checked before a body is read.
    let authed = Router::new()
        .route("/v1/status", get(status))
        .merge(plugins::routes(&settings))
        .merge(connections::routes())
        .merge(tenants::routes())
        .merge(flows::routes())
        .merge(runs::routes())
        .merge(topics::routes())
        .route_layer(middleware::from_fn_with_state(
            state.tenants.clone(),
            require_token,
        ));
    let api = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .merge(hooks::metrics_routes())
        .merge(connections::public_routes().route_layer(per_source.clone()))
        .merge(topics::public_routes().route_layer(per_source.clone()))
        .merge(authed)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        // Plugin uploads set a larger limit on their route (the innermost
        // limit wins).
        .layer(DefaultBodyLimit::max(settings.max_request_bytes))
        .layer(middleware::map_response(error::json_errors));
    // Webhook deliveries: the hook's own budget is taken once its token is
    // known, then the body is read (up to `--max-delivery-kib`). Answers
    // may be a plugin's own, so they are not reshaped.
    let hooks = hooks::public_routes()
        .route_layer(per_source)
        .layer(DefaultBodyLimit::max(settings.max_delivery_bytes))
        .layer(Extension(limits));
    api.merge(hooks).with_state(state)
}

async fn require_token(
    State(tenants): State<Arc<Tenants>>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = authenticate(&tenants, request.headers())?;
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

/// Who the request's bearer token belongs to; 401 without a valid one.
pub(crate) fn authenticate(tenants: &Tenants, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send `Authorization: Bearer <token>`",
        ));
    };
    tenants.authenticate(token)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not valid",
        )
    })
}

/// The token of an `Authorization: Bearer` header.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
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
