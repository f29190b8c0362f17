//! Flows: the list with each flow's state and last run, a flow's page
//! (what it does, its webhook, what its events came to, its versions with
//! a diff between each and the one before), activation, resuming a flow
//! paused for looping, "upgrade plugin versions", deletion, and
//! the webhooks page (every webhook URL with a copy button, and the
//! deliveries that were rejected, with their reasons).

use axum::{
    Extension, Router,
    extract::{Path, Query, State},
    http::HeaderMap,
    response::IntoResponse,
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::Value;

use super::{Member, PageResult, audit, base_url, done, notice, render, writer};
use crate::{api::ApiState, flows::FlowRecord, manifest::TriggerKind, runs::RunFilter};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/flows", get(list))
        .route("/flows/{id}", get(show))
        .route("/flows/{id}/activate", post(activate))
        .route("/flows/{id}/deactivate", post(deactivate))
        .route("/flows/{id}/resume", post(resume))
        .route("/flows/{id}/upgrade", post(upgrade))
        .route("/flows/{id}/delete", post(delete))
        .route("/webhooks", get(webhooks))
}

#[derive(Deserialize)]
pub(super) struct FlowQuery {
    notice: Option<String>,
    /// Show the diff of this version against the one before.
    diff: Option<u32>,
}

/// The keys of a flow document in the order people read them; others
/// follow in their own order.
const KEY_ORDER: &[&str] = &[
    "name",
    "description",
    "trigger",
    "conditions",
    "steps",
    "lane",
    "concurrency",
    "env",
    "key",
    "if",
    "plugin",
    "action",
    "connection",
    "input",
    "params",
    "schedule",
    "interval_secs",
    "include_existing",
    "retry",
    "on_error",
];

fn ordered(value: &Value) -> serde_yaml_ng::Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by_key(|k| {
                (
                    KEY_ORDER.iter().position(|o| o == k).unwrap_or(usize::MAX),
                    k.to_string(),
                )
            });
            let mut out = serde_yaml_ng::Mapping::new();
            // An absent key and a null mean the same in a flow; the YAML
            // shows only what is set.
            for k in keys.into_iter().filter(|k| !map[*k].is_null()) {
                out.insert(serde_yaml_ng::Value::String(k.clone()), ordered(&map[k]));
            }
            serde_yaml_ng::Value::Mapping(out)
        }
        Value::Array(items) => serde_yaml_ng::Value::Sequence(items.iter().map(ordered).collect()),
        other => serde_yaml_ng::to_value(other).unwrap_or(serde_yaml_ng::Value::Null),
    }
}

/// A flow document as YAML, keys in reading order.
pub(super) fn to_yaml(document: &Value) -> String {
    serde_yaml_ng::to_string(&ordered(document)).unwrap_or_default()
}

/// A line diff of two texts: (`+`, `-` or ` `, line).
pub(super) fn diff(old: &str, new: &str) -> Vec<(char, String)> {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() * b.len() > 4_000_000 {
        return a
            .iter()
            .map(|l| ('-', l.to_string()))
            .chain(b.iter().map(|l| ('+', l.to_string())))
            .collect();
    }
    // Longest common subsequence, then walk it.
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push((' ', a[i].to_string()));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(('-', a[i].to_string()));
            i += 1;
        } else {
            out.push(('+', b[j].to_string()));
            j += 1;
        }
    }
    out
}

fn trigger_text(f: &FlowRecord) -> String {
    if f.spec.trigger.plugin.is_empty() {
        format!(
            "schedule {}",
            f.spec.trigger.schedule.as_deref().unwrap_or("")
        )
    } else {
        format!("{} · {}", f.trigger_plugin(), f.spec.trigger.trigger)
    }
}

async fn list(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Query(query): Query<FlowQuery>,
) -> PageResult {
    let tenant = member.principal.tenant();
    let mut rows = Vec::new();
    for f in state.flows.list(tenant)? {
        let last = state
            .runs
            .runs(
                tenant,
                &RunFilter {
                    flow: Some(f.id.clone()),
                    limit: Some(1),
                    ..RunFilter::default()
                },
            )?
            .into_iter()
            .next();
        rows.push(ctx! {
            id => f.id,
            name => f.spec.name,
            active => f.active,
            paused => f.paused,
            version => f.version,
            trigger => trigger_text(&f),
            steps => f.spec.steps.len(),
            last_status => last.as_ref().map(|r| r.status.as_str()),
            last_at => last.as_ref().map(|r| r.created_at),
            last_id => last.map(|r| r.id),
        });
    }
    let drafts: Vec<_> = state
        .drafts
        .list(tenant)?
        .into_iter()
        .map(|d| {
            ctx! {
                id => d.id,
                name => d.document["name"].as_str().unwrap_or("").to_string(),
                flow => d.flow,
                updated_at => d.updated_at,
                updated_by => d.updated_by,
            }
        })
        .collect();
    Ok(render::page(
        &member,
        "flows",
        "flows.html",
        ctx! { title => "Flows", notice => notice(query.notice.as_deref()), flows => rows, drafts => drafts },
    )?
    .into_response())
}

async fn show(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
    Query(query): Query<FlowQuery>,
    headers: HeaderMap,
) -> PageResult {
    let tenant = member.principal.tenant();
    let flow = state.flows.get(tenant, &id)?;
    let versions = state.flows.versions(tenant, &id)?;
    let base = base_url(&state, &headers)?;
    let view = state.triggers.trigger_view(&flow, &base)?;
    let runs: Vec<_> = state
        .runs
        .runs(
            tenant,
            &RunFilter {
                flow: Some(id.clone()),
                limit: Some(10),
                ..RunFilter::default()
            },
        )?
        .into_iter()
        .map(|r| ctx! { id => r.id, status => r.status.as_str(), created_at => r.created_at, source => r.source, event_id => r.event.id })
        .collect();
    let diff_of = query.diff.unwrap_or(flow.version);
    let diff_lines = versions
        .iter()
        .position(|v| v.version == diff_of)
        .filter(|i| *i > 0)
        .map(|i| {
            let old = to_yaml(&serde_json::to_value(&versions[i - 1].spec).unwrap_or(Value::Null));
            let new = to_yaml(&serde_json::to_value(&versions[i].spec).unwrap_or(Value::Null));
            diff(&old, &new)
                .into_iter()
                .map(|(c, l)| ctx! { kind => match c { '+' => "add", '-' => "del", _ => "same" }, sign => c.to_string(), line => l })
                .collect::<Vec<_>>()
        });
    let draft = state.drafts.for_flow(tenant, &id)?.map(|d| d.id);
    // What its trigger's events came to (flows that follow an entity).
    let counts = state.runs.ingest_counts(tenant, &id)?;
    let events = (!counts.is_empty()).then(|| {
        ctx! {
            by_source => counts.by_source,
            no_op => counts.no_op,
            out_of_order => counts.out_of_order,
            coalesced => counts.coalesced,
        }
    });
    let steps: Vec<_> = flow
        .spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| ctx! {
            key => s.key,
            what => if s.plugin.is_empty() { "control step".to_string() } else { format!("{} · {}", s.plugin, s.action) },
            version => flow.pinned.steps.get(i).map(|v| v.to_string()),
        })
        .collect();
    Ok(render::page(
        &member,
        "flows",
        "flow.html",
        ctx! {
            title => flow.spec.name.clone(),
            notice => notice(query.notice.as_deref()),
            f => ctx! {
                id => flow.id,
                name => flow.spec.name,
                description => flow.spec.description,
                active => flow.active,
                paused => flow.paused,
                version => flow.version,
                trigger => trigger_text(&flow),
                trigger_version => flow.pinned.trigger.as_ref().map(|v| v.to_string()),
                conditions => flow.spec.conditions,
                updated_at => flow.updated_at,
            },
            steps => steps,
            kind => view["kind"].clone(),
            webhook_url => view["webhook_url"].clone(),
            trigger_state => view["state"].clone(),
            versions => versions.iter().rev().map(|v| ctx! { version => v.version, updated_at => v.updated_at, trigger => trigger_text(v), steps => v.spec.steps.len() }).collect::<Vec<_>>(),
            diff_of => diff_of,
            diff => diff_lines,
            runs => runs,
            events => events,
            draft => draft,
            yaml => to_yaml(&serde_json::to_value(&flow.spec).unwrap_or(Value::Null)),
        },
    )?
    .into_response())
}

async fn activate(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    writer(&member)?;
    let base = base_url(&state, &headers)?;
    state
        .triggers
        .activate_flow(member.principal.tenant(), &id, &base)
        .await?;
    audit(&state, &member, "flow.activate", &id, "");
    Ok(done(&format!("/flows/{id}"), "activated"))
}

async fn deactivate(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
) -> PageResult {
    writer(&member)?;
    state
        .triggers
        .deactivate_flow(member.principal.tenant(), &id)
        .await?;
    audit(&state, &member, "flow.deactivate", &id, "");
    Ok(done(&format!("/flows/{id}"), "deactivated"))
}

/// Resumes a flow paused because it kept firing for one entity.
async fn resume(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
) -> PageResult {
    writer(&member)?;
    state.triggers.resume_flow(member.principal.tenant(), &id)?;
    audit(&state, &member, "flow.resume", &id, "");
    Ok(done(&format!("/flows/{id}"), "flow-resumed"))
}

async fn upgrade(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    writer(&member)?;
    let tenant = member.principal.tenant();
    let before = state.flows.get(tenant, &id)?;
    let record = state
        .flows
        .publish(tenant, Some(&id), before.spec.clone(), true)?;
    let base = base_url(&state, &headers)?;
    state.triggers.refresh_activation(&before, &base).await?;
    audit(
        &state,
        &member,
        "flow.upgrade",
        &id,
        &crate::api::publish_note(&record),
    );
    Ok(done(&format!("/flows/{id}"), "upgraded"))
}

async fn delete(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
) -> PageResult {
    writer(&member)?;
    let tenant = member.principal.tenant();
    // As `DELETE /v1/flows/{id}` does: its trigger state and entity
    // state go with it.
    state.triggers.deactivate_flow(tenant, &id).await?;
    state.flows.delete(tenant, &id)?;
    state.triggers.forget(tenant, &id)?;
    state.runs.forget_flow(tenant, &id)?;
    audit(&state, &member, "flow.delete", &id, "");
    Ok(done("/flows", "deleted"))
}

async fn webhooks(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    headers: HeaderMap,
) -> PageResult {
    let tenant = member.principal.tenant();
    let base = base_url(&state, &headers)?;
    let mut hooks = Vec::new();
    for f in state.flows.list(tenant)? {
        if state.flows.trigger_kind(&f).ok().flatten() != Some(TriggerKind::Webhook) {
            continue;
        }
        let view = state.triggers.trigger_view(&f, &base)?;
        let rejected: Vec<_> = state
            .triggers
            .rejected_deliveries(tenant, &f.id)?
            .into_iter()
            .take(50)
            .map(|r| ctx! { received_at => r.received_at, reason => r.reason, method => r.method, bytes => r.bytes, excerpt => r.excerpt })
            .collect();
        hooks.push(ctx! {
            id => f.id,
            name => f.spec.name,
            active => f.active,
            url => view["webhook_url"].clone(),
            rejected => rejected,
        });
    }
    Ok(render::page(
        &member,
        "webhooks",
        "webhooks.html",
        ctx! { title => "Webhooks", hooks => hooks },
    )?
    .into_response())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn yaml_reads_in_order_and_round_trips() {
        let doc = json!({
            "steps": [{"input": {"a": "{{ trigger.x }}"}, "key": "s", "if": "trigger.y", "paths": {"branches": []}}],
            "name": "N",
            "trigger": {"trigger": "t", "plugin": "p@^1"},
            "zeta": 1,
        });
        let text = to_yaml(&doc);
        let name = text.find("name:").unwrap();
        let trigger = text.find("trigger:").unwrap();
        let steps = text.find("steps:").unwrap();
        assert!(name < trigger && trigger < steps, "{text}");
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back, doc);
        let with_null = json!({"name": "N", "trigger": {"connection": null}});
        assert!(!to_yaml(&with_null).contains("null"));
    }

    #[test]
    fn diffs_mark_added_and_removed_lines() {
        let d = diff("a\nb\nc\n", "a\nc\nd\n");
        let signs: String = d.iter().map(|(c, _)| *c).collect();
        assert_eq!(signs, " - +");
        assert_eq!(d[1].1, "b");
        assert_eq!(d[3].1, "d");
    }
}
