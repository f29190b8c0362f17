//! `switchyard connector test`: the example connector's action runs in the
//! host's sandbox against a fixture server replaying request/response files;
//! a request that matches no fixture fails the test with what differed.

use std::{path::Path, process::Command};

use switchyard_tests as artifacts;

use crate::support::serve::BIN;

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
