//! Flows: "when TRIGGER then ACTIONS" as data. This module holds the
//! definitions (validated and pinned at publish), their storage and versions,
//! and the mapping language; the runtime (triggers, run queue, retries)
//! builds on it.

pub mod definition;
mod store;
pub mod template;

pub use definition::{FlowSpec, Pinned, RetrySpec, StepSpec, TriggerSpec};
pub use store::FlowRecord;
