//! Flows: "when TRIGGER then ACTIONS" as data. This module holds the
//! definitions (validated against a narrow [`Catalogue`] and pinned at
//! publish), their storage and versions ([`Flows`]), and the mapping
//! language; the runtime (triggers, run queue, retries) builds on it.

pub mod definition;
mod service;
pub mod template;

pub use definition::{Catalogue, FlowSpec, Lane, Pinned, RetrySpec, StepSpec, TriggerSpec};
pub use service::{FlowRecord, Flows, HostCatalogue};
