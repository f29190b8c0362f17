//! The admin API (axum): JSON in and out, bearer-token auth on everything but
//! `/health`.

mod connections;
mod error;
mod flows;
mod hooks;
mod plugins;
mod runs;
mod tenants;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use serde_json::{Value, json};

pub use error::ApiError;

use crate::{app::App, tenants::Principal};

pub type AppState = Arc<App>;

/// The whole API.
pub fn router(app: AppState) -> Router {
    let authed = Router::new()
        .route("/v1/status", get(status))
        .merge(plugins::routes(&app))
        .merge(connections::routes())
        .merge(tenants::routes())
        .merge(flows::routes())
        .merge(runs::routes())
        .route_layer(middleware::from_fn_with_state(app.clone(), require_token));
    Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .merge(connections::public_routes())
        .merge(hooks::public_routes())
        .merge(authed)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .with_state(app)
}

async fn require_token(
    State(app): State<AppState>,
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
    match app.authenticate(token.trim())? {
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
pub(crate) fn base_url(app: &App, headers: &axum::http::HeaderMap) -> Result<String, ApiError> {
    match &app.config.public_url {
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

async fn status(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let plugins = app.registry.list()?.len();
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "plugins": plugins,
        "compilations": app.engine.compilations(),
    })))
}
