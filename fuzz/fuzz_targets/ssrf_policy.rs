//! The SSRF policy's host patterns, URLs and addresses: see `switchyard::fuzzing::ssrf_policy`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchyard::fuzzing::ssrf_policy(data));
