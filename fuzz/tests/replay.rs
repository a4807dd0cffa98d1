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

#[test]
fn transcript_corpus() {
    replay("transcript", wxsocket_fuzz::transcript);
}

#[test]
fn tunnel_corpus() {
    replay("tunnel", wxsocket_fuzz::tunnel);
}

/// Every fourth `session` corpus input (in name order; all 1312 of 2026-12-03 passed once,
/// the sample keeps `cargo test` quick), recorded as a transcript, replays exactly in a
/// fresh session: the conversion of a crash input into a transcript is exact.
#[test]
fn session_corpus_as_transcripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/session");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let mut replayed = 0;
    for path in paths.into_iter().step_by(4) {
        let (text, failure) = wxsocket_fuzz::session_transcript(&std::fs::read(&path).unwrap());
        assert_eq!(failure, None, "{}", path.display());
        if text.is_empty() {
            continue; // too short to set a session up
        }
        let replay = wxsocket_core::transcript::replay(&text, std::time::Instant::now())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            replay.is_exact(),
            "{}: {:#?}",
            path.display(),
            replay.mismatches
        );
        replayed += 1;
    }
    assert!(replayed >= 8, "only {replayed} transcripts");
    eprintln!("fuzz corpus as transcripts: {replayed} replayed exactly");
}

#[test]
fn link_corpus() {
    replay("link", wxsocket_fuzz::link);
}
