//! Integration tests of the host: one binary (so linking happens once), one
//! module per area. Plugins come from `switchyard-tests`, which builds them.

// Test helpers are shared between modules of this one binary.
#![allow(unreachable_pub)]

mod auth;
mod cli;
mod digest;
mod fake_common;
mod fake_shipping;
mod fake_woocommerce;
mod flows;
mod limits;
mod plugins;
mod polyglot;
mod sandbox;
mod support;
mod tenants;
