//! Replays the fuzz targets' seed corpora (`fuzz/corpus/<target>/`) and the
//! crash inputs kept as regressions (`fuzz/regressions/<target>/`) through the
//! same functions the fuzzer drives (`switchyard::fuzzing`), so that what the
//! fuzzer found stays fixed without running libFuzzer.

use std::path::{Path, PathBuf};

use switchyard::fuzzing::{self, Handled, WebhookHarness};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file of the target's corpus and regressions, with its path; the
/// corpus must not be empty (a replay of nothing would pass unnoticed).
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            assert_eq!(kind, "regressions", "{} is missing", dir.display());
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            found.push((path, bytes));
        }
    }
    assert!(
        found
            .iter()
            .any(|(path, _)| path.components().any(|c| c.as_os_str() == "corpus")),
        "the `{target}` corpus is empty"
    );
    found.sort();
    found
}

/// Runs `body` on every input, naming the input that fails.
fn replay(target: &str, body: impl Fn(&[u8])) {
    for (path, bytes) in inputs(target) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&bytes)));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
    }
}

#[test]
fn pure_targets_pass_their_corpora_and_regressions() {
    for (target, body) in fuzzing::TARGETS {
        replay(target, body);
    }
}

#[test]
fn webhook_delivery_passes_its_corpus_and_regressions() {
    let component = std::fs::read(switchyard_tests::SHOPIFY).unwrap();
    let harness = WebhookHarness::new(&component).unwrap();
    replay("webhook_delivery", |data| {
        harness.run(data);
    });
}

/// The seeds exercise what they are there for: a signed order delivery
/// becomes one event (signed by Shopify or by the harness), another topic
/// none, and a bad signature or a body that is no order is refused.
#[test]
fn webhook_seeds_reach_the_connector() {
    let component = std::fs::read(switchyard_tests::SHOPIFY).unwrap();
    let harness = WebhookHarness::new(&component).unwrap();
    let seed =
        |name: &str| std::fs::read(fuzz_dir().join("corpus/webhook_delivery").join(name)).unwrap();
    assert_eq!(harness.run(&seed("order-created")), Handled::Events(1));
    assert_eq!(
        harness.run(&seed("order-created-harness-signed")),
        Handled::Events(1)
    );
    assert_eq!(harness.run(&seed("other-topic")), Handled::Events(0));
    for (name, why) in [
        ("bad-signature", "signature does not match"),
        ("not-an-order", "no numeric id"),
    ] {
        match harness.run(&seed(name)) {
            Handled::Refused(reason) => assert!(reason.contains(why), "{name}: {reason}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(harness.run(b"not a request"), Handled::NotARequest);
}
