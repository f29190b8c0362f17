//! A host started in-process on `127.0.0.1:0`, an API client, and a fake of
//! the example connector's third-party API.

use std::{
    future::Future,
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path as UrlPath, State},
    http::{HeaderMap, StatusCode},
    routing::{get, post},
};
use serde_json::{Value, json};
use switchyard::{app::App, config::ServeConfig};

pub const TOKEN: &str = "test-operator-token-0123456789";

pub fn config(dir: &Path) -> ServeConfig {
    let mut config = ServeConfig::for_data_dir(dir.join("data"));
    config.token = Some(TOKEN.to_string());
    config.max_instances = 16;
    config.call_timeout_ms = 5_000;
    config
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
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = switchyard::api::router(app.api_state())
            .into_make_service_with_connect_info::<SocketAddr>();
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
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
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

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(TOKEN);
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
        let (status, body) = self
            .call(
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

/// Polls `check` until it holds, failing after a generous deadline.
pub async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
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

/// A fake of the example connector's REST API: `/me`, `/items`.
#[derive(Clone, Default)]
pub struct FakeItems {
    pub seen: Arc<Mutex<Vec<SeenRequest>>>,
}

#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub idempotency_key: Option<String>,
    pub body: Value,
}

impl FakeItems {
    pub async fn start(&self) -> (SocketAddr, impl Future<Output = ()>) {
        let router = Router::new()
            .route("/me", get(me))
            .route("/items", post(create_item))
            .route("/items/{id}", get(get_item))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        (addr, async move { server.abort() })
    }
}

/// The API key the fake accepts.
pub const API_KEY: &str = "k-fake-items-1";

async fn me(headers: HeaderMap) -> Result<Json<Value>, StatusCode> {
    match header(&headers, "x-api-key").as_deref() {
        Some(API_KEY) => Ok(Json(json!({"user": "acme"}))),
        _ => Err(StatusCode::UNAUTHORIZED),
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn create_item(
    State(fake): State<FakeItems>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    fake.seen.lock().unwrap().push(SeenRequest {
        idempotency_key: header(&headers, "idempotency-key"),
        body: body.clone(),
    });
    let mut item = body;
    item["id"] = json!("item-1");
    (StatusCode::CREATED, Json(item))
}

async fn get_item(
    State(fake): State<FakeItems>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, StatusCode> {
    fake.seen.lock().unwrap().push(SeenRequest {
        idempotency_key: None,
        body: Value::Null,
    });
    if id == "item-1" {
        Ok(Json(json!({"id": id, "name": "Widget"})))
    } else {
        Err(StatusCode::NOT_FOUND)
    }
}
