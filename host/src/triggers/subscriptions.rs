//! One webhook endpoint for many flows. A webhook trigger is registered with
//! the third party once per plugin version, trigger, connection and params:
//! the first flow that is activated with them subscribes, the next ones
//! join that subscription, and only the last one to leave unsubscribes. A
//! delivery to the subscription's URL is stored once and routed to every
//! flow in it, each with its own conditions and entity state.

use rand::RngCore;
use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{HookTarget, Triggers, webhook_url};
use crate::{
    calls::{Purpose, Target},
    clock::now_ms,
    error::ServiceError,
    flows::FlowRecord,
    manifest::TriggerKind,
    store::{KvExt, Tree, Write},
};

/// A webhook registered with a third party, and the flows it serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub tenant: String,
    /// The plugin key and the version whose `handle-webhook` reads deliveries.
    pub plugin: String,
    pub version: Version,
    pub trigger: String,
    pub connection: Option<String>,
    pub params: Value,
    /// The secret part of the webhook URL.
    pub token: String,
    /// What the plugin's `subscribe` returned, for `unsubscribe`.
    pub state: String,
    /// The active flows it delivers to, in the order they joined.
    pub flows: Vec<String>,
    pub created_at: u64,
}

/// What makes two flows' webhooks the same registration.
fn fingerprint(
    plugin: &str,
    version: &Version,
    trigger: &str,
    connection: Option<&str>,
    params: &Value,
) -> String {
    let parts = serde_json::json!([plugin, version.to_string(), trigger, connection, params]);
    hex::encode(Sha256::digest(parts.to_string().as_bytes()))
}

impl Triggers {
    /// Makes a flow active and writes it: a webhook flow joins the
    /// subscription its trigger shares with other flows, or subscribes
    /// (the plugin's `subscribe` registers the URL with the third party).
    pub(super) async fn switch_on(
        &self,
        flow: &mut FlowRecord,
        base_url: &str,
    ) -> Result<(), ServiceError> {
        flow.active = true;
        let Some(version) = self.webhook_version(flow)? else {
            return self.flows.write(flow, Vec::new());
        };
        let _guard = self.activations.lock().await;
        let index = fingerprint(
            &flow.trigger_plugin(),
            &version,
            &flow.spec.trigger.trigger,
            flow.spec.trigger.connection.as_deref(),
            &flow.spec.trigger.params,
        );
        let existing: Option<Subscription> = match self
            .kv
            .get_json::<String>(Tree::SubscriptionIndex, &[&flow.tenant, &index])?
        {
            Some(id) => self
                .kv
                .get_json(Tree::Subscriptions, &[&flow.tenant, &id])?,
            None => None,
        };
        let mut writes = Vec::new();
        let subscription = match existing {
            Some(mut subscription) => {
                if !subscription.flows.contains(&flow.id) {
                    subscription.flows.push(flow.id.clone());
                }
                subscription
            }
            None => {
                let subscription = self.subscribe(flow, version, base_url).await?;
                writes.push(Write::put(
                    Tree::SubscriptionIndex,
                    &[&flow.tenant, &index],
                    &subscription.id,
                ));
                writes.push(Write::put(
                    Tree::Hooks,
                    &[&subscription.token],
                    &HookTarget {
                        tenant: flow.tenant.clone(),
                        subscription: subscription.id.clone(),
                    },
                ));
                subscription
            }
        };
        flow.webhook_token = Some(subscription.token.clone());
        flow.subscription = Some(subscription.id.clone());
        writes.push(Write::put(
            Tree::Subscriptions,
            &[&flow.tenant, &subscription.id],
            &subscription,
        ));
        self.flows.write(flow, writes)
    }

    /// Makes a flow inactive and writes it: it leaves its subscription, and
    /// the last flow to leave unsubscribes. Returns a warning if the third
    /// party refused to unregister (the flow is inactive regardless).
    pub(super) async fn switch_off(
        &self,
        flow: &mut FlowRecord,
    ) -> Result<Option<String>, ServiceError> {
        flow.active = false;
        flow.webhook_token = None;
        let Some(id) = flow.subscription.take() else {
            self.flows.write(flow, Vec::new())?;
            return Ok(None);
        };
        let _guard = self.activations.lock().await;
        let Some(mut subscription) = self
            .kv
            .get_json::<Subscription>(Tree::Subscriptions, &[&flow.tenant, &id])?
        else {
            self.flows.write(flow, Vec::new())?;
            return Ok(None);
        };
        subscription.flows.retain(|f| *f != flow.id);
        if !subscription.flows.is_empty() {
            let keep = Write::put(Tree::Subscriptions, &[&flow.tenant, &id], &subscription);
            self.flows.write(flow, vec![keep])?;
            return Ok(None);
        }
        let warning = self.unsubscribe(&subscription).await;
        let index = fingerprint(
            &subscription.plugin,
            &subscription.version,
            &subscription.trigger,
            subscription.connection.as_deref(),
            &subscription.params,
        );
        let writes = vec![
            Write::delete(Tree::Subscriptions, &[&flow.tenant, &id]),
            Write::delete(Tree::SubscriptionIndex, &[&flow.tenant, &index]),
            Write::delete(Tree::Hooks, &[&subscription.token]),
        ];
        self.flows.write(flow, writes)?;
        Ok(warning)
    }

    /// A subscription by id.
    pub(super) fn subscription(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<std::sync::Arc<Subscription>>, ServiceError> {
        Ok(self.subscriptions.get(self.kv.as_ref(), &[tenant, id])?)
    }

    /// The pinned trigger version of a webhook flow; `None` for other flows.
    fn webhook_version(&self, flow: &FlowRecord) -> Result<Option<Version>, ServiceError> {
        if self.flows.trigger_kind(flow)? != Some(TriggerKind::Webhook) {
            return Ok(None);
        }
        Ok(flow.pinned.trigger.clone())
    }

    async fn subscribe(
        &self,
        flow: &FlowRecord,
        version: Version,
        base_url: &str,
    ) -> Result<Subscription, ServiceError> {
        let mut bytes = [0u8; 24];
        rand::rng().fill_bytes(&mut bytes);
        let token = hex::encode(bytes);
        rand::rng().fill_bytes(&mut bytes[..10]);
        let id = format!("sub_{}", hex::encode(&bytes[..10]));
        let url = webhook_url(base_url, &token);
        let call = self.trigger_call(flow, Purpose::Other, format!("subscribe-{}", flow.id))?;
        let plugin = call.plugin.record.key.clone();
        let outcome = self
            .calls
            .subscribe(
                call,
                &flow.spec.trigger.trigger,
                &flow.spec.trigger.params.to_string(),
                &url,
            )
            .await;
        let state = outcome.result.map_err(|e| {
            ServiceError::upstream(
                &format!("the flow is not active: registering the webhook with `{plugin}` failed"),
                &e,
            )
        })?;
        Ok(Subscription {
            id,
            tenant: flow.tenant.clone(),
            plugin,
            version,
            trigger: flow.spec.trigger.trigger.clone(),
            connection: flow.spec.trigger.connection.clone(),
            params: flow.spec.trigger.params.clone(),
            token,
            state,
            flows: vec![flow.id.clone()],
            created_at: now_ms(),
        })
    }

    async fn unsubscribe(&self, subscription: &Subscription) -> Option<String> {
        let target = Target {
            tenant: &subscription.tenant,
            plugin: &subscription.plugin,
            version: &subscription.version,
            connection: subscription.connection.as_deref(),
        };
        let trace = format!("unsubscribe-{}", subscription.id);
        match self.calls.prepare(target, Purpose::Other, trace) {
            Ok(call) => {
                let outcome = self
                    .calls
                    .unsubscribe(
                        call,
                        &subscription.trigger,
                        &subscription.params.to_string(),
                        &subscription.state,
                    )
                    .await;
                outcome.result.err().map(|e| {
                    format!(
                        "the webhook may still be registered with `{}`: unsubscribe failed: {e}",
                        subscription.plugin
                    )
                })
            }
            Err(e) => Some(format!("unsubscribe was not called: {e}")),
        }
    }
}
