//! File triggers: a file created in a bucket, or found at a remote location
//! that a connector lists and reads, starts one run. Each flow keeps a
//! ledger of the files it saw (path, size, ETag or hash, status, run), so
//! a file is processed once however often it is seen again; a file younger
//! than the trigger's minimum age, or without its done-marker, waits. A
//! remote file is copied into the trigger's bucket (in chunks through the
//! connector's `get`, never whole in memory) before its run is queued.
//! When the run ends, the file is kept, deleted or moved (after success),
//! or moved under `invalid/` with an errors file beside it (after failure).
//!
//! A ledger entry is written before its run is queued; a crash in between
//! is found at the next pass (the run does not exist) and the run is
//! queued then, with the same event id, so never twice.

use std::{
    collections::{BTreeSet, HashMap},
    io::Write,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine as _, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::{
    calls::{Calls, Purpose, Target, parse_output},
    clock::now_ms,
    engine::Event,
    error::ServiceError,
    files::{
        Buckets,
        paths::{PathFilter, folder_of, name_of},
    },
    flows::{AfterSuccess, FileTriggerSpec, FlowRecord, Flows, RemoteSpec},
    runs::{Runs, record::run_id_for},
    store::{Along, FileStore, LedgerEntry, LedgerStatus, ObjectRecord, RunStatus},
    tasks::Tasks,
};

/// How often buckets are looked at (and sooner when a file arrives).
const PASS: Duration = Duration::from_millis(1_000);
/// Files looked at per flow and pass.
const SCAN: usize = 10_000;
/// Pages of a remote listing read per poll.
const REMOTE_PAGES: usize = 100;

/// A file as a trigger sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub path: String,
    pub size: u64,
    pub etag: String,
    /// Milliseconds since the epoch.
    pub modified_at: u64,
    /// Its done-marker exists (when the trigger has one).
    pub marked: bool,
}

/// What to do with a file seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Processed (or being processed) already: this path with this content.
    Known,
    /// Not yet: why.
    Wait(String),
    Take,
}

/// The pure decision about a file: the ledger decides "once", the
/// trigger's minimum age and done-marker decide "not yet".
pub fn decide(
    entry: Option<&LedgerEntry>,
    file: &Seen,
    spec: &FileTriggerSpec,
    now: u64,
) -> Decision {
    if entry.is_some_and(|e| e.status != LedgerStatus::Waiting) {
        return Decision::Known;
    }
    let age_ms = now.saturating_sub(file.modified_at);
    if age_ms < spec.min_age_secs * 1000 {
        return Decision::Wait(format!(
            "younger than min_age_secs ({}s of {}s)",
            age_ms / 1000,
            spec.min_age_secs
        ));
    }
    if let Some(marker) = &spec.done_marker
        && !file.marked
    {
        return Decision::Wait(format!("waiting for `{}{marker}`", file.path));
    }
    Decision::Take
}

/// A file's ledger key: its path and content, hashed (keys are opaque).
pub fn ledger_key(path: &str, etag: &str) -> String {
    let digest = Sha256::digest(format!("{path}\n{etag}"));
    hex::encode(&digest[..16])
}

/// Milliseconds from a listing's `modified_at`: a number of milliseconds,
/// or an RFC 3339 time.
fn millis(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64(),
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
            .ok()
            .map(|t| t.timestamp_millis().max(0) as u64),
        _ => None,
    }
}

pub struct FileTriggers {
    flows: Arc<Flows>,
    runs: Arc<Runs>,
    buckets: Arc<Buckets>,
    calls: Arc<Calls>,
    tasks: Arc<Tasks>,
    /// Entries whose run has not ended: (tenant, flow, key).
    open: Mutex<BTreeSet<(String, String, String)>>,
    /// When each remote location is looked at next.
    remote_due: Mutex<HashMap<(String, String), u64>>,
}

impl FileTriggers {
    pub fn new(
        flows: Arc<Flows>,
        runs: Arc<Runs>,
        buckets: Arc<Buckets>,
        calls: Arc<Calls>,
        tasks: Arc<Tasks>,
    ) -> Self {
        FileTriggers {
            flows,
            runs,
            buckets,
            calls,
            tasks,
            open: Mutex::default(),
            remote_due: Mutex::default(),
        }
    }

    fn store(&self) -> &Arc<dyn FileStore> {
        self.buckets.store()
    }

    /// Starts the watcher; it stops with the tasks.
    pub fn start(self: &Arc<Self>) {
        let this = self.clone();
        let created = self.buckets.created();
        self.tasks.spawn(async move {
            let mut shutdown = this.tasks.shutdown_signal();
            if let Err(e) = this.load_open() {
                tracing::error!("reading the file triggers' ledgers: {e}");
            }
            loop {
                if *shutdown.borrow() {
                    break;
                }
                this.pass().await;
                tokio::select! {
                    _ = created.notified() => {}
                    _ = tokio::time::sleep(PASS) => {}
                    _ = shutdown.changed() => {}
                }
            }
        });
    }

    /// Finds the entries left open by the last run of the host.
    fn load_open(&self) -> Result<(), ServiceError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for flow in self.flows.all()? {
            if flow.spec.trigger.file.is_none() {
                continue;
            }
            let mut after: Option<String> = None;
            loop {
                let page = self
                    .store()
                    .ledger(&flow.tenant, &flow.id, after.as_deref(), 1000)?;
                let Some(last) = page.last() else { break };
                after = Some(last.key.clone());
                for entry in &page {
                    if matches!(entry.status, LedgerStatus::Queued | LedgerStatus::Fetching) {
                        open.insert((flow.tenant.clone(), flow.id.clone(), entry.key.clone()));
                    }
                }
                if page.len() < 1000 {
                    break;
                }
            }
        }
        Ok(())
    }

    async fn pass(&self) {
        let flows = match self.flows.all() {
            Ok(flows) => flows,
            Err(e) => {
                tracing::error!("listing flows for file triggers: {e}");
                return;
            }
        };
        for flow in &flows {
            let Some(spec) = &flow.spec.trigger.file else {
                continue;
            };
            if !flow.active || flow.paused.is_some() {
                continue;
            }
            let result = match &spec.remote {
                None => self.watch_bucket(flow, spec).await,
                Some(remote) => self.poll_remote(flow, spec, remote).await,
            };
            if let Err(e) = result {
                tracing::warn!(flow = %flow.id, "file trigger: {e}");
            }
        }
        self.settle(&flows).await;
    }

    /// The ledger's view of one file, as written now.
    fn entry(
        &self,
        flow: &FlowRecord,
        file: &Seen,
        status: LedgerStatus,
        note: Option<String>,
    ) -> Result<LedgerEntry, ServiceError> {
        let key = ledger_key(&file.path, &file.etag);
        let now = now_ms();
        let first_seen = self
            .store()
            .ledger_entry(&flow.tenant, &flow.id, &key)?
            .map_or(now, |e| e.first_seen);
        Ok(LedgerEntry {
            key,
            path: file.path.clone(),
            size: file.size,
            etag: file.etag.clone(),
            status,
            run: None,
            staged: None,
            moved_to: None,
            note,
            first_seen,
            updated_at: now,
        })
    }

    /// Decides about a file; records a wait; returns whether to take it.
    fn consider(
        &self,
        flow: &FlowRecord,
        spec: &FileTriggerSpec,
        file: &Seen,
    ) -> Result<bool, ServiceError> {
        let key = ledger_key(&file.path, &file.etag);
        let existing = self.store().ledger_entry(&flow.tenant, &flow.id, &key)?;
        match decide(existing.as_ref(), file, spec, now_ms()) {
            Decision::Known => Ok(false),
            Decision::Take => Ok(true),
            Decision::Wait(why) => {
                if existing.as_ref().and_then(|e| e.note.as_ref()) != Some(&why) {
                    let entry = self.entry(flow, file, LedgerStatus::Waiting, Some(why))?;
                    self.store()
                        .put_ledger_entry(&flow.tenant, &flow.id, &entry)?;
                }
                Ok(false)
            }
        }
    }

    async fn watch_bucket(
        &self,
        flow: &FlowRecord,
        spec: &FileTriggerSpec,
    ) -> Result<(), ServiceError> {
        let filter = PathFilter::new(spec.prefix.as_deref(), spec.glob.as_deref())
            .map_err(ServiceError::BadRequest)?;
        let listing = self.buckets.list(
            &flow.tenant,
            &spec.bucket,
            Some(&filter.prefix),
            None,
            None,
            SCAN.min(1000),
        );
        let mut objects = listing?.objects;
        // A listing pages; a trigger looks further.
        while objects.len() < SCAN
            && let Some(last) = objects.last().map(|o| o.path.clone())
        {
            let more = self.buckets.list(
                &flow.tenant,
                &spec.bucket,
                Some(&filter.prefix),
                None,
                Some(&last),
                1000,
            )?;
            if more.objects.is_empty() {
                break;
            }
            let done = more.next.is_none();
            objects.extend(more.objects);
            if done {
                break;
            }
        }
        let paths: BTreeSet<&str> = objects.iter().map(|o| o.path.as_str()).collect();
        for object in &objects {
            if !wanted(spec, &filter, &object.path) {
                continue;
            }
            let marked = spec
                .done_marker
                .as_ref()
                .is_some_and(|m| paths.contains(format!("{}{m}", object.path).as_str()));
            let seen = Seen {
                path: object.path.clone(),
                size: object.size,
                etag: object.sha256.clone(),
                modified_at: object.created_at,
                marked,
            };
            if self.consider(flow, spec, &seen)? {
                self.take(flow, &seen, object).await?;
            }
        }
        Ok(())
    }

    /// Queues the run of a file that is in a bucket (copied there, for a
    /// remote file).
    async fn take(
        &self,
        flow: &FlowRecord,
        seen: &Seen,
        object: &ObjectRecord,
    ) -> Result<(), ServiceError> {
        let mut entry = self.entry(flow, seen, LedgerStatus::Queued, None)?;
        let event_id = format!("file:{}", entry.key);
        let run = run_id_for(&flow.id, &event_id);
        entry.run = Some(run.clone());
        entry.staged = Some(format!("{}/{}", object.bucket, object.path));
        self.store()
            .put_ledger_entry(&flow.tenant, &flow.id, &entry)?;
        self.open.lock().unwrap_or_else(|e| e.into_inner()).insert((
            flow.tenant.clone(),
            flow.id.clone(),
            entry.key.clone(),
        ));
        self.queue(flow, &entry, object)
    }

    fn queue(
        &self,
        flow: &FlowRecord,
        entry: &LedgerEntry,
        object: &ObjectRecord,
    ) -> Result<(), ServiceError> {
        let payload = json!({
            "file": {
                "bucket": object.bucket,
                "path": object.path,
                "name": name_of(&object.path),
                "folder": folder_of(&object.path),
                "size": object.size,
                "sha256": object.sha256,
                "created_at": object.created_at,
            },
            "source": if flow.spec.trigger.plugin.is_empty() { "bucket" } else { "remote" },
            "remote": { "path": entry.path, "etag": entry.etag },
        });
        let event = Event {
            id: format!("file:{}", entry.key),
            payload: payload.to_string(),
        };
        self.runs
            .enqueue_events(flow, vec![event], "file", Along::Nothing)?;
        Ok(())
    }

    async fn poll_remote(
        &self,
        flow: &FlowRecord,
        spec: &FileTriggerSpec,
        remote: &RemoteSpec,
    ) -> Result<(), ServiceError> {
        let now = now_ms();
        let key = (flow.tenant.clone(), flow.id.clone());
        {
            let mut due = self.remote_due.lock().unwrap_or_else(|e| e.into_inner());
            if due.get(&key).is_some_and(|at| *at > now) {
                return Ok(());
            }
            due.insert(key, now + spec.interval_secs.unwrap_or(60).max(1) * 1000);
        }
        let filter = PathFilter::new(spec.prefix.as_deref(), spec.glob.as_deref())
            .map_err(ServiceError::BadRequest)?;
        let mut listed: Vec<Seen> = Vec::new();
        let mut cursor = Value::Null;
        for _ in 0..REMOTE_PAGES {
            let mut input = remote.params.clone();
            input["prefix"] = json!(filter.prefix);
            input["cursor"] = cursor.clone();
            let page = self.remote_call(flow, &remote.list, input).await?;
            for object in page["objects"].as_array().into_iter().flatten() {
                let Some(path) = object["path"].as_str() else {
                    continue;
                };
                listed.push(Seen {
                    path: path.to_string(),
                    size: object["size"].as_u64().unwrap_or(0),
                    etag: object["etag"]
                        .as_str()
                        .unwrap_or_default()
                        .trim_matches('"')
                        .to_string(),
                    modified_at: millis(object.get("modified_at")).unwrap_or(0),
                    marked: false,
                });
            }
            cursor = page["next"].clone();
            if cursor.is_null() || cursor == json!("") {
                break;
            }
        }
        let paths: BTreeSet<String> = listed.iter().map(|s| s.path.clone()).collect();
        for mut seen in listed {
            if !wanted(spec, &filter, &seen.path) {
                continue;
            }
            seen.marked = spec
                .done_marker
                .as_ref()
                .is_some_and(|m| paths.contains(&format!("{}{m}", seen.path)));
            if !self.consider(flow, spec, &seen)? {
                continue;
            }
            let entry = self.entry(flow, &seen, LedgerStatus::Fetching, None)?;
            self.store()
                .put_ledger_entry(&flow.tenant, &flow.id, &entry)?;
            match self.fetch(flow, spec, remote, &seen).await {
                Ok(object) => self.take(flow, &seen, &object).await?,
                Err(e) => {
                    // Looked at again at the next poll.
                    let mut entry = entry;
                    entry.status = LedgerStatus::Waiting;
                    entry.note = Some(format!("fetching failed: {e}"));
                    self.store()
                        .put_ledger_entry(&flow.tenant, &flow.id, &entry)?;
                }
            }
        }
        Ok(())
    }

    /// One call of the trigger's connector.
    async fn remote_call(
        &self,
        flow: &FlowRecord,
        action: &str,
        input: Value,
    ) -> Result<Value, ServiceError> {
        let version = flow.pinned.trigger.as_ref().ok_or_else(|| {
            ServiceError::State("a remote file trigger without a pinned plugin".into())
        })?;
        let plugin = flow.trigger_plugin();
        let target = Target {
            tenant: &flow.tenant,
            plugin: &plugin,
            version,
            connection: flow.spec.trigger.connection.as_deref(),
        };
        let purpose = Purpose::Poll {
            flow: flow.id.clone(),
            trigger: "file".into(),
        };
        let trace = format!("files-{}-{}", flow.id, now_ms());
        let call = self.calls.prepare(target, purpose, trace.clone())?;
        let outcome = self
            .calls
            .perform(call, action, &input.to_string(), &trace)
            .await;
        outcome
            .result
            .and_then(parse_output)
            .map_err(|e| ServiceError::upstream(&format!("`{action}` of {plugin}"), &e))
    }

    /// Copies a remote file into the trigger's bucket, chunk by chunk.
    async fn fetch(
        &self,
        flow: &FlowRecord,
        spec: &FileTriggerSpec,
        remote: &RemoteSpec,
        seen: &Seen,
    ) -> Result<ObjectRecord, ServiceError> {
        let tenant = &flow.tenant;
        let store = self.store().clone();
        let mut blob = store.create_blob(tenant)?;
        let mut hash = Sha256::new();
        let mut offset = 0u64;
        let result: Result<(), ServiceError> = async {
            loop {
                let mut input = remote.params.clone();
                input["path"] = json!(seen.path);
                input["offset"] = json!(offset);
                input["length"] = json!(remote.chunk_bytes);
                input["etag"] = json!(seen.etag);
                let chunk = self.remote_call(flow, &remote.get, input).await?;
                let data = chunk["data_base64"].as_str().unwrap_or_default();
                let bytes = BASE64.decode(data).map_err(|e| ServiceError::Upstream {
                    failure: crate::error::UpstreamFailure::Failed,
                    message: format!("`{}` answered data that is not base64: {e}", remote.get),
                })?;
                if bytes.is_empty() {
                    break;
                }
                hash.update(&bytes);
                blob.file.write_all(&bytes).map_err(|e| {
                    ServiceError::Internal(format!("writing {}: {e}", blob.path.display()))
                })?;
                offset += bytes.len() as u64;
                let size = chunk["size"].as_u64().unwrap_or(seen.size);
                if offset >= size {
                    break;
                }
            }
            blob.file.sync_all().map_err(|e| {
                ServiceError::Internal(format!("syncing {}: {e}", blob.path.display()))
            })
        }
        .await;
        if let Err(e) = result {
            let _ = store.delete_blob(tenant, &blob.id);
            return Err(e);
        }
        self.buckets.commit(ObjectRecord {
            tenant: tenant.clone(),
            bucket: spec.bucket.clone(),
            path: seen.path.clone(),
            size: offset,
            sha256: hex::encode(hash.finalize()),
            content_type: None,
            created_at: now_ms(),
            blob: blob.id,
        })
    }

    /// Acts on files whose runs ended.
    async fn settle(&self, flows: &[FlowRecord]) {
        let open: Vec<(String, String, String)> = self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let by_id: HashMap<(&str, &str), &FlowRecord> = flows
            .iter()
            .map(|f| ((f.tenant.as_str(), f.id.as_str()), f))
            .collect();
        for (tenant, flow_id, key) in open {
            let Some(flow) = by_id.get(&(tenant.as_str(), flow_id.as_str())) else {
                continue;
            };
            match self.settle_one(flow, &key).await {
                Ok(true) => {
                    self.open
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&(tenant, flow_id, key));
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(flow = %flow_id, "settling a file: {e}"),
            }
        }
    }

    /// `true` once the entry is closed.
    async fn settle_one(&self, flow: &FlowRecord, key: &str) -> Result<bool, ServiceError> {
        let Some(mut entry) = self.store().ledger_entry(&flow.tenant, &flow.id, key)? else {
            return Ok(true);
        };
        let Some(spec) = &flow.spec.trigger.file else {
            return Ok(true);
        };
        if entry.status != LedgerStatus::Queued {
            return Ok(entry.status != LedgerStatus::Fetching);
        }
        let Some(run_id) = entry.run.clone() else {
            return Ok(true);
        };
        let run = match self.runs.run(&flow.tenant, &run_id) {
            Ok(run) => run,
            Err(ServiceError::NotFound(_)) => {
                // Written to the ledger, not queued: a crash in between.
                if let Some((bucket, path)) = entry.staged.as_ref().and_then(|s| s.split_once('/'))
                {
                    let object = self.buckets.object(&flow.tenant, bucket, path)?;
                    self.queue(flow, &entry, &object)?;
                }
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        if !run.status.is_finished() {
            return Ok(false);
        }
        let staged = entry
            .staged
            .as_ref()
            .and_then(|s| s.split_once('/'))
            .map(|(b, p)| (b.to_string(), p.to_string()));
        let succeeded = matches!(run.status, RunStatus::Succeeded | RunStatus::Skipped);
        if succeeded {
            entry.moved_to = self
                .after_success(flow, spec, &entry, staged.as_ref())
                .await?;
            entry.status = LedgerStatus::Done;
        } else {
            let why = run
                .error
                .as_ref()
                .map(|e| e.message.clone())
                .unwrap_or_else(|| format!("the run {}", run.status.as_str()));
            entry.moved_to = self
                .after_failure(flow, spec, &entry, staged.as_ref(), &why)
                .await?;
            entry.status = LedgerStatus::Failed;
            entry.note = Some(why);
        }
        entry.updated_at = now_ms();
        self.store()
            .put_ledger_entry(&flow.tenant, &flow.id, &entry)?;
        Ok(true)
    }

    async fn after_success(
        &self,
        flow: &FlowRecord,
        spec: &FileTriggerSpec,
        entry: &LedgerEntry,
        staged: Option<&(String, String)>,
    ) -> Result<Option<String>, ServiceError> {
        let marker = spec
            .done_marker
            .as_ref()
            .map(|m| format!("{}{m}", entry.path));
        match (&spec.remote, &spec.after_success) {
            (_, AfterSuccess::Keep) => Ok(None),
            (None, AfterSuccess::Delete) => {
                if let Some((bucket, path)) = staged {
                    ignore_missing(self.buckets.delete_object(&flow.tenant, bucket, path))?;
                    if let Some(marker) = &marker {
                        ignore_missing(self.buckets.delete_object(&flow.tenant, bucket, marker))?;
                    }
                }
                Ok(None)
            }
            (None, AfterSuccess::Move(folder)) => {
                let Some((bucket, path)) = staged else {
                    return Ok(None);
                };
                let to = format!("{folder}{}", name_of(path));
                ignore_missing(
                    self.buckets
                        .move_object(&flow.tenant, bucket, path, bucket, &to),
                )?;
                if let Some(marker) = &marker {
                    ignore_missing(self.buckets.delete_object(&flow.tenant, bucket, marker))?;
                }
                Ok(Some(format!("{bucket}/{to}")))
            }
            (Some(remote), AfterSuccess::Delete) => {
                self.remote_delete(flow, remote, &entry.path).await?;
                if let Some(marker) = &marker {
                    self.remote_delete(flow, remote, marker).await?;
                }
                Ok(None)
            }
            (Some(remote), AfterSuccess::Move(folder)) => {
                let to = format!("{folder}{}", name_of(&entry.path));
                self.remote_move(flow, remote, &entry.path, &to).await?;
                if let Some(marker) = &marker {
                    self.remote_delete(flow, remote, marker).await?;
                }
                Ok(Some(to))
            }
        }
    }

    async fn after_failure(
        &self,
        flow: &FlowRecord,
        spec: &FileTriggerSpec,
        entry: &LedgerEntry,
        staged: Option<&(String, String)>,
        why: &str,
    ) -> Result<Option<String>, ServiceError> {
        let Some((bucket, path)) = staged else {
            return Ok(None);
        };
        let name = name_of(path);
        let to = format!("{}{name}", spec.invalid_folder);
        let errors = format!(
            "file: {}\nrun: {}\nerror: {why}\n",
            entry.path,
            entry.run.as_deref().unwrap_or_default()
        );
        self.buckets.put_bytes(
            &flow.tenant,
            bucket,
            &format!("{}{name}.errors.txt", spec.invalid_folder),
            "text/plain",
            errors.as_bytes(),
        )?;
        ignore_missing(
            self.buckets
                .move_object(&flow.tenant, bucket, path, bucket, &to),
        )?;
        if let Some(remote) = &spec.remote {
            let remote_to = format!("{}{}", spec.invalid_folder, name_of(&entry.path));
            if let Err(e) = self
                .remote_move(flow, remote, &entry.path, &remote_to)
                .await
            {
                tracing::warn!(flow = %flow.id, "moving a failed remote file to {remote_to}: {e}");
            }
        }
        Ok(Some(format!("{bucket}/{to}")))
    }

    async fn remote_delete(
        &self,
        flow: &FlowRecord,
        remote: &RemoteSpec,
        path: &str,
    ) -> Result<(), ServiceError> {
        let mut input = remote.params.clone();
        input["path"] = json!(path);
        self.remote_call(flow, &remote.delete, input)
            .await
            .map(|_| ())
    }

    async fn remote_move(
        &self,
        flow: &FlowRecord,
        remote: &RemoteSpec,
        from: &str,
        to: &str,
    ) -> Result<(), ServiceError> {
        let mut input = remote.params.clone();
        input["from"] = json!(from);
        input["to"] = json!(to);
        self.remote_call(flow, &remote.copy, input).await?;
        self.remote_delete(flow, remote, from).await
    }

    /// A page of a flow's ledger.
    pub fn ledger(
        &self,
        tenant: &str,
        flow: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<LedgerEntry>, ServiceError> {
        self.flows.get(tenant, flow)?;
        Ok(self
            .store()
            .ledger(tenant, flow, after, limit.clamp(1, 1000))?)
    }
}

/// Whether a path is one the trigger takes: matched, and not one of its
/// own places (done-markers, `invalid/`, the archive folder).
fn wanted(spec: &FileTriggerSpec, filter: &PathFilter, path: &str) -> bool {
    if !filter.matches(path) || path.starts_with(&spec.invalid_folder) {
        return false;
    }
    if let AfterSuccess::Move(folder) = &spec.after_success
        && path.starts_with(folder.as_str())
    {
        return false;
    }
    !spec
        .done_marker
        .as_ref()
        .is_some_and(|m| path.ends_with(m.as_str()))
}

fn ignore_missing<T>(result: Result<T, ServiceError>) -> Result<(), ServiceError> {
    match result {
        Ok(_) | Err(ServiceError::NotFound(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(min_age_secs: u64, marker: Option<&str>) -> FileTriggerSpec {
        serde_json::from_value(json!({
            "bucket": "inbox",
            "min_age_secs": min_age_secs,
            "done_marker": marker,
        }))
        .unwrap()
    }

    fn seen(modified_at: u64, marked: bool) -> Seen {
        Seen {
            path: "a.csv".into(),
            size: 10,
            etag: "e1".into(),
            modified_at,
            marked,
        }
    }

    fn entry(status: LedgerStatus) -> LedgerEntry {
        LedgerEntry {
            key: ledger_key("a.csv", "e1"),
            path: "a.csv".into(),
            size: 10,
            etag: "e1".into(),
            status,
            run: None,
            staged: None,
            moved_to: None,
            note: None,
            first_seen: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn a_file_is_taken_once_when_old_enough_and_marked() {
        let now = 100_000;
        let table = [
            (spec(0, None), None, seen(now, false), Decision::Take),
            (
                spec(30, None),
                None,
                seen(now - 10_000, false),
                Decision::Wait("younger than min_age_secs (10s of 30s)".into()),
            ),
            (
                spec(30, None),
                None,
                seen(now - 30_000, false),
                Decision::Take,
            ),
            (
                spec(0, Some(".done")),
                None,
                seen(now, false),
                Decision::Wait("waiting for `a.csv.done`".into()),
            ),
            (
                spec(0, Some(".done")),
                None,
                seen(now, true),
                Decision::Take,
            ),
            (
                spec(0, None),
                Some(entry(LedgerStatus::Waiting)),
                seen(now, false),
                Decision::Take,
            ),
            (
                spec(0, None),
                Some(entry(LedgerStatus::Queued)),
                seen(now, false),
                Decision::Known,
            ),
            (
                spec(0, None),
                Some(entry(LedgerStatus::Done)),
                seen(now, false),
                Decision::Known,
            ),
            (
                spec(0, None),
                Some(entry(LedgerStatus::Failed)),
                seen(now, false),
                Decision::Known,
            ),
        ];
        for (spec, entry, file, expected) in table {
            assert_eq!(
                decide(entry.as_ref(), &file, &spec, now),
                expected,
                "{spec:?} {entry:?} {file:?}"
            );
        }
        // The same path with other content is another file.
        assert_ne!(ledger_key("a.csv", "e1"), ledger_key("a.csv", "e2"));
        assert_eq!(ledger_key("a.csv", "e1"), ledger_key("a.csv", "e1"));
    }

    #[test]
    fn modification_times_read_as_milliseconds_or_rfc_3339() {
        assert_eq!(millis(Some(&json!(1234))), Some(1234));
        assert_eq!(
            millis(Some(&json!("2026-01-01T00:00:00.000Z"))),
            Some(1_767_225_600_000)
        );
        assert_eq!(millis(Some(&json!("yesterday"))), None);
        assert_eq!(millis(None), None);
    }

    #[test]
    fn a_trigger_leaves_its_own_places_alone() {
        let spec: FileTriggerSpec = serde_json::from_value(json!({
            "bucket": "inbox",
            "done_marker": ".done",
            "after_success": {"move": "archive/"},
        }))
        .unwrap();
        let filter = PathFilter::new(None, None).unwrap();
        assert!(wanted(&spec, &filter, "a.csv"));
        assert!(!wanted(&spec, &filter, "a.csv.done"));
        assert!(!wanted(&spec, &filter, "archive/a.csv"));
        assert!(!wanted(&spec, &filter, "invalid/a.csv"));
    }
}
