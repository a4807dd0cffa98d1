//! The `wxsocket` command (being written).
fn main() {}
