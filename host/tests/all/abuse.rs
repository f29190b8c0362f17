//! The public endpoints under abuse: rate limits per source address and per
//! hook (429 with `Retry-After`, nothing stored), a flood of bad deliveries
//! to one hook while other hooks' acknowledgements are timed, the cap on
//! recorded rejections, body limits (413 in the error shape) and the token
//! in front of `/metrics`.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode as Status};
use serde_json::{Value, json};
use switchyard::{config::ServeConfig, triggers::ingress::REJECTED_PER_FLOW};
use switchyard_tests as artifacts;

use crate::{
    fake_items::{API_KEY, WEBHOOK_SECRET, sign},
    support::{TOKEN, TestHost, config, error_message, read, wait_until},
};

/// A host with the example connector and a connection for its webhooks
/// (their flows only record skipped runs, so nothing calls out).
async fn host_with(dir: &Path, adjust: impl FnOnce(&mut ServeConfig)) -> TestHost {
    let mut cfg = config(dir);
    adjust(&mut cfg);
    let host = TestHost::start(cfg).await;
    let (status, body) = host.upload_file(artifacts::EXAMPLE).await;
    assert_eq!(status, 201, "{body}");
    host
}

/// An active webhook flow whose runs are skipped, on a connection of its
/// own (flows of one connection and trigger share one webhook URL); returns
/// (flow id, URL).
async fn hook(host: &TestHost, name: &str) -> (String, String) {
    // Nothing listens there: the flows' runs are skipped and never call out.
    let properties = json!({"base_url": "http://127.0.0.2:9", "api_key": API_KEY, "webhook_secret": WEBHOOK_SECRET});
    let connection = host.connect("example", properties).await;
    let (status, body) = host
        .call(
            Method::POST,
            "/v1/flows",
            Some(json!({
                "name": name,
                "trigger": {"plugin": "example", "trigger": "item-event", "connection": connection},
                "conditions": ["trigger.type == \"packed\""],
                "steps": [{"key": "create", "plugin": "example", "action": "create-item",
                           "connection": connection, "input": {"name": "{{ trigger.id }}"}}],
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let flow = body["id"].as_str().unwrap().to_string();
    let (status, body) = host
        .call(Method::POST, &format!("/v1/flows/{flow}/activate"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    (flow, body["webhook_url"].as_str().unwrap().to_string())
}

/// A correctly signed delivery (the flow records a skipped run).
fn good(client: &reqwest::Client, url: &str, id: &str) -> reqwest::RequestBuilder {
    let body = serde_json::to_vec(&json!({"id": id, "type": "shipped"})).unwrap();
    client
        .post(url)
        .header("x-event-id", id)
        .header("x-signature", sign(&body))
        .body(body)
}

/// A delivery the plugin rejects: the signature does not match.
fn bad(client: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("x-signature", "sha256=00")
        .body(body)
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
}

async fn rejected(host: &TestHost, flow: &str) -> usize {
    let (status, body) = host.get(&format!("/v1/flows/{flow}/deliveries")).await;
    assert_eq!(status, 200, "{body}");
    body["rejected"].as_array().unwrap().len()
}

async fn metrics(host: &TestHost) -> String {
    let response = reqwest::Client::new()
        .get(format!("{}/metrics", host.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// Sends requests made by `request` until one is not refused with 429.
async fn until_admitted(
    what: &str,
    request: impl Fn() -> reqwest::RequestBuilder,
) -> reqwest::Response {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let response = request().send().await.unwrap();
        if response.status() != 429 {
            return response;
        }
        assert!(Instant::now() < deadline, "{what} stayed refused");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_source_address_over_its_budget_gets_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    (cfg.source_rate, cfg.source_burst) = (1, 3);
    let host = TestHost::start(cfg).await;
    let client = reqwest::Client::new();
    let callback = format!("{}/oauth/callback", host.url);
    let unknown_hook = format!("{}/hooks/no-such-hook", host.url);

    // The OAuth callback and the hooks share the address's budget.
    let answers = [
        client.get(&callback).send().await.unwrap().status(),
        client.post(&unknown_hook).send().await.unwrap().status(),
        client.get(&callback).send().await.unwrap().status(),
    ];
    assert_eq!(answers, [400, 404, 400]);
    // Without trusted proxies, X-Forwarded-For is the client's word: ignored.
    let response = client
        .post(&unknown_hook)
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(retry_after(&response), Some(1));
    let (_, body) = read(response).await;
    let message = error_message(&body, "rate_limited");
    assert!(message.contains("this address"), "{message}");

    // The authenticated API and /health are not public: no budget there.
    assert_eq!(host.get("/v1/status").await.0, 200);
    assert_eq!(
        client
            .get(format!("{}/health", host.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Refused requests take nothing: the budget refills at its rate.
    let response = until_admitted("the callback", || client.get(&callback)).await;
    assert_eq!(response.status(), 400);
    let text = metrics(&host).await;
    assert!(
        text.lines().any(|l| l
            .strip_prefix("switchyard_rate_limited_total{limit=\"source\"} ")
            .is_some_and(|n| n.parse::<u64>().unwrap() >= 1)),
        "{text}"
    );
    host.stop().await;
}

#[tokio::test]
async fn behind_trusted_proxies_the_forwarded_address_is_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    (cfg.source_rate, cfg.source_burst) = (1, 2);
    cfg.trusted_proxy_hops = 1;
    let host = TestHost::start(cfg).await;
    let client = reqwest::Client::new();
    let url = format!("{}/hooks/no-such-hook", host.url);
    let from = |address: &str| {
        client
            .post(&url)
            .header("x-forwarded-for", format!("198.51.100.1, {address}"))
    };

    for _ in 0..2 {
        assert_eq!(from("203.0.113.7").send().await.unwrap().status(), 404);
    }
    assert_eq!(from("203.0.113.7").send().await.unwrap().status(), 429);
    // The client-written entry on the left does not matter; the proxy's does.
    assert_eq!(from("203.0.113.8").send().await.unwrap().status(), 404);
    // A request without the header counts against the peer (the proxy).
    assert_eq!(client.post(&url).send().await.unwrap().status(), 404);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hook_over_its_budget_gets_429_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), |cfg| {
        (cfg.hook_rate, cfg.hook_burst) = (1, 3);
        cfg.source_rate = 0;
    })
    .await;
    let (flooded, flooded_url) = hook(&host, "flooded").await;
    let (other, other_url) = hook(&host, "other").await;
    let client = reqwest::Client::new();

    for _ in 0..3 {
        let response = bad(&client, &flooded_url, b"{}".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
    }
    // Over the budget: refused, signed or not, and not recorded or run.
    for request in [
        bad(&client, &flooded_url, b"{}".to_vec()),
        good(&client, &flooded_url, "evt-refused"),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(retry_after(&response), Some(1));
        let (_, body) = read(response).await;
        let message = error_message(&body, "rate_limited");
        assert!(message.contains("webhook"), "{message}");
    }
    assert_eq!(rejected(&host, &flooded).await, 3);
    let (_, runs) = host.get(&format!("/v1/runs?flow={flooded}")).await;
    assert_eq!(runs["runs"], json!([]), "{runs}");

    // Another hook has its own budget.
    for n in 0..3 {
        let response = good(&client, &other_url, &format!("evt-{n}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    assert_eq!(rejected(&host, &other).await, 0);

    // The flooded hook takes deliveries again at its rate.
    let response = until_admitted("the flooded hook", || {
        good(&client, &flooded_url, "evt-later")
    })
    .await;
    assert_eq!(response.status(), 200);
    let text = metrics(&host).await;
    assert!(
        text.contains("switchyard_rate_limited_total{limit=\"hook\"}"),
        "{text}"
    );
    host.stop().await;
}

/// Apparent size of every file under `dir`.
fn size_of(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                size_of(&entry.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Times `n` signed deliveries, one after another, over `urls`.
async fn ack_latencies(urls: &[String], n: usize, tag: &str) -> Vec<Duration> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let response = good(&client, &urls[i % urls.len()], &format!("{tag}-{i}"))
            .send()
            .await
            .unwrap();
        // 202: on disk, handled later because every instance is busy.
        let status = response.status().as_u16();
        assert!(matches!(status, 200 | 202), "delivery {tag}-{i}: {status}");
        latencies.push(started.elapsed());
    }
    latencies.sort();
    latencies
}

/// What the flood's requests were answered.
#[derive(Default)]
struct FloodCounts {
    sent: AtomicUsize,
    refused: AtomicUsize,
    refused_without_retry_after: AtomicUsize,
    rejected_by_plugin: AtomicUsize,
    other: AtomicUsize,
}

/// Floods `url` with badly signed deliveries of `body` bytes at `rate` a
/// second (at most 256 in flight), each from a new address
/// (`X-Forwarded-For`), until `stop`. It runs on a thread of its own, as
/// another process would.
fn flood(
    url: String,
    rate: f64,
    body: usize,
    stop: Arc<AtomicBool>,
    counts: Arc<FloodCounts>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let client = reqwest::Client::builder().no_proxy().build().unwrap();
            let in_flight = Arc::new(tokio::sync::Semaphore::new(256));
            let started = Instant::now();
            let mut sent = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let due = (started.elapsed().as_secs_f64() * rate) as usize;
                while sent < due {
                    let permit = in_flight.clone().acquire_owned().await.unwrap();
                    let address = format!(
                        "10.{}.{}.{}",
                        (sent >> 16) & 255,
                        (sent >> 8) & 255,
                        sent & 255
                    );
                    let request =
                        bad(&client, &url, vec![b'x'; body]).header("x-forwarded-for", address);
                    let tally = counts.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        let counter = match request.send().await {
                            Ok(r) if r.status() == Status::TOO_MANY_REQUESTS => {
                                match retry_after(&r) {
                                    Some(_) => &tally.refused,
                                    None => &tally.refused_without_retry_after,
                                }
                            }
                            Ok(r) if r.status() == Status::BAD_REQUEST => &tally.rejected_by_plugin,
                            // Another status, or no answer at all.
                            _ => &tally.other,
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    });
                    sent += 1;
                    counts.sent.store(sent, Ordering::Relaxed);
                }
                // Pacing the offered load, not waiting for anything.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Every request sent is answered before the counts are read.
            let _ = in_flight.acquire_many(256).await.unwrap();
        });
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_deliveries_to_one_hook_neither_slows_the_others_nor_fills_the_disk() {
    // Its latency bounds need the machine without a browser beside it.
    let _alone = crate::support::machine().write().await;
    const HOOK_RATE: u32 = 100;
    const HOOK_BURST: u32 = 100;
    // Twenty times what the hook accepts, twice the ack target's load.
    const FLOOD_RATE: f64 = 2_000.0;
    const FLOOD_BODY: usize = 4 << 10;
    const SAMPLES: usize = 500;
    const WINDOWS: usize = 3;
    // The target is p99 <= 10 ms in a release build on a quiet machine
    // (BENCHMARKS.md). This is a debug build beside the rest of the suite on
    // two cores, where an unrelated test compiling a component stalls a
    // window for hundreds of milliseconds; so the bound here catches
    // starvation (a flood that takes the host down answers nothing), and
    // the figure itself is the benchmark's to measure.
    const P99_BOUND: Duration = Duration::from_millis(100);
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), |cfg| {
        // A burst of 100 (default 1,000) so the steady state comes quickly.
        (cfg.hook_rate, cfg.hook_burst) = (HOOK_RATE, HOOK_BURST);
        // The attacker's addresses come from X-Forwarded-For, a new one for
        // every request: only the hook's own limit holds it.
        cfg.trusted_proxy_hops = 1;
    })
    .await;
    let (flooded, flooded_url) = hook(&host, "flooded").await;
    // Enough other hooks that the timed deliveries stay within each one's
    // budget.
    let mut others = Vec::new();
    for n in 0..16 {
        others.push(hook(&host, &format!("other {n}")).await.1);
    }

    // Before the flood: warm up, then the figures to compare with.
    ack_latencies(&others, 32, "warm").await;
    let data = dir.path().join("data");
    let size_at_start = size_of(&data);
    let calm = ack_latencies(&others, SAMPLES, "calm").await;
    let size_before = size_of(&data);
    let calm_growth = size_before.saturating_sub(size_at_start);

    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(FloodCounts::default());
    let flooding = Instant::now();
    let attacker = flood(
        flooded_url,
        FLOOD_RATE,
        FLOOD_BODY,
        stop.clone(),
        counts.clone(),
    );
    wait_until("the flood is past the hook's burst", || {
        counts.refused.load(Ordering::Relaxed) >= 200
    })
    .await;
    // Windows of timed deliveries while the flood goes on: one is enough
    // when it meets the bound; a machine others share may stall one.
    let mut windows = Vec::new();
    for window in 0..WINDOWS {
        let latencies = ack_latencies(&others, SAMPLES, &format!("storm-{window}")).await;
        let p99 = percentile(&latencies, 0.99);
        windows.push(latencies);
        if p99 <= P99_BOUND {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || attacker.join().unwrap())
        .await
        .unwrap();
    let flood_secs = flooding.elapsed().as_secs_f64();

    let sent = counts.sent.load(Ordering::Relaxed);
    let refused = counts.refused.load(Ordering::Relaxed);
    let admitted = counts.rejected_by_plugin.load(Ordering::Relaxed);
    let growth = size_of(&data).saturating_sub(size_before);
    let (calm_p50, calm_p99) = (percentile(&calm, 0.5), percentile(&calm, 0.99));
    let during: Vec<String> = windows
        .iter()
        .map(|w| {
            format!(
                "p50 {:.2?} / p99 {:.2?} / max {:.2?}",
                percentile(w, 0.5),
                percentile(w, 0.99),
                w[w.len() - 1]
            )
        })
        .collect();
    eprintln!(
        "flood: {sent} requests in {flood_secs:.1} s ({:.0}/s), {refused} refused with 429, \
         {admitted} reached the plugin; other hooks' ack before: p50 {calm_p50:.2?} / p99 \
         {calm_p99:.2?}, during: {during:?} ({SAMPLES} deliveries each); data directory \
         +{} KiB during the flood, +{} KiB before",
        sent as f64 / flood_secs,
        growth >> 10,
        calm_growth >> 10,
    );

    assert_eq!(
        counts.other.load(Ordering::Relaxed),
        0,
        "flood requests answered with neither 429 nor 400"
    );
    assert_eq!(
        counts.refused_without_retry_after.load(Ordering::Relaxed),
        0,
        "every 429 says when to retry"
    );
    // The hook's budget is all the flood got through to the plugin and disk.
    let budget = f64::from(HOOK_BURST) + f64::from(HOOK_RATE) * flood_secs;
    assert!(
        (admitted as f64) <= budget * 1.05 + 5.0,
        "{admitted} deliveries admitted in {flood_secs:.1} s, budget {budget:.0}"
    );
    assert_eq!(sent, refused + admitted);
    // Each admitted one is recorded once (capped per flow); refused ones never.
    let recorded = rejected(&host, &flooded).await;
    if admitted <= REJECTED_PER_FLOW {
        assert_eq!(recorded, admitted, "recorded rejections");
    } else {
        assert!(
            (REJECTED_PER_FLOW..REJECTED_PER_FLOW + 300).contains(&recorded),
            "{recorded} rejections recorded of {admitted}"
        );
    }
    // What the flood added to the disk (beyond the other hooks' share: as
    // much per window as before the flood) is less than the refused bodies
    // alone would take.
    let flood_growth = growth.saturating_sub(calm_growth * windows.len() as u64);
    let refused_bytes = (refused * FLOOD_BODY) as u64;
    assert!(
        flood_growth < refused_bytes,
        "the flood grew the data directory by {flood_growth} bytes; its refused \
         deliveries carried {refused_bytes}"
    );
    // The other hooks kept their target.
    assert!(
        windows.iter().any(|w| percentile(w, 0.99) <= P99_BOUND),
        "other hooks' acks during the flood: {during:?} (before: p99 {calm_p99:?})"
    );
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_stay_capped_per_flow_between_retention_passes() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), |cfg| {
        (cfg.hook_rate, cfg.source_rate) = (0, 0);
    })
    .await;
    let (flow, url) = hook(&host, "garbage").await;
    let total = REJECTED_PER_FLOW + 500;
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|_| {
            let (url, next) = (url.clone(), next.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let response = bad(&client, &url, vec![b'x'; 1 << 10])
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status(), 400);
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let recorded = rejected(&host, &flow).await;
    // Trimmed at one rejection in 16: a few dozen over at most, in all
    // likelihood; 300 over would take 300 rejections in a row without one.
    assert!(
        (REJECTED_PER_FLOW..REJECTED_PER_FLOW + 300).contains(&recorded),
        "{recorded} rejections kept after {total}"
    );
    host.stop().await;
}

#[tokio::test]
async fn oversized_bodies_get_413_in_the_error_shape() {
    let dir = tempfile::tempdir().unwrap();
    let host = host_with(dir.path(), |cfg| {
        cfg.max_request_kib = 16;
        cfg.max_upload_mib = 1;
        cfg.max_delivery_kib = 8;
    })
    .await;
    let (flow, hook_url) = hook(&host, "small").await;
    let client = reqwest::Client::new();
    let api = |method: Method, path: &str| {
        client
            .request(method, format!("{}{path}", host.url))
            .bearer_auth(TOKEN)
    };
    let too_large = |status: Status, body: &Value| {
        assert_eq!(status, 413, "{body}");
        error_message(body, "payload_too_large")
    };

    // JSON and text bodies of the API, with a length and streamed.
    let big_flow = format!("name: {}", "x".repeat(32 << 10));
    let (status, body) = read(
        api(Method::POST, "/v1/flows")
            .body(big_flow.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    too_large(status, &body);
    let chunks = big_flow
        .into_bytes()
        .chunks(1024)
        .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
        .collect::<Vec<_>>();
    let streamed = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let (status, body) = read(
        api(Method::POST, "/v1/flows/apply")
            .body(streamed)
            .send()
            .await
            .unwrap(),
    )
    .await;
    too_large(status, &body);
    let (status, body) = read(
        api(Method::POST, "/v1/connections")
            .json(&json!({"plugin": "example", "name": "x".repeat(32 << 10)}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    too_large(status, &body);
    // Under the limit, the body is read and judged.
    let (status, body) = read(
        api(Method::POST, "/v1/flows")
            .body("name: [")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // Without a token, nothing is read: 401.
    let (status, body) = read(
        client
            .post(format!("{}/v1/flows", host.url))
            .body(vec![b'x'; 32 << 10])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{body}");

    // Plugin uploads have their own, larger limit.
    let (status, body) = read(
        api(Method::POST, "/v1/plugins")
            .body(vec![0u8; 64 << 10])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        status, 422,
        "over the JSON limit, under the upload limit: {body}"
    );
    let (status, body) = read(
        api(Method::POST, "/v1/plugins")
            .body(vec![0u8; 2 << 20])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let message = too_large(status, &body);
    assert!(!message.is_empty());

    // Webhook deliveries: 413, and recorded for the flow's owner.
    let (status, body) = read(
        client
            .post(&hook_url)
            .body(vec![b'x'; 16 << 10])
            .send()
            .await
            .unwrap(),
    )
    .await;
    let message = too_large(status, &body);
    assert!(message.contains("8 KiB"), "{message}");
    assert_eq!(rejected(&host, &flow).await, 1);

    // Other refusals axum makes itself have the shape too.
    let (status, body) = read(api(Method::DELETE, "/v1/status").send().await.unwrap()).await;
    assert_eq!(status, 405, "{body}");
    error_message(&body, "method_not_allowed");
    host.stop().await;
}

#[tokio::test]
async fn metrics_need_the_operator_or_metrics_token_unless_public() {
    const METRICS_TOKEN: &str = "scrape-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.metrics_token = Some(METRICS_TOKEN.to_string());
    let host = TestHost::start(cfg).await;
    let client = reqwest::Client::new();
    let url = format!("{}/metrics", host.url);

    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let (_, body) = read(response).await;
    error_message(&body, "unauthorized");
    let response = client
        .get(&url)
        .bearer_auth("not-the-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    // A tenant's token is valid, but the figures cover every tenant.
    let (status, body) = host
        .call(Method::POST, "/v1/tenants", Some(json!({"name": "Acme"})))
        .await;
    assert_eq!(status, 201, "{body}");
    let tenant_token = body["token"].as_str().unwrap();
    let (status, body) = read(
        client
            .get(&url)
            .bearer_auth(tenant_token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    error_message(&body, "forbidden");

    for token in [TOKEN, METRICS_TOKEN] {
        let response = client.get(&url).bearer_auth(token).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        assert!(text.contains("switchyard_queue_depth"), "{text}");
    }
    // The metrics token opens nothing else.
    let response = client
        .get(format!("{}/v1/status", host.url))
        .bearer_auth(METRICS_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    host.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.public_metrics = true;
    let host = TestHost::start(cfg).await;
    let response = client
        .get(format!("{}/metrics", host.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("switchyard_queue_depth")
    );
    host.stop().await;
}
