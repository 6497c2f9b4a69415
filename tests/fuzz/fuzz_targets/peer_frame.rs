//! cargo-fuzz target: see `checks::peer_frame` (tests/fuzz/checks.rs) for what it checks.
#![no_main]

#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::peer_frame(data));
