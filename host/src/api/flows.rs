//! `/v1/flows`: publish (JSON or YAML), list, show, versions, upgrade, delete.

use std::sync::Arc;

use axum::{
    Extension, Router,
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, ApiSettings, ApiState, audit,
    extract::{Json, Path, Query},
    writer,
};
use crate::{
    flows::{FlowRecord, FlowSpec, Flows},
    runs::{Runs, StepTest},
    store::RunResponse,
    tenants::Principal,
    triggers::Triggers,
    users::Users,
};

/// What publishing needs: the flows, the triggers to bring an active
/// flow's registration up to date, and the audit log.
#[derive(Clone)]
struct Publishing {
    flows: Arc<Flows>,
    triggers: Arc<Triggers>,
    users: Arc<Users>,
    settings: Arc<ApiSettings>,
}

impl axum::extract::FromRef<ApiState> for Publishing {
    fn from_ref(state: &ApiState) -> Self {
        Publishing {
            flows: state.flows.clone(),
            triggers: state.triggers.clone(),
            users: state.users.clone(),
            settings: state.settings.clone(),
        }
    }
}

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/flows", post(create).get(list))
        .route("/v1/flows/apply", post(apply))
        .route("/v1/flows/{id}", get(show).put(update).delete(delete))
        .route("/v1/flows/{id}/versions", get(versions))
        .route("/v1/flows/{id}/upgrade", post(upgrade))
        .route("/v1/flows/{id}/activate", post(activate))
        .route("/v1/flows/{id}/deactivate", post(deactivate))
        .route("/v1/flows/{id}/resume", post(resume))
        .route("/v1/flows/{id}/trigger", get(trigger))
        .route("/v1/flows/{id}/deliveries", get(deliveries))
        .route("/v1/flows/{id}/run", post(run))
        .route("/v1/flows/{id}/samples", get(samples))
        .route("/v1/flows/{id}/polls", get(polls))
        .route("/v1/flows/test-step", post(test_step))
}

fn summary(f: &FlowRecord) -> Value {
    json!({
        "id": f.id,
        "name": f.spec.name,
        "version": f.version,
        "active": f.active,
        "paused": f.paused,
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

/// The audit log's note of a published version.
pub(crate) fn publish_note(record: &FlowRecord) -> String {
    format!("{} (version {})", record.spec.name, record.version)
}

fn key_of(plugin_ref: &str) -> &str {
    plugin_ref.split('@').next().unwrap_or(plugin_ref)
}

fn parse(body: &str) -> Result<FlowSpec, ApiError> {
    FlowSpec::parse(body).map_err(ApiError::bad_request)
}

async fn create(
    State(flows): State<Arc<Flows>>,
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    body: String,
) -> Result<(StatusCode, Json<FlowRecord>), ApiError> {
    writer(&principal)?;
    let record = flows.publish(principal.tenant(), None, parse(&body)?, false)?;
    audit(
        &users,
        &principal,
        "flow.publish",
        &record.id,
        &publish_note(&record),
    );
    Ok((StatusCode::CREATED, Json(record)))
}

async fn apply(
    State(p): State<Publishing>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: String,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let spec = parse(&body)?;
    let before = p
        .flows
        .list(principal.tenant())?
        .into_iter()
        .find(|f| f.spec.name == spec.name);
    let record = p.flows.apply(principal.tenant(), spec)?;
    audit(
        &p.users,
        &principal,
        "flow.publish",
        &record.id,
        &publish_note(&record),
    );
    published(&p, before, record, &headers).await
}

/// The answer to a publish: the new record, after an active flow's trigger
/// registration was brought up to date.
async fn published(
    p: &Publishing,
    before: Option<FlowRecord>,
    record: FlowRecord,
    headers: &HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let mut warning = None;
    if let Some(before) = before {
        warning = p
            .triggers
            .refresh_activation(&before, &super::base_url(&p.settings, headers)?)
            .await?;
    }
    let record = p.flows.get(&record.tenant, &record.id)?;
    let mut body =
        serde_json::to_value(&record).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Some(w) = warning {
        body["warning"] = json!(w);
    }
    Ok(Json(body))
}

async fn list(
    State(flows): State<Arc<Flows>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let flows: Vec<Value> = flows
        .list(principal.tenant())?
        .iter()
        .map(summary)
        .collect();
    Ok(Json(json!({"flows": flows})))
}

async fn show(
    State(flows): State<Arc<Flows>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<FlowRecord>, ApiError> {
    Ok(Json(flows.get(principal.tenant(), &id)?))
}

async fn update(
    State(p): State<Publishing>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let before = p.flows.get(principal.tenant(), &id)?;
    let record = p
        .flows
        .publish(principal.tenant(), Some(&id), parse(&body)?, false)?;
    audit(
        &p.users,
        &principal,
        "flow.publish",
        &id,
        &publish_note(&record),
    );
    published(&p, Some(before), record, &headers).await
}

async fn upgrade(
    State(p): State<Publishing>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let before = p.flows.get(principal.tenant(), &id)?;
    let record = p
        .flows
        .publish(principal.tenant(), Some(&id), before.spec.clone(), true)?;
    audit(
        &p.users,
        &principal,
        "flow.upgrade",
        &id,
        &publish_note(&record),
    );
    published(&p, Some(before), record, &headers).await
}

async fn activate(
    State(triggers): State<Arc<Triggers>>,
    State(settings): State<Arc<ApiSettings>>,
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let base = super::base_url(&settings, &headers)?;
    let flow = triggers
        .activate_flow(principal.tenant(), &id, &base)
        .await?;
    audit(&users, &principal, "flow.activate", &id, "");
    Ok(Json(triggers.trigger_view(&flow, &base)?))
}

async fn deactivate(
    State(triggers): State<Arc<Triggers>>,
    State(settings): State<Arc<ApiSettings>>,
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let base = super::base_url(&settings, &headers)?;
    let (flow, warning) = triggers.deactivate_flow(principal.tenant(), &id).await?;
    audit(&users, &principal, "flow.deactivate", &id, "");
    let mut view = triggers.trigger_view(&flow, &base)?;
    view["warning"] = json!(warning);
    Ok(Json(view))
}

async fn trigger(
    State(p): State<Publishing>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let flow = p.flows.get(principal.tenant(), &id)?;
    let base = super::base_url(&p.settings, &headers)?;
    Ok(Json(p.triggers.trigger_view(&flow, &base)?))
}

/// What a flow's trigger events came to: by which path they came, how many
/// were dropped (no-op, out of order) or coalesced, and the deliveries
/// rejected with their reasons.
async fn deliveries(
    State(triggers): State<Arc<Triggers>>,
    State(runs): State<Arc<Runs>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rejected = triggers.rejected_deliveries(principal.tenant(), &id)?;
    let counts = runs.ingest_counts(principal.tenant(), &id)?;
    Ok(Json(json!({"events": counts, "rejected": rejected})))
}

/// Resumes a flow paused because it kept firing for one entity.
async fn resume(
    State(triggers): State<Arc<Triggers>>,
    State(users): State<Arc<Users>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<FlowRecord>, ApiError> {
    writer(&principal)?;
    let flow = triggers.resume_flow(principal.tenant(), &id)?;
    audit(&users, &principal, "flow.resume", &id, "");
    Ok(Json(flow))
}

#[derive(Deserialize)]
struct RunQuery {
    /// How long to wait for the result, in ms (default 30 s, at most 120 s;
    /// 0 returns at once).
    wait_ms: Option<u64>,
}

/// Starts a run with the body as the trigger event. The caller waits for
/// the result (a synchronous flow) up to `wait_ms`: what a `respond` step
/// answered as soon as it ran, else 200 with the run when it finished, or
/// 202 with the run as it stands when the wait ran out.
async fn run(
    State(runs): State<Arc<Runs>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(query): Query<RunQuery>,
    body: String,
) -> Result<Response, ApiError> {
    writer(&principal)?;
    let payload: Value = if body.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(&body)
            .map_err(|e| ApiError::bad_request(format!("the event must be JSON: {e}")))?
    };
    let wait = query.wait_ms.unwrap_or(30_000).min(120_000);
    let run = runs
        .start_run(
            principal.tenant(),
            &id,
            payload,
            (wait > 0).then(|| std::time::Duration::from_millis(wait)),
        )
        .await?;
    // A `respond` step shapes the answer itself.
    if let Some(answer) = &run.response {
        return Ok(respond(answer));
    }
    let status = if run.status.is_finished() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut body = super::runs::summary(&run);
    body["output"] = json!(run.output());
    Ok((status, axum::Json(body)).into_response())
}

/// The answer a `respond` step gave: its status, headers and body (JSON,
/// unless a content type says otherwise and the body is text).
fn respond(answer: &RunResponse) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let typed = answer
        .headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"));
    let mut response = match (&answer.body, typed) {
        (Value::String(text), true) => (status, text.clone()).into_response(),
        (body, _) => (status, axum::Json(body.clone())).into_response(),
    };
    for (name, value) in &answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

#[derive(Deserialize)]
struct SamplesQuery {
    /// Ask a polling trigger for events now.
    #[serde(default)]
    fetch: bool,
}

/// The last events the flow's trigger produced (at most five, newest first),
/// for an editor's data picker.
async fn samples(
    State(triggers): State<Arc<Triggers>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(query): Query<SamplesQuery>,
) -> Result<Json<Value>, ApiError> {
    let samples = triggers
        .samples(principal.tenant(), &id, query.fetch)
        .await?;
    Ok(Json(json!({ "samples": samples })))
}

/// The flow's last polls: when, how long, events, cursors, errors, and
/// their HTTP exchanges and logs.
async fn polls(
    State(triggers): State<Arc<Triggers>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let polls = triggers.polls(principal.tenant(), &id)?;
    Ok(Json(json!({ "polls": polls })))
}

/// Runs one step of a draft flow against sample data; no run is created.
async fn test_step(
    State(runs): State<Arc<Runs>>,
    Extension(principal): Extension<Principal>,
    Json(test): Json<StepTest>,
) -> Result<Json<Value>, ApiError> {
    // It calls the third party: an editor's.
    writer(&principal)?;
    Ok(Json(runs.test_step(principal.tenant(), test).await?))
}

async fn versions(
    State(flows): State<Arc<Flows>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let versions: Vec<Value> = flows
        .versions(principal.tenant(), &id)?
        .iter()
        .map(summary)
        .collect();
    Ok(Json(json!({"versions": versions})))
}

async fn delete(
    State(p): State<Publishing>,
    State(runs): State<Arc<Runs>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    writer(&principal)?;
    p.triggers.deactivate_flow(principal.tenant(), &id).await?;
    p.flows.delete(principal.tenant(), &id)?;
    p.triggers.forget(principal.tenant(), &id)?;
    runs.forget_flow(principal.tenant(), &id)?;
    audit(&p.users, &principal, "flow.delete", &id, "");
    Ok(StatusCode::NO_CONTENT)
}
