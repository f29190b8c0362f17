//! Switchyard's host: loads versioned connector plugins (WebAssembly
//! components), sandboxes their network access, and serves the admin API.
//!
//! The modules follow the data path: `api` and `cli` are the ways in,
//! `registry` keeps plugin versions, `engine` runs them, `sandbox` is their
//! only way out, `triggers` turn deliveries, polls and schedules into runs,
//! `runs` queues and executes them through `flows`, `store` keeps
//! everything durable and `metrics` counts it.

pub mod api;
pub mod app;
pub mod cli;
pub mod config;
pub mod connections;
pub mod engine;
pub mod error;
pub mod flows;
pub mod fuzzing;
pub mod manifest;
pub mod metrics;
pub mod registry;
pub mod runs;
pub mod sandbox;
pub mod secrets;
pub mod store;
pub mod tenants;
pub mod triggers;
