//! `/v1/connections`: create, list, show, update, delete and test a
//! connection, start its OAuth flow; `/oauth/callback` finishes the flow (the
//! browser lands there, so it is authorised by its one-time `state`).

use std::sync::Arc;

use axum::{
    Extension, Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    ApiError, ApiSettings, ApiState,
    extract::{Json, Path, Query},
};
use crate::{
    calls::Calls,
    connections::{ConnectionStatus, Connections},
    oauth::OAuth,
    runs::Runs,
    tenants::Principal,
};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/connections", post(create).get(list))
        .route(
            "/v1/connections/{id}",
            get(show).patch(update).delete(delete),
        )
        .route("/v1/connections/{id}/test", post(test))
        .route("/v1/connections/{id}/resume", post(resume))
        .route("/v1/connections/{id}/oauth/authorize", post(authorize))
}

/// Served without the bearer token: the third party redirects a browser here.
pub(super) fn public_routes() -> Router<ApiState> {
    Router::new().route("/oauth/callback", get(callback))
}

#[derive(Deserialize)]
struct CreateBody {
    /// The plugin key.
    plugin: String,
    #[serde(default)]
    name: String,
    /// All properties, secret ones included; the host splits them.
    #[serde(default)]
    properties: Map<String, Value>,
}

async fn create(
    State(connections): State<Arc<Connections>>,
    Extension(principal): Extension<Principal>,
    Json(body): Json<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let record = connections.create(
        principal.tenant(),
        &body.plugin,
        &body.name,
        body.properties,
    )?;
    Ok((StatusCode::CREATED, Json(connections.view(&record))))
}

async fn list(
    State(connections): State<Arc<Connections>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let records = connections.list(principal.tenant())?;
    let views: Vec<Value> = records.iter().map(|r| connections.view(r)).collect();
    Ok(Json(json!({"connections": views})))
}

async fn show(
    State(connections): State<Arc<Connections>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = connections.get(principal.tenant(), &id)?;
    Ok(Json(connections.view(&record)))
}

#[derive(Deserialize)]
struct UpdateBody {
    name: Option<String>,
    /// Properties to set; `null` removes one.
    #[serde(default)]
    properties: Map<String, Value>,
}

async fn update(
    State(connections): State<Arc<Connections>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
    let record = connections.update(
        principal.tenant(),
        &id,
        body.name.as_deref(),
        body.properties,
    )?;
    Ok(Json(connections.view(&record)))
}

async fn delete(
    State(connections): State<Arc<Connections>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    connections.delete(principal.tenant(), &id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn test(
    State(calls): State<Arc<Calls>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(calls.check_connection(principal.tenant(), &id).await?))
}

/// Marks a paused connection active again and queues the runs parked
/// behind it.
async fn resume(
    State(connections): State<Arc<Connections>>,
    State(runs): State<Arc<Runs>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = connections.set_status(principal.tenant(), &id, ConnectionStatus::Active)?;
    let resumed = runs.resume_parked(principal.tenant(), &id)?;
    Ok(Json(json!({
        "connection": connections.view(&record),
        "resumed_runs": resumed,
    })))
}

async fn authorize(
    State(oauth): State<Arc<OAuth>>,
    State(settings): State<Arc<ApiSettings>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let base = super::base_url(&settings, &headers)?;
    Ok(Json(oauth.authorize(principal.tenant(), &id, &base)?))
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(oauth): State<Arc<OAuth>>,
    State(connections): State<Arc<Connections>>,
    Query(query): Query<CallbackQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(error) = query.error {
        return Err(ApiError::bad_request(format!(
            "the provider refused the authorization: {error} {}",
            query.error_description.unwrap_or_default()
        )));
    }
    let (Some(state), Some(code)) = (query.state, query.code) else {
        return Err(ApiError::bad_request(
            "the callback needs `state` and `code`",
        ));
    };
    let record = oauth.callback(&state, &code).await?;
    Ok(Json(json!({
        "message": "The connection is authorized. You can close this window.",
        "connection": connections.view(&record),
    })))
}
