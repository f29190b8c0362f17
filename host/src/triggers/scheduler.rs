//! Polling triggers and cron schedules.
//!
//! Every active polling or scheduled flow has one entry in an in-memory
//! due-time set (so exactly one poller per flow: a flow is either waiting in
//! the set or being polled). The loop starts due polls as tasks, bounded by a
//! semaphore, so a slow or failing poll never holds up another flow. A poll's
//! events are queued in the same atomic batch that saves its new cursor: the
//! cursor never runs ahead of the events it covered. A flow that does not
//! ask for existing items is seeded first: the first poll (cursor `None`)
//! and the polls that page on from it only record where to go on, until a
//! poll returns no events or a cursor that did not move (caught up). The
//! pages follow each other at once; `seeded` and the cursor are saved after
//! each, so a restart goes on seeding where it stopped.
//!
//! A webhook flow with `trigger.reconcile` is in the set too: its entry
//! polls the paired trigger every so often ("webhook primary, API
//! secondary"), and the events go through the flow's entity state like the
//! webhooks', so only what the webhooks missed starts runs. A paused flow
//! is not polled: its cursor waits where it is until the flow is resumed.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::json;
use tokio::sync::{Notify, Semaphore};

use super::Triggers;
use crate::{
    calls::{Purpose, Refused},
    clock::now_ms,
    engine::{CallError, ConnectorError, Event, Journal},
    error::ServiceError,
    flows::{
        FlowRecord,
        definition::{DEFAULT_INTERVAL_SECS, parse_schedule},
    },
    manifest::TriggerKind,
    runs::retry::Backoff,
    store::{Along, PollRecord, StoreError, TriggerState},
};

/// The due-time set of polling and scheduled flows.
#[derive(Default)]
pub struct Scheduler {
    due: Mutex<Due>,
    wake: Notify,
}

#[derive(Default)]
struct Due {
    order: BTreeSet<(u64, FlowKey)>,
    at: HashMap<FlowKey, u64>,
    polling: HashSet<FlowKey>,
}

/// A flow in the set: (tenant, flow id).
pub type FlowKey = (String, String);

fn flow_key(tenant: &str, id: &str) -> FlowKey {
    (tenant.to_string(), id.to_string())
}

impl Scheduler {
    /// Puts (or moves) a flow in the set at `due`.
    pub fn schedule(&self, key: FlowKey, due: u64) {
        let mut d = self.due.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = d.at.insert(key.clone(), due) {
            d.order.remove(&(old, key.clone()));
        }
        d.order.insert((due, key));
        drop(d);
        self.wake.notify_one();
    }

    /// Puts a flow in the set at `due` unless it is there or being polled.
    pub fn ensure(&self, key: FlowKey, due: u64) {
        let mut d = self.due.lock().unwrap_or_else(|e| e.into_inner());
        if d.at.contains_key(&key) || d.polling.contains(&key) {
            return;
        }
        d.at.insert(key.clone(), due);
        d.order.insert((due, key));
        drop(d);
        self.wake.notify_one();
    }

    /// The flows in the set or being polled.
    pub fn keys(&self) -> Vec<FlowKey> {
        let d = self.due.lock().unwrap_or_else(|e| e.into_inner());
        d.at.keys().chain(d.polling.iter()).cloned().collect()
    }

    pub fn unschedule(&self, key: &FlowKey) {
        let mut d = self.due.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = d.at.remove(key) {
            d.order.remove(&(old, key.clone()));
        }
    }

    /// Takes the flows due at `now` out of the set; returns them with the
    /// time to wait before the next one.
    fn take_due(&self, now: u64, max: usize) -> (Vec<(u64, FlowKey)>, Duration) {
        let mut d = self.due.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken = Vec::new();
        while taken.len() < max {
            let Some((due, key)) = d.order.first().cloned() else {
                break;
            };
            if due > now {
                break;
            }
            d.order.pop_first();
            d.at.remove(&key);
            d.polling.insert(key.clone());
            taken.push((due, key));
        }
        let wait = d
            .order
            .first()
            .map_or(1000, |(due, _)| due.saturating_sub(now).min(1000));
        (taken, Duration::from_millis(wait))
    }

    fn done(&self, key: &FlowKey) {
        self.due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .polling
            .remove(key);
    }

    /// Flows in the set or being polled.
    pub fn len(&self) -> usize {
        let d = self.due.lock().unwrap_or_else(|e| e.into_inner());
        d.at.len() + d.polling.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Triggers {
    /// Adds an active polling or scheduled flow to the set, due when its
    /// saved state says (now for a new one).
    pub(super) fn schedule_flow(&self, flow: &FlowRecord) -> Result<(), ServiceError> {
        if !self.on_schedule(flow)? {
            return Ok(());
        }
        let state = self.trigger_state(&flow.tenant, &flow.id)?;
        // A new flow (no saved state) is due now, not at the epoch.
        self.scheduler.schedule(
            flow_key(&flow.tenant, &flow.id),
            state.next_due.max(now_ms()),
        );
        Ok(())
    }

    /// Whether the flow has an entry in the set ([`in_schedule`]).
    pub(super) fn on_schedule(&self, flow: &FlowRecord) -> Result<bool, ServiceError> {
        let trigger = &flow.spec.trigger;
        Ok(in_schedule(
            flow.active,
            trigger.file.is_some(),
            self.flows.trigger_kind(flow)?,
            trigger.reconcile.is_some(),
        ))
    }

    /// What the flow's entry in the set polls: its own trigger, the
    /// reconciliation behind its webhooks, or nothing (a webhook flow
    /// without one). A schedule has no trigger to poll but is in the set.
    fn polled(&self, flow: &FlowRecord) -> Result<Option<Polled>, ServiceError> {
        let trigger = &flow.spec.trigger;
        Ok(match self.flows.trigger_kind(flow)? {
            None => Some(Polled::Schedule),
            Some(TriggerKind::Polling) => Some(Polled::Trigger {
                trigger: trigger.trigger.clone(),
                params: trigger.params.clone(),
                every_ms: interval_ms(flow),
                source: "poll",
            }),
            Some(TriggerKind::Webhook) => trigger.reconcile.as_ref().map(|r| Polled::Trigger {
                trigger: r.trigger.clone(),
                params: r.params.clone(),
                every_ms: r.every_secs.max(1) * 1000,
                source: "reconcile",
            }),
        })
    }

    pub(super) fn unschedule_flow(&self, tenant: &str, id: &str) {
        self.scheduler.unschedule(&flow_key(tenant, id));
    }

    pub(super) fn start_scheduler(self: &Arc<Self>) {
        for flow in self.flows.all().unwrap_or_default() {
            if let Err(e) = self.schedule_flow(&flow) {
                tracing::error!(flow = %flow.id, "cannot schedule the flow's trigger: {e}");
            }
        }
        let app = self.clone();
        let poll_workers = self.settings.poll_workers.max(1);
        self.tasks.spawn(async move {
            let workers = Arc::new(Semaphore::new(poll_workers));
            let mut shutdown = app.tasks.shutdown_signal();
            loop {
                if *shutdown.borrow() {
                    break;
                }
                let now = now_ms();
                let (due, wait) = app.scheduler.take_due(now, workers.available_permits());
                for (due_at, key) in due {
                    let Ok(permit) = workers.clone().acquire_owned().await else {
                        break;
                    };
                    let app = app.clone();
                    app.metrics
                        .poll_lag
                        .observe(now.saturating_sub(due_at) as f64 / 1e3);
                    tokio::spawn(async move {
                        let next = app.fire(&key, due_at).await;
                        app.scheduler.done(&key);
                        if let Some(next) = next {
                            app.scheduler.schedule(key, next);
                        }
                        drop(permit);
                    });
                }
                tokio::select! {
                    _ = app.scheduler.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => {}
                }
            }
            let _ = workers.acquire_many(poll_workers as u32).await;
        });
    }

    /// Runs one poll (or schedule tick) of a flow that was due at `due`;
    /// returns when it is due next, or `None` when it left the schedule
    /// (deactivated, deleted). The new trigger state is written once, in the
    /// batch that queues the events it covered.
    async fn fire(&self, (tenant, id): &FlowKey, due: u64) -> Option<u64> {
        let flow = self.flows.get(tenant, id).ok().filter(|f| f.active)?;
        let polled = match self.polled(&flow) {
            Ok(Some(polled)) => polled,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(flow = %flow.id, "cannot tell what to poll: {e}");
                return Some(now_ms() + 60_000);
            }
        };
        let every_ms = match &polled {
            Polled::Schedule => interval_ms(&flow),
            Polled::Trigger { every_ms, .. } => *every_ms,
        };
        if flow.paused.is_some() {
            // Looked at again later: resuming puts it back at once.
            return Some(now_ms() + every_ms);
        }
        // Another node may hold the trigger (several hosts on one store).
        match self.states.lease(tenant, id, now_ms()) {
            Ok(None) => {}
            Ok(Some(again)) => return Some(again),
            Err(e) => {
                tracing::warn!(flow = %flow.id, "cannot take the trigger's lease: {e}");
                return Some(now_ms() + every_ms);
            }
        }
        let mut state = self.trigger_state(tenant, id).unwrap_or_default();
        let now = now_ms();
        // A schedule whose slot another node already fired (it held the
        // trigger a moment ago): on to the slot the store says is next.
        if matches!(polled, Polled::Schedule) && state.next_due > due.max(now) + 1_000 {
            return Some(state.next_due);
        }
        // Where the last committed poll left off, restored if this one fails.
        let committed = (state.cursor.clone(), state.seeded);
        let (fetched, source) = match &polled {
            Polled::Schedule => {
                let events = vec![schedule_event(due, now)];
                self.record_samples(&flow, &events, "schedule");
                (Ok(events), "schedule")
            }
            Polled::Trigger {
                trigger,
                params,
                source,
                ..
            } => (
                self.poll(&flow, trigger, params, source, &mut state, now)
                    .await,
                *source,
            ),
        };
        state.last_run_at = Some(now);
        state.polls += 1;
        let outcome = fetched.and_then(|events| {
            state.failures = 0;
            state.last_error = None;
            state.last_events = events.len();
            state.next_due = if still_seeding(&polled, &state) {
                now_ms()
            } else {
                next_due(
                    &flow,
                    every_ms,
                    now_ms(),
                    matches!(polled, Polled::Schedule).then_some(due),
                )
            };
            let along = if matches!(polled, Polled::Schedule) {
                Along::Slot {
                    tenant,
                    flow: id,
                    fire_at: due,
                    state: &state,
                }
            } else {
                Along::TriggerState {
                    tenant,
                    flow: id,
                    state: &state,
                }
            };
            match self.runs.enqueue_events(&flow, events, source, along) {
                Ok(_) => Ok(()),
                // The slot was fired already, by another node: not a failure.
                Err(ServiceError::Store(StoreError::Conflict(_)))
                    if matches!(polled, Polled::Schedule) =>
                {
                    Ok(())
                }
                Err(e) => Err(PollFailure {
                    message: e.to_string(),
                    retry_at: None,
                }),
            }
        });
        match outcome {
            Ok(_) => self.metrics.poll("ok"),
            Err(PollFailure { message, retry_at }) => {
                (state.cursor, state.seeded) = committed;
                state.failures += 1;
                self.metrics.poll("error");
                tracing::warn!(flow = %flow.id, "poll failed: {message}");
                state.last_error = Some(message);
                let backoff = Backoff::poll(every_ms).delay(state.failures);
                state.next_due = retry_at.unwrap_or(now_ms() + backoff);
                if let Err(e) = self.states.save_state(tenant, id, &state) {
                    tracing::error!(flow = %flow.id, "cannot save the trigger state: {e}");
                }
            }
        }
        Some(state.next_due)
    }

    /// Calls the plugin's `poll`; updates the cursor in `state` (the caller
    /// saves it with the events) and returns the events to queue: none on a
    /// first poll that only records where to start.
    async fn poll(
        &self,
        flow: &FlowRecord,
        trigger: &str,
        params: &serde_json::Value,
        source: &str,
        state: &mut TriggerState,
        now: u64,
    ) -> Result<Vec<Event>, PollFailure> {
        let purpose = Purpose::Poll {
            flow: flow.id.clone(),
            trigger: trigger.to_string(),
        };
        let cursor_before = state.cursor.clone();
        let call = self
            .trigger_call(flow, purpose, format!("poll-{}-{now}", flow.id))
            .map_err(|refused: Refused| PollFailure {
                message: refused.to_string(),
                retry_at: None,
            })?;
        // An auth error pauses the connection on the call path; the next
        // polls are refused until it is resumed.
        let outcome = self
            .calls
            .poll(call, trigger, &params.to_string(), state.cursor.as_deref())
            .await;
        let mut record = PollRecord {
            at: now,
            duration_ms: outcome.duration.as_secs_f64() * 1e3,
            events: 0,
            cursor_before,
            cursor_after: None,
            error: None,
            journal: bounded_journal(&outcome.journal),
        };
        let result = match outcome.result {
            Ok(output) => {
                record.events = output.events.len();
                self.record_samples(flow, &output.events, source);
                let seeding = !state.seeded && !flow.spec.trigger.include_existing;
                if flow.spec.trigger.include_existing
                    || caught_up(
                        &output.events,
                        state.cursor.as_deref(),
                        output.cursor.as_deref(),
                    )
                {
                    state.seeded = true;
                }
                if output.cursor.is_some() {
                    state.cursor = output.cursor;
                }
                Ok(if seeding { Vec::new() } else { output.events })
            }
            Err(error) => {
                let retry_at = match &error {
                    CallError::Connector {
                        error: ConnectorError::RateLimited { retry_after_ms, .. },
                    } => Some(now_ms() + retry_after_ms),
                    _ => None,
                };
                record.error = Some(error.to_string());
                Err(PollFailure {
                    message: error.to_string(),
                    retry_at,
                })
            }
        };
        record.cursor_after = state.cursor.clone();
        if let Err(e) = self
            .states
            .record_poll(&flow.tenant, &flow.id, &record, POLLS_KEPT)
        {
            tracing::warn!(flow = %flow.id, "cannot record the poll: {e}");
        }
        result
    }
}

/// Whether a poll has caught up with the history (seeding ends with it):
/// it returned no events, or a cursor that did not move (none, or the one
/// it was given), so the next poll would read the same again.
fn caught_up(events: &[Event], before: Option<&str>, after: Option<&str>) -> bool {
    events.is_empty() || after.is_none() || after == before
}

/// Whether a polling trigger is still paging through the history its flow
/// does not fire for: then the next page is read at once, not a poll
/// interval later (events that happen meanwhile would be dropped with the
/// history). After [`SEEDING_POLLS_AT_ONCE`] polls it goes on at the flow's
/// pace, so a plugin that never catches up cannot spin.
fn still_seeding(polled: &Polled, state: &TriggerState) -> bool {
    matches!(polled, Polled::Trigger { .. }) && !state.seeded && state.polls < SEEDING_POLLS_AT_ONCE
}

/// Polls of a trigger that may follow each other at once while it seeds.
const SEEDING_POLLS_AT_ONCE: u64 = 100;

/// Polls kept per flow.
pub const POLLS_KEPT: usize = 20;

/// A poll's journal as its history keeps it: at most 50 exchanges and 100
/// log lines (a poll that pages a lot would otherwise fill the store).
pub(super) fn bounded_journal(journal: &Journal) -> serde_json::Value {
    json!({
        "exchanges": journal.exchanges.iter().take(50).collect::<Vec<_>>(),
        "exchanges_dropped": journal.exchanges.len().saturating_sub(50),
        "logs": journal.logs.iter().take(100).collect::<Vec<_>>(),
        "logs_dropped": journal.logs.len().saturating_sub(100) + journal.dropped_logs,
    })
}

/// Whether a flow has an entry in the schedule: an active flow with a
/// polling trigger, a pure schedule (no plugin: `kind` is `None`), or a
/// webhook trigger with reconciliation behind it. File triggers have a
/// watcher of their own (`files.rs`): on the schedule they would fire as a
/// pure schedule.
pub(super) fn in_schedule(
    active: bool,
    file: bool,
    kind: Option<TriggerKind>,
    reconciled: bool,
) -> bool {
    active
        && !file
        && match kind {
            None | Some(TriggerKind::Polling) => true,
            Some(TriggerKind::Webhook) => reconciled,
        }
}

/// The event of a pure schedule that was due at `due` and fired at `now`.
pub(super) fn schedule_event(due: u64, now: u64) -> Event {
    Event {
        id: format!("schedule:{due}"),
        payload: json!({
            "scheduled_at": iso(due),
            "fired_at": iso(now),
        })
        .to_string(),
    }
}

/// What a flow's entry in the schedule does when due.
enum Polled {
    /// A pure schedule: its tick is the event.
    Schedule,
    /// A poll of `trigger` every `every_ms`, its events from `source`.
    Trigger {
        trigger: String,
        params: serde_json::Value,
        every_ms: u64,
        source: &'static str,
    },
}

struct PollFailure {
    message: String,
    retry_at: Option<u64>,
}

fn interval_ms(flow: &FlowRecord) -> u64 {
    flow.spec
        .trigger
        .interval_secs
        .unwrap_or(DEFAULT_INTERVAL_SECS)
        .max(1)
        * 1000
}

/// How late a missed cron slot may still fire. A host that stalled (a busy
/// machine, a slow store) fires the slots it missed by up to this much, late
/// but each with its own `scheduled_at`, one after another; older slots (the
/// host was down) are skipped, so a restart does not start a burst of runs.
pub const CATCH_UP_MS: u64 = 10_000;

/// When a flow's trigger fires next after `now`: at its cron schedule's
/// next time, or `every_ms` later. `fired` is the slot a schedule has just
/// fired (`None` for a poll, which catches up by its cursor anyway).
pub fn next_due(flow: &FlowRecord, every_ms: u64, now: u64, fired: Option<u64>) -> u64 {
    next_slot(flow.spec.trigger.schedule.as_deref(), every_ms, now, fired)
}

/// [`next_due`] for a schedule's text (`None`: every `every_ms`).
fn next_slot(schedule: Option<&str>, every_ms: u64, now: u64, fired: Option<u64>) -> u64 {
    let Some(cron) = schedule.and_then(|s| parse_schedule(s).ok()) else {
        return now + every_ms;
    };
    // From the whole second: cron slots fall on whole seconds, and a late
    // tick must not shift the ones after it.
    let after = |ms: u64| {
        let from = chrono::DateTime::from_timestamp_millis((ms - ms % 1000) as i64)?;
        let next = cron.find_next_occurrence(&from, false).ok()?;
        Some(next.timestamp_millis() as u64)
    };
    if let Some(missed) = fired
        .and_then(after)
        .filter(|next| next + CATCH_UP_MS >= now)
    {
        return missed;
    }
    after(now).unwrap_or(now + every_ms)
}

fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_ends_with_a_poll_that_caught_up() {
        let some = [Event {
            id: "1".into(),
            payload: "{}".into(),
        }];
        let none: &[Event] = &[];
        // ((events, cursor given, cursor returned), caught up)
        let table = [
            ((&some[..], None, Some("2")), false),
            ((&some[..], Some("2"), Some("4")), false),
            ((none, Some("4"), Some("4")), true),
            ((none, Some("4"), None), true),
            ((none, None, None), true),
            ((&some[..], Some("4"), Some("4")), true),
            ((&some[..], Some("4"), None), true),
        ];
        for ((events, before, after), expected) in table {
            assert_eq!(
                caught_up(events, before, after),
                expected,
                "{} events, {before:?} -> {after:?}",
                events.len()
            );
        }
    }

    #[test]
    fn the_schedule_holds_polls_schedules_and_reconciliations_only() {
        use TriggerKind::{Polling, Webhook};
        // (active, file trigger, trigger kind, reconciled) -> in the schedule
        let table = [
            ((true, false, Some(Polling), false), true),
            ((true, false, None, false), true),
            ((true, false, Some(Webhook), true), true),
            ((true, false, Some(Webhook), false), false),
            // A file trigger has no plugin, like a pure schedule, but a
            // watcher of its own: never a tick of the schedule.
            ((true, true, None, false), false),
            ((false, false, Some(Polling), false), false),
            ((false, false, None, false), false),
            ((false, false, Some(Webhook), true), false),
        ];
        for ((active, file, kind, reconciled), wanted) in table {
            assert_eq!(
                in_schedule(active, file, kind, reconciled),
                wanted,
                "active {active}, file {file}, {kind:?}, reconciled {reconciled}"
            );
        }
    }

    #[test]
    fn a_schedule_catches_up_on_slots_missed_by_a_stall_but_not_after_a_long_one() {
        let t: u64 = 1_800_000_000_000; // a whole second
        let every_second = Some("* * * * * *");
        let every_minute = Some("0 * * * * *");
        // (schedule, now, the slot just fired) -> next due
        let table = [
            // On time: the next slot.
            ((every_second, t + 20, Some(t)), t + 1_000),
            // Fired 2.5 s late: the two slots it missed come first, late.
            ((every_second, t + 2_500, Some(t)), t + 1_000),
            ((every_second, t + 2_600, Some(t + 1_000)), t + 2_000),
            // Missed by more than the catch-up window: on from now.
            ((every_second, t + 20_500, Some(t)), t + 21_000),
            // A poll (no slot fired) goes on from now.
            ((every_second, t + 2_500, None), t + 3_000),
            (
                (every_minute, t + 5_000, Some(t - t % 60_000)),
                t - t % 60_000 + 60_000,
            ),
            // No schedule: an interval from now.
            ((None, t + 7, Some(t)), t + 7 + 30_000),
        ];
        for ((schedule, now, fired), wanted) in table {
            assert_eq!(
                next_slot(schedule, 30_000, now, fired),
                wanted,
                "{schedule:?} at +{} ms after {fired:?}",
                now - t
            );
        }
    }
}
