//! `wxsocket serve` and `wxsocket connect` end to end, two processes over loopback.

mod common;

use common::{Proc, with_adapter};

#[test]
fn serve_then_connect() {
    let mut server = Proc::spawn(&["serve", "--addr", "127.0.0.1:0"]);
    let first = server.expect("listening line", |l| l.contains("listening on ws://"));
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .unwrap()
        .to_owned();

    for blocking in [false, true] {
        // The annotated timeline (-v) this time.
        let args = vec!["connect", url.as_str(), "-p", "chat", "-v"];
        let args = with_adapter(args, blocking);
        let mut client = Proc::spawn(&args);
        client.expect("open", |l| l.contains("#1 open (protocol: chat)"));
        client.write("hello there");
        client.expect("echo", |l| l.contains("#1 < \"hello there\""));
        client.write("/binary 0102");
        client.expect("binary echo", |l| l.contains("#1 < binary 2 B 0102"));
        client.write("/close 4001 done");
        client.expect("close", |l| l.contains("#1 closed: 4001 \"done\" (clean)"));
        let (status, _, _) = client.finish();
        assert!(status.success());

        server.expect("connection line", |l| {
            l.contains("connected: GET / (protocol: chat)")
        });
        server.expect("close line", |l| {
            l.contains("closed by the client: 4001 \"done\" (2 messages echoed; on the wire")
        });
    }
    // Dropping the Proc kills the server.
}
