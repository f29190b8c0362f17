//! The checks a flow must pass to be published, each problem with its
//! place, and the plugin versions publishing pins. What can be known before
//! a run is checked here: plugins, actions and connections exist and fit,
//! templates parse and refer only to what is there at that point (a step
//! inside a branch that may not have run is not), constructs are well
//! formed, nesting is bounded, and a loop's items are an array when the
//! schemas say what they are.

mod records;

use std::collections::{BTreeMap, HashMap, HashSet};

use semver::Version;
use serde_json::Value;

use super::{
    definition::{Catalogue, FlowSpec, OnError, Pinned, StepKind, StepSpec, parse_schedule, walk},
    template,
};
use crate::{
    manifest::{Manifest, TriggerKind},
    registry::parse_plugin_ref,
    schema::check_against,
};

/// Steps may nest this deep (a loop in a branch in a loop in a branch).
pub const MAX_DEPTH: usize = 4;
/// A loop may work on at most this many items at once.
pub const MAX_CONCURRENCY: u32 = 64;
/// The largest `max_items` a loop may set.
pub const MAX_ITEMS_LIMIT: usize = 100_000;
/// The longest delay: a year.
pub const MAX_DELAY_SECS: u64 = 366 * 24 * 3600;

impl FlowSpec {
    /// Checks everything against the catalogue and returns the versions to
    /// pin (the trigger's, and each action's in the order of
    /// [`super::definition::actions`]), or every problem with its place.
    /// `keep` holds the versions an earlier flow version pinned, by plugin
    /// key: they stay pinned while the requirement still allows them, so a
    /// new plugin version is only taken by an explicit upgrade.
    pub fn validate(
        &self,
        catalogue: &dyn Catalogue,
        tenant: &str,
        keep: &HashMap<String, Version>,
    ) -> Result<Pinned, Vec<String>> {
        let mut check = Checker {
            catalogue,
            tenant,
            keep,
            problems: Vec::new(),
            pins: Vec::new(),
            pins_complete: true,
            all_keys: walk(&self.steps).iter().map(|s| s.key.clone()).collect(),
            seen: HashSet::new(),
            outputs: HashMap::new(),
            event_schema: None,
            record_pins: BTreeMap::new(),
        };
        if self.name.trim().is_empty() {
            check.problems.push("name: must not be empty".to_string());
        }
        let trigger = check.trigger(self);
        let top = Scope::default();
        for (i, condition) in self.conditions.iter().enumerate() {
            check.expression(&format!("conditions[{i}]"), condition, &top);
        }
        if self.steps.is_empty() {
            check
                .problems
                .push("steps: a flow needs at least one step".to_string());
        }
        check.block(&self.steps, &mut top.clone());
        check.entity(self);
        let hydrate = check.hydrate(self);
        check.reconcile(self);
        match trigger {
            Some(trigger) if check.problems.is_empty() && check.pins_complete => Ok(Pinned {
                trigger,
                steps: check.pins,
                hydrate,
                records: check.record_pins,
            }),
            _ => Err(check.problems),
        }
    }
}

/// What templates can see at a point of the flow.
#[derive(Debug, Clone, Default)]
struct Scope {
    /// Steps that have run (or were skipped) before this point on every path.
    available: Vec<String>,
    /// Inside a loop: `item` and `index` are there.
    in_loop: bool,
    depth: usize,
}

struct Checker<'a> {
    catalogue: &'a dyn Catalogue,
    tenant: &'a str,
    keep: &'a HashMap<String, Version>,
    problems: Vec<String>,
    pins: Vec<Version>,
    /// False once an action could not be resolved (nothing is pinned then).
    pins_complete: bool,
    all_keys: HashSet<String>,
    seen: HashSet<String>,
    /// The output schema of each action step, for what loops go over.
    outputs: HashMap<String, Value>,
    event_schema: Option<Value>,
    /// The versions record jobs' connectors pin, by `<step>.from` / `.to`.
    record_pins: BTreeMap<String, Version>,
}

impl Checker<'_> {
    /// `Some(None)` for a valid pure schedule, `None` when invalid.
    fn trigger(&mut self, flow: &FlowSpec) -> Option<Option<Version>> {
        let spec = &flow.trigger;
        if let Some(file) = &spec.file {
            return self.file_trigger(flow, file);
        }
        if let Some(schedule) = &spec.schedule
            && let Err(e) = parse_schedule(schedule)
        {
            self.problems.push(format!("trigger.schedule: {e}"));
        }
        if spec.interval_secs == Some(0) {
            self.problems
                .push("trigger.interval_secs: must be at least 1".to_string());
        }
        if spec.plugin.is_empty() {
            if spec.schedule.is_none() {
                self.problems.push(
                    "trigger: needs `plugin` and `trigger`, or a `schedule` (cron) on its own"
                        .to_string(),
                );
                return None;
            }
            if !spec.trigger.is_empty() || spec.connection.is_some() {
                self.problems
                    .push("trigger.plugin: a trigger or connection needs a plugin".to_string());
            }
            return Some(None);
        }
        let manifest = self.resolve(&spec.plugin, "trigger.plugin")?;
        let Some(trigger) = manifest.triggers.iter().find(|t| t.key == spec.trigger) else {
            let known: Vec<&str> = manifest.triggers.iter().map(|t| t.key.as_str()).collect();
            self.problems.push(format!(
                "trigger.trigger: {}@{} has no trigger `{}` (it has: {})",
                manifest.key,
                manifest.version,
                spec.trigger,
                known.join(", ")
            ));
            return None;
        };
        if let Err(e) = check_against(&trigger.params_schema, &spec.params, "trigger.params") {
            self.problems.push(e.to_string());
        }
        if trigger.kind == TriggerKind::Webhook
            && (spec.schedule.is_some() || spec.interval_secs.is_some())
        {
            self.problems.push(format!(
                "trigger: `{}` is a webhook trigger; `schedule` and `interval_secs` are for polling",
                spec.trigger
            ));
        }
        self.event_schema = Some(trigger.event_schema.clone());
        self.connection(&manifest, spec.connection.as_deref(), "trigger.connection");
        Some(Some(manifest.version.clone()))
    }

    fn entity(&mut self, flow: &FlowSpec) {
        let Some(entity) = &flow.entity else {
            return;
        };
        let event = Scope::default();
        if entity.kind.trim().is_empty() {
            self.problems
                .push("entity.type: name the kind of entity (`order`, `stock`)".into());
        }
        if !template::is_template(&entity.key) {
            self.problems.push(format!(
                "entity.key: `{}` is the same for every event; use a template such as \"{{{{ trigger.id }}}}\"",
                entity.key
            ));
        }
        self.templates("entity.key", &Value::String(entity.key.clone()), &event);
        if let Some(version) = &entity.version {
            self.templates("entity.version", &Value::String(version.clone()), &event);
        }
        for (i, field) in entity.fields.iter().enumerate() {
            if field.is_empty() || field.split('.').any(str::is_empty) {
                self.problems.push(format!(
                    "entity.fields[{i}]: `{field}` is not a dotted field path"
                ));
            }
        }
        if let Some(echo) = &entity.echo {
            // Read when the run has finished: every top-level step is there.
            let done = Scope {
                available: flow.steps.iter().map(|s| s.key.clone()).collect(),
                ..Scope::default()
            };
            self.templates("entity.echo", &Value::String(echo.clone()), &done);
        }
        if let Some(coalesce) = entity.coalesce {
            if !(1..=3_600_000).contains(&coalesce.window_ms) {
                self.problems
                    .push("entity.coalesce.window_ms: from 1 to 3,600,000 (an hour)".into());
            }
            if coalesce.max_delay_ms < coalesce.window_ms {
                self.problems.push(
                    "entity.coalesce.max_delay_ms: at least window_ms (the longest a run waits)"
                        .into(),
                );
            }
        }
        if entity.max_runs.count == 0 || entity.max_runs.minutes == 0 {
            self.problems
                .push("entity.max_runs: `count` and `minutes` are at least 1".into());
        }
    }

    /// The version `hydrate` pins, if the flow hydrates its events.
    fn hydrate(&mut self, flow: &FlowSpec) -> Option<Version> {
        let hydrate = flow.hydrate.as_ref()?;
        if flow.entity.is_none() {
            self.problems.push(
                "hydrate: needs `entity` (which entity a thin event is about: fetches of one entity are merged)".into(),
            );
        }
        if super::definition::walk(&flow.steps)
            .iter()
            .any(|step| step.key == "hydrate")
        {
            self.problems.push(
                "steps: the key `hydrate` names the flow's `hydrate` step; rename this step".into(),
            );
        }
        let plugin = if hydrate.plugin.is_empty() {
            flow.trigger.plugin.clone()
        } else {
            hydrate.plugin.clone()
        };
        if plugin.is_empty() {
            self.problems
                .push("hydrate.plugin: a schedule has no plugin to hydrate with; name one".into());
            return None;
        }
        let manifest = self.resolve(&plugin, "hydrate.plugin")?;
        if !manifest.actions.iter().any(|a| a.key == hydrate.action) {
            let known: Vec<&str> = manifest.actions.iter().map(|a| a.key.as_str()).collect();
            self.problems.push(format!(
                "hydrate.action: {}@{} has no action `{}` (it has: {})",
                manifest.key,
                manifest.version,
                hydrate.action,
                known.join(", ")
            ));
            return None;
        }
        let connection = hydrate
            .connection
            .as_deref()
            .or(flow.trigger.connection.as_deref());
        self.connection(&manifest, connection, "hydrate.connection");
        self.templates("hydrate.input", &hydrate.input, &Scope::default());
        Some(manifest.version.clone())
    }

    fn reconcile(&mut self, flow: &FlowSpec) {
        let Some(reconcile) = &flow.trigger.reconcile else {
            return;
        };
        if flow.entity.is_none() {
            self.problems.push(
                "trigger.reconcile: needs `entity`, so that only what the webhooks missed starts runs".into(),
            );
        }
        if reconcile.every_secs == 0 {
            self.problems
                .push("trigger.reconcile.every_secs: at least 1".into());
        }
        if flow.trigger.plugin.is_empty() {
            return;
        }
        let Some(manifest) = self.resolve(&flow.trigger.plugin, "trigger.reconcile") else {
            return;
        };
        if manifest
            .triggers
            .iter()
            .any(|t| t.key == flow.trigger.trigger && t.kind != TriggerKind::Webhook)
        {
            self.problems.push(
                "trigger.reconcile: reconciliation backs a webhook trigger; this one polls already"
                    .into(),
            );
        }
        match manifest
            .triggers
            .iter()
            .find(|t| t.key == reconcile.trigger)
        {
            Some(t) if t.kind == TriggerKind::Polling => {
                if let Err(e) = check_against(
                    &t.params_schema,
                    &reconcile.params,
                    "trigger.reconcile.params",
                ) {
                    self.problems.push(e.to_string());
                }
            }
            Some(_) => self.problems.push(format!(
                "trigger.reconcile.trigger: `{}` is not a polling trigger",
                reconcile.trigger
            )),
            None => {
                let known: Vec<&str> = manifest
                    .triggers
                    .iter()
                    .filter(|t| t.kind == TriggerKind::Polling)
                    .map(|t| t.key.as_str())
                    .collect();
                self.problems.push(format!(
                    "trigger.reconcile.trigger: {}@{} has no polling trigger `{}` (it has: {})",
                    manifest.key,
                    manifest.version,
                    reconcile.trigger,
                    known.join(", ")
                ));
            }
        }
    }

    fn block(&mut self, steps: &[StepSpec], scope: &mut Scope) {
        for step in steps {
            self.step(step, scope);
            scope.available.push(step.key.clone());
        }
    }

    fn step(&mut self, step: &StepSpec, scope: &Scope) {
        let at = format!("steps[{}]", step.key);
        if !self.seen.insert(step.key.clone()) {
            self.problems.push(format!(
                "{at}: duplicate step key (keys are unique in the whole flow, nested steps included)"
            ));
        }
        if step.key.is_empty()
            || !step
                .key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            self.problems.push(format!(
                "{at}: step keys are letters, digits and `_` (they are used as `steps.{}`)",
                step.key
            ));
        }
        if let Some(when) = &step.when {
            self.expression(&format!("{at}.if"), when, scope);
        }
        let kinds = step.kinds();
        let kind = match kinds.as_slice() {
            [kind] => *kind,
            [] => {
                self.problems.push(format!(
                    "{at}: a step needs one of `plugin` and `action`, `paths`, `for_each`, `delay`, `stop`, `fail`, `respond`, `call_flow` or `records`"
                ));
                return;
            }
            several => {
                let names: Vec<&str> = several.iter().map(|k| k.as_str()).collect();
                self.problems.push(format!(
                    "{at}: a step is one thing; this one has {}",
                    names.join(" and ")
                ));
                return;
            }
        };
        if kind != StepKind::Action {
            for (present, field) in [
                (step.connection.is_some(), "connection"),
                // A record job calls an action too, on the step's schedule.
                (step.retry.is_some() && kind != StepKind::Records, "retry"),
                (
                    !step.input.as_object().is_some_and(|o| o.is_empty()),
                    "input",
                ),
            ] {
                if present {
                    self.problems.push(format!(
                        "{at}.{field}: only an action step has `{field}` (this is a {} step)",
                        kind.as_str()
                    ));
                }
            }
        }
        if step.on_error == OnError::Continue
            && !matches!(kind, StepKind::Action | StepKind::CallFlow)
        {
            self.problems.push(format!(
                "{at}.on_error: only actions and flow calls can fail and continue"
            ));
        }
        match kind {
            StepKind::Action => self.action(step, &at, scope),
            StepKind::Paths => self.paths(step, &at, scope),
            StepKind::ForEach => self.for_each(step, &at, scope),
            StepKind::Delay => {
                let delay = step.delay.as_ref().expect("kind says delay");
                match (delay.seconds, &delay.until) {
                    (Some(_), Some(_)) | (None, None) => self.problems.push(format!(
                        "{at}.delay: give `seconds` or `until`, one of them"
                    )),
                    (Some(seconds), None) if seconds > MAX_DELAY_SECS => self.problems.push(
                        format!("{at}.delay.seconds: at most {MAX_DELAY_SECS} (a year)"),
                    ),
                    (_, Some(until)) => self.templates(
                        &format!("{at}.delay.until"),
                        &Value::String(until.clone()),
                        scope,
                    ),
                    _ => {}
                }
            }
            StepKind::Stop | StepKind::Fail => {
                let (field, text) = match (&step.stop, &step.fail) {
                    (Some(text), _) => ("stop", text),
                    (_, Some(text)) => ("fail", text),
                    _ => unreachable!("kind says stop or fail"),
                };
                self.templates(
                    &format!("{at}.{field}"),
                    &Value::String(text.clone()),
                    scope,
                );
            }
            StepKind::Respond => {
                let respond = step.respond.as_ref().expect("kind says respond");
                if !(100..=599).contains(&respond.status) {
                    self.problems.push(format!(
                        "{at}.respond.status: {} is not an HTTP status",
                        respond.status
                    ));
                }
                for (name, value) in &respond.headers {
                    if http::HeaderName::try_from(name.as_str()).is_err() {
                        self.problems.push(format!(
                            "{at}.respond.headers: `{name}` is not a header name"
                        ));
                    }
                    self.templates(
                        &format!("{at}.respond.headers.{name}"),
                        &Value::String(value.clone()),
                        scope,
                    );
                }
                self.templates(&format!("{at}.respond.body"), &respond.body, scope);
            }
            StepKind::Records => self.records(step, &at, scope),
            StepKind::Publish => {
                let publish = step.publish.as_ref().expect("kind says publish");
                if let Err(e) = crate::topics::check_name("topic", &publish.topic) {
                    self.problems.push(format!("{at}.publish.topic: {e}"));
                }
                for (field, text) in [("key", &publish.key), ("type", &publish.kind)] {
                    if text.trim().is_empty() {
                        self.problems
                            .push(format!("{at}.publish.{field}: must not be empty"));
                    }
                    self.templates(
                        &format!("{at}.publish.{field}"),
                        &Value::String(text.clone()),
                        scope,
                    );
                }
                if !publish.delete && publish.data.is_null() {
                    self.problems.push(format!(
                        "{at}.publish.data: give the record's data (or `delete: true` for a tombstone)"
                    ));
                }
                self.templates(&format!("{at}.publish.data"), &publish.data, scope);
            }
            StepKind::CallFlow => {
                let call = step.call_flow.as_ref().expect("kind says call_flow");
                if call.flow.trim().is_empty() {
                    self.problems
                        .push(format!("{at}.call_flow.flow: name the flow to call"));
                }
                self.templates(&format!("{at}.call_flow.event"), &call.event, scope);
            }
        }
    }

    fn action(&mut self, step: &StepSpec, at: &str, scope: &Scope) {
        if step.plugin.is_empty() || step.action.is_empty() {
            self.problems.push(format!(
                "{at}: an action step needs both `plugin` and `action`"
            ));
            self.pins_complete = false;
            return;
        }
        let Some(manifest) = self.resolve(&step.plugin, &format!("{at}.plugin")) else {
            self.pins_complete = false;
            return;
        };
        let Some(action) = manifest.actions.iter().find(|a| a.key == step.action) else {
            let known: Vec<&str> = manifest.actions.iter().map(|a| a.key.as_str()).collect();
            self.problems.push(format!(
                "{at}.action: {}@{} has no action `{}` (it has: {})",
                manifest.key,
                manifest.version,
                step.action,
                known.join(", ")
            ));
            self.pins_complete = false;
            return;
        };
        self.connection(
            &manifest,
            step.connection.as_deref(),
            &format!("{at}.connection"),
        );
        self.templates(&format!("{at}.input"), &step.input, scope);
        check_input_shape(
            &action.input_schema,
            &step.input,
            &format!("{at}.input"),
            &mut self.problems,
        );
        self.outputs
            .insert(step.key.clone(), action.output_schema.clone());
        self.pins.push(manifest.version.clone());
    }

    fn paths(&mut self, step: &StepSpec, at: &str, scope: &Scope) {
        let paths = step.paths.as_ref().expect("kind says paths");
        if scope.depth + 1 > MAX_DEPTH {
            self.problems.push(format!(
                "{at}.paths: steps nest at most {MAX_DEPTH} deep; move part of this into a flow of its own (`call_flow`)"
            ));
            return;
        }
        if paths.branches.is_empty() {
            self.problems
                .push(format!("{at}.paths: needs at least one branch"));
        }
        let mut names = HashSet::new();
        let last = paths.branches.len().saturating_sub(1);
        for (i, branch) in paths.branches.iter().enumerate() {
            let place = format!("{at}.paths.branches[{}]", branch.name);
            if branch.name.is_empty()
                || !branch
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                self.problems.push(format!(
                    "{place}: branch names are letters, digits, `_` and `-`"
                ));
            }
            if !names.insert(branch.name.as_str()) {
                self.problems
                    .push(format!("{place}: two branches have this name"));
            }
            match &branch.when {
                Some(when) => self.expression(&format!("{place}.when"), when, scope),
                None if i != last => self.problems.push(format!(
                    "{place}.when: only the last branch may go without a condition (it is the `otherwise`)"
                )),
                None => {}
            }
            if branch.steps.is_empty() {
                self.problems
                    .push(format!("{place}.steps: a branch needs at least one step"));
            }
            let mut inner = Scope {
                depth: scope.depth + 1,
                ..scope.clone()
            };
            self.block(&branch.steps, &mut inner);
        }
    }

    fn for_each(&mut self, step: &StepSpec, at: &str, scope: &Scope) {
        let each = step.for_each.as_ref().expect("kind says for_each");
        if scope.depth + 1 > MAX_DEPTH {
            self.problems.push(format!(
                "{at}.for_each: steps nest at most {MAX_DEPTH} deep; move part of this into a flow of its own (`call_flow`)"
            ));
            return;
        }
        match &each.items {
            Value::Array(_) => {}
            Value::String(text) if template::is_template(text) => {
                self.templates(&format!("{at}.for_each.items"), &each.items, scope);
                if let Some(kind) = self.known_type(text)
                    && kind != "array"
                {
                    self.problems.push(format!(
                        "{at}.for_each.items: `{}` is {} by its schema, not an array",
                        text.trim(),
                        article(&kind)
                    ));
                }
            }
            other => self.problems.push(format!(
                "{at}.for_each.items: must be an array or a template that gives one, not {other}"
            )),
        }
        if !(1..=MAX_CONCURRENCY).contains(&each.concurrency) {
            self.problems.push(format!(
                "{at}.for_each.concurrency: from 1 to {MAX_CONCURRENCY}"
            ));
        }
        if !(1..=MAX_ITEMS_LIMIT).contains(&each.max_items) {
            self.problems.push(format!(
                "{at}.for_each.max_items: from 1 to {MAX_ITEMS_LIMIT}"
            ));
        }
        if each.steps.is_empty() {
            self.problems.push(format!(
                "{at}.for_each.steps: a loop needs at least one step"
            ));
        }
        let mut inner = Scope {
            depth: scope.depth + 1,
            in_loop: true,
            ..scope.clone()
        };
        self.block(&each.steps, &mut inner);
    }

    /// What a single-expression template is, when a schema says so:
    /// `{{ steps.find.items }}` by the action's output schema,
    /// `{{ trigger.lines }}` by the trigger's event schema.
    fn known_type(&self, text: &str) -> Option<String> {
        let expr = template::single_expression(text)?;
        let path: Vec<&str> = expr.split('.').collect();
        if !path
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_alphanumeric() || c == '_'))
        {
            return None; // a filter or an operator: cannot be known
        }
        let (schema, rest) = match path.as_slice() {
            ["steps", key, rest @ ..] => (self.outputs.get(*key)?, rest),
            ["trigger", rest @ ..] => (self.event_schema.as_ref()?, rest),
            _ => return None,
        };
        let mut schema = schema;
        for field in rest {
            schema = schema.get("properties")?.get(*field)?;
        }
        schema.get("type")?.as_str().map(str::to_string)
    }

    /// Checks a condition's syntax and the names it uses.
    fn expression(&mut self, at: &str, expr: &str, scope: &Scope) {
        match template::check_condition(expr) {
            Ok(names) => self.names(at, &names, scope),
            Err(e) => self.problems.push(format!("{at}: {e}")),
        }
    }

    /// Checks the templates inside a value and the names they use.
    fn templates(&mut self, at: &str, value: &Value, scope: &Scope) {
        let mut names = Vec::new();
        match template::check(value, at, &mut names) {
            Err(e) => self.problems.push(e),
            Ok(()) => {
                for (name, place) in names {
                    self.names(&place, &[name], scope);
                }
            }
        }
    }

    /// Names a template may use: `trigger...`, `env...`, `steps.<a step
    /// that has run by then>...`, and in a loop `item` and `index`.
    fn names(&mut self, at: &str, names: &[String], scope: &Scope) {
        for name in names {
            let mut parts = name.split('.');
            match (parts.next(), parts.next()) {
                (Some("trigger" | "env" | "changes" | "previous"), _) => {}
                (Some("item" | "index"), _) if scope.in_loop => {}
                (Some("item" | "index"), _) => self.problems.push(format!(
                    "{at}: `{name}` exists only inside a `for_each`"
                )),
                (Some("steps"), Some(step)) if scope.available.iter().any(|a| a == step) => {}
                (Some("steps"), Some(step)) if self.all_keys.contains(step) => {
                    self.problems.push(format!(
                        "{at}: `{name}` refers to step `{step}`, which may not have run before this point (it comes later, or in a branch or loop this point is not in)"
                    ))
                }
                (Some("steps"), Some(step)) => self.problems.push(format!(
                    "{at}: `{name}` refers to step `{step}`, which does not run before this point (the flow has no such step)"
                )),
                _ => self.problems.push(format!(
                    "{at}: `{name}` is not available; templates can use `trigger`, `env`, `steps.<earlier step>` (and `item`, `index` in a loop)"
                )),
            }
        }
    }

    /// The kept version if it still satisfies the requirement (deprecated
    /// or not: a pinned flow keeps working), else the newest matching one.
    fn resolve(&mut self, plugin_ref: &str, at: &str) -> Option<Manifest> {
        let found = parse_plugin_ref(plugin_ref).and_then(|(key, req)| {
            if let Some(kept) = self.keep.get(&key).filter(|v| req.matches(v))
                && let Ok(manifest) = self.catalogue.manifest(&key, kept)
            {
                return Ok(manifest);
            }
            let version = self.catalogue.resolve(&key, &req)?;
            self.catalogue.manifest(&key, &version)
        });
        match found {
            Ok(manifest) => Some(manifest),
            Err(e) => {
                self.problems.push(format!("{at}: {e}"));
                None
            }
        }
    }

    fn connection(&mut self, manifest: &Manifest, connection: Option<&str>, at: &str) {
        let needs_one = !manifest.connection_properties.is_empty();
        match connection {
            None if needs_one => self
                .problems
                .push(format!("{at}: {} needs a connection", manifest.key)),
            None => {}
            Some(id) => match self.catalogue.connection_plugin(self.tenant, id) {
                Ok(plugin) if plugin != manifest.key => self.problems.push(format!(
                    "{at}: connection `{id}` belongs to `{plugin}`, not `{}`",
                    manifest.key
                )),
                Ok(_) => {}
                Err(e) => self.problems.push(format!("{at}: {e}")),
            },
        }
    }
}

fn article(kind: &str) -> String {
    match kind.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u') => format!("an {kind}"),
        _ => format!("a {kind}"),
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
