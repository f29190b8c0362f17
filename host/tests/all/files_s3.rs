//! The S3 connector against a local S3-compatible server (s3s with its
//! file-system backend, in process, on 127.0.0.2) that checks AWS Signature
//! V4 on every request: the host signs with the connection's secret key,
//! which the plugin never sees. A remote file trigger polls a bucket of
//! that store, copies a new file in (in chunks), runs its record job, and
//! moves the remote file to `done/`.

use std::path::Path;

use axum::http::Method;
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::{
    files::get_file,
    support::{self, TOKEN, TestHost, fake::Server, wait_for},
};

const ACCESS_KEY: &str = "AKIDSWITCHYARDTEST";
const SECRET_KEY: &str = "s3cr3t/signing+key-for-tests";

/// An S3-compatible server over the directory `root` (a bucket is a folder),
/// accepting only requests signed with [`ACCESS_KEY`] and [`SECRET_KEY`].
async fn s3_server(root: &Path) -> Server {
    use hyper_util::{rt::TokioExecutor, rt::TokioIo, server::conn::auto::Builder};
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
    builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    let service = builder.build();
    Server::raw(move |listener| async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let service = service.clone();
            tokio::spawn(async move {
                let _ = Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    })
    .await
}

fn properties(server: &Server, secret: &str) -> Value {
    json!({
        "endpoint": server.origin,
        "region": "us-east-1",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": secret,
    })
}

async fn invoke(host: &TestHost, connection: &str, action: &str, input: Value) -> Value {
    let (status, body) = host
        .call(
            Method::POST,
            "/v1/invoke",
            Some(
                json!({"plugin": "s3", "action": action, "input": input, "connection": connection}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn the_host_signs_s3_requests_and_a_remote_file_is_imported_once_then_moved() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s3");
    std::fs::create_dir_all(root.join("legacy/drop")).unwrap();
    let server = s3_server(&root).await;
    let host = TestHost::start(support::sandbox_config(dir.path())).await;
    let (status, body) = host.upload_file(artifacts::S3).await;
    assert_eq!(status, 201, "{body}");
    let (_, version) = host.get("/v1/plugins/s3/0.2.0").await;
    assert_eq!(
        version["manifest"]["auth"],
        json!({"type": "aws_sigv4", "region": "{{region}}", "service": "s3"}),
        "{version}"
    );
    let conn = host.connect("s3", properties(&server, SECRET_KEY)).await;

    // Written and listed through the connector: the store checked each
    // signature.
    invoke(
        &host,
        &conn,
        "put-object",
        json!({"bucket": "legacy", "path": "drop/note.txt", "text": "hello"}),
    )
    .await;
    let listed = invoke(
        &host,
        &conn,
        "list-objects",
        json!({"bucket": "legacy", "prefix": "drop/"}),
    )
    .await;
    let paths: Vec<&str> = listed["output"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["drop/note.txt"], "{listed}");
    // The secret never went to the plugin: nothing it logged or recorded
    // holds it.
    assert!(!listed.to_string().contains(SECRET_KEY));
    // A wrong secret key is refused by the store.
    let wrong = host.connect("s3", properties(&server, "not-the-key")).await;
    let (_, refused) = host
        .call(
            Method::POST,
            "/v1/invoke",
            Some(json!({"plugin": "s3", "action": "list-objects",
                        "input": {"bucket": "legacy"}, "connection": wrong})),
        )
        .await;
    assert!(
        refused["error"].to_string().contains("403") || refused["error"]["kind"] == json!("auth"),
        "{refused}"
    );

    // A legacy system drops a CSV; the flow picks it up from the store.
    let mut csv = String::from("sku;qty\n");
    for i in 0..3_000 {
        csv.push_str(&format!("S{i};{}\n", i % 5));
    }
    std::fs::write(root.join("legacy/drop/stock.csv"), &csv).unwrap();
    for name in ["staging", "review"] {
        let (status, body) = host
            .call(Method::POST, "/v1/buckets", Some(json!({"name": name})))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, flow) = host
        .call(
            Method::POST,
            "/v1/flows",
            Some(json!({
                "name": "Stock from the legacy drop",
                "trigger": {"plugin": "s3", "connection": conn, "file": {
                    "bucket": "staging", "prefix": "drop/", "glob": "drop/*.csv",
                    "interval_secs": 1, "after_success": {"move": "done/"},
                    "remote": {"params": {"bucket": "legacy"}, "chunk_bytes": 65536},
                }},
                "steps": [{"key": "stock", "records": {
                    "from": {"file": "{{ trigger.file }}",
                             "format": {"type": "csv", "delimiter": ";"}},
                    "where": "record.qty != '0'",
                    "to": {"file": {"bucket": "review", "path": "stock.jsonl"}},
                }}],
            })),
        )
        .await;
    assert_eq!(status, 201, "{flow}");
    let flow = flow["id"].as_str().unwrap().to_string();
    let (status, body) = host
        .call(
            Method::POST,
            &format!("/v1/flows/{flow}/activate"),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let ledger = wait_for(
        &host,
        &format!("/v1/flows/{flow}/ledger"),
        "the remote file is done",
        |b| b["files"][0]["status"] == json!("done"),
    )
    .await;
    let entry = &ledger["files"][0];
    assert_eq!(entry["path"], json!("drop/stock.csv"), "{ledger}");
    assert_eq!(entry["size"], json!(csv.len()), "{ledger}");
    let run = entry["run"].as_str().unwrap();
    let (_, job) = host.get(&format!("/v1/runs/{run}/jobs/stock")).await;
    assert_eq!(job["records"]["read"], json!(3_000), "{job}");
    assert_eq!(job["records"]["skipped"], json!(600), "{job}");
    assert_eq!(job["records"]["good"], json!(2_400), "{job}");
    let (status, out) = get_file(&host.url, TOKEN, "review", "stock.jsonl").await;
    assert_eq!(status, 200);
    assert_eq!(String::from_utf8(out).unwrap().lines().count(), 2_400);

    // Moved in the store; the copy in the staging bucket is the same bytes.
    assert!(root.join("legacy/done/stock.csv").exists());
    assert!(!root.join("legacy/drop/stock.csv").exists());
    let (_, staged) = get_file(&host.url, TOKEN, "staging", "drop/stock.csv").await;
    assert!(
        staged == csv.as_bytes(),
        "the staged copy is the remote file"
    );

    // The same file dropped again: the ledger knows it, no second run.
    std::fs::write(root.join("legacy/drop/stock.csv"), &csv).unwrap();
    // Each poll lists the store (one call of the connector); the file is
    // known, so nothing more is called for it.
    let before = s3_calls(&host).await;
    let deadline = std::time::Instant::now() + support::DEADLINE;
    while s3_calls(&host).await < before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the trigger stopped polling"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        root.join("legacy/drop/stock.csv").exists(),
        "left where it is"
    );
    let (_, runs) = host.get(&format!("/v1/runs?flow={flow}")).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    host.stop().await;
    drop(server);
}

/// Calls made to the S3 connector so far.
async fn s3_calls(host: &TestHost) -> u64 {
    let text = host.metrics().await;
    let series = r#"switchyard_plugin_call_duration_seconds_count{plugin="s3",function="perform"}"#;
    support::metrics::sample(&text, series).map_or(0, |v| v.parse().unwrap())
}
