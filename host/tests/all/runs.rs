//! The flow engine end to end with the example connector and a fake of its
//! API: webhook and polling triggers, conditions and mappings, retries across
//! a failing fake, dead letters and replay, de-duplication, auth pauses,
//! synchronous runs, cron schedules, retention, metrics, and tenant
//! isolation of runs.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
};
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use switchyard_tests as artifacts;

use crate::support::{TOKEN, TestHost, config, read};

pub const API_KEY: &str = "k-runs-fake-1";
pub const WEBHOOK_SECRET: &str = "whsec-runs-fake";

/// A fake of the example connector's API that can fail on demand and
/// remembers what it applied, by idempotency key.
#[derive(Clone, Default)]
pub struct FakeApi {
    pub state: Arc<Mutex<FakeState>>,
}

#[derive(Default)]
pub struct FakeState {
    /// Every `POST /items` received: its idempotency key.
    pub received: Vec<Option<String>>,
    /// The first application of each key, in order: (key, body).
    pub applied: Vec<(String, Value)>,
    by_key: HashMap<String, Value>,
    /// Answer the next N `POST /items` with 503.
    pub fail_next: u32,
    /// Answer the next N `POST /items` with 429 and `Retry-After: 1`.
    pub rate_limit_next: u32,
    /// Answer everything with 401.
    pub unauthorized: bool,
    /// Items `GET /items?since=` lists: (sequence, item).
    pub items: Vec<(u64, Value)>,
    pub polls: u32,
    /// Hold each `POST /items` this long (a slow API).
    pub delay: Option<Duration>,
    pub in_flight: u32,
    pub max_in_flight: u32,
}

impl FakeApi {
    pub async fn start(&self) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let router = Router::new()
            .route("/me", get(|| async { Json(json!({"user": "acme"})) }))
            .route("/items", get(list_items).post(create_item))
            .route("/items/{id}", get(get_item))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (
            addr,
            tokio::spawn(async move { axum::serve(listener, router).await.unwrap() }),
        )
    }

    pub fn applied(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().applied.clone()
    }

    pub fn add_item(&self, id: &str) {
        let mut state = self.state.lock().unwrap();
        let seq = state.items.len() as u64 + 1;
        state.items.push((seq, json!({"id": id, "seq": seq})));
    }
}

fn authorized(state: &FakeState, headers: &HeaderMap) -> bool {
    !state.unauthorized && headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(API_KEY)
}

async fn create_item(
    State(fake): State<FakeApi>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    // A slow API: hold the request, counting how many are held at once.
    let delay = {
        let mut state = fake.state.lock().unwrap();
        state.in_flight += 1;
        state.max_in_flight = state.max_in_flight.max(state.in_flight);
        state.delay
    };
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let mut state = fake.state.lock().unwrap();
    state.in_flight -= 1;
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    state.received.push(key.clone());
    if !authorized(&state, &headers) {
        return (StatusCode::UNAUTHORIZED, "bad api key").into_response();
    }
    if state.fail_next > 0 {
        state.fail_next -= 1;
        return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
    }
    if state.rate_limit_next > 0 {
        state.rate_limit_next -= 1;
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "slow down",
        )
            .into_response();
    }
    let Some(key) = key else {
        return (StatusCode::BAD_REQUEST, "Idempotency-Key required").into_response();
    };
    if let Some(item) = state.by_key.get(&key) {
        return (StatusCode::OK, Json(item.clone())).into_response();
    }
    let mut item = body.clone();
    item["id"] = json!(format!("item-{}", state.applied.len() + 1));
    state.by_key.insert(key.clone(), item.clone());
    state.applied.push((key, body));
    (StatusCode::CREATED, Json(item)).into_response()
}

async fn list_items(
    State(fake): State<FakeApi>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut state = fake.state.lock().unwrap();
    if !authorized(&state, &headers) {
        return (StatusCode::UNAUTHORIZED, "bad api key").into_response();
    }
    state.polls += 1;
    let since: u64 = query.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
    let items: Vec<&(u64, Value)> = state.items.iter().filter(|(s, _)| *s > since).collect();
    let next = items.last().map(|(s, _)| s.to_string());
    Json(json!({
        "items": items.iter().map(|(_, i)| i.clone()).collect::<Vec<_>>(),
        "next": next,
    }))
    .into_response()
}

async fn get_item(Path(id): Path<String>) -> Json<Value> {
    Json(json!({"id": id, "name": "Widget"}))
}

pub fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A host that may reach the fakes on 127.0.0.2, the example plugin, and a
/// connection to the fake at `addr`.
async fn setup(dir: &std::path::Path, addr: SocketAddr) -> (TestHost, String) {
    let mut cfg = config(dir);
    cfg.allow_networks = vec!["127.0.0.2/32".parse().unwrap()];
    cfg.max_delivery_kib = 64;
    let host = TestHost::start(cfg).await;
    let (status, body) = host.upload_file(artifacts::EXAMPLE).await;
    assert_eq!(status, 201, "{body}");
    let connection = create_connection(&host, addr, TOKEN).await;
    (host, connection)
}

pub async fn create_connection(host: &TestHost, addr: SocketAddr, token: &str) -> String {
    let (status, body) = call_as(
        host,
        token,
        Method::POST,
        "/v1/connections",
        Some(json!({
            "plugin": "example",
            "name": "fake",
            "properties": {
                "base_url": format!("http://{addr}"),
                "api_key": API_KEY,
                "webhook_secret": WEBHOOK_SECRET,
            }
        })),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn call_as(
    host: &TestHost,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}{path}", host.url))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.unwrap()).await
}

async fn publish(host: &TestHost, flow: Value) -> String {
    let (status, body) = host.call(Method::POST, "/v1/flows", Some(flow)).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn activate(host: &TestHost, flow: &str) -> Value {
    let (status, body) = host
        .call(Method::POST, &format!("/v1/flows/{flow}/activate"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn webhook_flow(connection: &str) -> Value {
    json!({
        "name": "Packed items are created",
        "lane": "fast",
        "trigger": {"plugin": "example@^0.1", "trigger": "item-event", "connection": connection},
        "conditions": ["trigger.type == \"packed\""],
        "steps": [{
            "key": "create",
            "plugin": "example",
            "action": "create-item",
            "connection": connection,
            "input": {
                "name": "Order {{ trigger.id }} is ready",
                "event": "{{ trigger.id }}",
                "qty": "{{ trigger.qty }}",
            },
        }],
    })
}

async fn deliver(
    url: &str,
    event_id: &str,
    body: &Value,
    signature: Option<String>,
) -> (StatusCode, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let signature = signature.unwrap_or_else(|| sign(&bytes));
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-event-id", event_id)
        .header("x-signature", signature)
        .body(bytes)
        .send()
        .await
        .unwrap();
    read(response).await
}

/// Polls the API until `check` accepts the value at `path`.
pub async fn wait_for(
    host: &TestHost,
    path: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = host.get(path).await;
        if status == 200 && check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; last: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_fake(what: &str, check: impl Fn() -> bool) {
    crate::support::wait_until(what, check).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_flow_runs_with_conditions_mappings_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::default();
    let (addr, _server) = fake.start().await;
    let (host, conn) = setup(dir.path(), addr).await;
    let flow = publish(&host, webhook_flow(&conn)).await;

    let view = activate(&host, &flow).await;
    assert_eq!(view["kind"], json!("webhook"));
    let url = view["webhook_url"].as_str().unwrap().to_string();
    assert!(url.contains("/hooks/") && url.len() > 60, "{url}");

    // A packed event runs the step with the mapped input, numbers kept as numbers.
    let event = json!({"id": "o-1", "type": "packed", "qty": 3});
    let (status, body) = deliver(&url, "evt-1", &event, None).await;
    assert_eq!(
        (status.as_u16(), body["runs"].clone()),
        (200, json!(1)),
        "{body}"
    );
    wait_fake("the item is created", || fake.applied().len() == 1).await;
    let (key, sent) = fake.applied()[0].clone();
    assert_eq!(
        sent,
        json!({"name": "Order o-1 is ready", "event": "o-1", "qty": 3})
    );
    let runs = wait_for(
        &host,
        &format!("/v1/runs?flow={flow}&status=succeeded"),
        "the run succeeds",
        |b| b["runs"].as_array().unwrap().len() == 1,
    )
    .await;
    let run_id = runs["runs"][0]["id"].as_str().unwrap();
    assert_eq!(key, format!("{run_id}:create"));
    let (_, run) = host.get(&format!("/v1/runs/{run_id}")).await;
    assert_eq!(run["source"], json!("webhook"));
    assert_eq!(run["flow_version"], json!(1));
    assert_eq!(run["steps"][0]["output"]["id"], json!("item-1"));
    assert_eq!(
        run["steps"][0]["history"][0]["journal"]["exchanges"][0]["status"],
        json!(201)
    );

    // The same event id again is dropped; so is a repeat within one delivery.
    let (status, body) = deliver(&url, "evt-1", &event, None).await;
    assert_eq!(
        (status.as_u16(), body["duplicates"].clone()),
        (200, json!(1)),
        "{body}"
    );

    // Conditions: a shipped event is recorded as skipped and calls nothing.
    let (_, body) = deliver(
        &url,
        "evt-2",
        &json!({"id": "o-2", "type": "shipped"}),
        None,
    )
    .await;
    assert_eq!(body["runs"], json!(1));
    let skipped = wait_for(
        &host,
        &format!("/v1/runs?flow={flow}&status=skipped"),
        "a skipped run",
        |b| b["runs"].as_array().unwrap().len() == 1,
    )
    .await;
    assert!(
        skipped["runs"][0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("packed")
    );

    // A mapping that needs a missing field fails the run and says where.
    let (_, body) = deliver(&url, "evt-3", &json!({"id": "o-3", "type": "packed"}), None).await;
    assert_eq!(body["runs"], json!(1));
    let failed = wait_for(&host, "/v1/dead-letters", "the mapping failure", |b| {
        b["runs"].as_array().unwrap().len() == 1
    })
    .await;
    let error = &failed["runs"][0]["error"];
    assert_eq!(error["kind"], json!("mapping"), "{error}");
    assert!(
        error["message"].as_str().unwrap().contains("/qty"),
        "{error}"
    );

    // A bad signature and malformed bodies are refused and recorded.
    let (status, body) = deliver(&url, "evt-4", &event, Some("sha256=00".into())).await;
    assert_eq!(status, 400, "{body}");
    let response = reqwest::Client::new()
        .post(&url)
        .header("x-signature", sign(b"not json"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let big = vec![b'x'; 100 << 10];
    let response = reqwest::Client::new()
        .post(&url)
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let (_, deliveries) = host.get(&format!("/v1/flows/{flow}/deliveries")).await;
    let reasons: Vec<String> = deliveries["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("64 KiB")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("signature")),
        "{reasons:?}"
    );
    assert_eq!(fake.applied().len(), 1);

    // Deactivated, the URL answers 404.
    let (status, _) = host
        .call(Method::POST, &format!("/v1/flows/{flow}/deactivate"), None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = deliver(&url, "evt-5", &event, None).await;
    assert_eq!(status, 404);

    // Metrics count what happened.
    let text = reqwest::Client::new()
        .get(format!("{}/metrics", host.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "switchyard_runs_total{status=\"succeeded\"} 1",
        "switchyard_runs_total{status=\"skipped\"} 1",
        "switchyard_webhook_deliveries_total{outcome=\"rejected\"} 3",
        "switchyard_plugin_call_duration_seconds_count{plugin=\"example\",function=\"perform\"} 1",
    ] {
        assert!(text.contains(line), "missing `{line}` in:\n{text}");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_flow_seeds_first_then_fires_for_new_items_only() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::default();
    let (addr, _server) = fake.start().await;
    fake.add_item("old-1");
    fake.add_item("old-2");
    let (host, conn) = setup(dir.path(), addr).await;
    let flow = publish(
        &host,
        json!({
            "name": "New items are echoed",
            "trigger": {"plugin": "example", "trigger": "new-item", "connection": conn, "interval_secs": 1},
            "steps": [{"key": "echo", "plugin": "example", "action": "echo", "connection": conn, "input": {"item": "{{ trigger.id }}"}}],
        }),
    )
    .await;
    let view = activate(&host, &flow).await;
    assert_eq!(view["kind"], json!("polling"));
    wait_for(
        &host,
        &format!("/v1/flows/{flow}/trigger"),
        "the first poll",
        |b| b["state"]["seeded"] == json!(true),
    )
    .await;
    let (_, runs) = host.get(&format!("/v1/runs?flow={flow}")).await;
    assert_eq!(
        runs["runs"],
        json!([]),
        "the first poll must not fire old items"
    );

    fake.add_item("new-1");
    fake.add_item("new-2");
    let runs = wait_for(
        &host,
        &format!("/v1/runs?flow={flow}&status=succeeded"),
        "two runs",
        |b| b["runs"].as_array().unwrap().len() == 2,
    )
    .await;
    let mut fired: Vec<String> = Vec::new();
    for r in runs["runs"].as_array().unwrap() {
        let (_, run) = host
            .get(&format!("/v1/runs/{}", r["id"].as_str().unwrap()))
            .await;
        assert_eq!(run["source"], json!("poll"));
        fired.push(
            run["steps"][0]["output"]["echo"]["item"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    fired.sort();
    assert_eq!(fired, ["new-1", "new-2"]);
    let state = wait_for(
        &host,
        &format!("/v1/flows/{flow}/trigger"),
        "the cursor",
        |b| b["state"]["cursor"] == json!("4"),
    )
    .await;
    assert!(state["state"]["polls"].as_u64().unwrap() >= 2);

    // Polls go on without firing the same items twice.
    let polls = fake.state.lock().unwrap().polls;
    wait_fake("two more polls", || {
        fake.state.lock().unwrap().polls >= polls + 2
    })
    .await;
    let (_, runs) = host.get(&format!("/v1/runs?flow={flow}")).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2);

    // Deactivated, polling stops.
    host.call(Method::POST, &format!("/v1/flows/{flow}/deactivate"), None)
        .await;
    let polls = fake.state.lock().unwrap().polls;
    let (_, view) = host.get(&format!("/v1/flows/{flow}/trigger")).await;
    assert_eq!(view["active"], json!(false));
    crate::support::wait_until("the flow leaves the schedule", || {
        host.app.triggers.scheduled() == 0
    })
    .await;
    assert!(fake.state.lock().unwrap().polls <= polls + 1);
    host.stop().await;
}

fn retrying_flow(connection: &str, retry: Value) -> Value {
    json!({
        "name": "Create with retries",
        "trigger": {"plugin": "example", "trigger": "item-event", "connection": connection},
        "steps": [{
            "key": "create",
            "plugin": "example",
            "action": "create-item",
            "connection": connection,
            "input": {"event": "{{ trigger.id }}"},
            "retry": retry,
        }],
    })
}

async fn run_flow(
    host: &TestHost,
    flow: &str,
    payload: Value,
    wait_ms: u64,
) -> (StatusCode, Value) {
    host.call(
        Method::POST,
        &format!("/v1/flows/{flow}/run?wait_ms={wait_ms}"),
        Some(payload),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_span_a_failing_fake_with_one_idempotency_key() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::default();
    let (addr, _server) = fake.start().await;
    let (host, conn) = setup(dir.path(), addr).await;
    let flow = publish(
        &host,
        retrying_flow(&conn, json!({"initial_delay_ms": 50, "max_delay_ms": 200})),
    )
    .await;

    // Three 503s, then success: four requests, one key, applied once.
    fake.state.lock().unwrap().fail_next = 3;
    let (status, run) = run_flow(&host, &flow, json!({"id": "e-1"}), 20_000).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], json!("succeeded"), "{run}");
    assert_eq!(run["output"]["event"], json!("e-1"));
    let (received, applied) = {
        let state = fake.state.lock().unwrap();
        (state.received.clone(), state.applied.len())
    };
    assert_eq!(received.len(), 4);
    let key = received[0].clone().unwrap();
    assert!(received.iter().all(|k| k.as_deref() == Some(key.as_str())));
    assert_eq!(applied, 1);
    let (_, full) = host
        .get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()))
        .await;
    let history = full["steps"][0]["history"].as_array().unwrap();
    assert_eq!(history.len(), 4);
    for attempt in &history[..3] {
        assert_eq!(
            attempt["error"]["error"]["kind"],
            json!("transient"),
            "{attempt}"
        );
        assert!(attempt["retry_at"].as_u64().unwrap() > attempt["started_at"].as_u64().unwrap());
    }

    // A 429 waits for Retry-After (1 s) before the next attempt.
    fake.state.lock().unwrap().rate_limit_next = 1;
    let started = Instant::now();
    let (_, run) = run_flow(&host, &flow, json!({"id": "e-2"}), 20_000).await;
    assert_eq!(run["status"], json!("succeeded"), "{run}");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "{:?}",
        started.elapsed()
    );
    let (_, full) = host
        .get(&format!("/v1/runs/{}", run["id"].as_str().unwrap()))
        .await;
    let first = &full["steps"][0]["history"][0];
    assert_eq!(first["error"]["error"]["kind"], json!("rate_limited"));
    assert!(first["retry_at"].as_u64().unwrap() - first["started_at"].as_u64().unwrap() >= 1000);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_runs_go_to_dead_letters_and_replay_from_the_failed_step() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::default();
    let (addr, _server) = fake.start().await;
    let (host, conn) = setup(dir.path(), addr).await;
    let flow = publish(
        &host,
        retrying_flow(&conn, json!({"max_attempts": 2, "initial_delay_ms": 20})),
    )
    .await;

    fake.state.lock().unwrap().fail_next = 100;
    let mut ids = Vec::new();
    for n in 0..3 {
        let (_, run) = run_flow(&host, &flow, json!({"id": format!("d-{n}")}), 20_000).await;
        assert_eq!(run["status"], json!("failed"), "{run}");
        assert!(
            run["error"]["message"]
                .as_str()
                .unwrap()
                .contains("gave up after 2 attempts"),
            "{run}"
        );
        ids.push(run["id"].as_str().unwrap().to_string());
    }
    let (_, dead) = host.get("/v1/dead-letters").await;
    assert_eq!(dead["runs"].as_array().unwrap().len(), 3);

    // One replay, then the rest in bulk; each key is applied once.
    fake.state.lock().unwrap().fail_next = 0;
    let (status, replayed) = host
        .call(Method::POST, &format!("/v1/runs/{}/replay", ids[0]), None)
        .await;
    assert_eq!(status, 200, "{replayed}");
    wait_for(
        &host,
        &format!("/v1/runs/{}", ids[0]),
        "the replay succeeds",
        |r| r["status"] == json!("succeeded"),
    )
    .await;
    let (status, _) = host
        .call(Method::POST, &format!("/v1/runs/{}/replay", ids[0]), None)
        .await;
    assert_eq!(status, 409, "a succeeded run is not replayed");
    let (_, bulk) = host
        .call(Method::POST, "/v1/runs/replay", Some(json!({"flow": flow})))
        .await;
    assert_eq!(bulk["replayed"].as_array().unwrap().len(), 2, "{bulk}");
    for id in &ids {
        let run = wait_for(&host, &format!("/v1/runs/{id}"), "replays succeed", |r| {
            r["status"] == json!("succeeded")
        })
        .await;
        assert_eq!(run["replays"], json!(1));
    }
    let applied = fake.applied();
    assert_eq!(applied.len(), 3);
    for id in &ids {
        assert!(applied.iter().any(|(k, _)| *k == format!("{id}:create")));
    }
    let (_, dead) = host.get("/v1/dead-letters").await;
    assert_eq!(dead["runs"], json!([]));

    // A run waiting for a retry can be cancelled; it leaves the queue.
    let slow = publish(&host, json!({
        "name": "Slow retries",
        "trigger": {"plugin": "example", "trigger": "item-event", "connection": conn},
        "steps": [{"key": "create", "plugin": "example", "action": "create-item", "connection": conn,
                   "input": {"event": "{{ trigger.id }}"}, "retry": {"initial_delay_ms": 600000}}],
    })).await;
    fake.state.lock().unwrap().fail_next = 1;
    let (status, run) = run_flow(&host, &slow, json!({"id": "c-1"}), 0).await;
    assert_eq!(status, 202);
    let id = run["id"].as_str().unwrap();
    wait_for(
        &host,
        &format!("/v1/runs/{id}"),
        "the retry is scheduled",
        |r| r["status"] == json!("retrying"),
    )
    .await;
    let (status, cancelled) = host
        .call(Method::POST, &format!("/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(
        (status.as_u16(), cancelled["status"].clone()),
        (200, json!("cancelled"))
    );
    assert_eq!(host.app.runs.queue_depth().unwrap(), 0);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_errors_pause_the_connection_until_it_is_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::default();
    let (addr, _server) = fake.start().await;
    let (host, conn) = setup(dir.path(), addr).await;
    let flow = publish(&host, retrying_flow(&conn, json!({"initial_delay_ms": 20}))).await;

    fake.state.lock().unwrap().unauthorized = true;
    let (status, run) = run_flow(&host, &flow, json!({"id": "a-1"}), 1_000).await;
    assert_eq!(status, 202, "{run}");
    let id = run["id"].as_str().unwrap().to_string();
    let paused = wait_for(&host, &format!("/v1/runs/{id}"), "the run is paused", |r| {
        r["status"] == json!("paused")
    })
    .await;
    assert!(
        paused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is paused"),
        "{paused}"
    );
    let (_, connection) = host.get(&format!("/v1/connections/{conn}")).await;
    assert_eq!(
        connection["status"]["state"],
        json!("paused"),
        "{connection}"
    );
    // Runs reaching a paused connection park without calling the API.
    let calls = fake.state.lock().unwrap().received.len();
    let (_, second) = run_flow(&host, &flow, json!({"id": "a-2"}), 0).await;
    let second_id = second["id"].as_str().unwrap().to_string();
    wait_for(
        &host,
        &format!("/v1/runs/{second_id}"),
        "the second run parks",
        |r| r["status"] == json!("paused"),
    )
    .await;
    assert_eq!(fake.state.lock().unwrap().received.len(), calls);

    fake.state.lock().unwrap().unauthorized = false;
    let (status, resumed) = host
        .call(
            Method::POST,
            &format!("/v1/connections/{conn}/resume"),
            None,
        )
        .await;
    assert_eq!(status, 200, "{resumed}");
    assert_eq!(resumed["resumed_runs"].as_array().unwrap().len(), 2);
    for id in [&id, &second_id] {
        wait_for(
            &host,
            &format!("/v1/runs/{id}"),
            "resumed runs succeed",
            |r| r["status"] == json!("succeeded"),
        )
        .await;
    }
    assert_eq!(fake.applied().len(), 2);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_fire_and_retention_prunes_runs_and_dedup_entries() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::default();
    let (addr, _server) = fake.start().await;
    let (host, conn) = setup(dir.path(), addr).await;
    let flow = publish(&host, json!({
        "name": "Every second",
        "trigger": {"schedule": "* * * * * *"},
        "steps": [{"key": "echo", "plugin": "example", "action": "echo", "connection": conn, "input": {"at": "{{ trigger.scheduled_at }}"}}],
    }))
    .await;
    let (status, body) = host
        .call(
            Method::POST,
            "/v1/flows",
            Some(json!({
                "name": "Bad schedule", "trigger": {"schedule": "every tuesday"},
                "steps": [{"key": "echo", "plugin": "example", "action": "echo"}],
            })),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("trigger.schedule"),
        "{body}"
    );

    let view = activate(&host, &flow).await;
    assert_eq!(view["kind"], json!("schedule"));
    let runs = wait_for(
        &host,
        &format!("/v1/runs?flow={flow}&status=succeeded"),
        "two scheduled runs",
        |b| b["runs"].as_array().unwrap().len() >= 2,
    )
    .await;
    let first = runs["runs"][0]["id"].as_str().unwrap();
    let (_, run) = host.get(&format!("/v1/runs/{first}")).await;
    assert_eq!(run["source"], json!("schedule"));
    assert!(
        run["steps"][0]["output"]["echo"]["at"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    host.call(Method::POST, &format!("/v1/flows/{flow}/deactivate"), None)
        .await;

    // A webhook event id is remembered for the window, then forgotten with
    // the finished runs once they are older than the retention.
    let hooked = publish(&host, webhook_flow(&conn)).await;
    let url = activate(&host, &hooked).await["webhook_url"]
        .as_str()
        .unwrap()
        .to_string();
    let event = json!({"id": "r-1", "type": "packed", "qty": 1});
    deliver(&url, "evt-r", &event, None).await;
    wait_fake("the item is created", || fake.applied().len() == 1).await;
    wait_for(
        &host,
        &format!("/v1/runs?flow={hooked}&status=succeeded"),
        "the run is done",
        |b| b["runs"].as_array().unwrap().len() == 1,
    )
    .await;
    let now = switchyard::clock::now_ms();
    let report = host.app.runs.prune(now + 3600 * 1000).unwrap();
    assert_eq!(
        (report.runs, report.dedup_entries),
        (0, 0),
        "nothing is old yet"
    );
    let report = host.app.runs.prune(now + 8 * 24 * 3600 * 1000).unwrap();
    assert!(report.runs >= 3, "{report:?}");
    assert_eq!(report.dedup_entries, report.runs, "{report:?}");
    let (_, runs) = host.get("/v1/runs").await;
    assert_eq!(runs["runs"], json!([]));
    let (_, body) = deliver(&url, "evt-r", &event, None).await;
    assert_eq!(
        body["runs"],
        json!(1),
        "a forgotten event id runs again: {body}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_are_invisible_to_other_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::default();
    let (addr, _server) = fake.start().await;
    let (host, _) = setup(dir.path(), addr).await;
    let mut tokens = Vec::new();
    for name in ["acme", "globex"] {
        let (status, body) = host
            .call(Method::POST, "/v1/tenants", Some(json!({"name": name})))
            .await;
        assert_eq!(status, 201, "{body}");
        tokens.push(body["token"].as_str().unwrap().to_string());
    }
    let (acme, globex) = (&tokens[0], &tokens[1]);
    let conn = create_connection(&host, addr, acme).await;
    let (status, flow) = call_as(
        &host,
        acme,
        Method::POST,
        "/v1/flows",
        Some(retrying_flow(&conn, json!({"max_attempts": 1}))),
    )
    .await;
    assert_eq!(status, 201, "{flow}");
    let flow = flow["id"].as_str().unwrap().to_string();
    fake.state.lock().unwrap().fail_next = 1;
    let (_, run) = call_as(
        &host,
        acme,
        Method::POST,
        &format!("/v1/flows/{flow}/run?wait_ms=10000"),
        Some(json!({"id": "t-1"})),
    )
    .await;
    assert_eq!(run["status"], json!("failed"), "{run}");
    let run = run["id"].as_str().unwrap().to_string();

    for (method, path) in [
        (Method::GET, format!("/v1/runs/{run}")),
        (Method::POST, format!("/v1/runs/{run}/replay")),
        (Method::POST, format!("/v1/runs/{run}/cancel")),
        (Method::POST, format!("/v1/flows/{flow}/activate")),
        (Method::POST, format!("/v1/flows/{flow}/deactivate")),
        (Method::POST, format!("/v1/flows/{flow}/run")),
        (Method::GET, format!("/v1/flows/{flow}/trigger")),
        (Method::GET, format!("/v1/flows/{flow}/deliveries")),
        (Method::POST, format!("/v1/connections/{conn}/resume")),
    ] {
        let (status, body) = call_as(&host, globex, method.clone(), &path, Some(json!({}))).await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    for path in [
        "/v1/runs",
        "/v1/dead-letters",
        &format!("/v1/runs?flow={flow}"),
    ] {
        let (_, body) = call_as(&host, globex, Method::GET, path, None).await;
        assert_eq!(body["runs"], json!([]), "{path}");
    }
    let (_, body) = call_as(
        &host,
        globex,
        Method::POST,
        "/v1/runs/replay",
        Some(json!({})),
    )
    .await;
    assert_eq!(body["replayed"], json!([]));
    let (_, body) = call_as(&host, acme, Method::GET, "/v1/dead-letters", None).await;
    assert_eq!(body["runs"].as_array().unwrap().len(), 1);
    host.stop().await;
}

/// Accepts connections and never answers: a third party that hangs.
async fn black_hole() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_poll_does_not_delay_other_flows() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::default();
    let (addr, _server) = fake.start().await;
    let (host, conn) = setup(dir.path(), addr).await;
    let stuck_conn = create_connection(&host, black_hole().await, TOKEN).await;
    let polling = |name: &str, conn: &str| {
        json!({
            "name": name,
            "trigger": {"plugin": "example", "trigger": "new-item", "connection": conn, "interval_secs": 1},
            "steps": [{"key": "echo", "plugin": "example", "action": "echo", "connection": conn, "input": {}}],
        })
    };
    let stuck = publish(&host, polling("Hangs", &stuck_conn)).await;
    let healthy = publish(&host, polling("Healthy", &conn)).await;
    activate(&host, &stuck).await;
    activate(&host, &healthy).await;
    // The healthy flow polls every second while the other's first poll hangs
    // (until the call's 5 s deadline).
    wait_fake("three polls of the healthy flow", || {
        fake.state.lock().unwrap().polls >= 3
    })
    .await;
    let (_, state) = host.get(&format!("/v1/flows/{stuck}/trigger")).await;
    assert_eq!(state["state"]["polls"], json!(0), "{state}");
    host.stop().await;
}

/// A host with two normal-lane workers and a connection to `fake`.
async fn two_worker_host(
    dir: &std::path::Path,
    fake: &FakeApi,
) -> (TestHost, String, tokio::task::JoinHandle<()>) {
    let (addr, server) = fake.start().await;
    let mut cfg = config(dir);
    cfg.allow_networks = vec!["127.0.0.2/32".parse().unwrap()];
    cfg.normal_workers = 2;
    let host = TestHost::start(cfg).await;
    host.upload_file(artifacts::EXAMPLE).await;
    let conn = create_connection(&host, addr, TOKEN).await;
    (host, conn, server)
}

/// A flow whose one step creates an item for each event.
fn create_item_flow(name: &str, lane: &str, concurrency: Option<u32>, conn: &str) -> Value {
    json!({
        "name": name,
        "lane": lane,
        "concurrency": concurrency,
        "trigger": {"plugin": "example", "trigger": "item-event", "connection": conn},
        "steps": [{"key": "create", "plugin": "example", "action": "create-item",
                   "connection": conn, "input": {"event": "{{ trigger.id }}"}}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_concurrency_limits_hold_and_the_fast_lane_overtakes_bulk_work() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::default();
    let (host, conn, _server) = two_worker_host(dir.path(), &fake).await;
    fake.state.lock().unwrap().delay = Some(Duration::from_millis(150));
    let flow = |name: &str, lane: &str, concurrency: Option<u32>| {
        create_item_flow(name, lane, concurrency, &conn)
    };
    // At most one run of this flow at a time, though workers are free.
    let single = publish(&host, flow("One at a time", "normal", Some(1))).await;
    for n in 0..4 {
        run_flow(&host, &single, json!({"id": format!("s-{n}")}), 0).await;
    }
    wait_for(
        &host,
        &format!("/v1/runs?flow={single}&status=succeeded"),
        "four runs",
        |b| b["runs"].as_array().unwrap().len() == 4,
    )
    .await;
    assert_eq!(fake.state.lock().unwrap().max_in_flight, 1);

    // Bulk work fills the normal lane's two workers; a fast-lane run does not wait.
    let bulk = publish(&host, flow("Bulk", "normal", None)).await;
    let orders = publish(&host, flow("Orders", "fast", None)).await;
    for n in 0..12 {
        run_flow(&host, &bulk, json!({"id": format!("b-{n}")}), 0).await;
    }
    let (_, order) = run_flow(&host, &orders, json!({"id": "o-1"}), 10_000).await;
    assert_eq!(order["status"], json!("succeeded"), "{order}");
    let (_, bulk_runs) = host
        .get(&format!("/v1/runs?flow={bulk}&status=succeeded"))
        .await;
    let done = bulk_runs["runs"].as_array().unwrap().len();
    assert!(
        done < 12,
        "the fast run waited for the bulk backlog ({done} of 12 done)"
    );
    wait_for(
        &host,
        &format!("/v1/runs?flow={bulk}&status=succeeded"),
        "the backlog",
        |b| b["runs"].as_array().unwrap().len() == 12,
    )
    .await;
    assert!(fake.state.lock().unwrap().max_in_flight <= 3);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_held_by_its_limit_does_not_hold_up_other_flows() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeApi::default();
    let (host, conn, _server) = two_worker_host(dir.path(), &fake).await;
    fake.state.lock().unwrap().delay = Some(Duration::from_millis(100));
    let flow =
        |name: &str, concurrency: Option<u32>| create_item_flow(name, "normal", concurrency, &conn);
    // 150 runs of a one-at-a-time flow fill the head of the queue (a
    // dispatcher's first look covers 66 entries with two workers) and take
    // 15 s to drain; a run of another flow queued behind them starts at once.
    let slow = publish(&host, flow("One at a time", Some(1))).await;
    for n in 0..150 {
        let (status, _) = run_flow(&host, &slow, json!({"id": format!("s-{n}")}), 0).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let other = publish(&host, flow("Another flow", None)).await;
    let (status, run) = run_flow(&host, &other, json!({"id": "o-1"}), 5_000).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], json!("succeeded"), "{run}");
    let (_, done) = host
        .get(&format!("/v1/runs?flow={slow}&status=succeeded&limit=500"))
        .await;
    let done = done["runs"].as_array().unwrap().len();
    assert!(
        done < 100,
        "the other flow waited for the backlog ({done} of 150 done)"
    );
    assert!(fake.state.lock().unwrap().max_in_flight <= 2);
    host.stop().await;
}
