//! Record jobs against the real `switchyard serve` binary: a generated CSV
//! (about 84 bytes a row) uploaded in parts into a bucket, then streamed
//! through a `records` step, mapped per record, either into a JSON Lines
//! file in another bucket or to an action in batches of 1,000 (the `bench`
//! connector, one HTTP call per batch to a local sink). Prints rows per
//! second and the host's peak resident memory, sampled every 50 ms.
//!
//! `cargo bench -p switchyard --bench files [-- file|action|big]`
//! (all three by default). `file` and `action` import
//! `SWITCHYARD_BENCH_FILE_ROWS` rows (default 1,000,000, ~84 MB); `big`
//! imports `SWITCHYARD_BENCH_BIG_MB` (default 1024) to the action and
//! reports its peak RSS.

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

mod common;

use axum::{Json, Router, extract::State, routing::post};
use serde_json::{Value, json};

const TOKEN: &str = "benchmark-token-0123456789";

struct Server {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let load = dir.path().join("connectors");
        std::fs::create_dir(&load).unwrap();
        std::fs::copy(switchyard_tests::FIXTURE_BENCH, load.join("bench.wasm")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(["--allow-network", "127.0.0.2/32", "--token", TOKEN])
            .args(["--tenant-quota-mib", "0", "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--load-dir")
            .arg(&load)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("switchyard starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = loop {
            let line = lines.next().expect("serve printed its address").unwrap();
            if let Some(url) = line.strip_prefix("switchyard listening on ") {
                break url.to_string();
            }
        };
        Server {
            child,
            url,
            _dir: dir,
        }
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = client()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The sink: counts the records of each batch.
async fn start_sink(count: Arc<AtomicU64>) -> SocketAddr {
    let router = Router::new()
        .route(
            "/items",
            post(
                |State(count): State<Arc<AtomicU64>>, Json(body): Json<Value>| async move {
                    let n = body["items"].as_array().map_or(0, Vec::len) as u64;
                    count.fetch_add(n, Ordering::Relaxed);
                    Json(json!({"accepted": n}))
                },
            ),
        )
        .with_state(count);
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn write_csv(path: &Path, rows: u64) -> u64 {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "id,name,qty,note").unwrap();
    for i in 0..rows {
        writeln!(
            out,
            "r{i},\"Item {i}, boxed\",{},Shipped from the north warehouse on pallet {}",
            i % 97 + 1,
            i % 1000
        )
        .unwrap();
    }
    out.flush().unwrap();
    std::fs::metadata(path).unwrap().len()
}

/// Uploads in parts of 64 MiB, each streamed from the disk.
async fn upload(server: &Server, file: &Path, size: u64) {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    const PART: u64 = 64 << 20;
    let upload = server
        .api(
            reqwest::Method::POST,
            "/v1/buckets/inbox/uploads",
            Some(json!({"path": "big.csv"})),
        )
        .await;
    let id = upload["id"].as_str().unwrap().to_string();
    for number in 1..=size.div_ceil(PART) {
        let mut f = tokio::fs::File::open(file).await.unwrap();
        f.seek(std::io::SeekFrom::Start((number - 1) * PART))
            .await
            .unwrap();
        let stream = futures::stream::unfold(f.take(PART), |mut r| async move {
            let mut buffer = vec![0u8; 1 << 20];
            match r.read(&mut buffer).await {
                Ok(0) => None,
                Ok(n) => {
                    buffer.truncate(n);
                    Some((Ok::<_, std::io::Error>(buffer), r))
                }
                Err(e) => Some((Err(e), r)),
            }
        });
        let response = client()
            .put(format!(
                "{}/v1/buckets/inbox/uploads/{id}/parts/{number}",
                server.url
            ))
            .bearer_auth(TOKEN)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    server
        .api(
            reqwest::Method::POST,
            &format!("/v1/buckets/inbox/uploads/{id}/complete"),
            None,
        )
        .await;
}

/// Imports `rows` rows to a file or to the action; returns (rows/s, peak
/// RSS MiB, file MB).
async fn import(rows: u64, to_action: bool) -> (f64, f64, u64) {
    let server = Server::start();
    let count = Arc::new(AtomicU64::new(0));
    let sink = start_sink(count.clone()).await;
    let conn = server
        .api(
            reqwest::Method::POST,
            "/v1/connections",
            Some(json!({"plugin": "bench", "properties": {"base_url": format!("http://{sink}"), "api_key": "k"}})),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for name in ["inbox", "review"] {
        server
            .api(
                reqwest::Method::POST,
                "/v1/buckets",
                Some(json!({"name": name})),
            )
            .await;
    }
    let to = if to_action {
        json!({"action": {"plugin": "bench", "action": "send", "connection": conn, "batch": {"count": 1000}}})
    } else {
        json!({"file": {"bucket": "review", "path": "big.jsonl"}})
    };
    let flow = server
        .api(
            reqwest::Method::POST,
            "/v1/flows",
            Some(json!({
                "name": "Import",
                "trigger": {"file": {"bucket": "inbox"}},
                "steps": [{"key": "import", "records": {
                    "from": {"file": "{{ trigger.file }}"},
                    "map": {"id": "{{ record.id }}", "name": "{{ record.name }}", "qty": "{{ record.qty | int }}"},
                    "to": to,
                }}],
            })),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    server
        .api(
            reqwest::Method::POST,
            &format!("/v1/flows/{flow}/activate"),
            Some(json!({})),
        )
        .await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("big.csv");
    let size = write_csv(&csv, rows);

    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (pid, peak, stop) = (server.child.id(), peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max((common::rss_mib(pid) * 1024.0) as u64, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    upload(&server, &csv, size).await;
    let started = Instant::now();
    loop {
        let runs = server
            .api(reqwest::Method::GET, &format!("/v1/runs?flow={flow}"), None)
            .await;
        let status = runs["runs"][0]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if status == "succeeded" {
            break;
        }
        assert!(status != "failed", "the import failed: {runs}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    if to_action {
        assert_eq!(
            count.load(Ordering::Relaxed),
            rows,
            "every row reached the sink"
        );
    }
    (
        rows as f64 / elapsed,
        peak.load(Ordering::Relaxed) as f64 / 1024.0,
        size / 1_000_000,
    )
}

#[tokio::main]
async fn main() {
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| which.is_empty() || which.iter().any(|w| w == name);
    let env = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rows = env("SWITCHYARD_BENCH_FILE_ROWS", 1_000_000);
    if wants("file") {
        let (rate, rss, mb) = import(rows, false).await;
        println!(
            "CSV -> mapping -> bucket file: {rows} rows ({mb} MB): {rate:.0} rows/s, peak RSS {rss:.0} MiB"
        );
    }
    if wants("action") {
        let (rate, rss, mb) = import(rows, true).await;
        println!(
            "CSV -> batched action calls (1,000 a batch): {rows} rows ({mb} MB): {rate:.0} rows/s, peak RSS {rss:.0} MiB"
        );
    }
    if wants("big") {
        // A row of the generated file is about 84 bytes.
        let big = env("SWITCHYARD_BENCH_BIG_MB", 1024) * 1_000_000 / 84;
        let (rate, rss, mb) = import(big, true).await;
        println!(
            "big import to the action: {big} rows ({mb} MB): {rate:.0} rows/s, peak RSS {rss:.0} MiB"
        );
    }
}
