//! Files: buckets over the API (streamed uploads, uploads in parts, listing
//! by prefix and glob with paging, the quota), file triggers (a file is
//! taken once, and only once it is old enough), record jobs (every rejected
//! record in `rejected.csv`, records to an action in batches, each once),
//! and a scheduled export of a connector's pages to XLSX.

use std::collections::BTreeMap;

use axum::http::Method;
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::support::{
    self, Backend, TOKEN, TestHost, client,
    fake::{Common, Fake, FakeApi, Incoming, Reply},
    wait_for, wait_until,
};

pub const SINK_KEY: &str = "k-sink-1";

// Buckets, the quota and file triggers' ledgers on each store.
crate::on_both_stores!(
    buckets_stream_files_in_parts_list_by_glob_and_keep_the_quota,
    a_young_file_waits_and_the_same_file_dropped_twice_runs_once,
);

/// A fake API behind the bench connector's `send` (`POST /items`): a body
/// with `items` is a batch of records, taken and counted (a batch repeated
/// with its `Idempotency-Key` is not applied again); a body with `page` asks
/// for one page of a listing of `total` records, `size` a page, each
/// `{"id", "name", "qty"}`, with the next page's number in `next`.
#[derive(Debug, Default)]
pub struct Sink {
    common: Common,
    /// Record id → how many batches carrying it were applied.
    pub received: BTreeMap<String, u32>,
    pub total: u64,
    pub size: u64,
}

impl Sink {
    pub async fn start(total: u64, size: u64) -> Fake<Sink> {
        Fake::serve(Sink {
            total,
            size,
            ..Sink::default()
        })
        .await
    }
}

pub fn sink_properties(fake: &Fake<Sink>) -> Value {
    json!({"base_url": fake.origin(), "api_key": SINK_KEY})
}

impl FakeApi for Sink {
    fn common(&mut self) -> &mut Common {
        &mut self.common
    }

    fn failure(&self, status: u16, message: &str) -> Reply {
        Reply::new(status, json!({"error": message}))
    }

    fn admit(&mut self, request: &Incoming) -> Result<Vec<(String, String)>, Reply> {
        match request.header("x-api-key") {
            Some(SINK_KEY) => Ok(Vec::new()),
            _ => Err(self.failure(401, "bad api key")),
        }
    }

    fn route(&mut self, request: &Incoming) -> Reply {
        if (&request.method, request.segments().as_slice()) != (&Method::POST, &["items"][..]) {
            return self.failure(404, "no such endpoint");
        }
        let Ok(body) = request.json() else {
            return self.failure(400, "the body is not JSON");
        };
        if let Some(items) = body["items"].as_array() {
            for item in items {
                let id = item["id"].as_str().unwrap_or_default().to_string();
                *self.received.entry(id).or_default() += 1;
            }
            return Reply::new(201, json!({"accepted": items.len()}));
        }
        let Some(page) = body["page"].as_u64() else {
            return self.failure(400, "neither `items` nor `page`");
        };
        let first = page * self.size;
        let last = (first + self.size).min(self.total);
        let items: Vec<Value> = (first..last)
            .map(|i| json!({"id": format!("r{i}"), "name": format!("Item {i}"), "qty": i % 97}))
            .collect();
        let next = (last < self.total).then_some(page + 1);
        Reply::ok(json!({"items": items, "next": next}))
    }
}

/// Puts `bytes` at `bucket/path` in one request.
pub async fn put_file(url: &str, token: &str, bucket: &str, path: &str, bytes: Vec<u8>) -> Value {
    let response = client()
        .put(format!("{url}/v1/buckets/{bucket}/files/{path}"))
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .unwrap();
    let (status, body) = support::read(response).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// The bytes of `bucket/path`.
pub async fn get_file(url: &str, token: &str, bucket: &str, path: &str) -> (u16, Vec<u8>) {
    let response = client()
        .get(format!("{url}/v1/buckets/{bucket}/files/{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn bucket(host: &TestHost, name: &str) {
    let (status, body) = host
        .call(Method::POST, "/v1/buckets", Some(json!({"name": name})))
        .await;
    assert_eq!(status, 201, "{body}");
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

async fn runs_of(host: &TestHost, flow: &str) -> Vec<Value> {
    let (status, body) = host.get(&format!("/v1/runs?flow={flow}")).await;
    assert_eq!(status, 200, "{body}");
    body["runs"].as_array().unwrap().clone()
}

/// Waits until `flow` has `n` runs, all finished; returns them.
async fn finished_runs(host: &TestHost, flow: &str, n: usize) -> Vec<Value> {
    let path = format!("/v1/runs?flow={flow}");
    let body = wait_for(host, &path, &format!("{n} finished runs"), |b| {
        let runs = b["runs"].as_array().unwrap();
        runs.len() == n
            && runs
                .iter()
                .all(|r| ["succeeded", "failed"].contains(&r["status"].as_str().unwrap()))
    })
    .await;
    body["runs"].as_array().unwrap().clone()
}

async fn buckets_stream_files_in_parts_list_by_glob_and_keep_the_quota(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = backend.apply(support::config(dir.path())).await;
    config.tenant_quota_mib = 1;
    let host = TestHost::start(config).await;
    bucket(&host, "drop").await;
    let (status, body) = host
        .call(
            Method::POST,
            "/v1/buckets",
            Some(json!({"name": "Bad_Name"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");

    // One request, then the same file in three parts.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let one = put_file(&host.url, TOKEN, "drop", "in/a.bin", data.clone()).await;
    assert_eq!(one["size"], json!(300_000));
    let (status, upload) = host
        .call(
            Method::POST,
            "/v1/buckets/drop/uploads",
            Some(json!({"path": "in/b.bin"})),
        )
        .await;
    assert_eq!(status, 201, "{upload}");
    let id = upload["id"].as_str().unwrap();
    // Parts arrive out of order; they are joined by number.
    for number in [2usize, 1, 3] {
        let part = data[(number - 1) * 100_000..number * 100_000].to_vec();
        let response = client()
            .put(format!(
                "{}/v1/buckets/drop/uploads/{id}/parts/{number}",
                host.url
            ))
            .bearer_auth(TOKEN)
            .body(part)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let (status, two) = host
        .call(
            Method::POST,
            &format!("/v1/buckets/drop/uploads/{id}/complete"),
            None,
        )
        .await;
    assert_eq!(status, 201, "{two}");
    assert_eq!(two["sha256"], one["sha256"], "the parts make the same file");
    let (status, bytes) = get_file(&host.url, TOKEN, "drop", "in/b.bin").await;
    assert_eq!(status, 200);
    assert!(bytes == data, "the download is the upload");

    for name in ["in/c.csv", "in/d.csv", "in/deep/e.csv", "out/f.csv"] {
        put_file(&host.url, TOKEN, "drop", name, b"id\n1\n".to_vec()).await;
    }
    // A glob; `*` stays within a folder, `**` crosses folders.
    let (_, listed) = host.get("/v1/buckets/drop/files?glob=in/*.csv").await;
    let paths: Vec<&str> = listed["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["in/c.csv", "in/d.csv"]);
    let (_, listed) = host.get("/v1/buckets/drop/files?glob=**/*.csv").await;
    assert_eq!(listed["files"].as_array().unwrap().len(), 4, "{listed}");
    // Paging by prefix.
    let (_, page) = host.get("/v1/buckets/drop/files?prefix=in/&limit=2").await;
    assert_eq!(page["files"].as_array().unwrap().len(), 2, "{page}");
    let after = page["next"].as_str().unwrap().to_string();
    let (_, rest) = host
        .get(&format!(
            "/v1/buckets/drop/files?prefix=in/&limit=10&after={after}"
        ))
        .await;
    let rest: Vec<&str> = rest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["in/c.csv", "in/d.csv", "in/deep/e.csv"]);

    // 600 KB are stored; another 600 KB pass the 1 MiB quota and are refused
    // whole, leaving nothing behind.
    let response = client()
        .put(format!("{}/v1/buckets/drop/files/in/big.bin", host.url))
        .bearer_auth(TOKEN)
        .body(vec![7u8; 600_000])
        .send()
        .await
        .unwrap();
    let (status, body) = support::read(response).await;
    assert_eq!(status, 413, "{body}");
    let (status, _) = get_file(&host.url, TOKEN, "drop", "in/big.bin").await;
    assert_eq!(status, 404);
    let (_, usage) = host.get("/v1/buckets").await;
    assert_eq!(usage["usage_bytes"], json!(600_000 + 4 * 5), "{usage}");

    // Deleting frees the space; a bucket with files cannot be deleted.
    let (status, _) = host
        .call(Method::DELETE, "/v1/buckets/drop/files/in/a.bin", None)
        .await;
    assert_eq!(status, 204);
    put_file(&host.url, TOKEN, "drop", "in/big.bin", vec![7u8; 600_000]).await;
    let (status, body) = host.call(Method::DELETE, "/v1/buckets/drop", None).await;
    assert_eq!(status, 409, "{body}");
    host.stop().await;
}

/// 1,000 order lines, 1% of them bad (a quantity that is not a number).
fn order_lines() -> (String, Vec<String>) {
    let mut csv = String::from("sku,name,qty\n");
    let mut bad = Vec::new();
    for i in 0..1000 {
        if i % 100 == 37 {
            let line = format!("SKU-{i},\"Widget, large\",lots");
            bad.push(line.clone());
            csv.push_str(&line);
        } else {
            csv.push_str(&format!("SKU-{i},Widget {i},{}", i % 7 + 1));
        }
        csv.push('\n');
    }
    (csv, bad)
}

#[tokio::test]
async fn a_csv_with_bad_rows_puts_exactly_those_rows_in_rejected_csv() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(support::config(dir.path())).await;
    bucket(&host, "inbox").await;
    bucket(&host, "review").await;
    let flow = publish(
        &host,
        json!({
            "name": "Order lines to review",
            "trigger": {"file": {"bucket": "inbox", "glob": "orders/*.csv",
                                 "after_success": {"move": "archive/"}}},
            "steps": [{"key": "lines", "records": {
                "from": {"file": "{{ trigger.file }}"},
                "map": {"sku": "{{ record.sku }}", "name": "{{ record.name }}",
                        "qty": "{{ record.qty | int(-1) }}"},
                "schema": {"type": "object", "required": ["sku", "qty"],
                           "properties": {"qty": {"type": "integer", "minimum": 1}}},
                "to": {"file": {"bucket": "review", "path": "lines/{{ trigger.file.name }}.jsonl"}},
            }}],
        }),
    )
    .await;
    let (csv, bad) = order_lines();
    put_file(
        &host.url,
        TOKEN,
        "inbox",
        "orders/day1.csv",
        csv.into_bytes(),
    )
    .await;

    let runs = finished_runs(&host, &flow, 1).await;
    let run = &runs[0];
    assert_eq!(run["status"], json!("succeeded"), "{run}");
    let run_id = run["id"].as_str().unwrap();
    let (_, job) = host.get(&format!("/v1/runs/{run_id}/jobs/lines")).await;
    assert_eq!(
        job["records"],
        json!({"read": 1000, "good": 990, "failed": 10, "skipped": 0, "bytes": job["records"]["bytes"]}),
        "{job}"
    );
    assert_eq!(job["percent"], json!(100.0), "{job}");

    // The output: the 990 good lines, mapped; its manifest beside it.
    let (status, output) = get_file(&host.url, TOKEN, "review", "lines/day1.csv.jsonl").await;
    assert_eq!(status, 200);
    let lines: Vec<Value> = String::from_utf8(output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 990);
    assert_eq!(
        lines[0],
        json!({"sku": "SKU-0", "name": "Widget 0", "qty": 1})
    );
    let (status, manifest) = get_file(
        &host.url,
        TOKEN,
        "review",
        "lines/day1.csv.jsonl.manifest.json",
    )
    .await;
    assert_eq!(status, 200);
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["records"]["good"], json!(990), "{manifest}");

    // rejected.csv: the header and exactly the bad rows, as they were.
    let (status, rejected) = get_file(&host.url, TOKEN, "review", "lines/rejected.csv").await;
    assert_eq!(status, 200);
    let rejected = String::from_utf8(rejected).unwrap();
    let mut expected = vec!["sku,name,qty".to_string()];
    expected.extend(bad.iter().cloned());
    assert_eq!(rejected.lines().collect::<Vec<_>>(), expected);
    // errors.jsonl: one line per bad row, with its index and the reason.
    let (_, errors) = get_file(&host.url, TOKEN, "review", "lines/errors.jsonl").await;
    let errors: Vec<Value> = String::from_utf8(errors)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let indices: Vec<u64> = errors
        .iter()
        .map(|e| e["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indices, (0..10).map(|k| k * 100 + 37).collect::<Vec<_>>());
    assert!(
        errors[0]["error"].as_str().unwrap().contains("/qty"),
        "{}",
        errors[0]
    );

    // After success the file moved to archive/.
    wait_for(
        &host,
        "/v1/buckets/inbox/files?prefix=archive/",
        "the file is archived",
        |b| b["files"].as_array().unwrap().len() == 1,
    )
    .await;
    let (status, _) = get_file(&host.url, TOKEN, "inbox", "orders/day1.csv").await;
    assert_eq!(status, 404);
    let (_, ledger) = host.get(&format!("/v1/flows/{flow}/ledger")).await;
    assert_eq!(ledger["files"][0]["status"], json!("done"), "{ledger}");
    assert_eq!(ledger["files"][0]["run"], json!(run_id), "{ledger}");
    host.stop().await;
}

async fn a_young_file_waits_and_the_same_file_dropped_twice_runs_once(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(backend.apply(support::config(dir.path())).await).await;
    bucket(&host, "drop").await;
    bucket(&host, "out").await;
    let flow = publish(
        &host,
        json!({
            "name": "Drop to out",
            "trigger": {"file": {"bucket": "drop", "prefix": "in/", "min_age_secs": 2,
                                 "after_success": "delete"}},
            "steps": [{"key": "copy", "records": {
                "from": {"file": "{{ trigger.file }}", "format": {"type": "jsonl"}},
                "to": {"file": {"bucket": "out", "path": "{{ run }}.jsonl"}},
            }}],
        }),
    )
    .await;
    let dropped = std::time::Instant::now();
    let body = b"{\"a\":1}\n{\"a\":2}\n".to_vec();
    put_file(&host.url, TOKEN, "drop", "in/x.jsonl", body.clone()).await;

    // Seen, but left alone while it is younger than two seconds.
    let ledger = wait_for(
        &host,
        &format!("/v1/flows/{flow}/ledger"),
        "the file is in the ledger",
        |b| !b["files"].as_array().unwrap().is_empty(),
    )
    .await;
    if dropped.elapsed().as_millis() < 1_500 {
        assert_eq!(ledger["files"][0]["status"], json!("waiting"), "{ledger}");
        assert!(runs_of(&host, &flow).await.is_empty());
    }
    let runs = finished_runs(&host, &flow, 1).await;
    assert!(
        dropped.elapsed().as_millis() >= 2_000,
        "taken after {:?}",
        dropped.elapsed()
    );
    assert_eq!(runs[0]["status"], json!("succeeded"), "{}", runs[0]);
    wait_for(
        &host,
        "/v1/buckets/drop/files",
        "the file is deleted",
        |b| b["files"].as_array().unwrap().is_empty(),
    )
    .await;

    // The same file again: the ledger knows it; no second run. A changed
    // file at the same path is a new file.
    put_file(&host.url, TOKEN, "drop", "in/x.jsonl", body).await;
    let changed = std::time::Instant::now();
    put_file(
        &host.url,
        TOKEN,
        "drop",
        "in/y.jsonl",
        b"{\"a\":3}\n".to_vec(),
    )
    .await;
    let runs = finished_runs(&host, &flow, 2).await;
    assert!(changed.elapsed().as_millis() >= 2_000);
    let (_, ledger) = host.get(&format!("/v1/flows/{flow}/ledger")).await;
    let entries = ledger["files"].as_array().unwrap();
    assert_eq!(entries.len(), 2, "{ledger}");
    // Another pass of the watcher changes nothing.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(runs_of(&host, &flow).await.len(), runs.len());
    let (status, _) = get_file(&host.url, TOKEN, "drop", "in/x.jsonl").await;
    assert_eq!(status, 200, "a file already processed is left where it is");
    host.stop().await;
}

#[tokio::test]
async fn records_go_to_an_action_in_batches_each_once_and_pages_export_to_xlsx() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(support::sandbox_config(dir.path())).await;
    let (status, body) = host.upload_file(artifacts::FIXTURE_BENCH).await;
    assert_eq!(status, 201, "{body}");
    let fake = Sink::start(100_000, 1_000).await;
    let conn = host.connect("bench", sink_properties(&fake)).await;
    bucket(&host, "exports").await;

    // A connector's pages (100 of 1,000 records) to an XLSX file, written
    // in constant memory, with a manifest.
    let export = publish(
        &host,
        json!({
            "name": "Export items",
            "trigger": {"schedule": "0 0 1 1 *"},
            "steps": [{"key": "export", "records": {
                "from": {"pages": {"plugin": "bench", "action": "send", "connection": conn,
                                   "input": {"page": "{{ cursor or 0 }}"}}},
                "map": {"id": "{{ record.id }}", "name": "{{ record.name }}", "qty": "{{ record.qty }}"},
                "to": {"file": {"bucket": "exports", "path": "items.xlsx"}},
            }}],
        }),
    )
    .await;
    // A new scheduled flow runs once when it is activated.
    let runs = finished_runs(&host, &export, 1).await;
    assert_eq!(runs[0]["status"], json!("succeeded"), "{}", runs[0]);
    let (status, xlsx) = get_file(&host.url, TOKEN, "exports", "items.xlsx").await;
    assert_eq!(status, 200);
    let mut book: calamine::Xlsx<_> =
        calamine::open_workbook_from_rs(std::io::Cursor::new(xlsx)).unwrap();
    use calamine::Reader;
    let sheet = book.worksheet_range_at(0).unwrap().unwrap();
    assert_eq!(sheet.height(), 100_001, "a header and 100,000 rows");
    assert_eq!(sheet.get_value((0, 0)).unwrap().to_string(), "id");
    assert_eq!(sheet.get_value((100_000, 0)).unwrap().to_string(), "r99999");
    let (status, manifest) =
        get_file(&host.url, TOKEN, "exports", "items.xlsx.manifest.json").await;
    assert_eq!(status, 200);
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    assert_eq!(manifest["records"]["good"], json!(100_000), "{manifest}");

    // The CSV of those records back in, to the action in batches of 250;
    // the API loses the answer to some batches, which are sent again with
    // the same key and not applied twice.
    bucket(&host, "inbox").await;
    let mut csv = String::from("id,name,qty\n");
    for i in 0..5_000 {
        csv.push_str(&format!("r{i},Item {i},{}\n", i % 97));
    }
    let send = publish(
        &host,
        json!({
            "name": "Items to the API",
            "trigger": {"file": {"bucket": "inbox"}},
            "steps": [{"key": "send", "retry": {"initial_delay_ms": 50, "max_delay_ms": 200}, "records": {
                "from": {"file": "{{ trigger.file }}"},
                "map": {"id": "{{ record.id }}", "qty": "{{ record.qty | int }}"},
                "to": {"action": {"plugin": "bench", "action": "send", "connection": conn,
                                  "batch": {"count": 250}}},
            }}],
        }),
    )
    .await;
    fake.lose_next_responses(3);
    put_file(&host.url, TOKEN, "inbox", "items.csv", csv.into_bytes()).await;
    let runs = finished_runs(&host, &send, 1).await;
    assert_eq!(runs[0]["status"], json!("succeeded"), "{}", runs[0]);
    let received = fake.lock().received.clone();
    assert_eq!(received.len(), 5_000);
    assert!(
        received.values().all(|n| *n == 1),
        "a record was applied twice"
    );
    let batches: Vec<String> = fake
        .mutations()
        .into_iter()
        .filter(|m| m.body.get("items").is_some())
        .map(|m| m.idempotency_key.unwrap())
        .collect();
    assert_eq!(batches.len(), 20);
    let run_id = runs[0]["id"].as_str().unwrap();
    assert!(
        batches.iter().all(|k| k.starts_with(run_id)),
        "keys are the run's, the file's and the records': {batches:?}"
    );
    wait_until("the answers were lost", || {
        fake.requests().iter().filter(|r| r.status == 503).count() == 3
    })
    .await;
    host.stop().await;
}
