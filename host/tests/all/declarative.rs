//! Declarative connectors through the API: pushing specs (refused ones
//! placed, nothing stored), versions side by side with components, the
//! custom API call of both kinds, the live test of an unpublished spec, and
//! the sandbox's hostile and observer checks applied to specs.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    http::{HeaderMap, header::LINK},
    response::IntoResponse,
    routing::{get, post},
};
use reqwest::Method;
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::{
    fake_items::FakeItems,
    fake_woocommerce::{CONSUMER_KEY, CONSUMER_SECRET, FakeWooCommerce},
    sandbox::SECRET,
    support::{TestHost, error_message, fake::Server, sandbox_config, spec_path},
};

/// A small spec for these tests: bearer auth, everything relative to the
/// connection's `target`.
const PROBE: &str = r#"declarative: "0.1"
key: probe
name: Probe
version: 1.0.0
auth: { type: bearer }
properties:
  target: { required: true, schema: { type: string } }
  token: { required: true, secret: true, schema: { type: string } }
allowed_hosts: ["{target}"]
base_url: "{{ connection.target }}"
headers:
  Authorization: Bearer chosen-by-the-spec
  Cookie: session=stolen
  X-Region: "{{ env.REGION | default('none') }}"
actions:
  get:
    name: Get
    request: { url: "/{{ input.path }}" }
  observe:
    name: Observe everything a template sees
    request:
      method: POST
      url: /echo
      json: { connection: "{{ connection }}", env: "{{ env }}", input: "{{ input }}" }
    output: { connection: "{{ connection }}", env: "{{ env }}", sent: "{{ response.body }}" }
  pages:
    name: Pages
    request: { url: /page }
    records: /items
    pagination: { type: link }
"#;

/// The authorization, cookie and region headers of one request.
type Seen = (Option<String>, Option<String>, Option<String>);

#[derive(Clone, Default)]
struct Probe {
    headers: Arc<Mutex<Vec<Seen>>>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

fn probe_api(probe: Probe, next: String) -> Router {
    let header =
        |h: &HeaderMap, n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    let seen = probe.clone();
    let record = move |h: &HeaderMap| {
        seen.headers.lock().unwrap().push((
            header(h, "authorization"),
            header(h, "cookie"),
            header(h, "x-region"),
        ))
    };
    let (r1, r2, r3) = (record.clone(), record.clone(), record);
    Router::new()
        .route(
            "/ok",
            get(move |h: HeaderMap| async move {
                r1(&h);
                Json(json!({"ok": true}))
            }),
        )
        .route(
            "/echo",
            post(move |h: HeaderMap, Json(body): Json<Value>| {
                r2(&h);
                probe.bodies.lock().unwrap().push(body.clone());
                async move { Json(body) }
            }),
        )
        // One page whose `Link` leads off the allowed hosts.
        .route(
            "/page",
            get(move |h: HeaderMap| {
                r3(&h);
                let link = format!("<{next}/stolen>; rel=\"next\"");
                async move { ([(LINK, link)], Json(json!({"items": [{"id": 1}]}))).into_response() }
            }),
        )
}

async fn connect(host: &TestHost, plugin: &str, properties: Value) -> String {
    let (status, body) = host
        .call(
            Method::POST,
            "/v1/connections",
            Some(json!({"plugin": plugin, "name": plugin, "properties": properties})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn invoke(
    host: &TestHost,
    plugin: &str,
    connection: &str,
    action: &str,
    input: Value,
) -> Value {
    let (status, body) = host
        .call(
            Method::POST,
            "/v1/invoke",
            Some(json!({"plugin": plugin, "action": action, "connection": connection, "input": input})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn specs_are_pushed_checked_and_versioned_beside_components() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(sandbox_config(dir.path())).await;
    let (status, body) = host.upload_file(artifacts::EXAMPLE).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["plugin"]["kind"], json!("component"));

    // Without the interpreter a spec has nothing to run on: refused, nothing stored.
    let (status, body) = host.upload(PROBE.as_bytes().to_vec()).await;
    assert_eq!(status, 409, "{body}");
    assert!(error_message(&body, "wrong_state").contains("interpreter"));
    let (status, body) = host.upload_file(artifacts::DECLARATIVE_INTERPRETER).await;
    assert_eq!(status, 201, "{body}");
    assert!(body["interpreter"]["sha256"].is_string(), "{body}");
    let (status, _) = host.upload_file(artifacts::DECLARATIVE_INTERPRETER).await;
    assert_eq!(status, 200);

    // A bad spec: every problem, placed; nothing stored.
    let bad = PROBE
        .replace("    name: Get\n", "    name: Get\n    colour: blue\n")
        .replace(
            "url: \"/{{ input.path }}\"",
            "url: \"/{{ input.path }}?t={{ connection.token }}\"",
        );
    let (status, body) = host.upload(bad.into_bytes()).await;
    assert_eq!(status, 422, "{body}");
    error_message(&body, "invalid_spec");
    let problems = body["error"]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["path"] == json!("/actions/get/colour") && p["line"] == json!(18)),
        "{body}"
    );
    let (_, listed) = host.get("/v1/plugins").await;
    let keys: Vec<&str> = listed["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["example"], "{listed}");
    // The secret in a URL is refused once the structure is right.
    let secret_url = PROBE.replace(
        "url: \"/{{ input.path }}\"",
        "url: \"/{{ input.path }}?t={{ connection.token }}\"",
    );
    let (status, body) = host.upload(secret_url.into_bytes()).await;
    assert_eq!(status, 422, "{body}");
    let problems = body["error"]["problems"].as_array().unwrap();
    assert!(
        problems
            .iter()
            .any(|p| p["path"] == json!("/actions/get/request/url")
                && p["line"] == json!(18)
                && p["message"]
                    .as_str()
                    .unwrap()
                    .contains("secret property `token`")),
        "{body}"
    );

    // Pushed as YAML and as JSON; identical bytes are a no-op, other bytes
    // under the same version a conflict.
    let (status, body) = host.upload(PROBE.as_bytes().to_vec()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["plugin"]["kind"], json!("declarative"));
    let actions = body["plugin"]["actions"].as_array().unwrap();
    assert!(actions.contains(&json!("custom-api-call")), "{body}");
    let (status, _) = host.upload(PROBE.as_bytes().to_vec()).await;
    assert_eq!(status, 200);
    let changed = PROBE.replace("name: Probe", "name: Probe!");
    let (status, body) = host.upload(changed.into_bytes()).await;
    assert_eq!(status, 409, "{body}");
    let v11: Value = serde_yaml_ng::from_str(&PROBE.replace("1.0.0", "1.1.0")).unwrap();
    let (status, body) = host.upload(v11.to_string().into_bytes()).await;
    assert_eq!(status, 201, "{body}");

    // Side by side: resolution, deprecation, environment variables copied
    // forward and seen by templates.
    let (_, resolved) = host.get("/v1/plugins/probe/resolve?req=%5E1").await;
    assert_eq!(resolved["version"], json!("1.1.0"));
    let (status, _) = host
        .call(Method::POST, "/v1/plugins/probe/1.1.0/deprecate", None)
        .await;
    assert_eq!(status, 200);
    let (_, resolved) = host.get("/v1/plugins/probe/resolve?req=%5E1").await;
    assert_eq!(resolved["version"], json!("1.0.0"));
    let (status, _) = host
        .call(
            Method::PUT,
            "/v1/plugins/probe/1.1.0/env/REGION",
            Some(json!({"value": "eu"})),
        )
        .await;
    assert_eq!(status, 200);
    let v12 = PROBE.replace("1.0.0", "1.2.0");
    let (status, body) = host.upload(v12.into_bytes()).await;
    assert_eq!(status, 201, "{body}");
    let (_, env) = host.get("/v1/plugins/probe/1.2.0/env").await;
    assert_eq!(env["env"], json!({"REGION": "eu"}));
    let probe = Probe::default();
    let server = Server::start(probe_api(probe.clone(), "http://x".into())).await;
    let origin = server.origin.clone();
    let conn = connect(&host, "probe", json!({"target": origin, "token": SECRET})).await;
    let got = invoke(&host, "probe@1.2.0", &conn, "get", json!({"path": "ok"})).await;
    assert_eq!(got["output"], json!({"ok": true}), "{got}");
    let seen = probe.headers.lock().unwrap().last().cloned().unwrap();
    assert_eq!(
        seen.2.as_deref(),
        Some("eu"),
        "the version's variable reaches templates"
    );

    // A flow pinned to a declarative version keeps it from being deleted.
    let flow = json!({
        "name": "Probe once",
        "trigger": {"schedule": "0 0 1 1 *"},
        "steps": [{"key": "get", "plugin": "probe@1.2.0", "action": "get",
                   "connection": conn, "input": {"path": "ok"}}],
    });
    let (status, body) = host.call(Method::POST, "/v1/flows", Some(flow)).await;
    assert_eq!(status, 201, "{body}");
    let flow_id = body["id"].as_str().unwrap().to_string();
    let (status, body) = host
        .call(Method::DELETE, "/v1/plugins/probe/1.2.0", None)
        .await;
    assert_eq!(status, 409, "{body}");
    error_message(&body, "in_use");
    let (status, _) = host
        .call(Method::DELETE, &format!("/v1/flows/{flow_id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, _) = host
        .call(Method::DELETE, "/v1/plugins/probe/1.2.0", None)
        .await;
    assert_eq!(status, 204);

    // The component still loads and runs beside the interpreter; and after
    // a restart both kinds come back without recompiling.
    let (_, body) = host
        .invoke("example", "echo", json!({"x": 1}), json!({}))
        .await;
    assert_eq!(body["output"], json!({"echo": {"x": 1}}));
    host.stop().await;
    let host = TestHost::start(sandbox_config(dir.path())).await;
    assert_eq!(host.app.engine.compilations(), 0);
    let got = invoke(&host, "probe@1.0.0", &conn, "get", json!({"path": "ok"})).await;
    assert_eq!(got["output"], json!({"ok": true}), "{got}");
    let (_, body) = host
        .invoke("example", "echo", json!({"x": 2}), json!({}))
        .await;
    assert_eq!(body["output"], json!({"echo": {"x": 2}}));
    drop(server);
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connector_has_a_custom_api_call_through_its_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(sandbox_config(dir.path())).await;
    host.upload_file(artifacts::EXAMPLE).await;
    let (status, body) = host.upload_spec("woocommerce.yaml").await;
    assert_eq!(status, 201, "{body}");

    // A component: the host makes the request, with the connection's key.
    let fake = FakeItems::start().await;
    let example = connect(&host, "example", fake.properties()).await;
    let me = invoke(
        &host,
        "example",
        &example,
        "custom-api-call",
        json!({"path": "/me"}),
    )
    .await;
    assert_eq!(me["output"]["status"], json!(200), "{me}");
    assert_eq!(me["output"]["body"], json!({"user": "acme"}), "{me}");
    assert_eq!(me["journal"]["exchanges"][0]["status"], json!(200), "{me}");
    let missing = invoke(
        &host,
        "example",
        &example,
        "custom-api-call",
        json!({"path": "/items/nope"}),
    )
    .await;
    assert_eq!(
        missing["error"]["error"]["kind"],
        json!("invalid_input"),
        "{missing}"
    );
    let elsewhere = invoke(
        &host,
        "example",
        &example,
        "custom-api-call",
        json!({"path": "https://example.com/"}),
    )
    .await;
    let message = elsewhere["error"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not in this plugin's allowed hosts"),
        "{elsewhere}"
    );

    // A spec: the interpreter makes it, relative to the spec's base URL.
    let woo = FakeWooCommerce::start().await;
    let store = connect(
        &host,
        "woocommerce",
        json!({"base_url": woo.origin(), "username": CONSUMER_KEY, "password": CONSUMER_SECRET}),
    )
    .await;
    let order = woo.add_order("processing", "10.00");
    let path = format!("/orders/{}", order["id"]);
    let got = invoke(
        &host,
        "woocommerce",
        &store,
        "custom-api-call",
        json!({"path": path}),
    )
    .await;
    assert_eq!(got["output"]["body"], order, "{got}");
    let put = invoke(
        &host,
        "woocommerce",
        &store,
        "custom-api-call",
        json!({"method": "PUT", "path": path, "body": {"status": "completed"}}),
    )
    .await;
    assert_eq!(put["output"]["body"]["status"], json!("completed"), "{put}");
    woo.rate_limit_next(1, "4");
    let limited = invoke(
        &host,
        "woocommerce",
        &store,
        "custom-api-call",
        json!({"path": path}),
    )
    .await;
    assert_eq!(
        limited["error"]["error"]["retry_after_ms"],
        json!(4000),
        "{limited}"
    );
    assert!(!got.to_string().contains(CONSUMER_SECRET));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpublished_spec_is_tested_live_with_caps() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(sandbox_config(dir.path())).await;
    host.upload_file(artifacts::DECLARATIVE_INTERPRETER).await;
    let woo = FakeWooCommerce::start().await;
    let orders: Vec<Value> = (0..35)
        .map(|n| woo.add_order("processing", &format!("{n}.00")))
        .collect();
    // Pages of 10, so the test's cap of 2 pages cuts the poll.
    let spec = std::fs::read_to_string(spec_path("woocommerce.yaml"))
        .unwrap()
        .replace("      size: 50\n", "      size: 10\n");
    let properties =
        json!({"base_url": woo.origin(), "username": CONSUMER_KEY, "password": CONSUMER_SECRET});
    let test = json!({
        "spec": spec,
        "properties": properties,
        "trigger": "order-updated",
        "limits": {"pages": 2, "records": 100, "time_ms": 10000},
    });
    let (status, body) = host
        .call(Method::POST, "/v1/plugins/test", Some(test))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], json!(true), "{body}");
    let pages = body["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 2, "{body}");
    assert!(
        pages[0]["request"]["url"]
            .as_str()
            .unwrap()
            .contains("page=1")
    );
    assert_eq!(pages[1]["response"]["status"], json!(200));
    let first: Value =
        serde_json::from_str(pages[0]["response"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(first[0], orders[0]);
    // 20 read; cut short, the last change's instant is left whole for the
    // next poll (the store's filter is exclusive).
    assert_eq!(body["records"].as_array().unwrap().len(), 19, "{body}");
    assert_eq!(body["records"][0], orders[0]);
    assert_eq!(body["schema"]["type"], json!("object"));
    assert_eq!(
        body["schema"]["properties"]["id"],
        json!({"type": "integer"})
    );
    assert!(
        body["schema"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("status"))
    );
    assert!(
        !body.to_string().contains(CONSUMER_SECRET),
        "a secret leaked"
    );
    // The host added the credentials; the pages show the spec's request.
    assert!(woo.requests().iter().all(|s| s.authorization.is_some()));
    assert!(!pages[0]["request"].to_string().contains("Basic"));

    // An action, and an action's failure (the page is still shown).
    let test = json!({"spec": spec, "properties": properties, "action": "get-order",
                      "input": {"id": orders[3]["id"]}});
    let (_, body) = host
        .call(Method::POST, "/v1/plugins/test", Some(test))
        .await;
    assert_eq!(
        body["output"],
        json!({"found": true, "order": orders[3]}),
        "{body}"
    );
    assert_eq!(
        body["schema"]["properties"]["found"],
        json!({"type": "boolean"})
    );
    woo.fail_next(1, 503);
    let test =
        json!({"spec": spec, "properties": properties, "action": "get-order", "input": {"id": 1}});
    let (_, body) = host
        .call(Method::POST, "/v1/plugins/test", Some(test))
        .await;
    assert_eq!(body["ok"], json!(false), "{body}");
    assert_eq!(body["error"]["error"]["kind"], json!("transient"), "{body}");
    assert_eq!(body["pages"][0]["response"]["status"], json!(503), "{body}");

    // The format's schema and validation, as an editor uses them while the
    // author types.
    let (status, schema) = host.get("/v1/declarative/schema").await;
    assert_eq!(status, 200);
    assert_eq!(
        schema["required"],
        json!(["declarative", "key", "name", "version"])
    );
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for (text, ok) in [
        (spec.clone(), true),
        (spec.replace("key: woocommerce", "key: Woo Commerce"), false),
    ] {
        let response = client
            .post(format!("{}/v1/plugins/validate", host.url))
            .bearer_auth(crate::support::TOKEN)
            .body(text)
            .send()
            .await
            .unwrap();
        let (status, body) = crate::support::read(response).await;
        assert_eq!((status.as_u16(), &body["ok"]), (200, &json!(ok)), "{body}");
        if ok {
            assert_eq!(body["manifest"]["key"], json!("woocommerce"));
        } else {
            assert_eq!(body["problems"][0]["path"], json!("/key"), "{body}");
            assert_eq!(body["problems"][0]["line"], json!(7), "{body}");
        }
    }

    // A bad draft is refused like a push; nothing was ever stored.
    let test = json!({"spec": spec.replace("    kind: search\n", "    kind: search\n    oops: 1\n"), "properties": properties});
    let (status, body) = host
        .call(Method::POST, "/v1/plugins/test", Some(test))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["problems"][0]["line"].as_u64().unwrap() > 1,
        "{body}"
    );
    let (_, listed) = host.get("/v1/plugins").await;
    assert_eq!(listed["plugins"], json!([]));
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_is_contained_like_any_connector() {
    // A server on 127.0.0.1 that must never be reached.
    let forbidden = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = forbidden.local_addr().unwrap().port();
    let probe = Probe::default();
    let server = Server::start(probe_api(probe.clone(), format!("http://127.0.0.1:{port}"))).await;
    let origin = server.origin.clone();
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(sandbox_config(dir.path())).await;
    host.upload_file(artifacts::DECLARATIVE_INTERPRETER).await;
    let (status, body) = host.upload(PROBE.as_bytes().to_vec()).await;
    assert_eq!(status, 201, "{body}");

    // Forbidden addresses behind the spec's own allowed host.
    for (target, reason) in [
        (format!("http://127.0.0.1:{port}"), "127.0.0.1 is loopback"),
        (
            format!("http://localhost:{port}"),
            "localhost resolves to a refused address",
        ),
        (
            "http://169.254.169.254".to_string(),
            "169.254.169.254 is a cloud metadata address",
        ),
        ("http://10.0.0.1".to_string(), "10.0.0.1 is private"),
    ] {
        let conn = connect(&host, "probe", json!({"target": target, "token": SECRET})).await;
        let body = invoke(
            &host,
            "probe",
            &conn,
            "get",
            json!({"path": "latest/meta-data/"}),
        )
        .await;
        assert_eq!(body["error"]["error"]["kind"], json!("permanent"), "{body}");
        let message = body["error"]["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{target}: {message}");
    }

    let conn = connect(&host, "probe", json!({"target": origin, "token": SECRET})).await;
    // Off the allow-list through the custom API call, and through a `Link`
    // a third party (or an attacker's response) hands the interpreter.
    let off = invoke(
        &host,
        "probe",
        &conn,
        "custom-api-call",
        json!({"path": "https://example.com/"}),
    )
    .await;
    let message = off["error"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not in this plugin's allowed hosts"),
        "{off}"
    );
    let pages = invoke(&host, "probe", &conn, "pages", json!({})).await;
    assert_eq!(
        pages["error"]["error"]["kind"],
        json!("permanent"),
        "{pages}"
    );
    let exchanges = pages["journal"]["exchanges"].as_array().unwrap();
    assert_eq!(exchanges[0]["status"], json!(200), "{pages}");
    assert!(
        exchanges[1]["error"].as_str().unwrap().contains("denied"),
        "{pages}"
    );

    // The spec's Authorization and Cookie are dropped; the host's token is sent.
    let ok = invoke(&host, "probe", &conn, "get", json!({"path": "ok"})).await;
    assert_eq!(ok["output"], json!({"ok": true}), "{ok}");
    let (authorization, cookie, _) = probe.headers.lock().unwrap().last().cloned().unwrap();
    assert_eq!(authorization.as_deref(), Some(&*format!("Bearer {SECRET}")));
    assert_eq!(cookie, None);

    // Everything a template can see, sent out and returned: no secret.
    let observed = invoke(&host, "probe", &conn, "observe", json!({"x": 1})).await;
    assert_eq!(
        observed["output"]["connection"],
        json!({"target": origin}),
        "{observed}"
    );
    assert_eq!(observed["output"]["env"], json!({}));
    let sent = probe.bodies.lock().unwrap().last().cloned().unwrap();
    assert_eq!(sent["connection"], json!({"target": origin}));
    for text in [observed.to_string(), sent.to_string()] {
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
    }

    // Nothing reached the forbidden server.
    let accepted = tokio::time::timeout(Duration::from_millis(50), forbidden.accept()).await;
    assert!(accepted.is_err(), "a request reached 127.0.0.1");
    drop(server);
    host.stop().await;
}

/// The interpreter describes a spec as the host derives its manifest at
/// push (the host does not ask it; the two must still agree).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interpreter_describes_a_spec_as_the_host_does() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(sandbox_config(dir.path())).await;
    let engine = &host.app.engine;
    let bytes = std::fs::read(artifacts::DECLARATIVE_INTERPRETER).unwrap();
    let sha = switchyard::engine::Engine::content_hash(&bytes);
    let interpreter = engine.load_interpreter(&sha, &bytes).unwrap();
    // Without a spec it describes itself; a connector's linker refuses it.
    let itself = engine
        .describe(&interpreter, Duration::from_secs(10))
        .await
        .result
        .unwrap();
    assert_eq!(itself.key, "declarative-interpreter");
    assert!(engine.load(&sha, &bytes).is_err());
    for name in ["woocommerce.yaml", "shipping.yaml", "shopify-lite.yaml"] {
        let text = std::fs::read_to_string(spec_path(name)).unwrap();
        let declared = switchyard::declarative::parse(&text).unwrap();
        let described = engine
            .describe(
                &interpreter.with_spec(declared.canonical.clone().into()),
                Duration::from_secs(10),
            )
            .await
            .result
            .unwrap()
            .validate()
            .unwrap();
        let host_side = &declared.manifest;
        assert_eq!(
            (&described.key, &described.version, &described.auth),
            (&host_side.key, &host_side.version, &host_side.auth),
            "{name}"
        );
        assert_eq!(described.allowed_hosts, host_side.allowed_hosts, "{name}");
        assert_eq!(described.triggers, host_side.triggers, "{name}");
        assert_eq!(described.actions, host_side.actions, "{name}");
        let keys = |m: &switchyard::manifest::Manifest| {
            m.connection_properties
                .iter()
                .map(|p| (p.key.clone(), p.secret, p.required))
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&described), keys(host_side), "{name}");
    }
    host.stop().await;
}
