//! Tenants: the operator manages plugins and tenants; a tenant's token sees
//! and changes only that tenant's connections. Every endpoint is walked with
//! another tenant's token.

use reqwest::Method;
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::support::{TestHost, client, config};

async fn as_token(
    host: &TestHost,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let (status, body) = host.call_as(token, method, path, body).await;
    (status.as_u16(), body)
}

#[tokio::test]
async fn a_tenant_sees_only_its_own_connections_and_cannot_manage_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(config(dir.path())).await;
    host.upload_file(artifacts::EXAMPLE).await;

    let mut tokens = Vec::new();
    for name in ["Acme", "Globex"] {
        let (status, body) = host
            .call(Method::POST, "/v1/tenants", Some(json!({"name": name})))
            .await;
        assert_eq!(status, 201, "{body}");
        assert!(body["tenant"].get("token_sha256").is_none(), "{body}");
        tokens.push(body["token"].as_str().unwrap().to_string());
    }
    let (acme, globex) = (&tokens[0], &tokens[1]);
    let (status, me) = as_token(&host, acme, Method::GET, "/v1/whoami", None).await;
    assert_eq!(status, 200);
    assert_eq!(me["role"], json!("tenant"));

    let (status, created) = as_token(
        &host,
        acme,
        Method::POST,
        "/v1/connections",
        Some(json!({"plugin": "example", "properties": {"base_url": "https://api.acme.test", "api_key": "acme-key-1"}})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();

    // Acme sees it; Globex and the operator's default tenant do not.
    let (_, list) = as_token(&host, acme, Method::GET, "/v1/connections", None).await;
    assert_eq!(list["connections"].as_array().unwrap().len(), 1);
    for token in [globex.as_str(), crate::support::TOKEN] {
        let (_, list) = as_token(&host, token, Method::GET, "/v1/connections", None).await;
        assert_eq!(list["connections"], json!([]), "{list}");
    }

    // Every connection endpoint answers 404 to another tenant, and nothing changes.
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/v1/connections/{id}"), None),
        (
            Method::PATCH,
            format!("/v1/connections/{id}"),
            Some(json!({"name": "stolen"})),
        ),
        (Method::DELETE, format!("/v1/connections/{id}"), None),
        (Method::POST, format!("/v1/connections/{id}/test"), None),
        (
            Method::POST,
            format!("/v1/connections/{id}/oauth/authorize"),
            None,
        ),
        (
            Method::POST,
            "/v1/invoke".to_string(),
            Some(json!({"plugin": "example", "action": "echo", "input": {}, "connection": id})),
        ),
    ];
    for (method, path, body) in &cases {
        let (status, answer) = as_token(&host, globex, method.clone(), path, body.clone()).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], json!("not_found"));
    }
    let (_, still) = as_token(
        &host,
        acme,
        Method::GET,
        &format!("/v1/connections/{id}"),
        None,
    )
    .await;
    assert_eq!(still["name"], created["name"]);

    // Plugins and tenants are the operator's: 403 for a tenant.
    let wasm = std::fs::read(artifacts::FIXTURE_EXAMPLE_V2).unwrap();
    let upload = client()
        .post(format!("{}/v1/plugins", host.url))
        .bearer_auth(globex)
        .body(wasm)
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), 403);
    let operator_only: Vec<(Method, &str, Option<Value>)> = vec![
        (Method::DELETE, "/v1/plugins/example/0.1.0", None),
        (Method::POST, "/v1/plugins/example/0.1.0/deprecate", None),
        (Method::GET, "/v1/plugins/example/0.1.0/env", None),
        (
            Method::PUT,
            "/v1/plugins/example/0.1.0/env/X",
            Some(json!({"value": "1"})),
        ),
        (Method::DELETE, "/v1/plugins/example/0.1.0/env/X", None),
        (Method::GET, "/v1/tenants", None),
        (Method::POST, "/v1/tenants", Some(json!({"name": "Evil"}))),
    ];
    for (method, path, body) in operator_only {
        let (status, answer) = as_token(&host, globex, method.clone(), path, body).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["code"], json!("forbidden"));
    }
    // Reading the catalogue is fine for tenants.
    let (status, _) = as_token(&host, globex, Method::GET, "/v1/plugins", None).await;
    assert_eq!(status, 200);

    // A rotated token stops working at once; a deleted tenant's token too.
    let (_, tenants) = host.get("/v1/tenants").await;
    let acme_id = tenants["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Acme")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, rotated) = host
        .call(Method::POST, &format!("/v1/tenants/{acme_id}/token"), None)
        .await;
    let new_token = rotated["token"].as_str().unwrap();
    assert_eq!(
        as_token(&host, acme, Method::GET, "/v1/connections", None)
            .await
            .0,
        401
    );
    assert_eq!(
        as_token(&host, new_token, Method::GET, "/v1/connections", None)
            .await
            .0,
        200
    );
    let (status, _) = host
        .call(Method::DELETE, &format!("/v1/tenants/{acme_id}"), None)
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        as_token(&host, new_token, Method::GET, "/v1/connections", None)
            .await
            .0,
        401
    );
    host.stop().await;
}
