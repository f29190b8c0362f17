//! What a run's record means to the engine (the record itself is defined
//! with its store): the ids that make a repeated event the same run, the
//! idempotency key of each step, and the view of a run that templates see.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::store::{RunRecord, RunStatus, StepStatus};

/// A run started by an event has an id derived from the flow and the event,
/// so the same delivery processed twice (after a crash, say) is the same run
/// with the same idempotency keys.
pub fn run_id_for(flow_id: &str, event_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(flow_id)
        .chain_update([0])
        .chain_update(event_id)
        .finalize();
    format!("run_{}", hex::encode(&digest[..12]))
}

/// The id of a run for an event seen again after the de-duplication window
/// forgot it: a new run, not the old one again.
pub fn run_id_after_window(flow_id: &str, event_id: &str, now: u64) -> String {
    let digest = Sha256::new()
        .chain_update(flow_id)
        .chain_update([0])
        .chain_update(event_id)
        .chain_update([0])
        .chain_update(now.to_be_bytes())
        .finalize();
    format!("run_{}", hex::encode(&digest[..12]))
}

/// Whether the run stored under an event's id, made at `created_at`, when
/// the event has no de-duplication mark, is that event's run whose
/// creation a crash cut short (made within the window, so its mark would
/// still be there) and not a run of the event from before the window.
pub fn creation_cut_short(created_at: u64, now: u64, window: u64) -> bool {
    now.saturating_sub(created_at) < window
}

/// The same for every attempt and replay of one step of one run.
pub fn idempotency_key(run_id: &str, step: &str) -> String {
    format!("{run_id}:{step}")
}

impl RunRecord {
    /// What the run produced, once it succeeded: the output of the last
    /// step that had one.
    pub fn output(&self) -> Option<&Value> {
        if self.status != RunStatus::Succeeded {
            return None;
        }
        self.steps
            .iter()
            .rev()
            .filter(|s| s.status == StepStatus::Succeeded && s.kind != "paths")
            .find_map(|s| s.output.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_runs_have_stable_ids_per_flow_and_event() {
        assert_eq!(run_id_for("f", "e1"), run_id_for("f", "e1"));
        assert_ne!(run_id_for("f", "e1"), run_id_for("f", "e2"));
        assert_ne!(run_id_for("f", "e1"), run_id_for("g", "e1"));
        // No ambiguity from where the separator falls.
        assert_ne!(run_id_for("ab", "c"), run_id_for("a", "bc"));
    }

    #[test]
    fn a_run_without_its_mark_is_a_cut_creation_only_within_the_window() {
        let window = 1_000;
        let table = [
            // (created_at, now, cut short)
            (5_000, 5_000, true),
            (5_000, 5_999, true),
            (5_000, 6_000, false), // the mark expired with the window
            (5_000, 90_000, false),
            (5_000, 4_000, true), // a clock that stepped back
        ];
        for (created_at, now, expected) in table {
            assert_eq!(
                creation_cut_short(created_at, now, window),
                expected,
                "created {created_at}, now {now}"
            );
        }
    }
}
