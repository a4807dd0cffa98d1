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
        (&["serve", "--addr", "nowhere"], "--addr"),
        (&["serve", "--deflate", "9"], "9"),
        (&["bench", "--json"], "--json"),
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

#[test]
fn help_and_version_exit_0() {
    let (status, stdout, _) = common::run(&["connect", "--help"], "");
    assert!(status.success());
    let text = stdout.join("\n");
    for needle in [
        "--close-before-open",
        "--json",
        "/binary HEX",
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
    ] {
        assert!(text.contains(needle), "help lacks {needle}");
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
