//! Replays the committed corpus of every fuzz target (`fuzz/corpus/<target>/`), so a plain
//! `cargo test` covers every input the fuzzers found interesting, regressions included.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut inputs = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        inputs += 1;
    }
    assert!(inputs >= 8, "{target}: only {inputs} corpus inputs");
    eprintln!("fuzz replay: {target}: {inputs} inputs");
}

#[test]
fn session_corpus() {
    replay("session", wxsocket_fuzz::session);
}

#[test]
fn pool_corpus() {
    replay("pool", wxsocket_fuzz::pool);
}

#[test]
fn connect_options_corpus() {
    replay("connect_options", wxsocket_fuzz::connect_options);
}

#[test]
fn inflate_corpus() {
    replay("inflate", wxsocket_fuzz::inflate);
}
