//! HTTP `CONNECT` and SOCKS5 proxies over real sockets, on both adapters: every scenario is written
//! once, generic over [`Adapter`], and the `scenarios!` macro instantiates it for the tokio
//! adapter (`on_tokio::…`) and the blocking adapter (`on_blocking::…`), as in
//! `conformance.rs`.
//!
//! The proxy is the test [`TestProxy`] (or [`TestSocksProxy`]) on loopback; the server is
//! the test [`Peer`]. The proxy records each request (target, `Proxy-Authorization`, its answer, the first bytes
//! sent through the tunnel), so the scenarios check what went over the wire, not only the
//! client's events. Every client is given its proxy environment explicitly, so no scenario
//! depends on the variables of the machine that runs it.

use std::time::{Duration, Instant};
use wxsocket_core::{
    ConnId, ConnectOptions, ConnectionError, DialStage, Event, Message, ReconnectPolicy,
    SessionConfig, TransportErrorKind,
};
use wxsocket_tests::adapter::{Adapter, EVENT_TIMEOUT};
use wxsocket_tests::peer::{Mode, Peer, Tls};
use wxsocket_tests::proxy::{ProxyMode, TestProxy};
use wxsocket_tests::scenario::{
    assert_quiet_for, close_cleanly, expect_connecting, messages, open,
};
use wxsocket_tests::socks::{SocksMode, TestSocksProxy};
use wxsocket_wire::client::Config;
use wxsocket_wire::proxy::ProxyEnv;
use wxsocket_wire::tls::TlsRoots;

wxsocket_tests::on_both_adapters!(
    ws_through_the_proxy,
    wss_through_the_proxy_is_tls_end_to_end,
    basic_credentials_right_and_wrong,
    refusals_name_the_proxy_and_status_and_follow_the_reconnect_policy,
    a_silent_proxy_is_bounded_by_the_handshake_timeout,
    misbehaving_proxies_fail_the_dial_with_an_error_naming_them,
    a_tunnel_that_closes_before_the_server_answers_names_the_proxy,
    the_environment_routes_through_the_proxy_but_not_loopback,
    no_proxy_option_ignores_the_environment,
    no_proxy_entries_match_hosts_and_ports_as_users_write_them,
    an_invalid_proxy_variable_is_refused_before_any_io_naming_it,
    socks5_gives_the_proxy_the_name_to_resolve_and_tunnels,
    wss_through_socks5_is_tls_end_to_end,
    socks5_credentials_right_wrong_and_missing,
    socks5_refusals_are_named_and_follow_the_reconnect_policy,
    misbehaving_socks5_proxies_fail_the_dial_with_an_error_naming_them,
    a_silent_socks5_proxy_is_bounded_by_the_handshake_timeout,
    the_environment_routes_through_a_socks5_proxy_but_not_loopback,
    a_host_name_socks5_cannot_carry_is_refused_before_any_io,
    a_socks5_proxy_down_behind_a_forwarder_is_dialled_again_until_it_is_up,
);

/// The password every scenario with credentials uses: it must never show up in an event.
const SECRET: &str = "s3cr3t-pw";

/// A client whose proxy environment is exactly `env` (never the machine's).
fn client_with<A: Adapter>(env: ProxyEnv, session: SessionConfig, tls: TlsRoots) -> A {
    A::with_config(Config::new().session(session).tls(tls).proxy_env(env))
        .unwrap_or_else(|e| panic!("[{}] config rejected: {e}", A::NAME))
}

fn session() -> SessionConfig {
    SessionConfig::default()
        .handshake_timeout(Duration::from_secs(5))
        .close_timeout(Duration::from_secs(2))
}

/// Dials `options` and expects the dial to fail as a direct one to a `.test` name does: such a
/// name resolves only at the test proxy, so the dial fails at resolution (or, with a resolver
/// that never answers, at the handshake timeout).
fn dial_fails_direct<A: Adapter>(a: &mut A, options: &ConnectOptions, what: &str) {
    let conn = a.connect(options).unwrap();
    expect_connecting(a, conn);
    let events = a.events_until_close(conn, EVENT_TIMEOUT);
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::Error {
                    error: ConnectionError::ConnectFailed(_)
                        | ConnectionError::HandshakeTimeout { .. },
                    ..
                },
                Event::Close { code: 1006, .. }
            ]
        ),
        "[{}] {what}: {events:#?}",
        A::NAME
    );
}

/// Sends a text message and expects it back; then closes cleanly.
fn echo_and_close<A: Adapter>(a: &mut A, conn: ConnId, text: &str) {
    a.try_send(Message::text(text))
        .unwrap_or_else(|e| panic!("[{}] send refused: {e}", A::NAME));
    let events = a.events_until("the echo", EVENT_TIMEOUT, |seen| !messages(seen).is_empty());
    assert_eq!(
        messages(&events),
        vec![Message::text(text)],
        "[{}]",
        A::NAME
    );
    close_cleanly(a, conn);
}

/// Expects the dial of `conn` to fail: `[Error(ConnectFailed), Close 1006]`; returns the
/// error, after checking that neither event shows the secret in `Display` or `Debug`.
fn expect_dial_failure<A: Adapter>(a: &mut A, conn: ConnId) -> wxsocket_core::TransportError {
    let events = a.events_until_close(conn, EVENT_TIMEOUT);
    assert_no_secret(&events);
    match events.as_slice() {
        [
            Event::Error {
                error: ConnectionError::ConnectFailed(e),
                ..
            },
            Event::Close {
                code: 1006,
                clean: false,
                ..
            },
        ] => e.clone(),
        other => panic!(
            "[{}] expected [Error(ConnectFailed), Close 1006], got {other:#?}",
            A::NAME
        ),
    }
}

fn assert_no_secret(events: &[Event]) {
    for event in events {
        let shown = match event {
            Event::Error { error, .. } => format!("{error} {error:?}"),
            other => format!("{other:?}"),
        };
        assert!(!shown.contains(SECRET), "the password leaked: {shown}");
        assert!(!shown.contains("s3cr3t"), "the password leaked: {shown}");
    }
}

fn ws_through_the_proxy<A: Adapter>() {
    let name = A::NAME;
    let peer = Peer::start(Mode::Echo);
    let proxy = TestProxy::start(ProxyMode::Tunnel);
    // The machine's environment is not consulted: an empty one is given.
    let mut a: A = client_with(ProxyEnv::empty(), session(), TlsRoots::default());
    let url = format!("{}chat?x=1", peer.url());
    let (conn, _) = open(&mut a, &ConnectOptions::new(&url).proxy(proxy.url()));
    let socket = a.socket_info().expect("an open connection has a socket");
    assert!(socket.proxied, "[{name}] {socket:?}");
    assert_eq!(socket.peer_addr.to_string(), proxy.url()["http://".len()..]);
    echo_and_close(&mut a, conn, "through the tunnel");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1, "[{name}] {requests:#?}");
    let t = &requests[0];
    assert_eq!(t.method, "CONNECT");
    assert_eq!(t.target, peer.addr().to_string());
    assert_eq!((t.authorization.as_deref(), t.status), (None, Some(200)));
    // The upgrade request went through the tunnel, as sent to a server (origin form).
    let first = String::from_utf8_lossy(&t.first_bytes);
    assert!(
        first.starts_with("GET /chat?x=1 HTTP/1.1\r\n"),
        "[{name}] {first}"
    );
    let snapshot = peer.snapshot();
    assert_eq!(snapshot.accepted, 1, "[{name}]");
}

fn wss_through_the_proxy_is_tls_end_to_end<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo).tls(Tls::Trusted).start();
    let proxy = TestProxy::start(ProxyMode::Tunnel);
    wss_through::<A>(&peer, &proxy.url());
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1, "[{}] {requests:#?}", A::NAME);
    let t = &requests[0];
    assert_eq!(t.target, format!("localhost:{}", peer.addr().port()));
    assert_tls_in_the_tunnel::<A>(&t.first_bytes, t.sni());
}

/// Echoes over `wss://localhost:PORT/` of the TLS `peer` through the proxy at `via`. By
/// name: the certificate is checked against `localhost`, which only the server's
/// certificate can match (the proxy sees ciphertext only).
fn wss_through<A: Adapter>(peer: &Peer, via: &str) {
    let name = A::NAME;
    let roots = TlsRoots::only(vec![peer.ca_cert().unwrap()]);
    let mut a: A = client_with(ProxyEnv::empty(), session(), roots);
    let url = format!("wss://localhost:{}/", peer.addr().port());
    let (conn, _) = open(&mut a, &ConnectOptions::new(url).proxy(via));
    let socket = a.socket_info().expect("an open connection has a socket");
    assert!(socket.tls && socket.proxied, "[{name}] {socket:?}");
    echo_and_close(&mut a, conn, "secret inside TLS");
}

/// What the client sent first through a tunnel is a TLS ClientHello for `localhost`, and
/// the proxy saw nothing of the upgrade.
fn assert_tls_in_the_tunnel<A: Adapter>(first_bytes: &[u8], sni: Option<String>) {
    let name = A::NAME;
    assert_eq!(
        first_bytes.first(),
        Some(&22),
        "[{name}] a TLS record first"
    );
    assert_eq!(sni.as_deref(), Some("localhost"), "[{name}] SNI");
    let relayed = String::from_utf8_lossy(first_bytes);
    assert!(
        !relayed.contains("GET /") && !relayed.contains("Upgrade"),
        "[{name}] the proxy saw the upgrade in clear"
    );
}

fn basic_credentials_right_and_wrong<A: Adapter>() {
    let name = A::NAME;
    let peer = Peer::start(Mode::Echo);
    let proxy = TestProxy::with_credentials("alice", SECRET);
    let mut a: A = client_with(ProxyEnv::empty(), session(), TlsRoots::default());

    // Right credentials (the '@' and ':' of a password are percent-encoded in a URL).
    let options = ConnectOptions::new(peer.url()).proxy(proxy.url_with("alice", SECRET));
    assert!(
        !format!("{options:?}").contains(SECRET),
        "[{name}] Debug of the options shows the password"
    );
    let request = options.validate().unwrap();
    assert!(!format!("{request:?}").contains(SECRET));
    let conn = a.connect(&options).unwrap();
    expect_connecting(&mut a, conn);
    let open = a.expect_event("Open");
    assert!(matches!(open, Event::Open { .. }), "[{name}] {open:#?}");
    assert_no_secret(&[open]);
    assert!(a.socket_info().unwrap().proxied, "[{name}]");
    echo_and_close(&mut a, conn, "authorized");
    let expected = format!(
        "Basic {}",
        data_encoding::BASE64.encode(format!("alice:{SECRET}").as_bytes())
    );
    assert_eq!(
        proxy.requests()[0].authorization.as_deref(),
        Some(expected.as_str())
    );

    // Wrong password, then none at all: 407, final, the error naming the proxy.
    for url in [proxy.url_with("alice", "s3cr3t-wrong"), proxy.url()] {
        let conn = a
            .connect(&ConnectOptions::new(peer.url()).proxy(url))
            .unwrap();
        expect_connecting(&mut a, conn);
        let error = expect_dial_failure(&mut a, conn);
        assert_eq!(error.kind, TransportErrorKind::HttpStatus(407), "[{name}]");
        assert_eq!(
            error.message,
            format!(
                "proxy {} refused CONNECT {}: HTTP 407 Proxy Authentication Required",
                proxy.url(),
                peer.addr()
            ),
            "[{name}]"
        );
    }
    let statuses: Vec<_> = proxy.requests().iter().map(|t| t.status).collect();
    assert_eq!(statuses, [Some(200), Some(407), Some(407)], "[{name}]");
    assert_eq!(
        peer.snapshot().accepted,
        1,
        "[{name}] only the authorized one"
    );
}

fn refusals_name_the_proxy_and_status_and_follow_the_reconnect_policy<A: Adapter>() {
    let name = A::NAME;
    let peer = Peer::start(Mode::Echo);
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(20), Duration::from_millis(80))
        .seed(3);
    for (status, reason, retried) in [(403, "Forbidden", false), (502, "Bad Gateway", true)] {
        let proxy = TestProxy::start(ProxyMode::Refuse(status));
        let mut a: A = client_with(
            ProxyEnv::empty(),
            session().reconnect(policy.clone()),
            TlsRoots::default(),
        );
        let conn = a
            .connect(&ConnectOptions::new(peer.url()).proxy(proxy.url()))
            .unwrap();
        expect_connecting(&mut a, conn);
        let events = a.events_until_close(conn, EVENT_TIMEOUT);
        let error = match events.as_slice() {
            [
                Event::Error {
                    error: ConnectionError::ConnectFailed(e),
                    ..
                },
                Event::Close { code: 1006, .. },
            ] => e.clone(),
            other => panic!("[{name}] {status}: {other:#?}"),
        };
        assert_eq!(error.kind, TransportErrorKind::HttpStatus(status));
        assert_eq!(
            error.message,
            format!(
                "proxy {} refused CONNECT {}: HTTP {status} {reason}",
                proxy.url(),
                peer.addr()
            )
        );
        if retried {
            // 5xx from the proxy: retried like any failed dial, through the proxy again.
            let events = a.events_until("Reconnecting", EVENT_TIMEOUT, |seen| {
                seen.iter()
                    .any(|e| matches!(e, Event::Reconnecting { attempt: 1, .. }))
            });
            assert!(events.iter().all(|e| !matches!(e, Event::Open { .. })));
            proxy.wait_for("a second CONNECT", EVENT_TIMEOUT, |t| t.len() >= 2);
            a.close(None, "enough").ok();
        } else {
            // 4xx: final, as a server's 4xx answer to the upgrade.
            assert_quiet_for(&mut a, policy.cap * 4, "after a 403 from the proxy");
            assert_eq!(proxy.requests().len(), 1, "[{name}] one dial only");
        }
    }
    assert_eq!(
        peer.snapshot().accepted,
        0,
        "[{name}] nothing reached the server"
    );
}

fn a_silent_proxy_is_bounded_by_the_handshake_timeout<A: Adapter>() {
    let proxy = TestProxy::start(ProxyMode::Silent);
    dial_times_out_in_the_tunnel::<A>(&proxy.url());
    let requests = proxy.wait_for("the CONNECT", EVENT_TIMEOUT, |t| !t.is_empty());
    assert_eq!(requests[0].target, "server.wxsocket.test:9");
    assert_eq!(requests[0].status, None);
}

/// Dials `ws://server.wxsocket.test:9/` through the proxy at `proxy_url`, which never
/// answers: the handshake timeout ends the dial, in the tunnel stage, and not before.
fn dial_times_out_in_the_tunnel<A: Adapter>(proxy_url: &str) {
    let name = A::NAME;
    let timeout = Duration::from_millis(400);
    let mut a: A = client_with(
        ProxyEnv::empty(),
        session().handshake_timeout(timeout),
        TlsRoots::default(),
    );
    let started = Instant::now();
    let conn = a
        .connect(&ConnectOptions::new("ws://server.wxsocket.test:9/").proxy(proxy_url))
        .unwrap();
    expect_connecting(&mut a, conn);
    let events = a.events_until_close(conn, EVENT_TIMEOUT);
    let elapsed = started.elapsed();
    assert!(
        matches!(
            events.as_slice(),
            [
                Event::Error {
                    error: ConnectionError::HandshakeTimeout {
                        stage: Some(DialStage::Tunnel),
                        ..
                    },
                    ..
                },
                Event::Close { code: 1006, .. }
            ]
        ),
        "[{name}] {events:#?}"
    );
    assert!(elapsed >= timeout, "[{name}] ended after {elapsed:?}");
}

fn misbehaving_proxies_fail_the_dial_with_an_error_naming_them<A: Adapter>() {
    let mut a: A = client_with(ProxyEnv::empty(), session(), TlsRoots::default());
    for (mode, kind, says) in [
        (
            ProxyMode::HangUp,
            TransportErrorKind::Protocol,
            "closed the connection before answering CONNECT",
        ),
        (
            ProxyMode::Garbage,
            TransportErrorKind::Protocol,
            "sent an invalid answer: invalid HTTP version",
        ),
        (
            ProxyMode::EndlessHead,
            TransportErrorKind::Protocol,
            "answered CONNECT with a head longer than 16384 bytes",
        ),
    ] {
        let proxy = TestProxy::start(mode.clone());
        fails_at_once(&mut a, &proxy.url(), kind, says, &format!("{mode:?}"));
    }
}

/// Dials `ws://server.wxsocket.test:9/` through the misbehaving proxy at `via`: the dial
/// fails with an error of `kind` that reads `proxy <via> <says>`, well inside the handshake
/// timeout (the failure is the proxy's, seen at once).
fn fails_at_once<A: Adapter>(
    a: &mut A,
    via: &str,
    kind: TransportErrorKind,
    says: &str,
    case: &str,
) {
    let name = A::NAME;
    let started = Instant::now();
    let conn = a
        .connect(&ConnectOptions::new("ws://server.wxsocket.test:9/").proxy(via))
        .unwrap();
    expect_connecting(a, conn);
    let error = expect_dial_failure(a, conn);
    assert_eq!(error.kind, kind, "[{name}] {case}: {error}");
    assert_eq!(
        error.message,
        format!("proxy {via} {says}"),
        "[{name}] {case}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "[{name}] {case}"
    );
}

/// A proxy that answers `200` and then closes the tunnel: the client cannot tell whether
/// the proxy or the server closed it, and its error says so, naming the proxy, for `ws` (the
/// upgrade) and `wss` (TLS).
fn a_tunnel_that_closes_before_the_server_answers_names_the_proxy<A: Adapter>() {
    let name = A::NAME;
    let mut a: A = client_with(ProxyEnv::empty(), session(), TlsRoots::default());
    for (scheme, what) in [("ws", "handshake"), ("wss", "tls")] {
        let proxy = TestProxy::start(ProxyMode::DropAfterOk);
        let url = format!("{scheme}://server.wxsocket.test:9/");
        let conn = a
            .connect(&ConnectOptions::new(url).proxy(proxy.url()))
            .unwrap();
        expect_connecting(&mut a, conn);
        let error = expect_dial_failure(&mut a, conn);
        assert_eq!(
            error.kind,
            TransportErrorKind::Connect,
            "[{name}] {scheme}: {error}"
        );
        assert_eq!(
            error.message,
            format!(
                "{what}: the tunnel through proxy {} closed before the server answered",
                proxy.url()
            ),
            "[{name}] {scheme}"
        );
    }
}

fn the_environment_routes_through_the_proxy_but_not_loopback<A: Adapter>() {
    let name = A::NAME;
    let peer = Peer::start(Mode::Echo);
    let proxy = TestProxy::with_credentials("bob", SECRET);
    let env = ProxyEnv::from_vars([
        ("HTTP_PROXY", proxy.url_with("bob", SECRET)),
        ("https_proxy", "http://127.0.0.1:1".to_owned()),
        ("no_proxy", "example.org".to_owned()),
    ]);
    let mut a: A = client_with(env, session(), TlsRoots::default());
    // A name only the proxy can resolve (`.test` goes to 127.0.0.1 there): the dial can
    // only succeed through it, with the credentials of the variable.
    let url = format!("ws://echo.wxsocket.test:{}/", peer.addr().port());
    let (conn, _) = open(&mut a, &ConnectOptions::new(url));
    echo_and_close(&mut a, conn, "via the environment");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1, "[{name}] {requests:#?}");
    assert_eq!(
        requests[0].target,
        format!("echo.wxsocket.test:{}", peer.addr().port())
    );
    assert!(requests[0].authorization.is_some());

    // Loopback goes direct whatever the environment says.
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    assert!(!a.socket_info().unwrap().proxied, "[{name}]");
    echo_and_close(&mut a, conn, "direct");
    assert_eq!(
        proxy.requests().len(),
        1,
        "[{name}] loopback went through the proxy"
    );
    assert_eq!(peer.snapshot().accepted, 2);
}

fn no_proxy_option_ignores_the_environment<A: Adapter>() {
    let name = A::NAME;
    let peer = Peer::start(Mode::Echo);
    let proxy = TestProxy::start(ProxyMode::Tunnel);
    let env = ProxyEnv::from_vars([("all_proxy", proxy.url())]);
    let session = session().handshake_timeout(Duration::from_secs(2));
    let mut a: A = client_with(env, session, TlsRoots::default());
    let options = ConnectOptions::new("ws://echo.wxsocket.test:9/").no_proxy();
    dial_fails_direct(&mut a, &options, "no_proxy()");
    assert!(proxy.requests().is_empty(), "[{name}] the proxy was used");

    // An explicit proxy is used even for loopback.
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()).proxy(proxy.url()));
    echo_and_close(&mut a, conn, "explicit");
    assert_eq!(proxy.requests().len(), 1);
}

/// `no_proxy` as users write it, over real dials: an entry with a port exempts that port only,
/// an entry in Unicode exempts the punycode host the URL parser makes of it, and an
/// IPv4-mapped IPv6 loopback address goes direct like `127.0.0.1`. A `.test` name resolves
/// only at the proxy, so a dial that goes direct fails (resolution, or the handshake timeout)
/// and the proxy sees nothing, while one through the proxy opens.
fn no_proxy_entries_match_hosts_and_ports_as_users_write_them<A: Adapter>() {
    let name = A::NAME;
    let peer = Peer::start(Mode::Echo);
    let port = peer.addr().port();
    let proxy = TestProxy::start(ProxyMode::Tunnel);
    let no_proxy = format!("echo.wxsocket.test:{}, bücher.test", port + 1);
    let env = ProxyEnv::from_vars([("all_proxy", proxy.url()), ("no_proxy", no_proxy)]);
    let session = session().handshake_timeout(Duration::from_secs(2));
    let mut a: A = client_with(env, session.clone(), TlsRoots::default());

    // The entry names another port: this one goes through the proxy.
    let (conn, _) = open(
        &mut a,
        &ConnectOptions::new(format!("ws://echo.wxsocket.test:{port}/")),
    );
    assert!(a.socket_info().unwrap().proxied, "[{name}]");
    echo_and_close(&mut a, conn, "another port's entry");
    assert_eq!(proxy.requests().len(), 1, "[{name}]");

    // The Unicode entry exempts the host written either way: both go direct and fail.
    for host in ["bücher.test", "xn--bcher-kva.test", "BÜCHER.test"] {
        let options = ConnectOptions::new(format!("ws://{host}:{port}/"));
        dial_fails_direct(&mut a, &options, host);
        assert_eq!(
            proxy.requests().len(),
            1,
            "[{name}] {host} went through the proxy"
        );
    }

    // An IPv4-mapped loopback address is loopback: direct, whatever the environment says.
    let (conn, _) = open(
        &mut a,
        &ConnectOptions::new(format!("ws://[::ffff:127.0.0.1]:{port}/")),
    );
    assert!(!a.socket_info().unwrap().proxied, "[{name}]");
    echo_and_close(&mut a, conn, "mapped loopback");
    assert_eq!(
        proxy.requests().len(),
        1,
        "[{name}] mapped loopback went through the proxy"
    );

    // The entry with this connection's port exempts it: direct, so the `.test` name fails.
    let no_proxy = format!("echo.wxsocket.test:{port}");
    let env = ProxyEnv::from_vars([("all_proxy", proxy.url()), ("no_proxy", no_proxy)]);
    let mut a: A = client_with(env, session, TlsRoots::default());
    let options = ConnectOptions::new(format!("ws://echo.wxsocket.test:{port}/"));
    dial_fails_direct(&mut a, &options, "the port's entry");
    assert_eq!(
        proxy.requests().len(),
        1,
        "[{name}] the port's entry did not exempt it"
    );
    assert_eq!(peer.snapshot().accepted, 2, "[{name}]");
}

/// A proxy variable that is not a usable proxy URL (a desktop's `ALL_PROXY=socks4://…`) is
/// refused by `connect` before any IO, naming the variable and never its password: the
/// environment is read once, so every dial, and every reconnection, would fail the same way
/// (they used to, retried for ever). A connection with its own route is not affected.
fn an_invalid_proxy_variable_is_refused_before_any_io_naming_it<A: Adapter>() {
    let name = A::NAME;
    let env = ProxyEnv::from_vars([("HTTPS_PROXY", format!("socks4://u:{SECRET}@proxy:1080"))]);
    let session = session().reconnect(ReconnectPolicy::default());
    let mut a: A = client_with(env, session, TlsRoots::default());
    let refused = a
        .connect(&ConnectOptions::new("wss://server.wxsocket.test/"))
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "HTTPS_PROXY (from the environment): unsupported proxy scheme \"socks4\" (http://, \
         socks5:// and socks5h:// proxies are); unset it, exempt the host in no_proxy, or choose the connection's proxy in \
         its options",
        "[{name}]"
    );
    assert!(!format!("{refused:?}").contains(SECRET), "[{name}]");
    assert_quiet_for(
        &mut a,
        Duration::from_millis(100),
        "after the refused connect",
    );
    // Its own route, or loopback (always direct), dials as usual.
    let peer = Peer::start(Mode::Echo);
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    echo_and_close(&mut a, conn, "loopback goes direct");
    let proxy = TestProxy::start(ProxyMode::Tunnel);
    let own = ConnectOptions::new(peer.url()).proxy(proxy.url());
    let (conn, _) = open(&mut a, &own);
    echo_and_close(&mut a, conn, "through its own proxy");
    assert_eq!(proxy.requests().len(), 1, "[{name}]");
}

/// The same check on the other connect calls: a pool's `connect` and `wx.connectSocket`
/// (whose `fail` callback gets the reason), on both adapters.
#[test]
fn an_invalid_proxy_variable_is_refused_by_pools_and_wx_sockets_too() {
    use wxsocket_core::wx::ConnectSocket;
    let env = || ProxyEnv::from_vars([("all_proxy", "socks4://127.0.0.1:1080")]);
    let config = || Config::new().proxy_env(env());
    let options = || ConnectOptions::new("ws://server.wxsocket.test/");
    let refused = |e: wxsocket_core::ConnectError| {
        assert!(
            matches!(
                e,
                wxsocket_core::ConnectError::ProxyEnvironment {
                    variable: "all_proxy",
                    ..
                }
            ),
            "{e:?}"
        )
    };
    let wx_failed = |result: Result<ConnId, wxsocket_core::wx::CallResult>| {
        let failed = result.unwrap_err();
        assert!(
            failed
                .err_msg
                .starts_with("connectSocket:fail all_proxy (from the environment)"),
            "{failed:?}"
        );
    };

    let (pool, _events) = wxsocket_blocking::TaskPool::new(config()).unwrap();
    refused(pool.connect(&options()).unwrap_err());
    assert_eq!(pool.live(), 0);
    let wx = wxsocket_blocking::wx::WxSocket::new(config()).unwrap();
    wx_failed(wx.connect_socket(ConnectSocket::new(options())));

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (pool, _events) = wxsocket_tokio::TaskPool::new(config()).unwrap();
        refused(pool.connect(&options()).unwrap_err());
        assert_eq!(pool.live(), 0);
        let wx = wxsocket_tokio::wx::WxSocket::new(config()).unwrap();
        wx_failed(wx.connect_socket(ConnectSocket::new(options())));
    });
}

/// An invalid proxy URL is refused by `connect`, before any IO, naming the option and
/// never repeating the password.
#[test]
fn an_invalid_proxy_url_is_refused_before_any_io() {
    for url in [
        format!("https://u:{SECRET}@127.0.0.1:1"),
        format!("socks4://u:{SECRET}@127.0.0.1:1"),
        format!("socks5://:{SECRET}@127.0.0.1:1"),
        format!("http://u:{SECRET}@127.0.0.1:1/path"),
    ] {
        let e = ConnectOptions::new("ws://127.0.0.1:9")
            .proxy(url.clone())
            .validate()
            .unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(shown.starts_with("proxy: "), "{url}: {shown}");
        assert!(!shown.contains(SECRET), "{url}: {shown}");
    }
}

/// SOCKS5 without credentials: the greeting offers no authentication only; a host name goes
/// to the proxy as a name (`.test` resolves only there, so the dial can only succeed if the
/// proxy resolved it), an IP address as an address; a reply bound to a name (legal, and what
/// `pproxy` sends) is read whole.
fn socks5_gives_the_proxy_the_name_to_resolve_and_tunnels<A: Adapter>() {
    let name = A::NAME;
    let peer = Peer::start(Mode::Echo);
    let port = peer.addr().port();
    let mut a: A = client_with(ProxyEnv::empty(), session(), TlsRoots::default());
    for (mode, host, address_type) in [
        (SocksMode::Tunnel, "echo.wxsocket.test", 3),
        (SocksMode::Tunnel, "127.0.0.1", 1),
        (SocksMode::ReplyWithDomain, "echo.wxsocket.test", 3),
    ] {
        let proxy = TestSocksProxy::start(mode.clone());
        let url = format!("ws://{host}:{port}/chat?x=1");
        // `socks5://` behaves as `socks5h://`: the name is the proxy's to resolve.
        let via = proxy.url().replace("socks5h://", "socks5://");
        let (conn, _) = open(&mut a, &ConnectOptions::new(url).proxy(via));
        let socket = a.socket_info().expect("an open connection has a socket");
        assert!(socket.proxied, "[{name}] {socket:?}");
        assert_eq!(socket.peer_addr, proxy.addr(), "[{name}]");
        echo_and_close(&mut a, conn, "through the SOCKS5 tunnel");
        let requests = proxy.requests();
        assert_eq!(requests.len(), 1, "[{name}] {mode:?}: {requests:#?}");
        let r = &requests[0];
        assert_eq!(r.violation, None, "[{name}] {mode:?}");
        assert_eq!(
            r.methods,
            vec![0],
            "[{name}] no credentials: no authentication only"
        );
        assert_eq!(
            (r.command, r.address_type, r.reply),
            (Some(1), Some(address_type), Some(0)),
            "[{name}] {mode:?}"
        );
        assert_eq!(r.target, format!("{host}:{port}"), "[{name}]");
        let first = String::from_utf8_lossy(&r.first_bytes);
        assert!(
            first.starts_with("GET /chat?x=1 HTTP/1.1\r\n"),
            "[{name}] {first}"
        );
    }
    assert_eq!(peer.snapshot().accepted, 3, "[{name}]");
}

fn wss_through_socks5_is_tls_end_to_end<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo).tls(Tls::Trusted).start();
    let proxy = TestSocksProxy::start(SocksMode::Tunnel);
    wss_through::<A>(&peer, &proxy.url());
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1, "[{}] {requests:#?}", A::NAME);
    let r = &requests[0];
    assert_eq!(r.target, format!("localhost:{}", peer.addr().port()));
    assert_tls_in_the_tunnel::<A>(&r.first_bytes, r.sni());
}

/// RFC 1929: the right user name and password open the tunnel (the greeting offers both
/// methods); wrong ones, or none to a proxy that requires them, are a
/// [`TransportErrorKind::ProxyRefused`] naming the proxy, never the password, and final
/// under a reconnect policy, as an HTTP proxy's 407 is.
fn socks5_credentials_right_wrong_and_missing<A: Adapter>() {
    let name = A::NAME;
    let peer = Peer::start(Mode::Echo);
    let proxy = TestSocksProxy::with_credentials("bob", SECRET);
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(20), Duration::from_millis(80))
        .seed(5);
    let mut a: A = client_with(
        ProxyEnv::empty(),
        session().reconnect(policy.clone()),
        TlsRoots::default(),
    );
    let right = ConnectOptions::new(peer.url()).proxy(proxy.url_with("bob", SECRET));
    let (conn, _) = open(&mut a, &right);
    echo_and_close(&mut a, conn, "authenticated");
    let r = &proxy.requests()[0];
    assert_eq!(r.methods, vec![0, 2], "[{name}]");
    assert_eq!(
        r.credentials,
        Some(("bob".to_owned(), SECRET.to_owned())),
        "[{name}]"
    );
    assert_eq!(r.reply, Some(0), "[{name}]");

    for (via, says) in [
        (
            proxy.url_with("bob", "wrong-s3cr3t"),
            "refused the user name and password (RFC 1929 status 1)",
        ),
        (
            proxy.url(),
            "requires authentication, and the proxy URL has no user name and password",
        ),
    ] {
        let before = proxy.requests().len();
        let conn = a
            .connect(&ConnectOptions::new(peer.url()).proxy(via))
            .unwrap();
        expect_connecting(&mut a, conn);
        let error = expect_dial_failure(&mut a, conn);
        assert_eq!(
            error.kind,
            TransportErrorKind::ProxyRefused,
            "[{name}] {error}"
        );
        assert_eq!(
            error.message,
            format!("proxy {} {says}", proxy.url()),
            "[{name}]"
        );
        assert_quiet_for(&mut a, policy.cap * 4, "after the proxy refused the client");
        assert_eq!(proxy.requests().len(), before + 1, "[{name}] one dial only");
    }
    assert_eq!(peer.snapshot().accepted, 1, "[{name}]");
}

/// A reply refusing `CONNECT`: a server the proxy could not reach (`5`, connection refused)
/// is a `Connect` failure, retried through the proxy again; its rules refusing the client
/// (`2`), or a request it does not support (`8`, a name to a proxy that takes addresses
/// only), is final; each error names the proxy, the target and the reply.
fn socks5_refusals_are_named_and_follow_the_reconnect_policy<A: Adapter>() {
    let name = A::NAME;
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(20), Duration::from_millis(80))
        .seed(3);
    for (code, kind, reason, retried) in [
        (
            5,
            TransportErrorKind::Connect,
            "connection refused (SOCKS5 reply 5)",
            true,
        ),
        (
            2,
            TransportErrorKind::ProxyRefused,
            "connection not allowed by ruleset (SOCKS5 reply 2)",
            false,
        ),
        // A proxy that takes addresses only: it will not take the name on the next attempt
        // either, and the error says what to do.
        (
            8,
            TransportErrorKind::ProxyRefused,
            "address type not supported (SOCKS5 reply 8); the server's name was sent for the \
             proxy to resolve (with socks5:// too): this proxy takes addresses only, so give \
             the server's IP address in the URL",
            false,
        ),
    ] {
        let proxy = TestSocksProxy::start(SocksMode::Reply(code));
        let mut a: A = client_with(
            ProxyEnv::empty(),
            session().reconnect(policy.clone()),
            TlsRoots::default(),
        );
        let conn = a
            .connect(&ConnectOptions::new("ws://server.wxsocket.test:9/").proxy(proxy.url()))
            .unwrap();
        expect_connecting(&mut a, conn);
        let error = expect_dial_failure(&mut a, conn);
        assert_eq!(error.kind, kind, "[{name}] {code}: {error}");
        assert_eq!(
            error.message,
            format!(
                "proxy {} refused CONNECT server.wxsocket.test:9: {reason}",
                proxy.url()
            ),
            "[{name}]"
        );
        if retried {
            a.events_until("Reconnecting", EVENT_TIMEOUT, |seen| {
                seen.iter()
                    .any(|e| matches!(e, Event::Reconnecting { attempt: 1, .. }))
            });
            proxy.wait_for("a second request", EVENT_TIMEOUT, |r| r.len() >= 2);
            a.close(None, "enough").ok();
        } else {
            assert_quiet_for(&mut a, policy.cap * 4, "after the proxy refused");
            assert_eq!(proxy.requests().len(), 1, "[{name}] one dial only");
        }
    }
}

fn misbehaving_socks5_proxies_fail_the_dial_with_an_error_naming_them<A: Adapter>() {
    let name = A::NAME;
    let mut a: A = client_with(ProxyEnv::empty(), session(), TlsRoots::default());
    for (mode, kind, says) in [
        // How `pproxy` turns away a client without credentials, and how a forwarder in
        // front of a proxy that is down closes: a protocol error saying both, retried.
        (
            SocksMode::HangUp,
            TransportErrorKind::Protocol,
            "closed the connection without answering the greeting (it may refuse this \
             client: it may require a user name and password, and the proxy URL has no user \
             name and password; or a forwarder in front of the proxy could not reach it)",
        ),
        (
            SocksMode::Garbage,
            TransportErrorKind::Protocol,
            "answered the greeting in HTTP: is it an http:// proxy?",
        ),
        (
            SocksMode::NoAcceptableMethod,
            TransportErrorKind::ProxyRefused,
            "requires authentication, and the proxy URL has no user name and password",
        ),
        (
            SocksMode::HangUpMidReply,
            TransportErrorKind::Protocol,
            "closed the connection in the middle of its answer to CONNECT (4 bytes in)",
        ),
        (
            SocksMode::ExtraAfterReply,
            TransportErrorKind::Protocol,
            "sent more than its answer to CONNECT",
        ),
    ] {
        let proxy = TestSocksProxy::start(mode.clone());
        fails_at_once(&mut a, &proxy.url(), kind, says, &format!("{mode:?}"));
        let requests = proxy.requests();
        assert!(
            requests.iter().all(|r| r.violation.is_none()),
            "[{name}] {mode:?}: {requests:#?}"
        );
    }
}

fn a_silent_socks5_proxy_is_bounded_by_the_handshake_timeout<A: Adapter>() {
    let name = A::NAME;
    let proxy = TestSocksProxy::start(SocksMode::Silent);
    dial_times_out_in_the_tunnel::<A>(&proxy.url());
    let requests = proxy.wait_for("the greeting", EVENT_TIMEOUT, |r| !r.is_empty());
    assert_eq!(requests[0].methods, vec![0], "[{name}]");
    assert_eq!(requests[0].reply, None, "[{name}]");
}

/// `ALL_PROXY=socks5h://…` (what Clash, V2Ray and `ssh -D` users set): the environment's
/// SOCKS5 proxy carries a name only it can resolve, with the variable's credentials;
/// loopback still goes direct.
fn the_environment_routes_through_a_socks5_proxy_but_not_loopback<A: Adapter>() {
    let name = A::NAME;
    let peer = Peer::start(Mode::Echo);
    let proxy = TestSocksProxy::with_credentials("bob", SECRET);
    let env = ProxyEnv::from_vars([("ALL_PROXY", proxy.url_with("bob", SECRET))]);
    let mut a: A = client_with(env, session(), TlsRoots::default());
    let url = format!("ws://echo.wxsocket.test:{}/", peer.addr().port());
    let (conn, _) = open(&mut a, &ConnectOptions::new(url));
    echo_and_close(&mut a, conn, "via the environment");
    let requests = proxy.requests();
    assert_eq!(requests.len(), 1, "[{name}] {requests:#?}");
    assert_eq!(
        requests[0].target,
        format!("echo.wxsocket.test:{}", peer.addr().port())
    );
    assert!(requests[0].credentials.is_some(), "[{name}]");
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    assert!(!a.socket_info().unwrap().proxied, "[{name}]");
    echo_and_close(&mut a, conn, "direct");
    assert_eq!(
        proxy.requests().len(),
        1,
        "[{name}] loopback went through the proxy"
    );
}

/// A host name over 255 bytes cannot go in a SOCKS5 request: the dial fails before it
/// reaches the proxy, saying so, instead of sending a cut name.
fn a_host_name_socks5_cannot_carry_is_refused_before_any_io<A: Adapter>() {
    let name = A::NAME;
    let proxy = TestSocksProxy::start(SocksMode::Tunnel);
    let mut a: A = client_with(ProxyEnv::empty(), session(), TlsRoots::default());
    let host = vec!["a".repeat(60); 5].join(".");
    let conn = a
        .connect(&ConnectOptions::new(format!("ws://{host}/")).proxy(proxy.url()))
        .unwrap();
    expect_connecting(&mut a, conn);
    let error = expect_dial_failure(&mut a, conn);
    assert_eq!(error.kind, TransportErrorKind::Connect, "[{name}] {error}");
    assert_eq!(
        error.message,
        format!(
            "proxy {}: the server's host name is 304 bytes long, and SOCKS5 carries at most 255",
            proxy.url()
        ),
        "[{name}]"
    );
    assert!(
        proxy.requests().is_empty(),
        "[{name}] the proxy was dialled"
    );
}

/// A reviewer: on the simple path (`connect`), a SOCKS5 proxy that refuses the credentials is
/// a refusal, as an HTTP proxy's 407 and a server's 4xx are there
/// (`a_4xx_answer_on_the_simple_path_is_a_refusal_on_both_adapters`): its kind is
/// `Refused`, and its message does not say to connect again or use a reconnect policy (which
/// would not retry it).
#[test]
fn a_socks5_refusal_on_the_simple_path_is_a_refusal_on_both_adapters() {
    let peer = Peer::start(Mode::Echo);
    let proxy = TestSocksProxy::with_credentials("bob", SECRET);
    let options = ConnectOptions::new(peer.url()).proxy(proxy.url_with("bob", "wrong-pw"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let blocking = wxsocket_blocking::connect(options.clone()).unwrap_err();
    let tokio = runtime
        .block_on(wxsocket_tokio::connect(options))
        .unwrap_err();
    for (refused, message) in [
        (
            blocking.kind() == wxsocket_blocking::ErrorKind::Refused,
            blocking.to_string(),
        ),
        (
            tokio.kind() == wxsocket_tokio::ErrorKind::Refused,
            tokio.to_string(),
        ),
    ] {
        assert!(
            message.contains("refused the user name and password"),
            "{message}"
        );
        assert!(!message.contains("wrong-pw"), "{message}");
        assert!(refused, "not ErrorKind::Refused: {message}");
        assert!(!message.contains("connect again"), "{message}");
    }
    assert_eq!(peer.snapshot().accepted, 0);
}

/// A reviewer: a SOCKS5 proxy reached through a TCP forwarder (`ssh -L`, `socat`, Docker's
/// userland proxy for a container's published port, `kubectl port-forward`, an nginx or
/// HAProxy stream) while the proxy is down or restarting: the forwarder accepts, finds no
/// proxy behind it, and closes without a byte of answer, which is also how `pproxy` turns
/// away a client without credentials. Nothing says this client was refused: a reconnect
/// policy dials again, and the connection opens once the proxy is back (it gave up at the
/// first close, `ProxyRefused`, "it may require a user name and password").
fn a_socks5_proxy_down_behind_a_forwarder_is_dialled_again_until_it_is_up<A: Adapter>() {
    use std::io::Read;
    use std::net::{Shutdown, TcpListener, TcpStream};
    let name = A::NAME;
    let peer = Peer::start(Mode::Echo);
    let proxy = TestSocksProxy::start(SocksMode::Tunnel);
    let backend = proxy.addr();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let front = listener.local_addr().unwrap();
    // The forwarder: the proxy is down for the first two dials, then up.
    std::thread::spawn(move || {
        for (i, client) in listener.incoming().enumerate() {
            let Ok(mut client) = client else { return };
            if i < 2 {
                // The greeting is taken while the forwarder tries the proxy, in vain.
                let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = client.read(&mut [0u8; 16]);
                drop(client);
                continue;
            }
            let upstream = TcpStream::connect(backend).unwrap();
            let (mut from, mut to) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let (mut from, mut to) = (upstream, client);
                let _ = std::io::copy(&mut from, &mut to);
                let _ = to.shutdown(Shutdown::Write);
            });
        }
    });
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(20), Duration::from_millis(80))
        .seed(7);
    let mut a: A = client_with(
        ProxyEnv::empty(),
        session().reconnect(policy),
        TlsRoots::default(),
    );
    a.connect(&ConnectOptions::new(peer.url()).proxy(format!("socks5h://{front}")))
        .unwrap();
    let events = a.events_until("the open once the proxy is up", EVENT_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Event::Open { .. }))
    });
    assert_no_secret(&events);
    let Some(Event::Open { conn, .. }) = events.last() else {
        panic!("[{name}] {events:#?}")
    };
    let conn = *conn;
    let failures = events
        .iter()
        .filter(|e| matches!(e, Event::Error { .. }))
        .count();
    assert_eq!(failures, 2, "[{name}] {events:#?}");
    echo_and_close(&mut a, conn, "the proxy is back");
    assert_eq!(proxy.requests().len(), 1, "[{name}]");
}
