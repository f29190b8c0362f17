//! Webhook ingress: `/hooks/{token}`.
//!
//! A delivery is processed while its sender waits: the plugin's
//! `handle-webhook` turns it into events, their runs are written, and the
//! 2xx goes out only once they are on disk (group commit). So an
//! acknowledged delivery is never lost, and one that is not acknowledged
//! (the host died first) is sent again by its sender: the runs it makes
//! then have the same ids as before, and de-duplication drops what was
//! written already. Nothing else is written for it: the run is its first
//! record. A delivery the plugin cannot process now (a trap, a timeout) is
//! stored in the inbox, durably, answered `202 Accepted`, and retried in
//! the background; one it rejects (a bad signature, a body that is not what
//! the trigger expects) is recorded with the reason, where the flow's owner
//! can see it.

use std::{sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use rand::Rng;
use serde_json::{Value, json};

use super::{HookTarget, Subscription, Triggers};
use crate::{
    calls::{Purpose, Target},
    clock::now_ms,
    engine::{CallError, ConnectorError, Event, WebhookInput, WebhookReply},
    error::ServiceError,
    flows::FlowRecord,
    runs::retry::Backoff,
    store::{Along, Delivery, InboxKey, Rejected},
};

impl Delivery {
    /// What the ingress keeps of a request to a hook's URL: method, query
    /// and the headers whose values are text (a header value that is not
    /// visible ASCII cannot matter to a signature scheme), without the body
    /// yet ([`Delivery::with_body`]).
    pub fn received(target: &HookTarget, received_at: u64, parts: &http::request::Parts) -> Self {
        Delivery {
            tenant: target.tenant.clone(),
            subscription: target.subscription.clone(),
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
            body: self.body(),
        }
    }

    /// The delivery's body as it was received.
    pub fn body(&self) -> Vec<u8> {
        B64.decode(&self.body).unwrap_or_default()
    }
}

/// How many rejected deliveries a flow keeps (the newest).
pub const REJECTED_PER_FLOW: usize = 1_000;
/// A flow's rejections are trimmed to [`REJECTED_PER_FLOW`] at one rejection
/// in this many (so it holds a few dozen more at most, in all likelihood).
const TRIM_ONE_IN: u32 = 16;

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

impl Triggers {
    /// Records a delivery that will not be processed, with the reason.
    /// `key` is the delivery's inbox entry, removed in the same batch.
    pub fn reject_delivery(
        &self,
        delivery: &Delivery,
        body: &[u8],
        reason: &str,
        key: Option<&InboxKey>,
    ) -> Result<(), ServiceError> {
        let excerpt = String::from_utf8_lossy(&body[..body.len().min(2048)]).into_owned();
        let record = Rejected {
            received_at: delivery.received_at,
            reason: reason.to_string(),
            method: delivery.method.clone(),
            bytes: body.len(),
            excerpt,
        };
        // Every flow the subscription serves sees the rejection; the inbox
        // entry goes with the first record.
        let flows = self
            .subscription(&delivery.tenant, &delivery.subscription)?
            .map(|s| s.flows.clone())
            .unwrap_or_default();
        if flows.is_empty()
            && let Some(key) = key
        {
            self.inbox.discard(key)?;
        }
        let trim = rand::rng().random_ratio(1, TRIM_ONE_IN);
        for (i, flow) in flows.iter().enumerate() {
            let key = if i == 0 { key } else { None };
            self.inbox.reject(key, &delivery.tenant, flow, &record)?;
            // The retention pass trims every flow every few minutes; a flood
            // of garbage in between is trimmed here. One rejection in
            // TRIM_ONE_IN reads the flow's list, so most pay nothing.
            if trim {
                self.inbox
                    .trim_rejected(&delivery.tenant, flow, REJECTED_PER_FLOW)?;
            }
        }
        self.metrics.delivery("rejected");
        Ok(())
    }

    /// The rejected deliveries of a flow, newest first.
    pub fn rejected_deliveries(
        &self,
        tenant: &str,
        flow_id: &str,
    ) -> Result<Vec<Rejected>, ServiceError> {
        self.flows.get(tenant, flow_id)?;
        Ok(self.inbox.rejected(tenant, flow_id)?)
    }

    /// Forgets rejected deliveries older than the retention, and all but a
    /// flow's newest [`REJECTED_PER_FLOW`], so that a sender of garbage
    /// cannot fill the disk.
    pub fn prune_rejected(&self, now: u64) -> Result<usize, ServiceError> {
        let cutoff = now.saturating_sub(self.settings.retention.as_millis() as u64);
        Ok(self.inbox.prune_rejected(cutoff, REJECTED_PER_FLOW)?)
    }

    /// Processes a delivery just received, stored nowhere yet: the flow's
    /// `handle-webhook` turns it into events, their runs are written, and
    /// the answer comes once they are on disk, so an acknowledged delivery
    /// is never lost, and one that is not is sent again by its sender (the
    /// runs it makes then have the same ids: de-duplication drops what was
    /// written already). A delivery the plugin cannot process now is stored
    /// in the inbox, durably, before it is answered as deferred. `Err`: it
    /// could not be stored; nothing was acknowledged.
    pub async fn receive_delivery(&self, delivery: &Delivery) -> Result<Answer, ServiceError> {
        let answer = self.try_process(None, delivery).await?;
        // A duplicate's run may have been written by another request just
        // now, and not be on disk yet: durable too before the answer.
        if matches!(answer, Answer::Done { .. }) {
            self.runs.durable().await?;
        }
        Ok(answer)
    }

    /// Runs the flow's `handle-webhook` on a stored delivery and queues the
    /// events, removing the inbox entry in the same batch (the inbox worker).
    async fn process_delivery(&self, key: &InboxKey, delivery: &Delivery) -> Answer {
        match self.try_process(Some(key), delivery).await {
            Ok(answer) => answer,
            Err(e) => Answer::Deferred(e.to_string()),
        }
    }

    /// Processes a delivery, from the inbox (`key`) or just received.
    async fn try_process(
        &self,
        key: Option<&InboxKey>,
        delivery: &Delivery,
    ) -> Result<Answer, ServiceError> {
        let Some(subscription) = self.subscription(&delivery.tenant, &delivery.subscription)?
        else {
            // Every flow left the subscription after the delivery was accepted.
            if let Some(key) = key {
                self.inbox.discard(key)?;
            }
            return Ok(Answer::Rejected(
                "no flow receives deliveries at this URL any more".into(),
            ));
        };
        let target = Target {
            tenant: &subscription.tenant,
            plugin: &subscription.plugin,
            version: &subscription.version,
            connection: subscription.connection.as_deref(),
        };
        let trace = key.map_or_else(|| hex::encode(rand::random::<[u8; 8]>()), InboxKey::trace);
        let call = self
            .calls
            .prepare(target, Purpose::Other, format!("delivery-{trace}"))?;
        let request = delivery.webhook_input();
        let outcome = self
            .calls
            .handle_webhook(
                call,
                &subscription.trigger,
                &subscription.params.to_string(),
                request,
            )
            .await;
        match outcome.result {
            Ok(output) => {
                let (runs, duplicates) = self.route(&subscription, output.events, key)?;
                self.metrics.delivery("processed");
                Ok(Answer::Done {
                    reply: output.response,
                    runs,
                    duplicates,
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
                    subscription.trigger
                );
                tracing::info!(subscription = %subscription.id, "{reason}");
                self.reject_delivery(delivery, &delivery.body(), &reason, key)?;
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
                        &delivery.body(),
                        &format!("given up: {reason}"),
                        key,
                    )?;
                    return Ok(Answer::Rejected(reason));
                }
                retry.next_attempt_at = now + Backoff::INBOX.delay(retry.attempts);
                retry.last_error = Some(reason.clone());
                match key {
                    Some(key) => self.inbox.defer(key, &retry)?,
                    // Into the inbox, on disk before the deferral is answered.
                    None => {
                        self.inbox.accept(&retry).await?;
                    }
                }
                self.metrics.delivery("deferred");
                Ok(Answer::Deferred(reason))
            }
        }
    }

    /// Routes a delivery's events to every active flow of its subscription,
    /// each through its own de-duplication, entity state and conditions (a
    /// paused flow keeps them as cancelled runs, to replay once resumed).
    /// The inbox entry, if the delivery has one, goes in the batch of the
    /// last flow's runs: after a crash in between, the delivery is routed
    /// again (from the inbox, or sent again by its sender) and the flows
    /// that had it already drop the events as duplicates.
    fn route(
        &self,
        subscription: &Subscription,
        mut events: Vec<Event>,
        key: Option<&InboxKey>,
    ) -> Result<(usize, usize), ServiceError> {
        let flows: Vec<Arc<FlowRecord>> = subscription
            .flows
            .iter()
            .filter_map(|id| self.flows.current(&subscription.tenant, id).ok())
            .filter(|f| f.active)
            .collect();
        let (mut runs, mut duplicates) = (0, 0);
        let last = flows.len().saturating_sub(1);
        for (i, flow) in flows.iter().enumerate() {
            let along = match key {
                Some(key) if i == last => Along::InboxDone(key),
                Some(_) => Along::Nothing,
                None => Along::Unacknowledged,
            };
            self.record_samples(flow, &events, "webhook");
            // The last flow takes the events; the others get copies.
            let these = if i == last {
                std::mem::take(&mut events)
            } else {
                events.clone()
            };
            let outcome = self.runs.enqueue_events(flow, these, "webhook", along)?;
            runs += outcome.runs.len();
            duplicates += outcome.duplicates;
        }
        if flows.is_empty()
            && let Some(key) = key
        {
            self.inbox.discard(key)?;
        }
        Ok((runs, duplicates))
    }

    /// Processes inbox entries that are due: at start (deliveries accepted
    /// before a crash) and after deferrals.
    pub(super) fn start_inbox_worker(self: &Arc<Self>) {
        let triggers = self.clone();
        self.tasks.spawn(async move {
            let mut shutdown = triggers.tasks.shutdown_signal();
            let mut last_prune = None;
            loop {
                if *shutdown.borrow() {
                    break;
                }
                if let Err(e) = triggers.drain_inbox().await {
                    tracing::error!("processing the webhook inbox: {e}");
                }
                if last_prune.is_none_or(|at: std::time::Instant| at.elapsed() > PRUNE_EVERY) {
                    last_prune = Some(std::time::Instant::now());
                    match triggers.prune_rejected(now_ms()) {
                        Ok(0) => {}
                        Ok(n) => tracing::info!("forgot {n} old rejected deliveries"),
                        Err(e) => tracing::error!("pruning rejected deliveries: {e}"),
                    }
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
        let mut after: Option<InboxKey> = None;
        loop {
            let batch = self.inbox.pending(after.as_ref(), 256)?;
            let Some((last, _)) = batch.last() else { break };
            after = Some(last.clone());
            let full = batch.len() == 256;
            for (key, delivery) in batch {
                let Ok(delivery) = delivery else {
                    tracing::error!("dropping an unreadable inbox entry");
                    self.inbox.discard(&key)?;
                    continue;
                };
                if delivery.next_attempt_at > now {
                    continue;
                }
                // Another node may be processing it (or have processed it).
                if !self.inbox.claim(&key)? {
                    continue;
                }
                let _ = self.process_delivery(&key, &delivery).await;
            }
            if !full {
                break;
            }
        }
        Ok(())
    }
}

/// How often rejected deliveries past their limits are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(300);

/// The JSON body of a 2xx that has no plugin response.
pub fn accepted_body(runs: usize, duplicates: usize) -> Value {
    json!({ "accepted": true, "runs": runs, "duplicates": duplicates })
}
