//! `wxsocket connect --json` against an in-process server: the event contract of the
//! README, for both adapters.

mod common;

use common::{Mode, Proc, TestServer, event, run, with_adapter};
use serde_json::Value;
use std::time::{Duration, Instant};

/// Every line is one JSON object with a string "event" and a whole-number "t" that never
/// goes backwards.
fn check_lines(lines: &[String]) -> Vec<Value> {
    let mut last_t = 0;
    lines
        .iter()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert!(v.is_object(), "not an object: {line}");
            assert!(v["event"].is_string(), "no event: {line}");
            let t = v["t"].as_u64().unwrap_or_else(|| panic!("no t: {line}"));
            assert!(t >= last_t, "t went backwards: {line}");
            last_t = t;
            v
        })
        .collect()
}

/// Ends the input, checks the process exited 0 and every line with [`check_lines`];
/// returns the lines and their events.
fn finish_ok(proc: Proc) -> (Vec<String>, Vec<Value>) {
    finish_with(proc, 0)
}

/// As [`finish_ok`], for a run that must exit with `code` (the statuses of `connect
/// --help`).
fn finish_with(proc: Proc, code: i32) -> (Vec<String>, Vec<Value>) {
    let (status, lines, stderr) = proc.finish();
    assert_eq!(
        status.code(),
        Some(code),
        "exit {status}: {stderr}\n{lines:?}"
    );
    let events = check_lines(&lines);
    (lines, events)
}

/// The run's events were exactly `kinds`, ending with an `error` whose text contains
/// `error` and then a close 1006, not clean (a connection the client gave up on).
fn assert_ended_by_error(lines: &[String], events: &[Value], kinds: &[&str], error: &str) {
    let seen: Vec<&str> = events.iter().map(event).collect();
    assert_eq!(seen, kinds, "{lines:?}");
    let [.., failure, close] = events else {
        panic!("no error and close: {lines:?}");
    };
    let text = failure["error"].as_str().unwrap();
    assert!(text.contains(error), "{text}");
    assert_eq!(close["code"], 1006);
    assert_eq!(close["clean"], false);
}

fn json_contract(blocking: bool) {
    // The server holds the handshake until released, so the first sends are certainly
    // made while the socket is connecting.
    let server = TestServer::start(Mode::Echo, true);
    let args = vec![
        "connect",
        server.url(),
        "--json",
        "-p",
        "chat",
        "-H",
        "X-Test: yes",
        "--data",
        "room=lobby 1",
        "--nodelay",
        "--timeout",
        "10000",
    ];
    let args = with_adapter(args, blocking);
    let mut proc = Proc::spawn(&args);
    let connecting = proc.expect_json("connecting", |v| event(v) == "connecting");
    assert_eq!(connecting["conn"], 1);
    let url = connecting["url"].as_str().unwrap();
    assert!(url.ends_with("/?room=lobby+1"), "{url}");

    proc.write("one");
    proc.write("//two");
    proc.write("/binary 00FF10");
    proc.write("/close 1001");
    // Commands run in order: once /close 1001 is refused, the three sends were accepted.
    let refused = proc.expect_json("call_failed", |v| event(v) == "call_failed");
    assert_eq!(refused["api"], "closeSocket");
    assert_eq!(
        refused["errMsg"],
        "closeSocket:fail code: 1001 is not allowed (use 1000 or 3000-4999)"
    );
    server.release();

    let open = proc.expect_json("open", |v| event(v) == "open");
    assert_eq!(open["conn"], 1);
    assert_eq!(open["protocol"], "chat");
    assert_eq!(open["headers"]["upgrade"], "websocket");
    assert_eq!(open["headers"]["sec-websocket-protocol"], "chat");
    // No compression offered: "deflate" is there, null.
    assert!(open.get("deflate").is_some_and(Value::is_null), "{open}");
    common::assert_plausible_profile(&open, false);
    proc.expect_json("third echo", |v| {
        event(v) == "message" && v["type"] == "binary"
    });

    proc.write("/close 4000 bye now");
    proc.write("too late");
    // The refused send and the close event, in either order (the close answer may be
    // back before the next line is read).
    let mut refused = None;
    let mut close = None;
    while refused.is_none() || close.is_none() {
        let v = proc.expect_json("call_failed or close", |v| {
            matches!(event(v), "call_failed" | "close")
        });
        if event(&v) == "close" {
            close = Some(v);
        } else {
            refused = Some(v);
        }
    }
    let (refused, close) = (refused.unwrap(), close.unwrap());
    assert_eq!(refused["api"], "sendSocketMessage");
    let msg = refused["errMsg"].as_str().unwrap();
    assert!(
        msg == "sendSocketMessage:fail WebSocket is closing"
            || msg == "sendSocketMessage:fail WebSocket is not connected",
        "{msg}"
    );
    assert_eq!(close["conn"], 1);
    assert_eq!(close["code"], 4000);
    assert_eq!(close["reason"], "bye now");
    assert_eq!(close["clean"], true);

    // Exit 5 (was 0 before exit statuses): closed cleanly as asked, but "too late" was refused.
    let (_, events) = finish_with(proc, 5);
    let kinds: Vec<&str> = events.iter().map(event).collect();
    // The queued sends are flushed in order on open: open, then sent 1, 2, 3, and the
    // echoes in order.
    let sent: Vec<u64> = events
        .iter()
        .filter(|v| event(v) == "sent")
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(sent, [1, 2, 3], "{kinds:?}");
    let first_sent = kinds.iter().position(|k| *k == "sent").unwrap();
    assert!(kinds.iter().position(|k| *k == "open").unwrap() < first_sent);
    let messages: Vec<(String, String)> = events
        .iter()
        .filter(|v| event(v) == "message")
        .map(|v| {
            assert_eq!(v["conn"], 1);
            (
                v["type"].as_str().unwrap().to_owned(),
                v["data"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        messages,
        [
            ("text".into(), "one".into()),
            ("text".into(), "/two".into()),
            ("binary".into(), "00ff10".into())
        ]
    );
    assert_eq!(kinds.iter().filter(|k| **k == "close").count(), 1);

    // What the server saw: the query, the header, the protocol offer and the close frame.
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, "/?room=lobby+1");
    let header = |name: &str| {
        seen[0]
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(header("x-test").as_deref(), Some("yes"));
    assert_eq!(header("sec-websocket-protocol").as_deref(), Some("chat"));
    assert_eq!(seen[0].close, Some((4000, "bye now".to_owned())));
}

#[test]
fn json_contract_tokio() {
    json_contract(false);
}

#[test]
fn json_contract_blocking() {
    json_contract(true);
}

/// A dial that fails ends the command on its own, with exit 3, whatever standard input
/// still holds (`tail -f log | wxsocket connect URL` used to run until its input ended).
fn unreachable_server(blocking: bool) {
    let url = format!("ws://127.0.0.1:{}/", common::closed_port());
    let mut proc = Proc::spawn(&with_adapter(
        vec!["connect", url.as_str(), "--json"],
        blocking,
    ));
    proc.expect_json("close", |v| event(v) == "close");
    let (status, lines, stderr) = proc.exit();
    assert_eq!(status.code(), Some(3), "exit {status}: {stderr}\n{lines:?}");
    let events = check_lines(&lines);
    let kinds: Vec<&str> = events.iter().map(event).collect();
    assert_eq!(kinds, ["connecting", "error", "close"]);
    assert!(
        events[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("connect failed")
    );
    assert_eq!(events[2]["code"], 1006);
    assert_eq!(events[2]["clean"], false);
}

/// After a `/close` the command waits for a `/connect`: what needs a connection meanwhile
/// fails as WeChat's calls do, and the end of input ends it (exit 5: a line was not sent).
fn calls_after_a_close_fail_as_not_connected(blocking: bool) {
    let server = TestServer::start(Mode::Echo, false);
    let mut proc = Proc::spawn(&with_adapter(
        vec!["connect", server.url(), "--json"],
        blocking,
    ));
    proc.expect_json("open", |v| event(v) == "open");
    proc.write("/close");
    proc.expect_json("close", |v| event(v) == "close");
    proc.write("hello");
    proc.write("/close");
    // Exit 5: closed cleanly, but a line could not be sent.
    let (_, events) = finish_with(proc, 5);
    let kinds: Vec<&str> = events.iter().map(event).collect();
    assert_eq!(
        kinds,
        ["connecting", "open", "close", "call_failed", "call_failed"]
    );
    assert_eq!(events[3]["api"], "sendSocketMessage");
    assert_eq!(
        events[3]["errMsg"],
        "sendSocketMessage:fail WebSocket is not connected"
    );
    assert_eq!(events[4]["api"], "closeSocket");
    assert_eq!(
        events[4]["errMsg"],
        "closeSocket:fail WebSocket is not connected"
    );
}

/// A `/connect` that runs while the first dial is still under way replaces it and goes on:
/// the replaced connection's end does not end the command (deterministic: the first
/// server holds its handshake, so the `/connect` always runs first).
fn a_connect_during_a_dial_goes_on(blocking: bool) {
    let held = TestServer::start(Mode::Echo, true);
    let server = TestServer::start(Mode::Echo, false);
    let connect = format!("/connect {}", server.url());
    let (status, lines, stderr) = run(
        &with_adapter(vec!["connect", held.url(), "--json"], blocking),
        &format!("{connect}\nhello\n"),
    );
    assert_eq!(status.code(), Some(0), "{stderr}\n{lines:?}");
    let events = check_lines(&lines);
    assert!(
        events
            .iter()
            .any(|v| event(v) == "message" && v["data"] == "hello"),
        "{lines:?}"
    );
}

#[test]
fn a_connect_during_a_dial_goes_on_tokio() {
    a_connect_during_a_dial_goes_on(false);
}

#[test]
fn a_connect_during_a_dial_goes_on_blocking() {
    a_connect_during_a_dial_goes_on(true);
}

/// After a `/close`, a `/connect` refused at once (an invalid URL) leaves the `/close`
/// standing: the closed connection's end does not end the command, and a later `/connect`
/// opens (a review found the refused one taken for a new connection, and the command gone).
/// The pause only gives a wrongful exit the time to happen.
fn a_refused_connect_after_a_close_leaves_the_command_waiting(blocking: bool) {
    let server = TestServer::start(Mode::Echo, false);
    let url = server.url().to_owned();
    let mut proc = Proc::spawn(&with_adapter(vec!["connect", &url, "--json"], blocking));
    proc.expect_json("open", |v| event(v) == "open");
    proc.write("/close");
    proc.write("/connect nota://typo");
    // The close handshake may end before or after the refused connect is read: both come.
    let mut seen = (false, false);
    while seen != (true, true) {
        let v = proc.expect_json("call_failed and close", |v| {
            matches!(event(v), "call_failed" | "close")
        });
        match event(&v) {
            "call_failed" => seen.0 = true,
            _ => seen.1 = true,
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    proc.write(&format!("/connect {url}"));
    proc.expect_json("open of #2", |v| event(v) == "open" && v["conn"] == 2);
    let (status, _, stderr) = proc.finish();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn a_refused_connect_after_a_close_leaves_the_command_waiting_tokio() {
    a_refused_connect_after_a_close_leaves_the_command_waiting(false);
}

#[test]
fn a_refused_connect_after_a_close_leaves_the_command_waiting_blocking() {
    a_refused_connect_after_a_close_leaves_the_command_waiting(true);
}

/// Once the connection's end is seen, no more input runs, however much is waiting (a review
/// saw up to 711 lines of `yes` run and refused after the server's close).
fn nothing_runs_after_the_connection_ended(blocking: bool) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let server = TestServer::start(Mode::EchoThenClose(4000), false);
    let mut child = Command::new(common::bin())
        .args(with_adapter(
            vec!["connect", server.url(), "--json"],
            blocking,
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wxsocket");
    let mut stdin = child.stdin.take().unwrap();
    // As `yes` would: until the command stops reading (it exits, the pipe breaks), or a
    // bound.
    let writer = std::thread::spawn(move || {
        for _ in 0..200_000 {
            if stdin.write_all(b"line\n").is_err() {
                return;
            }
        }
    });
    let output = child.wait_with_output().expect("wait for wxsocket");
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(4), "{stderr}");
    let lines: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let events = check_lines(&lines);
    let close = events
        .iter()
        .position(|v| event(v) == "close")
        .expect("the server's close");
    let after: Vec<&str> = events[close + 1..].iter().map(event).collect();
    assert!(
        !after.contains(&"call_failed"),
        "input ran after the close: {after:?}"
    );
}

#[test]
fn nothing_runs_after_the_connection_ended_tokio() {
    nothing_runs_after_the_connection_ended(false);
}

#[test]
fn nothing_runs_after_the_connection_ended_blocking() {
    nothing_runs_after_the_connection_ended(true);
}

#[test]
fn calls_after_a_close_fail_as_not_connected_tokio() {
    calls_after_a_close_fail_as_not_connected(false);
}

#[test]
fn calls_after_a_close_fail_as_not_connected_blocking() {
    calls_after_a_close_fail_as_not_connected(true);
}

#[test]
fn unreachable_server_tokio() {
    unreachable_server(false);
}

#[test]
fn unreachable_server_blocking() {
    unreachable_server(true);
}

#[test]
fn close_before_open_abort_fails_queued_sends() {
    let server = TestServer::start(Mode::Echo, true);
    let mut proc = Proc::spawn(&["connect", server.url(), "--json"]);
    // The handshake is never released: the socket is certainly still connecting.
    proc.write("queued");
    proc.write("/close");
    proc.expect_json("close", |v| event(v) == "close");
    // Exit 3 (was 0 before exit statuses): the socket never opened.
    let (_, events) = finish_with(proc, 3);
    let kinds: Vec<&str> = events.iter().map(event).collect();
    assert_eq!(kinds, ["connecting", "send_failed", "close"]);
    assert_eq!(events[1]["id"], 1);
    assert!(
        events[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("cancelled")
    );
    assert_eq!(events[2]["code"], 1006);
    assert_eq!(events[2]["clean"], false);
}

#[test]
fn close_before_open_after_open_flushes_then_closes() {
    let server = TestServer::start(Mode::Echo, true);
    let mut proc = Proc::spawn(&[
        "connect",
        server.url(),
        "--json",
        "--close-before-open",
        "after-open",
    ]);
    proc.write("queued");
    proc.write("/close 4001 later");
    // An invalid close is refused at once whatever the state: once it is printed, the
    // commands before it have run, so the handshake can be let through.
    proc.write("/close 1001");
    proc.expect_json("call_failed", |v| event(v) == "call_failed");
    server.release();
    proc.expect_json("close", |v| event(v) == "close");
    let (_, events) = finish_ok(proc);
    let kinds: Vec<&str> = events.iter().map(event).collect();
    // The echo of "queued" was on its way when the close frame went out (the server
    // answered the message before the close): it is printed too (receive_while_closing).
    assert_eq!(
        kinds,
        [
            "connecting",
            "call_failed",
            "open",
            "sent",
            "message",
            "close"
        ]
    );
    assert_eq!(events[3]["id"], 1);
    assert_eq!(events[4]["data"], "queued");
    assert_eq!(events[5]["code"], 4001);
    assert_eq!(events[5]["reason"], "later");
    assert_eq!(events[5]["clean"], true);
}

#[test]
fn end_of_input_while_connecting_waits_for_open_then_closes() {
    let server = TestServer::start(Mode::Echo, true);
    let mut proc = Proc::spawn(&["connect", server.url(), "--json", "--blocking"]);
    proc.write("piped");
    proc.close_stdin();
    proc.expect_json("connecting", |v| event(v) == "connecting");
    server.release();
    let (lines, events) = finish_ok(proc);
    // The echo may or may not arrive before the close frame goes out.
    let kinds: Vec<&str> = events
        .iter()
        .map(event)
        .filter(|k| *k != "message")
        .collect();
    assert_eq!(kinds, ["connecting", "open", "sent", "close"], "{lines:?}");
    let close = events.last().unwrap();
    assert_eq!(close["code"], 1000);
    assert_eq!(close["clean"], true);
}

#[test]
fn deflate_offered_to_a_server_without_it_runs_uncompressed() {
    let server = TestServer::start(Mode::Echo, false);
    let mut proc = Proc::spawn(&["connect", server.url(), "--json", "--deflate"]);
    let open = proc.expect_json("open", |v| event(v) == "open");
    assert!(open["headers"].get("sec-websocket-extensions").is_none());
    assert!(open.get("deflate").is_some_and(Value::is_null), "{open}");
    proc.write("hello");
    let echo = proc.expect_json("echo", |v| event(v) == "message");
    assert_eq!(echo["data"], "hello");
    proc.write("/quit");
    let close = proc.expect_json("close", |v| event(v) == "close");
    assert_eq!(close["clean"], true);
}

/// `/connect URL` replaces the current socket: connection 1's close event (1000,
/// "replaced", not clean) comes before connection 2's `connecting`, and the new socket
/// works. The replaced socket still finishes its close handshake in the background: the
/// process does not exit before the server has answered its close frame (the server
/// answers that one late on purpose).
fn connect_command_replaces_the_socket(blocking: bool) {
    let server = TestServer::start(Mode::LateCloseAnswerFirst(300), false);
    let mut proc = Proc::spawn(&with_adapter(
        vec!["connect", server.url(), "--json"],
        blocking,
    ));
    proc.expect_json("first open", |v| event(v) == "open" && v["conn"] == 1);
    let second = format!("{}again", server.url());
    proc.write(&format!("/connect {second}"));
    proc.expect_json("second open", |v| event(v) == "open" && v["conn"] == 2);
    proc.write("on two");
    proc.expect_json("echo", |v| {
        event(v) == "message" && v["conn"] == 2 && v["data"] == "on two"
    });
    let (lines, events) = finish_ok(proc);
    let exited = Instant::now();
    let kinds: Vec<&str> = events.iter().map(event).collect();
    assert_eq!(
        kinds[..5],
        ["connecting", "open", "close", "connecting", "open"],
        "{lines:?}"
    );
    assert_eq!(events[2]["conn"], 1);
    assert_eq!(events[2]["code"], 1000);
    assert_eq!(events[2]["reason"], "replaced by a new connection");
    assert_eq!(events[2]["clean"], false);
    assert_eq!(events[3]["conn"], 2);
    assert_eq!(events[3]["url"], second.as_str());
    let last = events.last().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["conn"].as_u64()),
        (Some("close"), Some(2))
    );
    assert_eq!(last["code"], 1000);
    assert_eq!(last["clean"], true);
    // The server saw both handshakes, and the replaced socket's close frame, which it
    // answered before the process exited.
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].target, "/again");
    assert_eq!(
        seen[0].close,
        Some((1000, "replaced by a new connection".to_owned()))
    );
    assert!(
        seen[0].close_answered.is_some_and(|at| at < exited),
        "the process exited before the replaced socket's close handshake ended"
    );
}

#[test]
fn connect_command_replaces_the_socket_tokio() {
    connect_command_replaces_the_socket(false);
}

#[test]
fn connect_command_replaces_the_socket_blocking() {
    connect_command_replaces_the_socket(true);
}

/// `--allow-host` lets the allowed host connect; `/connect` to a host outside the list, or
/// with a bad scheme, is a `call_failed` of `connectSocket` that leaves the open socket
/// alone.
fn allow_host_and_refused_connect(blocking: bool) {
    let server = TestServer::start(Mode::Echo, false);
    let port = server.url().trim_start_matches("ws://127.0.0.1:");
    let elsewhere = format!("ws://localhost:{port}");
    let mut proc = Proc::spawn(&with_adapter(
        vec![
            "connect",
            server.url(),
            "--json",
            "--allow-host",
            "127.0.0.1",
        ],
        blocking,
    ));
    proc.expect_json("open", |v| event(v) == "open" && v["conn"] == 1);
    proc.write(&format!("/connect {elsewhere}"));
    let refused = proc.expect_json("call_failed", |v| event(v) == "call_failed");
    assert_eq!(refused["api"], "connectSocket");
    let msg = refused["errMsg"].as_str().unwrap();
    assert!(
        msg.starts_with("connectSocket:fail ") && msg.contains("localhost"),
        "{msg}"
    );
    proc.write("/connect ftp://127.0.0.1/");
    let refused = proc.expect_json("call_failed", |v| event(v) == "call_failed");
    assert_eq!(refused["api"], "connectSocket");
    let msg = refused["errMsg"].as_str().unwrap();
    assert!(
        msg.starts_with("connectSocket:fail ") && msg.contains("ftp"),
        "{msg}"
    );
    proc.write("still one");
    proc.expect_json("echo", |v| {
        event(v) == "message" && v["data"] == "still one"
    });
    let (lines, events) = finish_ok(proc);
    // Connection 1 was never replaced: its one close is the final one, clean.
    assert!(
        events.iter().all(|v| v["conn"].is_null() || v["conn"] == 1),
        "{lines:?}"
    );
    let closes: Vec<&Value> = events.iter().filter(|v| event(v) == "close").collect();
    assert_eq!(closes.len(), 1, "{lines:?}");
    assert_eq!(closes[0]["code"], 1000);
    assert_eq!(closes[0]["clean"], true);
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn allow_host_and_refused_connect_tokio() {
    allow_host_and_refused_connect(false);
}

#[test]
fn allow_host_and_refused_connect_blocking() {
    allow_host_and_refused_connect(true);
}

/// `/sleep MS` pauses reading commands for MS, while events keep printing.
#[test]
fn sleep_pauses_commands_not_events() {
    let server = TestServer::start(Mode::Echo, false);
    let mut proc = Proc::spawn(&["connect", server.url(), "--json"]);
    proc.expect_json("open", |v| event(v) == "open");
    // A refused close is printed when its line runs: it stamps when commands ran.
    proc.write("/close 1001");
    proc.write("during");
    proc.write("/sleep 1000");
    proc.write("/close 1001");
    let before = proc.expect_json("first call_failed", |v| event(v) == "call_failed");
    let echo = proc.expect_json("echo or second call_failed", |v| {
        event(v) == "call_failed" || event(v) == "message"
    });
    // The echo arrived during the pause and was printed then.
    assert_eq!(echo["event"], "message", "{:?}", proc.seen);
    assert_eq!(echo["data"], "during");
    let after = proc.expect_json("second call_failed", |v| event(v) == "call_failed");
    let (t0, t1) = (before["t"].as_u64().unwrap(), after["t"].as_u64().unwrap());
    assert!(t1 >= t0 + 1000, "the pause took {} ms", t1 - t0);
    assert!(t1 < t0 + 1000 + 10_000, "the pause took {} ms", t1 - t0);
    finish_ok(proc);
}

/// `--timeout` bounds the handshake: a server that accepts the TCP connection but never
/// answers the upgrade gets an error naming the timeout and close 1006 after it.
fn handshake_timeout_fires(blocking: bool) {
    // Held handshakes are never released.
    let server = TestServer::start(Mode::Echo, true);
    let spawned = Instant::now();
    let mut proc = Proc::spawn(&with_adapter(
        vec!["connect", server.url(), "--json", "--timeout", "300"],
        blocking,
    ));
    let connecting = proc.expect_json("connecting", |v| event(v) == "connecting");
    let close = proc.expect_json("close", |v| event(v) == "close");
    // The dial began after the spawn, and the close line was printed after the close.
    let waited = spawned.elapsed();
    // Exit 3 (was 0 before exit statuses): the handshake timed out.
    let (lines, events) = finish_with(proc, 3);
    assert_ended_by_error(
        &lines,
        &events,
        &["connecting", "error", "close"],
        "timed out after 300ms",
    );
    assert!(
        waited >= Duration::from_millis(300),
        "closed {waited:?} after the spawn"
    );
    // The stamps are print times (a line may be printed late), so they bound from above.
    let took = close["t"].as_u64().unwrap() - connecting["t"].as_u64().unwrap();
    assert!(took < 10_000, "closed after {took} ms");
}

#[test]
fn handshake_timeout_fires_tokio() {
    handshake_timeout_fires(false);
}

#[test]
fn handshake_timeout_fires_blocking() {
    handshake_timeout_fires(true);
}

/// `--close-before-open ignore`: a close while connecting is refused (WeChat's documented race),
/// the queued message goes out on open, and a later close works.
fn close_before_open_ignore(blocking: bool) {
    let server = TestServer::start(Mode::Echo, true);
    let mut proc = Proc::spawn(&with_adapter(
        vec![
            "connect",
            server.url(),
            "--json",
            "--close-before-open",
            "ignore",
        ],
        blocking,
    ));
    proc.write("queued");
    proc.write("/close");
    let refused = proc.expect_json("call_failed", |v| event(v) == "call_failed");
    assert_eq!(refused["api"], "closeSocket");
    assert_eq!(
        refused["errMsg"],
        "closeSocket:fail WebSocket is not open yet; close is ignored until open"
    );
    server.release();
    proc.expect_json("echo", |v| event(v) == "message" && v["data"] == "queued");
    proc.write("/close 4002 done");
    proc.expect_json("close", |v| event(v) == "close");
    let (lines, events) = finish_ok(proc);
    let kinds: Vec<&str> = events
        .iter()
        .map(event)
        .filter(|k| *k != "message")
        .collect();
    assert_eq!(
        kinds,
        ["connecting", "call_failed", "open", "sent", "close"],
        "{lines:?}"
    );
    let close = events.last().unwrap();
    assert_eq!(close["code"], 4002);
    assert_eq!(close["reason"], "done");
    assert_eq!(close["clean"], true);
}

#[test]
fn close_before_open_ignore_tokio() {
    close_before_open_ignore(false);
}

#[test]
fn close_before_open_ignore_blocking() {
    close_before_open_ignore(true);
}

/// `--keepalive 1` against a server that never reads (so never answers a ping): after a
/// second idle a ping, after another second the keepalive failure and close 1006.
fn keepalive_declares_a_silent_peer_dead(blocking: bool) {
    let server = TestServer::start(Mode::Silent, false);
    let mut proc = Proc::spawn(&with_adapter(
        vec!["connect", server.url(), "--json", "--keepalive", "1"],
        blocking,
    ));
    let open = proc.expect_json("open", |v| event(v) == "open");
    let close = proc.expect_json("close", |v| event(v) == "close");
    // The client opened after the server read its handshake, and the close line was
    // printed after the close.
    let waited = server.seen()[0].at.elapsed();
    // Exit 4 (was 0 before exit statuses): the connection ended abnormally.
    let (lines, events) = finish_with(proc, 4);
    assert_ended_by_error(
        &lines,
        &events,
        &["connecting", "open", "error", "close"],
        "no pong within 1s",
    );
    assert!(
        waited >= Duration::from_secs(2),
        "declared dead {waited:?} after the handshake"
    );
    // The stamps are print times (a line may be printed late), so they bound from above.
    let took = close["t"].as_u64().unwrap() - open["t"].as_u64().unwrap();
    assert!(took < 12_000, "declared dead after {took} ms");
}

#[test]
fn keepalive_declares_a_silent_peer_dead_tokio() {
    keepalive_declares_a_silent_peer_dead(false);
}

#[test]
fn keepalive_declares_a_silent_peer_dead_blocking() {
    keepalive_declares_a_silent_peer_dead(true);
}

/// `--ack-timeout` and `--close-timeout` against a server that reads nothing: the message's
/// barrier ping goes unanswered and the connection fails at the acknowledgement timeout
/// given, not 10 s; the close handshake of a second run gives up at the close timeout
/// given, not 10 s (a prober's script could not raise them for a slow uplink, nor lower
/// them).
fn ack_and_close_timeouts_are_options(blocking: bool) {
    let server = TestServer::start(Mode::Silent, false);
    let mut proc = Proc::spawn(&with_adapter(
        vec!["connect", server.url(), "--json", "--ack-timeout", "500"],
        blocking,
    ));
    proc.expect_json("open", |v| event(v) == "open");
    let sent = Instant::now();
    proc.write("hello");
    proc.expect_json("failed", |v| event(v) == "error");
    let waited = sent.elapsed();
    let (lines, events) = finish_with(proc, 4);
    let error = events.iter().find(|v| event(v) == "error").unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("500ms"),
        "{lines:?}"
    );
    assert!(waited < Duration::from_secs(5), "gave up after {waited:?}");

    let mut proc = Proc::spawn(&with_adapter(
        vec!["connect", server.url(), "--json", "--close-timeout", "500"],
        blocking,
    ));
    proc.expect_json("open", |v| event(v) == "open");
    let closing = Instant::now();
    proc.close_stdin();
    let (lines, events) = finish_with(proc, 4);
    let waited = closing.elapsed();
    let close = events.last().unwrap();
    assert_eq!(close["code"], 1006, "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("timed out after 500ms")),
        "{lines:?}"
    );
    assert!(waited < Duration::from_secs(5), "gave up after {waited:?}");
}

#[test]
fn ack_and_close_timeouts_are_options_tokio() {
    ack_and_close_timeouts_are_options(false);
}

#[test]
fn ack_and_close_timeouts_are_options_blocking() {
    ack_and_close_timeouts_are_options(true);
}

/// `--keepalive 1` against a server that answers pings: the connection outlives several
/// keepalive periods and still echoes.
#[test]
fn keepalive_keeps_an_answering_peer() {
    let server = TestServer::start(Mode::Echo, false);
    let mut proc = Proc::spawn(&["connect", server.url(), "--json", "--keepalive", "1"]);
    proc.expect_json("open", |v| event(v) == "open");
    // Three seconds idle: three pings answered, where an unanswered one fails at two.
    proc.write("/sleep 3000");
    proc.write("still here");
    proc.expect_json("echo", |v| {
        event(v) == "message" && v["data"] == "still here"
    });
    let (lines, events) = finish_ok(proc);
    // No error: the one close is the one /quit asked for.
    let kinds: Vec<&str> = events.iter().map(event).filter(|k| *k != "sent").collect();
    assert_eq!(
        kinds,
        ["connecting", "open", "message", "close"],
        "{lines:?}"
    );
    let close = events.last().unwrap();
    assert_eq!(close["code"], 1000);
    assert_eq!(close["clean"], true);
}

/// The largest timers the options accept (24 hours) work: nothing overflows.
fn largest_timers_accepted(blocking: bool) {
    let server = TestServer::start(Mode::Echo, false);
    let mut proc = Proc::spawn(&with_adapter(
        vec![
            "connect",
            server.url(),
            "--json",
            "--keepalive",
            "86400",
            "--timeout",
            "86400000",
            "--reconnect-base",
            "86400000",
            "--reconnect-cap",
            "86400000",
        ],
        blocking,
    ));
    proc.expect_json("open", |v| event(v) == "open");
    proc.write("hi");
    proc.expect_json("echo", |v| event(v) == "message" && v["data"] == "hi");
    let (_, mut events) = finish_ok(proc);
    let close = events.pop().unwrap();
    assert_eq!(close["event"], "close");
    assert_eq!(close["clean"], true);
}

#[test]
fn largest_timers_accepted_tokio() {
    largest_timers_accepted(false);
}

#[test]
fn largest_timers_accepted_blocking() {
    largest_timers_accepted(true);
}

/// A text message with line breaks and terminal escapes prints as one line with them
/// escaped, on both adapters: a server cannot fake message boundaries for a script reading
/// the output, nor clear the user's screen or set the window title. `--json` keeps the
/// exact text.
#[test]
fn a_hostile_text_prints_as_one_line_without_terminal_escapes() {
    use wxsocket_tests::peer::{Mode as PeerMode, Peer, Step};
    let hostile = "one\ntwo\u{1b}[2J\u{1b}]0;pwned\u{7}";
    for blocking in [false, true] {
        let peer = Peer::start(PeerMode::Script(vec![Step::Message(
            wxsocket_core::Message::text(hostile),
        )]));
        let url = peer.url();
        let args = with_adapter(vec!["connect", "-1", &url], blocking);
        let (status, lines, stderr) = common::run(&args, "");
        assert!(status.success(), "{stderr}");
        assert_eq!(
            lines,
            [r"one\ntwo\u{1b}[2J\u{1b}]0;pwned\u{7}"],
            "blocking: {blocking}"
        );
        let args = with_adapter(vec!["connect", "--json", "-1", &url], blocking);
        let (_, lines, stderr) = common::run(&args, "");
        let message = lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .find(|v| event(v) == "message")
            .unwrap_or_else(|| panic!("a message event: {lines:?} {stderr}"));
        assert_eq!(message["data"], hostile);
    }
}

/// A server's words in an error (a redirect's `Location`, which HTTP lets hold any byte
/// from 0x80 on) cannot drive the terminal either: the C1 controls (CSI, OSC, ST) a prober
/// sent reached stderr and the timeline as they were.
#[test]
fn a_hostile_location_prints_without_terminal_escapes() {
    use wxsocket_tests::peer::{Mode as PeerMode, Peer};
    let peer = Peer::builder(PeerMode::Echo)
        .status_line("HTTP/1.1 302 Found")
        .response_header("Location: ws://x/\u{9b}2J\u{9b}31mFAKE\u{9d}0;owned\u{9c}")
        .start();
    let url = peer.url();
    for blocking in [false, true] {
        for verbose in [false, true] {
            let mut args = vec!["connect", &url];
            if verbose {
                args.push("-v");
            }
            let (_, lines, stderr) = common::run(&with_adapter(args, blocking), "");
            let shown = format!("{}\n{stderr}", lines.join("\n"));
            assert!(shown.contains(r"\u{9b}2J"), "{shown}");
            assert!(
                !shown.contains(['\u{9b}', '\u{9c}', '\u{9d}']),
                "blocking {blocking}, verbose {verbose}: {shown:?}"
            );
        }
    }
}

/// A server that ends with a close frame without a code (1005, which Python `websockets`
/// counts as a normal close) ends `connect` with 0, as 1000 does; it exited with 4 ("another
/// code"), a differential probe found.
#[test]
fn a_close_frame_without_a_code_exits_0() {
    let server = TestServer::start(Mode::CloseEachWith(1005), false);
    for blocking in [false, true] {
        let proc = Proc::spawn(&with_adapter(
            vec!["connect", server.url(), "--json"],
            blocking,
        ));
        let (_, events) = finish_ok(proc);
        let close = events.last().expect("events");
        assert_eq!(close["event"], "close", "{events:#?}");
        assert_eq!(close["code"], 1005, "{events:#?}");
        assert_eq!(close["clean"], true, "{events:#?}");
    }
}

/// A clean close that the server answers with a code of its own ends with 0 only if the code
/// is 1000, 1001, 1005 or the one this client closed with, as `--help` says; any other is 4
/// ("the server closed with another code"). The end of input's 1000 answered with 1011 (an
/// error) exited 0, as did a `/close 4001` answered with 4444 (a docs audit).
#[test]
fn a_close_answered_with_another_code_exits_4() {
    for (close, answer, expected) in [
        (None, 1011, 4),
        (None, 1001, 0),
        (Some("/close 4001 bye"), 4444, 4),
        (Some("/close 4001 bye"), 4001, 0),
    ] {
        let server = TestServer::start(Mode::AnswerCloseWith(answer), false);
        for blocking in [false, true] {
            let what = format!("{close:?} answered {answer}, blocking {blocking}");
            let mut proc = Proc::spawn(&with_adapter(
                vec!["connect", server.url(), "--json"],
                blocking,
            ));
            proc.expect_json("open", |v| event(v) == "open");
            if let Some(line) = close {
                proc.write(line);
            }
            let (status, lines, stderr) = proc.finish();
            let last: Value = serde_json::from_str(lines.last().expect("events")).unwrap();
            assert_eq!(event(&last), "close", "{what}: {lines:#?}");
            assert_eq!(last["code"], answer, "{what}: {lines:#?}");
            assert_eq!(last["clean"], true, "{what}: {lines:#?}");
            assert_eq!(status.code(), Some(expected), "{what}: {stderr}");
        }
    }
}

/// An allow-list entry is compared as the URL's host is written: `127.1` is `127.0.0.1`, and
/// the server it names opens (the entry was compared as given and matched nothing).
#[test]
fn an_allow_list_entry_in_another_form_of_the_host_opens() {
    let server = TestServer::start(Mode::Echo, false);
    for blocking in [false, true] {
        let mut proc = Proc::spawn(&with_adapter(
            vec!["connect", server.url(), "--json", "--allow-host", "127.1"],
            blocking,
        ));
        proc.expect_json("open", |v| event(v) == "open");
        finish_ok(proc);
    }
}
