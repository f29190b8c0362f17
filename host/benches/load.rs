//! End-to-end load on loopback against the real `switchyard serve` binary:
//! webhook ingest with durable acknowledgement (sustained, and at fixed
//! offered rates), flow runs end to end (delivery -> condition -> one action
//! making one HTTP call to a local fake), and polling at scale (many active
//! polling flows: lag and CPU). Bounded in count and time; prints figures.
//! The connector is the `bench` fixture (no rate limit of its own, unlike the
//! example connector's 10 requests/s), so the host is what is measured.
//!
//! `cargo bench -p switchyard --bench load [-- ingest|ingest-entity|e2e|loop|polling|topics]`
//! (all of them by default). `SWITCHYARD_BENCH_POLL_FLOWS` (default 10000) and
//! `SWITCHYARD_BENCH_POLL_SECS` (default 70) size the polling run.
//! `SWITCHYARD_BENCH_WARM=1` makes the bench connection opt in to warm
//! instances (calls served by an instance kept from an earlier call).
//!
//! `-- postgres` (only when named): one, two and three hosts on one
//! PostgreSQL database (`SWITCHYARD_BENCH_POSTGRES`, a server URL whose user
//! may create databases), deliveries round-robin, runs/s end to end; then
//! the latency of one claim statement against a queue of 10,000 runs.

use std::{
    collections::HashMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

mod common;
// The integration tests read `/metrics` the same way.
#[allow(dead_code, reason = "only the tests read single samples")]
#[path = "../tests/all/support/metrics.rs"]
mod metrics;

use axum::{Json, Router, extract::State, routing::get};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const TOKEN: &str = "benchmark-token-0123456789";
const SECRET: &str = "bench-webhook-secret";

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
    fn start(extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let load = dir.path().join("connectors");
        std::fs::create_dir(&load).unwrap();
        std::fs::copy(switchyard_tests::FIXTURE_BENCH, load.join("bench.wasm")).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--allow-network",
                "127.0.0.2/32",
            ])
            // The host's capacity is measured, not the public endpoints'
            // rate limits (one sender, one hook, thousands a second).
            .args(["--hook-rate", "0", "--source-rate", "0"])
            .args(["--token", TOKEN, "--data-dir"])
            .arg(dir.path().join("data"))
            .arg("--load-dir")
            .arg(&load)
            .args(extra)
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

    /// CPU seconds (user + system) the server process used so far.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    fn rss_mib(&self) -> f64 {
        common::rss_mib(self.child.id())
    }

    async fn api(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> Value {
        let response = client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }
}

/// The local fake: records when each event's action arrived.
#[derive(Clone, Default)]
struct Fake {
    arrivals: Arc<Mutex<HashMap<String, Instant>>>,
    polls: Arc<AtomicU64>,
}

async fn start_fake(fake: Fake) -> SocketAddr {
    let router = Router::new()
        .route(
            "/items",
            get(|State(f): State<Fake>| async move {
                f.polls.fetch_add(1, Ordering::Relaxed);
                Json(json!({"items": [], "next": null}))
            })
            .post(
                |State(f): State<Fake>, Json(body): Json<Value>| async move {
                    let event = body["event"].as_str().unwrap_or_default().to_string();
                    f.arrivals
                        .lock()
                        .unwrap()
                        .entry(event)
                        .or_insert_with(Instant::now);
                    (axum::http::StatusCode::CREATED, Json(json!({"id": "item"})))
                },
            ),
        )
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A connection to the fake and an active webhook flow; returns the hook URL.
async fn webhook_flow(
    server: &Server,
    client: &reqwest::Client,
    fake: SocketAddr,
    condition: &str,
    entity: Option<Value>,
) -> String {
    let conn = connection(server, client, fake).await;
    let mut definition = json!({
        "name": "bench",
        "lane": "fast",
        "trigger": {"plugin": "bench", "trigger": "event", "connection": conn},
        "conditions": [condition],
        "steps": [{"key": "create", "plugin": "bench", "action": "send", "connection": conn,
                   "input": {"event": "{{ trigger.id }}", "sku": "{{ trigger.sku }}"}}],
    });
    if let Some(entity) = entity {
        definition["entity"] = entity;
    }
    let flow = server
        .api(client, reqwest::Method::POST, "/v1/flows", definition)
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    server
        .api(
            client,
            reqwest::Method::POST,
            &format!("/v1/flows/{flow}/activate"),
            json!({}),
        )
        .await["webhook_url"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The bench connector's connection; with `SWITCHYARD_BENCH_WARM=1` it
/// opts in to warm instances.
async fn connection(server: &Server, client: &reqwest::Client, fake: SocketAddr) -> String {
    let warm = std::env::var("SWITCHYARD_BENCH_WARM").is_ok_and(|v| v == "1");
    if warm {
        println!("(the connection opts in to warm instances)");
    }
    server
        .api(client, reqwest::Method::POST, "/v1/connections", json!({
            "plugin": "bench",
            "properties": {"base_url": format!("http://{fake}"), "api_key": "k", "webhook_secret": SECRET},
            "warm_instances": warm,
        }))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn delivery(n: usize, kind: &str) -> (String, Vec<u8>, String) {
    let id = format!("evt-{n}");
    let body =
        serde_json::to_vec(&json!({"id": id, "type": kind, "sku": "SKU-1", "qty": 1})).unwrap();
    let signature = sign(&body);
    (id, body, signature)
}

async fn send(client: &reqwest::Client, url: &str, n: usize, kind: &str) -> bool {
    let (id, body, signature) = delivery(n, kind);
    client
        .post(url)
        .header("x-event-id", id)
        .header("x-signature", signature)
        .body(body)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Closed loop: `workers` senders for `secs`; returns (count, latencies).
async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    workers: usize,
    secs: u64,
    kind: &'static str,
    start_at: usize,
) -> (usize, Vec<Duration>, Duration) {
    let next = Arc::new(AtomicUsize::new(start_at));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.to_string(), next.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let t = Instant::now();
                    assert!(send(&client, &url, n, kind).await, "delivery refused");
                    latencies.push(t.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    all.sort();
    (all.len(), all, elapsed)
}

/// Open loop at `rate`/s for `secs`: latency from the intended send time, so
/// a slow answer is not hidden by the sender waiting for it.
async fn open_loop(
    client: &reqwest::Client,
    url: &str,
    kind: &'static str,
    rate: u64,
    secs: u64,
    start_at: usize,
) -> (usize, Vec<Duration>, Instant, usize) {
    let total = (rate * secs) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let started = Instant::now();
    let failed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(total);
    // At most 1,024 deliveries in flight (as many connections): beyond that
    // the sender waits, and the wait counts in the latency.
    let in_flight = Arc::new(tokio::sync::Semaphore::new(1024));
    for i in 0..total {
        let intended = started + interval * i as u32;
        tokio::time::sleep_until(intended.into()).await;
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        let (client, url, failed) = (client.clone(), url.to_string(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            if !send(&client, &url, start_at + i, kind).await {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            intended.elapsed()
        }));
    }
    let mut latencies = Vec::with_capacity(total);
    for t in tasks {
        latencies.push(t.await.unwrap());
    }
    latencies.sort();
    (total, latencies, started, failed.load(Ordering::Relaxed))
}

/// `entity`: the flow keeps per-entity state, each delivery a new entity
/// (the costliest case: a state read and a state write per event).
async fn ingest(entity: bool) {
    if entity {
        println!("## Webhook ingest with entity state (durable acknowledgement)");
    } else {
        println!("## Webhook ingest (durable acknowledgement)");
    }
    let server = Server::start(&[]);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let fake = start_fake(Fake::default()).await;
    // The condition never holds: runs are recorded as skipped, no action runs.
    let entity = entity
        .then(|| json!({"type": "item", "key": "{{ trigger.id }}", "fields": ["qty", "type"]}));
    let url = webhook_flow(&server, &client, fake, "trigger.type == \"packed\"", entity).await;
    closed_loop(&client, &url, 16, 2, "bench-skip", 0).await; // warm-up
    let (n, lat, elapsed) = closed_loop(&client, &url, 64, 10, "bench-skip", 1_000_000).await;
    println!(
        "sustained, 64 connections, 10 s: {n} deliveries, {:.0}/s, p50 {}, p99 {}",
        n as f64 / elapsed.as_secs_f64(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99))
    );
    for (i, rate) in [500u64, 1_000, 5_000].into_iter().enumerate() {
        let (n, lat, _, failed) = open_loop(
            &client,
            &url,
            "bench-skip",
            rate,
            10,
            2_000_000 + i * 100_000,
        )
        .await;
        println!(
            "offered {rate}/s for 10 s: {n} sent, {failed} failed, ack p50 {}, p99 {}, max {}",
            ms(percentile(&lat, 0.50)),
            ms(percentile(&lat, 0.99)),
            ms(*lat.last().unwrap())
        );
    }
    println!("server RSS after ingest: {:.1} MiB", server.rss_mib());
}

async fn end_to_end() {
    println!("## End to end: delivery -> condition -> one action with one HTTP call");
    // One connection carries every run here: let 64 use it at once (the
    // default, 16, protects a real third party).
    let server = Server::start(&["--connection-concurrency", "64"]);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let fake = Fake::default();
    let addr = start_fake(fake.clone()).await;
    let url = webhook_flow(&server, &client, addr, "trigger.type == \"packed\"", None).await;
    // 60,000 runs last ~10 s here: 20,000 (~3 s) swung by a third from
    // round to round of one binary.
    let total: usize = std::env::var("SWITCHYARD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60_000);
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (client, url, next, sent_at) =
                (client.clone(), url.clone(), next.clone(), sent_at.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    sent_at
                        .lock()
                        .unwrap()
                        .insert(format!("evt-{n}"), Instant::now());
                    assert!(send(&client, &url, n, "packed").await, "delivery refused");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(300);
    while fake.arrivals.lock().unwrap().len() < total {
        let done = fake.arrivals.lock().unwrap().len();
        assert!(
            Instant::now() < deadline,
            "runs did not complete: {done} of {total}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = fake.arrivals.lock().unwrap().clone();
    let last = arrivals.values().max().unwrap();
    let elapsed = last.duration_since(started);
    let mut lat: Vec<Duration> = {
        let sent_at = sent_at.lock().unwrap();
        arrivals
            .iter()
            .map(|(id, at)| at.duration_since(sent_at[id]))
            .collect()
    };
    lat.sort();
    println!(
        "{total} runs: all acknowledged in {:.2} s, all actions done in {:.2} s: {:.0} runs/s; delivery -> action p50 {}, p99 {}",
        acked.as_secs_f64(),
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        ms(percentile(&lat, 0.50)),
        ms(percentile(&lat, 0.99)),
    );
    println!(
        "server CPU {:.1} s, RSS {:.1} MiB",
        server.cpu_seconds(),
        server.rss_mib()
    );

    // Below capacity the latency is the engine's, not a backlog's: pace the
    // deliveries and time each from its intended send to its action's call.
    for (i, rate) in [250u64, 500, 1_000].into_iter().enumerate() {
        let first = 1_000_000 + i * 100_000;
        let (n, _, started, failed) = open_loop(&client, &url, "packed", rate, 10, first).await;
        assert_eq!(failed, 0, "deliveries refused at {rate}/s");
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let ids: Vec<String> = (first..first + n).map(|k| format!("evt-{k}")).collect();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lat = loop {
            let arrivals = fake.arrivals.lock().unwrap().clone();
            let lat: Vec<Duration> = ids
                .iter()
                .enumerate()
                .filter_map(|(k, id)| {
                    let at = arrivals.get(id)?;
                    Some(at.duration_since(started + interval * k as u32))
                })
                .collect();
            if lat.len() == n {
                break lat;
            }
            assert!(
                Instant::now() < deadline,
                "paced runs did not complete: {} of {n}",
                lat.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        lat.sort();
        println!(
            "offered {rate} runs/s for 10 s: delivery -> action p50 {}, p99 {}, max {}",
            ms(percentile(&lat, 0.50)),
            ms(percentile(&lat, 0.99)),
            ms(*lat.last().unwrap())
        );
    }
}

/// A flow whose run calls the action once per item of a ten-item loop:
/// the cost of the interpreter, per-item records and checkpoints.
async fn loop_of_ten() {
    println!("## End to end with a loop: delivery -> for_each over 10 items -> one action each");
    let server = Server::start(&["--connection-concurrency", "64"]);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let fake = Fake::default();
    let addr = start_fake(fake.clone()).await;
    let conn = connection(&server, &client, addr).await;
    let flow = server
        .api(
            &client,
            reqwest::Method::POST,
            "/v1/flows",
            json!({
                "name": "bench loop",
                "lane": "fast",
                "trigger": {"plugin": "bench", "trigger": "event", "connection": conn},
                "steps": [{"key": "lines", "for_each": {
                    "items": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
                    "steps": [{"key": "create", "plugin": "bench", "action": "send", "connection": conn,
                               "input": {"event": "{{ trigger.id }}-{{ item }}", "sku": "{{ trigger.sku }}"}}],
                }}],
            }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let url = server
        .api(
            &client,
            reqwest::Method::POST,
            &format!("/v1/flows/{flow}/activate"),
            json!({}),
        )
        .await["webhook_url"]
        .as_str()
        .unwrap()
        .to_string();
    let total: usize = std::env::var("SWITCHYARD_BENCH_LOOP_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (client, url, next) = (client.clone(), url.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    assert!(send(&client, &url, n, "packed").await, "delivery refused");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while fake.arrivals.lock().unwrap().len() < total * 10 {
        let done = fake.arrivals.lock().unwrap().len();
        assert!(
            Instant::now() < deadline,
            "loop runs did not complete: {done} of {} actions",
            total * 10
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = fake
        .arrivals
        .lock()
        .unwrap()
        .values()
        .max()
        .unwrap()
        .duration_since(started);
    println!(
        "{total} runs of 10 items: all done in {:.2} s: {:.0} runs/s, {:.0} item actions/s; server CPU {:.1} s ({:.2} ms per run)",
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        (total * 10) as f64 / elapsed.as_secs_f64(),
        server.cpu_seconds(),
        server.cpu_seconds() * 1e3 / total as f64,
    );
}

async fn polling() {
    let flows: usize = std::env::var("SWITCHYARD_BENCH_POLL_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let secs: u64 = std::env::var("SWITCHYARD_BENCH_POLL_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(70);
    println!("## Polling: {flows} active flows, 60 s interval, observed {secs} s");
    let server = Server::start(&[]);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let fake = Fake::default();
    let addr = start_fake(fake.clone()).await;
    let conn = connection(&server, &client, addr).await;
    let setup = Instant::now();
    let created = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (client, conn, created, url) = (client.clone(), conn.clone(), created.clone(), server.url.clone());
            tokio::spawn(async move {
                loop {
                    let n = created.fetch_add(1, Ordering::Relaxed);
                    if n >= flows {
                        break;
                    }
                    let flow: Value = client
                        .post(format!("{url}/v1/flows"))
                        .bearer_auth(TOKEN)
                        .json(&json!({
                            "name": format!("poll-{n}"),
                            "trigger": {"plugin": "bench", "trigger": "changes", "connection": conn, "interval_secs": 60},
                            "steps": [{"key": "send", "plugin": "bench", "action": "send", "connection": conn, "input": {"id": "{{ trigger.id }}"}}],
                        }))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap();
                    let id = flow["id"].as_str().unwrap();
                    let r = client
                        .post(format!("{url}/v1/flows/{id}/activate"))
                        .bearer_auth(TOKEN)
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "published and activated {flows} flows in {:.1} s",
        setup.elapsed().as_secs_f64()
    );
    let polls_before = fake.polls.load(Ordering::Relaxed);
    let cpu_before = server.cpu_seconds();
    let observed = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let cpu = server.cpu_seconds() - cpu_before;
    let polls = fake.polls.load(Ordering::Relaxed) - polls_before;
    let metrics = metrics::scrape(&client, &server.url, TOKEN).await;
    let (p50, p99, max_bucket) = histogram_quantiles(&metrics, "switchyard_poll_lag_seconds");
    println!(
        "{polls} polls in {:.0} s ({:.0}/s); server CPU {:.1} s = {:.0}% of one core; poll lag p50 <= {p50}, p99 <= {p99} (largest bucket used: {max_bucket}); RSS {:.1} MiB",
        observed.elapsed().as_secs_f64(),
        polls as f64 / observed.elapsed().as_secs_f64(),
        cpu,
        cpu / observed.elapsed().as_secs_f64() * 100.0,
        server.rss_mib()
    );
}

/// Upper bounds of the p50 and p99 buckets of a Prometheus histogram.
fn histogram_quantiles(text: &str, name: &str) -> (String, String, String) {
    let mut buckets: Vec<(f64, u64)> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{name}_bucket")))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let count: u64 = l.rsplit(' ').next()?.parse().ok()?;
            Some((
                if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                },
                count,
            ))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
    let total = buckets.last().map_or(0, |b| b.1);
    let find = |q: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c as f64 >= q * total as f64)
            .map_or("n/a".to_string(), |(le, _)| format!("{:.3} s", le))
    };
    let max = buckets
        .windows(2)
        .filter(|w| w[1].1 > w[0].1)
        .map(|w| format!("{:.3} s", w[1].0))
        .next_back()
        .unwrap_or_else(|| "n/a".into());
    (find(0.5), find(0.99), max)
}

/// Topics and streams: appends, reading to one reader and to four, and the
/// time from a publish to a long-polling reader.
async fn topics() {
    println!("## Topics and streams");
    let server = Server::start(&[]);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(64)
        .build()
        .unwrap();
    server
        .api(
            &client,
            reqwest::Method::POST,
            "/v1/topics",
            json!({"name": "bench", "partitions": 4}),
        )
        .await;
    // Appends: 16 publishers, each request 100 records (and then 1).
    for per_request in [100usize, 1] {
        let next = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + Duration::from_secs(10);
        let started = Instant::now();
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (client, url, next) = (client.clone(), server.url.clone(), next.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let first = next.fetch_add(per_request, Ordering::Relaxed);
                        let records: Vec<Value> = (first..first + per_request)
                            .map(|n| json!({"key": format!("k{}", n % 10_000), "type": "t", "data": {"n": n}}))
                            .collect();
                        let response = client
                            .post(format!("{url}/v1/topics/bench/records"))
                            .bearer_auth(TOKEN)
                            .json(&json!({"records": records}))
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(response.status(), 201);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let n = next.load(Ordering::Relaxed);
        println!(
            "appends, 16 publishers, {per_request} record(s) per request: {n} records in {:.1} s, {:.0} records/s",
            started.elapsed().as_secs_f64(),
            n as f64 / started.elapsed().as_secs_f64()
        );
    }
    // Reading everything published so far: one reader, then four.
    for readers in [1usize, 4] {
        let stream = server
            .api(
                &client,
                reqwest::Method::POST,
                "/v1/streams",
                json!({"topic": "bench", "lease_ms": 60_000}),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_string();
        let started = Instant::now();
        let tasks: Vec<_> = (0..readers)
            .map(|r| {
                let (client, url, stream) = (client.clone(), server.url.clone(), stream.clone());
                tokio::spawn(async move {
                    let mut count = 0usize;
                    let mut cursor: Option<String> = None;
                    let mut empty = 0;
                    // Every reader first asks once, so shares settle.
                    loop {
                        let mut request = client
                            .get(format!("{url}/v1/streams/{stream}/records"))
                            .bearer_auth(TOKEN)
                            .query(&[("reader", format!("r{r}")), ("limit", "1000".into())]);
                        if let Some(cursor) = &cursor {
                            request = request.query(&[("cursor", cursor)]);
                        }
                        let batch: Value = request.send().await.unwrap().json().await.unwrap();
                        let got = batch["records"].as_array().map_or(0, Vec::len);
                        count += got;
                        cursor = batch["cursor"].as_str().map(str::to_string);
                        if got == 0 {
                            empty += 1;
                            if empty >= 3 {
                                return count;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        } else {
                            empty = 0;
                            client
                                .post(format!("{url}/v1/streams/{stream}/commit"))
                                .bearer_auth(TOKEN)
                                .json(&json!({"reader": format!("r{r}"), "cursor": cursor}))
                                .send()
                                .await
                                .unwrap();
                        }
                    }
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "stream to {readers} reader(s), batches of 1000 committed: {total} records in {secs:.1} s, {:.0} records/s",
            total as f64 / secs
        );
    }
    // Publish -> reader: one record every 10 ms, a reader long-polling.
    let stream = server
        .api(
            &client,
            reqwest::Method::POST,
            "/v1/streams",
            json!({"topic": "bench", "start": "latest", "partitions": 1}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let origin = Instant::now();
    let reader = {
        let (client, url) = (client.clone(), server.url.clone());
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut cursor: Option<String> = None;
            while latencies.len() < 500 {
                let mut request = client
                    .get(format!("{url}/v1/streams/{stream}/records"))
                    .bearer_auth(TOKEN)
                    .query(&[("reader", "lat"), ("wait_ms", "5000"), ("limit", "100")]);
                if let Some(cursor) = &cursor {
                    request = request.query(&[("cursor", cursor)]);
                }
                let batch: Value = request.send().await.unwrap().json().await.unwrap();
                let now = origin.elapsed().as_micros() as u64;
                for record in batch["records"].as_array().into_iter().flatten() {
                    let sent = record["data"]["sent_us"].as_u64().unwrap();
                    latencies.push(Duration::from_micros(now - sent));
                }
                cursor = batch["cursor"].as_str().map(str::to_string);
            }
            latencies
        })
    };
    // Let the reader's first long poll begin.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..500u64 {
        tokio::time::sleep_until((origin + Duration::from_millis(200 + 10 * i)).into()).await;
        let sent_us = origin.elapsed().as_micros() as u64;
        server
            .api(&client, reqwest::Method::POST, "/v1/topics/bench/records",
                 json!({"records": [{"key": format!("lat{i}"), "type": "t", "data": {"sent_us": sent_us}}]}))
            .await;
    }
    let mut latencies = reader.await.unwrap();
    latencies.sort();
    println!(
        "publish -> long-polling reader, 100/s: p50 {}, p99 {}, max {}",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(*latencies.last().unwrap())
    );
    println!(
        "server RSS: {:.1} MiB, CPU {:.1} s",
        server.rss_mib(),
        server.cpu_seconds()
    );
}

/// Several hosts on one PostgreSQL database: the same end-to-end load as
/// `e2e`, its deliveries sent round-robin to the hosts.
async fn postgres() {
    let Ok(server) = std::env::var("SWITCHYARD_BENCH_POSTGRES") else {
        println!("## PostgreSQL: set SWITCHYARD_BENCH_POSTGRES to a server URL");
        return;
    };
    println!("## End to end on PostgreSQL: hosts on one database, deliveries round-robin");
    let total: usize = std::env::var("SWITCHYARD_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    for hosts in [1usize, 2, 3] {
        let database = create_database(&server).await;
        let servers: Vec<Server> = (0..hosts)
            .map(|i| {
                let node = format!("bench-{i}");
                Server::start(&[
                    "--store",
                    &database,
                    "--node",
                    &node,
                    "--master-key",
                    MASTER_KEY,
                    "--connection-concurrency",
                    "64",
                ])
            })
            .collect();
        let fake = Fake::default();
        let addr = start_fake(fake.clone()).await;
        let hook = webhook_flow(
            &servers[0],
            &client,
            addr,
            "trigger.type == \"packed\"",
            None,
        )
        .await;
        let path = hook[hook.find("/hooks/").unwrap()..].to_string();
        let urls: Arc<Vec<String>> =
            Arc::new(servers.iter().map(|s| format!("{}{path}", s.url)).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (client, urls, next) = (client.clone(), urls.clone(), next.clone());
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= total {
                            break;
                        }
                        let url = &urls[n % urls.len()];
                        assert!(send(&client, url, n, "packed").await, "delivery refused");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let acked = started.elapsed();
        let deadline = Instant::now() + Duration::from_secs(600);
        while fake.arrivals.lock().unwrap().len() < total {
            let done = fake.arrivals.lock().unwrap().len();
            assert!(
                Instant::now() < deadline,
                "runs did not complete: {done} of {total}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let last = *fake.arrivals.lock().unwrap().values().max().unwrap();
        let elapsed = last.duration_since(started);
        let cpu: f64 = servers.iter().map(Server::cpu_seconds).sum();
        println!(
            "{hosts} host(s): {total} runs: acknowledged in {:.2} s, done in {:.2} s: {:.0} runs/s; hosts' CPU {:.1} s",
            acked.as_secs_f64(),
            elapsed.as_secs_f64(),
            total as f64 / elapsed.as_secs_f64(),
            cpu,
        );
    }
    claim_latency(&server).await;
}

/// The master key the benchmark's hosts of one database share.
const MASTER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// A new database on `server`; returns its URL.
async fn create_database(server: &str) -> String {
    let (client, connection) = tokio_postgres::connect(server, tokio_postgres::NoTls)
        .await
        .expect("the benchmark's PostgreSQL server");
    let driver = tokio::spawn(connection);
    let name = format!("bench_{}", std::process::id() as u64 * 1000 + rand_suffix());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;
    format!("{}/{name}", server.rsplit_once('/').unwrap().0)
}

fn rand_suffix() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// One claim statement (`visit_due`, claiming 1 or 16 due runs) against
/// a queue of 10,000 runs, timed in this process: p50 and p99 of 500.
async fn claim_latency(server: &str) {
    use switchyard::store::{
        Along, Lane, RunRecord, RunStore, Visit,
        postgres::{PgSettings, PgStore},
    };
    let database = create_database(server).await;
    let store = PgStore::open(PgSettings {
        url: database,
        node: "bench".into(),
        lease: Duration::from_secs(30),
        connections: 4,
        files_dir: std::env::temp_dir().join("switchyard-pg-files"),
    })
    .unwrap();
    for batch in 0..20 {
        let runs: Vec<RunRecord> = (0..500)
            .map(|n| {
                let id = format!("run-{batch}-{n}");
                serde_json::from_value(json!({
                    "id": id, "tenant": "t", "flow_id": format!("flow-{}", n % 10),
                    "flow_version": 1, "source": "api", "event": {"id": id, "payload": {}},
                    "lane": "normal", "status": "queued", "steps": [], "error": null,
                    "due_at": 1, "created_at": 1, "updated_at": 1, "finished_at": null,
                }))
                .unwrap()
            })
            .collect();
        store.create(&runs, &[], &[], Along::Nothing).unwrap();
    }
    for size in [1usize, 16] {
        let mut lat = Vec::with_capacity(500);
        for _ in 0..500 {
            let t = Instant::now();
            let mut got = 0;
            store
                .visit_due(Lane::Normal, u64::MAX / 2, size, size, &mut |_| {
                    got += 1;
                    Visit::Start
                })
                .unwrap();
            lat.push(t.elapsed());
            assert_eq!(got, size);
        }
        lat.sort();
        println!(
            "claim of {size} due run(s) from a queue of 10,000: p50 {}, p99 {}",
            ms(percentile(&lat, 0.50)),
            ms(percentile(&lat, 0.99)),
        );
    }
}

fn main() {
    let selected: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| selected.is_empty() || selected.iter().any(|s| s == name);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if wants("ingest") {
            ingest(false).await;
        }
        if wants("ingest-entity") {
            ingest(true).await;
        }
        if wants("e2e") {
            end_to_end().await;
        }
        if wants("loop") {
            loop_of_ten().await;
        }
        if wants("polling") {
            polling().await;
        }
        if wants("topics") {
            topics().await;
        }
        // Needs a PostgreSQL server: only when asked for by name.
        if selected.iter().any(|s| s == "postgres") {
            postgres().await;
        }
    });
}
