//! Following the other nodes of a shared store: a flow activated,
//! changed or deactivated through another node joins or leaves this node's
//! schedule when the store says the flows changed (and every minute, in
//! case a wake-up was missed). Which node fires a trigger is then decided
//! by its lease ([`crate::store::TriggerStore::lease`]).

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;

use super::Triggers;
use crate::{clock::now_ms, store::Tree};

/// How often the schedule is compared with the flows without a wake-up.
const RESYNC_EVERY: Duration = Duration::from_secs(60);

impl Triggers {
    pub(super) fn start_following(self: &Arc<Self>) {
        let changed = Arc::new(Notify::new());
        let signal = changed.clone();
        self.kv
            .watch(Tree::Flows, Arc::new(move || signal.notify_one()));
        let triggers = self.clone();
        self.tasks.spawn(async move {
            let mut shutdown = triggers.tasks.shutdown_signal();
            loop {
                tokio::select! {
                    _ = changed.notified() => {}
                    _ = tokio::time::sleep(RESYNC_EVERY) => {}
                    _ = shutdown.changed() => break,
                }
                if let Err(e) = triggers.resync_schedule() {
                    tracing::warn!("cannot compare the schedule with the flows: {e}");
                }
            }
        });
    }

    /// Adds the flows missing from the schedule (by the rule that adds
    /// them at activation) and takes out the ones no longer active.
    fn resync_schedule(&self) -> Result<(), crate::error::ServiceError> {
        let mut wanted = std::collections::HashSet::new();
        for flow in self.flows.all()? {
            if !self.on_schedule(&flow)? {
                continue;
            }
            let key = (flow.tenant.clone(), flow.id.clone());
            let due = self.trigger_state(&flow.tenant, &flow.id)?.next_due;
            self.scheduler.ensure(key.clone(), due.max(now_ms()));
            wanted.insert(key);
        }
        for key in self.scheduler.keys() {
            // Read again: it may have been activated since the listing.
            let active = || match self.flows.get(&key.0, &key.1) {
                Ok(flow) => flow.active,
                Err(_) => false,
            };
            if !wanted.contains(&key) && !active() {
                self.scheduler.unschedule(&key);
            }
        }
        Ok(())
    }
}
