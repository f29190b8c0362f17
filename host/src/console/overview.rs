//! The overview: the tenant's runs in the last hour and day by status,
//! the flows that fail most first, dead letters, paused connections, the
//! queue, and a chart of the last hour's runs per minute.

use std::collections::BTreeMap;

use axum::{
    Extension,
    extract::{Query, State},
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};

use super::{Member, PageResult, notice, render};
use crate::{
    api::ApiState,
    clock::now_ms,
    connections::ConnectionStatus,
    runs::{RunFilter, RunStatus},
};

#[derive(Deserialize)]
pub(super) struct NoticeQuery {
    pub notice: Option<String>,
}

const HOUR: u64 = 3_600_000;
/// Runs read for the day's figures (a busier tenant's are cut; the page
/// says so).
const DAY_LIMIT: usize = 1000;

#[derive(Serialize)]
struct Bar {
    x: u32,
    succeeded: (u32, u32),
    failed: (u32, u32),
    other: (u32, u32),
    title: String,
}

#[derive(Serialize)]
struct FlowFailures {
    id: String,
    name: String,
    failed: usize,
    total: usize,
}

pub(super) async fn show(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Query(query): Query<NoticeQuery>,
) -> PageResult {
    let tenant = member.principal.tenant();
    let now = now_ms();
    let day = state.runs.runs(
        tenant,
        &RunFilter {
            since: Some(now.saturating_sub(24 * HOUR)),
            limit: Some(DAY_LIMIT),
            ..RunFilter::default()
        },
    )?;
    let mut hour_counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut day_counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_flow: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut minutes = vec![(0u32, 0u32, 0u32); 60];
    let mut waiting = 0;
    for run in &day {
        let s = run.status.as_str();
        *day_counts.entry(s).or_default() += 1;
        let entry = per_flow.entry(run.flow_id.clone()).or_default();
        entry.1 += 1;
        if run.status == RunStatus::Failed {
            entry.0 += 1;
        }
        if run.status.is_queued() {
            waiting += 1;
        }
        if run.created_at + HOUR > now {
            *hour_counts.entry(s).or_default() += 1;
            let ago = ((now - run.created_at) / 60_000).min(59) as usize;
            let m = &mut minutes[59 - ago];
            match run.status {
                RunStatus::Succeeded => m.0 += 1,
                RunStatus::Failed => m.1 += 1,
                _ => m.2 += 1,
            }
        }
    }
    let flows = state.flows.list(tenant)?;
    let mut failing: Vec<FlowFailures> = flows
        .iter()
        .map(|f| {
            let (failed, total) = per_flow.get(&f.id).copied().unwrap_or_default();
            FlowFailures {
                id: f.id.clone(),
                name: f.spec.name.clone(),
                failed,
                total,
            }
        })
        .filter(|f| f.total > 0)
        .collect();
    failing.sort_by(|a, b| b.failed.cmp(&a.failed).then(b.total.cmp(&a.total)));
    let paused: Vec<_> = state
        .connections
        .list(tenant)?
        .into_iter()
        .filter_map(|c| match c.status {
            ConnectionStatus::Paused { reason } => {
                Some(ctx! { id => c.id, name => c.name, reason => reason })
            }
            ConnectionStatus::Active => None,
        })
        .collect();
    // Bars 10 px wide, scaled to the busiest minute.
    let busiest = minutes.iter().map(|m| m.0 + m.1 + m.2).max().unwrap_or(0);
    let peak = busiest.max(1);
    let height = 120.0;
    let bars: Vec<Bar> = minutes
        .iter()
        .enumerate()
        .map(|(i, (ok, bad, other))| {
            let scale = |n: u32| ((n as f64 / peak as f64) * height).round() as u32;
            let (hs, hf, ho) = (scale(*ok), scale(*bad), scale(*other));
            let base = height as u32;
            Bar {
                x: i as u32 * 12,
                succeeded: (base - hs, hs),
                failed: (base - hs - hf, hf),
                other: (base - hs - hf - ho, ho),
                title: format!(
                    "{} min ago: {ok} succeeded, {bad} failed, {other} other",
                    59 - i
                ),
            }
        })
        .collect();
    let queue_depth = if member.principal.is_operator() {
        state.runs.queue_depth()?
    } else {
        waiting
    };
    let statuses: Vec<&str> = RunStatus::ALL.iter().map(|s| s.as_str()).collect();
    Ok(render::page(
        &member,
        "overview",
        "overview.html",
        ctx! {
            title => "Overview",
            notice => notice(query.notice.as_deref()),
            statuses => statuses,
            hour_total => hour_counts.values().sum::<usize>(),
            hour => hour_counts,
            day => day_counts,
            day_total => day.len(),
            day_cut => day.len() >= DAY_LIMIT,
            failing => failing,
            dead_letters => state.runs.dead_letter_count(tenant)?,
            paused => paused,
            queue_depth => queue_depth,
            flows => flows.len(),
            connections => state.connections.list(tenant)?.len(),
            bars => bars,
            busiest => busiest,
        },
    )?
    .into_response())
}
