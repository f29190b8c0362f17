//! `/v1/plugins`: upload (a component, a declarative spec as YAML or JSON,
//! or the declarative interpreter), list, show, resolve, deprecate, delete,
//! environment variables (secret ones write-only), the live test of an
//! unpublished spec (`/v1/plugins/test`), and `/v1/invoke` to run one
//! action by hand.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use axum::{
    Extension, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, State, rejection::BytesRejection},
    http::StatusCode,
    routing::{get, post, put},
};
use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    ApiError, ApiSettings, ApiState,
    extract::{Json, Path, Query},
    operator_only,
};
use crate::{
    calls::{Calls, DraftTest, InvokeRequest},
    engine::LoadError,
    error::ServiceError,
    registry::{PluginKind, PluginRecord, Registry, Versioning},
    sandbox::scrub::MASK,
    tenants::Principal,
};

pub(super) fn routes(settings: &ApiSettings) -> Router<ApiState> {
    let upload_limit = settings.max_upload_bytes;
    Router::new()
        .route(
            "/v1/plugins",
            post(upload)
                .get(list)
                .layer(DefaultBodyLimit::max(upload_limit)),
        )
        .route("/v1/plugins/test", post(test_spec))
        .route("/v1/plugins/validate", post(validate_spec))
        .route("/v1/declarative/schema", get(spec_schema))
        .route("/v1/plugins/{key}", get(versions))
        .route("/v1/plugins/{key}/resolve", get(resolve))
        .route("/v1/plugins/{key}/{version}", get(show).delete(delete))
        .route("/v1/plugins/{key}/{version}/deprecate", post(deprecate))
        .route("/v1/plugins/{key}/{version}/env", get(env_list))
        .route(
            "/v1/plugins/{key}/{version}/env/{name}",
            put(env_set).delete(env_unset),
        )
        .route("/v1/invoke", post(invoke))
}

/// A plugin version without its (large) manifest schemas.
#[derive(Serialize)]
struct Summary {
    key: String,
    version: Version,
    name: String,
    deprecated: bool,
    sha256: String,
    size: usize,
    uploaded_at: u64,
    triggers: Vec<String>,
    actions: Vec<String>,
    /// `component` or `declarative`.
    kind: &'static str,
}

impl From<&PluginRecord> for Summary {
    fn from(r: &PluginRecord) -> Self {
        Summary {
            key: r.key.clone(),
            version: r.version.clone(),
            name: r.manifest.name.clone(),
            deprecated: r.deprecated,
            sha256: r.sha256.clone(),
            size: r.size,
            uploaded_at: r.uploaded_at,
            triggers: r.manifest.triggers.iter().map(|t| t.key.clone()).collect(),
            actions: r.manifest.actions.iter().map(|a| a.key.clone()).collect(),
            kind: match r.kind {
                PluginKind::Component => "component",
                PluginKind::Declarative { .. } => "declarative",
            },
        }
    }
}

fn version(text: &str) -> Result<Version, ApiError> {
    Version::parse(text)
        .map_err(|e| ApiError::bad_request(format!("`{text}` is not a semantic version: {e}")))
}

#[derive(Deserialize)]
struct UploadQuery {
    /// The version the uploader expects the manifest to declare.
    version: Option<String>,
    /// `true`: a development build, stored as the next `X.Y.Z-dev.N` of
    /// the declared `X.Y.Z` (see `registry::Versioning::NextDev`).
    #[serde(default)]
    dev: bool,
}

async fn upload(
    State(registry): State<Arc<Registry>>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<UploadQuery>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    operator_only(&principal, "upload plugins")?;
    let body = body?;
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the request body is empty; send the component's bytes",
        ));
    }
    let expected = query.version.as_deref().map(version).transpose()?;
    let versioning = match (query.dev, expected) {
        (false, expected) => Versioning::Declared(expected),
        (true, None) => Versioning::NextDev,
        (true, Some(_)) => {
            return Err(ApiError::bad_request(
                "`dev` numbers the version itself: leave out `version`",
            ));
        }
    };
    let (record, created) = match registry.upload_as(body.to_vec(), versioning).await {
        // The declarative interpreter: kept for the specs to run on.
        Err(ServiceError::Load(LoadError::Interpreter)) => {
            let (interpreter, created) = registry.upload_interpreter(body.to_vec()).await?;
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            return Ok((
                status,
                Json(json!({"created": created, "interpreter": interpreter})),
            ));
        }
        other => other?,
    };
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(json!({"created": created, "plugin": Summary::from(&record)})),
    ))
}

/// `GET /v1/declarative/schema`: the spec format's JSON Schema, for editors.
async fn spec_schema() -> Result<Json<Value>, ApiError> {
    serde_json::from_str(crate::declarative::SCHEMA)
        .map(Json)
        .map_err(|e| ApiError::from(ServiceError::Internal(e.to_string())))
}

/// `POST /v1/plugins/validate`: the checks of a push, nothing stored and
/// nothing run (an editor calls it as the author types): `{"ok": true,
/// "manifest": ...}`, or `{"ok": false, "problems": [{path, line, message}]}`.
async fn validate_spec(
    Extension(principal): Extension<Principal>,
    body: String,
) -> Result<Json<Value>, ApiError> {
    operator_only(&principal, "validate connector specs")?;
    Ok(Json(match crate::declarative::parse(&body) {
        Ok(declared) => json!({"ok": true, "manifest": declared.manifest}),
        Err(problems) => json!({"ok": false, "problems": problems}),
    }))
}

/// `POST /v1/plugins/test`: one operation of an unpublished spec against
/// real data, with caps; see `calls::DraftTest`.
async fn test_spec(
    State(calls): State<Arc<Calls>>,
    Extension(principal): Extension<Principal>,
    Json(test): Json<DraftTest>,
) -> Result<Json<Value>, ApiError> {
    operator_only(&principal, "test connector specs")?;
    Ok(Json(calls.test_draft(principal.tenant(), test).await?))
}

async fn list(State(registry): State<Arc<Registry>>) -> Result<Json<Value>, ApiError> {
    let records = registry.list()?;
    Ok(Json(
        json!({"plugins": records.iter().map(Summary::from).collect::<Vec<_>>()}),
    ))
}

async fn versions(
    State(registry): State<Arc<Registry>>,
    Path(key): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let records = registry.versions(&key)?;
    if records.is_empty() {
        return Err(ApiError::not_found(format!(
            "plugin `{key}` does not exist"
        )));
    }
    Ok(Json(
        json!({"key": key, "versions": records.iter().map(Summary::from).collect::<Vec<_>>()}),
    ))
}

#[derive(Deserialize)]
struct ResolveQuery {
    req: Option<String>,
}

async fn resolve(
    State(registry): State<Arc<Registry>>,
    Path(key): Path<String>,
    Query(query): Query<ResolveQuery>,
) -> Result<Json<Value>, ApiError> {
    let text = query.req.unwrap_or_else(|| "*".to_string());
    let req = VersionReq::parse(&text).map_err(|e| {
        ApiError::bad_request(format!("`{text}` is not a version requirement: {e}"))
    })?;
    let version = registry.resolve(&key, &req)?;
    Ok(Json(
        json!({"key": key, "requirement": text, "version": version}),
    ))
}

async fn show(
    State(registry): State<Arc<Registry>>,
    Path((key, v)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let record = registry.record(&key, &version(&v)?)?;
    let mut shown = json!(record);
    // Not even sealed: the names only.
    shown["secret_env"] = json!(masked(&record));
    Ok(Json(shown))
}

/// Secret variable names with their value masked.
fn masked(record: &PluginRecord) -> serde_json::Map<String, Value> {
    (record.secret_env.keys())
        .map(|name| (name.clone(), json!(MASK)))
        .collect()
}

/// A version's variables as the API shows them: plain values, and secret
/// ones as `********`, with the secret names listed apart.
fn env_view(record: &PluginRecord) -> Value {
    let mut env: serde_json::Map<String, Value> = (record.env.iter())
        .map(|(name, value)| (name.clone(), json!(value)))
        .collect();
    env.extend(masked(record));
    json!({"env": env, "secret": record.secret_env.keys().collect::<Vec<_>>()})
}

async fn delete(
    State(registry): State<Arc<Registry>>,
    Extension(principal): Extension<Principal>,
    Path((key, v)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    operator_only(&principal, "delete plugins")?;
    registry.delete(&key, &version(&v)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct DeprecateBody {
    #[serde(default = "yes")]
    deprecated: bool,
}

fn yes() -> bool {
    true
}

async fn deprecate(
    State(registry): State<Arc<Registry>>,
    Extension(principal): Extension<Principal>,
    Path((key, v)): Path<(String, String)>,
    body: Option<Json<DeprecateBody>>,
) -> Result<Json<Value>, ApiError> {
    operator_only(&principal, "deprecate plugins")?;
    let deprecated = body.map(|Json(b)| b.deprecated).unwrap_or(true);
    let record = registry
        .set_deprecated(&key, &version(&v)?, deprecated)
        .await?;
    Ok(Json(json!({"plugin": Summary::from(&record)})))
}

async fn env_list(
    State(registry): State<Arc<Registry>>,
    Extension(principal): Extension<Principal>,
    Path((key, v)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    operator_only(&principal, "read environment variables")?;
    let record = registry.record(&key, &version(&v)?)?;
    Ok(Json(env_view(&record)))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct EnvValue {
    value: String,
    /// Sealed, write-only, and for the host's auth only (never the guest).
    #[serde(default)]
    secret: bool,
}

async fn env_set(
    State(registry): State<Arc<Registry>>,
    Extension(principal): Extension<Principal>,
    Path((key, v, name)): Path<(String, String, String)>,
    Json(body): Json<EnvValue>,
) -> Result<Json<Value>, ApiError> {
    operator_only(&principal, "set environment variables")?;
    let version = version(&v)?;
    let record = if body.secret {
        registry
            .set_secret_env(&key, &version, &name, &body.value)
            .await?
    } else {
        registry.set_env(&key, &version, &name, &body.value).await?
    };
    Ok(Json(env_view(&record)))
}

async fn env_unset(
    State(registry): State<Arc<Registry>>,
    Extension(principal): Extension<Principal>,
    Path((key, v, name)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    operator_only(&principal, "unset environment variables")?;
    let record = registry.unset_env(&key, &version(&v)?, &name).await?;
    Ok(Json(env_view(&record)))
}

#[derive(Deserialize, utoipa::ToSchema)]
pub(super) struct InvokeBody {
    /// `key`, `key@1.2.0` or `key@^1`.
    plugin: String,
    action: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    input: Value,
    /// A stored connection to run with.
    connection: Option<String>,
    /// Or non-secret connection properties for this one call.
    #[serde(default)]
    #[schema(value_type = Object)]
    properties: HashMap<String, Value>,
    /// The idempotency key the action gets, to try a retried action by
    /// hand: two invocations with the same key are one operation to an API
    /// that honours it. Default: a new key (`invoke-<hex>`) each time.
    idempotency_key: Option<String>,
}

async fn invoke(
    State(calls): State<Arc<Calls>>,
    Extension(principal): Extension<Principal>,
    Json(body): Json<InvokeBody>,
) -> Result<Json<Value>, ApiError> {
    super::writer(&principal)?;
    let input = if body.input.is_null() {
        json!({})
    } else {
        body.input
    };
    let properties: BTreeMap<String, Value> = body.properties.into_iter().collect();
    let invocation = calls
        .invoke(
            principal.tenant(),
            InvokeRequest {
                plugin: body.plugin,
                action: body.action,
                input,
                connection: body.connection,
                properties,
                idempotency_key: body.idempotency_key,
            },
        )
        .await
        .map_err(ApiError::from)?;
    Ok(Json(json!(invocation)))
}
