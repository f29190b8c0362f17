//! What a call receives and returns besides plain JSON: the context, events and webhook records.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bindings::exports::switchyard::connector::plugin::{
    PollResult as WitPollResult, WebhookOutcome as WitWebhookOutcome,
    WebhookRequest as WitWebhookRequest, WebhookResponse as WitWebhookResponse,
};
use crate::bindings::switchyard::connector::types as wit;
use crate::error::Error;
use crate::http::find_header;
use crate::webhooks::{self, Scheme};

/// Where a call comes from and what it may use. Secrets are never here: the
/// host adds credentials to outgoing requests itself.
///
/// `Context::default()` (no connection, no variables) is handy in a
/// connector's native unit tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Context {
    /// The connection the call runs for, if it needs one.
    pub connection: Option<Connection>,
    /// The plugin version's environment variables, set by the operator.
    pub env: BTreeMap<String, String>,
    /// A correlation id for logs (a run id, a poll id, an invocation id).
    pub trace_id: String,
}

/// The non-secret half of a connection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Connection {
    /// Stable id of the connection.
    pub id: String,
    /// Its non-secret custom properties, a JSON object.
    pub properties: Value,
}

impl Context {
    /// A non-secret connection property, if the call has a connection and it is set.
    pub fn property(&self, key: &str) -> Option<&Value> {
        self.connection.as_ref()?.properties.get(key)
    }

    /// A string connection property that must be set; an invalid-input error
    /// naming the property otherwise.
    pub fn string_property(&self, key: &str) -> Result<&str, Error> {
        let Some(connection) = &self.connection else {
            return Err(Error::invalid_input(format!(
                "this call needs a connection (for the property `{key}`)"
            )));
        };
        match connection.properties.get(key) {
            Some(Value::String(s)) => Ok(s),
            None | Some(Value::Null) => Err(Error::invalid_input(format!(
                "connection property `{key}` is not set"
            ))),
            Some(_) => Err(Error::invalid_input(format!(
                "connection property `{key}` must be a string"
            ))),
        }
    }

    /// An environment variable of the plugin version.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env.get(key).map(String::as_str)
    }

    /// The id of the connection, if the call has one.
    pub fn connection_id(&self) -> Option<&str> {
        self.connection.as_ref().map(|c| c.id.as_str())
    }

    pub(crate) fn from_wit(ctx: wit::Context) -> Result<Self, Error> {
        let connection = match ctx.connection {
            None => None,
            Some(c) => Some(Connection {
                properties: serde_json::from_str(&c.properties).map_err(|e| {
                    Error::invalid_input(format!("connection properties are not valid JSON: {e}"))
                })?,
                id: c.id,
            }),
        };
        Ok(Self {
            connection,
            env: ctx.env.into_iter().collect(),
            trace_id: ctx.trace_id,
        })
    }
}

/// An event produced by a trigger.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Unique id the host drops duplicate deliveries by (for example a
    /// webhook's event id, or `"{id}:{updated_at}"` for a polled record).
    pub id: String,
    /// The event body, a JSON object; flows read it as `trigger`.
    pub payload: Value,
}

impl Event {
    /// An event with the given id and payload.
    pub fn new(id: impl Into<String>, payload: Value) -> Self {
        Self {
            id: id.into(),
            payload,
        }
    }

    fn into_wit(self) -> wit::Event {
        wit::Event {
            id: self.id,
            payload: self.payload.to_string(),
        }
    }
}

/// What one poll found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PollResult {
    /// New events, oldest first.
    pub events: Vec<Event>,
    /// Where the next poll starts; `None` keeps the previous cursor.
    pub cursor: Option<String>,
}

impl PollResult {
    /// Events and the cursor the next poll starts from.
    pub fn new(events: Vec<Event>, cursor: Option<String>) -> Self {
        Self { events, cursor }
    }

    pub(crate) fn into_wit(self) -> WitPollResult {
        WitPollResult {
            events: self.events.into_iter().map(Event::into_wit).collect(),
            cursor: self.cursor,
        }
    }
}

/// An incoming webhook delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookRequest {
    /// The HTTP method.
    pub method: String,
    /// The query string of the delivery URL, without `?`.
    pub query: String,
    /// The headers, names as sent.
    pub headers: Vec<(String, String)>,
    /// The raw body (signatures are computed over these bytes).
    pub body: Vec<u8>,
}

impl WebhookRequest {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body parsed as JSON; an invalid-input error if it is not.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::invalid_input(format!("webhook body is not the expected JSON: {e}"))
        })
    }

    /// Checks the delivery's signature with the secret connection property
    /// `secret_property` (see [`webhooks::verify`]).
    pub fn verify(&self, scheme: &Scheme, secret_property: &str) -> Result<(), Error> {
        webhooks::verify(scheme, secret_property, &self.headers, &self.body)
    }

    pub(crate) fn from_wit(request: WitWebhookRequest) -> Self {
        Self {
            method: request.method,
            query: request.query,
            headers: request
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            body: request.body,
        }
    }
}

/// A synchronous answer to a webhook sender (handshakes, challenges).
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookResponse {
    /// The HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Vec<u8>,
}

impl WebhookResponse {
    /// An empty response with the given status.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    pub fn json(self, body: &Value) -> Self {
        self.header("Content-Type", "application/json")
            .body(body.to_string())
    }

    fn into_wit(self) -> WitWebhookResponse {
        WitWebhookResponse {
            status: self.status,
            headers: self
                .headers
                .into_iter()
                .map(|(name, value)| wit::Header { name, value })
                .collect(),
            body: self.body,
        }
    }
}

/// What a webhook delivery turned into.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WebhookOutcome {
    /// Zero or more events.
    pub events: Vec<Event>,
    /// A synchronous answer; the host answers 200 with an empty body when `None`.
    pub response: Option<WebhookResponse>,
}

impl WebhookOutcome {
    /// These events, and the host's default answer.
    pub fn new(events: Vec<Event>) -> Self {
        Self {
            events,
            response: None,
        }
    }

    /// Answers the sender with `response`.
    pub fn respond(mut self, response: WebhookResponse) -> Self {
        self.response = Some(response);
        self
    }

    pub(crate) fn into_wit(self) -> WitWebhookOutcome {
        WitWebhookOutcome {
            events: self.events.into_iter().map(Event::into_wit).collect(),
            response: self.response.map(WebhookResponse::into_wit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wit_ctx(properties: &str) -> wit::Context {
        wit::Context {
            connection: Some(wit::Connection {
                id: "c1".into(),
                properties: properties.into(),
            }),
            env: vec![("REGION".into(), "eu".into())],
            trace_id: "t1".into(),
        }
    }

    #[test]
    fn parses_properties_and_reads_them() {
        let ctx = Context::from_wit(wit_ctx(r#"{"base_url":"https://x.test","n":4}"#)).unwrap();
        assert_eq!(ctx.connection_id(), Some("c1"));
        assert_eq!(ctx.string_property("base_url"), Ok("https://x.test"));
        assert_eq!(ctx.property("n"), Some(&json!(4)));
        assert_eq!(ctx.env_var("REGION"), Some("eu"));
        assert!(
            matches!(ctx.string_property("n"), Err(Error::InvalidInput(m)) if m.contains("`n`"))
        );
        assert!(
            matches!(ctx.string_property("gone"), Err(Error::InvalidInput(m)) if m.contains("`gone`"))
        );
    }

    #[test]
    fn refuses_invalid_properties_and_missing_connection() {
        assert!(matches!(
            Context::from_wit(wit_ctx("{nope")),
            Err(Error::InvalidInput(_))
        ));
        let ctx = Context::from_wit(wit::Context {
            connection: None,
            env: vec![],
            trace_id: String::new(),
        })
        .unwrap();
        assert!(ctx.property("x").is_none());
        assert!(matches!(
            ctx.string_property("x"),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn webhook_request_helpers() {
        let req = WebhookRequest {
            method: "POST".into(),
            query: String::new(),
            headers: vec![("X-Event-Id".into(), "e1".into())],
            body: br#"{"id":"7"}"#.to_vec(),
        };
        assert_eq!(req.header("x-event-id"), Some("e1"));
        assert_eq!(req.json::<Value>().unwrap(), json!({ "id": "7" }));
        let bad = WebhookRequest {
            body: b"<xml/>".to_vec(),
            ..req
        };
        assert!(matches!(bad.json::<Value>(), Err(Error::InvalidInput(_))));
    }
}
