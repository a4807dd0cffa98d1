//! `connect --record FILE` and `replay FILE` through the binary, over loopback: a run
//! against a misbehaving server (the test peer sends a close frame with the reserved code
//! 1005) and a run with a reconnection are recorded, then replayed in a fresh process,
//! which prints the same `--json` events and exits 0; a changed transcript exits 1, an
//! unreadable one 3.

mod common;

use common::{Proc, event, run, temp_file, with_adapter};
use serde_json::Value;
use wxsocket_core::Message;
use wxsocket_tests::peer::{Mode, Peer, Step, opcode};

/// The `--json` lines of an output that are events, without their `"t"` (the replay's
/// times are the recorded ones, the run's were measured by the command).
fn events_without_time(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| !event(v).is_empty())
        .map(|mut v| {
            v.as_object_mut().unwrap().remove("t");
            v
        })
        .collect()
}

/// Runs `connect --json --record FILE` driven by `drive`, then `replay FILE` in a fresh
/// process: exit 0 and the same events.
fn record_then_replay(
    blocking: bool,
    url: &str,
    extra: &[&str],
    drive: impl FnOnce(&mut Proc),
) -> (String, Vec<Value>) {
    let file = temp_file(&format!("transcript-{blocking}-{}.jsonl", extra.len()), "");
    let file = file.to_str().unwrap().to_owned();
    // A token under a usual name and one under a name given with --record-redact-query.
    let url = format!("{url}?room=5&token=tq-1&session=sq-2");
    let mut args = vec![
        "connect",
        &url,
        "--json",
        "--record",
        &file,
        "-H",
        "Authorization: Bearer t0ken",
        "-H",
        "X-Api-Key: k3y-9",
        "--record-redact",
        "x-api-key",
        "--record-redact-query",
        "session",
    ];
    args.extend_from_slice(extra);
    let mut proc = Proc::spawn(&with_adapter(args, blocking));
    drive(&mut proc);
    let (_, lines, stderr) = proc.finish();
    let recorded = events_without_time(&lines);
    assert!(!recorded.is_empty(), "no events: {lines:?} {stderr}");

    // A fresh process replays the file.
    let (status, replay_lines, replay_stderr) = run(&["replay", &file], "");
    assert_eq!(status.code(), Some(0), "{replay_stderr}\n{replay_lines:#?}");
    let replayed = events_without_time(&replay_lines);
    // The replay dials the URL as written: the redacted values in place of the tokens.
    let as_written = |events: &[Value]| -> Vec<Value> {
        let text = serde_json::to_string(events).unwrap();
        let text = text.replace("tq-1", "%3Credacted%3E");
        serde_json::from_str(&text.replace("sq-2", "%3Credacted%3E")).unwrap()
    };
    assert_eq!(
        replayed,
        as_written(&recorded),
        "the replay's events are the run's"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        !text.contains("tq-1") && !text.contains("sq-2"),
        "a query token was recorded: {text}"
    );
    assert!(text.contains("room=5"), "{text}");
    assert!(
        !text.contains("t0ken"),
        "the Authorization value was recorded"
    );
    assert!(
        !text.contains("k3y-9"),
        "the --record-redact header was recorded"
    );
    assert!(text.contains("\"x-api-key\",\"<redacted>\""), "{text}");
    if let Ok(dir) = std::env::var("WXSOCKET_TRANSCRIPT_DIR") {
        // How crates/core/tests/transcripts/cli-*.jsonl were made.
        let name = std::path::Path::new(&file)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        std::fs::write(
            std::path::Path::new(&dir).join(format!("cli-{name}")),
            &text,
        )
        .unwrap();
    }
    (file, recorded)
}

fn an_invalid_close_code_replays_in_a_fresh_process(blocking: bool) {
    let peer = Peer::start(Mode::Script(vec![
        Step::AwaitMessages(1),
        Step::Message(Message::text("one more")),
        Step::Frame {
            fin: true,
            rsv: 0,
            opcode: opcode::CLOSE,
            payload: vec![0x03, 0xED],
        },
    ]));
    let (file, recorded) = record_then_replay(blocking, &peer.url(), &["--linger", "5000"], |p| {
        p.write("hello")
    });
    let close = recorded.last().unwrap();
    assert_eq!(close["event"], "close", "{recorded:#?}");
    assert_eq!(close["code"], 1002, "{recorded:#?}");

    // A transcript whose inputs changed replays to other outputs: exit 1, the line named.
    let text = std::fs::read_to_string(&file).unwrap();
    let changed = text.replace("\"code\":1005", "\"code\":1000");
    assert_ne!(changed, text);
    let changed_file = temp_file(&format!("changed-{blocking}.jsonl"), &changed);
    let (status, _, stderr) = run(&["replay", changed_file.to_str().unwrap()], "");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("line "), "{stderr}");

    // Cut short where the socket was open: exact as far as it goes, and said so.
    let open_line = text
        .lines()
        .position(|l| l.contains(r#""out":"Open"#))
        .expect("the Open event");
    let cut: String = text
        .lines()
        .take(open_line + 1)
        .map(|l| format!("{l}\n"))
        .collect();
    let cut_file = temp_file(&format!("cut-{blocking}.jsonl"), &cut);
    let (status, _, stderr) = run(&["replay", cut_file.to_str().unwrap()], "");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("the transcript ends with the socket open"),
        "{stderr}"
    );
    let (_, _, whole) = run(&["replay", &file], "");
    assert!(!whole.contains("the transcript ends"), "{whole}");

    let garbage = temp_file(&format!("garbage-{blocking}.jsonl"), "not json\n");
    let (status, _, stderr) = run(&["replay", garbage.to_str().unwrap()], "");
    assert_eq!(status.code(), Some(3), "{stderr}");
}

#[test]
fn an_invalid_close_code_replays_in_a_fresh_process_tokio() {
    an_invalid_close_code_replays_in_a_fresh_process(false);
}

#[test]
fn an_invalid_close_code_replays_in_a_fresh_process_blocking() {
    an_invalid_close_code_replays_in_a_fresh_process(true);
}

/// The server refuses the first handshake (503, retried); the client reconnects after a
/// seeded backoff and the run goes on: the backoff replays exactly from the seed.
#[test]
fn a_reconnection_replays_in_a_fresh_process() {
    let peer = Peer::start(Mode::HttpStatus(503));
    let url = peer.url();
    let switch = std::thread::spawn({
        let deadline = std::time::Instant::now() + common::WAIT;
        move || {
            while peer.snapshot().connections.is_empty() {
                assert!(std::time::Instant::now() < deadline, "no connection");
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            peer.set_mode(Mode::Echo);
            peer
        }
    });
    let (_, recorded) = record_then_replay(
        false,
        &url,
        &[
            "--reconnect-base",
            "300",
            "--reconnect-seed",
            "11",
            "--reconnect-max",
            "5",
        ],
        |p| {
            p.expect_json("the reconnection's open", |v| event(v) == "open");
            p.write("hi");
            p.expect_json("the echo", |v| event(v) == "message");
        },
    );
    let _peer = switch.join().unwrap();
    assert!(
        recorded.iter().any(|v| event(v) == "reconnecting"),
        "{recorded:#?}"
    );
    assert!(
        recorded.iter().any(|v| event(v) == "message"),
        "{recorded:#?}"
    );
}

/// A server that redirects names where to in the dial's error, without the credentials the
/// redirect's URL carries: the error reaches the printed events, the diagnostics and the
/// transcript (a prober found a `Location`'s token and password in all three), which still
/// replays.
fn a_redirect_s_credentials_stay_out(blocking: bool) {
    let peer = Peer::builder(Mode::Echo)
        .status_line("HTTP/1.1 302 Found")
        .response_header("Location: wss://ann:pa55@elsewhere/ws?room=1&token=redir-t0k")
        .start();
    let file = temp_file(&format!("redirect-{blocking}.jsonl"), "");
    let file = file.to_str().unwrap().to_owned();
    let url = peer.url();
    let args = with_adapter(vec!["connect", &url, "--json", "--record", &file], blocking);
    let (status, lines, stderr) = run(&args, "");
    assert_eq!(status.code(), Some(3), "{lines:#?}\n{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    let printed = format!("{}\n{stderr}", lines.join("\n"));
    for shown in [&text, &printed] {
        assert!(
            shown.contains("a redirect to wss://***@elsewhere/ws?room=1&token=***"),
            "{shown}"
        );
        assert!(
            !shown.contains("redir-t0k") && !shown.contains("pa55"),
            "{shown}"
        );
    }
    let (status, _, replay_stderr) = run(&["replay", &file], "");
    assert_eq!(status.code(), Some(0), "{replay_stderr}");
}

#[test]
fn a_redirect_s_credentials_stay_out_tokio() {
    a_redirect_s_credentials_stay_out(false);
}

#[test]
fn a_redirect_s_credentials_stay_out_blocking() {
    a_redirect_s_credentials_stay_out(true);
}

/// A transcript copied while the recorder was writing its last line replays up to that
/// line, exit 0, and says that line was cut off (it was refused whole, exit 3).
#[test]
fn a_copy_cut_mid_line_replays_up_to_that_line() {
    let peer = Peer::start(Mode::HttpStatus(403));
    let file = temp_file("cut-mid-line.jsonl", "");
    let file = file.to_str().unwrap().to_owned();
    let (status, _, stderr) = run(&["connect", &peer.url(), "--json", "--record", &file], "");
    assert_eq!(status.code(), Some(3), "{stderr}");
    let text = std::fs::read_to_string(&file).unwrap();
    let last = text[..text.len() - 1].rfind('\n').unwrap() + 1;
    std::fs::write(&file, &text[..last + 7]).unwrap();
    let (status, _, stderr) = run(&["replay", &file], "");
    assert_eq!(status.code(), Some(0), "{stderr}");
    let lines = text.lines().count();
    assert!(
        stderr.contains(&format!("line {lines} is cut off mid-way")),
        "{stderr}"
    );
}
