//! cargo-fuzz target `session`: see `wxsocket_fuzz::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wxsocket_fuzz::session(data));
