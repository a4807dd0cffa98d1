//! `wxsocket serve` and `wxsocket connect` end to end, two processes over loopback.

mod common;

use common::{Proc, event, with_adapter};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

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

/// `serve --handshake-timeout`: a client that connects and does not finish its handshake
/// (sends nothing, or half an upgrade request; over TLS, nothing) is dropped once the time
/// is up, with an error line, instead of holding its connection for ever (the upgrade had
/// no bound at all, and TLS a fixed 10 s); a client that does finish is served.
#[test]
fn serve_drops_a_client_that_does_not_finish_its_handshake_in_time() {
    let ca = wxsocket_test_pki::TestCa::generate("serve-handshake");
    let cert = common::temp_file("serve-handshake.pem", &ca.cert_pem);
    let key = common::temp_file("serve-handshake.key", &ca.key_pem);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let plain: &[&str] = &[];
    let tls: &[&str] = &["--tls-cert", cert, "--tls-key", key];
    for (extra, sends, says) in [
        (
            plain,
            &b""[..],
            "handshake failed: not finished within 300 ms",
        ),
        (
            plain,
            &b"GET / HTTP/1.1\r\nHost: x\r\n"[..],
            "handshake failed: not finished within 300 ms",
        ),
        (
            tls,
            &b""[..],
            "TLS handshake failed: not finished within 300 ms",
        ),
    ] {
        let mut args = vec!["serve", "--addr", "127.0.0.1:0", "--json"];
        args.extend(["--handshake-timeout", "300"]);
        args.extend(extra);
        let mut server = Proc::spawn(&args);
        let listening = server.expect_json("listening", |v| event(v) == "listening");
        let url = listening["url"].as_str().unwrap().to_owned();
        let addr = url.split("://").nth(1).unwrap().trim_end_matches('/');
        let mut client = TcpStream::connect(addr).unwrap();
        client.write_all(sends).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let started = Instant::now();
        let mut buf = [0u8; 64];
        // The server drops the connection: an end (or a reset), not a read timeout.
        let read = client.read(&mut buf);
        assert!(
            matches!(read, Ok(0))
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{extra:?} {sends:?}: {read:?} after {:?}",
            started.elapsed()
        );
        let error = server.expect_json("the error line", |v| event(v) == "error");
        assert_eq!(error["error"], says, "{error}");
        // A client that finishes its handshake in time is served.
        if extra.is_empty() {
            let (status, out, err) = common::run(&["connect", &url], "in time\n");
            assert!(status.success(), "{err}");
            assert_eq!(out, ["in time"], "{err}");
        }
    }
}
