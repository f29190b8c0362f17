//! Declarative connectors at push: a YAML or JSON spec is read, checked
//! against the spec's JSON Schema (`docs/declarative.schema.json`) and then
//! against what a schema cannot say (templates that compile and see only
//! what they may, no secret in a template, URLs that cannot leave the
//! allowed hosts, pagination that stops, a signature secret that is
//! secret), every problem placed by its path in the spec and its line;
//! shorthands are expanded into the canonical form the interpreter runs
//! (`declarative_spec`), and the manifest is derived from it.
//!
//! Nothing here runs a spec: the interpreter component does, in the
//! sandbox like any connector.

pub mod locate;

use std::{collections::BTreeMap, fmt, sync::LazyLock};

pub use declarative_spec::{CUSTOM_API_CALL, Envelope, FORMAT, Limits, Spec};
use declarative_spec::{
    Operation, Pagination, PaginationKind, Request, Rule, StopRule, TriggerKind,
};
use minijinja::Environment;
use serde::Serialize;
use serde_json::{Value, json};

use crate::{
    manifest::{
        ActionKind, AuthScheme, Manifest, RateLimit, RawAction, RawManifest, RawProperty,
        RawTrigger,
    },
    sandbox::policy::{self, HostPattern},
};

/// The spec's JSON Schema, which this module checks first.
pub const SCHEMA: &str = include_str!("../../../docs/declarative.schema.json");

static VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(SCHEMA).expect("the spec's JSON Schema is JSON");
    jsonschema::validator_for(&schema).expect("the spec's JSON Schema compiles")
});

/// The template language of specs: the flows' (minijinja), with the
/// filters the interpreter adds. Only syntax and names are checked here.
static TEMPLATES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.add_filter("segment", |s: String| s);
    env.add_filter("urlencode", |s: String| s);
    env
});

/// The names a spec template may start with.
const SCOPE: &[&str] = &[
    "connection",
    "env",
    "input",
    "params",
    "idempotency_key",
    "cursor",
    "since",
    "page",
    "response",
    "records",
    "record",
    "request",
    "target_url",
    "state",
];

/// minijinja's own globals, which templates may call.
const GLOBALS: &[&str] = &[
    "range",
    "dict",
    "namespace",
    "debug",
    "lipsum",
    "cycler",
    "joiner",
];

/// One thing wrong with a spec, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// JSON pointer into the spec as written (`/actions/get-order/request/url`).
    pub path: String,
    /// 1-based line in the text.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        write!(f, "line {} ({path}): {}", self.line, self.message)
    }
}

/// A spec that passed every check.
#[derive(Debug, Clone)]
pub struct Declared {
    pub spec: Spec,
    pub manifest: Manifest,
    /// The [`Envelope`] the interpreter gets, as JSON.
    pub canonical: String,
}

/// Whether an upload is a spec rather than a component: text that names
/// the `declarative` format (anything else is judged as a component, and
/// refused as one if it is not).
pub fn is_spec(bytes: &[u8]) -> bool {
    !bytes.starts_with(b"\0asm")
        && std::str::from_utf8(bytes).is_ok_and(|text| text.contains("declarative"))
}

/// The envelope of a stored spec with a live test's caps.
pub fn with_limits(spec: &Spec, limits: Limits) -> String {
    serde_json::to_string(&Envelope {
        spec: spec.clone(),
        limits: Some(limits),
    })
    .unwrap_or_default()
}

/// Reads and checks a spec: the canonical form and its manifest, or every
/// problem found, each placed.
pub fn parse(text: &str) -> Result<Declared, Vec<Problem>> {
    let index = locate::Index::new(text);
    let place = |path: String, message: String| Problem {
        line: index.line(&path),
        path,
        message,
    };
    let mut value = read(text)?;
    // `declarative: 0.1` unquoted is a YAML number.
    if value.get("declarative").and_then(Value::as_f64) == Some(0.1) {
        value["declarative"] = json!(FORMAT);
    }
    let problems: Vec<Problem> = VALIDATOR
        .iter_errors(&value)
        .map(|e| {
            let mut path = e.instance_path().to_string();
            let message = match e.kind() {
                jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected }
                    if unexpected.len() == 1 =>
                {
                    path.push('/');
                    path.push_str(&locate_escape(&unexpected[0]));
                    format!("unknown key `{}`", unexpected[0])
                }
                jsonschema::error::ValidationErrorKind::FalseSchema => {
                    "this key does not belong in this kind of trigger".to_string()
                }
                jsonschema::error::ValidationErrorKind::OneOfNotValid { .. }
                | jsonschema::error::ValidationErrorKind::OneOfMultipleValid { .. }
                    if path.starts_with("/actions/") =>
                {
                    "an action has either one request (`request`, with `responses`, `records`, \
                     `pagination`, `output`) or `cases`, not both"
                        .to_string()
                }
                _ => e.to_string(),
            };
            (path, message)
        })
        .map(|(path, message)| place(path, message))
        .collect();
    if !problems.is_empty() {
        return Err(dedup(problems));
    }
    let rewrites = desugar(&mut value);
    let spec: Spec = serde_json::from_value(value)
        .map_err(|e| vec![place(String::new(), format!("unreadable spec: {e}"))])?;
    let mut checker = Checker::new(&spec);
    checker.all();
    let mut problems: Vec<Problem> = checker
        .problems
        .into_iter()
        .map(|(path, message)| place(authored(&path, &rewrites), message))
        .collect();
    let manifest = match raw_manifest(&spec) {
        Ok(raw) => match raw.validate() {
            Ok(manifest) => Some(manifest),
            Err(found) => {
                problems.extend(found.iter().map(|p| {
                    let (path, message) = manifest_place(p);
                    place(path, message)
                }));
                None
            }
        },
        Err((path, message)) => {
            problems.push(place(path, message));
            None
        }
    };
    match manifest {
        Some(manifest) if problems.is_empty() => {
            let canonical = serde_json::to_string(&Envelope {
                spec: spec.clone(),
                limits: None,
            })
            .map_err(|e| vec![place(String::new(), e.to_string())])?;
            Ok(Declared {
                spec,
                manifest,
                canonical,
            })
        }
        _ => Err(dedup(problems)),
    }
}

fn dedup(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by(|a, b| a.line.cmp(&b.line).then(a.path.cmp(&b.path)));
    problems.dedup();
    problems
}

fn locate_escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// The text as a JSON value: JSON when it starts with `{`, else YAML.
fn read(text: &str) -> Result<Value, Vec<Problem>> {
    let problem = |line: usize, message: String| {
        vec![Problem {
            path: String::new(),
            line,
            message,
        }]
    };
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| problem(e.line(), format!("not valid JSON: {e}")))
    } else {
        let value: Value = serde_yaml_ng::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or(1);
            problem(line, format!("not valid YAML: {e}"))
        })?;
        if !value.is_object() {
            return Err(problem(1, "a spec is a mapping of keys".to_string()));
        }
        Ok(value)
    }
}

/// Expands the shorthands in place; returns how canonical paths map back
/// to the paths as written (canonical prefix, written prefix).
fn desugar(value: &mut Value) -> Vec<(String, String)> {
    let mut rewrites = Vec::new();
    normalise_rules(value);
    const OPERATION: [&str; 6] = [
        "request",
        "responses",
        "records",
        "record",
        "pagination",
        "output",
    ];
    if let Some(actions) = value.get_mut("actions").and_then(Value::as_object_mut) {
        for (key, action) in actions.iter_mut() {
            let Some(action) = action.as_object_mut() else {
                continue;
            };
            if action.contains_key("cases") {
                continue;
            }
            let mut case = serde_json::Map::new();
            for field in OPERATION {
                if let Some(v) = action.remove(field) {
                    case.insert(field.to_string(), v);
                }
            }
            action.insert("cases".into(), json!([case]));
            rewrites.push((format!("/actions/{key}/cases/0"), format!("/actions/{key}")));
        }
    }
    if let Some(triggers) = value.get_mut("triggers").and_then(Value::as_object_mut) {
        for (key, trigger) in triggers.iter_mut() {
            let Some(trigger) = trigger.as_object_mut() else {
                continue;
            };
            if trigger.get("kind") != Some(&json!("polling")) {
                continue;
            }
            let mut poll = serde_json::Map::new();
            for field in ["request", "responses", "records", "pagination"] {
                if let Some(v) = trigger.remove(field) {
                    poll.insert(field.to_string(), v);
                }
            }
            trigger.insert("poll".into(), Value::Object(poll));
            rewrites.push((format!("/triggers/{key}/poll"), format!("/triggers/{key}")));
        }
    }
    rewrites
}

/// Every rule's `status` as inclusive ranges: `404` → `[[404, 404]]`,
/// `"5xx"` → `[[500, 599]]`, `"500-504"` → `[[500, 504]]`.
fn normalise_rules(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if key == "responses"
                    && let Some(rules) = item.as_array_mut()
                {
                    for rule in rules {
                        if let Some(status) = rule.get_mut("status") {
                            *status = json!(ranges(status));
                        }
                    }
                } else {
                    normalise_rules(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise_rules),
        _ => {}
    }
}

fn ranges(status: &Value) -> Vec<[u16; 2]> {
    match status {
        Value::Array(items) => items.iter().flat_map(ranges).collect(),
        Value::Number(n) => n
            .as_u64()
            .map(|n| vec![[n as u16, n as u16]])
            .unwrap_or_default(),
        Value::String(s) => {
            if let Some(class) = s.strip_suffix("xx").and_then(|c| c.parse::<u16>().ok()) {
                vec![[class * 100, class * 100 + 99]]
            } else if let Some((lo, hi)) = s.split_once('-') {
                match (lo.parse(), hi.parse()) {
                    (Ok(lo), Ok(hi)) => vec![[lo, hi]],
                    _ => Vec::new(),
                }
            } else {
                s.parse().map(|n| vec![[n, n]]).unwrap_or_default()
            }
        }
        _ => Vec::new(),
    }
}

/// A canonical path as the author wrote it.
fn authored(path: &str, rewrites: &[(String, String)]) -> String {
    for (canonical, written) in rewrites {
        if let Some(rest) = path.strip_prefix(canonical.as_str())
            && (rest.is_empty() || rest.starts_with('/'))
        {
            return format!("{written}{rest}");
        }
    }
    path.to_string()
}

fn single_expression(text: &str) -> Option<&str> {
    let inner = text.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// The checks a JSON Schema cannot make, on the canonical spec; problems
/// carry canonical paths.
struct Checker<'a> {
    spec: &'a Spec,
    problems: Vec<(String, String)>,
}

impl<'a> Checker<'a> {
    fn new(spec: &'a Spec) -> Self {
        Checker {
            spec,
            problems: Vec::new(),
        }
    }

    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push((path.into(), message.into()));
    }

    fn all(&mut self) {
        let spec = self.spec;
        if let Some(base) = &spec.base_url {
            self.template("/base_url", base);
            self.url("/base_url", base, true);
        }
        self.values("/headers", &json!(spec.headers));
        self.rules("/responses", &spec.responses);
        if let Some(test) = &spec.test {
            self.operation("/test", test, false);
        }
        for (key, action) in &spec.actions {
            let at = format!("/actions/{key}");
            if key == CUSTOM_API_CALL {
                self.problem(
                    &at,
                    format!("`{CUSTOM_API_CALL}` is reserved: every connector has it"),
                );
            }
            let last = action.cases.len().saturating_sub(1);
            for (i, case) in action.cases.iter().enumerate() {
                let case_at = format!("{at}/cases/{i}");
                if case.when.is_none() && i < last {
                    self.problem(
                        format!("{case_at}/when"),
                        "only the last case may go without `when`: the cases after it would never run",
                    );
                }
                self.operation(&case_at, case, true);
            }
        }
        for (key, trigger) in &spec.triggers {
            let at = format!("/triggers/{key}");
            self.template(&format!("{at}/event_id"), &trigger.event_id);
            if let Some(event) = &trigger.event {
                self.values(&format!("{at}/event"), event);
            }
            if let Some(filter) = &trigger.filter {
                self.expression(&format!("{at}/filter"), filter);
            }
            match trigger.kind {
                TriggerKind::Polling => {
                    if let Some(poll) = &trigger.poll {
                        self.operation(&format!("{at}/poll"), poll, false);
                        if poll.records.is_none() {
                            self.problem(
                                format!("{at}/poll"),
                                "a polling trigger needs `records`: where the records are in the body",
                            );
                        }
                    }
                    if let Some(cursor) = &trigger.cursor {
                        self.template(&format!("{at}/cursor/value"), &cursor.value);
                        if let Some(id) = &cursor.id {
                            self.template(&format!("{at}/cursor/id"), id);
                        }
                    }
                    if let Some(seed) = &trigger.seed {
                        self.template(&format!("{at}/seed/from"), &seed.from);
                        let from = seed.from.trim();
                        if !is_template(from) && !["now", "newest", "beginning"].contains(&from) {
                            self.problem(
                                format!("{at}/seed/from"),
                                format!("`{from}` is not now, newest or beginning"),
                            );
                        }
                        if from == "newest" && (seed.request.is_none() || trigger.cursor.is_none())
                        {
                            self.problem(
                                format!("{at}/seed"),
                                "`from: newest` needs a `request` and the trigger's `cursor`",
                            );
                        }
                        if from == "now"
                            && trigger
                                .cursor
                                .as_ref()
                                .is_none_or(|c| c.kind != declarative_spec::CursorType::Datetime)
                        {
                            self.problem(
                                format!("{at}/seed/from"),
                                "`from: now` needs a date-time `cursor`",
                            );
                        }
                        if let Some(op) = &seed.request {
                            self.operation(&format!("{at}/seed/request"), op, false);
                        }
                    }
                }
                TriggerKind::Webhook => {
                    if let Some(verify) = &trigger.verify {
                        let secret = self.spec.properties.get(&verify.secret);
                        if !secret.is_some_and(|p| p.secret) {
                            self.problem(
                                format!("{at}/verify/secret"),
                                format!(
                                    "`{}` must be a secret connection property (the host checks \
                                     signatures with it; the spec never sees it)",
                                    verify.secret
                                ),
                            );
                        }
                        if verify.scheme == "hmac_sha256" && verify.header.is_none() {
                            self.problem(
                                format!("{at}/verify"),
                                "`hmac_sha256` needs the signature `header`",
                            );
                        }
                    }
                    for (name, expr) in [("ignore", &trigger.ignore), ("skip", &trigger.skip)] {
                        if let Some(expr) = expr {
                            self.expression(&format!("{at}/{name}"), expr);
                        }
                    }
                    for (i, check) in trigger.checks.iter().enumerate() {
                        self.expression(&format!("{at}/checks/{i}/check"), &check.check);
                    }
                    if let Some(reply) = &trigger.reply {
                        self.values(&format!("{at}/reply/headers"), &json!(reply.headers));
                        if let Some(body) = &reply.body {
                            self.values(&format!("{at}/reply/body"), body);
                        }
                    }
                    for (name, sub) in [
                        ("subscribe", &trigger.subscribe),
                        ("unsubscribe", &trigger.unsubscribe),
                    ] {
                        let Some(sub) = sub else { continue };
                        let sub_at = format!("{at}/{name}");
                        if let Some(when) = &sub.when {
                            self.expression(&format!("{sub_at}/when"), when);
                        }
                        if let Some(request) = &sub.request {
                            self.request(&format!("{sub_at}/request"), request);
                        }
                        self.rules(&format!("{sub_at}/responses"), &sub.responses);
                        for (field, text) in [("state", &sub.state), ("log", &sub.log)] {
                            if let Some(text) = text {
                                self.template(&format!("{sub_at}/{field}"), text);
                            }
                        }
                    }
                }
            }
        }
    }

    fn operation(&mut self, at: &str, op: &Operation, is_action: bool) {
        if let Some(when) = &op.when {
            self.expression(&format!("{at}/when"), when);
        }
        self.request(&format!("{at}/request"), &op.request);
        self.rules(&format!("{at}/responses"), &op.responses);
        if let Some(record) = &op.record {
            self.values(&format!("{at}/record"), record);
        }
        if let Some(output) = &op.output {
            if !is_action {
                self.problem(format!("{at}/output"), "only an action has an output");
            }
            self.values(&format!("{at}/output"), output);
        }
        if let Some(p) = &op.pagination {
            self.pagination(&format!("{at}/pagination"), p, op.records.is_some());
        }
    }

    fn request(&mut self, at: &str, request: &Request) {
        self.template(&format!("{at}/url"), &request.url);
        self.url(&format!("{at}/url"), &request.url, false);
        self.values(&format!("{at}/query"), &json!(request.query));
        self.values(&format!("{at}/headers"), &json!(request.headers));
        let bodies = [
            request.json.is_some(),
            request.form.is_some(),
            request.body.is_some(),
        ];
        if bodies.iter().filter(|b| **b).count() > 1 {
            self.problem(at, "a request has one body: `json`, `form` or `body`");
        }
        if let Some(body) = &request.json {
            self.values(&format!("{at}/json"), body);
        }
        if let Some(form) = &request.form {
            self.values(&format!("{at}/form"), &json!(form));
        }
        if let Some(body) = &request.body {
            self.template(&format!("{at}/body"), body);
        }
    }

    fn rules(&mut self, at: &str, rules: &[Rule]) {
        for (i, rule) in rules.iter().enumerate() {
            let rule_at = format!("{at}/{i}");
            let outcomes = [rule.error.is_some(), rule.output.is_some(), rule.ok]
                .iter()
                .filter(|o| **o)
                .count();
            if outcomes != 1 {
                self.problem(
                    &rule_at,
                    "a rule says one thing: `error` (a kind), `output` or `ok: true`",
                );
            }
            if rule.status.is_empty() && rule.when.is_none() {
                self.problem(&rule_at, "a rule needs `status` or `when` (or both)");
            }
            if rule.status.iter().any(|[lo, hi]| lo > hi) {
                self.problem(format!("{rule_at}/status"), "a range goes from low to high");
            }
            if let Some(when) = &rule.when {
                self.expression(&format!("{rule_at}/when"), when);
            }
            for (field, text) in [
                ("message", &rule.message),
                ("retry_after_ms", &rule.retry_after_ms),
            ] {
                if let Some(text) = text {
                    self.template(&format!("{rule_at}/{field}"), text);
                }
            }
            if let Some(output) = &rule.output {
                self.values(&format!("{rule_at}/output"), output);
            }
        }
    }

    fn pagination(&mut self, at: &str, p: &Pagination, has_records: bool) {
        let stops_on_data = p.stop.contains(&StopRule::EmptyPage)
            || p.stop.contains(&StopRule::ShortPage)
            || p.total_pages.is_some();
        match p.kind {
            PaginationKind::PageNumber | PaginationKind::Offset if !stops_on_data => {
                self.problem(
                    at,
                    "this pagination has no stop rule: give `total_pages`, or `stop: [empty_page]` \
                     or `[short_page]` (with `size`); `max_pages` only caps a poll",
                );
            }
            PaginationKind::Cursor if p.cursor.is_none() => self.problem(
                at,
                "`type: cursor` needs `cursor`: where the next cursor is",
            ),
            PaginationKind::NextUrl if p.url.is_none() => self.problem(
                at,
                "`type: next_url` needs `url`: where the next page's URL is",
            ),
            _ => {}
        }
        if p.stop.contains(&StopRule::ShortPage) && p.size.is_none() {
            self.problem(at, "`short_page` needs `size`");
        }
        let needs_records = p.kind == PaginationKind::Offset
            || p.stop.contains(&StopRule::EmptyPage)
            || p.stop.contains(&StopRule::ShortPage);
        if needs_records && !has_records {
            self.problem(
                at,
                "this pagination counts records: the operation needs `records`",
            );
        }
        for (field, text) in [
            ("cursor", &p.cursor),
            ("url", &p.url),
            ("total_pages", &p.total_pages),
        ] {
            if let Some(text) = text {
                self.template(&format!("{at}/{field}"), text);
            }
        }
        for (field, value) in [("size", &p.size), ("max_pages", &p.max_pages)] {
            if let Some(value) = value {
                self.values(&format!("{at}/{field}"), value);
            }
        }
    }

    /// Every template inside a JSON value.
    fn values(&mut self, at: &str, value: &Value) {
        match value {
            Value::String(text) => self.template(at, text),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.values(&format!("{at}/{i}"), item);
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    self.values(&format!("{at}/{}", locate_escape(key)), item);
                }
            }
            _ => {}
        }
    }

    fn template(&mut self, at: &str, text: &str) {
        if !is_template(text) {
            return;
        }
        let names = match single_expression(text) {
            Some(expr) => TEMPLATES
                .compile_expression(expr)
                .map(|e| e.undeclared_variables(true)),
            None => TEMPLATES
                .template_from_str(text)
                .map(|t| t.undeclared_variables(true)),
        };
        match names {
            Ok(names) => self.names(at, names),
            Err(e) => self.problem(at, format!("template syntax: {e}")),
        }
    }

    fn expression(&mut self, at: &str, expr: &str) {
        match TEMPLATES.compile_expression(expr) {
            Ok(e) => self.names(at, e.undeclared_variables(true)),
            Err(e) => self.problem(at, format!("expression syntax: {e}")),
        }
    }

    /// What a template reads must be in a spec's reach, and never a secret.
    fn names(&mut self, at: &str, names: impl IntoIterator<Item = String>) {
        for name in names {
            let mut parts = name.split('.');
            let root = parts.next().unwrap_or_default();
            if GLOBALS.contains(&root) {
                continue;
            }
            if !SCOPE.contains(&root) {
                self.problem(
                    at,
                    format!(
                        "`{root}` is not something a template can see (it can see: {})",
                        SCOPE.join(", ")
                    ),
                );
                continue;
            }
            if root == "connection"
                && let Some(property) = parts.next()
            {
                match self.spec.properties.get(property) {
                    Some(p) if p.secret => self.problem(
                        at,
                        format!(
                            "reads the secret property `{property}`: secrets never reach a spec; \
                             the host adds credentials to requests itself (`auth`) and checks \
                             signatures with them (`verify.secret`)"
                        ),
                    ),
                    Some(_) => {}
                    None => self.problem(
                        at,
                        format!("`connection.{property}` is not a connection property"),
                    ),
                }
            }
        }
    }

    /// A URL template may not lead anywhere but the allowed hosts: its
    /// scheme and host are literal text that an allowed host matches, a
    /// `{{ connection.X }}` where `{X}` is an allowed host, or such text
    /// with `{{ connection.X }}` where the allowed host has `{X}`.
    fn url(&mut self, at: &str, template: &str, is_base: bool) {
        let text = template.trim();
        let leaves = |why: &str| {
            format!(
                "the URL `{template}` could leave the allowed hosts ({why}); its scheme and host \
                 must be an allowed host, written out or as `{{{{ connection.<property> }}}}` of \
                 an allowed host `{{<property>}}`"
            )
        };
        if let Some(rest) = text.strip_prefix("{{") {
            let Some(end) = rest.find("}}") else {
                return;
            };
            let expr = rest[..end].trim();
            let after = &rest[end + 2..];
            let property = expr.strip_prefix("connection.").filter(|p| {
                p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
            let Some(property) = property else {
                self.problem(
                    at,
                    leaves("it starts with a template that is not a connection property"),
                );
                return;
            };
            if !self
                .spec
                .allowed_hosts
                .iter()
                .any(|h| h.trim() == format!("{{{property}}}"))
            {
                self.problem(
                    at,
                    leaves(&format!("`{{{property}}}` is not one of allowed_hosts")),
                );
                return;
            }
            if !(after.is_empty() || after.starts_with(['/', '?'])) {
                self.problem(at, leaves("text follows the host without a `/`"));
            }
            return;
        }
        let Some(scheme_end) = text
            .strip_prefix("https://")
            .map(|_| 8)
            .or_else(|| text.strip_prefix("http://").map(|_| 7))
        else {
            if is_base {
                self.problem(at, "base_url must be an absolute URL (https://...)");
            } else if self.spec.base_url.is_none() {
                self.problem(at, "a relative URL needs `base_url`");
            }
            return;
        };
        let host_end = text[scheme_end..]
            .find(['/', '?'])
            .map(|i| i + scheme_end)
            .unwrap_or(text.len());
        let origin = &text[..host_end];
        if origin.contains("{%") {
            self.problem(at, leaves("its host has a template statement"));
            return;
        }
        // `{{ connection.shop }}` → `{shop}`, to compare with the patterns.
        let mut pattern = String::new();
        let mut rest = origin;
        while let Some(open) = rest.find("{{") {
            pattern.push_str(&rest[..open]);
            let Some(close) = rest[open..].find("}}") else {
                self.problem(at, leaves("an unclosed template in its host"));
                return;
            };
            let expr = rest[open + 2..open + close].trim();
            match expr.strip_prefix("connection.") {
                Some(p) if p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    pattern.push_str(&format!("{{{p}}}"));
                }
                _ => {
                    self.problem(
                        at,
                        leaves(&format!(
                            "`{{{{ {expr} }}}}` in its host is not a connection property"
                        )),
                    );
                    return;
                }
            }
            rest = &rest[open + close + 2..];
        }
        pattern.push_str(rest);
        let normalised = |p: &str| {
            let p = p.trim().to_ascii_lowercase();
            if p.contains("://") || p.starts_with('{') && p.ends_with('}') {
                p
            } else {
                format!("https://{p}")
            }
        };
        let wanted = normalised(&pattern);
        let allowed = self.spec.allowed_hosts.iter().any(|h| {
            if normalised(h) == wanted {
                return true;
            }
            // A literal host against a literal or wildcard pattern.
            if !wanted.contains('{') && policy::placeholders(h).is_empty() {
                let (Ok(parsed), Ok(url)) = (
                    HostPattern::parse(h, &BTreeMap::new()),
                    url::Url::parse(&format!("{wanted}/")),
                ) else {
                    return false;
                };
                return policy::check_url(&url, &[parsed]).is_ok();
            }
            false
        });
        if !allowed {
            self.problem(
                at,
                leaves(&format!("`{origin}` matches none of allowed_hosts")),
            );
        }
    }
}

/// The manifest a spec declares, for the host's usual manifest checks.
fn raw_manifest(spec: &Spec) -> Result<RawManifest, (String, String)> {
    let auth = auth(&spec.auth).map_err(|e| ("/auth".to_string(), e))?;
    Ok(RawManifest {
        key: spec.key.clone(),
        name: spec.name.clone(),
        description: spec.description.clone(),
        version: spec.version.clone(),
        auth,
        connection_properties: spec
            .properties
            .iter()
            .map(|(key, p)| RawProperty {
                key: key.clone(),
                label: if p.label.is_empty() {
                    key.clone()
                } else {
                    p.label.clone()
                },
                description: p.description.clone(),
                required: p.required,
                secret: p.secret,
                schema: p.schema.to_string(),
            })
            .collect(),
        allowed_hosts: spec.allowed_hosts.clone(),
        rate_limit: spec.rate_limit.map(|r| RateLimit {
            requests: r.requests,
            period_ms: r.period_ms,
            burst: r.burst.unwrap_or(r.requests),
        }),
        triggers: spec
            .triggers
            .iter()
            .map(|(key, t)| RawTrigger {
                key: key.clone(),
                name: t.name.clone(),
                description: t.description.clone(),
                kind: match t.kind {
                    TriggerKind::Polling => crate::manifest::TriggerKind::Polling,
                    TriggerKind::Webhook => crate::manifest::TriggerKind::Webhook,
                },
                params_schema: t.params_schema.to_string(),
                event_schema: t.event_schema.to_string(),
                poll_interval_secs: t.poll_interval_secs,
            })
            .collect(),
        actions: spec
            .actions
            .iter()
            .map(|(key, a)| RawAction {
                key: key.clone(),
                name: a.name.clone(),
                description: a.description.clone(),
                kind: match a.kind.as_str() {
                    "create" => ActionKind::Create,
                    "update" => ActionKind::Update,
                    "search" => ActionKind::Search,
                    _ => ActionKind::Other,
                },
                input_schema: a.input_schema.to_string(),
                output_schema: a.output_schema.to_string(),
            })
            .collect(),
    })
}

/// The spec's `auth` as the manifest's scheme, with the optional fields
/// filled in.
fn auth(value: &Value) -> Result<AuthScheme, String> {
    if value.is_null() {
        return Ok(AuthScheme::None);
    }
    let mut value = value.clone();
    let defaults: &[(&str, Value)] = match value["type"].as_str() {
        Some("api_key") => &[("placement", json!("header")), ("prefix", json!(""))],
        Some("oauth2") => &[("authorize_url", json!("")), ("scopes", json!([]))],
        Some("session") => &[
            ("login_method", json!("POST")),
            ("login_headers", json!([])),
            ("login_body", Value::Null),
        ],
        _ => &[],
    };
    if let Some(map) = value.as_object_mut() {
        for (key, default) in defaults {
            map.entry(key.to_string())
                .or_insert_with(|| default.clone());
        }
    }
    serde_json::from_value(value).map_err(|e| format!("unreadable auth scheme: {e}"))
}

/// A manifest problem (`actions[find].input-schema: ...`) as a path in the
/// spec and a message.
fn manifest_place(problem: &str) -> (String, String) {
    let Some((place, message)) = problem.split_once(": ") else {
        return (String::new(), problem.to_string());
    };
    let mut path = String::new();
    for part in place.split('.') {
        let (name, key) = match part.split_once('[') {
            Some((name, key)) => (name, Some(key.trim_end_matches(']'))),
            None => (part, None),
        };
        let name = match name {
            "connection-properties" => "properties",
            other => other,
        };
        path.push('/');
        path.push_str(&name.replace('-', "_"));
        if let Some(key) = key {
            path.push('/');
            path.push_str(&locate_escape(key));
        }
    }
    (path, message.to_string())
}

#[cfg(test)]
mod tests;
