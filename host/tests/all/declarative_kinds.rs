//! The parts of the spec format the shipped specs do not use, each run
//! through a published spec against a server that records what it is sent:
//! the methods and the form and raw bodies, offset, body-cursor and
//! next-URL pagination with their stop rules and a page cap, an error
//! inside a 200 and a status mapped to rate-limited with the API's own
//! retry header, and a polling cursor by id with a lookback window.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use switchyard::{calls::Purpose, tenants::DEFAULT_TENANT};

use crate::support::{TestHost, fake::Server, sandbox_config};

const TOKEN: &str = "catalog-token-7c1e93";

const CATALOG: &str = r#"declarative: "0.1"
key: catalog
name: Catalog
version: 1.0.0
auth: { type: bearer }
properties:
  base_url: { required: true, schema: { type: string } }
  token: { required: true, secret: true, schema: { type: string } }
allowed_hosts: ["{base_url}"]
base_url: "{{ connection.base_url }}"
responses:
  - when: response.body.success == false
    error: invalid_input
    message: "the catalog refused it: {{ response.body.error }}"
  - status: 503
    error: rate_limited
    retry_after_ms: "{{ response.headers['x-retry-ms'] }}"
actions:
  by-offset:
    name: Items by offset
    request: { url: /items }
    records: /items
    pagination: { type: offset, size: 2, stop: [short_page] }
  by-page-capped:
    name: Items by page, two pages at most
    request: { url: /items }
    records: /items
    pagination: { type: page_number, size: 1, size_param: per_page, stop: [empty_page], max_pages: 2 }
  by-cursor:
    name: Feed by cursor
    request: { url: /feed }
    records: data.items
    pagination: { type: cursor, cursor: "{{ response.body.next }}", stop: [no_cursor, repeated_cursor] }
  by-next-url:
    name: Chain by next URL
    request: { url: /chain }
    records: /results
    pagination: { type: next_url, url: "{{ response.body.next }}" }
  note:
    name: Form note
    request:
      method: POST
      url: /notes
      form: { text: "{{ input.text }}", tag: "{{ input.tags }}" }
  upload:
    name: Raw upload
    request:
      method: PUT
      url: "/raw/{{ input.name | segment }}"
      headers: { Content-Type: text/csv }
      body: "sku,qty\n{{ input.sku }},{{ input.qty }}"
    output: { status: "{{ response.status }}" }
  rename:
    name: Rename
    request: { method: PATCH, url: "/things/{{ input.id }}", json: { name: "{{ input.name }}" } }
  remove:
    name: Remove
    request: { method: DELETE, url: "/things/{{ input.id }}" }
    output: { removed: "{{ response.status == 204 }}" }
  exists:
    name: Exists
    request: { method: HEAD, url: "/things/{{ input.id }}" }
    output: { exists: "{{ response.headers['x-exists'] == 'yes' }}" }
  stock:
    name: Stock
    request: { url: /stock, query: { sku: "{{ input.sku }}" } }
    output: "{{ response.body.stock }}"
  busy:
    name: Busy
    request: { url: /busy }
triggers:
  item-added:
    kind: polling
    name: Item added
    request: { url: /added, query: { since_id: "{{ since }}" } }
    records: /items
    cursor: { value: "{{ record.id }}", type: number, lookback: 2 }
    event_id: "{{ record.id }}"
"#;

/// One request as the server received it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    content_type: Option<String>,
    authorization: Option<String>,
    body: String,
}

/// The catalog API: its data is fixed except the items the poll reads.
#[derive(Clone, Default)]
struct Catalog {
    seen: Arc<Mutex<Vec<Seen>>>,
    added: Arc<Mutex<Vec<u64>>>,
    origin: Arc<Mutex<String>>,
}

impl Catalog {
    fn requests(&self, path: &str) -> Vec<Seen> {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|s| s.path == path).cloned().collect()
    }

    fn answer(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let query: BTreeMap<String, String> = uri
            .query()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .collect()
            })
            .unwrap_or_default();
        self.seen.lock().unwrap().push(Seen {
            method: method.to_string(),
            path: uri.path().to_string(),
            query: uri.query().unwrap_or("").to_string(),
            content_type: header("content-type"),
            authorization: header("authorization"),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let number = |name: &str| query.get(name).and_then(|v| v.parse::<usize>().ok());
        let items: Vec<Value> = (1..=5).map(|n| json!({"id": n})).collect();
        let ok = |body: Value| axum::Json(body).into_response();
        match (method.as_str(), uri.path()) {
            ("GET", "/items") => {
                let (from, size) = match (number("offset"), number("page")) {
                    (Some(offset), _) => (offset, number("limit").unwrap_or(100)),
                    (None, Some(page)) => {
                        let size = number("per_page").unwrap_or(100);
                        ((page - 1) * size, size)
                    }
                    (None, None) => (0, 100),
                };
                let page: Vec<Value> = items.iter().skip(from).take(size).cloned().collect();
                ok(json!({"items": page}))
            }
            ("GET", "/feed") => match query.get("cursor").map(String::as_str) {
                None => ok(json!({"data": {"items": [{"id": "a"}, {"id": "b"}]}, "next": "c1"})),
                Some("c1") => ok(json!({"data": {"items": [{"id": "c"}]}, "next": "c2"})),
                Some("c2") => ok(json!({"data": {"items": [{"id": "d"}]}, "next": null})),
                Some(other) => {
                    (StatusCode::BAD_REQUEST, format!("no cursor {other}")).into_response()
                }
            },
            // A broken API that always points at the same next page.
            ("GET", "/loop") => ok(json!({"data": {"items": [{"id": "x"}]}, "next": "again"})),
            ("GET", "/chain") => {
                let origin = self.origin.lock().unwrap().clone();
                match query.get("p").map(String::as_str) {
                    None => ok(json!({"results": [1, 2], "next": format!("{origin}/chain?p=2")})),
                    _ => ok(json!({"results": [3], "next": null})),
                }
            }
            ("POST", "/notes") => ok(json!({"id": 1, "received": String::from_utf8_lossy(&body)})),
            ("PUT", path) if path.starts_with("/raw/") => StatusCode::NO_CONTENT.into_response(),
            ("PATCH", "/things/7") => {
                let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                ok(json!({"id": 7, "name": sent["name"]}))
            }
            ("DELETE", "/things/7") => StatusCode::NO_CONTENT.into_response(),
            ("HEAD", "/things/7") => ([("x-exists", "yes")], "").into_response(),
            ("HEAD", _) => ([("x-exists", "no")], "").into_response(),
            // Errors the API reports with 200.
            ("GET", "/stock") => match query.get("sku").map(String::as_str) {
                Some("TSHIRT-M") => ok(json!({"success": true, "stock": 4})),
                other => {
                    ok(json!({"success": false, "error": format!("sku {other:?} is unknown")}))
                }
            },
            ("GET", "/busy") => (
                StatusCode::SERVICE_UNAVAILABLE,
                [("x-retry-ms", "1500")],
                "busy",
            )
                .into_response(),
            ("GET", "/added") => {
                let since = number("since_id").unwrap_or(0) as u64;
                let added = self.added.lock().unwrap();
                let items: Vec<Value> = added
                    .iter()
                    .filter(|id| **id > since)
                    .map(|id| json!({"id": id, "name": format!("item {id}")}))
                    .collect();
                ok(json!({"items": items}))
            }
            _ => StatusCode::NOT_FOUND.into_response(),
        }
    }
}

async fn invoke(host: &TestHost, conn: &str, action: &str, input: Value) -> Value {
    let request =
        json!({"plugin": "catalog", "action": action, "connection": conn, "input": input});
    let (status, body) = host
        .call(reqwest::Method::POST, "/v1/invoke", Some(request))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn ids(output: &Value) -> Vec<Value> {
    output["output"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {output}"))
        .iter()
        .map(|r| r["id"].clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_speaks_every_request_page_error_and_cursor_kind() {
    let catalog = Catalog::default();
    let api = catalog.clone();
    let router = Router::new().fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let api = api.clone();
            async move { api.answer(method, uri, headers, body) }
        },
    );
    let server = Server::start(router).await;
    *catalog.origin.lock().unwrap() = server.origin.clone();
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::start(sandbox_config(dir.path())).await;
    host.upload_file(switchyard_tests::DECLARATIVE_INTERPRETER)
        .await;
    let (status, body) = host.upload(CATALOG.as_bytes().to_vec()).await;
    assert_eq!(status, 201, "{body}");
    let conn = host
        .connect(
            "catalog",
            json!({"base_url": server.origin, "token": TOKEN}),
        )
        .await;

    // Offset pages of 2 until a short page: offsets 0, 2, 4, with the size.
    let got = invoke(&host, &conn, "by-offset", json!({})).await;
    assert_eq!(ids(&got), [1, 2, 3, 4, 5].map(|n| json!(n)), "{got}");
    let asked: Vec<String> = catalog
        .requests("/items")
        .iter()
        .map(|s| s.query.clone())
        .collect();
    assert_eq!(
        asked,
        ["offset=0&limit=2", "offset=2&limit=2", "offset=4&limit=2"]
    );

    // `max_pages` caps a listing that has more.
    catalog.seen.lock().unwrap().clear();
    let got = invoke(&host, &conn, "by-page-capped", json!({})).await;
    assert_eq!(ids(&got), [json!(1), json!(2)], "{got}");
    assert_eq!(catalog.requests("/items").len(), 2);

    // A cursor from the body (records at a dotted path) until there is none.
    let got = invoke(&host, &conn, "by-cursor", json!({})).await;
    assert_eq!(ids(&got), ["a", "b", "c", "d"].map(|s| json!(s)), "{got}");
    let asked: Vec<String> = catalog
        .requests("/feed")
        .iter()
        .map(|s| s.query.clone())
        .collect();
    assert_eq!(asked, ["", "cursor=c1", "cursor=c2"]);

    // A cursor that repeats ends the listing instead of looping.
    let looping = CATALOG.replace("url: /feed", "url: /loop");
    let looping = looping.replace("version: 1.0.0", "version: 1.0.1");
    let (status, body) = host.upload(looping.into_bytes()).await;
    assert_eq!(status, 201, "{body}");
    let got = invoke(&host, &conn, "by-cursor", json!({})).await;
    assert_eq!(ids(&got), [json!("x"), json!("x")], "{got}");
    assert_eq!(catalog.requests("/loop").len(), 2);

    // A next URL from the body, followed as it is.
    let got = invoke(&host, &conn, "by-next-url", json!({})).await;
    assert_eq!(got["output"], json!([1, 2, 3]), "{got}");
    let asked: Vec<String> = catalog
        .requests("/chain")
        .iter()
        .map(|s| s.query.clone())
        .collect();
    assert_eq!(asked, ["", "p=2"]);

    // A form body (an array repeats its field), a raw body with its own
    // type, PATCH with JSON, DELETE and HEAD.
    let got = invoke(
        &host,
        &conn,
        "note",
        json!({"text": "Packed & sent", "tags": ["a", "b c"]}),
    )
    .await;
    let note = &catalog.requests("/notes")[0];
    assert_eq!(note.method, "POST");
    assert_eq!(
        note.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    let form: Vec<(String, String)> = url::form_urlencoded::parse(note.body.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(
        form,
        [("tag", "a"), ("tag", "b c"), ("text", "Packed & sent")]
            .map(|(n, v)| (n.to_string(), v.to_string())),
        "{}",
        note.body
    );
    assert_eq!(got["output"]["id"], json!(1), "{got}");
    let got = invoke(
        &host,
        &conn,
        "upload",
        json!({"name": "stock/today.csv", "sku": "TSHIRT-M", "qty": 3}),
    )
    .await;
    assert_eq!(got["output"], json!({"status": 204}), "{got}");
    let upload = catalog
        .seen
        .lock()
        .unwrap()
        .iter()
        .find(|s| s.method == "PUT")
        .cloned()
        .unwrap();
    assert_eq!(upload.path, "/raw/stock%2Ftoday.csv");
    assert_eq!(upload.content_type.as_deref(), Some("text/csv"));
    assert_eq!(upload.body, "sku,qty\nTSHIRT-M,3");
    let got = invoke(&host, &conn, "rename", json!({"id": 7, "name": "Mug"})).await;
    assert_eq!(got["output"], json!({"id": 7, "name": "Mug"}), "{got}");
    let got = invoke(&host, &conn, "remove", json!({"id": 7})).await;
    assert_eq!(got["output"], json!({"removed": true}), "{got}");
    for (id, exists) in [(7, true), (8, false)] {
        let got = invoke(&host, &conn, "exists", json!({"id": id})).await;
        assert_eq!(got["output"], json!({"exists": exists}), "{got}");
    }
    let methods: Vec<String> = catalog
        .requests("/things/7")
        .iter()
        .map(|s| s.method.clone())
        .collect();
    assert_eq!(methods, ["PATCH", "DELETE", "HEAD"]);

    // An error inside a 200, and a 503 that this API means as "slow down".
    let got = invoke(&host, &conn, "stock", json!({"sku": "TSHIRT-M"})).await;
    assert_eq!(got["output"], json!(4), "{got}");
    let got = invoke(&host, &conn, "stock", json!({"sku": "NOPE"})).await;
    assert_eq!(
        got["error"]["error"]["kind"],
        json!("invalid_input"),
        "{got}"
    );
    let message = got["error"]["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("the catalog refused it: sku"), "{got}");
    let got = invoke(&host, &conn, "busy", json!({})).await;
    assert_eq!(
        got["error"]["error"]["kind"],
        json!("rate_limited"),
        "{got}"
    );
    assert_eq!(
        got["error"]["error"]["retry_after_ms"],
        json!(1500),
        "{got}"
    );

    // The host authenticated every request; the spec never held the token.
    let seen = catalog.seen.lock().unwrap().clone();
    let bearer = format!("Bearer {TOKEN}");
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(bearer.as_str()))
    );

    // A cursor by id: from the beginning, then each poll reads the last two
    // ids again (the host drops repeated event ids) and moves to the newest.
    catalog.added.lock().unwrap().extend([1, 2, 3, 4]);
    let poll = |cursor: Option<String>| {
        let app = host.app.clone();
        let conn = conn.clone();
        async move {
            let plugin = app.registry.newest("catalog").unwrap();
            let record = app.connections.current(DEFAULT_TENANT, &conn).unwrap();
            let call = app
                .calls
                .prepare_for(
                    plugin,
                    Some(record),
                    BTreeMap::new(),
                    Purpose::Other,
                    "t".into(),
                )
                .unwrap();
            let outcome = app
                .calls
                .poll(call, "item-added", "{}", cursor.as_deref())
                .await;
            let journal = outcome.journal;
            outcome
                .result
                .unwrap_or_else(|e| panic!("poll failed: {e}; {journal:?}"))
        }
    };
    let first = poll(None).await;
    let events: Vec<&str> = first.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(events, ["1", "2", "3", "4"]);
    assert_eq!(first.cursor.as_deref(), Some("4"));
    catalog.added.lock().unwrap().extend([5, 6]);
    let second = poll(first.cursor.clone()).await;
    let events: Vec<&str> = second.events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(events, ["3", "4", "5", "6"]);
    assert_eq!(second.cursor.as_deref(), Some("6"));
    let asked: Vec<String> = catalog
        .requests("/added")
        .iter()
        .map(|s| s.query.clone())
        .collect();
    assert_eq!(asked, ["", "since_id=2"]);
    let payload: Value = serde_json::from_str(&second.events[3].payload).unwrap();
    assert_eq!(payload, json!({"id": 6, "name": "item 6"}));

    host.stop().await;
    drop(server);
}
