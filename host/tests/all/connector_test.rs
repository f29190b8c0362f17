//! `switchyard connector test`: the example connector's action runs in the
//! host's sandbox against a fixture server replaying request/response files;
//! a request that matches no fixture fails the test with what differed; a
//! recorded webhook delivery goes through the host's signature check.

use std::{path::Path, process::Command};

use switchyard_tests as artifacts;

use crate::{
    fake_items::WEBHOOK_SECRET,
    support::{fake::hmac_sha256, serve::BIN},
};

/// A fixture directory for the example connector's `create-item`.
fn fixtures(dir: &Path) {
    std::fs::write(
        dir.join("connection.json"),
        r#"{"properties": {"api_key": "key-1"}}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("create.json"),
        r#"{
          "request": {
            "method": "POST", "path": "/items",
            "headers": {"x-api-key": "key-1", "Idempotency-Key": "retry-1"},
            "json": {"name": "a", "tags": ["x"]}
          },
          "response": {"status": 201, "json": {"id": 7, "name": "a"}}
        }"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("list.json"),
        r#"{"request": {"method": "GET", "path": "/items", "query": {"since": ""}},
            "response": {"json": {"items": []}}}"#,
    )
    .unwrap();
}

fn create_item(dir: &Path, input: &str) -> std::process::Output {
    Command::new(BIN)
        .args([
            "connector",
            "test",
            "--action",
            "create-item",
            "--input",
            input,
        ])
        .args(["--idempotency-key", "retry-1", "--fixture"])
        .arg(dir)
        .arg(artifacts::EXAMPLE)
        .output()
        .unwrap()
}

#[test]
fn a_fixture_replays_and_the_test_passes() {
    let dir = tempfile::tempdir().unwrap();
    fixtures(dir.path());
    let output = create_item(dir.path(), r#"{"name": "a", "tags": ["x"]}"#);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("example@0.1.0, action create-item"),
        "{stdout}"
    );
    // The journal: the host's exchange, the fixture that answered it.
    assert!(stdout.contains("POST http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("/items -> 201"), "{stdout}");
    assert!(stdout.contains("POST /items <- create.json"), "{stdout}");
    assert!(stdout.contains("(not used: list.json)"), "{stdout}");
    let result = &stdout[stdout.find("result:").expect(&stdout)..];
    assert!(result.contains(r#""id": 7"#), "{stdout}");
}

#[test]
fn a_changed_request_fails_with_what_differed() {
    let dir = tempfile::tempdir().unwrap();
    fixtures(dir.path());
    let output = create_item(dir.path(), r#"{"name": "b", "tags": ["x"]}"#);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stdout}");
    assert!(
        stdout.contains("POST /items <- NO FIXTURE MATCHES"),
        "{stdout}"
    );
    assert!(stdout.contains("closest fixture: create.json"), "{stdout}");
    assert!(
        stdout.contains(r#"body /name: the fixture has "a", the connector sent "b""#),
        "{stdout}"
    );
    // Only what differed is named.
    assert!(!stdout.contains("body /tags"), "{stdout}");
    assert!(!stdout.contains("header `"), "{stdout}");
    assert!(
        stderr.contains("1 request(s) matched no fixture"),
        "{stderr}"
    );
}

#[test]
fn a_missing_connector_or_operation_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(BIN)
        .args(["connector", "test", "--action", "create-item"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("has no connector.yaml and no component in dist/"),
        "{stderr}"
    );

    let output = Command::new(BIN)
        .args(["connector", "test"])
        .arg(artifacts::EXAMPLE)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--action NAME or --trigger NAME"),
        "{stderr}"
    );
}

/// A recorded delivery to the example connector's `item-event`, signed with
/// `secret`, beside `fixtures/` with the connection's properties (which hold
/// the real secret).
fn webhook_fixtures(dir: &Path, secret: &str, body: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("fixtures")).unwrap();
    std::fs::write(
        dir.join("fixtures/connection.json"),
        serde_json::json!({"properties": {"api_key": "key-1", "webhook_secret": WEBHOOK_SECRET}})
            .to_string(),
    )
    .unwrap();
    let signature = format!(
        "sha256={}",
        hex::encode(hmac_sha256(secret.as_bytes(), body.as_bytes()))
    );
    let delivery = dir.join("delivery.json");
    std::fs::write(
        &delivery,
        serde_json::json!({
            "method": "POST",
            "headers": {"X-Signature": signature, "X-Event-Id": "evt-1"},
            "body": body,
        })
        .to_string(),
    )
    .unwrap();
    delivery
}

fn item_event(dir: &Path, delivery: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["connector", "test", "--trigger", "item-event", "--webhook"])
        .arg(delivery)
        .arg("--fixture")
        .arg(dir.join("fixtures"))
        .arg(artifacts::EXAMPLE)
        .output()
        .unwrap()
}

#[test]
fn a_signed_delivery_yields_events_and_a_tampered_one_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let body = r#"{"id":"item-1","name":"Widget"}"#;
    let delivery = webhook_fixtures(dir.path(), WEBHOOK_SECRET, body);
    let output = item_event(dir.path(), &delivery);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("example@0.1.0, webhook trigger item-event"),
        "{stdout}"
    );
    let result: serde_json::Value =
        serde_json::from_str(&stdout[stdout.find("result:").expect(&stdout) + 7..]).unwrap();
    assert_eq!(
        result,
        serde_json::json!({
            "events": [{"id": "evt-1", "payload": {"id": "item-1", "name": "Widget"}}],
            "response": null,
        })
    );

    // Signed with another secret: the host's check refuses it.
    let tampered = webhook_fixtures(dir.path(), "not-the-secret", body);
    let output = item_event(dir.path(), &tampered);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}");
    assert!(stdout.contains("webhook signature rejected"), "{stdout}");
    assert!(!stdout.contains("result:"), "{stdout}");

    // A webhook trigger without a delivery says what to pass.
    let output = Command::new(BIN)
        .args(["connector", "test", "--trigger", "item-event", "--fixture"])
        .arg(dir.path().join("fixtures"))
        .arg(artifacts::EXAMPLE)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pass --webhook FILE"), "{stderr}");
}
