//! Conversions between the generated WIT types and the host's own types, so
//! that nothing outside the engine depends on a particular contract version.

use super::bindings::v0_1::{
    exports::switchyard::connector::plugin,
    switchyard::connector::{manifest as wit, types},
};
use super::call::ConnectorError;
use crate::manifest::{
    ActionKind, ApiKeyPlacement, AuthScheme, OAuth2Grant, RateLimit, RawAction, RawManifest,
    RawProperty, RawTrigger, TokenSource, TriggerKind,
};

/// An event as the host keeps it: the id used for de-duplication and the
/// payload as JSON text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub id: String,
    pub payload: String,
}

#[derive(Debug, Clone)]
pub struct PollOutput {
    pub events: Vec<Event>,
    pub cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WebhookInput {
    pub method: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// A synchronous answer to a webhook sender.
#[derive(Debug, Clone)]
pub struct WebhookReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct WebhookOutput {
    pub events: Vec<Event>,
    pub response: Option<WebhookReply>,
}

pub(super) fn error(e: types::ConnectorError) -> ConnectorError {
    match e {
        types::ConnectorError::Transient(message) => ConnectorError::Transient { message },
        types::ConnectorError::RateLimited(r) => ConnectorError::RateLimited {
            retry_after_ms: r.retry_after_ms,
            message: r.message,
        },
        types::ConnectorError::Auth(message) => ConnectorError::Auth { message },
        types::ConnectorError::InvalidInput(message) => ConnectorError::InvalidInput { message },
        types::ConnectorError::Permanent(message) => ConnectorError::Permanent { message },
    }
}

fn events(events: Vec<types::Event>) -> Vec<Event> {
    events
        .into_iter()
        .map(|e| Event {
            id: e.id,
            payload: e.payload,
        })
        .collect()
}

pub(super) fn poll_output(p: plugin::PollResult) -> PollOutput {
    PollOutput {
        events: events(p.events),
        cursor: p.cursor,
    }
}

pub(super) fn webhook_request(r: WebhookInput) -> plugin::WebhookRequest {
    plugin::WebhookRequest {
        method: r.method,
        query: r.query,
        headers: r
            .headers
            .into_iter()
            .map(|(name, value)| types::Header { name, value })
            .collect(),
        body: r.body,
    }
}

pub(super) fn webhook_output(o: plugin::WebhookOutcome) -> WebhookOutput {
    WebhookOutput {
        events: events(o.events),
        response: o.response.map(|r| WebhookReply {
            status: r.status,
            headers: r.headers.into_iter().map(|h| (h.name, h.value)).collect(),
            body: r.body,
        }),
    }
}

pub(super) fn manifest(m: wit::Manifest) -> RawManifest {
    RawManifest {
        key: m.key,
        name: m.name,
        description: m.description,
        version: m.version,
        auth: auth(m.auth),
        connection_properties: m
            .connection_properties
            .into_iter()
            .map(|p| RawProperty {
                key: p.key,
                label: p.label,
                description: p.description,
                required: p.required,
                secret: p.secret,
                schema: p.schema,
            })
            .collect(),
        allowed_hosts: m.allowed_hosts,
        rate_limit: m.rate_limit.map(|r| RateLimit {
            requests: r.requests,
            period_ms: r.period_ms,
            burst: r.burst,
        }),
        triggers: m
            .triggers
            .into_iter()
            .map(|t| RawTrigger {
                key: t.key,
                name: t.name,
                description: t.description,
                kind: match t.kind {
                    wit::TriggerKind::Webhook => TriggerKind::Webhook,
                    wit::TriggerKind::Polling => TriggerKind::Polling,
                },
                params_schema: t.params_schema,
                event_schema: t.event_schema,
                poll_interval_secs: t.poll_interval_secs,
            })
            .collect(),
        actions: m
            .actions
            .into_iter()
            .map(|a| RawAction {
                key: a.key,
                name: a.name,
                description: a.description,
                kind: match a.kind {
                    wit::ActionKind::Create => ActionKind::Create,
                    wit::ActionKind::Update => ActionKind::Update,
                    wit::ActionKind::Search => ActionKind::Search,
                    wit::ActionKind::Other => ActionKind::Other,
                },
                input_schema: a.input_schema,
                output_schema: a.output_schema,
            })
            .collect(),
    }
}

fn auth(a: wit::AuthScheme) -> AuthScheme {
    match a {
        wit::AuthScheme::None => AuthScheme::None,
        wit::AuthScheme::Basic => AuthScheme::Basic,
        wit::AuthScheme::ApiKey(k) => AuthScheme::ApiKey {
            placement: match k.placement {
                wit::ApiKeyPlacement::Header => ApiKeyPlacement::Header,
                wit::ApiKeyPlacement::Query => ApiKeyPlacement::Query,
            },
            name: k.name,
            prefix: k.prefix,
        },
        wit::AuthScheme::Bearer => AuthScheme::Bearer,
        wit::AuthScheme::Oauth2(o) => AuthScheme::Oauth2 {
            grant: match o.grant {
                wit::Oauth2Grant::AuthorizationCode => OAuth2Grant::AuthorizationCode,
                wit::Oauth2Grant::ClientCredentials => OAuth2Grant::ClientCredentials,
            },
            authorize_url: o.authorize_url,
            token_url: o.token_url,
            scopes: o.scopes,
        },
        wit::AuthScheme::Session(s) => AuthScheme::Session {
            login_method: s.login_method,
            login_url: s.login_url,
            login_headers: s.login_headers,
            login_body: s.login_body,
            token_from: match s.token_from {
                wit::TokenSource::JsonPointer(p) => TokenSource::JsonPointer(p),
                wit::TokenSource::Header(h) => TokenSource::Header(h),
            },
            header_name: s.header_name,
            header_value: s.header_value,
        },
        wit::AuthScheme::Digest => AuthScheme::Digest,
    }
}
