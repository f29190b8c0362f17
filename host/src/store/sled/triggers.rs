//! [`TriggerStore`] on sled: the state of each flow's trigger, its samples
//! (one list per flow) and its poll history (one entry per poll, keyed by
//! time, trimmed to the newest).

use super::{Op, SledStore, keys, keys::*};
use crate::store::{PollRecord, Result, Sample, TriggerState, TriggerStore, decode};

impl TriggerStore for SledStore {
    fn state(&self, tenant: &str, flow: &str) -> Result<Option<TriggerState>> {
        self.get(TRIGGER_STATE, &keys::join(&[tenant, flow]))?
            .map(|bytes| decode(TRIGGER_STATE, &bytes))
            .transpose()
    }

    fn save_state(&self, tenant: &str, flow: &str, state: &TriggerState) -> Result<()> {
        self.apply(vec![Op::put_json(
            TRIGGER_STATE,
            keys::join(&[tenant, flow]),
            state,
        )])
    }

    fn samples(&self, tenant: &str, flow: &str) -> Result<Vec<Sample>> {
        Ok(self
            .get(SAMPLES, &keys::join(&[tenant, flow]))?
            .map(|bytes| decode(SAMPLES, &bytes))
            .transpose()?
            .unwrap_or_default())
    }

    fn add_samples(&self, tenant: &str, flow: &str, samples: &[Sample], keep: usize) -> Result<()> {
        let mut all: Vec<Sample> = samples.to_vec();
        all.extend(self.samples(tenant, flow)?);
        all.truncate(keep);
        self.apply(vec![Op::put_json(
            SAMPLES,
            keys::join(&[tenant, flow]),
            &all,
        )])
    }

    fn polls(&self, tenant: &str, flow: &str) -> Result<Vec<PollRecord>> {
        let mut polls = self
            .scan_prefix(POLLS, &keys::prefix(&[tenant, flow]))?
            .into_iter()
            .map(|(_, bytes)| decode(POLLS, &bytes))
            .collect::<Result<Vec<PollRecord>>>()?;
        polls.reverse();
        Ok(polls)
    }

    fn record_poll(&self, tenant: &str, flow: &str, poll: &PollRecord, keep: usize) -> Result<()> {
        let prefix = keys::prefix(&[tenant, flow]);
        let mut key = prefix.clone();
        key.extend_from_slice(format!("{:016x}", poll.at).as_bytes());
        let existing = self.scan_prefix(POLLS, &prefix)?;
        // The oldest go, so that `keep` remain with this one.
        let excess = (existing.len() + 1).saturating_sub(keep);
        let mut ops: Vec<Op> = existing
            .into_iter()
            .take(excess)
            .map(|(old, _)| Op::delete(POLLS, old))
            .collect();
        ops.push(Op::put_json(POLLS, key, poll));
        self.apply(ops)
    }

    fn forget(&self, tenant: &str, flow: &str) -> Result<()> {
        let key = keys::join(&[tenant, flow]);
        let mut ops = vec![
            Op::delete(TRIGGER_STATE, key.clone()),
            Op::delete(SAMPLES, key),
        ];
        ops.extend(
            self.scan_prefix(POLLS, &keys::prefix(&[tenant, flow]))?
                .into_iter()
                .map(|(old, _)| Op::delete(POLLS, old)),
        );
        self.apply(ops)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn poll(at: u64) -> PollRecord {
        PollRecord {
            at,
            duration_ms: 1.0,
            events: 0,
            cursor_before: None,
            cursor_after: Some(at.to_string()),
            error: None,
            journal: json!({}),
        }
    }

    #[test]
    fn samples_and_polls_keep_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let sample = |n: u64| Sample {
            at: n,
            source: "poll".into(),
            event_id: format!("e{n}"),
            payload: json!({"n": n}),
        };
        store
            .add_samples("t", "f", &[sample(2), sample(1)], 3)
            .unwrap();
        store
            .add_samples("t", "f", &[sample(4), sample(3)], 3)
            .unwrap();
        let ids: Vec<String> = store
            .samples("t", "f")
            .unwrap()
            .into_iter()
            .map(|s| s.event_id)
            .collect();
        assert_eq!(ids, ["e4", "e3", "e2"]);
        for at in 1..=25 {
            store.record_poll("t", "f", &poll(at), 20).unwrap();
        }
        store.record_poll("t", "other", &poll(99), 20).unwrap();
        let polls = store.polls("t", "f").unwrap();
        assert_eq!(polls.len(), 20);
        assert_eq!((polls[0].at, polls[19].at), (25, 6));
        store.forget("t", "f").unwrap();
        assert!(store.polls("t", "f").unwrap().is_empty());
        assert!(store.samples("t", "f").unwrap().is_empty());
        assert_eq!(store.polls("t", "other").unwrap().len(), 1);
    }
}
