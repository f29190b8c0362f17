//! The fixture server of `switchyard connector test`: it replays recorded or
//! hand-written request → response pairs from a directory, on 127.0.0.1, and
//! for a request that no fixture matches answers 599 and keeps a diff
//! against the closest fixture, naming what differed.
//!
//! One fixture per `*.json` file (taken in file-name order), each used once:
//!
//! ```json
//! {
//!   "request": {
//!     "method": "POST", "path": "/items",
//!     "query": {"since": ""},
//!     "headers": {"idempotency-key": "test"},
//!     "json": {"name": "a"}
//!   },
//!   "response": {"status": 201, "headers": {"x-request-id": "1"}, "json": {"id": 7}}
//! }
//! ```
//!
//! `method` and `path` are required; `query` (when given, the whole query,
//! in any order), `headers` (those named; names in any case) and the body
//! (`json`, compared as JSON, or `body`, as text) must match when given.
//! A response has a `status` (200 by default), `headers`, and `json` or
//! `body`. `connection.json` beside them is not a fixture: it holds the
//! connection's properties (`{"properties": {...}}`).

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, bail};
use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::Value;

/// A request the connector is expected to send, and the answer to it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Fixture {
    #[serde(skip)]
    pub(super) file: String,
    pub(super) request: Expected,
    #[serde(default)]
    pub(super) response: Answer,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Expected {
    pub(super) method: String,
    pub(super) path: String,
    #[serde(default)]
    pub(super) query: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub(super) headers: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) json: Option<Value>,
    #[serde(default)]
    pub(super) body: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Answer {
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    body: Option<String>,
}

impl Default for Answer {
    fn default() -> Self {
        Answer {
            status: 200,
            headers: BTreeMap::new(),
            json: None,
            body: None,
        }
    }
}

fn ok() -> u16 {
    200
}

/// A request as the fixture server received it.
#[derive(Debug, Clone)]
pub(super) struct Received {
    pub(super) method: String,
    pub(super) path: String,
    pub(super) query: BTreeMap<String, String>,
    /// Lowercase names.
    pub(super) headers: BTreeMap<String, String>,
    pub(super) body: Vec<u8>,
}

/// Reads the fixtures of `dir` (`*.json` but `connection.json`).
pub(super) fn load(dir: &Path) -> anyhow::Result<Vec<Fixture>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the fixture directory {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name().is_some_and(|n| n != "connection.json")
        })
        .collect();
    files.sort();
    let mut fixtures = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut fixture: Fixture = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a fixture", path.display()))?;
        if fixture.request.json.is_some() && fixture.request.body.is_some() {
            bail!(
                "{}: a request has `json` or `body`, not both",
                path.display()
            );
        }
        fixture.file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        fixtures.push(fixture);
    }
    Ok(fixtures)
}

/// What differs between a fixture's request and a received one; empty when
/// it matches.
pub(super) fn differences(expected: &Expected, got: &Received) -> Vec<String> {
    let mut diffs = Vec::new();
    if !expected.method.eq_ignore_ascii_case(&got.method) {
        diffs.push(format!(
            "method: the fixture has {}, the connector sent {}",
            expected.method, got.method
        ));
    }
    if expected.path != got.path {
        diffs.push(format!(
            "path: the fixture has {}, the connector sent {}",
            expected.path, got.path
        ));
    }
    if let Some(query) = &expected.query {
        let names: std::collections::BTreeSet<&String> =
            query.keys().chain(got.query.keys()).collect();
        for name in names {
            match (query.get(name), got.query.get(name)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => diffs.push(format!(
                    "query `{name}`: the fixture has {}, the connector sent {}",
                    shown(a),
                    shown(b)
                )),
            }
        }
    }
    for (name, value) in &expected.headers {
        let sent = got.headers.get(&name.to_ascii_lowercase());
        if sent != Some(value) {
            diffs.push(format!(
                "header `{name}`: the fixture has {}, the connector sent {}",
                shown(Some(value)),
                shown(sent)
            ));
        }
    }
    if let Some(json) = &expected.json {
        match serde_json::from_slice::<Value>(&got.body) {
            Ok(sent) => json_differences("", json, &sent, &mut diffs),
            Err(_) => diffs.push(format!(
                "body: the fixture has JSON, the connector sent {}",
                shown(Some(&String::from_utf8_lossy(&got.body).into_owned()))
            )),
        }
    }
    if let Some(body) = &expected.body {
        let sent = String::from_utf8_lossy(&got.body);
        if *body != sent {
            diffs.push(format!(
                "body: the fixture has {}, the connector sent {}",
                shown(Some(body)),
                shown(Some(&sent.into_owned()))
            ));
        }
    }
    diffs
}

/// The differences between two JSON values, by JSON pointer.
fn json_differences(at: &str, expected: &Value, got: &Value, diffs: &mut Vec<String>) {
    match (expected, got) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let here = format!("{at}/{}", key.replace('~', "~0").replace('/', "~1"));
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => json_differences(&here, x, y, diffs),
                    (x, y) => diffs.push(format!(
                        "body {here}: the fixture has {}, the connector sent {}",
                        json_shown(x),
                        json_shown(y)
                    )),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                json_differences(&format!("{at}/{i}"), x, y, diffs);
            }
        }
        (a, b) if a == b => {}
        (a, b) => diffs.push(format!(
            "body {}: the fixture has {}, the connector sent {}",
            if at.is_empty() { "/" } else { at },
            json_shown(Some(a)),
            json_shown(Some(b))
        )),
    }
}

fn shown(value: Option<&String>) -> String {
    value.map_or_else(|| "nothing".to_string(), |v| format!("{v:?}"))
}

fn json_shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "nothing".to_string(), Value::to_string)
}

/// One request the server answered, for the journal.
#[derive(Debug, Clone)]
pub(super) struct Served {
    pub(super) method: String,
    pub(super) path: String,
    /// The fixture that answered, or `None`: no fixture matched.
    pub(super) fixture: Option<String>,
    /// Why no fixture matched: the differences from the closest one.
    pub(super) diff: Vec<String>,
}

#[derive(Default)]
struct Replay {
    fixtures: Vec<Fixture>,
    used: Vec<bool>,
    served: Vec<Served>,
}

impl Replay {
    /// The first unused fixture that matches, or the differences from the
    /// closest unused one (the fewest differences; then the first).
    fn answer(&mut self, got: &Received) -> Result<Answer, Vec<String>> {
        let mut closest: Option<(usize, Vec<String>)> = None;
        for (i, fixture) in self.fixtures.iter().enumerate() {
            if self.used[i] {
                continue;
            }
            let diffs = differences(&fixture.request, got);
            if diffs.is_empty() {
                self.used[i] = true;
                self.served.push(Served {
                    method: got.method.clone(),
                    path: got.path.clone(),
                    fixture: Some(fixture.file.clone()),
                    diff: Vec::new(),
                });
                return Ok(fixture.response.clone());
            }
            if closest.as_ref().is_none_or(|(_, d)| diffs.len() < d.len()) {
                closest = Some((i, diffs));
            }
        }
        let diff = match closest {
            Some((i, diffs)) => {
                std::iter::once(format!("closest fixture: {}", self.fixtures[i].file))
                    .chain(diffs)
                    .collect()
            }
            None => vec!["every fixture has been used".to_string()],
        };
        self.served.push(Served {
            method: got.method.clone(),
            path: got.path.clone(),
            fixture: None,
            diff: diff.clone(),
        });
        Err(diff)
    }
}

/// The fixture server: runs until dropped.
pub(super) struct FixtureServer {
    pub(super) url: String,
    replay: Arc<Mutex<Replay>>,
    task: tokio::task::JoinHandle<()>,
}

impl FixtureServer {
    pub(super) async fn start(fixtures: Vec<Fixture>) -> anyhow::Result<FixtureServer> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .context("binding the fixture server on 127.0.0.1")?;
        let url = format!("http://{}", listener.local_addr()?);
        let replay = Arc::new(Mutex::new(Replay {
            used: vec![false; fixtures.len()],
            fixtures,
            served: Vec::new(),
        }));
        let app = axum::Router::new()
            .fallback(serve)
            .with_state(replay.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FixtureServer { url, replay, task })
    }

    /// The requests served so far, in order.
    pub(super) fn served(&self) -> Vec<Served> {
        self.replay
            .lock()
            .map(|r| r.served.clone())
            .unwrap_or_default()
    }

    /// The fixtures no request used.
    pub(super) fn unused(&self) -> Vec<String> {
        self.replay
            .lock()
            .map(|r| {
                r.fixtures
                    .iter()
                    .zip(&r.used)
                    .filter(|(_, used)| !**used)
                    .map(|(f, _)| f.file.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for FixtureServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    State(replay): State<Arc<Mutex<Replay>>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let received = Received {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let answer = match replay.lock() {
        Ok(mut replay) => replay.answer(&received),
        Err(_) => Err(vec!["the fixture server failed".to_string()]),
    };
    match answer {
        Ok(answer) => {
            let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
            let mut response = match (answer.json, answer.body) {
                (Some(json), _) => (status, axum::Json(json)).into_response(),
                (None, Some(body)) => (status, body).into_response(),
                (None, None) => status.into_response(),
            };
            for (name, value) in &answer.headers {
                if let (Ok(name), Ok(value)) = (
                    axum::http::HeaderName::from_bytes(name.as_bytes()),
                    axum::http::HeaderValue::from_str(value),
                ) {
                    response.headers_mut().insert(name, value);
                }
            }
            response
        }
        // 599: no real server sends it, so the journal shows which request
        // had no fixture.
        Err(diff) => (
            StatusCode::from_u16(599).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            format!("no fixture matches this request:\n{}", diff.join("\n")),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected(json: Value) -> Expected {
        serde_json::from_value(json).unwrap()
    }

    fn received(method: &str, path: &str, query: &[(&str, &str)], body: &str) -> Received {
        Received {
            method: method.into(),
            path: path.into(),
            query: query
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            headers: [("idempotency-key".to_string(), "k1".to_string())].into(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn what_differs_is_named() {
        let fixture = expected(serde_json::json!({
            "method": "POST", "path": "/items", "query": {"a": "1"},
            "headers": {"Idempotency-Key": "k1"}, "json": {"name": "a", "tags": ["x"]}
        }));
        let table: &[(Received, &[&str])] = &[
            (
                received(
                    "POST",
                    "/items",
                    &[("a", "1")],
                    r#"{"tags":["x"],"name":"a"}"#,
                ),
                &[],
            ),
            (
                received(
                    "GET",
                    "/items",
                    &[("a", "1")],
                    r#"{"name":"a","tags":["x"]}"#,
                ),
                &["method: the fixture has POST, the connector sent GET"],
            ),
            (
                received(
                    "POST",
                    "/item",
                    &[("a", "2"), ("b", "3")],
                    r#"{"name":"a","tags":["x"]}"#,
                ),
                &[
                    "path: the fixture has /items, the connector sent /item",
                    "query `a`: the fixture has \"1\", the connector sent \"2\"",
                    "query `b`: the fixture has nothing, the connector sent \"3\"",
                ],
            ),
            (
                received(
                    "POST",
                    "/items",
                    &[("a", "1")],
                    r#"{"name":"b","tags":["y"],"n":1}"#,
                ),
                &[
                    "body /n: the fixture has nothing, the connector sent 1",
                    "body /name: the fixture has \"a\", the connector sent \"b\"",
                    "body /tags/0: the fixture has \"x\", the connector sent \"y\"",
                ],
            ),
            (
                received("POST", "/items", &[("a", "1")], "name=a"),
                &["body: the fixture has JSON, the connector sent \"name=a\""],
            ),
        ];
        for (got, want) in table {
            assert_eq!(differences(&fixture, got), *want, "{got:?}");
        }
        let header = expected(serde_json::json!({
            "method": "GET", "path": "/", "headers": {"X-Api-Key": "secret"}
        }));
        assert_eq!(
            differences(&header, &received("GET", "/", &[], "")),
            ["header `X-Api-Key`: the fixture has \"secret\", the connector sent nothing"]
        );
    }

    #[test]
    fn each_fixture_answers_once_and_a_miss_names_the_closest() {
        let fixture = |file: &str, path: &str| Fixture {
            file: file.into(),
            request: expected(serde_json::json!({"method": "GET", "path": path})),
            response: Answer::default(),
        };
        let mut replay = Replay {
            fixtures: vec![fixture("1.json", "/a"), fixture("2.json", "/b")],
            used: vec![false, false],
            served: Vec::new(),
        };
        assert!(replay.answer(&received("GET", "/b", &[], "")).is_ok());
        let miss = replay.answer(&received("GET", "/b", &[], "")).unwrap_err();
        assert_eq!(
            miss,
            [
                "closest fixture: 1.json",
                "path: the fixture has /a, the connector sent /b"
            ]
        );
        assert!(replay.answer(&received("GET", "/a", &[], "")).is_ok());
        assert_eq!(
            replay.answer(&received("GET", "/a", &[], "")).unwrap_err(),
            ["every fixture has been used"]
        );
        let files: Vec<_> = replay.served.iter().map(|s| s.fixture.clone()).collect();
        let files: Vec<Option<&str>> = files.iter().map(Option::as_deref).collect();
        assert_eq!(files, [Some("2.json"), None, Some("1.json"), None]);
    }
}
