//! Where runs come from: webhook ingress ([`ingress`]), polling and cron
//! ([`scheduler`]), new files ([`files`], a service of its own), and
//! activation, which registers a flow's webhook with
//! the third party (the plugin's `subscribe`) or puts it on the schedule.
//! [`Triggers`] is the service; the three files are its parts.

pub mod files;
mod follow;
pub mod ingress;
pub mod scheduler;
mod subscriptions;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    calls::{Call, Calls, Purpose, Refused, Target},
    clock::now_ms,
    engine::Event,
    error::ServiceError,
    flows::{FlowRecord, Flows},
    manifest::TriggerKind,
    metrics::Metrics,
    runs::Runs,
    store::{Decoded, Inbox, Kv, PollRecord, Sample, Tree, TriggerState, TriggerStore},
    tasks::Tasks,
};

pub use scheduler::Scheduler;

pub use subscriptions::Subscription;

/// Where a webhook URL delivers to (kept in [`Tree::Hooks`] by its token).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookTarget {
    pub tenant: String,
    pub subscription: String,
}

/// What the trigger service is given.
#[derive(Debug, Clone)]
pub struct TriggerSettings {
    /// Largest webhook delivery accepted, in bytes.
    pub max_delivery_bytes: usize,
    /// Polls running at once.
    pub poll_workers: usize,
    /// How long rejected deliveries are kept.
    pub retention: std::time::Duration,
}

/// The trigger service: activation, webhook ingress and the poll/cron
/// scheduler. Its runs go to [`Runs`].
pub struct Triggers {
    kv: Arc<dyn Kv>,
    inbox: Arc<dyn Inbox>,
    states: Arc<dyn TriggerStore>,
    flows: Arc<Flows>,
    calls: Arc<Calls>,
    runs: Arc<Runs>,
    metrics: Arc<Metrics>,
    tasks: Arc<Tasks>,
    settings: TriggerSettings,
    scheduler: Scheduler,
    /// Subscriptions and hooks as deliveries read them.
    subscriptions: Decoded<Subscription>,
    hooks: Decoded<HookTarget>,
    /// When each flow's samples were last written.
    sampled: Mutex<HashMap<(String, String), u64>>,
    /// Serialises activations: flows joining and leaving subscriptions.
    activations: tokio::sync::Mutex<()>,
}

/// Samples kept per flow.
pub const SAMPLES_KEPT: usize = 5;
/// A flow's samples are written at most this often: under load its events
/// arrive far faster than anyone looks at them.
const SAMPLE_EVERY_MS: u64 = 2_000;

impl Triggers {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kv: Arc<dyn Kv>,
        inbox: Arc<dyn Inbox>,
        states: Arc<dyn TriggerStore>,
        flows: Arc<Flows>,
        calls: Arc<Calls>,
        runs: Arc<Runs>,
        metrics: Arc<Metrics>,
        tasks: Arc<Tasks>,
        settings: TriggerSettings,
    ) -> Self {
        Triggers {
            kv,
            inbox,
            states,
            flows,
            calls,
            runs,
            metrics,
            tasks,
            settings,
            scheduler: Scheduler::default(),
            subscriptions: Decoded::new(Tree::Subscriptions),
            hooks: Decoded::new(Tree::Hooks),
            sampled: Mutex::default(),
            activations: tokio::sync::Mutex::new(()),
        }
    }

    /// Starts the scheduler and the inbox worker (which also finishes
    /// deliveries accepted before a crash); they stop with the tasks.
    pub fn start(self: &Arc<Self>) {
        self.start_scheduler();
        self.start_inbox_worker();
        self.start_following();
    }

    pub fn settings(&self) -> &TriggerSettings {
        &self.settings
    }

    /// Flows waiting in the schedule or being polled.
    pub fn scheduled(&self) -> usize {
        self.scheduler.len()
    }

    /// A call of a flow's trigger plugin with its connection.
    fn trigger_call(
        &self,
        flow: &FlowRecord,
        purpose: Purpose,
        trace_id: String,
    ) -> Result<Call, Refused> {
        let version = flow.pinned.trigger.as_ref().ok_or_else(|| {
            Refused::Plugin(ServiceError::State(
                "a schedule trigger has no plugin to call".into(),
            ))
        })?;
        let plugin = flow.trigger_plugin();
        let target = Target {
            tenant: &flow.tenant,
            plugin: &plugin,
            version,
            connection: flow.spec.trigger.connection.as_deref(),
        };
        self.calls.prepare(target, purpose, trace_id)
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
        let mut flow = self.flows.get(tenant, id)?;
        if flow.active {
            return Ok(flow);
        }
        self.switch_on(&mut flow, base_url).await?;
        self.schedule_flow(&flow)?;
        Ok(flow)
    }

    /// Deactivates a flow: it leaves its webhook subscription (the last
    /// flow in it unregisters the webhook with the third party); polls stop.
    /// Runs already queued still run. Returns the flow and, if `unsubscribe`
    /// failed, what went wrong (the flow is inactive regardless).
    pub async fn deactivate_flow(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<(FlowRecord, Option<String>), ServiceError> {
        let mut flow = self.flows.get(tenant, id)?;
        if !flow.active {
            return Ok((flow, None));
        }
        let warning = self.switch_off(&mut flow).await?;
        self.unschedule_flow(tenant, id);
        Ok((flow, warning))
    }

    /// Resumes a flow paused because it kept firing for one entity: its
    /// trigger's events start runs again (what it did for an entity before
    /// now no longer counts towards a loop), and a polled trigger is polled
    /// at once.
    pub fn resume_flow(&self, tenant: &str, id: &str) -> Result<FlowRecord, ServiceError> {
        self.flows.set_paused(tenant, id, None)?;
        let flow = self.flows.get(tenant, id)?;
        self.schedule_flow(&flow)?;
        Ok(flow)
    }

    /// After a new version of an active flow is published (`before` is the
    /// record before it): a changed webhook trigger leaves its subscription
    /// and joins (or makes) the one of its new trigger; a polling flow picks
    /// up the new version at its next poll by itself. If the new
    /// registration fails the flow is left inactive and the error says so.
    pub async fn refresh_activation(
        &self,
        before: &FlowRecord,
        base_url: &str,
    ) -> Result<Option<String>, ServiceError> {
        let mut after = self.flows.get(&before.tenant, &before.id)?;
        let same = before.spec.trigger == after.spec.trigger
            && before.pinned.trigger == after.pinned.trigger;
        if !before.active || same {
            return Ok(None);
        }
        self.unschedule_flow(&after.tenant, &after.id);
        let warning = self.switch_off(&mut after).await?;
        self.switch_on(&mut after, base_url).await?;
        self.schedule_flow(&after)?;
        Ok(warning)
    }

    /// What the API shows about a flow's trigger: its URL or its schedule
    /// state.
    pub fn trigger_view(&self, flow: &FlowRecord, base_url: &str) -> Result<Value, ServiceError> {
        let state = self.trigger_state(&flow.tenant, &flow.id)?;
        Ok(json!({
            "active": flow.active,
            "kind": match self.flows.trigger_kind(flow)? {
                Some(TriggerKind::Webhook) => "webhook",
                Some(TriggerKind::Polling) => "polling",
                None if flow.spec.trigger.file.is_some() => "file",
                None => "schedule",
            },
            "webhook_url": flow.webhook_token.as_ref().map(|t| webhook_url(base_url, t)),
            "state": state,
        }))
    }

    pub fn trigger_state(&self, tenant: &str, id: &str) -> Result<TriggerState, ServiceError> {
        Ok(self.states.state(tenant, id)?.unwrap_or_default())
    }

    /// Keeps the newest of a flow's trigger events as samples, at most
    /// once every [`SAMPLE_EVERY_MS`] per flow.
    fn record_samples(&self, flow: &FlowRecord, events: &[Event], source: &str) {
        if events.is_empty() {
            return;
        }
        let now = now_ms();
        {
            let mut sampled = self.sampled.lock().unwrap_or_else(|e| e.into_inner());
            let key = (flow.tenant.clone(), flow.id.clone());
            if sampled
                .get(&key)
                .is_some_and(|at| now.saturating_sub(*at) < SAMPLE_EVERY_MS)
            {
                return;
            }
            sampled.insert(key, now);
        }
        self.keep_samples(flow, events, source, now);
    }

    fn keep_samples(&self, flow: &FlowRecord, events: &[Event], source: &str, now: u64) {
        let samples: Vec<Sample> = events
            .iter()
            .rev()
            .take(SAMPLES_KEPT)
            .map(|e| Sample {
                at: now,
                source: source.to_string(),
                event_id: e.id.clone(),
                payload: serde_json::from_str(&e.payload)
                    .unwrap_or_else(|_| Value::String(e.payload.clone())),
            })
            .collect();
        if let Err(e) = self
            .states
            .add_samples(&flow.tenant, &flow.id, &samples, SAMPLES_KEPT)
        {
            tracing::warn!(flow = %flow.id, "cannot keep the trigger's samples: {e}");
        }
    }

    /// The last events a flow's trigger produced, newest first. With
    /// `fetch`, a polling trigger is asked for events now (from the start,
    /// as a first poll would be, nothing committed), and a schedule gives
    /// its tick's event.
    pub async fn samples(
        &self,
        tenant: &str,
        id: &str,
        fetch: bool,
    ) -> Result<Vec<Sample>, ServiceError> {
        let flow = self.flows.get(tenant, id)?;
        if fetch {
            let now = now_ms();
            match self.flows.trigger_kind(&flow)? {
                Some(TriggerKind::Webhook) => {
                    return Err(ServiceError::State(
                        "a webhook trigger's samples come from its deliveries: send one to its URL"
                            .into(),
                    ));
                }
                Some(TriggerKind::Polling) => {
                    let call =
                        self.trigger_call(&flow, Purpose::Other, format!("sample-{id}-{now}"))?;
                    let plugin = call.plugin.name();
                    let outcome = self
                        .calls
                        .poll(
                            call,
                            &flow.spec.trigger.trigger,
                            &flow.spec.trigger.params.to_string(),
                            None,
                        )
                        .await;
                    let output = outcome.result.map_err(|e| {
                        ServiceError::upstream(&format!("polling `{plugin}` for samples"), &e)
                    })?;
                    self.keep_samples(&flow, &output.events, "poll", now);
                }
                None => {
                    let events = [scheduler::schedule_event(now, now)];
                    self.keep_samples(&flow, &events, "schedule", now);
                }
            }
        }
        Ok(self.states.samples(tenant, id)?)
    }

    /// The samples kept of a flow's trigger, newest first, without asking
    /// the third party (the console's data picker).
    pub fn kept_samples(&self, tenant: &str, id: &str) -> Result<Vec<Sample>, ServiceError> {
        self.flows.get(tenant, id)?;
        Ok(self.states.samples(tenant, id)?)
    }

    /// A flow's last polls, newest first.
    pub fn polls(&self, tenant: &str, id: &str) -> Result<Vec<PollRecord>, ServiceError> {
        self.flows.get(tenant, id)?;
        Ok(self.states.polls(tenant, id)?)
    }

    /// Forgets what the triggers kept of a deleted flow.
    pub fn forget(&self, tenant: &str, id: &str) -> Result<(), ServiceError> {
        self.unschedule_flow(tenant, id);
        Ok(self.states.forget(tenant, id)?)
    }

    /// The flow a webhook token leads to (only while the flow is active).
    pub fn hook_target(&self, token: &str) -> Result<Option<Arc<HookTarget>>, ServiceError> {
        Ok(self.hooks.get(self.kv.as_ref(), &[token])?)
    }
}

/// The URL a webhook flow receives deliveries at.
fn webhook_url(base_url: &str, token: &str) -> String {
    format!("{}/hooks/{token}", base_url.trim_end_matches('/'))
}
