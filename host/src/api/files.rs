//! `/v1/buckets`: a tenant's buckets and files (uploads and downloads are
//! streamed: no file is held in memory; large files arrive in parts), the
//! ledger of a flow's file trigger, and the record jobs of a run (progress
//! while they run, their files, a replay of only the failed records).

use std::sync::Arc;

use axum::{
    Extension, Router,
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, ApiState,
    extract::{Json, Path, Query},
};
use crate::{
    error::ServiceError,
    files::Buckets,
    runs::Runs,
    store::{JobProgress, ObjectRecord},
    tenants::Principal,
    triggers::files::FileTriggers,
};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/buckets", get(list_buckets).post(create_bucket))
        .route(
            "/v1/buckets/{bucket}",
            get(show_bucket).patch(update_bucket).delete(delete_bucket),
        )
        .route("/v1/buckets/{bucket}/files", get(list_files))
        .route(
            "/v1/buckets/{bucket}/files/{*path}",
            put(put_file).get(get_file).delete(delete_file),
        )
        .route("/v1/buckets/{bucket}/uploads", post(create_upload))
        .route(
            "/v1/buckets/{bucket}/uploads/{id}",
            get(show_upload).delete(abort_upload),
        )
        .route(
            "/v1/buckets/{bucket}/uploads/{id}/parts/{number}",
            put(put_part),
        )
        .route(
            "/v1/buckets/{bucket}/uploads/{id}/complete",
            post(complete_upload),
        )
        .route("/v1/flows/{id}/ledger", get(ledger))
        .route("/v1/runs/{id}/jobs", get(jobs))
        .route("/v1/runs/{id}/jobs/{step}", get(job))
        .route(
            "/v1/runs/{id}/jobs/{step}/replay-failed",
            post(replay_failed),
        )
}

async fn list_buckets(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Value>, ApiError> {
    let tenant = principal.tenant();
    let (used, quota) = buckets.usage(tenant)?;
    Ok(Json(json!({
        "buckets": buckets.buckets(tenant)?,
        "usage_bytes": used,
        "quota_bytes": (quota > 0).then_some(quota),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBucket {
    name: String,
    #[serde(default)]
    retention_days: Option<u32>,
}

async fn create_bucket(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
    Json(body): Json<NewBucket>,
) -> Result<impl IntoResponse, ApiError> {
    let bucket = buckets.create_bucket(principal.tenant(), &body.name, body.retention_days)?;
    Ok((StatusCode::CREATED, Json(bucket)))
}

async fn show_bucket(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
    Path(bucket): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(buckets.bucket(principal.tenant(), &bucket)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BucketChange {
    retention_days: Option<u32>,
}

async fn update_bucket(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
    Path(bucket): Path<String>,
    Json(body): Json<BucketChange>,
) -> Result<Json<Value>, ApiError> {
    let bucket = buckets.set_retention(principal.tenant(), &bucket, body.retention_days)?;
    Ok(Json(json!(bucket)))
}

async fn delete_bucket(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
    Path(bucket): Path<String>,
) -> Result<StatusCode, ApiError> {
    buckets.delete_bucket(principal.tenant(), &bucket)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    prefix: Option<String>,
    glob: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// An object as the API shows it (its blob is the host's business).
fn object_view(object: &ObjectRecord) -> Value {
    json!({
        "bucket": object.bucket,
        "path": object.path,
        "size": object.size,
        "sha256": object.sha256,
        "etag": object.sha256,
        "content_type": object.content_type,
        "created_at": object.created_at,
    })
}

async fn list_files(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
    Path(bucket): Path<String>,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let listing = buckets.list(
        principal.tenant(),
        &bucket,
        query.prefix.as_deref(),
        query.glob.as_deref(),
        query.after.as_deref(),
        query.limit.unwrap_or(100),
    )?;
    Ok(Json(json!({
        "files": listing.objects.iter().map(object_view).collect::<Vec<_>>(),
        "next": listing.next,
    })))
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn put_file(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
    Path((bucket, path)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let object = buckets
        .put_object(
            principal.tenant(),
            &bucket,
            &path,
            content_type(&headers),
            body.into_data_stream(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(object_view(&object))))
}

async fn get_file(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
    Path((bucket, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (object, file) = buckets.open(principal.tenant(), &bucket, &path)?;
    let file = tokio::fs::File::from_std(file);
    // Read in 64 KiB chunks as the client takes them.
    let stream = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 64 << 10];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buffer)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
    .boxed();
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    let kind = object
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    if let Ok(kind) = HeaderValue::from_str(kind) {
        headers.insert(header::CONTENT_TYPE, kind);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(object.size));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", object.sha256)) {
        headers.insert(header::ETAG, etag);
    }
    Ok(response)
}

async fn delete_file(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
    Path((bucket, path)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    buckets.delete_object(principal.tenant(), &bucket, &path)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUpload {
    path: String,
    #[serde(default)]
    content_type: Option<String>,
}

async fn create_upload(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
    Path(bucket): Path<String>,
    Json(body): Json<NewUpload>,
) -> Result<impl IntoResponse, ApiError> {
    let upload =
        buckets.create_upload(principal.tenant(), &bucket, &body.path, body.content_type)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": upload.id, "bucket": upload.bucket, "path": upload.path})),
    ))
}

/// An upload belongs to the bucket in its URL.
fn in_bucket(
    buckets: &Buckets,
    tenant: &str,
    bucket: &str,
    id: &str,
) -> Result<crate::store::UploadRecord, ApiError> {
    let upload = buckets.upload(tenant, id)?;
    if upload.bucket != bucket {
        return Err(ServiceError::NotFound(format!("upload `{id}` does not exist")).into());
    }
    Ok(upload)
}

async fn show_upload(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
    Path((bucket, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let upload = in_bucket(&buckets, principal.tenant(), &bucket, &id)?;
    let parts: Vec<Value> = upload
        .parts
        .iter()
        .map(|(n, p)| json!({"number": n, "size": p.size, "sha256": p.sha256}))
        .collect();
    Ok(Json(json!({
        "id": upload.id,
        "bucket": upload.bucket,
        "path": upload.path,
        "parts": parts,
        "created_at": upload.created_at,
    })))
}

async fn put_part(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
    Path((bucket, id, number)): Path<(String, String, u32)>,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    in_bucket(&buckets, principal.tenant(), &bucket, &id)?;
    let part = buckets
        .put_part(principal.tenant(), &id, number, body.into_data_stream())
        .await?;
    Ok(Json(
        json!({"number": number, "size": part.size, "sha256": part.sha256}),
    ))
}

async fn complete_upload(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
    Path((bucket, id)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = principal.tenant().to_string();
    in_bucket(&buckets, &tenant, &bucket, &id)?;
    // Joining the parts is file I/O: off the async workers.
    let object = tokio::task::spawn_blocking(move || buckets.complete_upload(&tenant, &id))
        .await
        .map_err(|e| ServiceError::Internal(format!("completing an upload: {e}")))??;
    Ok((StatusCode::CREATED, Json(object_view(&object))))
}

async fn abort_upload(
    State(buckets): State<Arc<Buckets>>,
    Extension(principal): Extension<Principal>,
    Path((bucket, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    in_bucket(&buckets, principal.tenant(), &bucket, &id)?;
    buckets.abort_upload(principal.tenant(), &id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    after: Option<String>,
    limit: Option<usize>,
}

async fn ledger(
    State(triggers): State<Arc<FileTriggers>>,
    Extension(principal): Extension<Principal>,
    Path(flow): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    let entries = triggers.ledger(principal.tenant(), &flow, query.after.as_deref(), limit)?;
    let next = (entries.len() == limit.clamp(1, 1000))
        .then(|| entries.last().map(|e| e.key.clone()))
        .flatten();
    Ok(Json(json!({"files": entries, "next": next})))
}

/// A job's progress, with what a page shows while it runs.
fn job_view(job: &JobProgress) -> Value {
    let percent = job
        .total_bytes
        .filter(|t| *t > 0)
        .map(|t| (job.counts.bytes as f64 * 100.0 / t as f64).min(100.0));
    let elapsed_ms = job
        .finished_at
        .unwrap_or(job.updated_at)
        .saturating_sub(job.started_at);
    let rate = (elapsed_ms > 0).then(|| job.counts.read as f64 * 1000.0 / elapsed_ms as f64);
    json!({
        "run": job.run,
        "step": job.step,
        "state": job.state,
        "source": job.source,
        "records": job.counts,
        "percent": percent,
        "records_per_second": rate,
        "files": job.files,
        "error": job.error,
        "started_at": job.started_at,
        "updated_at": job.updated_at,
        "finished_at": job.finished_at,
    })
}

async fn jobs(
    State(buckets): State<Arc<Buckets>>,
    State(runs): State<Arc<Runs>>,
    Extension(principal): Extension<Principal>,
    Path(run): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = principal.tenant();
    runs.run(tenant, &run)?;
    let jobs = buckets
        .store()
        .jobs(tenant, &run)
        .map_err(ServiceError::from)?;
    Ok(Json(
        json!({"jobs": jobs.iter().map(job_view).collect::<Vec<_>>()}),
    ))
}

async fn job(
    State(buckets): State<Arc<Buckets>>,
    State(runs): State<Arc<Runs>>,
    Extension(principal): Extension<Principal>,
    Path((run, step)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let tenant = principal.tenant();
    runs.run(tenant, &run)?;
    let job = buckets
        .store()
        .job(tenant, &run, &step)
        .map_err(ServiceError::from)?
        .ok_or_else(|| {
            ServiceError::NotFound(format!("run `{run}` has no job at step `{step}`"))
        })?;
    Ok(Json(job_view(&job)))
}

/// Runs the flow again on the same file, for the records the job failed
/// only (read from its `errors.jsonl`), with the same idempotency keys.
async fn replay_failed(
    State(buckets): State<Arc<Buckets>>,
    State(runs): State<Arc<Runs>>,
    Extension(principal): Extension<Principal>,
    Path((run, step)): Path<(String, String)>,
) -> Result<impl IntoResponse, ApiError> {
    let tenant = principal.tenant();
    let original = runs.run(tenant, &run)?;
    let job = buckets
        .store()
        .job(tenant, &run, &step)
        .map_err(ServiceError::from)?
        .ok_or_else(|| {
            ServiceError::NotFound(format!("run `{run}` has no job at step `{step}`"))
        })?;
    if job.finished_at.is_none() {
        return Err(ServiceError::State(format!("the job of run `{run}` has not finished")).into());
    }
    if job.counts.failed == 0 {
        return Err(
            ServiceError::State(format!("the job of run `{run}` has no failed records")).into(),
        );
    }
    // A replay of a replay keys its records by the first run.
    let first = original
        .event
        .payload
        .get("_replay")
        .and_then(|r| r.get("run"))
        .and_then(Value::as_str)
        .unwrap_or(&run)
        .to_string();
    let mut payload = original.event.payload.clone();
    payload["_replay"] = json!({"run": first, "step": step, "from": run});
    let replay = runs
        .start_run(tenant, &original.flow_id, payload, None)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"run": replay.id, "replays": run, "failed": job.counts.failed})),
    ))
}
