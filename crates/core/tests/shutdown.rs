//! `Session::shutdown` / `Pool::shutdown`: every lifecycle decision of a driver's shutdown
//! is the core's, on a simulated clock.

use std::time::{Duration, Instant};
use wxsocket_core::*;

const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

fn session(policy: CloseBeforeOpen) -> Session {
    Session::new(
        SessionConfig::default()
            .close_timeout(CLOSE_TIMEOUT)
            .close_before_open(policy),
    )
    .unwrap()
}

fn options() -> ConnectOptions {
    ConnectOptions::new("ws://127.0.0.1:9/x")
}

fn actions(s: &mut Session) -> Vec<Action> {
    std::iter::from_fn(|| s.poll_action()).collect()
}

fn events(s: &mut Session) -> Vec<Event> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

#[test]
fn a_dial_is_aborted_under_every_close_before_open_policy() {
    for policy in [
        CloseBeforeOpen::Abort,
        CloseBeforeOpen::AfterOpen,
        CloseBeforeOpen::Ignore,
    ] {
        let now = Instant::now();
        let mut s = session(policy);
        let conn = s.connect(&options(), now).unwrap();
        let queued = s.send(Message::text("q"), now).unwrap();
        actions(&mut s);
        events(&mut s);
        s.shutdown(now);
        assert!(!s.is_drained(), "{policy:?}: the abort is not polled yet");
        assert!(
            matches!(actions(&mut s).as_slice(), [Action::Abort { conn: c }] if *c == conn),
            "{policy:?}"
        );
        assert!(s.is_drained(), "{policy:?}");
        assert_eq!(s.state(), ReadyState::Closed);
        assert_eq!(s.poll_timeout(), None, "{policy:?}: no timer left");
        match events(&mut s).as_slice() {
            [
                Event::SendFailed {
                    id,
                    reason: SendFailure::Cancelled,
                    message: Some(m),
                    ..
                },
                Event::Close {
                    code: 1006,
                    clean: false,
                    ..
                },
            ] => {
                assert_eq!(*id, queued);
                assert_eq!(*m, Message::text("q"));
            }
            other => panic!("{policy:?}: {other:#?}"),
        }
        assert_eq!(s.connect(&options(), now), Err(ConnectError::ShutDown));
        assert!(
            actions(&mut s).is_empty(),
            "nothing is dialled after shutdown"
        );
    }
}

#[test]
fn an_open_connection_is_closed_with_1000_and_drained_when_the_transport_ends() {
    let now = Instant::now();
    let mut s = session(CloseBeforeOpen::Abort);
    let conn = s.connect(&options(), now).unwrap();
    s.handle(conn, TransportEvent::Opened(Box::default()), now);
    actions(&mut s);
    events(&mut s);
    s.shutdown(now);
    assert!(matches!(
        actions(&mut s).as_slice(),
        [Action::Close { frame, .. }] if frame.code() == 1000
    ));
    assert_eq!(s.state(), ReadyState::Closing);
    assert!(!s.is_drained());
    // A second call changes nothing.
    s.shutdown(now);
    assert!(actions(&mut s).is_empty());
    s.handle(
        conn,
        TransportEvent::PeerClosed(PeerClose {
            code: Some(1000),
            reason: String::new(),
        }),
        now,
    );
    assert!(!s.is_drained(), "the transport has not ended yet");
    s.handle(conn, TransportEvent::Closed, now);
    assert!(s.is_drained());
    assert!(matches!(
        events(&mut s).as_slice(),
        [Event::Close {
            code: 1000,
            clean: true,
            ..
        }]
    ));
}

#[test]
fn a_peer_that_never_answers_is_aborted_at_the_close_timeout() {
    let t0 = Instant::now();
    let mut s = session(CloseBeforeOpen::Abort);
    let conn = s.connect(&options(), t0).unwrap();
    s.handle(conn, TransportEvent::Opened(Box::default()), t0);
    actions(&mut s);
    s.shutdown(t0);
    actions(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0 + CLOSE_TIMEOUT));
    s.handle_timeout(t0 + CLOSE_TIMEOUT - Duration::from_millis(1));
    assert!(!s.is_drained());
    s.handle_timeout(t0 + CLOSE_TIMEOUT);
    assert!(matches!(actions(&mut s).as_slice(), [Action::Abort { conn: c }] if *c == conn));
    assert!(s.is_drained());
}

#[test]
fn a_replaced_connection_still_closing_keeps_the_session_undrained() {
    let t0 = Instant::now();
    let mut s = session(CloseBeforeOpen::Abort);
    let first = s.connect(&options(), t0).unwrap();
    s.handle(first, TransportEvent::Opened(Box::default()), t0);
    let second = s.connect(&options(), t0).unwrap();
    s.handle(second, TransportEvent::Opened(Box::default()), t0);
    actions(&mut s);
    s.shutdown(t0);
    actions(&mut s);
    s.handle(second, TransportEvent::Closed, t0);
    assert!(
        !s.is_drained(),
        "the replaced connection is still being torn down"
    );
    s.handle(first, TransportEvent::Closed, t0);
    assert!(s.is_drained());
}

#[test]
fn a_reconnect_delay_is_cancelled_and_never_dials() {
    let t0 = Instant::now();
    let mut s =
        Session::new(SessionConfig::default().reconnect(ReconnectPolicy::default())).unwrap();
    let conn = s.connect(&options(), t0).unwrap();
    s.handle(conn, TransportEvent::Opened(Box::default()), t0);
    s.handle(conn, TransportEvent::Closed, t0);
    assert!(s.is_backing_off());
    actions(&mut s);
    events(&mut s);
    s.shutdown(t0);
    assert!(s.is_drained());
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t0 + Duration::from_secs(60));
    assert!(actions(&mut s).is_empty(), "no dial after shutdown");
    assert!(matches!(
        events(&mut s).as_slice(),
        [Event::Close {
            code: 1006,
            clean: false,
            ..
        }]
    ));
}

#[test]
fn a_close_the_peer_began_is_not_retried_after_shutdown() {
    let t0 = Instant::now();
    let mut s =
        Session::new(SessionConfig::default().reconnect(ReconnectPolicy::default())).unwrap();
    let conn = s.connect(&options(), t0).unwrap();
    s.handle(conn, TransportEvent::Opened(Box::default()), t0);
    // 1012 (service restart) is retried by default.
    s.handle(
        conn,
        TransportEvent::PeerClosed(PeerClose {
            code: Some(1012),
            reason: String::new(),
        }),
        t0,
    );
    actions(&mut s);
    s.shutdown(t0);
    s.handle(conn, TransportEvent::Closed, t0);
    assert!(!s.is_backing_off());
    assert!(
        !actions(&mut s)
            .iter()
            .any(|a| matches!(a, Action::Dial { .. })),
        "no dial after shutdown"
    );
    assert!(s.is_drained());
    assert!(
        !events(&mut s)
            .iter()
            .any(|e| matches!(e, Event::Reconnecting { .. }))
    );
}

#[test]
fn a_pool_shuts_every_task_down() {
    let t0 = Instant::now();
    let mut pool = Pool::new(SessionConfig::default()).unwrap();
    let a = pool.connect(&options(), t0).unwrap();
    let b = pool.connect(&options(), t0).unwrap();
    pool.handle(a, TransportEvent::Opened(Box::default()), t0);
    while pool.poll_action().is_some() {}
    pool.shutdown(t0);
    let mut closes = 0;
    let mut aborts = 0;
    while let Some(action) = pool.poll_action() {
        match action {
            Action::Close { conn, .. } if conn == a => closes += 1,
            Action::Abort { conn } if conn == b => aborts += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((closes, aborts), (1, 1));
    assert!(!pool.is_drained(), "a is closing");
    pool.handle(a, TransportEvent::Closed, t0);
    assert!(pool.is_drained());
    assert_eq!(pool.connect(&options(), t0), Err(ConnectError::ShutDown));
}
