//! What a received message keeps allocated, over real sockets on both adapters: a message
//! that came in several frames is held in an allocation of its own length (tungstenite joins
//! the frames in a `Vec` that grows by doubling: one of 600,000 bytes came in 1 MiB), and a
//! long message that came in one frame is, once the connection is idle, the only owner of
//! the buffer it was read into (tungstenite kept that buffer for its next reads, so letting
//! go of the message freed nothing).

use bytes::Bytes;
use wxsocket_core::{ConnectOptions, Event, Message, SessionConfig};
use wxsocket_tests::adapter::{Adapter, BlockingAdapter, EVENT_TIMEOUT, TokioAdapter};
use wxsocket_tests::peer::{Mode, Peer, Step};
use wxsocket_tests::scenario::{open, round_trip};
use wxsocket_wire::tls::TlsRoots;

/// The fragmented message's length (not a power of two, so a doubling `Vec` overshoots it).
const JOINED: usize = 600_000;
/// The single-frame message's length: past `GIVE_BACK_FROM`.
const WHOLE: usize = 200_000;
/// What a trimmed payload may keep beyond its length (the trim leaves up to 4 KiB).
const SPARE: usize = 4 * 1024;

/// The next binary message's payload.
fn next_binary<A: Adapter>(a: &mut A) -> Bytes {
    let events = a.events_until("a binary message", EVENT_TIMEOUT, |seen| {
        seen.iter().any(|e| {
            matches!(
                e,
                Event::Message {
                    message: Message::Binary(_),
                    ..
                }
            )
        })
    });
    events
        .into_iter()
        .find_map(|e| match e {
            Event::Message {
                message: Message::Binary(payload),
                ..
            } => Some(payload),
            _ => None,
        })
        .expect("a binary message")
}

fn a_received_message_holds_only_its_own_bytes<A: Adapter>() {
    let name = A::NAME;
    let joined: Vec<u8> = (0..JOINED).map(|i| (i % 251) as u8).collect();
    let whole: Vec<u8> = (0..WHOLE).map(|i| (i % 241) as u8).collect();
    let peer = Peer::start(Mode::Script(vec![
        Step::Fragmented {
            message: Message::binary(joined.clone()),
            fragments: 10,
            ping: true,
        },
        Step::Message(Message::binary(whole.clone())),
    ]));
    let mut a = A::new(SessionConfig::default(), TlsRoots::default())
        .unwrap_or_else(|e| panic!("[{name}] config rejected: {e}"));
    open(&mut a, &ConnectOptions::new(peer.url()));
    let first = next_binary(&mut a);
    assert_eq!(first, joined, "[{name}]");
    let second = next_binary(&mut a);
    assert_eq!(second, whole, "[{name}]");
    round_trip(&mut a, "after");
    let first = first
        .try_into_mut()
        .unwrap_or_else(|_| panic!("[{name}] the joined message's allocation is shared"));
    assert!(
        first.capacity() <= JOINED + SPARE,
        "[{name}] {JOINED} bytes joined from frames held in {}",
        first.capacity()
    );
    assert!(
        second.is_unique(),
        "[{name}] the connection still shares the single-frame message's allocation"
    );
    a.close(None, "")
        .unwrap_or_else(|e| panic!("[{name}] close refused: {e}"));
    a.events_until("Close", EVENT_TIMEOUT, |seen| {
        seen.iter().any(|e| matches!(e, Event::Close { .. }))
    });
}

#[test]
fn a_received_message_holds_only_its_own_bytes_tokio() {
    a_received_message_holds_only_its_own_bytes::<TokioAdapter>();
}

#[test]
fn a_received_message_holds_only_its_own_bytes_blocking() {
    a_received_message_holds_only_its_own_bytes::<BlockingAdapter>();
}
