//! `GET /v1/openapi.json`: served without a token, valid OpenAPI 3.1 (checked
//! against the OpenAPI Initiative's meta-schema for 3.1, vendored beside this
//! file as `openapi-3.1.schema.json`: its `2022-10-07` edition, Apache-2.0,
//! as PyPI's `openapi-spec-validator` 0.9.0 ships it), and complete: every
//! route the API's routers register (read from their sources, so a new route
//! without an entry fails here) is in it with its method.

use std::{collections::BTreeSet, fs, path::Path};

use serde_json::Value;

use crate::support::{TestHost, config, read};

/// `(METHOD, path)` of every `.route("path", get(..).post(..))` in the
/// API's sources.
fn routes_in_sources() -> BTreeSet<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api");
    let mut found = BTreeSet::new();
    for entry in fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        let code = match text.find("\n#[cfg(test)]") {
            Some(at) => &text[..at],
            None => &text[..],
        };
        let mut rest = code;
        while let Some(at) = rest.find(".route(") {
            rest = rest[at + ".route(".len()..].trim_start();
            let Some(quoted) = rest.strip_prefix('"') else {
                continue;
            };
            rest = quoted;
            let end = rest.find('"').unwrap();
            let route = rest[..end].to_string();
            // The method routers: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let mut close = 0;
            for (i, c) in rest.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            close = i;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let methods = &rest[end..close];
            for (name, method) in [
                ("get(", "GET"),
                ("post(", "POST"),
                ("put(", "PUT"),
                ("patch(", "PATCH"),
                ("delete(", "DELETE"),
                ("any(", "POST"),
            ] {
                let named = methods.match_indices(name).any(|(i, _)| {
                    i == 0 || !methods[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')
                });
                if named {
                    found.insert((method.to_string(), route.clone()));
                }
            }
        }
    }
    found
}

#[test]
fn the_route_reader_sees_every_method_of_a_route() {
    let routes = routes_in_sources();
    for expected in [
        ("GET", "/v1/connections/{id}"),
        ("PATCH", "/v1/connections/{id}"),
        ("DELETE", "/v1/connections/{id}"),
        ("POST", "/hooks/{token}"),
        ("GET", "/health"),
        ("GET", "/v1/openapi.json"),
    ] {
        assert!(
            routes.contains(&(expected.0.to_string(), expected.1.to_string())),
            "{expected:?} not found in {routes:#?}"
        );
    }
    assert!(routes.len() > 50, "{}", routes.len());
}

#[tokio::test]
async fn the_document_is_valid_openapi_and_lists_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(config(dir.path())).await;
    let response = reqwest::get(format!("{}/v1/openapi.json", host.url))
        .await
        .unwrap();
    let (status, doc) = read(response).await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));

    let meta: Value = serde_json::from_str(include_str!("openapi-3.1.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&meta).expect("the meta-schema compiles");
    let problems: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    // The meta-schema does find problems (it is not vacuous).
    let mut broken = doc.clone();
    broken["paths"]["/health"]["get"]["responses"] = Value::from(5);
    assert!(!validator.is_valid(&broken));

    let mut missing = Vec::new();
    for (method, path) in routes_in_sources() {
        // A catch-all `{*path}` is documented as `{path}`.
        let path = path.replace("{*", "{");
        let operation = &doc["paths"][&path][method.to_lowercase()];
        if !operation.is_object() {
            missing.push(format!("{method} {path}"));
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from the document: {missing:#?}"
    );
    // Request bodies come from the types that read them.
    let create = &doc["paths"]["/v1/connections"]["post"]["requestBody"]["content"]["application/json"]
        ["schema"];
    assert!(create["properties"]["plugin"].is_object(), "{create}");
    assert!(
        create["required"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "plugin"),
        "{create}"
    );
    host.stop().await;
}
