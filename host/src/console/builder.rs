//! The builder of declarative (no-code) connectors: the spec edited as
//! text, checked as it is typed (each problem at its line, a click away),
//! a test panel beside it that runs one action, trigger or the connection
//! test of the unpublished spec against the real API and shows the result
//! with every request and response (secrets cut out), and a push that
//! publishes it as a new version. The checks, the live test and the push
//! are the API's own (`declarative::parse`, `Calls::test_draft`,
//! `Registry::push_spec`); like uploads, the builder is the operator's.

use std::collections::BTreeMap;

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{Query, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use minijinja::context;
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    Member, PageError, PageResult, audit, connectors::operator, done, field, fields, render,
};
use crate::{
    api::ApiState,
    calls::{DraftDelivery, DraftLimits, DraftTest},
    declarative::{self, Problem},
    engine::CallError,
    error::ServiceError,
    manifest::{Manifest, TriggerKind},
};

/// What a new connector starts from: a small spec that passes every check.
const TEMPLATE: &str = include_str!("templates/new_connector.yaml");

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/builder", get(show))
        .route("/builder/check", post(check))
        .route("/builder/test", post(test))
        .route("/builder/push", post(push))
}

#[derive(Deserialize)]
struct BuilderQuery {
    /// `key@version`: edit that declarative version's spec.
    from: Option<String>,
}

/// The version a spec is edited from.
#[derive(Serialize)]
struct Origin {
    key: String,
    version: String,
}

/// An operation the test panel offers: `test`, `action:<key>` or
/// `trigger:<key>`.
#[derive(Serialize)]
struct Operation {
    value: String,
    label: String,
}

/// What the checks said of a spec, as the page shows it.
#[derive(Serialize, Default)]
struct Checked {
    ok: bool,
    summary: Option<Summary>,
    problems: Vec<Problem>,
    actions: Vec<Operation>,
    triggers: Vec<Operation>,
    /// The operation chosen (kept when the spec still has it).
    operation: String,
    connections: Vec<Connection>,
    connection: String,
    /// The connection properties, as a placeholder for the test's JSON.
    properties_hint: String,
}

#[derive(Serialize)]
struct Summary {
    key: String,
    name: String,
    version: String,
    actions: usize,
    triggers: usize,
}

#[derive(Serialize)]
struct Connection {
    id: String,
    name: String,
}

/// Runs the push-time checks on `text` and lists what the test panel can
/// run, keeping the operation and connection chosen when they still apply.
fn checked(
    state: &ApiState,
    member: &Member,
    text: &str,
    operation: Option<&str>,
    connection: Option<&str>,
) -> Result<Checked, PageError> {
    let manifest = match declarative::parse(text) {
        Ok(declared) => declared.manifest,
        Err(mut problems) => {
            problems.sort_by_key(|p| p.line);
            return Ok(Checked {
                problems,
                ..Checked::default()
            });
        }
    };
    let connections: Vec<Connection> = state
        .connections
        .list(member.principal.tenant())?
        .into_iter()
        .filter(|c| c.plugin == manifest.key)
        .map(|c| Connection {
            id: c.id,
            name: c.name,
        })
        .collect();
    let connection = connection
        .filter(|id| connections.iter().any(|c| c.id == *id))
        .unwrap_or("")
        .to_string();
    let (actions, triggers) = operations(&manifest);
    let offered =
        |value: &str| value == "test" || actions.iter().chain(&triggers).any(|o| o.value == value);
    let operation = match operation {
        Some(op) if offered(op) => op.to_string(),
        _ => actions
            .iter()
            .chain(&triggers)
            .next()
            .map(|o| o.value.clone())
            .unwrap_or_else(|| "test".into()),
    };
    let hint = manifest
        .connection_properties
        .iter()
        .map(|p| format!("{}: \"\"", Value::String(p.key.clone())))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(Checked {
        ok: true,
        summary: Some(Summary {
            key: manifest.key.clone(),
            name: manifest.name.clone(),
            version: manifest.version.to_string(),
            actions: actions.len(),
            triggers: triggers.len(),
        }),
        problems: Vec::new(),
        actions,
        triggers,
        operation,
        connections,
        connection,
        properties_hint: format!("{{{hint}}}"),
    })
}

/// The spec's own actions and its triggers (the custom API call every
/// connector gets is left out: it is not the spec's to test).
fn operations(manifest: &Manifest) -> (Vec<Operation>, Vec<Operation>) {
    let actions = manifest
        .actions
        .iter()
        .filter(|a| a.key != crate::manifest::CUSTOM_API_CALL)
        .map(|a| Operation {
            value: format!("action:{}", a.key),
            label: format!("{} ({})", a.name, a.key),
        })
        .collect();
    let triggers = manifest
        .triggers
        .iter()
        .map(|t| Operation {
            value: format!("trigger:{}", t.key),
            label: format!(
                "{} ({}, {})",
                t.name,
                t.key,
                match t.kind {
                    TriggerKind::Polling => "polling",
                    TriggerKind::Webhook => "webhook",
                }
            ),
        })
        .collect();
    (actions, triggers)
}

async fn show(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Query(query): Query<BuilderQuery>,
) -> PageResult {
    operator(&member)?;
    let Some(from) = query.from else {
        return page(&state, &member, TEMPLATE, None, None, None, StatusCode::OK);
    };
    let (key, v) = from.split_once('@').ok_or_else(|| {
        PageError::new(
            StatusCode::BAD_REQUEST,
            "Unknown version",
            format!("`{from}` is not key@version"),
        )
    })?;
    let version = Version::parse(v).map_err(|e| {
        PageError::new(
            StatusCode::BAD_REQUEST,
            "Unknown version",
            format!("`{v}` is not a version: {e}"),
        )
    })?;
    let text = state.registry.spec_text(key, &version)?.ok_or_else(|| {
        PageError::new(
            StatusCode::BAD_REQUEST,
            "Not a declarative connector",
            format!(
                "{key}@{version} is a component (code); only declarative connectors are edited here."
            ),
        )
    })?;
    // The spec comes back as the next version, so a push adds one.
    let newest = state
        .registry
        .versions(key)?
        .into_iter()
        .map(|r| r.version)
        .max()
        .unwrap_or(version.clone());
    let next = Version::new(newest.major, newest.minor, newest.patch + 1);
    let (text, note) = match with_version(&text, &next) {
        Some(text) => (
            text,
            format!("The spec of {key} {version}, as version {next}: push it to add that version."),
        ),
        None => (
            text,
            format!(
                "The spec of {key} {version}. Raise its version before pushing: a version keeps the spec it was pushed with."
            ),
        ),
    };
    let from = Origin {
        key: key.to_string(),
        version: version.to_string(),
    };
    page(
        &state,
        &member,
        &text,
        Some(from),
        Some(note),
        None,
        StatusCode::OK,
    )
}

fn page(
    state: &ApiState,
    member: &Member,
    text: &str,
    from: Option<Origin>,
    note: Option<String>,
    error: Option<String>,
    status: StatusCode,
) -> PageResult {
    let check = checked(state, member, text, None, None)?;
    let html = render::page(
        member,
        "connectors",
        "builder.html",
        ctx! {
            title => match &from {
                Some(f) => format!("Edit {} {}", f.key, f.version),
                None => "New connector".to_string(),
            },
            text => text,
            from => from,
            note => note,
            error => error,
            c => check,
        },
    )?;
    Ok((status, html).into_response())
}

/// `text` with its top-level `version` set to `version`, or `None` when
/// it has none where it can be found (a YAML line `version: ...` at the
/// start of a line, or the key of a JSON object).
fn with_version(text: &str, version: &Version) -> Option<String> {
    if text.trim_start().starts_with('{') {
        let mut spec: Value = serde_json::from_str(text).ok()?;
        spec.as_object_mut()?
            .insert("version".into(), Value::String(version.to_string()));
        return serde_json::to_string_pretty(&spec).ok();
    }
    let mut found = false;
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            let Some(rest) = line.strip_prefix("version:").filter(|_| !found) else {
                return line.to_string();
            };
            found = true;
            // Keep the quotes and a comment after the value.
            let (value, comment) = match rest.find(" #") {
                Some(at) => rest.split_at(at),
                None => (rest, ""),
            };
            let quote = match value.trim().chars().next() {
                Some(q @ ('"' | '\'')) => q.to_string(),
                _ => String::new(),
            };
            let value_end = value.trim_end_matches(['\r', ' ']).len();
            let trail = &value[value_end..];
            format!("version: {quote}{version}{quote}{trail}{comment}")
        })
        .collect();
    found.then(|| lines.join("\n"))
}

/// The form's spec, with the line ends a browser sends (CRLF) as LF, so
/// the lines of problems are the lines the editor shows.
fn spec_of(form: &[(String, String)]) -> String {
    field(form, "spec").unwrap_or("").replace("\r\n", "\n")
}

/// `POST /builder/check` (htmx, as the author types): the problems, and
/// the operations and connections of the test panel when there are none.
async fn check(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    body: Bytes,
) -> PageResult {
    operator(&member)?;
    let form = fields(&body);
    let check = checked(
        &state,
        &member,
        &spec_of(&form),
        field(&form, "operation"),
        field(&form, "connection"),
    )?;
    Ok(render::fragment("builder_check.html", ctx! { c => check, oob => true })?.into_response())
}

/// `POST /builder/test` (htmx): runs the chosen operation of the spec as
/// it is in the editor; nothing is stored.
async fn test(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    body: Bytes,
) -> PageResult {
    operator(&member)?;
    let form = fields(&body);
    let text = spec_of(&form);
    let operation = field(&form, "operation").unwrap_or("test").to_string();
    let label = match operation.split_once(':') {
        Some(("action", key)) => format!("Action {key}"),
        Some(("trigger", key)) => format!("Trigger {key}"),
        _ => "Connection test".to_string(),
    };
    let refused = |message: String| {
        render::fragment(
            "builder_test.html",
            ctx! { label => label, problem => message },
        )
        .map(IntoResponse::into_response)
    };
    let json = |name: &str, what: &str| -> Result<Value, String> {
        let text = field(&form, name).unwrap_or("").trim();
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(text).map_err(|e| format!("{what} is not JSON: {e}"))
    };
    let input = match json("input", "The input") {
        Ok(v) => v,
        Err(message) => return refused(message),
    };
    let properties: BTreeMap<String, Value> = match json("properties", "The properties") {
        Ok(Value::Null) => BTreeMap::new(),
        Ok(Value::Object(map)) => map.into_iter().collect(),
        Ok(_) => return refused("The properties are a JSON object: {\"name\": value}".into()),
        Err(message) => return refused(message),
    };
    let connection = field(&form, "connection")
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let mut draft = DraftTest {
        spec: Value::String(text.clone()),
        connection,
        properties,
        action: None,
        input: Value::Null,
        trigger: None,
        params: Value::Null,
        cursor: None,
        delivery: None,
        limits: DraftLimits::default(),
    };
    if let Some(action) = operation.strip_prefix("action:") {
        draft.action = Some(action.to_string());
        draft.input = input;
    } else if let Some(trigger) = operation.strip_prefix("trigger:") {
        draft.trigger = Some(trigger.to_string());
        let webhook = declarative::parse(&text).is_ok_and(|d| {
            d.manifest
                .triggers
                .iter()
                .any(|t| t.key == trigger && t.kind == TriggerKind::Webhook)
        });
        if webhook {
            match serde_json::from_value::<DraftDelivery>(input) {
                Ok(delivery) => draft.delivery = Some(delivery),
                Err(e) => {
                    return refused(format!(
                        "A webhook trigger is tested with a sample delivery, {{\"headers\": {{...}}, \"body\": ...}}: {e}"
                    ));
                }
            }
        } else {
            draft.params = input;
        }
    }
    let answer = match state
        .calls
        .test_draft(member.principal.tenant(), draft)
        .await
    {
        Ok(answer) => answer,
        Err(ServiceError::Spec(problems)) => {
            return refused(format!(
                "The spec has {} problem{} (listed under it); fix {} first.",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" },
                if problems.len() == 1 { "it" } else { "them" },
            ));
        }
        Err(e) => return refused(PageError::from(e).message),
    };
    let error = (!answer["error"].is_null()).then(|| {
        serde_json::from_value::<CallError>(answer["error"].clone())
            .map(|e| e.to_string())
            .unwrap_or_else(|_| answer["error"].to_string())
    });
    let result = if answer["events"].is_array() {
        answer["events"].clone()
    } else {
        answer["output"].clone()
    };
    let html = render::fragment(
        "builder_test.html",
        ctx! {
            label => label,
            ran => true,
            ok => answer["ok"] == Value::Bool(true),
            error => error,
            events => answer["events"].is_array(),
            result => result,
            records => answer["records"].as_array().map(Vec::len).unwrap_or(0),
            schema => answer["schema"],
            pages => journal(&answer["pages"]),
            logs => answer["logs"],
            duration_ms => answer["duration_ms"].as_f64().unwrap_or(0.0).round() as u64,
        },
    )?;
    Ok(html.into_response())
}

/// The requests of a live test and their answers as the page shows them:
/// each message as its headers, a blank line and its body (JSON indented).
fn journal(pages: &Value) -> Vec<minijinja::Value> {
    let text = |m: &Value| {
        let headers: Vec<String> = m["headers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| Some(format!("{}: {}", h[0].as_str()?, h[1].as_str()?)))
            .collect();
        let body = m["body"].as_str().unwrap_or("");
        let body = serde_json::from_str::<Value>(body)
            .map(|v| render::pretty(&v))
            .unwrap_or_else(|_| body.to_string());
        match (headers.is_empty(), body.is_empty()) {
            (_, true) => headers.join("\n"),
            (true, false) => body,
            (false, false) => format!("{}\n\n{body}", headers.join("\n")),
        }
    };
    pages
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            context! {
                method => p["request"]["method"].as_str().unwrap_or("GET"),
                url => p["request"]["url"].as_str().unwrap_or(""),
                request => text(&p["request"]),
                status => p["response"]["status"].as_u64(),
                response => p["response"].is_object().then(|| text(&p["response"])),
                error => p["error"].as_str(),
            }
        })
        .collect()
}

/// `POST /builder/push`: publishes the spec as a new version and goes to
/// its page; a refusal shows the builder again with the reason (and every
/// problem), nothing stored.
async fn push(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    body: Bytes,
) -> PageResult {
    operator(&member)?;
    let form = fields(&body);
    let text = spec_of(&form);
    let from = field(&form, "from")
        .and_then(|f| f.split_once('@'))
        .map(|(key, version)| Origin {
            key: key.to_string(),
            version: version.to_string(),
        });
    match state.registry.push_spec(&text, None).await {
        Ok((record, created)) => {
            let target = format!("{}@{}", record.key, record.version);
            audit(&state, &member, "plugin.push", &target, "from the builder");
            Ok(done(
                &format!("/connectors/{}/{}", record.key, record.version),
                if created { "pushed" } else { "unchanged" },
            ))
        }
        Err(ServiceError::Spec(problems)) => page(
            &state,
            &member,
            &text,
            from,
            None,
            Some(format!(
                "Not pushed: the spec has {} problem{} (listed under it). Nothing was stored.",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            )),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(e) => {
            let e = PageError::from(e);
            page(
                &state,
                &member,
                &text,
                from,
                None,
                Some(format!("Not pushed: {}. Nothing was stored.", e.message)),
                e.status,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_passes_every_check() {
        let declared = declarative::parse(TEMPLATE).unwrap_or_else(|p| panic!("{p:?}"));
        assert!(!declared.manifest.actions.is_empty());
        assert!(!declared.manifest.triggers.is_empty());
    }

    #[test]
    fn an_edited_spec_gets_the_next_version() {
        let next = Version::new(1, 2, 4);
        for (text, expected) in [
            (
                "key: a\nversion: 1.2.3\nname: A",
                Some("key: a\nversion: 1.2.4\nname: A"),
            ),
            (
                "version: \"1.2.3\"   # the release\n",
                Some("version: \"1.2.4\"   # the release\n"),
            ),
            (
                "version: '1.2.3'\r\nkey: a",
                Some("version: '1.2.4'\r\nkey: a"),
            ),
            // Only the top level's.
            (
                "actions:\n  a:\n    version: 1\nversion: 1.2.3",
                Some("actions:\n  a:\n    version: 1\nversion: 1.2.4"),
            ),
            ("key: a\n", None),
        ] {
            assert_eq!(with_version(text, &next).as_deref(), expected, "{text}");
        }
        let json = with_version("{\"key\": \"a\", \"version\": \"1.0.0\"}", &next).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap()["version"],
            "1.2.4"
        );
    }
}
