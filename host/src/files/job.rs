//! The part of a record job that is plain data work, run on a blocking
//! thread: read records, skip those the `where` condition drops, map and
//! validate the rest, write them to the output (or gather them into the
//! batch the caller sends to an action), and put every failed record in
//! `errors.jsonl` and `rejected.csv`. Every record ends good, failed or
//! skipped.
//!
//! A checkpoint syncs the outputs, then writes the job's progress (the
//! source's byte offset and record index, the outputs' lengths, the batch in
//! flight): a job opened on that progress cuts its outputs back to those
//! lengths and reads on from there, so after a crash no record is written
//! twice, and the one batch that may have reached the action unacknowledged
//! is sent again exactly as it was, with the same key.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
    io::Read,
    sync::Arc,
    time::Instant,
};

use minijinja::Expression;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{
    Buckets,
    formats::{self, FormatSpec, Raw, Record, RecordReader, RecordWriter, Start},
    paths::check_path,
};
use crate::{
    clock::now_ms,
    error::ServiceError,
    flows::{
        BatchSpec,
        mapping::{Mapping, context, shared},
    },
    store::{FileStore, JobCounts, JobOutput, JobProgress, ObjectRecord, PendingBatch},
};

/// The file a job reads.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub bucket: String,
    pub path: String,
    pub size: u64,
    pub sha256: String,
    pub blob: String,
}

/// Where a job's file goes when it is done.
#[derive(Debug, Clone)]
pub struct Target {
    pub bucket: String,
    pub path: String,
}

/// Everything a job decides by, fixed when it starts.
pub struct JobSetup {
    pub tenant: String,
    pub run: String,
    pub step: String,
    /// The run (the first one, for a replay) and the file's hash: every
    /// record's idempotency key starts with it.
    pub key_base: String,
    pub filter: Option<Expression<'static, 'static>>,
    pub map: Option<Mapping>,
    pub schema: Option<jsonschema::Validator>,
    /// `trigger`, `env`, `steps`: what templates see besides the record.
    pub context: Vec<(&'static str, minijinja::Value)>,
    pub output: Option<(Target, FormatSpec)>,
    /// The folder (with its bucket) of `errors.jsonl` and `rejected.csv`.
    pub reports: Target,
    /// Records go to an action: in batches of this shape (one record per
    /// batch when sent one by one).
    pub batch: Option<BatchSpec>,
    pub max_errors: Option<u64>,
    pub max_error_percent: Option<f64>,
    /// Only these records (a replay of the failed ones).
    pub only: Option<HashSet<u64>>,
}

/// A record ready for the action.
#[derive(Debug, Clone)]
pub struct Item {
    pub index: u64,
    pub key: String,
    pub value: Value,
    pub raw: Raw,
    pub offset: u64,
}

/// What [`Job::advance`] stopped at.
#[derive(Debug)]
pub enum Advance {
    /// A batch for the action (checkpoint it as pending, then send it).
    Batch(Vec<Item>),
    /// Read as far as asked; nothing to send yet.
    Paused,
    /// The source is read to its end (a partial batch was returned before).
    Done,
    /// Too many records failed.
    Stop(String),
}

pub struct Job {
    setup: Arc<JobSetup>,
    pub progress: JobProgress,
    reader: Box<dyn RecordReader>,
    output: Option<Box<dyn RecordWriter>>,
    errors: Box<dyn RecordWriter>,
    rejected: Box<dyn RecordWriter>,
    /// A batch sent before the last checkpoint but not acknowledged: read
    /// and sent again first.
    replaying: Option<PendingBatch>,
    batch: Vec<Item>,
    batch_bytes: u64,
    batch_started: Option<Instant>,
    eof: bool,
    /// Records below this index were done before the checkpoint the job
    /// resumed from (read again only to reach the batch in flight).
    skip_below: u64,
    /// Kept with the checkpoint for whoever feeds the job (a page cursor).
    pub resume_extra: serde_json::Map<String, Value>,
}

/// The names of a job's outputs in its progress.
pub const OUTPUT: &str = "output";
const ERRORS: &str = "errors";
const REJECTED: &str = "rejected";

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Job {
    /// Opens a job on `source`, fresh or from its last checkpoint. `reader`
    /// makes the record reader from where to start (a file's or pages').
    pub fn open(
        store: &dyn FileStore,
        setup: Arc<JobSetup>,
        source: Value,
        total_bytes: Option<u64>,
        saved: Option<JobProgress>,
        tempdir: &std::path::Path,
        reader: impl FnOnce(Start) -> Result<Box<dyn RecordReader>, String>,
    ) -> Result<Job, String> {
        let tenant = setup.tenant.clone();
        let now = now_ms();
        // An output that cannot resume (XLSX) means the job starts over:
        // it has no side effects besides its files.
        let resumable = setup
            .output
            .as_ref()
            .is_none_or(|(_, format)| format.appendable());
        let saved = saved.filter(|p| p.state == "running" || p.state == "waiting");
        let saved = match saved {
            Some(p) if resumable => Some(p),
            Some(p) => {
                for output in p.outputs.values() {
                    let _ = store.delete_blob(&tenant, &output.blob);
                }
                None
            }
            None => None,
        };
        let mut progress = match saved {
            Some(progress) => progress,
            None => {
                let mut outputs = BTreeMap::new();
                let reports = &setup.reports;
                let mut add = |name: &str, bucket: &str, path: String| -> Result<(), String> {
                    let blob = store.create_blob(&tenant).map_err(text)?;
                    outputs.insert(
                        name.to_string(),
                        JobOutput {
                            blob: blob.id,
                            bucket: bucket.to_string(),
                            path,
                            length: 0,
                            records: 0,
                        },
                    );
                    Ok(())
                };
                if let Some((target, _)) = &setup.output {
                    add(OUTPUT, &target.bucket, target.path.clone())?;
                }
                add(
                    ERRORS,
                    &reports.bucket,
                    format!("{}errors.jsonl", reports.path),
                )?;
                add(
                    REJECTED,
                    &reports.bucket,
                    format!("{}rejected.csv", reports.path),
                )?;
                JobProgress {
                    run: setup.run.clone(),
                    step: setup.step.clone(),
                    state: "running".into(),
                    source: source.clone(),
                    offset: 0,
                    index: 0,
                    counts: JobCounts::default(),
                    total_bytes,
                    pending: None,
                    outputs,
                    resume: Value::Null,
                    files: BTreeMap::new(),
                    error: None,
                    started_at: now,
                    updated_at: now,
                    finished_at: None,
                }
            }
        };
        progress.state = "running".into();
        let replaying = progress.pending;
        let skip_below = progress.index;
        let resume_extra = progress
            .resume
            .get("extra")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let start = match replaying {
            Some(p) => Start {
                offset: p.offset,
                index: p.first,
                resume: progress.resume.clone(),
            },
            None => Start {
                offset: progress.offset,
                index: progress.index,
                resume: progress.resume.clone(),
            },
        };
        let reader = reader(start)?;
        let open = |name: &str, format: &FormatSpec| -> Result<Box<dyn RecordWriter>, String> {
            let output = progress
                .outputs
                .get(name)
                .ok_or_else(|| format!("the job has no `{name}` output"))?;
            let blob = store.open_blob(&tenant, &output.blob, true).map_err(text)?;
            let resume = progress
                .resume
                .get("writers")
                .and_then(|w| w.get(name))
                .cloned()
                .unwrap_or(Value::Null);
            formats::open_writer(
                format,
                blob.file,
                output.length,
                output.records,
                &resume,
                tempdir,
            )
        };
        let output = match &setup.output {
            Some((_, format)) => Some(open(OUTPUT, format)?),
            None => None,
        };
        let errors = open(ERRORS, &FormatSpec::Jsonl)?;
        let rejected_columns = reader
            .columns()
            .unwrap_or_else(|| vec!["index".into(), "record".into()]);
        let rejected = open(
            REJECTED,
            &FormatSpec::Csv {
                delimiter: ",".into(),
                quote: "\"".into(),
                header: true,
                columns: rejected_columns,
                encoding: None,
            },
        )?;
        Ok(Job {
            setup,
            progress,
            reader,
            output,
            errors,
            rejected,
            replaying,
            batch: Vec::new(),
            batch_bytes: 0,
            batch_started: None,
            eof: false,
            skip_below,
            resume_extra,
        })
    }

    pub fn setup(&self) -> &JobSetup {
        &self.setup
    }

    /// The idempotency key of record `index`.
    pub fn key(&self, index: u64) -> String {
        format!("{}:{index}", self.setup.key_base)
    }

    /// The idempotency key of a batch: its first record's key, and its last
    /// index when it has more than one.
    pub fn batch_key(&self, items: &[Item]) -> String {
        match (items.first(), items.last()) {
            (Some(first), Some(last)) if first.index != last.index => {
                format!("{}-{}", first.key, last.index)
            }
            (Some(first), _) => first.key.clone(),
            _ => self.setup.key_base.clone(),
        }
    }

    /// Reads up to `max` records (or until a batch is ready).
    pub fn advance(&mut self, max: usize) -> Result<Advance, String> {
        for _ in 0..max {
            if let Some(done) = self.batch_ready() {
                return Ok(done);
            }
            if self.eof {
                return Ok(self.flush_batch().unwrap_or(Advance::Done));
            }
            let Some(record) = self.reader.next_record()? else {
                self.eof = true;
                if let Some(pending) = self.replaying.take() {
                    return Err(format!(
                        "the source ended before the batch in flight ({}..{}) could be read again: has the file changed?",
                        pending.first, pending.last
                    ));
                }
                continue;
            };
            if let Some(pending) = self.replaying {
                // Failures in the batch's range were recorded before the
                // checkpoint: only the records that went out go again.
                let wanted = (self.setup.only.as_ref()).is_none_or(|o| o.contains(&record.index));
                if wanted && let Ok(Some(item)) = self.prepare(&record) {
                    self.push(item);
                }
                if record.index >= pending.last {
                    self.replaying = None;
                    return Ok(self.flush_batch().unwrap_or(Advance::Paused));
                }
                continue;
            }
            if record.index < self.skip_below {
                continue;
            }
            self.progress.offset = record.end;
            self.progress.index = record.index + 1;
            if let Some(total) = self.progress.total_bytes {
                self.progress.counts.bytes = record.end.min(total);
            }
            if let Some(only) = &self.setup.only
                && !only.contains(&record.index)
            {
                continue;
            }
            self.progress.counts.read += 1;
            match self.prepare(&record) {
                Ok(None) => self.progress.counts.skipped += 1,
                Ok(Some(item)) => match &mut self.output {
                    Some(output) => {
                        output.write(&item.value)?;
                        self.progress.counts.good += 1;
                    }
                    None => self.push(item),
                },
                Err(error) => {
                    self.fail(&record.raw, record.index, record.offset, &error)?;
                    if let Some(stop) = self.over_limit() {
                        return Ok(Advance::Stop(stop));
                    }
                }
            }
        }
        Ok(self.batch_ready().unwrap_or(Advance::Paused))
    }

    /// Filters, maps and validates one record; `None` when it is skipped.
    fn prepare(&self, record: &Record) -> Result<Option<Item>, String> {
        let value = record.value.clone()?;
        let setup = &self.setup;
        let needs_context = setup.filter.is_some() || setup.map.is_some();
        let ctx = needs_context.then(|| {
            let mut pairs = setup.context.clone();
            pairs.push(("record", shared(&value)));
            pairs.push(("index", minijinja::Value::from(record.index)));
            context(pairs)
        });
        if let (Some(filter), Some(ctx)) = (&setup.filter, &ctx) {
            let keep = filter
                .eval(ctx.clone())
                .map_err(|e| format!("where: {e}"))?;
            if !keep.is_true() {
                return Ok(None);
            }
        }
        let value = match (&setup.map, &ctx) {
            (Some(map), Some(ctx)) => map.render(ctx).map_err(|e| format!("map{e}"))?,
            _ => value,
        };
        if let Some(schema) = &setup.schema {
            let problems: Vec<String> = schema
                .iter_errors(&value)
                .map(|e| {
                    let at = e.instance_path().to_string();
                    format!("{}: {e}", if at.is_empty() { "(root)" } else { &at })
                })
                .collect();
            if !problems.is_empty() {
                return Err(format!("schema: {}", problems.join("; ")));
            }
        }
        Ok(Some(Item {
            index: record.index,
            key: self.key(record.index),
            value,
            raw: record.raw.clone(),
            offset: record.offset,
        }))
    }

    fn push(&mut self, item: Item) {
        if self.batch.is_empty() {
            self.batch_started = Some(Instant::now());
        }
        self.batch_bytes += item.value.to_string().len() as u64;
        self.batch.push(item);
    }

    fn batch_ready(&mut self) -> Option<Advance> {
        if self.batch.is_empty() || self.replaying.is_some() {
            return None;
        }
        let spec = self.setup.batch.unwrap_or(BatchSpec {
            count: 1,
            bytes: None,
            millis: None,
        });
        let full = self.batch.len() >= spec.count as usize
            || spec.bytes.is_some_and(|b| self.batch_bytes >= b)
            || spec.millis.is_some_and(|ms| {
                self.batch_started
                    .is_some_and(|t| t.elapsed().as_millis() as u64 >= ms)
            });
        full.then(|| self.flush_batch()).flatten()
    }

    fn flush_batch(&mut self) -> Option<Advance> {
        if self.batch.is_empty() {
            return None;
        }
        self.batch_bytes = 0;
        self.batch_started = None;
        Some(Advance::Batch(std::mem::take(&mut self.batch)))
    }

    /// The batch in flight, as a checkpoint records it.
    pub fn pending(&self, items: &[Item]) -> Option<PendingBatch> {
        Some(PendingBatch {
            first: items.first()?.index,
            last: items.last()?.index,
            offset: items.first()?.offset,
            next_offset: self.progress.offset,
        })
    }

    /// The action took these records.
    pub fn acknowledge(&mut self, items: &[Item]) {
        self.progress.counts.good += items.len() as u64;
    }

    /// The action refused these records for good.
    pub fn reject(&mut self, items: &[Item], error: &str) -> Result<Option<String>, String> {
        for item in items {
            self.fail(
                &item.raw,
                item.index,
                item.offset,
                &format!("action: {error}"),
            )?;
        }
        Ok(self.over_limit())
    }

    fn fail(&mut self, raw: &Raw, index: u64, offset: u64, error: &str) -> Result<(), String> {
        self.progress.counts.failed += 1;
        let record = match raw {
            Raw::Fields(fields) => match self.reader.columns() {
                Some(columns) if columns.len() == fields.len() => Value::Object(
                    columns
                        .into_iter()
                        .zip(fields.iter().cloned().map(Value::String))
                        .collect(),
                ),
                _ => json!(fields),
            },
            Raw::Text(text) => {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone()))
            }
        };
        self.errors.write(&json!({
            "index": index,
            "offset": offset,
            "error": error,
            "record": record,
        }))?;
        match raw {
            Raw::Fields(fields) => self.rejected.write(&json!(fields)),
            Raw::Text(text) => self.rejected.write(&json!([index.to_string(), text])),
        }
    }

    fn over_limit(&self) -> Option<String> {
        let counts = self.progress.counts;
        if let Some(max) = self.setup.max_errors
            && counts.failed > max
        {
            return Some(format!(
                "stopped after {} failed records (max_errors is {max})",
                counts.failed
            ));
        }
        if let Some(pct) = self.setup.max_error_percent
            && counts.read >= 100
            && counts.failed as f64 * 100.0 > pct * counts.read as f64
        {
            return Some(format!(
                "stopped: {} of {} records failed, more than max_error_percent ({pct}%)",
                counts.failed, counts.read
            ));
        }
        None
    }

    /// Syncs the outputs and writes the progress (flushed), with the batch
    /// about to be sent as pending.
    pub fn checkpoint(
        &mut self,
        store: &dyn FileStore,
        pending: Option<PendingBatch>,
    ) -> Result<(), String> {
        let mut writers = serde_json::Map::new();
        let mut sync =
            |name: &str, writer: &mut Box<dyn RecordWriter>, progress: &mut JobProgress| {
                let length = writer.checkpoint()?;
                if let (Some(length), Some(output)) = (length, progress.outputs.get_mut(name)) {
                    output.length = length;
                }
                writers.insert(name.to_string(), writer.resume());
                Ok::<(), String>(())
            };
        if let Some(output) = &mut self.output {
            sync(OUTPUT, output, &mut self.progress)?;
        }
        sync(ERRORS, &mut self.errors, &mut self.progress)?;
        sync(REJECTED, &mut self.rejected, &mut self.progress)?;
        if let Some(output) = self.progress.outputs.get_mut(OUTPUT) {
            output.records = self.progress.counts.good;
        }
        // A reader resumes from its own fields; writers and feeders from
        // theirs.
        let mut resume = match self.reader.resume() {
            Value::Object(fields) => fields,
            _ => serde_json::Map::new(),
        };
        resume.insert("writers".into(), Value::Object(writers));
        resume.insert("extra".into(), Value::Object(self.resume_extra.clone()));
        self.progress.resume = Value::Object(resume);
        self.progress.pending = pending;
        self.progress.updated_at = now_ms();
        store
            .put_job(&self.setup.tenant, &self.progress, true)
            .map_err(text)
    }

    /// Closes the outputs (an XLSX file is written out here) and puts
    /// their final lengths in the progress, which it returns; nothing
    /// becomes an object yet (see [`commit`]).
    pub fn close(mut self) -> Result<JobProgress, String> {
        let mut finished: Vec<(&str, u64)> = Vec::new();
        if let Some(output) = self.output.take() {
            finished.push((OUTPUT, output.finish()?));
        }
        finished.push((ERRORS, self.errors.finish()?));
        finished.push((REJECTED, self.rejected.finish()?));
        for (name, length) in finished {
            if let Some(output) = self.progress.outputs.get_mut(name) {
                output.length = length;
            }
        }
        self.progress.pending = None;
        Ok(self.progress)
    }

    /// Closes the outputs and makes them objects: the output (with its
    /// manifest) when the job succeeded, the reports when records failed.
    /// Returns the job's final progress.
    pub fn finish(
        self,
        buckets: &Buckets,
        succeeded: bool,
        error: Option<String>,
    ) -> Result<JobProgress, String> {
        let format = self.setup.output.as_ref().map(|(_, f)| f.clone());
        let tenant = self.setup.tenant.clone();
        let progress = self.close()?;
        commit(
            buckets,
            &tenant,
            progress,
            format.as_ref(),
            succeeded,
            error,
            None,
        )
    }
}

/// Makes a closed job's outputs objects and writes its final progress: the
/// output (with its manifest) when the job succeeded, the reports when
/// records failed. `exported` names where the output went instead when a
/// remote destination took it (its blob is then dropped here).
pub fn commit(
    buckets: &Buckets,
    tenant: &str,
    mut progress: JobProgress,
    format: Option<&FormatSpec>,
    succeeded: bool,
    error: Option<String>,
    exported: Option<BTreeMap<String, String>>,
) -> Result<JobProgress, String> {
    let tenant = tenant.to_string();
    let store = buckets.store().clone();
    let mut files = BTreeMap::new();
    let outputs = std::mem::take(&mut progress.outputs);
    let failed = progress.counts.failed > 0;
    for (name, output) in &outputs {
        let keep = match name.as_str() {
            OUTPUT => succeeded && exported.is_none(),
            _ => failed,
        };
        if !keep {
            store.delete_blob(&tenant, &output.blob).map_err(text)?;
            continue;
        }
        let object = commit_blob(
            buckets,
            &tenant,
            output,
            output.length,
            content_type(name, &output.path),
        )
        .map_err(text)?;
        files.insert(name.clone(), format!("{}/{}", object.bucket, object.path));
    }
    if let (true, Some(output)) = (succeeded, outputs.get(OUTPUT))
        && files.contains_key(OUTPUT)
    {
        let object = buckets
            .object(&tenant, &output.bucket, &output.path)
            .map_err(text)?;
        let manifest = json!({
            "run": progress.run,
            "step": progress.step,
            "source": progress.source,
            "file": {
                "bucket": object.bucket,
                "path": object.path,
                "size": object.size,
                "sha256": object.sha256,
                "format": format,
            },
            "records": progress.counts,
            "created_at": object.created_at,
        });
        let path = format!("{}.manifest.json", output.path);
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(text)?;
        buckets
            .put_bytes(&tenant, &output.bucket, &path, "application/json", &bytes)
            .map_err(text)?;
        files.insert("manifest".into(), format!("{}/{path}", output.bucket));
    }
    if succeeded && let Some(exported) = exported {
        files.extend(exported);
    }
    let now = now_ms();
    progress.files = files;
    progress.pending = None;
    progress.state = if succeeded { "succeeded" } else { "failed" }.into();
    progress.error = error;
    progress.updated_at = now;
    progress.finished_at = Some(now);
    store.put_job(&tenant, &progress, true).map_err(text)?;
    Ok(progress)
}

fn content_type(name: &str, path: &str) -> String {
    match name {
        ERRORS => "application/x-ndjson".into(),
        REJECTED => "text/csv".into(),
        _ => match path
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("csv") => "text/csv".into(),
            Some("jsonl" | "ndjson") => "application/x-ndjson".into(),
            Some("json") => "application/json".into(),
            Some("xml") => "application/xml".into(),
            Some("xlsx") => {
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet".into()
            }
            _ => "application/octet-stream".into(),
        },
    }
}

/// Makes a finished blob an object: its hash is read back, streamed.
fn commit_blob(
    buckets: &Buckets,
    tenant: &str,
    output: &JobOutput,
    length: u64,
    content_type: String,
) -> Result<ObjectRecord, ServiceError> {
    check_path(&output.path).map_err(ServiceError::BadRequest)?;
    let sha256 = blob_sha256(buckets.store().as_ref(), tenant, &output.blob)?;
    buckets.commit(ObjectRecord {
        tenant: tenant.to_string(),
        bucket: output.bucket.clone(),
        path: output.path.clone(),
        size: length,
        sha256,
        content_type: Some(content_type),
        created_at: now_ms(),
        blob: output.blob.clone(),
    })
}

/// The SHA-256 (hex) of a blob, read in 64 KiB chunks.
pub fn blob_sha256(
    store: &dyn FileStore,
    tenant: &str,
    blob: &str,
) -> Result<String, ServiceError> {
    let mut file = store.open_blob(tenant, blob, false)?.file;
    let mut hash = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| ServiceError::Internal(format!("reading blob {blob}: {e}")))?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
    }
    Ok(hex::encode(hash.finalize()))
}

/// The content type of a job's output at `path`.
pub fn output_content_type(path: &str) -> String {
    content_type(OUTPUT, path)
}

/// Records handed over in memory: the items of the pages a job fetches
/// from a connector.
#[derive(Default)]
pub struct QueueReader {
    items: VecDeque<Value>,
    index: u64,
}

impl QueueReader {
    pub fn new(index: u64) -> Self {
        QueueReader {
            items: VecDeque::new(),
            index,
        }
    }
}

/// A handle to feed a [`QueueReader`] that a job owns.
pub type Feed = Arc<std::sync::Mutex<QueueReader>>;

/// The reader side of a [`Feed`].
pub struct FedReader(pub Feed);

impl FedReader {
    pub fn feed(feed: &Feed, items: Vec<Value>) {
        feed.lock()
            .unwrap_or_else(|e| e.into_inner())
            .items
            .extend(items);
    }
}

impl RecordReader for FedReader {
    fn next_record(&mut self) -> Result<Option<Record>, String> {
        let mut queue = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(value) = queue.items.pop_front() else {
            return Ok(None);
        };
        let index = queue.index;
        queue.index += 1;
        Ok(Some(Record {
            index,
            offset: index,
            end: index + 1,
            raw: Raw::Text(value.to_string()),
            value: Ok(value),
        }))
    }

    fn resume(&self) -> Value {
        Value::Null
    }
}

impl Job {
    /// Starts reading again after the source said it had ended (the next
    /// page was fed).
    pub fn more(&mut self) {
        self.eof = false;
    }
}
