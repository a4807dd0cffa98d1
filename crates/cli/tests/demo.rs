//! `wxsocket` with no arguments (and `demo --blocking`): exit status and the key lines of
//! the timeline, in order.

mod common;

fn position(lines: &[String], needle: &str) -> usize {
    lines
        .iter()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in the demo:\n{}", lines.join("\n")))
}

fn check_timeline(lines: &[String], adapter: &str) {
    let order = [
        adapter,
        "A#1 CONNECTING  -> connectSocket(",
        "A#1 CONNECTING  <- connecting to ws://127.0.0.1:",
        "sendSocketMessage(\"one\")  => ok, queued as send 1",
        "sendSocketMessage(\"two\")  => ok, queued as send 2",
        "sendSocketMessage(\"three\")  => ok, queued as send 3",
        "A#1 OPEN        <- onSocketOpen (protocol: none)",
        "<- send 1 written",
        "<- send 3 written",
        "<- onSocketMessage \"one\"",
        "<- onSocketMessage \"two\"",
        "<- onSocketMessage \"three\"",
        "<- onSocketMessage binary 4 B deadbeef",
        "policy Abort",
        "B#1 CLOSED      <- send 1 failed: cancelled",
        "B#1 CLOSED      <- onSocketClose code 1006",
        "policy AfterOpen",
        "C#1 CONNECTING  -> closeSocket()  => closeSocket:ok",
        "C#1 OPEN        <- onSocketOpen",
        "<- onSocketClose code 1000 reason \"after open\" clean=true",
        "policy Ignore",
        "closeSocket:fail WebSocket is not open yet",
        "D#1 OPEN        <- onSocketOpen",
        "<- onSocketClose code 1000 reason \"closed in onSocketOpen\" clean=true",
        "A#1 CLOSED      <- onSocketClose code 1000 reason \"replaced by a new connection\"",
        "A#2 CONNECTING  <- connecting to",
        "A#2 OPEN        <- onSocketMessage \"hello from the new socket\"",
        "closeSocket({code: 4000, reason: \"demo finished\"})  => closeSocket:ok",
        "<- onSocketClose code 4000 reason \"demo finished\" clean=true",
        "sendSocketMessage:fail WebSocket is not connected",
        "5. perMessageDeflate",
        "E#1 CONNECTING  -> connectSocket({url: \"ws://127.0.0.1:",
        "perMessageDeflate: true})  => connectSocket:ok",
        "E#1 OPEN        <- onSocketOpen (protocol: none, compression: permessage-deflate; server_max_window_bits=15; client_max_window_bits=15)",
        "E#1 OPEN        -> sendSocketMessage(text 4096 B [{\"id\":",
        "E#1 OPEN        <- onSocketMessage text 4096 B [{\"id\":",
        "// on the wire: ",
        "where the uncompressed frames take 4104 B and 4100 B",
        "// the same message again: ",
        "E#1 OPEN        <- onSocketMessage \"hi\"",
        "\"hi\" is shorter than the 32-byte threshold: sent as is (8 B and 4 B)",
        "E#1 CLOSED      <- onSocketClose code 1000 reason \"\" clean=true",
        "Done in",
    ];
    let mut last = 0;
    for needle in order {
        let at = position(&lines[last..], needle) + last;
        last = at;
    }
}

#[test]
fn no_arguments_runs_the_tokio_demo() {
    let (status, lines, stderr) = common::run(&[], "");
    assert!(
        status.success(),
        "demo failed: {stderr}\n{}",
        lines.join("\n")
    );
    check_timeline(&lines, "on wxsocket-tokio");
    // The demo reports its own clock. How long it took is not checked: a debug build on a
    // loaded machine may take seconds, and `run` already bounds every wait.
    let done = lines.iter().find(|l| l.starts_with("Done in ")).unwrap();
    let ms: Option<f64> = done["Done in ".len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok());
    assert!(ms.is_some(), "{done}");
}

#[test]
fn demo_blocking_runs_on_the_blocking_adapter() {
    let (status, lines, stderr) = common::run(&["demo", "--blocking"], "");
    assert!(
        status.success(),
        "demo failed: {stderr}\n{}",
        lines.join("\n")
    );
    check_timeline(&lines, "on wxsocket-blocking");
}
