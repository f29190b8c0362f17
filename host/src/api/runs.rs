//! `/v1/runs`: history with filters, one run with its steps and attempts,
//! replay (one or the dead-letter list in bulk), cancel; `/v1/dead-letters`.

use std::sync::Arc;

use axum::{
    Extension, Router,
    extract::State,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, ApiState, audit,
    extract::{Json, Path, Query},
    writer,
};
use crate::{
    runs::{RunFilter, RunRecord, Runs},
    tenants::Principal,
    users::Users,
};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/runs", get(list))
        .route("/v1/runs/replay", post(replay_many))
        .route("/v1/runs/{id}", get(show))
        .route("/v1/runs/{id}/replay", post(replay))
        .route("/v1/runs/{id}/cancel", post(cancel))
        .route("/v1/dead-letters", get(dead_letters))
}

/// A run in a listing: no inputs, outputs or journals.
pub(super) fn summary(run: &RunRecord) -> Value {
    json!({
        "id": run.id,
        "flow_id": run.flow_id,
        "flow_version": run.flow_version,
        "source": run.source,
        "event_id": run.event.id,
        "status": run.status,
        "steps": run.steps.len(),
        "current_step": run.steps.iter().rev().find(|s| !s.status.is_done()).map(|s| &s.key),
        "waiting_until": run.waiting_until,
        "stopped": run.stopped,
        "error": run.error,
        "due_at": run.due_at,
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "replays": run.replays,
    })
}

/// The paging of a listing: `before` is the `next` of the previous page.
#[derive(Deserialize)]
struct Page {
    before: Option<String>,
}

async fn list(
    State(runs): State<Arc<Runs>>,
    Extension(principal): Extension<Principal>,
    Query(filter): Query<RunFilter>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let (list, next) = runs.runs_page(principal.tenant(), &filter, page.before.as_deref())?;
    Ok(Json(json!({
        "runs": list.iter().map(summary).collect::<Vec<_>>(),
        "next": next,
    })))
}

async fn dead_letters(
    State(runs): State<Arc<Runs>>,
    Extension(principal): Extension<Principal>,
    Query(filter): Query<RunFilter>,
    Query(page): Query<Page>,
) -> Result<Json<Value>, ApiError> {
    let filter = RunFilter {
        status: Some("failed".into()),
        ..filter
    };
    let (list, next) = runs.runs_page(principal.tenant(), &filter, page.before.as_deref())?;
    Ok(Json(json!({
        "runs": list.iter().map(summary).collect::<Vec<_>>(),
        "next": next,
    })))
}

async fn show(
    State(runs): State<Arc<Runs>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<RunRecord>, ApiError> {
    Ok(Json(runs.run(principal.tenant(), &id)?))
}

async fn replay(
    State(runs): State<Arc<Runs>>,
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let run = runs.replay_run(principal.tenant(), &id)?;
    runs.durable().await?;
    audit(&users, &principal, "run.replay", &id, &run.flow_id);
    Ok(Json(summary(&run)))
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayMany {
    flow: Option<String>,
    since: Option<u64>,
    until: Option<u64>,
    limit: Option<usize>,
}

async fn replay_many(
    State(runs): State<Arc<Runs>>,
    Extension(principal): Extension<Principal>,
    body: Option<Json<ReplayMany>>,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let body = body.map(|Json(body)| body).unwrap_or_default();
    let filter = RunFilter {
        flow: body.flow,
        since: body.since,
        until: body.until,
        limit: body.limit,
        status: None,
        after: None,
    };
    let replayed = runs.replay_runs(principal.tenant(), &filter)?;
    runs.durable().await?;
    Ok(Json(json!({"replayed": replayed})))
}

async fn cancel(
    State(runs): State<Arc<Runs>>,
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let run = runs.cancel_run(principal.tenant(), &id)?;
    runs.durable().await?;
    audit(&users, &principal, "run.cancel", &id, &run.flow_id);
    Ok(Json(summary(&run)))
}
