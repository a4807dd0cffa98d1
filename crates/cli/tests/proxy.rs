//! `--proxy` and `--no-proxy` through the binary, with the test `CONNECT` and SOCKS5
//! proxies of `wxsocket-tests` on loopback: an explicit proxy on both adapters, the proxy environment
//! variables (set for the child process only), and the usage error for a bad proxy URL.

mod common;

use common::{Proc, WAIT, event, run, with_adapter};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use wxsocket_tests::peer::{Mode, Peer};
use wxsocket_tests::proxy::{ProxyMode, TestProxy};
use wxsocket_tests::socks::TestSocksProxy;

/// Runs `wxsocket connect URL --json --proxy PROXY_URL`, expects it to open and echo a line,
/// and to show nothing of `secret`.
fn echo_through(blocking: bool, url: &str, proxy_url: &str, secret: &str) {
    let args = with_adapter(
        vec!["connect", url, "--json", "--proxy", proxy_url],
        blocking,
    );
    let mut proc = Proc::spawn(&args);
    let open = proc.expect_json("open", |v| matches!(event(v), "open" | "close"));
    assert_eq!(open["event"], "open", "{:?}", proc.seen);
    proc.write("via proxy");
    proc.expect_json("echo", |v| event(v) == "message");
    let (status, lines, stderr) = proc.finish();
    assert!(status.success(), "exit {status}: {stderr}");
    let everything = format!("{lines:?} {stderr}");
    assert!(!everything.contains(secret), "the password was shown");
}

fn through_an_explicit_proxy(blocking: bool) {
    let peer = Peer::start(Mode::Echo);
    let proxy = TestProxy::with_credentials("cli", "pw-9f3");
    echo_through(
        blocking,
        &peer.url(),
        &proxy.url_with("cli", "pw-9f3"),
        "pw-9f3",
    );
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0].target, peer.addr().to_string());
    assert_eq!(requests[0].status, Some(200));
}

/// `--proxy socks5h://USER:PASSWORD@…`: a name only the proxy resolves opens.
fn through_a_socks5_proxy(blocking: bool) {
    let peer = Peer::start(Mode::Echo);
    let proxy = TestSocksProxy::with_credentials("cli", "pw-5c7");
    let url = format!("ws://echo.wxsocket.test:{}/", peer.addr().port());
    echo_through(blocking, &url, &proxy.url_with("cli", "pw-5c7"), "pw-5c7");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(
        requests[0].target,
        format!("echo.wxsocket.test:{}", peer.addr().port())
    );
    assert_eq!(requests[0].reply, Some(0));
}

/// `-v`'s socket line names the proxy's address as the proxy's.
#[test]
fn the_socket_line_says_the_other_end_is_the_proxy() {
    let peer = Peer::start(Mode::Echo);
    let proxy = TestSocksProxy::start(wxsocket_tests::socks::SocksMode::Tunnel);
    let url = format!("ws://echo.wxsocket.test:{}/", peer.addr().port());
    let mut proc = Proc::spawn(&["connect", &url, "--proxy", &proxy.url(), "-v"]);
    let socket = proc.expect("socket line", |l| l.contains("#1 socket "));
    assert!(
        socket.contains(&format!("-> {} (the proxy), TCP_NODELAY", proxy.addr())),
        "{socket}"
    );
    let (status, _, stderr) = proc.finish();
    assert!(status.success(), "{stderr}");
}

#[test]
fn through_a_socks5_proxy_tokio() {
    through_a_socks5_proxy(false);
}

#[test]
fn through_a_socks5_proxy_blocking() {
    through_a_socks5_proxy(true);
}

/// A SOCKS5 proxy that refuses the credentials: the connection could not be made (exit
/// 3), the error says so and names the proxy, and nothing shows the password.
#[test]
fn a_socks5_proxy_refusing_the_credentials_ends_with_status_3() {
    let proxy = TestSocksProxy::with_credentials("cli", "pw-5c7");
    let url = "ws://echo.wxsocket.test:9/";
    let (status, lines, stderr) = run(
        &[
            "connect",
            url,
            "--proxy",
            &proxy.url_with("cli", "wrong-pw"),
        ],
        "",
    );
    assert_eq!(status.code(), Some(3), "{stderr}");
    let everything = format!("{lines:?} {stderr}");
    assert!(
        everything.contains(&format!(
            "proxy {} refused the user name and password",
            proxy.url()
        )),
        "{everything}"
    );
    assert!(!everything.contains("wrong-pw"), "{everything}");
}

#[test]
fn through_an_explicit_proxy_tokio() {
    through_an_explicit_proxy(false);
}

#[test]
fn through_an_explicit_proxy_blocking() {
    through_an_explicit_proxy(true);
}

/// Runs `wxsocket connect URL --json EXTRA` with `vars` added to its environment (the
/// proxy variables of the test's own environment removed), until its first `open` or
/// `close` line; then ends its input and waits for it. Returns that line's event and the
/// exit status.
fn connect_with_env(url: &str, extra: &[&str], vars: &[(&str, &str)]) -> (String, Option<i32>) {
    let mut command = Command::new(common::bin());
    command.arg("connect").arg(url).arg("--json").args(extra);
    for name in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied());
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wxsocket");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if matches!(event(&v), "open" | "close") {
                let _ = tx.send(event(&v).to_owned());
            }
        }
    });
    let first = rx.recv_timeout(WAIT);
    let _ = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(b"/quit\n"));
    let status = child.wait().expect("wait for wxsocket");
    (first.expect("no open or close line in time"), status.code())
}

#[test]
fn environment_and_no_proxy() {
    let peer = Peer::start(Mode::Echo);
    let proxy = TestProxy::start(ProxyMode::Tunnel);
    let proxy_url = proxy.url();
    // A `.test` name only the proxy resolves (to 127.0.0.1).
    let url = format!("ws://echo.wxsocket.test:{}/", peer.addr().port());
    let vars = [("http_proxy", proxy_url.as_str())];
    assert_eq!(connect_with_env(&url, &[], &vars), ("open".into(), Some(0)));
    assert_eq!(proxy.requests().len(), 1);
    // --no-proxy: the environment is ignored, so the name cannot be resolved.
    // Exit status 3: the connection could not be made.
    assert_eq!(
        connect_with_env(&url, &["--no-proxy"], &vars),
        ("close".into(), Some(3))
    );
    assert_eq!(proxy.requests().len(), 1, "--no-proxy used the proxy");
    // `ALL_PROXY=socks5h://…`, as Clash or `ssh -D` users have it.
    let socks = TestSocksProxy::start(wxsocket_tests::socks::SocksMode::Tunnel);
    let vars = [("ALL_PROXY", socks.url())];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(connect_with_env(&url, &[], &vars), ("open".into(), Some(0)));
    assert_eq!(socks.requests().len(), 1);
}

#[test]
fn a_bad_proxy_url_is_a_usage_error() {
    for (proxy, why) in [
        (
            "https://u:topsecret@127.0.0.1:1",
            "https:// proxies are not supported",
        ),
        ("socks4://127.0.0.1:1", "unsupported proxy scheme"),
        ("http://u:topsecret@127.0.0.1:99999", "invalid proxy URL"),
    ] {
        let (status, lines, stderr) = run(&["connect", "ws://127.0.0.1:9", "--proxy", proxy], "");
        assert_eq!(status.code(), Some(2), "{proxy}: {stderr}");
        assert!(lines.is_empty(), "{lines:?}");
        assert!(
            stderr.contains("'--proxy'") && stderr.contains(why),
            "{proxy}: {stderr}"
        );
        assert!(!stderr.contains("topsecret"), "{stderr}");
    }
    let (status, _, stderr) = run(
        &[
            "connect",
            "ws://127.0.0.1:9",
            "--proxy",
            "http://p:1",
            "--no-proxy",
        ],
        "",
    );
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--no-proxy"), "{stderr}");
}

/// A proxy variable the URL would go through that is no usable proxy URL (a desktop's
/// `ALL_PROXY=socks4://…`) is a usage error as a bad `--proxy` is, naming the variable and
/// never its password (it used to fail every dial, and retry for ever with --reconnect); with
/// `--no-proxy` the variable does not matter.
#[test]
fn a_bad_proxy_variable_is_a_usage_error() {
    for blocking in [false, true] {
        let args = with_adapter(vec!["connect", "ws://echo.wxsocket.test:9/"], blocking);
        let output = Command::new(common::bin())
            .args(&args)
            .env("ALL_PROXY", "socks4://u:topsecret@127.0.0.1:1080")
            .stdin(Stdio::null())
            .output()
            .expect("run wxsocket");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(output.stdout.is_empty(), "{output:?}");
        assert!(
            stderr.contains("error: ALL_PROXY (from the environment): unsupported proxy scheme"),
            "{stderr}"
        );
        assert!(!stderr.contains("topsecret"), "{stderr}");
    }
    let peer = Peer::start(Mode::Echo);
    let vars = [("all_proxy", "socks4://127.0.0.1:1080")];
    assert_eq!(
        connect_with_env(&peer.url().replace("127.0.0.1", "localhost"), &[], &vars),
        ("open".into(), Some(0)),
        "loopback goes direct"
    );
    let url = format!("ws://127.0.0.2:{}/", peer.addr().port());
    let (event, status) = connect_with_env(&url, &["--no-proxy"], &vars);
    assert_eq!(event, "close", "nothing listens on 127.0.0.2");
    assert_eq!(status, Some(3), "--no-proxy dials, and fails as a dial");
}
