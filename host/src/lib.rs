//! Switchyard's host: loads versioned connector plugins (WebAssembly
//! components), sandboxes their network access, and runs their flows.
//!
//! The modules follow the data path. Ways in: `api`, `console`, `cli`.
//! Wiring: `app`. Services: `tenants`, `users`, `registry`, `connections`,
//! `flows`, `drafts`, `files` (buckets, formats, record jobs), `triggers`
//! (webhooks, polls, schedules, files), `runs` (queue and executor). One call path
//! into plugins: `calls`, through the `connector` trait to the wasmtime
//! `engine`; the only way out of a plugin: `sandbox`. Beneath them:
//! `store` (traits and the sled backend), `manifest`, `declarative` (specs
//! checked at push), `schema`, `secrets`,
//! `metrics`, `clock`, `tasks`.

pub mod api;
pub mod app;
pub mod calls;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connections;
pub mod connector;
pub mod console;
pub mod declarative;
pub mod drafts;
pub mod engine;
pub mod error;
pub mod files;
pub mod flows;
pub mod fuzzing;
pub mod manifest;
pub mod metrics;
pub mod oauth;
pub mod registry;
pub mod runs;
pub mod sandbox;
pub mod schema;
pub mod secrets;
pub mod store;
pub mod tasks;
pub mod tenants;
pub mod topics;
pub mod triggers;
pub mod users;
