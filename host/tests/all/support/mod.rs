//! What the integration tests share: a host started in-process on
//! `127.0.0.1:0` with its API client, the configurations tests start hosts
//! with, and waiting by polling with a deadline. `fake` is the framework of
//! the third-party fakes, `clock` their time text, `metrics` the scrape of
//! `/metrics` (shared with the load benchmark), `serve` the real binary in a
//! child process, `pg` the PostgreSQL server of the tests.

pub mod clock;
pub mod fake;
pub mod metrics;
pub mod pg;
pub mod serve;

use std::{
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::http::StatusCode;
use serde_json::{Value, json};
use switchyard::{app::App, config::ServeConfig};

pub const TOKEN: &str = "test-operator-token-0123456789";

/// Where the third parties are told the host is (Shopify and the warehouse
/// deliver to https only); [`TestHost::deliver`] posts what they send there
/// to the test host.
pub const PUBLIC_URL: &str = "https://switchyard.test";

/// How long a test waits for something that should happen before it gives
/// up: generous, because other builds share the machine's two cores.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn config(dir: &Path) -> ServeConfig {
    let mut config = ServeConfig::for_data_dir(dir.join("data"));
    config.token = Some(TOKEN.to_string());
    config.max_instances = 16;
    config.call_timeout_ms = 5_000;
    config
}

/// A host whose plugins may reach the fakes on 127.0.0.2 (and nothing else
/// on loopback), with a short request timeout.
pub fn sandbox_config(dir: &Path) -> ServeConfig {
    let mut cfg = config(dir);
    cfg.allow_networks = vec!["127.0.0.2/32".parse().unwrap()];
    cfg.http_timeout_ms = 1_000;
    cfg
}

/// An HTTP client for loopback: no proxy from the environment in between.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The store a test's host runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Postgres,
}

impl Backend {
    /// `cfg` on this store: for PostgreSQL a fresh database of the test
    /// cluster, and the master key every host of a shared store needs.
    pub async fn apply(self, mut cfg: ServeConfig) -> ServeConfig {
        if self == Backend::Postgres {
            cfg.store = pg::fresh_database().await;
            cfg.master_key = Some(pg::MASTER_KEY.to_string());
            cfg.node = Some("test-node".to_string());
        }
        cfg
    }
}

/// Runs each named `async fn(Backend)` as two tests, `on_sled::NAME` and
/// `on_postgres::NAME`: the same test against both stores.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod on_sled {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Sled).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Postgres).await
                }
            )*
        }
    };
}

pub struct TestHost {
    pub app: Arc<App>,
    pub url: String,
    http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestHost {
    pub async fn start(config: ServeConfig) -> TestHost {
        let (app, _) = App::open(config).await.expect("host starts");
        let app = Arc::new(app);
        app.start();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        app.feeds.set_base_url(&format!("http://{addr}"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = app
            .router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestHost {
            app,
            url: format!("http://{addr}"),
            http: client(),
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    /// Stops the server and waits until nothing holds the storage any more.
    pub async fn stop(mut self) {
        let _ = self.shutdown.take().unwrap().send(());
        self.server.take().unwrap().await.unwrap();
        self.app.shutdown().await;
        let closed = self.app.storage_probe();
        drop(self.app);
        wait_until("the storage is released", closed).await;
    }

    /// Calls the API with the operator's token.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(TOKEN, method, path, body).await
    }

    /// Calls the API with `token` (a tenant's, or a wrong one).
    pub async fn call_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        read(request.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Creates a connection to `plugin` named after it; returns its id.
    pub async fn connect(&self, plugin: &str, properties: Value) -> String {
        self.connect_as(TOKEN, plugin, properties).await
    }

    /// Creates a connection to `plugin` in the tenant of `token`.
    pub async fn connect_as(&self, token: &str, plugin: &str, properties: Value) -> String {
        let (status, body) = self
            .call_as(
                token,
                reqwest::Method::POST,
                "/v1/connections",
                Some(json!({"plugin": plugin, "name": plugin, "properties": properties})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    }

    pub async fn upload(&self, bytes: Vec<u8>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/v1/plugins", self.url))
            .bearer_auth(TOKEN)
            .body(bytes)
            .send()
            .await
            .unwrap();
        read(response).await
    }

    pub async fn upload_file(&self, path: &str) -> (StatusCode, Value) {
        self.upload(std::fs::read(path).unwrap()).await
    }

    /// Pushes `plugins/declarative/{name}` (a spec), with the declarative
    /// interpreter uploaded first if it is not there yet.
    pub async fn upload_spec(&self, name: &str) -> (StatusCode, Value) {
        let (status, body) = self
            .upload_file(switchyard_tests::DECLARATIVE_INTERPRETER)
            .await;
        assert!(status.is_success(), "{body}");
        self.upload(std::fs::read(spec_path(name)).unwrap()).await
    }
}

/// The path of a spec in `plugins/declarative/`.
pub fn spec_path(name: &str) -> String {
    format!(
        "{}/../plugins/declarative/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

impl TestHost {
    pub async fn invoke(
        &self,
        plugin: &str,
        action: &str,
        input: Value,
        properties: Value,
    ) -> (StatusCode, Value) {
        self.call(
            reqwest::Method::POST,
            "/v1/invoke",
            Some(json!({"plugin": plugin, "action": action, "input": input, "properties": properties})),
        )
        .await
    }

    /// Posts a delivery a fake made to the host's ingress as the third
    /// party does: to the registered address (under [`PUBLIC_URL`]), with
    /// its headers and body.
    pub async fn deliver(&self, delivery: &fake::Delivery) -> (StatusCode, Value) {
        self.post_hook(&delivery.address, &delivery.headers, delivery.body.clone())
            .await
    }

    /// Posts `body` with `headers` to a webhook `address` under [`PUBLIC_URL`].
    pub async fn post_hook(
        &self,
        address: &str,
        headers: &[(String, String)],
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let path = address
            .strip_prefix(PUBLIC_URL)
            .unwrap_or_else(|| panic!("a delivery to somewhere else: {address}"));
        let mut request = self.http.post(format!("{}{path}", self.url)).body(body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        read(request.send().await.unwrap()).await
    }

    /// The host's `/metrics` text.
    pub async fn metrics(&self) -> String {
        metrics::scrape(&self.http, &self.url, TOKEN).await
    }
}

pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
    let text = response.text().await.unwrap();
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// Polls `check` until it holds, failing after [`DEADLINE`].
pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Polls the API until `check` accepts the value at `path`, failing after
/// [`DEADLINE`]; returns that value.
pub async fn wait_for(
    host: &TestHost,
    path: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (status, body) = host.get(path).await;
        if status == 200 && check(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; last: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts the API's error shape and returns the message.
pub fn error_message(body: &Value, code: &str) -> String {
    assert_eq!(
        body["error"]["code"],
        json!(code),
        "unexpected body: {body}"
    );
    body["error"]["message"]
        .as_str()
        .expect("error message")
        .to_string()
}

/// Tests that measure latency take this exclusively, and tests that load
/// the machine heavily (a browser) take it shared, so the two never run at
/// the same time in one test process (nextest runs each test in a process
/// of its own, where it costs nothing).
pub fn machine() -> &'static tokio::sync::RwLock<()> {
    static MACHINE: std::sync::LazyLock<tokio::sync::RwLock<()>> =
        std::sync::LazyLock::new(Default::default);
    &MACHINE
}
