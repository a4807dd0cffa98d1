//! How messages and events print: `Display` is one readable line, `Debug` shows a URL as a
//! URL.

use std::time::{Duration, Instant};
use wxsocket_core::*;

#[test]
fn messages_print_text_as_is_and_binary_summarised() {
    assert_eq!(Message::text("héllo").to_string(), "héllo");
    assert_eq!(Message::binary(Vec::new()).to_string(), "<binary, 0 bytes>");
    assert_eq!(
        Message::binary((0u8..20).collect::<Vec<_>>()).to_string(),
        "<binary, 20 bytes: 000102030405060708090a0b0c0d0e0f…>"
    );
    assert_eq!(Message::text("x").as_text(), Some("x"));
    assert_eq!(Message::text("x").into_text(), Some("x".to_owned()));
    assert_eq!(Message::binary(vec![b'x']).into_text(), None);
}

#[test]
fn every_event_of_a_session_prints_on_one_line() {
    let now = Instant::now();
    let mut s =
        Session::new(SessionConfig::default().reconnect(ReconnectPolicy::default())).unwrap();
    let conn = s
        .connect(
            &ConnectOptions::new("ws://127.0.0.1:9/chat?room=1").protocol("v1"),
            now,
        )
        .unwrap();
    let id = s.send(Message::text("queued"), now).unwrap();
    s.handle(
        conn,
        TransportEvent::Opened(Box::new(
            Handshake::default().with_protocol(Some("v1".into())),
        )),
        now,
    );
    s.handle(conn, TransportEvent::SendWritten(id), now);
    s.handle(
        conn,
        TransportEvent::Message(Message::binary(vec![1, 2])),
        now,
    );
    s.handle(
        conn,
        TransportEvent::Error(TransportError::new(TransportErrorKind::Io, "reset")),
        now + Duration::from_millis(5),
    );
    let lines: Vec<String> = std::iter::from_fn(|| s.poll_event())
        .map(|e| e.to_string())
        .collect();
    assert_eq!(lines[0], "#1 connecting to ws://127.0.0.1:9/chat?room=1");
    assert_eq!(lines[1], "#1 open, protocol v1");
    assert_eq!(lines[2], format!("#1 send {id} written"));
    assert_eq!(lines[3], "#1 message: <binary, 2 bytes: 0102>");
    assert!(lines[4].starts_with("#1 error: "), "{}", lines[4]);
    assert!(lines[5].starts_with("#1 closed: 1006 "), "{}", lines[5]);
    assert!(lines[5].ends_with("(not clean)"), "{}", lines[5]);
    assert!(
        lines[6].starts_with("#2 reconnecting (attempt 1, in "),
        "{}",
        lines[6]
    );
    for line in &lines {
        assert!(!line.contains('\n'), "{line:?}");
    }
}

#[test]
fn debug_shows_a_url_as_a_url() {
    let mut s = Session::new(SessionConfig::default()).unwrap();
    s.connect(&ConnectOptions::new("ws://127.0.0.1:9/x"), Instant::now())
        .unwrap();
    let event = s.poll_event().unwrap();
    let debug = format!("{event:?}");
    assert_eq!(
        debug,
        "Connecting { conn: ConnId(1), url: \"ws://127.0.0.1:9/x\" }"
    );
}
