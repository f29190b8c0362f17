//! [`RunStore`] on sled: the run record and its index entries, each state
//! change one batch; the dispatchers' walk through the due-time queue; the
//! de-duplication window and retention.

use std::{
    ops::Bound,
    time::{Duration, Instant},
};

use super::{Op, SledStore, keys, keys::*};
use crate::store::{
    Along, EntityWrite, InboxKey, Lane, QueueEntry, Result, RunFilter, RunRecord, RunStatus,
    RunStore, Seen, Visit, decode,
};

/// When the head of a lane's queue holds only runs that cannot start now
/// (their flow or connection at its limit), the walk goes on through the
/// queue this many entries at a time, and at most every [`WALK_EVERY`], so
/// one flow's backlog never holds up another flow's runs behind it.
const WALK: usize = 4_096;
const WALK_EVERY: Duration = Duration::from_millis(50);

/// How long a dispatcher with nothing to start waits, unless woken.
const IDLE: Duration = Duration::from_millis(1000);

/// How many entries retention deletes per batch.
const PRUNE_BATCH: usize = 500;

/// A dispatcher's walk past the blocked head of its queue.
#[derive(Default)]
pub(super) struct Walk {
    /// Where the next walk starts, if the last one stopped short.
    resume: Option<Vec<u8>>,
    last: Option<Instant>,
}

/// How a look at some queue entries ended.
enum Pass {
    /// At an entry not due yet: nothing after it is due either.
    NotDue(Duration),
    /// Every worker busy; the entry at this key was not started.
    Full(Vec<u8>),
    /// Every entry looked at.
    End,
}

/// Ops removing every index entry of this state of the run.
fn unindex(run: &RunRecord) -> Vec<Op> {
    let mut ops = Vec::new();
    match run.status {
        RunStatus::Queued | RunStatus::Retrying | RunStatus::Waiting => {
            ops.push(Op::delete(QUEUE, keys::queue(run)))
        }
        RunStatus::Paused => ops.extend(keys::parked(run).map(|key| Op::delete(PARKED, key))),
        RunStatus::Failed => ops.push(Op::delete(DEAD, keys::run(&run.tenant, &run.id))),
        _ => {}
    }
    ops.extend(keys::finished(run).map(|key| Op::delete(FINISHED, key)));
    if !run.status.is_finished() {
        ops.extend(keys::entity_run(run).map(|key| Op::delete(ENTITY_RUNS, key)));
    }
    ops
}

/// Ops writing the record and the index entries of its state.
fn index(run: &RunRecord) -> Vec<Op> {
    let mut ops = vec![Op::put_json(RUNS, keys::run(&run.tenant, &run.id), run)];
    match run.status {
        RunStatus::Queued | RunStatus::Retrying | RunStatus::Waiting => {
            ops.push(Op::mark(QUEUE, keys::queue(run)))
        }
        RunStatus::Paused => ops.extend(keys::parked(run).map(|key| Op::mark(PARKED, key))),
        RunStatus::Failed => ops.push(Op::mark(DEAD, keys::run(&run.tenant, &run.id))),
        _ => {}
    }
    ops.extend(keys::finished(run).map(|key| Op::mark(FINISHED, key)));
    if !run.status.is_finished()
        && let Some(key) = keys::entity_run(run)
    {
        ops.push(Op::put(ENTITY_RUNS, key, run.id.clone().into_bytes()));
    }
    ops
}

/// The writes of a run's move from `before` to `after`, in one batch. The
/// index entries both states have stay as they are, so a step's progress
/// (same state, same due time) is the record alone: one write, which needs
/// no transaction.
fn moving(before: &RunRecord, after: &RunRecord) -> Vec<Op> {
    let (old, new) = (unindex(before), index(after));
    let same = |a: &Op, b: &Op| a.tree() == b.tree() && a.key() == b.key();
    let mut ops: Vec<Op> = old
        .iter()
        .filter(|op| !new.iter().any(|n| same(op, n)))
        .cloned()
        .collect();
    ops.extend(
        new.into_iter()
            .filter(|n| n.tree() == RUNS || !old.iter().any(|op| same(op, n))),
    );
    ops
}

/// The writes of a queued run's move to a finished state, in the order
/// they are made one by one: the record, the new state's index entries, the
/// entity's running mark, and the queue entry last. Every run's last write
/// is this one, and a sled transaction rolls the log buffer twice (two
/// synced writes by sled's I/O threads, each waking all of them): with
/// single writes (and [`moving`]) the end-to-end benchmark went from 1,372
/// to 1,539 runs/s and from 1.16 to 1.05 ms of CPU per run (flush requested
/// after the write included; BENCHMARKS.md). A crash
/// between them leaves the queue entry of a finished run, which the
/// dispatcher repairs ([`RunStore::repair_queue_entry`]) before anything
/// else reads the half-written state as the truth: the record is written
/// first, the finished and dead-letter marks never point to a run that is
/// not, and the queue entry keeps the run in sight until the repair.
fn finishing(before: &RunRecord, after: &RunRecord) -> Vec<Op> {
    let (queue, rest): (Vec<Op>, Vec<Op>) = unindex(before)
        .into_iter()
        .partition(|op| op.tree() == QUEUE);
    let mut ops = index(after);
    ops.extend(rest);
    ops.extend(queue);
    ops
}

/// The de-duplication mark of an event and its expiry entry.
fn marking(mark: &Seen) -> [Op; 2] {
    let key = keys::dedup(&mark.tenant, &mark.flow, &mark.event);
    [
        Op::mark(DEDUP_EXPIRY, keys::timed(mark.at, &key)),
        Op::put_json(DEDUP, key, &mark.at),
    ]
}

/// The writes of a webhook delivery's new runs (no entity among them), in
/// the order they are made one by one: each run's record and index entries,
/// then the events' marks, and the inbox entry last (if the delivery has
/// one: see [`Along::Unacknowledged`]). A sled transaction
/// rolls the log buffer twice, and this is every webhook run's first
/// write: with single writes the end-to-end benchmark went from 1,500 to
/// 2,204 runs/s and from 1.08 to 0.77 ms of CPU per run (BENCHMARKS.md).
/// A crash between them leaves the inbox entry (or no acknowledgement, so
/// that the sender sends the delivery again), and the delivery is routed
/// again: an event whose mark was written is a
/// duplicate, and one whose run is there without its mark is that run,
/// whose index entries are written again ([`RunStore::reindex`]) before its
/// mark; the queue entry never names a run that has no record.
fn creating(runs: &[RunRecord], seen: &[Seen], inbox: Option<&InboxKey>) -> Vec<Op> {
    let mut ops: Vec<Op> = runs.iter().flat_map(index).collect();
    ops.extend(seen.iter().flat_map(marking));
    ops.extend(inbox.map(|key| Op::delete(INBOX, key.0.clone())));
    ops
}

impl SledStore {
    fn get_run(&self, key: &[u8]) -> Result<Option<RunRecord>> {
        self.get(RUNS, key)?
            .map(|bytes| decode(RUNS, &bytes))
            .transpose()
    }

    /// Offers the due runs of a lane's queue to `visit`, from `from` and at
    /// most `limit` of them, reading each entry only when its turn comes: a
    /// pass that ends early (every worker busy, an entry not due yet) reads
    /// no further. Returns how the pass ended, how many entries it looked
    /// at and the key of the last one. The keys come from the queue's copy
    /// in memory (`queue.rs`), a few at a time: `visit` may write the queue.
    fn offer(
        &self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
        now: u64,
        visit: &mut dyn FnMut(&QueueEntry) -> Visit,
    ) -> Result<(Pass, usize, Option<Vec<u8>>)> {
        /// Keys taken from the copy at a time.
        const BATCH: usize = 16;
        let start = if from > prefix { from } else { prefix };
        let (mut looked, mut last): (usize, Option<std::sync::Arc<[u8]>>) = (0, None);
        while looked < limit {
            let bound = match &last {
                Some(key) => Bound::Excluded(key.as_ref()),
                None => Bound::Included(start),
            };
            let batch = self.queue.batch(prefix, bound, (limit - looked).min(BATCH));
            if batch.is_empty() {
                break;
            }
            for key in batch {
                looked += 1;
                let Some(entry) = keys::parse_queue(&key) else {
                    last = Some(key);
                    continue;
                };
                if entry.due > now {
                    let wait = Duration::from_millis((entry.due - now).min(1000));
                    return Ok((Pass::NotDue(wait), looked, Some(key.to_vec())));
                }
                match visit(&entry) {
                    Visit::Start | Visit::Next | Visit::Blocked => {}
                    Visit::Full => {
                        return Ok((Pass::Full(key.to_vec()), looked, Some(key.to_vec())));
                    }
                    Visit::Orphan => self.apply(vec![Op::delete(QUEUE, key.to_vec())])?,
                }
                last = Some(key);
            }
        }
        Ok((Pass::End, looked, last.map(|key| key.to_vec())))
    }
}

impl RunStore for SledStore {
    fn durable(&self) -> crate::store::BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.commit
                .durable()
                .await
                .map_err(crate::store::StoreError::Backend)
        })
    }

    fn run(&self, tenant: &str, id: &str) -> Result<Option<RunRecord>> {
        self.get_run(&keys::run(tenant, id))
    }

    fn runs(&self, tenant: &str, filter: &RunFilter) -> Result<Vec<RunRecord>> {
        let tenant_prefix = keys::prefix(&[tenant]);
        let mut runs: Vec<RunRecord> = if filter.status.as_deref() == Some("failed") {
            // The dead-letter list is the index of failed runs.
            self.scan_prefix(DEAD, &tenant_prefix)?
                .into_iter()
                .filter_map(|(key, _)| self.get_run(&key).transpose())
                .collect::<Result<_>>()?
        } else {
            self.scan_prefix(RUNS, &tenant_prefix)?
                .into_iter()
                .map(|(_, bytes)| decode(RUNS, &bytes))
                .collect::<Result<_>>()?
        };
        runs.retain(|r| filter.matches(r));
        runs.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        runs.truncate(filter.max());
        Ok(runs)
    }

    fn exists(&self, tenant: &str, id: &str) -> Result<bool> {
        Ok(self.get(RUNS, &keys::run(tenant, id))?.is_some())
    }

    fn seen_at(&self, tenant: &str, flow: &str, event: &str) -> Result<Option<u64>> {
        self.get(DEDUP, &keys::dedup(tenant, flow, event))?
            .map(|bytes| decode(DEDUP, &bytes))
            .transpose()
    }

    fn create(
        &self,
        runs: &[RunRecord],
        seen: &[Seen],
        entities: &[EntityWrite],
        along: Along<'_>,
    ) -> Result<()> {
        // A webhook delivery's runs (no entity among them): single writes.
        let delivery = matches!(along, Along::InboxDone(_) | Along::Unacknowledged);
        if delivery && entities.is_empty() && runs.iter().all(|run| run.entity.is_none()) {
            let inbox = match along {
                Along::InboxDone(key) => Some(key),
                _ => None,
            };
            return self.apply_in_order(creating(runs, seen, inbox));
        }
        let mut ops = match along {
            Along::Nothing | Along::Unacknowledged => Vec::new(),
            Along::InboxDone(key) => vec![Op::delete(INBOX, key.0.clone())],
            // One node fires a slot once: its runs' ids (from the slot)
            // are the only record of it needed.
            Along::TriggerState {
                tenant,
                flow,
                state,
            }
            | Along::Slot {
                tenant,
                flow,
                state,
                ..
            } => vec![Op::put_json(
                TRIGGER_STATE,
                keys::join(&[tenant, flow]),
                state,
            )],
        };
        ops.extend(seen.iter().flat_map(marking));
        for run in runs {
            ops.extend(index(run));
        }
        for write in entities {
            ops.push(Op::put_json(
                ENTITIES,
                keys::join(&[&write.tenant, &write.flow, &write.kind, &write.key]),
                &write.state,
            ));
        }
        self.apply(ops)
    }

    fn update(&self, before: &RunRecord, after: &RunRecord) -> Result<()> {
        let single = if before.status.is_queued() && after.status.is_finished() {
            self.apply_in_order(finishing(before, after))?;
            true
        } else {
            let ops = moving(before, after);
            let single = ops.len() == 1;
            self.apply(ops)?;
            single
        };
        if single {
            // A transaction would have rolled the log to disk at once: so
            // that a result is not left in memory until sled's own flush
            // (every 500 ms), the next group commit takes it (within
            // `commit::LAZY`; nobody waits for it).
            self.commit.soon();
        }
        Ok(())
    }

    fn reindex(&self, run: &RunRecord) -> Result<()> {
        let mut ops = index(run);
        ops.retain(|op| op.tree() != RUNS);
        self.apply(ops)
    }

    fn repair_queue_entry(&self, run: &RunRecord, entry: &QueueEntry) -> Result<()> {
        let mut ops = vec![Op::delete(QUEUE, keys::queue_entry(run.lane, entry))];
        if run.status.is_finished() {
            ops.extend(keys::entity_run(run).map(|key| Op::delete(ENTITY_RUNS, key)));
        }
        ops.extend(index(run));
        self.apply(ops)
    }

    fn visit_due(
        &self,
        lane: Lane,
        now: u64,
        head: usize,
        free: usize,
        visit: &mut dyn FnMut(&QueueEntry) -> Visit,
    ) -> Result<Duration> {
        // A finishing run wakes the dispatcher: nothing to read until then.
        if free == 0 {
            return Ok(IDLE);
        }
        let prefix = [keys::lane_byte(lane)];
        let mut walk = self.walks[lane as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (pass, looked, last) = self.offer(&prefix, &[], head, now, visit)?;
        let last = match last {
            Some(key) if looked == head => key,
            _ => Vec::new(), // the head is the whole lane
        };
        match pass {
            Pass::NotDue(wait) => {
                walk.resume = None;
                return Ok(wait);
            }
            Pass::Full(_) => return Ok(IDLE),
            Pass::End if last.is_empty() => {
                walk.resume = None;
                return Ok(IDLE);
            }
            Pass::End => {}
        }
        // The head holds only runs that cannot start now: walk on, bounded.
        if let Some(since) = walk.last.map(|at| at.elapsed())
            && since < WALK_EVERY
        {
            return Ok(WALK_EVERY - since);
        }
        walk.last = Some(Instant::now());
        let after_head = keys::after(&last);
        let from = match walk.resume.take() {
            Some(resume) if resume > after_head => resume,
            _ => after_head,
        };
        let (pass, looked, last) = self.offer(&prefix, &from, WALK, now, visit)?;
        let rest = match last {
            Some(key) if looked == WALK => Some(keys::after(&key)),
            _ => None, // the walk reached the end of the lane
        };
        Ok(match pass {
            Pass::NotDue(wait) => wait,
            Pass::Full(at) => {
                walk.resume = Some(at);
                IDLE
            }
            Pass::End => {
                walk.resume = rest;
                if walk.resume.is_some() {
                    WALK_EVERY
                } else {
                    IDLE
                }
            }
        })
    }

    fn parked(&self, tenant: &str, connection: &str) -> Result<Vec<String>> {
        Ok(self
            .scan_prefix(PARKED, &keys::prefix(&[tenant, connection]))?
            .into_iter()
            .filter_map(|(key, _)| keys::split(&key).pop())
            .collect())
    }

    fn dead_letters(&self, tenant: &str) -> Result<usize> {
        Ok(self.scan_prefix(DEAD, &keys::prefix(&[tenant]))?.len())
    }

    fn queue_depth(&self) -> Result<usize> {
        Ok(self.queue.len())
    }

    fn prune(&self, finished_before: u64, seen_before: u64) -> Result<(usize, usize)> {
        let mut runs = 0;
        loop {
            let batch = self.scan_from(FINISHED, b"", b"", PRUNE_BATCH)?;
            let mut ops = Vec::new();
            for (key, _) in &batch {
                let Some((at, rest)) = keys::time_of(key) else {
                    continue;
                };
                if at >= finished_before {
                    break;
                }
                ops.push(Op::delete(FINISHED, key.clone()));
                if let Some(run) = self.get_run(rest)? {
                    ops.extend(unindex(&run));
                    ops.push(Op::delete(RUNS, rest.to_vec()));
                }
                runs += 1;
            }
            let done = ops.is_empty() || batch.len() < PRUNE_BATCH;
            self.apply(ops)?;
            if done {
                break;
            }
        }
        let mut marks = 0;
        loop {
            let batch = self.scan_from(DEDUP_EXPIRY, b"", b"", PRUNE_BATCH)?;
            let mut ops = Vec::new();
            for (key, _) in &batch {
                let Some((at, dedup)) = keys::time_of(key) else {
                    continue;
                };
                if at >= seen_before {
                    break;
                }
                ops.push(Op::delete(DEDUP_EXPIRY, key.clone()));
                // A later sighting renewed the entry: keep that one.
                let seen: Option<u64> = self
                    .get(DEDUP, dedup)?
                    .map(|bytes| decode(DEDUP, &bytes))
                    .transpose()?;
                if seen.is_some_and(|seen| seen < seen_before) {
                    ops.push(Op::delete(DEDUP, dedup.to_vec()));
                }
                marks += 1;
            }
            let done = ops.is_empty() || batch.len() < PRUNE_BATCH;
            self.apply(ops)?;
            if done {
                break;
            }
        }
        Ok((runs, marks))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::RunEvent;

    fn run(status: RunStatus) -> RunRecord {
        RunRecord {
            id: "run_1".into(),
            tenant: "t".into(),
            flow_id: "flow_1".into(),
            flow_version: 1,
            source: "api".into(),
            event: RunEvent {
                id: "e".into(),
                payload: json!({}),
            },
            lane: Lane::Fast,
            status,
            steps: vec![],
            error: None,
            due_at: 0x1234,
            created_at: 1,
            updated_at: 1,
            finished_at: status.is_finished().then_some(99),
            parked_on: (status == RunStatus::Paused).then(|| "conn".to_string()),
            replays: 0,
            waiting_until: None,
            stopped: None,
            response: None,
            parent: None,
            entity: None,
            changes: None,
            previous: None,
        }
    }

    #[test]
    fn queue_keys_sort_by_lane_then_due_time_and_parse_back() {
        let mut a = run(RunStatus::Queued);
        a.due_at = 5;
        let mut b = run(RunStatus::Queued);
        b.due_at = 300;
        let mut c = run(RunStatus::Queued);
        c.lane = Lane::Normal;
        c.due_at = 1;
        assert!(keys::queue(&a) < keys::queue(&b));
        assert!(keys::queue(&b) < keys::queue(&c));
        assert_eq!(
            keys::parse_queue(&keys::queue(&b)),
            Some(QueueEntry {
                due: 300,
                tenant: "t".into(),
                flow: "flow_1".into(),
                run: "run_1".into()
            })
        );
    }

    #[test]
    fn every_state_indexes_where_it_should_and_unindexes_the_same() {
        let trees = |ops: &[Op]| -> Vec<&'static str> { ops.iter().map(Op::tree).collect() };
        let table = [
            (RunStatus::Queued, vec![RUNS, QUEUE]),
            (RunStatus::Retrying, vec![RUNS, QUEUE]),
            (RunStatus::Waiting, vec![RUNS, QUEUE]),
            (RunStatus::Paused, vec![RUNS, PARKED]),
            (RunStatus::Failed, vec![RUNS, DEAD, FINISHED]),
            (RunStatus::Succeeded, vec![RUNS, FINISHED]),
            (RunStatus::Skipped, vec![RUNS, FINISHED]),
            (RunStatus::Cancelled, vec![RUNS, FINISHED]),
        ];
        for (status, expected) in table {
            let r = run(status);
            assert_eq!(trees(&index(&r)), expected, "{status:?}");
            assert_eq!(trees(&unindex(&r)), expected[1..], "{status:?}");
        }
    }

    /// The head of the queue blocked by one flow does not hide a run of
    /// another flow behind it: the next passes walk on to it.
    #[test]
    fn the_walk_finds_what_a_blocked_head_hides() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut runs = Vec::new();
        for i in 0..50u64 {
            let mut r = run(RunStatus::Queued);
            r.id = format!("run_{i:03}");
            r.flow_id = if i == 49 {
                "free".into()
            } else {
                "blocked".into()
            };
            r.due_at = i;
            runs.push(r);
        }
        store.create(&runs, &[], &[], Along::Nothing).unwrap();
        let mut started = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while started.is_empty() {
            assert!(
                Instant::now() < deadline,
                "the walk never reached the free flow"
            );
            let wait = store
                .visit_due(Lane::Fast, 1_000, 8, 8, &mut |entry| {
                    if entry.flow == "free" {
                        started.push(entry.run.clone());
                    }
                    Visit::Next
                })
                .unwrap();
            std::thread::sleep(wait.min(WALK_EVERY));
        }
        assert_eq!(started, vec!["run_049".to_string()]);
    }

    #[test]
    fn the_walk_sees_the_queue_as_written_and_again_after_a_restart() {
        let queued = run(RunStatus::Queued);
        let (dir, store) = holding(&queued);
        let due = |store: &SledStore| {
            let mut seen = Vec::new();
            store
                .visit_due(Lane::Fast, u64::MAX, 8, 8, &mut |entry| {
                    seen.push(entry.run.clone());
                    Visit::Next
                })
                .unwrap();
            seen
        };
        assert_eq!(due(&store), ["run_1"]);
        assert_eq!(store.queue_depth().unwrap(), 1);
        // Finished: its entry goes from the walk at once.
        let mut done = queued.clone();
        done.status = RunStatus::Succeeded;
        done.finished_at = Some(100);
        store.update(&queued, &done).unwrap();
        assert!(due(&store).is_empty());
        // Replayed, then the host restarts: the walk is read from disk.
        let mut again = done.clone();
        again.status = RunStatus::Queued;
        again.finished_at = None;
        again.due_at = 0x2000;
        store.update(&done, &again).unwrap();
        drop(store);
        let store = SledStore::open(dir.path()).unwrap();
        assert_eq!(due(&store), ["run_1"]);
        assert_eq!(store.queue_depth().unwrap(), 1);
    }

    /// The entries of one tree, in key order.
    type Entries = Vec<(Vec<u8>, Vec<u8>)>;

    /// A store in a temporary directory holding `run` alone.
    fn holding(run: &RunRecord) -> (tempfile::TempDir, std::sync::Arc<SledStore>) {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        store
            .create(std::slice::from_ref(run), &[], &[], Along::Nothing)
            .unwrap();
        (dir, store)
    }

    /// Every tree a run's state touches, whole.
    fn snapshot(store: &SledStore) -> Vec<(&'static str, Entries)> {
        [
            RUNS,
            QUEUE,
            FINISHED,
            DEAD,
            PARKED,
            ENTITY_RUNS,
            DEDUP,
            DEDUP_EXPIRY,
            INBOX,
        ]
        .into_iter()
        .map(|tree| (tree, store.scan_prefix(tree, b"").unwrap()))
        .collect()
    }

    /// Whatever `update` leaves out or writes one by one, it ends where
    /// one batch of every index entry of both states ends, for every move
    /// between states (a step's progress included: same state, same time).
    #[test]
    fn every_move_ends_where_the_whole_batch_ends() {
        let statuses = [
            RunStatus::Queued,
            RunStatus::Retrying,
            RunStatus::Waiting,
            RunStatus::Paused,
            RunStatus::Failed,
            RunStatus::Succeeded,
            RunStatus::Skipped,
            RunStatus::Cancelled,
        ];
        let state = |status, due| {
            let mut r = run(status);
            r.due_at = due;
            r.entity = Some(crate::store::RunEntity {
                kind: "order".into(),
                key: "42".into(),
                seq: 7,
            });
            r
        };
        for from in statuses {
            for (to, due) in statuses.iter().flat_map(|s| [(*s, 0x1234), (*s, 0x9999)]) {
                let (before, after) = (state(from, 0x1234), state(to, due));
                let ((_one, batch), (_two, store)) = (holding(&before), holding(&before));
                let mut whole = unindex(&before);
                whole.extend(index(&after));
                batch.apply(whole).unwrap();
                store.update(&before, &after).unwrap();
                assert_eq!(
                    snapshot(&store),
                    snapshot(&batch),
                    "{from:?} -> {to:?} due {due:x}"
                );
            }
        }
        let progress = moving(&run(RunStatus::Queued), &run(RunStatus::Queued));
        assert_eq!(progress.iter().map(Op::tree).collect::<Vec<_>>(), [RUNS]);
    }

    /// A queued run's move to a finished state is single writes. Cut short
    /// after any of them (a crash), the queue still offers the run, and the
    /// repair leaves what the whole write leaves.
    #[test]
    fn a_finishing_write_cut_short_anywhere_is_repaired_to_the_whole_write() {
        for status in [
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Skipped,
            RunStatus::Cancelled,
        ] {
            let mut before = run(RunStatus::Queued);
            before.entity = Some(crate::store::RunEntity {
                kind: "order".into(),
                key: "42".into(),
                seq: 7,
            });
            let mut after = run(status);
            after.entity = before.entity.clone();
            let (_whole, store) = holding(&before);
            store.update(&before, &after).unwrap();
            let whole = snapshot(&store);

            let ops = finishing(&before, &after);
            assert_eq!(
                ops.last().map(Op::tree),
                Some(QUEUE),
                "the queue entry goes last"
            );
            for cut in 1..ops.len() {
                let (_dir, store) = holding(&before);
                store
                    .apply_in_order(finishing(&before, &after).into_iter().take(cut).collect())
                    .unwrap();
                let mut offered = Vec::new();
                store
                    .visit_due(Lane::Fast, u64::MAX, 8, 8, &mut |entry| {
                        offered.push(entry.clone());
                        Visit::Next
                    })
                    .unwrap();
                assert_eq!(
                    offered.len(),
                    1,
                    "{status:?} cut after {cut}: still offered"
                );
                let stored = store.run("t", "run_1").unwrap().unwrap();
                assert_eq!(
                    stored.status, status,
                    "{status:?} cut after {cut}: the record is first"
                );
                store.repair_queue_entry(&stored, &offered[0]).unwrap();
                assert_eq!(
                    snapshot(&store),
                    whole,
                    "{status:?} cut after {cut}: repaired"
                );
            }
        }
    }

    /// A webhook delivery's runs are single writes, the inbox entry last
    /// (when it has one). Cut short after any of them (a crash), the
    /// delivery is still in the inbox (or, not acknowledged, is sent again),
    /// no queue entry names a missing record, and routing it again the way
    /// the runs service does (an event with its mark is a duplicate, a run
    /// without its mark is indexed again, the others are created) leaves
    /// what the whole write leaves.
    #[test]
    fn a_delivery_s_creation_cut_short_anywhere_is_completed_by_routing_it_again() {
        let mut queued = run(RunStatus::Queued);
        queued.event.id = "e1".into();
        let mut skipped = run(RunStatus::Skipped);
        skipped.id = "run_2".into();
        skipped.event.id = "e2".into();
        let runs = [queued, skipped];
        let marks: Vec<Seen> = runs
            .iter()
            .map(|r| Seen {
                tenant: "t".into(),
                flow: "flow_1".into(),
                event: r.event.id.clone(),
                at: 1,
            })
            .collect();
        let key = InboxKey(b"0000000000000001abcd".to_vec());
        for inbox in [Some(&key), None] {
            let along = || match inbox {
                Some(key) => Along::InboxDone(key),
                None => Along::Unacknowledged,
            };
            let received = || {
                let dir = tempfile::tempdir().unwrap();
                let store = SledStore::open(dir.path()).unwrap();
                if let Some(key) = inbox {
                    store
                        .apply(vec![Op::put(INBOX, key.0.clone(), b"{}".to_vec())])
                        .unwrap();
                }
                (dir, store)
            };
            let (_whole, store) = received();
            store.create(&runs, &marks, &[], along()).unwrap();
            let whole = snapshot(&store);
            assert!(store.scan_prefix(INBOX, b"").unwrap().is_empty());

            let ops = creating(&runs, &marks, inbox);
            let last = if inbox.is_some() { INBOX } else { DEDUP };
            assert_eq!(
                ops.last().map(Op::tree),
                Some(last),
                "the inbox entry, if any, goes last"
            );
            for cut in 0..ops.len() {
                let (_dir, store) = received();
                store
                    .apply_in_order(ops.iter().take(cut).cloned().collect())
                    .unwrap();
                assert_eq!(
                    store.scan_prefix(INBOX, b"").unwrap().len(),
                    usize::from(inbox.is_some()),
                    "{inbox:?} cut after {cut}: the delivery's inbox entry is still there"
                );
                for (key, _) in store.scan_prefix(QUEUE, b"").unwrap() {
                    let entry = keys::parse_queue(&key).unwrap();
                    assert!(
                        store.exists(&entry.tenant, &entry.run).unwrap(),
                        "{inbox:?} cut after {cut}: a queue entry without its record"
                    );
                }
                let mut fresh = Vec::new();
                let mut again = Vec::new();
                for (run, mark) in runs.iter().zip(&marks) {
                    if store.seen_at("t", "flow_1", &mark.event).unwrap().is_some() {
                        continue;
                    }
                    again.push(mark.clone());
                    match store.run("t", &run.id).unwrap() {
                        Some(stored) => store.reindex(&stored).unwrap(),
                        None => fresh.push(run.clone()),
                    }
                }
                store.create(&fresh, &again, &[], along()).unwrap();
                assert_eq!(
                    snapshot(&store),
                    whole,
                    "{inbox:?} cut after {cut}: routed again"
                );
            }
        }
    }

    #[test]
    fn dedup_marks_and_finished_runs_are_pruned_by_age() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut old = run(RunStatus::Succeeded);
        old.finished_at = Some(10);
        let mut new = run(RunStatus::Succeeded);
        new.id = "run_2".into();
        new.finished_at = Some(1_000);
        let seen = |event: &str, at| Seen {
            tenant: "t".into(),
            flow: "f".into(),
            event: event.into(),
            at,
        };
        store
            .create(
                &[old, new],
                &[seen("e1", 10), seen("e2", 1_000)],
                &[],
                Along::Nothing,
            )
            .unwrap();
        assert_eq!(store.prune(500, 500).unwrap(), (1, 1));
        assert!(!store.exists("t", "run_1").unwrap());
        assert!(store.exists("t", "run_2").unwrap());
        assert_eq!(store.seen_at("t", "f", "e1").unwrap(), None);
        assert_eq!(store.seen_at("t", "f", "e2").unwrap(), Some(1_000));
    }
}
