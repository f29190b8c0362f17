//! The declarative connector spec in its canonical form: what the host
//! stores and hands the interpreter after validating a pushed YAML or JSON
//! spec and expanding its shorthands.
//!
//! Two programs read these types: the host (`switchyard`), which checks a
//! spec at push (with the JSON Schema in `docs/declarative.schema.json`
//! first, so every structural problem is placed) and normalises it, and the
//! interpreter component (`plugins/declarative/interpreter`), which runs it.
//! Sharing the types means the two cannot disagree about a field.
//!
//! Strings called templates use the flows' template language (minijinja,
//! Jinja2 syntax); a string that is exactly one `{{ expression }}` keeps the
//! expression's JSON type. Expressions (`when`, `filter`, `check`...) are
//! written without braces.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The spec format this crate reads (`declarative: "0.1"` in a spec).
pub const FORMAT: &str = "0.1";

/// The reserved action every connector gets: one request of the caller's
/// choosing to an allowed host, with the connection's credentials.
pub const CUSTOM_API_CALL: &str = "custom-api-call";

/// What the host hands the interpreter through `spec.get`: the spec, and
/// the caps of a live test.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The connector.
    pub spec: Spec,
    /// Set only for a live test (`POST /v1/plugins/test`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// Caps of a live test, on top of the spec's own.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Limits {
    /// Pages one operation may read.
    #[serde(default)]
    pub max_pages: Option<u32>,
    /// Records one operation may collect.
    #[serde(default)]
    pub max_records: Option<u32>,
    /// Where a first poll starts, overriding the trigger's `seed`: a test
    /// wants records, not just a cursor.
    #[serde(default)]
    pub seed: Option<String>,
}

/// A declarative connector.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    /// The format, `"0.1"`.
    pub declarative: String,
    /// The plugin key, as in a manifest.
    pub key: String,
    /// Human-readable name.
    pub name: String,
    /// What it connects to.
    #[serde(default)]
    pub description: String,
    /// Semantic version of this connector version.
    pub version: String,
    /// The auth scheme, as the host's manifest has it (`{type: basic}`...);
    /// only the host reads it.
    #[serde(default)]
    pub auth: Value,
    /// Connection properties by key.
    #[serde(default)]
    pub properties: BTreeMap<String, Property>,
    /// Where requests may go (manifest `allowed-hosts` patterns).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Requests per connection, enforced by the host.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    /// A template: relative request URLs are joined to it.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Headers every request carries (templates).
    #[serde(default)]
    pub headers: BTreeMap<String, Value>,
    /// Response rules for every request, after an operation's own.
    #[serde(default)]
    pub responses: Vec<Rule>,
    /// The test-connection request.
    #[serde(default)]
    pub test: Option<Operation>,
    /// Actions by key.
    #[serde(default)]
    pub actions: BTreeMap<String, Action>,
    /// Triggers by key.
    #[serde(default)]
    pub triggers: BTreeMap<String, Trigger>,
}

/// A connection property.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Property {
    /// Shown to whoever fills it in.
    #[serde(default)]
    pub label: String,
    /// Help text.
    #[serde(default)]
    pub description: String,
    /// A connection must have it.
    #[serde(default)]
    pub required: bool,
    /// Kept sealed by the host; never in a template's reach.
    #[serde(default)]
    pub secret: bool,
    /// JSON Schema of the value.
    #[serde(default = "any_schema")]
    pub schema: Value,
}

/// A manifest rate limit.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct RateLimit {
    /// Requests in each period...
    pub requests: u32,
    /// ...of this many milliseconds.
    pub period_ms: u32,
    /// Requests that may go at once; `requests` when absent.
    #[serde(default)]
    pub burst: Option<u32>,
}

/// An action: the first case whose `when` holds runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Action {
    /// Human-readable name.
    pub name: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// `create`, `update`, `search` or `other`.
    #[serde(default = "other")]
    pub kind: String,
    /// JSON Schema of the input.
    #[serde(default = "object_schema")]
    pub input_schema: Value,
    /// JSON Schema of the output.
    #[serde(default = "any_schema")]
    pub output_schema: Value,
    /// The ways to do it, tried in order by their `when`.
    pub cases: Vec<Operation>,
}

/// One request (with its pages) and what to make of the answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Operation {
    /// An expression: this case runs when it holds (the last case needs none).
    #[serde(default)]
    pub when: Option<String>,
    /// The request.
    pub request: Request,
    /// Response rules, before the spec's own and the defaults.
    #[serde(default)]
    pub responses: Vec<Rule>,
    /// Where the records are in the body: a JSON pointer (`/data`, `""` for
    /// the body itself) or a dotted path (`data.items`).
    #[serde(default)]
    pub records: Option<String>,
    /// A template shaping each record (`record` in scope).
    #[serde(default)]
    pub record: Option<Value>,
    /// How to get the next page.
    #[serde(default)]
    pub pagination: Option<Pagination>,
    /// The action's output, a template (`response`, and `records` when
    /// records are selected); by default the records, or the body.
    #[serde(default)]
    pub output: Option<Value>,
}

/// An HTTP request as templates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `HEAD`.
    #[serde(default = "get")]
    pub method: String,
    /// Absolute, or relative to the spec's `base_url`.
    pub url: String,
    /// Query parameters; a value that is null or undefined is left out, an
    /// array repeats the parameter.
    #[serde(default)]
    pub query: BTreeMap<String, Value>,
    /// Headers; null or undefined values are left out.
    #[serde(default)]
    pub headers: BTreeMap<String, Value>,
    /// A JSON body.
    #[serde(default)]
    pub json: Option<Value>,
    /// A form-encoded body.
    #[serde(default)]
    pub form: Option<BTreeMap<String, Value>>,
    /// A raw body (set `Content-Type` in `headers`).
    #[serde(default)]
    pub body: Option<String>,
    /// Lower the request's timeout.
    #[serde(default)]
    pub timeout_ms: Option<u32>,
}

/// A response rule: when it matches, the outcome it names replaces the
/// default mapping (429 rate-limited, 401/403 auth, 408/5xx transient,
/// other 4xx invalid input, 2xx success).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rule {
    /// Status ranges, inclusive; empty matches any status.
    #[serde(default)]
    pub status: Vec<[u16; 2]>,
    /// An expression over `response` that must hold too (an error in a 200).
    #[serde(default)]
    pub when: Option<String>,
    /// Fail with this kind.
    #[serde(default)]
    pub error: Option<ErrorKind>,
    /// The error's message, a template; the status and body by default.
    #[serde(default)]
    pub message: Option<String>,
    /// For `rate_limited`: milliseconds to wait, a template; `Retry-After` by default.
    #[serde(default)]
    pub retry_after_ms: Option<String>,
    /// Succeed with this output instead (actions).
    #[serde(default)]
    pub output: Option<Value>,
    /// Succeed as usual although the status is not 2xx.
    #[serde(default)]
    pub ok: bool,
}

/// The error kinds the host acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Retry with back-off.
    Transient,
    /// Retry after the given delay.
    RateLimited,
    /// Pause the connection.
    Auth,
    /// Fail; retrying will not help.
    InvalidInput,
    /// Fail.
    Permanent,
}

/// How pages follow each other.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pagination {
    /// The method.
    #[serde(rename = "type")]
    pub kind: PaginationKind,
    /// The query parameter carrying the page number, offset or cursor.
    #[serde(default)]
    pub param: Option<String>,
    /// The first page number (1) or offset (0).
    #[serde(default)]
    pub start: Option<i64>,
    /// Records per page: a number or a template (sent as `size_param`).
    #[serde(default)]
    pub size: Option<Value>,
    /// The query parameter carrying the page size.
    #[serde(default)]
    pub size_param: Option<String>,
    /// `cursor`: a template over `response` giving the next cursor.
    #[serde(default)]
    pub cursor: Option<String>,
    /// `next_url`: a template over `response` giving the next page's URL.
    #[serde(default)]
    pub url: Option<String>,
    /// `page_number`: a template over `response` giving the number of pages.
    #[serde(default)]
    pub total_pages: Option<String>,
    /// When to stop besides the method's own end.
    #[serde(default)]
    pub stop: Vec<StopRule>,
    /// Pages one call reads at most: a number or a template.
    #[serde(default)]
    pub max_pages: Option<Value>,
}

/// Pagination methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaginationKind {
    /// `offset` grows by the records read; `size_param` is the limit.
    Offset,
    /// `page` grows by one.
    PageNumber,
    /// A cursor from the body, sent back as `param`.
    Cursor,
    /// The `Link` header's `rel="next"` URL, followed as it is.
    Link,
    /// A URL from the response (`url`).
    NextUrl,
}

/// Stop rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopRule {
    /// A page without records.
    EmptyPage,
    /// A page with fewer records than `size`.
    ShortPage,
    /// No next cursor or URL.
    NoCursor,
    /// The next cursor or URL was seen already.
    RepeatedCursor,
}

/// Trigger kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriggerKind {
    /// Polled on the flow's interval.
    Polling,
    /// Delivered by the third party.
    Webhook,
}

/// A trigger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Trigger {
    /// Polling or webhook.
    pub kind: TriggerKind,
    /// Human-readable name.
    pub name: String,
    /// What it reports.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of a flow's parameters.
    #[serde(default = "object_schema")]
    pub params_schema: Value,
    /// JSON Schema of an event.
    #[serde(default = "object_schema")]
    pub event_schema: Value,
    /// Default polling interval.
    #[serde(default)]
    pub poll_interval_secs: Option<u32>,
    /// The event id, a template over `record` (and `request` for webhooks).
    pub event_id: String,
    /// The event's payload, a template; the record by default.
    #[serde(default)]
    pub event: Option<Value>,
    /// An expression: only records for which it holds become events (the
    /// cursor still moves past the others).
    #[serde(default)]
    pub filter: Option<String>,
    /// Polling: the request, its records and pages.
    #[serde(default)]
    pub poll: Option<Operation>,
    /// Polling: the incremental cursor.
    #[serde(default)]
    pub cursor: Option<CursorSpec>,
    /// Polling: where the first poll starts.
    #[serde(default)]
    pub seed: Option<Seed>,
    /// Webhook: the signature check.
    #[serde(default)]
    pub verify: Option<Verify>,
    /// Webhook: an expression over `request`; a delivery for which it holds
    /// is acknowledged with no events and not verified (a handshake ping).
    #[serde(default)]
    pub ignore: Option<String>,
    /// Webhook: an expression over `request` and `body`; a verified
    /// delivery for which it holds is acknowledged with no events.
    #[serde(default)]
    pub skip: Option<String>,
    /// Webhook: where the records are in the delivery's body; the body
    /// itself is one record by default.
    #[serde(default)]
    pub records: Option<String>,
    /// Webhook: expressions every record must pass (invalid input otherwise).
    #[serde(default)]
    pub checks: Vec<Check>,
    /// Webhook: a synchronous answer to the sender.
    #[serde(default)]
    pub reply: Option<Reply>,
    /// Webhook: registering the flow's URL with the third party.
    #[serde(default)]
    pub subscribe: Option<Subscription>,
    /// Webhook: removing it.
    #[serde(default)]
    pub unsubscribe: Option<Subscription>,
}

/// The incremental cursor of a polling trigger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CursorSpec {
    /// A template over `record`: the value the cursor follows.
    pub value: String,
    /// How values compare.
    #[serde(rename = "type", default)]
    pub kind: CursorType,
    /// The API's filter includes the cursor's own value (Shopify's
    /// `updated_at_min`): the cursor then remembers the ids seen at that
    /// value and is stored as `{"since": ..., "ids": [...]}`.
    #[serde(default)]
    pub inclusive: bool,
    /// A template over `record`: the id remembered by an inclusive cursor
    /// (the event id by default).
    #[serde(default)]
    pub id: Option<String>,
    /// Read again this far behind the cursor (seconds for date-times, units
    /// for numbers); the host drops the repeated events by id.
    #[serde(default)]
    pub lookback: Option<u64>,
}

/// Cursor value types.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CursorType {
    /// RFC 3339 date-times (a missing zone is UTC), compared as instants.
    #[default]
    Datetime,
    /// Integers (ids), compared as numbers.
    Number,
}

/// Where a first poll starts.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Seed {
    /// `now`, `newest` (the first record `request` returns) or `beginning`;
    /// a template over `params` may choose.
    pub from: String,
    /// `newest`: the request whose first record's cursor value is the start.
    #[serde(default)]
    pub request: Option<Operation>,
    /// `newest`: the start when that request returns no record.
    #[serde(default)]
    pub default: Option<String>,
}

/// A webhook signature check, done by the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verify {
    /// `shopify`, `standard_webhooks`, `stripe` or `hmac_sha256`.
    pub scheme: String,
    /// The secret connection property holding the signing secret.
    pub secret: String,
    /// `hmac_sha256`: the signature header.
    #[serde(default)]
    pub header: Option<String>,
    /// `hmac_sha256`: `hex` or `base64`.
    #[serde(default)]
    pub encoding: Option<String>,
    /// `hmac_sha256`: text before the signature (`sha256=`).
    #[serde(default)]
    pub prefix: Option<String>,
}

/// A condition a delivered record must meet.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    /// The expression.
    pub check: String,
    /// The invalid-input message when it does not hold.
    pub message: String,
}

/// A synchronous webhook answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    /// The status.
    #[serde(default = "ok_status")]
    pub status: u16,
    /// Headers (templates).
    #[serde(default)]
    pub headers: BTreeMap<String, Value>,
    /// The body, a template (JSON unless it renders to text).
    #[serde(default)]
    pub body: Option<Value>,
}

/// Subscribing or unsubscribing a webhook.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Subscription {
    /// An expression: the request is made only when it holds.
    #[serde(default)]
    pub when: Option<String>,
    /// The request (`target_url`, and `state` when unsubscribing, in scope).
    #[serde(default)]
    pub request: Option<Request>,
    /// Response rules.
    #[serde(default)]
    pub responses: Vec<Rule>,
    /// Subscribe: what to keep for unsubscribing, a template over `response`.
    #[serde(default)]
    pub state: Option<String>,
    /// A line for the run log (instructions for a manual step).
    #[serde(default)]
    pub log: Option<String>,
}

fn any_schema() -> Value {
    Value::Object(Default::default())
}

fn object_schema() -> Value {
    serde_json::json!({"type": "object"})
}

fn other() -> String {
    "other".to_string()
}

fn get() -> String {
    "GET".to_string()
}

fn ok_status() -> u16 {
    200
}
