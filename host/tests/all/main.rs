//! Integration tests of the host: one binary (so linking happens once), one
//! module per area. Plugins come from `switchyard-tests`, which builds them.

// Test helpers are shared between modules of this one binary.
#![allow(unreachable_pub)]

mod auth;
mod cli;
mod connectors_rust;
mod crash;
mod digest;
mod fake_api;
mod fake_shopify;
mod fake_warehouse;
mod flows;
mod limits;
mod plugins;
mod runs;
mod sandbox;
mod support;
mod tenants;
