//! Unit tests of the session rules and option validation on a simulated clock (no sleeping).

use bytes::Bytes;
use std::time::{Duration, Instant};
use wxsocket_core::*;

/// A session with a simulated clock and helpers to drain its outputs.
struct Sim {
    s: Session,
    now: Instant,
}

impl Sim {
    fn new(config: SessionConfig) -> Self {
        Self {
            s: Session::new(config).unwrap(),
            now: Instant::now(),
        }
    }

    fn default() -> Self {
        Self::new(SessionConfig::default())
    }

    fn connect(&mut self) -> ConnId {
        self.s
            .connect(
                &ConnectOptions::new("ws://127.0.0.1:9/x").protocol("chat"),
                self.now,
            )
            .unwrap()
    }

    fn open(&mut self, conn: ConnId) {
        self.s
            .handle(conn, TransportEvent::Opened(Box::default()), self.now);
    }

    fn input(&mut self, conn: ConnId, e: TransportEvent) {
        self.s.handle(conn, e, self.now);
    }

    fn send(&mut self, text: &str) -> Result<SendId, SendError> {
        self.s.send(Message::text(text.to_owned()), self.now)
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.s.poll_action()).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.s.poll_event()).collect()
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
    }

    /// Jumps to the next deadline, as a driver's timer would.
    fn fire(&mut self) {
        let t = self.s.poll_timeout().expect("a deadline");
        assert!(t >= self.now);
        self.now = t;
        self.s.handle_timeout(t);
    }

    fn open_conn(&mut self) -> ConnId {
        let c = self.connect();
        self.open(c);
        self.actions();
        self.events();
        c
    }
}

fn sent_ids(actions: &[Action]) -> Vec<SendId> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn close_of(events: &[Event]) -> (u16, String, bool) {
    events
        .iter()
        .find_map(|e| match e {
            Event::Close {
                code,
                reason,
                clean,
                ..
            } => Some((*code, reason.clone(), *clean)),
            _ => None,
        })
        .expect("a close event")
}

#[test]
fn full_lifecycle_idle_to_closed_and_again() {
    let mut t = Sim::default();
    assert_eq!(t.s.state(), ReadyState::Idle);
    let c1 = t.connect();
    assert_eq!(t.s.state(), ReadyState::Connecting);
    let a = t.actions();
    assert!(
        matches!(&a[..], [Action::Dial { conn, request }] if *conn == c1 && request.protocols == ["chat"])
    );
    t.open(c1);
    assert_eq!(t.s.state(), ReadyState::Open);
    t.s.close(Some(4000), "done", t.now).unwrap();
    assert_eq!(t.s.state(), ReadyState::Closing);
    let a = t.actions();
    assert!(
        matches!(&a[..], [Action::Close { frame, .. }] if frame.code() == 4000 && frame.reason() == "done")
    );
    t.input(
        c1,
        TransportEvent::PeerClosed(PeerClose {
            code: Some(4000),
            reason: "done".into(),
        }),
    );
    assert_eq!(t.s.state(), ReadyState::Closing);
    t.input(c1, TransportEvent::Closed);
    assert_eq!(t.s.state(), ReadyState::Closed);
    let e = t.events();
    assert!(matches!(e[0], Event::Connecting { conn, .. } if conn == c1));
    assert!(matches!(e[1], Event::Open { conn, .. } if conn == c1));
    assert_eq!(close_of(&e), (4000, "done".into(), true));
    assert_eq!(e.len(), 3);
    // Closed → Connecting with a fresh, larger id.
    let c2 = t.connect();
    assert!(c2 > c1);
    assert_eq!(t.s.state(), ReadyState::Connecting);
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(60)));
}

#[test]
fn calls_in_idle_and_closed_are_refused_and_hand_the_message_back() {
    let mut t = Sim::default();
    let err = t.send("x").unwrap_err();
    assert_eq!(err.to_string(), "WebSocket is not connected");
    assert_eq!(err.into_message(), Message::text("x"));
    assert_eq!(t.s.close(None, "", t.now), Err(CloseError::NotConnected));
    let c = t.open_conn();
    t.input(c, TransportEvent::Closed);
    assert_eq!(t.s.state(), ReadyState::Closed);
    assert!(matches!(t.send("y"), Err(SendError::NotConnected(_))));
    assert_eq!(t.s.close(None, "", t.now), Err(CloseError::NotConnected));
}

#[test]
fn queue_is_fifo_and_flushed_on_open_before_later_sends() {
    let mut t = Sim::default();
    let c = t.connect();
    let q: Vec<SendId> = (0..3).map(|i| t.send(&format!("q{i}")).unwrap()).collect();
    assert_eq!(t.s.buffered_amount(), 6);
    t.actions();
    t.open(c);
    let later = t.send("later").unwrap();
    let a = t.actions();
    assert_eq!(sent_ids(&a), [q[0], q[1], q[2], later]);
    for id in [q[0], q[1], q[2], later] {
        t.input(c, TransportEvent::SendWritten(id));
    }
    assert_eq!(t.s.buffered_amount(), 0);
    let completed: Vec<SendId> = t
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::SendCompleted { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(completed, [q[0], q[1], q[2], later]);
}

#[test]
fn queue_bounds_count_and_bytes_hand_the_message_back() {
    let mut t = Sim::new(SessionConfig::default().queue_bounds(2, 10));
    t.connect();
    t.send("12345").unwrap();
    t.send("1234").unwrap();
    let e = t.send("1").unwrap_err();
    assert!(matches!(&e, SendError::QueueFull(m) if *m == Message::text("1")));
    let mut t = Sim::new(SessionConfig::default().queue_bounds(10, 10));
    t.connect();
    t.send("123456").unwrap();
    assert!(matches!(t.send("12345"), Err(SendError::QueueFull(_))));
    assert!(t.send("1234").is_ok());
    assert_eq!(t.s.buffered_amount(), 10);
}

#[test]
fn buffered_amount_is_bounded_while_open() {
    let mut t = Sim::new(
        SessionConfig::default()
            .queue_bounds(10, 8)
            .max_buffered_bytes(8),
    );
    let c = t.open_conn();
    let a = t.send("12345678").unwrap();
    assert!(matches!(t.send("x"), Err(SendError::BufferFull(m)) if m == Message::text("x")));
    t.input(c, TransportEvent::SendWritten(a));
    assert_eq!(t.s.buffered_amount(), 0);
    assert!(t.send("x").is_ok());
}

#[test]
fn a_message_larger_than_the_byte_bounds_is_queued_and_sent_alone() {
    let mut t = Sim::new(
        SessionConfig::default()
            .queue_bounds(10, 8)
            .max_buffered_bytes(8)
            .max_message_size(100),
    );
    let c = t.connect();
    let big = || Message::binary(vec![7; 100]);
    let queued = t.s.send(big(), t.now).expect("an empty queue takes it");
    assert!(matches!(t.send("x"), Err(SendError::QueueFull(_))));
    assert_eq!(t.s.buffered_amount(), 100);
    t.actions();
    t.open(c);
    assert_eq!(sent_ids(&t.actions()), [queued]);
    assert!(matches!(
        t.s.send(big(), t.now),
        Err(SendError::BufferFull(_))
    ));
    t.input(c, TransportEvent::SendWritten(queued));
    let sent = t.s.send(big(), t.now).expect("an empty buffer takes it");
    assert!(matches!(t.send("x"), Err(SendError::BufferFull(_))));
    assert_eq!(sent_ids(&t.actions()), [sent]);
    assert!(matches!(
        t.s.send(Message::binary(vec![7; 101]), t.now),
        Err(SendError::TooLarge {
            len: 101,
            max: 100,
            ..
        })
    ));
}

#[test]
fn too_large_messages_are_refused() {
    let mut t = Sim::new(SessionConfig::default().max_message_size(4));
    t.open_conn();
    let e = t.s.send(Message::binary(vec![0; 5]), t.now).unwrap_err();
    assert!(matches!(e, SendError::TooLarge { len: 5, max: 4, .. }));
}

#[test]
fn every_send_completes_exactly_once() {
    let mut t = Sim::default();
    let c = t.open_conn();
    let a = t.send("a").unwrap();
    let b = t.send("b").unwrap();
    t.input(c, TransportEvent::SendWritten(a));
    t.input(c, TransportEvent::SendWritten(a)); // duplicate: ignored, counted
    assert_eq!(t.s.stats().unexpected_inputs, 1);
    t.input(c, TransportEvent::Closed); // b is lost
    t.input(c, TransportEvent::SendWritten(b)); // too late: stale connection
    let e = t.events();
    let done: Vec<_> = e
        .iter()
        .filter(|e| matches!(e, Event::SendCompleted { .. } | Event::SendFailed { .. }))
        .collect();
    assert_eq!(done.len(), 2);
    assert!(
        matches!(done[1], Event::SendFailed { id, reason: SendFailure::ConnectionLost, message: None, .. } if *id == b)
    );
}

#[test]
fn connect_failure_fails_the_queue_then_closes_1006() {
    let mut t = Sim::default();
    let c = t.connect();
    let q = t.send("q").unwrap();
    t.input(
        c,
        TransportEvent::ConnectFailed(TransportError::new(TransportErrorKind::Connect, "refused")),
    );
    let e = t.events();
    assert!(matches!(
        &e[1],
        Event::Error {
            error: ConnectionError::ConnectFailed(_),
            ..
        }
    ));
    assert!(
        matches!(&e[2], Event::SendFailed { id, reason: SendFailure::ConnectFailed, message: Some(m), .. } if *id == q && *m == Message::text("q"))
    );
    assert_eq!(
        close_of(&e),
        (1006, "connect failed: refused".into(), false)
    );
    assert_eq!(t.s.state(), ReadyState::Closed);
}

#[test]
fn stale_conn_input_never_reaches_the_application() {
    let mut t = Sim::default();
    let c1 = t.open_conn();
    let c2 = t.connect();
    t.events();
    for e in [
        TransportEvent::Message(Message::text("old")),
        TransportEvent::Opened(Box::default()),
        TransportEvent::PeerClosed(PeerClose {
            code: Some(1000),
            reason: String::new(),
        }),
        TransportEvent::Error(TransportError::new(TransportErrorKind::Io, "x")),
    ] {
        t.input(c1, e);
    }
    assert!(t.events().is_empty());
    assert_eq!(t.s.stats().stale_inputs, 4);
    assert_eq!(t.s.current(), Some(c2));
    assert_eq!(t.s.state(), ReadyState::Connecting);
}

#[test]
fn close_before_open_abort_is_the_default() {
    let mut t = Sim::default();
    let c = t.connect();
    let q = t.send("q").unwrap();
    t.actions();
    t.s.close(None, "", t.now).unwrap();
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
    let e = t.events();
    assert!(
        matches!(&e[1], Event::SendFailed { id, reason: SendFailure::Cancelled, .. } if *id == q)
    );
    let (code, _, clean) = close_of(&e);
    assert_eq!((code, clean), (1006, false));
    assert_eq!(t.s.state(), ReadyState::Closed);
    // A late handshake result for the aborted dial is stale.
    t.open(c);
    assert!(t.events().is_empty());
}

#[test]
fn close_before_open_after_open_flushes_then_closes() {
    let mut t = Sim::new(SessionConfig::default().close_before_open(CloseBeforeOpen::AfterOpen));
    let c = t.connect();
    let q = t.send("q").unwrap();
    t.s.close(Some(3001), "later", t.now).unwrap();
    assert_eq!(t.s.state(), ReadyState::Connecting);
    assert!(matches!(t.send("after close"), Err(SendError::Closing(_))));
    t.actions();
    t.open(c);
    assert_eq!(t.s.state(), ReadyState::Closing);
    let a = t.actions();
    assert!(matches!(&a[0], Action::Send { id, .. } if *id == q));
    assert!(matches!(&a[1], Action::Close { frame, .. } if frame.code() == 3001));
    t.input(c, TransportEvent::SendWritten(q));
    t.input(
        c,
        TransportEvent::PeerClosed(PeerClose {
            code: Some(3001),
            reason: "later".into(),
        }),
    );
    t.input(c, TransportEvent::Closed);
    let e = t.events();
    assert!(matches!(e[1], Event::Open { .. }));
    assert!(matches!(e[2], Event::SendCompleted { id, .. } if id == q));
    assert_eq!(close_of(&e), (3001, "later".into(), true));
}

#[test]
fn close_before_open_ignore_mimics_the_seed() {
    let mut t = Sim::new(SessionConfig::default().close_before_open(CloseBeforeOpen::Ignore));
    let c = t.connect();
    t.actions();
    let e = t.s.close(None, "", t.now).unwrap_err();
    assert_eq!(e, CloseError::NotOpenYet);
    assert!(t.actions().is_empty());
    assert_eq!(t.s.state(), ReadyState::Connecting);
    t.open(c);
    assert_eq!(t.s.state(), ReadyState::Open);
}

#[test]
fn replacing_an_open_connection_closes_it_first_and_times_its_teardown() {
    let mut t = Sim::default();
    let c1 = t.open_conn();
    let inflight = t.send("in flight").unwrap();
    t.actions();
    let c2 = t.connect();
    let e = t.events();
    assert!(
        matches!(&e[0], Event::SendFailed { id, reason: SendFailure::Replaced, conn, .. } if *id == inflight && *conn == c1)
    );
    assert!(
        matches!(&e[1], Event::Close { conn, code: 1000, reason, .. } if *conn == c1 && reason == REPLACED_REASON)
    );
    assert!(matches!(&e[2], Event::Connecting { conn, .. } if *conn == c2));
    let a = t.actions();
    assert!(matches!(&a[0], Action::Close { conn, frame } if *conn == c1 && frame.code() == 1000));
    assert!(matches!(&a[1], Action::Dial { conn, .. } if *conn == c2));
    assert_eq!(t.s.teardowns().collect::<Vec<_>>(), [c1]);
    // The old transport never finishes: aborted at the close timeout (10 s), before the
    // new connection's handshake timeout (60 s).
    t.fire();
    assert_eq!(t.actions(), [Action::Abort { conn: c1 }]);
    assert_eq!(t.s.teardowns().count(), 0);
    assert!(t.events().is_empty());
}

#[test]
fn a_teardown_ends_when_the_old_transport_closes() {
    let mut t = Sim::default();
    let c1 = t.open_conn();
    t.connect();
    t.input(c1, TransportEvent::Closed);
    assert_eq!(t.s.teardowns().count(), 0);
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(60)));
}

#[test]
fn replacing_while_connecting_aborts_the_dial_and_fails_the_queue() {
    let mut t = Sim::default();
    let c1 = t.connect();
    let q = t.send("q").unwrap();
    t.actions();
    let c2 = t.connect();
    let a = t.actions();
    assert_eq!(a[0], Action::Abort { conn: c1 });
    assert!(matches!(&a[1], Action::Dial { conn, .. } if *conn == c2));
    let e = t.events();
    assert!(
        matches!(&e[1], Event::SendFailed { id, reason: SendFailure::Replaced, .. } if *id == q)
    );
    assert!(matches!(&e[2], Event::Close { conn, code: 1000, .. } if *conn == c1));
    assert!(e[3..].iter().all(|e| e.conn() == c2));
}

#[test]
fn a_handshake_timeout_names_the_dial_stage_the_driver_reported_last() {
    let mut t = Sim::default();
    let c = t.connect();
    t.actions();
    t.input(c, TransportEvent::Dialing(DialStage::Resolving));
    t.input(c, TransportEvent::Dialing(DialStage::Connecting));
    t.advance(Duration::from_secs(60));
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
    let e = t.events();
    let Event::Error { error, .. } = &e[1] else {
        panic!("{e:?}")
    };
    assert!(matches!(
        error,
        ConnectionError::HandshakeTimeout {
            stage: Some(DialStage::Connecting),
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        "handshake timed out after 60s: no TCP connection yet"
    );
    assert_eq!(t.s.stats().unexpected_inputs, 0);

    // Once open, a stage is out of place: counted, and nothing else changes.
    let mut t = Sim::default();
    let c = t.connect();
    t.input(c, TransportEvent::Dialing(DialStage::Upgrade));
    t.input(c, TransportEvent::Opened(Box::default()));
    t.input(c, TransportEvent::Dialing(DialStage::Tls));
    assert_eq!(t.s.state(), ReadyState::Open);
    assert_eq!(t.s.stats().unexpected_inputs, 1);
}

#[test]
fn handshake_timeout_default_and_per_connect() {
    let mut t = Sim::default();
    let c = t.connect();
    t.send("q").unwrap();
    t.actions();
    t.advance(Duration::from_secs(59));
    assert_eq!(t.s.state(), ReadyState::Connecting);
    t.advance(Duration::from_secs(1));
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
    let e = t.events();
    assert!(
        matches!(&e[1], Event::Error { error: ConnectionError::HandshakeTimeout { after, stage: None, .. }, .. } if *after == Duration::from_secs(60))
    );
    assert!(matches!(
        &e[2],
        Event::SendFailed {
            reason: SendFailure::ConnectFailed,
            ..
        }
    ));
    assert_eq!(close_of(&e).0, 1006);

    let mut t = Sim::default();
    t.s.connect(
        &ConnectOptions::new("ws://h").timeout(Duration::from_millis(250)),
        t.now,
    )
    .unwrap();
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_millis(250)));
}

#[test]
fn early_repeated_and_stale_timeouts_do_nothing() {
    let mut t = Sim::default();
    t.connect();
    t.actions();
    t.events();
    let deadline = t.s.poll_timeout().unwrap();
    let start = t.now;
    t.s.handle_timeout(start + Duration::from_secs(30));
    t.s.handle_timeout(start + Duration::from_secs(30));
    t.s.handle_timeout(start); // stale
    assert!(!t.s.has_output());
    assert_eq!(t.s.poll_timeout(), Some(deadline));
    // A stale `now` on a call is treated as the latest one seen.
    t.s.send(Message::text("x"), start).unwrap();
    assert_eq!(t.s.poll_timeout(), Some(deadline));
}

/// The handshake timeout whose timer runs late (the driver was away: a suspended process,
/// a mini-program in the background) runs once more from then, as keepalive's does: the
/// server's answer read next opens the connection (it failed, the answer unread, before).
/// A second late timer of the same dial ends it; one on time, as before, at once.
#[test]
fn a_handshake_timeout_whose_timer_ran_late_runs_once_more() {
    let mut t = Sim::default();
    let c = t.connect();
    t.actions();
    t.events();
    // Ten minutes away, with the dial's 60 s passing; then the answer that waited.
    t.now += Duration::from_secs(600);
    t.s.handle_timeout(t.now);
    assert_eq!(t.s.state(), ReadyState::Connecting);
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(60)));
    assert!(t.actions().is_empty());
    t.open(c);
    assert_eq!(t.s.state(), ReadyState::Open);

    // Away twice in one dial: the second late timer ends it.
    let mut t = Sim::default();
    let c = t.connect();
    t.actions();
    for _ in 0..2 {
        t.now += Duration::from_secs(600);
        t.s.handle_timeout(t.now);
    }
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
    assert_eq!(t.s.state(), ReadyState::Closed);

    // A shorter timeout counts a stall longer than itself (200 ms late on 100 ms); on time
    // (late by the timeout or less), it ends at once.
    let dial_of_100_ms = || {
        let mut t = Sim::default();
        t.s.connect(
            &ConnectOptions::new("ws://h").timeout(Duration::from_millis(100)),
            t.now,
        )
        .unwrap();
        t
    };
    let mut t = dial_of_100_ms();
    for (wait, state) in [(300, ReadyState::Connecting), (150, ReadyState::Closed)] {
        t.now += Duration::from_millis(wait);
        t.s.handle_timeout(t.now);
        assert_eq!(t.s.state(), state, "after {wait} ms more");
    }
    let mut t = dial_of_100_ms();
    t.now += Duration::from_millis(190);
    t.s.handle_timeout(t.now);
    assert_eq!(t.s.state(), ReadyState::Closed);
}

#[test]
fn a_deadline_passed_before_an_input_is_honoured_first() {
    let mut t = Sim::default();
    let c = t.connect();
    t.now += Duration::from_secs(61);
    t.open(c); // arrives after the deadline
    assert_eq!(t.s.state(), ReadyState::Closed);
    assert!(t.events().iter().any(|e| matches!(
        e,
        Event::Error {
            error: ConnectionError::HandshakeTimeout { .. },
            ..
        }
    )));
}

#[test]
fn close_timeout_aborts_and_reports_unclean() {
    let mut t = Sim::default();
    let c = t.open_conn();
    t.s.close(None, "", t.now).unwrap();
    t.actions();
    t.advance(Duration::from_secs(10));
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
    let e = t.events();
    assert!(matches!(
        &e[0],
        Event::Error {
            error: ConnectionError::CloseTimeout(_),
            ..
        }
    ));
    assert_eq!(
        close_of(&e),
        (1006, "close handshake timed out".into(), false)
    );
}

/// The events taken: with a `CloseTimeout` error or not (`with_timeout`), ending with this
/// close (code, reason, clean).
fn assert_ended(t: &mut Sim, with_timeout: bool, close: (u16, &str, bool)) {
    let e = t.events();
    assert_eq!(timed_out(&e), with_timeout, "{e:?}");
    assert_eq!(close_of(&e), (close.0, close.1.into(), close.2));
}

/// Whether `events` hold a `CloseTimeout` error.
fn timed_out(events: &[Event]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            Event::Error {
                error: ConnectionError::CloseTimeout(_),
                ..
            }
        )
    })
}

/// The close timeout whose timer runs late (the driver was away: a suspended process, a
/// mini-program in the background) runs once more from then, as the handshake's and
/// keepalive's do: the peer's close frame read next (it waited unread) makes the close
/// clean, with the peer's code, where it ended 1006 at once before. The same when the peer
/// began the close and our answer is written only once the driver runs again.
#[test]
fn a_close_timeout_whose_timer_ran_late_runs_once_more() {
    let peer_close = |code| {
        TransportEvent::PeerClosed(PeerClose {
            code: Some(code),
            reason: "bye".into(),
        })
    };
    // This side began the close; ten minutes away, with the 10 s passing.
    let mut t = Sim::default();
    let c = t.open_conn();
    t.s.close(Some(4000), "done", t.now).unwrap();
    t.actions();
    t.input(c, TransportEvent::CloseWritten);
    t.advance(Duration::from_secs(600));
    assert_eq!(t.s.state(), ReadyState::Closing);
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(10)));
    assert!(t.actions().is_empty());
    assert!(t.events().is_empty());
    // The peer's answer that waited, then the server's TCP close.
    t.input(c, peer_close(4001));
    t.input(c, TransportEvent::Closed);
    assert_ended(&mut t, false, (4001, "bye", true));

    // The same when the late timer runs on the input that brings the peer's answer.
    let mut t = Sim::default();
    let c = t.open_conn();
    t.s.close(None, "", t.now).unwrap();
    t.input(c, TransportEvent::CloseWritten);
    t.now += Duration::from_secs(600);
    t.input(c, peer_close(4001));
    t.input(c, TransportEvent::Closed);
    assert_ended(&mut t, false, (4001, "bye", true));

    // The peer began it; our answer goes out once the driver runs again.
    let mut t = Sim::default();
    let c = t.open_conn();
    t.input(c, peer_close(4002));
    t.advance(Duration::from_secs(600));
    assert_eq!(t.s.state(), ReadyState::Closing);
    t.input(c, TransportEvent::CloseWritten);
    t.input(c, TransportEvent::Closed);
    assert_ended(&mut t, false, (4002, "bye", true));
}

/// A driver late again in the same close (or on time after the restart) ends it at the
/// second timeout, as before: 1006 when the peer's close frame never came, the peer's code
/// not clean when our answer never went out.
#[test]
fn a_close_timeout_runs_late_once_per_close() {
    for second in [Duration::from_secs(600), Duration::from_secs(10)] {
        let mut t = Sim::default();
        let c = t.open_conn();
        t.s.close(None, "", t.now).unwrap();
        t.actions();
        t.advance(Duration::from_secs(600));
        assert_eq!(t.s.state(), ReadyState::Closing);
        t.advance(second);
        assert_eq!(t.actions(), [Action::Abort { conn: c }], "{second:?}");
        assert_ended(&mut t, true, (1006, "close handshake timed out", false));

        let mut t = Sim::default();
        let c = t.open_conn();
        t.input(
            c,
            TransportEvent::PeerClosed(PeerClose {
                code: Some(4002),
                reason: "bye".into(),
            }),
        );
        t.advance(Duration::from_secs(600));
        assert_eq!(t.s.state(), ReadyState::Closing);
        t.advance(second);
        assert_eq!(t.actions(), [Action::Abort { conn: c }], "{second:?}");
        assert_ended(&mut t, true, (4002, "bye", false));
    }
}

/// A close timeout on time (late by a second or less; by the timeout or less, when that is
/// shorter) ends the close at once, as before; so does the linger, late or not: both close
/// frames went, and the close is clean whenever it ends.
#[test]
fn a_close_timeout_on_time_and_a_late_linger_end_at_once() {
    for (timeout, late) in [
        (Duration::from_secs(10), Duration::from_secs(1)),
        (Duration::from_millis(100), Duration::from_millis(100)),
    ] {
        let mut t = Sim::new(SessionConfig::default().close_timeout(timeout));
        let c = t.open_conn();
        t.s.close(None, "", t.now).unwrap();
        t.actions();
        t.advance(timeout + late);
        assert_eq!(t.actions(), [Action::Abort { conn: c }], "{timeout:?}");
        assert_ended(&mut t, true, (1006, "close handshake timed out", false));
    }

    let mut t = Sim::default();
    let c = t.open_conn();
    t.s.close(Some(4000), "done", t.now).unwrap();
    t.actions();
    t.input(c, TransportEvent::CloseWritten);
    t.input(
        c,
        TransportEvent::PeerClosed(PeerClose {
            code: Some(4001),
            reason: "bye".into(),
        }),
    );
    t.advance(Duration::from_secs(600));
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
    assert_ended(&mut t, false, (4001, "bye", true));
}

#[test]
fn closing_refuses_sends_and_ignores_a_second_close() {
    let mut t = Sim::default();
    t.open_conn();
    t.s.close(None, "", t.now).unwrap();
    assert!(matches!(t.send("x"), Err(SendError::Closing(_))));
    assert_eq!(t.s.close(Some(4000), "", t.now), Ok(()));
    assert_eq!(t.actions().len(), 1);
}

#[test]
fn keepalive_pings_after_idle_and_declares_a_silent_peer_dead() {
    let cfg = SessionConfig::default().keepalive(Duration::from_secs(5), Duration::from_secs(2));
    let mut t = Sim::new(cfg);
    let c = t.open_conn();
    t.advance(Duration::from_secs(4));
    t.input(c, TransportEvent::Message(Message::text("alive")));
    t.advance(Duration::from_secs(4));
    assert!(
        t.actions().is_empty(),
        "activity restarts the idle interval"
    );
    t.advance(Duration::from_secs(1));
    assert!(matches!(&t.actions()[..], [Action::Ping { conn, .. }] if *conn == c));
    t.input(c, TransportEvent::Pong(Bytes::new()));
    t.fire();
    assert!(matches!(&t.actions()[..], [Action::Ping { .. }]));
    t.fire(); // no pong within 2 s
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
    let e = t.events();
    assert!(e.iter().any(|e| matches!(
        e,
        Event::Error {
            error: ConnectionError::KeepaliveTimeout(_),
            ..
        }
    )));
    assert_eq!(close_of(&e).0, 1006);
    assert_eq!(t.s.state(), ReadyState::Closed);
}

/// A driver that was not running when the pong's timeout passed (an embedder's probe: the
/// process stopped for 3 h, the pong read on resume) lost the connection although the pong
/// had come: every input runs the timers due first. A timer a whole timeout late now gives
/// the peer one more timeout from then, once; a dead peer still ends.
#[test]
fn keepalive_gives_a_peer_one_more_timeout_when_its_timer_ran_late() {
    let cfg = SessionConfig::default().keepalive(Duration::from_secs(5), Duration::from_secs(2));
    let mut t = Sim::new(cfg);
    let c = t.open_conn();
    t.fire();
    assert!(matches!(&t.actions()[..], [Action::Ping { .. }]));
    // Three hours with the driver away; then the pong that waited is read.
    t.now += Duration::from_secs(3 * 3600);
    t.input(c, TransportEvent::Pong(Bytes::new()));
    assert_eq!(t.s.state(), ReadyState::Open);
    assert!(t.actions().is_empty(), "{:?}", t.events());
    // The next ping goes an interval after the pong.
    t.advance(Duration::from_secs(5));
    assert!(matches!(&t.actions()[..], [Action::Ping { .. }]));

    // Away again, and nothing waited: the peer gets one more timeout from the late timer,
    // then ends; a second late timer for the same ping is not given another.
    t.now += Duration::from_secs(3600);
    t.s.handle_timeout(t.now);
    assert_eq!(t.s.state(), ReadyState::Open);
    t.now += Duration::from_secs(3600);
    t.s.handle_timeout(t.now);
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
    assert!(t.events().iter().any(|e| matches!(
        e,
        Event::Error {
            error: ConnectionError::KeepaliveTimeout(_),
            ..
        }
    )));

    // A stall shorter than the timeout counts too (a reviewer: a 15 s stall killed what a
    // 3 h one spared): late by more than a second, the pong read next still keeps it.
    let cfg = SessionConfig::default().keepalive(Duration::from_secs(5), Duration::from_secs(10));
    let mut t = Sim::new(cfg);
    let c = t.open_conn();
    t.fire();
    t.actions();
    t.now += Duration::from_secs(12);
    t.input(c, TransportEvent::Pong(Bytes::new()));
    assert_eq!(t.s.state(), ReadyState::Open);

    // On time (late by a second or less), silence ends the connection as before.
    let cfg = SessionConfig::default().keepalive(Duration::from_secs(5), Duration::from_secs(2));
    let mut t = Sim::new(cfg);
    let c = t.open_conn();
    t.fire();
    t.actions();
    t.advance(Duration::from_millis(3_000));
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
}

/// A ping from the peer is activity too, like a message or a pong: it restarts the idle
/// interval (and is not an unexpected input).
#[test]
fn a_ping_from_the_peer_restarts_the_keepalive_interval() {
    let cfg = SessionConfig::default().keepalive(Duration::from_secs(5), Duration::from_secs(2));
    let mut t = Sim::new(cfg);
    let c = t.open_conn();
    t.advance(Duration::from_secs(4));
    t.input(
        c,
        TransportEvent::Ping(Bytes::from_static(b"are you there")),
    );
    t.advance(Duration::from_secs(4));
    assert!(
        t.actions().is_empty(),
        "the ping restarted the idle interval"
    );
    t.advance(Duration::from_secs(1));
    assert!(matches!(&t.actions()[..], [Action::Ping { conn, .. }] if *conn == c));
    assert_eq!(t.s.stats().unexpected_inputs, 0);
    t.input(c, TransportEvent::Opened(Box::default()));
    assert_eq!(t.s.stats().unexpected_inputs, 1);
    assert_eq!(t.s.state(), ReadyState::Open);
}

/// Part of a large frame arriving ([`TransportEvent::Receiving`]) is activity too: it
/// restarts the idle interval, also while keepalive's ping waits for its pong (which waits
/// behind the rest of the frame), so a message slower than the keepalive timeout is not
/// taken for a dead peer. Silence after it still is.
#[test]
fn part_of_a_message_arriving_restarts_the_keepalive_interval() {
    let cfg = SessionConfig::default().keepalive(Duration::from_secs(5), Duration::from_secs(2));
    let mut t = Sim::new(cfg);
    let c = t.open_conn();
    t.advance(Duration::from_secs(4));
    t.input(c, TransportEvent::Receiving);
    t.advance(Duration::from_secs(4));
    assert!(t.actions().is_empty(), "it restarted the idle interval");
    t.advance(Duration::from_secs(1));
    assert!(matches!(&t.actions()[..], [Action::Ping { conn, .. }] if *conn == c));
    // The ping waits; the frame keeps arriving, slower than the timeout allows in all.
    for _ in 0..4 {
        t.advance(Duration::from_secs(1));
        t.input(c, TransportEvent::Receiving);
    }
    t.input(
        c,
        TransportEvent::Message(Message::binary(vec![7; 100_000])),
    );
    assert_eq!(t.s.state(), ReadyState::Open);
    assert_eq!(t.s.stats().unexpected_inputs, 0);
    t.fire(); // idle again: a ping
    assert!(matches!(&t.actions()[..], [Action::Ping { .. }]));
    t.fire(); // no pong, nothing arriving
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
    assert_eq!(t.s.state(), ReadyState::Closed);
}

/// Our own large message going out to a full socket that takes more of it
/// ([`TransportEvent::Sending`]) is a sign of life too: keepalive's ping waits behind it,
/// so an upload slower than the keepalive timeout is not taken for a dead peer (a prober's
/// 300 KB message over a 20 KB/s uplink was cut at interval + timeout). Once nothing more
/// goes out, silence still is.
#[test]
fn our_own_message_going_out_restarts_the_keepalive_interval() {
    let cfg = SessionConfig::default().keepalive(Duration::from_secs(5), Duration::from_secs(2));
    let mut t = Sim::new(cfg);
    let c = t.open_conn();
    t.advance(Duration::from_secs(5));
    assert!(matches!(&t.actions()[..], [Action::Ping { .. }]));
    for _ in 0..20 {
        t.advance(Duration::from_secs(1));
        t.input(c, TransportEvent::Sending);
    }
    assert_eq!(t.s.state(), ReadyState::Open);
    assert_eq!(t.s.stats().unexpected_inputs, 0);
    t.fire(); // idle: a ping
    assert!(matches!(&t.actions()[..], [Action::Ping { .. }]));
    t.fire(); // no pong, nothing going out
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
    assert_eq!(t.s.state(), ReadyState::Closed);
}

#[test]
fn close_code_and_reason_are_validated_without_state_change() {
    let mut t = Sim::default();
    t.open_conn();
    for code in [999, 1001, 1005, 1006, 2999, 5000] {
        assert_eq!(
            t.s.close(Some(code), "", t.now),
            Err(CloseError::InvalidCode(code))
        );
    }
    let long = "é".repeat(62); // 124 bytes
    assert_eq!(
        t.s.close(None, &long, t.now),
        Err(CloseError::ReasonTooLong(124))
    );
    assert_eq!(t.s.state(), ReadyState::Open);
    assert!(t.actions().is_empty());
    assert!(t.s.close(Some(4999), &"a".repeat(123), t.now).is_ok());
}

#[test]
fn peer_close_codes_1005_and_1006() {
    let mut t = Sim::default();
    let c = t.open_conn();
    t.input(
        c,
        TransportEvent::PeerClosed(PeerClose {
            code: None,
            reason: String::new(),
        }),
    );
    t.input(c, TransportEvent::Closed);
    assert_eq!(close_of(&t.events()), (1005, String::new(), true));

    let c = t.open_conn();
    t.input(c, TransportEvent::Closed);
    let e = t.events();
    assert!(matches!(&e[0], Event::Error { .. }));
    assert_eq!(close_of(&e).0, 1006);
    assert!(!close_of(&e).2);
}

#[test]
fn peer_initiated_close_with_code_and_reason() {
    let mut t = Sim::default();
    let c = t.open_conn();
    t.input(
        c,
        TransportEvent::PeerClosed(PeerClose {
            code: Some(4001),
            reason: "bye".into(),
        }),
    );
    assert_eq!(t.s.state(), ReadyState::Closing);
    assert!(matches!(t.send("x"), Err(SendError::Closing(_))));
    t.input(c, TransportEvent::Closed);
    assert_eq!(close_of(&t.events()), (4001, "bye".into(), true));
}

#[test]
fn protocol_failures_report_their_close_codes() {
    for (kind, code) in [
        (TransportErrorKind::Protocol, 1002),
        (TransportErrorKind::InvalidUtf8, 1007),
        (TransportErrorKind::MessageTooBig, 1009),
        (TransportErrorKind::Io, 1006),
    ] {
        let mut t = Sim::default();
        let c = t.open_conn();
        t.input(c, TransportEvent::Error(TransportError::new(kind, "bad")));
        let a = t.actions();
        if code == 1006 {
            assert_eq!(a, [Action::Abort { conn: c }]);
        } else {
            assert!(matches!(&a[..], [Action::Close { frame, .. }] if frame.code() == code));
            assert_eq!(
                t.s.teardowns().count(),
                1,
                "the failing transport is still timed"
            );
        }
        let e = t.events();
        assert!(matches!(e[0], Event::Error { .. }));
        assert_eq!((close_of(&e).0, close_of(&e).2), (code, false));
    }
}

#[test]
fn deflate_in_force_without_an_offer_fails_the_connection() {
    let mut t = Sim::default();
    let c = t.connect();
    t.actions();
    t.input(
        c,
        TransportEvent::Opened(Box::new(
            Handshake::default().with_deflate(Some(DeflateParams::default())),
        )),
    );
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
    let e = t.events();
    assert!(matches!(
        &e[1],
        Event::Error {
            error: ConnectionError::DeflateNotOffered,
            ..
        }
    ));
    assert_eq!(close_of(&e).0, 1006);
    // Offered, and reported on open.
    let c =
        t.s.connect(
            &ConnectOptions::new("ws://127.0.0.1:9/x").per_message_deflate(true),
            t.now,
        )
        .unwrap();
    let agreed = DeflateOptions::default()
        .negotiate("permessage-deflate; server_no_context_takeover")
        .unwrap();
    t.input(
        c,
        TransportEvent::Opened(Box::new(Handshake::default().with_deflate(Some(agreed)))),
    );
    assert!(
        t.events().iter().any(
            |e| matches!(e, Event::Open { handshake, .. } if handshake.deflate == Some(agreed))
        )
    );
}

#[test]
fn a_sub_protocol_that_was_not_offered_fails_the_connection() {
    let mut t = Sim::default();
    let c = t.connect();
    t.actions();
    t.input(
        c,
        TransportEvent::Opened(Box::new(
            Handshake::default().with_protocol(Some("other".into())),
        )),
    );
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
    let e = t.events();
    assert!(
        matches!(&e[1], Event::Error { error: ConnectionError::ProtocolNotOffered(p), .. } if p == "other")
    );
    assert_eq!(close_of(&e).0, 1006);
    // The one offered is reported on open; none selected is fine too.
    let c = t.connect();
    t.input(
        c,
        TransportEvent::Opened(Box::new(
            Handshake::default().with_protocol(Some("chat".into())),
        )),
    );
    assert!(t.events().iter().any(|e| matches!(e, Event::Open { handshake, .. } if handshake.protocol.as_deref() == Some("chat"))));
}

#[test]
fn invalid_options_are_rejected_before_any_dial() {
    let mut t = Sim::default();
    let e =
        t.s.connect(&ConnectOptions::new("ws://h").header("Referer", "x"), t.now)
            .unwrap_err();
    assert!(e.to_string().starts_with("header:"));
    assert!(t.actions().is_empty());
    assert!(t.events().is_empty());
    assert_eq!(t.s.state(), ReadyState::Idle);
}

#[test]
fn config_errors_name_the_field() {
    let bad = SessionConfig::default().queue_bounds(0, 1);
    assert_eq!(Session::new(bad).unwrap_err().field, "max_queued_messages");
    let bad = SessionConfig::default()
        .queue_bounds(1, 100)
        .max_buffered_bytes(10);
    assert_eq!(Session::new(bad).unwrap_err().field, "max_buffered_bytes");
    let bad = SessionConfig::default().keepalive(Duration::ZERO, Duration::from_secs(1));
    assert!(
        Session::new(bad)
            .unwrap_err()
            .to_string()
            .starts_with("keepalive.interval:")
    );
}

#[test]
fn timers_longer_than_a_day_are_rejected_and_a_day_works() {
    let day = MAX_TIMER;
    assert_eq!(day, Duration::from_secs(86_400), "a day, as documented");
    let long = day + Duration::from_nanos(1);
    let second = Duration::from_secs(1);
    let reconnect = |base, cap| ReconnectPolicy::default().backoff(base, cap);
    for (config, field) in [
        (
            SessionConfig::default().handshake_timeout(long),
            "handshake_timeout",
        ),
        (
            SessionConfig::default().close_timeout(long),
            "close_timeout",
        ),
        (
            SessionConfig::default().keepalive(long, second),
            "keepalive.interval",
        ),
        (
            SessionConfig::default().keepalive(second, long),
            "keepalive.timeout",
        ),
        (
            SessionConfig::default().reconnect(reconnect(long, long)),
            "reconnect.base",
        ),
        (
            SessionConfig::default().reconnect(reconnect(second, long)),
            "reconnect.cap",
        ),
        (
            SessionConfig::default().keepalive(Duration::MAX, second),
            "keepalive.interval",
        ),
    ] {
        let e = Session::new(config).unwrap_err();
        assert_eq!(e.field, field);
        assert!(e.to_string().contains("at most 24 hours"), "{e}");
    }
    let e = ConnectOptions::new("ws://h")
        .timeout(long)
        .validate()
        .unwrap_err();
    assert_eq!(e, ConnectError::InvalidTimeout);
    assert!(e.to_string().starts_with("timeout:"), "{e}");

    // Every timer at the limit: each deadline is computed without overflow and fires.
    let config = SessionConfig::default()
        .handshake_timeout(day)
        .close_timeout(day)
        .keepalive(day, day)
        .reconnect(reconnect(day, day));
    let mut t = Sim::new(config);
    let c = t.connect();
    assert_eq!(t.s.poll_timeout(), Some(t.now + day));
    t.open(c);
    assert_eq!(t.s.poll_timeout(), Some(t.now + day), "keepalive ping");
    t.now += day;
    t.s.handle_timeout(t.now);
    assert!(t.actions().iter().any(|a| matches!(a, Action::Ping { .. })));
    t.now += day;
    t.s.handle_timeout(t.now);
    let e = t.events();
    assert!(
        e.iter().any(|e| matches!(e, Event::Reconnecting { .. })),
        "{e:?}"
    );
    let due = t.s.poll_timeout().unwrap();
    assert!(due <= t.now + day, "the backoff is at most the cap");
    let c =
        t.s.connect(&ConnectOptions::new("ws://h").timeout(day), t.now)
            .unwrap();
    t.open(c);
    t.s.close(None, "", t.now).unwrap();
    assert_eq!(t.s.poll_timeout(), Some(t.now + day), "close timeout");
}

#[test]
fn pool_holds_independent_connections_up_to_its_limit() {
    let mut p = Pool::new(SessionConfig::default().pool_limit(2)).unwrap();
    let now = Instant::now();
    let o = ConnectOptions::new("ws://h");
    let a = p.connect(&o, now).unwrap();
    let b = p.connect(&o, now).unwrap();
    assert_eq!(
        p.connect(&o, now).unwrap_err(),
        ConnectError::TooManyConnections { limit: 2 }
    );
    p.handle(a, TransportEvent::Opened(Box::default()), now);
    let sa = p.send(a, Message::text("to a"), now).unwrap();
    let sb = p.send(b, Message::text("to b"), now).unwrap();
    assert_ne!(sa, sb, "send ids are unique across the pool");
    assert_eq!(p.state(a), ReadyState::Open);
    assert_eq!(p.state(b), ReadyState::Connecting);
    let actions: Vec<Action> = std::iter::from_fn(|| p.poll_action()).collect();
    assert!(
        actions
            .iter()
            .any(|x| matches!(x, Action::Send { conn, id, .. } if *conn == a && *id == sa))
    );
    // Closing one frees a slot.
    p.close(b, None, "", now).unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| p.poll_event()).collect();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Close { conn, .. } if *conn == b))
    );
    assert!(p.connect(&o, now).is_ok());
    assert_eq!(p.live(), 2);
    assert!(matches!(
        p.send(b, Message::text("x"), now),
        Err(SendError::NotConnected(_))
    ));
}

/// The pool's per-connection calls reach the connection they name, and its pool-wide
/// queues (events, completions) hold what every connection produced.
#[test]
fn pool_calls_reach_the_connection_they_name() {
    let mut p = Pool::new(SessionConfig::default()).unwrap();
    let now = Instant::now();
    let o = ConnectOptions::new("ws://h");
    let a = p.connect(&o, now).unwrap();
    let b = p.connect(&o, now).unwrap();
    p.track_completions(true);
    for conn in [a, b] {
        p.handle(conn, TransportEvent::Opened(Box::default()), now);
    }
    assert!(p.has_events());
    while p.poll_event().is_some() {}
    assert!(!p.has_events());
    let sa = p.send(a, Message::text("abc"), now).unwrap();
    let sb = p.send(b, Message::text("de"), now).unwrap();
    assert_eq!((p.buffered_amount(a), p.buffered_amount(b)), (3, 2));
    p.ping(b, "pb", now).unwrap();
    assert_eq!(
        p.ping(ConnId::from_raw(99), "x", now),
        Err(PingError::NotOpen)
    );
    let actions: Vec<Action> = std::iter::from_fn(|| p.poll_action()).collect();
    assert!(
        actions
            .iter()
            .any(|x| matches!(x, Action::Ping { conn, payload } if *conn == b && payload == "pb")),
        "{actions:?}"
    );
    // Completions from both connections, whether or not events were taken.
    p.handle(b, TransportEvent::SendWritten(sb), now);
    p.handle(a, TransportEvent::SendWritten(sa), now);
    assert_eq!((p.buffered_amount(a), p.buffered_amount(b)), (0, 0));
    // (In order per connection; across connections in no promised order.)
    let mut completions: Vec<_> = std::iter::from_fn(|| p.poll_completion()).collect();
    completions.sort_by_key(|c| c.0.get());
    assert_eq!(completions, [(sa, Ok(())), (sb, Ok(()))]);
    assert!(p.has_events());
    // The pool's backlog counts what waits on every connection, and what was taken.
    p.handle(b, TransportEvent::Message(Message::text("hello")), now);
    let backlog = p.backlog();
    assert_eq!(
        (backlog.messages, backlog.bytes, backlog.completions),
        (1, 5, 2)
    );
    let taken: Vec<Event> = std::iter::from_fn(|| p.poll_event()).collect();
    assert_eq!(taken.len(), 3, "{taken:?}");
    assert_eq!(p.backlog(), Backlog::default());
}

/// A call given a time earlier than one the session already saw takes the later one (a
/// driver's clocks may disagree by a little): deadlines never move back.
#[test]
fn a_time_earlier_than_the_last_one_seen_counts_as_the_last() {
    let mut t = Sim::default();
    let early = t.now;
    t.now += Duration::from_secs(60);
    let c = t.open_conn();
    t.s.close(None, "", early).unwrap();
    assert_eq!(t.s.poll_timeout(), Some(t.now + Duration::from_secs(10)));
    assert_eq!(t.actions().len(), 1);
    // Data after our close frame is not delivered and is not unexpected; `Opened` is.
    t.input(c, TransportEvent::Message(Message::text("late")));
    t.input(c, TransportEvent::Ping(Bytes::new()));
    assert!(t.events().is_empty());
    assert_eq!(t.s.stats().unexpected_inputs, 0);
    t.input(c, TransportEvent::Opened(Box::default()));
    t.input(c, TransportEvent::Opened(Box::default()));
    assert_eq!(t.s.stats().unexpected_inputs, 2);
    assert_eq!(t.s.state(), ReadyState::Closing);
}

/// Data before the handshake completed cannot come from a correct driver: ignored,
/// counted, and the dial goes on.
#[test]
fn data_before_the_handshake_is_ignored_and_counted() {
    let config = SessionConfig::default().pool_limit(7);
    let mut t = Sim::new(config.clone());
    let c = t.connect();
    t.actions();
    t.events();
    t.input(c, TransportEvent::Message(Message::text("early")));
    t.input(c, TransportEvent::Pong(Bytes::new()));
    assert_eq!(t.s.stats().unexpected_inputs, 2);
    assert!(t.events().is_empty());
    assert_eq!(t.s.state(), ReadyState::Connecting);
    t.open(c);
    assert_eq!(t.s.state(), ReadyState::Open);
    // The session keeps the configuration it was made with.
    assert_eq!(t.s.config(), &config);
}

/// The close frame the session sends when the transport fails carries the error as its
/// reason, cut to the 123 bytes a close frame allows, at a character boundary.
#[test]
fn a_long_failure_reason_is_cut_to_fit_the_close_frame_at_a_character_boundary() {
    // With one or two bytes before the two-byte characters, the 123rd byte is the first
    // half of one in one of the two cases, whatever the error's text adds in front.
    for prefix in ["x", "xx"] {
        let mut t = Sim::default();
        let c = t.open_conn();
        let message = format!("{prefix}{}", "é".repeat(80));
        t.input(
            c,
            TransportEvent::Error(TransportError::new(TransportErrorKind::Protocol, message)),
        );
        let frame = t
            .actions()
            .into_iter()
            .find_map(|a| match a {
                Action::Close { frame, .. } => Some(frame),
                _ => None,
            })
            .expect("a close frame");
        assert_eq!(frame.code(), 1002);
        let len = frame.reason().len();
        assert!((122..=123).contains(&len), "{prefix:?}: {len}");
        assert!(frame.reason().ends_with('é'), "{:?}", frame.reason());
    }
}

#[test]
fn replacing_a_closing_connection_keeps_its_close_deadline() {
    let mut t = Sim::default();
    let a = t.open_conn();
    t.s.close(Some(4000), "bye", t.now).unwrap();
    let closing_since = t.now;
    t.actions();
    t.advance(Duration::from_secs(4));
    let b = t.connect();
    let e = t.events();
    assert!(
        matches!(&e[0], Event::Close { conn, code: 1000, .. } if *conn == a),
        "{e:?}"
    );
    // The old close handshake keeps its own deadline (10 s after it began), not a new
    // close timeout from the replacement.
    let teardown = closing_since + Duration::from_secs(10);
    assert_eq!(t.s.poll_timeout(), Some(teardown));
    t.actions();
    t.now = teardown;
    t.s.handle_timeout(t.now);
    assert_eq!(t.actions(), [Action::Abort { conn: a }]);
    assert_eq!(t.s.current(), Some(b));
    assert_eq!(t.s.state(), ReadyState::Connecting);
}

#[test]
fn a_pool_allows_five_by_default_and_says_so_over_the_limit() {
    let mut p = Pool::new(SessionConfig::default()).unwrap();
    let now = Instant::now();
    let o = ConnectOptions::new("ws://h");
    for _ in 0..5 {
        p.connect(&o, now).unwrap();
    }
    let e = p.connect(&o, now).unwrap_err();
    assert_eq!(e, ConnectError::TooManyConnections { limit: 5 });
    assert_eq!(
        e.to_string(),
        "connect: too many connections (the limit is 5)"
    );
}

#[test]
fn a_reconnected_pool_task_answers_to_both_ids_and_ids_stay_unique() {
    // Regressions found by the `pool` fuzz target: a task's later connections must get
    // ids from the pool's allocator (not the session's own), and calls naming the task by
    // its first id must reach its current connection.
    let policy = ReconnectPolicy::default().seed(3);
    let mut p = Pool::new(SessionConfig::default().reconnect(policy)).unwrap();
    let mut now = Instant::now();
    let o = ConnectOptions::new("ws://h");
    let a = p.connect(&o, now).unwrap();
    let b = p.connect(&o, now).unwrap();
    p.handle(a, TransportEvent::Opened(Box::default()), now);
    p.handle(a, TransportEvent::Closed, now);
    let a2 = std::iter::from_fn(|| p.poll_event())
        .find_map(|e| match e {
            Event::Reconnecting { conn, .. } => Some(conn),
            _ => None,
        })
        .unwrap();
    assert!(a2 != a && a2 != b, "a fresh id across the pool");
    assert_eq!(p.current(a), Some(a2));
    assert_eq!(p.current(a2), Some(a2));
    assert_eq!(p.current(b), Some(b));
    let c = p.connect(&o, now).unwrap();
    assert!(c != a2 && c != b && c != a);
    now = p.poll_timeout().unwrap();
    p.handle_timeout(now);
    p.handle(a2, TransportEvent::Opened(Box::default()), now);
    assert_eq!(p.state(a), ReadyState::Open, "the task's first id names it");
    let id = p.send(a, Message::text("via the first id"), now).unwrap();
    let actions: Vec<Action> = std::iter::from_fn(|| p.poll_action()).collect();
    assert!(
        actions
            .iter()
            .any(|x| matches!(x, Action::Send { conn, id: i, .. } if *conn == a2 && *i == id)),
        "{actions:?}"
    );
    p.close(a, None, "", now).unwrap();
    assert_eq!(p.state(a2), ReadyState::Closing);
    p.handle(a2, TransportEvent::Closed, now);
    assert_eq!(p.current(a), None);
}

/// A task's later connection still sending its close frame after the task moved on is
/// routed too: the driver's report that its TCP connection ended reaches it, so its
/// teardown finishes then, not at the close timeout with an `Abort`.
#[test]
fn a_pool_routes_the_end_of_a_later_connections_close_handshake() {
    let policy = ReconnectPolicy::default().seed(5);
    let mut p = Pool::new(SessionConfig::default().reconnect(policy)).unwrap();
    let mut now = Instant::now();
    let a = p.connect(&ConnectOptions::new("ws://h"), now).unwrap();
    // A protocol error: the connection ends for the application (and is retried) while its
    // close frame 1002 goes out and the TCP connection winds down.
    let away = || {
        TransportEvent::Error(TransportError::new(
            TransportErrorKind::Protocol,
            "a masked frame from the server",
        ))
    };
    let mut conn = a;
    for round in 0..2 {
        p.handle(conn, TransportEvent::Opened(Box::default()), now);
        p.handle(conn, away(), now);
        let next = std::iter::from_fn(|| p.poll_event())
            .find_map(|e| match e {
                Event::Reconnecting { conn, .. } => Some(conn),
                _ => None,
            })
            .unwrap_or_else(|| panic!("round {round}: no reconnect"));
        // The old connection's TCP end comes now, after the task moved on.
        p.handle(conn, TransportEvent::Closed, now);
        now = p.poll_timeout().unwrap();
        p.handle_timeout(now);
        conn = next;
    }
    p.handle(conn, TransportEvent::Opened(Box::default()), now);
    // No teardown is left to time out.
    assert_eq!(p.poll_timeout(), None);
    let actions: Vec<Action> = std::iter::from_fn(|| p.poll_action()).collect();
    assert!(
        !actions.iter().any(|x| matches!(x, Action::Abort { .. })),
        "{actions:?}"
    );
}

/// The reconnect delays of every task of a pool whose connections all drop at once.
fn pool_delays(seed: u64) -> Vec<Duration> {
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_secs(10), Duration::from_secs(10))
        .seed(seed);
    let mut p = Pool::new(SessionConfig::default().reconnect(policy)).unwrap();
    let now = Instant::now();
    let tasks: Vec<ConnId> = (0..4)
        .map(|_| p.connect(&ConnectOptions::new("ws://h"), now).unwrap())
        .collect();
    for &c in &tasks {
        p.handle(c, TransportEvent::Opened(Box::default()), now);
        p.handle(c, TransportEvent::Closed, now);
    }
    let delays: Vec<Duration> = std::iter::from_fn(|| p.poll_event())
        .filter_map(|e| match e {
            Event::Reconnecting { delay, .. } => Some(delay),
            _ => None,
        })
        .collect();
    assert_eq!(delays.len(), tasks.len());
    delays
}

#[test]
fn pool_tasks_dropped_together_do_not_retry_in_step() {
    let delays = pool_delays(7);
    for (i, a) in delays.iter().enumerate() {
        for b in &delays[i + 1..] {
            assert_ne!(a, b, "two tasks drew the same delay: {delays:?}");
        }
    }
    assert_eq!(pool_delays(7), delays, "the same seed replays");
    assert_ne!(pool_delays(8), delays, "another seed draws others");
}

#[test]
fn an_invalid_close_code_from_the_peer_is_a_protocol_error() {
    let mut t = Sim::default();
    let c = t.open_conn();
    t.input(
        c,
        TransportEvent::PeerClosed(PeerClose {
            code: Some(1005),
            reason: String::new(),
        }),
    );
    let e = t.events();
    assert!(
        matches!(&e[0], Event::Error { error: ConnectionError::Transport(err), .. } if err.kind == TransportErrorKind::Protocol)
    );
    assert_eq!(close_of(&e).0, 1002);
    assert!(matches!(&t.actions()[..], [Action::Close { frame, .. }] if frame.code() == 1002));
}

/// A message that arrives after our close frame, before the peer's.
fn message_while_closing(config: SessionConfig) -> (Vec<Event>, Vec<Event>) {
    let mut t = Sim::new(config);
    let c = t.open_conn();
    t.s.close(None, "", t.now).unwrap();
    t.actions();
    t.advance(Duration::from_millis(5));
    t.input(c, TransportEvent::Message(Message::text("late")));
    let during = t.events();
    t.input(
        c,
        TransportEvent::PeerClosed(PeerClose {
            code: Some(1000),
            reason: String::new(),
        }),
    );
    // After the peer's close frame nothing more may come (RFC 6455 §5.5.1).
    t.input(c, TransportEvent::Message(Message::text("after")));
    t.input(c, TransportEvent::Closed);
    (during, t.events())
}

#[test]
fn messages_after_our_close_frame_are_dropped_by_default() {
    assert!(!SessionConfig::default().receive_while_closing);
    let (during, end) = message_while_closing(SessionConfig::default());
    assert!(during.is_empty(), "{during:?}");
    assert_eq!(close_of(&end), (1000, String::new(), true));
    assert!(!end.iter().any(|e| matches!(e, Event::Message { .. })));
}

#[test]
fn receive_while_closing_delivers_them_until_the_peer_closes() {
    let config = SessionConfig::default().receive_while_closing(true);
    let (during, end) = message_while_closing(config);
    assert!(
        matches!(&during[..], [Event::Message { message, .. }] if *message == Message::text("late")),
        "{during:?}"
    );
    assert_eq!(close_of(&end), (1000, String::new(), true));
    assert!(
        !end.iter().any(|e| matches!(e, Event::Message { .. })),
        "{end:?}"
    );
}

#[test]
fn receive_while_closing_does_not_outlive_the_close_timeout() {
    let mut t = Sim::new(SessionConfig::default().receive_while_closing(true));
    let c = t.open_conn();
    t.s.close(None, "", t.now).unwrap();
    t.actions();
    // A peer that keeps talking but never closes is still aborted at the close timeout.
    for _ in 0..10 {
        t.advance(Duration::from_secs(1) - Duration::from_millis(1));
        t.input(c, TransportEvent::Message(Message::text("chatter")));
    }
    t.advance(Duration::from_millis(10));
    assert_eq!(t.actions(), [Action::Abort { conn: c }]);
    let e = t.events();
    assert_eq!(
        e.iter()
            .filter(|e| matches!(e, Event::Message { .. }))
            .count(),
        10
    );
    assert!(!close_of(&e).2);
}

/// A request's public fields can be changed after validation: `connect_request` checks
/// them again and refuses, with `connect`'s errors and nothing dialled, what `connect`
/// refuses (a timeout past the timer's range used to panic on `Instant` overflow).
#[test]
fn a_request_changed_after_validation_is_checked_again() {
    let mut sim = Sim::default();
    let valid = ConnectOptions::new("ws://127.0.0.1:9/").validate().unwrap();
    let refused = |change: &dyn Fn(&mut HandshakeRequest)| {
        let mut request = valid.clone();
        change(&mut request);
        let mut s = Session::new(SessionConfig::default()).unwrap();
        let result = s.connect_request(std::sync::Arc::new(request), sim.now);
        assert_eq!(s.poll_action(), None, "dialled: {result:?}");
        result.expect_err("a changed request was taken")
    };
    assert!(matches!(
        refused(&|r| r.timeout = Some(Duration::MAX)),
        ConnectError::InvalidTimeout
    ));
    assert!(matches!(
        refused(&|r| r.timeout = Some(Duration::ZERO)),
        ConnectError::InvalidTimeout
    ));
    assert!(matches!(
        refused(&|r| {
            r.headers.insert("sec-websocket-key", "x".parse().unwrap());
        }),
        ConnectError::ForbiddenHeader { .. }
    ));
    assert!(matches!(
        refused(&|r| r.protocols = vec!["a b".into()]),
        ConnectError::InvalidProtocol { .. }
    ));
    assert!(matches!(
        refused(&|r| r.url.set_scheme("http").unwrap()),
        ConnectError::UnsupportedScheme { .. }
    ));
    assert!(matches!(
        refused(&|r| r.url.set_fragment(Some("top"))),
        ConnectError::FragmentInUrl
    ));
    let credentials = refused(&|r| {
        r.url.set_username("alice").unwrap();
        r.url.set_password(Some("s3cret")).unwrap();
    });
    assert!(
        matches!(&credentials, ConnectError::InvalidUrl { reason, .. } if reason.contains("Authorization")),
        "{credentials:?}"
    );
    assert!(!credentials.to_string().contains("s3cret"), "{credentials}");
    assert!(!credentials.to_string().contains("alice"), "{credentials}");
    // Unchanged, it dials.
    let conn = sim
        .s
        .connect_request(std::sync::Arc::new(valid), sim.now)
        .unwrap();
    assert!(matches!(sim.s.poll_action(), Some(Action::Dial { conn: c, .. }) if c == conn));
}

/// Turning completion tracking on again keeps the outcomes a driver has not polled yet.
#[test]
fn tracking_completions_again_keeps_those_not_yet_polled() {
    let mut sim = Sim::default();
    sim.s.track_completions(true);
    let conn = sim.connect();
    sim.open(conn);
    let id = sim.s.send(Message::text("x"), sim.now).unwrap();
    sim.input(conn, TransportEvent::SendWritten(id));
    sim.s.track_completions(true);
    assert_eq!(sim.s.poll_completion(), Some((id, Ok(()))));
}

/// A password in the URL never shows: not in the errors that quote the URL (TLS required,
/// an invalid port, no host), not in `Debug` of the options, the request or the `Dial`
/// (whose `Authorization` value is its base64). Nor do credential headers' values.
#[test]
fn url_passwords_and_credential_headers_never_show() {
    let secret = "S3CRET";
    let base64 = "YWxpY2U6UzNDUkVU"; // alice:S3CRET
    let refused = [
        ConnectOptions::new(format!("ws://alice:{secret}@h/")).require_tls(true),
        ConnectOptions::new(format!("ws://alice:{secret}@h:99999/")),
        ConnectOptions::new(format!("ws://alice:{secret}@:1/")),
    ];
    for options in refused {
        let error = options.validate().expect_err("refused");
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
    let options = ConnectOptions::new(format!("ws://alice:{secret}@127.0.0.1:9/"))
        .header("Cookie", "session=c00kie")
        .header("X-Trace", "visible");
    let shown = format!("{options:?}");
    assert!(
        !shown.contains(secret) && !shown.contains("c00kie"),
        "{shown}"
    );
    assert!(shown.contains("visible"), "{shown}");
    let request = options.validate().unwrap();
    assert_eq!(
        request.headers[http::header::AUTHORIZATION],
        format!("Basic {base64}"),
        "still sent"
    );
    let shown = format!("{request:?}");
    assert!(
        !shown.contains(base64) && !shown.contains("c00kie"),
        "{shown}"
    );
    let mut s = Session::new(SessionConfig::default()).unwrap();
    s.connect(&options, Instant::now()).unwrap();
    let dial = format!("{:?}", s.poll_action().expect("the dial"));
    assert!(!dial.contains(base64) && !dial.contains(secret), "{dial}");
}

/// A URL with a line break or another control character is refused, naming the field,
/// before any IO: the URL parser drops tabs and line breaks and goes on, so
/// `ws://ev\r\nil.com/` dialled `evil.com`. A proxy URL likewise.
#[test]
fn control_characters_in_a_url_are_refused_not_dropped() {
    for url in [
        "ws://ev\r\nil.com/",
        "ws://h/a\r\nX-Injected: 1",
        "ws://h/\tx",
        "ws://h/\0",
    ] {
        let error = ConnectOptions::new(url).validate().expect_err(url);
        assert!(
            matches!(error, ConnectError::InvalidUrl { .. }),
            "{error:?}"
        );
        assert!(error.to_string().starts_with("url:"), "{error}");
    }
    let error = ConnectOptions::new("ws://h/")
        .proxy("http://pro\nxy:3128")
        .validate()
        .expect_err("a proxy URL with a line break");
    assert!(error.to_string().starts_with("proxy:"), "{error}");
}

/// A `Proxy-Authorization` header among the handshake's would go through the tunnel to the
/// WebSocket server, never to the proxy: refused, saying where the credentials go.
#[test]
fn a_proxy_authorization_header_is_refused() {
    let error = ConnectOptions::new("ws://h/")
        .header("Proxy-Authorization", "Basic YTpi")
        .validate()
        .expect_err("a proxy credential among the server's headers");
    assert!(
        matches!(&error, ConnectError::ForbiddenHeader { name, why }
            if name == "Proxy-Authorization" && why.contains("proxy URL")),
        "{error:?}"
    );
}

/// A request without headers holds no header table: every connection keeps its request,
/// and marking the credential headers sensitive with a lookup allocated one for each
/// (0.7 KiB per idle connection, in the scale benchmark).
#[test]
fn a_request_without_headers_allocates_no_header_table() {
    let request = ConnectOptions::new("ws://h/").validate().unwrap();
    assert_eq!(request.headers.capacity(), 0);
}

/// Port 0 cannot be dialled: refused before any IO, naming the field (it was dialled and
/// refused by the OS).
#[test]
fn port_zero_is_refused() {
    let error = ConnectOptions::new("ws://h:0/")
        .validate()
        .expect_err("port 0");
    assert!(error.to_string().starts_with("url:"), "{error}");
    assert!(error.to_string().contains("port 0"), "{error}");
}
