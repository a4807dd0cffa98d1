//! cargo-fuzz target `inflate`: see `wxsocket_fuzz::inflate`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wxsocket_fuzz::inflate(data));
