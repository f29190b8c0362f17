//! Several hosts on one PostgreSQL database, as real `switchyard serve`
//! child processes (each with its own data directory, so its own compiled
//! artifacts): webhook deliveries sent round-robin to three hosts run once
//! each; a cron flow fires once per second whatever the number of hosts; a
//! polling trigger is polled by one host at a time; the runs a host had
//! claimed when it is killed with SIGKILL finish on the others, with no
//! effect applied twice; and a poll owner frozen with SIGSTOP past its
//! lease has its late writes refused when SIGCONT wakes it.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::{
    fake_items::{FakeItems, sign},
    support::{TOKEN, client, metrics, pg, read, serve::Serve, wait_until},
};

/// Hosts sharing one fresh database of the test cluster.
struct Cluster {
    database: String,
    dir: tempfile::TempDir,
    load: PathBuf,
    lease_secs: u64,
    nodes: Vec<Option<Serve>>,
}

impl Cluster {
    /// `n` hosts, `node-0`..: silent for `lease_secs`, a host is taken over.
    async fn start(n: usize, lease_secs: u64) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let load = dir.path().join("connectors");
        std::fs::create_dir(&load).unwrap();
        std::fs::copy(artifacts::EXAMPLE, load.join("example.wasm")).unwrap();
        std::fs::copy(artifacts::FIXTURE_BENCH, load.join("bench.wasm")).unwrap();
        let mut cluster = Cluster {
            database: pg::fresh_database().await,
            dir,
            load,
            lease_secs,
            nodes: Vec::new(),
        };
        for i in 0..n {
            let node = cluster.spawn(i);
            cluster.nodes.push(Some(node));
        }
        cluster
    }

    fn spawn(&self, i: usize) -> Serve {
        let data = self.dir.path().join(format!("node-{i}"));
        let (name, lease) = (format!("node-{i}"), self.lease_secs.to_string());
        Serve::start(
            &data,
            &self.load,
            &[
                "--store",
                &self.database,
                "--node",
                &name,
                "--node-lease-secs",
                &lease,
                "--master-key",
                pg::MASTER_KEY,
                "--token",
                TOKEN,
                "--allow-network",
                "127.0.0.2/32",
                // What is tested is the hosts together, not the public
                // endpoints' rate limits or a third party's connection cap.
                "--hook-rate",
                "0",
                "--source-rate",
                "0",
                "--connection-concurrency",
                "64",
                // A host frozen mid-call must not time the call out itself.
                "--call-timeout-ms",
                "120000",
                "--http-timeout-ms",
                "120000",
            ],
        )
    }

    fn node(&self, i: usize) -> &Serve {
        self.nodes[i].as_ref().expect("the host is running")
    }

    fn url(&self, i: usize) -> String {
        self.node(i).url.clone()
    }

    /// Sends `signal` (`KILL`, `STOP`, `CONT`) to host `i`.
    fn signal(&self, i: usize, signal: &str) {
        let pid = self.node(i).child.id().to_string();
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} {pid}");
    }

    fn index_of(&self, name: &str) -> usize {
        name.strip_prefix("node-")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("`{name}` is not one of the test's hosts"))
    }
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

async fn post(url: &str, path: &str, body: Value) -> Value {
    api(url, reqwest::Method::POST, path, body).await
}

async fn connection(url: &str, plugin: &str, fake: &FakeItems) -> String {
    let body = json!({"plugin": plugin, "properties": fake.properties()});
    post(url, "/v1/connections", body).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Publishes and activates `flow`; returns its id and activation.
async fn activate(url: &str, flow: Value) -> (String, Value) {
    let id = post(url, "/v1/flows", flow).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let active = post(url, &format!("/v1/flows/{id}/activate"), json!({})).await;
    (id, active)
}

/// A flow whose every webhook delivery sends one item to the fake (with
/// the step's idempotency key).
async fn webhook_flow(url: &str, conn: &str) -> (String, String) {
    let (flow, active) = activate(
        url,
        json!({
            "name": "Every delivery sends an item",
            "lane": "fast",
            "trigger": {"plugin": "bench", "trigger": "event", "connection": conn},
            "steps": [{"key": "send", "plugin": "bench", "action": "send", "connection": conn,
                       "input": {"event": "{{ trigger.id }}"},
                       "retry": {"initial_delay_ms": 100, "max_delay_ms": 500}}],
        }),
    )
    .await;
    let hook = active["webhook_url"].as_str().unwrap();
    (flow, hook[hook.find("/hooks/").unwrap()..].to_string())
}

/// Each event applied at the fake and the idempotency keys it came with;
/// fails if any event was applied under more than one key.
fn applied_once(fake: &FakeItems) -> HashMap<String, String> {
    let mut by_event: HashMap<String, HashSet<String>> = HashMap::new();
    let created = fake.created();
    for (key, body) in &created {
        by_event
            .entry(body["event"].as_str().unwrap_or_default().to_string())
            .or_default()
            .insert(key.clone());
    }
    assert_eq!(
        created.len(),
        by_event.len(),
        "an event's item was created twice"
    );
    by_event
        .into_iter()
        .map(|(event, keys)| (event, keys.into_iter().next().unwrap()))
        .collect()
}

async fn wait_applied(fake: &FakeItems, events: &HashSet<String>, deadline: Duration) {
    let until = Instant::now() + deadline;
    loop {
        let applied = applied_once(fake);
        let missing = events.iter().filter(|e| !applied.contains_key(*e)).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < until,
            "{missing} of {} events never reached the fake",
            events.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no run of `flow` is queued or waiting for a retry.
async fn wait_drained(url: &str, flow: &str) {
    let deadline = Instant::now() + Duration::from_secs(120);
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Posts delivery `n` to `url` and says whether it was acknowledged.
async fn deliver(http: &reqwest::Client, url: &str, n: usize) -> bool {
    let id = format!("evt-{n}");
    let body = serde_json::to_vec(&json!({"id": id, "type": "packed"})).unwrap();
    http.post(url)
        .header("x-event-id", &id)
        .header("x-signature", sign(&body))
        .body(body)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_deliveries_to_three_hosts_run_exactly_once() {
    const TOTAL: usize = 10_000;
    let fake = FakeItems::start().await;
    let cluster = Cluster::start(3, 10).await;
    let conn = connection(&cluster.url(0), "bench", &fake).await;
    let (flow, path) = webhook_flow(&cluster.url(0), &conn).await;

    // Round-robin: delivery n goes to host n % 3.
    let urls: Arc<Vec<String>> = Arc::new(
        (0..3)
            .map(|i| format!("{}{path}", cluster.url(i)))
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..24)
        .map(|_| {
            let (urls, next, http) = (urls.clone(), next.clone(), client());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= TOTAL {
                        break;
                    }
                    assert!(
                        deliver(&http, &urls[n % 3], n).await,
                        "delivery {n} was refused"
                    );
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let events: HashSet<String> = (0..TOTAL).map(|n| format!("evt-{n}")).collect();
    wait_applied(&fake, &events, Duration::from_secs(600)).await;
    wait_drained(&cluster.url(1), &flow).await;
    let applied = applied_once(&fake);
    assert_eq!(applied.len(), TOTAL, "items for events nobody sent");
    // One run per event, each with its own idempotency key.
    let keys: HashSet<&String> = applied.values().collect();
    assert_eq!(keys.len(), TOTAL);
    // Every host executed runs (each processes what it accepted).
    for i in 0..3 {
        let text = metrics::scrape(&client(), &cluster.url(i), TOKEN).await;
        let done = metrics::sample(&text, "switchyard_runs_total{status=\"succeeded\"}")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        assert!(done > 0.0, "host {i} ran nothing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_flow_every_second_fires_once_per_second_across_three_hosts() {
    let fake = FakeItems::start().await;
    let cluster = Cluster::start(3, 10).await;
    let conn = connection(&cluster.url(0), "bench", &fake).await;
    let (flow, _) = activate(
        &cluster.url(0),
        json!({
            "name": "Every second",
            "trigger": {"schedule": "* * * * * *"},
            "steps": [{"key": "send", "plugin": "bench", "action": "send", "connection": conn,
                       "input": {"event": "{{ trigger.scheduled_at }}"}}],
        }),
    )
    .await;
    // Slots are whole seconds: collect until the first 30 are all applied
    // and the one after them too (so the last of the 30 had its chance).
    let deadline = Instant::now() + Duration::from_secs(120);
    let slots = loop {
        let slots: Vec<chrono::DateTime<chrono::Utc>> = {
            let mut s: Vec<_> = applied_once(&fake)
                .into_keys()
                .map(|at| at.parse().expect("an RFC 3339 slot"))
                .collect();
            s.sort();
            s
        };
        if slots.len() > 32 {
            break slots;
        }
        assert!(
            Instant::now() < deadline,
            "only {} slots fired",
            slots.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    post(
        &cluster.url(2),
        &format!("/v1/flows/{flow}/deactivate"),
        json!({}),
    )
    .await;
    // Thirty seconds from the first whole-second slot (activation may
    // fire once at once): thirty runs, one per second.
    let first = *slots
        .iter()
        .find(|at| at.timestamp_subsec_millis() == 0)
        .expect("a whole-second slot");
    let window: Vec<_> = slots
        .iter()
        .filter(|at| **at >= first && **at < first + chrono::Duration::seconds(30))
        .collect();
    let expected: Vec<_> = (0..30)
        .map(|s| first + chrono::Duration::seconds(s))
        .collect();
    assert_eq!(
        window,
        expected.iter().collect::<Vec<_>>(),
        "not one run per second"
    );
    let runs = api(
        &cluster.url(1),
        reqwest::Method::GET,
        &format!("/v1/runs?flow={flow}&limit=500"),
        json!({}),
    )
    .await;
    let ids: Vec<&str> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let unique: HashSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a run listed twice");
    assert!(ids.len() >= 30, "{} runs", ids.len());
}

/// A polling flow on the example connector, its feed at `feed` and its
/// items sent to `sink`.
async fn polling_flow(url: &str, feed: &FakeItems, sink: &FakeItems) -> String {
    let source = connection(url, "example", feed).await;
    let target = connection(url, "bench", sink).await;
    activate(
        url,
        json!({
            "name": "New items are sent on",
            "trigger": {"plugin": "example", "trigger": "new-item", "connection": source,
                        "interval_secs": 1},
            "steps": [{"key": "send", "plugin": "bench", "action": "send", "connection": target,
                       "input": {"event": "{{ trigger.id }}"}}],
        }),
    )
    .await
    .0
}

/// Which host holds the lease of `flow`'s trigger, and at which epoch.
async fn lease_of(database: &str, flow: &str) -> Option<(String, i64)> {
    let rows = pg::query(
        database,
        &format!("SELECT owner, epoch FROM trigger_leases WHERE flow = '{flow}'"),
    )
    .await;
    rows.first().map(|r| (r.get(0), r.get(1)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_never_poll_a_trigger_twice_at_once() {
    let (feed, sink) = (FakeItems::start().await, FakeItems::start().await);
    // A slow feed: overlapping polls would be in flight together.
    feed.set_latency(Duration::from_millis(300));
    let cluster = Cluster::start(3, 10).await;
    let flow = polling_flow(&cluster.url(0), &feed, &sink).await;
    let mut added = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut n = 0;
    while feed.polls() < 12 {
        assert!(Instant::now() < deadline, "only {} polls", feed.polls());
        n += 1;
        let id = format!("item-{n}");
        feed.add_to_feed(&id);
        added.insert(id);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(feed.max_in_flight(), 1, "two polls were in flight at once");
    let (owner, epoch) = lease_of(&cluster.database, &flow).await.unwrap();
    assert_eq!(epoch, 1, "the lease never changed hands ({owner})");
    // The items polled after the first (seeding) poll ran once each.
    let applied = applied_once(&sink);
    assert!(!applied.is_empty(), "no polled item ran");
    assert!(applied.keys().all(|id| added.contains(id)), "{applied:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_claimed_by_a_killed_host_finish_on_the_others_once() {
    let fake = FakeItems::start().await;
    // Held: the runs stay claimed, mid-step, until the test lets them go.
    fake.hold(|r| r.method == "POST");
    let mut cluster = Cluster::start(3, 2).await;
    let conn = connection(&cluster.url(0), "bench", &fake).await;
    let (flow, path) = webhook_flow(&cluster.url(0), &conn).await;
    let http = client();
    for n in 0..30 {
        let url = format!("{}{path}", cluster.url(n % 3));
        assert!(deliver(&http, &url, n).await, "delivery {n} refused");
    }
    wait_until("every host holds runs mid-step", || fake.held() >= 6).await;
    let claims = pg::query(
        &cluster.database,
        "SELECT owner, count(*) FROM run_queue WHERE owner IS NOT NULL
         GROUP BY owner ORDER BY count(*) DESC, owner",
    )
    .await;
    let (victim, held): (String, i64) = (claims[0].get(0), claims[0].get(1));
    assert!(held > 0);
    let victim = cluster.index_of(&victim);
    cluster.signal(victim, "KILL");
    let mut gone = cluster.nodes[victim].take().unwrap();
    gone.child.wait().unwrap();
    // Its calls may still reach the fake (as a real API would get them):
    // the retries on the other hosts carry the same idempotency keys.
    fake.release();
    let events: HashSet<String> = (0..30).map(|n| format!("evt-{n}")).collect();
    wait_applied(&fake, &events, Duration::from_secs(120)).await;
    let survivor = (victim + 1) % 3;
    wait_drained(&cluster.url(survivor), &flow).await;
    let applied = applied_once(&fake);
    assert_eq!(applied.len(), 30);
    // Every step's key is its run's: a re-run after the takeover reused it.
    for (event, key) in &applied {
        let run = api(
            &cluster.url(survivor),
            reqwest::Method::GET,
            &format!("/v1/runs?flow={flow}&limit=500"),
            json!({}),
        )
        .await["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["event_id"] == json!(event))
            .cloned()
            .unwrap_or_else(|| panic!("no run for {event}"));
        assert_eq!(run["status"], json!("succeeded"), "{run}");
        assert!(key.starts_with(run["id"].as_str().unwrap()), "{key} {run}");
    }
    drop(gone);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poll_owner_frozen_past_its_lease_has_its_late_writes_refused() {
    let (feed, sink) = (FakeItems::start().await, FakeItems::start().await);
    let cluster = Cluster::start(3, 2).await;
    let flow = polling_flow(&cluster.url(0), &feed, &sink).await;
    // Seeded, and polling.
    wait_until("the trigger is polled", || feed.polls() >= 2).await;
    let (owner, epoch) = lease_of(&cluster.database, &flow).await.unwrap();
    let frozen = cluster.index_of(&owner);

    // The owner's next poll is held at the feed; the feed then has an item
    // that is gone again before anyone else reads it.
    feed.hold(|r| r.method == "GET" && r.path == "/items");
    wait_until("the owner's poll is in flight", || feed.held() == 1).await;
    cluster.signal(frozen, "STOP");
    feed.add_to_feed("late-item");
    feed.release();
    // The answer (with the item) waits in the frozen host's socket.
    wait_until("the held poll was answered", || feed.held() == 0).await;
    feed.remove_from_feed("late-item");

    // Past its lease, another host takes the trigger over, a new epoch.
    let deadline = Instant::now() + Duration::from_secs(60);
    let taker = loop {
        if let Some((holder, now)) = lease_of(&cluster.database, &flow).await
            && holder != owner
        {
            assert!(now > epoch, "the takeover kept epoch {now}");
            break holder;
        }
        assert!(Instant::now() < deadline, "nobody took the trigger over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let polls = feed.polls();
    wait_until("the new owner polls", || feed.polls() > polls).await;

    // Woken, the old owner finishes its poll: its events and cursor are
    // refused (a failed poll in its metrics), and nothing of it runs.
    cluster.signal(frozen, "CONT");
    let url = cluster.url(frozen);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = metrics::scrape(&client(), &url, TOKEN).await;
        let failed = metrics::sample(&text, "switchyard_polls_total{outcome=\"error\"}")
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
        if failed >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the late poll was not refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let runs = api(
        &cluster.url(cluster.index_of(&taker)),
        reqwest::Method::GET,
        &format!("/v1/runs?flow={flow}&limit=500"),
        json!({}),
    )
    .await;
    let late: Vec<&Value> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["event_id"]
                .as_str()
                .unwrap_or_default()
                .contains("late-item")
        })
        .collect();
    assert!(
        late.is_empty(),
        "the frozen host's late poll made runs: {late:?}"
    );
    let (holder, _) = lease_of(&cluster.database, &flow).await.unwrap();
    assert_eq!(holder, taker, "the woken host took the trigger back");
}
