//! The crash test: `switchyard serve` is killed with SIGKILL in the middle of
//! a load of webhook deliveries and started again on the same data
//! directory. Every delivery that was acknowledged must reach the fake's
//! action exactly once (checked by idempotency key), and none twice.

use std::{
    collections::{HashMap, HashSet},
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
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
    support::{TOKEN, client, read},
};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data_dir: &Path, load_dir: &Path) -> Server {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--allow-network",
            "127.0.0.2/32",
            "--token",
            TOKEN,
            "--data-dir",
        ])
        .arg(data_dir)
        .arg("--load-dir")
        .arg(load_dir)
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
    Server { child, url }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deliveries_complete_exactly_once_across_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let (data, load) = (dir.path().join("data"), dir.path().join("connectors"));
    std::fs::create_dir(&load).unwrap();
    std::fs::copy(artifacts::EXAMPLE, load.join("example.wasm")).unwrap();
    let fake = FakeItems::start().await;

    let mut server = serve(&data, &load);
    let conn = api(
        &server.url,
        reqwest::Method::POST,
        "/v1/connections",
        json!({"plugin": "example", "properties": fake.properties()}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let flow = api(&server.url, reqwest::Method::POST, "/v1/flows", json!({
        "name": "Every delivery creates an item",
        "trigger": {"plugin": "example", "trigger": "item-event", "connection": conn},
        "steps": [{"key": "create", "plugin": "example", "action": "create-item", "connection": conn,
                   "input": {"event": "{{ trigger.id }}"}, "retry": {"initial_delay_ms": 100, "max_delay_ms": 500}}],
    }))
    .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let hook = api(
        &server.url,
        reqwest::Method::POST,
        &format!("/v1/flows/{flow}/activate"),
        json!({}),
    )
    .await["webhook_url"]
        .as_str()
        .unwrap()
        .to_string();
    let path = hook[hook.find("/hooks/").unwrap()..].to_string();

    // Load: 32 senders; the host is killed once 150 deliveries are acknowledged.
    const TOTAL: usize = 600;
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let base = server.url.clone();
    let senders: Vec<_> = (0..32)
        .map(|_| {
            let (acked, next, base, path) =
                (acked.clone(), next.clone(), base.clone(), path.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .unwrap();
                loop {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= TOTAL {
                        break;
                    }
                    let id = format!("evt-{n}");
                    let body = serde_json::to_vec(&json!({"id": id, "type": "packed"})).unwrap();
                    let response = client
                        .post(format!("{base}{path}"))
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
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 150 {
        assert!(Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    for sender in senders {
        sender.await.unwrap();
    }
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
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = api(
            &server.url,
            reqwest::Method::GET,
            &format!("/v1/runs?flow={flow}&status=queued"),
            json!({}),
        )
        .await;
        let retrying = api(
            &server.url,
            reqwest::Method::GET,
            &format!("/v1/runs?flow={flow}&status=retrying"),
            json!({}),
        )
        .await;
        if runs["runs"].as_array().unwrap().is_empty()
            && retrying["runs"].as_array().unwrap().is_empty()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the queue did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut keys_per_event: HashMap<String, HashSet<String>> = HashMap::new();
    for (key, body) in fake.created() {
        keys_per_event
            .entry(body["event"].as_str().unwrap().to_string())
            .or_default()
            .insert(key);
    }
    for (event, keys) in &keys_per_event {
        assert_eq!(
            keys.len(),
            1,
            "{event} was applied under several keys: {keys:?}"
        );
    }
    let applied_total = fake.created().len();
    assert_eq!(
        applied_total,
        keys_per_event.len(),
        "a key was applied twice"
    );
    assert!(applied_total >= acked.len());
}
