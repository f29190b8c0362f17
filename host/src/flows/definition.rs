//! A flow as its author writes it (JSON or YAML), the checks it must pass to
//! be published, and the exact plugin versions publishing pins.

use std::collections::BTreeMap;

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::records::{FileTriggerSpec, RecordsSpec};
pub use crate::store::Lane;
use crate::{error::ServiceError, manifest::Manifest};

/// What publishing a flow needs to know about the plugins and a tenant's
/// connections, and nothing else.
pub trait Catalogue: Send + Sync {
    /// The newest non-deprecated version of `key` that satisfies `req`.
    fn resolve(&self, key: &str, req: &VersionReq) -> Result<Version, ServiceError>;
    /// The manifest of one plugin version.
    fn manifest(&self, key: &str, version: &Version) -> Result<Manifest, ServiceError>;
    /// The plugin key of one of the tenant's connections.
    fn connection_plugin(&self, tenant: &str, id: &str) -> Result<String, ServiceError>;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub trigger: TriggerSpec,
    /// Expressions over `trigger`; the run goes ahead only if all are true.
    #[serde(default)]
    pub conditions: Vec<String>,
    pub steps: Vec<StepSpec>,
    /// `fast` for events that must not wait behind bulk work (orders,
    /// inventory); `normal` otherwise.
    #[serde(default)]
    pub lane: Lane,
    /// Runs of this flow that may execute at once (default: no limit
    /// besides the lane's and the connections').
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Values every template of the flow can use as `env.<name>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, Value>,
    /// Which entity an event is about: runs then see `changes` and
    /// `previous`, unchanged and out-of-order events are dropped, and runs
    /// of one entity execute one at a time in arrival order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<EntitySpec>,
    /// Fetches the full entity for each (thin) event before anything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hydrate: Option<HydrateSpec>,
}

/// The entity an event is about, and what of it matters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySpec {
    /// What kind of thing it is (`order`, `stock`): state is kept per type.
    #[serde(rename = "type")]
    pub kind: String,
    /// A template giving the entity's key, e.g. `"{{ trigger.sku }}"`.
    pub key: String,
    /// A template giving the event's version (a number, or a time such as
    /// `updated_at`): an event older than the state's is out of order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The fields that matter (dotted paths); an event that changes none of
    /// them is a no-op. Empty: the whole event.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// Where the entity as this flow wrote it is in a finished run (a
    /// template over `steps`, e.g. `"{{ steps.tag.order }}"`): the state
    /// takes it, so the third party's echo of the flow's own write is a no-op.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<String>,
    /// Keep only the newest event per entity within a window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coalesce: Option<CoalesceSpec>,
    /// A flow started for one entity more often than this is paused: it is
    /// probably triggering itself.
    #[serde(default)]
    pub max_runs: RunLimit,
}

/// Burst coalescing: a new event for an entity replaces the one still
/// waiting, the run starts `window_ms` after the newest, and never later
/// than `max_delay_ms` after the first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoalesceSpec {
    pub window_ms: u64,
    #[serde(default = "default_max_delay")]
    pub max_delay_ms: u64,
}

fn default_max_delay() -> u64 {
    60_000
}

/// At most `count` runs for one entity within `minutes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunLimit {
    pub count: u32,
    pub minutes: u64,
}

impl Default for RunLimit {
    fn default() -> Self {
        RunLimit {
            count: 8,
            minutes: 10,
        }
    }
}

/// The action that fetches an event's full entity (thin webhooks).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HydrateSpec {
    /// `key@requirement`; the trigger's plugin when left out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plugin: String,
    pub action: String,
    /// The trigger's connection when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Templates over the thin event (`trigger`).
    #[serde(default = "empty_object")]
    pub input: Value,
    /// Where the entity is in the action's output (a dotted path); the
    /// whole output when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    /// `key@requirement`, e.g. `shopify@^1`. Empty for a pure schedule.
    #[serde(default)]
    pub plugin: String,
    #[serde(default)]
    pub trigger: String,
    pub connection: Option<String>,
    #[serde(default = "empty_object")]
    pub params: Value,
    /// Seconds between polls of a polling trigger (default 60, at least 1).
    #[serde(default)]
    pub interval_secs: Option<u64>,
    /// A cron expression (`*/5 * * * *`, UTC): when to poll, or, without a
    /// plugin, when to start a run.
    #[serde(default)]
    pub schedule: Option<String>,
    /// Fire for the items already there: every page of the first poll and
    /// the polls that page on from it (by default those only record where
    /// to go on, until the plugin has caught up).
    #[serde(default)]
    pub include_existing: bool,
    /// Behind a webhook trigger: a polling trigger of the same plugin run
    /// every so often, whose events go through the same entity state, so
    /// only what the webhooks missed starts runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<ReconcileSpec>,
    /// A file trigger: a new file in a bucket (or at a remote location
    /// polled through `plugin`) starts a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileTriggerSpec>,
}

/// Reconciliation behind webhooks: "webhook primary, API secondary".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSpec {
    /// The polling trigger of the same plugin.
    pub trigger: String,
    /// Seconds between reconciliations.
    pub every_secs: u64,
    #[serde(default = "empty_object")]
    pub params: Value,
}

/// Default polling interval.
pub const DEFAULT_INTERVAL_SECS: u64 = 60;

/// One step of a flow. Which kind it is follows from the fields it has:
/// `plugin` and `action` (an action), `paths`, `for_each`, `delay`, `stop`,
/// `fail`, `respond`, `call_flow` or `publish`. Any step may have `if:`; actions and
/// flow calls may have `on_error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// How later steps refer to this one's output: `steps.<key>`. Unique in
    /// the whole flow, nested steps included.
    pub key: String,
    /// Runs the step only when this expression (over `trigger`, earlier
    /// `steps`, `env`, and in a loop `item` and `index`) is true; otherwise
    /// the step is recorded as skipped and later steps do not see it.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    /// What a failure of this step does: `fail` the run (the default) or
    /// `continue`, with the error recorded as `steps.<key>.error`.
    #[serde(default, skip_serializing_if = "OnError::is_fail")]
    pub on_error: OnError,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub plugin: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Templates over `trigger`, earlier `steps`, `env` (and `item`, `index`).
    #[serde(default = "empty_object", skip_serializing_if = "is_empty_object")]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetrySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<PathsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<ForEachSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<DelaySpec>,
    /// Ends the run successfully; the text (a template) says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    /// Fails the run into the dead-letter list with this message (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub respond: Option<RespondSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_flow: Option<CallFlowSpec>,
    /// A record job: a file (or a connector's pages) record by record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<Box<RecordsSpec>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PublishSpec>,
}

/// Appends a change record to one of the tenant's topics (made with the
/// defaults when it does not exist), once per run and step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishSpec {
    pub topic: String,
    /// A template: the record's key (records of one key keep their order).
    pub key: String,
    /// A template: the record's type, e.g. `order.updated`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A template: the record's data (the key's new state).
    #[serde(default)]
    pub data: Value,
    /// The key was deleted: a tombstone, `data` is not used.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
}

/// The kinds of step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Action,
    Paths,
    ForEach,
    Delay,
    Stop,
    Fail,
    Respond,
    CallFlow,
    Records,
    Publish,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Action => "action",
            StepKind::Paths => "paths",
            StepKind::ForEach => "for_each",
            StepKind::Delay => "delay",
            StepKind::Stop => "stop",
            StepKind::Fail => "fail",
            StepKind::Respond => "respond",
            StepKind::CallFlow => "call_flow",
            StepKind::Records => "records",
            StepKind::Publish => "publish",
        }
    }
}

impl StepSpec {
    /// The kinds this step has fields of (exactly one for a valid step).
    pub fn kinds(&self) -> Vec<StepKind> {
        let mut kinds = Vec::new();
        if !self.plugin.is_empty() || !self.action.is_empty() {
            kinds.push(StepKind::Action);
        }
        for (present, kind) in [
            (self.paths.is_some(), StepKind::Paths),
            (self.for_each.is_some(), StepKind::ForEach),
            (self.delay.is_some(), StepKind::Delay),
            (self.stop.is_some(), StepKind::Stop),
            (self.fail.is_some(), StepKind::Fail),
            (self.respond.is_some(), StepKind::Respond),
            (self.call_flow.is_some(), StepKind::CallFlow),
            (self.records.is_some(), StepKind::Records),
            (self.publish.is_some(), StepKind::Publish),
        ] {
            if present {
                kinds.push(kind);
            }
        }
        kinds
    }

    /// The step's kind; an action when it is ambiguous (publishing refuses
    /// those).
    pub fn kind(&self) -> StepKind {
        self.kinds().first().copied().unwrap_or(StepKind::Action)
    }

    /// The steps nested in this one (a loop's, every branch's).
    pub fn children(&self) -> Vec<&StepSpec> {
        let mut out = Vec::new();
        if let Some(paths) = &self.paths {
            out.extend(paths.branches.iter().flat_map(|b| b.steps.iter()));
        }
        if let Some(each) = &self.for_each {
            out.extend(each.steps.iter());
        }
        out
    }
}

/// Every step of a block and of the blocks nested in it, depth first in
/// the order they are written: the order in which actions are pinned.
pub fn walk<'a>(steps: impl IntoIterator<Item = &'a StepSpec>) -> Vec<&'a StepSpec> {
    let mut out = Vec::new();
    for step in steps {
        out.push(step);
        out.extend(walk(step.children()));
    }
    out
}

/// The action steps of a flow, depth first: `Pinned::steps` is parallel to it.
pub fn actions(steps: &[StepSpec]) -> Vec<&StepSpec> {
    walk(steps)
        .into_iter()
        .filter(|s| s.kind() == StepKind::Action)
        .collect()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    #[default]
    Fail,
    Continue,
}

impl OnError {
    fn is_fail(&self) -> bool {
        *self == OnError::Fail
    }
}

/// Named branches, each with a condition and its own steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathsSpec {
    /// `first`: the first branch whose condition holds (the default);
    /// `all`: every branch whose condition holds, in order.
    #[serde(default)]
    pub mode: PathsMode,
    pub branches: Vec<Branch>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathsMode {
    #[default]
    First,
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branch {
    pub name: String,
    /// The branch's condition; the last branch may have none (otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<String>,
    pub steps: Vec<StepSpec>,
}

/// Runs nested steps once per item of an array.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForEachSpec {
    /// The array: a template such as `"{{ trigger.line_items }}"`, or a literal array.
    pub items: Value,
    /// Items in progress at once (default 1: in order).
    #[serde(default = "one")]
    pub concurrency: u32,
    /// More items than this fail the run with a clear error (default 1,000).
    #[serde(default = "default_max_items")]
    pub max_items: usize,
    pub steps: Vec<StepSpec>,
}

fn one() -> u32 {
    1
}

/// Loops run at most this many items unless a flow says otherwise.
pub const DEFAULT_MAX_ITEMS: usize = 1_000;

fn default_max_items() -> usize {
    DEFAULT_MAX_ITEMS
}

/// A durable wait: for a time, or until a moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelaySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<u64>,
    /// An RFC 3339 time or milliseconds since the epoch (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// What a synchronous run answers its caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondSpec {
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A template; JSON unless a `content-type` header says otherwise.
    #[serde(default)]
    pub body: Value,
}

fn ok_status() -> u16 {
    200
}

/// Starts a run of another flow of the same tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallFlowSpec {
    /// The flow's id or name.
    pub flow: String,
    /// Its trigger event (templates).
    #[serde(default = "empty_object")]
    pub event: Value,
    /// Wait for its run to finish; its output becomes this step's.
    #[serde(default)]
    pub wait: bool,
}

fn is_empty_object(value: &Value) -> bool {
    value.as_object().is_some_and(|o| o.is_empty())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    pub max_attempts: Option<u32>,
    pub max_elapsed_secs: Option<u64>,
    pub initial_delay_ms: Option<u64>,
    pub max_delay_ms: Option<u64>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// The plugin versions a published flow runs with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinned {
    /// `None` for a pure schedule trigger.
    pub trigger: Option<Version>,
    pub steps: Vec<Version>,
    /// The plugin version of `hydrate`'s action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hydrate: Option<Version>,
    /// The plugin versions of record jobs' connectors, by `<step>.from`
    /// (pages) and `<step>.to` (an action).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub records: BTreeMap<String, Version>,
}

impl FlowSpec {
    /// Parses JSON, or YAML when the text is not JSON.
    pub fn parse(text: &str) -> Result<FlowSpec, String> {
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') {
            serde_json::from_str(text).map_err(|e| format!("invalid flow JSON: {e}"))
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| format!("invalid flow YAML: {e}"))
        }
    }
}

/// Parses a cron expression (five fields, or six with seconds first), UTC.
pub fn parse_schedule(text: &str) -> Result<croner::Cron, String> {
    text.parse::<croner::Cron>()
        .map_err(|e| format!("`{text}` is not a cron expression: {e}"))
}
