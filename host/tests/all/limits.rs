//! Hostile plugins: an endless loop is stopped at its deadline, a memory bomb
//! at its cap, a panic is a trap; each is reported and the host keeps serving.

use std::time::{Duration, Instant};

use serde_json::json;
use switchyard_tests as artifacts;

use crate::support::{TestHost, config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_is_stopped_at_its_deadline_while_others_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // Long enough that calls made while the loop runs are answered within
    // it even on a busy machine, short enough to keep the test quick.
    cfg.call_timeout_ms = 3_000;
    let host = std::sync::Arc::new(TestHost::start(cfg).await);
    host.upload_file(artifacts::FIXTURE_HOSTILE).await;

    let spinner = {
        let host = host.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let (_, body) = host.invoke("hostile", "spin", json!({}), json!({})).await;
            (body, started.elapsed())
        })
    };
    // While the loop burns its budget, other calls are served promptly: the
    // guest yields to the runtime at every epoch tick.
    let mut echoes = 0;
    while !spinner.is_finished() && echoes < 5 {
        let started = Instant::now();
        let (_, body) = host
            .invoke("hostile", "echo", json!({"n": echoes}), json!({}))
            .await;
        assert_eq!(body["output"], json!({"echo": {"n": echoes}}), "{body}");
        assert!(
            started.elapsed() < Duration::from_millis(1_500),
            "echo waited behind the loop: {:?}",
            started.elapsed()
        );
        echoes += 1;
    }
    let (body, elapsed) = spinner.await.unwrap();
    assert_eq!(
        body["error"],
        json!({"kind": "timeout", "limit_ms": 3000}),
        "{body}"
    );
    assert!(
        elapsed >= Duration::from_millis(3_000),
        "stopped early: {elapsed:?}"
    );
    assert!(echoes > 0, "no call was served while the loop ran");

    let (_, body) = host
        .invoke("hostile", "echo", json!({"after": true}), json!({}))
        .await;
    assert_eq!(body["output"], json!({"echo": {"after": true}}));
    std::sync::Arc::into_inner(host).unwrap().stop().await;
}

#[tokio::test]
async fn memory_past_the_cap_traps_and_panics_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.memory_limit_mib = 32;
    let host = TestHost::start(cfg).await;
    host.upload_file(artifacts::FIXTURE_HOSTILE).await;

    let (_, body) = host
        .invoke("hostile", "grow-memory", json!({}), json!({}))
        .await;
    assert_eq!(body["error"]["kind"], json!("memory_limit"), "{body}");
    assert_eq!(body["error"]["limit"], json!(32 << 20));
    assert!(body["error"]["desired"].as_u64().unwrap() > 32 << 20);

    // Under the cap, the same code works.
    let (_, body) = host
        .invoke("hostile", "grow-memory", json!({"mib": 4}), json!({}))
        .await;
    assert_eq!(body["output"]["allocated_mib"], json!(4), "{body}");

    let (_, body) = host.invoke("hostile", "trap", json!({}), json!({})).await;
    assert_eq!(body["error"]["kind"], json!("trap"), "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("unreachable") && message.contains("panicked"),
        "{message}"
    );

    let (_, body) = host
        .invoke("hostile", "echo", json!({"ok": 1}), json!({}))
        .await;
    assert_eq!(body["output"], json!({"echo": {"ok": 1}}));
    host.stop().await;
}
