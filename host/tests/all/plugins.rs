//! The plugin registry over the API: upload, list, resolve, versions side by
//! side, deprecate, delete, environment variables, invoke, every kind of bad
//! upload, and restarts that do not recompile.

use reqwest::Method;
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::{
    fake_items::{self, FakeItems},
    support::{TestHost, client, config, error_message, read as read_answer},
};

/// The same component with a custom section appended: different bytes, same
/// manifest.
fn with_custom_section(mut bytes: Vec<u8>) -> Vec<u8> {
    let name = b"switchyard-test";
    let payload = b"different bytes";
    bytes.push(0); // custom section id
    bytes.push((1 + name.len() + payload.len()) as u8);
    bytes.push(name.len() as u8);
    bytes.extend_from_slice(name);
    bytes.extend_from_slice(payload);
    bytes
}

fn keys_and_versions(list: &Value) -> Vec<String> {
    list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}@{}",
                p["key"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn upload_list_resolve_deprecate_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(config(dir.path())).await;

    let (status, body) = host.upload_file(artifacts::EXAMPLE).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["created"], json!(true));
    assert_eq!(body["plugin"]["key"], json!("example"));
    assert_eq!(body["plugin"]["version"], json!("0.1.0"));

    // Identical bytes again: a no-op that says so.
    let (status, body) = host.upload_file(artifacts::EXAMPLE).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["created"], json!(false));

    // Different bytes under an existing key@version: refused, original kept.
    let original = std::fs::read(artifacts::EXAMPLE).unwrap();
    let (status, body) = host.upload(with_custom_section(original.clone())).await;
    assert_eq!(status, 409, "{body}");
    assert!(error_message(&body, "conflict").contains("example@0.1.0 already exists"));
    let (_, shown) = host.get("/v1/plugins/example/0.1.0").await;
    assert_eq!(
        shown["sha256"],
        json!(switchyard::engine::Engine::content_hash(&original))
    );

    // A second version lives beside the first.
    let (status, _) = host.upload_file(artifacts::FIXTURE_EXAMPLE_V2).await;
    assert_eq!(status, 201);
    let (_, list) = host.get("/v1/plugins").await;
    assert_eq!(keys_and_versions(&list), ["example@0.1.0", "example@0.2.0"]);
    let (_, versions) = host.get("/v1/plugins/example").await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);

    let resolve = |req: &'static str| {
        let host = &host;
        async move {
            let (status, body) = host
                .get(&format!(
                    "/v1/plugins/example/resolve?req={}",
                    urlencode(req)
                ))
                .await;
            (status, body["version"].as_str().map(str::to_string))
        }
    };
    assert_eq!(
        resolve("*").await,
        (reqwest::StatusCode::OK, Some("0.2.0".into()))
    );
    assert_eq!(
        resolve("^0.1").await,
        (reqwest::StatusCode::OK, Some("0.1.0".into()))
    );
    assert_eq!(resolve("^0.3").await.0, 404);
    assert_eq!(resolve("not a req").await.0, 400);

    // Deprecated versions stay but are skipped by resolution.
    let (status, body) = host
        .call(Method::POST, "/v1/plugins/example/0.2.0/deprecate", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugin"]["deprecated"], json!(true));
    assert_eq!(resolve("*").await.1.as_deref(), Some("0.1.0"));
    host.call(
        Method::POST,
        "/v1/plugins/example/0.2.0/deprecate",
        Some(json!({"deprecated": false})),
    )
    .await;
    assert_eq!(resolve("*").await.1.as_deref(), Some("0.2.0"));

    // The manifest is there in full.
    let (_, shown) = host.get("/v1/plugins/example/0.1.0").await;
    let actions: Vec<&str> = shown["manifest"]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"create-item") && actions.contains(&"echo"),
        "{actions:?}"
    );
    assert_eq!(shown["manifest"]["auth"]["type"], json!("api_key"));

    // Delete is refused while a flow is pinned to the version.
    let connection = host
        .connect(
            "example",
            json!({"base_url": "https://api.example.test", "api_key": "k"}),
        )
        .await;
    let (status, flow) = host
        .call(
            Method::POST,
            "/v1/flows",
            Some(json!({
                "name": "Pins example 0.2.0",
                "trigger": {"schedule": "0 0 1 1 *"},
                "steps": [{
                    "key": "echo",
                    "plugin": "example@0.2.0",
                    "action": "echo",
                    "connection": connection,
                    "input": {"hello": "world"},
                }],
            })),
        )
        .await;
    assert_eq!(status, 201, "{flow}");
    let flow_id = flow["id"].as_str().unwrap();
    let (status, body) = host
        .call(Method::DELETE, "/v1/plugins/example/0.2.0", None)
        .await;
    assert_eq!(status, 409);
    assert!(error_message(&body, "in_use").contains(flow_id));
    let (status, _) = host
        .call(Method::DELETE, "/v1/plugins/example/0.1.0", None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = host.get("/v1/plugins/example/0.1.0").await;
    assert_eq!(status, 404);
    error_message(&body, "not_found");
    let (_, list) = host.get("/v1/plugins").await;
    assert_eq!(keys_and_versions(&list), ["example@0.2.0"]);
    host.stop().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'*' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn environment_variables_reach_the_guest_and_are_copied_forward() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(config(dir.path())).await;
    host.upload_file(artifacts::EXAMPLE).await;
    host.upload_file(artifacts::FIXTURE_HOSTILE).await;

    let put = |path: &'static str, value: &'static str| {
        host.call(Method::PUT, path, Some(json!({"value": value})))
    };
    let (status, body) = put(
        "/v1/plugins/example/0.1.0/env/API_BASE",
        "https://sandbox.example.com",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = put("/v1/plugins/example/0.1.0/env/bad-name", "x").await;
    assert_eq!(status, 400);
    assert!(error_message(&body, "bad_request").contains("bad-name"));

    // A new version of the same key starts with the older version's variables.
    host.upload_file(artifacts::FIXTURE_EXAMPLE_V2).await;
    let (_, env) = host.get("/v1/plugins/example/0.2.0/env").await;
    assert_eq!(
        env["env"],
        json!({"API_BASE": "https://sandbox.example.com"})
    );

    let (status, _) = host
        .call(
            Method::DELETE,
            "/v1/plugins/example/0.2.0/env/API_BASE",
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (_, env) = host.get("/v1/plugins/example/0.2.0/env").await;
    assert_eq!(env["env"], json!({}));
    let (status, _) = host
        .call(
            Method::DELETE,
            "/v1/plugins/example/0.2.0/env/API_BASE",
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Variables arrive in the call context, and nowhere in the WASI environment.
    put("/v1/plugins/hostile/0.1.0/env/REGION", "eu").await;
    let (status, body) = host
        .invoke("hostile@0.1.0", "observe", json!({}), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let observed = &body["output"];
    assert_eq!(
        observed["ctx"]["env"],
        json!({"REGION": "eu"}),
        "{observed}"
    );
    assert_eq!(observed["env_vars"], json!({}), "{observed}");
    host.stop().await;
}

#[tokio::test]
async fn invoke_calls_a_local_fake_through_the_sandbox() {
    // Ad-hoc properties hold no secret: the fake lets calls without a key in.
    let fake = FakeItems::start_open().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.allow_networks = vec!["127.0.0.2/32".parse().unwrap()];
    let host = TestHost::start(cfg).await;
    host.upload_file(artifacts::EXAMPLE).await;
    let properties = json!({"base_url": fake.origin()});

    let (status, body) = host
        .invoke(
            "example@^0.1",
            "create-item",
            json!({"name": "Widget", "sku": "W-1"}),
            properties.clone(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["error"], Value::Null, "{body}");
    assert_eq!(body["output"]["id"], json!("item-1"), "{body}");
    assert_eq!(body["output"]["name"], json!("Widget"));
    let exchanges = body["journal"]["exchanges"].as_array().unwrap();
    assert_eq!(exchanges.len(), 1, "{body}");
    assert_eq!(exchanges[0]["status"], json!(201));
    assert_eq!(exchanges[0]["method"], json!("POST"));
    assert_eq!(fake.requests().len(), 1);
    let created = fake.created();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].1["sku"], json!("W-1"));
    assert!(!created[0].0.is_empty(), "an idempotency key was sent");

    let (_, body) = host
        .invoke(
            "example",
            "get-item",
            json!({"id": "item-1"}),
            properties.clone(),
        )
        .await;
    assert_eq!(
        body["output"],
        json!({"found": true, "item": {"id": "item-1", "name": "Widget"}}),
        "{body}"
    );
    let (_, body) = host
        .invoke(
            "example",
            "get-item",
            json!({"id": "nope"}),
            properties.clone(),
        )
        .await;
    assert_eq!(body["output"], json!({"found": false}), "{body}");

    // Input is checked against the action's schema before the plugin runs.
    let (status, body) = host
        .invoke("example", "get-item", json!({"id": 7}), properties.clone())
        .await;
    assert_eq!(status, 400);
    let message = error_message(&body, "bad_request");
    assert!(
        message.contains("/id") && message.contains("get-item"),
        "{message}"
    );
    let (status, body) = host
        .invoke("example", "no-such-action", json!({}), properties.clone())
        .await;
    assert_eq!(status, 400);
    assert!(error_message(&body, "bad_request").contains("has no action `no-such-action`"));

    // Without a base_url the example connector refuses the call itself.
    let (_, body) = host
        .invoke("example", "get-item", json!({"id": "item-1"}), json!({}))
        .await;
    assert_eq!(body["error"]["kind"], json!("connector"), "{body}");
    assert_eq!(
        body["error"]["error"]["kind"],
        json!("invalid_input"),
        "{body}"
    );

    // A host outside the allow-list is refused by the sandbox, even on an
    // allowed network.
    host.upload_file(artifacts::FIXTURE_HOSTILE).await;
    let url = format!("{}/items/item-1", fake.origin());
    let (_, body) = host
        .invoke(
            "hostile",
            "http",
            json!({"method": "GET", "url": url}),
            json!({}),
        )
        .await;
    assert_eq!(body["output"]["error"]["kind"], json!("denied"), "{body}");
    let message = body["output"]["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("is not in this plugin's allowed hosts [http://allowed.test:80]"),
        "{message}"
    );
    assert_eq!(
        body["journal"]["exchanges"][0]["error"]
            .as_str()
            .map(|e| e.starts_with("denied")),
        Some(true)
    );
    assert_eq!(
        fake.requests().len(),
        3,
        "only the example's three calls reached the fake"
    );
    drop(fake);
    host.stop().await;
}

/// An author tries a retried action by hand: two invocations with the same
/// key are one item to an API that honours the key; without one, each
/// invocation gets a new key.
#[tokio::test]
async fn invoke_with_an_idempotency_key_is_one_operation() {
    let fake = FakeItems::start_open().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.allow_networks = vec!["127.0.0.2/32".parse().unwrap()];
    let host = TestHost::start(cfg).await;
    host.upload_file(artifacts::EXAMPLE).await;
    let invoke = |key: Option<&str>| {
        host.call(
            Method::POST,
            "/v1/invoke",
            Some(json!({
                "plugin": "example",
                "action": "create-item",
                "input": {"name": "Widget"},
                "properties": {"base_url": fake.origin()},
                "idempotency_key": key,
            })),
        )
    };

    let (status, first) = invoke(Some("retry-7")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["idempotency_key"], json!("retry-7"), "{first}");
    let (_, again) = invoke(Some("retry-7")).await;
    assert_eq!(again["output"], first["output"], "{again}");
    assert_eq!(
        fake.posted_keys(),
        vec![Some("retry-7".to_string()); 2],
        "the action sent the given key both times"
    );
    assert_eq!(fake.created().len(), 1, "the retry created nothing new");

    let (_, generated) = invoke(None).await;
    let key = generated["idempotency_key"].as_str().unwrap();
    assert!(key.starts_with("invoke-"), "{generated}");
    assert_ne!(generated["output"]["id"], first["output"]["id"]);
    assert_eq!(fake.created().len(), 2);

    let (status, body) = invoke(Some("")).await;
    assert_eq!(status, 400, "{body}");
    assert!(error_message(&body, "bad_request").contains("idempotency key must not be empty"));
    drop(fake);
    host.stop().await;
}

#[tokio::test]
async fn loopback_is_refused_unless_the_operator_allows_it() {
    let fake = FakeItems::start_open().await;
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(config(dir.path())).await;
    host.upload_file(artifacts::EXAMPLE).await;
    let (_, body) = host
        .invoke(
            "example",
            "get-item",
            json!({"id": "item-1"}),
            json!({"base_url": fake.origin()}),
        )
        .await;
    let text = body["error"].to_string();
    assert!(text.contains("127.0.0.2 is loopback"), "{body}");
    assert!(fake.requests().is_empty(), "the fake must not be reached");
    drop(fake);
    host.stop().await;
}

#[tokio::test]
async fn bad_uploads_are_refused_with_a_reason_and_touch_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(config(dir.path())).await;
    host.upload_file(artifacts::EXAMPLE).await;
    let read = |p: &str| std::fs::read(p).unwrap();
    let cases: Vec<(&str, Vec<u8>, u16, &str, &str)> = vec![
        (
            "garbage",
            b"this is not wasm at all".to_vec(),
            422,
            "invalid_plugin",
            "not a WebAssembly binary",
        ),
        ("empty", Vec::new(), 400, "bad_request", "body is empty"),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            422,
            "invalid_plugin",
            "core WebAssembly module, not a component",
        ),
        (
            "truncated component",
            read(artifacts::EXAMPLE)[..200].to_vec(),
            422,
            "invalid_plugin",
            "does not compile",
        ),
        (
            "another world",
            read(artifacts::FIXTURE_OTHER_WORLD),
            422,
            "invalid_plugin",
            "switchyard:other/thing",
        ),
        (
            "bad semver",
            read(artifacts::FIXTURE_BAD_SEMVER),
            422,
            "invalid_manifest",
            "`1.0` is not a semantic version",
        ),
        (
            "duplicate keys",
            read(artifacts::FIXTURE_DUP_KEYS),
            422,
            "invalid_manifest",
            "duplicate action key",
        ),
        (
            "bad schema",
            read(artifacts::FIXTURE_BAD_SCHEMA),
            422,
            "invalid_manifest",
            "not a valid JSON Schema",
        ),
        (
            "describe traps",
            read(artifacts::FIXTURE_TRAP_DESCRIBE),
            422,
            "describe_failed",
            "trapped",
        ),
    ];
    for (name, bytes, status, code, needle) in cases {
        let (got, body) = host.upload(bytes).await;
        assert_eq!(got.as_u16(), status, "{name}: {body}");
        let message = error_message(&body, code);
        assert!(
            message.contains(needle),
            "{name}: `{message}` lacks `{needle}`"
        );
    }
    let (status, body) = host
        .upload(with_custom_section(read(artifacts::EXAMPLE)))
        .await;
    assert_eq!(status, 409, "{body}");

    // Nothing stored changed, and the good plugin still works.
    let (_, list) = host.get("/v1/plugins").await;
    assert_eq!(keys_and_versions(&list), ["example@0.1.0"]);
    let (_, body) = host
        .invoke("example@0.1.0", "echo", json!({"still": "here"}), json!({}))
        .await;
    assert_eq!(body["output"], json!({"echo": {"still": "here"}}));

    // An expected version that does not match the manifest is refused too.
    let response = client()
        .post(format!("{}/v1/plugins?version=9.9.9", host.url))
        .bearer_auth(crate::support::TOKEN)
        .body(read(artifacts::FIXTURE_EXAMPLE_V2))
        .send()
        .await
        .unwrap();
    let (status, body) = read_answer(response).await;
    assert_eq!(status, 422);
    assert!(error_message(&body, "version_mismatch").contains("9.9.9"));
    host.stop().await;
}

#[tokio::test]
async fn the_api_requires_the_operator_token() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(config(dir.path())).await;
    let client = client();
    let health = client
        .get(format!("{}/health", host.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    for token in [None, Some("wrong-token")] {
        let mut request = client.get(format!("{}/v1/plugins", host.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let (status, body) = read_answer(request.send().await.unwrap()).await;
        assert_eq!(status, 401);
        error_message(&body, "unauthorized");
    }
    let (status, body) = host.get("/v1/nothing-here").await;
    assert_eq!(status, 404);
    error_message(&body, "not_found");
    host.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_plugins_and_does_not_recompile() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(config(dir.path())).await;
    host.upload_file(artifacts::EXAMPLE).await;
    host.upload_file(artifacts::FIXTURE_HOSTILE).await;
    assert_eq!(host.app.engine.compilations(), 2);
    host.call(
        Method::PUT,
        "/v1/plugins/example/0.1.0/env/MODE",
        Some(json!({"value": "live"})),
    )
    .await;
    host.stop().await;

    let host = TestHost::start(config(dir.path())).await;
    assert_eq!(
        host.app.engine.compilations(),
        0,
        "a restart must load cached artifacts"
    );
    let (_, status) = host.get("/v1/status").await;
    assert_eq!(status["plugins"], json!(2));
    assert_eq!(status["compilations"], json!(0));
    let (_, env) = host.get("/v1/plugins/example/0.1.0/env").await;
    assert_eq!(env["env"], json!({"MODE": "live"}));
    let (_, body) = host
        .invoke(
            "example@0.1.0",
            "echo",
            json!({"after": "restart"}),
            json!({}),
        )
        .await;
    assert_eq!(body["output"], json!({"echo": {"after": "restart"}}));
    host.stop().await;

    // A lost artifact cache is rebuilt, not fatal.
    std::fs::remove_dir_all(dir.path().join("data/artifacts")).unwrap();
    let host = TestHost::start(config(dir.path())).await;
    assert_eq!(host.app.engine.compilations(), 2);
    let (_, body) = host
        .invoke("example@0.1.0", "echo", json!({"n": 1}), json!({}))
        .await;
    assert_eq!(body["output"], json!({"echo": {"n": 1}}));
    host.stop().await;
}

#[tokio::test]
async fn test_connection_runs_the_plugins_check_with_host_held_credentials() {
    let fake = FakeItems::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.allow_networks = vec!["127.0.0.2/32".parse().unwrap()];
    let host = TestHost::start(cfg).await;
    host.upload_file(artifacts::EXAMPLE).await;
    let mut ids = Vec::new();
    for key in [fake_items::API_KEY, "k-wrong"] {
        let properties = json!({"base_url": fake.origin(), "api_key": key});
        ids.push(host.connect("example", properties).await);
    }
    let (status, body) = host
        .call(
            Method::POST,
            &format!("/v1/connections/{}/test", ids[0]),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ok"], json!(true), "{body}");
    assert_eq!(body["journal"]["exchanges"][0]["status"], json!(200));

    let (_, body) = host
        .call(
            Method::POST,
            &format!("/v1/connections/{}/test", ids[1]),
            None,
        )
        .await;
    assert_eq!(body["ok"], json!(false), "{body}");
    assert_eq!(body["error"]["error"]["kind"], json!("auth"), "{body}");
    assert!(
        !body.to_string().contains("k-wrong"),
        "the key must not show: {body}"
    );
    drop(fake);
    host.stop().await;
}
