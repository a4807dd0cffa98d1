//! `wxsocket connect --json` against an in-process server: the event contract of the
//! README, for both adapters.

mod common;

use common::{Mode, Proc, TestServer};
use serde_json::Value;

fn event(v: &Value) -> &str {
    v["event"].as_str().unwrap_or("")
}

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

fn json_contract(blocking: bool) {
    // The server holds the handshake until released, so the first sends are certainly
    // made while the socket is connecting.
    let server = TestServer::start(Mode::Echo, true);
    let mut args = vec![
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
    if blocking {
        args.push("--blocking");
    }
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

    let (status, lines, stderr) = proc.finish();
    assert!(status.success(), "exit {status}: {stderr}");
    let events = check_lines(&lines);
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

fn unreachable_server(blocking: bool) {
    let url = format!("ws://127.0.0.1:{}/", common::closed_port());
    let mut args = vec!["connect", url.as_str(), "--json"];
    if blocking {
        args.push("--blocking");
    }
    let mut proc = Proc::spawn(&args);
    proc.expect_json("close", |v| event(v) == "close");
    proc.write("hello");
    proc.write("/close");
    let (status, lines, _) = proc.finish();
    assert!(status.success());
    let events = check_lines(&lines);
    let kinds: Vec<&str> = events.iter().map(event).collect();
    assert_eq!(
        kinds,
        ["connecting", "error", "close", "call_failed", "call_failed"]
    );
    assert!(
        events[1]["error"]
            .as_str()
            .unwrap()
            .starts_with("connect failed")
    );
    assert_eq!(events[2]["code"], 1006);
    assert_eq!(events[2]["clean"], false);
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
    let (status, lines, _) = proc.finish();
    assert!(status.success());
    let events = check_lines(&lines);
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
    let (status, lines, _) = proc.finish();
    assert!(status.success());
    let events = check_lines(&lines);
    let kinds: Vec<&str> = events.iter().map(event).collect();
    assert_eq!(
        kinds,
        ["connecting", "call_failed", "open", "sent", "close"]
    );
    assert_eq!(events[3]["id"], 1);
    assert_eq!(events[4]["code"], 4001);
    assert_eq!(events[4]["reason"], "later");
    assert_eq!(events[4]["clean"], true);
}

#[test]
fn end_of_input_while_connecting_waits_for_open_then_closes() {
    let server = TestServer::start(Mode::Echo, true);
    let mut proc = Proc::spawn(&["connect", server.url(), "--json", "--blocking"]);
    proc.write("piped");
    proc.close_stdin();
    proc.expect_json("connecting", |v| event(v) == "connecting");
    server.release();
    let (status, lines, _) = proc.finish();
    assert!(status.success());
    let events = check_lines(&lines);
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
