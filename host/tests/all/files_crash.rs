//! A large CSV through a record job in the real binary (`switchyard serve`
//! in a child process): uploaded in parts, streamed record by record to a
//! fake's action in batches while the host's resident memory stays under a
//! bound far below the file's size, killed with SIGKILL half way, started
//! again on the same data directory, and finished without any row applied
//! twice or missing.

use std::{
    io::Write,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::{
    files::{Sink, sink_properties},
    support::{TOKEN, client, read, serve::Serve},
};

/// Rows of the file: ~104 MB, more than the memory bound.
const ROWS: u64 = 1_300_000;
/// What the host may hold resident at its peak while it imports the file
/// (about 70 MiB is measured here).
const RSS_BOUND_MIB: u64 = 100;

fn serve(data: &Path, load: &Path) -> Serve {
    let args = ["--allow-network", "127.0.0.2/32", "--token", TOKEN];
    Serve::start(data, load, &args)
}

async fn api(url: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut request = client()
        .request(method, format!("{url}{path}"))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let (status, body) = read(request.send().await.unwrap()).await;
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// Writes the CSV: `id,name,qty,note`, about 80 bytes a row.
fn write_csv(path: &Path) -> u64 {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    writeln!(out, "id,name,qty,note").unwrap();
    for i in 0..ROWS {
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

/// Uploads the file in parts of 16 MiB, each streamed from the disk.
async fn upload(url: &str, file: &Path, size: u64) {
    const PART: u64 = 16 << 20;
    let upload = api(
        url,
        reqwest::Method::POST,
        "/v1/buckets/inbox/uploads",
        Some(json!({"path": "big.csv"})),
    )
    .await;
    let id = upload["id"].as_str().unwrap();
    for number in 1..=size.div_ceil(PART) {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let mut f = tokio::fs::File::open(file).await.unwrap();
        f.seek(std::io::SeekFrom::Start((number - 1) * PART))
            .await
            .unwrap();
        let mut part = Vec::new();
        f.take(PART).read_to_end(&mut part).await.unwrap();
        let response = client()
            .put(format!(
                "{url}/v1/buckets/inbox/uploads/{id}/parts/{number}"
            ))
            .bearer_auth(TOKEN)
            .body(part)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let object = api(
        url,
        reqwest::Method::POST,
        &format!("/v1/buckets/inbox/uploads/{id}/complete"),
        None,
    )
    .await;
    assert_eq!(object["size"], json!(size));
}

/// The resident memory of a process, in KiB (Linux).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Samples a process's RSS every 50 ms into `peak` until `stop`.
fn watch_rss(pid: u32, peak: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if let Some(kib) = rss_kib(pid) {
                peak.fetch_max(kib, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_csv_imports_in_bounded_memory_and_resumes_after_sigkill_without_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let (data, load) = (dir.path().join("data"), dir.path().join("connectors"));
    std::fs::create_dir(&load).unwrap();
    std::fs::copy(artifacts::FIXTURE_BENCH, load.join("bench.wasm")).unwrap();
    let csv = dir.path().join("big.csv");
    let size = write_csv(&csv);
    let fake = Sink::start(0, 1).await;

    let mut server = serve(&data, &load);
    let url = server.url.clone();
    let conn = api(
        &url,
        reqwest::Method::POST,
        "/v1/connections",
        Some(json!({"plugin": "bench", "properties": sink_properties(&fake)})),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    api(
        &url,
        reqwest::Method::POST,
        "/v1/buckets",
        Some(json!({"name": "inbox"})),
    )
    .await;
    let flow = api(
        &url,
        reqwest::Method::POST,
        "/v1/flows",
        Some(json!({
            "name": "Big import",
            "trigger": {"file": {"bucket": "inbox", "glob": "*.csv"}},
            "steps": [{"key": "import", "retry": {"initial_delay_ms": 100, "max_delay_ms": 500}, "records": {
                "from": {"file": "{{ trigger.file }}"},
                "map": {"id": "{{ record.id }}", "qty": "{{ record.qty | int }}"},
                "to": {"action": {"plugin": "bench", "action": "send", "connection": conn,
                                  "batch": {"count": 1000}}},
            }}],
        })),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    api(
        &url,
        reqwest::Method::POST,
        &format!("/v1/flows/{flow}/activate"),
        Some(json!({})),
    )
    .await;

    let peak = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_rss(server.child.id(), peak.clone(), stop.clone());
    let started = Instant::now();
    upload(&url, &csv, size).await;

    // Killed once about half the rows reached the API.
    let deadline = Instant::now() + Duration::from_secs(300);
    while (fake.lock().received.len() as u64) < ROWS / 2 {
        assert!(Instant::now() < deadline, "the import did not get half way");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let before = fake.lock().received.len();
    let first_peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "killed after {:?} with {before} of {ROWS} rows applied; peak RSS {} MiB",
        started.elapsed(),
        first_peak >> 10
    );
    assert!((before as u64) < ROWS, "killed before the end");

    // Started again: the job resumes from its last checkpoint.
    let server = serve(&data, &load);
    let url = server.url.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = watch_rss(server.child.id(), peak.clone(), stop.clone());
    let deadline = Instant::now() + Duration::from_secs(300);
    let run = loop {
        let runs = api(
            &url,
            reqwest::Method::GET,
            &format!("/v1/runs?flow={flow}"),
            None,
        )
        .await;
        let run = runs["runs"][0].clone();
        if ["succeeded", "failed"].contains(&run["status"].as_str().unwrap_or_default()) {
            break run;
        }
        assert!(
            Instant::now() < deadline,
            "the import did not finish: {run}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    stop.store(true, Ordering::Relaxed);
    watcher.join().unwrap();
    let peak_mib = peak.load(Ordering::Relaxed) >> 10;
    eprintln!(
        "{ROWS} rows ({} MB) in {:?}; peak RSS {peak_mib} MiB",
        size / 1_000_000,
        started.elapsed()
    );
    assert_eq!(run["status"], json!("succeeded"), "{run}");

    let received = fake.lock().received.clone();
    assert_eq!(received.len() as u64, ROWS, "every row reached the API");
    let twice: Vec<_> = received.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(twice.is_empty(), "rows applied twice: {twice:?}");
    // A batch in flight at the kill is sent again with the same key and
    // body (the API answers it from its idempotency store).
    let refused = fake.requests().iter().filter(|r| r.status == 422).count();
    assert_eq!(refused, 0, "a key was reused for another batch");
    let job = api(
        &url,
        reqwest::Method::GET,
        &format!("/v1/runs/{}/jobs/import", run["id"].as_str().unwrap()),
        None,
    )
    .await;
    assert_eq!(job["records"]["good"], json!(ROWS), "{job}");
    assert!(
        peak_mib < RSS_BOUND_MIB,
        "the host held {peak_mib} MiB for a {} MB file",
        size / 1_000_000
    );
}
