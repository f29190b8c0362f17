//! `/v1/flows`: publish (JSON or YAML), list, show, versions, upgrade, delete.

use axum::{
    Extension, Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use serde_json::{Value, json};

use super::{ApiError, AppState};
use crate::{
    flows::{FlowRecord, FlowSpec},
    tenants::Principal,
};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/flows", post(create).get(list))
        .route("/v1/flows/apply", post(apply))
        .route("/v1/flows/{id}", get(show).put(update).delete(delete))
        .route("/v1/flows/{id}/versions", get(versions))
        .route("/v1/flows/{id}/upgrade", post(upgrade))
}

fn summary(f: &FlowRecord) -> Value {
    json!({
        "id": f.id,
        "name": f.spec.name,
        "version": f.version,
        "active": f.active,
        "trigger": format!("{}@{} {}", key_of(&f.spec.trigger.plugin), f.pinned.trigger, f.spec.trigger.trigger),
        "steps": f.spec.steps.iter().zip(&f.pinned.steps)
            .map(|(s, v)| format!("{}: {}@{} {}", s.key, key_of(&s.plugin), v, s.action))
            .collect::<Vec<_>>(),
        "updated_at": f.updated_at,
    })
}

fn key_of(plugin_ref: &str) -> &str {
    plugin_ref.split('@').next().unwrap_or(plugin_ref)
}

fn parse(body: &str) -> Result<FlowSpec, ApiError> {
    FlowSpec::parse(body).map_err(ApiError::bad_request)
}

async fn create(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: String,
) -> Result<(StatusCode, Json<FlowRecord>), ApiError> {
    let record = app.publish_flow(principal.tenant(), None, parse(&body)?, false)?;
    Ok((StatusCode::CREATED, Json(record)))
}

async fn apply(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: String,
) -> Result<Json<FlowRecord>, ApiError> {
    Ok(Json(app.apply_flow(principal.tenant(), parse(&body)?)?))
}

async fn list(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let flows: Vec<Value> = app.flows(principal.tenant())?.iter().map(summary).collect();
    Ok(Json(json!({"flows": flows})))
}

async fn show(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<FlowRecord>, ApiError> {
    Ok(Json(app.flow(principal.tenant(), &id)?))
}

async fn update(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    body: String,
) -> Result<Json<FlowRecord>, ApiError> {
    Ok(Json(app.publish_flow(
        principal.tenant(),
        Some(&id),
        parse(&body)?,
        false,
    )?))
}

async fn upgrade(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<FlowRecord>, ApiError> {
    let current = app.flow(principal.tenant(), &id)?;
    Ok(Json(app.publish_flow(
        principal.tenant(),
        Some(&id),
        current.spec,
        true,
    )?))
}

async fn versions(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let versions: Vec<Value> = app
        .flow_versions(principal.tenant(), &id)?
        .iter()
        .map(summary)
        .collect();
    Ok(Json(json!({"versions": versions})))
}

async fn delete(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    app.delete_flow(principal.tenant(), &id)?;
    Ok(StatusCode::NO_CONTENT)
}
