//! Delivery acknowledged by the peer (SPEC §8), on a simulated clock: the barrier ping
//! after a batch, pongs of later pings, the close handshake, resending after a drop with
//! the duplicate mark, failing with `MaybeDelivered`, the timeout and its suspension while
//! reading is paused, and exactly one final outcome per send.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use wxsocket_core::*;

const DELAY: Duration = Duration::from_millis(5);
const TIMEOUT: Duration = Duration::from_secs(2);

fn config() -> SessionConfig {
    SessionConfig::default().acknowledge(Acknowledgement::new().delay(DELAY).timeout(TIMEOUT))
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

fn open(s: &mut Session, now: Instant) -> ConnId {
    let conn = s.connect(&options(), now).unwrap();
    s.handle(conn, TransportEvent::Opened(Box::default()), now);
    actions(s);
    events(s);
    conn
}

/// Sends `n` text messages and confirms each written; returns their ids.
fn send_written(s: &mut Session, conn: ConnId, n: usize, now: Instant) -> Vec<SendId> {
    let ids: Vec<_> = (0..n)
        .map(|i| s.send(Message::text(format!("m{i}")), now).unwrap())
        .collect();
    for id in &ids {
        s.handle(conn, TransportEvent::SendWritten(*id), now);
    }
    ids
}

/// The payloads of the pings among `actions`, in order.
fn ping_payloads(actions: &[Action]) -> Vec<Bytes> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Ping { payload, .. } => Some(payload.clone()),
            _ => None,
        })
        .collect()
}

/// The payload of the one ping among `actions`.
fn ping_payload(actions: &[Action]) -> Bytes {
    let pings = ping_payloads(actions);
    assert_eq!(pings.len(), 1, "expected one ping in {actions:?}");
    pings[0].clone()
}

fn peer_close(reason: &str) -> PeerClose {
    PeerClose {
        code: Some(1000),
        reason: reason.into(),
    }
}

fn delivered(events: &[Event]) -> Vec<(SendId, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::SendDelivered { id, duplicate, .. } => Some((*id, *duplicate)),
            _ => None,
        })
        .collect()
}

/// The sends that failed as `MaybeDelivered` with their message handed back, in order.
fn maybe_delivered(events: &[Event]) -> Vec<SendId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::SendFailed {
                id,
                reason: SendFailure::MaybeDelivered,
                message: Some(_),
                ..
            } => Some(*id),
            _ => None,
        })
        .collect()
}

#[test]
fn a_barrier_ping_follows_a_batch_and_its_pong_delivers_it() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let ids = send_written(&mut s, conn, 3, t0);
    // Written is progress only: no completion yet, and the bytes still count as buffered.
    assert!(events(&mut s).is_empty());
    assert_eq!(s.buffered_amount(), 6);
    // One ping for the batch, after the delay.
    assert_eq!(s.poll_timeout(), Some(t0 + DELAY));
    let sends = actions(&mut s);
    assert_eq!(sends.len(), 3);
    s.handle_timeout(t0 + DELAY);
    let payload = ping_payload(&actions(&mut s));
    s.handle(conn, TransportEvent::Pong(payload), t0 + DELAY);
    let got = events(&mut s);
    assert_eq!(
        delivered(&got),
        ids.iter().map(|i| (*i, false)).collect::<Vec<_>>()
    );
    assert!(
        !got.iter().any(|e| matches!(e, Event::SendCompleted { .. })),
        "{got:?}"
    );
    assert_eq!(s.buffered_amount(), 0);
    // Nothing is unacknowledged: no more barrier pings.
    assert_eq!(s.poll_timeout(), None);
}

/// The application's ping acknowledges nothing, even answered: a peer may send pongs nobody
/// asked for (RFC 6455 §5.5.3), and one with the payload of the application's ping proves
/// nothing about what the peer read. The session's own barrier, whose payload is its own,
/// goes out as it would have, and its pong delivers.
#[test]
fn a_pong_to_the_applications_ping_acknowledges_nothing() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let ids = send_written(&mut s, conn, 2, t0);
    s.ping(Bytes::from_static(b"app"), t0).unwrap();
    actions(&mut s);
    s.handle(conn, TransportEvent::Pong(Bytes::from_static(b"app")), t0);
    let got = events(&mut s);
    assert!(delivered(&got).is_empty(), "{got:?}");
    assert!(got.iter().any(|e| matches!(e, Event::Pong { .. })));
    s.handle_timeout(t0 + DELAY);
    let barrier = ping_payload(&actions(&mut s));
    assert_ne!(barrier, Bytes::from_static(b"app"));
    s.handle(conn, TransportEvent::Pong(barrier), t0 + DELAY);
    assert_eq!(
        delivered(&events(&mut s)),
        [(ids[0], false), (ids[1], false)]
    );
}

/// The application's ping may not look like a barrier: an embedder's probe pinged with
/// `wxsocket-ack 1` before sending, the barrier after the message had the same payload (it
/// was the counter alone then), and the peer's answer to the application's ping (sent
/// before the message) delivered it.
#[test]
fn the_application_may_not_ping_with_a_barriers_payload() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let spoof = Bytes::from_static(b"wxsocket-ack 1");
    assert_eq!(s.ping(spoof.clone(), t0), Err(PingError::Reserved));
    assert!(actions(&mut s).is_empty(), "nothing is sent");
    let ids = send_written(&mut s, conn, 1, t0);
    s.handle_timeout(t0 + DELAY);
    let barrier = ping_payload(&actions(&mut s));
    assert!(barrier.starts_with(b"wxsocket-ack 1 "), "{barrier:?}");
    s.handle(conn, TransportEvent::Pong(spoof.clone()), t0 + DELAY);
    assert_eq!(
        delivered(&events(&mut s)),
        [],
        "the payload the application tried"
    );
    s.handle(conn, TransportEvent::Pong(barrier), t0 + DELAY);
    assert_eq!(delivered(&events(&mut s)), [(ids[0], false)]);

    // Without acknowledgement the payload is the application's to choose.
    let mut s = Session::new(SessionConfig::default()).unwrap();
    let conn = open(&mut s, t0);
    s.ping(spoof.clone(), t0).unwrap();
    assert_eq!(ping_payload(&actions(&mut s)), spoof);
    s.handle(conn, TransportEvent::Pong(spoof), t0);
    assert!(
        events(&mut s)
            .iter()
            .any(|e| matches!(e, Event::Pong { .. }))
    );
}

/// A pong the peer makes up acknowledges nothing: a barrier's payload ends in 16 hex
/// digits drawn from the acknowledgement seed and the connection's id, so pongs with the
/// counter alone, or with the counter and a guess, deliver nothing (a reviewer's server
/// that never read sent `wxsocket-ack 1` to `5` unasked, and they delivered the messages).
/// The same seed gives the same payloads (a transcript replays), another seed and another
/// connection other ones.
#[test]
fn a_pong_the_peer_makes_up_acknowledges_nothing() {
    let t0 = Instant::now();
    let seeded = |seed| {
        SessionConfig::default().acknowledge(
            Acknowledgement::new()
                .delay(DELAY)
                .timeout(TIMEOUT)
                .seed(seed),
        )
    };
    let first_barrier = |config: SessionConfig| {
        let mut s = Session::new(config).unwrap();
        let conn = open(&mut s, t0);
        let ids = send_written(&mut s, conn, 1, t0);
        s.handle_timeout(t0 + DELAY);
        let barrier = ping_payload(&actions(&mut s));
        (s, conn, ids, barrier)
    };
    let (mut s, conn, ids, barrier) = first_barrier(seeded(7));
    let text = std::str::from_utf8(&barrier).unwrap();
    let digits = text.strip_prefix("wxsocket-ack 1 ").expect(text);
    assert!(
        digits.len() == 16 && digits.bytes().all(|b| b.is_ascii_hexdigit()),
        "{text}"
    );
    for guess in [
        "wxsocket-ack 1",
        "wxsocket-ack 1 ",
        "wxsocket-ack 1 0000000000000000",
        "wxsocket-ack 2",
    ] {
        s.handle(
            conn,
            TransportEvent::Pong(Bytes::from_static(guess.as_bytes())),
            t0 + DELAY,
        );
        assert_eq!(delivered(&events(&mut s)), [], "{guess}");
    }
    s.handle(conn, TransportEvent::Pong(barrier.clone()), t0 + DELAY);
    assert_eq!(delivered(&events(&mut s)), [(ids[0], false)]);

    assert_eq!(first_barrier(seeded(7)).3, barrier, "the same seed");
    assert_ne!(first_barrier(seeded(8)).3, barrier, "another seed");
    assert_ne!(
        first_barrier(config()).3,
        first_barrier(config()).3,
        "the default seed is drawn for each configuration"
    );
    // The next connection of the same session (it replaces the first) draws other digits
    // for its first barrier.
    let next = open(&mut s, t0 + DELAY);
    assert_ne!(next, conn);
    send_written(&mut s, next, 1, t0 + DELAY);
    s.handle_timeout(t0 + 2 * DELAY);
    let again = ping_payload(&actions(&mut s));
    assert!(again.starts_with(b"wxsocket-ack 1 "), "{again:?}");
    assert_ne!(again, barrier, "another connection");
}

/// The driver away past the acknowledgement timeout (an embedder's probe: a process stopped
/// for 3 h) with the barrier's pong waiting unread: read on resume, it delivers the message,
/// instead of the timer that ran first failing it as maybe delivered. Once: a peer that
/// never answers still times out a timeout after the late timer.
#[test]
fn a_late_acknowledgement_timer_gives_the_pong_one_more_timeout() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let ids = send_written(&mut s, conn, 1, t0);
    s.handle_timeout(t0 + DELAY);
    let barrier = ping_payload(&actions(&mut s));
    let resumed = t0 + Duration::from_secs(3 * 3600);
    s.handle(conn, TransportEvent::Pong(barrier), resumed);
    let got = events(&mut s);
    assert_eq!(delivered(&got), [(ids[0], false)], "{got:?}");
    assert_eq!(s.state(), ReadyState::Open);

    let ids = send_written(&mut s, conn, 1, resumed);
    s.handle_timeout(resumed + DELAY);
    ping_payload(&actions(&mut s));
    let late = resumed + Duration::from_secs(3600);
    s.handle_timeout(late);
    assert_eq!(s.state(), ReadyState::Open, "one more timeout");
    s.handle_timeout(late + TIMEOUT);
    assert_eq!(maybe_delivered(&events(&mut s)), ids);
    assert_eq!(s.state(), ReadyState::Closed);
}

/// A server that never reads and sends an empty pong as a heartbeat, while the application's
/// empty ping (or keepalive's) waits: nothing is acknowledged (a user's probe saw three
/// messages reported delivered that the server never read, then lost with the connection).
/// The messages stay unacknowledged, and a drop fails them as maybe delivered.
#[test]
fn an_unsolicited_empty_pong_acknowledges_nothing() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let ids = send_written(&mut s, conn, 3, t0);
    s.ping(Bytes::new(), t0).unwrap();
    actions(&mut s);
    s.handle(conn, TransportEvent::Pong(Bytes::new()), t0 + DELAY / 2);
    assert!(delivered(&events(&mut s)).is_empty());
    s.handle_timeout(t0 + DELAY);
    actions(&mut s);
    s.handle(conn, TransportEvent::Pong(Bytes::new()), t0 + DELAY);
    assert!(delivered(&events(&mut s)).is_empty());
    s.handle(conn, TransportEvent::Closed, t0 + DELAY);
    assert_eq!(maybe_delivered(&events(&mut s)), ids);
}

#[test]
fn a_pong_that_answers_nothing_acknowledges_nothing() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    send_written(&mut s, conn, 1, t0);
    s.handle(conn, TransportEvent::Pong(Bytes::from_static(b"stray")), t0);
    assert!(events(&mut s).is_empty());
    assert_eq!(s.buffered_amount(), 2);
}

#[test]
fn a_message_sent_after_the_ping_is_not_acknowledged_by_its_pong() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let first = send_written(&mut s, conn, 1, t0);
    s.handle_timeout(t0 + DELAY);
    let payload = ping_payload(&actions(&mut s));
    let later = send_written(&mut s, conn, 1, t0 + DELAY);
    s.handle(conn, TransportEvent::Pong(payload), t0 + DELAY);
    assert_eq!(delivered(&events(&mut s)), [(first[0], false)]);
    // The next barrier covers the later one.
    let t1 = t0 + DELAY * 2;
    s.handle_timeout(t1);
    let payload = ping_payload(&actions(&mut s));
    s.handle(conn, TransportEvent::Pong(payload), t1);
    assert_eq!(delivered(&events(&mut s)), [(later[0], false)]);
}

#[test]
fn a_close_this_side_begins_sends_a_barrier_ping_first_whose_pong_acknowledges_everything() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let ids = send_written(&mut s, conn, 2, t0);
    s.close(None, "bye", t0).unwrap();
    let sent = actions(&mut s);
    assert!(
        matches!(&sent[..], [.., Action::Ping { .. }, Action::Close { .. }]),
        "a barrier ping, then the close frame: {sent:?}"
    );
    // The peer answers the ping before it reads our close frame, then answers that.
    s.handle(conn, TransportEvent::Pong(ping_payload(&sent)), t0);
    s.handle(conn, TransportEvent::PeerClosed(peer_close("bye")), t0);
    s.handle(conn, TransportEvent::Closed, t0);
    let got = events(&mut s);
    assert_eq!(delivered(&got), [(ids[0], false), (ids[1], false)]);
    assert!(matches!(got.last(), Some(Event::Close { clean: true, .. })));
}

/// Close frames that cross: the peer's close frame arrives after ours went, but it was
/// sent before the peer read ours (so it is no answer to it), and the peer, closing, never
/// answers the barrier ping. Nothing proves the messages read: they are not reported
/// delivered (they used to be, on the peer's close frame alone).
#[test]
fn crossing_close_frames_acknowledge_nothing() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let ids = send_written(&mut s, conn, 2, t0);
    s.close(None, "bye", t0).unwrap();
    let _ = actions(&mut s);
    s.handle(
        conn,
        TransportEvent::PeerClosed(peer_close("going away")),
        t0,
    );
    s.handle(conn, TransportEvent::Closed, t0);
    let got = events(&mut s);
    assert_eq!(delivered(&got), []);
    assert_eq!(maybe_delivered(&got), ids, "{got:?}");
}

/// A close with every message already covered by a ping sends no barrier of its own: the
/// earlier ping's pong, which comes first, acknowledges them.
#[test]
fn a_close_sends_no_barrier_when_a_ping_already_covers_every_message() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let ids = send_written(&mut s, conn, 1, t0);
    s.handle_timeout(t0 + DELAY);
    let payload = ping_payload(&actions(&mut s));
    s.close(None, "bye", t0 + DELAY).unwrap();
    let sent = actions(&mut s);
    assert!(
        matches!(&sent[..], [Action::Close { .. }]),
        "the close frame alone: {sent:?}"
    );
    s.handle(conn, TransportEvent::Pong(payload), t0 + DELAY);
    s.handle(
        conn,
        TransportEvent::PeerClosed(peer_close("bye")),
        t0 + DELAY,
    );
    s.handle(conn, TransportEvent::Closed, t0 + DELAY);
    assert_eq!(delivered(&events(&mut s)), [(ids[0], false)]);
}

#[test]
fn a_close_the_peer_began_acknowledges_nothing_the_peer_may_have_discarded() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let ids = send_written(&mut s, conn, 1, t0);
    s.handle(conn, TransportEvent::PeerClosed(peer_close("")), t0);
    s.handle(conn, TransportEvent::Closed, t0);
    let got = events(&mut s);
    assert_eq!(maybe_delivered(&got), ids, "{got:?}");
}

#[test]
fn a_drop_without_reconnection_fails_unacknowledged_messages_as_maybe_delivered() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let ids = send_written(&mut s, conn, 2, t0);
    let unwritten = s.send(Message::text("late"), t0).unwrap();
    s.handle(conn, TransportEvent::Closed, t0);
    let got = events(&mut s);
    let failed: Vec<_> = got
        .iter()
        .filter_map(|e| match e {
            Event::SendFailed {
                id,
                reason,
                message,
                ..
            } => Some((*id, *reason, message.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        failed,
        [
            (
                ids[0],
                SendFailure::MaybeDelivered,
                Some(Message::text("m0"))
            ),
            (
                ids[1],
                SendFailure::MaybeDelivered,
                Some(Message::text("m1"))
            ),
            (
                unwritten,
                SendFailure::MaybeDelivered,
                Some(Message::text("late"))
            ),
        ]
    );
}

#[test]
fn a_drop_with_reconnection_resends_first_marked_as_duplicates() {
    let t0 = Instant::now();
    let policy = ReconnectPolicy::default().seed(7);
    let mut s = Session::new(config().reconnect(policy)).unwrap();
    let first = open(&mut s, t0);
    let ids = send_written(&mut s, first, 2, t0);
    actions(&mut s);
    s.handle(first, TransportEvent::Closed, t0);
    let got = events(&mut s);
    assert!(
        !got.iter().any(|e| matches!(e, Event::SendFailed { .. })),
        "{got:?}"
    );
    // Sent during the backoff: queued behind the resent ones.
    let queued = s.send(Message::text("new"), t0).unwrap();
    let dial_at = s.poll_timeout().unwrap();
    s.handle_timeout(dial_at);
    let second = match actions(&mut s).as_slice() {
        [.., Action::Dial { conn, .. }] => *conn,
        other => panic!("no dial: {other:?}"),
    };
    s.handle(second, TransportEvent::Opened(Box::default()), dial_at);
    let resent: Vec<_> = actions(&mut s)
        .into_iter()
        .filter_map(|a| match a {
            Action::Send { conn, id, message } => Some((conn, id, message)),
            _ => None,
        })
        .collect();
    assert_eq!(
        resent,
        [
            (second, ids[0], Message::text("m0")),
            (second, ids[1], Message::text("m1")),
            (second, queued, Message::text("new")),
        ]
    );
    for (_, id, _) in &resent {
        s.handle(second, TransportEvent::SendWritten(*id), dial_at);
    }
    s.handle_timeout(dial_at + DELAY);
    let payload = ping_payload(&actions(&mut s));
    s.handle(second, TransportEvent::Pong(payload), dial_at + DELAY);
    assert_eq!(
        delivered(&events(&mut s)),
        [(ids[0], true), (ids[1], true), (queued, false)]
    );
}

/// Messages carried to the next connection after a drop may have arrived on the first:
/// however that next connection fails (its dial, a close or shutdown during the backoff, a
/// replacing connect), they fail as `MaybeDelivered`, never as not sent. A message first
/// sent during the backoff keeps the ending's own reason.
#[test]
fn carried_messages_that_fail_before_the_next_open_may_have_been_delivered() {
    type Ending = fn(&mut Session, Instant);
    let endings: [(&str, Ending, SendFailure); 4] = [
        (
            "close",
            |s, now| s.close(None, "", now).unwrap(),
            SendFailure::Cancelled,
        ),
        ("shutdown", |s, now| s.shutdown(now), SendFailure::Cancelled),
        (
            "connect",
            |s, now| {
                s.connect(&options(), now).unwrap();
            },
            SendFailure::Replaced,
        ),
        (
            "failed dial",
            |s, now| {
                let dial_at = s.poll_timeout().unwrap().max(now);
                s.handle_timeout(dial_at);
                let conn = s.current().unwrap();
                let error = TransportError::new(TransportErrorKind::Connect, "refused");
                s.handle(conn, TransportEvent::ConnectFailed(error), dial_at);
            },
            SendFailure::ConnectFailed,
        ),
    ];
    for (name, end, own) in endings {
        let t0 = Instant::now();
        let policy = ReconnectPolicy::default().seed(7).max_attempts(Some(1));
        let mut s = Session::new(config().reconnect(policy)).unwrap();
        let first = open(&mut s, t0);
        let carried = send_written(&mut s, first, 1, t0)[0];
        s.handle(first, TransportEvent::Closed, t0);
        let fresh = s.send(Message::text("new"), t0).unwrap();
        actions(&mut s);
        events(&mut s);
        end(&mut s, t0);
        let failed: Vec<_> = events(&mut s)
            .into_iter()
            .filter_map(|e| match e {
                Event::SendFailed {
                    id,
                    reason,
                    message: Some(_),
                    ..
                } => Some((id, reason)),
                _ => None,
            })
            .collect();
        assert_eq!(
            failed,
            [(carried, SendFailure::MaybeDelivered), (fresh, own)],
            "{name}"
        );
    }
}

#[test]
fn a_peer_that_never_answers_times_out_and_the_messages_fail() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let ids = send_written(&mut s, conn, 1, t0);
    s.handle_timeout(t0 + DELAY);
    ping_payload(&actions(&mut s));
    assert_eq!(s.poll_timeout(), Some(t0 + DELAY + TIMEOUT));
    s.handle_timeout(t0 + DELAY + TIMEOUT);
    let got = events(&mut s);
    assert!(
        matches!(
            &got[0],
            Event::Error { error: ConnectionError::AckTimeout(t), .. } if *t == TIMEOUT
        ),
        "{got:?}"
    );
    assert!(got.iter().any(|e| matches!(
        e,
        Event::SendFailed { id, reason: SendFailure::MaybeDelivered, .. } if *id == ids[0]
    )));
    assert!(matches!(
        got.last(),
        Some(Event::Close {
            code: 1006,
            clean: false,
            ..
        })
    ));
    assert!(actions(&mut s).contains(&Action::Abort { conn }));
}

/// A peer that accepts every connection and never answers a ping: each connection is handed
/// the unacknowledged messages again and acknowledges none, so it does not end the run of
/// reconnect attempts, and `max_attempts` ends the resending (it used to start the count
/// afresh at every open, and the messages went round for ever with no outcome). A
/// connection that acknowledges something starts the count afresh.
#[test]
fn connections_that_acknowledge_nothing_count_toward_max_attempts() {
    let mut now = Instant::now();
    let policy = ReconnectPolicy::default().seed(7).max_attempts(Some(2));
    let mut s = Session::new(config().reconnect(policy)).unwrap();
    let mut conn = open(&mut s, now);
    let ids = send_written(&mut s, conn, 3, now);
    let mut attempts = Vec::new();
    let mut connections = 1;
    let got = loop {
        assert!(
            connections <= 10,
            "still resending after {connections} connections"
        );
        // The barrier ping goes unanswered; the wait for its pong times out.
        while let Some(due) = s.poll_timeout() {
            now = due;
            s.handle_timeout(now);
            if actions(&mut s).contains(&Action::Abort { conn }) {
                break;
            }
        }
        let got = events(&mut s);
        assert!(
            got.iter().any(|e| matches!(
                e,
                Event::Error {
                    error: ConnectionError::AckTimeout(_),
                    ..
                }
            )),
            "{got:?}"
        );
        let Some(attempt) = got.iter().find_map(|e| match e {
            Event::Reconnecting { attempt, .. } => Some(*attempt),
            _ => None,
        }) else {
            break got;
        };
        attempts.push(attempt);
        s.handle(conn, TransportEvent::Closed, now);
        conn = redial(&mut s, &mut now);
        connections += 1;
    };
    assert_eq!(attempts, [1, 2], "the count goes on across connections");
    assert_eq!(maybe_delivered(&got), ids, "{got:?}");
    assert!(matches!(got.last(), Some(Event::Close { code: 1006, .. })));
    assert_eq!(s.state(), ReadyState::Closed);
    assert_eq!(s.poll_timeout(), None, "no further dial");
}

/// A connection that acknowledges something carried the delivery forward: the next drop
/// starts the reconnect count afresh, however many such connections came before.
#[test]
fn a_connection_that_acknowledges_something_starts_the_count_afresh() {
    let mut now = Instant::now();
    let policy = ReconnectPolicy::default().seed(7).max_attempts(Some(1));
    let mut s = Session::new(config().reconnect(policy)).unwrap();
    let mut conn = open(&mut s, now);
    for round in 0..3 {
        // One message acknowledged, one written after the barrier, then the drop.
        send_written(&mut s, conn, 1, now);
        now += DELAY;
        s.handle_timeout(now);
        let payload = ping_payload(&actions(&mut s));
        s.handle(conn, TransportEvent::Pong(payload), now);
        send_written(&mut s, conn, 1, now);
        // Open long enough to end a run of attempts (the policy's `min_uptime`).
        now += ReconnectPolicy::default().min_uptime;
        s.handle(conn, TransportEvent::Closed, now);
        let got = events(&mut s);
        assert!(
            got.iter()
                .any(|e| matches!(e, Event::Reconnecting { attempt: 1, .. })),
            "round {round}: {got:?}"
        );
        conn = redial(&mut s, &mut now);
    }
}

/// After a drop: the backoff ends, the next connection is dialled and opens, and the driver
/// confirms written what was resent on it. Returns that connection.
fn redial(s: &mut Session, now: &mut Instant) -> ConnId {
    *now = s.poll_timeout().expect("the backoff");
    s.handle_timeout(*now);
    let conn = match actions(s).as_slice() {
        [.., Action::Dial { conn, .. }] => *conn,
        other => panic!("no dial: {other:?}"),
    };
    s.handle(conn, TransportEvent::Opened(Box::default()), *now);
    for action in actions(s) {
        if let Action::Send { id, .. } = action {
            s.handle(conn, TransportEvent::SendWritten(id), *now);
        }
    }
    events(s);
    conn
}

/// A pong that acknowledges part of what is unacknowledged: the rest waits for the barrier
/// that covers it, and times out a timeout after that barrier, not after the first one.
#[test]
fn a_partial_acknowledgement_starts_the_wait_for_the_rest_afresh() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let first = send_written(&mut s, conn, 1, t0)[0];
    s.handle_timeout(t0 + DELAY);
    let covers_first = ping_payload(&actions(&mut s));
    // Sent after that barrier: not covered by it.
    let second = send_written(&mut s, conn, 1, t0 + DELAY)[0];
    assert_eq!(s.poll_timeout(), Some(t0 + DELAY + TIMEOUT));
    let answered = t0 + TIMEOUT / 2;
    s.handle(conn, TransportEvent::Pong(covers_first), answered);
    assert_eq!(delivered(&events(&mut s)), [(first, false)]);
    // The second's barrier goes out now; its wait begins with it.
    assert_eq!(s.poll_timeout(), Some(answered + DELAY));
    s.handle_timeout(answered + DELAY);
    ping_payload(&actions(&mut s));
    s.handle_timeout(t0 + DELAY + TIMEOUT);
    assert!(events(&mut s).is_empty());
    assert_eq!(s.state(), ReadyState::Open);
    // Never answered: the second message times out a timeout after its barrier.
    s.handle_timeout(answered + DELAY + TIMEOUT);
    let got = events(&mut s);
    assert!(
        matches!(
            &got[0],
            Event::Error {
                error: ConnectionError::AckTimeout(_),
                ..
            }
        ),
        "{got:?}"
    );
    assert_eq!(maybe_delivered(&got), [second]);
}

/// The wait is for a ping covering unacknowledged messages: the application's ping with
/// nothing to acknowledge, left unanswered, is not an acknowledgement timeout (keepalive,
/// when on, judges the peer's silence).
#[test]
fn an_unanswered_ping_with_nothing_to_acknowledge_does_not_time_out() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    s.ping(Bytes::from_static(b"idle"), t0).unwrap();
    actions(&mut s);
    assert_eq!(s.poll_timeout(), None);
    // Also after everything sent so far was acknowledged.
    let ids = send_written(&mut s, conn, 1, t0);
    s.handle_timeout(t0 + DELAY);
    let payload = ping_payload(&actions(&mut s));
    s.handle(conn, TransportEvent::Pong(payload), t0 + DELAY);
    assert_eq!(delivered(&events(&mut s)), [(ids[0], false)]);
    s.ping(Bytes::from_static(b"idle again"), t0 + DELAY)
        .unwrap();
    actions(&mut s);
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t0 + TIMEOUT * 10);
    assert!(events(&mut s).is_empty());
    assert_eq!(s.state(), ReadyState::Open);
}

/// Messages sent after the last barrier wait for the barrier that covers them, and their
/// timeout counts from that barrier, not from the pong of an earlier one (nor from the
/// application's pings, which cover nothing).
#[test]
fn messages_after_the_last_ping_time_out_from_their_barrier_not_from_an_earlier_pong() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let first = send_written(&mut s, conn, 1, t0)[0];
    s.ping(Bytes::from_static(b"a"), t0).unwrap();
    s.handle_timeout(t0 + DELAY);
    let covers_first = ping_payloads(&actions(&mut s))
        .pop()
        .expect("the barrier, after the application's ping");
    let t1 = t0 + TIMEOUT / 2;
    let second = send_written(&mut s, conn, 1, t1)[0];
    s.handle(conn, TransportEvent::Pong(Bytes::from_static(b"a")), t1);
    assert!(
        delivered(&events(&mut s)).is_empty(),
        "the application's pong"
    );
    s.handle(conn, TransportEvent::Pong(covers_first), t1);
    assert_eq!(delivered(&events(&mut s)), [(first, false)]);
    // Nothing waits for a pong until the second's barrier goes out.
    assert_eq!(s.poll_timeout(), Some(t1 + DELAY));
    s.handle_timeout(t1 + DELAY);
    let barrier = ping_payload(&actions(&mut s));
    assert_eq!(s.poll_timeout(), Some(t1 + DELAY + TIMEOUT));
    s.handle_timeout(t1 + TIMEOUT);
    assert!(events(&mut s).is_empty());
    assert_eq!(s.state(), ReadyState::Open);
    s.handle(conn, TransportEvent::Pong(barrier), t1 + TIMEOUT);
    assert_eq!(delivered(&events(&mut s)), [(second, false)]);
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn the_timeout_is_suspended_while_reading_is_paused() {
    let t0 = Instant::now();
    let mut s = Session::new(config().receive_bounds(1, 1 << 20)).unwrap();
    let conn = open(&mut s, t0);
    send_written(&mut s, conn, 1, t0);
    s.handle_timeout(t0 + DELAY);
    let payload = ping_payload(&actions(&mut s));
    // The application stops taking messages: reading pauses, the pong may wait unread.
    s.handle(
        conn,
        TransportEvent::Message(Message::text("x")),
        t0 + DELAY,
    );
    assert!(s.is_reading_paused());
    let late = t0 + DELAY + TIMEOUT * 3;
    s.handle_timeout(late);
    assert_eq!(s.state(), ReadyState::Open);
    // The application reads again; the pong arrives; delivered.
    assert!(matches!(s.poll_event(), Some(Event::Message { .. })));
    s.handle(conn, TransportEvent::Pong(payload), late);
    assert_eq!(delivered(&events(&mut s)).len(), 1);
}

/// A barrier waits for its pong while the peer sends `input` every half timeout, `rounds`
/// times: each restarts the wait, so the timeout never comes; then the pong delivers the
/// message. Returns the session, its connection and the time reached.
fn input_restarts_the_wait(
    input: impl Fn() -> TransportEvent,
    rounds: u32,
) -> (Session, ConnId, Instant) {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    send_written(&mut s, conn, 1, t0);
    s.handle_timeout(t0 + DELAY);
    let payload = ping_payload(&actions(&mut s));
    assert_eq!(s.poll_timeout(), Some(t0 + DELAY + TIMEOUT));
    let mut now = t0 + DELAY;
    for _ in 0..rounds {
        now += TIMEOUT / 2;
        s.handle_timeout(now);
        s.handle(conn, input(), now);
        assert_eq!(s.poll_timeout(), Some(now + TIMEOUT));
    }
    assert_eq!(s.state(), ReadyState::Open);
    s.handle(conn, TransportEvent::Pong(payload), now);
    assert_eq!(delivered(&events(&mut s)).len(), 1);
    (s, conn, now)
}

#[test]
fn what_the_peer_sends_restarts_the_timeout_as_its_pong_may_be_behind_it() {
    // The peer streams data it had queued before our ping, one message every half timeout,
    // for four timeouts.
    let queued = || TransportEvent::Message(Message::text("queued"));
    let (mut s, conn, now) = input_restarts_the_wait(queued, 8);
    // Then silence with a message unanswered: the timeout counts from the last input.
    send_written(&mut s, conn, 1, now);
    s.handle_timeout(now + DELAY);
    ping_payload(&actions(&mut s));
    s.handle(
        conn,
        TransportEvent::Message(Message::text("last")),
        now + DELAY,
    );
    times_out_at(&mut s, now + DELAY + TIMEOUT);
}

/// The session is open until `at`, and fails with `AckTimeout` then.
fn times_out_at(s: &mut Session, at: Instant) {
    s.handle_timeout(at - Duration::from_millis(1));
    assert_eq!(s.state(), ReadyState::Open);
    s.handle_timeout(at);
    assert!(
        events(s).iter().any(|e| matches!(
            e,
            Event::Error {
                error: ConnectionError::AckTimeout(_),
                ..
            }
        )),
        "no AckTimeout at the timeout"
    );
}

/// Part of a large message still arriving ([`TransportEvent::Receiving`]) restarts the wait
/// as a whole message does: the pong is behind the rest of the frame.
#[test]
fn part_of_a_message_arriving_restarts_the_timeout() {
    input_restarts_the_wait(|| TransportEvent::Receiving, 4);
}

/// Our own large message still going out to a full socket that takes more of it
/// ([`TransportEvent::Sending`]) restarts the wait, also past eight timeouts (its own bytes
/// cannot keep it waiting longer than they take): a prober's 300 KB message over a 20 KB/s
/// uplink timed out at 10 s and was resent for ever. Once nothing more goes out, silence
/// times out as before.
#[test]
fn our_own_upload_going_out_restarts_the_timeout_without_the_cap() {
    let (mut s, conn, now) = input_restarts_the_wait(|| TransportEvent::Sending, 20);
    send_written(&mut s, conn, 1, now);
    s.handle_timeout(now + DELAY);
    ping_payload(&actions(&mut s));
    times_out_at(&mut s, now + DELAY + TIMEOUT);
}

/// A peer that keeps sending but never answers a ping (against RFC 6455 §5.5.2): what it
/// sends extends the wait, but not past eight timeouts after the ping; then `AckTimeout`
/// (it used to extend it for ever, and sends waited for room for ever).
#[test]
fn a_peer_that_streams_but_never_answers_times_out_after_eight_timeouts() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let ids = send_written(&mut s, conn, 1, t0);
    let pinged = t0 + DELAY;
    s.handle_timeout(pinged);
    ping_payload(&actions(&mut s));
    let cap = pinged + TIMEOUT * 8;
    let mut now = pinged;
    while now + TIMEOUT / 4 < cap {
        now += TIMEOUT / 4;
        s.handle_timeout(now);
        assert_eq!(s.state(), ReadyState::Open, "at {:?}", now - pinged);
        s.handle(conn, TransportEvent::Message(Message::text("more")), now);
        assert_eq!(s.poll_timeout(), Some((now + TIMEOUT).min(cap)));
    }
    s.handle_timeout(cap - Duration::from_millis(1));
    assert_eq!(s.state(), ReadyState::Open);
    s.handle_timeout(cap);
    let got = events(&mut s);
    assert!(
        got.iter().any(|e| matches!(
            e,
            Event::Error {
                error: ConnectionError::AckTimeout(_),
                ..
            }
        )),
        "no AckTimeout eight timeouts after the ping: {got:?}"
    );
    assert_eq!(maybe_delivered(&got), ids, "{got:?}");
}

#[test]
fn awaiting_drivers_see_the_outcome_on_delivery_not_on_write() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    s.track_completions(true);
    let conn = open(&mut s, t0);
    let ids = send_written(&mut s, conn, 1, t0);
    assert_eq!(s.poll_completion(), None);
    s.handle_timeout(t0 + DELAY);
    let payload = ping_payload(&actions(&mut s));
    s.handle(conn, TransportEvent::Pong(payload), t0 + DELAY);
    assert_eq!(s.poll_completion(), Some((ids[0], Ok(()))));
}

#[test]
fn unacknowledged_messages_fill_the_buffer_so_sends_wait() {
    let t0 = Instant::now();
    let bounds = |c: SessionConfig| c.queue_bounds(4, 16).max_buffered_bytes(16);
    // Without acknowledgement, written messages leave the buffer.
    let mut plain = Session::new(bounds(SessionConfig::default())).unwrap();
    let conn = open(&mut plain, t0);
    send_written(&mut plain, conn, 4, t0);
    assert!(plain.send(Message::text("x"), t0).is_ok());
    // With it, they stay until acknowledged: a peer that stops answering makes sends wait.
    let mut s = Session::new(bounds(config())).unwrap();
    let conn = open(&mut s, t0);
    send_written(&mut s, conn, 4, t0);
    assert_eq!(s.buffered_amount(), 8);
    assert!(matches!(
        s.send(Message::text("x"), t0),
        Err(SendError::BufferFull(_))
    ));
    s.handle_timeout(t0 + DELAY);
    let payload = ping_payload(&actions(&mut s));
    s.handle(conn, TransportEvent::Pong(payload), t0 + DELAY);
    assert_eq!(s.buffered_amount(), 0);
    assert!(s.send(Message::text("x"), t0 + DELAY).is_ok());
}

#[test]
fn an_invalid_acknowledgement_timeout_is_rejected_naming_the_field() {
    let config =
        SessionConfig::default().acknowledge(Acknowledgement::new().timeout(Duration::ZERO));
    assert_eq!(
        Session::new(config).unwrap_err().field,
        "acknowledge.timeout"
    );
    let config = SessionConfig::default()
        .acknowledge(Acknowledgement::new().delay(MAX_TIMER + Duration::from_secs(1)));
    assert_eq!(Session::new(config).unwrap_err().field, "acknowledge.delay");
    // A day is allowed, as for every timer.
    let config = SessionConfig::default().acknowledge(Acknowledgement::new().delay(MAX_TIMER));
    assert!(Session::new(config).is_ok());
}

/// A random walk of sends, writes, pongs (right, stale and stray), drops and reconnects:
/// every send ends in exactly one final outcome, a delivered message was sent before a
/// ping whose pong arrived, and only resent messages are marked duplicates.
#[test]
fn every_send_ends_exactly_once_under_random_input() {
    let (mut delivered_total, mut duplicates_total, mut failed_total) = (0, 0, 0);
    for seed in 0..200u64 {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        // Odd seeds do not carry the queue: unacknowledged messages fail at a drop.
        let policy = ReconnectPolicy::default()
            .seed(seed)
            .max_attempts(Some(3))
            .carry_queue(seed % 2 == 0);
        let mut s = Session::new(config().reconnect(policy)).unwrap();
        let mut now = Instant::now();
        let mut conn = open(&mut s, now);
        let mut outcomes: BTreeMap<SendId, u32> = BTreeMap::new();
        let mut accepted = Vec::new();
        let mut resent = std::collections::BTreeSet::new();
        // Per connection: pings and sends in the order the driver carries them out.
        // Each ping with how many of the connection's sends went out before it.
        let mut pending_pings: Vec<(Bytes, usize)> = Vec::new();
        let mut conn_sends: Vec<SendId> = Vec::new();
        // What the pongs fed so far (and a clean close) prove the peer read.
        let mut provable = std::collections::BTreeSet::new();
        for _ in 0..300 {
            match next() % 10 {
                0..=3 => {
                    if let Ok(id) = s.send(Message::text("x"), now) {
                        accepted.push(id);
                    }
                }
                4 => now += DELAY,
                5 if !pending_pings.is_empty() => {
                    let at = (next() as usize) % pending_pings.len();
                    let (payload, before) = pending_pings.remove(at);
                    pending_pings.drain(..at);
                    provable.extend(conn_sends[..before].iter().copied());
                    s.handle(conn, TransportEvent::Pong(payload), now);
                }
                6 => s.handle(conn, TransportEvent::Pong(Bytes::from_static(b"?")), now),
                7 if next() % 8 == 0 => {
                    s.handle(conn, TransportEvent::Closed, now);
                    pending_pings.clear();
                }
                8 => now += TIMEOUT / 3,
                _ => {}
            }
            s.handle_timeout(now);
            for a in actions(&mut s) {
                match a {
                    Action::Send { conn: c, id, .. } => {
                        if outcomes.contains_key(&id) {
                            panic!("{id:?} sent again after its outcome");
                        }
                        s.handle(c, TransportEvent::SendWritten(id), now);
                        if c != conn {
                            panic!("a send for {c:?}, not the current {conn:?}");
                        }
                        conn_sends.push(id);
                    }
                    Action::Ping { payload, .. } => pending_pings.push((payload, conn_sends.len())),
                    Action::Dial { conn: c, .. } => {
                        conn = c;
                        pending_pings.clear();
                        conn_sends.clear();
                        s.handle(c, TransportEvent::Opened(Box::default()), now);
                    }
                    _ => {}
                }
            }
            while let Some(e) = s.poll_event() {
                match e {
                    Event::SendDelivered { id, duplicate, .. } => {
                        *outcomes.entry(id).or_default() += 1;
                        delivered_total += 1;
                        assert!(
                            provable.contains(&id),
                            "seed {seed}: {id:?} delivered unproven"
                        );
                        if duplicate {
                            duplicates_total += 1;
                            assert!(resent.contains(&id), "{id:?} marked but never resent");
                        }
                    }
                    Event::SendFailed { id, .. } => {
                        *outcomes.entry(id).or_default() += 1;
                        failed_total += 1;
                    }
                    Event::SendCompleted { .. } => panic!("SendCompleted with acknowledgement on"),
                    Event::Reconnecting { .. } => {
                        for id in &accepted {
                            if !outcomes.contains_key(id) {
                                resent.insert(*id);
                            }
                        }
                    }
                    _ => {}
                }
            }
            if s.state() == ReadyState::Closed {
                break;
            }
        }
        // Close cleanly (or let it end) and account for every send.
        if s.state() == ReadyState::Open {
            s.close(None, "", now).unwrap();
            s.handle(conn, TransportEvent::PeerClosed(peer_close("")), now);
            s.handle(conn, TransportEvent::Closed, now);
        } else if s.state() == ReadyState::Connecting {
            s.close(None, "", now).unwrap();
        }
        while let Some(e) = s.poll_event() {
            if let Event::SendDelivered { id, .. } | Event::SendFailed { id, .. } = e {
                *outcomes.entry(id).or_default() += 1;
            }
        }
        for id in &accepted {
            assert_eq!(
                outcomes.get(id),
                Some(&1),
                "seed {seed}: {id:?} had {:?} outcomes",
                outcomes.get(id)
            );
        }
    }
    // The walk reached every outcome.
    assert!(
        delivered_total > 1000 && duplicates_total > 10 && failed_total > 10,
        "delivered {delivered_total}, duplicates {duplicates_total}, failed {failed_total}"
    );
}

/// The wx surface: with acknowledgement on, `sendSocketMessage`'s `success` fires on
/// delivery, not on the write.
#[test]
fn wx_send_success_fires_on_delivery() {
    use std::sync::{Arc, Mutex};
    use wxsocket_core::wx::{ConnectSocket, SendSocketMessage, WxSocket};
    let t0 = Instant::now();
    let mut wx = WxSocket::new(config()).unwrap();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let conn = wx
        .connect_socket(ConnectSocket::new(options()), t0)
        .unwrap();
    Driven::handle(&mut wx, conn, TransportEvent::Opened(Box::default()), t0);
    let l = Arc::clone(&log);
    let id = wx
        .send_socket_message(
            SendSocketMessage::new("hi")
                .success(move |r| l.lock().unwrap().push(r.err_msg.clone())),
            t0,
        )
        .unwrap();
    Driven::handle(&mut wx, conn, TransportEvent::SendWritten(id), t0);
    wx.dispatch();
    assert!(log.lock().unwrap().is_empty(), "success on the write");
    Driven::handle_timeout(&mut wx, t0 + DELAY);
    let pings: Vec<_> = std::iter::from_fn(|| Driven::poll_action(&mut wx))
        .filter_map(|a| match a {
            Action::Ping { payload, .. } => Some(payload),
            _ => None,
        })
        .collect();
    Driven::handle(
        &mut wx,
        conn,
        TransportEvent::Pong(pings[0].clone()),
        t0 + DELAY,
    );
    wx.dispatch();
    assert_eq!(*log.lock().unwrap(), ["sendSocketMessage:ok"]);
}

/// A peer that answers only the latest ping (RFC 6455 §5.5.3 allows it), and a ping of the
/// application's sent while a barrier waits: a fresh barrier follows that ping, so the
/// latest ping is always a barrier, and its pong acknowledges everything (the application's
/// ping itself acknowledges nothing). Without it, the first barrier would time out on a
/// healthy connection.
#[test]
fn a_ping_of_the_applications_while_a_barrier_waits_is_followed_by_a_fresh_barrier() {
    let t0 = Instant::now();
    let mut s = Session::new(config()).unwrap();
    let conn = open(&mut s, t0);
    let ids = send_written(&mut s, conn, 2, t0);
    s.handle_timeout(t0 + DELAY);
    let first = ping_payload(&actions(&mut s));
    s.ping(Bytes::from_static(b"app"), t0 + DELAY).unwrap();
    let sent = actions(&mut s);
    let pings = ping_payloads(&sent);
    assert_eq!(pings.len(), 2, "{sent:?}");
    assert_eq!(pings[0], Bytes::from_static(b"app"));
    let latest = pings[1].clone();
    assert_ne!(latest, first);
    // The peer answers only the latest.
    s.handle(conn, TransportEvent::Pong(latest), t0 + DELAY);
    assert_eq!(
        delivered(&events(&mut s)),
        [(ids[0], false), (ids[1], false)]
    );
    s.handle_timeout(t0 + DELAY + TIMEOUT * 2);
    assert_eq!(
        s.state(),
        ReadyState::Open,
        "no timeout for the first barrier"
    );
    // With nothing waiting, the application's ping is followed by no barrier.
    s.ping(Bytes::from_static(b"idle"), t0 + DELAY + TIMEOUT * 2)
        .unwrap();
    assert_eq!(ping_payload(&actions(&mut s)), Bytes::from_static(b"idle"));
}

/// `send_completions(false)` drops the successful outcome with acknowledgement on too: no
/// `SendDelivered` (its docs and `SessionConfig::send_completions`'s now say so), while a
/// driver's `poll_completion` still gets it.
#[test]
fn send_completions_off_queues_no_delivered_event() {
    let mut s = Session::new(config().send_completions(false)).unwrap();
    s.track_completions(true);
    let t0 = Instant::now();
    let conn = open(&mut s, t0);
    let id = s.send(Message::text("x"), t0).unwrap();
    let at = s.poll_timeout().unwrap();
    s.handle_timeout(at);
    let ping = actions(&mut s)
        .into_iter()
        .find_map(|a| match a {
            Action::Ping { payload, .. } => Some(payload),
            _ => None,
        })
        .expect("a barrier ping");
    s.handle(conn, TransportEvent::SendWritten(id), at);
    s.handle(conn, TransportEvent::Pong(ping), at);
    assert!(events(&mut s).is_empty());
    assert_eq!(s.poll_completion(), Some((id, Ok(()))));
    assert_eq!(s.buffered_amount(), 0);
}
