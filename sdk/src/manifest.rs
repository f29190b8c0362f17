//! The manifest builder: what a connector tells the host about itself in `describe`.
//!
//! Schemas are `serde_json::Value`s (write them with [`serde_json::json!`]); the
//! small enums and records of the contract are re-exported from the bindings
//! with a few constructors added.

use serde_json::{Value, json};

use crate::bindings::switchyard::connector::manifest as wit;
pub use crate::bindings::switchyard::connector::manifest::{
    ActionKind, ApiKey, ApiKeyPlacement, AuthScheme, Oauth2, Oauth2Grant, RateLimit, Session,
    TokenSource, TriggerKind,
};

/// Everything the host needs to know about a connector, returned by
/// [`Connector::describe`](crate::Connector::describe).
///
/// Build it with [`Manifest::new`] and the chained setters; the fields are
/// public so tests can inspect the result.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Unique key, lowercase letters, digits and `-` (for example `shopify`).
    pub key: String,
    /// Human-readable name.
    pub name: String,
    /// What the connector is for.
    pub description: String,
    /// Semantic version; must equal the version the plugin is uploaded as.
    /// `env!("CARGO_PKG_VERSION")` keeps it in step with the crate.
    pub version: String,
    /// How the host authenticates requests (default [`AuthScheme::None`]).
    pub auth: AuthScheme,
    /// Custom fields of a connection.
    pub connection_properties: Vec<Property>,
    /// URL patterns the connector may call, e.g. `https://{shop}.myshopify.com`.
    pub allowed_hosts: Vec<String>,
    /// Requests allowed per connection, enforced by the host.
    pub rate_limit: Option<RateLimit>,
    /// Events the connector can start flows with.
    pub triggers: Vec<Trigger>,
    /// Steps the connector can perform.
    pub actions: Vec<Action>,
}

impl Manifest {
    /// A manifest with no auth, properties, hosts, triggers or actions yet.
    pub fn new(
        key: impl Into<String>,
        name: impl Into<String>,
        version: impl Into<String>,
    ) -> Self {
        Self {
            key: key.into(),
            name: name.into(),
            description: String::new(),
            version: version.into(),
            auth: AuthScheme::None,
            connection_properties: Vec::new(),
            allowed_hosts: Vec::new(),
            rate_limit: None,
            triggers: Vec::new(),
            actions: Vec::new(),
        }
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets how the host authenticates requests.
    pub fn auth(mut self, auth: AuthScheme) -> Self {
        self.auth = auth;
        self
    }

    /// Adds a connection property.
    pub fn property(mut self, property: Property) -> Self {
        self.connection_properties.push(property);
        self
    }

    /// Adds an allowed host pattern; `{name}` is replaced by the connection
    /// property of that name.
    pub fn allowed_host(mut self, pattern: impl Into<String>) -> Self {
        self.allowed_hosts.push(pattern.into());
        self
    }

    /// Limits outbound requests per connection to `requests` per `period_ms`
    /// milliseconds, with up to `burst` at once.
    pub fn rate_limit(mut self, requests: u32, period_ms: u32, burst: u32) -> Self {
        self.rate_limit = Some(RateLimit::new(requests, period_ms, burst));
        self
    }

    /// Adds a trigger.
    pub fn trigger(mut self, trigger: Trigger) -> Self {
        self.triggers.push(trigger);
        self
    }

    /// Adds an action.
    pub fn action(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }

    /// The record the host receives.
    pub(crate) fn into_wit(self) -> wit::Manifest {
        wit::Manifest {
            key: self.key,
            name: self.name,
            description: self.description,
            version: self.version,
            auth: self.auth,
            connection_properties: self
                .connection_properties
                .into_iter()
                .map(Property::into_wit)
                .collect(),
            allowed_hosts: self.allowed_hosts,
            rate_limit: self.rate_limit,
            triggers: self.triggers.into_iter().map(Trigger::into_wit).collect(),
            actions: self.actions.into_iter().map(Action::into_wit).collect(),
        }
    }
}

/// A custom field of a connection (a shop domain, a location id, an API key).
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    /// Key in the connection's properties object.
    pub key: String,
    /// Label shown to the person creating a connection.
    pub label: String,
    /// Help text.
    pub description: String,
    /// Whether a connection must set it.
    pub required: bool,
    /// Secret values are only used by the host (auth, signature checks) and
    /// never reach the connector.
    pub secret: bool,
    /// JSON Schema of the value (default `{"type": "string"}`).
    pub schema: Value,
}

impl Property {
    /// An optional, non-secret string property.
    pub fn new(key: impl Into<String>, label: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            label: label.into(),
            description: String::new(),
            required: false,
            secret: false,
            schema: json!({ "type": "string" }),
        }
    }

    /// Sets the help text.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Makes the property required.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Marks the property secret: the host keeps it and the connector never sees it.
    pub fn secret(mut self) -> Self {
        self.secret = true;
        self
    }

    /// Sets the JSON Schema of the value.
    pub fn schema(mut self, schema: Value) -> Self {
        self.schema = schema;
        self
    }

    fn into_wit(self) -> wit::Property {
        wit::Property {
            key: self.key,
            label: self.label,
            description: self.description,
            required: self.required,
            secret: self.secret,
            schema: self.schema.to_string(),
        }
    }
}

/// An event source that starts flows: a webhook or a poller.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// Key flows refer to the trigger by.
    pub key: String,
    /// Human-readable name.
    pub name: String,
    /// Help text.
    pub description: String,
    /// Webhook or polling.
    pub kind: TriggerKind,
    /// JSON Schema of the parameters a flow gives the trigger (default `{"type": "object"}`).
    pub params_schema: Value,
    /// JSON Schema of an event's payload (default `{"type": "object"}`).
    pub event_schema: Value,
    /// Default polling interval in seconds (polling triggers).
    pub poll_interval_secs: Option<u32>,
}

impl Trigger {
    /// A trigger of the given kind with object schemas.
    pub fn new(key: impl Into<String>, name: impl Into<String>, kind: TriggerKind) -> Self {
        Self {
            key: key.into(),
            name: name.into(),
            description: String::new(),
            kind,
            params_schema: json!({ "type": "object" }),
            event_schema: json!({ "type": "object" }),
            poll_interval_secs: None,
        }
    }

    /// A trigger fed by deliveries to `handle_webhook`.
    pub fn webhook(key: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(key, name, TriggerKind::Webhook)
    }

    /// A trigger fed by the host calling `poll` on a schedule.
    pub fn polling(key: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(key, name, TriggerKind::Polling)
    }

    /// Sets the help text.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets the JSON Schema of the parameters.
    pub fn params_schema(mut self, schema: Value) -> Self {
        self.params_schema = schema;
        self
    }

    /// Sets the JSON Schema of an event's payload.
    pub fn event_schema(mut self, schema: Value) -> Self {
        self.event_schema = schema;
        self
    }

    /// Sets the default polling interval.
    pub fn poll_interval_secs(mut self, secs: u32) -> Self {
        self.poll_interval_secs = Some(secs);
        self
    }

    fn into_wit(self) -> wit::Trigger {
        wit::Trigger {
            key: self.key,
            name: self.name,
            description: self.description,
            kind: self.kind,
            params_schema: self.params_schema.to_string(),
            event_schema: self.event_schema.to_string(),
            poll_interval_secs: self.poll_interval_secs,
        }
    }
}

/// A step a flow can run: create, update, search or anything else.
#[derive(Debug, Clone, PartialEq)]
pub struct Action {
    /// Key flows refer to the action by.
    pub key: String,
    /// Human-readable name.
    pub name: String,
    /// Help text.
    pub description: String,
    /// What the action does to the third party's data.
    pub kind: ActionKind,
    /// JSON Schema of the input (default `{"type": "object"}`).
    pub input_schema: Value,
    /// JSON Schema of the output (default `{}`: anything).
    pub output_schema: Value,
}

impl Action {
    /// An action of the given kind taking an object and returning anything.
    pub fn new(key: impl Into<String>, name: impl Into<String>, kind: ActionKind) -> Self {
        Self {
            key: key.into(),
            name: name.into(),
            description: String::new(),
            kind,
            input_schema: json!({ "type": "object" }),
            output_schema: json!({}),
        }
    }

    /// An action that creates a record.
    pub fn create(key: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(key, name, ActionKind::Create)
    }

    /// An action that changes a record.
    pub fn update(key: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(key, name, ActionKind::Update)
    }

    /// An action that looks records up without changing anything.
    pub fn search(key: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(key, name, ActionKind::Search)
    }

    /// Any other action.
    pub fn other(key: impl Into<String>, name: impl Into<String>) -> Self {
        Self::new(key, name, ActionKind::Other)
    }

    /// Sets the help text.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Sets the JSON Schema of the input.
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.input_schema = schema;
        self
    }

    /// Sets the JSON Schema of the output.
    pub fn output_schema(mut self, schema: Value) -> Self {
        self.output_schema = schema;
        self
    }

    fn into_wit(self) -> wit::Action {
        wit::Action {
            key: self.key,
            name: self.name,
            description: self.description,
            kind: self.kind,
            input_schema: self.input_schema.to_string(),
            output_schema: self.output_schema.to_string(),
        }
    }
}

impl AuthScheme {
    /// An API key (the `api_key` property) in the header `name`, after `prefix`
    /// (often empty, sometimes `Token `).
    pub fn api_key_header(name: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self::ApiKey(ApiKey {
            placement: ApiKeyPlacement::Header,
            name: name.into(),
            prefix: prefix.into(),
        })
    }

    /// An API key (the `api_key` property) in the query parameter `name`.
    pub fn api_key_query(name: impl Into<String>) -> Self {
        Self::ApiKey(ApiKey {
            placement: ApiKeyPlacement::Query,
            name: name.into(),
            prefix: String::new(),
        })
    }

    /// OAuth 2.0 authorization code grant; the host runs the redirect and
    /// keeps and refreshes the tokens.
    pub fn oauth2_authorization_code(
        authorize_url: impl Into<String>,
        token_url: impl Into<String>,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self::Oauth2(Oauth2 {
            grant: Oauth2Grant::AuthorizationCode,
            authorize_url: authorize_url.into(),
            token_url: token_url.into(),
            scopes: scopes.into_iter().map(Into::into).collect(),
        })
    }

    /// OAuth 2.0 client credentials grant.
    pub fn oauth2_client_credentials(
        token_url: impl Into<String>,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self::Oauth2(Oauth2 {
            grant: Oauth2Grant::ClientCredentials,
            authorize_url: String::new(),
            token_url: token_url.into(),
            scopes: scopes.into_iter().map(Into::into).collect(),
        })
    }

    /// A session login: the host runs `session`'s login request, keeps the
    /// token it answers with and sends it on every request; it logs in
    /// again once when a request gets a 401.
    ///
    /// ```
    /// use switchyard_sdk::{AuthScheme, Session, TokenSource};
    ///
    /// let auth = AuthScheme::session(
    ///     Session::login("POST", "{{base_url}}/api/login", TokenSource::json_pointer("/data/token"))
    ///         .login_header("Content-Type", "application/json")
    ///         .login_body(r#"{"user": "{{username}}", "password": "{{password}}"}"#)
    ///         .send_as("X-Session-Token", "{{token}}"),
    /// );
    /// assert!(matches!(auth, AuthScheme::Session(_)));
    /// ```
    pub fn session(session: Session) -> Self {
        Self::Session(session)
    }
}

impl Session {
    /// A login request of `method` to `url` (`{{name}}` stands for the
    /// connection property `name`), no headers, no body, the token taken
    /// from `token_from` and sent as `Authorization: Bearer {{token}}`.
    pub fn login(
        method: impl Into<String>,
        url: impl Into<String>,
        token_from: TokenSource,
    ) -> Self {
        Self {
            login_method: method.into(),
            login_url: url.into(),
            login_headers: Vec::new(),
            login_body: None,
            token_from,
            header_name: "Authorization".into(),
            header_value: "Bearer {{token}}".into(),
        }
    }

    /// Adds a header to the login request (`{{name}}` is replaced as is,
    /// without escaping). The host sets no `Content-Type` of its own: add
    /// the body's here.
    pub fn login_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.login_headers.push((name.into(), value.into()));
        self
    }

    /// Sets the login request's body. A body that starts (after white
    /// space) with `{` or `[` is JSON: each `{{name}}` is replaced by the
    /// value escaped as the inside of a JSON string, so write the quotes
    /// around it (`"{{password}}"`). Any other body is a form
    /// (`user={{username}}&password={{password}}`): values are URL-encoded.
    pub fn login_body(mut self, body: impl Into<String>) -> Self {
        self.login_body = Some(body.into());
        self
    }

    /// Sends the token in the header `name` with `value`, where `{{token}}`
    /// stands for the token (`Bearer {{token}}`, or `{{token}}` alone).
    pub fn send_as(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.header_name = name.into();
        self.header_value = value.into();
        self
    }
}

impl TokenSource {
    /// The string or number at an RFC 6901 JSON pointer into the login
    /// answer's body (`/data/token`; a pointer starts with `/`).
    pub fn json_pointer(pointer: impl Into<String>) -> Self {
        Self::JsonPointer(pointer.into())
    }

    /// The whole body, for a login that answers a bare JSON string
    /// (`"3f1c..."`): the empty JSON pointer.
    pub fn whole_body() -> Self {
        Self::JsonPointer(String::new())
    }

    /// The value of a header of the login answer.
    pub fn header(name: impl Into<String>) -> Self {
        Self::Header(name.into())
    }
}

impl RateLimit {
    /// `requests` per `period_ms` milliseconds, with up to `burst` at once.
    pub fn new(requests: u32, period_ms: u32, burst: u32) -> Self {
        Self {
            requests,
            period_ms,
            burst,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Manifest {
        Manifest::new("example", "Example", "0.1.0")
            .description("An example")
            .auth(AuthScheme::api_key_header("X-Api-Key", ""))
            .property(
                Property::new("base_url", "Base URL")
                    .required()
                    .schema(json!({ "type": "string", "format": "uri" })),
            )
            .property(Property::new("api_key", "API key").required().secret())
            .allowed_host("{base_url}")
            .rate_limit(10, 1000, 10)
            .trigger(Trigger::polling("new-item", "New item").poll_interval_secs(60))
            .trigger(Trigger::webhook("item-event", "Item event"))
            .action(
                Action::other("echo", "Echo")
                    .output_schema(json!({ "type": "object", "required": ["echo"] })),
            )
    }

    #[test]
    fn builder_fills_every_field() {
        let m = example();
        assert_eq!((m.key.as_str(), m.version.as_str()), ("example", "0.1.0"));
        assert_eq!(m.description, "An example");
        assert_eq!(m.connection_properties.len(), 2);
        assert!(m.connection_properties[1].secret && m.connection_properties[1].required);
        assert!(!m.connection_properties[0].secret);
        assert_eq!(m.allowed_hosts, ["{base_url}"]);
        assert_eq!(m.rate_limit, Some(RateLimit::new(10, 1000, 10)));
        assert_eq!(m.triggers[0].kind, TriggerKind::Polling);
        assert_eq!(m.triggers[0].poll_interval_secs, Some(60));
        assert_eq!(m.triggers[1].kind, TriggerKind::Webhook);
        assert_eq!(m.actions[0].kind, ActionKind::Other);
    }

    #[test]
    fn converts_schemas_to_json_text() {
        let wit = example().into_wit();
        assert_eq!(
            wit.auth,
            AuthScheme::ApiKey(ApiKey {
                placement: ApiKeyPlacement::Header,
                name: "X-Api-Key".into(),
                prefix: String::new(),
            })
        );
        let schema: Value = serde_json::from_str(&wit.connection_properties[0].schema).unwrap();
        assert_eq!(schema, json!({ "type": "string", "format": "uri" }));
        assert_eq!(wit.connection_properties[1].schema, r#"{"type":"string"}"#);
        assert_eq!(wit.triggers[0].params_schema, r#"{"type":"object"}"#);
        assert_eq!(wit.actions[0].input_schema, r#"{"type":"object"}"#);
        // Compared as values: key order depends on serde_json's features.
        let output: Value = serde_json::from_str(&wit.actions[0].output_schema).unwrap();
        assert_eq!(output, json!({ "type": "object", "required": ["echo"] }));
    }

    #[test]
    fn session_logins_reach_the_host_as_declared() {
        let wit = Manifest::new("k", "K", "1.0.0")
            .auth(AuthScheme::session(
                Session::login("POST", "{{base_url}}/login", TokenSource::whole_body())
                    .login_header("Content-Type", "application/x-www-form-urlencoded")
                    .login_body("user={{username}}&password={{password}}")
                    .send_as("X-Session", "{{token}}"),
            ))
            .into_wit();
        assert_eq!(
            wit.auth,
            AuthScheme::Session(Session {
                login_method: "POST".into(),
                login_url: "{{base_url}}/login".into(),
                login_headers: vec![(
                    "Content-Type".into(),
                    "application/x-www-form-urlencoded".into()
                )],
                login_body: Some("user={{username}}&password={{password}}".into()),
                token_from: TokenSource::JsonPointer(String::new()),
                header_name: "X-Session".into(),
                header_value: "{{token}}".into(),
            })
        );
        // The defaults: no headers, no body, a bearer token.
        let plain = Session::login(
            "GET",
            "https://api.test/token",
            TokenSource::header("X-Token"),
        );
        assert_eq!(plain.login_headers, []);
        assert_eq!(plain.login_body, None);
        assert_eq!(plain.token_from, TokenSource::Header("X-Token".into()));
        assert_eq!(
            (plain.header_name.as_str(), plain.header_value.as_str()),
            ("Authorization", "Bearer {{token}}")
        );
        assert_eq!(
            TokenSource::json_pointer("/data/token"),
            TokenSource::JsonPointer("/data/token".into())
        );
    }

    #[test]
    fn defaults_are_empty() {
        let m = Manifest::new("k", "K", "1.0.0");
        assert_eq!(m.auth, AuthScheme::None);
        assert!(m.connection_properties.is_empty() && m.allowed_hosts.is_empty());
        assert!(m.rate_limit.is_none() && m.triggers.is_empty() && m.actions.is_empty());
        assert_eq!(Action::search("s", "S").output_schema, json!({}));
    }
}
