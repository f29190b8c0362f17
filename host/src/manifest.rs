//! A connector's manifest as the host keeps it, and the checks a manifest must
//! pass before its plugin is accepted.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sandbox::policy;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub key: String,
    pub name: String,
    pub description: String,
    pub version: semver::Version,
    pub auth: AuthScheme,
    pub connection_properties: Vec<Property>,
    pub allowed_hosts: Vec<String>,
    pub rate_limit: Option<RateLimit>,
    pub triggers: Vec<Trigger>,
    pub actions: Vec<Action>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Property {
    pub key: String,
    pub label: String,
    pub description: String,
    pub required: bool,
    pub secret: bool,
    pub schema: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub requests: u32,
    pub period_ms: u32,
    pub burst: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuthScheme {
    None,
    Basic,
    ApiKey {
        placement: ApiKeyPlacement,
        name: String,
        prefix: String,
    },
    Bearer,
    Oauth2 {
        grant: OAuth2Grant,
        authorize_url: String,
        token_url: String,
        scopes: Vec<String>,
    },
    Session {
        login_method: String,
        login_url: String,
        login_headers: Vec<(String, String)>,
        login_body: Option<String>,
        token_from: TokenSource,
        header_name: String,
        header_value: String,
    },
    Digest,
    /// AWS Signature Version 4 with the connection's `access_key_id` and
    /// `secret_access_key` (and optional `session_token`), signed by the
    /// host. `region` is a region name or `{{property}}`; `service` is the
    /// service's signing name (`s3`). Declared through the 0.2.0 contract's
    /// `auth` export (`wit/connector@0.2.0`).
    #[serde(rename = "aws_sigv4")]
    AwsSigV4 {
        region: String,
        service: String,
    },
}

impl AuthScheme {
    /// The connection properties the host reads for this scheme, and whether
    /// each must be secret.
    pub fn credential_properties(&self) -> &'static [(&'static str, bool)] {
        match self {
            AuthScheme::Basic | AuthScheme::Digest => &[("username", false), ("password", true)],
            AuthScheme::ApiKey { .. } => &[("api_key", true)],
            AuthScheme::Bearer => &[("token", true)],
            AuthScheme::AwsSigV4 { .. } => &[("access_key_id", false), ("secret_access_key", true)],
            AuthScheme::None | AuthScheme::Oauth2 { .. } | AuthScheme::Session { .. } => &[],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiKeyPlacement {
    Header,
    Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuth2Grant {
    AuthorizationCode,
    ClientCredentials,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    JsonPointer(String),
    Header(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    Webhook,
    Polling,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trigger {
    pub key: String,
    pub name: String,
    pub description: String,
    pub kind: TriggerKind,
    pub params_schema: Value,
    pub event_schema: Value,
    pub poll_interval_secs: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Create,
    Update,
    Search,
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    pub key: String,
    pub name: String,
    pub description: String,
    pub kind: ActionKind,
    pub input_schema: Value,
    pub output_schema: Value,
}

/// A manifest as described by the guest, before its schemas are parsed.
/// Every problem found is collected so an author sees them all at once.
pub struct RawManifest {
    pub key: String,
    pub name: String,
    pub description: String,
    pub version: String,
    pub auth: AuthScheme,
    pub connection_properties: Vec<RawProperty>,
    pub allowed_hosts: Vec<String>,
    pub rate_limit: Option<RateLimit>,
    pub triggers: Vec<RawTrigger>,
    pub actions: Vec<RawAction>,
}

pub struct RawProperty {
    pub key: String,
    pub label: String,
    pub description: String,
    pub required: bool,
    pub secret: bool,
    pub schema: String,
}

pub struct RawTrigger {
    pub key: String,
    pub name: String,
    pub description: String,
    pub kind: TriggerKind,
    pub params_schema: String,
    pub event_schema: String,
    pub poll_interval_secs: Option<u32>,
}

pub struct RawAction {
    pub key: String,
    pub name: String,
    pub description: String,
    pub kind: ActionKind,
    pub input_schema: String,
    pub output_schema: String,
}

impl RawManifest {
    /// Checks everything and returns the host's manifest, or every problem.
    pub fn validate(self) -> Result<Manifest, Vec<String>> {
        let mut problems = Vec::new();
        check_key("key", &self.key, &mut problems);
        if self.name.trim().is_empty() {
            problems.push("name: must not be empty".to_string());
        }
        let version = semver::Version::parse(&self.version)
            .map_err(|e| {
                problems.push(format!(
                    "version: `{}` is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.2.0): {e}",
                    self.version
                ))
            })
            .ok();

        let mut seen = HashSet::new();
        let connection_properties = self
            .connection_properties
            .into_iter()
            .map(|p| {
                let at = format!("connection-properties[{}]", p.key);
                check_key(&at, &p.key, &mut problems);
                if !seen.insert(p.key.clone()) {
                    problems.push(format!("{at}: duplicate property key `{}`", p.key));
                }
                Property {
                    schema: parse_schema(&format!("{at}.schema"), &p.schema, &mut problems),
                    key: p.key,
                    label: p.label,
                    description: p.description,
                    required: p.required,
                    secret: p.secret,
                }
            })
            .collect::<Vec<_>>();

        let declared: HashSet<&str> = connection_properties
            .iter()
            .map(|p| p.key.as_str())
            .collect();
        for pattern in &self.allowed_hosts {
            for name in policy::placeholders(pattern) {
                if !declared.contains(name) {
                    problems.push(format!(
                        "allowed-hosts: `{pattern}` uses `{{{name}}}`, which is not a connection property"
                    ));
                }
                if connection_properties
                    .iter()
                    .any(|p| p.key == name && p.secret)
                {
                    problems.push(format!(
                        "allowed-hosts: `{pattern}` uses the secret property `{name}`"
                    ));
                }
            }
            // Fill the placeholders with stand-ins to check the pattern parses:
            // a whole-pattern placeholder holds a URL, one after `:` a port,
            // any other a label.
            let placeholders = policy::placeholders(pattern);
            let whole = placeholders.len() == 1 && *pattern == format!("{{{}}}", placeholders[0]);
            let stand_in = |name: &str| {
                if whole {
                    "https://example.com"
                } else if pattern.contains(&format!(":{{{name}}}")) {
                    "8080"
                } else {
                    "example"
                }
            };
            let example_props: BTreeMap<String, Value> = placeholders
                .iter()
                .map(|n| (n.to_string(), Value::String(stand_in(n).to_string())))
                .collect();
            if placeholders.iter().all(|n| declared.contains(n))
                && let Err(e) = policy::HostPattern::parse(pattern, &example_props)
            {
                problems.push(format!("allowed-hosts: {e}"));
            }
        }
        if let Some(limit) = &self.rate_limit
            && (limit.requests == 0 || limit.period_ms == 0)
        {
            problems.push("rate-limit: requests and period-ms must be positive".to_string());
        }
        if let AuthScheme::ApiKey { name, .. } = &self.auth
            && name.trim().is_empty()
        {
            problems.push("auth: api-key needs a header or parameter name".to_string());
        }
        if let AuthScheme::AwsSigV4 { region, service } = &self.auth {
            problems.extend(aws_sigv4_problems(region, service, &connection_properties));
        }
        // The host reads credentials from fixed property names: they must be
        // declared, and declared secret, so they never reach the guest.
        for (name, secret) in self.auth.credential_properties() {
            match connection_properties.iter().find(|p| p.key == *name) {
                None => problems.push(format!(
                    "auth: the scheme reads the connection property `{name}`, which is not declared"
                )),
                Some(p) if *secret && !p.secret => problems.push(format!(
                    "connection-properties[{name}]: must be marked secret (the host uses it for auth)"
                )),
                Some(_) => {}
            }
        }

        let mut seen = HashSet::new();
        let triggers = self
            .triggers
            .into_iter()
            .map(|t| {
                let at = format!("triggers[{}]", t.key);
                check_key(&at, &t.key, &mut problems);
                if !seen.insert(t.key.clone()) {
                    problems.push(format!("{at}: duplicate trigger key `{}`", t.key));
                }
                if t.poll_interval_secs == Some(0) {
                    problems.push(format!("{at}.poll-interval-secs: must be at least 1"));
                }
                Trigger {
                    params_schema: parse_schema(
                        &format!("{at}.params-schema"),
                        &t.params_schema,
                        &mut problems,
                    ),
                    event_schema: parse_schema(
                        &format!("{at}.event-schema"),
                        &t.event_schema,
                        &mut problems,
                    ),
                    key: t.key,
                    name: t.name,
                    description: t.description,
                    kind: t.kind,
                    poll_interval_secs: t.poll_interval_secs,
                }
            })
            .collect();

        let mut seen = HashSet::new();
        let actions = self
            .actions
            .into_iter()
            .map(|a| {
                let at = format!("actions[{}]", a.key);
                check_key(&at, &a.key, &mut problems);
                if a.key == CUSTOM_API_CALL {
                    problems.push(format!(
                        "{at}: the key is reserved: every connector has a custom API call"
                    ));
                }
                if !seen.insert(a.key.clone()) {
                    problems.push(format!("{at}: duplicate action key `{}`", a.key));
                }
                Action {
                    input_schema: parse_schema(
                        &format!("{at}.input-schema"),
                        &a.input_schema,
                        &mut problems,
                    ),
                    output_schema: parse_schema(
                        &format!("{at}.output-schema"),
                        &a.output_schema,
                        &mut problems,
                    ),
                    key: a.key,
                    name: a.name,
                    description: a.description,
                    kind: a.kind,
                }
            })
            .collect();

        match version {
            Some(version) if problems.is_empty() => Ok(Manifest {
                key: self.key,
                name: self.name,
                description: self.description,
                version,
                auth: self.auth,
                connection_properties,
                allowed_hosts: self.allowed_hosts,
                rate_limit: self.rate_limit,
                triggers,
                actions,
            }),
            _ => Err(problems),
        }
    }
}

/// The action every connector has without declaring it: one request of
/// the caller's choosing to an allowed host, through the connection's
/// sandbox and credentials (the host makes it for a component; the
/// interpreter for a declarative connector).
pub const CUSTOM_API_CALL: &str = "custom-api-call";

/// Adds the custom API call to a manifest's actions (once).
pub fn add_custom_api_call(manifest: &mut Manifest) {
    if manifest.actions.iter().any(|a| a.key == CUSTOM_API_CALL) {
        return;
    }
    manifest.actions.push(Action {
        key: CUSTOM_API_CALL.to_string(),
        name: "Custom API call".to_string(),
        description: "Any request to the connector's API (a path relative to its base, or an \
            absolute URL of an allowed host), with the connection's credentials and limits"
            .to_string(),
        kind: ActionKind::Other,
        input_schema: serde_json::json!({
            "type": "object",
            "required": ["path"],
            "properties": {
                "method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"], "default": "GET"},
                "path": {"type": "string", "minLength": 1, "description": "Relative to the connector's base URL, or an absolute URL of an allowed host"},
                "query": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "body": {"description": "JSON, or text sent as it is"}
            },
            "additionalProperties": false
        }),
        output_schema: serde_json::json!({
            "type": "object",
            "required": ["status", "headers", "body"],
            "properties": {
                "status": {"type": "integer"},
                "headers": {"type": "object"},
                "body": {}
            }
        }),
    });
}

/// What is wrong with an `aws-sigv4` scheme's region and service: the
/// service is a signing name (`s3`), the region a name (`eu-west-1`) or
/// one placeholder of a declared, non-secret property (`{{region}}`).
fn aws_sigv4_problems(region: &str, service: &str, properties: &[Property]) -> Vec<String> {
    let mut problems = Vec::new();
    let name_like = |text: &str| {
        !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    if !name_like(service) {
        problems.push(format!(
            "auth: aws-sigv4 service `{service}` is not a signing name such as `s3`"
        ));
    }
    match region
        .strip_prefix("{{")
        .and_then(|r| r.strip_suffix("}}"))
        .map(str::trim)
    {
        Some(name) => match properties.iter().find(|p| p.key == name) {
            None => problems.push(format!(
                "auth: aws-sigv4 region `{region}` uses `{name}`, which is not a connection property"
            )),
            Some(p) if p.secret => problems.push(format!(
                "auth: aws-sigv4 region `{region}` uses the secret property `{name}`"
            )),
            Some(_) => {}
        },
        None if !name_like(region) => problems.push(format!(
            "auth: aws-sigv4 region `{region}` is neither a region name nor `{{{{property}}}}`"
        )),
        None => {}
    }
    problems
}

/// Keys are what flows and URLs refer to: lowercase, digits, `-` and `_`.
fn check_key(at: &str, key: &str, problems: &mut Vec<String>) {
    let ok = (1..=64).contains(&key.len())
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        problems.push(format!(
            "{at}: key `{key}` must be 1-64 characters of a-z, 0-9, `-` or `_`, starting with a letter"
        ));
    }
}

fn parse_schema(at: &str, text: &str, problems: &mut Vec<String>) -> Value {
    let schema: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            problems.push(format!("{at}: not valid JSON: {e}"));
            return Value::Null;
        }
    };
    if let Err(e) = jsonschema::meta::validate(&schema) {
        problems.push(format!("{at}: not a valid JSON Schema: {e}"));
    } else if let Err(e) = jsonschema::validator_for(&schema) {
        problems.push(format!("{at}: JSON Schema cannot be used: {e}"));
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw() -> RawManifest {
        RawManifest {
            key: "shop".into(),
            name: "Shop".into(),
            description: String::new(),
            version: "1.2.0".into(),
            auth: AuthScheme::None,
            connection_properties: vec![RawProperty {
                key: "shop".into(),
                label: "Shop".into(),
                description: String::new(),
                required: true,
                secret: false,
                schema: r#"{"type":"string"}"#.into(),
            }],
            allowed_hosts: vec!["{shop}.myshopify.com".into()],
            rate_limit: None,
            triggers: vec![],
            actions: vec![RawAction {
                key: "find".into(),
                name: "Find".into(),
                description: String::new(),
                kind: ActionKind::Search,
                input_schema: r#"{"type":"object"}"#.into(),
                output_schema: "{}".into(),
            }],
        }
    }

    #[test]
    fn accepts_a_good_manifest() {
        let m = raw().validate().unwrap();
        assert_eq!(m.version, semver::Version::new(1, 2, 0));
        // A templated port, as in `http://127.0.0.2:{port}`.
        let mut m = raw();
        m.connection_properties.push(RawProperty {
            key: "port".into(),
            ..raw().connection_properties.remove(0)
        });
        m.allowed_hosts.push("http://127.0.0.2:{port}".into());
        m.validate().unwrap();
    }

    #[test]
    fn reports_every_problem_with_its_place() {
        let mut m = raw();
        m.version = "1.0".into();
        m.key = "Bad Key".into();
        m.allowed_hosts.push("{nope}.example.com".into());
        m.actions.push(RawAction {
            input_schema: r#"{"type": 12}"#.into(),
            ..raw().actions.remove(0)
        });
        m.auth = AuthScheme::Bearer;
        m.actions.push(RawAction {
            input_schema: "{oops".into(),
            key: "other".into(),
            ..raw().actions.remove(0)
        });
        let problems = m.validate().unwrap_err();
        let text = problems.join("\n");
        for needle in [
            "version: `1.0` is not a semantic version",
            "key: key `Bad Key`",
            "uses `{nope}`",
            "actions[find]: duplicate action key `find`",
            "actions[find].input-schema: not a valid JSON Schema",
            "actions[other].input-schema: not valid JSON",
            "auth: the scheme reads the connection property `token`, which is not declared",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
        }
    }
}
