//! `cargo fuzz run gguf`: the `gguf` harness of `tests/harness/mod.rs` under libFuzzer.
#![no_main]

#[path = "../../tests/harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::gguf(data));
