//! A counting allocator shows that a message costs the core no heap allocation in the Open
//! state, sent or received, beyond what its payload already owns. (`allocation-counter`
//! installs the counting global allocator, so this crate stays free of `unsafe`.)

use bytes::Bytes;
use std::time::Instant;
use wxsocket_core::*;

#[test]
fn open_state_messages_do_not_allocate_in_the_core() {
    let now = Instant::now();
    let mut s = Session::new(SessionConfig::default()).unwrap();
    let conn = s
        .connect(&ConnectOptions::new("ws://127.0.0.1:1"), now)
        .unwrap();
    s.handle(conn, TransportEvent::Opened(Box::default()), now);
    while s.poll_action().is_some() {}
    while s.poll_event().is_some() {}
    // Payloads the application already owns (shared Bytes: clones are reference counts).
    let text = Message::Text(Utf8Payload::from_static("hello, world"));
    let binary = Message::Binary(Bytes::from(vec![1u8; 1024]));
    let incoming = Message::Binary(Bytes::from(vec![2u8; 256]));
    let round = |s: &mut Session| {
        for m in [text.clone(), binary.clone()] {
            let id = s.send(m, now).unwrap();
            let Some(Action::Send {
                id: got, message, ..
            }) = s.poll_action()
            else {
                panic!()
            };
            assert_eq!(got, id);
            drop(message);
            s.handle(conn, TransportEvent::SendWritten(id), now);
            assert!(matches!(s.poll_event(), Some(Event::SendCompleted { .. })));
        }
        s.handle(conn, TransportEvent::Message(incoming.clone()), now);
        assert!(matches!(s.poll_event(), Some(Event::Message { .. })));
    };
    // Warm up: the queues grow to their working size once.
    round(&mut s);
    let info = allocation_counter::measure(|| {
        for _ in 0..1000 {
            round(&mut s);
        }
    });
    assert_eq!(
        info.count_total, 0,
        "allocations for 3000 messages in the Open state"
    );
}

/// Every connection of a pool with completions tracked keeps a queue of them, so a
/// completion stays two words: a failure (with the message it hands back) is boxed. It was
/// 56 bytes unboxed, and idle connections grew by a few hundred bytes each.
#[test]
fn a_completion_is_two_words() {
    assert_eq!(std::mem::size_of::<Completion>(), 16);
}
