//! Webhook ingress: `/hooks/{token}`.
//!
//! A delivery is written to the inbox and made durable (group commit) before
//! anything else; only then does the plugin's `handle-webhook` turn it into
//! events, which become runs in the same batch that deletes the inbox entry.
//! So an acknowledged delivery is never lost: if the host dies after the
//! 2xx, the inbox entry is processed again at start, and the runs it makes
//! have the same ids as before (de-duplication drops the repeat). A delivery
//! the plugin cannot process now (a trap, a timeout) stays in the inbox and
//! is retried in the background; one it rejects (a bad signature, a body
//! that is not what the trigger expects) is recorded with the reason, where
//! the flow's owner can see it.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{
    app::App,
    engine::{CallError, ConnectorError, WebhookInput, WebhookReply},
    error::ServiceError,
    flows::FlowRecord,
    registry::parse_plugin_ref,
    runs::record::now_ms,
    store::{Op, StorageExt},
};

/// `{token}` → [`HookTarget`].
pub const HOOKS: &str = "hooks";
/// `{received:016x}{random}` → [`Delivery`]: accepted, not yet processed.
pub const INBOX: &str = "inbox";
/// `{tenant}\0{flow}\0{at:016x}{random}` → [`Rejected`].
pub const REJECTED: &str = "deliveries_rejected";
/// How many rejected deliveries a flow keeps (the newest).
pub const REJECTED_PER_FLOW: usize = 1_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookTarget {
    pub tenant: String,
    pub flow_id: String,
}

/// A delivery as received, kept until it became runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub tenant: String,
    pub flow_id: String,
    pub received_at: u64,
    pub method: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    /// Base64 of the raw body.
    pub body: String,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub next_attempt_at: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

impl Delivery {
    /// What the ingress keeps of a request to `target`'s URL: method, query
    /// and the headers whose values are text (a header value that is not
    /// visible ASCII cannot matter to a signature scheme), without the body
    /// yet ([`Delivery::with_body`]).
    pub fn received(target: HookTarget, received_at: u64, parts: &http::request::Parts) -> Self {
        Delivery {
            tenant: target.tenant,
            flow_id: target.flow_id,
            received_at,
            method: parts.method.to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            headers: parts
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: String::new(),
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
        }
    }

    pub fn with_body(mut self, body: &[u8]) -> Self {
        self.body = B64.encode(body);
        self
    }

    /// What the trigger's `handle-webhook` is given for this delivery.
    pub fn webhook_input(&self) -> WebhookInput {
        WebhookInput {
            method: self.method.clone(),
            query: self.query.clone(),
            headers: self.headers.clone(),
            body: B64.decode(&self.body).unwrap_or_default(),
        }
    }
}

/// A delivery that will not become runs, and why.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rejected {
    pub received_at: u64,
    pub reason: String,
    pub method: String,
    pub bytes: usize,
    /// An excerpt of the body (the first 2 KiB), to see what was sent.
    pub excerpt: String,
}

/// How the ingress answers a delivery.
pub enum Answer {
    /// Processed: the plugin's own response, or `accepted` with counts.
    Done {
        reply: Option<WebhookReply>,
        runs: usize,
        duplicates: usize,
    },
    /// Durable but not processed yet (the plugin failed for now).
    Deferred(String),
    /// Rejected by the plugin; recorded.
    Rejected(String),
}

/// Deliveries older than this that still cannot be processed are given up
/// (and recorded as rejected).
const INBOX_GIVE_UP_MS: u64 = 24 * 3600 * 1000;

impl App {
    /// The flow a webhook token leads to (only while the flow is active).
    pub fn hook_target(&self, token: &str) -> Result<Option<HookTarget>, ServiceError> {
        Ok(self.store.get_json(HOOKS, token.as_bytes())?)
    }

    /// Accepts a delivery durably; returns its inbox key.
    pub async fn accept_delivery(&self, delivery: &Delivery) -> Result<Vec<u8>, ServiceError> {
        let mut random = [0u8; 8];
        rand::rng().fill_bytes(&mut random);
        let key = format!("{:016x}{}", delivery.received_at, hex::encode(random)).into_bytes();
        self.store
            .apply(vec![Op::put_json(INBOX, &key, delivery)])?;
        self.commit.durable().await.map_err(|e| {
            ServiceError::BadRequest(format!("the delivery could not be stored: {e}"))
        })?;
        Ok(key)
    }

    /// Records a delivery that will not be processed, with the reason.
    pub fn reject_delivery(
        &self,
        delivery: &Delivery,
        body: &[u8],
        reason: &str,
        extra: Vec<Op>,
    ) -> Result<(), ServiceError> {
        let (tenant, flow_id, received_at) =
            (&delivery.tenant, &delivery.flow_id, delivery.received_at);
        let mut random = [0u8; 4];
        rand::rng().fill_bytes(&mut random);
        let key = format!(
            "{tenant}\0{flow_id}\0{received_at:016x}{}",
            hex::encode(random)
        );
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(2048)]).into_owned();
        let record = Rejected {
            received_at,
            reason: reason.to_string(),
            method: delivery.method.clone(),
            bytes: body.len(),
            excerpt,
        };
        let mut ops = extra;
        ops.push(Op::put_json(REJECTED, key.as_bytes(), &record));
        self.store.apply(ops)?;
        self.runtime.metrics.delivery("rejected");
        Ok(())
    }

    /// The rejected deliveries of a flow, newest first.
    pub fn rejected_deliveries(
        &self,
        tenant: &str,
        flow_id: &str,
    ) -> Result<Vec<Rejected>, ServiceError> {
        self.flow(tenant, flow_id)?;
        let mut list: Vec<Rejected> = self
            .store
            .scan_json(REJECTED, format!("{tenant}\0{flow_id}\0").as_bytes())?;
        list.reverse();
        Ok(list)
    }

    /// Forgets rejected deliveries received before `cutoff`, and all but a
    /// flow's newest [`REJECTED_PER_FLOW`], so that a sender of garbage
    /// cannot fill the disk. Keys sort by flow, then time: one pass.
    pub(crate) fn prune_rejected(&self, cutoff: u64) -> Result<usize, ServiceError> {
        let keys: Vec<Vec<u8>> = self
            .store
            .scan_prefix(REJECTED, b"")?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let old = rejected_to_forget(&keys, cutoff);
        let n = old.len();
        self.store.apply(
            old.into_iter()
                .map(|key| Op::Delete {
                    tree: REJECTED,
                    key: key.to_vec(),
                })
                .collect(),
        )?;
        Ok(n)
    }

    /// Runs the flow's `handle-webhook` on a stored delivery and queues the
    /// events, removing the inbox entry in the same batch.
    pub async fn process_delivery(&self, key: &[u8], delivery: &Delivery) -> Answer {
        match self.try_process(key, delivery).await {
            Ok(answer) => answer,
            Err(e) => Answer::Deferred(e.to_string()),
        }
    }

    async fn try_process(&self, key: &[u8], delivery: &Delivery) -> Result<Answer, ServiceError> {
        let remove = || Op::Delete {
            tree: INBOX,
            key: key.to_vec(),
        };
        let request = delivery.webhook_input();
        let body = request.body.clone();
        let flow = match self.flow(&delivery.tenant, &delivery.flow_id) {
            Ok(flow) => flow,
            Err(ServiceError::NotFound(_)) => {
                // The flow was deleted after the delivery was accepted.
                self.store.apply(vec![remove()])?;
                return Ok(Answer::Rejected("the flow no longer exists".into()));
            }
            Err(e) => return Err(e),
        };
        let (plugin, env, ctx) =
            self.trigger_call(&flow, format!("delivery-{}", hex::encode(&key[16..])))?;
        let outcome = self
            .engine
            .handle_webhook(
                &plugin.plugin,
                env,
                ctx,
                &flow.spec.trigger.trigger,
                &flow.spec.trigger.params.to_string(),
                request,
            )
            .await;
        let metrics = &self.runtime.metrics;
        metrics.call(
            &metrics.plugin_call_latency,
            &plugin.record.key,
            "handle_webhook",
            outcome.duration.as_secs_f64(),
        );
        match outcome.result {
            Ok(output) => {
                let result =
                    self.enqueue_events(&flow, output.events, "webhook", vec![remove()])?;
                metrics.delivery("processed");
                Ok(Answer::Done {
                    reply: output.response,
                    runs: result.runs.len(),
                    duplicates: result.duplicates,
                })
            }
            Err(CallError::Connector {
                error:
                    error @ (ConnectorError::InvalidInput { .. }
                    | ConnectorError::Permanent { .. }
                    | ConnectorError::Auth { .. }),
            }) => {
                let reason = format!(
                    "the `{}` trigger rejected the delivery: {error}",
                    flow.spec.trigger.trigger
                );
                tracing::info!(flow = %flow.id, "{reason}");
                self.reject_delivery(delivery, &body, &reason, vec![remove()])?;
                Ok(Answer::Rejected(reason))
            }
            Err(error) => {
                let mut retry = delivery.clone();
                retry.attempts += 1;
                let now = now_ms();
                let reason = format!("processing failed (attempt {}): {error}", retry.attempts);
                if now.saturating_sub(delivery.received_at) > INBOX_GIVE_UP_MS {
                    self.reject_delivery(
                        delivery,
                        &body,
                        &format!("given up: {reason}"),
                        vec![remove()],
                    )?;
                    return Ok(Answer::Rejected(reason));
                }
                let backoff = 1000u64
                    .saturating_mul(1 << retry.attempts.min(8))
                    .min(300_000);
                retry.next_attempt_at = now + backoff;
                retry.last_error = Some(reason.clone());
                self.store.apply(vec![Op::put_json(INBOX, key, &retry)])?;
                metrics.delivery("deferred");
                Ok(Answer::Deferred(reason))
            }
        }
    }

    /// The trigger's plugin version and a call set up with its connection.
    pub(crate) fn trigger_call(
        &self,
        flow: &FlowRecord,
        trace_id: String,
    ) -> Result<
        (
            crate::registry::PluginVersion,
            crate::engine::CallEnv,
            crate::engine::GuestContext,
        ),
        ServiceError,
    > {
        let version = flow.pinned.trigger.as_ref().ok_or_else(|| {
            ServiceError::BadRequest("a schedule trigger has no plugin to call".into())
        })?;
        let (key, _) = parse_plugin_ref(&flow.spec.trigger.plugin)?;
        let plugin = self.registry.get(&key, version)?;
        let connection = flow
            .spec
            .trigger
            .connection
            .as_deref()
            .map(|id| self.connections.get(&flow.tenant, id))
            .transpose()?;
        let (env, ctx) =
            self.call_setup(&plugin, connection.as_ref(), BTreeMap::new(), trace_id)?;
        Ok((plugin, env, ctx))
    }

    /// Processes inbox entries that are due: at start (deliveries accepted
    /// before a crash) and after deferrals.
    pub(crate) fn start_inbox_worker(self: &Arc<Self>) {
        let app = self.clone();
        self.runtime.spawn(async move {
            let mut shutdown = app.runtime.shutdown_signal();
            loop {
                if *shutdown.borrow() {
                    break;
                }
                if let Err(e) = app.drain_inbox().await {
                    tracing::error!("processing the webhook inbox: {e}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => {}
                }
            }
        });
    }

    async fn drain_inbox(&self) -> Result<(), ServiceError> {
        let now = now_ms();
        let mut from = Vec::new();
        loop {
            let batch = self.store.scan_from(INBOX, b"", &from, 256)?;
            let Some((last, _)) = batch.last() else { break };
            from = last.clone();
            from.push(0);
            for (key, value) in &batch {
                let Ok(delivery) = serde_json::from_slice::<Delivery>(value) else {
                    tracing::error!("dropping an unreadable inbox entry");
                    self.store.apply(vec![Op::Delete {
                        tree: INBOX,
                        key: key.clone(),
                    }])?;
                    continue;
                };
                // Entries being processed by their request right now are recent:
                // leave them a moment.
                let fresh =
                    now.saturating_sub(delivery.received_at) < 2_000 && delivery.attempts == 0;
                if fresh || delivery.next_attempt_at > now {
                    continue;
                }
                if !self.runtime.claim_delivery(key) {
                    continue;
                }
                let _ = self.process_delivery(key, &delivery).await;
                self.runtime.release_delivery(key);
            }
            if batch.len() < 256 {
                break;
            }
        }
        Ok(())
    }
}

/// The JSON body of a 2xx that has no plugin response.
pub fn accepted_body(runs: usize, duplicates: usize) -> Value {
    json!({ "accepted": true, "runs": runs, "duplicates": duplicates })
}

/// The keys (`{tenant}\0{flow}\0{received_at:016x}{random}`, sorted) of
/// rejected deliveries older than `cutoff` or beyond a flow's newest
/// [`REJECTED_PER_FLOW`].
fn rejected_to_forget(sorted: &[Vec<u8>], cutoff: u64) -> Vec<&[u8]> {
    let split = |key: &[u8]| -> Option<(usize, u64)> {
        let second = key.iter().enumerate().filter(|(_, b)| **b == 0).nth(1)?.0;
        let time = std::str::from_utf8(key.get(second + 1..second + 17)?).ok()?;
        Some((second + 1, u64::from_str_radix(time, 16).ok()?))
    };
    let mut forget = Vec::new();
    let mut start = 0;
    while start < sorted.len() {
        let Some((flow_len, _)) = split(&sorted[start]) else {
            forget.push(&sorted[start][..]); // not a key this code writes
            start += 1;
            continue;
        };
        let flow = &sorted[start][..flow_len];
        let end = start
            + sorted[start..]
                .iter()
                .take_while(|k| k.starts_with(flow))
                .count();
        let excess = (end - start).saturating_sub(REJECTED_PER_FLOW);
        for (i, key) in sorted[start..end].iter().enumerate() {
            let too_old = split(key).is_none_or(|(_, at)| at < cutoff);
            if i < excess || too_old {
                forget.push(&key[..]);
            }
        }
        start = end;
    }
    forget
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(flow: &str, at: u64, n: u32) -> Vec<u8> {
        format!("t\0{flow}\0{at:016x}{n:08x}").into_bytes()
    }

    #[test]
    fn old_and_excess_rejections_are_forgotten_per_flow() {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        // Flow a: 1,005 recent entries; flow b: 3 entries, one old.
        for n in 0..(REJECTED_PER_FLOW as u32 + 5) {
            keys.push(key("a", 1_000 + u64::from(n), n));
        }
        keys.extend([key("b", 10, 0), key("b", 2_000, 1), key("b", 2_001, 2)]);
        keys.sort();
        let forget = rejected_to_forget(&keys, 500);
        // a loses its 5 oldest; b loses the one received before the cutoff.
        let mut expected: Vec<Vec<u8>> = (0..5).map(|n| key("a", 1_000 + n, n as u32)).collect();
        expected.push(key("b", 10, 0));
        assert_eq!(
            forget,
            expected.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        // A flow whose id shares a prefix with another is its own group.
        let keys = vec![key("a", 10, 0), key("ab", 2_000, 0)];
        assert_eq!(rejected_to_forget(&keys, 500), vec![&keys[0][..]]);
    }
}
