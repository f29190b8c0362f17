//! Webhook signature verification: see `switchyard::fuzzing::signature`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::signature(data));
