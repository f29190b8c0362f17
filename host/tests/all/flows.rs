//! Flow definitions: publishing validates against the plugins' schemas with
//! every problem named, pins exact plugin versions, keeps them until an
//! explicit upgrade, and protects pinned plugin versions from deletion.

use reqwest::Method;
use serde_json::{Value, json};
use switchyard_tests as artifacts;

use crate::support::{TOKEN, TestHost, client, config, read};

async fn post_text(host: &TestHost, path: &str, text: &str, token: &str) -> (u16, Value) {
    let response = client()
        .post(format!("{}{path}", host.url))
        .bearer_auth(token)
        .body(text.to_string())
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    (status.as_u16(), body)
}

fn flow_yaml(connection: &str, step_input: &str) -> String {
    format!(
        r#"
name: New items to the warehouse
trigger:
  plugin: example@^0.1
  trigger: new-item
  connection: {connection}
conditions:
  - trigger.status == "packed"
steps:
  - key: find
    plugin: example
    action: get-item
    connection: {connection}
    input:
      id: "{{{{ trigger.id }}}}"
  - key: create
    plugin: example
    action: create-item
    connection: {connection}
    input:
{step_input}
"#
    )
}

#[tokio::test]
async fn publishing_validates_pins_and_protects_versions() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(config(dir.path())).await;
    host.upload_file(artifacts::EXAMPLE).await;
    let conn = host
        .connect(
            "example",
            json!({"base_url": "https://api.acme.test", "api_key": "k-1234"}),
        )
        .await;

    let good = flow_yaml(
        &conn,
        "      name: \"Order {{ trigger.id }} ({{ steps.find.found }})\"\n      sku: W-1",
    );
    let (status, flow) = post_text(&host, "/v1/flows", &good, TOKEN).await;
    assert_eq!(status, 201, "{flow}");
    let id = flow["id"].as_str().unwrap().to_string();
    assert_eq!(flow["version"], json!(1));
    assert_eq!(
        flow["pinned"],
        json!({"trigger": "0.1.0", "steps": ["0.1.0", "0.1.0"]})
    );

    // Every problem, each with its place.
    let bad = flow_yaml(
        "conn_nope",
        "      name: \"{{ steps.later.x }}\"\n      other: \"{{ trigger.id \"",
    )
    .replace("trigger: new-item", "trigger: no-such-trigger")
    .replace("action: get-item", "action: no-such-action");
    let (status, body) = post_text(&host, "/v1/flows", &bad, TOKEN).await;
    assert_eq!(status, 400, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    for needle in [
        "trigger.trigger: example@0.1.0 has no trigger `no-such-trigger`",
        "steps[find].action: example@0.1.0 has no action `no-such-action`",
        "steps[create].connection: connection `conn_nope` does not exist",
        "steps[create].input/other",
    ] {
        assert!(
            message.contains(needle),
            "`{needle}` missing from:\n{message}"
        );
    }
    let later = flow_yaml(&conn, "      name: \"{{ steps.later.x }}\"");
    let (_, body) = post_text(&host, "/v1/flows", &later, TOKEN).await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refers to step `later`, which does not run before this point"),
        "{body}"
    );
    let missing_required = good.replace("id: \"{{ trigger.id }}\"", "ident: \"{{ trigger.id }}\"");
    let (_, body) = post_text(&host, "/v1/flows", &missing_required, TOKEN).await;
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("steps[find].input: the action requires `id`"),
        "{body}"
    );
    let (status, body) = post_text(&host, "/v1/flows", "name: [unclosed", TOKEN).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid flow YAML"),
        "{body}"
    );
    let (_, list) = host.get("/v1/flows").await;
    assert_eq!(
        list["flows"].as_array().unwrap().len(),
        1,
        "refused flows are not stored"
    );

    // A pinned plugin version cannot be deleted.
    let (status, body) = host
        .call(Method::DELETE, "/v1/plugins/example/0.1.0", None)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(&id),
        "{body}"
    );

    // A newer version does not move the flow; applying a new flow version keeps the pin.
    host.upload_file(artifacts::FIXTURE_EXAMPLE_V2).await;
    let (status, flow) = post_text(
        &host,
        "/v1/flows/apply",
        &good.replace("sku: W-1", "sku: W-2"),
        TOKEN,
    )
    .await;
    assert_eq!(status, 200, "{flow}");
    assert_eq!(flow["id"], json!(id));
    assert_eq!(flow["version"], json!(2));
    assert_eq!(flow["pinned"]["steps"], json!(["0.1.0", "0.1.0"]));

    // The explicit upgrade checks the new version: 0.2.0 has no get-item.
    let (status, body) = host
        .call(Method::POST, &format!("/v1/flows/{id}/upgrade"), None)
        .await;
    assert_eq!(status, 400);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("example@0.2.0 has no action `get-item`"),
        "{body}"
    );
    let (_, still) = host.get(&format!("/v1/flows/{id}")).await;
    assert_eq!(still["version"], json!(2));
    assert_eq!(still["pinned"]["trigger"], json!("0.1.0"));

    let (_, versions) = host.get(&format!("/v1/flows/{id}/versions")).await;
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);

    // Another tenant cannot see it.
    let (_, tenant) = host
        .call(Method::POST, "/v1/tenants", Some(json!({"name": "Other"})))
        .await;
    let other = tenant["token"].as_str().unwrap();
    let response = client()
        .get(format!("{}/v1/flows/{id}", host.url))
        .bearer_auth(other)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);

    // Deleting the flow frees the plugin version.
    let (status, _) = host
        .call(Method::DELETE, &format!("/v1/flows/{id}"), None)
        .await;
    assert_eq!(status, 204);
    let (status, body) = host
        .call(Method::DELETE, "/v1/plugins/example/0.1.0", None)
        .await;
    assert_eq!(status, 204, "{body}");
    host.stop().await;
}
