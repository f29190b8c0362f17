//! `/v1/connections`: create, list, show, update, delete and test a
//! connection, start its OAuth flow; `/oauth/callback` finishes the flow (the
//! browser lands there, so it is authorised by its one-time `state`).

use axum::{
    Extension, Json, Router,
    extract::{
        Path, Query, State,
        rejection::{JsonRejection, QueryRejection},
    },
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiError, AppState};
use crate::tenants::Principal;

pub(super) fn routes() -> Router<AppState> {
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
pub(super) fn public_routes() -> Router<AppState> {
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
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: Result<Json<CreateBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body?;
    let record = app.create_connection(
        principal.tenant(),
        &body.plugin,
        &body.name,
        body.properties,
    )?;
    Ok((StatusCode::CREATED, Json(app.connections.view(&record))))
}

async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let records = app.connections.list(principal.tenant())?;
    let views: Vec<Value> = records.iter().map(|r| app.connections.view(r)).collect();
    Ok(Json(json!({"connections": views})))
}

async fn show(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = app.connections.get(principal.tenant(), &id)?;
    Ok(Json(app.connections.view(&record)))
}

#[derive(Deserialize)]
struct UpdateBody {
    name: Option<String>,
    /// Properties to set; `null` removes one.
    #[serde(default)]
    properties: Map<String, Value>,
}

async fn update(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: Result<Json<UpdateBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let record = app.update_connection(
        principal.tenant(),
        &id,
        body.name.as_deref(),
        body.properties,
    )?;
    Ok(Json(app.connections.view(&record)))
}

async fn delete(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.delete_connection(principal.tenant(), &id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn test(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(app.test_connection(principal.tenant(), &id).await?))
}

/// Marks a paused connection active again and queues the runs parked
/// behind it.
async fn resume(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let resumed = app.resume_connection(principal.tenant(), &id)?;
    let record = app.connections.get(principal.tenant(), &id)?;
    Ok(Json(json!({
        "connection": app.connections.view(&record),
        "resumed_runs": resumed,
    })))
}

async fn authorize(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let base = super::base_url(&app, &headers)?;
    Ok(Json(app.oauth_authorize(principal.tenant(), &id, &base)?))
}

#[derive(Deserialize)]
struct CallbackQuery {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(app): State<AppState>,
    query: Result<Query<CallbackQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query?;
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
    let record = app.oauth_callback(&state, &code).await?;
    Ok(Json(json!({
        "message": "The connection is authorized. You can close this window.",
        "connection": app.connections.view(&record),
    })))
}
