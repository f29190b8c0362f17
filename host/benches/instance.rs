//! Plugin call overhead: a fresh isolated instance (new store, WASI context,
//! instantiation from the `InstancePre`) plus one trivial call, for a Rust, a
//! Python (componentize-py) and a JavaScript (componentize-js) connector;
//! the same call through a warm instance (a connection that opts in: the
//! instance its last call left, with the host's state reset); and, for
//! reference, one call into an instance that is already running.
//! Run with `cargo bench -p switchyard --bench instance`.
//!
//! The Rust connector's call is its `echo` action; the Python and JavaScript
//! connectors have no I/O-free action, so theirs is an unknown action, which
//! they answer with an `invalid-input` error after parsing the input: a whole
//! round trip through their bindings and their error path.
//!
//! The declarative connector is the interpreter running
//! `plugins/declarative/woocommerce.yaml`: an unknown action (the spec read
//! and parsed, the templates' environment built, the error), and its
//! `get-order` action, whose request is rendered from templates and sent
//! to `http.send`, which refuses it at once (the bench gives the call no
//! network): the whole of an action but the network.

use std::{sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use switchyard::{
    config::ServeConfig,
    declarative,
    engine::{CallEnv, Engine, GuestConnection, GuestContext, LoadedPlugin},
};

/// The component of `subject`, ready to call.
fn load(engine: &Engine, subject: &Subject) -> LoadedPlugin {
    let bytes = std::fs::read(subject.path).unwrap();
    let sha = Engine::content_hash(&bytes);
    match subject.spec {
        None => engine
            .load(&sha, &bytes)
            .unwrap_or_else(|e| panic!("loading {}: {e}", subject.key)),
        Some(name) => {
            let path = format!(
                "{}/../plugins/declarative/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            let declared = declarative::parse(&std::fs::read_to_string(path).unwrap())
                .unwrap_or_else(|p| panic!("{name}: {p:?}"));
            engine
                .load_interpreter(&sha, &bytes)
                .unwrap()
                .with_spec(declared.canonical.into())
        }
    }
}

struct Subject {
    name: &'static str,
    path: &'static str,
    key: &'static str,
    action: &'static str,
    succeeds: bool,
    /// A spec in `plugins/declarative/` that the component (the
    /// interpreter) runs.
    spec: Option<&'static str>,
    input: &'static str,
}

const SUBJECTS: [Subject; 5] = [
    Subject {
        name: "rust",
        path: switchyard_tests::EXAMPLE,
        key: "example",
        action: "echo",
        succeeds: true,
        spec: None,
        input: "{}",
    },
    Subject {
        name: "python",
        path: switchyard_tests::SHIPPING_PY,
        key: "shipping",
        action: "bench-unknown",
        succeeds: false,
        spec: None,
        input: "{}",
    },
    Subject {
        name: "javascript",
        path: switchyard_tests::WOOCOMMERCE_JS,
        key: "woocommerce",
        action: "bench-unknown",
        succeeds: false,
        spec: None,
        input: "{}",
    },
    Subject {
        name: "declarative",
        path: switchyard_tests::DECLARATIVE_INTERPRETER,
        key: "woocommerce",
        action: "bench-unknown",
        succeeds: false,
        spec: Some("woocommerce.yaml"),
        input: "{}",
    },
    Subject {
        name: "declarative get-order",
        path: switchyard_tests::DECLARATIVE_INTERPRETER,
        key: "woocommerce",
        action: "get-order",
        succeeds: false,
        spec: Some("woocommerce.yaml"),
        input: r#"{"id": 7}"#,
    },
];

fn ctx() -> GuestContext {
    GuestContext {
        connection: Some(GuestConnection {
            id: "bench".into(),
            properties: r#"{"base_url": "https://shop.example.com"}"#.into(),
        }),
        env: Vec::new(),
        trace_id: String::new(),
    }
}

fn plugin_calls(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    // The engine as the host configures it, without the rest of the host:
    // what is measured is the engine's part of a call.
    let engine = Arc::new(Engine::new(ServeConfig::for_data_dir(dir.path()).engine()).unwrap());
    let mut group = c.benchmark_group("plugin call");
    group.measurement_time(Duration::from_secs(8));
    for subject in &SUBJECTS {
        let plugin = load(&engine, subject);
        group.bench_function(format!("{}: fresh instance + call", subject.name), |b| {
            b.to_async(&runtime).iter(|| async {
                let outcome = engine
                    .perform(
                        &plugin,
                        CallEnv::default(),
                        ctx(),
                        subject.action,
                        subject.input,
                        "k",
                    )
                    .await;
                assert_eq!(
                    outcome.result.is_ok(),
                    subject.succeeds,
                    "{:?}",
                    outcome.result
                );
            })
        });
        // A connection that opts in to warm instances: the whole call path
        // of `Engine::perform`, served by the instance its last call left.
        let warm = CallEnv {
            warm: Some("bench/conn".into()),
            ..CallEnv::default()
        };
        group.bench_function(format!("{}: warm instance + call", subject.name), |b| {
            b.to_async(&runtime).iter(|| async {
                let outcome = engine
                    .perform(
                        &plugin,
                        warm.clone(),
                        ctx(),
                        subject.action,
                        subject.input,
                        "k",
                    )
                    .await;
                assert_eq!(outcome.result.is_ok(), subject.succeeds);
            })
        });
        group.bench_function(
            format!("{}: call into a running instance", subject.name),
            |b| {
                b.to_async(&runtime).iter_custom(|iters| {
                    let (engine, plugin) = (engine.clone(), plugin.clone());
                    async move {
                        let per_call = engine
                            .perform_warm(
                                &plugin,
                                CallEnv::default(),
                                ctx(),
                                subject.action,
                                subject.input,
                                "k",
                                iters as u32,
                            )
                            .await
                            .unwrap();
                        per_call * iters as u32
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, plugin_calls);
criterion_main!(benches);
