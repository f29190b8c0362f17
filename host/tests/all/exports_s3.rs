//! Exports to an S3-compatible store (`to.file.remote`), against the
//! in-process S3 server (s3s over a directory, on 127.0.0.2) that checks
//! every request's AWS Signature V4. A front in the test records each
//! request and can answer one part with a failure. A file large enough for
//! several parts lands under its key only when its upload completes, with
//! its manifest written last, and a throttled part (SlowDown) is tried
//! again; a part refused for good aborts the upload, leaving nothing under
//! the key and no parts; a destination that cannot work is refused when the
//! flow is saved, each problem at its place.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use axum::{Router, http::Method, response::IntoResponse};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchyard_tests as artifacts;

use crate::{
    files::put_file,
    support::{self, TOKEN, TestHost, fake::Server, wait_for},
};

const ACCESS_KEY: &str = "AKIDSWITCHYARDTEST";
const SECRET_KEY: &str = "s3cr3t/signing+key-for-tests";
/// Bytes per part: 5 MiB.
const PART: usize = 5 << 20;

/// What the front of the store saw and what it does to parts.
#[derive(Default)]
struct Front {
    /// `METHOD /path?query`, in order.
    log: Vec<String>,
    /// Answer this part number once with 503 SlowDown.
    slow_down_part: Option<u64>,
    /// Answer this part number with 404 NoSuchUpload.
    fail_part: Option<u64>,
}

/// The S3-compatible server over `root` (a bucket is a folder) behind the
/// recording front.
async fn s3_store(root: &Path, front: Arc<Mutex<Front>>) -> Server {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = Arc::new(builder.build());
    let router = Router::new().fallback(move |request: axum::extract::Request| {
        let (service, front) = (service.clone(), front.clone());
        async move {
            let (parts, body) = request.into_parts();
            let part: Option<u64> = parts.uri.query().and_then(|q| {
                q.split('&')
                    .find_map(|pair| pair.strip_prefix("partNumber="))
                    .and_then(|n| n.parse().ok())
            });
            {
                let mut front = front.lock().unwrap();
                front.log.push(format!("{} {}", parts.method, parts.uri));
                if part.is_some() && front.slow_down_part == part {
                    front.slow_down_part = None;
                    return s3_error(503, "SlowDown", "Please reduce your request rate.");
                }
                if part.is_some() && front.fail_part == part {
                    return s3_error(404, "NoSuchUpload", "The specified upload does not exist.");
                }
            }
            let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let request = axum::http::Request::from_parts(parts, s3s::Body::from(bytes));
            match service.call(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    axum::http::Response::from_parts(parts, axum::body::Body::new(body))
                }
                Err(_) => s3_error(500, "InternalError", "the store failed"),
            }
        }
    });
    Server::start(router).await
}

fn s3_error(status: u16, code: &str, message: &str) -> axum::response::Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (
        axum::http::StatusCode::from_u16(status).unwrap(),
        [("content-type", "application/xml")],
        body,
    )
        .into_response()
}

/// A host with the S3 connector, a connection to `store`, and the buckets
/// `inbox` (files dropped) and `reports`.
async fn host_with_s3(dir: &Path, store: &Server) -> (TestHost, String) {
    let host = TestHost::start(support::sandbox_config(dir)).await;
    let (status, body) = host.upload_file(artifacts::S3).await;
    assert_eq!(status, 201, "{body}");
    let conn = host
        .connect(
            "s3",
            json!({
                "endpoint": store.origin,
                "region": "us-east-1",
                "access_key_id": ACCESS_KEY,
                "secret_access_key": SECRET_KEY,
            }),
        )
        .await;
    for name in ["inbox", "reports"] {
        let (status, body) = host
            .call(Method::POST, "/v1/buckets", Some(json!({"name": name})))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    (host, conn)
}

/// A flow exporting each JSON Lines file dropped in `inbox/orders/` as CSV
/// to `exports/daily/<name>.csv` in the store, in parts of 5 MiB (the
/// least the store takes for a part that is not the last).
fn export_flow(conn: &str) -> Value {
    json!({
        "name": "Daily orders to the warehouse's store",
        "trigger": {"file": {"bucket": "inbox", "glob": "orders/*.jsonl"}},
        "steps": [{"key": "export",
            "retry": {"initial_delay_ms": 50, "max_delay_ms": 200},
            "records": {
                "from": {"file": "{{ trigger.file }}"},
                "map": {"id": "{{ record.id }}", "sku": "{{ record.sku }}",
                        "note": "{{ record.note }}"},
                "to": {"file": {"bucket": "reports",
                                "path": "daily/{{ trigger.file.name }}.csv",
                                "remote": {"plugin": "s3", "connection": conn,
                                           "params": {"bucket": "exports"},
                                           "part_bytes": PART}}},
            }}],
    })
}

async fn publish(host: &TestHost, flow: Value) -> String {
    let (status, body) = host.call(Method::POST, "/v1/flows", Some(flow)).await;
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_string();
    let (status, body) = host
        .call(
            Method::POST,
            &format!("/v1/flows/{id}/activate"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    id
}

/// 40,000 orders as JSON Lines with long notes: about 17 MiB of CSV, four
/// parts.
fn orders() -> Vec<u8> {
    let note = "packed, weighed and labelled; ".repeat(14);
    let mut lines = String::new();
    for i in 0..ORDERS {
        lines.push_str(&format!(
            "{{\"id\": {i}, \"sku\": \"SKU-{:05}\", \"note\": \"order {i}, {note}\"}}\n",
            i % 977
        ));
    }
    lines.into_bytes()
}

const ORDERS: usize = 40_000;

async fn finished_run(host: &TestHost, flow: &str) -> Value {
    let body = wait_for(
        host,
        &format!("/v1/runs?flow={flow}"),
        "the run ends",
        |b| {
            b["runs"].as_array().unwrap().first().is_some_and(|r| {
                ["succeeded", "failed"].contains(&r["status"].as_str().unwrap_or_default())
            })
        },
    )
    .await;
    body["runs"][0].clone()
}

/// Files the store keeps for unfinished uploads (s3s-fs keeps them at its
/// root as `.upload...`).
fn leftover_uploads(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(".upload"))
        .collect()
}

#[tokio::test]
async fn an_export_goes_up_in_parts_and_appears_whole_with_its_manifest_last() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s3");
    std::fs::create_dir_all(root.join("exports")).unwrap();
    let front = Arc::new(Mutex::new(Front {
        slow_down_part: Some(2),
        ..Front::default()
    }));
    let store = s3_store(&root, front.clone()).await;
    let (host, conn) = host_with_s3(dir.path(), &store).await;
    let flow = publish(&host, export_flow(&conn)).await;
    put_file(&host.url, TOKEN, "inbox", "orders/day1.jsonl", orders()).await;

    let run = finished_run(&host, &flow).await;
    assert_eq!(run["status"], json!("succeeded"), "{run}");
    let run_id = run["id"].as_str().unwrap();
    let (_, job) = host.get(&format!("/v1/runs/{run_id}/jobs/export")).await;
    assert_eq!(job["records"]["good"], json!(ORDERS), "{job}");
    assert_eq!(
        job["files"]["output"],
        json!("s3:exports/daily/day1.jsonl.csv"),
        "{job}"
    );

    // The file is whole: a header and every order.
    let object = std::fs::read(root.join("exports/daily/day1.jsonl.csv")).unwrap();
    let text = String::from_utf8(object.clone()).unwrap();
    assert_eq!(text.lines().count(), ORDERS + 1);
    let header = text.lines().next().unwrap();
    assert!(
        header.contains("sku") && header.contains("note"),
        "{header}"
    );
    assert!(text.contains("SKU-00976"));
    // The manifest beside it describes exactly those bytes.
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(root.join("exports/daily/day1.jsonl.csv.manifest.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["run"], json!(run_id), "{manifest}");
    assert_eq!(manifest["records"]["good"], json!(ORDERS), "{manifest}");
    assert_eq!(manifest["file"]["size"], json!(object.len()), "{manifest}");
    assert_eq!(
        manifest["file"]["sha256"],
        json!(hex::encode(Sha256::digest(&object))),
        "{manifest}"
    );
    assert_eq!(
        manifest["file"]["format"]["type"],
        json!("csv"),
        "{manifest}"
    );
    let parts = object.len().div_ceil(PART);
    assert!(parts >= 3, "{} bytes make {parts} parts", object.len());
    assert_eq!(manifest["file"]["parts"], json!(parts), "{manifest}");
    assert!(
        leftover_uploads(&root).is_empty(),
        "{:?}",
        leftover_uploads(&root)
    );

    // What reached the store, in order: the upload started, its parts
    // (the throttled one twice), completed, and the manifest last. Nothing
    // was written under the key before the upload completed.
    let log = front.lock().unwrap().log.clone();
    let key = "/exports/daily/day1.jsonl.csv";
    let ours: Vec<&String> = log.iter().filter(|l| l.contains(key)).collect();
    assert!(
        ours[0].starts_with(&format!("POST {key}?uploads")),
        "{ours:?}"
    );
    let part_requests = ours
        .iter()
        .filter(|l| l.starts_with("PUT ") && l.contains("partNumber="))
        .count();
    assert_eq!(part_requests, parts + 1, "{ours:?}");
    let complete = ours
        .iter()
        .position(|l| l.starts_with(&format!("POST {key}?uploadId=")))
        .expect("the upload completed");
    assert_eq!(complete, ours.len() - 2, "{ours:?}");
    assert_eq!(
        ours.last().unwrap().as_str(),
        format!("PUT {key}.manifest.json"),
        "{ours:?}"
    );
    assert!(
        !ours[..complete]
            .iter()
            .any(|l| l.starts_with(&format!("PUT {key} ")) || l.as_str() == format!("PUT {key}")),
        "{ours:?}"
    );
    // The throttled part was retried on the step's schedule.
    let (_, detail) = host.get(&format!("/v1/runs/{run_id}")).await;
    assert!(detail.to_string().contains("SlowDown"), "{detail}");
    host.stop().await;
    drop(store);
}

#[tokio::test]
async fn a_part_refused_midway_aborts_the_upload_and_leaves_nothing_under_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s3");
    std::fs::create_dir_all(root.join("exports")).unwrap();
    let front = Arc::new(Mutex::new(Front {
        fail_part: Some(3),
        ..Front::default()
    }));
    let store = s3_store(&root, front.clone()).await;
    let (host, conn) = host_with_s3(dir.path(), &store).await;
    let flow = publish(&host, export_flow(&conn)).await;
    put_file(&host.url, TOKEN, "inbox", "orders/day1.jsonl", orders()).await;

    let run = finished_run(&host, &flow).await;
    assert_eq!(run["status"], json!("failed"), "{run}");
    let message = run["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("to.file.remote.upload_part") && message.contains("NoSuchUpload"),
        "{run}"
    );
    assert!(!root.join("exports/daily/day1.jsonl.csv").exists());
    assert!(
        !root
            .join("exports/daily/day1.jsonl.csv.manifest.json")
            .exists()
    );
    // The upload was aborted: the store keeps none of its parts.
    assert!(
        leftover_uploads(&root).is_empty(),
        "{:?}",
        leftover_uploads(&root)
    );
    let log = front.lock().unwrap().log.clone();
    assert!(
        log.iter()
            .any(|l| l.starts_with("DELETE /exports/daily/day1.jsonl.csv?uploadId=")),
        "{log:?}"
    );
    let (_, job) = host
        .get(&format!(
            "/v1/runs/{}/jobs/export",
            run["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(job["state"], json!("failed"), "{job}");
    assert!(job["files"].get("output").is_none(), "{job}");
    host.stop().await;
    drop(store);
}

#[tokio::test]
async fn a_destination_that_cannot_work_is_refused_when_the_flow_is_saved() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s3");
    std::fs::create_dir_all(&root).unwrap();
    let store = s3_store(&root, Arc::default()).await;
    let (host, conn) = host_with_s3(dir.path(), &store).await;
    let (status, body) = host.upload_file(artifacts::EXAMPLE).await;
    assert_eq!(status, 201, "{body}");

    // Parts too small for a call's bounds, params that are not an object,
    // no connection.
    let mut flow = export_flow(&conn);
    flow["steps"][0]["records"]["to"]["file"]["remote"] =
        json!({"plugin": "s3", "params": "exports", "part_bytes": 1000});
    let (status, body) = host.call(Method::POST, "/v1/flows", Some(flow)).await;
    assert_eq!(status, 400, "{body}");
    let text = body.to_string();
    for place in [
        "steps[export].records.to.file.remote.part_bytes: from 5242880 to 8388608",
        "steps[export].records.to.file.remote.params: an object",
        "steps[export].records.to.file.remote.connection: s3 needs a connection",
    ] {
        assert!(text.contains(place), "{place} in {text}");
    }

    // A connector that cannot upload in parts.
    let mut flow = export_flow(&conn);
    flow["steps"][0]["records"]["to"]["file"]["remote"] =
        json!({"plugin": "example", "params": {"bucket": "exports"}});
    let (status, body) = host.call(Method::POST, "/v1/flows", Some(flow)).await;
    assert_eq!(status, 400, "{body}");
    let text = body.to_string();
    assert!(
        text.contains("steps[export].records.to.file.remote.create: example@")
            && text.contains("has no action `create-multipart-upload`"),
        "{text}"
    );
    // Nothing was saved.
    let (_, flows) = host.get("/v1/flows").await;
    assert_eq!(flows["flows"].as_array().map(Vec::len), Some(0), "{flows}");
    host.stop().await;
    drop(store);
}
