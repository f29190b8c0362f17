//! Connectors: every plugin and version, their triggers and actions with
//! the schemas as field tables; for the operator, uploading a component,
//! deprecating, deleting (with the reason when it is refused) and the
//! environment variables of a version.

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Multipart, Path, Query, State},
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post},
};
use semver::Version;
use serde::Serialize;
use serde_json::Value;

use super::{
    Member, PageError, PageResult, audit, done, field, fields, notice, overview::NoticeQuery,
    render,
};
use crate::{
    api::ApiState,
    registry::{PluginKind, PluginRecord},
};

pub(super) fn routes(max_upload: usize) -> Router<ApiState> {
    Router::new()
        .route("/connectors", get(list))
        .route(
            "/connectors/upload",
            post(upload).layer(DefaultBodyLimit::max(max_upload)),
        )
        .route("/connectors/{key}/{version}", get(show))
        .route("/connectors/{key}/{version}/deprecate", post(deprecate))
        .route("/connectors/{key}/{version}/delete", post(delete))
        .route("/connectors/{key}/{version}/env", post(env_set))
        .route(
            "/connectors/{key}/{version}/env/{name}/delete",
            post(env_unset),
        )
}

/// One row of a schema's field table.
#[derive(Serialize)]
pub(super) struct SchemaRow {
    path: String,
    #[serde(rename = "type")]
    kind: String,
    required: bool,
    description: String,
    choices: String,
}

/// A schema as rows: every property, nested ones by their dotted path.
pub(super) fn schema_rows(schema: &Value) -> Vec<SchemaRow> {
    let mut rows = Vec::new();
    walk(schema, "", &mut rows, 0);
    rows
}

fn walk(schema: &Value, prefix: &str, rows: &mut Vec<SchemaRow>, depth: usize) {
    let Some(properties) = schema["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for (key, sub) in properties {
        let sub = &super::forms::effective(sub);
        let path = format!("{prefix}{key}");
        let kind = match &sub["type"] {
            Value::String(t) if t == "array" => match sub["items"]["type"].as_str() {
                Some(item) => format!("list of {item}"),
                None => "list".into(),
            },
            Value::String(t) => t.clone(),
            Value::Array(ts) => ts
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" or "),
            _ => "any".into(),
        };
        let choices = sub["enum"]
            .as_array()
            .map(|e| {
                e.iter()
                    .map(|v| v.as_str().map(str::to_string).unwrap_or(v.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        rows.push(SchemaRow {
            path: path.clone(),
            kind,
            required: required.contains(&key.as_str()),
            description: sub["description"].as_str().unwrap_or("").to_string(),
            choices,
        });
        if depth < 4 {
            walk(sub, &format!("{path}."), rows, depth + 1);
            walk(&sub["items"], &format!("{path}[]."), rows, depth + 1);
        }
    }
}

fn version(text: &str) -> Result<Version, PageError> {
    Version::parse(text).map_err(|e| {
        PageError::new(
            StatusCode::BAD_REQUEST,
            "Unknown version",
            format!("`{text}` is not a version: {e}"),
        )
    })
}

pub(super) fn operator(member: &Member) -> Result<(), PageError> {
    if member.principal.is_operator() {
        Ok(())
    } else {
        Err(PageError::forbidden(
            "Only the operator manages connectors.",
        ))
    }
}

async fn list(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Query(query): Query<NoticeQuery>,
) -> PageResult {
    list_page(
        &state,
        &member,
        notice(query.notice.as_deref()),
        None,
        StatusCode::OK,
    )
}

fn list_page(
    state: &ApiState,
    member: &Member,
    notice: Option<&str>,
    error: Option<String>,
    status: StatusCode,
) -> PageResult {
    let records = state.registry.list()?;
    // Newest version first within each plugin.
    let mut plugins: Vec<(String, Vec<&PluginRecord>)> = Vec::new();
    for r in &records {
        match plugins.iter_mut().find(|(k, _)| *k == r.key) {
            Some((_, versions)) => versions.push(r),
            None => plugins.push((r.key.clone(), vec![r])),
        }
    }
    let plugins: Vec<_> = plugins
        .into_iter()
        .map(|(key, mut versions)| {
            versions.sort_by(|a, b| b.version.cmp(&a.version));
            let newest = versions[0];
            ctx! {
                key => key,
                name => newest.manifest.name,
                description => newest.manifest.description,
                auth => auth_name(&newest.manifest.auth),
                declarative => newest.kind != PluginKind::Component,
                versions => versions.iter().map(|v| ctx! {
                    version => v.version.to_string(),
                    deprecated => v.deprecated,
                    uploaded_at => v.uploaded_at,
                    triggers => v.manifest.triggers.len(),
                    actions => v.manifest.actions.len(),
                }).collect::<Vec<_>>(),
            }
        })
        .collect();
    let html = render::page(
        member,
        "connectors",
        "connectors.html",
        ctx! {
            title => "Connectors",
            notice => notice,
            error => error,
            plugins => plugins,
            max_upload_mib => state.settings.max_upload_bytes >> 20,
        },
    )?;
    Ok((status, html).into_response())
}

pub(super) fn auth_name(auth: &crate::manifest::AuthScheme) -> &'static str {
    use crate::manifest::AuthScheme as A;
    match auth {
        A::None => "no credentials",
        A::Basic => "user and password",
        A::ApiKey { .. } => "API key",
        A::Bearer => "bearer token",
        A::Oauth2 { .. } => "OAuth 2.0",
        A::Session { .. } => "session login",
        A::Digest => "digest",
        A::AwsSigV4 { .. } => "AWS Signature V4",
    }
}

async fn show(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path((key, v)): Path<(String, String)>,
    Query(query): Query<NoticeQuery>,
) -> PageResult {
    detail(
        &state,
        &member,
        &key,
        &v,
        notice(query.notice.as_deref()),
        None,
        StatusCode::OK,
    )
}

fn detail(
    state: &ApiState,
    member: &Member,
    key: &str,
    v: &str,
    notice: Option<&str>,
    error: Option<String>,
    status: StatusCode,
) -> PageResult {
    let record = state.registry.record(key, &version(v)?)?;
    let m = &record.manifest;
    // The flows of every tenant use a version; a page names only the
    // member's own, and counts the others for the operator.
    let using = state.registry.flows_using(key, &record.version)?;
    let used_by: Vec<_> = state
        .flows
        .list(member.principal.tenant())?
        .into_iter()
        .filter(|f| using.contains(&f.id))
        .map(|f| ctx! { id => f.id, name => f.spec.name })
        .collect();
    let used_elsewhere = if member.principal.is_operator() {
        using.len().saturating_sub(used_by.len())
    } else {
        0
    };
    let html = render::page(
        member,
        "connectors",
        "connector.html",
        ctx! {
            title => format!("{} {}", m.name, record.version),
            notice => notice,
            error => error,
            r => ctx! {
                key => record.key,
                version => record.version.to_string(),
                deprecated => record.deprecated,
                sha256 => record.sha256,
                size_kib => record.size >> 10,
                uploaded_at => record.uploaded_at,
                declarative => record.kind != PluginKind::Component,
            },
            m => ctx! {
                name => m.name,
                description => m.description,
                auth => auth_name(&m.auth),
                hosts => m.allowed_hosts,
                properties => m.connection_properties.iter().map(|p| ctx! {
                    key => p.key, label => p.label, description => p.description,
                    required => p.required, secret => p.secret,
                }).collect::<Vec<_>>(),
                triggers => m.triggers.iter().map(|t| ctx! {
                    key => t.key, name => t.name, description => t.description,
                    kind => format!("{:?}", t.kind).to_lowercase(),
                    params => schema_rows(&t.params_schema),
                    event => schema_rows(&t.event_schema),
                }).collect::<Vec<_>>(),
                actions => m.actions.iter().map(|a| ctx! {
                    key => a.key, name => a.name, description => a.description,
                    kind => format!("{:?}", a.kind).to_lowercase(),
                    input => schema_rows(&a.input_schema),
                    output => schema_rows(&a.output_schema),
                }).collect::<Vec<_>>(),
            },
            env => if member.principal.is_operator() { Some(record.env.clone()) } else { None },
            // Secret ones by name only: their values never reach a page.
            secret_env => if member.principal.is_operator() { record.secret_env.keys().cloned().collect::<Vec<_>>() } else { Vec::new() },
            used_by => used_by,
            used_elsewhere => used_elsewhere,
        },
    )?;
    Ok((status, html).into_response())
}

async fn upload(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    mut multipart: Multipart,
) -> PageResult {
    operator(&member)?;
    let too_large = |state: &ApiState, member: &Member| {
        list_page(
            state,
            member,
            None,
            Some(format!(
                "The file is larger than this host accepts ({} MiB, `--max-upload-mib`). Nothing was stored.",
                state.settings.max_upload_bytes >> 20
            )),
            StatusCode::PAYLOAD_TOO_LARGE,
        )
    };
    let mut bytes = None;
    loop {
        match multipart.next_field().await {
            Ok(Some(f)) if f.name() == Some("file") => match f.bytes().await {
                Ok(b) => bytes = Some(b),
                Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    return too_large(&state, &member);
                }
                Err(e) => {
                    return list_page(&state, &member, None, Some(e.body_text()), e.status());
                }
            },
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return too_large(&state, &member);
            }
            Err(e) => return list_page(&state, &member, None, Some(e.body_text()), e.status()),
        }
    }
    let bytes: Bytes = match bytes {
        Some(b) if !b.is_empty() => b,
        _ => {
            return list_page(
                &state,
                &member,
                None,
                Some("Choose a `.wasm` component to upload.".into()),
                StatusCode::BAD_REQUEST,
            );
        }
    };
    match state.registry.upload(bytes.to_vec(), None).await {
        Ok((record, _)) => {
            audit(
                &state,
                &member,
                "plugin.upload",
                &format!("{}@{}", record.key, record.version),
                "",
            );
            Ok(done(
                &format!("/connectors/{}/{}", record.key, record.version),
                "uploaded",
            ))
        }
        Err(e) => {
            let e = PageError::from(e);
            list_page(&state, &member, None, Some(e.message), e.status)
        }
    }
}

async fn deprecate(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path((key, v)): Path<(String, String)>,
    body: Bytes,
) -> PageResult {
    operator(&member)?;
    let undo = field(&fields(&body), "deprecated") == Some("false");
    state
        .registry
        .set_deprecated(&key, &version(&v)?, !undo)
        .await?;
    audit(
        &state,
        &member,
        if undo {
            "plugin.undeprecate"
        } else {
            "plugin.deprecate"
        },
        &format!("{key}@{v}"),
        "",
    );
    Ok(done(
        &format!("/connectors/{key}/{v}"),
        if undo { "undeprecated" } else { "deprecated" },
    ))
}

async fn delete(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path((key, v)): Path<(String, String)>,
) -> PageResult {
    operator(&member)?;
    match state.registry.delete(&key, &version(&v)?).await {
        Ok(()) => {
            audit(&state, &member, "plugin.delete", &format!("{key}@{v}"), "");
            Ok(done("/connectors", "deleted"))
        }
        Err(e) => {
            let e = PageError::from(e);
            detail(
                &state,
                &member,
                &key,
                &v,
                None,
                Some(format!("Not deleted: {}", e.message)),
                e.status,
            )
        }
    }
}

async fn env_set(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path((key, v)): Path<(String, String)>,
    body: Bytes,
) -> PageResult {
    operator(&member)?;
    let form = fields(&body);
    let name = field(&form, "name").unwrap_or("").trim().to_string();
    let value = field(&form, "value").unwrap_or("").to_string();
    let set = if field(&form, "secret").is_some() {
        state
            .registry
            .set_secret_env(&key, &version(&v)?, &name, &value)
            .await
    } else {
        state
            .registry
            .set_env(&key, &version(&v)?, &name, &value)
            .await
    };
    match set {
        Ok(_) => {
            audit(
                &state,
                &member,
                "plugin.env",
                &format!("{key}@{v}"),
                &format!("set {name}"),
            );
            Ok(done(&format!("/connectors/{key}/{v}"), "env"))
        }
        Err(e) => {
            let e = PageError::from(e);
            detail(&state, &member, &key, &v, None, Some(e.message), e.status)
        }
    }
}

async fn env_unset(
    State(state): State<ApiState>,
    Extension(member): Extension<Member>,
    Path((key, v, name)): Path<(String, String, String)>,
) -> PageResult {
    operator(&member)?;
    state.registry.unset_env(&key, &version(&v)?, &name).await?;
    audit(
        &state,
        &member,
        "plugin.env",
        &format!("{key}@{v}"),
        &format!("unset {name}"),
    );
    Ok(done(&format!("/connectors/{key}/{v}"), "env"))
}
