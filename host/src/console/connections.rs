//! Connections: a tenant's credentials and settings for one connector,
//! created and edited in a form generated from the connector's property
//! schemas. Secret fields are write-only: the page never holds their value
//! (not even after a refused submission), an empty secret field keeps what
//! is stored. Also the connection test, the OAuth "Connect" button (through
//! the host's authorize and callback, back to this page), resuming a paused
//! connection and deletion.

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Redirect},
    routing::{get, post},
};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    Member, PageError, PageResult, audit, base_url,
    connectors::auth_name,
    done, field, fields,
    forms::{self, Field},
    notice, render, writer,
};
use crate::{
    api::ApiState,
    connections::{ConnectionRecord, ConnectionStatus},
    manifest::{AuthScheme, Manifest, OAuth2Grant},
    schema::check_against,
};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/connections", get(list))
        .route("/connections/new", get(new_form).post(create))
        .route("/connections/{id}", get(show).post(update))
        .route("/connections/{id}/test", post(test))
        .route("/connections/{id}/connect", post(connect))
        .route("/connections/{id}/resume", post(resume))
        .route("/connections/{id}/delete", post(delete))
}

#[derive(Deserialize)]
pub(super) struct PageQuery {
    plugin: Option<String>,
    notice: Option<String>,
}

async fn list(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Query(query): Query<PageQuery>,
) -> PageResult {
    let tenant = member.principal.tenant();
    let rows: Vec<_> = state
        .connections
        .list(tenant)?
        .into_iter()
        .map(|c| {
            let (status, reason) = match &c.status {
                ConnectionStatus::Active => ("active", String::new()),
                ConnectionStatus::Paused { reason } => ("paused", reason.clone()),
            };
            ctx! { id => c.id, name => c.name, plugin => c.plugin, status => status, reason => reason, updated_at => c.updated_at }
        })
        .collect();
    Ok(render::page(
        &member,
        "connections",
        "connections.html",
        ctx! { title => "Connections", notice => notice(query.notice.as_deref()), connections => rows },
    )?
    .into_response())
}

/// The form's fields for a connector's properties; secrets never carry a
/// value.
fn property_fields(
    manifest: &Manifest,
    values: &Map<String, Value>,
    stored_secrets: &[String],
) -> Vec<Field> {
    manifest
        .connection_properties
        .iter()
        .map(|p| {
            let value = if p.secret {
                &Value::Null
            } else {
                values.get(&p.key).unwrap_or(&Value::Null)
            };
            let mut f = forms::field(
                &p.schema,
                &format!("props.{}", p.key),
                &p.key,
                p.required,
                value,
                false,
            );
            f.label = p.label.clone();
            if !p.description.is_empty() {
                f.description = p.description.clone();
            }
            if p.secret {
                f.kind = "secret";
                f.value = String::new();
                f.is_set = stored_secrets.contains(&p.key);
                f.required = p.required && !f.is_set;
            }
            if f.kind == "object" {
                f.kind = "json";
                f.value = forms::as_text(value);
                f.children.clear();
            }
            f
        })
        .collect()
}

/// The submitted properties: what to set (and, editing, `null` for what was
/// emptied), and the problems by field. A secret left empty is not a
/// change. Values are checked against their schemas here so the form can
/// show each problem at its field; a secret's problem never quotes it.
fn submitted(
    manifest: &Manifest,
    form: &[(String, String)],
    stored_secrets: &[String],
    editing: bool,
) -> (Map<String, Value>, Vec<(String, String)>) {
    let mut changes = Map::new();
    let mut problems = Vec::new();
    for p in &manifest.connection_properties {
        let name = format!("props.{}", p.key);
        let text = field(form, &name).unwrap_or("");
        if text.trim().is_empty() {
            if p.secret && stored_secrets.contains(&p.key) {
                continue;
            }
            if p.required {
                problems.push((name, format!("{} is required", p.label)));
            } else if editing {
                changes.insert(p.key.clone(), Value::Null);
            }
            continue;
        }
        let value = match forms::parse_value(&p.schema, text) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(problem) if p.secret => {
                let _ = problem;
                problems.push((name, "this value is not of the kind the field takes".into()));
                continue;
            }
            Err(problem) => {
                problems.push((name, problem));
                continue;
            }
        };
        if let Err(e) = check_against(&p.schema, &value, &p.label) {
            let message = if p.secret {
                hint(&p.schema)
            } else {
                match e {
                    crate::schema::SchemaError::Invalid { problems, .. } => problems
                        .iter()
                        .map(|p| p.trim_start_matches("(root): ").to_string())
                        .collect::<Vec<_>>()
                        .join("; "),
                    other => other.to_string(),
                }
            };
            problems.push((name, message));
            continue;
        }
        changes.insert(p.key.clone(), value);
    }
    (changes, problems)
}

/// What a secret field takes, said without its value.
fn hint(schema: &Value) -> String {
    let mut parts = vec!["this value is not accepted".to_string()];
    if let Some(n) = schema["minLength"].as_u64() {
        parts.push(format!("at least {n} characters"));
    }
    if let Some(p) = schema["pattern"].as_str() {
        parts.push(format!("it must match `{p}`"));
    }
    parts.join("; ")
}

fn oauth_code(manifest: &Manifest) -> bool {
    matches!(
        manifest.auth,
        AuthScheme::Oauth2 {
            grant: OAuth2Grant::AuthorizationCode,
            ..
        }
    )
}

async fn new_form(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Query(query): Query<PageQuery>,
) -> PageResult {
    writer(&member)?;
    let Some(key) = query.plugin.filter(|p| !p.is_empty()) else {
        let mut keys: Vec<_> = Vec::new();
        for r in state.registry.list()? {
            if !keys
                .iter()
                .any(|(k, _, _, _): &(String, String, String, &str)| *k == r.key)
            {
                keys.push((
                    r.key.clone(),
                    r.manifest.name.clone(),
                    r.manifest.description.clone(),
                    auth_name(&r.manifest.auth),
                ));
            }
        }
        let plugins: Vec<_> = keys
            .into_iter()
            .map(|(key, name, description, auth)| ctx! { key => key, name => name, description => description, auth => auth })
            .collect();
        return Ok(render::page(
            &member,
            "connections",
            "connection_form.html",
            ctx! { title => "New connection", choose => true, plugins => plugins },
        )?
        .into_response());
    };
    let plugin = state.registry.newest(&key)?;
    let manifest = &plugin.record.manifest;
    form_page(
        &member,
        manifest,
        None,
        "",
        false,
        property_fields(manifest, &Map::new(), &[]),
        Vec::new(),
        StatusCode::OK,
        None,
    )
}

#[allow(clippy::too_many_arguments)]
fn form_page(
    member: &Member,
    manifest: &Manifest,
    record: Option<&ConnectionRecord>,
    name: &str,
    warm: bool,
    fields: Vec<Field>,
    errors: Vec<String>,
    status: StatusCode,
    notice: Option<&str>,
) -> PageResult {
    let (status_name, reason) = match record.map(|r| &r.status) {
        Some(ConnectionStatus::Paused { reason }) => ("paused", reason.clone()),
        _ => ("active", String::new()),
    };
    let html = render::page(
        member,
        "connections",
        "connection_form.html",
        ctx! {
            title => record.map(|r| r.name.clone()).unwrap_or_else(|| format!("New {} connection", manifest.name)),
            notice => notice,
            plugin => ctx! { key => manifest.key, name => manifest.name, description => manifest.description, auth => auth_name(&manifest.auth) },
            oauth => oauth_code(manifest),
            connection => record.map(|r| ctx! { id => r.id, created_at => r.created_at, updated_at => r.updated_at }),
            status => status_name,
            reason => reason,
            name => name,
            warm => warm,
            fields => fields,
            errors => errors,
        },
    )?;
    Ok((status, html).into_response())
}

async fn create(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    body: Bytes,
) -> PageResult {
    writer(&member)?;
    let form = fields(&body);
    let key = field(&form, "plugin").unwrap_or("").to_string();
    let plugin = state.registry.newest(&key)?;
    let manifest = &plugin.record.manifest;
    let name = field(&form, "name").unwrap_or("").trim().to_string();
    let warm = field(&form, "warm_instances").is_some();
    let (changes, problems) = submitted(manifest, &form, &[], false);
    let refused = |problems: Vec<(String, String)>, top: Vec<String>| {
        let plain: Map<String, Value> = changes
            .iter()
            .filter(|(k, _)| {
                !manifest
                    .connection_properties
                    .iter()
                    .any(|p| p.secret && p.key.as_str() == k.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // What was typed stays in the fields, but never a secret.
        let mut shown = plain;
        for p in manifest.connection_properties.iter().filter(|p| !p.secret) {
            if let Some(text) = field(&form, &format!("props.{}", p.key)) {
                shown
                    .entry(p.key.clone())
                    .or_insert(Value::String(text.to_string()));
            }
        }
        let mut fs = property_fields(manifest, &shown, &[]);
        let mut errors = forms::place(&mut fs, &problems);
        errors.extend(top);
        if manifest.connection_properties.iter().any(|p| p.secret) {
            errors.push(
                "Nothing was saved. Secret fields are never sent back to the browser: type them again."
                    .into(),
            );
        }
        form_page(
            &member,
            manifest,
            None,
            &name,
            warm,
            fs,
            errors,
            StatusCode::BAD_REQUEST,
            None,
        )
    };
    if !problems.is_empty() {
        return refused(problems, Vec::new());
    }
    match state.connections.create(
        member.principal.tenant(),
        &key,
        &name,
        changes.clone(),
        warm,
    ) {
        Ok(record) => {
            audit(
                &state,
                &member,
                "connection.create",
                &record.id,
                &record.name,
            );
            Ok(done(&format!("/connections/{}", record.id), "created"))
        }
        Err(e) => refused(Vec::new(), vec![PageError::from(e).message]),
    }
}

async fn show(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> PageResult {
    let record = state.connections.get(member.principal.tenant(), &id)?;
    let plugin = state.connections.plugin_for(&record)?;
    let manifest = &plugin.record.manifest;
    let secrets: Vec<String> = record.secret_names.iter().cloned().collect();
    let values: Map<String, Value> = record.properties.clone().into_iter().collect();
    let mut fs = property_fields(manifest, &values, &secrets);
    if !member.principal.can_write() {
        for f in &mut fs {
            f.picker = false;
        }
    }
    form_page(
        &member,
        manifest,
        Some(&record),
        &record.name,
        record.warm_instances,
        fs,
        Vec::new(),
        StatusCode::OK,
        notice(query.notice.as_deref()),
    )
}

async fn update(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
    body: Bytes,
) -> PageResult {
    writer(&member)?;
    let tenant = member.principal.tenant();
    let record = state.connections.get(tenant, &id)?;
    let plugin = state.connections.plugin_for(&record)?;
    let manifest = &plugin.record.manifest;
    let form = fields(&body);
    let name = field(&form, "name").unwrap_or("").trim().to_string();
    let warm = field(&form, "warm_instances").is_some();
    let secrets: Vec<String> = record.secret_names.iter().cloned().collect();
    let (changes, problems) = submitted(manifest, &form, &secrets, true);
    let refused = |problems: Vec<(String, String)>, top: Vec<String>| {
        let mut shown: Map<String, Value> = record.properties.clone().into_iter().collect();
        for p in manifest.connection_properties.iter().filter(|p| !p.secret) {
            if let Some(text) = field(&form, &format!("props.{}", p.key)) {
                shown.insert(p.key.clone(), Value::String(text.to_string()));
            }
        }
        let mut fs = property_fields(manifest, &shown, &secrets);
        let mut errors = forms::place(&mut fs, &problems);
        errors.extend(top);
        if manifest.connection_properties.iter().any(|p| p.secret) {
            errors.push(
                "Nothing was saved. Secret fields are never sent back to the browser: type them again."
                    .into(),
            );
        }
        form_page(
            &member,
            manifest,
            Some(&record),
            &name,
            warm,
            fs,
            errors,
            StatusCode::BAD_REQUEST,
            None,
        )
    };
    if !problems.is_empty() {
        return refused(problems, Vec::new());
    }
    let mut changed: Vec<String> = changes.keys().cloned().collect();
    if warm != record.warm_instances {
        changed.push(format!("warm_instances={warm}"));
    }
    let new_name = (!name.is_empty()).then_some(name.as_str());
    match state
        .connections
        .update(tenant, &id, new_name, changes.clone(), Some(warm))
    {
        Ok(_) => {
            audit(
                &state,
                &member,
                "connection.update",
                &id,
                &format!("changed: {}", changed.join(", ")),
            );
            Ok(done(&format!("/connections/{id}"), "saved"))
        }
        Err(e) => refused(Vec::new(), vec![PageError::from(e).message]),
    }
}

async fn test(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
) -> PageResult {
    writer(&member)?;
    let result = state
        .calls
        .check_connection(member.principal.tenant(), &id)
        .await?;
    Ok(render::fragment(
        "test_result.html",
        ctx! {
            connection_test => true,
            ok => result["ok"].as_bool().unwrap_or(false),
            error => result["error"].clone(),
            journal => result["journal"].clone(),
            duration_ms => result["duration_ms"].as_f64().unwrap_or(0.0).round(),
        },
    )?
    .into_response())
}

async fn connect(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    writer(&member)?;
    let base = base_url(&state, &headers)?;
    let started = state.oauth.authorize(
        member.principal.tenant(),
        &id,
        &base,
        Some(&format!("/connections/{id}?notice=connected")),
    )?;
    let url = started["authorize_url"].as_str().unwrap_or("/");
    audit(&state, &member, "connection.authorize", &id, "");
    Ok(Redirect::to(url).into_response())
}

async fn resume(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
) -> PageResult {
    writer(&member)?;
    let tenant = member.principal.tenant();
    state
        .connections
        .set_status(tenant, &id, ConnectionStatus::Active)?;
    state.runs.resume_parked(tenant, &id)?;
    state.runs.durable().await?;
    audit(&state, &member, "connection.resume", &id, "");
    Ok(done(&format!("/connections/{id}"), "resumed"))
}

async fn delete(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path(id): Path<String>,
) -> PageResult {
    writer(&member)?;
    state.connections.delete(member.principal.tenant(), &id)?;
    audit(&state, &member, "connection.delete", &id, "");
    Ok(done("/connections", "deleted"))
}
