//! Flows: "when TRIGGER then ACTIONS" as data. This module holds the
//! definitions (`definition.rs`: steps that branch, loop, wait and answer),
//! the checks they pass at publish against a narrow [`Catalogue`]
//! (`validate.rs`), their storage and versions ([`Flows`]), and the mapping
//! language; the runtime (triggers, run queue, retries) builds on it.

pub mod definition;
pub mod mapping;
pub mod records;
mod service;
pub mod template;
mod validate;

pub use definition::{
    Branch, CallFlowSpec, Catalogue, CoalesceSpec, DelaySpec, EntitySpec, FlowSpec, ForEachSpec,
    HydrateSpec, Lane, OnError, PathsMode, PathsSpec, Pinned, ReconcileSpec, RespondSpec,
    RetrySpec, RunLimit, StepKind, StepSpec, TriggerSpec, actions, walk,
};
pub use records::{
    ActionSinkSpec, AfterSuccess, BatchSpec, FileSinkSpec, FileTriggerSpec, PagesSpec, PlaceSpec,
    RecordsSpec, RemoteSinkSpec, RemoteSpec, SinkSpec, SourceSpec,
};
pub use service::{FlowRecord, Flows, HostCatalogue};
pub use validate::{MAX_CONCURRENCY, MAX_DELAY_SECS, MAX_DEPTH, MAX_ITEMS_LIMIT};
