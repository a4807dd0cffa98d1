//! cargo-fuzz target `connect_options`: see `wxsocket_fuzz::connect_options`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wxsocket_fuzz::connect_options(data));
