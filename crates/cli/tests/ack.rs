//! `wxsocket connect --ack` over real IO: messages are reported `delivered` once the
//! server's pong acknowledges them, not `sent`; one that a dropped connection did not
//! acknowledge is sent again on the next connection and marked `"duplicate": true`.

mod common;

use common::{Proc, event, with_adapter};
use serde_json::Value;
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;
use tungstenite::Message;

/// A server whose first connection reads one message and drops (no pong can answer the
/// ping after it); later connections are read until they end, answering pings. Reports
/// every text message it read, with the connection's number.
fn dropping_server() -> (String, mpsc::Receiver<(usize, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            stream
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            let Ok(mut ws) = tungstenite::accept(stream) else {
                continue;
            };
            while let Ok(message) = ws.read() {
                if let Message::Text(text) = message {
                    if tx.send((n + 1, text.as_str().to_owned())).is_err() {
                        return;
                    }
                    if n == 0 {
                        break; // dropped, unanswered
                    }
                }
            }
        }
    });
    (url, rx)
}

fn ack_resends_what_a_drop_left_unacknowledged(blocking: bool) {
    let (url, read) = dropping_server();
    let mut proc = Proc::spawn(&with_adapter(
        vec![
            "connect",
            &url,
            "--json",
            "--ack",
            "--reconnect",
            "--reconnect-base",
            "10",
        ],
        blocking,
    ));
    proc.expect_json("open", |v| event(v) == "open");
    proc.write("first");
    let resent = proc.expect_json("delivered", |v| event(v) == "delivered");
    assert_eq!(resent["id"], 1);
    assert_eq!(resent["conn"], 2, "{resent}");
    assert_eq!(resent["duplicate"], true, "{resent}");
    proc.write("second");
    let delivered = proc.expect_json("delivered", |v| event(v) == "delivered");
    assert_eq!(delivered["id"], 2);
    assert_eq!(delivered["duplicate"], false, "{delivered}");
    let (status, lines, stderr) = proc.finish();
    assert!(status.success(), "{status}: {stderr}");
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        !events.iter().any(|v| event(v) == "sent"),
        "`sent` with --ack: {lines:?}"
    );
    // The server read "first" on both connections, "second" once.
    let got: Vec<_> = read.try_iter().collect();
    assert_eq!(
        got,
        [
            (1, "first".to_owned()),
            (2, "first".to_owned()),
            (2, "second".to_owned())
        ]
    );
}

#[test]
fn ack_resends_what_a_drop_left_unacknowledged_tokio() {
    ack_resends_what_a_drop_left_unacknowledged(false);
}

#[test]
fn ack_resends_what_a_drop_left_unacknowledged_blocking() {
    ack_resends_what_a_drop_left_unacknowledged(true);
}
