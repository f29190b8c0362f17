//! The `Feeds` service: batched webhooks of a topic's changes. A feed (the
//! API's webhook subscription) names a receiver URL, a topic, a filter, an
//! interval and a mode. Each interval that has changes (every interval in
//! mode `all`) makes one batch: the range of records since the previous
//! batch, stored with an unguessable, expiring token; one POST, signed per
//! Standard Webhooks, tells the receiver the batch's fetch URL and count,
//! and one GET on that URL returns the changes as NDJSON pages. A true-up
//! batch carries the whole current state instead.
//!
//! Delivery retries on a persisted schedule ([`super::schedule`]), honours
//! 429 and `Retry-After`; a 410 disables the feed, and so do failures for
//! longer than the operator's limit (5 days by default), with the reason
//! shown. Every attempt is logged. Requests go through the plugins'
//! sandbox, so the SSRF guard applies to receivers too.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Topics, schedule, signature, streams};
use crate::{
    clock::now_ms,
    error::ServiceError,
    sandbox::{HttpSandbox, Outbound, OutboundRequest, policy::HostPattern},
    secrets::MasterKey,
    store::{Kv, KvExt, TopicRecord, Tree, Write},
    tasks::Tasks,
};

/// A batch's fetch URL works this long after the batch is made (and after
/// each redelivery).
pub const TOKEN_TTL_MS: u64 = 7 * 24 * 3_600_000;
/// Records or objects per fetched page unless the receiver asks, and at most.
pub const PAGE: usize = 1_000;
pub const MAX_PAGE: usize = 10_000;
/// How long an old secret keeps signing after a rotation.
pub const ROTATION_OVERLAP_MS: u64 = 24 * 3_600_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedMode {
    /// A batch only for intervals with changes, carrying the changes.
    Changes,
    /// A batch every interval, carrying the whole current state.
    All,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedSecret {
    pub sealed: String,
    /// Set when a newer secret replaced it: it signs until then.
    #[serde(default)]
    pub until: Option<u64>,
}

/// A feed as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Feed {
    pub id: String,
    pub topic: String,
    pub url: String,
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub filter: BTreeMap<String, Value>,
    pub interval_secs: u64,
    pub mode: FeedMode,
    pub secrets: Vec<SealedSecret>,
    /// `None` while active; why it was disabled otherwise.
    #[serde(default)]
    pub disabled: Option<String>,
    /// When deliveries began failing (cleared by a success).
    #[serde(default)]
    pub failing_since: Option<u64>,
    /// Where the next batch starts, per topic partition.
    pub positions: BTreeMap<u32, u64>,
    /// The next batch carries the whole current state.
    #[serde(default)]
    pub true_up: bool,
    pub next_batch_at: u64,
    pub created_at: u64,
}

/// What `POST /v1/webhook-subscriptions` takes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedSpec {
    pub url: String,
    pub topic: String,
    #[serde(default)]
    pub types: Vec<String>,
    #[serde(default)]
    pub filter: BTreeMap<String, Value>,
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    #[serde(default = "default_mode")]
    pub mode: FeedMode,
}

fn default_interval() -> u64 {
    60
}

fn default_mode() -> FeedMode {
    FeedMode::Changes
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    Pending,
    Delivered,
    /// The retry schedule ran out (or the feed was disabled).
    Failed,
}

/// One batch of changes (or of the whole state) and its delivery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedBatch {
    pub id: String,
    pub feed: String,
    /// Topic partition → first offset, and → the offset after the last.
    pub from: BTreeMap<u32, u64>,
    pub to: BTreeMap<u32, u64>,
    pub true_up: bool,
    pub count: u64,
    pub token: String,
    pub created_at: u64,
    pub expires_at: u64,
    pub state: BatchState,
    pub attempts: u32,
    pub next_attempt_at: u64,
    #[serde(default)]
    pub last_error: Option<String>,
}

/// One delivery attempt, for the attempts log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FeedAttempt {
    pub batch: String,
    pub at: u64,
    pub status: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// Where a fetch token points.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TokenTarget {
    tenant: String,
    feed: String,
    batch: String,
}

/// One page of a batch, as the fetch URL answers it.
pub struct Page {
    pub lines: Vec<Value>,
    /// The `after` of the next page, when there is one.
    pub next: Option<String>,
}

/// The operator's settings of feeds.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// Where receivers fetch batches (`--public-url`); set from the bound
    /// address at start when missing.
    pub public_url: Option<String>,
    /// A feed failing this long is disabled.
    pub disable_after_ms: u64,
    /// How often due batches are looked for.
    pub tick: Duration,
}

impl Default for FeedSettings {
    fn default() -> Self {
        FeedSettings {
            public_url: None,
            disable_after_ms: 5 * 24 * 3_600_000,
            tick: Duration::from_millis(250),
        }
    }
}

pub struct Feeds {
    kv: Arc<dyn Kv>,
    topics: Arc<Topics>,
    sandbox: HttpSandbox,
    master_key: Arc<MasterKey>,
    tasks: Arc<Tasks>,
    settings: FeedSettings,
    base_url: Mutex<Option<String>>,
    /// Batches being sent now (one attempt at a time per batch).
    sending: Mutex<HashSet<String>>,
    /// Serialises changes of feed and batch records.
    writes: tokio::sync::Mutex<()>,
    pruned_at: Mutex<u64>,
}

impl Feeds {
    pub fn new(
        kv: Arc<dyn Kv>,
        topics: Arc<Topics>,
        sandbox: HttpSandbox,
        master_key: Arc<MasterKey>,
        tasks: Arc<Tasks>,
        settings: FeedSettings,
    ) -> Self {
        let base_url = Mutex::new(settings.public_url.clone());
        Feeds {
            kv,
            topics,
            sandbox,
            master_key,
            tasks,
            settings,
            base_url,
            sending: Default::default(),
            writes: Default::default(),
            pruned_at: Mutex::new(now_ms()),
        }
    }

    /// Where the API is reachable, when `--public-url` did not say.
    pub fn set_base_url(&self, url: &str) {
        let mut base = self.base_url.lock().unwrap_or_else(|e| e.into_inner());
        if base.is_none() {
            *base = Some(url.trim_end_matches('/').to_string());
        }
    }

    /// Starts making and sending batches; it stops with the tasks.
    pub fn start(self: &Arc<Self>) {
        let feeds = self.clone();
        self.tasks.spawn(async move {
            let mut shutdown = feeds.tasks.shutdown_signal();
            loop {
                if let Err(e) = feeds.tick(now_ms()).await {
                    tracing::error!("webhook subscriptions: {e}");
                }
                tokio::select! {
                    _ = tokio::time::sleep(feeds.settings.tick) => {}
                    _ = shutdown.changed() => break,
                }
            }
        });
    }

    /// Creates a feed; returns it and its secret (shown only now).
    pub async fn create(
        &self,
        tenant: &str,
        spec: FeedSpec,
    ) -> Result<(Feed, String), ServiceError> {
        let topic = self.topics.get(tenant, &spec.topic)?;
        let url = url::Url::parse(&spec.url).map_err(|e| {
            ServiceError::BadRequest(format!("url: `{}` is not a URL: {e}", spec.url))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ServiceError::BadRequest(format!(
                "url: scheme `{}` is not http or https",
                url.scheme()
            )));
        }
        if !(1..=86_400).contains(&spec.interval_secs) {
            return Err(ServiceError::BadRequest(format!(
                "interval_secs: {} must be between 1 and 86400",
                spec.interval_secs
            )));
        }
        let secret = signature::new_secret();
        let id = format!("whs_{}", hex::encode(rand::random::<[u8; 12]>()));
        let heads = self.topics.heads(tenant, &topic)?;
        let now = now_ms();
        let feed = Feed {
            id: id.clone(),
            topic: topic.name,
            url: spec.url,
            types: spec.types,
            filter: spec.filter,
            interval_secs: spec.interval_secs,
            mode: spec.mode,
            secrets: vec![SealedSecret {
                sealed: self.master_key.seal(id.as_bytes(), secret.as_bytes()),
                until: None,
            }],
            disabled: None,
            failing_since: None,
            // Changes from now on; a true-up sends what was there before.
            positions: heads
                .iter()
                .enumerate()
                .map(|(p, h)| (p as u32, h.next))
                .collect(),
            true_up: false,
            next_batch_at: now + spec.interval_secs * 1000,
            created_at: now,
        };
        let _guard = self.writes.lock().await;
        self.kv.put_json(Tree::Feeds, &[tenant, &feed.id], &feed)?;
        Ok((feed, secret))
    }

    pub fn get(&self, tenant: &str, id: &str) -> Result<Feed, ServiceError> {
        self.kv
            .get_json(Tree::Feeds, &[tenant, id])?
            .ok_or_else(|| ServiceError::NotFound(format!("no webhook subscription `{id}`")))
    }

    pub fn list(&self, tenant: &str) -> Result<Vec<Feed>, ServiceError> {
        Ok(self.kv.scan_json(Tree::Feeds, &[tenant])?)
    }

    /// The feeds reading a topic (a topic in use is not deleted).
    pub fn readers_of(&self, tenant: &str, topic: &str) -> Result<Vec<String>, ServiceError> {
        Ok(self
            .list(tenant)?
            .into_iter()
            .filter(|f| f.topic == topic)
            .map(|f| format!("webhook subscription {}", f.id))
            .collect())
    }

    pub async fn delete(&self, tenant: &str, id: &str) -> Result<(), ServiceError> {
        let _guard = self.writes.lock().await;
        self.get(tenant, id)?;
        let mut writes = vec![Write::delete(Tree::Feeds, &[tenant, id])];
        for batch in self.batches(tenant, id)? {
            writes.push(Write::delete(Tree::FeedTokens, &[&batch.token]));
            writes.push(Write::delete(Tree::FeedBatches, &[tenant, id, &batch.id]));
            writes.push(Write::delete(Tree::FeedPending, &[tenant, id, &batch.id]));
        }
        for key in self.kv.keys(Tree::FeedAttempts, &[tenant, id])? {
            let key: Vec<&str> = key.iter().map(String::as_str).collect();
            writes.push(Write::delete(Tree::FeedAttempts, &key));
        }
        self.kv.write(writes)?;
        Ok(())
    }

    /// The next batch carries the whole current state.
    pub async fn true_up(&self, tenant: &str, id: &str) -> Result<Feed, ServiceError> {
        self.change(tenant, id, |feed| {
            feed.true_up = true;
            Ok(())
        })
        .await
    }

    /// A new secret, shown once; the old one signs beside it for a day.
    pub async fn rotate_secret(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<(Feed, String), ServiceError> {
        let secret = signature::new_secret();
        let sealed = self.master_key.seal(id.as_bytes(), secret.as_bytes());
        let now = now_ms();
        let feed = self
            .change(tenant, id, |feed| {
                feed.secrets
                    .retain(|s| s.until.is_none_or(|until| until > now));
                for old in &mut feed.secrets {
                    old.until.get_or_insert(now + ROTATION_OVERLAP_MS);
                }
                feed.secrets.push(SealedSecret {
                    sealed: sealed.clone(),
                    until: None,
                });
                Ok(())
            })
            .await?;
        Ok((feed, secret))
    }

    /// Enables a disabled feed; its failed batches stay failed (recover them).
    pub async fn enable(&self, tenant: &str, id: &str) -> Result<Feed, ServiceError> {
        self.change(tenant, id, |feed| {
            feed.disabled = None;
            feed.failing_since = None;
            Ok(())
        })
        .await
    }

    /// Sends one batch again, from the first attempt of the schedule.
    pub async fn redeliver(
        &self,
        tenant: &str,
        id: &str,
        batch: &str,
    ) -> Result<FeedBatch, ServiceError> {
        let _guard = self.writes.lock().await;
        self.get(tenant, id)?;
        let mut record: FeedBatch = self
            .kv
            .get_json(Tree::FeedBatches, &[tenant, id, batch])?
            .ok_or_else(|| ServiceError::NotFound(format!("no batch `{batch}` in `{id}`")))?;
        requeue(&mut record, now_ms());
        self.kv.write(vec![
            Write::put(Tree::FeedBatches, &[tenant, id, batch], &record),
            Write::put(
                Tree::FeedPending,
                &[tenant, id, batch],
                &record.next_attempt_at,
            ),
            Write::put(
                Tree::FeedTokens,
                &[&record.token],
                &TokenTarget {
                    tenant: tenant.to_string(),
                    feed: id.to_string(),
                    batch: batch.to_string(),
                },
            ),
        ])?;
        Ok(record)
    }

    /// Sends again every batch made since `since` that was not delivered.
    pub async fn recover(
        &self,
        tenant: &str,
        id: &str,
        since: u64,
    ) -> Result<Vec<String>, ServiceError> {
        let _guard = self.writes.lock().await;
        self.get(tenant, id)?;
        let now = now_ms();
        let mut writes = Vec::new();
        let mut ids = Vec::new();
        for mut batch in self.batches(tenant, id)? {
            if batch.created_at >= since && batch.state != BatchState::Delivered {
                requeue(&mut batch, now);
                writes.push(Write::put(
                    Tree::FeedBatches,
                    &[tenant, id, &batch.id],
                    &batch,
                ));
                writes.push(Write::put(
                    Tree::FeedPending,
                    &[tenant, id, &batch.id],
                    &now,
                ));
                ids.push(batch.id);
            }
        }
        self.kv.write(writes)?;
        Ok(ids)
    }

    /// The feed's batches, oldest first.
    pub fn batches(&self, tenant: &str, id: &str) -> Result<Vec<FeedBatch>, ServiceError> {
        Ok(self.kv.scan_json(Tree::FeedBatches, &[tenant, id])?)
    }

    /// The newest `limit` delivery attempts, newest first.
    pub fn attempts(
        &self,
        tenant: &str,
        id: &str,
        limit: usize,
    ) -> Result<Vec<FeedAttempt>, ServiceError> {
        self.get(tenant, id)?;
        let mut all: Vec<FeedAttempt> = self.kv.scan_json(Tree::FeedAttempts, &[tenant, id])?;
        all.reverse();
        all.truncate(limit);
        Ok(all)
    }

    /// One page of the batch a fetch token names: changes in partition and
    /// offset order (`after` is `partition:offset`), or for a true-up the
    /// current state in key order (`after` is a key). Expired or unknown
    /// tokens are `Gone` / `NotFound`.
    pub fn page(&self, token: &str, after: Option<&str>, limit: usize) -> Result<Page, FetchError> {
        let target: TokenTarget = self
            .kv
            .get_json(Tree::FeedTokens, &[token])?
            .ok_or(FetchError::Unknown)?;
        let batch: FeedBatch = self
            .kv
            .get_json(
                Tree::FeedBatches,
                &[&target.tenant, &target.feed, &target.batch],
            )?
            .ok_or(FetchError::Unknown)?;
        if batch.token != token {
            return Err(FetchError::Unknown);
        }
        if now_ms() > batch.expires_at {
            return Err(FetchError::Expired);
        }
        let feed = self.get(&target.tenant, &target.feed)?;
        let limit = limit.clamp(1, MAX_PAGE);
        let tenant = target.tenant.as_str();
        let view = filter_view(&feed);
        if batch.true_up {
            let mut lines = Vec::new();
            let mut after = after.map(str::to_string);
            loop {
                let objects = self
                    .topics
                    .objects(tenant, &feed.topic, after.as_deref(), limit)?;
                let done = objects.len() < limit;
                for object in objects {
                    after = Some(object.key.clone());
                    if !object.is_tombstone() && streams::matches(&view, &object) {
                        lines.push(record_line(&object));
                        if lines.len() >= limit {
                            return Ok(Page { lines, next: after });
                        }
                    }
                }
                if done {
                    return Ok(Page { lines, next: None });
                }
            }
        }
        let start = match after {
            Some(after) => Some(parse_place(after).map_err(FetchError::Bad)?),
            None => None,
        };
        let topic = self.topics.get(tenant, &feed.topic)?;
        let mut lines = Vec::new();
        for (&p, &to) in &batch.to {
            let mut next = batch.from.get(&p).copied().unwrap_or(0);
            match start {
                Some((sp, _)) if p < sp => continue,
                Some((sp, offset)) if p == sp => next = next.max(offset),
                _ => {}
            }
            while next < to {
                let slice = self
                    .topics
                    .read(tenant, &topic, p, next, limit.min((to - next) as usize))
                    .map_err(FetchError::Service)?;
                let Some(first) = slice.first() else { break };
                if first.offset > next && next == batch.from.get(&p).copied().unwrap_or(0) {
                    // Retention took records this batch names.
                    return Err(FetchError::Expired);
                }
                for record in slice {
                    if record.offset >= to {
                        break;
                    }
                    next = record.offset + 1;
                    if streams::matches(&view, &record) {
                        lines.push(record_line(&record));
                        if lines.len() >= limit {
                            return Ok(Page {
                                lines,
                                next: Some(format!("{p}:{next}")),
                            });
                        }
                    }
                }
            }
        }
        Ok(Page { lines, next: None })
    }

    /// Makes the batches that are due and sends the ones waiting.
    pub async fn tick(self: &Arc<Self>, now: u64) -> Result<(), ServiceError> {
        let mut due = Vec::new();
        {
            let _guard = self.writes.lock().await;
            for (key, _) in self.kv.scan(Tree::Feeds, &[])? {
                let [tenant, id] = key.as_slice() else {
                    continue;
                };
                let feed = self.get(tenant, id)?;
                if feed.disabled.is_none() && feed.next_batch_at <= now {
                    self.make_batch(tenant, feed, now)?;
                }
            }
            for (key, value) in self.kv.scan(Tree::FeedPending, &[])? {
                let [tenant, feed, id] = key.as_slice() else {
                    continue;
                };
                let at: u64 = serde_json::from_slice(&value).unwrap_or(0);
                if at > now {
                    continue;
                }
                match self
                    .kv
                    .get_json::<FeedBatch>(Tree::FeedBatches, &[tenant, feed, id])?
                {
                    Some(batch) if batch.state == BatchState::Pending => {
                        due.push((tenant.clone(), batch))
                    }
                    _ => self.kv.delete(Tree::FeedPending, &[tenant, feed, id])?,
                }
            }
            let pruned = *self.pruned_at.lock().unwrap_or_else(|e| e.into_inner());
            if now.saturating_sub(pruned) > 600_000 {
                self.prune(now)?;
                *self.pruned_at.lock().unwrap_or_else(|e| e.into_inner()) = now;
            }
        }
        for (tenant, batch) in due {
            if !self
                .sending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(batch.id.clone())
            {
                continue;
            }
            let feeds = self.clone();
            tokio::spawn(async move {
                let id = batch.id.clone();
                if let Err(e) = feeds.send(&tenant, batch).await {
                    tracing::error!("sending a webhook batch: {e}");
                }
                feeds
                    .sending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            });
        }
        Ok(())
    }

    /// Forgets delivered and failed batches whose fetch URL has long expired.
    fn prune(&self, now: u64) -> Result<(), ServiceError> {
        for (key, value) in self.kv.scan(Tree::FeedBatches, &[])? {
            let [tenant, feed, id] = key.as_slice() else {
                continue;
            };
            let Ok(batch) = serde_json::from_slice::<FeedBatch>(&value) else {
                continue;
            };
            if batch.state != BatchState::Pending && now > batch.expires_at {
                self.kv.write(vec![
                    Write::delete(Tree::FeedBatches, &[tenant, feed, id]),
                    Write::delete(Tree::FeedTokens, &[&batch.token]),
                ])?;
            }
        }
        Ok(())
    }

    fn make_batch(&self, tenant: &str, mut feed: Feed, now: u64) -> Result<(), ServiceError> {
        let topic = self.topics.get(tenant, &feed.topic)?;
        let heads = self.topics.heads(tenant, &topic)?;
        let to: BTreeMap<u32, u64> = heads
            .iter()
            .enumerate()
            .map(|(p, h)| (p as u32, h.next))
            .collect();
        // Changes retention removed before they were batched: only the
        // whole state can make up for them.
        let lost = heads
            .iter()
            .enumerate()
            .any(|(p, h)| feed.positions.get(&(p as u32)).copied().unwrap_or(0) < h.first);
        let true_up = feed.true_up || feed.mode == FeedMode::All || lost;
        let count = if true_up {
            self.count_objects(tenant, &feed)?
        } else {
            self.count_changes(tenant, &feed, &topic, &to)?
        };
        feed.next_batch_at = now + feed.interval_secs * 1000;
        let mut writes = Vec::new();
        if count > 0 || feed.mode == FeedMode::All || feed.true_up {
            let token = hex::encode(rand::random::<[u8; 24]>());
            let batch = FeedBatch {
                id: format!("msg_{:016x}{}", now, hex::encode(rand::random::<[u8; 6]>())),
                feed: feed.id.clone(),
                from: feed.positions.clone(),
                to: to.clone(),
                true_up,
                count,
                token: token.clone(),
                created_at: now,
                expires_at: now + TOKEN_TTL_MS,
                state: BatchState::Pending,
                attempts: 0,
                next_attempt_at: now,
                last_error: None,
            };
            writes.push(Write::put(
                Tree::FeedBatches,
                &[tenant, &feed.id, &batch.id],
                &batch,
            ));
            writes.push(Write::put(
                Tree::FeedPending,
                &[tenant, &feed.id, &batch.id],
                &now,
            ));
            writes.push(Write::put(
                Tree::FeedTokens,
                &[&token],
                &TokenTarget {
                    tenant: tenant.to_string(),
                    feed: feed.id.clone(),
                    batch: batch.id.clone(),
                },
            ));
            feed.positions = to;
            feed.true_up = false;
        }
        writes.push(Write::put(Tree::Feeds, &[tenant, &feed.id], &feed));
        self.kv.write(writes)?;
        Ok(())
    }

    fn count_changes(
        &self,
        tenant: &str,
        feed: &Feed,
        topic: &super::Topic,
        to: &BTreeMap<u32, u64>,
    ) -> Result<u64, ServiceError> {
        let view = filter_view(feed);
        let mut count = 0;
        for (&p, &end) in to {
            let mut next = feed.positions.get(&p).copied().unwrap_or(0);
            while next < end {
                let slice = self.topics.read(tenant, topic, p, next, PAGE)?;
                let Some(last) = slice.last() else { break };
                next = last.offset + 1;
                count += slice
                    .iter()
                    .filter(|r| r.offset < end && streams::matches(&view, r))
                    .count() as u64;
            }
        }
        Ok(count)
    }

    fn count_objects(&self, tenant: &str, feed: &Feed) -> Result<u64, ServiceError> {
        let view = filter_view(feed);
        let mut count = 0;
        let mut after: Option<String> = None;
        loop {
            let objects = self
                .topics
                .objects(tenant, &feed.topic, after.as_deref(), PAGE)?;
            let done = objects.len() < PAGE;
            for object in &objects {
                if !object.is_tombstone() && streams::matches(&view, object) {
                    count += 1;
                }
            }
            after = objects.last().map(|o| o.key.clone());
            if done {
                return Ok(count);
            }
        }
    }

    /// One attempt at one batch; records the outcome.
    async fn send(&self, tenant: &str, batch: FeedBatch) -> Result<(), ServiceError> {
        let feed = self.get(tenant, &batch.feed)?;
        if feed.disabled.is_some() {
            return Ok(());
        }
        let now = now_ms();
        let base = self
            .base_url
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        let body = serde_json::to_vec(&json!({
            "type": if batch.true_up { "topic.true_up" } else { "topic.changes" },
            "subscription": feed.id,
            "batch": batch.id,
            "topic": feed.topic,
            "count": batch.count,
            "fetch_url": format!("{base}/v1/batches/{}", batch.token),
            "expires_at": chrono::DateTime::from_timestamp_millis(batch.expires_at as i64)
                .map(|t| t.to_rfc3339()),
        }))
        .expect("JSON serialises");
        let secrets: Vec<String> = feed
            .secrets
            .iter()
            .filter(|s| s.until.is_none_or(|until| until > now))
            .map(|s| {
                self.master_key
                    .open(feed.id.as_bytes(), &s.sealed)
                    .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                    .map_err(|_| {
                        ServiceError::Internal(format!(
                            "the secret of `{}` cannot be opened with this master key",
                            feed.id
                        ))
                    })
            })
            .collect::<Result<_, _>>()?;
        let timestamp = now / 1000;
        let signature = signature::sign(&secrets, &batch.id, timestamp, &body)
            .map_err(ServiceError::Internal)?;
        let allowed = HostPattern::parse(
            "{url}",
            &BTreeMap::from([("url".to_string(), Value::String(feed.url.clone()))]),
        )
        .map_err(ServiceError::BadRequest)?;
        let outbound = Outbound {
            sandbox: self.sandbox.clone(),
            allowed: Arc::from(vec![allowed]),
            credentials: None,
            limiter: None,
        };
        let request = OutboundRequest {
            method: "POST".into(),
            url: feed.url.clone(),
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("webhook-id".into(), batch.id.clone()),
                ("webhook-timestamp".into(), timestamp.to_string()),
                ("webhook-signature".into(), signature),
            ],
            body,
            timeout: Some(Duration::from_secs(15)),
        };
        let started = std::time::Instant::now();
        let (result, _) = self
            .sandbox
            .send(&outbound, request, Duration::from_secs(20))
            .await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let (status, error, retry_after) = match &result {
            Ok(response) => (
                Some(response.status),
                (!(200..300).contains(&response.status))
                    .then(|| format!("the receiver answered {}", response.status)),
                response
                    .header("retry-after")
                    .and_then(|v| crate::sandbox::login::retry_after_ms(v, SystemTime::now())),
            ),
            Err(e) => (None, Some(e.to_string()), None),
        };
        let _guard = self.writes.lock().await;
        // Read both again: a redelivery, a disable or a delete may have
        // landed while the request was out.
        let Ok(mut feed) = self.get(tenant, &batch.feed) else {
            return Ok(());
        };
        let Some(mut batch) = self
            .kv
            .get_json::<FeedBatch>(Tree::FeedBatches, &[tenant, &feed.id, &batch.id])?
        else {
            return Ok(());
        };
        let now = now_ms();
        batch.attempts += 1;
        batch.last_error = error.clone();
        match status {
            Some(200..=299) => {
                batch.state = BatchState::Delivered;
                feed.failing_since = None;
            }
            Some(410) => {
                batch.state = BatchState::Failed;
                feed.disabled = Some(format!(
                    "the receiver answered 410 Gone at {}; enable the subscription to send again",
                    iso(now)
                ));
            }
            _ => {
                let since = *feed.failing_since.get_or_insert(now);
                match schedule::next_delay(batch.attempts, retry_after) {
                    Some(delay) => batch.next_attempt_at = now + delay,
                    None => batch.state = BatchState::Failed,
                }
                if now.saturating_sub(since) > self.settings.disable_after_ms {
                    feed.disabled = Some(format!(
                        "deliveries have failed since {} ({}); enable the subscription and recover its batches once the receiver works",
                        iso(since),
                        error.as_deref().unwrap_or("no answer")
                    ));
                }
            }
        }
        let attempt = FeedAttempt {
            batch: batch.id.clone(),
            at: now,
            status,
            error,
            duration_ms,
        };
        let at = format!("{now:016x}{}", hex::encode(rand::random::<[u8; 4]>()));
        let pending = if batch.state == BatchState::Pending {
            Write::put(
                Tree::FeedPending,
                &[tenant, &feed.id, &batch.id],
                &batch.next_attempt_at,
            )
        } else {
            Write::delete(Tree::FeedPending, &[tenant, &feed.id, &batch.id])
        };
        self.kv.write(vec![
            pending,
            Write::put(Tree::FeedBatches, &[tenant, &feed.id, &batch.id], &batch),
            Write::put(Tree::Feeds, &[tenant, &feed.id], &feed),
            Write::put(Tree::FeedAttempts, &[tenant, &feed.id, &at], &attempt),
        ])?;
        Ok(())
    }

    async fn change(
        &self,
        tenant: &str,
        id: &str,
        change: impl FnOnce(&mut Feed) -> Result<(), ServiceError>,
    ) -> Result<Feed, ServiceError> {
        let _guard = self.writes.lock().await;
        let mut feed = self.get(tenant, id)?;
        change(&mut feed)?;
        self.kv.put_json(Tree::Feeds, &[tenant, id], &feed)?;
        Ok(feed)
    }
}

/// Why a fetch URL answers no page.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no such batch")]
    Unknown,
    #[error(
        "this batch's fetch URL has expired (or retention removed its records); ask for a true-up"
    )]
    Expired,
    #[error("{0}")]
    Bad(String),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<crate::store::StoreError> for FetchError {
    fn from(e: crate::store::StoreError) -> Self {
        FetchError::Service(e.into())
    }
}

fn requeue(batch: &mut FeedBatch, now: u64) {
    batch.state = BatchState::Pending;
    batch.attempts = 0;
    batch.next_attempt_at = now;
    batch.expires_at = now + TOKEN_TTL_MS;
}

/// The feed's filter in the shape the streams' matcher takes.
fn filter_view(feed: &Feed) -> streams::Stream {
    streams::Stream {
        id: feed.id.clone(),
        topic: feed.topic.clone(),
        types: feed.types.clone(),
        filter: feed.filter.clone(),
        partitions: 1,
        lease_ms: 0,
        committed: BTreeMap::new(),
        generation: 0,
        created_at: 0,
    }
}

/// A record as receivers and readers see it (without the publisher's key).
pub fn record_line(record: &TopicRecord) -> Value {
    json!({
        "key": record.key,
        "type": record.kind,
        "time": iso(record.time),
        "data": record.data,
        "partition": record.partition,
        "offset": record.offset,
    })
}

fn parse_place(text: &str) -> Result<(u32, u64), String> {
    text.split_once(':')
        .and_then(|(p, o)| Some((p.parse().ok()?, o.parse().ok()?)))
        .ok_or_else(|| format!("after: `{text}` is not `partition:offset`"))
}

fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_parse_and_say_what_is_wrong() {
        assert_eq!(parse_place("3:120"), Ok((3, 120)));
        assert!(
            parse_place("3-120")
                .unwrap_err()
                .contains("partition:offset")
        );
        assert!(parse_place("x:1").is_err());
    }
}
