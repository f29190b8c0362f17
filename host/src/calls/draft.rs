//! The live test of an unpublished declarative spec (`POST
//! /v1/plugins/test`): the spec is checked as at push, run by the
//! interpreter against real data with a stored connection (or properties
//! given for this test only, never stored) under caps (pages, records,
//! time), and every request the interpreter made comes back with its
//! response (secrets cut out), with the records or output and a JSON
//! Schema inferred from them. Nothing is stored.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Calls, Purpose, Source, parse_output, trace_id};
use crate::{
    declarative::{self, Limits},
    engine::{CallOutcome, WebhookInput},
    error::ServiceError,
    manifest::TriggerKind,
    schema::{check_against, infer},
};

/// What to test.
#[derive(Debug, Deserialize)]
pub struct DraftTest {
    /// The spec: YAML or JSON text, or the spec as a JSON object.
    pub spec: Value,
    /// A stored connection of the spec's key.
    #[serde(default)]
    pub connection: Option<String>,
    /// Or every property for this test, secret ones included (never stored).
    #[serde(default)]
    pub properties: BTreeMap<String, Value>,
    /// An action to run with `input`...
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub input: Value,
    /// ...or a trigger: a poll with `params` from `cursor` (from the
    /// beginning when none), or a webhook `delivery`. Neither: the
    /// test-connection request.
    #[serde(default)]
    pub trigger: Option<String>,
    #[serde(default)]
    pub params: Value,
    #[serde(default)]
    pub cursor: Option<String>,
    #[serde(default)]
    pub delivery: Option<DraftDelivery>,
    #[serde(default)]
    pub limits: DraftLimits,
}

/// A sample webhook delivery.
#[derive(Debug, Deserialize)]
pub struct DraftDelivery {
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Text, or JSON (sent as its text).
    #[serde(default)]
    pub body: Value,
    #[serde(default)]
    pub query: String,
}

/// The caps of a live test.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct DraftLimits {
    pub pages: u32,
    pub records: u32,
    pub time_ms: u64,
}

impl Default for DraftLimits {
    fn default() -> Self {
        // As Airbyte's builder: 5 pages, 100 records.
        DraftLimits {
            pages: 5,
            records: 100,
            time_ms: 30_000,
        }
    }
}

/// The largest time a test may ask for.
const MAX_TEST_TIME: Duration = Duration::from_secs(120);

impl Calls {
    /// Runs one operation of an unpublished spec; see the module docs.
    pub async fn test_draft(&self, tenant: &str, test: DraftTest) -> Result<Value, ServiceError> {
        let text = match &test.spec {
            Value::String(text) => text.clone(),
            Value::Object(_) => serde_json::to_string_pretty(&test.spec)
                .map_err(|e| ServiceError::BadRequest(e.to_string()))?,
            _ => {
                return Err(ServiceError::BadRequest(
                    "`spec` is the spec's text (YAML or JSON) or a JSON object".into(),
                ));
            }
        };
        let declared = declarative::parse(&text).map_err(ServiceError::Spec)?;
        let limits = test.limits;
        let polling_from_start = test.trigger.as_ref().is_some_and(|t| {
            declared
                .manifest
                .triggers
                .iter()
                .any(|m| m.key == *t && m.kind == TriggerKind::Polling)
        }) && test.cursor.is_none();
        let plugin = self.registry.draft(
            &declared,
            Limits {
                max_pages: Some(limits.pages.max(1)),
                max_records: Some(limits.records.max(1)),
                // A test wants records, not a first poll's bare cursor.
                seed: polling_from_start.then(|| "beginning".to_string()),
            },
        )?;
        let name = plugin.name();
        let manifest = plugin.record.manifest.clone();
        let trace = trace_id("test");
        let (env_call, connection) = match &test.connection {
            Some(id) => {
                let record = self.connections.current(tenant, id)?;
                (None, Some(record))
            }
            None => {
                for p in &manifest.connection_properties {
                    match test.properties.get(&p.key) {
                        Some(value) => {
                            check_against(&p.schema, value, &format!("property `{}`", p.key))?
                        }
                        None if p.required => {
                            return Err(ServiceError::BadRequest(format!(
                                "property `{}` is required (or test with a stored `connection`)",
                                p.key
                            )));
                        }
                        None => {}
                    }
                }
                let source = Source::Inline(test.properties.clone());
                (Some(self.setup(&plugin, source, trace.clone())?), None)
            }
        };
        let mut call = match env_call {
            Some((env, ctx)) => super::Call {
                plugin,
                connection: None,
                purpose: Purpose::Other,
                env,
                ctx,
            },
            None => self.prepare_for(plugin, connection, BTreeMap::new(), Purpose::Other, trace)?,
        };
        call.env.capture = true;
        call.env.timeout = Some(Duration::from_millis(limits.time_ms.max(1)).min(MAX_TEST_TIME));

        let params = if test.params.is_null() {
            json!({})
        } else {
            test.params.clone()
        };
        let (operation, outcome): (String, CallOutcome<Value>) = match (&test.action, &test.trigger)
        {
            (Some(action), _) => {
                let spec = manifest
                    .actions
                    .iter()
                    .find(|a| a.key == *action)
                    .ok_or_else(|| {
                        ServiceError::BadRequest(format!("{name} has no action `{action}`"))
                    })?;
                let input = if test.input.is_null() {
                    json!({})
                } else {
                    test.input.clone()
                };
                check_against(&spec.input_schema, &input, &format!("input of `{action}`"))?;
                let key = call.trace_id().to_string();
                let outcome = self.perform(call, action, &input.to_string(), &key).await;
                let CallOutcome {
                    result,
                    journal,
                    duration,
                } = outcome;
                (
                    format!("action {action}"),
                    CallOutcome {
                        result: result
                            .and_then(parse_output)
                            .map(|output| json!({"output": output})),
                        journal,
                        duration,
                    },
                )
            }
            (None, Some(trigger)) => {
                let kind = manifest
                    .triggers
                    .iter()
                    .find(|t| t.key == *trigger)
                    .map(|t| t.kind)
                    .ok_or_else(|| {
                        ServiceError::BadRequest(format!("{name} has no trigger `{trigger}`"))
                    })?;
                check_against(
                    &manifest
                        .triggers
                        .iter()
                        .find(|t| t.key == *trigger)
                        .map(|t| t.params_schema.clone())
                        .unwrap_or(Value::Null),
                    &params,
                    &format!("params of `{trigger}`"),
                )?;
                let outcome = match kind {
                    TriggerKind::Polling => {
                        let o = self
                            .poll(call, trigger, &params.to_string(), test.cursor.as_deref())
                            .await;
                        map_outcome(
                            o,
                            |p| json!({"events": events(&p.events), "cursor": p.cursor}),
                        )
                    }
                    TriggerKind::Webhook => {
                        let delivery = test.delivery.as_ref().ok_or_else(|| {
                            ServiceError::BadRequest(
                                "a webhook trigger is tested with a sample `delivery`".into(),
                            )
                        })?;
                        let body = match &delivery.body {
                            Value::String(text) => text.clone().into_bytes(),
                            Value::Null => Vec::new(),
                            other => other.to_string().into_bytes(),
                        };
                        let request = WebhookInput {
                            method: "POST".into(),
                            query: delivery.query.clone(),
                            headers: delivery
                                .headers
                                .iter()
                                .map(|(n, v)| (n.clone(), v.clone()))
                                .collect(),
                            body,
                        };
                        let o = self
                            .handle_webhook(call, trigger, &params.to_string(), request)
                            .await;
                        map_outcome(o, |w| json!({"events": events(&w.events)}))
                    }
                };
                (format!("trigger {trigger}"), outcome)
            }
            (None, None) => {
                let o = self.test_connection(call).await;
                ("test-connection".to_string(), map_outcome(o, |_| json!({})))
            }
        };
        let CallOutcome {
            result,
            journal,
            duration,
        } = outcome;
        let (mut answer, records) = match result {
            Ok(value) => {
                let records: Vec<Value> = match (&value["output"], &value["events"]) {
                    (Value::Array(items), _) => items.clone(),
                    (Value::Null, Value::Array(events)) => {
                        events.iter().map(|e| e["payload"].clone()).collect()
                    }
                    (Value::Null, _) => Vec::new(),
                    (output, _) => vec![output.clone()],
                };
                let mut answer = value;
                answer["ok"] = json!(true);
                (answer, records)
            }
            Err(e) => (json!({"ok": false, "error": e}), Vec::new()),
        };
        answer["plugin"] = json!(name);
        answer["operation"] = json!(operation);
        answer["schema"] = infer(&records);
        answer["records"] = json!(records);
        answer["pages"] = json!(journal.pages);
        answer["logs"] = json!(journal.logs);
        answer["exchanges"] = json!(journal.exchanges);
        answer["duration_ms"] = json!(duration.as_secs_f64() * 1e3);
        Ok(answer)
    }
}

fn map_outcome<T>(outcome: CallOutcome<T>, f: impl FnOnce(T) -> Value) -> CallOutcome<Value> {
    CallOutcome {
        result: outcome.result.map(f),
        journal: outcome.journal,
        duration: outcome.duration,
    }
}

fn events(events: &[crate::engine::Event]) -> Value {
    json!(
        events
            .iter()
            .map(|e| json!({
                "id": e.id,
                "payload": serde_json::from_str::<Value>(&e.payload).unwrap_or(Value::Null),
            }))
            .collect::<Vec<_>>()
    )
}
