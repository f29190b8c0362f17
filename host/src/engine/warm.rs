//! Warm instances: a connection that opts in (`warm_instances`) has its
//! calls served by an instance kept from one of its earlier calls, instead
//! of a fresh one each time. The host's side of the state is reset between
//! calls (the call's environment, credentials, deadline and journal); the
//! guest's memory is not: what a connector keeps in its globals, the next
//! call of the same connection sees. An instance is kept only for the
//! connection (and plugin version) it served, so never across connections
//! or tenants, and never after a trap, a timeout, a memory-limit hit or a
//! host call cut short.
//!
//! What is kept is bounded: idle instances per connection, idle instances
//! in all (a share of the pooling allocator's slots, so fresh instances
//! always find one), how long one stays idle, and how many calls one serves
//! before it is retired (a guest that leaks gets a fresh start).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use wasmtime::{Store, component::Instance};

use super::host::{HostState, OUTPUT_CAP};

/// Idle instances kept per connection: as many as its calls at once by
/// default (`--connection-concurrency` is 16) with room for a raised limit.
const PER_CONNECTION: usize = 64;

/// How long an instance stays idle before it is dropped.
const IDLE_FOR: Duration = Duration::from_secs(10);

/// Calls one instance serves before it is retired.
pub(super) const MAX_CALLS: u32 = 1_000;

/// How often idle instances of other connections are looked at for expiry.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// An instance between two calls of its connection.
pub(super) struct Warm {
    pub(super) store: Store<HostState>,
    pub(super) instance: Instance,
    /// Calls it has served.
    pub(super) calls: u32,
    idle_since: Instant,
}

impl Warm {
    /// An instance whose call just returned; the call's environment goes.
    pub(super) fn new(mut store: Store<HostState>, instance: Instance, calls: u32) -> Warm {
        store.data_mut().end_call();
        Warm {
            store,
            instance,
            calls,
            idle_since: Instant::now(),
        }
    }

    /// Whether it may serve another call: not at its call limit, and with
    /// room left in its output pipes for a call's worth of printing.
    pub(super) fn reusable(&self) -> bool {
        self.calls < MAX_CALLS && self.store.data().output_used() <= OUTPUT_CAP / 4
    }
}

/// How many instances all pools may keep idle, shared by an engine's pools.
pub(super) struct Budget {
    idle: AtomicUsize,
    max: usize,
}

impl Budget {
    pub(super) fn new(max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            idle: AtomicUsize::new(0),
            max,
        })
    }

    fn reserve(&self) -> bool {
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        self.idle.fetch_sub(n, Ordering::AcqRel);
    }

    #[cfg(test)]
    fn idle(&self) -> usize {
        self.idle.load(Ordering::Acquire)
    }
}

/// The idle instances of one plugin version, by connection.
pub(crate) struct WarmPool {
    idle: Mutex<Idle>,
    budget: Arc<Budget>,
}

#[derive(Default)]
struct Idle {
    by_key: HashMap<Arc<str>, Vec<Warm>>,
    swept: Option<Instant>,
}

impl WarmPool {
    pub(super) fn new(budget: Arc<Budget>) -> WarmPool {
        WarmPool {
            idle: Mutex::default(),
            budget,
        }
    }

    /// The engine's budget this pool counts against.
    pub(super) fn budget(&self) -> Arc<Budget> {
        self.budget.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle instance of `key`, if one is fresh
    /// enough. Expired ones are dropped (outside the lock: tearing down a
    /// store is not free).
    pub(super) fn take(&self, key: &str) -> Option<Warm> {
        let mut expired = Vec::new();
        let found = {
            let mut idle = self.lock();
            let list = idle.by_key.get_mut(key)?;
            expire(list, Instant::now(), &mut expired);
            let found = list.pop();
            if list.is_empty() {
                idle.by_key.remove(key);
            }
            found
        };
        self.budget
            .give_back(expired.len() + usize::from(found.is_some()));
        drop(expired);
        found
    }

    /// Keeps `warm` for the next call of `key`, unless the pool (or the
    /// engine's budget) is full.
    pub(super) fn put(&self, key: Arc<str>, warm: Warm) {
        if !warm.reusable() || !self.budget.reserve() {
            return;
        }
        let mut dropped = Vec::new();
        {
            let mut idle = self.lock();
            let now = Instant::now();
            if idle
                .swept
                .is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY)
            {
                idle.swept = Some(now);
                for list in idle.by_key.values_mut() {
                    expire(list, now, &mut dropped);
                }
                idle.by_key.retain(|_, list| !list.is_empty());
            }
            let list = idle.by_key.entry(key).or_default();
            if list.len() < PER_CONNECTION {
                list.push(warm);
            } else {
                dropped.push(warm);
            }
        }
        self.budget.give_back(dropped.len());
        drop(dropped);
    }

    /// How many instances of `key` are idle.
    #[cfg(test)]
    fn count(&self, key: &str) -> usize {
        self.lock().by_key.get(key).map_or(0, Vec::len)
    }
}

/// Moves the instances of `list` idle for [`IDLE_FOR`] or longer into
/// `into`. The oldest are at the front (instances go back at the end), so
/// they are a prefix.
fn expire(list: &mut Vec<Warm>, now: Instant, into: &mut Vec<Warm>) {
    let stale = list
        .iter()
        .take_while(|w| now.duration_since(w.idle_since) >= IDLE_FOR)
        .count();
    into.extend(list.drain(..stale));
}

impl Drop for WarmPool {
    fn drop(&mut self) {
        let idle = self.lock();
        let n = idle.by_key.values().map(Vec::len).sum();
        drop(idle);
        self.budget.give_back(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{CallEnv, Engine, EngineConfig, LoadedPlugin};

    async fn rig(max_instances: u32) -> (Engine, LoadedPlugin, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::new(EngineConfig {
            call_timeout: Duration::from_secs(5),
            memory_limit: 64 << 20,
            max_instances,
            cache_dir: dir.path().to_path_buf(),
        })
        .unwrap();
        let bytes = std::fs::read(switchyard_tests::EXAMPLE).unwrap();
        let plugin = engine.load(&Engine::content_hash(&bytes), &bytes).unwrap();
        (engine, plugin, dir)
    }

    async fn instance(engine: &Engine, plugin: &LoadedPlugin, calls: u32) -> Warm {
        let (store, instance) = engine
            .instantiate(plugin, CallEnv::default(), Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("instantiating: {e}"));
        Warm::new(store, instance, calls)
    }

    #[tokio::test]
    async fn idle_instances_are_bounded_by_the_budget_and_taken_newest_first() {
        // Eight slots: four may wait idle, in all pools together.
        let (engine, plugin, _dir) = rig(8).await;
        let other = plugin.with_spec("{}".into());
        let pool = &plugin.warm;
        for calls in 1..=3 {
            pool.put("t/a".into(), instance(&engine, &plugin, calls).await);
        }
        other
            .warm
            .put("t/a".into(), instance(&engine, &plugin, 9).await);
        // The budget is spent: this one is dropped, not kept.
        pool.put("t/b".into(), instance(&engine, &plugin, 1).await);
        assert_eq!((pool.count("t/a"), pool.count("t/b")), (3, 0));
        assert_eq!(pool.budget.idle(), 4);

        // The most recently used first; another key gets nothing.
        assert_eq!(pool.take("t/a").map(|w| w.calls), Some(3));
        assert!(pool.take("t/b").is_none());
        assert_eq!(pool.budget.idle(), 3);
        // A pool's instances go back to the budget when it is dropped.
        drop(other);
        assert_eq!(pool.budget.idle(), 2);
        pool.put("t/b".into(), instance(&engine, &plugin, 1).await);
        assert_eq!(pool.count("t/b"), 1);
    }

    #[tokio::test]
    async fn an_instance_at_its_call_limit_is_not_kept() {
        let (engine, plugin, _dir) = rig(4).await;
        let pool = &plugin.warm;
        pool.put("t/a".into(), instance(&engine, &plugin, MAX_CALLS).await);
        assert_eq!(pool.count("t/a"), 0);
        assert_eq!(pool.budget.idle(), 0);
        pool.put(
            "t/a".into(),
            instance(&engine, &plugin, MAX_CALLS - 1).await,
        );
        assert_eq!(pool.count("t/a"), 1);
    }

    #[tokio::test]
    async fn expired_instances_are_dropped_when_looked_at() {
        let (engine, plugin, _dir) = rig(8).await;
        let pool = &plugin.warm;
        let mut old = instance(&engine, &plugin, 1).await;
        old.idle_since = Instant::now() - IDLE_FOR;
        pool.put("t/a".into(), old);
        pool.put("t/a".into(), instance(&engine, &plugin, 2).await);
        // The fresh one is taken, and the expired one is gone with it.
        assert_eq!(pool.take("t/a").map(|w| w.calls), Some(2));
        assert_eq!(pool.count("t/a"), 0);
        assert_eq!(pool.budget.idle(), 0);

        // Another key's expired instances go at the next sweep.
        let mut old = instance(&engine, &plugin, 1).await;
        old.idle_since = Instant::now() - IDLE_FOR;
        pool.put("t/b".into(), old);
        pool.lock().swept = Some(Instant::now() - SWEEP_EVERY);
        pool.put("t/c".into(), instance(&engine, &plugin, 1).await);
        assert_eq!((pool.count("t/b"), pool.count("t/c")), (0, 1));
        assert_eq!(pool.budget.idle(), 1);
    }
}
