//! Who may start now: a run executes only while its flow is under the flow's
//! `concurrency` and every connection its steps use is under the host's
//! per-connection limit, and never twice at once. Claimed slots are released
//! when the run's execution ends. In memory: a restart starts from none.

use std::collections::{HashMap, HashSet};

/// The slots in use.
#[derive(Debug, Default)]
pub(super) struct Limits {
    running: HashSet<String>,
    per_flow: HashMap<String, u32>,
    per_connection: HashMap<String, u32>,
}

/// One run asking for its slots.
#[derive(Debug, Clone, Copy)]
pub(super) struct Claim<'a> {
    pub(super) run: &'a str,
    pub(super) flow: &'a str,
    /// The flow's `concurrency`, if it has one.
    pub(super) flow_limit: Option<u32>,
    pub(super) connections: &'a [String],
    pub(super) connection_limit: u32,
}

/// Why a claim was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The run is executing already.
    Running,
    /// Its flow, or one of its connections, is at its limit: nothing else
    /// of that flow can start in this pass either.
    AtLimit,
}

impl Limits {
    pub(super) fn is_running(&self, run: &str) -> bool {
        self.running.contains(run)
    }

    /// Takes the run's slots if they are all free.
    pub(super) fn claim(&mut self, claim: Claim<'_>) -> Result<(), Refusal> {
        if self.running.contains(claim.run) {
            return Err(Refusal::Running);
        }
        let count = |map: &HashMap<String, u32>, key: &str| map.get(key).copied().unwrap_or(0);
        let flow_busy = claim
            .flow_limit
            .is_some_and(|max| count(&self.per_flow, claim.flow) >= max.max(1));
        let connection_busy = claim
            .connections
            .iter()
            .any(|c| count(&self.per_connection, c) >= claim.connection_limit.max(1));
        if flow_busy || connection_busy {
            return Err(Refusal::AtLimit);
        }
        self.running.insert(claim.run.to_string());
        *self.per_flow.entry(claim.flow.to_string()).or_default() += 1;
        for c in claim.connections {
            *self.per_connection.entry(c.clone()).or_default() += 1;
        }
        Ok(())
    }

    /// Gives back what [`Limits::claim`] took for the same claim.
    pub(super) fn release(&mut self, claim: Claim<'_>) {
        let decrement = |map: &mut HashMap<String, u32>, key: &str| {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        };
        if self.running.remove(claim.run) {
            decrement(&mut self.per_flow, claim.flow);
            for c in claim.connections {
                decrement(&mut self.per_connection, c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::{
        Along, Lane, RunEvent, RunRecord, RunStatus, RunStore, Visit, sled::SledStore,
    };

    fn claim<'a>(
        run: &'a str,
        flow: &'a str,
        limit: Option<u32>,
        conns: &'a [String],
    ) -> Claim<'a> {
        Claim {
            run,
            flow,
            flow_limit: limit,
            connections: conns,
            connection_limit: 2,
        }
    }

    #[test]
    fn claims_within_flow_and_connection_limits() {
        let shared = vec!["conn".to_string()];
        let none: Vec<String> = Vec::new();
        let mut limits = Limits::default();
        // (run, flow, flow limit, connections, expected)
        type Row<'a> = (
            &'a str,
            &'a str,
            Option<u32>,
            &'a [String],
            Result<(), Refusal>,
        );
        let table: [Row<'_>; 7] = [
            ("r1", "a", Some(1), &none, Ok(())),
            ("r1", "a", Some(1), &none, Err(Refusal::Running)),
            ("r2", "a", Some(1), &none, Err(Refusal::AtLimit)),
            ("r3", "b", None, &shared, Ok(())),
            ("r4", "c", None, &shared, Ok(())),
            // The connection's limit (2) holds across flows.
            ("r5", "d", None, &shared, Err(Refusal::AtLimit)),
            // A limit of 0 means 1, never "nothing ever runs".
            ("r6", "e", Some(0), &none, Ok(())),
        ];
        for (run, flow, limit, conns, expected) in table {
            assert_eq!(
                limits.claim(claim(run, flow, limit, conns)),
                expected,
                "{run}"
            );
        }
        limits.release(claim("r1", "a", Some(1), &none));
        assert_eq!(limits.claim(claim("r2", "a", Some(1), &none)), Ok(()));
        limits.release(claim("r3", "b", None, &shared));
        assert_eq!(limits.claim(claim("r5", "d", None, &shared)), Ok(()));
        // Releasing what was never claimed changes nothing.
        limits.release(claim("zz", "d", None, &shared));
        assert_eq!(
            limits.claim(claim("r7", "f", None, &shared)),
            Err(Refusal::AtLimit)
        );
    }

    fn queued(id: &str, flow: &str, due: u64) -> RunRecord {
        RunRecord {
            id: id.into(),
            tenant: "t".into(),
            flow_id: flow.into(),
            flow_version: 1,
            source: "api".into(),
            event: RunEvent {
                id: id.into(),
                payload: json!({}),
            },
            lane: Lane::Normal,
            status: RunStatus::Queued,
            steps: vec![],
            error: None,
            due_at: due,
            created_at: due,
            updated_at: due,
            finished_at: None,
            parked_on: None,
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

    /// A dispatcher's pass over a real run store: a flow limited to two at
    /// once gets two of its five due runs started, the other flow's run
    /// behind them starts too, and the runs not yet due are left alone.
    #[test]
    fn a_pass_over_the_run_store_claims_within_the_limits() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut runs: Vec<RunRecord> = (0..5)
            .map(|i| queued(&format!("a{i}"), "a", 10 + i))
            .collect();
        runs.push(queued("b0", "b", 20));
        runs.push(queued("later", "b", 5_000));
        store.create(&runs, &[], &[], Along::Nothing).unwrap();
        let mut limits = Limits::default();
        let mut started = Vec::new();
        let limit = |flow: &str| (flow == "a").then_some(2);
        store
            .visit_due(Lane::Normal, 1_000, 64, 64, &mut |entry| {
                let none: Vec<String> = Vec::new();
                if limits
                    .claim(claim(&entry.run, &entry.flow, limit(&entry.flow), &none))
                    .is_ok()
                {
                    started.push(entry.run.clone());
                    Visit::Start
                } else {
                    Visit::Blocked
                }
            })
            .unwrap();
        assert_eq!(started, ["a0", "a1", "b0"]);
    }
}
