//! Plugin call overhead: a fresh isolated instance (new store, WASI context,
//! instantiation from the `InstancePre`) plus one trivial call, for the Rust
//! example connector. Run with `cargo bench -p switchyard --bench instance`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::{
    app::App,
    config::ServeConfig,
    engine::{CallEnv, GuestContext},
};

fn fresh_instance_and_call(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = ServeConfig::for_data_dir(dir.path());
    config.token = Some("benchmark-token-0123456789".into());
    let app: Arc<App> = runtime.block_on(async {
        let (app, _) = App::open(config).await.unwrap();
        let bytes = std::fs::read(switchyard_tests::EXAMPLE).unwrap();
        app.registry.upload(bytes, None).await.unwrap();
        app
    });
    let version = semver::Version::new(0, 1, 0);
    let plugin = app.registry.get("example", &version).unwrap().plugin;
    let engine = app.engine.clone();

    c.bench_function("rust plugin: fresh instance + echo call", |b| {
        b.to_async(&runtime).iter(|| async {
            let ctx = GuestContext {
                connection: None,
                env: Vec::new(),
                trace_id: String::new(),
            };
            let outcome = engine
                .perform(&plugin, CallEnv::default(), ctx, "echo", "{}", "k")
                .await;
            assert!(outcome.result.is_ok());
        })
    });
}

criterion_group!(benches, fresh_instance_and_call);
criterion_main!(benches);
