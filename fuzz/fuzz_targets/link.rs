//! cargo-fuzz target `link`: see `wxsocket_fuzz::link`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wxsocket_fuzz::link(data));
