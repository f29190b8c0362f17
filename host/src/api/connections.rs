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
    ApiError, ApiSettings, ApiState, audit,
    extract::{Json, Path, Query},
    writer,
};
use crate::{
    calls::Calls,
    connections::{ConnectionStatus, Connections},
    oauth::OAuth,
    runs::Runs,
    tenants::Principal,
    users::Users,
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

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct CreateBody {
    /// The plugin key.
    plugin: String,
    #[serde(default)]
    name: String,
    /// All properties, secret ones included; the host splits them.
    #[serde(default)]
    #[schema(value_type = Object)]
    properties: Map<String, Value>,
    /// Let calls run in an instance kept from an earlier call of this
    /// connection (faster; the connector's memory carries over between its
    /// calls, never to another connection). Default `false`.
    #[serde(default)]
    warm_instances: bool,
}

async fn create(
    State(connections): State<Arc<Connections>>,
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Json(body): Json<CreateBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    writer(&principal)?;
    let record = connections.create(
        principal.tenant(),
        &body.plugin,
        &body.name,
        body.properties,
        body.warm_instances,
    )?;
    audit(
        &users,
        &principal,
        "connection.create",
        &record.id,
        &record.name,
    );
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

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct UpdateBody {
    name: Option<String>,
    /// Properties to set; `null` removes one.
    #[serde(default)]
    #[schema(value_type = Object)]
    properties: Map<String, Value>,
    /// Turn warm instances on or off (see the create body).
    warm_instances: Option<bool>,
}

async fn update(
    State(connections): State<Arc<Connections>>,
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<UpdateBody>,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let mut changed: Vec<String> = body.properties.keys().cloned().collect();
    if let Some(warm) = body.warm_instances {
        changed.push(format!("warm_instances={warm}"));
    }
    let record = connections.update(
        principal.tenant(),
        &id,
        body.name.as_deref(),
        body.properties,
        body.warm_instances,
    )?;
    audit(
        &users,
        &principal,
        "connection.update",
        &id,
        &format!("changed: {}", changed.join(", ")),
    );
    Ok(Json(connections.view(&record)))
}

async fn delete(
    State(connections): State<Arc<Connections>>,
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    writer(&principal)?;
    connections.delete(principal.tenant(), &id)?;
    audit(&users, &principal, "connection.delete", &id, "");
    Ok(StatusCode::NO_CONTENT)
}

async fn test(
    State(calls): State<Arc<Calls>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    Ok(Json(calls.check_connection(principal.tenant(), &id).await?))
}

/// Marks a paused connection active again and queues the runs parked
/// behind it.
async fn resume(
    State(connections): State<Arc<Connections>>,
    State(runs): State<Arc<Runs>>,
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let record = connections.set_status(principal.tenant(), &id, ConnectionStatus::Active)?;
    let resumed = runs.resume_parked(principal.tenant(), &id)?;
    runs.durable().await?;
    audit(&users, &principal, "connection.resume", &id, "");
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
    writer(&principal)?;
    let base = super::base_url(&settings, &headers)?;
    Ok(Json(oauth.authorize(
        principal.tenant(),
        &id,
        &base,
        None,
    )?))
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
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
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
    let (record, return_to) = oauth.callback(&state, &code).await?;
    // Started from the console: back to the connection's page.
    // Started from the console: back to the connection's page. A page that
    // moves on itself, not a redirect: the browser arrives from the
    // provider's site, and only a navigation from this site's own page
    // carries the console's `SameSite=Strict` session cookie.
    if let Some(path) = return_to {
        let path = html_attribute(&path);
        let page = format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={path}\"><title>Connected</title></head><body><p>The connection is authorized. <a href=\"{path}\">Back to the console</a>.</p></body></html>"
        );
        return Ok(axum::response::Html(page).into_response());
    }
    Ok(Json(json!({
        "message": "The connection is authorized. You can close this window.",
        "connection": connections.view(&record),
    }))
    .into_response())
}

/// Text safe inside a double-quoted HTML attribute.
fn html_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
