//! The flow engine end to end with the example connector and a fake of its
//! API: webhook and polling triggers, conditions and mappings, retries across
//! a failing fake, dead letters and replay, de-duplication, auth pauses,
//! synchronous runs, cron schedules, retention, metrics, lanes and
//! concurrency limits, and tenant isolation of runs. Every test runs on
//! both stores (sled, and PostgreSQL on the test cluster): the engine must
//! behave the same on either.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::http::{Method as HttpMethod, StatusCode};
use reqwest::Method;
use serde_json::{Value, json};
use switchyard::config::ServeConfig;
use switchyard_tests as artifacts;

use crate::{
    fake_items::{FakeItems, sign},
    support::{
        Backend, TestHost, client, config,
        fake::{Incoming, Server},
        metrics::sample,
        read, wait_for, wait_until,
    },
};

/// A host configuration whose plugins may reach the fakes on 127.0.0.2.
fn runs_config(dir: &std::path::Path) -> ServeConfig {
    let mut cfg = config(dir);
    cfg.allow_networks = vec!["127.0.0.2/32".parse().unwrap()];
    cfg.max_delivery_kib = 64;
    cfg
}

/// A host that may reach the fakes, the example plugin, and a connection
/// to `fake`.
async fn setup(dir: &std::path::Path, backend: Backend, fake: &FakeItems) -> (TestHost, String) {
    setup_host(runs_config(dir), backend, fake).await
}

async fn setup_host(cfg: ServeConfig, backend: Backend, fake: &FakeItems) -> (TestHost, String) {
    let host = TestHost::start(backend.apply(cfg).await).await;
    let (status, body) = host.upload_file(artifacts::EXAMPLE).await;
    assert_eq!(status, 201, "{body}");
    let connection = host.connect("example", fake.properties()).await;
    (host, connection)
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
    let response = client()
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

/// The runs of `flow` with `status` (newest first), once there are `n`.
async fn wait_for_runs(host: &TestHost, flow: &str, status: &str, n: usize) -> Value {
    wait_for(
        host,
        &format!("/v1/runs?flow={flow}&status={status}&limit=500"),
        &format!("{n} runs of {flow} are {status}"),
        |b| b["runs"].as_array().unwrap().len() == n,
    )
    .await
}

async fn webhook_flow_runs_with_conditions_mappings_and_dedup(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeItems::start().await;
    let (host, conn) = setup(dir.path(), backend, &fake).await;
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
    wait_until("the item is created", || fake.created().len() == 1).await;
    let (key, sent) = fake.created()[0].clone();
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
    let response = client()
        .post(&url)
        .header("x-signature", sign(b"not json"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let big = vec![b'x'; 100 << 10];
    let response = client().post(&url).body(big).send().await.unwrap();
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
    assert_eq!(fake.created().len(), 1);

    // Deactivated, the URL answers 404.
    let (status, _) = host
        .call(Method::POST, &format!("/v1/flows/{flow}/deactivate"), None)
        .await;
    assert_eq!(status, 200);
    let (status, _) = deliver(&url, "evt-5", &event, None).await;
    assert_eq!(status, 404);

    // Metrics count what happened.
    let text = host.metrics().await;
    for (series, value) in [
        ("switchyard_runs_total{status=\"succeeded\"}", "1"),
        ("switchyard_runs_total{status=\"skipped\"}", "1"),
        (
            "switchyard_webhook_deliveries_total{outcome=\"rejected\"}",
            "3",
        ),
        (
            "switchyard_plugin_call_duration_seconds_count{plugin=\"example\",function=\"perform\"}",
            "1",
        ),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in:\n{text}");
    }
    host.stop().await;
}

/// What the runs of `flow` echoed (the polled items' ids), sorted.
async fn echoed_items(host: &TestHost, flow: &str) -> Vec<String> {
    let (_, runs) = host
        .get(&format!("/v1/runs?flow={flow}&status=succeeded&limit=500"))
        .await;
    let mut fired = Vec::new();
    for r in runs["runs"].as_array().unwrap() {
        let (_, run) = host
            .get(&format!("/v1/runs/{}", r["id"].as_str().unwrap()))
            .await;
        let item = &run["steps"][0]["output"]["echo"]["item"];
        fired.push(item.as_str().unwrap_or("(no item)").to_string());
    }
    fired.sort();
    fired
}

fn echo_flow(name: &str, connection: &str, include_existing: bool) -> Value {
    json!({
        "name": name,
        "trigger": {"plugin": "example", "trigger": "new-item", "connection": connection,
                    "interval_secs": 1, "include_existing": include_existing},
        "steps": [{"key": "echo", "plugin": "example", "action": "echo", "connection": connection,
                   "input": {"item": "{{ trigger.id }}"}}],
    })
}

/// A feed that pages (two items an answer): without `include_existing`,
/// none of the history fires, not even the pages after the first poll's,
/// and the seeding state is in the store between pages; with it, every
/// page fires. Items added after the catch-up fire once each.
async fn a_paging_first_poll_fires_its_history_only_with_include_existing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeItems::start().await;
    fake.set_page_size(2);
    for n in 1..=5 {
        fake.add_to_feed(&format!("old-{n}"));
    }
    let (host, conn) = setup(dir.path(), backend, &fake).await;

    let flow = publish(&host, echo_flow("Seeded", &conn, false)).await;
    // The second page is held: the trigger is mid-way through its history.
    fake.hold(|r| {
        r.method == HttpMethod::GET && r.path == "/items" && r.param("since") == Some("2")
    });
    activate(&host, &flow).await;
    wait_until("the second page is asked for", || fake.held() == 1).await;
    let (_, view) = host.get(&format!("/v1/flows/{flow}/trigger")).await;
    assert_eq!(view["state"]["cursor"], json!("2"), "{view}");
    assert_eq!(view["state"]["seeded"], json!(false), "{view}");
    fake.release();
    let view = wait_for(
        &host,
        &format!("/v1/flows/{flow}/trigger"),
        "the trigger has caught up",
        |b| b["state"]["seeded"] == json!(true),
    )
    .await;
    assert_eq!(view["state"]["cursor"], json!("5"), "{view}");
    let sinces: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/items")
        .map(|r| r.param("since").unwrap_or_default().to_string())
        .collect();
    // One page a poll, at once, then an empty one; later polls start at 5.
    assert_eq!(sinces[..4], ["", "2", "4", "5"], "{sinces:?}");
    assert!(sinces[4..].iter().all(|s| s == "5"), "{sinces:?}");
    let (_, runs) = host.get(&format!("/v1/runs?flow={flow}")).await;
    assert_eq!(runs["runs"], json!([]), "no page of the history fires");

    fake.add_to_feed("new-1");
    fake.add_to_feed("new-2");
    fake.add_to_feed("new-3");
    wait_for_runs(&host, &flow, "succeeded", 3).await;
    let polls = fake.polls();
    wait_until("two more polls", || fake.polls() >= polls + 2).await;
    assert_eq!(
        echoed_items(&host, &flow).await,
        ["new-1", "new-2", "new-3"]
    );
    host.call(Method::POST, &format!("/v1/flows/{flow}/deactivate"), None)
        .await;

    // The same history, asked for.
    let other = FakeItems::start().await;
    other.set_page_size(2);
    for n in 1..=5 {
        other.add_to_feed(&format!("old-{n}"));
    }
    let conn = host.connect("example", other.properties()).await;
    let flow = publish(&host, echo_flow("With history", &conn, true)).await;
    activate(&host, &flow).await;
    wait_for_runs(&host, &flow, "succeeded", 5).await;
    other.add_to_feed("new-1");
    wait_for_runs(&host, &flow, "succeeded", 6).await;
    let polls = other.polls();
    wait_until("two more polls", || other.polls() >= polls + 2).await;
    assert_eq!(
        echoed_items(&host, &flow).await,
        ["new-1", "old-1", "old-2", "old-3", "old-4", "old-5"]
    );
    host.stop().await;
}

async fn polling_flow_seeds_first_then_fires_for_new_items_only(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeItems::start().await;
    fake.add_to_feed("old-1");
    fake.add_to_feed("old-2");
    let (host, conn) = setup(dir.path(), backend, &fake).await;
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

    fake.add_to_feed("new-1");
    fake.add_to_feed("new-2");
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
    let polls = fake.polls();
    wait_until("two more polls", || fake.polls() >= polls + 2).await;
    let (_, runs) = host.get(&format!("/v1/runs?flow={flow}")).await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2);

    // Deactivated, polling stops.
    host.call(Method::POST, &format!("/v1/flows/{flow}/deactivate"), None)
        .await;
    let polls = fake.polls();
    let (_, view) = host.get(&format!("/v1/flows/{flow}/trigger")).await;
    assert_eq!(view["active"], json!(false));
    wait_until("the flow leaves the schedule", || {
        host.app.triggers.scheduled() == 0
    })
    .await;
    assert!(fake.polls() <= polls + 1);
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

async fn retries_span_a_failing_fake_with_one_idempotency_key(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeItems::start().await;
    let (host, conn) = setup(dir.path(), backend, &fake).await;
    let flow = publish(
        &host,
        retrying_flow(&conn, json!({"initial_delay_ms": 50, "max_delay_ms": 200})),
    )
    .await;

    // Three 503s, then success: four requests, one key, applied once.
    fake.fail_next(3, 503);
    let (status, run) = run_flow(&host, &flow, json!({"id": "e-1"}), 20_000).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], json!("succeeded"), "{run}");
    assert_eq!(run["output"]["event"], json!("e-1"));
    let (received, applied) = (fake.posted_keys(), fake.created().len());
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
    fake.rate_limit_next(1, "1");
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

async fn exhausted_runs_go_to_dead_letters_and_replay_from_the_failed_step(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeItems::start().await;
    let (host, conn) = setup(dir.path(), backend, &fake).await;
    let flow = publish(
        &host,
        retrying_flow(&conn, json!({"max_attempts": 2, "initial_delay_ms": 20})),
    )
    .await;

    // Two attempts of each of three runs.
    fake.fail_next(6, 503);
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
    let failed = fake.requests().iter().filter(|r| r.status == 503).count();
    assert_eq!(failed, 6, "every attempt met a 503");

    // One replay, then the rest in bulk; each key is applied once.
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
    let applied = fake.created();
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
    fake.fail_next(1, 503);
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

async fn auth_errors_pause_the_connection_until_it_is_resumed(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeItems::start().await;
    let (host, conn) = setup(dir.path(), backend, &fake).await;
    let flow = publish(&host, retrying_flow(&conn, json!({"initial_delay_ms": 20}))).await;

    fake.revoke_key(true);
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
    let calls = fake.posted_keys().len();
    let (_, second) = run_flow(&host, &flow, json!({"id": "a-2"}), 0).await;
    let second_id = second["id"].as_str().unwrap().to_string();
    wait_for(
        &host,
        &format!("/v1/runs/{second_id}"),
        "the second run parks",
        |r| r["status"] == json!("paused"),
    )
    .await;
    assert_eq!(fake.posted_keys().len(), calls);

    fake.revoke_key(false);
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
    assert_eq!(fake.created().len(), 2);
    host.stop().await;
}

async fn schedules_fire_and_retention_prunes_runs_and_dedup_entries(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeItems::start().await;
    let (host, conn) = setup(dir.path(), backend, &fake).await;
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
    // A tick that fired just before may still be running: retention prunes
    // only finished runs, so wait until the schedule is off and its runs done.
    wait_until("the flow leaves the schedule", || {
        host.app.triggers.scheduled() == 0
    })
    .await;
    wait_for(
        &host,
        &format!("/v1/runs?flow={flow}&limit=500"),
        "every scheduled run finished",
        |b| {
            let runs = b["runs"].as_array().unwrap();
            runs.iter().all(|r| r["status"] == json!("succeeded"))
        },
    )
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
    wait_until("the item is created", || fake.created().len() == 1).await;
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

async fn runs_are_invisible_to_other_tenants(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeItems::start().await;
    let (host, _) = setup(dir.path(), backend, &fake).await;
    let mut tokens = Vec::new();
    for name in ["acme", "globex"] {
        let (status, body) = host
            .call(Method::POST, "/v1/tenants", Some(json!({"name": name})))
            .await;
        assert_eq!(status, 201, "{body}");
        tokens.push(body["token"].as_str().unwrap().to_string());
    }
    let (acme, globex) = (&tokens[0], &tokens[1]);
    let conn = host.connect_as(acme, "example", fake.properties()).await;
    let (status, flow) = host
        .call_as(
            acme,
            Method::POST,
            "/v1/flows",
            Some(retrying_flow(&conn, json!({"max_attempts": 1}))),
        )
        .await;
    assert_eq!(status, 201, "{flow}");
    let flow = flow["id"].as_str().unwrap().to_string();
    fake.fail_next(1, 503);
    let (_, run) = host
        .call_as(
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
        let (status, body) = host
            .call_as(globex, method.clone(), &path, Some(json!({})))
            .await;
        assert_eq!(status, 404, "{method} {path}: {body}");
    }
    for path in [
        "/v1/runs",
        "/v1/dead-letters",
        &format!("/v1/runs?flow={flow}"),
    ] {
        let (_, body) = host.call_as(globex, Method::GET, path, None).await;
        assert_eq!(body["runs"], json!([]), "{path}");
    }
    let (_, body) = host
        .call_as(globex, Method::POST, "/v1/runs/replay", Some(json!({})))
        .await;
    assert_eq!(body["replayed"], json!([]));
    let (_, body) = host
        .call_as(acme, Method::GET, "/v1/dead-letters", None)
        .await;
    assert_eq!(body["runs"].as_array().unwrap().len(), 1);
    host.stop().await;
}

/// The history comes a page at a time: a full page says where the next one
/// starts, the last one does not, and `run list` tells the reader so.
async fn the_run_history_pages_and_says_when_there_is_more(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeItems::start().await;
    let (host, connection) = setup(dir.path(), backend, &fake).await;
    let flow = publish(
        &host,
        json!({
            "name": "Echo",
            "trigger": {"plugin": "example", "trigger": "item-event", "connection": connection},
            "steps": [{"key": "echo", "plugin": "example", "action": "echo",
                       "connection": connection, "input": {}}],
        }),
    )
    .await;
    for n in 0..3 {
        let (status, run) = run_flow(&host, &flow, json!({"id": format!("p-{n}")}), 10_000).await;
        assert_eq!(run["status"], json!("succeeded"), "{status} {run}");
    }

    let ids = |body: &Value| -> Vec<String> {
        body["runs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    // The whole history, in the listing's order; a page that is exactly
    // full has no next page.
    let (_, all) = host.get(&format!("/v1/runs?flow={flow}&limit=3")).await;
    let ran = ids(&all);
    assert_eq!((ran.len(), &all["next"]), (3, &Value::Null), "{all}");
    let (_, first) = host.get(&format!("/v1/runs?flow={flow}&limit=2")).await;
    assert_eq!(ids(&first), ran[..2], "{first}");
    assert_eq!(first["next"], json!(ran[1]), "{first}");
    let (_, second) = host
        .get(&format!("/v1/runs?flow={flow}&limit=2&before={}", ran[1]))
        .await;
    assert_eq!(ids(&second), ran[2..], "{second}");
    assert_eq!(second["next"], Value::Null, "{second}");
    let (status, body) = host.get("/v1/runs?before=run-nope").await;
    assert_eq!(status, 400, "{body}");

    let shown = run_cli(&host, &["list", "--flow", &flow, "--limit", "2"]).await;
    assert!(
        shown.contains(&ran[0]) && !shown.contains(&ran[2]),
        "{shown}"
    );
    let last_line = shown.lines().last().unwrap();
    assert_eq!(
        last_line,
        format!(
            "showing 2 runs, there are older ones: --before {} for the next page, or a larger --limit",
            ran[1]
        )
    );
    let rest = run_cli(
        &host,
        &["list", "--flow", &flow, "--limit", "2", "--before", &ran[1]],
    )
    .await;
    assert!(
        rest.contains(&ran[2]) && !rest.contains("older ones"),
        "{rest}"
    );

    // The dead-letter list pages the same way, and a bulk replay off a
    // terminal prints its result and no progress bar.
    let failing = publish(
        &host,
        retrying_flow(&connection, json!({"max_attempts": 1})),
    )
    .await;
    fake.fail_next(3, 503);
    for n in 0..3 {
        let (_, run) = run_flow(&host, &failing, json!({"id": format!("f-{n}")}), 10_000).await;
        assert_eq!(run["status"], json!("failed"), "{run}");
    }
    let (_, dead) = host.get(&format!("/v1/dead-letters?flow={failing}")).await;
    let mut failed = ids(&dead);
    let (_, page) = host
        .get(&format!("/v1/dead-letters?flow={failing}&limit=2"))
        .await;
    assert_eq!(page["next"], json!(failed[1]), "{page}");
    let replayed = run_cli(&host, &["replay-failed", "--flow", &failing]).await;
    let replayed: Value = serde_json::from_str(&replayed).unwrap();
    // Oldest first, as they failed.
    failed.reverse();
    assert_eq!(replayed, json!({"replayed": failed}));
    wait_for_runs(&host, &failing, "succeeded", 3).await;
    host.stop().await;
}

/// `switchyard run ARGS` against `host`, its output captured (not a
/// terminal): what it printed on stdout; it printed nothing on stderr.
async fn run_cli(host: &TestHost, args: &[&str]) -> String {
    let output = tokio::process::Command::new(crate::support::serve::BIN)
        .arg("run")
        .args(args)
        .env("SWITCHYARD_URL", &host.url)
        .env("SWITCHYARD_TOKEN", crate::support::TOKEN)
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stderr), "", "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}

/// Accepts connections and never answers: a third party that hangs (until
/// it is dropped, which closes them); counts the connections.
async fn black_hole() -> (Server, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let server = Server::raw(|listener| async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    })
    .await;
    (server, accepted)
}

async fn a_hanging_poll_does_not_delay_other_flows(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeItems::start().await;
    let mut cfg = runs_config(dir.path());
    // The hanging poll lasts until the test drops the black hole, however
    // long the healthy flow's polls take on a busy machine.
    cfg.call_timeout_ms = 300_000;
    cfg.http_timeout_ms = 300_000;
    let (host, conn) = setup_host(cfg, backend, &fake).await;
    let (hole, accepted) = black_hole().await;
    let mut properties = fake.properties();
    properties["base_url"] = json!(hole.origin);
    let stuck_conn = host.connect("example", properties).await;
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
    wait_until("the first poll of the other flow hangs", || {
        accepted.load(Ordering::SeqCst) == 1
    })
    .await;
    // The healthy flow polls every second while the other's first poll hangs.
    activate(&host, &healthy).await;
    wait_until("three polls of the healthy flow", || fake.polls() >= 3).await;
    let (_, state) = host.get(&format!("/v1/flows/{stuck}/trigger")).await;
    assert_eq!(state["state"]["polls"], json!(0), "{state}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one poll at a time");
    // Hung up on, the poll fails and the host can stop.
    drop(hole);
    host.stop().await;
}

/// A host with two normal-lane workers and a connection to `fake`.
async fn two_worker_host(
    dir: &std::path::Path,
    backend: Backend,
    fake: &FakeItems,
) -> (TestHost, String) {
    let mut cfg = runs_config(dir);
    cfg.normal_workers = 2;
    // A request the fake holds stays a running run for the whole test
    // (queueing 150 runs can take longer than the default 5 s deadline on a
    // busy machine, and a timed-out run would let the next one start).
    cfg.call_timeout_ms = 120_000;
    cfg.http_timeout_ms = 120_000;
    setup_host(cfg, backend, fake).await
}

/// Whether a request creates the item of an event whose id starts with `prefix`.
fn creates_for(request: &Incoming, prefix: &str) -> bool {
    request.method == HttpMethod::POST
        && request.path == "/items"
        && request
            .json()
            .is_ok_and(|b| b["event"].as_str().is_some_and(|e| e.starts_with(prefix)))
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

async fn flow_concurrency_limits_hold_and_the_fast_lane_overtakes_bulk_work(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeItems::start().await;
    let (host, conn) = two_worker_host(dir.path(), backend, &fake).await;
    fake.set_latency(Duration::from_millis(150));
    let flow = |name: &str, lane: &str, concurrency: Option<u32>| {
        create_item_flow(name, lane, concurrency, &conn)
    };
    // At most one run of this flow at a time, though workers are free.
    let single = publish(&host, flow("One at a time", "normal", Some(1))).await;
    for n in 0..4 {
        run_flow(&host, &single, json!({"id": format!("s-{n}")}), 0).await;
    }
    wait_for_runs(&host, &single, "succeeded", 4).await;
    assert_eq!(fake.max_in_flight(), 1);

    // Bulk work fills the normal lane's two workers and keeps them (the
    // fake holds its requests); a fast-lane run does not wait behind it.
    fake.set_latency(Duration::ZERO);
    fake.hold(|r| creates_for(r, "b-"));
    let bulk = publish(&host, flow("Bulk", "normal", None)).await;
    let orders = publish(&host, flow("Orders", "fast", None)).await;
    for n in 0..12 {
        run_flow(&host, &bulk, json!({"id": format!("b-{n}")}), 0).await;
    }
    wait_until("bulk runs take both normal workers", || fake.held() == 2).await;
    let (_, order) = run_flow(&host, &orders, json!({"id": "o-1"}), 30_000).await;
    assert_eq!(order["status"], json!("succeeded"), "{order}");
    let (_, bulk_runs) = host
        .get(&format!("/v1/runs?flow={bulk}&status=succeeded"))
        .await;
    assert_eq!(bulk_runs["runs"], json!([]), "no bulk run could finish");
    assert_eq!(fake.held(), 2);
    fake.release();
    wait_for_runs(&host, &bulk, "succeeded", 12).await;
    assert_eq!(fake.max_in_flight(), 3, "two bulk runs and the fast one");
    host.stop().await;
}

async fn a_backlog_held_by_its_limit_does_not_hold_up_other_flows(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeItems::start().await;
    let (host, conn) = two_worker_host(dir.path(), backend, &fake).await;
    let flow =
        |name: &str, concurrency: Option<u32>| create_item_flow(name, "normal", concurrency, &conn);
    // 150 runs of a one-at-a-time flow fill the head of the queue (a
    // dispatcher's first look covers 66 entries with two workers) and cannot
    // drain (the fake holds the one running); a run of another flow queued
    // behind them starts at once.
    fake.hold(|r| creates_for(r, "s-"));
    let slow = publish(&host, flow("One at a time", Some(1))).await;
    for n in 0..150 {
        let (status, _) = run_flow(&host, &slow, json!({"id": format!("s-{n}")}), 0).await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    wait_until("a run of the backlog holds its flow's one slot", || {
        fake.held() == 1
    })
    .await;
    let other = publish(&host, flow("Another flow", None)).await;
    let (status, run) = run_flow(&host, &other, json!({"id": "o-1"}), 30_000).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["status"], json!("succeeded"), "{run}");
    let (_, done) = host
        .get(&format!("/v1/runs?flow={slow}&status=succeeded&limit=500"))
        .await;
    assert_eq!(done["runs"], json!([]), "the backlog cannot have moved");
    assert_eq!(fake.held(), 1);
    fake.release();
    wait_until("the backlog moves again", || fake.created().len() >= 3).await;
    assert_eq!(
        fake.max_in_flight(),
        2,
        "one of the backlog and the other run"
    );
    host.stop().await;
}

crate::on_both_stores!(
    webhook_flow_runs_with_conditions_mappings_and_dedup,
    polling_flow_seeds_first_then_fires_for_new_items_only,
    a_paging_first_poll_fires_its_history_only_with_include_existing,
    retries_span_a_failing_fake_with_one_idempotency_key,
    exhausted_runs_go_to_dead_letters_and_replay_from_the_failed_step,
    auth_errors_pause_the_connection_until_it_is_resumed,
    schedules_fire_and_retention_prunes_runs_and_dedup_entries,
    runs_are_invisible_to_other_tenants,
    the_run_history_pages_and_says_when_there_is_more,
    a_hanging_poll_does_not_delay_other_flows,
    flow_concurrency_limits_hold_and_the_fast_lane_overtakes_bulk_work,
    a_backlog_held_by_its_limit_does_not_hold_up_other_flows,
);
