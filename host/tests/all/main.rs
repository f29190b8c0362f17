//! Integration tests of the host: one binary (so linking happens once), one
//! module per area. Plugins come from `switchyard-tests`, which builds them.

// Test helpers are shared between modules of this one binary.
#![allow(unreachable_pub)]

mod abuse;
mod auth;
mod change_ingest;
mod cli;
mod cluster;
mod connector_new;
mod connector_test;
mod connector_watch;
mod connectors_rust;
mod console;
mod console_browser;
mod crash;
mod declarative;
mod declarative_kinds;
mod digest;
mod exports_s3;
mod fake_items;
mod fake_shipping;
mod fake_shopify;
mod fake_warehouse;
mod fake_woocommerce;
mod files;
mod files_crash;
mod files_s3;
mod flow_model;
mod flows;
mod fuzz_corpus;
mod limits;
mod openapi;
mod plugins;
mod polyglot;
mod postgres;
mod runs;
mod sandbox;
mod secrets;
mod streams;
mod support;
mod tenants;
mod tidy;
mod warm;
mod workflows;
