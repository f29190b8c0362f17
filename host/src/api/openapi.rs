//! `GET /v1/openapi.json`: the API described as OpenAPI 3.1, built with
//! utoipa from [`OPERATIONS`] (one entry per route the router serves; a
//! test reads the routers' sources and fails when one is missing here) and
//! the request bodies' own types (`ToSchema`), so a body's description
//! cannot drift from the struct that reads it.

use std::sync::LazyLock;

use axum::{Json, Router, routing::get};
use serde_json::Value;
use utoipa::{
    PartialSchema,
    openapi::{
        ContentBuilder, HttpMethod, InfoBuilder, LicenseBuilder, ObjectBuilder, OpenApi,
        OpenApiBuilder, PathsBuilder, RefOr, Required, Schema, Type,
        path::{OperationBuilder, ParameterBuilder, ParameterIn, PathItem},
        request_body::RequestBodyBuilder,
        response::ResponseBuilder,
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
        tag::TagBuilder,
    },
};

use super::ApiState;

/// What a route's request body is.
#[derive(Clone, Copy)]
pub(super) enum Body {
    None,
    /// JSON described by a type's schema.
    Json(fn() -> RefOr<Schema>),
    /// Free-form JSON object (a trigger event).
    AnyJson,
    /// A flow document, JSON or YAML.
    Flow,
    /// Raw bytes (a component, a webhook delivery).
    Bytes(&'static str),
}

/// Who may call a route.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Auth {
    /// A bearer token (the operator's or a tenant's) or a console session.
    Token,
    /// No token: public or authorised otherwise.
    Public,
}

pub(super) struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub tag: &'static str,
    pub summary: &'static str,
    pub body: Body,
    pub auth: Auth,
    /// The status of success.
    pub ok: u16,
}

const fn op(
    method: &'static str,
    path: &'static str,
    tag: &'static str,
    summary: &'static str,
) -> Operation {
    Operation {
        method,
        path,
        tag,
        summary,
        body: Body::None,
        auth: Auth::Token,
        ok: 200,
    }
}

const fn with(mut o: Operation, body: Body, ok: u16) -> Operation {
    o.body = body;
    o.ok = ok;
    o
}

const fn public(mut o: Operation) -> Operation {
    o.auth = Auth::Public;
    o
}

fn schema_of<T: PartialSchema>() -> RefOr<Schema> {
    T::schema()
}

use super::{connections as c, plugins as p, runs as r, tenants as t, users as u};

/// Every route of the API.
pub(super) const OPERATIONS: &[Operation] = &[
    public(op("GET", "/health", "host", "Liveness (no token)")),
    op(
        "GET",
        "/v1/status",
        "host",
        "Version, plugin count, compilations since start",
    ),
    public(op("GET", "/v1/openapi.json", "host", "This document")),
    public(op(
        "GET",
        "/metrics",
        "host",
        "Prometheus metrics (the operator token or the metrics token)",
    )),
    with(
        op(
            "POST",
            "/v1/plugins",
            "plugins",
            "Upload a plugin version: a component, a declarative spec (YAML or JSON text) or the declarative interpreter (operator); `version`: refuse another, `dev=true`: store as the next `X.Y.Z-dev.N`",
        ),
        Body::Bytes("application/wasm"),
        201,
    ),
    with(
        op(
            "POST",
            "/v1/plugins/validate",
            "plugins",
            "A declarative spec's push-time checks, nothing stored: {ok, manifest} or {ok: false, problems: [{path, line, message}]} (operator)",
        ),
        Body::Bytes("application/yaml"),
        200,
    ),
    with(
        op(
            "POST",
            "/v1/plugins/test",
            "plugins",
            "Run one operation of an unpublished spec, capped: each page's request and response (secrets cut out), the records or output, an inferred JSON Schema (operator)",
        ),
        Body::AnyJson,
        200,
    ),
    op(
        "GET",
        "/v1/declarative/schema",
        "plugins",
        "The JSON Schema of declarative specs, for editors",
    ),
    op(
        "GET",
        "/v1/plugins",
        "plugins",
        "Every version of every plugin",
    ),
    op(
        "GET",
        "/v1/plugins/{key}",
        "plugins",
        "The versions of one plugin",
    ),
    op(
        "GET",
        "/v1/plugins/{key}/resolve",
        "plugins",
        "The newest non-deprecated version matching `req`",
    ),
    op(
        "GET",
        "/v1/plugins/{key}/{version}",
        "plugins",
        "A plugin version with its manifest",
    ),
    with(
        op(
            "DELETE",
            "/v1/plugins/{key}/{version}",
            "plugins",
            "Delete a version (operator; 409 while a flow uses it)",
        ),
        Body::None,
        204,
    ),
    with(
        op(
            "POST",
            "/v1/plugins/{key}/{version}/deprecate",
            "plugins",
            "Deprecate a version, or undo it (operator)",
        ),
        Body::Json(schema_of::<p::DeprecateBody>),
        200,
    ),
    op(
        "GET",
        "/v1/plugins/{key}/{version}/env",
        "plugins",
        "A version's environment variables (operator)",
    ),
    with(
        op(
            "PUT",
            "/v1/plugins/{key}/{version}/env/{name}",
            "plugins",
            "Set an environment variable (operator)",
        ),
        Body::Json(schema_of::<p::EnvValue>),
        200,
    ),
    op(
        "DELETE",
        "/v1/plugins/{key}/{version}/env/{name}",
        "plugins",
        "Unset an environment variable (operator)",
    ),
    with(
        op(
            "POST",
            "/v1/invoke",
            "plugins",
            "Run one action by hand (editor)",
        ),
        Body::Json(schema_of::<p::InvokeBody>),
        200,
    ),
    with(
        op(
            "POST",
            "/v1/connections",
            "connections",
            "Create a connection (editor)",
        ),
        Body::Json(schema_of::<c::CreateBody>),
        201,
    ),
    op(
        "GET",
        "/v1/connections",
        "connections",
        "The tenant's connections, secrets redacted",
    ),
    op(
        "GET",
        "/v1/connections/{id}",
        "connections",
        "One connection, secrets redacted",
    ),
    with(
        op(
            "PATCH",
            "/v1/connections/{id}",
            "connections",
            "Change a connection's name or properties (editor)",
        ),
        Body::Json(schema_of::<c::UpdateBody>),
        200,
    ),
    with(
        op(
            "DELETE",
            "/v1/connections/{id}",
            "connections",
            "Delete a connection (editor)",
        ),
        Body::None,
        204,
    ),
    op(
        "POST",
        "/v1/connections/{id}/test",
        "connections",
        "Run the plugin's connection test (editor)",
    ),
    op(
        "POST",
        "/v1/connections/{id}/resume",
        "connections",
        "Resume a paused connection and queue its parked runs (editor)",
    ),
    op(
        "POST",
        "/v1/connections/{id}/oauth/authorize",
        "connections",
        "Start the OAuth authorization code flow (editor)",
    ),
    public(op(
        "GET",
        "/oauth/callback",
        "connections",
        "Where the provider sends the browser back (one-time state)",
    )),
    with(
        op(
            "POST",
            "/v1/tenants",
            "tenants",
            "Create a tenant; its token is in the answer once (operator)",
        ),
        Body::Json(schema_of::<t::CreateBody>),
        201,
    ),
    op("GET", "/v1/tenants", "tenants", "Every tenant (operator)"),
    op(
        "GET",
        "/v1/tenants/{id}",
        "tenants",
        "One tenant (operator)",
    ),
    with(
        op(
            "DELETE",
            "/v1/tenants/{id}",
            "tenants",
            "Delete a tenant (operator)",
        ),
        Body::None,
        204,
    ),
    op(
        "POST",
        "/v1/tenants/{id}/token",
        "tenants",
        "Rotate a tenant's token (operator)",
    ),
    op(
        "GET",
        "/v1/whoami",
        "tenants",
        "Who the token or session acts for",
    ),
    op("GET", "/v1/users", "users", "The tenant's users"),
    with(
        op(
            "POST",
            "/v1/users/invitations",
            "users",
            "Invite someone with a role (owner)",
        ),
        Body::Json(schema_of::<u::InviteBody>),
        201,
    ),
    with(
        op(
            "PATCH",
            "/v1/users/{id}",
            "users",
            "Change a user's role (owner)",
        ),
        Body::Json(schema_of::<u::ChangeBody>),
        200,
    ),
    with(
        op("DELETE", "/v1/users/{id}", "users", "Remove a user (owner)"),
        Body::None,
        204,
    ),
    op(
        "GET",
        "/v1/audit",
        "users",
        "The tenant's audit log, newest first",
    ),
    with(
        op("POST", "/v1/flows", "flows", "Publish a new flow (editor)"),
        Body::Flow,
        201,
    ),
    op("GET", "/v1/flows", "flows", "The tenant's flows"),
    with(
        op(
            "POST",
            "/v1/flows/apply",
            "flows",
            "Publish by name: a new version or a new flow (editor)",
        ),
        Body::Flow,
        200,
    ),
    op(
        "GET",
        "/v1/flows/{id}",
        "flows",
        "One flow with its pinned versions",
    ),
    with(
        op(
            "PUT",
            "/v1/flows/{id}",
            "flows",
            "Publish a new version (editor)",
        ),
        Body::Flow,
        200,
    ),
    with(
        op(
            "DELETE",
            "/v1/flows/{id}",
            "flows",
            "Deactivate and delete a flow (editor)",
        ),
        Body::None,
        204,
    ),
    op(
        "GET",
        "/v1/flows/{id}/versions",
        "flows",
        "Every published version",
    ),
    op(
        "POST",
        "/v1/flows/{id}/upgrade",
        "flows",
        "Move to the newest matching plugin versions, checked (editor)",
    ),
    op(
        "POST",
        "/v1/flows/{id}/activate",
        "flows",
        "Subscribe the webhook or start polling (editor)",
    ),
    op(
        "POST",
        "/v1/flows/{id}/deactivate",
        "flows",
        "Unsubscribe the webhook or stop polling (editor)",
    ),
    op(
        "POST",
        "/v1/flows/{id}/resume",
        "flows",
        "Resume a flow paused because it kept firing for one entity (editor)",
    ),
    op(
        "GET",
        "/v1/flows/{id}/trigger",
        "flows",
        "The webhook URL, or the poll or schedule state",
    ),
    op(
        "GET",
        "/v1/flows/{id}/deliveries",
        "flows",
        "What the trigger's events came to (by path, dropped, coalesced) and the rejected deliveries with their reasons",
    ),
    op(
        "GET",
        "/v1/flows/{id}/samples",
        "flows",
        "The trigger's recent events, newest first (`fetch=true` polls now, nothing committed)",
    ),
    op(
        "GET",
        "/v1/flows/{id}/polls",
        "flows",
        "The trigger's last polls with their HTTP exchanges",
    ),
    with(
        op(
            "POST",
            "/v1/flows/test-step",
            "flows",
            "Run one action step of a draft flow against sample data; no run is created (editor)",
        ),
        Body::AnyJson,
        200,
    ),
    with(
        op(
            "POST",
            "/v1/flows/{id}/run",
            "flows",
            "Run now with the body as the event; wait up to `wait_ms` (editor)",
        ),
        Body::AnyJson,
        200,
    ),
    op(
        "GET",
        "/v1/runs",
        "runs",
        "Run history, newest first (`flow`, `status`, `since`, `until`, `limit`; `before`: the `next` of the previous page)",
    ),
    with(
        op(
            "POST",
            "/v1/runs/replay",
            "runs",
            "Replay the matching dead letters (editor)",
        ),
        Body::Json(schema_of::<r::ReplayMany>),
        200,
    ),
    op(
        "GET",
        "/v1/runs/{id}",
        "runs",
        "One run with every step's input, output and attempts",
    ),
    op(
        "POST",
        "/v1/runs/{id}/replay",
        "runs",
        "Replay from the failed step (editor)",
    ),
    op(
        "POST",
        "/v1/runs/{id}/cancel",
        "runs",
        "Cancel an unfinished run (editor)",
    ),
    op("GET", "/v1/dead-letters", "runs", "Failed runs"),
    // Files: buckets, their objects, uploads in parts, file triggers'
    // ledgers and record jobs.
    op("GET", "/v1/buckets", "files", "The tenant's buckets"),
    with(
        op("POST", "/v1/buckets", "files", "Create a bucket (editor)"),
        Body::AnyJson,
        201,
    ),
    op(
        "GET",
        "/v1/buckets/{bucket}",
        "files",
        "A bucket and its usage",
    ),
    with(
        op(
            "PATCH",
            "/v1/buckets/{bucket}",
            "files",
            "Change a bucket's retention (editor)",
        ),
        Body::AnyJson,
        200,
    ),
    with(
        op(
            "DELETE",
            "/v1/buckets/{bucket}",
            "files",
            "Delete an empty bucket (editor)",
        ),
        Body::None,
        204,
    ),
    op(
        "GET",
        "/v1/buckets/{bucket}/files",
        "files",
        "Files by prefix or glob, in pages",
    ),
    with(
        op(
            "PUT",
            "/v1/buckets/{bucket}/files/{*path}",
            "files",
            "Put a file, streamed (editor)",
        ),
        Body::Bytes("application/octet-stream"),
        201,
    ),
    op(
        "GET",
        "/v1/buckets/{bucket}/files/{*path}",
        "files",
        "A file's bytes (ranges allowed)",
    ),
    with(
        op(
            "DELETE",
            "/v1/buckets/{bucket}/files/{*path}",
            "files",
            "Delete a file (editor)",
        ),
        Body::None,
        204,
    ),
    with(
        op(
            "POST",
            "/v1/buckets/{bucket}/uploads",
            "files",
            "Start an upload in parts (editor)",
        ),
        Body::AnyJson,
        201,
    ),
    op(
        "GET",
        "/v1/buckets/{bucket}/uploads/{id}",
        "files",
        "An upload and its parts",
    ),
    with(
        op(
            "DELETE",
            "/v1/buckets/{bucket}/uploads/{id}",
            "files",
            "Abort an upload (editor)",
        ),
        Body::None,
        204,
    ),
    with(
        op(
            "PUT",
            "/v1/buckets/{bucket}/uploads/{id}/parts/{number}",
            "files",
            "Put one part of an upload (editor)",
        ),
        Body::Bytes("application/octet-stream"),
        200,
    ),
    with(
        op(
            "POST",
            "/v1/buckets/{bucket}/uploads/{id}/complete",
            "files",
            "Join the parts into a file (editor)",
        ),
        Body::None,
        201,
    ),
    op(
        "GET",
        "/v1/flows/{id}/ledger",
        "files",
        "The files a file trigger saw, with their status and run",
    ),
    op("GET", "/v1/runs/{id}/jobs", "files", "A run's record jobs"),
    op(
        "GET",
        "/v1/runs/{id}/jobs/{step}",
        "files",
        "One record job: counts, checkpoint, output files",
    ),
    with(
        op(
            "POST",
            "/v1/runs/{id}/jobs/{step}/replay-failed",
            "files",
            "Run the job's failed records again (editor)",
        ),
        Body::None,
        202,
    ),
    // Topics, streams and batched webhooks: the change APIs partners consume.
    with(
        op("POST", "/v1/topics", "topics", "Create a topic (editor)"),
        Body::AnyJson,
        201,
    ),
    op("GET", "/v1/topics", "topics", "The tenant's topics"),
    op("GET", "/v1/topics/{topic}", "topics", "A topic"),
    with(
        op(
            "DELETE",
            "/v1/topics/{topic}",
            "topics",
            "Delete a topic (editor)",
        ),
        Body::None,
        204,
    ),
    with(
        op(
            "POST",
            "/v1/topics/{topic}/records",
            "topics",
            "Publish change records (editor)",
        ),
        Body::AnyJson,
        201,
    ),
    op(
        "GET",
        "/v1/topics/{topic}/records",
        "topics",
        "Records of a partition from an offset or a time",
    ),
    op(
        "GET",
        "/v1/topics/{topic}/objects",
        "topics",
        "The latest record of each key",
    ),
    op(
        "GET",
        "/v1/topics/{topic}/objects/{key}",
        "topics",
        "One key's latest record (rate-limited per token; ETag)",
    ),
    op(
        "GET",
        "/v1/tenants/{id}/topic-limits",
        "topics",
        "A tenant's limits of the topics' API",
    ),
    with(
        op(
            "PUT",
            "/v1/tenants/{id}/topic-limits",
            "topics",
            "Set a tenant's limits of the topics' API (operator)",
        ),
        Body::AnyJson,
        200,
    ),
    with(
        op(
            "POST",
            "/v1/streams",
            "topics",
            "Create a stream over a topic (editor)",
        ),
        Body::AnyJson,
        201,
    ),
    op("GET", "/v1/streams", "topics", "The tenant's streams"),
    op(
        "GET",
        "/v1/streams/{id}",
        "topics",
        "A stream and its positions",
    ),
    with(
        op(
            "DELETE",
            "/v1/streams/{id}",
            "topics",
            "Delete a stream (editor)",
        ),
        Body::None,
        204,
    ),
    op(
        "GET",
        "/v1/streams/{id}/records",
        "topics",
        "Read a stream under a lease (JSON batches, long poll, or NDJSON)",
    ),
    with(
        op(
            "POST",
            "/v1/streams/{id}/commit",
            "topics",
            "Commit positions (editor)",
        ),
        Body::AnyJson,
        200,
    ),
    with(
        op(
            "POST",
            "/v1/streams/{id}/seek",
            "topics",
            "Move positions to an offset or a time (editor)",
        ),
        Body::AnyJson,
        200,
    ),
    op("GET", "/v1/streams/{id}/stats", "topics", "A stream's lag"),
    with(
        op(
            "POST",
            "/v1/webhook-subscriptions",
            "topics",
            "Subscribe a URL to batched webhooks of a topic (editor)",
        ),
        Body::AnyJson,
        201,
    ),
    op(
        "GET",
        "/v1/webhook-subscriptions",
        "topics",
        "The tenant's batched webhook subscriptions",
    ),
    op(
        "GET",
        "/v1/webhook-subscriptions/{id}",
        "topics",
        "A subscription and its delivery state",
    ),
    with(
        op(
            "DELETE",
            "/v1/webhook-subscriptions/{id}",
            "topics",
            "Delete a subscription (editor)",
        ),
        Body::None,
        204,
    ),
    op(
        "POST",
        "/v1/webhook-subscriptions/{id}/true-up",
        "topics",
        "Send a batch of every key's latest record (editor)",
    ),
    op(
        "POST",
        "/v1/webhook-subscriptions/{id}/rotate-secret",
        "topics",
        "A new signing secret, shown once (editor)",
    ),
    op(
        "POST",
        "/v1/webhook-subscriptions/{id}/enable",
        "topics",
        "Enable a subscription disabled by failures (editor)",
    ),
    op(
        "GET",
        "/v1/webhook-subscriptions/{id}/attempts",
        "topics",
        "Delivery attempts, newest first",
    ),
    op(
        "GET",
        "/v1/webhook-subscriptions/{id}/batches",
        "topics",
        "Batches and their delivery state",
    ),
    op(
        "POST",
        "/v1/webhook-subscriptions/{id}/batches/{batch}/redeliver",
        "topics",
        "Send a batch again (editor)",
    ),
    with(
        op(
            "POST",
            "/v1/webhook-subscriptions/{id}/recover",
            "topics",
            "Send again what failed since a time (editor)",
        ),
        Body::AnyJson,
        200,
    ),
    public(op(
        "GET",
        "/v1/batches/{token}",
        "topics",
        "A batch's changes as NDJSON pages (no token: the URL's token is the credential)",
    )),
    public(with(
        op(
            "POST",
            "/hooks/{token}",
            "hooks",
            "Webhook ingress (any method; the token is the secret part of the URL)",
        ),
        Body::Bytes("application/octet-stream"),
        200,
    )),
];

fn method(text: &str) -> HttpMethod {
    match text {
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "PATCH" => HttpMethod::Patch,
        "DELETE" => HttpMethod::Delete,
        _ => HttpMethod::Get,
    }
}

fn error_response(description: &str) -> utoipa::openapi::response::Response {
    let error = ObjectBuilder::new()
        .property(
            "error",
            ObjectBuilder::new()
                .property("code", ObjectBuilder::new().schema_type(Type::String))
                .property("message", ObjectBuilder::new().schema_type(Type::String))
                .required("code")
                .required("message"),
        )
        .required("error");
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new().schema(Some(error)).build(),
        )
        .build()
}

fn document() -> OpenApi {
    let mut paths = PathsBuilder::new();
    let mut merged: Vec<(String, PathItem)> = Vec::new();
    for o in OPERATIONS {
        // A catch-all segment (`{*path}`, which may hold slashes) is an
        // ordinary path parameter to OpenAPI.
        let path = o.path.replace("{*", "{");
        let mut builder = OperationBuilder::new()
            .tag(o.tag)
            .summary(Some(o.summary))
            .operation_id(Some(format!(
                "{}{}",
                o.method.to_lowercase(),
                o.path.replace(['/', '{', '}', '.', '-'], "_")
            )));
        for name in path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            builder = builder.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        let body = match o.body {
            Body::None => None,
            Body::Json(schema) => Some(("application/json", Some(schema()))),
            Body::AnyJson => Some((
                "application/json",
                Some(ObjectBuilder::new().schema_type(Type::Object).into()),
            )),
            Body::Flow => Some((
                "application/yaml",
                Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Object)
                        .description(Some(
                            "A flow document (name, trigger, conditions, steps) as YAML or JSON; see the README",
                        ))
                        .into(),
                ),
            )),
            Body::Bytes(content_type) => Some((
                content_type,
                Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                            utoipa::openapi::KnownFormat::Binary,
                        )))
                        .into(),
                ),
            )),
        };
        if let Some((content_type, schema)) = body {
            let mut content = ContentBuilder::new();
            if let Some(schema) = schema {
                content = content.schema(Some(schema));
            }
            builder = builder.request_body(Some(
                RequestBodyBuilder::new()
                    .content(content_type, content.build())
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        let ok = ResponseBuilder::new().description("Success");
        let ok = if o.ok == 204 {
            ok.build()
        } else {
            ok.content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
                    .build(),
            )
            .build()
        };
        builder = builder
            .response(o.ok.to_string(), ok)
            .response("400", error_response("The request is malformed or invalid"))
            .response("404", error_response("Not found (or another tenant's)"));
        if o.auth == Auth::Token {
            builder = builder
                .response("401", error_response("No valid token or session"))
                .response("403", error_response("Not allowed for this role"))
                .security(SecurityRequirement::new("bearer", Vec::<String>::new()));
        }
        let item = PathItem::new(method(o.method), builder.build());
        match merged.iter_mut().find(|(p, _)| *p == path) {
            Some((_, existing)) => existing.merge_operations(item),
            None => merged.push((path, item)),
        }
    }
    for (path, item) in merged {
        paths = paths.path(path, item);
    }
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Switchyard")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The admin API of a Switchyard host: plugins, connections, flows, runs, tenants and users. Errors have the shape {\"error\": {\"code\", \"message\"}}.",
                ))
                .license(Some(LicenseBuilder::new().name("Apache-2.0").identifier(Some("Apache-2.0")).build())),
        )
        .paths(paths)
        .tags(Some(
            ["host", "plugins", "connections", "tenants", "users", "flows", "runs", "files", "topics", "hooks"]
                .map(|t| TagBuilder::new().name(t).build()),
        ))
        .build();
    let mut components = doc.components.take().unwrap_or_default();
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    doc.components = Some(components);
    doc
}

static DOCUMENT: LazyLock<Value> =
    LazyLock::new(|| serde_json::to_value(document()).unwrap_or(Value::Null));

/// The document as JSON.
pub fn openapi() -> Value {
    DOCUMENT.clone()
}

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/openapi.json", get(|| async { Json(openapi()) }))
}
