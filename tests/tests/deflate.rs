//! permessage-deflate (RFC 7692) conformance on both adapters: every scenario is written
//! once, generic over [`Adapter`], and `deflate_suite!` instantiates it for the tokio
//! adapter (`on_tokio::…`) and the blocking adapter (`on_blocking::…`).
//!
//! The server is the scriptable test peer speaking the extension itself (its own codec, see
//! `wxsocket_tests::peer::deflate`): it answers the offer as each scenario tells it,
//! records for every message whether it arrived compressed, its size on the wire and the
//! longest back-reference the client's compressor used, echoes compressed, and sends the
//! malformed frames (RSV1 where it is not allowed, invalid DEFLATE data, decompression
//! bombs). Every wait is bounded; nothing sleeps to wait for something.

use std::time::{Duration, Instant};
use wxsocket_core::{
    ConnId, ConnectOptions, ConnectionError, DeflateOptions, DeflateParams, Event, Message,
    ReadyState, ReconnectPolicy, SendId, SessionConfig, TransportErrorKind,
};
use wxsocket_tests::adapter::{Adapter, EVENT_TIMEOUT};
use wxsocket_tests::peer::{
    CloseFrame, Connection, Mode, Peer, Received, Step, Tls, deflate, opcode,
};
use wxsocket_tests::scenario::{
    assert_quiet, assert_quiet_for, client, close_event, completions, expect_connecting,
    expect_error_then_close, messages, open,
};
use wxsocket_wire::tls::TlsRoots;

/// How long a scenario waits for the test peer to see something.
const T: Duration = EVENT_TIMEOUT;
/// RSV1 as the peer's `Step::Frame` takes it.
const RSV1: u8 = 0b100;

wxsocket_tests::on_both_adapters!(
    default_offer_and_answer_are_reported_on_open,
    no_context_takeover_both_ways_is_reported_and_honoured,
    window_bits_are_reported_and_honoured_both_ways,
    a_client_window_of_256_bytes_is_honoured_or_sent_uncompressed,
    client_declared_no_context_takeover_holds_when_the_answer_omits_it,
    fifty_similar_messages_with_context_takeover,
    fifty_similar_messages_server_resets_its_context,
    fifty_similar_messages_client_resets_its_context,
    fifty_similar_messages_in_512_byte_windows,
    a_server_window_of_256_bytes_is_inflated,
    both_directions_at_once,
    megabytes_round_trip_compressed,
    empty_first_fragment_and_a_final_block_from_the_server,
    compressed_and_uncompressed_on_one_connection_both_ways,
    threshold_decides_what_is_compressed,
    the_compression_level_is_honoured,
    threshold_zero_compresses_even_empty_messages,
    fragmented_compressed_message_with_an_interleaved_ping,
    a_server_ignoring_the_offer_runs_uncompressed,
    refused_answers_fail_with_1006,
    refused_answers_are_not_retried_by_a_reconnect_policy,
    an_extension_answered_without_an_offer_fails,
    rsv1_from_a_server_that_declined_is_1002,
    rsv1_on_a_control_frame_is_1002,
    rsv1_on_a_continuation_frame_is_1002,
    rsv2_with_deflate_agreed_is_1002,
    invalid_deflate_data_is_1002,
    a_reference_before_the_stream_start_is_1002,
    compressed_text_inflating_to_invalid_utf8_is_1007,
    decompression_bomb_is_1009_with_the_clients_close_frame,
    fragmented_decompression_bomb_is_1009,
    inflated_size_exactly_at_the_limit_is_accepted_one_more_byte_is_1009,
    a_message_arriving_with_a_failing_one_is_delivered_before_the_1009,
    client_message_exactly_at_the_limit_round_trips_compressed,
    close_handshakes_are_clean_after_compressed_traffic,
    a_new_connection_starts_with_fresh_contexts,
    a_reconnection_negotiates_again_with_fresh_contexts,
    compressed_echo_over_wss,
);

// ----- helpers -----

fn config() -> SessionConfig {
    SessionConfig::default()
        .handshake_timeout(Duration::from_secs(3))
        .close_timeout(Duration::from_secs(1))
}

/// An echoing peer that answers every offer with `answer`.
fn peer_answering(answer: &str) -> Peer {
    Peer::builder(Mode::Echo).deflate_answer(answer).start()
}

/// A scripted peer that answers every offer with `answer`.
fn script(answer: &str, steps: Vec<Step>) -> Peer {
    Peer::builder(Mode::Script(steps))
        .deflate_answer(answer)
        .start()
}

/// The default offer to `peer`.
fn offer(peer: &Peer) -> ConnectOptions {
    ConnectOptions::new(peer.url()).per_message_deflate(true)
}

/// The agreed parameters `edit` makes of the defaults (`DeflateParams` is non-exhaustive).
fn params(edit: impl FnOnce(&mut DeflateParams)) -> DeflateParams {
    let mut p = DeflateParams::default();
    edit(&mut p);
    p
}

/// Deterministic text made of words, `len` bytes: compressible, but not trivially.
fn prose(seed: u32, len: usize) -> String {
    const WORDS: [&str; 16] = [
        "socket", "frame", "deflate", "window", "context", "message", "server", "client", "ping",
        "close", "lobby", "alice", "bob", "token", "quick", "zlib",
    ];
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    let mut out = String::with_capacity(len + 16);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push_str(WORDS[(x % 16) as usize]);
        out.push(if x.is_multiple_of(7) { '\n' } else { ' ' });
    }
    out.truncate(len);
    out
}

/// Pseudo-random bytes (incompressible).
fn noise(seed: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Message `i` of a chat: JSON-like, ~150 bytes, each much like the others.
fn similar(i: usize) -> Message {
    Message::text(format!(
        r#"{{"type":"chat","seq":{i},"room":"lobby","from":"alice","to":"bob","text":"message number {i} of the context takeover test","tags":["deflate","rfc7692"]}}"#
    ))
}

/// A short description of a message for failure output.
fn describe(m: &Message) -> String {
    let kind = if m.is_text() { "text" } else { "binary" };
    let head: Vec<u8> = m.as_bytes().iter().take(40).copied().collect();
    format!(
        "{kind} of {} bytes, {:?}…",
        m.len(),
        String::from_utf8_lossy(&head)
    )
}

/// Asserts `got` equals `want` message by message (describing the first difference).
fn assert_messages(name: &str, what: &str, got: &[Message], want: &[Message]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w,
            "[{name}] {what}: message {i} differs: got {}, want {}",
            describe(g),
            describe(w)
        );
    }
    assert_eq!(
        got.len(),
        want.len(),
        "[{name}] {what}: {} messages instead of {}",
        got.len(),
        want.len()
    );
}

/// Connects with `options` and expects `Open` with compression agreed as `want`.
fn open_with<A: Adapter>(
    a: &mut A,
    options: &ConnectOptions,
    want: Option<DeflateParams>,
) -> ConnId {
    let (conn, handshake) = open(a, options);
    assert_eq!(
        handshake.deflate,
        want,
        "[{}] the agreed parameters reported on open ({:?})",
        A::NAME,
        handshake.extensions
    );
    conn
}

/// Sends every message, expects each echoed in order and each send completed, and nothing
/// else on `conn`; returns the echoes. On a timeout the failure shows what the peer saw.
fn exchange<A: Adapter>(a: &mut A, peer: &Peer, conn: ConnId, sent: &[Message]) -> Vec<Message> {
    let ids: Vec<SendId> = sent
        .iter()
        .map(|m| {
            a.try_send(m.clone())
                .unwrap_or_else(|e| panic!("[{}] send refused: {e}", A::NAME))
        })
        .collect();
    let n = sent.len();
    let deadline = Instant::now() + T;
    let mut events = Vec::new();
    while messages(&events).len() < n || completions(&events).len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(event) = a.next_event(left) else {
            let peer_side: Vec<_> = peer
                .snapshot()
                .connections
                .iter()
                .map(|c| (c.received.len(), c.error.clone(), c.closes.clone()))
                .collect();
            panic!(
                "[{}] timed out waiting for {n} echoes and completions; {} echoes, {} completions; events other than echoes: {:#?}; the peer's connections (messages, error, closes): {peer_side:#?}",
                A::NAME,
                messages(&events).len(),
                completions(&events).len(),
                events
                    .iter()
                    .filter(|e| !matches!(e, Event::Message { .. } | Event::SendCompleted { .. }))
                    .collect::<Vec<_>>()
            );
        };
        assert!(
            matches!(event, Event::Message { .. } | Event::SendCompleted { .. })
                && event.conn() == conn,
            "[{}] unexpected event {event:#?}; the peer saw {:#?}",
            A::NAME,
            peer.snapshot()
                .connections
                .last()
                .map(|c| (&c.error, &c.closes))
        );
        events.push(event);
    }
    assert_eq!(
        completions(&events),
        ids,
        "[{}] completions in order",
        A::NAME
    );
    let echoes = messages(&events);
    assert_messages(A::NAME, "echoes", &echoes, sent);
    echoes
}

/// Waits until connection `index` received `n` messages (or ended) and checks it ended in
/// no error on the peer's side.
fn received(peer: &Peer, index: usize, n: usize) -> Connection {
    let seen = peer.wait_conn(index, &format!("{n} messages"), T, |c| {
        c.received.len() >= n || c.ended
    });
    assert_eq!(seen.error, None, "the peer failed: {seen:#?}");
    assert_eq!(seen.received.len(), n, "{:#?}", seen.received);
    seen
}

/// Closes with 1000 and expects a clean close event, the peer seeing the close frame and
/// no error.
fn close_cleanly<A: Adapter>(a: &mut A, conn: ConnId, peer: &Peer, index: usize) {
    a.close(None, "").unwrap();
    let events = a.events_until_close(conn, T);
    assert_eq!(events, [close_event(conn, 1000, "", true)], "[{}]", A::NAME);
    let seen = peer.wait_conn(index, "the connection to end", T, |c| c.ended);
    assert_eq!(seen.error, None, "[{}] the peer failed: {seen:#?}", A::NAME);
    assert_eq!(
        seen.closes,
        [CloseFrame {
            code: Some(1000),
            reason: String::new()
        }],
        "[{}]",
        A::NAME
    );
}

/// Asserts every received message arrived compressed, its back-references within a window
/// of 2^`bits` bytes.
fn assert_all_compressed(name: &str, seen: &[Received], bits: u8) {
    for (i, r) in seen.iter().enumerate() {
        assert!(
            r.compressed,
            "[{name}] message {i} arrived uncompressed: {r:?}"
        );
        assert!(
            r.max_distance <= 1 << bits,
            "[{name}] message {i} refers {} bytes back, beyond the agreed 2^{bits}",
            r.max_distance
        );
    }
}

/// A peer answering `answer` (none: no extension) that plays `steps`, against the
/// default offer, twice: at once after the 101 (the frames may arrive with the handshake
/// response) and after the client's first message (certainly after the client opened).
/// Each time the client must open, then fail with `kind` and close `code`, its close frame
/// carrying `code`, and nothing after.
fn misbehaving<A: Adapter>(
    answer: Option<&str>,
    steps: Vec<Step>,
    config: SessionConfig,
    kind: TransportErrorKind,
    code: u16,
) {
    for later in [false, true] {
        let when = match later {
            false => "sent right after the handshake",
            true => "sent after the client's first message",
        };
        let mut script = Vec::new();
        if later {
            script.push(Step::AwaitMessages(1));
        }
        script.extend(steps.iter().cloned());
        let mut builder = Peer::builder(Mode::Script(script));
        if let Some(answer) = answer {
            builder = builder.deflate_answer(answer);
        }
        let peer = builder.start();
        let mut a: A = client(config.clone());
        let conn = a.connect(&offer(&peer)).unwrap();
        expect_connecting(&mut a, conn);
        match a.expect_event("Open") {
            Event::Open { conn: c, .. } if c == conn => {}
            other => panic!(
                "[{}] {when}: the connection should open (the server's frames are judged after the handshake), got {other:#?}",
                A::NAME
            ),
        }
        if later {
            a.try_send(Message::text("go")).unwrap();
        }
        let events: Vec<Event> = a
            .events_until_close(conn, T)
            .into_iter()
            .filter(|e| !matches!(e, Event::SendCompleted { .. }))
            .collect();
        let error = expect_error_then_close(A::NAME, conn, &events, code);
        match &error {
            ConnectionError::Transport(e) => {
                assert_eq!(e.kind, kind, "[{}] {when}: {e:?}", A::NAME)
            }
            other => panic!(
                "[{}] {when}: expected a transport error, got {other:?}",
                A::NAME
            ),
        }
        assert_eq!(a.state(), ReadyState::Closed);
        let seen = peer.wait_conn(0, "the connection to end", T, |c| c.ended);
        assert_eq!(
            seen.closes.first().and_then(|c| c.code),
            Some(code),
            "[{}] {when}: the client's close frame carries {code}: {:?}",
            A::NAME,
            seen.closes
        );
        assert_quiet(&mut a);
    }
}

// ----- negotiation -----

fn default_offer_and_answer_are_reported_on_open<A: Adapter>() {
    let peer = peer_answering("permessage-deflate");
    let mut a: A = client(config());
    let (conn, handshake) = open(&mut a, &offer(&peer));
    assert_eq!(
        handshake.deflate,
        Some(DeflateParams::default()),
        "[{}]",
        A::NAME
    );
    assert_eq!(
        handshake.extensions.as_deref(),
        Some("permessage-deflate"),
        "[{}] the answer as sent",
        A::NAME
    );
    let request = peer
        .wait_conn(0, "the request", T, |c| c.request.is_some())
        .request
        .unwrap();
    assert_eq!(
        request.header("sec-websocket-extensions"),
        Some(
            "permessage-deflate; client_max_window_bits, permessage-deflate; client_no_context_takeover; client_max_window_bits"
        ),
        "[{}] the default offer, then the same declaring client_no_context_takeover",
        A::NAME
    );
    let sent = [
        Message::text(prose(1, 2000)),
        Message::binary(prose(2, 3000)),
    ];
    exchange(&mut a, &peer, conn, &sent);
    let seen = received(&peer, 0, 2);
    assert_all_compressed(A::NAME, &seen.received, 15);
    for r in &seen.received {
        assert!(r.wire_size < r.message.len() / 2, "[{}] {r:?}", A::NAME);
    }
    close_cleanly(&mut a, conn, &peer, 0);
    assert_quiet(&mut a);
}

fn no_context_takeover_both_ways_is_reported_and_honoured<A: Adapter>() {
    let peer = peer_answering(
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
    );
    let mut a: A = client(config());
    let options = ConnectOptions::new(peer.url()).deflate(
        DeflateOptions::default()
            .server_no_context_takeover(true)
            .client_no_context_takeover(true),
    );
    let want = params(|p| {
        p.server_no_context_takeover = true;
        p.client_no_context_takeover = true;
    });
    let conn = open_with(&mut a, &options, Some(want));
    let request = peer.snapshot().connections[0].request.clone().unwrap();
    assert_eq!(
        request.header("sec-websocket-extensions"),
        Some(
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; client_max_window_bits"
        ),
        "[{}]",
        A::NAME
    );
    // The peer resets its inflater after every message: a client that kept its context
    // would refer to earlier messages, which the peer can no longer see.
    let sent: Vec<Message> = (0..50).map(similar).collect();
    exchange(&mut a, &peer, conn, &sent);
    let seen = received(&peer, 0, 50);
    assert_all_compressed(A::NAME, &seen.received, 15);
    for r in &seen.received {
        assert!(
            r.max_distance < r.message.len(),
            "[{}] a self-contained message cannot refer {} bytes back",
            A::NAME,
            r.max_distance
        );
    }
    close_cleanly(&mut a, conn, &peer, 0);
}

fn window_bits_are_reported_and_honoured_both_ways<A: Adapter>() {
    // The peer compresses with exactly a 1 KiB window (its own encoder reaches the edge:
    // a repeated 1 KiB block refers exactly 1024 bytes back); the client must keep within
    // 512 bytes.
    let peer =
        peer_answering("permessage-deflate; server_max_window_bits=10; client_max_window_bits=9");
    let mut a: A = client(config());
    let options = ConnectOptions::new(peer.url()).deflate(
        DeflateOptions::default()
            .server_max_window_bits(Some(10))
            .client_max_window_bits(12),
    );
    let want = params(|p| {
        p.server_max_window_bits = 10;
        p.client_max_window_bits = 9;
    });
    let conn = open_with(&mut a, &options, Some(want));
    let request = peer.snapshot().connections[0].request.clone().unwrap();
    assert_eq!(
        request.header("sec-websocket-extensions"),
        Some(
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=12, permessage-deflate; client_no_context_takeover; server_max_window_bits=10; client_max_window_bits=12"
        ),
        "[{}]",
        A::NAME
    );
    let block = noise(10, 1024);
    let twice = [&block[..], &block[..]].concat();
    let repeated_prose = prose(3, 600).repeat(4);
    let sent = vec![
        Message::binary(block.clone()),
        Message::binary(block.clone()),
        Message::binary(twice),
        Message::text(repeated_prose.clone()),
        Message::text(repeated_prose),
        Message::text(prose(4, 5000)),
    ];
    exchange(&mut a, &peer, conn, &sent);
    let seen = received(&peer, 0, sent.len());
    // Whether the client compresses incompressible noise is its choice; what it does
    // compress must fit the window.
    for (i, r) in seen.received.iter().enumerate() {
        assert!(
            r.max_distance <= 512,
            "[{}] message {i} refers {} bytes back, beyond the agreed 512",
            A::NAME,
            r.max_distance
        );
    }
    assert!(
        seen.received[3].compressed && seen.received[3].wire_size < 2400 * 3 / 4,
        "[{}] prose is compressed, even in a 512-byte window: {:?}",
        A::NAME,
        seen.received[3]
    );
    close_cleanly(&mut a, conn, &peer, 0);
}

fn a_client_window_of_256_bytes_is_honoured_or_sent_uncompressed<A: Adapter>() {
    let peer = peer_answering("permessage-deflate; client_max_window_bits=8");
    let mut a: A = client(config());
    let want = params(|p| p.client_max_window_bits = 8);
    let conn = open_with(&mut a, &offer(&peer), Some(want));
    let sent: Vec<Message> = (0..10)
        .map(|i| Message::text(prose(i, 1000 + 300 * i as usize)))
        .collect();
    exchange(&mut a, &peer, conn, &sent);
    let seen = received(&peer, 0, sent.len());
    for (i, r) in seen.received.iter().enumerate() {
        assert!(
            !r.compressed || r.max_distance <= 256,
            "[{}] message {i} refers {} bytes back, beyond the agreed 256",
            A::NAME,
            r.max_distance
        );
    }
    close_cleanly(&mut a, conn, &peer, 0);
}

fn client_declared_no_context_takeover_holds_when_the_answer_omits_it<A: Adapter>() {
    // RFC 7692 §7.1.1.2: the client may declare it resets its context; the server need
    // not repeat it. The peer does not reset its inflater here (keeping it is always safe).
    let peer = peer_answering("permessage-deflate");
    let mut a: A = client(config());
    let options = ConnectOptions::new(peer.url())
        .deflate(DeflateOptions::default().client_no_context_takeover(true));
    let want = params(|p| p.client_no_context_takeover = true);
    let conn = open_with(&mut a, &options, Some(want));
    let sent: Vec<Message> = (0..20).map(similar).collect();
    exchange(&mut a, &peer, conn, &sent);
    let seen = received(&peer, 0, 20);
    assert_all_compressed(A::NAME, &seen.received, 15);
    for (i, r) in seen.received.iter().enumerate() {
        assert!(
            r.max_distance < r.message.len(),
            "[{}] message {i}: the client declared no context takeover but refers {} bytes back",
            A::NAME,
            r.max_distance
        );
    }
    close_cleanly(&mut a, conn, &peer, 0);
}

// ----- context takeover: many messages in a row -----

/// 50 similar messages and a few larger ones, each echoed compressed; every echo and every
/// message the peer inflated must be exact.
fn fifty_similar<A: Adapter>(answer: &str, options: DeflateOptions, want: DeflateParams) {
    let peer = peer_answering(answer);
    let mut a: A = client(config());
    let conn = open_with(
        &mut a,
        &ConnectOptions::new(peer.url()).deflate(options),
        Some(want),
    );
    let mut sent: Vec<Message> = (0..50).map(similar).collect();
    // Larger ones in between, so windows fill and slide.
    sent.insert(10, Message::text(prose(10, 40_000)));
    sent.insert(30, Message::binary(prose(30, 70_000)));
    sent.push(Message::binary(noise(5, 20_000)));
    sent.extend((50..60).map(similar));
    exchange(&mut a, &peer, conn, &sent);
    let seen = received(&peer, 0, sent.len());
    assert_messages(A::NAME, "inflated by the peer", &seen.messages, &sent);
    for (i, r) in seen.received.iter().enumerate() {
        let compressible = !matches!(&r.message, Message::Binary(b) if b.len() == 20_000);
        assert!(
            r.compressed || !compressible,
            "[{}] message {i} arrived uncompressed: {r:?}",
            A::NAME
        );
    }
    if !want.client_no_context_takeover {
        // Not required by RFC 7692 (a client may always reset), but taking the context over
        // is the point of the default: later chat messages should refer to earlier ones.
        let later = &seen.received[seen.received.len() - 5..];
        if later.iter().all(|r| r.max_distance < r.message.len()) {
            eprintln!(
                "[{}] note: the client did not take its context over ({later:?})",
                A::NAME
            );
        }
    }
    close_cleanly(&mut a, conn, &peer, 0);
    assert_quiet(&mut a);
}

fn fifty_similar_messages_with_context_takeover<A: Adapter>() {
    fifty_similar::<A>(
        "permessage-deflate",
        DeflateOptions::default(),
        DeflateParams::default(),
    );
}

fn fifty_similar_messages_server_resets_its_context<A: Adapter>() {
    fifty_similar::<A>(
        "permessage-deflate; server_no_context_takeover",
        DeflateOptions::default().server_no_context_takeover(true),
        params(|p| p.server_no_context_takeover = true),
    );
}

fn fifty_similar_messages_client_resets_its_context<A: Adapter>() {
    // The server asks it (allowed even when the client did not offer it, RFC 7692
    // §7.1.1.2), and the peer then resets its inflater after every message.
    fifty_similar::<A>(
        "permessage-deflate; client_no_context_takeover",
        DeflateOptions::default(),
        params(|p| p.client_no_context_takeover = true),
    );
}

fn fifty_similar_messages_in_512_byte_windows<A: Adapter>() {
    // The peer's own encoder with a 512-byte window and context takeover: its references
    // reach into earlier messages, up to exactly 512 bytes back.
    fifty_similar::<A>(
        "permessage-deflate; server_max_window_bits=9; client_max_window_bits=9",
        DeflateOptions::default(),
        params(|p| {
            p.server_max_window_bits = 9;
            p.client_max_window_bits = 9;
        }),
    );
}

fn a_server_window_of_256_bytes_is_inflated<A: Adapter>() {
    let peer = peer_answering("permessage-deflate; server_max_window_bits=8");
    let mut a: A = client(config());
    let options = ConnectOptions::new(peer.url())
        .deflate(DeflateOptions::default().server_max_window_bits(Some(8)));
    let conn = open_with(
        &mut a,
        &options,
        Some(params(|p| p.server_max_window_bits = 8)),
    );
    let block = noise(8, 256);
    let sent = vec![
        Message::binary(block.clone()),
        Message::binary(block.clone()),
        Message::text(prose(8, 3000)),
        Message::binary([&block[..], &block[..], &block[..]].concat()),
    ];
    exchange(&mut a, &peer, conn, &sent);
    close_cleanly(&mut a, conn, &peer, 0);
}

fn both_directions_at_once<A: Adapter>() {
    // The peer sends 40 compressed messages of its own while the client sends 40 (echoed
    // after the peer's): the two directions' contexts are independent.
    let from_peer: Vec<Message> = (100..140).map(similar).collect();
    let peer = script(
        "permessage-deflate",
        from_peer.iter().cloned().map(Step::Message).collect(),
    );
    let mut a: A = client(config());
    let conn = open_with(&mut a, &offer(&peer), Some(DeflateParams::default()));
    let sent: Vec<Message> = (0..40).map(similar).collect();
    for m in &sent {
        a.try_send(m.clone()).unwrap();
    }
    let events = a.events_until("80 messages and 40 completions", T, |e| {
        messages(e).len() >= 80 && completions(e).len() >= 40
    });
    let got = messages(&events);
    assert_messages(A::NAME, "the peer's own", &got[..40], &from_peer);
    assert_messages(A::NAME, "echoes", &got[40..], &sent);
    let seen = received(&peer, 0, 40);
    assert_all_compressed(A::NAME, &seen.received, 15);
    close_cleanly(&mut a, conn, &peer, 0);
}

fn megabytes_round_trip_compressed<A: Adapter>() {
    let peer = peer_answering("permessage-deflate");
    let mut a: A = client(config());
    let conn = open_with(&mut a, &offer(&peer), Some(DeflateParams::default()));
    let sent = vec![
        Message::text(prose(60, 3 << 20)),
        Message::binary(vec![0x42; 2 << 20]),
        Message::text(prose(61, 100)),
    ];
    exchange(&mut a, &peer, conn, &sent);
    let seen = received(&peer, 0, sent.len());
    assert_all_compressed(A::NAME, &seen.received, 15);
    assert!(
        seen.received[1].wire_size < 10_000,
        "[{}] {:?}",
        A::NAME,
        seen.received[1].wire_size
    );
    close_cleanly(&mut a, conn, &peer, 0);
}

fn empty_first_fragment_and_a_final_block_from_the_server<A: Adapter>() {
    // With server_no_context_takeover every message may be built on its own: a compressed
    // message whose first frame (with RSV1) is empty, and one ending in a final block
    // (BFINAL, RFC 7692 §7.2.3.4) rather than a sync flush, then ordinary ones.
    let first = prose(70, 4000);
    let second = prose(71, 5000);
    let peer = script(
        "permessage-deflate; server_no_context_takeover",
        vec![
            Step::Frame {
                fin: false,
                rsv: RSV1,
                opcode: opcode::TEXT,
                payload: Vec::new(),
            },
            Step::Frame {
                fin: true,
                rsv: 0,
                opcode: opcode::CONTINUATION,
                payload: deflate::compress(first.as_bytes()),
            },
            Step::Frame {
                fin: true,
                rsv: RSV1,
                opcode: opcode::BINARY,
                payload: deflate::compress_final(second.as_bytes()),
            },
            Step::Message(Message::text(first.clone())),
        ],
    );
    let mut a: A = client(config());
    let want = params(|p| p.server_no_context_takeover = true);
    let conn = open_with(&mut a, &offer(&peer), Some(want));
    let events = a.events_until("three messages", T, |e| messages(e).len() >= 3);
    assert_messages(
        A::NAME,
        "scripted",
        &messages(&events),
        &[
            Message::text(first.clone()),
            Message::binary(second),
            Message::text(first),
        ],
    );
    exchange(&mut a, &peer, conn, &[Message::text(prose(72, 2000))]);
    close_cleanly(&mut a, conn, &peer, 0);
}

// ----- mixed, threshold, fragments -----

fn compressed_and_uncompressed_on_one_connection_both_ways<A: Adapter>() {
    let long = |i: u32| Message::text(prose(i, 500));
    let short = |i: u32| Message::text(format!("s{i}"));
    let from_peer = vec![
        Step::Message(long(1)),
        Step::Uncompressed(long(2)),
        Step::Uncompressed(short(3)),
        Step::Message(short(4)),
        Step::Message(long(1)),
        Step::Uncompressed(Message::binary(noise(6, 700))),
        Step::Message(Message::binary(noise(6, 700))),
    ];
    let want_from_peer = vec![
        long(1),
        long(2),
        short(3),
        short(4),
        long(1),
        Message::binary(noise(6, 700)),
        Message::binary(noise(6, 700)),
    ];
    let peer = script("permessage-deflate", from_peer);
    let mut a: A = client(config());
    let conn = open_with(&mut a, &offer(&peer), Some(DeflateParams::default()));
    let scripted = a.events_until("the scripted messages", T, |e| {
        messages(e).len() >= want_from_peer.len()
    });
    assert_messages(A::NAME, "scripted", &messages(&scripted), &want_from_peer);
    // Client side: the default threshold (32) leaves short messages uncompressed.
    let sent = vec![
        long(7),
        short(8),
        long(9),
        short(10),
        Message::binary(vec![1; 31]),
    ];
    exchange(&mut a, &peer, conn, &sent);
    let seen = received(&peer, 0, sent.len());
    let compressed: Vec<bool> = seen.received.iter().map(|r| r.compressed).collect();
    assert_eq!(
        compressed,
        [true, false, true, false, false],
        "[{}] {:?}",
        A::NAME,
        seen.received
    );
    close_cleanly(&mut a, conn, &peer, 0);
}

fn threshold_decides_what_is_compressed<A: Adapter>() {
    let peer = peer_answering("permessage-deflate");
    let mut a: A = client(config());
    let options = ConnectOptions::new(peer.url()).deflate(DeflateOptions::default().threshold(100));
    let conn = open_with(&mut a, &options, Some(DeflateParams::default()));
    let sent = vec![
        Message::text("a".repeat(99)),
        Message::text("a".repeat(100)),
        Message::binary(vec![7; 101]),
        Message::text("b".repeat(10)),
        Message::binary(vec![0; 5000]),
    ];
    exchange(&mut a, &peer, conn, &sent);
    let seen = received(&peer, 0, sent.len());
    let how: Vec<(bool, usize)> = seen
        .received
        .iter()
        .map(|r| (r.compressed, r.wire_size))
        .collect();
    assert_eq!(
        how[0],
        (false, 99),
        "[{}] below the threshold: as is",
        A::NAME
    );
    assert_eq!(how[3], (false, 10), "[{}]", A::NAME);
    for i in [1, 2, 4] {
        assert!(
            how[i].0 && how[i].1 < sent[i].len() / 4,
            "[{}] message {i} ({} bytes) compressed and smaller: {:?}",
            A::NAME,
            sent[i].len(),
            how[i]
        );
    }
    close_cleanly(&mut a, conn, &peer, 0);
}

fn threshold_zero_compresses_even_empty_messages<A: Adapter>() {
    let peer = peer_answering("permessage-deflate");
    let mut a: A = client(config());
    let options = ConnectOptions::new(peer.url()).deflate(DeflateOptions::default().threshold(0));
    let conn = open_with(&mut a, &options, Some(DeflateParams::default()));
    let sent = vec![
        Message::text(""),
        Message::text("x"),
        Message::binary(Vec::<u8>::new()),
        Message::binary(vec![9]),
        Message::text(""),
    ];
    exchange(&mut a, &peer, conn, &sent);
    let seen = received(&peer, 0, sent.len());
    assert_all_compressed(A::NAME, &seen.received, 15);
    close_cleanly(&mut a, conn, &peer, 0);
}

fn fragmented_compressed_message_with_an_interleaved_ping<A: Adapter>() {
    let big = Message::text(prose(20, 30_000));
    let peer = script(
        "permessage-deflate",
        vec![
            Step::Message(Message::text(prose(21, 3000))),
            Step::Fragmented {
                message: big.clone(),
                fragments: 5,
                ping: true,
            },
            Step::Fragmented {
                message: Message::binary(prose(22, 9000)),
                fragments: 3,
                ping: false,
            },
            // More fragments than payload bytes: some fragments are empty.
            Step::Fragmented {
                message: Message::text("tiny"),
                fragments: 8,
                ping: true,
            },
            Step::Message(Message::text(prose(21, 3000))),
        ],
    );
    let mut a: A = client(config());
    let conn = open_with(&mut a, &offer(&peer), Some(DeflateParams::default()));
    let want = vec![
        Message::text(prose(21, 3000)),
        big,
        Message::binary(prose(22, 9000)),
        Message::text("tiny"),
        Message::text(prose(21, 3000)),
    ];
    let events = a.events_until("five messages", T, |e| messages(e).len() >= 5);
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Event::Message { conn: c, .. } if *c == conn)),
        "[{}] {events:#?}",
        A::NAME
    );
    assert_messages(A::NAME, "fragmented", &messages(&events), &want);
    let seen = peer.wait_conn(0, "two pongs", T, |c| c.pongs.len() >= 2 || c.ended);
    assert_eq!(
        seen.pongs,
        [b"mid-message".to_vec(), b"mid-message".to_vec()],
        "[{}] the pings inside compressed messages were answered",
        A::NAME
    );
    // The connection still works both ways.
    exchange(&mut a, &peer, conn, &[Message::text(prose(23, 4000))]);
    close_cleanly(&mut a, conn, &peer, 0);
}

// ----- declined and refused -----

fn a_server_ignoring_the_offer_runs_uncompressed<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config());
    let (conn, handshake) = open(&mut a, &offer(&peer));
    assert_eq!(handshake.deflate, None, "[{}]", A::NAME);
    assert_eq!(handshake.extensions, None, "[{}]", A::NAME);
    let request = peer.snapshot().connections[0].request.clone().unwrap();
    assert!(
        request.has_header("sec-websocket-extensions"),
        "[{}]",
        A::NAME
    );
    let sent = vec![
        Message::text(prose(30, 5000)),
        Message::binary(vec![0; 10_000]),
    ];
    exchange(&mut a, &peer, conn, &sent);
    let seen = received(&peer, 0, 2);
    for r in &seen.received {
        assert!(
            !r.compressed && r.wire_size == r.message.len(),
            "[{}] {r:?}",
            A::NAME
        );
    }
    close_cleanly(&mut a, conn, &peer, 0);
}

/// The client's offer and the server's answer, which the offer does not allow.
fn refused_answers() -> Vec<(DeflateOptions, &'static str)> {
    let d = DeflateOptions::default();
    vec![
        (d, "x-webkit-deflate-frame"),
        (d, "permessage-deflate; foo"),
        (d, "permessage-deflate; foo=1"),
        (d, "permessage-deflate, permessage-deflate"),
        (d, "permessage-deflate; server_max_window_bits=16"),
        (d, "permessage-deflate; server_max_window_bits=7"),
        (d, "permessage-deflate; client_max_window_bits=16"),
        (d, "permessage-deflate; server_max_window_bits"),
        (d, "permessage-deflate; client_max_window_bits"),
        (d, "permessage-deflate; server_no_context_takeover=1"),
        (
            d,
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        ),
        (
            d.server_max_window_bits(Some(10)),
            "permessage-deflate; server_max_window_bits=11",
        ),
        (d.server_max_window_bits(Some(10)), "permessage-deflate"),
        // Asked in both offers (RFC 7692 §7.1.1.1), so an answer without it matches none.
        (d.server_no_context_takeover(true), "permessage-deflate"),
        (
            d.server_no_context_takeover(true),
            "permessage-deflate; client_no_context_takeover",
        ),
        (
            d.client_max_window_bits(10),
            "permessage-deflate; client_max_window_bits=12",
        ),
    ]
}

/// Expects `events` to be one failed handshake of `conn` with a message starting with
/// `Sec-WebSocket-Extensions: `.
fn expect_extension_refused(name: &str, conn: ConnId, events: &[Event], answer: &str) {
    let error = expect_error_then_close(name, conn, events, 1006);
    match &error {
        ConnectionError::ConnectFailed(e) => {
            assert_eq!(
                e.kind,
                TransportErrorKind::Negotiation,
                "[{name}] answer {answer:?}: {e:?}"
            );
            assert!(
                e.message.starts_with("Sec-WebSocket-Extensions: "),
                "[{name}] answer {answer:?}: the error names the header: {:?}",
                e.message
            );
        }
        other => panic!("[{name}] answer {answer:?}: expected ConnectFailed, got {other:?}"),
    }
}

fn refused_answers_fail_with_1006<A: Adapter>() {
    for (options, answer) in refused_answers() {
        let peer = peer_answering(answer);
        let mut a: A = client(config());
        let conn = a
            .connect(&ConnectOptions::new(peer.url()).deflate(options))
            .unwrap();
        expect_connecting(&mut a, conn);
        let events = a.events_until_close(conn, T);
        expect_extension_refused(A::NAME, conn, &events, answer);
        assert_eq!(a.state(), ReadyState::Closed, "[{}] {answer:?}", A::NAME);
        assert_quiet(&mut a);
        let snap = peer.wait_for("the connection to end", T, |s| {
            s.connections.first().is_some_and(|c| c.ended)
        });
        assert_eq!(snap.accepted, 1, "[{}] {answer:?}: dialled again", A::NAME);
    }
}

fn refused_answers_are_not_retried_by_a_reconnect_policy<A: Adapter>() {
    // A server that answers the offer wrongly once answers it wrongly again: like a
    // sub-protocol that was not offered, a configuration mismatch, not a dial failure.
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .seed(7);
    for (options, answer) in refused_answers() {
        let peer = peer_answering(answer);
        let mut a: A = client(config().reconnect(policy.clone()));
        let conn = a
            .connect(&ConnectOptions::new(peer.url()).deflate(options))
            .unwrap();
        expect_connecting(&mut a, conn);
        let events = a.events_until_close(conn, T);
        expect_extension_refused(A::NAME, conn, &events, answer);
        // A retry would come within 20 ms.
        assert_quiet_for(
            &mut a,
            Duration::from_millis(200),
            &format!("after refusing {answer:?} (no retry)"),
        );
        assert_eq!(a.state(), ReadyState::Closed, "[{}] {answer:?}", A::NAME);
        let snap = peer.wait_for("the connection to end", T, |s| {
            s.connections.first().is_some_and(|c| c.ended)
        });
        assert_eq!(snap.accepted, 1, "[{}] {answer:?}: dialled again", A::NAME);
    }
}

fn an_extension_answered_without_an_offer_fails<A: Adapter>() {
    let peer = peer_answering("permessage-deflate");
    let mut a: A = client(config());
    let conn = a.connect(&ConnectOptions::new(peer.url())).unwrap();
    expect_connecting(&mut a, conn);
    let events = a.events_until_close(conn, T);
    let request = peer.snapshot().connections[0].request.clone().unwrap();
    assert!(
        !request.has_header("sec-websocket-extensions"),
        "[{}] nothing offered",
        A::NAME
    );
    expect_extension_refused(A::NAME, conn, &events, "permessage-deflate (not offered)");
    assert_quiet(&mut a);
    assert_eq!(peer.snapshot().accepted, 1);
}

// ----- the server breaking the extension's rules -----

fn rsv1_from_a_server_that_declined_is_1002<A: Adapter>() {
    // Offered, but the server did not accept: RSV1 means nothing here (RFC 6455 §5.2).
    misbehaving::<A>(
        None,
        vec![Step::Frame {
            fin: true,
            rsv: RSV1,
            opcode: opcode::TEXT,
            payload: deflate::compress(b"hello hello hello hello hello"),
        }],
        config(),
        TransportErrorKind::Protocol,
        1002,
    );
}

fn rsv1_on_a_control_frame_is_1002<A: Adapter>() {
    misbehaving::<A>(
        Some("permessage-deflate"),
        vec![Step::Frame {
            fin: true,
            rsv: RSV1,
            opcode: opcode::PING,
            payload: b"compressed?".to_vec(),
        }],
        config(),
        TransportErrorKind::Protocol,
        1002,
    );
}

fn rsv1_on_a_continuation_frame_is_1002<A: Adapter>() {
    let payload = deflate::compress(prose(40, 2000).as_bytes());
    let (first, second) = payload.split_at(payload.len() / 2);
    misbehaving::<A>(
        Some("permessage-deflate"),
        vec![
            Step::Frame {
                fin: false,
                rsv: RSV1,
                opcode: opcode::TEXT,
                payload: first.to_vec(),
            },
            Step::Frame {
                fin: true,
                rsv: RSV1,
                opcode: opcode::CONTINUATION,
                payload: second.to_vec(),
            },
        ],
        config(),
        TransportErrorKind::Protocol,
        1002,
    );
}

fn rsv2_with_deflate_agreed_is_1002<A: Adapter>() {
    misbehaving::<A>(
        Some("permessage-deflate"),
        vec![Step::Frame {
            fin: true,
            rsv: 0b010,
            opcode: opcode::TEXT,
            payload: b"rsv2".to_vec(),
        }],
        config(),
        TransportErrorKind::Protocol,
        1002,
    );
}

fn invalid_deflate_data_is_1002<A: Adapter>() {
    // 0xff: BFINAL set and the reserved block type 3.
    misbehaving::<A>(
        Some("permessage-deflate"),
        vec![Step::Frame {
            fin: true,
            rsv: RSV1,
            opcode: opcode::BINARY,
            payload: vec![0xff; 16],
        }],
        config(),
        TransportErrorKind::Protocol,
        1002,
    );
}

fn a_reference_before_the_stream_start_is_1002<A: Adapter>() {
    // A copy from 100 bytes before anything was inflated: the inflater must refuse it,
    // not read an uninitialised window.
    misbehaving::<A>(
        Some("permessage-deflate"),
        vec![Step::Frame {
            fin: true,
            rsv: RSV1,
            opcode: opcode::BINARY,
            payload: deflate::dangling_reference(),
        }],
        config(),
        TransportErrorKind::Protocol,
        1002,
    );
}

fn compressed_text_inflating_to_invalid_utf8_is_1007<A: Adapter>() {
    let mut bad = prose(41, 500).into_bytes();
    bad.extend_from_slice(&[0xff, 0xfe]);
    misbehaving::<A>(
        Some("permessage-deflate"),
        vec![Step::Frame {
            fin: true,
            rsv: RSV1,
            opcode: opcode::TEXT,
            payload: deflate::compress(&bad),
        }],
        config(),
        TransportErrorKind::InvalidUtf8,
        1007,
    );
}

// ----- limits -----

/// A bomb of 100 MiB of zeros (about 100 KiB on the wire) against a 1 MiB limit.
fn bomb<A: Adapter>(fragments: usize) {
    let zeros = 100 << 20;
    let wire = deflate::bomb(zeros).len();
    assert!(wire < 200 << 10, "the bomb is {wire} bytes on the wire");
    let started = Instant::now();
    misbehaving::<A>(
        Some("permessage-deflate"),
        vec![Step::Bomb { zeros, fragments }],
        config().max_message_size(1 << 20),
        TransportErrorKind::MessageTooBig,
        1009,
    );
    eprintln!(
        "[{}] bomb of {fragments} fragment(s): closed 1009 after {:?}",
        A::NAME,
        started.elapsed()
    );
}

fn decompression_bomb_is_1009_with_the_clients_close_frame<A: Adapter>() {
    bomb::<A>(1);
}

fn fragmented_decompression_bomb_is_1009<A: Adapter>() {
    bomb::<A>(64);
}

/// The events of `conn` until its close: messages, then an error of kind
/// `MessageTooBig` and close 1009 (not clean), and nothing else (send completions aside).
/// Returns the messages.
fn messages_then_1009<A: Adapter>(a: &mut A, conn: ConnId, what: &str) -> Vec<Message> {
    let events: Vec<Event> = a
        .events_until_close(conn, T)
        .into_iter()
        .filter(|e| !matches!(e, Event::SendCompleted { .. }))
        .collect();
    let described = || {
        events
            .iter()
            .map(|e| match e {
                Event::Message { message, .. } => describe(message),
                other => format!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    let [
        before @ ..,
        Event::Error {
            error: ConnectionError::Transport(e),
            ..
        },
        Event::Close {
            code: 1009,
            clean: false,
            ..
        },
    ] = events.as_slice()
    else {
        panic!(
            "[{}] ({what}) expected messages, then 1009; got {:#?}",
            A::NAME,
            described()
        );
    };
    assert_eq!(
        e.kind,
        TransportErrorKind::MessageTooBig,
        "[{}] ({what})",
        A::NAME
    );
    before
        .iter()
        .map(|e| match e {
            Event::Message { message, .. } => message.clone(),
            _ => panic!(
                "[{}] ({what}) expected messages, then 1009; got {:#?}",
                A::NAME,
                described()
            ),
        })
        .collect()
}

fn inflated_size_exactly_at_the_limit_is_accepted_one_more_byte_is_1009<A: Adapter>() {
    let limit = 64 << 10;
    let at_limit = Message::binary(prose(50, limit));
    let text_at_limit = Message::text(prose(51, limit));
    for later in [false, true] {
        let mut steps = Vec::new();
        if later {
            steps.push(Step::AwaitMessages(1));
        }
        steps.extend([
            Step::Message(at_limit.clone()),
            Step::Fragmented {
                message: text_at_limit.clone(),
                fragments: 4,
                ping: false,
            },
            Step::Message(Message::binary(prose(52, limit + 1))),
        ]);
        let peer = script("permessage-deflate", steps);
        let mut a: A = client(config().max_message_size(limit));
        let conn = open_with(&mut a, &offer(&peer), Some(DeflateParams::default()));
        if later {
            a.try_send(Message::text("go")).unwrap();
        }
        let got = messages_then_1009(
            &mut a,
            conn,
            &format!("script after the client's first message: {later}"),
        );
        assert!(
            got.len() == 2 && got[0] == at_limit && got[1] == text_at_limit,
            "[{}] expected the two messages at the limit; got {:?}",
            A::NAME,
            got.iter().map(describe).collect::<Vec<_>>()
        );
        let seen = peer.wait_conn(0, "the connection to end", T, |c| c.ended);
        assert_eq!(seen.closes.first().and_then(|c| c.code), Some(1009));
        assert_quiet(&mut a);
    }
}

fn a_message_arriving_with_a_failing_one_is_delivered_before_the_1009<A: Adapter>() {
    // Both in one write, so they reach the client in one read: the good message must not
    // be lost with the one that inflates past the limit after it.
    let limit = 8 << 10;
    let good = prose(55, limit);
    let frame = |text: &str| Step::Frame {
        fin: true,
        rsv: RSV1,
        opcode: opcode::TEXT,
        payload: deflate::compress(text.as_bytes()),
    };
    let peer = script(
        "permessage-deflate",
        vec![
            Step::AwaitMessages(1),
            Step::Together(vec![frame(&good), frame(&prose(56, limit + 1))]),
        ],
    );
    let mut a: A = client(config().max_message_size(limit));
    let conn = open_with(&mut a, &offer(&peer), Some(DeflateParams::default()));
    a.try_send(Message::text("go")).unwrap();
    let got = messages_then_1009(&mut a, conn, "both in one read");
    assert!(
        got == [Message::text(good)],
        "[{}] expected the good message alone before the 1009; got {:?}",
        A::NAME,
        got.iter().map(describe).collect::<Vec<_>>()
    );
    assert_quiet(&mut a);
}

fn client_message_exactly_at_the_limit_round_trips_compressed<A: Adapter>() {
    let limit = 64 << 10;
    let peer = peer_answering("permessage-deflate");
    let mut a: A = client(config().max_message_size(limit));
    let conn = open_with(&mut a, &offer(&peer), Some(DeflateParams::default()));
    let sent = [
        Message::binary(prose(53, limit)),
        Message::text(prose(54, limit)),
    ];
    exchange(&mut a, &peer, conn, &sent);
    let seen = received(&peer, 0, 2);
    assert_all_compressed(A::NAME, &seen.received, 15);
    close_cleanly(&mut a, conn, &peer, 0);
}

// ----- lifecycle with compression -----

fn close_handshakes_are_clean_after_compressed_traffic<A: Adapter>() {
    let peer = peer_answering("permessage-deflate");
    // Client-initiated, with a code and reason.
    let mut a: A = client(config());
    let conn = open_with(&mut a, &offer(&peer), Some(DeflateParams::default()));
    let sent: Vec<Message> = (0..10).map(similar).collect();
    exchange(&mut a, &peer, conn, &sent);
    a.close(Some(4000), "done compressing").unwrap();
    let events = a.events_until_close(conn, T);
    assert_eq!(
        events,
        [close_event(conn, 4000, "done compressing", true)],
        "[{}]",
        A::NAME
    );
    let seen = peer.wait_conn(0, "the end", T, |c| c.ended);
    assert_eq!(seen.error, None, "[{}]", A::NAME);
    assert_eq!(
        seen.closes,
        [CloseFrame {
            code: Some(4000),
            reason: "done compressing".into()
        }]
    );
    assert!(seen.client_went_away, "[{}]", A::NAME);

    // Server-initiated.
    let conn = open_with(&mut a, &offer(&peer), Some(DeflateParams::default()));
    exchange(&mut a, &peer, conn, &sent);
    assert_eq!(peer.close_all(4001, "server done"), 1);
    let events = a.events_until_close(conn, T);
    assert_eq!(
        events,
        [close_event(conn, 4001, "server done", true)],
        "[{}]",
        A::NAME
    );
    let seen = peer.wait_conn(1, "the end", T, |c| c.ended);
    assert_eq!(seen.error, None, "[{}]", A::NAME);
    assert_eq!(seen.closes.first().and_then(|c| c.code), Some(4001));
    assert_quiet(&mut a);
}

fn a_new_connection_starts_with_fresh_contexts<A: Adapter>() {
    // The same messages on a second connection: a client that kept the first connection's
    // context would refer to data the new server context never saw.
    let peer = peer_answering("permessage-deflate");
    let mut a: A = client(config());
    let sent: Vec<Message> = (0..15).map(similar).collect();
    let first = open_with(&mut a, &offer(&peer), Some(DeflateParams::default()));
    exchange(&mut a, &peer, first, &sent);
    // Replace the open connection without closing it first.
    let second = a.connect(&offer(&peer)).unwrap();
    let events = a.events_until("the second connection to open", T, |e| {
        e.iter()
            .any(|e| matches!(e, Event::Open { conn, .. } if *conn == second))
    });
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Close { conn, .. } if *conn == first)),
        "[{}] {events:#?}",
        A::NAME
    );
    exchange(&mut a, &peer, second, &sent);
    let seen = received(&peer, 1, sent.len());
    assert_all_compressed(A::NAME, &seen.received, 15);
    close_cleanly(&mut a, second, &peer, 1);
    assert_eq!(peer.snapshot().connections[0].error, None);
}

fn a_reconnection_negotiates_again_with_fresh_contexts<A: Adapter>() {
    let peer = peer_answering("permessage-deflate; server_max_window_bits=12");
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .seed(3);
    let mut a: A = client(config().reconnect(policy));
    let options = offer(&peer);
    let want = params(|p| p.server_max_window_bits = 12);
    let first = open_with(&mut a, &options, Some(want));
    let sent: Vec<Message> = (0..15).map(similar).collect();
    exchange(&mut a, &peer, first, &sent);
    assert_eq!(peer.close_all(1012, "restart"), 1);
    let events = a.events_until("the reconnection to open", T, |e| {
        e.iter().any(|e| matches!(e, Event::Open { .. }))
    });
    let (second, handshake) = match events.as_slice() {
        [
            Event::Close {
                conn: c,
                code: 1012,
                ..
            },
            Event::Reconnecting { conn: r, .. },
            Event::Connecting { conn: c2, .. },
            Event::Open {
                conn: o, handshake, ..
            },
        ] if *c == first && r == c2 && c2 == o => (*o, handshake.clone()),
        _ => panic!("[{}] {events:#?}", A::NAME),
    };
    assert_eq!(handshake.deflate, Some(want), "[{}]", A::NAME);
    exchange(&mut a, &peer, second, &sent);
    let seen = received(&peer, 1, sent.len());
    assert_all_compressed(A::NAME, &seen.received, 15);
    close_cleanly(&mut a, second, &peer, 1);
}

fn compressed_echo_over_wss<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo)
        .tls(Tls::Trusted)
        .deflate_answer("permessage-deflate; server_no_context_takeover")
        .start();
    let mut a: A = A::new(config(), TlsRoots::only(vec![peer.ca_cert().unwrap()])).unwrap();
    let want = params(|p| p.server_no_context_takeover = true);
    let conn = open_with(&mut a, &offer(&peer), Some(want));
    let sent: Vec<Message> = (0..20).map(similar).collect();
    exchange(&mut a, &peer, conn, &sent);
    let seen = received(&peer, 0, sent.len());
    assert_all_compressed(A::NAME, &seen.received, 15);
    close_cleanly(&mut a, conn, &peer, 0);
}

/// `level` reaches the compressor: level 0 stores (RSV1 set, no smaller), level 1 and 9
/// compress, 9 at least as well as 1; every message arrives intact.
fn the_compression_level_is_honoured<A: Adapter>() {
    let text: String = (0..400)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"user\":\"user{}\",\"ok\":{}}}",
                i % 13,
                i % 3 == 0
            )
        })
        .collect();
    let mut sizes = Vec::new();
    for level in [0, 1, 9] {
        let peer = peer_answering("permessage-deflate");
        let mut a: A = client(config());
        let options = ConnectOptions::new(peer.url()).deflate(
            DeflateOptions::default()
                .client_no_context_takeover(true)
                .level(level),
        );
        let conn = open_with(
            &mut a,
            &options,
            Some(DeflateParams {
                client_no_context_takeover: true,
                ..DeflateParams::default()
            }),
        );
        let sent = vec![Message::text(text.clone())];
        exchange(&mut a, &peer, conn, &sent);
        let seen = received(&peer, 0, 1);
        let r = &seen.received[0];
        assert!(r.compressed, "[{}] level {level}: RSV1 set", A::NAME);
        sizes.push(r.wire_size);
        close_cleanly(&mut a, conn, &peer, 0);
    }
    assert!(
        sizes[0] >= text.len(),
        "[{}] level 0 stores: {sizes:?}",
        A::NAME
    );
    assert!(
        sizes[1] < text.len() / 3 && sizes[2] <= sizes[1],
        "[{}] levels 1 and 9 compress, 9 no worse: {sizes:?}",
        A::NAME
    );
}
