//! Connectors written in other languages, end to end: the Python shipping
//! connector (`plugins/shipping-py`, componentize-py) and the JavaScript
//! WooCommerce connector (`plugins/woocommerce-js`, componentize-js), both
//! built from source by `switchyard-tests`, uploaded through the API and run
//! against fakes of their APIs on 127.0.0.2 with host-held credentials.
//! Every test runs twice: against the code, and against the same connector
//! written as a declarative spec (`plugins/declarative/*.yaml`, run by the
//! interpreter component), which must behave the same.
//!
//! Actions go through `POST /v1/invoke` (`Calls::invoke`); triggers are
//! driven the way the scheduler and the webhook ingress drive them: a call
//! prepared by `Calls::prepare_for`, then `Calls::poll` / `Calls::handle_webhook`.

mod shipping;
mod woocommerce;

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{Arc, Mutex},
    time::Instant,
};

use reqwest::Method;
use serde_json::{Value, json};
use switchyard::{
    calls::{Call, Purpose},
    engine::{CallError, CallOutcome, ConnectorError, Engine, Event, PollOutput, WebhookOutput},
    tenants::DEFAULT_TENANT,
};
use switchyard_tests as artifacts;
use tokio::sync::OnceCell;

use crate::support::{
    TestHost,
    fake::{Delivery, Server},
    sandbox_config,
};

/// Compiled artifacts of both components, made once and kept in cargo's
/// test scratch directory across runs and test processes: compiling an
/// 18 MB Python component takes seconds, and every test starts its own host.
static COMPILED: OnceCell<std::path::PathBuf> = OnceCell::const_new();

pub async fn compiled_artifacts() -> &'static Path {
    COMPILED
        .get_or_init(|| async {
            let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
            let kept = scratch.join("polyglot-artifacts");
            std::fs::create_dir_all(&kept).unwrap();
            // Tests may run in processes of their own (cargo nextest), at
            // once: the first compiles, the others wait and find the cache.
            let lock = std::fs::File::create(scratch.join("polyglot-artifacts.lock")).unwrap();
            let lock = tokio::task::spawn_blocking(move || lock.lock().map(|()| lock))
                .await
                .unwrap()
                .expect("the artifact cache's lock");
            let current: Vec<String> = [artifacts::SHIPPING_PY, artifacts::WOOCOMMERCE_JS]
                .iter()
                .map(|p| Engine::content_hash(&std::fs::read(p).unwrap()))
                .collect();
            // Artifacts of older builds of the connectors are of no more use.
            for entry in std::fs::read_dir(&kept).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                if !current.iter().any(|sha| name.starts_with(sha.as_str())) {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
            // A host of its own (a new store) whose artifact cache is the
            // kept directory.
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("data")).unwrap();
            std::os::unix::fs::symlink(&kept, dir.path().join("data").join("artifacts")).unwrap();
            let host = TestHost::start(sandbox_config(dir.path())).await;
            for path in [artifacts::SHIPPING_PY, artifacts::WOOCOMMERCE_JS] {
                let started = Instant::now();
                let (status, body) = host.upload_file(path).await;
                assert_eq!(status, 201, "{path}: {body}");
                eprintln!(
                    "{} ({} bytes): uploaded in {:?} ({} compiled, not cached)",
                    body["plugin"]["key"],
                    body["plugin"]["size"],
                    started.elapsed(),
                    host.app.engine.compilations()
                );
            }
            host.stop().await;
            drop(lock);
            kept
        })
        .await
}

/// Which build of a connector a test runs.
#[derive(Debug, Clone, Copy)]
pub enum Build {
    /// The component at this path.
    Code(&'static str),
    /// The spec of this name in `plugins/declarative/`.
    Spec(&'static str),
}

/// A host that may reach 127.0.0.2 with the connector `build` uploaded
/// through the API (a component, or the interpreter and a spec).
async fn start_host(dir: &Path, build: Build) -> TestHost {
    match build {
        Build::Code(plugin) => start_code_host(dir, plugin).await,
        Build::Spec(name) => {
            let host = TestHost::start(sandbox_config(dir)).await;
            let (status, body) = host.upload_spec(name).await;
            assert_eq!(status, 201, "{body}");
            assert_eq!(body["plugin"]["kind"], json!("declarative"), "{body}");
            host
        }
    }
}

/// A host that may reach 127.0.0.2, with both components compiled in its
/// artifact cache, and `plugin` uploaded through the API.
async fn start_code_host(dir: &Path, plugin: &str) -> TestHost {
    let compiled = compiled_artifacts().await;
    let artifacts_dir = dir.join("data").join("artifacts");
    std::fs::create_dir_all(&artifacts_dir).unwrap();
    for entry in std::fs::read_dir(compiled).unwrap() {
        let entry = entry.unwrap();
        let target = artifacts_dir.join(entry.file_name());
        if std::fs::hard_link(entry.path(), &target).is_err() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
    let host = TestHost::start(sandbox_config(dir)).await;
    let (status, body) = host.upload_file(plugin).await;
    assert_eq!(status, 201, "{body}");
    host
}

/// A connection of one plugin on a test host, and the calls the tests make
/// with it.
struct Conn<'a> {
    host: &'a TestHost,
    key: &'static str,
    id: String,
}

impl<'a> Conn<'a> {
    async fn create(host: &'a TestHost, key: &'static str, properties: Value) -> Conn<'a> {
        let id = host.connect(key, properties).await;
        Conn { host, key, id }
    }

    /// `POST /v1/invoke` with this connection; the whole invocation.
    async fn invoke(&self, action: &str, input: Value) -> Value {
        let request =
            json!({"plugin": self.key, "action": action, "connection": self.id, "input": input});
        let (status, body) = self
            .host
            .call(Method::POST, "/v1/invoke", Some(request))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// `POST /v1/connections/{id}/test`.
    async fn test(&self) -> Value {
        let path = format!("/v1/connections/{}/test", self.id);
        let (status, body) = self.host.call(Method::POST, &path, None).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Everything a trigger call needs, as the scheduler sets it up.
    fn setup(&self) -> Call {
        let app = &self.host.app;
        let plugin = app.registry.newest(self.key).unwrap();
        let record = app.connections.current(DEFAULT_TENANT, &self.id).unwrap();
        app.calls
            .prepare_for(
                plugin,
                Some(record),
                BTreeMap::new(),
                Purpose::Other,
                "trace-test".into(),
            )
            .unwrap()
    }

    async fn poll(
        &self,
        trigger: &str,
        params: Value,
        cursor: Option<&str>,
    ) -> CallOutcome<PollOutput> {
        let call = self.setup();
        let params = params.to_string();
        self.host
            .app
            .calls
            .poll(call, trigger, &params, cursor)
            .await
    }

    /// A poll that must succeed.
    async fn poll_ok(&self, trigger: &str, params: Value, cursor: Option<&str>) -> PollOutput {
        let outcome = self.poll(trigger, params, cursor).await;
        let journal = outcome.journal;
        outcome
            .result
            .unwrap_or_else(|e| panic!("poll failed: {e}; journal: {journal:?}"))
    }

    async fn webhook(&self, trigger: &str, delivery: &Delivery) -> CallOutcome<WebhookOutput> {
        let call = self.setup();
        self.host
            .app
            .calls
            .handle_webhook(call, trigger, "{}", delivery.input())
            .await
    }

    async fn subscribe(&self, trigger: &str, target: &str) -> CallOutcome<String> {
        let call = self.setup();
        self.host
            .app
            .calls
            .subscribe(call, trigger, "{}", target)
            .await
    }

    async fn unsubscribe(&self, trigger: &str, state: &str) -> CallOutcome<()> {
        let call = self.setup();
        self.host
            .app
            .calls
            .unsubscribe(call, trigger, "{}", state)
            .await
    }

    /// Runs an action with a chosen idempotency key, as a retried flow step does.
    async fn perform_with_key(&self, action: &str, input: &Value, key: &str) -> Value {
        let call = self.setup();
        let input = input.to_string();
        let outcome = self.host.app.calls.perform(call, action, &input, key).await;
        serde_json::from_str(&outcome.result.unwrap()).unwrap()
    }
}

/// The connector error of an invocation, as `(kind, the whole error)`.
fn connector_error(invocation: &Value) -> (String, Value) {
    assert_eq!(
        invocation["error"]["kind"],
        json!("connector"),
        "{invocation}"
    );
    let error = invocation["error"]["error"].clone();
    (error["kind"].as_str().unwrap().to_string(), error)
}

/// The kind of a connector error a trigger call returned.
fn kind_of<T: std::fmt::Debug>(outcome: CallOutcome<T>) -> (&'static str, ConnectorError) {
    match outcome.result {
        Err(CallError::Connector { error }) => {
            let kind = match &error {
                ConnectorError::Transient { .. } => "transient",
                ConnectorError::RateLimited { .. } => "rate_limited",
                ConnectorError::Auth { .. } => "auth",
                ConnectorError::InvalidInput { .. } => "invalid_input",
                ConnectorError::Permanent { .. } => "permanent",
            };
            (kind, error)
        }
        other => panic!("expected a connector error, got {other:?}"),
    }
}

fn payloads(events: &[Event]) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::from_str(&e.payload).unwrap())
        .collect()
}

/// Asserts that nothing the host returned from a call carries `secrets`.
fn assert_no_secret(what: &Value, secrets: &[&str]) {
    let text = what.to_string();
    for secret in secrets {
        assert!(!text.contains(secret), "a secret leaked: {text}");
    }
}

/// A webhook target (a fake posts to it directly, as a third party posts to
/// the host's ingress), its URL, and what it got.
async fn receiver() -> (Server, String, Arc<Mutex<Vec<Delivery>>>) {
    let received: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let store = received.clone();
    let router = axum::Router::new().route(
        "/hooks",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                let headers = headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
                    .collect();
                store.lock().unwrap().push(Delivery {
                    address: "/hooks".to_string(),
                    headers,
                    body: body.to_vec(),
                });
            },
        ),
    );
    let server = Server::start(router).await;
    let url = format!("{}/hooks", server.origin);
    (server, url, received)
}
