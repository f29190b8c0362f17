//! A webhook delivery from raw bytes through the ingress into the Shopify
//! connector's `handle-webhook` and its events: see
//! `switchyard::fuzzing::WebhookHarness`. `./dev fuzz` builds the component
//! first.
#![no_main]

use std::sync::LazyLock;

use switchyard::fuzzing::{WebhookHarness, shopify_component_path};

static HARNESS: LazyLock<WebhookHarness> = LazyLock::new(|| {
    let path = shopify_component_path(env!("CARGO_MANIFEST_DIR"));
    let component = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "reading the Shopify component {} (build it with ./dev fuzz): {e}",
            path.display()
        )
    });
    WebhookHarness::new(&component).unwrap_or_else(|e| panic!("{e:#}"))
});

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    HARNESS.run(data);
});
