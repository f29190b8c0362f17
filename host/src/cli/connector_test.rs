//! `switchyard connector test`: one operation of a connector, run in a host
//! of its own (a throwaway data directory) through the host's one call path
//! (`Calls::prepare`, then `Calls::perform`, `Calls::poll` or
//! `Calls::handle_webhook`: the same engine, sandbox, credentials, signature
//! checks and limits as a flow's step, poll or delivery), against the
//! fixture server of `fixtures.rs`.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::fixtures::{self, FixtureServer};
use crate::{
    app::App,
    calls::{Purpose, Target, parse_output, trace_id},
    config::ServeConfig,
    engine::{CallError, Journal, WebhookInput},
    manifest::TriggerKind,
    schema::check_against,
    tenants::DEFAULT_TENANT,
};

/// What to run.
pub(super) enum Operation {
    Action {
        action: String,
        input: Value,
        idempotency_key: String,
    },
    Poll {
        trigger: String,
        params: Value,
        cursor: Option<String>,
    },
    /// A recorded delivery handed to a webhook trigger.
    Webhook {
        trigger: String,
        params: Value,
        delivery: WebhookInput,
    },
}

/// A recorded webhook delivery, as `--webhook FILE` holds it:
///
/// ```json
/// {"method": "POST", "query": "", "headers": {"X-Signature": "sha256=..."},
///  "body": "{\"id\": \"item-1\"}"}
/// ```
///
/// `body` is the raw body when it is a string (what a signature covers, byte
/// for byte); any other JSON value is sent as its compact text.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedDelivery {
    #[serde(default = "post")]
    method: String,
    #[serde(default)]
    query: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    body: Value,
}

fn post() -> String {
    "POST".into()
}

/// Reads a recorded delivery (see [`RecordedDelivery`]).
pub(super) fn read_delivery(path: &Path) -> anyhow::Result<WebhookInput> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let recorded: RecordedDelivery = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a recorded delivery (`method`, `query`, `headers`, `body`)",
            path.display()
        )
    })?;
    let body = match recorded.body {
        Value::String(text) => text.into_bytes(),
        Value::Null => Vec::new(),
        other => other.to_string().into_bytes(),
    };
    Ok(WebhookInput {
        method: recorded.method,
        query: recorded.query,
        headers: recorded.headers.into_iter().collect(),
        body,
    })
}

/// Runs the test and prints its journal and result; `Ok(false)` when the
/// call failed or a request matched no fixture.
pub(super) async fn run(
    connector: &Path,
    fixture_dir: Option<PathBuf>,
    interpreter: Option<PathBuf>,
    operation: Operation,
) -> anyhow::Result<bool> {
    let (file, default_fixtures) = locate(connector)?;
    let fixture_dir = fixture_dir.unwrap_or(default_fixtures);
    let fixtures = fixtures::load(&fixture_dir)?;
    let mut properties = connection_properties(&fixture_dir)?;
    let server = FixtureServer::start(fixtures).await?;
    properties.insert("base_url".into(), json!(server.url));

    let data = Scratch::new()?;
    let mut config = ServeConfig::for_data_dir(data.0.join("data"));
    // The fixture server is on loopback, which the sandbox refuses unless allowed.
    config.allow_networks = vec!["127.0.0.1/32".parse()?];
    config.max_instances = 4;
    let (app, _) = App::open(config)
        .await
        .context("starting a host for the test")?;

    let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
    if crate::declarative::is_spec(&bytes) {
        let interpreter = interpreter.context(
            "a spec runs on the declarative interpreter: pass --interpreter with \
             declarative_interpreter.wasm (or set SWITCHYARD_INTERPRETER)",
        )?;
        let interpreter_bytes = std::fs::read(&interpreter)
            .with_context(|| format!("reading {}", interpreter.display()))?;
        app.registry
            .upload_interpreter(interpreter_bytes)
            .await
            .map_err(|e| anyhow!("{e}"))
            .with_context(|| format!("loading the interpreter {}", interpreter.display()))?;
    }
    let (record, _) = app
        .registry
        .upload(bytes, None)
        .await
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("loading {}", file.display()))?;
    let name = format!("{}@{}", record.key, record.version);
    let connection = app
        .connections
        .create(
            DEFAULT_TENANT,
            &record.key,
            "connector-test",
            properties,
            false,
        )
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| {
            format!(
                "the connection of {name} from {}",
                fixture_dir.join("connection.json").display()
            )
        })?;
    let call = app
        .calls
        .prepare(
            Target {
                tenant: DEFAULT_TENANT,
                plugin: &record.key,
                version: &record.version,
                connection: Some(&connection.id),
            },
            Purpose::Other,
            trace_id("test"),
        )
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("preparing a call of {name}"))?;

    let manifest = &record.manifest;
    let (what, result, journal): (String, Result<Value, CallError>, Journal) = match operation {
        Operation::Action {
            action,
            input,
            idempotency_key,
        } => {
            let spec = manifest
                .actions
                .iter()
                .find(|a| a.key == action)
                .ok_or_else(|| anyhow!("{name} has no action `{action}`"))?;
            check_against(&spec.input_schema, &input, &format!("input of `{action}`"))
                .map_err(|e| anyhow!("{e}"))?;
            let outcome = app
                .calls
                .perform(call, &action, &input.to_string(), &idempotency_key)
                .await;
            let result = outcome.result.and_then(parse_output);
            (format!("action {action}"), result, outcome.journal)
        }
        Operation::Poll {
            trigger,
            params,
            cursor,
        } => {
            let spec = manifest
                .triggers
                .iter()
                .find(|t| t.key == trigger)
                .ok_or_else(|| anyhow!("{name} has no trigger `{trigger}`"))?;
            if spec.kind != TriggerKind::Polling {
                bail!(
                    "`{trigger}` is a webhook trigger: pass --webhook FILE with a recorded \
                     delivery (method, headers, body)"
                );
            }
            check_against(
                &spec.params_schema,
                &params,
                &format!("params of `{trigger}`"),
            )
            .map_err(|e| anyhow!("{e}"))?;
            let outcome = app
                .calls
                .poll(call, &trigger, &params.to_string(), cursor.as_deref())
                .await;
            let result = outcome
                .result
                .map(|poll| json!({ "events": events_json(&poll.events), "cursor": poll.cursor }));
            (format!("trigger {trigger}"), result, outcome.journal)
        }
        Operation::Webhook {
            trigger,
            params,
            delivery,
        } => {
            let spec = manifest
                .triggers
                .iter()
                .find(|t| t.key == trigger)
                .ok_or_else(|| anyhow!("{name} has no trigger `{trigger}`"))?;
            if spec.kind != TriggerKind::Webhook {
                bail!("`{trigger}` is not a webhook trigger: leave out --webhook to poll it");
            }
            check_against(
                &spec.params_schema,
                &params,
                &format!("params of `{trigger}`"),
            )
            .map_err(|e| anyhow!("{e}"))?;
            let outcome = app
                .calls
                .handle_webhook(call, &trigger, &params.to_string(), delivery)
                .await;
            let result = outcome.result.map(|handled| {
                let response = handled.response.map(|reply| {
                    json!({
                        "status": reply.status,
                        "headers": reply.headers.into_iter().collect::<BTreeMap<_, _>>(),
                        "body": String::from_utf8_lossy(&reply.body),
                    })
                });
                json!({ "events": events_json(&handled.events), "response": response })
            });
            (
                format!("webhook trigger {trigger}"),
                result,
                outcome.journal,
            )
        }
    };
    app.shutdown().await;

    println!("{name}, {what}, fixtures from {}", fixture_dir.display());
    println!("HTTP exchanges:");
    for exchange in &journal.exchanges {
        let answer = match (exchange.status, &exchange.error) {
            (Some(status), _) => status.to_string(),
            (None, Some(error)) => format!("error: {error}"),
            (None, None) => "no answer".to_string(),
        };
        println!("  {} {} -> {answer}", exchange.method, exchange.url);
    }
    let served = server.served();
    let mut unmatched = 0;
    println!("fixtures:");
    for request in &served {
        match &request.fixture {
            Some(file) => println!("  {} {} <- {file}", request.method, request.path),
            None => {
                unmatched += 1;
                println!(
                    "  {} {} <- NO FIXTURE MATCHES",
                    request.method, request.path
                );
                for line in &request.diff {
                    println!("      {line}");
                }
            }
        }
    }
    for file in server.unused() {
        println!("  (not used: {file})");
    }
    if !journal.logs.is_empty() {
        println!("logs:");
        for line in &journal.logs {
            println!("  {} {}", line.level, line.message);
        }
    }
    let ok = match &result {
        Ok(value) => {
            println!("result:");
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
            );
            true
        }
        Err(e) => {
            println!("error: {e}");
            false
        }
    };
    if unmatched > 0 {
        eprintln!(
            "{unmatched} request(s) matched no fixture in {}: see the differences above",
            fixture_dir.display()
        );
    }
    Ok(ok && unmatched == 0)
}

/// Events as the test prints them: the id and the payload as JSON.
fn events_json(events: &[crate::engine::Event]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "payload": serde_json::from_str::<Value>(&e.payload).unwrap_or(Value::Null),
            })
        })
        .collect()
}

/// The component or spec to test, and where its fixtures are by default.
pub(super) fn locate(connector: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    if connector.is_file() {
        let beside = connector.parent().unwrap_or(Path::new("."));
        return Ok((connector.to_path_buf(), beside.join("fixtures")));
    }
    if !connector.is_dir() {
        bail!("{} is neither a file nor a directory", connector.display());
    }
    let fixtures = connector.join("fixtures");
    let spec = connector.join("connector.yaml");
    if spec.is_file() {
        return Ok((spec, fixtures));
    }
    let dist = connector.join("dist");
    let components: Vec<PathBuf> = std::fs::read_dir(&dist)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
                .collect()
        })
        .unwrap_or_default();
    match components.as_slice() {
        [one] => Ok((one.clone(), fixtures)),
        [] => bail!(
            "{} has no connector.yaml and no component in dist/: build it first (./build.sh)",
            connector.display()
        ),
        _ => bail!(
            "{} has several components: name the one to test",
            dist.display()
        ),
    }
}

/// The connection's properties from `connection.json` in the fixture
/// directory (`{"properties": {...}}`), if there is one.
fn connection_properties(dir: &Path) -> anyhow::Result<Map<String, Value>> {
    let path = dir.join("connection.json");
    if !path.exists() {
        return Ok(Map::new());
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    match value.get("properties") {
        Some(Value::Object(properties)) => Ok(properties.clone()),
        None => Ok(Map::new()),
        Some(_) => bail!("{}: `properties` must be an object", path.display()),
    }
}

/// A directory of its own under the system's temporary directory, removed
/// when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-connector-test-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
