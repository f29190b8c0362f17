//! What a flow says about files: a file trigger (a file created in a
//! bucket, or found by polling a remote location through a connector) and
//! a record job step (`records`: read a file record by record, or page
//! through a connector's list action; map, validate, and write the records
//! to a file in a bucket or at a remote location written through a
//! connector, or send them to a connector's action, one by one or in
//! batches). The checks these must pass are in `validate/records.rs`;
//! the job runs in `runs/interpret/records.rs`.

use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FlowRecord, definition::walk};
pub use crate::files::FormatSpec;
use crate::registry::parse_plugin_ref;

/// The plugin versions a flow's record jobs pinned, as (plugin key,
/// version): they count as the flow's pins, so they cannot be deleted.
pub(crate) fn pinned_plugins(flow: &FlowRecord) -> Vec<(String, Version)> {
    let mut out = Vec::new();
    for step in walk(&flow.spec.steps) {
        let Some(records) = &step.records else {
            continue;
        };
        let ends = [
            (
                "from",
                records.from.pages.as_ref().map(|p| p.plugin.as_str()),
            ),
            (
                "to",
                (records.to.action.as_ref().map(|a| a.plugin.as_str())).or(records
                    .to
                    .file
                    .as_ref()
                    .and_then(|f| f.remote.as_ref())
                    .map(|r| r.plugin.as_str())),
            ),
        ];
        for (end, plugin) in ends {
            let (Some(plugin), Some(version)) = (
                plugin,
                flow.pinned.records.get(&format!("{}.{end}", step.key)),
            ) else {
                continue;
            };
            if let Ok((key, _)) = parse_plugin_ref(plugin) {
                out.push((key, version.clone()));
            }
        }
    }
    out
}

/// `trigger.file`: the flow starts once for every new file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTriggerSpec {
    /// A bucket of the tenant: a file created in it starts a run. With a
    /// remote source (`trigger.plugin` and `remote`), the bucket the file
    /// is copied into before its run (its staging place).
    pub bucket: String,
    /// Only files under this folder (`orders/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Only files matching this glob (`orders/*.csv`; `**` crosses folders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub glob: Option<String>,
    /// A file is taken once it is at least this old (seconds), so that a
    /// file still being written is left alone.
    #[serde(default)]
    pub min_age_secs: u64,
    /// Or: a file is taken once a file of the same path plus this suffix
    /// exists (`.done`, `.ok`); the marker is removed with the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done_marker: Option<String>,
    /// What happens to the file after its run succeeded.
    #[serde(default)]
    pub after_success: AfterSuccess,
    /// Where a file whose run failed goes, with `<name>.errors.txt` beside
    /// it (default `invalid/`).
    #[serde(default = "invalid_folder")]
    pub invalid_folder: String,
    /// Polling a remote location through the trigger's connector.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteSpec>,
    /// Seconds between looks at a remote location (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<u64>,
}

fn invalid_folder() -> String {
    "invalid/".into()
}

/// After a successful run: leave the file, delete it, or move it into a
/// folder (`archive/`) of its bucket or location.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum AfterSuccess {
    #[default]
    Keep,
    Delete,
    Move(String),
}

/// A remote location, listed and read through the trigger's connector,
/// whose actions follow the file source contract (see the connector
/// guide): `list` takes `{prefix, cursor}` and answers `{objects: [{path,
/// size, etag, modified_at}], next}`; `get` takes `{path, offset, length}`
/// and answers `{data_base64, size}`; `delete` and `copy` are optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// Merged into every call's input (`{"bucket": "legacy-drop"}`).
    #[serde(default = "empty_object")]
    pub params: Value,
    #[serde(default = "list_action")]
    pub list: String,
    #[serde(default = "get_action")]
    pub get: String,
    #[serde(default = "delete_action")]
    pub delete: String,
    #[serde(default = "copy_action")]
    pub copy: String,
    /// Bytes fetched per `get` call (default 4 MiB).
    #[serde(default = "chunk_bytes")]
    pub chunk_bytes: u64,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

fn list_action() -> String {
    "list-objects".into()
}

fn get_action() -> String {
    "get-object".into()
}

fn delete_action() -> String {
    "delete-object".into()
}

fn copy_action() -> String {
    "copy-object".into()
}

fn chunk_bytes() -> u64 {
    4 << 20
}

/// A record job: where records come from, what becomes of each, and where
/// they go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordsSpec {
    pub from: SourceSpec,
    /// A record is skipped (counted, not sent) when this condition over
    /// `record` is false.
    #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Each record's new shape: templates over `record`, `index`,
    /// `trigger`, `env` and earlier `steps`. The record as read when left
    /// out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<Value>,
    /// A JSON Schema every mapped record must satisfy; others fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    pub to: SinkSpec,
    /// The job stops (and fails) once more records than this failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_errors: Option<u64>,
    /// ... or once more than this share of the records read (in percent,
    /// counted from the 100th record on) failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_percent: Option<f64>,
    /// Where `errors.jsonl` and `rejected.csv` go: beside the output by
    /// default, or `reports/<run>/` of the source's bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reports: Option<PlaceSpec>,
}

/// Where records come from: a file, or the pages of a connector's action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// `{bucket, path}` (templates), or a template that gives them, such
    /// as `"{{ trigger.file }}"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<Value>,
    /// The file's format; by its extension when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FormatSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<PagesSpec>,
}

/// Pages of a list or search action: the input (templates over `cursor`,
/// `page`, `trigger`, `env`, `steps`) is rendered for every page; `items`
/// and `next` say where the records and the next page's cursor are in the
/// output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagesSpec {
    pub plugin: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    #[serde(default = "empty_object")]
    pub input: Value,
    /// A dotted path to the records in the output (default `items`).
    #[serde(default = "items_path")]
    pub items: String,
    /// A dotted path to the next page's cursor; none or null ends the
    /// paging (default `next`).
    #[serde(default = "next_path")]
    pub next: String,
    /// At most this many pages (default 100,000).
    #[serde(default = "max_pages")]
    pub max_pages: u64,
}

fn items_path() -> String {
    "items".into()
}

fn next_path() -> String {
    "next".into()
}

fn max_pages() -> u64 {
    100_000
}

/// Where records go: a file, or a connector's action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileSinkSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionSinkSpec>,
}

/// A file in a bucket, written as a whole when the job is done, with a
/// manifest (`<path>.manifest.json`) beside it. With `remote`, the file
/// goes to a remote location through a connector instead, and `bucket` is
/// where the job's reports go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSinkSpec {
    pub bucket: String,
    /// A template over `trigger`, `env`, `steps` and `run`.
    pub path: String,
    /// By the path's extension when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<FormatSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteSinkSpec>,
}

/// A remote location a job's file is written to through a connector whose
/// actions follow the file destination contract (see the connector guide):
/// the file goes up in parts of a multipart upload, which makes it appear
/// under its path only when complete; its manifest is written beside it
/// last with `put`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSinkSpec {
    pub plugin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Merged into every call's input (`{"bucket": "exports"}`).
    #[serde(default = "empty_object")]
    pub params: Value,
    /// Bytes per part (default 8 MiB; AWS S3 wants at least 5 MiB for
    /// every part but the last).
    #[serde(default = "part_bytes")]
    pub part_bytes: u64,
    #[serde(default = "create_action")]
    pub create: String,
    #[serde(default = "upload_part_action")]
    pub upload_part: String,
    #[serde(default = "complete_action")]
    pub complete: String,
    #[serde(default = "abort_action")]
    pub abort: String,
    #[serde(default = "put_action")]
    pub put: String,
}

/// The bounds of [`RemoteSinkSpec::part_bytes`]: S3 and the stores that
/// speak its API (MinIO, R2, B2, GCS) refuse a part under 5 MiB unless it is
/// the last one, at completion, after every part went up; and a part crosses
/// into the plugin as base64 in one call's input, which bounds it above.
pub const PART_BYTES: std::ops::RangeInclusive<u64> = (5 << 20)..=(8 << 20);

fn part_bytes() -> u64 {
    8 << 20
}

fn create_action() -> String {
    "create-multipart-upload".into()
}

fn upload_part_action() -> String {
    "upload-part".into()
}

fn complete_action() -> String {
    "complete-multipart-upload".into()
}

fn abort_action() -> String {
    "abort-multipart-upload".into()
}

fn put_action() -> String {
    "put-object".into()
}

impl RemoteSinkSpec {
    /// The actions the export calls, with the field that names each.
    pub fn actions(&self) -> [(&'static str, &str); 5] {
        [
            ("create", &self.create),
            ("upload_part", &self.upload_part),
            ("complete", &self.complete),
            ("abort", &self.abort),
            ("put", &self.put),
        ]
    }
}

/// A bucket and a folder (templates).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceSpec {
    pub bucket: String,
    pub folder: String,
}

/// A connector's action, called per record or per batch, with an
/// idempotency key made of the run, the file's hash and the record index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSinkSpec {
    pub plugin: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The action's input: templates over `record` (per record) or `batch`
    /// (the mapped records of a batch) and `key`, `keys`. By default the
    /// record itself, or `{"items": batch}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// Send records in batches instead of one by one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSpec>,
}

/// A batch closes at `count` records, at `bytes` of mapped JSON, or
/// `millis` after its first record, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSpec {
    #[serde(default = "batch_count")]
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub millis: Option<u64>,
}

fn batch_count() -> u32 {
    100
}

/// The most records one batch may hold.
pub const MAX_BATCH: u32 = 10_000;
