//! The record job as a step of a run (`records`). The data work (read,
//! map, validate, write, report) runs on a blocking thread in chunks
//! (`files::job`); between chunks this side sends batches to the action
//! through the one call path, fetches pages, writes checkpoints, and
//! notices a cancel or a shutdown. A batch is checkpointed as pending
//! before it is sent, so a crash sends it again, once, with the same key.
//! A transient failure or a rate limit suspends the run on the step's
//! retry schedule; it resumes from the checkpoint, batch in flight first.
//! A file for a remote destination is exported once the job is done
//! (`export.rs`).

mod export;

use std::{collections::HashSet, sync::Arc, time::Instant};

use rand::Rng;
use serde_json::{Value, json};

use super::{Interpreter, Outcome, Scope, Suspend, error_kind, keep_attempt};
use crate::{
    calls::{Purpose, Refused, Target, parse_output},
    clock::now_ms,
    engine::CallError,
    files::{
        Buckets, FormatSpec,
        formats::{self, Start},
        job::{Advance, FedReader, Feed, Item, Job, JobSetup, QueueReader, SourceFile},
        paths::folder_of,
    },
    flows::{
        RecordsSpec, StepSpec,
        mapping::{Mapping, shared},
        template::{self, ENV},
    },
    registry::parse_plugin_ref,
    runs::retry::{RetryPolicy, Verdict, classify},
    store::{Attempt, JobProgress, RunStatus, StepRecord, StepStatus},
};

/// Records handled per trip to the blocking thread.
const CHUNK: usize = 2_000;
/// A file output is checkpointed at least this often.
const CHECKPOINT_MS: u128 = 1_000;

/// How the job ended, for the step.
enum Ended {
    Done(Box<JobProgress>),
    Failed(String),
    Suspended(Outcome),
}

impl Interpreter<'_> {
    pub(super) async fn records(
        &self,
        step: &StepSpec,
        scope: &Scope,
        mut record: StepRecord,
    ) -> Outcome {
        let spec = step.records.as_ref().expect("kind says records");
        let address = record.key.clone();
        let (tenant, run_id, event) = {
            let run = self.lock();
            (
                run.tenant.clone(),
                run.id.clone(),
                run.event.payload.clone(),
            )
        };
        let buckets = self.runs.files.clone();
        let saved = match buckets.store().job(&tenant, &run_id, &address) {
            Ok(saved) => saved,
            Err(e) => {
                let error = self.error(&address, "records", e.to_string());
                return self.failed(step, record, error);
            }
        };
        if let Some(done) = saved.as_ref().filter(|p| p.state == "succeeded") {
            // Finished before the run's record caught up (a crash).
            return self.records_done(step, record, done.clone());
        }
        if let Some(closed) = saved.as_ref().filter(|p| p.state == "uploading") {
            // The file was done and going to its remote destination: on
            // with the same upload.
            let ended = self.upload(step, &mut record, closed.clone()).await;
            return self.records_ended(step, record, &address, ended);
        }
        let prepared = match self.job_setup(spec, scope, &tenant, &run_id, &address, &event) {
            Ok(prepared) => prepared,
            Err(e) => {
                let error = self.error(&address, "records", e);
                return self.failed(step, record, error);
            }
        };
        // Results so far are written before the job's side effects.
        if !self.checkpoint().await {
            return Outcome::Suspend(Suspend::Cancelled);
        }
        if record.note.is_none() {
            record.note = Some(format!("job: /v1/runs/{run_id}/jobs/{address}"));
            self.upsert(record.clone());
        }
        let ended = match prepared {
            Prepared::File {
                setup,
                source,
                format,
            } => {
                self.file_job(step, &mut record, setup, source, format, saved)
                    .await
            }
            Prepared::Pages { setup, pages } => {
                self.pages_job(step, &mut record, setup, pages, saved).await
            }
        };
        self.records_ended(step, record, &address, ended)
    }

    fn records_ended(
        &self,
        step: &StepSpec,
        record: StepRecord,
        address: &str,
        ended: Ended,
    ) -> Outcome {
        match ended {
            Ended::Done(progress) => self.records_done(step, record, *progress),
            Ended::Failed(message) => {
                let error = self.error(address, "records", message);
                self.failed(step, record, error)
            }
            Ended::Suspended(outcome) => {
                self.upsert(record);
                outcome
            }
        }
    }

    fn records_done(&self, _step: &StepSpec, mut record: StepRecord, job: JobProgress) -> Outcome {
        record.output = Some(json!({
            "records": job.counts,
            "files": job.files,
            "source": job.source,
        }));
        record.note = Some(format!(
            "{} records: {} good, {} failed, {} skipped",
            job.counts.read, job.counts.good, job.counts.failed, job.counts.skipped
        ));
        record.status = StepStatus::Succeeded;
        record.error = None;
        self.upsert(record);
        Outcome::Continue
    }

    /// Resolves the job's file (or pages), outputs and templates.
    fn job_setup(
        &self,
        spec: &RecordsSpec,
        scope: &Scope,
        tenant: &str,
        run_id: &str,
        address: &str,
        event: &Value,
    ) -> Result<Prepared, String> {
        let buckets = &self.runs.files;
        let mut context = self.context(scope);
        context["run"] = json!(run_id);
        // A replay of the failed records of an earlier job.
        let replay = event.get("_replay");
        let key_run = replay
            .and_then(|r| r.get("run"))
            .and_then(Value::as_str)
            .unwrap_or(run_id)
            .to_string();
        let only = match replay {
            Some(replay) => Some(failed_indices(buckets, tenant, replay)?),
            None => None,
        };
        let filter = spec
            .filter
            .as_ref()
            .map(|expr| {
                ENV.compile_expression_owned(expr.clone())
                    .map_err(|e| format!("where: {e}"))
            })
            .transpose()?;
        let map = spec
            .map
            .as_ref()
            .map(|m| Mapping::compile(m).map_err(|e| format!("map{e}")))
            .transpose()?;
        let schema = spec
            .schema
            .as_ref()
            .map(|s| jsonschema::validator_for(s).map_err(|e| format!("schema: {e}")))
            .transpose()?;
        let output = match &spec.to.file {
            Some(file) => {
                let path = text_of(template::render(&json!(file.path), &context)?);
                let format = match &file.format {
                    Some(format) => format.clone(),
                    None => FormatSpec::for_path(&path)
                        .ok_or_else(|| format!("to.file: `{path}` does not say its format"))?,
                };
                buckets
                    .bucket(tenant, &file.bucket)
                    .map_err(|e| e.to_string())?;
                Some((formats_target(&file.bucket, &path), format))
            }
            None => None,
        };
        let shared_context = ["trigger", "env", "steps", "changes", "previous", "item"]
            .into_iter()
            .filter_map(|name| Some((name, shared(context.get(name)?))))
            .collect::<Vec<_>>();
        let batch = spec.to.action.as_ref().map(|a| {
            a.batch.unwrap_or(crate::flows::BatchSpec {
                count: 1,
                bytes: None,
                millis: None,
            })
        });
        let setup = |key_base: String, reports: crate::files::job::Target| JobSetup {
            tenant: tenant.to_string(),
            run: run_id.to_string(),
            step: address.to_string(),
            key_base,
            filter,
            map,
            schema,
            context: shared_context,
            output: output.clone(),
            reports,
            batch,
            max_errors: spec.max_errors,
            max_error_percent: spec.max_error_percent,
            only,
        };
        let reports = |default_bucket: &str| -> Result<crate::files::job::Target, String> {
            Ok(match &spec.reports {
                Some(place) => {
                    let mut folder = text_of(template::render(&json!(place.folder), &context)?);
                    if !folder.is_empty() && !folder.ends_with('/') {
                        folder.push('/');
                    }
                    formats_target(&place.bucket, &folder)
                }
                None => match &output {
                    Some((target, _)) => formats_target(&target.bucket, folder_of(&target.path)),
                    None => formats_target(default_bucket, &format!("reports/{run_id}/{address}/")),
                },
            })
        };
        match (&spec.from.file, &spec.from.pages) {
            (Some(file), _) => {
                let place = template::render(file, &context)?;
                let (Some(bucket), Some(path)) = (
                    place.get("bucket").and_then(Value::as_str),
                    place.get("path").and_then(Value::as_str),
                ) else {
                    return Err(format!("from.file: {place} is not {{bucket, path}}"));
                };
                let object = buckets
                    .object(tenant, bucket, path)
                    .map_err(|e| e.to_string())?;
                let format = match &spec.from.format {
                    Some(format) => format.clone(),
                    None => FormatSpec::for_path(path).ok_or_else(|| {
                        format!("from.file: `{path}` does not say its format; give `from.format`")
                    })?,
                };
                let key_base = format!("{key_run}:{}", &object.sha256[..16]);
                let reports = reports(bucket)?;
                Ok(Prepared::File {
                    setup: setup(key_base, reports),
                    source: SourceFile {
                        bucket: object.bucket,
                        path: object.path,
                        size: object.size,
                        sha256: object.sha256,
                        blob: object.blob,
                    },
                    format,
                })
            }
            (None, Some(pages)) => {
                let bucket = output
                    .as_ref()
                    .map(|(t, _)| t.bucket.clone())
                    .ok_or("pages go to a file")?;
                let reports = reports(&bucket)?;
                Ok(Prepared::Pages {
                    setup: setup(format!("{key_run}:pages"), reports),
                    pages: Pages {
                        spec: pages.clone(),
                        context,
                    },
                })
            }
            (None, None) => Err("from: neither a file nor pages".into()),
        }
    }

    /// Whether to stop here: the run was cancelled, or the host is going
    /// down (the run comes back to this step at the next start).
    fn interrupted(&self) -> Option<Outcome> {
        let (tenant, id) = {
            let run = self.lock();
            (run.tenant.clone(), run.id.clone())
        };
        if let Ok(Some(run)) = self.runs.store.run(&tenant, &id)
            && !run.status.is_queued()
        {
            return Some(Outcome::Suspend(Suspend::Cancelled));
        }
        if *self.runs.tasks.shutdown_signal().borrow() {
            return Some(Outcome::Suspend(Suspend::At {
                status: RunStatus::Queued,
                due: now_ms(),
                error: None,
                until: None,
            }));
        }
        None
    }

    async fn file_job(
        &self,
        step: &StepSpec,
        record: &mut StepRecord,
        setup: JobSetup,
        source: SourceFile,
        format: FormatSpec,
        saved: Option<JobProgress>,
    ) -> Ended {
        let buckets = self.runs.files.clone();
        let described = json!({
            "bucket": source.bucket,
            "path": source.path,
            "size": source.size,
            "sha256": source.sha256,
        });
        if let Some(saved) = &saved
            && saved.source.get("sha256") != described.get("sha256")
        {
            return Ended::Failed(format!(
                "`{}/{}` changed while its job ran (it was {}); start a new run for the new file",
                source.bucket, source.path, saved.source["sha256"]
            ));
        }
        // XLSX positions are rows, not bytes.
        let total = match format {
            FormatSpec::Xlsx { .. } => None,
            _ => Some(source.size),
        };
        let tenant = setup.tenant.clone();
        let opened = {
            let buckets = buckets.clone();
            tokio::task::spawn_blocking(move || {
                let store = buckets.store().clone();
                let tempdir = buckets.settings().tempdir.clone();
                Job::open(
                    &*store,
                    Arc::new(setup),
                    described,
                    total,
                    saved,
                    &tempdir,
                    |start: Start| {
                        let blob = store
                            .open_blob(&tenant, &source.blob, false)
                            .map_err(|e| e.to_string())?;
                        formats::open_reader(&format, blob.file, source.size, start)
                    },
                )
            })
            .await
        };
        let job = match opened {
            Ok(Ok(job)) => job,
            Ok(Err(e)) => return Ended::Failed(e),
            Err(e) => return Ended::Failed(format!("the job's thread: {e}")),
        };
        self.drive(step, record, job, None).await
    }

    async fn pages_job(
        &self,
        step: &StepSpec,
        record: &mut StepRecord,
        setup: JobSetup,
        pages: Pages,
        saved: Option<JobProgress>,
    ) -> Ended {
        let buckets = self.runs.files.clone();
        let source = json!({
            "pages": {"plugin": pages.spec.plugin, "action": pages.spec.action},
        });
        let feed: Feed = Arc::new(std::sync::Mutex::new(QueueReader::default()));
        let reader_feed = feed.clone();
        let opened = tokio::task::spawn_blocking(move || {
            let store = buckets.store().clone();
            let tempdir = buckets.settings().tempdir.clone();
            Job::open(
                &*store,
                Arc::new(setup),
                source,
                None,
                saved,
                &tempdir,
                |start: Start| {
                    *reader_feed.lock().unwrap_or_else(|e| e.into_inner()) =
                        QueueReader::new(start.index);
                    Ok(Box::new(FedReader(reader_feed.clone())))
                },
            )
        })
        .await;
        let job = match opened {
            Ok(Ok(job)) => job,
            Ok(Err(e)) => return Ended::Failed(e),
            Err(e) => return Ended::Failed(format!("the job's thread: {e}")),
        };
        self.drive(step, record, job, Some((pages, feed))).await
    }

    /// Runs a job to its end, a suspension or a failure.
    async fn drive(
        &self,
        step: &StepSpec,
        record: &mut StepRecord,
        mut job: Job,
        mut pages: Option<(Pages, Feed)>,
    ) -> Ended {
        let buckets = self.runs.files.clone();
        let mut checkpointed = Instant::now();
        let mut paging_done = pages.is_none();
        loop {
            if let Some(outcome) = self.interrupted() {
                return match blocking(job, move |job| {
                    let store = buckets.store().clone();
                    job.checkpoint(&*store, None)
                })
                .await
                {
                    Ok(_) => Ended::Suspended(outcome),
                    Err(e) => Ended::Failed(e),
                };
            }
            let (back, advanced) = match blocking_advance(job).await {
                Ok(pair) => pair,
                Err(e) => return Ended::Failed(e),
            };
            job = back;
            let advanced = match advanced {
                Ok(advanced) => advanced,
                Err(e) => return self.end(job, false, Some(e)).await,
            };
            match advanced {
                Advance::Batch(items) => {
                    let pending = job.pending(&items);
                    let store = buckets.store().clone();
                    job = match blocking(job, move |job| job.checkpoint(&*store, pending)).await {
                        Ok(job) => job,
                        Err(e) => return Ended::Failed(e),
                    };
                    checkpointed = Instant::now();
                    let key = job.batch_key(&items);
                    match self.send(step, record, key, &items).await {
                        Sent::Ok => {
                            job.acknowledge(&items);
                            record.attempts = 0;
                            record.first_failure_at = None;
                        }
                        Sent::Rejected(error) => {
                            let stop = tokio::task::spawn_blocking(move || {
                                let stop = job.reject(&items, &error);
                                (job, stop)
                            })
                            .await;
                            let (back, stop) = match stop {
                                Ok(pair) => pair,
                                Err(e) => return Ended::Failed(format!("the job's thread: {e}")),
                            };
                            job = back;
                            match stop {
                                Ok(None) => {}
                                Ok(Some(stop)) => return self.end(job, false, Some(stop)).await,
                                Err(e) => return self.end(job, false, Some(e)).await,
                            }
                        }
                        Sent::Suspend(outcome) => {
                            // The batch stays pending: it goes first when the run resumes.
                            job.progress.state = "waiting".into();
                            let store = buckets.store().clone();
                            return match blocking(job, move |job| job.checkpoint(&*store, pending))
                                .await
                            {
                                Ok(_) => Ended::Suspended(outcome),
                                Err(e) => Ended::Failed(e),
                            };
                        }
                    }
                }
                Advance::Paused => {
                    if checkpointed.elapsed().as_millis() >= CHECKPOINT_MS {
                        let store = buckets.store().clone();
                        job = match blocking(job, move |job| job.checkpoint(&*store, None)).await {
                            Ok(job) => job,
                            Err(e) => return Ended::Failed(e),
                        };
                        checkpointed = Instant::now();
                    }
                }
                Advance::Done if !paging_done => {
                    let (spec, feed) = pages.as_mut().expect("pages until done");
                    // A page boundary: everything fed so far is written.
                    let store = buckets.store().clone();
                    job = match blocking(job, move |job| job.checkpoint(&*store, None)).await {
                        Ok(job) => job,
                        Err(e) => return Ended::Failed(e),
                    };
                    match self.next_page(step, record, &mut job, spec, feed).await {
                        Ok(true) => job.more(),
                        Ok(false) => paging_done = true,
                        Err(Paging::Failed(e)) => return self.end(job, false, Some(e)).await,
                        Err(Paging::Suspend(outcome)) => return Ended::Suspended(outcome),
                    }
                }
                Advance::Done if export::remote_of(step).is_some() => {
                    return self.export(step, record, job).await;
                }
                Advance::Done => return self.end(job, true, None).await,
                Advance::Stop(message) => return self.end(job, false, Some(message)).await,
            }
        }
    }

    /// Closes the job: its files become objects; the step succeeds or fails.
    async fn end(&self, job: Job, succeeded: bool, error: Option<String>) -> Ended {
        let buckets = self.runs.files.clone();
        let message = error.clone();
        let finished =
            tokio::task::spawn_blocking(move || job.finish(&buckets, succeeded, error)).await;
        match finished {
            Ok(Ok(progress)) if succeeded => Ended::Done(Box::new(progress)),
            Ok(Ok(progress)) => Ended::Failed(format!(
                "{} ({} records read, {} failed; see {})",
                message.unwrap_or_default(),
                progress.counts.read,
                progress.counts.failed,
                progress
                    .files
                    .get("errors")
                    .map_or("the job's errors", String::as_str)
            )),
            Ok(Err(e)) => Ended::Failed(e),
            Err(e) => Ended::Failed(format!("the job's thread: {e}")),
        }
    }

    /// Sends one batch (or one record) to the action.
    async fn send(
        &self,
        step: &StepSpec,
        record: &mut StepRecord,
        key: String,
        items: &[Item],
    ) -> Sent {
        let spec = step.records.as_ref().expect("records");
        let action = spec.to.action.as_ref().expect("an action sink");
        let (tenant, run_id) = {
            let run = self.lock();
            (run.tenant.clone(), run.id.clone())
        };
        let batched = action.batch.is_some();
        let values: Vec<Value> = items.iter().map(|i| i.value.clone()).collect();
        let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
        let input = match &action.input {
            None if batched => json!({ "items": values }),
            None => values.first().cloned().unwrap_or(Value::Null),
            Some(template) => {
                let mut context = self.context(&Scope::default());
                context["key"] = json!(key);
                if batched {
                    context["batch"] = json!(values);
                    context["keys"] = json!(keys);
                } else if let Some(item) = items.first() {
                    context["record"] = item.value.clone();
                    context["index"] = json!(item.index);
                }
                match template::render(template, &context) {
                    Ok(input) => input,
                    Err(e) => return Sent::Rejected(format!("to.action.input: {e}")),
                }
            }
        };
        let plugin = match parse_plugin_ref(&action.plugin) {
            Ok((key, _)) => key,
            Err(e) => return Sent::Rejected(e.to_string()),
        };
        let Some(version) = self.flow.pinned.records.get(&format!("{}.to", step.key)) else {
            return Sent::Rejected("the job's action has no pinned version".into());
        };
        let target = Target {
            tenant: &tenant,
            plugin: &plugin,
            version,
            connection: action.connection.as_deref(),
        };
        let purpose = Purpose::Step {
            run: run_id.clone(),
            step: record.key.clone(),
        };
        let call = match self.runs.calls.prepare(target, purpose, run_id.clone()) {
            Ok(call) => call,
            Err(Refused::Paused { connection, reason }) => {
                let error = self.error(
                    &record.key,
                    "auth",
                    format!("connection `{connection}` is paused ({reason}); fix it and resume the connection to continue"),
                );
                return Sent::Suspend(Outcome::Suspend(Suspend::Park { connection, error }));
            }
            Err(e) => return Sent::Rejected(e.to_string()),
        };
        let connection = call.connection.as_ref().map(|c| c.id.clone());
        let plugin_name = call.plugin.name();
        let started = now_ms();
        let outcome = self
            .runs
            .calls
            .perform(call, &action.action, &input.to_string(), &key)
            .await;
        let result = outcome.result.and_then(parse_output);
        let error = match result {
            Ok(_) => return Sent::Ok,
            Err(error) => error,
        };
        record.attempts += 1;
        let first_failure = *record.first_failure_at.get_or_insert(started);
        let verdict = RetryPolicy::for_step(step.retry.as_ref()).decide(
            classify(&error),
            record.attempts,
            first_failure,
            now_ms(),
            rand::rng().random_range(-1.0..=1.0),
        );
        let mut attempt = Attempt {
            number: record.attempts,
            started_at: started,
            duration_ms: outcome.duration.as_secs_f64() * 1e3,
            plugin: plugin_name,
            error: Some(json!(error)),
            journal: serde_json::to_value(&outcome.journal).unwrap_or(Value::Null),
            retry_at: None,
        };
        let kind = error_kind(&error);
        match verdict {
            Verdict::RetryAt(at) => {
                attempt.retry_at = Some(at);
                keep_attempt(record, attempt);
                record.status = StepStatus::Retrying;
                self.runs.metrics.retries.inc();
                Sent::Suspend(Outcome::Suspend(Suspend::At {
                    status: RunStatus::Retrying,
                    due: at,
                    error: Some(self.error(&record.key, kind, error.to_string())),
                    until: None,
                }))
            }
            Verdict::PauseConnection if connection.is_some() => {
                keep_attempt(record, attempt);
                let connection = connection.expect("checked");
                let error = self.error(
                    &record.key,
                    "auth",
                    format!(
                        "{error}; connection `{connection}` is paused until it is fixed and resumed"
                    ),
                );
                Sent::Suspend(Outcome::Suspend(Suspend::Park { connection, error }))
            }
            Verdict::PauseConnection | Verdict::Fail { .. } => {
                keep_attempt(record, attempt);
                // This batch failed for good; the next one starts afresh.
                record.attempts = 0;
                record.first_failure_at = None;
                Sent::Rejected(describe(&error))
            }
        }
    }

    /// Fetches the next page into the job; `false` when there is none.
    async fn next_page(
        &self,
        step: &StepSpec,
        record: &mut StepRecord,
        job: &mut Job,
        pages: &mut Pages,
        feed: &Feed,
    ) -> Result<bool, Paging> {
        let extra = &mut job.resume_extra;
        if extra.get("finished").and_then(Value::as_bool) == Some(true) {
            return Ok(false);
        }
        let page = extra.get("page").and_then(Value::as_u64).unwrap_or(0);
        if page >= pages.spec.max_pages {
            return Err(Paging::Failed(format!(
                "stopped after {page} pages (max_pages); raise it or narrow the query"
            )));
        }
        let cursor = extra.get("cursor").cloned().unwrap_or(Value::Null);
        let mut context = pages.context.clone();
        context["cursor"] = cursor;
        context["page"] = json!(page);
        let input = template::render(&pages.spec.input, &context)
            .map_err(|e| Paging::Failed(format!("from.pages.input: {e}")))?;
        let (tenant, run_id) = {
            let run = self.lock();
            (run.tenant.clone(), run.id.clone())
        };
        let plugin = parse_plugin_ref(&pages.spec.plugin)
            .map(|(k, _)| k)
            .map_err(|e| Paging::Failed(e.to_string()))?;
        let version = self
            .flow
            .pinned
            .records
            .get(&format!("{}.from", step.key))
            .ok_or_else(|| Paging::Failed("the job's pages have no pinned version".into()))?;
        let target = Target {
            tenant: &tenant,
            plugin: &plugin,
            version,
            connection: pages.spec.connection.as_deref(),
        };
        let purpose = Purpose::Step {
            run: run_id.clone(),
            step: record.key.clone(),
        };
        let call = self
            .runs
            .calls
            .prepare(target, purpose, run_id.clone())
            .map_err(|e| Paging::Failed(e.to_string()))?;
        let key = format!("{}:page:{page}", job.setup().key_base);
        let started = now_ms();
        let outcome = self
            .runs
            .calls
            .perform(call, &pages.spec.action, &input.to_string(), &key)
            .await;
        let output = match outcome.result.and_then(parse_output) {
            Ok(output) => output,
            Err(error) => {
                record.attempts += 1;
                let first = *record.first_failure_at.get_or_insert(started);
                let verdict = RetryPolicy::for_step(step.retry.as_ref()).decide(
                    classify(&error),
                    record.attempts,
                    first,
                    now_ms(),
                    rand::rng().random_range(-1.0..=1.0),
                );
                return match verdict {
                    Verdict::RetryAt(at) => Err(Paging::Suspend(Outcome::Suspend(Suspend::At {
                        status: RunStatus::Retrying,
                        due: at,
                        error: Some(self.error(&record.key, error_kind(&error), error.to_string())),
                        until: None,
                    }))),
                    _ => Err(Paging::Failed(format!("page {page}: {}", describe(&error)))),
                };
            }
        };
        record.attempts = 0;
        record.first_failure_at = None;
        let items = match dotted(&output, &pages.spec.items) {
            Some(Value::Array(items)) => items.clone(),
            Some(Value::Null) | None => Vec::new(),
            Some(other) => {
                return Err(Paging::Failed(format!(
                    "page {page}: `{}` is not an array but {other}",
                    pages.spec.items
                )));
            }
        };
        let next = dotted(&output, &pages.spec.next)
            .cloned()
            .unwrap_or(Value::Null);
        let finished = next.is_null() || next == json!("");
        FedReader::feed(feed, items);
        job.resume_extra.insert("page".into(), json!(page + 1));
        job.resume_extra.insert("cursor".into(), next);
        job.resume_extra.insert("finished".into(), json!(finished));
        Ok(true)
    }
}

enum Prepared {
    File {
        setup: JobSetup,
        source: SourceFile,
        format: FormatSpec,
    },
    Pages {
        setup: JobSetup,
        pages: Pages,
    },
}

struct Pages {
    spec: crate::flows::PagesSpec,
    context: Value,
}

enum Sent {
    Ok,
    Rejected(String),
    Suspend(Outcome),
}

enum Paging {
    Failed(String),
    Suspend(Outcome),
}

fn describe(error: &CallError) -> String {
    error.to_string()
}

fn text_of(value: Value) -> String {
    match value {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

fn formats_target(bucket: &str, path: &str) -> crate::files::job::Target {
    crate::files::job::Target {
        bucket: bucket.to_string(),
        path: path.to_string(),
    }
}

/// A value at a dotted path.
fn dotted<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.')
        .filter(|p| !p.is_empty())
        .try_fold(value, |v, part| v.get(part))
}

/// The indices of the records an earlier job failed, from its errors file.
fn failed_indices(buckets: &Buckets, tenant: &str, replay: &Value) -> Result<HashSet<u64>, String> {
    use std::io::BufRead;
    // The failures of the run replayed (`from`), keyed by the first run.
    let (Some(run), Some(step)) = (
        (replay.get("from").or_else(|| replay.get("run"))).and_then(Value::as_str),
        replay.get("step").and_then(Value::as_str),
    ) else {
        return Err("_replay: needs `run` and `step`".into());
    };
    let job = buckets
        .store()
        .job(tenant, run, step)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("run `{run}` has no job at step `{step}`"))?;
    let Some(errors) = job.files.get("errors") else {
        return Ok(HashSet::new());
    };
    let (bucket, path) = errors
        .split_once('/')
        .ok_or("a malformed errors file name")?;
    let (_, file) = buckets
        .open(tenant, bucket, path)
        .map_err(|e| e.to_string())?;
    let mut indices = HashSet::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| format!("reading {errors}: {e}"))?;
        if let Some(index) = serde_json::from_str::<Value>(&line)
            .ok()
            .and_then(|v| v.get("index").and_then(Value::as_u64))
        {
            indices.insert(index);
        }
    }
    Ok(indices)
}

/// Runs `work` on the job on a blocking thread and gives the job back.
async fn blocking(
    mut job: Job,
    work: impl FnOnce(&mut Job) -> Result<(), String> + Send + 'static,
) -> Result<Job, String> {
    tokio::task::spawn_blocking(move || work(&mut job).map(|_| job))
        .await
        .map_err(|e| format!("the job's thread: {e}"))?
}

async fn blocking_advance(mut job: Job) -> Result<(Job, Result<Advance, String>), String> {
    tokio::task::spawn_blocking(move || {
        let advanced = job.advance(CHUNK);
        (job, advanced)
    })
    .await
    .map_err(|e| format!("the job's thread: {e}"))
}
