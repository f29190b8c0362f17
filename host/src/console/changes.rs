//! The "Changes" pages: what this tenant's flows publish and who reads it.
//! Topics with their partitions and a record browser, streams with their
//! lag per partition and readers, batched webhook subscriptions with their
//! state and latest delivery attempts. Read-only: changes go through the
//! API and the CLI.

use axum::{
    Extension, Router,
    extract::{Path, Query, State},
    response::IntoResponse,
    routing::get,
};
use serde::Deserialize;

use super::{Member, PageResult, render};
use crate::{api::ApiState, topics::webhooks::record_line};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/changes", get(overview))
        .route("/changes/topics/{name}", get(topic))
}

async fn overview(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
) -> PageResult {
    let tenant = member.principal.tenant();
    let mut topics = Vec::new();
    for topic in state.topics.list(tenant)? {
        let heads = state.topics.heads(tenant, &topic)?;
        let records: u64 = heads.iter().map(|h| h.next - h.first).sum();
        let last = heads.iter().map(|h| h.last_time).max().filter(|t| *t > 0);
        topics.push(ctx! {
            name => topic.name,
            partitions => topic.partitions,
            retention_hours => topic.retention_hours,
            records => records,
            last => last,
        });
    }
    let mut streams = Vec::new();
    for stream in state.streams.list(tenant)? {
        let stats = state.streams.stats(tenant, &stream.id)?;
        streams.push(ctx! {
            id => stream.id,
            topic => stream.topic,
            types => stream.types.join(", "),
            lag => stats["lag"],
            readers => stats["readers"],
            partitions => stats["partitions"],
        });
    }
    let mut subscriptions = Vec::new();
    for feed in state.feeds.list(tenant)? {
        let attempts: Vec<_> = state
            .feeds
            .attempts(tenant, &feed.id, 5)?
            .into_iter()
            .map(|a| ctx! { at => a.at, batch => a.batch, status => a.status, error => a.error, ms => a.duration_ms })
            .collect();
        subscriptions.push(ctx! {
            id => feed.id,
            topic => feed.topic,
            url => feed.url,
            interval_secs => feed.interval_secs,
            mode => feed.mode,
            disabled => feed.disabled,
            failing_since => feed.failing_since,
            attempts => attempts,
        });
    }
    Ok(render::page(
        &member,
        "changes",
        "changes.html",
        ctx! { title => "Changes", topics => topics, streams => streams, subscriptions => subscriptions },
    )?
    .into_response())
}

#[derive(Deserialize)]
struct Browse {
    #[serde(default)]
    partition: u32,
    #[serde(default)]
    from: Option<u64>,
}

/// One topic's records, a page of one partition at a time.
async fn topic(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(name): Path<String>,
    Query(browse): Query<Browse>,
) -> PageResult {
    let tenant = member.principal.tenant();
    let topic = state.topics.get(tenant, &name)?;
    let partition = browse.partition.min(topic.partitions - 1);
    let heads = state.topics.heads(tenant, &topic)?;
    let head = heads[partition as usize];
    let from = browse.from.unwrap_or(head.first).max(head.first);
    let records: Vec<_> = state
        .topics
        .read(tenant, &topic, partition, from, 50)?
        .iter()
        .map(record_line)
        .collect();
    let next = records
        .last()
        .and_then(|r| r["offset"].as_u64())
        .map(|o| o + 1)
        .filter(|n| *n < head.next);
    let previous = (from > head.first).then(|| from.saturating_sub(50).max(head.first));
    let partitions: Vec<_> = heads
        .iter()
        .enumerate()
        .map(|(p, h)| ctx! { partition => p, first => h.first, end => h.next })
        .collect();
    Ok(render::page(
        &member,
        "changes",
        "topic.html",
        ctx! {
            title => format!("Topic {}", topic.name),
            name => topic.name,
            retention_hours => topic.retention_hours,
            partition => partition,
            partitions => partitions,
            records => records,
            next => next,
            previous => previous,
        },
    )?
    .into_response())
}
