//! Shutdown, decided by the core (`Session::shutdown`) and carried out alike by both
//! adapters: the explicit `shutdown()` and dropping the last handle end every connection
//! the same way, whatever the close-before-open policy. Each scenario runs on both adapters.

use std::time::Duration;
use wxsocket_core::{
    CloseBeforeOpen, ConnectError, ConnectOptions, Event, Message, SendFailure, SessionConfig,
};
use wxsocket_tests::adapter::{Adapter, EVENT_TIMEOUT};
use wxsocket_tests::peer::{Mode, Peer};
use wxsocket_tests::scenario::{client, expect_connecting, open};

const T: Duration = EVENT_TIMEOUT;

wxsocket_tests::on_both_adapters!(
    shutdown_while_dialling_abort,
    shutdown_while_dialling_after_open,
    shutdown_while_dialling_ignore,
    dropping_the_handle_while_dialling_abort,
    dropping_the_handle_while_dialling_after_open,
    dropping_the_handle_while_dialling_ignore,
    shutdown_closes_an_open_connection_with_1000,
    shutdown_finishes_a_replaced_connections_close,
);

fn config(policy: CloseBeforeOpen) -> SessionConfig {
    SessionConfig::default()
        .handshake_timeout(Duration::from_secs(30))
        .close_timeout(Duration::from_secs(2))
        .close_before_open(policy)
}

/// Every event until the stream ends (the driver has exited); panics after `T`.
fn events_to_the_end<A: Adapter>(a: &mut A) -> Vec<Event> {
    let deadline = std::time::Instant::now() + T;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "[{}] the event stream did not end within {T:?}: {seen:#?}",
            A::NAME
        );
        match a.next_event(left) {
            Some(event) => seen.push(event),
            None => return seen,
        }
    }
}

/// A dial the server never answers, with one message queued, then the ending: the same
/// events under every policy, on both adapters, explicit or by dropping the handle.
fn ending_while_dialling<A: Adapter>(policy: CloseBeforeOpen, explicit: bool) {
    let peer = Peer::start(Mode::StallHandshake);
    let mut a: A = client(config(policy));
    let conn = a.connect(&ConnectOptions::new(peer.url())).unwrap();
    expect_connecting(&mut a, conn);
    let queued = a.try_send(Message::text("queued")).unwrap();
    peer.wait_conn(0, "the upgrade request", T, |c| c.request.is_some());
    if explicit {
        a.shutdown();
        assert_eq!(
            a.connect(&ConnectOptions::new(peer.url())),
            Err(ConnectError::ShutDown),
            "[{}] no connection after shutdown",
            A::NAME
        );
    } else {
        a.drop_client();
    }
    let seen = events_to_the_end(&mut a);
    match seen.as_slice() {
        [
            Event::SendFailed {
                conn: c1,
                id,
                reason: SendFailure::Cancelled,
                message: Some(message),
                ..
            },
            Event::Close {
                conn: c2,
                code: 1006,
                clean: false,
                ..
            },
        ] => {
            assert_eq!((*c1, *c2, *id), (conn, conn, queued), "[{}]", A::NAME);
            assert_eq!(*message, Message::text("queued"), "[{}]", A::NAME);
        }
        other => panic!(
            "[{}] {policy:?}: expected the queued send cancelled and close 1006, got {other:#?}",
            A::NAME
        ),
    }
    // The dial's socket is gone too.
    peer.wait_conn(0, "the client to go away", T, |c| c.ended);
}

fn shutdown_while_dialling_abort<A: Adapter>() {
    ending_while_dialling::<A>(CloseBeforeOpen::Abort, true);
}

fn shutdown_while_dialling_after_open<A: Adapter>() {
    ending_while_dialling::<A>(CloseBeforeOpen::AfterOpen, true);
}

fn shutdown_while_dialling_ignore<A: Adapter>() {
    ending_while_dialling::<A>(CloseBeforeOpen::Ignore, true);
}

fn dropping_the_handle_while_dialling_abort<A: Adapter>() {
    ending_while_dialling::<A>(CloseBeforeOpen::Abort, false);
}

fn dropping_the_handle_while_dialling_after_open<A: Adapter>() {
    ending_while_dialling::<A>(CloseBeforeOpen::AfterOpen, false);
}

fn dropping_the_handle_while_dialling_ignore<A: Adapter>() {
    ending_while_dialling::<A>(CloseBeforeOpen::Ignore, false);
}

fn shutdown_closes_an_open_connection_with_1000<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config(CloseBeforeOpen::Abort));
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    a.shutdown();
    // `shutdown` returned: the close handshake is over and the socket is gone.
    let seen = peer.wait_conn(0, "the client to close", T, |c| c.ended);
    assert_eq!(seen.closes.len(), 1, "[{}] {seen:#?}", A::NAME);
    assert_eq!(seen.closes[0].code, Some(1000), "[{}]", A::NAME);
    let events = events_to_the_end(&mut a);
    assert!(
        matches!(
            events.as_slice(),
            [Event::Close { conn: c, code: 1000, clean: true, .. }] if *c == conn
        ),
        "[{}] {events:#?}",
        A::NAME
    );
}

/// A connection replaced by `connect` is still finishing its close handshake; shutdown
/// waits for it (bounded by the close timeout) as well as for the current one.
fn shutdown_finishes_a_replaced_connections_close<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config(CloseBeforeOpen::Abort));
    let (first, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    let second = a.connect(&ConnectOptions::new(peer.url())).unwrap();
    assert_ne!(first, second);
    // The replaced connection's close event comes first, then the new one opens.
    a.events_until("the second connection to open", T, |seen| {
        seen.iter()
            .any(|e| matches!(e, Event::Open { conn, .. } if *conn == second))
    });
    a.shutdown();
    for index in 0..2 {
        let seen = peer.wait_conn(index, "both connections to close", T, |c| c.ended);
        assert_eq!(seen.closes.len(), 1, "[{}] {seen:#?}", A::NAME);
    }
    let events = events_to_the_end(&mut a);
    assert!(
        matches!(
            events.as_slice(),
            [Event::Close { conn: c, code: 1000, clean: true, .. }] if *c == second
        ),
        "[{}] {events:#?}",
        A::NAME
    );
}
