//! Template rendering, conditions and their checks: see `switchyard::fuzzing::template`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::template(data));
