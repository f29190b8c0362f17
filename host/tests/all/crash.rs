//! The crash tests: `switchyard serve` is killed with SIGKILL in the middle
//! of a load of webhook deliveries (once, and five times at random points)
//! and started again on the same data directory. Every delivery that was
//! acknowledged must reach the fake's action exactly once (checked by
//! idempotency key), and none twice. A durable delay survives a kill too,
//! and so does a run started through the API and killed at once after the
//! answer, and a webhook delivery acknowledged (or deferred by its plugin)
//! and killed at once after the answer.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::{
    fake_items::{FakeItems, sign},
    support::{TOKEN, client, read, serve::Serve},
};

fn serve(data_dir: &Path, load_dir: &Path) -> Serve {
    let args = ["--allow-network", "127.0.0.2/32", "--token", TOKEN];
    Serve::start(data_dir, load_dir, &args)
}

async fn api(url: &str, method: reqwest::Method, path: &str, body: Value) -> Value {
    let response = client()
        .request(method, format!("{url}{path}"))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// A temporary directory with an empty data directory and a connectors
/// directory holding the one component `wasm` as `name.wasm`.
fn host_dirs(
    wasm: &str,
    name: &str,
) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (data, load) = (dir.path().join("data"), dir.path().join("connectors"));
    std::fs::create_dir(&load).unwrap();
    std::fs::copy(wasm, load.join(format!("{name}.wasm"))).unwrap();
    (dir, data, load)
}

/// Creates a connection of `plugin` with `properties`; returns its id.
async fn connection(url: &str, plugin: &str, properties: Value) -> String {
    let body = json!({"plugin": plugin, "properties": properties});
    let created = api(url, reqwest::Method::POST, "/v1/connections", body).await;
    created["id"].as_str().unwrap().to_string()
}

/// Creates the flow `definition`; returns its id.
async fn flow(url: &str, definition: Value) -> String {
    let created = api(url, reqwest::Method::POST, "/v1/flows", definition).await;
    created["id"].as_str().unwrap().to_string()
}

/// Activates `flow`; returns the path of its hook (`/hooks/…`).
async fn activate(url: &str, flow: &str) -> String {
    let path = format!("/v1/flows/{flow}/activate");
    let active = api(url, reqwest::Method::POST, &path, json!({})).await;
    let hook = active["webhook_url"].as_str().unwrap();
    hook[hook.find("/hooks/").unwrap()..].to_string()
}

/// Starts a run of `flow` by hand with `event` and does not wait for it;
/// returns the run's id.
async fn run_by_hand(url: &str, flow: &str, event: Value) -> String {
    let path = format!("/v1/flows/{flow}/run?wait_ms=0");
    let run = api(url, reqwest::Method::POST, &path, event).await;
    run["id"].as_str().unwrap().to_string()
}

/// The run `id` as the API shows it.
async fn run(url: &str, id: &str) -> Value {
    api(
        url,
        reqwest::Method::GET,
        &format!("/v1/runs/{id}"),
        json!({}),
    )
    .await
}

/// How many deliveries the load offers in all.
const TOTAL: usize = 600;

/// 32 senders posting signed deliveries to `url`, numbered from `next`,
/// until `total` are sent or the host is gone; each acknowledged event id
/// goes into `acked`.
fn send_load(
    url: &str,
    acked: &Arc<Mutex<Vec<String>>>,
    next: &Arc<AtomicUsize>,
    total: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..32)
        .map(|_| {
            let (acked, next, url) = (acked.clone(), next.clone(), url.to_string());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    // Only a safety net: the kill closes the connections.
                    .timeout(Duration::from_secs(30))
                    .build()
                    .unwrap();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= total {
                        break;
                    }
                    let id = format!("evt-{n}");
                    let body = serde_json::to_vec(&json!({"id": id, "type": "packed"})).unwrap();
                    let response = client
                        .post(&url)
                        .header("x-event-id", &id)
                        .header("x-signature", sign(&body))
                        .body(body)
                        .send()
                        .await;
                    match response {
                        Ok(r) if r.status().is_success() => acked.lock().unwrap().push(id),
                        Ok(r) => panic!("delivery {id} refused: {}", r.status()),
                        // The host is gone: this one was never acknowledged.
                        Err(_) => break,
                    }
                }
            })
        })
        .collect()
}

/// Waits until no run of `flow` is queued, running or waiting for a retry.
async fn wait_until_drained(url: &str, flow: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut unfinished = 0;
        for status in ["queued", "retrying"] {
            let path = format!("/v1/runs?flow={flow}&status={status}");
            let runs = api(url, reqwest::Method::GET, &path, json!({})).await;
            unfinished += runs["runs"].as_array().unwrap().len();
        }
        if unfinished == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A host on `data` with the example connector, a connection to `fake` and
/// an active webhook flow whose one step creates an item per delivery
/// (retried quickly); returns the host, the flow's id and its hook's path.
async fn item_flow(data: &Path, load: &Path, fake: &FakeItems) -> (Serve, String, String) {
    let server = serve(data, load);
    let conn = connection(&server.url, "example", fake.properties()).await;
    let flow = flow(&server.url, json!({
        "name": "Every delivery creates an item",
        "trigger": {"plugin": "example", "trigger": "item-event", "connection": conn},
        "steps": [{"key": "create", "plugin": "example", "action": "create-item", "connection": conn,
                   "input": {"event": "{{ trigger.id }}"}, "retry": {"initial_delay_ms": 100, "max_delay_ms": 500}}],
    }))
    .await;
    let path = activate(&server.url, &flow).await;
    (server, flow, path)
}

/// Waits until `acked` holds `count` ids, then kills the host (SIGKILL) and
/// waits for its senders, which stop when the connection breaks.
async fn kill_after(
    server: &mut Serve,
    acked: &Arc<Mutex<Vec<String>>>,
    count: usize,
    senders: Vec<tokio::task::JoinHandle<()>>,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < count {
        assert!(Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for sender in senders {
        sender.await.unwrap();
    }
}

/// On the last host: every acknowledged delivery reaches the action, each
/// under one idempotency key, and no key is applied twice.
async fn assert_applied_exactly_once(
    server: &Serve,
    flow: &str,
    fake: &FakeItems,
    acked: &HashSet<String>,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let applied: HashSet<String> = fake
            .created()
            .iter()
            .map(|(_, body)| body["event"].as_str().unwrap().to_string())
            .collect();
        if acked.is_subset(&applied) {
            break;
        }
        let missing = acked.difference(&applied).count();
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged deliveries never reached the action"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the queue drain, then check nothing ran twice.
    wait_until_drained(&server.url, flow).await;
    let created = fake.created();
    let mut keys_per_event: HashMap<String, HashSet<String>> = HashMap::new();
    for (key, body) in &created {
        keys_per_event
            .entry(body["event"].as_str().unwrap().to_string())
            .or_default()
            .insert(key.clone());
    }
    for (event, keys) in &keys_per_event {
        assert_eq!(
            keys.len(),
            1,
            "{event} was applied under several keys: {keys:?}"
        );
    }
    let applied_total = created.len();
    assert_eq!(
        applied_total,
        keys_per_event.len(),
        "a key was applied twice"
    );
    assert!(applied_total >= acked.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deliveries_complete_exactly_once_across_sigkill() {
    let (_dir, data, load) = host_dirs(artifacts::EXAMPLE, "example");
    let fake = FakeItems::start().await;
    let (mut server, flow, path) = item_flow(&data, &load, &fake).await;

    // Load: 32 senders; the host is killed once 150 deliveries are acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let senders = send_load(&format!("{}{path}", server.url), &acked, &next, TOTAL);
    kill_after(&mut server, &acked, 150, senders).await;
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(
        acked.len() >= 150 && acked.len() < TOTAL,
        "{} acknowledged",
        acked.len()
    );
    eprintln!(
        "killed with {} deliveries acknowledged and {} applied",
        acked.len(),
        fake.created().len()
    );

    // Started again on the same data: everything acknowledged completes.
    let server = serve(&data, &load);
    assert_applied_exactly_once(&server, &flow, &fake, &acked).await;
}

/// Five SIGKILLs at random points of a load: each life of the host is
/// killed after a random number (1 to 50) of new acknowledgements, so the
/// kill lands anywhere between accepting, routing, running a step and
/// writing its result, and each start recovers what the last left (inbox
/// entries, claimed runs). After a sixth start every acknowledged delivery
/// is applied exactly once. The seed is printed, to replay a failure with
/// `CRASH_SEED`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deliveries_survive_five_kills_at_random_points() {
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill points from CRASH_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (_dir, data, load) = host_dirs(artifacts::EXAMPLE, "example");
    let fake = FakeItems::start().await;
    let (mut server, flow, path) = item_flow(&data, &load, &fake).await;

    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    // Numbered across lives: an id is sent once, acknowledged or not.
    let next = Arc::new(AtomicUsize::new(0));
    for life in 1..=5 {
        let point = rng.random_range(1..=50);
        let before = acked.lock().unwrap().len();
        let senders = send_load(&format!("{}{path}", server.url), &acked, &next, usize::MAX);
        kill_after(&mut server, &acked, before + point, senders).await;
        eprintln!(
            "life {life}: killed {point} acknowledgements in; {} acknowledged and {} applied so far",
            acked.lock().unwrap().len(),
            fake.created().len()
        );
        server = serve(&data, &load);
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    assert!(acked.len() >= 5, "{} acknowledged", acked.len());
    assert_applied_exactly_once(&server, &flow, &fake, &acked).await;
}

/// A durable delay: a run waiting two seconds survives a SIGKILL of the
/// host, and after the restart its next step runs once, and not before the
/// two seconds are up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_survives_sigkill_and_fires_once_not_early() {
    let (_dir, data, load) = host_dirs(artifacts::EXAMPLE, "example");
    let fake = FakeItems::start().await;
    let mut server = serve(&data, &load);
    let conn = connection(&server.url, "example", fake.properties()).await;
    let flow = flow(
        &server.url,
        json!({
            "name": "Create after two seconds",
            "trigger": {"schedule": "0 0 1 1 *"},
            "steps": [
                {"key": "wait", "delay": {"seconds": 2}},
                {"key": "create", "plugin": "example", "action": "create-item", "connection": conn,
                 "input": {"event": "{{ trigger.id }}"}},
            ],
        }),
    )
    .await;
    let started = Instant::now();
    let id = run_by_hand(&server.url, &flow, json!({"id": "late-1"})).await;
    // Waiting (what sled had not written out yet when the host is killed is
    // lost: the run then waits anew after the restart, longer, never shorter).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = run(&server.url, &id).await;
        if run["status"] == json!("waiting") && run["waiting_until"].is_u64() {
            break;
        }
        assert!(Instant::now() < deadline, "the run never waited: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fake.created().is_empty(), "the step ran before its delay");
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();

    let server = serve(&data, &load);
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.created().is_empty() {
        assert!(Instant::now() < deadline, "the delayed step never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "the delay was cut short: the step ran after {:?}",
        started.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let run = run(&server.url, &id).await;
        if run["status"] == json!("succeeded") {
            break;
        }
        assert!(Instant::now() < deadline, "the run did not finish: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let applied = fake.created();
    assert_eq!(applied.len(), 1, "fired more than once: {applied:?}");
    assert_eq!(applied[0].0, format!("{id}:create"));
}

/// A run started through the API is on disk when the API answers: killed
/// at once after the answer (before sled's own periodic flush), the host
/// still has the run after the restart and runs its step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_started_through_the_api_survives_an_immediate_sigkill() {
    let (_dir, data, load) = host_dirs(artifacts::EXAMPLE, "example");
    let fake = FakeItems::start().await;
    let mut server = serve(&data, &load);
    let conn = connection(&server.url, "example", fake.properties()).await;
    // The step waits first, so the kill lands before any effect.
    let flow = flow(
        &server.url,
        json!({
            "name": "Create after two seconds",
            "trigger": {"schedule": "0 0 1 1 *"},
            "steps": [
                {"key": "wait", "delay": {"seconds": 2}},
                {"key": "create", "plugin": "example", "action": "create-item", "connection": conn,
                 "input": {"event": "{{ trigger.id }}"}},
            ],
        }),
    )
    .await;
    let id = run_by_hand(&server.url, &flow, json!({"id": "by-hand-1"})).await;
    server.child.kill().unwrap(); // SIGKILL, right after the answer
    server.child.wait().unwrap();
    assert!(fake.created().is_empty(), "the kill came before any effect");

    let server = serve(&data, &load);
    let response = client()
        .get(format!("{}/v1/runs/{id}", server.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, 200, "the run was lost with the host: {body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while fake.created().is_empty() {
        assert!(Instant::now() < deadline, "the run's step never ran");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.created().len(), 1);
}

/// A cancel through the API is on disk when the API answers: a run waiting
/// a minute, cancelled, the host killed at once after the answer, is still
/// cancelled after the restart (and never runs its step).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_through_the_api_survives_an_immediate_sigkill() {
    let (_dir, data, load) = host_dirs(artifacts::EXAMPLE, "example");
    let mut server = serve(&data, &load);
    let flow = flow(
        &server.url,
        json!({
            "name": "Wait a minute",
            "trigger": {"schedule": "0 0 1 1 *"},
            "steps": [{"key": "wait", "delay": {"seconds": 60}}],
        }),
    )
    .await;
    let id = run_by_hand(&server.url, &flow, json!({"id": "to-cancel"})).await;
    let path = format!("/v1/runs/{id}/cancel");
    let cancelled = api(&server.url, reqwest::Method::POST, &path, json!({})).await;
    assert_eq!(cancelled["status"], json!("cancelled"), "{cancelled}");
    server.child.kill().unwrap(); // SIGKILL, right after the answer
    server.child.wait().unwrap();

    let server = serve(&data, &load);
    let run = run(&server.url, &id).await;
    assert_eq!(
        run["status"],
        json!("cancelled"),
        "the cancel was lost: {run}"
    );
}

/// A delivery's runs are on disk when its `200` goes out, and one the
/// plugin cannot process yet is in the inbox when its `202` goes out: the
/// host killed at once after both answers (before sled's own periodic
/// flush), the first delivery's run still completes after the restart,
/// and the second is processed once its plugin can, each applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_and_deferred_deliveries_survive_an_immediate_sigkill() {
    let (_dir, data, load) = host_dirs(artifacts::FIXTURE_BENCH, "bench");
    let fake = FakeItems::start().await;
    let mut server = serve(&data, &load);
    let conn = connection(&server.url, "bench", fake.properties()).await;
    // The step waits first, so the kill lands before any effect.
    let flow = flow(
        &server.url,
        json!({
            "name": "Send two seconds after each delivery",
            "trigger": {"plugin": "bench", "trigger": "event", "connection": conn},
            "steps": [
                {"key": "wait", "delay": {"seconds": 2}},
                {"key": "send", "plugin": "bench", "action": "send", "connection": conn,
                 "input": {"event": "{{ trigger.id }}"}},
            ],
        }),
    )
    .await;
    let url = format!("{}{}", server.url, activate(&server.url, &flow).await);
    let deliver = |id: &'static str, fail_until: Option<u128>| {
        let body = serde_json::to_vec(&json!({"id": id})).unwrap();
        let mut request = client()
            .post(&url)
            .header("x-event-id", id)
            .header("x-signature", sign(&body));
        if let Some(until) = fail_until {
            request = request.header("x-fail-until", until.to_string());
        }
        async move { read(request.body(body).send().await.unwrap()).await }
    };
    let (status, body) = deliver("now-1", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["runs"], 1, "{body}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let (status, body) = deliver("later-1", Some(now + 1_000)).await;
    assert_eq!(status, 202, "the plugin failed for now: deferred: {body}");
    assert_eq!(body["runs"], 0, "{body}");
    server.child.kill().unwrap(); // SIGKILL, right after the answers
    server.child.wait().unwrap();
    assert!(fake.created().is_empty(), "the kill came before any effect");

    let server = serve(&data, &load);
    let acked: HashSet<String> = ["now-1", "later-1"].map(String::from).into();
    assert_applied_exactly_once(&server, &flow, &fake, &acked).await;
    assert_eq!(fake.created().len(), 2);
}
