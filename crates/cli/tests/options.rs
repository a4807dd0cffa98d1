//! Invalid command-line options exit with status 2 and one line on stderr naming the option.

mod common;

#[test]
fn invalid_options_exit_2_naming_the_option() {
    let cases: &[(&[&str], &str)] = &[
        (&["connect"], "<URL>"),
        (
            &["connect", "ws://127.0.0.1:9/", "--timeout", "abc"],
            "--timeout",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--timeout", "0"],
            "--timeout",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--keepalive", "-1"],
            "--keepalive",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--close-before-open",
                "sometimes",
            ],
            "--close-before-open",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "-H", "no colon"],
            "--header",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "-H", "Referer: x"],
            "--header",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "-H", "Bad Name: x"],
            "--header",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--data", "novalue"],
            "--data",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "-p", "a", "-p", "a"],
            "--protocol",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "-p", "no spaces"],
            "--protocol",
        ),
        (&["connect", "ws://127.0.0.1:9/", "--bogus"], "--bogus"),
        (&["connect", "ftp://127.0.0.1:9/"], "URL"),
        (&["connect", "not a url"], "URL"),
        (
            &["connect", "ws://127.0.0.1:9/", "--require-tls"],
            "--require-tls",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--allow-host",
                "example.com",
            ],
            "--allow-host",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--ca-file",
                "/nonexistent/ca.pem",
            ],
            "--ca-file",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--deflate-server-window-bits",
                "16",
            ],
            "--deflate-server-window-bits",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--deflate",
                "--deflate-client-window-bits",
                "7",
            ],
            "--deflate-client-window-bits",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--deflate-server-window-bits",
                "big",
            ],
            "--deflate-server-window-bits",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--deflate-client-window-bits",
                "300",
            ],
            "--deflate-client-window-bits",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--deflate-threshold", "-1"],
            "--deflate-threshold",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--deflate-level", "10"],
            "--deflate-level",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--deflate=yes"],
            "--deflate",
        ),
        // Timers are bounded (24 hours) before any IO: a huge one used to overflow a
        // deadline inside the session.
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--keepalive",
                "18446744073709551615",
            ],
            "--keepalive",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--keepalive", "86401"],
            "--keepalive",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--keepalive", "0"],
            "--keepalive",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--timeout",
                "18446744073709551615",
            ],
            "--timeout",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--timeout",
                "99999999999999999999999",
            ],
            "--timeout",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--timeout", "86400001"],
            "--timeout",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--reconnect-base", "0"],
            "--reconnect-base",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--reconnect",
                "--reconnect-base",
                "86400001",
            ],
            "--reconnect-base",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--reconnect-base",
                "200",
                "--reconnect-cap",
                "100",
            ],
            "--reconnect-cap",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--reconnect-cap",
                "18446744073709551615",
            ],
            "--reconnect-cap",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--reconnect-max", "0"],
            "--reconnect-max",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--reconnect-max", "-3"],
            "--reconnect-max",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--reconnect-codes", "1006"],
            "--reconnect-codes",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--reconnect-codes",
                "1001,,1012",
            ],
            "--reconnect-codes",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--reconnect-codes", "5000"],
            "--reconnect-codes",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--reconnect-seed", "x"],
            "--reconnect-seed",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--reconnect-no-carry=yes"],
            "--reconnect-no-carry",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--max-message-size", "0"],
            "--max-message-size",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--max-message-size",
                "1073741825",
            ],
            "--max-message-size",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--max-message-size", "1k"],
            "--max-message-size",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--max-messages", "0"],
            "--max-messages",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "-1", "--max-messages", "2"],
            "--max-messages",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--linger", "-5"],
            "--linger",
        ),
        (
            &["connect", "ws://127.0.0.1:9/", "--linger-max", "86400001"],
            "--linger-max",
        ),
        (
            &[
                "connect",
                "ws://127.0.0.1:9/",
                "--no-linger",
                "--linger",
                "5",
            ],
            "--linger",
        ),
        (&["connect", "ws://127.0.0.1:9/", "-t", "-b"], "--binary"),
        (
            &["connect", "ws://127.0.0.1:9/", "--json", "-v"],
            "--verbose",
        ),
        (&["serve", "--protocol", "a b"], "--protocol"),
        (&["serve", "--broadcast=yes"], "--broadcast"),
        (&["serve", "--addr", "nowhere"], "--addr"),
        (&["serve", "--deflate", "9"], "9"),
        (
            &["serve", "--handshake-timeout", "0"],
            "--handshake-timeout",
        ),
        (&["bench", "--json"], "wxsocket-bench"),
        (&["demo", "--fast"], "--fast"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, option) in cases {
        let (status, stdout, stderr) = common::run(args, "");
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?} printed {stdout:?}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: not one line: {stderr:?}");
        assert!(
            lines[0].contains(option) && lines[0].contains("error"),
            "{args:?}: {:?} does not name {option}",
            lines[0]
        );
    }
}

/// An invalid value's message says what is allowed, in the command's words rather than
/// the parser's ("300 is not in 0..=255", "invalid digit found in string"), and a value
/// that could never work (an empty `--data` key, an `--allow-host` that is no host) is
/// refused.
#[test]
fn option_errors_say_what_is_allowed() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--deflate-server-window-bits", "300"],
            "300 is not a window size from 8 to 15",
        ),
        (
            &["--deflate-client-window-bits", "7"],
            "7 is not a window size from 8 to 15",
        ),
        (
            &["--deflate-threshold", "-1"],
            "\"-1\" is not a whole number",
        ),
        (&["--deflate-level", "-1"], "\"-1\" is not a whole number"),
        (&["--reconnect-seed", "-1"], "\"-1\" is not a whole number"),
        (&["--data", "=x"], "the key is empty"),
        (&["--allow-host", ""], "a host pattern cannot be empty"),
        (
            &["--allow-host", "example.com:443"],
            "is not a host name or address (no scheme, port, path or space)",
        ),
        (
            &["--allow-host", "*"],
            "has a wildcard other than a first label",
        ),
    ];
    for (extra, words) in cases {
        let mut args = vec!["connect", "ws://127.0.0.1:9/"];
        args.extend_from_slice(extra);
        let (status, _, stderr) = common::run(&args, "");
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(extra[0]) && stderr.contains(words),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn help_and_version_exit_0() {
    let (status, stdout, _) = common::run(&["connect", "--help"], "");
    assert!(status.success());
    let text = stdout.join("\n");
    for needle in [
        "--close-before-open",
        "--json",
        "/binary HEX",
        "(CRLF input) is dropped too",
        "Offer permessage-deflate compression",
        "--deflate-server-no-context-takeover",
        "--deflate-client-no-context-takeover",
        "--deflate-server-window-bits <BITS>",
        "--deflate-client-window-bits <BITS>",
        "--deflate-threshold <BYTES>",
        "--deflate-level <LEVEL>",
        "/close [CODE [REASON]]",
        "/quit",
        "--reconnect-base <MS>",
        "--reconnect-cap <MS>",
        "--reconnect-max <N>",
        "--reconnect-no-carry",
        "--reconnect-on-4xx",
        "--reconnect-codes <CODES>",
        "--reconnect-seed <N>",
        "--text",
        "--binary",
        "--raw-output",
        "--verbose",
        "--quiet",
        "--max-messages <N>",
        "--max-message-size <BYTES>",
        "--linger <MS>",
        "--linger-max <MS>",
        "--no-linger",
        "Exit status:",
        "  0  the last connection closed cleanly",
        "  3  the connection could not be made",
        "  4  the connection ended abnormally",
        "  5  it closed cleanly but some sends failed",
    ] {
        assert!(text.contains(needle), "help lacks {needle}");
    }
    let (status, stdout, _) = common::run(&["serve", "--help"], "");
    assert!(status.success());
    let text = stdout.join("\n");
    for needle in ["--broadcast", "--protocol <P>", "--json", "SIGTERM", "1001"] {
        assert!(text.contains(needle), "serve help lacks {needle}");
    }
    let (status, stdout, _) = common::run(&["--version"], "");
    assert!(status.success());
    assert!(stdout[0].starts_with("wxsocket "));
}

/// A PEM file that parses but holds a certificate rustls refuses: a usage error naming
/// `--ca-file`, on one line, before any IO, whichever adapter.
#[test]
fn ca_file_rejected_by_rustls_names_the_option() {
    // Valid PEM armour and base64 around bytes that are not a certificate.
    let pem = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n";
    let path = common::temp_file("not-a-cert.pem", pem);
    let path = path.to_str().unwrap();
    for blocking in [false, true] {
        let args = vec!["connect", "ws://127.0.0.1:9/", "--ca-file", path];
        let args = common::with_adapter(args, blocking);
        let (status, stdout, stderr) = common::run(&args, "");
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?} printed {stdout:?}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: not one line: {stderr:?}");
        assert!(
            lines[0].starts_with("wxsocket: error: ")
                && lines[0].contains("--ca-file")
                && lines[0].contains(path)
                && lines[0].contains("rejected by rustls"),
            "{args:?}: {:?}",
            lines[0]
        );
    }
}

/// Runs `args` and expects a usage error: exit 2, nothing on stdout, one line on stderr
/// naming `option`'s value as invalid and containing each of `words`.
fn expect_invalid_value(args: &[&str], option: &str, words: &[&str]) {
    let (status, stdout, stderr) = common::run(args, "");
    assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stdout.is_empty(), "{args:?} printed {stdout:?}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: not one line: {stderr:?}");
    assert!(
        lines[0].starts_with(&format!("wxsocket: error: invalid value for '{option}"))
            && words.iter().all(|w| lines[0].contains(w)),
        "{args:?}: {:?}",
        lines[0]
    );
}

/// An unusable client certificate or key is a usage error naming its option and file, on
/// one line, before any IO, whichever adapter: a key that is not the certificate's, a key
/// file without a key, a certificate file without a certificate, and the key looked for in
/// the certificate's file when `--client-key` is not given. `--client-key` alone is refused.
#[test]
fn an_unusable_client_certificate_or_key_names_the_option() {
    let ca = wxsocket_test_pki::TestCa::generate("mine");
    let other = wxsocket_test_pki::TestCa::generate("other");
    let cert = common::temp_file("client-mine.pem", &ca.client_cert_pem);
    let key = common::temp_file("client-mine.key", &ca.client_key_pem);
    let other_key = common::temp_file("client-other.key", &other.client_key_pem);
    let (cert, key, other_key) = (
        cert.to_str().unwrap(),
        key.to_str().unwrap(),
        other_key.to_str().unwrap(),
    );
    let cases: [(&[&str], &str, &str, &str); 4] = [
        (
            &["--client-cert", cert, "--client-key", other_key],
            "--client-key",
            other_key,
            "not the certificate's",
        ),
        (
            &["--client-cert", cert, "--client-key", cert],
            "--client-key",
            cert,
            "no private key",
        ),
        (
            &["--client-cert", key, "--client-key", key],
            "--client-cert",
            key,
            "no certificate",
        ),
        (
            &["--client-cert", cert],
            "--client-cert",
            cert,
            "without --client-key, the key is read from the certificate's file",
        ),
    ];
    for (options, option, path, problem) in cases {
        for blocking in [false, true] {
            let mut args = vec!["connect", "ws://127.0.0.1:9/"];
            args.extend(options);
            let args = common::with_adapter(args, blocking);
            expect_invalid_value(&args, option, &[path, problem]);
        }
    }
    let (status, _, stderr) =
        common::run(&["connect", "ws://127.0.0.1:9/", "--client-key", key], "");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--client-cert"), "{stderr}");
}

/// A client certificate for a ws:// URL (or http://, which means it) is refused before any
/// IO, naming the option: it would never be presented, and the command would go on without
/// the mutual TLS it was given for.
#[test]
fn a_client_certificate_for_a_plain_url_is_refused() {
    let ca = wxsocket_test_pki::TestCa::generate("plain");
    let cert = common::temp_file("client-plain.pem", &ca.client_cert_pem);
    let key = common::temp_file("client-plain.key", &ca.client_key_pem);
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    for url in ["ws://127.0.0.1:9/", "http://127.0.0.1:9/"] {
        for blocking in [false, true] {
            let args = common::with_adapter(
                vec!["connect", url, "--client-cert", cert, "--client-key", key],
                blocking,
            );
            expect_invalid_value(&args, "--client-cert", &["ws://127.0.0.1:9/", "use wss://"]);
        }
    }
}

/// `serve`'s TLS files are checked before the address is bound: a usage error naming the
/// option and file, on one line; `--tls-key` and `--client-ca` need `--tls-cert`.
#[test]
fn serve_tls_files_are_checked_before_listening() {
    let ca = wxsocket_test_pki::TestCa::generate("serve-files");
    let other = wxsocket_test_pki::TestCa::generate("other");
    let cert = common::temp_file("serve-files-server.pem", &ca.cert_pem);
    let other_key = common::temp_file("serve-files-other.key", &other.key_pem);
    let key_only = common::temp_file("serve-files-key-only.pem", &ca.key_pem);
    let (cert, other_key, key_only) = (
        cert.to_str().unwrap(),
        other_key.to_str().unwrap(),
        key_only.to_str().unwrap(),
    );
    let cases: [(&[&str], &str, &str); 4] = [
        (
            &["--tls-cert", cert, "--tls-key", other_key],
            "--tls-key",
            "not the certificate's",
        ),
        (&["--tls-cert", cert], "--tls-cert", "no private key"),
        (&["--tls-cert", key_only], "--tls-cert", "no certificate"),
        (
            &[
                "--tls-cert",
                cert,
                "--tls-key",
                other_key,
                "--client-ca",
                key_only,
            ],
            "--client-ca",
            "no certificate",
        ),
    ];
    for (options, option, problem) in cases {
        let mut args = vec!["serve", "--addr", "127.0.0.1:0"];
        args.extend(options);
        expect_invalid_value(&args, option, &[problem]);
    }
    for alone in ["--tls-key", "--client-ca"] {
        let (status, _, stderr) = common::run(&["serve", alone, cert], "");
        assert_eq!(status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("--tls-cert"), "{stderr}");
    }
}

/// A PEM file cut short says so in words, not as the parser's bytes.
#[test]
fn a_truncated_ca_file_is_named_in_words() {
    let pem = "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n";
    let path = common::temp_file("cut-short.pem", pem);
    let path = path.to_str().unwrap();
    let (status, _, stderr) = common::run(&["connect", "ws://127.0.0.1:9/", "--ca-file", path], "");
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--ca-file")
            && stderr.contains("a CERTIFICATE section has no END line: the file is cut short")
            && !stderr.contains("[45, 45"),
        "{stderr:?}"
    );
}

/// `--nodelay` sets `TCP_NODELAY` on the client's socket: the open is followed by the
/// socket line, which reads the option back from the socket (getsockopt), on both adapters.
#[test]
fn nodelay_is_read_back_from_the_socket() {
    let server = common::TestServer::start(common::Mode::Echo, false);
    for blocking in [false, true] {
        for (flag, expected) in [(Some("--nodelay"), "on"), (None, "off")] {
            // The annotated timeline (`-v`) shows the socket line.
            let mut args = vec!["connect", server.url(), "-v"];
            args.extend(flag);
            let args = common::with_adapter(args, blocking);
            let mut proc = common::Proc::spawn(&args);
            proc.expect("open", |l| l.contains("#1 open"));
            let socket = proc.expect("socket line", |l| l.contains("#1 socket "));
            assert!(
                socket.ends_with(&format!("TCP_NODELAY {expected}")),
                "{args:?}: {socket}"
            );
            let port = &server.url()["ws://127.0.0.1:".len()..server.url().len() - 1];
            assert!(
                socket.contains(&format!("-> 127.0.0.1:{port},")),
                "{socket}"
            );
            let (status, _, stderr) = proc.finish();
            assert!(status.success(), "{stderr}");
        }
    }
}

/// `http://` and `https://` URLs are mapped to `ws://` and `wss://`: the dial goes to the
/// mapped URL (an echo over plain TCP for `http`; a TLS handshake for `https`, which the
/// plain server cannot answer).
#[test]
fn http_urls_are_mapped_to_websocket_urls() {
    let server = common::TestServer::start(common::Mode::Echo, false);
    let ws = server.url().to_owned();
    let http = ws.replacen("ws://", "http://", 1);
    let mut proc = common::Proc::spawn(&["connect", &http, "--json"]);
    let connecting = proc.expect_json("connecting", |v| common::event(v) == "connecting");
    assert_eq!(connecting["url"], ws.as_str());
    proc.expect_json("open", |v| common::event(v) == "open");
    proc.write("over http");
    let echo = proc.expect_json("echo", |v| common::event(v) == "message");
    assert_eq!(echo["data"], "over http");
    let (status, _, stderr) = proc.finish();
    assert!(status.success(), "{stderr}");
    assert_eq!(server.seen().len(), 1);

    let https = ws.replacen("ws://", "https://", 1);
    let mut proc = common::Proc::spawn(&["connect", &https, "--json"]);
    let connecting = proc.expect_json("connecting", |v| common::event(v) == "connecting");
    assert_eq!(
        connecting["url"],
        ws.replacen("ws://", "wss://", 1).as_str()
    );
    let error = proc.expect_json("error", |v| common::event(v) == "error");
    let text = error["error"].as_str().unwrap().to_lowercase();
    assert!(text.contains("tls"), "{error}");
    let (status, _, stderr) = proc.finish();
    // Exit status 3: the connection could not be made.
    assert_eq!(status.code(), Some(3), "{stderr}");
    // The plain server never saw an upgrade request: the client spoke TLS.
    assert_eq!(server.seen().len(), 1);
}

/// `/help` prints the command list (on stderr, so piped output stays events only) and
/// sends nothing.
#[test]
fn help_command_lists_the_commands_and_sends_nothing() {
    let server = common::TestServer::start(common::Mode::Echo, false);
    let (status, stdout, stderr) =
        common::run(&["connect", server.url(), "--json"], "/help\n/sleep 300\n");
    assert!(status.success(), "{stderr}");
    for needle in [
        "/binary HEX",
        "/close [CODE [REASON]]",
        "/connect URL",
        "/sleep MS",
        "/quit (or /exit)",
        "/help (or /?)",
    ] {
        assert!(stderr.contains(needle), "/help lacks {needle}: {stderr}");
    }
    let kinds: Vec<String> = stdout
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            common::event(&v).to_owned()
        })
        .collect();
    assert_eq!(kinds, ["connecting", "open", "close"], "{stdout:?}");
}

/// `--blocking` runs the session on `wxsocket-blocking`: the process's threads (Linux
/// `/proc`) are the blocking adapter's driver and event threads, and no tokio runtime; by
/// default, the tokio runtime's workers and no blocking driver.
#[cfg(target_os = "linux")]
#[test]
fn blocking_selects_the_blocking_adapter() {
    let server = common::TestServer::start(common::Mode::Echo, false);
    for blocking in [false, true] {
        let args = common::with_adapter(vec!["connect", server.url(), "--json"], blocking);
        let mut proc = common::Proc::spawn(&args);
        proc.expect_json("open", |v| common::event(v) == "open");
        let tasks = std::path::PathBuf::from(format!("/proc/{}/task", proc.pid()));
        let threads: Vec<String> = std::fs::read_dir(&tasks)
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|name| name.trim().to_owned())
            .collect();
        let tokio = threads.iter().any(|t| t == "wxsocket-rt");
        let driver = threads
            .iter()
            .any(|t| t.starts_with("wxsocket-") && t != "wxsocket-rt" && t != "wxsocket-events");
        assert_eq!(
            (tokio, driver),
            (!blocking, blocking),
            "blocking: {blocking}, threads: {threads:?}"
        );
        let (status, _, stderr) = proc.finish();
        assert!(status.success(), "{stderr}");
    }
}

/// A CR or LF in `-H`, even at the edge of the name or the value, is a usage error (it
/// used to be trimmed away); spaces and tabs around them are still optional whitespace.
#[test]
fn header_with_cr_or_lf_at_an_edge_exits_2() {
    for header in [
        "X-A: v\r",
        "X-A: v\n",
        "X-A:\r\nv",
        "\nX-A: v",
        "X-A\r: v",
        "X-A: v\r\n",
    ] {
        let args = ["connect", "ws://127.0.0.1:9/", "-H", header];
        let (status, stdout, stderr) = common::run(&args, "");
        assert_eq!(status.code(), Some(2), "{header:?}: {stderr}");
        assert!(stdout.is_empty(), "{header:?} printed {stdout:?}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{header:?}: not one line: {stderr:?}");
        assert!(
            lines[0].contains("--header") && lines[0].contains("CR or LF"),
            "{header:?}: {:?}",
            lines[0]
        );
    }
}

/// A zero linger written with leading zeros is the documented 0, not a usage error.
#[test]
fn zero_lingers_may_be_written_with_leading_zeros() {
    let url = format!("ws://127.0.0.1:{}/", common::closed_port());
    let args = [
        "connect",
        url.as_str(),
        "--linger",
        "00",
        "--linger-max",
        "000",
    ];
    let (status, _, stderr) = common::run(&args, "");
    // The dial fails (3): the options were accepted.
    assert_eq!(status.code(), Some(3), "{stderr}");
}

/// A process out of open files cannot start either adapter: status 1 (not 2: no option
/// caused it), and stderr says what the OS refused, with its error, instead of calling it an
/// invalid configuration (the blocking adapter said "io: could not create the OS poller";
/// the tokio runtime's refusal panicked). Four descriptors: the standard three, and one the
/// dynamic loader opens and closes again.
#[cfg(target_os = "linux")]
#[test]
fn out_of_open_files_exits_1_saying_what_the_os_refused() {
    for (blocking, refused) in [
        (
            true,
            "cannot start wxsocket-blocking: could not create the OS poller",
        ),
        (
            false,
            "cannot start wxsocket-tokio: could not start the tokio runtime",
        ),
    ] {
        let mut args = vec!["--nofile=4:4", "--", common::bin()];
        args.extend(common::with_adapter(
            vec!["connect", "ws://127.0.0.1:9/"],
            blocking,
        ));
        let (status, _, stderr) =
            common::run_program("prlimit", &args, std::process::Stdio::null());
        assert_eq!(status.code(), Some(1), "blocking={blocking}: {stderr}");
        assert!(
            stderr.contains(refused) && stderr.contains("Too many open files"),
            "blocking={blocking}: {stderr}"
        );
        assert!(!stderr.contains("invalid"), "blocking={blocking}: {stderr}");
    }
}

/// Under every limit on open files from four up (the standard three, and one the dynamic
/// loader needs a moment), `connect` ends in one of its
/// documented statuses: 0 (it opened, and closed at the end of its input), 1 (an adapter
/// could not start) or 3 (the dial failed), saying why; never a panic's 101. With 13 or 14
/// descriptors the blocking adapter's command panicked: tokio makes its signal pipe while it
/// builds the signal thread's runtime, and panics when the OS refuses it.
#[cfg(target_os = "linux")]
#[test]
fn under_any_limit_on_open_files_connect_ends_in_a_documented_status() {
    let server = common::TestServer::start(common::Mode::Echo, false);
    for blocking in [false, true] {
        for limit in 4..=24 {
            let nofile = format!("--nofile={limit}:{limit}");
            let mut args = vec![nofile.as_str(), "--", common::bin()];
            args.extend(common::with_adapter(
                vec!["connect", server.url()],
                blocking,
            ));
            let (status, _, stderr) =
                common::run_program("prlimit", &args, std::process::Stdio::null());
            assert!(
                matches!(status.code(), Some(0 | 1 | 3)),
                "blocking={blocking}, {limit} descriptors: {status:?}\n{stderr}"
            );
            if status.code() != Some(0) {
                assert!(
                    stderr.contains("Too many open files"),
                    "blocking={blocking}, {limit} descriptors: {stderr}"
                );
            }
            assert!(
                !stderr.contains("panicked"),
                "blocking={blocking}, {limit} descriptors: {stderr}"
            );
        }
    }
}
