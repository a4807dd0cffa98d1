//! `Session::ping`: the application's pings and the pongs that answer them, on a simulated
//! clock.

use bytes::Bytes;
use std::time::Instant;
use wxsocket_core::*;

fn open() -> (Session, ConnId, Instant) {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::default().max_untaken_completions(20)).unwrap();
    let conn = s
        .connect(&ConnectOptions::new("ws://127.0.0.1:9/"), now)
        .unwrap();
    s.handle(conn, TransportEvent::Opened(Box::default()), now);
    while s.poll_action().is_some() {}
    while s.poll_event().is_some() {}
    (s, conn, now)
}

#[test]
fn a_pong_answering_a_ping_is_reported_with_its_payload() {
    let (mut s, conn, now) = open();
    s.ping("a", now).unwrap();
    assert_eq!(
        s.poll_action(),
        Some(Action::Ping {
            conn,
            payload: Bytes::from("a")
        })
    );
    // An unsolicited pong (or the keepalive's) is not reported.
    s.handle(conn, TransportEvent::Pong(Bytes::from("other")), now);
    assert!(s.poll_event().is_none());
    s.handle(conn, TransportEvent::Pong(Bytes::from("a")), now);
    assert_eq!(s.poll_event(), Some(Event::pong(conn, Bytes::from("a"))));
    // Answered once only.
    s.handle(conn, TransportEvent::Pong(Bytes::from("a")), now);
    assert!(s.poll_event().is_none());
}

#[test]
fn a_pong_for_a_later_ping_answers_the_earlier_ones() {
    let (mut s, conn, now) = open();
    for p in ["1", "2", "3"] {
        s.ping(p, now).unwrap();
    }
    s.handle(conn, TransportEvent::Pong(Bytes::from("2")), now);
    s.handle(conn, TransportEvent::Pong(Bytes::from("1")), now);
    let pongs: Vec<Event> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(pongs.len(), 1, "{pongs:?}");
    s.handle(conn, TransportEvent::Pong(Bytes::from("3")), now);
    assert!(matches!(s.poll_event(), Some(Event::Pong { .. })));
}

#[test]
fn pings_are_refused_when_not_open_too_long_or_too_many() {
    let now = Instant::now();
    let mut idle = Session::new(SessionConfig::default()).unwrap();
    assert_eq!(idle.ping("x", now), Err(PingError::NotOpen));
    let (mut s, conn, now) = open();
    assert_eq!(
        s.ping(vec![0u8; 126], now),
        Err(PingError::TooLong { len: 126 })
    );
    // 125 bytes, a control frame's largest payload, is allowed.
    s.ping(vec![0u8; 125], now).unwrap();
    s.handle(conn, TransportEvent::Pong(vec![0u8; 125].into()), now);
    assert!(matches!(s.poll_event(), Some(Event::Pong { payload, .. }) if payload.len() == 125));
    for i in 0..MAX_PINGS {
        s.ping(i.to_string(), now).unwrap();
    }
    assert_eq!(s.ping("one more", now), Err(PingError::Full));
}

#[test]
fn untaken_pongs_count_toward_the_completion_bound() {
    let (mut s, conn, now) = open();
    for i in 0..20 {
        let p = i.to_string();
        s.ping(p.clone(), now).unwrap();
        s.handle(conn, TransportEvent::Pong(Bytes::from(p)), now);
    }
    assert_eq!(s.backlog().completions, 20);
    assert_eq!(s.ping("x", now), Err(PingError::Full));
    s.poll_event().unwrap();
    assert!(s.ping("x", now).is_ok());
}
