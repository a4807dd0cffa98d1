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
    assert_refused_for_want_of_a_certificate(&lines);
}

/// `wxsocket serve --tls-cert` serves `wss://`, and with `--client-ca` requires a client
/// certificate of that CA: `connect --client-cert` opens and echoes on both adapters,
/// `connect` without one is refused (exit 3, the error says why), and the server reports
/// the failed TLS handshake.
#[test]
fn serve_over_tls_requires_the_client_certificate_it_was_told_to() {
    let ca = TestCa::generate("cli-serve");
    let file = |name: &str, text: &str| common::temp_file(&format!("serve-{name}"), text);
    let ca_pem = file("ca.pem", &ca.ca_pem);
    let server_cert = file("server.pem", &ca.cert_pem);
    let server_key = file("server.key", &ca.key_pem);
    let client_cert = file("client.pem", &ca.client_cert_pem);
    let client_key = file("client.key", &ca.client_key_pem);
    let path = |p: &std::path::PathBuf| p.to_str().unwrap().to_owned();
    for client_ca in [false, true] {
        let mut args = vec![
            "serve".to_owned(),
            "--addr".into(),
            "127.0.0.1:0".into(),
            "--json".into(),
            "--tls-cert".into(),
            path(&server_cert),
            "--tls-key".into(),
            path(&server_key),
        ];
        if client_ca {
            args.extend(["--client-ca".into(), path(&ca_pem)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut server = Proc::spawn(&args);
        let listening = server.expect_json("listening", |v| event(v) == "listening");
        let url = listening["url"].as_str().unwrap().to_owned();
        assert!(url.starts_with("wss://127.0.0.1:"), "{url}");
        for blocking in [false, true] {
            let ca_path = path(&ca_pem);
            let (cert, key) = (path(&client_cert), path(&client_key));
            let mut args = vec!["connect", url.as_str(), "--json", "--ca-file", &ca_path];
            args.extend(["--client-cert", &cert, "--client-key", &key]);
            let args = with_adapter(args, blocking);
            let mut proc = Proc::spawn(&args);
            let open = proc.expect_json("open", |v| matches!(event(v), "open" | "close"));
            assert_eq!(open["event"], "open", "{args:?}: {:?}", proc.seen);
            proc.write("served over tls");
            proc.expect_json("echo", |v| {
                event(v) == "message" && v["data"] == "served over tls"
            });
            let (status, _, stderr) = proc.finish();
            assert!(status.success(), "{args:?}: exit {status}: {stderr}");
        }
        // Without a client certificate: refused where one is required.
        let ca_path = path(&ca_pem);
        let mut proc = Proc::spawn(&["connect", &url, "--json", "--ca-file", &ca_path]);
        let end = proc.expect_json("open or close", |v| matches!(event(v), "open" | "close"));
        if client_ca {
            assert_eq!(end["event"], "close", "{:?}", proc.seen);
            let (status, lines, _) = proc.finish();
            assert_eq!(status.code(), Some(3), "{lines:?}");
            assert_refused_for_want_of_a_certificate(&lines);
            let failed = server.expect_json("the server's error", |v| event(v) == "error");
            assert!(
                failed["error"]
                    .as_str()
                    .unwrap()
                    .starts_with("TLS handshake failed"),
                "{failed}"
            );
        } else {
            assert_eq!(end["event"], "open", "{:?}", proc.seen);
            let (status, _, stderr) = proc.finish();
            assert!(status.success(), "exit {status}: {stderr}");
        }
    }
}

/// The `--json` output's error event says the server requires a client certificate.
fn assert_refused_for_want_of_a_certificate(lines: &[String]) {
    let error = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| event(v) == "error")
        .expect("an error event");
    let text = error["error"].as_str().unwrap();
    assert!(text.contains("requires a client certificate"), "{text}");
}
