//! cargo-fuzz target `pool`: see `wxsocket_fuzz::pool`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wxsocket_fuzz::pool(data));
