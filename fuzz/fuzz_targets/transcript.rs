//! cargo-fuzz target `transcript`: see `wxsocket_fuzz::transcript`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wxsocket_fuzz::transcript(data));
