//! Runs: the history with filters (flow, status, time range, text in the
//! event such as an order number), bulk replay of failed runs and bulk
//! cancel; a run's page with each step's input, output, attempts, errors,
//! next retry and HTTP exchanges (secrets already cut out by the sandbox),
//! replay from the failed step, and a body that refreshes itself while the
//! run is not finished.

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, post},
};
use minijinja::context;
use serde::Deserialize;

use super::{Member, PageError, PageResult, audit, done, fields, notice, render, writer};
use crate::{
    api::ApiState,
    runs::{RunFilter, RunRecord, RunStatus},
};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/runs", get(list))
        .route("/runs/bulk", post(bulk))
        .route("/runs/{id}", get(show))
        .route("/runs/{id}/replay", post(replay))
        .route("/runs/{id}/cancel", post(cancel))
}

#[derive(Deserialize, Default)]
pub(super) struct RunsQuery {
    flow: Option<String>,
    status: Option<String>,
    /// `datetime-local` values, UTC.
    since: Option<String>,
    until: Option<String>,
    q: Option<String>,
    notice: Option<String>,
}

/// `2026-12-03T11:29` (a `datetime-local` input, read as UTC) in ms.
fn parse_local(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let with_secs = if text.len() == 16 {
        format!("{text}:00")
    } else {
        text.to_string()
    };
    chrono::NaiveDateTime::parse_from_str(&with_secs, "%Y-%m-%dT%H:%M:%S")
        .map(|t| Some(t.and_utc().timestamp_millis().max(0) as u64))
        .map_err(|_| format!("`{text}` is not a date and time"))
}

fn summary(run: &RunRecord, flow_names: &[(String, String)]) -> minijinja::Value {
    ctx! {
        id => run.id,
        flow_id => run.flow_id,
        flow => flow_names.iter().find(|(id, _)| *id == run.flow_id).map(|(_, n)| n.clone()).unwrap_or_else(|| run.flow_id.clone()),
        status => run.status.as_str(),
        source => run.source,
        event_id => run.event.id,
        created_at => run.created_at,
        finished_at => run.finished_at,
        error => run.error.as_ref().map(|e| e.message.clone()),
        failed => run.status == RunStatus::Failed || run.status == RunStatus::Cancelled,
        open => !run.status.is_finished(),
    }
}

async fn list(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Query(query): Query<RunsQuery>,
) -> PageResult {
    let tenant = member.principal.tenant();
    let flows: Vec<(String, String)> = state
        .flows
        .list(tenant)?
        .into_iter()
        .map(|f| (f.id, f.spec.name))
        .collect();
    let mut problems = Vec::new();
    let since = parse_local(query.since.as_deref().unwrap_or("")).unwrap_or_else(|e| {
        problems.push(("since", e));
        None
    });
    let until = parse_local(query.until.as_deref().unwrap_or("")).unwrap_or_else(|e| {
        problems.push(("until", e));
        None
    });
    let status = query.status.clone().filter(|s| !s.is_empty());
    if let Some(s) = &status
        && RunStatus::parse(s).is_none()
    {
        problems.push(("status", format!("`{s}` is not a run status")));
    }
    let text = query.q.clone().unwrap_or_default();
    let runs = if problems.is_empty() {
        let filter = RunFilter {
            flow: query.flow.clone().filter(|f| !f.is_empty()),
            status,
            since,
            until,
            limit: Some(if text.trim().is_empty() { 200 } else { 1000 }),
            after: None,
        };
        let mut runs = state.runs.runs(tenant, &filter)?;
        if !text.trim().is_empty() {
            let needle = text.trim().to_lowercase();
            runs.retain(|r| {
                r.event.id.to_lowercase().contains(&needle)
                    || r.event.payload.to_string().to_lowercase().contains(&needle)
            });
            runs.truncate(200);
        }
        runs
    } else {
        Vec::new()
    };
    let rows: Vec<_> = runs.iter().map(|r| summary(r, &flows)).collect();
    let statuses: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
    let status_code = if problems.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    let html = render::page(
        &member,
        "runs",
        "runs.html",
        ctx! {
            title => "Runs",
            notice => notice(query.notice.as_deref()),
            runs => rows,
            flows => flows.iter().map(|(id, name)| ctx! { id => id, name => name }).collect::<Vec<_>>(),
            statuses => statuses,
            q => ctx! {
                flow => query.flow.unwrap_or_default(),
                status => query.status.unwrap_or_default(),
                since => query.since.unwrap_or_default(),
                until => query.until.unwrap_or_default(),
                text => text,
            },
            problems => problems.into_iter().map(|(k, v)| (k.to_string(), v)).collect::<std::collections::BTreeMap<_, _>>(),
        },
    )?;
    Ok((status_code, html).into_response())
}

/// Replays or cancels the selected runs; says how many it could.
async fn bulk(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    body: Bytes,
) -> PageResult {
    writer(&member)?;
    let tenant = member.principal.tenant();
    let form = fields(&body);
    let action = super::field(&form, "action").unwrap_or("");
    let ids: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "run")
        .map(|(_, v)| v.as_str())
        .collect();
    if ids.is_empty() {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            "Nothing selected",
            "Tick the runs to replay or cancel first.",
        ));
    }
    let mut changed = 0;
    for id in &ids {
        let result = match action {
            "replay" => state.runs.replay_run(tenant, id),
            "cancel" => state.runs.cancel_run(tenant, id),
            other => {
                return Err(PageError::new(
                    StatusCode::BAD_REQUEST,
                    "Unknown action",
                    format!("`{other}` is neither replay nor cancel"),
                ));
            }
        };
        if let Ok(run) = result {
            changed += 1;
            audit(
                &state,
                &member,
                &format!("run.{action}"),
                &run.id,
                &run.flow_id,
            );
        }
    }
    if changed > 0 {
        state.runs.durable().await?;
    }
    let code = if action == "replay" {
        "replayed"
    } else {
        "cancelled"
    };
    Ok(done("/runs", code))
}

/// The run as the page shows it: every step (whatever its kind), with its
/// attempts, newest last.
fn run_context(state: &ApiState, run: &RunRecord) -> minijinja::Value {
    let flow = state
        .flows
        .version(&run.tenant, &run.flow_id, run.flow_version)
        .ok();
    let steps: Vec<_> = run
        .steps
        .iter()
        .map(|s| {
            // The record's own status (`failed_continued` reads better
            // as two words).
            let status = serde_json::to_value(s.status)
                .ok()
                .and_then(|v| v.as_str().map(|t| t.replace('_', " ")))
                .unwrap_or_else(|| "running".into());
            // In a loop a key has the item's index: `create[2]`.
            let base_key = s.key.split('[').next().unwrap_or(&s.key);
            let what = flow
                .as_ref()
                .and_then(|f| crate::flows::walk(&f.spec.steps).into_iter().find(|x| x.key == base_key))
                .map(|x| {
                    if x.plugin.is_empty() {
                        s.kind.replace('_', " ")
                    } else {
                        format!("{} · {}", x.plugin, x.action)
                    }
                })
                .unwrap_or_default();
            ctx! {
                key => s.key,
                what => what,
                status => status,
                note => s.note,
                wake_at => s.wake_at,
                step_error => s.error.as_ref().map(|e| format!("{}: {}", e.kind, e.message)),
                child => s.child,
                input => s.input,
                output => s.output,
                attempts => s.attempts,
                // A replay counts its attempts from 1 again: marked, so
                // two "attempt 1" headings do not look like one twice.
                history => s.history.iter().enumerate().map(|(i, a)| ctx! {
                    number => a.number,
                    replay => i > 0 && a.number <= s.history[i - 1].number,
                    started_at => a.started_at,
                    duration_ms => a.duration_ms.round(),
                    plugin => a.plugin,
                    error => a.error.as_ref().map(|e| {
                        let inner = if e["error"].is_object() { &e["error"] } else { e };
                        ctx! {
                            kind => inner["kind"].as_str().or(e["kind"].as_str()).unwrap_or("error"),
                            message => inner["message"].as_str().map(str::to_string).unwrap_or_else(|| render::pretty(e)),
                        }
                    }),
                    retry_at => a.retry_at,
                    exchanges => a.journal["exchanges"].clone(),
                    logs => a.journal["logs"].clone(),
                }).collect::<Vec<_>>(),
            }
        })
        .collect();
    ctx! {
        id => run.id,
        flow_id => run.flow_id,
        flow => flow.as_ref().map(|f| f.spec.name.clone()).unwrap_or_else(|| run.flow_id.clone()),
        flow_version => run.flow_version,
        status => run.status.as_str(),
        source => run.source,
        event_id => run.event.id,
        event => run.event.payload,
        error => run.error,
        due_at => run.due_at,
        created_at => run.created_at,
        finished_at => run.finished_at,
        replays => run.replays,
        open => !run.status.is_finished(),
        can_replay => matches!(run.status, RunStatus::Failed | RunStatus::Cancelled),
        steps => steps,
    }
}

async fn show(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
    Query(query): Query<RunsQuery>,
    headers: HeaderMap,
) -> PageResult {
    let run = state.runs.run(member.principal.tenant(), &id)?;
    let ctx = run_context(&state, &run);
    // The refresh of an open run asks for the body only.
    if headers.contains_key("hx-request") {
        return Ok(render::fragment(
            "run_body.html",
            context! { run => ctx, ..render::layout(&member, "runs") },
        )?
        .into_response());
    }
    Ok(render::page(
        &member,
        "runs",
        "run.html",
        ctx! { title => format!("Run {}", run.id), notice => notice(query.notice.as_deref()), run => ctx },
    )?
    .into_response())
}

async fn replay(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
) -> PageResult {
    writer(&member)?;
    let run = state.runs.replay_run(member.principal.tenant(), &id)?;
    state.runs.durable().await?;
    audit(&state, &member, "run.replay", &id, &run.flow_id);
    Ok(done(&format!("/runs/{id}"), "replayed"))
}

async fn cancel(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
) -> PageResult {
    writer(&member)?;
    let run = state.runs.cancel_run(member.principal.tenant(), &id)?;
    state.runs.durable().await?;
    audit(&state, &member, "run.cancel", &id, &run.flow_id);
    Ok(done(&format!("/runs/{id}"), "cancelled"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetime_local_values_are_utc_milliseconds() {
        assert_eq!(parse_local(""), Ok(None));
        assert_eq!(parse_local("1970-01-01T00:01"), Ok(Some(60_000)));
        assert_eq!(
            parse_local("2026-12-03T11:29:15"),
            Ok(Some(1_796_297_355_000))
        );
        assert!(parse_local("yesterday").is_err());
    }
}
