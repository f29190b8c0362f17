//! Step testing for editors: one action step of a draft flow, run with
//! sample data (the trigger event and earlier steps' outputs) through the
//! same call path as a run, without creating one. The answer shows the
//! rendered input, the output or error, and the redacted HTTP exchanges.

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::Runs;
use crate::{
    calls::{Purpose, parse_output, trace_id},
    error::ServiceError,
    flows::{FlowSpec, StepKind, template, walk},
    registry::parse_plugin_ref,
    schema::check_against,
};

/// What an editor sends to test a step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTest {
    /// The draft flow (not published).
    pub flow: FlowSpec,
    /// The key of the action step to run.
    pub step: String,
    /// A sample trigger event.
    #[serde(default)]
    pub trigger: Value,
    /// Earlier steps' outputs, by key.
    #[serde(default)]
    pub steps: Map<String, Value>,
    /// In a loop: the item and its index.
    #[serde(default)]
    pub item: Option<Value>,
    #[serde(default)]
    pub index: Option<usize>,
}

impl Runs {
    pub async fn test_step(&self, tenant: &str, test: StepTest) -> Result<Value, ServiceError> {
        let Some(step) = walk(&test.flow.steps)
            .into_iter()
            .find(|s| s.key == test.step)
        else {
            return Err(ServiceError::BadRequest(format!(
                "the flow has no step `{}`",
                test.step
            )));
        };
        if step.kind() != StepKind::Action {
            return Err(ServiceError::BadRequest(format!(
                "step `{}` is a {} step; only actions can be tested",
                step.key,
                step.kind().as_str()
            )));
        }
        let (plugin, req) = parse_plugin_ref(&step.plugin)?;
        let mut context = json!({
            "trigger": test.trigger,
            "steps": test.steps,
            "env": test.flow.env,
        });
        if let Some(item) = test.item {
            context["item"] = item;
            context["index"] = json!(test.index.unwrap_or(0));
        }
        let input = template::render(&step.input, &context)
            .map_err(|e| ServiceError::BadRequest(format!("steps[{}].input: {e}", step.key)))?;
        let call = self.calls.prepare_ref(
            tenant,
            &plugin,
            &req,
            step.connection.as_deref(),
            Purpose::Other,
            trace_id("test-step"),
        )?;
        let name = call.plugin.name();
        let Some(action) = call
            .plugin
            .record
            .manifest
            .actions
            .iter()
            .find(|a| a.key == step.action)
        else {
            return Err(ServiceError::BadRequest(format!(
                "{name} has no action `{}`",
                step.action
            )));
        };
        check_against(
            &action.input_schema,
            &input,
            &format!("the mapped input of step `{}`", step.key),
        )?;
        let key = call.trace_id().to_string();
        let outcome = self
            .calls
            .perform(call, &step.action, &input.to_string(), &key)
            .await;
        let (output, error) = match outcome.result.and_then(parse_output) {
            Ok(output) => (Some(output), None),
            Err(e) => (None, Some(e)),
        };
        Ok(json!({
            "step": step.key,
            "plugin": name,
            "input": input,
            "output": output,
            "error": error,
            "journal": outcome.journal,
            "duration_ms": outcome.duration.as_secs_f64() * 1e3,
        }))
    }
}
