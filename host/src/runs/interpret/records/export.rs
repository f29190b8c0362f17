//! A record job's file to a remote location (`to.file.remote`). The job
//! writes its output to a blob on the host's disk, as for a bucket; once
//! it is closed, the blob goes up through the destination's connector (the
//! one call path: sandbox, host-held credentials, rate limits) part by
//! part, one part in memory at a time, as a multipart upload, so the file
//! appears under its path only when complete (a file that fits one part
//! is one `put`, which a store also applies whole or not at all). Its
//! manifest is written beside it last. The upload's state (its id, the
//! parts done and their ETags) is written to the job's progress after every
//! call, so a retry, a restart or a parked run goes on with the same upload
//! and nothing is uploaded twice; a failure for good aborts it, so no
//! parts are left behind.

use std::{
    collections::BTreeMap,
    io::{Read, Seek, SeekFrom},
};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Ended, Interpreter, Outcome, Suspend, error_kind, keep_attempt};
use crate::{
    calls::{Purpose, Refused, Target, parse_output},
    clock::now_ms,
    files::{
        FormatSpec,
        job::{self, Job, OUTPUT, blob_sha256, output_content_type},
    },
    flows::{RemoteSinkSpec, StepSpec},
    registry::parse_plugin_ref,
    runs::retry::{RetryPolicy, Verdict, classify},
    store::{Attempt, JobProgress, RunStatus, StepRecord, StepStatus},
};

/// What is known of an export between calls (the job progress's
/// `resume.upload`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Upload {
    size: u64,
    sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    format: Option<FormatSpec>,
    /// The multipart upload, once started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default)]
    parts: Vec<Part>,
    /// The file is under its path (completed, or put whole).
    #[serde(default)]
    landed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Part {
    part_number: u64,
    etag: String,
}

/// Why an export stopped before its end.
enum Stop {
    Suspend(Outcome),
    Failed(String),
}

impl Interpreter<'_> {
    /// Closes a finished job whose file goes to a remote destination and
    /// exports it.
    pub(super) async fn export(&self, step: &StepSpec, record: &mut StepRecord, job: Job) -> Ended {
        let format = job.setup().output.as_ref().map(|(_, f)| f.clone());
        let tenant = job.setup().tenant.clone();
        let store = self.runs.files.store().clone();
        let closed = tokio::task::spawn_blocking(move || {
            let mut progress = job.close()?;
            let output = progress
                .outputs
                .get(OUTPUT)
                .ok_or("the job has no output")?;
            let upload = Upload {
                size: output.length,
                sha256: blob_sha256(store.as_ref(), &tenant, &output.blob)
                    .map_err(|e| e.to_string())?,
                format,
                ..Upload::default()
            };
            progress.state = "uploading".into();
            set_upload(&mut progress, &upload);
            progress.updated_at = now_ms();
            store
                .put_job(&tenant, &progress, true)
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(progress)
        })
        .await;
        match closed {
            Ok(Ok(progress)) => self.upload(step, record, progress).await,
            Ok(Err(e)) => Ended::Failed(e),
            Err(e) => Ended::Failed(format!("the job's thread: {e}")),
        }
    }

    /// Exports a closed job's file: from where the last call left it (a
    /// retry or a restart), to its manifest; then the job is done.
    pub(super) async fn upload(
        &self,
        step: &StepSpec,
        record: &mut StepRecord,
        mut progress: JobProgress,
    ) -> Ended {
        let Some(remote) = remote_of(step) else {
            return Ended::Failed("the job's output is not remote any more".into());
        };
        let Some(output) = progress.outputs.get(OUTPUT).cloned() else {
            return Ended::Failed("the job has no output".into());
        };
        let mut upload: Upload = match progress.resume.get("upload").cloned() {
            Some(saved) => match serde_json::from_value(saved) {
                Ok(upload) => upload,
                Err(e) => return Ended::Failed(format!("the export's saved state: {e}")),
            },
            None => return Ended::Failed("the export has no saved state".into()),
        };
        let tenant = self.lock().tenant.clone();
        let exporting = Exporting {
            remote,
            path: output.path.clone(),
            blob: output.blob.clone(),
            tenant: tenant.clone(),
        };
        let result = self
            .upload_steps(step, record, &exporting, &mut progress, &mut upload)
            .await;
        let buckets = self.runs.files.clone();
        match result {
            Ok(files) => {
                let format = upload.format.clone();
                let done = tokio::task::spawn_blocking(move || {
                    job::commit(
                        &buckets,
                        &tenant,
                        progress,
                        format.as_ref(),
                        true,
                        None,
                        Some(files),
                    )
                })
                .await;
                match done {
                    Ok(Ok(progress)) => Ended::Done(Box::new(progress)),
                    Ok(Err(e)) => Ended::Failed(e),
                    Err(e) => Ended::Failed(format!("the job's thread: {e}")),
                }
            }
            Err(Stop::Suspend(outcome)) => {
                // Goes on from here when the run comes back to the step.
                if let Outcome::Suspend(Suspend::Cancelled) = outcome {
                    self.abort(step, record, &exporting, &upload).await;
                    let message = Some("cancelled while exporting".to_string());
                    let _ = tokio::task::spawn_blocking(move || {
                        job::commit(&buckets, &tenant, progress, None, false, message, None)
                    })
                    .await;
                } else if let Err(e) = self.save(&tenant, &mut progress, &upload) {
                    return Ended::Failed(e);
                }
                Ended::Suspended(outcome)
            }
            Err(Stop::Failed(message)) => {
                let aborted = self.abort(step, record, &exporting, &upload).await;
                let message = match aborted {
                    Some(problem) => format!("{message} ({problem})"),
                    None => message,
                };
                let error = Some(message.clone());
                let committed = tokio::task::spawn_blocking(move || {
                    job::commit(&buckets, &tenant, progress, None, false, error, None)
                })
                .await;
                match committed {
                    Ok(Ok(_)) => Ended::Failed(message),
                    Ok(Err(e)) => Ended::Failed(format!("{message}; then: {e}")),
                    Err(e) => Ended::Failed(format!("{message}; then the job's thread: {e}")),
                }
            }
        }
    }

    /// The calls of an export, each skipped when the saved state says it
    /// was done; returns the files it made, as the job lists them.
    async fn upload_steps(
        &self,
        step: &StepSpec,
        record: &mut StepRecord,
        exporting: &Exporting,
        progress: &mut JobProgress,
        upload: &mut Upload,
    ) -> Result<BTreeMap<String, String>, Stop> {
        let remote = &exporting.remote;
        let path = &exporting.path;
        let key_base = format!("{}:{}:export", progress.run, progress.step);
        let content_type = output_content_type(path);
        let input = |fields: Value| -> Value {
            let mut input = remote.params.clone();
            if let (Some(input), Value::Object(fields)) = (input.as_object_mut(), fields) {
                input.extend(fields);
            }
            input
        };
        let parts = upload.size.div_ceil(remote.part_bytes).max(1);
        if !upload.landed && parts == 1 {
            // One part: a single put, whole or not at all.
            let data = self.read_part(exporting, 0, upload.size).await?;
            let fields = json!({"path": path, "data_base64": data, "content_type": content_type});
            self.call(
                step,
                record,
                exporting,
                "put",
                &remote.put,
                input(fields),
                &format!("{key_base}:put"),
            )
            .await?;
            upload.landed = true;
            self.save(&exporting.tenant, progress, upload)
                .map_err(Stop::Failed)?;
        }
        if !upload.landed {
            let id = match &upload.id {
                Some(id) => id.clone(),
                None => {
                    let fields = json!({"path": path, "content_type": content_type});
                    let started = self
                        .call(
                            step,
                            record,
                            exporting,
                            "create",
                            &remote.create,
                            input(fields),
                            &format!("{key_base}:create"),
                        )
                        .await?;
                    let id = started["upload_id"]
                        .as_str()
                        .filter(|id| !id.is_empty())
                        .ok_or_else(|| {
                            Stop::Failed(format!(
                                "to.file.remote.create: `{}` answered no `upload_id` ({started})",
                                remote.create
                            ))
                        })?
                        .to_string();
                    upload.id = Some(id.clone());
                    self.save(&exporting.tenant, progress, upload)
                        .map_err(Stop::Failed)?;
                    id
                }
            };
            for number in (upload.parts.len() as u64 + 1)..=parts {
                if let Some(outcome) = self.interrupted() {
                    return Err(Stop::Suspend(outcome));
                }
                let offset = (number - 1) * remote.part_bytes;
                let length = remote.part_bytes.min(upload.size - offset);
                let data = self.read_part(exporting, offset, length).await?;
                let fields = json!({
                    "path": path, "upload_id": id, "part_number": number, "data_base64": data,
                });
                let answer = self
                    .call(
                        step,
                        record,
                        exporting,
                        &format!("upload_part (part {number} of {parts})"),
                        &remote.upload_part,
                        input(fields),
                        &format!("{key_base}:part:{number}"),
                    )
                    .await?;
                let etag = answer["etag"]
                    .as_str()
                    .unwrap_or_default()
                    .trim_matches('"');
                if etag.is_empty() {
                    return Err(Stop::Failed(format!(
                        "to.file.remote.upload_part: `{}` answered no `etag` for part {number}",
                        remote.upload_part
                    )));
                }
                upload.parts.push(Part {
                    part_number: number,
                    etag: etag.to_string(),
                });
                self.save(&exporting.tenant, progress, upload)
                    .map_err(Stop::Failed)?;
            }
            let fields = json!({"path": path, "upload_id": id, "parts": upload.parts});
            self.call(
                step,
                record,
                exporting,
                "complete",
                &remote.complete,
                input(fields),
                &format!("{key_base}:complete"),
            )
            .await?;
            upload.landed = true;
            self.save(&exporting.tenant, progress, upload)
                .map_err(Stop::Failed)?;
        }
        let manifest = json!({
            "run": progress.run,
            "step": progress.step,
            "source": progress.source,
            "file": {
                "plugin": remote.plugin,
                "params": remote.params,
                "path": path,
                "size": upload.size,
                "sha256": upload.sha256,
                "format": upload.format,
                "parts": upload.parts.len().max(1),
            },
            "records": progress.counts,
            "created_at": now_ms(),
        });
        let manifest_path = format!("{path}.manifest.json");
        let text = serde_json::to_string_pretty(&manifest).unwrap_or_default();
        let fields =
            json!({"path": manifest_path, "text": text, "content_type": "application/json"});
        self.call(
            step,
            record,
            exporting,
            "put",
            &remote.put,
            input(fields),
            &format!("{key_base}:manifest"),
        )
        .await?;
        let place = |path: &str| match remote.params.get("bucket").and_then(Value::as_str) {
            Some(bucket) => format!("{}:{bucket}/{path}", remote.plugin),
            None => format!("{}:{path}", remote.plugin),
        };
        Ok(BTreeMap::from([
            (OUTPUT.to_string(), place(path)),
            ("manifest".to_string(), place(&manifest_path)),
        ]))
    }

    /// Bytes `offset..offset + length` of the closed output, as base64.
    async fn read_part(
        &self,
        exporting: &Exporting,
        offset: u64,
        length: u64,
    ) -> Result<String, Stop> {
        let store = self.runs.files.store().clone();
        let (tenant, blob) = (exporting.tenant.clone(), exporting.blob.clone());
        let read = tokio::task::spawn_blocking(move || {
            let mut file = store
                .open_blob(&tenant, &blob, false)
                .map_err(|e| e.to_string())?
                .file;
            file.seek(SeekFrom::Start(offset))
                .map_err(|e| format!("reading the export's blob: {e}"))?;
            let mut bytes = vec![0; length as usize];
            file.read_exact(&mut bytes)
                .map_err(|e| format!("reading the export's blob: {e}"))?;
            Ok::<_, String>(BASE64.encode(bytes))
        })
        .await;
        match read {
            Ok(Ok(data)) => Ok(data),
            Ok(Err(e)) => Err(Stop::Failed(e)),
            Err(e) => Err(Stop::Failed(format!("the job's thread: {e}"))),
        }
    }

    /// Writes the export's state into the job's progress (flushed).
    fn save(
        &self,
        tenant: &str,
        progress: &mut JobProgress,
        upload: &Upload,
    ) -> Result<(), String> {
        set_upload(progress, upload);
        progress.updated_at = now_ms();
        self.runs
            .files
            .store()
            .put_job(tenant, progress, true)
            .map_err(|e| e.to_string())
    }

    /// Drops an unfinished multipart upload and its parts; what went wrong
    /// when it could not.
    async fn abort(
        &self,
        step: &StepSpec,
        record: &mut StepRecord,
        exporting: &Exporting,
        upload: &Upload,
    ) -> Option<String> {
        let (Some(id), false) = (&upload.id, upload.landed) else {
            return None;
        };
        let remote = &exporting.remote;
        let mut input = remote.params.clone();
        input["path"] = json!(exporting.path);
        input["upload_id"] = json!(id);
        let key = format!("{}:{}:export:abort", self.lock().id, record.key);
        // Once, whatever the retry schedule says: the run is ending.
        let before = (record.attempts, record.first_failure_at);
        let aborted = self
            .call(step, record, exporting, "abort", &remote.abort, input, &key)
            .await;
        (record.attempts, record.first_failure_at) = before;
        match aborted {
            Ok(_) => None,
            Err(Stop::Failed(e)) => Some(format!("aborting the upload failed too: {e}")),
            Err(Stop::Suspend(_)) => Some(format!(
                "the upload `{id}` could not be aborted now; a lifecycle rule of the store removes it"
            )),
        }
    }

    /// One call of the destination's connector, as a step's: a failure
    /// is retried on the step's schedule (the run suspends), parks the run
    /// behind a connection with bad credentials, or fails for good.
    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        step: &StepSpec,
        record: &mut StepRecord,
        exporting: &Exporting,
        role: &str,
        action: &str,
        input: Value,
        key: &str,
    ) -> Result<Value, Stop> {
        let remote = &exporting.remote;
        let place = format!(
            "to.file.remote.{}: `{action}` of {} for `{}`",
            role, remote.plugin, exporting.path
        );
        let (tenant, run_id) = {
            let run = self.lock();
            (run.tenant.clone(), run.id.clone())
        };
        let plugin = parse_plugin_ref(&remote.plugin)
            .map(|(key, _)| key)
            .map_err(|e| Stop::Failed(format!("{place}: {e}")))?;
        let version = self
            .flow
            .pinned
            .records
            .get(&format!("{}.to", step.key))
            .ok_or_else(|| Stop::Failed(format!("{place}: no pinned version")))?;
        let target = Target {
            tenant: &tenant,
            plugin: &plugin,
            version,
            connection: remote.connection.as_deref(),
        };
        let purpose = Purpose::Step {
            run: run_id.clone(),
            step: record.key.clone(),
        };
        let call = match self.runs.calls.prepare(target, purpose, run_id) {
            Ok(call) => call,
            Err(Refused::Paused { connection, reason }) => {
                let error = self.error(
                    &record.key,
                    "auth",
                    format!("connection `{connection}` is paused ({reason}); fix it and resume the connection to continue the export"),
                );
                return Err(Stop::Suspend(Outcome::Suspend(Suspend::Park {
                    connection,
                    error,
                })));
            }
            Err(e) => return Err(Stop::Failed(format!("{place}: {e}"))),
        };
        let connection = call.connection.as_ref().map(|c| c.id.clone());
        let plugin_name = call.plugin.name();
        let started = now_ms();
        let outcome = self
            .runs
            .calls
            .perform(call, action, &input.to_string(), key)
            .await;
        let error = match outcome.result.and_then(parse_output) {
            Ok(output) => {
                record.attempts = 0;
                record.first_failure_at = None;
                return Ok(output);
            }
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
        let message = format!("{place}: {error}");
        match verdict {
            Verdict::RetryAt(at) => {
                attempt.retry_at = Some(at);
                keep_attempt(record, attempt);
                record.status = StepStatus::Retrying;
                self.runs.metrics.retries.inc();
                Err(Stop::Suspend(Outcome::Suspend(Suspend::At {
                    status: RunStatus::Retrying,
                    due: at,
                    error: Some(self.error(&record.key, error_kind(&error), message)),
                    until: None,
                })))
            }
            Verdict::PauseConnection if connection.is_some() => {
                keep_attempt(record, attempt);
                let connection = connection.expect("checked");
                let error = self.error(
                    &record.key,
                    "auth",
                    format!("{message}; connection `{connection}` is paused until it is fixed and resumed"),
                );
                Err(Stop::Suspend(Outcome::Suspend(Suspend::Park {
                    connection,
                    error,
                })))
            }
            Verdict::PauseConnection | Verdict::Fail { .. } => {
                keep_attempt(record, attempt);
                record.attempts = 0;
                record.first_failure_at = None;
                Err(Stop::Failed(message))
            }
        }
    }
}

/// What an export writes, and from where.
struct Exporting {
    remote: RemoteSinkSpec,
    path: String,
    blob: String,
    tenant: String,
}

/// The step's remote destination, when its file goes to one.
pub(super) fn remote_of(step: &StepSpec) -> Option<RemoteSinkSpec> {
    step.records.as_ref()?.to.file.as_ref()?.remote.clone()
}

fn set_upload(progress: &mut JobProgress, upload: &Upload) {
    if !progress.resume.is_object() {
        progress.resume = json!({});
    }
    progress.resume["upload"] = serde_json::to_value(upload).unwrap_or(Value::Null);
}
