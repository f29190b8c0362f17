//! The flow editor: a draft (the flow document, kept by the drafts service
//! as it is typed, so a reload loses nothing) edited as a form: the
//! trigger (connector, trigger, connection, its settings as a generated
//! form), conditions, then steps whose inputs are forms generated from the
//! action's input schema. Every input can take a reference from the data
//! picker, which lists the fields of the trigger's recent events (or its
//! event schema) and of earlier steps' outputs. "Test step" runs one action
//! with the current inputs against a sample event, creating no run.
//! Publishing is explicit and puts each problem at its field. The YAML view
//! edits the same document; keys the form does not know (a step's `if:`,
//! `paths`, `for_each`, `retry`...) pass through the form untouched.

use std::collections::BTreeMap;

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::{
    Member, PageError, PageResult, audit, base_url, done, field, fields,
    flows::to_yaml,
    forms::{self, Field},
    notice, render, writer,
};
use crate::{
    api::ApiState,
    drafts::Draft,
    error::ServiceError,
    flows::FlowSpec,
    manifest::Manifest,
    registry::parse_plugin_ref,
    runs::{RunFilter, StepTest},
};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/flows/new", get(new_page))
        .route("/flows/drafts", post(create))
        .route("/flows/drafts/{id}", get(show))
        .route("/flows/drafts/{id}/save", post(save))
        .route("/flows/drafts/{id}/publish", post(publish))
        .route("/flows/drafts/{id}/discard", post(discard))
        .route("/flows/drafts/{id}/yaml", get(yaml_page).post(yaml_save))
        .route("/flows/drafts/{id}/steps/{step}/test", post(test_step))
        .route("/flows/drafts/{id}/fetch-samples", post(fetch_samples))
}

/// Condition operators the form offers, as written in an expression.
const OPERATORS: &[(&str, &str)] = &[
    ("==", "is"),
    ("!=", "is not"),
    (">", "is more than"),
    ("<", "is less than"),
    ("contains", "contains"),
    ("set", "has a value"),
    ("raw", "expression"),
];

/// A condition as the form's three inputs, or a raw expression.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Condition {
    left: String,
    op: String,
    right: String,
    raw: String,
}

fn is_path(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '[' | ']'))
        && text.starts_with(|c: char| c.is_ascii_alphabetic())
}

fn literal(text: &str) -> String {
    let t = text.trim();
    let is_json_scalar = serde_json::from_str::<Value>(t)
        .is_ok_and(|v| v.is_number() || v.is_boolean() || v.is_null() || v.is_string());
    if is_json_scalar {
        t.to_string()
    } else {
        Value::String(t.to_string()).to_string()
    }
}

fn unliteral(text: &str) -> Option<String> {
    match serde_json::from_str::<Value>(text.trim()).ok()? {
        Value::String(s) => Some(s),
        v if v.is_number() || v.is_boolean() || v.is_null() => Some(v.to_string()),
        _ => None,
    }
}

/// Reads an expression back into the form's inputs when it has their
/// shape (`trigger.status == "packed"`), else keeps it raw.
fn parse_condition(expr: &str) -> Condition {
    let raw = || Condition {
        left: String::new(),
        op: "raw".into(),
        right: String::new(),
        raw: expr.to_string(),
    };
    let e = expr.trim();
    // A new, empty row.
    if e.is_empty() {
        return Condition {
            left: String::new(),
            op: "==".into(),
            right: String::new(),
            raw: String::new(),
        };
    }
    if let Some((path, rest)) = e.split_once(" is defined and ")
        && is_path(path)
        && rest == format!("{path} is not none")
    {
        return Condition {
            left: path.into(),
            op: "set".into(),
            right: String::new(),
            raw: String::new(),
        };
    }
    if let Some((lit, path)) = e.rsplit_once(" in ")
        && is_path(path.trim())
        && let Some(value) = unliteral(lit)
    {
        return Condition {
            left: path.trim().into(),
            op: "contains".into(),
            right: value,
            raw: String::new(),
        };
    }
    for op in ["==", "!=", ">", "<"] {
        if let Some((left, right)) = e.split_once(&format!(" {op} "))
            && is_path(left.trim())
            && let Some(value) = unliteral(right)
        {
            return Condition {
                left: left.trim().into(),
                op: op.into(),
                right: value,
                raw: String::new(),
            };
        }
    }
    raw()
}

/// The expression of a condition row; `None` for an empty row.
fn condition_expr(c: &Condition) -> Option<String> {
    let left = c.left.trim();
    match c.op.as_str() {
        "raw" => Some(c.raw.trim().to_string()).filter(|r| !r.is_empty()),
        _ if left.is_empty() => None,
        "set" => Some(format!("{left} is defined and {left} is not none")),
        "contains" => Some(format!("{} in {left}", literal(&c.right))),
        op => Some(format!("{left} {op} {}", literal(&c.right))),
    }
}

/// `key@^0.1` for a key whose newest version is 0.1.x: a flow follows
/// compatible releases and pins the exact one when it is published.
fn default_requirement(key: &str, manifest: &Manifest) -> String {
    let v = &manifest.version;
    if v.major == 0 {
        format!("{key}@^0.{}", v.minor)
    } else {
        format!("{key}@^{}", v.major)
    }
}

fn plugin_key(reference: &str) -> String {
    parse_plugin_ref(reference)
        .map(|(k, _)| k)
        .unwrap_or_else(|_| reference.split('@').next().unwrap_or("").to_string())
}

/// The manifest a reference resolves to now (for the form; publishing
/// resolves again, and pins).
fn manifest_for(state: &ApiState, reference: &str) -> Option<Manifest> {
    let (key, req) = parse_plugin_ref(reference).ok()?;
    state
        .registry
        .resolved(&key, &req)
        .ok()
        .map(|p| p.record.manifest.clone())
}

fn set_or_remove(map: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    match value {
        Some(v) => {
            map.insert(key.to_string(), v);
        }
        None => {
            map.remove(key);
        }
    }
}

fn text_of(form: &[(String, String)], name: &str) -> Option<String> {
    field(form, name).map(|v| v.trim().to_string())
}

/// Structural changes a save may ask for.
#[derive(Deserialize, Default)]
struct SaveQuery {
    render: Option<String>,
    add_step: Option<String>,
    remove_step: Option<usize>,
    add_condition: Option<String>,
    remove_condition: Option<usize>,
}

/// The form's values merged into the document: only what the form shows
/// is replaced, everything else is kept as it was.
fn merge(
    state: &ApiState,
    document: &Value,
    form: &[(String, String)],
) -> (Value, Vec<(String, String)>) {
    let mut doc = document.as_object().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    if let Some(name) = field(form, "name") {
        doc.insert("name".into(), Value::String(name.to_string()));
    }
    // The trigger.
    let mut trigger = doc
        .get("trigger")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if let Some(key) = text_of(form, "trigger.plugin") {
        let old_ref = trigger
            .get("plugin")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if key.is_empty() {
            trigger.remove("plugin");
        } else if plugin_key(&old_ref) != key {
            match state.registry.newest(&key) {
                Ok(p) => {
                    trigger.insert(
                        "plugin".into(),
                        json!(default_requirement(&key, &p.record.manifest)),
                    );
                    trigger.remove("trigger");
                    trigger.remove("connection");
                    trigger.insert("params".into(), json!({}));
                }
                Err(e) => problems.push(("trigger.plugin".into(), e.to_string())),
            }
        }
    }
    let trigger_manifest = trigger
        .get("plugin")
        .and_then(Value::as_str)
        .and_then(|r| manifest_for(state, r));
    if let Some(t) = text_of(form, "trigger.trigger") {
        let old = trigger.get("trigger").and_then(Value::as_str).unwrap_or("");
        if old != t && trigger.contains_key("trigger") {
            trigger.insert("params".into(), json!({}));
        }
        set_or_remove(&mut trigger, "trigger", (!t.is_empty()).then(|| json!(t)));
    }
    if let Some(c) = text_of(form, "trigger.connection") {
        set_or_remove(
            &mut trigger,
            "connection",
            (!c.is_empty()).then(|| json!(c)),
        );
    }
    if let Some(m) = &trigger_manifest
        && let Some(t) = m
            .triggers
            .iter()
            .find(|t| Some(t.key.as_str()) == trigger.get("trigger").and_then(Value::as_str))
    {
        let previous = trigger.get("params").cloned().unwrap_or(json!({}));
        let (params, more) = forms::collect(&t.params_schema, "trigger.params", form, &previous);
        problems.extend(more);
        trigger.insert("params".into(), params);
    }
    doc.insert("trigger".into(), Value::Object(trigger));
    // Conditions: the rows the form shows, in order.
    let rows: Vec<usize> = (0..200)
        .filter(|i| field(form, &format!("cond.{i}.op")).is_some())
        .collect();
    if !rows.is_empty() || field(form, "conditions.shown").is_some() {
        let conditions: Vec<Value> = rows
            .iter()
            .filter_map(|i| {
                condition_expr(&Condition {
                    left: field(form, &format!("cond.{i}.left"))
                        .unwrap_or("")
                        .to_string(),
                    op: field(form, &format!("cond.{i}.op"))
                        .unwrap_or("raw")
                        .to_string(),
                    right: field(form, &format!("cond.{i}.right"))
                        .unwrap_or("")
                        .to_string(),
                    raw: field(form, &format!("cond.{i}.raw"))
                        .unwrap_or("")
                        .to_string(),
                })
            })
            .map(Value::String)
            .collect();
        if conditions.is_empty() {
            doc.remove("conditions");
        } else {
            doc.insert("conditions".into(), Value::Array(conditions));
        }
    }
    // Steps the form edits (actions); others are kept as they are.
    let mut steps: Vec<Value> = doc
        .get("steps")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, step) in steps.iter_mut().enumerate() {
        let prefix = format!("step.{i}");
        if field(form, &format!("{prefix}.key")).is_none() {
            continue;
        }
        let Some(s) = step.as_object_mut() else {
            continue;
        };
        if let Some(key) = text_of(form, &format!("{prefix}.key")) {
            s.insert("key".into(), json!(key));
        }
        let old_ref = s
            .get("plugin")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut reset_input = false;
        if let Some(key) = text_of(form, &format!("{prefix}.plugin"))
            && plugin_key(&old_ref) != key
        {
            reset_input = true;
            s.remove("action");
            s.remove("connection");
            if key.is_empty() {
                s.remove("plugin");
            } else {
                match state.registry.newest(&key) {
                    Ok(p) => {
                        s.insert(
                            "plugin".into(),
                            json!(default_requirement(&key, &p.record.manifest)),
                        );
                    }
                    Err(e) => problems.push((format!("{prefix}.plugin"), e.to_string())),
                }
            }
        }
        if let Some(action) = text_of(form, &format!("{prefix}.action"))
            && !reset_input
        {
            if s.get("action").and_then(Value::as_str).unwrap_or("") != action {
                reset_input = true;
            }
            set_or_remove(s, "action", (!action.is_empty()).then(|| json!(action)));
        }
        if let Some(c) = text_of(form, &format!("{prefix}.connection"))
            && !reset_input
        {
            set_or_remove(s, "connection", (!c.is_empty()).then(|| json!(c)));
        }
        if reset_input {
            s.insert("input".into(), json!({}));
            continue;
        }
        let manifest = s
            .get("plugin")
            .and_then(Value::as_str)
            .and_then(|r| manifest_for(state, r));
        let action = manifest.as_ref().and_then(|m| {
            m.actions
                .iter()
                .find(|a| Some(a.key.as_str()) == s.get("action").and_then(Value::as_str))
                .cloned()
        });
        if let Some(text) = field(form, &format!("{prefix}.input_json")) {
            match serde_json::from_str::<Value>(if text.trim().is_empty() { "{}" } else { text }) {
                Ok(v) => {
                    s.insert("input".into(), v);
                }
                Err(e) => problems.push((
                    format!("{prefix}.input_json"),
                    format!("not valid JSON: {e}"),
                )),
            }
        } else if let Some(action) = action {
            let previous = s.get("input").cloned().unwrap_or(json!({}));
            let (input, more) = forms::collect(
                &action.input_schema,
                &format!("{prefix}.input"),
                form,
                &previous,
            );
            problems.extend(more);
            s.insert("input".into(), input);
        }
    }
    doc.insert("steps".into(), Value::Array(steps));
    (Value::Object(doc), problems)
}

/// Applies the structural change a save asks for.
fn restructure(document: &mut Value, query: &SaveQuery) {
    let Some(doc) = document.as_object_mut() else {
        return;
    };
    if query.add_step.is_some() {
        let steps = doc.entry("steps").or_insert(json!([]));
        if let Some(list) = steps.as_array_mut() {
            let taken: Vec<String> = list
                .iter()
                .filter_map(|s| s["key"].as_str().map(str::to_string))
                .collect();
            let key = (1..)
                .map(|n| format!("step{n}"))
                .find(|k| !taken.contains(k))
                .unwrap_or_default();
            list.push(json!({"key": key, "input": {}}));
        }
    }
    if let Some(i) = query.remove_step
        && let Some(list) = doc.get_mut("steps").and_then(Value::as_array_mut)
        && i < list.len()
    {
        list.remove(i);
    }
    if query.add_condition.is_some() {
        let list = doc.entry("conditions").or_insert(json!([]));
        if let Some(list) = list.as_array_mut() {
            // An empty row: the form shows it; saving an empty row drops it.
            list.push(json!(""));
        }
    }
    if let Some(i) = query.remove_condition
        && let Some(list) = doc.get_mut("conditions").and_then(Value::as_array_mut)
        && i < list.len()
    {
        list.remove(i);
    }
}

/// A field the data picker offers: the path, and an example or its type.
#[derive(Debug, Clone, Serialize, PartialEq)]
struct Pick {
    path: String,
    sample: String,
}

/// Every leaf (and object) path of a value, with a short example.
fn flatten(value: &Value, prefix: &str, out: &mut Vec<Pick>, depth: usize) {
    if depth > 5 || out.len() > 300 {
        return;
    }
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let path = format!("{prefix}.{k}");
                if v.is_object() || v.is_array() {
                    out.push(Pick {
                        path: path.clone(),
                        sample: render::pretty(v).chars().take(60).collect(),
                    });
                }
                flatten(v, &path, out, depth + 1);
            }
        }
        Value::Array(items) => {
            if let Some(first) = items.first() {
                flatten(first, &format!("{prefix}[0]"), out, depth + 1);
            }
        }
        leaf => out.push(Pick {
            path: prefix.to_string(),
            sample: match leaf {
                Value::String(s) => s.chars().take(60).collect(),
                other => other.to_string(),
            },
        }),
    }
}

/// The paths of a schema's properties, with their types, for what no
/// sample shows.
fn schema_picks(schema: &Value, prefix: &str, out: &mut Vec<Pick>, depth: usize) {
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    if depth > 5 {
        return;
    }
    for (k, sub) in props {
        let path = format!("{prefix}.{k}");
        if !out.iter().any(|p| p.path == path) {
            let kind = match &sub["type"] {
                Value::String(t) => t.clone(),
                Value::Array(ts) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" or "),
                _ => "value".into(),
            };
            out.push(Pick {
                path: path.clone(),
                sample: kind,
            });
        }
        schema_picks(sub, &path, out, depth + 1);
    }
}

/// Recent sample events of a flow's trigger, newest first: what the
/// trigger kept (webhook deliveries, polls), else the events of its latest
/// runs.
fn samples(state: &ApiState, tenant: &str, flow: Option<&str>) -> Vec<Value> {
    let Some(flow) = flow else { return Vec::new() };
    let kept: Vec<Value> = state
        .triggers
        .kept_samples(tenant, flow)
        .unwrap_or_default()
        .into_iter()
        .map(|s| s.payload)
        .collect();
    if !kept.is_empty() {
        return kept;
    }
    state
        .runs
        .runs(
            tenant,
            &RunFilter {
                flow: Some(flow.to_string()),
                limit: Some(5),
                ..RunFilter::default()
            },
        )
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.event.payload)
        .collect()
}

/// Outputs of a flow's steps in its latest successful runs, by step key.
fn recent_outputs(state: &ApiState, tenant: &str, flow: Option<&str>) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let Some(flow) = flow else { return out };
    let runs = state
        .runs
        .runs(
            tenant,
            &RunFilter {
                flow: Some(flow.to_string()),
                limit: Some(20),
                ..RunFilter::default()
            },
        )
        .unwrap_or_default();
    for run in runs {
        for s in run.steps {
            if let Some(o) = s.output {
                out.entry(s.key).or_insert(o);
            }
        }
    }
    out
}

/// Where publishing's problems go: the form field each names.
fn place_problem(problem: &str, steps: &[Value]) -> (String, String) {
    let (place, message) = problem.split_once(": ").unwrap_or(("", problem));
    // A schema's problems: "steps[tag].input is invalid: /note: ...".
    let (place, message) = match place.strip_suffix(" is invalid") {
        Some(place) => (place, message.replacen('/', "invalid: /", 1)),
        None => (place, message.to_string()),
    };
    let message = message.as_str();
    let field = if let Some(rest) = place.strip_prefix("steps[") {
        let (key, tail) = rest.split_once(']').unwrap_or((rest, ""));
        let index = steps.iter().position(|s| s["key"].as_str() == Some(key));
        match index {
            Some(i) => {
                let tail = tail.trim_start_matches('.');
                if let Some(path) = tail.strip_prefix("input/") {
                    format!("step.{i}.input.{}", path.replace('/', "."))
                } else if tail == "input" {
                    // "the action requires `order_id`", or a schema problem at "/order_id: ..."
                    let named = message
                        .split('`')
                        .nth(1)
                        .filter(|_| message.contains("requires"))
                        .map(str::to_string)
                        .or_else(|| {
                            message
                                .split_once("invalid: /")
                                .map(|(_, r)| r.split(':').next().unwrap_or("").replace('/', "."))
                        });
                    match named {
                        Some(n) if !n.is_empty() => format!("step.{i}.input.{n}"),
                        _ => format!("step.{i}.input"),
                    }
                } else if tail.is_empty() {
                    format!("step.{i}")
                } else {
                    format!("step.{i}.{tail}")
                }
            }
            None => String::new(),
        }
    } else if let Some(rest) = place.strip_prefix("conditions[") {
        format!("cond.{}", rest.trim_end_matches(']'))
    } else if place == "trigger.params" {
        match message.split_once("invalid: /") {
            Some((_, r)) => format!(
                "trigger.params.{}",
                r.split(':').next().unwrap_or("").replace('/', ".")
            ),
            None => "trigger.params".into(),
        }
    } else if matches!(
        place,
        "name" | "trigger.plugin" | "trigger.trigger" | "trigger.connection"
    ) {
        place.to_string()
    } else {
        String::new()
    };
    (field, problem.to_string())
}

/// Everything the editor form shows.
fn editor_context(
    state: &ApiState,
    member: &Member,
    draft: &Draft,
    problems: &[(String, String)],
    top: &[String],
) -> minijinja::Value {
    let tenant = member.principal.tenant();
    let doc = &draft.document;
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    let mut unplaced: Vec<String> = top.to_vec();
    let add_error = |errors: &mut BTreeMap<String, String>, k: &str, v: &str| {
        errors
            .entry(k.to_string())
            .and_modify(|e| {
                e.push_str("; ");
                e.push_str(v);
            })
            .or_insert_with(|| v.to_string());
    };
    for (k, v) in problems {
        if k.is_empty() {
            unplaced.push(v.clone());
        } else {
            add_error(&mut errors, k, v);
        }
    }
    // The catalogue: each plugin's newest version.
    let mut catalogue: Vec<Manifest> = Vec::new();
    for r in state.registry.list().unwrap_or_default() {
        match catalogue.iter_mut().find(|m| m.key == r.key) {
            Some(m) if m.version < r.version && !r.deprecated => *m = r.manifest,
            Some(_) => {}
            None => catalogue.push(r.manifest),
        }
    }
    let connections = state.connections.list(tenant).unwrap_or_default();
    let connections_of = |key: &str| -> Vec<minijinja::Value> {
        connections
            .iter()
            .filter(|c| c.plugin == key)
            .map(|c| ctx! { id => c.id, name => c.name })
            .collect()
    };
    let trigger = &doc["trigger"];
    let t_ref = trigger["plugin"].as_str().unwrap_or("");
    let t_key = if t_ref.is_empty() {
        String::new()
    } else {
        plugin_key(t_ref)
    };
    let t_manifest = manifest_for(state, t_ref);
    let t_spec = t_manifest.as_ref().and_then(|m| {
        m.triggers
            .iter()
            .find(|t| Some(t.key.as_str()) == trigger["trigger"].as_str())
            .cloned()
    });
    let mut params = t_spec
        .as_ref()
        .map(|t| {
            forms::object_fields(
                &t.params_schema,
                "trigger.params",
                &trigger["params"],
                false,
            )
        })
        .unwrap_or_default();
    let errs: Vec<(String, String)> = errors.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    // Problems of fields the form does not show go at the top.
    let of = |prefix: &str| -> Vec<(String, String)> {
        errs.iter()
            .filter(|(k, _)| k == prefix || k.starts_with(&format!("{prefix}.")))
            .cloned()
            .collect()
    };
    unplaced.extend(forms::place(&mut params, &of("trigger.params")));
    // Samples: recent events, else an example of the event schema.
    let recent = samples(state, tenant, draft.flow.as_deref());
    let example = t_spec.as_ref().map(|t| forms::example(&t.event_schema, 0));
    let sample = draft
        .tests
        .get("trigger")
        .cloned()
        .or_else(|| recent.first().cloned())
        .or(example.clone())
        .unwrap_or(json!({}));
    let mut trigger_picks = Vec::new();
    flatten(&sample, "trigger", &mut trigger_picks, 0);
    for s in recent.iter().skip(1) {
        let mut more = Vec::new();
        flatten(s, "trigger", &mut more, 0);
        for p in more {
            if !trigger_picks.iter().any(|q: &Pick| q.path == p.path) {
                trigger_picks.push(p);
            }
        }
    }
    if let Some(t) = &t_spec {
        schema_picks(&t.event_schema, "trigger", &mut trigger_picks, 0);
    }
    let outputs = recent_outputs(state, tenant, draft.flow.as_deref());
    let empty = Vec::new();
    let steps_doc = doc["steps"].as_array().unwrap_or(&empty);
    let mut earlier: Vec<(String, Vec<Pick>)> = Vec::new();
    let mut steps = Vec::new();
    for (i, step) in steps_doc.iter().enumerate() {
        let key = step["key"].as_str().unwrap_or("").to_string();
        let other_kinds: Vec<&str> = [
            "paths",
            "for_each",
            "delay",
            "stop",
            "fail",
            "respond",
            "call_flow",
        ]
        .into_iter()
        .filter(|k| step.get(*k).is_some())
        .collect();
        let s_ref = step["plugin"].as_str().unwrap_or("");
        let s_key = if s_ref.is_empty() {
            String::new()
        } else {
            plugin_key(s_ref)
        };
        let s_manifest = manifest_for(state, s_ref);
        let action = s_manifest.as_ref().and_then(|m| {
            m.actions
                .iter()
                .find(|a| Some(a.key.as_str()) == step["action"].as_str())
                .cloned()
        });
        let prefix = format!("step.{i}");
        let mut input_fields: Vec<Field> = action
            .as_ref()
            .map(|a| {
                forms::object_fields(
                    &a.input_schema,
                    &format!("{prefix}.input"),
                    &step["input"],
                    true,
                )
            })
            .unwrap_or_default();
        let input_problems = of(&format!("{prefix}.input"));
        let mut step_problems = forms::place(&mut input_fields, &input_problems);
        if let Some(e) = errors.get(&prefix) {
            step_problems.push(e.clone());
        }
        let json_input = action.is_some() && input_fields.is_empty();
        let picks = ctx! {
            trigger => trigger_picks.clone(),
            steps => earlier.iter().map(|(k, p)| ctx! { key => k, picks => p }).collect::<Vec<_>>(),
        };
        let extras: Vec<String> = step
            .as_object()
            .map(|o| {
                o.keys()
                    .filter(|k| {
                        !matches!(
                            k.as_str(),
                            "key" | "plugin" | "action" | "connection" | "input"
                        )
                    })
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        steps.push(ctx! {
            index => i,
            key => key,
            control => !other_kinds.is_empty(),
            kinds => other_kinds,
            yaml => to_yaml(step),
            plugin => s_key,
            action => step["action"].as_str().unwrap_or(""),
            connection => step["connection"].as_str().unwrap_or(""),
            actions => s_manifest.as_ref().map(|m| m.actions.iter().map(|a| ctx! { key => a.key, name => a.name, description => a.description }).collect::<Vec<_>>()).unwrap_or_default(),
            action_description => action.as_ref().map(|a| a.description.clone()),
            connections => connections_of(&s_key),
            needs_connection => s_manifest.as_ref().is_some_and(|m| !m.connection_properties.is_empty()),
            fields => input_fields,
            json_input => json_input,
            input_json => if json_input { render::pretty(&step["input"]) } else { String::new() },
            picks => picks,
            extras => extras,
            error => (!step_problems.is_empty()).then(|| step_problems.join("; ")),
            tested => draft.tests.contains_key(&format!("step:{key}")),
        });
        // What later steps may pick from this one.
        let mut p = Vec::new();
        if let Some(o) = draft
            .tests
            .get(&format!("step:{key}"))
            .or(outputs.get(&key))
        {
            flatten(o, &format!("steps.{key}"), &mut p, 0);
        }
        if let Some(a) = &action {
            schema_picks(&a.output_schema, &format!("steps.{key}"), &mut p, 0);
        }
        earlier.push((key, p));
    }
    let conditions: Vec<Condition> = doc["conditions"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|e| parse_condition(e.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    ctx! {
        draft => ctx! { id => draft.id, flow => draft.flow, updated_at => draft.updated_at, updated_by => draft.updated_by },
        name => doc["name"].as_str().unwrap_or(""),
        plugins => catalogue.iter().map(|m| ctx! {
            key => m.key, name => m.name,
            has_triggers => !m.triggers.is_empty(), has_actions => !m.actions.is_empty(),
        }).collect::<Vec<_>>(),
        trigger => ctx! {
            plugin => t_key,
            trigger => trigger["trigger"].as_str().unwrap_or(""),
            connection => trigger["connection"].as_str().unwrap_or(""),
            schedule => trigger["schedule"].as_str(),
            triggers => t_manifest.as_ref().map(|m| m.triggers.iter().map(|t| ctx! { key => t.key, name => t.name, kind => format!("{:?}", t.kind).to_lowercase() }).collect::<Vec<_>>()).unwrap_or_default(),
            description => t_spec.as_ref().map(|t| t.description.clone()),
            kind => t_spec.as_ref().map(|t| format!("{:?}", t.kind).to_lowercase()),
            connections => connections_of(&t_key),
            needs_connection => t_manifest.as_ref().is_some_and(|m| !m.connection_properties.is_empty()),
            params => params,
        },
        trigger_picks => trigger_picks,
        conditions => conditions,
        operators => OPERATORS.iter().map(|(k, v)| ctx! { key => k, label => v }).collect::<Vec<_>>(),
        steps => steps,
        errors => errors,
        problems => unplaced,
        sample => render::pretty(&sample),
        sample_source => if draft.tests.contains_key("trigger") { "edited" } else if !recent.is_empty() { "recent" } else { "example" },
    }
}

async fn new_page(
    State(_state): State<ApiState>,
    Extension(member): Extension<Member>,
) -> PageResult {
    writer(&member)?;
    Ok(render::page(
        &member,
        "flows",
        "editor.html",
        ctx! { title => "New flow", start => true },
    )?
    .into_response())
}

async fn create(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    body: Bytes,
) -> PageResult {
    writer(&member)?;
    let tenant = member.principal.tenant();
    let form = fields(&body);
    let actor = member.principal.actor();
    if let Some(flow) = field(&form, "flow").filter(|f| !f.is_empty()) {
        if let Some(existing) = state.drafts.for_flow(tenant, flow)? {
            return Ok(Redirect::to(&format!("/flows/drafts/{}", existing.id)).into_response());
        }
        let record = state.flows.get(tenant, flow)?;
        let document = serde_json::to_value(&record.spec)
            .map_err(|e| PageError::internal(format!("flow as JSON: {e}")))?;
        let draft = state.drafts.create(tenant, Some(flow), document, &actor)?;
        return Ok(Redirect::to(&format!("/flows/drafts/{}", draft.id)).into_response());
    }
    let name = field(&form, "name").unwrap_or("").trim().to_string();
    let document = json!({
        "name": name,
        "trigger": {"params": {}},
        "steps": [{"key": "step1", "input": {}}],
    });
    let draft = state.drafts.create(tenant, None, document, &actor)?;
    Ok(Redirect::to(&format!("/flows/drafts/{}", draft.id)).into_response())
}

fn editor_page(
    state: &ApiState,
    member: &Member,
    draft: &Draft,
    problems: &[(String, String)],
    top: &[String],
    status: StatusCode,
    notice: Option<&str>,
) -> PageResult {
    let ctx = editor_context(state, member, draft, problems, top);
    let html = render::page(
        member,
        "flows",
        "editor.html",
        ctx! { title => format!("Edit {}", draft.document["name"].as_str().unwrap_or("flow")), notice => notice, e => ctx },
    )?;
    Ok((status, html).into_response())
}

#[derive(Deserialize)]
struct ShowQuery {
    notice: Option<String>,
}

async fn show(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
    Query(query): Query<ShowQuery>,
) -> PageResult {
    writer(&member)?;
    let draft = state.drafts.get(member.principal.tenant(), &id)?;
    editor_page(
        &state,
        &member,
        &draft,
        &[],
        &[],
        StatusCode::OK,
        notice(query.notice.as_deref()),
    )
}

/// Merges the submitted form into the draft and saves it; returns the
/// saved draft and the problems of the form's values.
fn merge_and_save(
    state: &ApiState,
    member: &Member,
    id: &str,
    form: &[(String, String)],
    query: &SaveQuery,
) -> Result<(Draft, Vec<(String, String)>), PageError> {
    let tenant = member.principal.tenant();
    let draft = state.drafts.get(tenant, id)?;
    let (mut document, problems) = merge(state, &draft.document, form);
    restructure(&mut document, query);
    let mut saved = state
        .drafts
        .save(tenant, id, document, &member.principal.actor())?;
    if let Some(sample) = field(form, "test.trigger").filter(|s| !s.trim().is_empty()) {
        match serde_json::from_str::<Value>(sample) {
            Ok(v) => {
                let current = saved.tests.get("trigger");
                if current != Some(&v) {
                    saved = state.drafts.set_test(tenant, id, "trigger", v)?;
                }
            }
            Err(e) => {
                let mut p = problems;
                p.push((
                    "test.trigger".into(),
                    format!("the sample event is not JSON: {e}"),
                ));
                return Ok((saved, p));
            }
        }
    }
    Ok((saved, problems))
}

async fn save(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
    Query(query): Query<SaveQuery>,
    body: Bytes,
) -> PageResult {
    writer(&member)?;
    let form = fields(&body);
    let (draft, problems) = merge_and_save(&state, &member, &id, &form, &query)?;
    let structural = query.render.is_some()
        || query.add_step.is_some()
        || query.remove_step.is_some()
        || query.add_condition.is_some()
        || query.remove_condition.is_some();
    if structural {
        let ctx = editor_context(&state, &member, &draft, &problems, &[]);
        return Ok(render::fragment(
            "editor_form.html",
            context! { e => ctx, ..render::layout(&member, "flows") },
        )?
        .into_response());
    }
    let saved = format!(
        "All changes saved ({})",
        render::format_time(Some(draft.updated_at as i64))
    );
    let text = if problems.is_empty() {
        saved
    } else {
        format!("{saved}; {} field(s) need attention", problems.len())
    };
    Ok(render::fragment("editor_form.html", ctx! { saved_only => text })?.into_response())
}

/// A redirect that works for a form post and for an htmx request.
fn go(path: &str, headers: &HeaderMap) -> Response {
    if headers.contains_key("hx-request") {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if let Ok(v) = HeaderValue::from_str(path) {
            r.headers_mut().insert("hx-redirect", v);
        }
        return r;
    }
    Redirect::to(path).into_response()
}

async fn publish(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> PageResult {
    writer(&member)?;
    let tenant = member.principal.tenant();
    let form = fields(&body);
    let (draft, problems) = merge_and_save(&state, &member, &id, &form, &SaveQuery::default())?;
    if !problems.is_empty() {
        return editor_page(
            &state,
            &member,
            &draft,
            &problems,
            &["Some fields need attention before publishing.".into()],
            StatusCode::BAD_REQUEST,
            None,
        );
    }
    let steps: Vec<Value> = draft.document["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let spec: FlowSpec = match serde_json::from_value(draft.document.clone()) {
        Ok(spec) => spec,
        Err(e) => {
            let message = format!("The flow is not complete: {e}");
            return editor_page(
                &state,
                &member,
                &draft,
                &[],
                &[message],
                StatusCode::BAD_REQUEST,
                None,
            );
        }
    };
    let before = match &draft.flow {
        Some(flow) => Some(state.flows.get(tenant, flow)?),
        None => None,
    };
    match state
        .flows
        .publish(tenant, draft.flow.as_deref(), spec, false)
    {
        Ok(record) => {
            if let Some(before) = before {
                let base = base_url(&state, &headers)?;
                state.triggers.refresh_activation(&before, &base).await?;
            }
            audit(
                &state,
                &member,
                "flow.publish",
                &record.id,
                &crate::api::publish_note(&record),
            );
            state.drafts.delete(tenant, &id)?;
            Ok(go(
                &format!("/flows/{}?notice=published", record.id),
                &headers,
            ))
        }
        Err(ServiceError::InvalidFlow(list)) => {
            let placed: Vec<(String, String)> =
                list.iter().map(|p| place_problem(p, &steps)).collect();
            editor_page(
                &state,
                &member,
                &draft,
                &placed,
                &[
                    "Not published: the fields marked below need attention. The draft is saved."
                        .into(),
                ],
                StatusCode::BAD_REQUEST,
                None,
            )
        }
        Err(e) => {
            let e = PageError::from(e);
            editor_page(&state, &member, &draft, &[], &[e.message], e.status, None)
        }
    }
}

async fn discard(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
) -> PageResult {
    writer(&member)?;
    let draft = state.drafts.get(member.principal.tenant(), &id)?;
    state.drafts.delete(member.principal.tenant(), &id)?;
    Ok(match draft.flow {
        Some(flow) => done(&format!("/flows/{flow}"), "discarded"),
        None => done("/flows", "discarded"),
    })
}

async fn yaml_page(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
) -> PageResult {
    writer(&member)?;
    let draft = state.drafts.get(member.principal.tenant(), &id)?;
    yaml_view(
        &member,
        &draft,
        &to_yaml(&draft.document),
        None,
        StatusCode::OK,
    )
}

fn yaml_view(
    member: &Member,
    draft: &Draft,
    text: &str,
    error: Option<String>,
    status: StatusCode,
) -> PageResult {
    let html = render::page(
        member,
        "flows",
        "yaml.html",
        ctx! {
            title => "Edit as YAML",
            draft => ctx! { id => draft.id, name => draft.document["name"].as_str().unwrap_or("") },
            yaml => text,
            error => error,
        },
    )?;
    Ok((status, html).into_response())
}

async fn yaml_save(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
    body: Bytes,
) -> PageResult {
    writer(&member)?;
    let tenant = member.principal.tenant();
    let draft = state.drafts.get(tenant, &id)?;
    let form = fields(&body);
    let text = field(&form, "yaml").unwrap_or("");
    let parsed: Result<Value, String> = serde_yaml_ng::from_str::<Value>(text)
        .map_err(|e| format!("This is not valid YAML: {e}"))
        .and_then(|v| {
            if v.is_object() {
                Ok(v)
            } else {
                Err("A flow is a mapping with `name`, `trigger` and `steps`.".into())
            }
        });
    match parsed {
        Ok(document) => {
            state
                .drafts
                .save(tenant, &id, document, &member.principal.actor())?;
            Ok(done(&format!("/flows/drafts/{id}"), "saved"))
        }
        Err(message) => yaml_view(
            &member,
            &draft,
            text,
            Some(message),
            StatusCode::BAD_REQUEST,
        ),
    }
}

/// Asks the published flow's polling trigger for events now (nothing is
/// committed) and takes the newest as the draft's sample event.
async fn fetch_samples(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
    body: Bytes,
) -> PageResult {
    writer(&member)?;
    let tenant = member.principal.tenant();
    let form = fields(&body);
    let (draft, mut problems) = merge_and_save(&state, &member, &id, &form, &SaveQuery::default())?;
    let draft = match &draft.flow {
        Some(flow) => match state.triggers.samples(tenant, flow, true).await {
            Ok(samples) => match samples.into_iter().next() {
                Some(sample) => state
                    .drafts
                    .set_test(tenant, &id, "trigger", sample.payload)?,
                None => {
                    problems.push((
                        "test.trigger".into(),
                        "the trigger has no events to show right now".into(),
                    ));
                    draft
                }
            },
            Err(e) => {
                problems.push(("test.trigger".into(), PageError::from(e).message));
                draft
            }
        },
        None => {
            problems.push((
                "test.trigger".into(),
                "publish the flow once to fetch events from its trigger".into(),
            ));
            draft
        }
    };
    let ctx = editor_context(&state, &member, &draft, &problems, &[]);
    Ok(render::fragment(
        "editor_form.html",
        context! { e => ctx, ..render::layout(&member, "flows") },
    )?
    .into_response())
}

/// Runs one step of the draft with its current inputs against the sample
/// event (and the outputs earlier steps had when they were tested), through
/// the runs service's step test: the input is rendered, checked and sent
/// through the one call path like a run's step, but no run is created.
async fn test_step(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path((id, index)): Path<(String, usize)>,
    body: Bytes,
) -> PageResult {
    writer(&member)?;
    let tenant = member.principal.tenant();
    let form = fields(&body);
    let (draft, problems) = merge_and_save(&state, &member, &id, &form, &SaveQuery::default())?;
    let result_id = format!("test-{index}");
    let fail = |problem: String| {
        render::fragment(
            "test_result.html",
            ctx! { result_id => result_id, step => index.to_string(), problem => problem, input => Value::Null, output => Value::Null, error => Value::Null, duration_ms => 0 },
        )
        .map(IntoResponse::into_response)
    };
    if let Some((_, p)) = problems.first() {
        return fail(p.clone());
    }
    let Some(step) = draft.document["steps"].get(index).cloned() else {
        return fail(format!("the flow has no step {}", index + 1));
    };
    let key = step["key"].as_str().unwrap_or("").to_string();
    let flow: FlowSpec = match serde_json::from_value(draft.document.clone()) {
        Ok(flow) => flow,
        Err(e) => return fail(format!("the flow is not complete enough to test: {e}")),
    };
    let trigger = draft
        .tests
        .get("trigger")
        .cloned()
        .or_else(|| {
            samples(&state, tenant, draft.flow.as_deref())
                .into_iter()
                .next()
        })
        .unwrap_or(json!({}));
    let mut earlier = Map::new();
    for s in draft.document["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .take(index)
    {
        let k = s["key"].as_str().unwrap_or("");
        if let Some(o) = draft.tests.get(&format!("step:{k}")) {
            earlier.insert(k.to_string(), o.clone());
        }
    }
    let test = StepTest {
        flow,
        step: key.clone(),
        trigger,
        steps: earlier,
        item: None,
        index: None,
    };
    let result = match state.runs.test_step(tenant, test).await {
        Ok(result) => result,
        Err(e) => return fail(PageError::from(e).message),
    };
    if result["error"].is_null()
        && let Some(output) = result.get("output").filter(|o| !o.is_null())
    {
        state
            .drafts
            .set_test(tenant, &id, &format!("step:{key}"), output.clone())?;
    }
    let error = result["error"].as_object().map(|e| {
        format!(
            "{}: {}",
            e.get("kind").and_then(Value::as_str).unwrap_or("error"),
            e.get("message").and_then(Value::as_str).unwrap_or("")
        )
    });
    Ok(render::fragment(
        "test_result.html",
        ctx! {
            result_id => result_id,
            step => key,
            input => result["input"],
            output => result["output"],
            error => error,
            journal => result["journal"],
            duration_ms => result["duration_ms"].as_f64().unwrap_or(0.0).round(),
        },
    )?
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_round_trip_through_the_form() {
        let table = [
            (
                "trigger.status == \"packed\"",
                ("trigger.status", "==", "packed"),
            ),
            ("trigger.total > 100", ("trigger.total", ">", "100")),
            (
                "\"vip\" in trigger.tags",
                ("trigger.tags", "contains", "vip"),
            ),
            (
                "trigger.note is defined and trigger.note is not none",
                ("trigger.note", "set", ""),
            ),
        ];
        for (expr, (left, op, right)) in table {
            let c = parse_condition(expr);
            assert_eq!(
                (c.left.as_str(), c.op.as_str(), c.right.as_str()),
                (left, op, right),
                "{expr}"
            );
            assert_eq!(condition_expr(&c).as_deref(), Some(expr), "{expr}");
        }
        let raw = parse_condition("trigger.a == 1 or trigger.b");
        assert_eq!(raw.op, "raw");
        assert_eq!(
            condition_expr(&raw).as_deref(),
            Some("trigger.a == 1 or trigger.b")
        );
        let typed = Condition {
            left: "trigger.status".into(),
            op: "==".into(),
            right: "packed".into(),
            raw: String::new(),
        };
        assert_eq!(
            condition_expr(&typed).as_deref(),
            Some("trigger.status == \"packed\"")
        );
        assert_eq!(
            condition_expr(&Condition {
                left: String::new(),
                op: "==".into(),
                right: String::new(),
                raw: String::new()
            }),
            None
        );
    }

    #[test]
    fn publish_problems_land_on_their_fields() {
        let steps = vec![json!({"key": "tag"})];
        let table = [
            (
                "steps[tag].input: the action requires `order_id`",
                "step.0.input.order_id",
            ),
            (
                "steps[tag].input/order_id: syntax error",
                "step.0.input.order_id",
            ),
            (
                "steps[tag].input is invalid: /note: 5 is not of type \"string\"",
                "step.0.input.note",
            ),
            (
                "trigger.params is invalid: /location: 5 is not of type \"string\"",
                "trigger.params.location",
            ),
            (
                "steps[tag].connection: connection `x` does not exist",
                "step.0.connection",
            ),
            (
                "trigger.connection: warehouse needs a connection",
                "trigger.connection",
            ),
            ("conditions[0]: unexpected end", "cond.0"),
            ("steps: a flow needs at least one step", ""),
        ];
        for (problem, field) in table {
            assert_eq!(place_problem(problem, &steps).0, field, "{problem}");
        }
    }

    #[test]
    fn the_picker_lists_sample_fields_then_schema_fields() {
        let mut picks = Vec::new();
        flatten(
            &json!({"status": "packed", "order": {"id": 7}, "lines": [{"sku": "A"}]}),
            "trigger",
            &mut picks,
            0,
        );
        let paths: Vec<&str> = picks.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "trigger.lines",
                "trigger.lines[0].sku",
                "trigger.order",
                "trigger.order.id",
                "trigger.status"
            ]
        );
        schema_picks(
            &json!({"properties": {"status": {"type": "string"}, "awb": {"type": ["string", "null"]}}}),
            "trigger",
            &mut picks,
            0,
        );
        assert_eq!(
            picks.last().unwrap(),
            &Pick {
                path: "trigger.awb".into(),
                sample: "string or null".into()
            }
        );
        assert_eq!(
            picks.iter().filter(|p| p.path == "trigger.status").count(),
            1
        );
    }
}
