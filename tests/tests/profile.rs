//! The open event's timing profile ([`OpenProfile`]) over real IO, on both adapters: the
//! phases are ordered, end within the dial's wall time as the test measures it, have TLS
//! only for `wss://`, and a server that answers the upgrade late shows it in the response
//! phase. Timing is bounded from below only (a loaded machine only makes phases longer),
//! and from above only by the test's own measurement of the same dial.

use std::time::{Duration, Instant};
use wxsocket_core::{ConnectOptions, Handshake, OpenProfile, SessionConfig};
use wxsocket_tests::adapter::{Adapter, EVENT_TIMEOUT};
use wxsocket_tests::peer::{Mode, Peer, Tls};
use wxsocket_tests::proxy::{ProxyMode, TestProxy};
use wxsocket_tests::scenario::{client, open};
use wxsocket_wire::client::Config;
use wxsocket_wire::proxy::ProxyEnv;
use wxsocket_wire::tls::TlsRoots;

wxsocket_tests::on_both_adapters!(
    ws_profile_is_ordered_and_has_no_tls,
    wss_profile_has_the_tls_phase,
    a_late_101_shows_in_the_response_phase,
    through_a_proxy_the_tunnel_precedes_tls,
);

/// How late the slow server answers.
const DELAY: Duration = Duration::from_millis(300);

fn config() -> SessionConfig {
    SessionConfig::default().handshake_timeout(EVENT_TIMEOUT)
}

/// Opens `options`, returning the handshake and the wall time from just before the
/// connect call to just after the `Open` event arrived.
fn timed_open<A: Adapter>(a: &mut A, options: &ConnectOptions) -> (Handshake, Duration) {
    let start = Instant::now();
    let (_, handshake) = open(a, options);
    (handshake, start.elapsed())
}

/// The offsets never decrease, and the last is within the dial as the test timed it.
fn assert_plausible(name: &str, p: &OpenProfile, wall: Duration) {
    let mut ends = vec![p.resolved, p.connected];
    ends.extend(p.tls);
    ends.extend([p.request_written, p.response_received]);
    assert!(
        ends.windows(2).all(|w| w[0] <= w[1]),
        "[{name}] the phases end in order: {p:?}"
    );
    assert!(
        p.response_received <= wall,
        "[{name}] the dial ended within the {wall:?} the test measured: {p:?}"
    );
    // The phases' durations add up to the whole.
    let sum: Duration = p.phases().map(|(_, took)| took).sum();
    assert_eq!(sum, p.response_received, "[{name}] {p:?}");
    assert!(
        p.response_received > Duration::ZERO,
        "[{name}] a real dial takes time: {p:?}"
    );
}

fn ws_profile_is_ordered_and_has_no_tls<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config());
    let (handshake, wall) = timed_open(&mut a, &ConnectOptions::new(peer.url()));
    let p = handshake.profile;
    assert_plausible(A::NAME, &p, wall);
    assert_eq!(p.tls, None, "[{}] no TLS for ws://", A::NAME);
    assert!(
        p.phases().all(|(name, _)| name != "tls"),
        "[{}] {p:?}",
        A::NAME
    );
}

fn wss_profile_has_the_tls_phase<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo).tls(Tls::Trusted).start();
    let mut a: A = A::new(config(), TlsRoots::only(vec![peer.ca_cert().unwrap()])).unwrap();
    let (handshake, wall) = timed_open(&mut a, &ConnectOptions::new(peer.url()));
    let p = handshake.profile;
    assert_plausible(A::NAME, &p, wall);
    let tls = p
        .tls
        .unwrap_or_else(|| panic!("[{}] wss:// has TLS: {p:?}", A::NAME));
    // A TLS handshake is at least one round trip after the TCP connect.
    assert!(tls > p.connected, "[{}] {p:?}", A::NAME);
}

fn a_late_101_shows_in_the_response_phase<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo).delay_response(DELAY).start();
    let mut a: A = client(config());
    let (handshake, wall) = timed_open(&mut a, &ConnectOptions::new(peer.url()));
    let p = handshake.profile;
    assert_plausible(A::NAME, &p, wall);
    // The server's delay starts when it has read the request, which may be before the
    // client takes the time after its write returned (a flake hunt saw 298.8 ms of the
    // 300 ms in the response phase, the write's return taken 1.3 ms after the server read);
    // it cannot start before the client began writing, after the connect.
    let response = p.response_received - p.request_written;
    let writing = p.request_written - p.connected;
    assert!(
        response + writing >= DELAY && response > writing,
        "[{}] the server's {DELAY:?} is in the response phase ({response:?}, the request's \
         write {writing:?}): {p:?}",
        A::NAME
    );
}

fn through_a_proxy_the_tunnel_precedes_tls<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo).tls(Tls::Trusted).start();
    let proxy = TestProxy::start(ProxyMode::Tunnel);
    let config = Config::new()
        .session(config())
        .tls(TlsRoots::only(vec![peer.ca_cert().unwrap()]))
        .proxy_env(ProxyEnv::empty());
    let mut a = A::with_config(config).unwrap();
    let url = format!("wss://localhost:{}/", peer.addr().port());
    let (handshake, wall) = timed_open(&mut a, &ConnectOptions::new(url).proxy(proxy.url()));
    let p = handshake.profile;
    assert_plausible(A::NAME, &p, wall);
    // `connected` is the TCP connect to the proxy; the `CONNECT` exchange and the TLS
    // handshake with the server (both round trips) make up the TLS phase.
    let tls = p.tls.unwrap_or_else(|| panic!("[{}] {p:?}", A::NAME));
    assert!(tls > p.connected, "[{}] {p:?}", A::NAME);
    assert_eq!(proxy.requests().len(), 1, "[{}] through the proxy", A::NAME);
}
