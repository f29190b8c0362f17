//! `/v1/topics`, `/v1/streams`, `/v1/webhook-subscriptions` and the public
//! fetch URL of a batch, `/v1/batches/{token}`: the change APIs partners
//! consume. Get-object is rate-limited per token (the tenant's setting) and
//! answers ETags; a stream's records come as JSON batches (long poll) or as
//! one chunked NDJSON response; a batch's changes come as NDJSON pages.
//! What changes anything (a POST or a DELETE) needs the editor role.

use std::{sync::Arc, time::Duration};

use axum::{
    Extension, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{
    ApiError, ApiState, bearer,
    extract::{Json, Path, Query},
    limits::TokenLimits,
    operator_only, writer,
};
use crate::{
    tenants::Principal,
    topics::{
        NewRecord, Topic, TopicLimits, TopicSpec, Topics,
        streams::{DEFAULT_LIMIT, Seek, StreamError, StreamSpec, Streams},
        webhooks::{FeedSpec, Feeds, FetchError, PAGE, record_line},
    },
};

pub(super) fn routes() -> Router<ApiState> {
    let limits = Arc::new(TokenLimits::default());
    Router::new()
        .route("/v1/topics", post(create_topic).get(list_topics))
        .route("/v1/topics/{topic}", get(show_topic).delete(delete_topic))
        .route("/v1/topics/{topic}/records", post(publish).get(records))
        .route("/v1/topics/{topic}/objects", get(objects))
        .route(
            "/v1/topics/{topic}/objects/{key}",
            get(object).layer(Extension(limits)),
        )
        .route(
            "/v1/tenants/{id}/topic-limits",
            get(show_limits).put(set_limits),
        )
        .route("/v1/streams", post(create_stream).get(list_streams))
        .route("/v1/streams/{id}", get(show_stream).delete(delete_stream))
        .route("/v1/streams/{id}/records", get(read))
        .route("/v1/streams/{id}/commit", post(commit))
        .route("/v1/streams/{id}/seek", post(seek))
        .route("/v1/streams/{id}/stats", get(stats))
        .route(
            "/v1/webhook-subscriptions",
            post(create_feed).get(list_feeds),
        )
        .route(
            "/v1/webhook-subscriptions/{id}",
            get(show_feed).delete(delete_feed),
        )
        .route("/v1/webhook-subscriptions/{id}/true-up", post(true_up))
        .route("/v1/webhook-subscriptions/{id}/rotate-secret", post(rotate))
        .route("/v1/webhook-subscriptions/{id}/enable", post(enable))
        .route("/v1/webhook-subscriptions/{id}/attempts", get(attempts))
        .route("/v1/webhook-subscriptions/{id}/batches", get(batches))
        .route(
            "/v1/webhook-subscriptions/{id}/batches/{batch}/redeliver",
            post(redeliver),
        )
        .route("/v1/webhook-subscriptions/{id}/recover", post(recover))
}

/// The fetch URLs of batches: no bearer token, the unguessable token in
/// the path is the credential.
pub(super) fn public_routes() -> Router<ApiState> {
    Router::new().route("/v1/batches/{token}", get(fetch))
}

// --- Topics ------------------------------------------------------------------

fn topic_view(topics: &Topics, tenant: &str, topic: &Topic) -> Result<Value, ApiError> {
    let heads = topics.heads(tenant, topic)?;
    let records: u64 = heads.iter().map(|h| h.next - h.first).sum();
    Ok(json!({
        "name": topic.name,
        "partitions": topic.partitions,
        "retention_hours": topic.retention_hours,
        "max_records": topic.max_records,
        "created_at": topic.created_at,
        "records": records,
        "heads": heads.iter().enumerate().map(|(p, h)| json!({
            "partition": p, "first": h.first, "end": h.next,
        })).collect::<Vec<_>>(),
    }))
}

async fn create_topic(
    State(topics): State<Arc<Topics>>,
    Extension(principal): Extension<Principal>,
    Json(spec): Json<TopicSpec>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    writer(&principal)?;
    let topic = topics.create(principal.tenant(), spec)?;
    Ok((
        StatusCode::CREATED,
        Json(topic_view(&topics, principal.tenant(), &topic)?),
    ))
}

async fn list_topics(
    State(topics): State<Arc<Topics>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let tenant = principal.tenant();
    let list = topics
        .list(tenant)?
        .iter()
        .map(|t| topic_view(&topics, tenant, t))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(json!({"topics": list})))
}

async fn show_topic(
    State(topics): State<Arc<Topics>>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let topic = topics.get(principal.tenant(), &name)?;
    Ok(Json(topic_view(&topics, principal.tenant(), &topic)?))
}

async fn delete_topic(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    writer(&principal)?;
    let tenant = principal.tenant();
    let mut users = state.streams.readers_of(tenant, &name)?;
    users.extend(state.feeds.readers_of(tenant, &name)?);
    state.topics.delete(tenant, &name, &users)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    records: Vec<PublishRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRecord {
    key: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// Publishes records from outside a flow; answers once they are durable.
async fn publish(
    State(topics): State<Arc<Topics>>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    Json(body): Json<PublishBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    writer(&principal)?;
    if body.records.is_empty() || body.records.len() > 1_000 {
        return Err(ApiError::bad_request(format!(
            "records: give 1 to 1000 records, not {}",
            body.records.len()
        )));
    }
    let records = body
        .records
        .into_iter()
        .map(|r| NewRecord {
            key: r.key,
            kind: r.kind,
            data: r.data,
            idempotency: r.idempotency_key.map(|k| format!("api:{k}")),
        })
        .collect();
    let written = topics.publish(principal.tenant(), &name, records).await?;
    let lines: Vec<Value> = written.iter().map(record_line).collect();
    Ok((StatusCode::CREATED, Json(json!({"records": lines}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsQuery {
    #[serde(default)]
    partition: u32,
    #[serde(default)]
    from: Option<u64>,
    #[serde(default)]
    limit: Option<usize>,
}

/// A partition's records from an offset (the record browser).
async fn records(
    State(topics): State<Arc<Topics>>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    Query(query): Query<RecordsQuery>,
) -> Result<Json<Value>, ApiError> {
    let tenant = principal.tenant();
    let topic = topics.get(tenant, &name)?;
    if query.partition >= topic.partitions {
        return Err(ApiError::bad_request(format!(
            "partition: {} is not below the topic's {} partitions",
            query.partition, topic.partitions
        )));
    }
    let head = topics.heads(tenant, &topic)?[query.partition as usize];
    let from = query.from.unwrap_or(head.first).max(head.first);
    let limit = query.limit.unwrap_or(100).clamp(1, 1_000);
    let list = topics.read(tenant, &topic, query.partition, from, limit)?;
    let next = list.last().map(|r| r.offset + 1);
    Ok(Json(json!({
        "records": list.iter().map(record_line).collect::<Vec<_>>(),
        "next": next,
        "end": head.next,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectsQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// The current state of every key, in key order (the true-up).
async fn objects(
    State(topics): State<Arc<Topics>>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    Query(query): Query<ObjectsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(PAGE).clamp(1, 10_000);
    let list = topics.objects(principal.tenant(), &name, query.after.as_deref(), limit)?;
    let next = (list.len() == limit).then(|| list.last().map(|r| r.key.clone()));
    let live: Vec<Value> = list
        .iter()
        .filter(|r| !r.is_tombstone())
        .map(record_line)
        .collect();
    Ok(Json(json!({"objects": live, "next_after": next.flatten()})))
}

/// The current state of one key: rate-limited per token; a matching
/// `If-None-Match` gets 304 and does not count.
async fn object(
    State(topics): State<Arc<Topics>>,
    Extension(principal): Extension<Principal>,
    Extension(limits): Extension<Arc<TokenLimits>>,
    Path((name, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant();
    let record = topics.object(tenant, &name, &key)?;
    let etag = record
        .as_ref()
        .map(|r| format!("\"{}-{}\"", r.partition, r.offset));
    let unchanged = match (&etag, headers.get(header::IF_NONE_MATCH)) {
        (Some(etag), Some(asked)) => asked.to_str().is_ok_and(|asked| {
            asked
                .split(',')
                .any(|a| a.trim() == etag || a.trim() == "*")
        }),
        _ => false,
    };
    if unchanged {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
            response.headers_mut().insert(header::ETAG, etag);
        }
        return Ok(response);
    }
    let token = hex::encode(Sha256::digest(bearer(&headers).unwrap_or_default()));
    limits.check(&token, topics.limits(tenant)?.object_rate)?;
    let Some(record) = record else {
        return Err(ApiError::not_found(format!(
            "no key `{key}` in topic `{name}`"
        )));
    };
    if record.is_tombstone() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "deleted",
            format!(
                "key `{key}` of topic `{name}` was deleted (offset {} of partition {})",
                record.offset, record.partition
            ),
        ));
    }
    let mut response = axum::Json(record_line(&record)).into_response();
    if let Some(etag) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

async fn show_limits(
    State(topics): State<Arc<Topics>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<TopicLimits>, ApiError> {
    if !principal.is_operator() && principal.tenant() != id {
        return Err(ApiError::not_found(format!("no tenant `{id}`")));
    }
    Ok(Json(topics.limits(&id)?))
}

async fn set_limits(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Json(limits): Json<TopicLimits>,
) -> Result<Json<TopicLimits>, ApiError> {
    operator_only(&principal, "setting a tenant's topic limits")?;
    if id != crate::tenants::DEFAULT_TENANT {
        state.tenants.get(&id)?;
    }
    state.topics.set_limits(&id, limits)?;
    Ok(Json(limits))
}

// --- Streams -----------------------------------------------------------------

async fn create_stream(
    State(streams): State<Arc<Streams>>,
    Extension(principal): Extension<Principal>,
    Json(spec): Json<StreamSpec>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    writer(&principal)?;
    let stream = streams.create(principal.tenant(), spec)?;
    let url = format!("/v1/streams/{}/records", stream.id);
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": stream.id, "url": url, "stream": stream})),
    ))
}

async fn list_streams(
    State(streams): State<Arc<Streams>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"streams": streams.list(principal.tenant())?})))
}

async fn show_stream(
    State(streams): State<Arc<Streams>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(streams.get(principal.tenant(), &id)?)))
}

async fn delete_stream(
    State(streams): State<Arc<Streams>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    writer(&principal)?;
    streams.delete(principal.tenant(), &id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadQuery {
    #[serde(default)]
    reader: Option<String>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    wait_ms: Option<u64>,
    /// How long a chunked NDJSON response goes on (default 60 s).
    #[serde(default)]
    stream_ms: Option<u64>,
}

fn stream_error(e: StreamError) -> ApiError {
    match e {
        StreamError::Service(e) => e.into(),
        gone @ StreamError::Gone { .. } => {
            ApiError::new(StatusCode::GONE, "gone", gone.to_string())
        }
    }
}

/// A batch as JSON (long poll), or with `Accept: application/x-ndjson` a
/// chunked response of one batch per line until `stream_ms` or a lost lease.
async fn read(
    State(streams): State<Arc<Streams>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(query): Query<ReadQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = principal.tenant().to_string();
    let reader = query.reader.unwrap_or_else(|| "default".to_string());
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    let wait = Duration::from_millis(query.wait_ms.unwrap_or(0).min(30_000));
    let ndjson = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/x-ndjson"));
    if !ndjson {
        let batch = streams
            .read(&tenant, &id, &reader, query.cursor.as_deref(), limit, wait)
            .await
            .map_err(stream_error)?;
        let lines: Vec<Value> = batch.records.iter().map(record_line).collect();
        return Ok(axum::Json(json!({
            "records": lines,
            "cursor": batch.cursor,
            "partitions": batch.partitions,
            "lease_ms": batch.lease_ms,
        }))
        .into_response());
    }
    // Check the stream and the reader before the 200 is sent.
    streams.get(&tenant, &id)?;
    crate::topics::check_name("reader", &reader)?;
    let until = tokio::time::Instant::now()
        + Duration::from_millis(query.stream_ms.unwrap_or(60_000).clamp(1_000, 600_000));
    let state = (streams, tenant, id, reader, query.cursor, false);
    let lines = futures::stream::unfold(
        state,
        move |(streams, tenant, id, reader, cursor, done)| async move {
            if done || tokio::time::Instant::now() >= until {
                return None;
            }
            let wait = until
                .saturating_duration_since(tokio::time::Instant::now())
                .min(Duration::from_secs(5));
            let (line, cursor, done) = match streams
                .read(&tenant, &id, &reader, cursor.as_deref(), limit, wait)
                .await
            {
                Ok(batch) => {
                    let lines: Vec<Value> = batch.records.iter().map(record_line).collect();
                    let line = json!({"records": lines, "cursor": batch.cursor, "partitions": batch.partitions});
                    (line, Some(batch.cursor), false)
                }
                Err(e) => {
                    let error = stream_error(e);
                    (
                        json!({"error": {"code": error.code, "message": error.message}}),
                        cursor,
                        true,
                    )
                }
            };
            let mut bytes = serde_json::to_vec(&line).expect("JSON serialises");
            bytes.push(b'\n');
            Some((
                Ok::<_, std::convert::Infallible>(bytes),
                (streams, tenant, id, reader, cursor, done),
            ))
        },
    );
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommitBody {
    #[serde(default)]
    reader: Option<String>,
    cursor: String,
}

async fn commit(
    State(streams): State<Arc<Streams>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<CommitBody>,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let reader = body.reader.unwrap_or_else(|| "default".to_string());
    let stream = streams.commit(principal.tenant(), &id, &reader, &body.cursor)?;
    Ok(Json(json!({"committed": stream.committed})))
}

async fn seek(
    State(streams): State<Arc<Streams>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<Seek>,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let stream = streams.seek(principal.tenant(), &id, body)?;
    Ok(Json(
        json!({"committed": stream.committed, "generation": stream.generation}),
    ))
}

async fn stats(
    State(streams): State<Arc<Streams>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(streams.stats(principal.tenant(), &id)?))
}

// --- Batched webhooks ------------------------------------------------------

fn feed_view(feed: &crate::topics::webhooks::Feed) -> Value {
    json!({
        "id": feed.id,
        "topic": feed.topic,
        "url": feed.url,
        "types": feed.types,
        "filter": feed.filter,
        "interval_secs": feed.interval_secs,
        "mode": feed.mode,
        "status": if feed.disabled.is_some() { "disabled" } else { "active" },
        "disabled_reason": feed.disabled,
        "failing_since": feed.failing_since,
        "true_up_pending": feed.true_up,
        "secrets": feed.secrets.len(),
        "created_at": feed.created_at,
    })
}

async fn create_feed(
    State(feeds): State<Arc<Feeds>>,
    Extension(principal): Extension<Principal>,
    Json(spec): Json<FeedSpec>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    writer(&principal)?;
    let (feed, secret) = feeds.create(principal.tenant(), spec).await?;
    let mut view = feed_view(&feed);
    view["secret"] = json!(secret);
    Ok((StatusCode::CREATED, Json(view)))
}

async fn list_feeds(
    State(feeds): State<Arc<Feeds>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let list: Vec<Value> = feeds
        .list(principal.tenant())?
        .iter()
        .map(feed_view)
        .collect();
    Ok(Json(json!({"subscriptions": list})))
}

async fn show_feed(
    State(feeds): State<Arc<Feeds>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(feed_view(&feeds.get(principal.tenant(), &id)?)))
}

async fn delete_feed(
    State(feeds): State<Arc<Feeds>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    writer(&principal)?;
    feeds.delete(principal.tenant(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn true_up(
    State(feeds): State<Arc<Feeds>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    Ok(Json(feed_view(
        &feeds.true_up(principal.tenant(), &id).await?,
    )))
}

async fn rotate(
    State(feeds): State<Arc<Feeds>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let (feed, secret) = feeds.rotate_secret(principal.tenant(), &id).await?;
    let mut view = feed_view(&feed);
    view["secret"] = json!(secret);
    Ok(Json(view))
}

async fn enable(
    State(feeds): State<Arc<Feeds>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    Ok(Json(feed_view(
        &feeds.enable(principal.tenant(), &id).await?,
    )))
}

async fn attempts(
    State(feeds): State<Arc<Feeds>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({"attempts": feeds.attempts(principal.tenant(), &id, 200)?}),
    ))
}

async fn batches(
    State(feeds): State<Arc<Feeds>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = principal.tenant();
    feeds.get(tenant, &id)?;
    let list: Vec<Value> = feeds
        .batches(tenant, &id)?
        .iter()
        .map(|b| {
            json!({
                "id": b.id, "true_up": b.true_up, "count": b.count, "state": b.state,
                "attempts": b.attempts, "next_attempt_at": b.next_attempt_at,
                "created_at": b.created_at, "last_error": b.last_error,
            })
        })
        .collect();
    Ok(Json(json!({"batches": list})))
}

async fn redeliver(
    State(feeds): State<Arc<Feeds>>,
    Extension(principal): Extension<Principal>,
    Path((id, batch)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let batch = feeds.redeliver(principal.tenant(), &id, &batch).await?;
    Ok(Json(json!({"batch": batch.id, "state": batch.state})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverBody {
    since: Value,
}

async fn recover(
    State(feeds): State<Arc<Feeds>>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Json(body): Json<RecoverBody>,
) -> Result<Json<Value>, ApiError> {
    writer(&principal)?;
    let since = crate::topics::streams::parse_time(&body.since)
        .map_err(|e| ApiError::bad_request(format!("since: {e}")))?;
    let ids = feeds.recover(principal.tenant(), &id, since).await?;
    Ok(Json(json!({"requeued": ids})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchQuery {
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// One NDJSON page of a batch; `Link: <…>; rel="next"` names the next.
async fn fetch(
    State(feeds): State<Arc<Feeds>>,
    Path(token): Path<String>,
    Query(query): Query<FetchQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(PAGE);
    let page = feeds
        .page(&token, query.after.as_deref(), limit)
        .map_err(|e| match e {
            FetchError::Unknown => ApiError::not_found("no such batch"),
            expired @ FetchError::Expired => {
                ApiError::new(StatusCode::GONE, "expired", expired.to_string())
            }
            FetchError::Bad(message) => ApiError::bad_request(message),
            FetchError::Service(e) => e.into(),
        })?;
    let mut body = Vec::new();
    for line in &page.lines {
        serde_json::to_writer(&mut body, line).expect("JSON serialises");
        body.push(b'\n');
    }
    let mut response = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    if let Some(next) = page.next {
        let link = format!(
            "</v1/batches/{token}?after={}&limit={limit}>; rel=\"next\"",
            url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        );
        if let Ok(value) = HeaderValue::from_str(&link) {
            response.headers_mut().insert(header::LINK, value);
        }
    }
    Ok(response)
}
