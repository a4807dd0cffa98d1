//! cargo-fuzz target `tunnel`: see `wxsocket_fuzz::tunnel`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wxsocket_fuzz::tunnel(data));
