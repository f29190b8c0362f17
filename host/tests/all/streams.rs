//! Switchyard as a source of change: topics published to from the API and
//! from a flow's `publish` step, streams read with checkpoints, seek and
//! partition leases, get-object under its rate limit, and batched webhooks
//! to a local receiver whose signatures an independent Standard Webhooks
//! implementation (the `standardwebhooks` package from PyPI) verifies.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{
    DEADLINE, TOKEN, TestHost, client, fake::Server, read, sandbox_config, serve::Serve, wait_until,
};

async fn host() -> (TestHost, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(sandbox_config(dir.path())).await;
    (host, dir)
}

/// Publishes `n` records (`key-{i % keys}`, data `{"n": i}`) in batches.
async fn publish(host: &TestHost, topic: &str, from: usize, n: usize, keys: usize) {
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(100) {
        let records: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"key": format!("key-{}", i % keys), "type": "item.changed", "data": {"n": i}}))
            .collect();
        let (status, body) = host
            .call(
                Method::POST,
                &format!("/v1/topics/{topic}/records"),
                Some(json!({"records": records})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
}

async fn stream(host: &TestHost, spec: Value) -> String {
    let (status, body) = host.call(Method::POST, "/v1/streams", Some(spec)).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn read_batch(
    host: &TestHost,
    stream: &str,
    reader: &str,
    cursor: Option<&str>,
    limit: usize,
) -> Value {
    let mut path = format!("/v1/streams/{stream}/records?reader={reader}&limit={limit}");
    if let Some(cursor) = cursor {
        path.push_str(&format!("&cursor={}", urlencode(cursor)));
    }
    let (status, body) = host.get(&path).await;
    assert_eq!(status, 200, "{body}");
    body
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

fn ns(batch: &Value) -> Vec<u64> {
    batch["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"]["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_drops_its_connection_resumes_at_its_checkpoint() {
    let (host, _dir) = host().await;
    publish(&host, "items", 0, 1_000, 50).await;
    let id = stream(&host, json!({"topic": "items"})).await;

    let mut seen: Vec<u64> = Vec::new();
    let mut processed = 0;
    let mut cursor: Option<String> = None;
    let mut committed_at = 0;
    // Reads batches of 50, commits every 100 records; after 550 records
    // it loses its connection (and the batch it had not committed).
    while processed < 550 {
        let batch = read_batch(&host, &id, "r1", cursor.as_deref(), 50).await;
        seen.extend(ns(&batch));
        processed += ns(&batch).len();
        cursor = Some(batch["cursor"].as_str().unwrap().to_string());
        if processed - committed_at >= 100 {
            let (status, body) = host
                .call(
                    Method::POST,
                    &format!("/v1/streams/{id}/commit"),
                    Some(json!({"reader": "r1", "cursor": cursor})),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            committed_at = processed;
        }
    }
    let uncommitted = processed - committed_at;
    // Back, with no cursor: from the checkpoint, to the end.
    loop {
        let batch = read_batch(&host, &id, "r1", None, 200).await;
        let got = ns(&batch);
        if got.is_empty() {
            break;
        }
        seen.extend(got);
        let cursor_now = batch["cursor"].as_str().unwrap().to_string();
        let (status, _) = host
            .call(
                Method::POST,
                &format!("/v1/streams/{id}/commit"),
                Some(json!({"reader": "r1", "cursor": cursor_now})),
            )
            .await;
        assert_eq!(status, 200);
    }
    let distinct: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), 1_000, "no gap");
    assert_eq!(
        seen.len() - distinct.len(),
        uncommitted,
        "repeats are exactly the uncommitted batch"
    );
    // Per key, the order of publishing.
    let mut last: BTreeMap<u64, u64> = BTreeMap::new();
    for n in seen.iter().skip(processed) {
        if let Some(prev) = last.insert(n % 50, *n) {
            assert!(prev < *n, "key {} went from {prev} back to {n}", n % 50);
        }
    }
    let (_, stats) = host.get(&format!("/v1/streams/{id}/stats")).await;
    assert_eq!(stats["lag"], json!(0), "{stats}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeking_back_in_time_replays_from_there() {
    let (host, _dir) = host().await;
    publish(&host, "items", 0, 30, 7).await;
    // A moment that the next records are later than.
    let mark = {
        let before = chrono::Utc::now().timestamp_millis() + 2;
        while chrono::Utc::now().timestamp_millis() <= before {
            tokio::task::yield_now().await;
        }
        before
    };
    publish(&host, "items", 30, 20, 7).await;
    let id = stream(&host, json!({"topic": "items", "start": "latest"})).await;
    assert!(ns(&read_batch(&host, &id, "r", None, 100).await).is_empty());

    let (status, body) = host
        .call(
            Method::POST,
            &format!("/v1/streams/{id}/seek"),
            Some(json!({"time": mark})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut replayed = ns(&read_batch(&host, &id, "r", None, 100).await);
    replayed.sort_unstable();
    assert_eq!(replayed, (30..50).collect::<Vec<_>>());

    // One hour back: everything published since.
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let (status, _) = host
        .call(
            Method::POST,
            &format!("/v1/streams/{id}/seek"),
            Some(json!({"time": hour_ago.to_rfc3339()})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(ns(&read_batch(&host, &id, "r", None, 100).await).len(), 50);

    // A cursor from before the seek is stale: a commit with it is refused.
    let stale = read_batch(&host, &id, "r", None, 10).await["cursor"].clone();
    host.call(
        Method::POST,
        &format!("/v1/streams/{id}/seek"),
        Some(json!({"to": "earliest"})),
    )
    .await;
    let (status, body) = host
        .call(
            Method::POST,
            &format!("/v1/streams/{id}/commit"),
            Some(json!({"reader": "r", "cursor": stale})),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("seek"),
        "{body}"
    );
    // Bad seeks say what is wrong.
    let (status, body) = host
        .call(
            Method::POST,
            &format!("/v1/streams/{id}/seek"),
            Some(json!({"time": "yesterday"})),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("RFC 3339"),
        "{body}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_hold_disjoint_partitions_and_a_silent_ones_move() {
    let (host, _dir) = host().await;
    let (status, body) = host
        .call(
            Method::POST,
            "/v1/topics",
            Some(json!({"name": "items", "partitions": 4})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    publish(&host, "items", 0, 200, 40).await;
    let id = stream(&host, json!({"topic": "items", "lease_ms": 1000})).await;

    let held = |batch: &Value| -> BTreeSet<u64> {
        batch["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_u64().unwrap())
            .collect()
    };
    // Each reader asks until it holds its share (2, 1, 1 of 4).
    let readers = ["a", "b", "c"];
    let deadline = Instant::now() + DEADLINE;
    let shares = loop {
        let mut shares = BTreeMap::new();
        for reader in readers {
            shares.insert(reader, held(&read_batch(&host, &id, reader, None, 1).await));
        }
        let settled = shares.values().all(|s| !s.is_empty());
        if settled && shares.values().map(BTreeSet::len).sum::<usize>() == 4 {
            break shares;
        }
        assert!(
            Instant::now() < deadline,
            "shares never settled: {shares:?}"
        );
    };
    let all: Vec<u64> = shares.values().flatten().copied().collect();
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(
        all.len(),
        distinct.len(),
        "a partition held twice: {shares:?}"
    );
    assert_eq!(shares["a"].len(), 2, "{shares:?}");
    // Records a reader gets are of its partitions only.
    let batch = read_batch(&host, &id, "b", None, 100).await;
    for record in batch["records"].as_array().unwrap() {
        assert!(
            held(&batch).contains(&record["partition"].as_u64().unwrap()),
            "{record}"
        );
    }

    // c falls silent; within its lease (and a poll) a and b hold all four.
    let silent_since = Instant::now();
    let moved_after = loop {
        let a = held(&read_batch(&host, &id, "a", None, 1).await);
        let b = held(&read_batch(&host, &id, "b", None, 1).await);
        assert!(a.is_disjoint(&b), "{a:?} {b:?}");
        if a.len() + b.len() == 4 {
            break silent_since.elapsed();
        }
        assert!(Instant::now() < deadline, "c's partition never moved");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        moved_after < Duration::from_millis(3_000),
        "moved after {moved_after:?}"
    );
    // c comes back: it must not commit what it no longer holds.
    let stale = json!({"reader": "c", "cursor": batch["cursor"]});
    let (status, body) = host
        .call(
            Method::POST,
            &format!("/v1/streams/{id}/commit"),
            Some(stale),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_object_answers_the_current_state_within_its_rate() {
    let (host, _dir) = host().await;
    publish(&host, "items", 0, 3, 1).await;
    let http = client();
    let url = format!("{}/v1/topics/items/objects/key-0", host.url);
    let first = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(
        first.json::<Value>().await.unwrap()["data"],
        json!({"n": 2})
    );

    // 20 requests a second for two seconds against the default 10/s.
    let started = Instant::now();
    let (mut ok, mut limited) = (0u32, 0u32);
    for i in 0..40u32 {
        let at = started + Duration::from_millis(50) * i;
        tokio::time::sleep_until(at.into()).await;
        let response = http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
        match response.status().as_u16() {
            200 => ok += 1,
            429 => {
                assert!(response.headers().contains_key("retry-after"));
                limited += 1;
            }
            other => panic!("answered {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(limited > 0, "no 429 at 20/s");
    // A burst of 10 (one second's worth, the first request's included), then 10/s.
    let budget = 10.0 + 10.0 * elapsed;
    assert!(
        f64::from(ok) <= budget + 1.0,
        "{ok} admitted in {elapsed:.2} s"
    );
    assert!(
        f64::from(ok) >= 10.0 * elapsed - 2.0,
        "only {ok} admitted in {elapsed:.2} s"
    );
    // A conditional request for an unchanged key: 304, not counted.
    let conditional = http
        .get(&url)
        .bearer_auth(TOKEN)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(conditional.status(), 304);

    // The operator raises this tenant's rate.
    let (status, body) = host
        .call(
            Method::PUT,
            "/v1/tenants/default/topic-limits",
            Some(json!({"object_rate": 1000})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = host.get("/v1/topics/items/objects/key-0").await;
    assert_eq!(status, 200);
    let (status, body) = host.get("/v1/topics/items/objects/nope").await;
    assert_eq!(status, 404, "{body}");
    host.stop().await;
}

/// Runs the Standard Webhooks library from PyPI on one received request.
fn verify_with_python(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let python = std::env::var("SWITCHYARD_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            let venv =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python");
            assert!(
                venv.exists(),
                "the Standard Webhooks library is missing: run ./dev test, which installs it"
            );
            venv
        });
    let headers: BTreeMap<&str, &str> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .map(|name| (name, headers[name].to_str().unwrap()))
        .collect();
    let mut child = Command::new(python)
        .args([
            "-c",
            "import sys, json\n\
             from standardwebhooks.webhooks import Webhook\n\
             Webhook(sys.argv[1]).verify(sys.stdin.buffer.read(), json.loads(sys.argv[2]))",
            secret,
            &serde_json::to_string(&headers).unwrap(),
        ])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(body).unwrap();
    child.wait().unwrap().success()
}

/// A request's headers and body.
type Received = (HeaderMap, Vec<u8>);

/// A receiver of batched webhooks: gives the queued answers, then 200.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    answers: Arc<Mutex<Vec<u16>>>,
}

async fn receive(
    State(r): State<Receiver>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    r.got.lock().unwrap().push((headers, body.to_vec()));
    let status = r.answers.lock().unwrap().pop().unwrap_or(200);
    StatusCode::from_u16(status).unwrap()
}

/// Every line of a batch, following `Link: rel="next"` pages.
async fn fetch_all(host: &TestHost, fetch_url: &str, page: usize) -> Vec<Value> {
    let http = client();
    let mut lines = Vec::new();
    let mut url = format!("{fetch_url}?limit={page}");
    loop {
        let response = http.get(&url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let next = response
            .headers()
            .get("link")
            .map(|l| l.to_str().unwrap().to_string());
        let text = response.text().await.unwrap();
        lines.extend(
            text.lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap()),
        );
        match next {
            Some(link) => {
                let path = link.trim_start_matches('<').split('>').next().unwrap();
                url = format!("{}{path}", host.url);
            }
            None => return lines,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_webhooks_are_signed_retried_and_trued_up() {
    let (host, _dir) = host().await;
    let receiver = Receiver::default();
    // Down for the first attempt.
    receiver.answers.lock().unwrap().push(503);
    let server = Server::start(
        Router::new()
            .route("/hooks", post(receive))
            .with_state(receiver.clone()),
    )
    .await;
    let (status, body) = host
        .call(
            Method::POST,
            "/v1/topics",
            Some(json!({"name": "orders", "partitions": 2})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, sub) = host
        .call(
            Method::POST,
            "/v1/webhook-subscriptions",
            Some(json!({"url": format!("{}/hooks", server.origin), "topic": "orders", "interval_secs": 1})),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    let secret = sub["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let id = sub["id"].as_str().unwrap().to_string();
    // Shown once only.
    let (_, shown) = host.get(&format!("/v1/webhook-subscriptions/{id}")).await;
    assert!(shown.get("secret").is_none(), "{shown}");

    publish(&host, "orders", 0, 120, 30).await;
    // The first attempt meets the 503; the retry (5 s later) delivers.
    wait_until("the batch is delivered after a retry", || {
        receiver.got.lock().unwrap().len() >= 2
    })
    .await;
    let got = receiver.got.lock().unwrap().clone();
    let (headers, body) = &got[1];
    assert_eq!(
        headers["webhook-id"], got[0].0["webhook-id"],
        "a retry keeps its id"
    );
    assert!(
        verify_with_python(&secret, headers, body),
        "the library refused our signature"
    );
    let mut forged = body.clone();
    forged.extend_from_slice(b" ");
    assert!(
        !verify_with_python(&secret, headers, &forged),
        "a changed body verified"
    );
    let message: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(message["type"], "topic.changes");
    assert_eq!(message["count"], 120);
    let lines = fetch_all(&host, message["fetch_url"].as_str().unwrap(), 50).await;
    let mut ns: Vec<u64> = lines
        .iter()
        .map(|l| l["data"]["n"].as_u64().unwrap())
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..120).collect::<Vec<_>>(), "every change once");
    let (_, attempts) = host
        .get(&format!("/v1/webhook-subscriptions/{id}/attempts"))
        .await;
    let statuses: Vec<&Value> = attempts["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(statuses, [&json!(200), &json!(503)], "{attempts}");

    // A true-up: the next batch carries every key once, at its newest.
    let (status, _) = host
        .call(
            Method::POST,
            &format!("/v1/webhook-subscriptions/{id}/true-up"),
            None,
        )
        .await;
    assert_eq!(status, 200);
    wait_until("the true-up is delivered", || {
        receiver.got.lock().unwrap().len() >= 3
    })
    .await;
    let (headers, body) = receiver.got.lock().unwrap()[2].clone();
    assert!(verify_with_python(&secret, &headers, &body));
    let message: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(message["type"], "topic.true_up", "{message}");
    let lines = fetch_all(&host, message["fetch_url"].as_str().unwrap(), 7).await;
    let keys: Vec<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    let distinct: BTreeSet<&str> = keys.iter().copied().collect();
    assert_eq!(keys.len(), 30, "{keys:?}");
    assert_eq!(distinct.len(), 30);
    for line in &lines {
        let key: u64 = line["key"].as_str().unwrap()[4..].parse().unwrap();
        assert_eq!(line["data"]["n"], json!(90 + key), "{line}");
    }
    // No changes since: no batch.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.got.lock().unwrap().len(), 3);

    // A 410 disables the subscription, with the reason shown.
    receiver.answers.lock().unwrap().push(410);
    publish(&host, "orders", 120, 1, 30).await;
    let disabled = crate::support::wait_for(
        &host,
        &format!("/v1/webhook-subscriptions/{id}"),
        "the 410 disables the subscription",
        |s| s["status"] == "disabled",
    )
    .await;
    assert!(
        disabled["disabled_reason"]
            .as_str()
            .unwrap()
            .contains("410"),
        "{disabled}"
    );
    // A receiver address the sandbox refuses is not reached.
    let (status, bad) = host
        .call(
            Method::POST,
            "/v1/webhook-subscriptions",
            Some(json!({"url": "http://127.0.0.1:9/hooks", "topic": "orders", "interval_secs": 1})),
        )
        .await;
    assert_eq!(status, 201);
    publish(&host, "orders", 121, 1, 30).await;
    let refused = crate::support::wait_for(
        &host,
        &format!(
            "/v1/webhook-subscriptions/{}/attempts",
            bad["id"].as_str().unwrap()
        ),
        "an attempt at a refused address",
        |a| !a["attempts"].as_array().unwrap().is_empty(),
    )
    .await;
    let error = refused["attempts"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("loopback") || error.contains("denied"),
        "{error}"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_publishes_once_per_run_and_a_stream_sees_it() {
    let (host, _dir) = host().await;
    let (status, flow) = host
        .call(
            Method::POST,
            "/v1/flows",
            Some(json!({
                "name": "Orders to the orders topic",
                "trigger": {"schedule": "0 0 1 1 *"},
                "steps": [{
                    "key": "out",
                    "publish": {"topic": "orders", "key": "{{ trigger.id }}", "type": "order.updated",
                                "data": {"status": "{{ trigger.status }}"}},
                }],
            })),
        )
        .await;
    assert_eq!(status, 201, "{flow}");
    let flow = flow["id"].as_str().unwrap().to_string();
    for (id, status) in [(1, "paid"), (2, "packed"), (1, "shipped")] {
        let (code, run) = host
            .call(
                Method::POST,
                &format!("/v1/flows/{flow}/run"),
                Some(json!({"id": id, "status": status})),
            )
            .await;
        assert_eq!(code, 200, "{run}");
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["output"]["topic"], "orders", "{run}");
    }
    // A publish with a key already used returns the first record.
    for _ in 0..2 {
        let (status, body) = host
            .call(
                Method::POST,
                "/v1/topics/orders/records",
                Some(json!({"records": [{"key": "3", "type": "order.updated", "data": {"status": "new"},
                                         "idempotency_key": "import-3"}]})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        assert_eq!(body["records"][0]["key"], "3");
    }
    let (_, object) = host.get("/v1/topics/orders/objects/1").await;
    assert_eq!(object["data"], json!({"status": "shipped"}), "{object}");
    let id = stream(
        &host,
        json!({"topic": "orders", "types": ["order.updated"], "filter": {"status": "packed"}}),
    )
    .await;
    let batch = read_batch(&host, &id, "r", None, 100).await;
    let keys: Vec<&Value> = batch["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["key"])
        .collect();
    assert_eq!(keys, [&json!("2")], "{batch}");
    let (_, topic) = host.get("/v1/topics/orders").await;
    assert_eq!(topic["records"], json!(4), "{topic}");
    // A publish step is checked when the flow is published.
    let (status, body) = host
        .call(
            Method::POST,
            "/v1/flows",
            Some(json!({
                "name": "bad",
                "trigger": {"schedule": "0 0 1 1 *"},
                "steps": [{"key": "out", "publish": {"topic": "no/slash", "key": "", "type": "t"}}],
            })),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for place in [
        "steps[out].publish.topic",
        "steps[out].publish.key",
        "steps[out].publish.data",
    ] {
        assert!(message.contains(place), "{place} in {message}");
    }
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_loses_no_acknowledged_publish_and_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let load = dir.path().join("load");
    std::fs::create_dir_all(&load).unwrap();
    let args = ["--token", TOKEN];
    let serve = Serve::start(&data, &load, &args);
    let http = client();
    let api = |url: &str, method: Method, path: &str, body: Option<Value>| {
        let mut request = http
            .request(method, format!("{url}{path}"))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { read(request.send().await.unwrap()).await }
    };
    api(
        &serve.url,
        Method::POST,
        "/v1/topics",
        Some(json!({"name": "t"})),
    )
    .await;
    let (_, created) = api(
        &serve.url,
        Method::POST,
        "/v1/streams",
        Some(json!({"topic": "t"})),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();

    // Publishers and a reader run; the host is killed in the middle.
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let publisher = {
        let (url, acknowledged, http) = (serve.url.clone(), acknowledged.clone(), http.clone());
        tokio::spawn(async move {
            for i in 0u64.. {
                let records = json!({"records": [{"key": format!("k{}", i % 13), "type": "x", "data": {"n": i}}]});
                let sent = http
                    .post(format!("{url}/v1/topics/t/records"))
                    .bearer_auth(TOKEN)
                    .json(&records)
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 201 => {
                        acknowledged.lock().unwrap().insert(i);
                    }
                    _ => return,
                }
            }
        })
    };
    let mut committed = 0;
    let mut cursor = String::new();
    while committed < 300 {
        let (status, batch) = api(
            &serve.url,
            Method::GET,
            &format!("/v1/streams/{id}/records?reader=r&limit=50&wait_ms=1000"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{batch}");
        committed += batch["records"].as_array().unwrap().len();
        cursor = batch["cursor"].as_str().unwrap().to_string();
        let (status, _) = api(
            &serve.url,
            Method::POST,
            &format!("/v1/streams/{id}/commit"),
            Some(json!({"reader": "r", "cursor": cursor})),
        )
        .await;
        assert_eq!(status, 200);
    }
    let mut serve = serve;
    serve.child.kill().unwrap();
    serve.child.wait().unwrap();
    publisher.await.unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() >= 300);

    let serve = Serve::start(&data, &load, &args);
    // Every acknowledged publish is there: read everything from the start.
    let (_, all) = api(
        &serve.url,
        Method::POST,
        "/v1/streams",
        Some(json!({"topic": "t"})),
    )
    .await;
    let all = all["id"].as_str().unwrap().to_string();
    let mut present = BTreeSet::new();
    loop {
        let (_, batch) = api(
            &serve.url,
            Method::GET,
            &format!("/v1/streams/{all}/records?reader=check&limit=1000"),
            None,
        )
        .await;
        let records = batch["records"].as_array().unwrap();
        if records.is_empty() {
            break;
        }
        present.extend(records.iter().map(|r| r["data"]["n"].as_u64().unwrap()));
        api(
            &serve.url,
            Method::POST,
            &format!("/v1/streams/{all}/commit"),
            Some(json!({"reader": "check", "cursor": batch["cursor"]})),
        )
        .await;
    }
    let lost: Vec<&u64> = acknowledged.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    // The reader's checkpoint survived, and nothing below it is missing.
    let (_, stream) = api(&serve.url, Method::GET, &format!("/v1/streams/{id}"), None).await;
    let before = switchyard::topics::cursor::Cursor::parse(&cursor).unwrap();
    for (p, next) in before.positions {
        assert_eq!(stream["committed"][p.to_string()], json!(next), "{stream}");
    }
    let (status, batch) = api(
        &serve.url,
        Method::GET,
        &format!("/v1/streams/{id}/records?reader=r&limit=1000"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let resumed: Vec<u64> = batch["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"]["n"].as_u64().unwrap())
        .collect();
    assert!(resumed.iter().all(|n| present.contains(n)));
    drop(serve);
}
