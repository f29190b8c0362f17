//! `/v1/flows`: publish (JSON or YAML), list, show, versions, upgrade, delete.

use axum::{
    Extension, Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use serde::Deserialize;
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
        .route("/v1/flows/{id}/activate", post(activate))
        .route("/v1/flows/{id}/deactivate", post(deactivate))
        .route("/v1/flows/{id}/trigger", get(trigger))
        .route("/v1/flows/{id}/deliveries", get(deliveries))
        .route("/v1/flows/{id}/run", post(run))
}

fn summary(f: &FlowRecord) -> Value {
    json!({
        "id": f.id,
        "name": f.spec.name,
        "version": f.version,
        "active": f.active,
        "trigger": match &f.pinned.trigger {
            Some(v) => format!("{}@{v} {}", key_of(&f.spec.trigger.plugin), f.spec.trigger.trigger),
            None => format!("schedule {}", f.spec.trigger.schedule.as_deref().unwrap_or("")),
        },
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
    headers: HeaderMap,
    body: String,
) -> Result<Json<Value>, ApiError> {
    let spec = parse(&body)?;
    let before = app
        .flows(principal.tenant())?
        .into_iter()
        .find(|f| f.spec.name == spec.name);
    let record = app.apply_flow(principal.tenant(), spec)?;
    published(&app, before, record, &headers).await
}

/// The answer to a publish: the new record, after an active flow's trigger
/// registration was brought up to date.
async fn published(
    app: &AppState,
    before: Option<FlowRecord>,
    record: FlowRecord,
    headers: &HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let mut warning = None;
    if let Some(before) = before {
        warning = app
            .refresh_activation(&before, &super::base_url(app, headers)?)
            .await?;
    }
    let record = app.flow(&record.tenant, &record.id)?;
    let mut body =
        serde_json::to_value(&record).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(w) = warning {
        body["warning"] = json!(w);
    }
    Ok(Json(body))
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
    headers: HeaderMap,
    body: String,
) -> Result<Json<Value>, ApiError> {
    let before = app.flow(principal.tenant(), &id)?;
    let record = app.publish_flow(principal.tenant(), Some(&id), parse(&body)?, false)?;
    published(&app, Some(before), record, &headers).await
}

async fn upgrade(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let before = app.flow(principal.tenant(), &id)?;
    let record = app.publish_flow(principal.tenant(), Some(&id), before.spec.clone(), true)?;
    published(&app, Some(before), record, &headers).await
}

async fn activate(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let base = super::base_url(&app, &headers)?;
    let flow = app.activate_flow(principal.tenant(), &id, &base).await?;
    Ok(Json(app.trigger_view(&flow, &base)?))
}

async fn deactivate(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let base = super::base_url(&app, &headers)?;
    let (flow, warning) = app.deactivate_flow(principal.tenant(), &id).await?;
    let mut view = app.trigger_view(&flow, &base)?;
    view["warning"] = json!(warning);
    Ok(Json(view))
}

async fn trigger(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let flow = app.flow(principal.tenant(), &id)?;
    Ok(Json(
        app.trigger_view(&flow, &super::base_url(&app, &headers)?)?,
    ))
}

async fn deliveries(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rejected = app.rejected_deliveries(principal.tenant(), &id)?;
    Ok(Json(json!({"rejected": rejected})))
}

#[derive(Deserialize)]
struct RunQuery {
    /// How long to wait for the result, in ms (default 30 s, at most 120 s;
    /// 0 returns at once).
    wait_ms: Option<u64>,
}

/// Starts a run with the body as the trigger event. The caller waits for
/// the result (a synchronous flow) up to `wait_ms`: 200 with the run when it
/// finished, 202 with the run as it stands when the wait ran out.
async fn run(
    State(app): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(query): Query<RunQuery>,
    body: String,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let payload: Value = if body.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&body)
            .map_err(|e| ApiError::bad_request(format!("the event must be JSON: {e}")))?
    };
    let wait = query.wait_ms.unwrap_or(30_000).min(120_000);
    let run = app
        .start_run(
            principal.tenant(),
            &id,
            payload,
            (wait > 0).then(|| std::time::Duration::from_millis(wait)),
        )
        .await?;
    let status = if run.status.is_finished() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut body = super::runs::summary(&run);
    body["output"] = json!(run.output());
    Ok((status, Json(body)))
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
    app.deactivate_flow(principal.tenant(), &id).await?;
    app.delete_flow(principal.tenant(), &id)?;
    Ok(StatusCode::NO_CONTENT)
}
