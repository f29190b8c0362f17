//! Where runs come from: webhook ingress ([`ingress`]), polling and cron
//! ([`scheduler`]), and activation, which registers a flow's webhook with
//! the third party (the plugin's `subscribe`) or puts it on the schedule.

pub mod commit;
pub mod ingress;
pub mod scheduler;

use rand::RngCore;
use serde_json::{Value, json};

use crate::{app::App, error::ServiceError, flows::FlowRecord, manifest::TriggerKind, store::Op};

pub use commit::GroupCommit;
pub use scheduler::{Scheduler, TriggerState};

impl App {
    /// The URL a webhook flow receives deliveries at.
    pub fn webhook_url(&self, base_url: &str, token: &str) -> String {
        format!("{}/hooks/{token}", base_url.trim_end_matches('/'))
    }

    /// Activates a flow: a webhook trigger gets an unguessable URL that the
    /// plugin's `subscribe` registers with the third party; a polling or
    /// schedule trigger joins the schedule. Activating an active flow
    /// changes nothing.
    pub async fn activate_flow(
        &self,
        tenant: &str,
        id: &str,
        base_url: &str,
    ) -> Result<FlowRecord, ServiceError> {
        let mut flow = self.flow(tenant, id)?;
        if flow.active {
            return Ok(flow);
        }
        let extra = self.subscribe(&mut flow, base_url).await?;
        flow.active = true;
        self.write_flow(&flow, extra)?;
        self.schedule_flow(&flow)?;
        Ok(flow)
    }

    /// Registers a webhook trigger with the third party; returns the ops
    /// that route its URL to the flow. Nothing for other triggers.
    async fn subscribe(
        &self,
        flow: &mut FlowRecord,
        base_url: &str,
    ) -> Result<Vec<Op>, ServiceError> {
        if self.trigger_kind(flow)? != Some(TriggerKind::Webhook) {
            return Ok(Vec::new());
        }
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        let url = self.webhook_url(base_url, &token);
        let (plugin, env, ctx) = self.trigger_call(flow, format!("subscribe-{}", flow.id))?;
        let outcome = self
            .engine
            .subscribe(
                &plugin.plugin,
                env,
                ctx,
                &flow.spec.trigger.trigger,
                &flow.spec.trigger.params.to_string(),
                &url,
            )
            .await;
        let state = outcome.result.map_err(|e| {
            ServiceError::BadRequest(format!(
                "the flow is not active: registering the webhook with `{}` failed: {e}",
                plugin.record.key
            ))
        })?;
        let route = Op::put_json(
            ingress::HOOKS,
            token.as_bytes(),
            &ingress::HookTarget {
                tenant: flow.tenant.clone(),
                flow_id: flow.id.clone(),
            },
        );
        flow.webhook_token = Some(token);
        flow.subscription = Some(state);
        Ok(vec![route])
    }

    /// Removes a webhook registration (as `flow` describes it); returns the
    /// ops that stop its URL, and a warning if the third party refused.
    async fn unsubscribe(&self, flow: &mut FlowRecord) -> (Vec<Op>, Option<String>) {
        let Some(token) = flow.webhook_token.take() else {
            return (Vec::new(), None);
        };
        let ops = vec![Op::Delete {
            tree: ingress::HOOKS,
            key: token.into_bytes(),
        }];
        let state = flow.subscription.take().unwrap_or_default();
        let warning = match self.trigger_call(flow, format!("unsubscribe-{}", flow.id)) {
            Ok((plugin, env, ctx)) => {
                let outcome = self
                    .engine
                    .unsubscribe(
                        &plugin.plugin,
                        env,
                        ctx,
                        &flow.spec.trigger.trigger,
                        &flow.spec.trigger.params.to_string(),
                        &state,
                    )
                    .await;
                outcome.result.err().map(|e| {
                    format!(
                        "the webhook may still be registered with `{}`: unsubscribe failed: {e}",
                        plugin.record.key
                    )
                })
            }
            Err(e) => Some(format!("unsubscribe was not called: {e}")),
        };
        (ops, warning)
    }

    /// Deactivates a flow: its webhook URL stops answering and the plugin's
    /// `unsubscribe` removes the registration; polls stop. Runs already
    /// queued still run. Returns the flow and, if `unsubscribe` failed, what
    /// went wrong (the flow is inactive regardless).
    pub async fn deactivate_flow(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<(FlowRecord, Option<String>), ServiceError> {
        let mut flow = self.flow(tenant, id)?;
        if !flow.active {
            return Ok((flow, None));
        }
        let (ops, warning) = self.unsubscribe(&mut flow).await;
        flow.active = false;
        self.write_flow(&flow, ops)?;
        self.unschedule_flow(tenant, id);
        Ok((flow, warning))
    }

    /// After a new version of an active flow is published (`before` is the
    /// record before it): a changed webhook trigger is unregistered and
    /// registered again; a polling flow picks up the new version at its
    /// next poll by itself. If the new registration fails the flow is left
    /// inactive and the error says so.
    pub async fn refresh_activation(
        &self,
        before: &FlowRecord,
        base_url: &str,
    ) -> Result<Option<String>, ServiceError> {
        let mut after = self.flow(&before.tenant, &before.id)?;
        let same = before.spec.trigger == after.spec.trigger
            && before.pinned.trigger == after.pinned.trigger;
        if !before.active || same {
            return Ok(None);
        }
        let mut old = before.clone();
        let (mut ops, warning) = self.unsubscribe(&mut old).await;
        after.webhook_token = None;
        after.subscription = None;
        self.unschedule_flow(&after.tenant, &after.id);
        match self.subscribe(&mut after, base_url).await {
            Ok(route) => {
                ops.extend(route);
                self.write_flow(&after, ops)?;
                self.schedule_flow(&after)?;
                Ok(warning)
            }
            Err(e) => {
                after.active = false;
                self.write_flow(&after, ops)?;
                Err(e)
            }
        }
    }

    /// What the API shows about a flow's trigger: its URL or its schedule
    /// state.
    pub fn trigger_view(&self, flow: &FlowRecord, base_url: &str) -> Result<Value, ServiceError> {
        let state = self.trigger_state(&flow.tenant, &flow.id)?;
        Ok(json!({
            "active": flow.active,
            "kind": match self.trigger_kind(flow)? {
                Some(TriggerKind::Webhook) => "webhook",
                Some(TriggerKind::Polling) => "polling",
                None => "schedule",
            },
            "webhook_url": flow.webhook_token.as_ref().map(|t| self.webhook_url(base_url, t)),
            "state": state,
        }))
    }
}
