//! A flow as its author writes it (JSON or YAML), the checks it must pass to
//! be published, and the exact plugin versions publishing pins.

use std::collections::{HashMap, HashSet};

use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::template;
use crate::{
    app::{App, check_against},
    manifest::{Manifest, TriggerKind},
    registry::parse_plugin_ref,
    runs::RetryPolicy,
};

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
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    Fast,
    #[default]
    Normal,
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
    /// Fire for the items already there at the first poll (by default the
    /// first poll only records where to start).
    #[serde(default)]
    pub include_existing: bool,
}

/// Default polling interval.
pub const DEFAULT_INTERVAL_SECS: u64 = 60;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// How later steps refer to this one's output: `steps.<key>`.
    pub key: String,
    pub plugin: String,
    pub action: String,
    pub connection: Option<String>,
    /// Templates over `trigger` and earlier `steps`.
    #[serde(default = "empty_object")]
    pub input: Value,
    #[serde(default)]
    pub retry: Option<RetrySpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    pub max_attempts: Option<u32>,
    pub max_elapsed_secs: Option<u64>,
    pub initial_delay_ms: Option<u64>,
    pub max_delay_ms: Option<u64>,
}

impl RetrySpec {
    /// The policy for a step: its overrides over the defaults.
    pub fn policy(spec: Option<&RetrySpec>) -> RetryPolicy {
        let base = RetryPolicy::default();
        let Some(spec) = spec else { return base };
        RetryPolicy {
            max_attempts: spec.max_attempts.unwrap_or(base.max_attempts).max(1),
            max_elapsed_ms: spec
                .max_elapsed_secs
                .map_or(base.max_elapsed_ms, |s| s.saturating_mul(1000)),
            initial_delay_ms: spec.initial_delay_ms.unwrap_or(base.initial_delay_ms),
            max_delay_ms: spec.max_delay_ms.unwrap_or(base.max_delay_ms),
        }
    }
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

    /// Checks everything against the registry and the tenant's connections
    /// and returns the versions to pin, or every problem with its place.
    /// `keep` holds the versions an earlier flow version pinned, by plugin
    /// key: they stay pinned while the requirement still allows them, so a
    /// new plugin version is only taken by an explicit upgrade.
    pub fn validate(
        &self,
        app: &App,
        tenant: &str,
        keep: &HashMap<String, Version>,
    ) -> Result<Pinned, Vec<String>> {
        let resolver = Resolver { app, keep };
        let mut problems = Vec::new();
        if self.name.trim().is_empty() {
            problems.push("name: must not be empty".to_string());
        }
        let trigger_version = self.check_trigger(&resolver, tenant, &mut problems);
        for (i, condition) in self.conditions.iter().enumerate() {
            match template::check_condition(condition) {
                Ok(names) => check_names(&format!("conditions[{i}]"), &names, &[], &mut problems),
                Err(e) => problems.push(format!("conditions[{i}]: {e}")),
            }
        }
        if self.steps.is_empty() {
            problems.push("steps: a flow needs at least one step".to_string());
        }
        let mut earlier: Vec<&str> = Vec::new();
        let mut seen = HashSet::new();
        let mut step_versions = Vec::new();
        for step in &self.steps {
            let at = format!("steps[{}]", step.key);
            if !seen.insert(step.key.as_str()) {
                problems.push(format!("{at}: duplicate step key"));
            }
            if step.key.is_empty()
                || !step
                    .key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                problems.push(format!(
                    "{at}: step keys are letters, digits and `_` (they are used as `steps.{}`)",
                    step.key
                ));
            }
            step_versions.push(self.check_step(
                &resolver,
                tenant,
                step,
                &at,
                &earlier,
                &mut problems,
            ));
            earlier.push(&step.key);
        }
        match (
            trigger_version,
            step_versions.into_iter().collect::<Option<Vec<_>>>(),
        ) {
            (Some(trigger), Some(steps)) if problems.is_empty() => Ok(Pinned { trigger, steps }),
            _ => Err(problems),
        }
    }

    /// `Some(None)` for a valid pure schedule, `None` when invalid.
    fn check_trigger(
        &self,
        resolver: &Resolver<'_>,
        tenant: &str,
        problems: &mut Vec<String>,
    ) -> Option<Option<Version>> {
        let spec = &self.trigger;
        let app = resolver.app;
        if let Some(schedule) = &spec.schedule
            && let Err(e) = parse_schedule(schedule)
        {
            problems.push(format!("trigger.schedule: {e}"));
        }
        if spec.interval_secs == Some(0) {
            problems.push("trigger.interval_secs: must be at least 1".to_string());
        }
        if spec.plugin.is_empty() {
            if spec.schedule.is_none() {
                problems.push(
                    "trigger: needs `plugin` and `trigger`, or a `schedule` (cron) on its own"
                        .to_string(),
                );
                return None;
            }
            if !spec.trigger.is_empty() || spec.connection.is_some() {
                problems.push("trigger.plugin: a trigger or connection needs a plugin".to_string());
            }
            return Some(None);
        }
        let manifest = resolver.resolve(&spec.plugin, "trigger.plugin", problems)?;
        let Some(trigger) = manifest.triggers.iter().find(|t| t.key == spec.trigger) else {
            let known: Vec<&str> = manifest.triggers.iter().map(|t| t.key.as_str()).collect();
            problems.push(format!(
                "trigger.trigger: {}@{} has no trigger `{}` (it has: {})",
                manifest.key,
                manifest.version,
                spec.trigger,
                known.join(", ")
            ));
            return None;
        };
        if let Err(e) = check_against(&trigger.params_schema, &spec.params, "trigger.params") {
            problems.push(e.to_string());
        }
        if trigger.kind == TriggerKind::Webhook
            && (spec.schedule.is_some() || spec.interval_secs.is_some())
        {
            problems.push(format!(
                "trigger: `{}` is a webhook trigger; `schedule` and `interval_secs` are for polling",
                spec.trigger
            ));
        }
        check_connection(
            app,
            tenant,
            &manifest,
            spec.connection.as_deref(),
            "trigger.connection",
            problems,
        );
        Some(Some(manifest.version.clone()))
    }

    fn check_step(
        &self,
        resolver: &Resolver<'_>,
        tenant: &str,
        step: &StepSpec,
        at: &str,
        earlier: &[&str],
        problems: &mut Vec<String>,
    ) -> Option<Version> {
        let app = resolver.app;
        let manifest = resolver.resolve(&step.plugin, &format!("{at}.plugin"), problems)?;
        let Some(action) = manifest.actions.iter().find(|a| a.key == step.action) else {
            let known: Vec<&str> = manifest.actions.iter().map(|a| a.key.as_str()).collect();
            problems.push(format!(
                "{at}.action: {}@{} has no action `{}` (it has: {})",
                manifest.key,
                manifest.version,
                step.action,
                known.join(", ")
            ));
            return None;
        };
        check_connection(
            app,
            tenant,
            &manifest,
            step.connection.as_deref(),
            &format!("{at}.connection"),
            problems,
        );
        let mut names = Vec::new();
        match template::check(&step.input, &format!("{at}.input"), &mut names) {
            Err(e) => problems.push(e),
            Ok(()) => {
                for (name, place) in names {
                    check_names(&place, &[name], earlier, problems);
                }
            }
        }
        check_input_shape(
            &action.input_schema,
            &step.input,
            &format!("{at}.input"),
            problems,
        );
        Some(manifest.version.clone())
    }
}

struct Resolver<'a> {
    app: &'a App,
    keep: &'a HashMap<String, Version>,
}

impl Resolver<'_> {
    /// The kept version if it still satisfies the requirement (deprecated
    /// or not: a pinned flow keeps working), else the newest matching one.
    fn resolve(&self, plugin_ref: &str, at: &str, problems: &mut Vec<String>) -> Option<Manifest> {
        let found = parse_plugin_ref(plugin_ref).and_then(|(key, req)| {
            if let Some(kept) = self.keep.get(&key).filter(|v| req.matches(v))
                && let Ok(plugin) = self.app.registry.get(&key, kept)
            {
                return Ok(plugin);
            }
            let version = self.app.registry.resolve(&key, &req)?;
            self.app.registry.get(&key, &version)
        });
        match found {
            Ok(plugin) => Some(plugin.record.manifest),
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                None
            }
        }
    }
}

fn check_connection(
    app: &App,
    tenant: &str,
    manifest: &Manifest,
    connection: Option<&str>,
    at: &str,
    problems: &mut Vec<String>,
) {
    let needs_one = !manifest.connection_properties.is_empty();
    match connection {
        None if needs_one => problems.push(format!("{at}: {} needs a connection", manifest.key)),
        None => {}
        Some(id) => match app.connections.get(tenant, id) {
            Ok(c) if c.plugin != manifest.key => problems.push(format!(
                "{at}: connection `{id}` belongs to `{}`, not `{}`",
                c.plugin, manifest.key
            )),
            Ok(_) => {}
            Err(e) => problems.push(format!("{at}: {e}")),
        },
    }
}

/// Names a template may use: `trigger...`, `steps.<earlier step>...`.
pub(crate) fn check_names(
    at: &str,
    names: &[String],
    earlier: &[&str],
    problems: &mut Vec<String>,
) {
    for name in names {
        let mut parts = name.split('.');
        match (parts.next(), parts.next()) {
            (Some("trigger"), _) => {}
            (Some("steps"), Some(step)) if earlier.contains(&step) => {}
            (Some("steps"), Some(step)) => problems.push(format!(
                "{at}: `{name}` refers to step `{step}`, which does not run before this point"
            )),
            _ => problems.push(format!(
                "{at}: `{name}` is not available; templates can use `trigger` and `steps.<earlier step>`"
            )),
        }
    }
}

/// What can be known before a run: a template-free input must satisfy the
/// action's schema; otherwise its required top-level fields must be there.
fn check_input_shape(schema: &Value, input: &Value, at: &str, problems: &mut Vec<String>) {
    let has_template = input.to_string().contains("{{") || input.to_string().contains("{%");
    if !has_template {
        if let Err(e) = check_against(schema, input, at) {
            problems.push(e.to_string());
        }
        return;
    }
    if let (Some(required), Some(object)) = (schema["required"].as_array(), input.as_object()) {
        for field in required.iter().filter_map(Value::as_str) {
            if !object.contains_key(field) {
                problems.push(format!("{at}: the action requires `{field}`"));
            }
        }
    }
}

/// Parses a cron expression (five fields, or six with seconds first), UTC.
pub fn parse_schedule(text: &str) -> Result<croner::Cron, String> {
    text.parse::<croner::Cron>()
        .map_err(|e| format!("`{text}` is not a cron expression: {e}"))
}
