//! Flow parsing and the publish checks that need no registry: see `switchyard::fuzzing::flow`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::flow(data));
