//! Warm instances: a connection that opts in has its calls served by an
//! instance kept from its earlier calls (the fixture's call counter lives in
//! the guest's memory and goes on counting); a connection that does not
//! gets a fresh instance for every call. A kept instance never serves
//! another connection or tenant, is still stopped at its deadline, and is
//! dropped after a trap or a timeout.

use reqwest::Method;
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::support::{TOKEN, TestHost, config};

/// Creates a hostile-fixture connection in the tenant of `token`.
async fn connect(host: &TestHost, token: &str, warm: bool) -> String {
    let (status, body) = host
        .call_as(
            token,
            Method::POST,
            "/v1/connections",
            Some(json!({
                "plugin": "hostile",
                "properties": {"token": "t0ken", "target": "http://127.0.0.2:9"},
                "warm_instances": warm,
            })),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["warm_instances"], json!(warm), "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn invoke(host: &TestHost, token: &str, connection: &str, action: &str) -> Value {
    let (status, body) = host
        .call_as(
            token,
            Method::POST,
            "/v1/invoke",
            Some(json!({"plugin": "hostile", "action": action, "connection": connection})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// What the `count` action answers: how many calls its instance served.
async fn count(host: &TestHost, token: &str, connection: &str) -> u64 {
    let body = invoke(host, token, connection, "count").await;
    body["output"]["calls"]
        .as_u64()
        .unwrap_or_else(|| panic!("no count: {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_opts_in_keeps_its_instance_and_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.call_timeout_ms = 1_000;
    let host = TestHost::start(cfg).await;
    host.upload_file(artifacts::FIXTURE_HOSTILE).await;
    let warm = connect(&host, TOKEN, true).await;
    let cold = connect(&host, TOKEN, false).await;

    // One call after another: the same instance, its memory kept.
    for expected in 1..=3 {
        assert_eq!(count(&host, TOKEN, &warm).await, expected);
    }
    // The journal is this call's alone, not what the instance printed before.
    let body = invoke(&host, TOKEN, &warm, "count").await;
    assert_eq!(body["output"]["calls"], json!(4), "{body}");
    let lines: Vec<&str> = body["journal"]["logs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert_eq!(lines, ["count 4"], "{body}");

    // Without the opt-in, every call starts afresh.
    for _ in 0..2 {
        assert_eq!(count(&host, TOKEN, &cold).await, 1);
    }
    // Another connection, and another tenant's, never get this one's.
    assert_eq!(
        count(&host, TOKEN, &connect(&host, TOKEN, true).await).await,
        1
    );
    let (status, tenant) = host
        .call(Method::POST, "/v1/tenants", Some(json!({"name": "Globex"})))
        .await;
    assert_eq!(status, 201, "{tenant}");
    let other = tenant["token"].as_str().unwrap();
    let theirs = connect(&host, other, true).await;
    assert_eq!(count(&host, other, &theirs).await, 1);
    assert_eq!(count(&host, other, &theirs).await, 2);
    assert_eq!(count(&host, TOKEN, &warm).await, 5);

    // A kept instance is still stopped at its deadline, and not kept after.
    let body = invoke(&host, TOKEN, &warm, "spin").await;
    assert_eq!(
        body["error"],
        json!({"kind": "timeout", "limit_ms": 1000}),
        "{body}"
    );
    assert_eq!(count(&host, TOKEN, &warm).await, 1);
    // Nor after a trap.
    let body = invoke(&host, TOKEN, &warm, "trap").await;
    assert_eq!(body["error"]["kind"], json!("trap"), "{body}");
    assert_eq!(count(&host, TOKEN, &warm).await, 1);
    assert_eq!(count(&host, TOKEN, &warm).await, 2);

    // Turned off, the connection's calls start afresh again; its
    // credentials and status are untouched by the change.
    let (status, body) = host
        .call(
            Method::PATCH,
            &format!("/v1/connections/{warm}"),
            Some(json!({"warm_instances": false})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["warm_instances"], json!(false), "{body}");
    assert_eq!(body["secrets"]["token"], json!("********"), "{body}");
    assert_eq!(count(&host, TOKEN, &warm).await, 1);
    assert_eq!(count(&host, TOKEN, &warm).await, 1);
    host.stop().await;
}
