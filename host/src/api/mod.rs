//! The admin API (axum): JSON in and out, bearer-token auth on everything but
//! `/health`, `/metrics` (a token of its own) and the public endpoints
//! (`/hooks/...`, `/oauth/callback`, rate-limited); a body limit on every
//! route. Each handler takes the services it needs as sub-states of
//! [`ApiState`], never the whole host.

mod connections;
mod error;
mod extract;
mod files;
mod flows;
mod hooks;
mod limits;
mod openapi;
mod plugins;
mod runs;
mod tenants;
mod topics;
mod users;

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
pub(crate) use flows::publish_note;
pub use limits::{PublicLimits, Rate};
pub use openapi::openapi;

use crate::{
    calls::Calls,
    connections::Connections,
    drafts::Drafts,
    engine::Engine,
    error::ServiceError,
    files::Buckets,
    flows::Flows,
    metrics::Metrics,
    oauth::OAuth,
    registry::Registry,
    runs::Runs,
    tenants::{Principal, Tenants},
    topics::{Topics, streams::Streams, webhooks::Feeds},
    triggers::{Triggers, files::FileTriggers},
    users::{Users, sessions::Lookup},
};

/// The cookie that carries a console session's id.
pub const SESSION_COOKIE: &str = "sy_session";
/// The header htmx (and any script of a signed-in browser) sends the
/// session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

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
    pub buckets: Arc<Buckets>,
    pub file_triggers: Arc<FileTriggers>,
    pub topics: Arc<Topics>,
    pub streams: Arc<Streams>,
    pub feeds: Arc<Feeds>,
    pub metrics: Arc<Metrics>,
    pub engine: Arc<Engine>,
    pub users: Arc<Users>,
    pub drafts: Arc<Drafts>,
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
        .merge(files::routes())
        .merge(users::routes())
        .merge(topics::routes())
        .route_layer(middleware::from_fn_with_state(
            Auth {
                tenants: state.tenants.clone(),
                users: state.users.clone(),
            },
            require_token,
        ));
    let api = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .merge(hooks::metrics_routes())
        .merge(openapi::routes())
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

/// What the API's authentication needs.
#[derive(Clone)]
struct Auth {
    tenants: Arc<Tenants>,
    users: Arc<Users>,
}

async fn require_token(
    State(auth): State<Auth>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let principal = if bearer(request.headers()).is_some() {
        authenticate(&auth.tenants, request.headers())?
    } else {
        from_session(&auth, &request)?
    };
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

/// A signed-in browser calling the API: its session cookie, and for
/// anything but a read the session's CSRF token in `X-CSRF-Token` (a
/// cookie alone is sent by any page the browser visits).
fn from_session(auth: &Auth, request: &Request) -> Result<Principal, ApiError> {
    let unauthorized = |m: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m);
    let Some(id) = session_cookie(request.headers()) else {
        return Err(unauthorized("send `Authorization: Bearer <token>`"));
    };
    let active = match auth.users.session(&auth.tenants, id)? {
        Lookup::Active(active) => active,
        Lookup::Expired => return Err(unauthorized("the session expired; sign in again")),
        Lookup::Unknown => return Err(unauthorized("the session is not valid; sign in again")),
    };
    if !request.method().is_safe() {
        let sent = request
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok());
        if !sent.is_some_and(|sent| same_secret(sent, &active.csrf)) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "csrf",
                "a request with a session cookie that changes something needs the session's `X-CSRF-Token`",
            ));
        }
    }
    Ok(active.principal)
}

/// Compares two secrets in time that does not depend on where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The session id of the `sy_session` cookie.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
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

/// Refuses a change to a viewer: every handler that changes a
/// connection, flow or run calls this first.
pub(crate) fn writer(principal: &Principal) -> Result<(), ApiError> {
    if principal.can_write() {
        Ok(())
    } else {
        Err(ApiError::from(ServiceError::Forbidden(
            "a viewer can read but not change anything; ask an owner for the editor role".into(),
        )))
    }
}

/// Refuses user management to anyone but an owner.
pub(crate) fn owner(principal: &Principal) -> Result<(), ApiError> {
    if principal.can_manage_users() {
        Ok(())
    } else {
        Err(ApiError::from(ServiceError::Forbidden(
            "only an owner may manage users".into(),
        )))
    }
}

/// Records a change in the audit log. A failure to record is logged, not
/// answered: the change itself is done.
pub(crate) fn audit(
    users: &Users,
    principal: &Principal,
    action: &str,
    target: &str,
    detail: &str,
) {
    if let Err(e) = users.audit(principal, action, target, detail) {
        tracing::error!("recording {action} of {target} in the audit log: {e}");
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
