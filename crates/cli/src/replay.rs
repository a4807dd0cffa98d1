//! `wxsocket replay FILE`: feeds a transcript that `connect --record` wrote into a fresh
//! session (`wxsocket_core::transcript::replay`), prints the events that session produced
//! as JSON lines (the `--json` contract of `connect`, `"t"` being the recorded time), and
//! exits with a status that says whether every action and event is the recorded one.

use crate::output::{Mode, Out, event_json};
use std::path::Path;
use std::process::ExitCode;
use wxsocket_core::{ReadyState, transcript};

/// Shown after `wxsocket replay --help`.
pub const HELP: &str = "\
Exit status:
  0  the replay produced exactly the actions and events recorded in the transcript
  1  it did not: each difference is printed on stderr (line, recorded, replayed)
  2  invalid command-line options
  3  the file cannot be read, or is not a transcript this build reads (the events of the
     lines before one that cannot be read are already printed)";

mod status {
    pub const IDENTICAL: u8 = 0;
    pub const DIFFERENT: u8 = 1;
    pub const UNREADABLE: u8 = 3;
}

/// Replays the transcript at `path`.
pub fn run(path: &Path) -> ExitCode {
    let file = match std::fs::File::open(path) {
        Ok(file) => std::io::BufReader::new(file),
        Err(e) => {
            eprintln!("wxsocket: error: {}: {e}", path.display());
            return ExitCode::from(status::UNREADABLE);
        }
    };
    // Read and printed as it goes: a transcript of hours of traffic is never held whole.
    let out = Out::with_mode(Mode::Json);
    let replayed = transcript::replay_from(file, std::time::Instant::now(), |at, event| {
        if let Some(object) = event_json(event) {
            out.json_at(object, u64::try_from(at.as_millis()).unwrap_or(u64::MAX));
        }
    });
    let replay = match replayed {
        Ok(replay) => replay,
        Err(e) => {
            eprintln!("wxsocket: error: {}: {e}", path.display());
            return ExitCode::from(status::UNREADABLE);
        }
    };
    if let Some(line) = replay.cut_line {
        eprintln!(
            "wxsocket: {}: line {line} is cut off mid-way (copied while the recorder wrote it); replayed up to the line before it",
            path.display()
        );
    }
    if matches!(
        replay.final_state,
        ReadyState::Connecting | ReadyState::Open | ReadyState::Closing
    ) {
        eprintln!(
            "wxsocket: {}: the transcript ends with the socket {} (cut short, or copied while the session ran)",
            path.display(),
            replay.final_state.name().to_lowercase()
        );
    }
    if replay.is_exact() {
        return ExitCode::from(status::IDENTICAL);
    }
    let show = |o: &Option<String>| o.as_deref().unwrap_or("nothing").to_owned();
    for m in &replay.mismatches {
        eprintln!(
            "wxsocket: {}: line {}: recorded {}, replayed {}",
            path.display(),
            m.line,
            show(&m.recorded),
            show(&m.replayed)
        );
    }
    if replay.mismatched > replay.mismatches.len() {
        eprintln!(
            "wxsocket: {}: {} later differences not shown (the first {} are)",
            path.display(),
            replay.mismatched - replay.mismatches.len(),
            replay.mismatches.len()
        );
    }
    eprintln!(
        "wxsocket: the replay differs from the recording in {} of {} inputs",
        replay.mismatched, replay.inputs
    );
    ExitCode::from(status::DIFFERENT)
}
