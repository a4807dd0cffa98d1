//! `cargo run -p wxsocket-fuzz --example session_transcript -- INPUT > bug.jsonl`: the `session`
//! fuzz target's run of INPUT (a crash file, a corpus entry) as a transcript on stdout, for
//! `wxsocket replay` or `crates/core/tests/transcripts/`. Exit status 1 (after writing the
//! transcript up to the failing step) when the input breaks an invariant, 2 on a usage
//! error.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(path), None) = (args.next(), args.next()) else {
        eprintln!("usage: session_transcript INPUT");
        return ExitCode::from(2);
    };
    let data = match std::fs::read(&path) {
        Ok(data) => data,
        Err(e) => {
            eprintln!("session_transcript: {}: {e}", path.to_string_lossy());
            return ExitCode::from(2);
        }
    };
    let (text, failure) = wxsocket_fuzz::session_transcript(&data);
    print!("{text}");
    match failure {
        None => ExitCode::SUCCESS,
        Some(message) => {
            eprintln!("session_transcript: the input breaks an invariant: {message}");
            ExitCode::from(1)
        }
    }
}
