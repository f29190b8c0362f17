//! A declarative poll of 10 pages: the interpreter running
//! `plugins/declarative/woocommerce.yaml` polls `order-updated` against a
//! local WooCommerce-shaped server (10 pages of 50 orders, `X-WP-TotalPages`),
//! every request through the real sandbox (`HttpSandbox::send`, loopback
//! allowed for the bench); the JavaScript connector does the same poll for
//! reference. Run with `cargo bench -p switchyard --bench declarative`.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{Router, extract::Query, response::IntoResponse, routing::get};
use criterion::{Criterion, criterion_group, criterion_main};
use serde::Deserialize;
use serde_json::json;
use switchyard::{
    config::ServeConfig,
    declarative,
    engine::{CallEnv, Engine, GuestConnection, GuestContext, LoadedPlugin},
    sandbox::{HttpSandbox, Outbound, SandboxConfig, policy::HostPattern},
};

const PAGES: usize = 10;
const PER_PAGE: usize = 50;

#[derive(Deserialize)]
struct Page {
    page: Option<usize>,
}

/// Pages of 50 orders, changed one second apart from 2025-01-01.
fn pages() -> Arc<Vec<String>> {
    let orders: Vec<serde_json::Value> = (0..PAGES * PER_PAGE)
        .map(|n| {
            let at = format!(
                "2025-01-01T{:02}:{:02}:{:02}",
                n / 3600,
                n / 60 % 60,
                n % 60
            );
            json!({"id": 1000 + n, "number": (1000 + n).to_string(), "status": "processing",
                   "total": "10.00", "date_created_gmt": at, "date_modified_gmt": at,
                   "line_items": [{"id": n, "sku": "TSHIRT-M", "quantity": 1}]})
        })
        .collect();
    Arc::new(
        orders
            .chunks(PER_PAGE)
            .map(|c| serde_json::to_string(c).unwrap())
            .collect(),
    )
}

fn load(engine: &Engine, path: &str, spec: Option<&str>) -> LoadedPlugin {
    let bytes = std::fs::read(path).unwrap();
    let sha = Engine::content_hash(&bytes);
    match spec {
        None => engine.load(&sha, &bytes).unwrap(),
        Some(name) => {
            let path = format!(
                "{}/../plugins/declarative/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let declared = declarative::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
            engine
                .load_interpreter(&sha, &bytes)
                .unwrap()
                .with_spec(declared.canonical.into())
        }
    }
}

fn polls(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let pages = pages();
    let origin = runtime.block_on(async {
        let router = Router::new().route(
            "/wp-json/wc/v3/orders",
            get(move |Query(q): Query<Page>| {
                let pages = pages.clone();
                async move {
                    let n = q.page.unwrap_or(1).clamp(1, PAGES);
                    (
                        [
                            ("content-type", "application/json".to_string()),
                            ("x-wp-totalpages", PAGES.to_string()),
                        ],
                        pages[n - 1].clone(),
                    )
                        .into_response()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}")
    });
    let dir = tempfile::tempdir().unwrap();
    let engine = Arc::new(Engine::new(ServeConfig::for_data_dir(dir.path()).engine()).unwrap());
    let sandbox = HttpSandbox::new(SandboxConfig {
        allow_networks: vec!["127.0.0.1/32".parse().unwrap()],
        ..SandboxConfig::default()
    })
    .unwrap();
    let outbound = Outbound {
        sandbox,
        allowed: vec![HostPattern::parse(&origin, &BTreeMap::new()).unwrap()].into(),
        credentials: None,
        limiter: None,
    };
    let ctx = || GuestContext {
        connection: Some(GuestConnection {
            id: "bench".into(),
            properties: json!({"base_url": origin}).to_string(),
        }),
        env: Vec::new(),
        trace_id: String::new(),
    };
    let subjects = [
        (
            "declarative",
            load(
                &engine,
                switchyard_tests::DECLARATIVE_INTERPRETER,
                Some("woocommerce.yaml"),
            ),
        ),
        (
            "javascript",
            load(&engine, switchyard_tests::WOOCOMMERCE_JS, None),
        ),
    ];
    let mut group = c.benchmark_group("poll of 10 pages");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(15));
    for (name, plugin) in &subjects {
        group.bench_function(format!("{name}: order-updated, 10 pages of 50"), |b| {
            b.to_async(&runtime).iter(|| async {
                let env = CallEnv {
                    outbound: Some(outbound.clone()),
                    ..CallEnv::default()
                };
                let outcome = engine
                    .poll(
                        plugin,
                        env,
                        ctx(),
                        "order-updated",
                        "{}",
                        Some("2024-12-31T00:00:00"),
                    )
                    .await;
                let polled = outcome
                    .result
                    .unwrap_or_else(|e| panic!("{name}: {e}; {:?}", outcome.journal));
                assert_eq!(outcome.journal.exchanges.len(), PAGES);
                assert_eq!(polled.events.len(), PAGES * PER_PAGE);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, polls);
criterion_main!(benches);
