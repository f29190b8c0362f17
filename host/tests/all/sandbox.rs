//! The HTTP sandbox against a hostile plugin: forbidden addresses, hosts
//! outside the allow-list, redirects, huge and endless responses, and
//! attempts to set or see credentials. Fakes listen on 127.0.0.2, the only
//! network these hosts allow, so 127.0.0.1 stays forbidden.

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::get,
};
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::support::{TestHost, fake::Server, sandbox_config};

pub const SECRET: &str = "sy-secret-token-5f2d9c1e";

#[derive(Default, Clone)]
struct Seen {
    authorization: Arc<Mutex<Vec<Option<String>>>>,
    cookies: Arc<Mutex<Vec<Option<String>>>>,
}

fn probe_api(seen: Seen, forbidden_origin: String) -> Router {
    let header =
        |h: &HeaderMap, n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    Router::new()
        .route(
            "/ok",
            get(move |headers: HeaderMap| async move {
                seen.authorization
                    .lock()
                    .unwrap()
                    .push(header(&headers, "authorization"));
                seen.cookies
                    .lock()
                    .unwrap()
                    .push(header(&headers, "cookie"));
                "ok"
            }),
        )
        .route(
            "/redirect",
            get(move || async move {
                Response::builder()
                    .status(StatusCode::FOUND)
                    .header("location", format!("{forbidden_origin}/ok"))
                    .body(Body::empty())
                    .unwrap()
            }),
        )
        // 20 MiB, streamed without a Content-Length, over the 16 MiB cap.
        .route(
            "/huge",
            get(|| async {
                let chunks = futures::stream::iter(
                    (0..20).map(|_| Ok::<_, Infallible>(vec![b'x'; 1 << 20])),
                );
                Body::from_stream(chunks)
            }),
        )
        .route("/hang", get(std::future::pending::<&'static str>))
}

async fn call(host: &TestHost, connection: &str, url: &str, headers: Value) -> Value {
    let (status, body) = host
        .call(
            reqwest::Method::POST,
            "/v1/invoke",
            Some(json!({
                "plugin": "hostile",
                "action": "http",
                "connection": connection,
                "input": {"method": "GET", "url": url, "headers": headers},
            })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn connection(host: &TestHost, target: &str) -> String {
    let properties = json!({"token": SECRET, "target": target});
    host.connect("hostile", properties).await
}

fn denied(body: &Value) -> String {
    assert_eq!(body["output"]["error"]["kind"], json!("denied"), "{body}");
    body["output"]["error"]["message"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_plugin_is_contained() {
    let seen = Seen::default();
    // A server on 127.0.0.1 that must never be reached.
    let forbidden = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let forbidden_origin = format!("http://{}", forbidden.local_addr().unwrap());
    let server = Server::start(probe_api(seen.clone(), forbidden_origin.clone())).await;
    let origin = server.origin.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = sandbox_config(dir.path());
    // Far beyond the request timeout (1 s), so a hang is cut off by that.
    cfg.call_timeout_ms = 30_000;
    let host = TestHost::start(cfg).await;
    host.upload_file(artifacts::FIXTURE_HOSTILE).await;
    host.upload_file(artifacts::EXAMPLE).await;

    // Forbidden addresses, each behind an allow-list entry so that the address
    // policy (not the allow-list) is what refuses them.
    let port = forbidden.local_addr().unwrap().port();
    let cases = [
        (format!("http://127.0.0.1:{port}"), "127.0.0.1 is loopback"),
        (
            format!("http://localhost:{port}"),
            "localhost resolves to a refused address",
        ),
        (format!("http://[::1]:{port}"), "::1 is loopback"),
        ("http://10.0.0.1".to_string(), "10.0.0.1 is private"),
        (
            "http://169.254.169.254".to_string(),
            "169.254.169.254 is a cloud metadata address",
        ),
        (
            "http://[::ffff:169.254.169.254]".to_string(),
            "IPv4 special address in IPv6 form",
        ),
    ];
    for (target, reason) in cases {
        let id = connection(&host, &target).await;
        let body = call(
            &host,
            &id,
            &format!("{target}/latest/meta-data/"),
            json!({}),
        )
        .await;
        let message = denied(&body);
        assert!(message.contains(reason), "{target}: {message}");
    }

    let id = connection(&host, &origin).await;
    // Outside the allow-list.
    let message = denied(&call(&host, &id, "https://example.com/", json!({})).await);
    assert!(
        message.contains("not in this plugin's allowed hosts"),
        "{message}"
    );
    // The same host on another port is another origin.
    let other_port = origin
        .rsplit_once(':')
        .map(|(h, _)| format!("{h}:1"))
        .unwrap();
    denied(&call(&host, &id, &format!("{other_port}/ok"), json!({})).await);

    // Redirects come back to the plugin; following one is a new, checked request.
    let body = call(&host, &id, &format!("{origin}/redirect"), json!({})).await;
    assert_eq!(body["output"]["status"], json!(302), "{body}");
    let location = body["output"]["headers"]["location"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(location.starts_with(&forbidden_origin));
    denied(&call(&host, &id, &location, json!({})).await);

    // A response over the cap is cut off.
    let body = call(&host, &id, &format!("{origin}/huge"), json!({})).await;
    assert_eq!(
        body["output"]["error"]["kind"],
        json!("too-large"),
        "{body}"
    );

    // A server that never answers is cut off at the request timeout (1 s here),
    // well before the call's own deadline (30 s).
    let started = Instant::now();
    let body = call(&host, &id, &format!("{origin}/hang"), json!({})).await;
    assert_eq!(body["output"]["error"]["kind"], json!("timeout"), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );

    // The plugin's own Authorization and Cookie are dropped; the host's is sent.
    let body = call(
        &host,
        &id,
        &format!("{origin}/ok"),
        json!({"Authorization": "Bearer chosen-by-the-plugin", "Cookie": "session=stolen"}),
    )
    .await;
    assert_eq!(body["output"]["status"], json!(200), "{body}");
    assert_eq!(
        seen.authorization
            .lock()
            .unwrap()
            .last()
            .unwrap()
            .as_deref(),
        Some(&*format!("Bearer {SECRET}"))
    );
    assert_eq!(seen.cookies.lock().unwrap().last().unwrap(), &None);
    assert!(
        !body.to_string().contains(SECRET),
        "the secret leaked into the result: {body}"
    );

    // Nothing reached the forbidden server: it never accepted a connection.
    let accepted = tokio::time::timeout(Duration::from_millis(50), forbidden.accept()).await;
    assert!(accepted.is_err(), "a request reached 127.0.0.1");

    // Other plugins were never disturbed.
    let (_, body) = host
        .invoke("example", "echo", json!({"still": "fine"}), json!({}))
        .await;
    assert_eq!(body["output"], json!({"echo": {"still": "fine"}}));
    drop(server);
    host.stop().await;
}

#[tokio::test]
async fn a_plugin_that_reports_all_it_observes_never_sees_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(sandbox_config(dir.path())).await;
    host.upload_file(artifacts::FIXTURE_HOSTILE).await;
    let id = connection(&host, "http://127.0.0.2:9").await;
    let (status, body) = host
        .call(
            reqwest::Method::POST,
            "/v1/invoke",
            Some(json!({"plugin": "hostile", "action": "observe", "connection": id, "input": {}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let observed = &body["output"];
    assert_eq!(
        observed["ctx"]["connection"]["properties"],
        json!({"target": "http://127.0.0.2:9"}),
        "{body}"
    );
    assert_eq!(observed["env_vars"], json!({}));
    assert_eq!(observed["args"], json!([]));
    for place in ["list_root", "read_passwd", "tcp_connect"] {
        assert!(
            observed[place]["error"].is_string(),
            "{place} should fail: {observed}"
        );
    }
    assert!(
        !body.to_string().contains(SECRET),
        "the secret leaked: {body}"
    );

    // The API never shows it either.
    let (_, shown) = host.get(&format!("/v1/connections/{id}")).await;
    assert_eq!(shown["secrets"]["token"], json!("********"), "{shown}");
    assert!(!shown.to_string().contains(SECRET));
    let (_, listed) = host.get("/v1/connections").await;
    assert!(!listed.to_string().contains(SECRET));
    host.stop().await;

    // Nor is it anywhere in the data directory in clear text.
    let mut files = vec![dir.path().to_path_buf()];
    let mut scanned = 0;
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else {
            let bytes = std::fs::read(&path).unwrap();
            scanned += 1;
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "{} holds the secret in clear text",
                path.display()
            );
        }
    }
    assert!(scanned > 3, "the data directory was not scanned");
}

#[tokio::test]
async fn connections_are_validated_and_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(sandbox_config(dir.path())).await;
    host.upload_file(artifacts::EXAMPLE).await;
    let create = |properties: Value| {
        host.call(
            reqwest::Method::POST,
            "/v1/connections",
            Some(json!({"plugin": "example", "name": "Acme", "properties": properties})),
        )
    };
    let (status, body) = create(json!({"base_url": "http://127.0.0.2:1"})).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`api_key` (API key) is required"),
        "{body}"
    );
    let (status, body) = create(json!({"base_url": 42, "api_key": "k-123456", "nope": 1})).await;
    assert_eq!(status, 400);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("`nope` is not a property of example"),
        "{message}"
    );
    assert!(message.contains("property `base_url`"), "{message}");
    let (status, body) = create(json!({"base_url": "http://127.0.0.2:1", "api_key": 12345})).await;
    assert_eq!(status, 400);
    assert!(
        !body.to_string().contains("12345"),
        "a secret's value is not echoed: {body}"
    );

    let (status, created) =
        create(json!({"base_url": "http://127.0.0.2:1", "api_key": "k-abcdef"})).await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    assert_eq!(
        created["properties"],
        json!({"base_url": "http://127.0.0.2:1"})
    );
    assert_eq!(created["secrets"], json!({"api_key": "********"}));

    let (status, updated) = host
        .call(
            reqwest::Method::PATCH,
            &format!("/v1/connections/{id}"),
            Some(json!({"name": "Acme EU", "properties": {"base_url": "http://127.0.0.2:2"}})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["name"], json!("Acme EU"));
    assert_eq!(
        updated["secrets"],
        json!({"api_key": "********"}),
        "untouched secrets stay"
    );

    // Secrets may not be passed ad hoc, where they would reach the guest.
    let (status, body) = host
        .invoke("example", "echo", json!({}), json!({"api_key": "k-abcdef"}))
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("is secret")
    );

    let (status, _) = host
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/connections/{id}"),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = host.get(&format!("/v1/connections/{id}")).await;
    assert_eq!(status, 404);
    host.stop().await;
}
