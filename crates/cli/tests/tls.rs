//! `wss://` through the binary: `--ca-file` trusting a test CA, with `--require-tls` and
//! `--allow-host`, against an in-process rustls echo server, on both adapters.

mod common;

use common::{Proc, TlsEchoServer, event, with_adapter};
use serde_json::Value;
use wxsocket_test_pki::TestCa;

fn wss_with_ca_file(blocking: bool) {
    let ca = TestCa::generate("cli");
    let pem = common::temp_file(
        &format!("ca-{}.pem", if blocking { "blocking" } else { "tokio" }),
        &ca.ca_pem,
    );
    let server = TlsEchoServer::start(ca.server_config());
    let url = server.url("localhost");
    let args = vec![
        "connect",
        url.as_str(),
        "--json",
        "--ca-file",
        pem.to_str().unwrap(),
        "--require-tls",
        "--allow-host",
        "localhost",
    ];
    let args = with_adapter(args, blocking);
    let mut proc = Proc::spawn(&args);
    let open = proc.expect_json("open", |v| matches!(event(v), "open" | "close"));
    assert_eq!(open["event"], "open", "{:?}", proc.seen);
    common::assert_plausible_profile(&open, true);
    proc.write("over tls");
    proc.write("/binary 00ff");
    proc.expect_json("binary echo", |v| {
        event(v) == "message" && v["type"] == "binary"
    });
    let (status, lines, stderr) = proc.finish();
    assert!(status.success(), "exit {status}: {stderr}");
    let events: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let messages: Vec<&str> = events
        .iter()
        .filter(|v| event(v) == "message")
        .map(|v| v["data"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["over tls", "00ff"]);
    let close = events.last().unwrap();
    assert_eq!(close["event"], "close");
    assert_eq!(close["code"], 1000);
    assert_eq!(close["clean"], true);
    assert!(!events.iter().any(|v| event(v) == "error"), "{lines:?}");
}

#[test]
fn wss_with_ca_file_tokio() {
    wss_with_ca_file(false);
}

#[test]
fn wss_with_ca_file_blocking() {
    wss_with_ca_file(true);
}

/// Without `--ca-file` the same server's certificate is not trusted: the handshake fails
/// (so the success above is the option's doing).
#[test]
fn wss_without_ca_file_fails() {
    let ca = TestCa::generate("cli");
    let server = TlsEchoServer::start(ca.server_config());
    let url = server.url("localhost");
    let mut proc = Proc::spawn(&["connect", &url, "--json"]);
    let close = proc.expect_json("close", |v| matches!(event(v), "open" | "close"));
    assert_eq!(close["event"], "close", "{:?}", proc.seen);
    assert_eq!(close["code"], 1006);
    let (status, lines, _) = proc.finish();
    // Exit 3 (was 0 before exit statuses): a TLS failure means no connection was made.
    assert_eq!(status.code(), Some(3));
    let error = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| event(v) == "error")
        .expect("an error event");
    let text = error["error"].as_str().unwrap().to_lowercase();
    assert!(text.contains("certificate"), "{text}");
}

/// `--client-cert` and `--client-key` present a client certificate to a server that
/// requires one (mutual TLS), on both adapters; with the key in the certificate's file,
/// `--client-cert` alone does.
fn wss_with_client_certificate(blocking: bool) {
    let ca = TestCa::generate("cli-mutual");
    let name = if blocking { "blocking" } else { "tokio" };
    let ca_pem = common::temp_file(&format!("mutual-ca-{name}.pem"), &ca.ca_pem);
    let cert = common::temp_file(&format!("client-{name}.pem"), &ca.client_cert_pem);
    let key = common::temp_file(&format!("client-{name}.key"), &ca.client_key_pem);
    let both = common::temp_file(
        &format!("client-and-key-{name}.pem"),
        &(ca.client_cert_pem.clone() + &ca.client_key_pem),
    );
    let server = TlsEchoServer::start(ca.server_config_requiring_clients());
    let url = server.url("localhost");
    let separate = [
        "--client-cert",
        cert.to_str().unwrap(),
        "--client-key",
        key.to_str().unwrap(),
    ];
    let together = ["--client-cert", both.to_str().unwrap()];
    for identity in [&separate[..], &together[..]] {
        let mut args = vec!["connect", url.as_str(), "--json", "--ca-file"];
        args.push(ca_pem.to_str().unwrap());
        args.extend(identity);
        let args = with_adapter(args, blocking);
        let mut proc = Proc::spawn(&args);
        let open = proc.expect_json("open", |v| matches!(event(v), "open" | "close"));
        assert_eq!(open["event"], "open", "{args:?}: {:?}", proc.seen);
        proc.write("mutual");
        proc.expect_json("echo", |v| event(v) == "message" && v["data"] == "mutual");
        let (status, lines, stderr) = proc.finish();
        assert!(status.success(), "{args:?}: exit {status}: {stderr}");
        let close: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        assert_eq!(close["event"], "close", "{lines:?}");
        assert_eq!(close["code"], 1000, "{lines:?}");
        assert_eq!(close["clean"], true, "{lines:?}");
    }
}

#[test]
fn wss_with_client_certificate_tokio() {
    wss_with_client_certificate(false);
}

#[test]
fn wss_with_client_certificate_blocking() {
    wss_with_client_certificate(true);
}

/// Without `--client-cert`, the same server refuses the connection: exit 3, and the error
/// says the server requires a client certificate (so the success above is the option's
/// doing).
#[test]
fn wss_without_client_certificate_fails() {
    let ca = TestCa::generate("cli-mutual");
    let ca_pem = common::temp_file("mutual-ca-none.pem", &ca.ca_pem);
    let server = TlsEchoServer::start(ca.server_config_requiring_clients());
    let url = server.url("localhost");
    let mut proc = Proc::spawn(&[
        "connect",
        &url,
        "--json",
        "--ca-file",
        ca_pem.to_str().unwrap(),
    ]);
    let close = proc.expect_json("close", |v| matches!(event(v), "open" | "close"));
    assert_eq!(close["event"], "close", "{:?}", proc.seen);
    assert_eq!(close["code"], 1006);
    let (status, lines, _) = proc.finish();
    assert_eq!(status.code(), Some(3));
    let error = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| event(v) == "error")
        .expect("an error event");
    let text = error["error"].as_str().unwrap();
    assert!(text.contains("requires a client certificate"), "{text}");
}
