//! The TLS key exchange both adapters agree on: post-quantum X25519MLKEM768 with a server
//! that has it (rustls 0.23.48 on puts it first), a classical group with one that does not
//! (X25519, whose share goes beside the hybrid one), and one the client sent no share for,
//! after the server asks for a second hello.

use rustls::NamedGroup;
use std::time::Duration;
use wxsocket_core::{ConnectOptions, Message, SessionConfig};
use wxsocket_testkit::peer::{Mode, Peer, Tls};
use wxsocket_tests::adapter::{Adapter, BlockingAdapter, EVENT_TIMEOUT, TokioAdapter};
use wxsocket_tests::scenario::{messages, open};
use wxsocket_wire::client::Config;
use wxsocket_wire::tls::TlsRoots;

/// Opens a `wss` connection to a server agreeing only to `groups` (its defaults when empty),
/// echoes one message, and returns the group the server saw agreed.
fn agreed<A: Adapter>(groups: &[NamedGroup]) -> NamedGroup {
    let peer = Peer::builder(Mode::Echo)
        .tls(Tls::Trusted)
        .tls_key_exchange(groups)
        .start();
    let root = peer.ca_cert().expect("a TLS peer has its CA");
    let session = SessionConfig::default().handshake_timeout(Duration::from_secs(10));
    let config = Config::new()
        .session(session)
        .tls(TlsRoots::only(vec![root]));
    let mut a = A::with_config(config).unwrap_or_else(|e| panic!("[{}] {e}", A::NAME));
    open(&mut a, &ConnectOptions::new(peer.url()).no_proxy());
    a.try_send(Message::text("key exchange")).unwrap();
    let events = a.events_until("the echo", EVENT_TIMEOUT, |e| !messages(e).is_empty());
    assert_eq!(
        messages(&events),
        [Message::text("key exchange")],
        "[{}]",
        A::NAME
    );
    let seen = peer.wait_conn(0, "the upgrade request", EVENT_TIMEOUT, |c| {
        c.request.is_some()
    });
    seen.tls_key_exchange
        .unwrap_or_else(|| panic!("[{}] no key exchange recorded", A::NAME))
}

fn each_server<A: Adapter>() {
    let cases = [
        // The provider's defaults: the hybrid post-quantum group first.
        (&[][..], NamedGroup::X25519MLKEM768),
        // A server without post-quantum groups takes the classical share sent beside it.
        (&[NamedGroup::X25519][..], NamedGroup::X25519),
        // A group the client sent no share for: the server asks for one (HelloRetryRequest).
        (&[NamedGroup::secp256r1][..], NamedGroup::secp256r1),
    ];
    for (groups, expected) in cases {
        assert_eq!(
            agreed::<A>(groups),
            expected,
            "[{}] server {groups:?}",
            A::NAME
        );
    }
}

#[test]
fn the_key_exchange_prefers_post_quantum_and_falls_back_tokio() {
    each_server::<TokioAdapter>();
}

#[test]
fn the_key_exchange_prefers_post_quantum_and_falls_back_blocking() {
    each_server::<BlockingAdapter>();
}
