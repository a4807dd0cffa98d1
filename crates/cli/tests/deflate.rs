//! permessage-deflate end to end: `wxsocket connect --deflate` against
//! `wxsocket serve --deflate` (two processes over loopback), on both adapters: the open
//! event's `deflate` object, echoes of compressible and small messages, and the server's
//! byte count showing the messages really were compressed on the wire.

mod common;

use common::{Proc, event, with_adapter};
use serde_json::json;

/// Starts `wxsocket serve --addr 127.0.0.1:0 ARGS`; returns it and its URL.
fn serve(args: &[&str]) -> (Proc, String) {
    let mut all = vec!["serve", "--addr", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut server = Proc::spawn(&all);
    let first = server.expect("listening line", |l| l.contains("listening on ws://"));
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .unwrap()
        .to_owned();
    (server, url)
}

/// The number before `what` in the server's close line (`… 123 B read, 45 B written)`).
fn bytes_before(line: &str, what: &str) -> u64 {
    let at = line
        .find(what)
        .unwrap_or_else(|| panic!("no {what:?} in {line:?}"));
    line[..at]
        .split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number before {what:?} in {line:?}"))
}

/// A compressible text of `n` bytes (JSON-like, repetitive).
fn compressible(n: usize) -> String {
    let mut text = String::new();
    let mut i = 0;
    while text.len() < n {
        text.push_str(&format!("{{\"id\":{i},\"name\":\"user\",\"ok\":true}},"));
        i += 1;
    }
    text.truncate(n);
    text
}

fn connect_deflate_json(blocking: bool) {
    let (mut server, url) = serve(&["--deflate"]);
    let args = vec!["connect", url.as_str(), "--json", "--deflate"];
    let args = with_adapter(args, blocking);
    let mut client = Proc::spawn(&args);
    let open = client.expect_json("open", |v| event(v) == "open");
    assert_eq!(
        open["deflate"],
        json!({
            "server_no_context_takeover": false,
            "client_no_context_takeover": false,
            "server_max_window_bits": 15,
            "client_max_window_bits": 15,
        })
    );
    assert_eq!(
        open["headers"]["sec-websocket-extensions"],
        "permessage-deflate"
    );
    // The existing fields are still there, in their place; `profile` came later, after them.
    let keys: Vec<&str> = open
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "event", "t", "conn", "protocol", "headers", "deflate", "profile"
        ]
    );

    let big = compressible(3000);
    client.write(&big);
    let echo = client.expect_json("big echo", |v| event(v) == "message");
    assert_eq!(echo["type"], "text");
    assert_eq!(echo["data"], big.as_str());
    // The same again: compressed against the first (context takeover).
    client.write(&big);
    let echo = client.expect_json("second big echo", |v| event(v) == "message");
    assert_eq!(echo["data"], big.as_str());
    client.write("hi");
    let echo = client.expect_json("small echo", |v| event(v) == "message");
    assert_eq!(echo["data"], "hi");
    let zeros = "00".repeat(300);
    client.write(&format!("/binary {zeros}"));
    let echo = client.expect_json("binary echo", |v| event(v) == "message");
    assert_eq!(echo["type"], "binary");
    assert_eq!(echo["data"], zeros.as_str());
    client.write("/close 4001 done");
    let close = client.expect_json("close", |v| event(v) == "close");
    assert_eq!(close["code"], 4001);
    assert_eq!(close["clean"], true);
    let (status, _, stderr) = client.finish();
    assert!(status.success(), "{stderr}");

    let connected = server.expect("connection line", |l| l.contains("connected: GET /"));
    assert!(
        connected.contains(
            "(protocol: none, compression: permessage-deflate; server_max_window_bits=15; client_max_window_bits=15)"
        ),
        "{connected}"
    );
    let closed = server.expect("close line", |l| l.contains("closed by the client"));
    assert!(
        closed.contains("4001 \"done\" (4 messages echoed; "),
        "{closed}"
    );
    // The payloads alone are 6302 bytes each way; compressed, everything the server read
    // and wrote (the handshake included) is far less.
    let read = bytes_before(&closed, "B read");
    let written = bytes_before(&closed, "B written");
    assert!(read < 1500 && written < 1500, "{closed}");
}

#[test]
fn connect_deflate_against_serve_deflate_tokio() {
    connect_deflate_json(false);
}

#[test]
fn connect_deflate_against_serve_deflate_blocking() {
    connect_deflate_json(true);
}

fn offer_options(blocking: bool) {
    let (mut server, url) = serve(&["--deflate"]);
    // Every --deflate-* option implies --deflate.
    let args = vec![
        "connect",
        url.as_str(),
        "--json",
        "--deflate-server-no-context-takeover",
        "--deflate-client-no-context-takeover",
        "--deflate-server-window-bits",
        "10",
        "--deflate-client-window-bits",
        "9",
        "--deflate-threshold",
        "0",
    ];
    let args = with_adapter(args, blocking);
    let mut client = Proc::spawn(&args);
    let open = client.expect_json("open", |v| event(v) == "open");
    assert_eq!(
        open["deflate"],
        json!({
            "server_no_context_takeover": true,
            "client_no_context_takeover": true,
            "server_max_window_bits": 10,
            "client_max_window_bits": 9,
        })
    );
    assert_eq!(
        open["headers"]["sec-websocket-extensions"],
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9"
    );
    let big = compressible(5000);
    for text in [big.as_str(), big.as_str(), "x"] {
        client.write(text);
        let echo = client.expect_json("echo", |v| event(v) == "message");
        assert_eq!(echo["data"], text);
    }
    client.write("/close");
    client.expect_json("close", |v| event(v) == "close");
    let (status, _, stderr) = client.finish();
    assert!(status.success(), "{stderr}");
    server.expect("connection line", |l| {
        l.contains("compression: permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=9")
    });
    let closed = server.expect("close line", |l| l.contains("closed by the client"));
    assert!(closed.contains("(3 messages echoed; "), "{closed}");
    // No context takeover: each 5000-byte message is compressed on its own, still far
    // below its size.
    assert!(bytes_before(&closed, "B read") < 3000, "{closed}");
}

#[test]
fn offer_options_are_agreed_tokio() {
    offer_options(false);
}

#[test]
fn offer_options_are_agreed_blocking() {
    offer_options(true);
}

#[test]
fn human_output_shows_the_agreed_parameters() {
    let (_server, url) = serve(&["--deflate"]);
    for blocking in [false, true] {
        // The annotated timeline (-v) shows the agreed parameters.
        let args = vec!["connect", url.as_str(), "--deflate", "-v"];
        let args = with_adapter(args, blocking);
        let mut client = Proc::spawn(&args);
        client.expect("open", |l| {
            l.contains(
                "#1 open (protocol: none, compression: permessage-deflate; server_max_window_bits=15; client_max_window_bits=15)",
            )
        });
        let big = compressible(1000);
        client.write(&big);
        client.expect("echo", |l| {
            l.contains(&format!("#1 < \"{}", &big[..20].replace('"', "\\\"")))
        });
        let (status, _, _) = client.finish();
        assert!(status.success());
    }
}

#[test]
fn serve_without_deflate_declines_and_the_client_says_so() {
    let (mut server, url) = serve(&[]);
    let mut client = Proc::spawn(&["connect", url.as_str(), "--deflate", "-v"]);
    client.expect("open", |l| l.contains("#1 open (protocol: none)"));
    client.expect("note", |l| {
        l.contains("the server did not accept permessage-deflate: messages go uncompressed")
    });
    client.write("hello");
    client.expect("echo", |l| l.contains("#1 < \"hello\""));
    let (status, _, _) = client.finish();
    assert!(status.success());
    let connected = server.expect("connection line", |l| l.contains("connected: GET /"));
    assert!(connected.ends_with("(protocol: none)"), "{connected}");
}

/// Sends `text` once through `connect ARGS` against `server` (a `serve --deflate`), closes,
/// and returns the bytes the server's socket read on that connection (handshake included).
fn bytes_read_for(server: &mut Proc, url: &str, args: &[&str], text: &str) -> u64 {
    let mut all = vec!["connect", url, "--json"];
    all.extend_from_slice(args);
    let mut client = Proc::spawn(&all);
    client.expect_json("open", |v| event(v) == "open" && !v["deflate"].is_null());
    client.write(text);
    let echo = client.expect_json("echo", |v| event(v) == "message");
    assert_eq!(echo["data"], text);
    client.write("/close");
    client.expect_json("close", |v| event(v) == "close");
    let (status, _, stderr) = client.finish();
    assert!(status.success(), "{stderr}");
    let closed = server.expect("close line", |l| l.contains("closed by the client"));
    bytes_before(&closed, "B read")
}

/// `--deflate-level` reaches the compressor: level 0 stores the message (deflate's stored
/// blocks: more bytes on the wire than the message itself), level 9 shrinks it to a
/// fraction; the handshake and the close are the same in both runs.
#[test]
fn deflate_level_changes_the_bytes_on_the_wire() {
    let (mut server, url) = serve(&["--deflate"]);
    let text = compressible(5000);
    for blocking in [false, true] {
        let stored = bytes_read_for(
            &mut server,
            &url,
            &with_adapter(vec!["--deflate-level", "0"], blocking),
            &text,
        );
        let best = bytes_read_for(
            &mut server,
            &url,
            &with_adapter(vec!["--deflate-level", "9"], blocking),
            &text,
        );
        assert!(
            stored > 5000,
            "level 0 sent {stored} B for a 5000 B message (blocking: {blocking})"
        );
        assert!(
            best * 3 < stored,
            "level 9: {best} B, level 0: {stored} B (blocking: {blocking})"
        );
    }
}

/// `--deflate-threshold 0` compresses even a short message: a 31-byte run of one letter
/// goes as a few compressed bytes with threshold 0, and as is with threshold 32 (messages
/// shorter than 32 bytes are sent uncompressed). Everything else on the wire is the same.
#[test]
fn deflate_threshold_zero_compresses_short_messages() {
    let (mut server, url) = serve(&["--deflate"]);
    let text = "a".repeat(31);
    for blocking in [false, true] {
        let zero = bytes_read_for(
            &mut server,
            &url,
            &with_adapter(vec!["--deflate-threshold", "0"], blocking),
            &text,
        );
        let default = bytes_read_for(
            &mut server,
            &url,
            &with_adapter(vec!["--deflate-threshold", "32"], blocking),
            &text,
        );
        // As is, the frame carries the 31 bytes; compressed, about 5.
        assert!(
            zero + 20 <= default,
            "threshold 0: {zero} B, threshold 32: {default} B (blocking: {blocking})"
        );
    }
}
