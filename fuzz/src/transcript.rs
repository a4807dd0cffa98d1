//! The `transcript` target: [`replay`] and [`replay_from`] on untrusted transcripts (a file
//! `wxsocket replay` or an embedder loads).
//!
//! An input is one of:
//! - a transcript as it is (any input whose first byte is not `0..=7`: the corpus seeds
//!   are transcripts and pieces of them, so libFuzzer's byte mutations start from real
//!   lines);
//! - a byte `0..=7` and then a list of `Edit`s applied to a valid transcript, so that
//!   runs get past the JSON reader into the replay: `0..=3` one of the committed
//!   transcripts (`crates/core/tests/transcripts/`), `4..=7` the transcript the `session`
//!   target's run of a fuzzer-chosen input records ([`crate::session_transcript`]: other
//!   configurations, acknowledgement, keepalive, unusual peers). Edits replace a scalar of
//!   a line (numbers at their limits, names the format knows, fields of the wrong type,
//!   whole configuration objects), delete, repeat and move lines, cut them short, insert
//!   raw ones; the replay may start near the end of the clock (`base` is any `Instant`).
//!
//! Checked on every input, besides never panicking or hanging:
//! - [`replay`] and [`replay_from`] over the same text agree: the same error, or the same
//!   outcome with the events `replay` keeps being the ones `replay_from` handed out;
//!   `replay_from` reads bytes that are not UTF-8 too (never panicking);
//! - an `Ok` outcome is consistent: it kept the first [`MISMATCHES_KEPT`] mismatches of
//!   the ones it counted, each a real difference, in line order and within the text; it
//!   fed at most one input per line; a cut line is the last, unterminated one;
//! - the replay is deterministic and its comparison exact: with each mismatched line's
//!   `out` replaced by what the replay produced, the transcript replays exactly, with the
//!   same events and final state (the session's outputs depend on its inputs alone);
//! - an unedited valid transcript replays exactly.
//!
//! [`replay`]: wxsocket_core::transcript::replay
//! [`replay_from`]: wxsocket_core::transcript::replay_from
//! [`MISMATCHES_KEPT`]: wxsocket_core::transcript::MISMATCHES_KEPT

use arbitrary::{Arbitrary, Unstructured};
use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use wxsocket_core::Event;
use wxsocket_core::transcript::{self, MISMATCHES_KEPT, Replay, TranscriptError};

/// The committed transcripts, the seeds of the structured runs.
const COMMITTED: [&str; 4] = [
    include_str!("../../crates/core/tests/transcripts/blocking-reconnect-after-1012.jsonl"),
    include_str!("../../crates/core/tests/transcripts/cli-tokio-invalid-close-after-echo.jsonl"),
    include_str!("../../crates/core/tests/transcripts/cli-tokio-reconnect-after-503.jsonl"),
    include_str!("../../crates/core/tests/transcripts/tokio-invalid-close-code-1005.jsonl"),
];

/// One change to a transcript's lines (line and token indices wrap around).
#[derive(Debug, Arbitrary)]
enum Edit {
    /// Replaces the `token`th scalar (string, number, `true`, `false`, `null`) of a line.
    Token {
        line: u16,
        token: u16,
        to: Value,
    },
    DeleteLine {
        line: u16,
    },
    /// Inserts a copy of line `line` before line `to`.
    CopyLine {
        line: u16,
        to: u16,
    },
    /// Swaps two lines (events out of order).
    SwapLines {
        a: u16,
        b: u16,
    },
    /// Keeps the first `at` bytes of a line.
    CutLine {
        line: u16,
        at: u16,
    },
    /// Inserts a line of fuzzer-chosen bytes before line `to`.
    InsertLine {
        to: u16,
        bytes: Vec<u8>,
    },
    /// Replaces the line end of a line by `\r\n`, or removes it (joining the next line).
    LineEnd {
        line: u16,
        crlf: bool,
    },
}

/// What a scalar becomes.
#[derive(Debug, Arbitrary)]
enum Value {
    /// One of [`NUMBERS`].
    Number(u8),
    Any(u64),
    /// The number it was, plus or minus a little.
    Nudge(i8),
    /// One of [`NAMES`], quoted.
    Name(u8),
    /// A fuzzer-chosen string, written as a JSON string.
    Text(String),
    /// One of [`SNIPPETS`], as it is.
    Snippet(u8),
    /// Fuzzer-chosen bytes, as they are.
    Raw(Vec<u8>),
}

/// Numbers at the limits of the fields they land in: counts, ids, codes, 16-, 32- and
/// 64-bit limits, 24 hours in nanoseconds (the longest timer), and one past `u64::MAX`.
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "255",
    "256",
    "999",
    "1000",
    "1005",
    "1006",
    "1015",
    "2999",
    "4999",
    "5000",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "86400000000000",
    "86400000000001",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551614",
    "18446744073709551615",
    "18446744073709551616",
    "000000000000000000000000000000001",
    "-1",
    "1.5",
    "1e3",
];

/// The names the format uses (inputs, transport events, error kinds, dial stages, proxy
/// routes, policies) and strings their fields read.
const NAMES: &[&str] = &[
    "connect",
    "send",
    "ping",
    "close",
    "shutdown",
    "handle",
    "timeout",
    "poll_action",
    "poll_event",
    "poll_completion",
    "track_completions",
    "opened",
    "connect_failed",
    "message",
    "pong",
    "peer_closed",
    "send_written",
    "error",
    "dialing",
    "closed",
    "receiving",
    "sending",
    "close_written",
    "http_status",
    "tls",
    "protocol",
    "negotiation",
    "invalid_utf8",
    "message_too_big",
    "io",
    "resolving",
    "connecting",
    "tunnel",
    "upgrade",
    "abort",
    "after_open",
    "ignore",
    "environment",
    "direct",
    "text",
    "binary",
    "out",
    "at",
    "in",
    "",
    "00",
    "0",
    "zz",
    "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "ws://127.0.0.1:0/",
    "wss://u:p@[::1]:65535/p?token=x&room=1;key=y#f",
    "http://h/",
    "ws://",
    "<redacted>",
    "authorization",
    "x y",
    "permessage-deflate; client_max_window_bits=8",
    "\\ud800",
    "\\udc00x",
    "\\ud800\\udbff",
    "\\u0000",
    "\\ufffe",
    "\u{10ffff}",
];

/// Whole values of the format's objects, with extreme settings, and wrong shapes.
const SNIPPETS: &[&str] = &[
    "{}",
    "[]",
    "[[]]",
    "null",
    "true",
    r#"{"interval":1,"timeout":1}"#,
    r#"{"interval":86400000000000,"timeout":86400000000000}"#,
    r#"{"base":1,"cap":86400000000000,"max_attempts":null,"min_uptime":86400000000000,"carry_queue":true,"retry_close_codes":[1000,1006,65535],"retry_http_4xx":true,"seed":18446744073709551615}"#,
    r#"{"base":1,"cap":1,"max_attempts":4294967295,"min_uptime":0,"carry_queue":false,"retry_close_codes":[],"retry_http_4xx":false,"seed":0}"#,
    r#"{"delay":0,"timeout":1,"seed":18446744073709551615}"#,
    r#"{"delay":86400000000000,"timeout":86400000000000,"seed":0}"#,
    r#"{"server_no_context_takeover":true,"client_no_context_takeover":true,"server_max_window_bits":255,"client_max_window_bits":0,"threshold":18446744073709551615,"level":255}"#,
    r#"{"server_no_context_takeover":false,"client_no_context_takeover":false,"server_max_window_bits":0,"client_max_window_bits":255}"#,
    r#"{"http":"http://u:p@proxy:8080","credentials":true}"#,
    r#"{"http":"socks5://proxy"}"#,
    r#"[["authorization","<redacted>"],["x-a",{"bytes":"00ff"}],["",""]]"#,
    r#"{"opened":{"protocol":"chat","headers":[],"extensions":"permessage-deflate","deflate":{"server_no_context_takeover":true,"client_no_context_takeover":true,"server_max_window_bits":8,"client_max_window_bits":8},"profile":{"resolved":18446744073709551615,"connected":0,"tls":18446744073709551615,"request_written":0,"response_received":1}}}"#,
    r#"{"connect_failed":{"kind":"http_status","status":65535,"message":"","retry_after":18446744073709551615}}"#,
    r#"{"error":{"kind":"message_too_big","message":"x"}}"#,
    r#"{"peer_closed":{"code":null,"reason":""}}"#,
    r#"{"message":{"binary":""}}"#,
    r#"{"message":{"text":"\ud83d\ude00"}}"#,
    r#"{"send_written":18446744073709551615}"#,
    r#"{"send_written":0}"#,
    r#"{"ping":"00"}"#,
    r#"{"dialing":"tls"}"#,
    r#"{"url":"ws://h/","headers":[],"protocols":["a","a"],"tcp_no_delay":true,"deflate":null,"timeout":18446744073709551615,"proxy":"direct"}"#,
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
];

/// The last `Instant` there is (`Instant`'s range is the platform's): a replay may be
/// based anywhere before it.
fn latest() -> Instant {
    static LATEST: OnceLock<Instant> = OnceLock::new();
    *LATEST.get_or_init(|| {
        let mut at = Instant::now();
        let mut step = Duration::MAX;
        while !step.is_zero() {
            match at.checked_add(step) {
                Some(later) => at = later,
                None => step /= 2,
            }
        }
        at
    })
}

/// Runs one input (see the [module](self)).
pub fn transcript(data: &[u8]) {
    match data.first() {
        Some(&mode @ 0..=7) => structured(mode, &data[1..]),
        _ => check(data, Instant::now(), false),
    }
}

fn structured(mode: u8, data: &[u8]) {
    let mut u = Unstructured::new(data);
    let text = if mode < 4 {
        COMMITTED[usize::from(mode)].to_owned()
    } else {
        let Ok(len) = u.arbitrary::<u16>() else {
            return;
        };
        let Ok(session) = u.bytes(usize::from(len).min(u.len())) else {
            return;
        };
        let (text, failure) = crate::session_transcript(session);
        if failure.is_some() || text.is_empty() {
            return; // the `session` target's to report
        }
        text
    };
    // How far before the end of the clock the replay starts, in seconds (none: now).
    let late: Option<u32> = u.arbitrary().unwrap_or(None);
    let base = match late {
        None => Instant::now(),
        Some(secs) => latest()
            .checked_sub(Duration::from_secs(secs.into()))
            .unwrap_or_else(Instant::now),
    };
    let mut lines: Vec<Vec<u8>> = text
        .split_inclusive('\n')
        .map(|l| l.as_bytes().to_vec())
        .collect();
    let edits = Vec::<Edit>::arbitrary_take_rest(u).unwrap_or_default();
    // Near the end of the clock a timer may have no instant to fire at: only a replay
    // based now must be exact.
    let unchanged = edits.is_empty() && late.is_none();
    for edit in edits {
        apply(&mut lines, edit);
    }
    check(&lines.concat(), base, unchanged);
}

/// Applies `edit`; an edit that does not apply (an index into no lines) does nothing.
fn apply(lines: &mut Vec<Vec<u8>>, edit: Edit) {
    let pick = |i: u16, n: usize| (n > 0).then(|| usize::from(i) % n);
    let n = lines.len();
    match edit {
        Edit::Token { line, token, to } => {
            let Some(l) = pick(line, n) else { return };
            let tokens = scalars(&lines[l]);
            let Some(t) = pick(token, tokens.len()) else {
                return;
            };
            let (start, end) = tokens[t];
            let new = replacement(&lines[l][start..end], to);
            lines[l].splice(start..end, new);
        }
        Edit::DeleteLine { line } => {
            if let Some(l) = pick(line, n) {
                lines.remove(l);
            }
        }
        Edit::CopyLine { line, to } => {
            if let Some(l) = pick(line, n) {
                let copy = lines[l].clone();
                lines.insert(usize::from(to) % (n + 1), copy);
            }
        }
        Edit::SwapLines { a, b } => {
            if let (Some(a), Some(b)) = (pick(a, n), pick(b, n)) {
                lines.swap(a, b);
            }
        }
        Edit::CutLine { line, at } => {
            if let Some(l) = pick(line, n) {
                let keep = usize::from(at) % (lines[l].len() + 1);
                lines[l].truncate(keep);
            }
        }
        Edit::InsertLine { to, mut bytes } => {
            bytes.push(b'\n');
            lines.insert(usize::from(to) % (n + 1), bytes);
        }
        Edit::LineEnd { line, crlf } => {
            if let Some(l) = pick(line, n) {
                let line = &mut lines[l];
                if line.last() == Some(&b'\n') {
                    line.pop();
                    if crlf {
                        line.extend_from_slice(b"\r\n");
                    }
                }
            }
        }
    }
}

/// The byte ranges of the scalars of a JSON line: strings (keys too), numbers, `true`,
/// `false`, `null`.
fn scalars(line: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let start = i;
        match line[i] {
            b'"' => {
                i += 1;
                while i < line.len() && line[i] != b'"' {
                    i += if line[i] == b'\\' { 2 } else { 1 };
                }
                i = (i + 1).min(line.len());
                out.push((start, i));
            }
            b'0'..=b'9' | b'-' => {
                i += 1;
                while i < line.len() && line[i].is_ascii_digit() {
                    i += 1;
                }
                out.push((start, i));
            }
            b't' | b'f' | b'n' => {
                while i < line.len() && line[i].is_ascii_lowercase() {
                    i += 1;
                }
                out.push((start, i));
            }
            _ => i += 1,
        }
    }
    out
}

fn replacement(old: &[u8], to: Value) -> Vec<u8> {
    let from = |list: &[&str], i: u8| list[usize::from(i) % list.len()].to_owned();
    match to {
        Value::Number(i) => from(NUMBERS, i).into_bytes(),
        Value::Any(n) => n.to_string().into_bytes(),
        Value::Nudge(d) => {
            let old: u64 = std::str::from_utf8(old)
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            old.saturating_add_signed(d.into()).to_string().into_bytes()
        }
        // Escapes in the list stand as they are (`\ud800`: a lone surrogate).
        Value::Name(i) => format!("\"{}\"", from(NAMES, i)).into_bytes(),
        Value::Text(s) => json_string(&s).into_bytes(),
        Value::Snippet(i) => from(SNIPPETS, i).into_bytes(),
        Value::Raw(bytes) => bytes,
    }
}

/// `s` as a JSON string, as the transcript writes one.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A replay's outcome with the events it handed out.
type Outcome = Result<(Replay, Vec<(Duration, Event)>), TranscriptError>;

fn run_from(bytes: &[u8], base: Instant) -> Outcome {
    let mut events = Vec::new();
    transcript::replay_from(bytes, base, |at, e| events.push((at, e.clone())))
        .map(|replay| (replay, events))
}

/// Whether two outcomes are the same (`Replay` is not `PartialEq`: its fields are compared).
fn same(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Err(a), Err(b)) => a == b,
        (Ok((a, ae)), Ok((b, be))) => {
            ae == be
                && a.inputs == b.inputs
                && a.mismatches == b.mismatches
                && a.mismatched == b.mismatched
                && a.final_state == b.final_state
                && a.cut_line == b.cut_line
                && format!("{:?}", a.config) == format!("{:?}", b.config)
        }
        _ => false,
    }
}

fn check(bytes: &[u8], base: Instant, valid: bool) {
    // Bytes that are not UTF-8 go to `replay_from` as they are: never a panic.
    let raw = run_from(bytes, base);
    let text = String::from_utf8_lossy(bytes);
    let from = if text.as_bytes() == bytes {
        raw
    } else {
        run_from(text.as_bytes(), base)
    };
    let kept = transcript::replay(&text, base).map(|mut r| {
        let events = std::mem::take(&mut r.events);
        (r, events)
    });
    assert!(
        same(&kept, &from),
        "replay and replay_from differ:\n{kept:#?}\n{from:#?}"
    );
    let Ok((replay, events)) = from else {
        assert!(!valid, "a valid transcript is refused: {from:?}");
        return;
    };
    assert!(
        !valid || replay.is_exact(),
        "a valid transcript replays with mismatches: {:#?}",
        replay.mismatches
    );
    consistent(&text, &replay, &events);
    if replay.mismatched == 0 || replay.mismatched > MISMATCHES_KEPT {
        return;
    }
    // Recorded as the replay produced them, the outputs compare equal.
    let fixed = fixed(&text, &replay);
    let again = run_from(fixed.as_bytes(), base);
    let Ok((again_replay, again_events)) = &again else {
        panic!("the transcript with the replayed outputs is refused: {again:?}\n{fixed}");
    };
    assert!(
        again_replay.is_exact(),
        "the transcript with the replayed outputs does not replay exactly: {:#?}\n{fixed}",
        again_replay.mismatches
    );
    assert_eq!(again_replay.inputs, replay.inputs);
    assert_eq!(again_replay.final_state, replay.final_state);
    assert_eq!(again_replay.cut_line, replay.cut_line);
    assert!(again_events == &events, "other events the second time");
}

/// The checks an `Ok` outcome passes on its own.
fn consistent(text: &str, replay: &Replay, events: &[(Duration, Event)]) {
    // Lines as `replay_from` numbers them: every `\n` ends one.
    let lines = text.split_inclusive('\n').count();
    assert!(replay.inputs < lines.max(1), "{} inputs", replay.inputs);
    assert!(events.len() <= replay.inputs);
    assert_eq!(
        replay.mismatches.len(),
        replay.mismatched.min(MISMATCHES_KEPT)
    );
    let mut last = 1;
    for m in &replay.mismatches {
        assert!(m.recorded != m.replayed, "{m:?}");
        assert!(m.line > last && m.line <= lines, "{m:?} after line {last}");
        last = m.line;
    }
    if let Some(cut) = replay.cut_line {
        assert!(
            !text.ends_with('\n'),
            "line {cut} cut, yet the text ends a line"
        );
        assert_eq!(cut, lines, "the cut line is not the last");
        assert!(last < cut);
    }
}

/// `text` with each mismatched line's output replaced by the replay's: an `out` member
/// put first, so that it is the one read.
fn fixed(text: &str, replay: &Replay) -> String {
    let mut out = String::with_capacity(text.len());
    let mut mismatches = replay.mismatches.iter().peekable();
    for (i, line) in text.split_inclusive('\n').enumerate() {
        match mismatches.next_if(|m| m.line == i + 1) {
            Some(m) => {
                let brace = line.find('{').expect("a line read as an object");
                let value = m.replayed.as_deref().map_or("null".into(), json_string);
                out.push_str(&line[..=brace]);
                let _ = write!(out, "\"out\":{value},");
                out.push_str(&line[brace + 1..]);
            }
            None => out.push_str(line),
        }
    }
    out
}
