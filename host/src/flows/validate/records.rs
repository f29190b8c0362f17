//! The publish-time checks of file triggers and record jobs: buckets and
//! patterns are well formed, formats are known, every template parses and
//! uses only what it will see (a record's `record` and `index`, a batch's
//! `batch` and `keys`, a page's `cursor`), connectors have the actions the
//! job calls (every action of a remote file destination), and their
//! versions are pinned like any step's.

use semver::Version;
use serde_json::Value;

use super::{Checker, Scope};
use crate::{
    files::{FormatSpec, check_bucket_name, paths::PathFilter},
    flows::{
        definition::{FlowSpec, StepSpec},
        records::{AfterSuccess, FileTriggerSpec, MAX_BATCH, PART_BYTES, RemoteSinkSpec},
        template,
    },
};

impl Checker<'_> {
    /// `Some(version)` of the remote location's connector, `Some(None)` for
    /// a bucket trigger, `None` when invalid.
    pub(super) fn file_trigger(
        &mut self,
        flow: &FlowSpec,
        file: &FileTriggerSpec,
    ) -> Option<Option<Version>> {
        let spec = &flow.trigger;
        let before = self.problems.len();
        if let Err(e) = check_bucket_name(&file.bucket) {
            self.problems.push(format!("trigger.file.bucket: {e}"));
        }
        if let Err(e) = PathFilter::new(file.prefix.as_deref(), file.glob.as_deref()) {
            self.problems.push(format!("trigger.file.glob: {e}"));
        }
        if let Some(marker) = &file.done_marker
            && (marker.is_empty() || marker.contains('/'))
        {
            self.problems.push(format!(
                "trigger.file.done_marker: a suffix such as `.done`, not `{marker}`"
            ));
        }
        if let AfterSuccess::Move(folder) = &file.after_success
            && (folder.is_empty() || !folder.ends_with('/'))
        {
            self.problems.push(format!(
                "trigger.file.after_success.move: a folder ending in `/`, not `{folder}`"
            ));
        }
        if file.invalid_folder.is_empty() || !file.invalid_folder.ends_with('/') {
            self.problems.push(format!(
                "trigger.file.invalid_folder: a folder ending in `/`, not `{}`",
                file.invalid_folder
            ));
        }
        if file.interval_secs == Some(0) {
            self.problems
                .push("trigger.file.interval_secs: at least 1".to_string());
        }
        if spec.schedule.is_some() || spec.interval_secs.is_some() || !spec.trigger.is_empty() {
            self.problems.push(
                "trigger: a file trigger has no `trigger`, `schedule` or `interval_secs` (use `file.interval_secs`)"
                    .to_string(),
            );
        }
        let version = match (&file.remote, spec.plugin.is_empty()) {
            (None, true) => None,
            (None, false) => {
                self.problems.push(
                    "trigger.file.remote: a file trigger with a plugin polls a remote location; say how (`remote: {params: ...}`), or drop `plugin` to watch the bucket"
                        .to_string(),
                );
                None
            }
            (Some(_), true) => {
                self.problems.push(
                    "trigger.plugin: a remote location is read through a connector; name it (`plugin`, `connection`)"
                        .to_string(),
                );
                None
            }
            (Some(remote), false) => {
                let manifest = self.resolve(&spec.plugin, "trigger.plugin")?;
                for (role, action) in [("list", &remote.list), ("get", &remote.get)] {
                    if !manifest.actions.iter().any(|a| &a.key == action) {
                        self.problems.push(format!(
                            "trigger.file.remote.{role}: {}@{} has no action `{action}`",
                            manifest.key, manifest.version
                        ));
                    }
                }
                if !(64 << 10..=64 << 20).contains(&remote.chunk_bytes) {
                    self.problems.push(
                        "trigger.file.remote.chunk_bytes: from 65,536 to 67,108,864".to_string(),
                    );
                }
                if !remote.params.is_object() {
                    self.problems
                        .push("trigger.file.remote.params: an object".to_string());
                }
                self.connection(&manifest, spec.connection.as_deref(), "trigger.connection");
                Some(manifest.version.clone())
            }
        };
        (self.problems.len() == before).then_some(version)
    }

    pub(super) fn records(&mut self, step: &StepSpec, at: &str, scope: &Scope) {
        let records = step.records.as_ref().expect("kind says records");
        let at = format!("{at}.records");
        let from = &records.from;
        match (&from.file, &from.pages) {
            (Some(file), None) => {
                self.templates_with(&format!("{at}.from.file"), file, scope, &[]);
                if let Value::Object(place) = file {
                    for field in ["bucket", "path"] {
                        if !place.get(field).is_some_and(Value::is_string) {
                            self.problems.push(format!(
                                "{at}.from.file.{field}: the file's {field} (text or a template)"
                            ));
                        }
                    }
                } else if !file.as_str().is_some_and(template::is_template) {
                    self.problems.push(format!(
                        "{at}.from.file: `{{bucket, path}}` or a template that gives them, such as \"{{{{ trigger.file }}}}\""
                    ));
                }
                if let Some(format) = &from.format {
                    self.format(&format!("{at}.from.format"), format);
                }
            }
            (None, Some(pages)) => {
                if from.format.is_some() {
                    self.problems.push(format!(
                        "{at}.from.format: pages are JSON already; a format is for files"
                    ));
                }
                let place = format!("{at}.from.pages");
                self.templates_with(
                    &format!("{place}.input"),
                    &pages.input,
                    scope,
                    &["cursor", "page"],
                );
                if pages.max_pages == 0 {
                    self.problems.push(format!("{place}.max_pages: at least 1"));
                }
                self.record_action(
                    &format!("{}.from", step.key),
                    &place,
                    &pages.plugin,
                    &pages.action,
                    pages.connection.as_deref(),
                );
            }
            _ => self.problems.push(format!(
                "{at}.from: give `file` (with its `format`) or `pages`, one of them"
            )),
        }
        if let Some(filter) = &records.filter {
            match template::check_condition(filter) {
                Ok(names) => {
                    self.names_with(&format!("{at}.where"), names, scope, &["record", "index"])
                }
                Err(e) => self.problems.push(format!("{at}.where: {e}")),
            }
        }
        if let Some(map) = &records.map {
            self.templates_with(&format!("{at}.map"), map, scope, &["record", "index"]);
        }
        if let Some(schema) = &records.schema
            && let Err(e) = jsonschema::validator_for(schema)
        {
            self.problems
                .push(format!("{at}.schema: not a usable JSON Schema: {e}"));
        }
        let to = &records.to;
        match (&to.file, &to.action) {
            (Some(file), None) => {
                if let Err(e) = check_bucket_name(&file.bucket) {
                    self.problems.push(format!("{at}.to.file.bucket: {e}"));
                }
                self.templates_with(
                    &format!("{at}.to.file.path"),
                    &Value::String(file.path.clone()),
                    scope,
                    &["run"],
                );
                match &file.format {
                    Some(format) => self.format(&format!("{at}.to.file.format"), format),
                    None if FormatSpec::for_path(&file.path).is_none() => {
                        self.problems.push(format!(
                            "{at}.to.file.format: the path's extension does not say the format; give one"
                        ))
                    }
                    None => {}
                }
                if let Some(remote) = &file.remote {
                    self.remote_sink(
                        &format!("{}.to", step.key),
                        &format!("{at}.to.file.remote"),
                        remote,
                    );
                }
            }
            (None, Some(action)) => {
                let place = format!("{at}.to.action");
                if let Some(input) = &action.input {
                    let names: &[&str] = if action.batch.is_some() {
                        &["batch", "key", "keys"]
                    } else {
                        &["record", "index", "key"]
                    };
                    self.templates_with(&format!("{place}.input"), input, scope, names);
                }
                if let Some(batch) = action.batch
                    && !(1..=MAX_BATCH).contains(&batch.count)
                {
                    self.problems
                        .push(format!("{place}.batch.count: from 1 to {MAX_BATCH}"));
                }
                if from.pages.is_some() {
                    self.problems.push(format!(
                        "{place}: pages from one connector go to a file; send that file on with a second step"
                    ));
                }
                self.record_action(
                    &format!("{}.to", step.key),
                    &place,
                    &action.plugin,
                    &action.action,
                    action.connection.as_deref(),
                );
            }
            _ => self
                .problems
                .push(format!("{at}.to: give `file` or `action`, one of them")),
        }
        if let Some(pct) = records.max_error_percent
            && !(0.0..=100.0).contains(&pct)
        {
            self.problems
                .push(format!("{at}.max_error_percent: from 0 to 100"));
        }
        if let Some(reports) = &records.reports {
            if let Err(e) = check_bucket_name(&reports.bucket) {
                self.problems.push(format!("{at}.reports.bucket: {e}"));
            }
            self.templates_with(
                &format!("{at}.reports.folder"),
                &Value::String(reports.folder.clone()),
                scope,
                &["run"],
            );
        }
    }

    /// A remote file destination: its connector has every action of the
    /// contract, parts fit a call, and the version is pinned under `pin`.
    fn remote_sink(&mut self, pin: &str, at: &str, remote: &RemoteSinkSpec) {
        if !PART_BYTES.contains(&remote.part_bytes) {
            self.problems.push(format!(
                "{at}.part_bytes: from {} to {} bytes (S3 refuses a part under 5 MiB but the last)",
                PART_BYTES.start(),
                PART_BYTES.end()
            ));
        }
        if !remote.params.is_object() {
            self.problems.push(format!(
                "{at}.params: an object, such as `{{bucket: exports}}`"
            ));
        }
        let Some(manifest) = self.resolve(&remote.plugin, &format!("{at}.plugin")) else {
            self.pins_complete = false;
            return;
        };
        let mut complete = true;
        for (field, action) in remote.actions() {
            if !manifest.actions.iter().any(|a| a.key == action) {
                self.problems.push(format!(
                    "{at}.{field}: {}@{} has no action `{action}`; a remote destination needs a connector that uploads in parts (such as `s3`)",
                    manifest.key, manifest.version
                ));
                complete = false;
            }
        }
        self.connection(
            &manifest,
            remote.connection.as_deref(),
            &format!("{at}.connection"),
        );
        if complete {
            self.record_pins
                .insert(pin.to_string(), manifest.version.clone());
        } else {
            self.pins_complete = false;
        }
    }

    fn format(&mut self, at: &str, format: &FormatSpec) {
        for problem in format.problems() {
            self.problems.push(format!("{at}.{problem}"));
        }
    }

    /// A connector a record job calls: resolved, with the action, and
    /// pinned under `pin`.
    fn record_action(
        &mut self,
        pin: &str,
        at: &str,
        plugin: &str,
        action: &str,
        connection: Option<&str>,
    ) {
        let Some(manifest) = self.resolve(plugin, &format!("{at}.plugin")) else {
            self.pins_complete = false;
            return;
        };
        if !manifest.actions.iter().any(|a| a.key == action) {
            let known: Vec<&str> = manifest.actions.iter().map(|a| a.key.as_str()).collect();
            self.problems.push(format!(
                "{at}.action: {}@{} has no action `{action}` (it has: {})",
                manifest.key,
                manifest.version,
                known.join(", ")
            ));
            self.pins_complete = false;
            return;
        }
        self.connection(&manifest, connection, &format!("{at}.connection"));
        self.record_pins
            .insert(pin.to_string(), manifest.version.clone());
    }

    /// Checks templates; names rooted in `extra` are the job's own.
    fn templates_with(&mut self, at: &str, value: &Value, scope: &Scope, extra: &[&str]) {
        let mut names = Vec::new();
        match template::check(value, at, &mut names) {
            Err(e) => self.problems.push(e),
            Ok(()) => {
                for (name, place) in names {
                    self.names_with(&place, vec![name], scope, extra);
                }
            }
        }
    }

    fn names_with(&mut self, at: &str, names: Vec<String>, scope: &Scope, extra: &[&str]) {
        let outside: Vec<String> = names
            .into_iter()
            .filter(|n| !extra.contains(&n.split('.').next().unwrap_or_default()))
            .collect();
        self.names(at, &outside, scope);
    }
}
