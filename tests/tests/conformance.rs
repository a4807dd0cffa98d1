//! The cross-adapter conformance suite: every scenario of the session model is written once, as a
//! function generic over [`Adapter`], and the `conformance!` macro instantiates it for the
//! tokio adapter (`on_tokio::…`) and the blocking adapter (`on_blocking::…`).
//!
//! Scenarios that need nothing beyond a minimal driver's calls live in the published test
//! kit (`wxsocket-testkit`), which `kit.rs` runs on both adapters: keepalive against a silent
//! peer and close before open under `Abort` moved there from here.
//!
//! Every wait is bounded (events by [`EVENT_TIMEOUT`] or a scenario's own limit, the test
//! peer by [`Peer::wait_for`]'s timeout); nothing sleeps to wait for something. Timeouts in
//! the configurations are short (a few hundred milliseconds) so the suite stays fast.

use std::time::{Duration, Instant};
use wxsocket_core::close::CLOSE_LINGER;
use wxsocket_core::{
    CloseBeforeOpen, CloseError, ConnectError, ConnectOptions, ConnectionError, DeflateOptions,
    DialStage, Event, FailedSend, Message, REPLACED_REASON, ReadyState, ReconnectPolicy, SendError,
    SendFailure, SendId, SessionConfig, TransportError, TransportErrorKind,
};
use wxsocket_tests::adapter::{Adapter, EVENT_TIMEOUT, PoolAdapter, SendFailed, Task};
use wxsocket_tests::flood::{Flood, FloodServer};
use wxsocket_tests::peer::{CloseFrame, Mode, Peer, Snapshot, Step, Tls, Violation, opcode};
use wxsocket_tests::scenario::{
    assert_quiet, client, close_cleanly, close_event, completions, expect_connecting,
    expect_error_then_close, messages, open, raw_peer, slow_reader,
};
use wxsocket_wire::tls::TlsRoots;

/// How long a scenario waits for the test peer to see something.
const T: Duration = EVENT_TIMEOUT;
/// A short timeout for scenarios about timeouts.
const SHORT: Duration = Duration::from_millis(300);
/// How late a `SHORT` timer may fire on a loaded machine: generous, and still far below the
/// defaults (handshake 60 s, close 10 s) that a timer ignoring its option would use.
const LATE: Duration = Duration::from_secs(5);

wxsocket_tests::on_both_adapters!(
    tcp_nodelay_is_set_when_asked,
    open_and_echo_text_and_binary,
    frames_read_with_the_handshake_response_come_first,
    queued_before_open_are_flushed_in_order_first,
    queued_before_open_go_out_before_a_close_that_came_with_the_response,
    a_slow_upload_is_not_a_dead_peer,
    a_slow_upload_over_tls_is_not_a_dead_peer,
    a_slow_upload_the_socket_could_hold_is_not_a_dead_peer,
    every_send_completes_exactly_once,
    send_wait_reports_failure_of_queued_sends,
    custom_headers_and_query_reach_the_server,
    credentials_in_the_url_are_sent_as_basic_auth_and_never_shown,
    forbidden_headers_and_bad_options_are_rejected_before_any_io,
    subprotocol_is_negotiated_and_reported,
    server_selecting_no_subprotocol_opens_with_none,
    server_selecting_an_unoffered_subprotocol_fails,
    http_403_is_an_error_naming_the_status,
    handshake_timeout_against_a_stalling_server,
    a_handshake_timeout_says_where_the_dial_stood,
    close_timeout_against_a_server_that_never_answers,
    keepalive_answered_keeps_the_connection_open,
    a_ping_is_answered_while_the_application_takes_no_events,
    a_ping_is_answered_while_the_application_works_through_a_backlog,
    a_ping_behind_more_than_a_read_pass_is_answered_while_the_application_takes_no_events,
    a_close_during_a_flood_completes_its_handshake,
    keepalive_counts_part_of_a_message_as_a_sign_of_life,
    keepalive_counts_part_of_a_tls_record_as_a_sign_of_life,
    delivers_what_came_before_a_tls_record_that_does_not_decrypt,
    replacement_while_connecting,
    replacement_while_open,
    close_before_open_after_open,
    close_before_open_ignore,
    client_close_with_code_and_reason,
    server_close_with_code_and_reason,
    abrupt_disconnect_is_1006,
    invalid_utf8_is_1007,
    invalid_utf8_fails_before_the_rest_of_its_frame_arrives,
    oversized_message_is_1009,
    a_close_frame_before_a_reset_says_why_the_write_failed,
    our_close_behind_a_message_and_the_peers_close_and_reset_is_unclean,
    a_close_frame_and_fin_during_an_upload_let_it_finish_and_are_answered,
    a_peers_close_during_an_upload_longer_than_the_linger_is_answered_behind_it,
    a_peers_close_whose_answer_never_goes_out_is_unclean,
    the_smallest_message_limit_still_lets_close_frames_through,
    reserved_opcode_is_1002,
    reserved_bits_are_1002,
    masked_server_frame_is_1002,
    a_frame_length_with_its_top_bit_set_is_1002,
    wss_with_a_generated_ca,
    wss_carries_more_than_the_sockets_hold,
    wss_ends_with_close_notify,
    wss_with_an_unknown_ca_is_a_clear_tls_error,
    the_wrong_scheme_either_way_is_named,
    invalid_close_code_or_reason_changes_nothing,
    send_before_connect_hands_the_message_back,
    queue_full_and_too_large_hand_the_message_back,
    a_message_larger_than_the_send_buffer_is_sent_alone,
    sends_in_flight_count_toward_the_completion_bound,
    dropping_the_handle_closes_cleanly,
    close_code_1014_is_reported_and_retried_when_configured,
    sends_during_a_close_the_policy_retries_go_to_the_next_connection,
    a_repeated_sec_websocket_accept_fails_the_connection,
    interim_answers_and_folded_headers_open_and_http_1_0_does_not,
    both_close_frames_exchanged_is_clean_when_the_server_keeps_tcp_open,
    a_close_the_server_began_is_clean_when_it_keeps_tcp_open,
    a_frame_after_the_servers_close_frame_still_ends_the_connection,
    invalid_peer_close_codes_are_protocol_failures,
);

// ----- helpers -----

fn config() -> SessionConfig {
    SessionConfig::default()
        .handshake_timeout(Duration::from_secs(3))
        .close_timeout(Duration::from_secs(1))
}

fn transport_error(name: &str, error: &ConnectionError) -> TransportError {
    match error {
        ConnectionError::Transport(e) | ConnectionError::ConnectFailed(e) => e.clone(),
        other => panic!("[{name}] expected a transport error, got {other:?}"),
    }
}

fn conn_ended(s: &Snapshot, index: usize) -> bool {
    s.connections.get(index).is_some_and(|c| c.ended)
}

// ----- §3 lifecycle: open, send, message, close -----

fn open_and_echo_text_and_binary<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config());
    assert_eq!(a.state(), ReadyState::Idle);
    assert_eq!(a.current(), None);
    let (conn, handshake) = open(&mut a, &ConnectOptions::new(peer.url()));
    assert_eq!(handshake.protocol, None);
    assert_eq!(
        handshake.headers.get("x-test-peer").map(|v| v.as_bytes()),
        Some(&b"wxsocket"[..]),
        "[{}] response headers are reported on open",
        A::NAME
    );
    assert_eq!(a.state(), ReadyState::Open);
    assert_eq!(a.current(), Some(conn));

    let text = Message::text("hello 你好");
    let binary = Message::binary(vec![0u8, 1, 2, 255]);
    let t = a.try_send(text.clone()).unwrap();
    let b = a.try_send(binary.clone()).unwrap();
    let events = a.events_until("two echoes and two completions", T, |e| e.len() >= 4);
    assert!(
        events.iter().all(|e| e.conn() == conn),
        "[{}] {events:#?}",
        A::NAME
    );
    assert_eq!(
        messages(&events),
        [text.clone(), binary.clone()],
        "[{}] {events:#?}",
        A::NAME
    );
    assert_eq!(completions(&events), [t, b], "[{}] {events:#?}", A::NAME);
    assert_eq!(a.buffered_amount(), 0);

    a.close(None, "").unwrap();
    // Closing at once; over loopback the close handshake may even be over already.
    assert!(
        matches!(a.state(), ReadyState::Closing | ReadyState::Closed),
        "[{}] {:?}",
        A::NAME,
        a.state()
    );
    let events = a.events_until_close(conn, T);
    assert_eq!(events, [close_event(conn, 1000, "", true)], "[{}]", A::NAME);
    assert_eq!(a.state(), ReadyState::Closed);
    assert_eq!(a.current(), None);
    let seen = peer.wait_conn(0, "the connection to end", T, |c| c.ended);
    assert_eq!(seen.messages, [text, binary]);
    assert_eq!(
        seen.closes,
        [CloseFrame {
            code: Some(1000),
            reason: String::new()
        }]
    );
    assert_quiet(&mut a);
}

/// Frames that reach the client in the same read as the 101 response (the bytes read past
/// the response head) are the connection's first messages, and everything after them is
/// read as usual: messages of every size, in order.
fn frames_read_with_the_handshake_response_come_first<A: Adapter>() {
    let later: Vec<Message> = (0..200usize)
        .map(|i| match i % 3 {
            0 => Message::text(format!("later {i}")),
            1 => Message::binary(vec![i as u8; 1 + i * 97]),
            _ => Message::binary(vec![7; 16 * 1024 + i]),
        })
        .collect();
    let mut script = vec![Step::WithResponse(vec![
        Step::frame(opcode::TEXT, b"first"),
        Step::frame(opcode::BINARY, [1, 2, 3]),
        Step::frame(opcode::TEXT, b"third"),
    ])];
    script.extend(later.iter().cloned().map(Step::Message));
    let peer = Peer::start(Mode::Script(script));
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    let mut expected = vec![
        Message::text("first"),
        Message::binary(vec![1, 2, 3]),
        Message::text("third"),
    ];
    expected.extend(later);
    let events = a.events_until("every scripted message", T, |e| {
        messages(e).len() >= expected.len()
    });
    assert!(events.iter().all(|e| e.conn() == conn), "[{}]", A::NAME);
    assert_eq!(messages(&events), expected, "[{}]", A::NAME);
    assert_eq!(peer.snapshot().connections[0].write_error, None);
    assert_quiet(&mut a);
}

/// A server that closes as soon as it has answered the upgrade (its close frame in the
/// same write as the 101 response): the messages queued before open are flushed on open,
/// before the close is read, and complete, as they do when the close comes later. (Blocking
/// read the close first and failed them as lost in half of a prober's runs, though the
/// close was clean; tokio completed them.)
fn queued_before_open_go_out_before_a_close_that_came_with_the_response<A: Adapter>() {
    // A close the client accepts, and one with a code the peer may not send (a protocol
    // failure: the messages already written still complete; a reviewer found blocking
    // failing them).
    for (code, last) in [(4000u16, (4000, "bye", true)), (1004, (1002, "", false))] {
        let close = Step::Frame {
            fin: true,
            rsv: 0,
            opcode: opcode::CLOSE,
            payload: [&code.to_be_bytes()[..], b"bye"].concat(),
        };
        // The peer takes the two messages without echoing them (data after its close
        // frame would break the protocol).
        let script = vec![Step::WithResponse(vec![close]), Step::AwaitMessages(2)];
        let peer = Peer::builder(Mode::Script(script)).hold_handshake().start();
        let mut a: A = client(config());
        let conn = a.connect(&ConnectOptions::new(peer.url())).unwrap();
        expect_connecting(&mut a, conn);
        peer.wait_conn(0, "the upgrade request", T, |c| c.request.is_some());
        let ids: Vec<SendId> = ["q1", "q2"]
            .iter()
            .map(|m| a.try_send(Message::text(*m)).unwrap())
            .collect();
        peer.release_handshakes();
        let events = a.events_until_close(conn, T);
        assert!(
            matches!(events.first(), Some(Event::Open { .. })),
            "[{}] {code}: {events:#?}",
            A::NAME
        );
        assert_eq!(
            completions(&events),
            ids,
            "[{}] {code}: {events:#?}",
            A::NAME
        );
        let (close_code, reason, clean) = last;
        match events.last() {
            Some(Event::Close {
                code: c,
                reason: r,
                clean: k,
                ..
            }) if *c == close_code && (reason.is_empty() || r == reason) && *k == clean => {}
            other => panic!("[{}] {code}: {other:#?}", A::NAME),
        }
        peer.wait_conn(0, "the queued messages", T, |c| c.messages.len() == 2);
    }
}

/// A message going out over a slow uplink for longer than keepalive's interval and timeout,
/// and the acknowledgement timeout, allow: keepalive's and the barrier's pings wait behind
/// it, so the connection is not taken for dead while the socket keeps taking it (it was cut
/// at interval + timeout, and with acknowledgement resent for ever). Delivered once,
/// acknowledged. (A message the socket buffers take whole goes out of the driver's sight:
/// the timeouts must cover its way out; see `Keepalive`.)
fn a_slow_upload_is_not_a_dead_peer<A: Adapter>() {
    slow_upload::<A>(None);
}

/// The same over `wss://`: what the socket takes is ciphertext, which the TLS stream
/// reports as progress like plain bytes.
fn a_slow_upload_over_tls_is_not_a_dead_peer<A: Adapter>() {
    slow_upload::<A>(Some(&wxsocket_test_pki::TestCa::generate("slow upload")));
}

/// A message the socket's send buffer could take whole (3 MiB; Linux grows it to 4 MiB)
/// going out at 1 MiB/s under 1 s timers: the client keeps what the socket has not sent
/// yet small (`TCP_NOTSENT_LOWAT`, Linux), so the rest waits where the driver sees it
/// leave. It was out of sight in the kernel, and keepalive ended the connection (a
/// prober's 6 MB to a 200 KB/s peer: "peer considered dead", the peer alive and reading).
fn a_slow_upload_the_socket_could_hold_is_not_a_dead_peer<A: Adapter>() {
    slow_upload_of::<A>(3 << 20, 1 << 20, None);
}

fn slow_upload<A: Adapter>(tls: Option<&wxsocket_test_pki::TestCa>) {
    // Larger than the socket buffers hold (a few MiB each side on Linux): most of it waits
    // in the client, where the driver sees it go out.
    slow_upload_of::<A>(48 << 20, 16 << 20, tls);
}

/// One slow upload at a time in this process: each keeps about a core busy for seconds in a
/// debug build (masking, and encrypting over TLS, 48 MiB) and must end within [`T`]. With two
/// tests per core running, four at once on CI's two cores took longer than that (three of
/// them timed out, 2026-12-07).
static ONE_UPLOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A message of `len` bytes to a peer reading `rate` bytes a second, under 1 s keepalive
/// and acknowledgement timeouts: delivered once, acknowledged, the connection open.
fn slow_upload_of<A: Adapter>(len: usize, rate: usize, tls: Option<&wxsocket_test_pki::TestCa>) {
    const LIVE: Duration = Duration::from_secs(1);
    let _alone = ONE_UPLOAD.lock().unwrap_or_else(|e| e.into_inner());
    let (url, lengths) = slow_reader(rate, tls);
    let session = config()
        .keepalive(LIVE, LIVE)
        .acknowledge(wxsocket_core::Acknowledgement::new().timeout(LIVE))
        .max_message_size(len);
    let roots = match tls {
        Some(ca) => TlsRoots::only(vec![ca.ca_der.clone()]),
        None => TlsRoots::default(),
    };
    let mut a: A = A::new(session, roots).unwrap();
    open(&mut a, &ConnectOptions::new(url));
    let started = Instant::now();
    let id = a.try_send(Message::binary(vec![7; len])).unwrap();
    let events = a.events_until("the message acknowledged", T, |e| {
        e.iter().any(|e| {
            matches!(
                e,
                Event::SendDelivered { .. } | Event::Error { .. } | Event::Close { .. }
            )
        })
    });
    let took = started.elapsed();
    assert!(
        matches!(events.last(), Some(Event::SendDelivered { id: d, duplicate: false, .. }) if *d == id),
        "[{}] after {took:?}: {events:#?}",
        A::NAME
    );
    assert!(
        took > 2 * LIVE,
        "[{}] the upload took only {took:?}",
        A::NAME
    );
    assert_eq!(lengths.recv_timeout(T), Ok(len), "[{}]", A::NAME);
    assert_eq!(a.state(), ReadyState::Open, "[{}]", A::NAME);
}

fn queued_before_open_are_flushed_in_order_first<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo).hold_handshake().start();
    let mut a: A = client(config());
    let conn = a.connect(&ConnectOptions::new(peer.url())).unwrap();
    expect_connecting(&mut a, conn);
    peer.wait_conn(0, "the upgrade request", T, |c| c.request.is_some());
    assert_eq!(a.state(), ReadyState::Connecting);
    let queued = ["q1", "q2-longer", "q3"];
    let ids: Vec<SendId> = queued
        .iter()
        .map(|m| a.try_send(Message::text(*m)).unwrap())
        .collect();
    assert_eq!(
        a.buffered_amount(),
        2 + 9 + 2,
        "[{}] queued bytes count as buffered",
        A::NAME
    );
    assert_eq!(peer.snapshot().connections[0].messages, []);

    peer.release_handshakes();
    match a.expect_event("Open") {
        Event::Open { conn: c, .. } if c == conn => {}
        other => panic!("[{}] expected Open, got {other:#?}", A::NAME),
    }
    let later = a.try_send(Message::text("after open")).unwrap();
    let events = a.events_until("4 completions and 4 echoes", T, |e| e.len() >= 8);
    let mut expected_ids = ids.clone();
    expected_ids.push(later);
    assert_eq!(
        completions(&events),
        expected_ids,
        "[{}] {events:#?}",
        A::NAME
    );
    let expected: Vec<Message> = ["q1", "q2-longer", "q3", "after open"]
        .into_iter()
        .map(Message::text)
        .collect();
    assert_eq!(messages(&events), expected, "[{}] echoes in order", A::NAME);
    let seen = peer.wait_conn(0, "4 messages", T, |c| c.messages.len() == 4);
    assert_eq!(
        seen.messages,
        expected,
        "[{}] the server got the queue first, in order",
        A::NAME
    );
    assert_eq!(a.buffered_amount(), 0);
}

fn every_send_completes_exactly_once<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    let mut ids = Vec::new();
    for i in 0..40 {
        let m = if i % 2 == 0 {
            Message::text(format!("m{i}"))
        } else {
            Message::binary(vec![i as u8; i])
        };
        if i == 20 {
            let id = a
                .send(m)
                .unwrap_or_else(|e| panic!("[{}] send failed: {e:?}", A::NAME));
            ids.push(id);
        } else {
            ids.push(a.try_send(m).unwrap());
        }
    }
    a.close(Some(3001), "enough").unwrap();
    let events = a.events_until_close(conn, T);
    let mut outcomes: Vec<SendId> = Vec::new();
    for e in &events {
        match e {
            Event::SendCompleted { id, .. } | Event::SendFailed { id, .. } => outcomes.push(*id),
            Event::Message { .. } | Event::Close { .. } => {}
            other => panic!("[{}] unexpected event {other:#?}", A::NAME),
        }
    }
    let mut sorted = outcomes.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        outcomes.len(),
        "[{}] a send completed twice: {outcomes:?}",
        A::NAME
    );
    let mut want = ids.clone();
    want.sort();
    assert_eq!(
        sorted,
        want,
        "[{}] every send completes exactly once",
        A::NAME
    );
    assert_eq!(
        completions(&events),
        ids,
        "[{}] all 40 were written (the close comes after them), in order",
        A::NAME
    );
    assert!(
        matches!(
            events.last(),
            Some(Event::Close {
                code: 3001,
                clean: true,
                ..
            })
        ),
        "[{}] {events:#?}",
        A::NAME
    );
    assert_quiet(&mut a);
    let seen = peer.wait_conn(0, "the close frame", T, |c| !c.closes.is_empty());
    assert_eq!(seen.messages.len(), 40);
}

fn send_wait_reports_failure_of_queued_sends<A: Adapter>() {
    let peer = Peer::start(Mode::StallHandshake);
    let mut a: A = client(config());
    let conn = a
        .connect(&ConnectOptions::new(peer.url()).timeout(SHORT))
        .unwrap();
    let q1 = a.try_send(Message::text("q1")).unwrap();
    let q2 = a.try_send(Message::binary(vec![2])).unwrap();
    let started = Instant::now();
    let waited = a.send(Message::text("q3"));
    // It fails, and the message comes back to whoever waited (it never left the queue),
    // with the id its `SendFailed` event has (checked below).
    let q3 = match &waited {
        Err(SendFailed::Failed(failed)) => failed.id.expect("the failed send's id"),
        other => panic!("[{}] expected a failure, got {other:?}", A::NAME),
    };
    let failed = FailedSend::new(SendFailure::ConnectFailed, Some(Message::text("q3")));
    assert_eq!(
        waited,
        Err(SendFailed::Failed(failed.with_id(q3))),
        "[{}] a waiting send of a connection that never opens fails",
        A::NAME
    );
    assert!(started.elapsed() < SHORT + LATE);
    let events = a.events_until_close(conn, T);
    match events.as_slice() {
        [
            Event::Connecting { .. },
            Event::Error {
                error: ConnectionError::HandshakeTimeout { .. },
                ..
            },
            Event::SendFailed {
                id: i1,
                reason: SendFailure::ConnectFailed,
                message: m1,
                ..
            },
            Event::SendFailed {
                id: i2,
                reason: SendFailure::ConnectFailed,
                message: m2,
                ..
            },
            Event::SendFailed {
                id: i3,
                reason: SendFailure::ConnectFailed,
                message: m3,
                ..
            },
            Event::Close {
                code: 1006,
                clean: false,
                ..
            },
        ] if *i1 == q1 && *i2 == q2 && *i3 == q3 => {
            assert_eq!(
                m1,
                &Some(Message::text("q1")),
                "[{}] a queued message is handed back",
                A::NAME
            );
            assert_eq!(m2, &Some(Message::binary(vec![2])));
            assert_eq!(m3, &Some(Message::text("q3")));
        }
        _ => panic!("[{}] unexpected events {events:#?}", A::NAME),
    }
    assert_quiet(&mut a);
}

// ----- §4 connect options -----

fn custom_headers_and_query_reach_the_server<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config());
    let options = ConnectOptions::new(format!("{}chat", peer.url()))
        .header("X-Token", "abc 123")
        .header("Content-Type", "application/json")
        .data("room", "lobby 1");
    let (conn, _) = open(&mut a, &options);
    let seen = peer.wait_conn(0, "the request", T, |c| c.request.is_some());
    let request = seen.request.unwrap();
    assert_eq!(request.method, "GET");
    assert_eq!(request.target, "/chat?room=lobby+1");
    assert_eq!(
        request.header("x-token"),
        Some("abc 123"),
        "[{}] {request:#?}",
        A::NAME
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert!(!request.has_header("referer"));
    assert!(!request.has_header("sec-websocket-protocol"));
    a.close(None, "").unwrap();
    a.events_until_close(conn, T);
}

/// `ws://user:p%40ss@host/` sends `Authorization: Basic` (RFC 7617) and the password
/// appears in no event: the dialled URL has no credentials. They used to be neither sent nor
/// hidden: the server saw no `Authorization`, and the `Connecting` event showed the password.
fn credentials_in_the_url_are_sent_as_basic_auth_and_never_shown<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config());
    let url = peer.url().replacen("ws://", "ws://user:p%40ss@", 1);
    let conn = a.connect(&ConnectOptions::new(&url)).unwrap();
    match a.expect_event("Connecting") {
        Event::Connecting { url: dialled, .. } => {
            assert_eq!(dialled.as_str(), peer.url(), "[{}]", A::NAME);
        }
        other => panic!("[{}] expected Connecting, got {other:#?}", A::NAME),
    }
    let seen = peer.wait_conn(0, "the request", T, |c| c.request.is_some());
    let request = seen.request.unwrap();
    assert_eq!(
        request.header("authorization"),
        Some("Basic dXNlcjpwQHNz"),
        "[{}] {request:#?}",
        A::NAME
    );
    let events = a.events_until("open", T, |e| {
        e.iter().any(|e| matches!(e, Event::Open { .. }))
    });
    assert!(!format!("{events:?}").contains("p%40ss"), "[{}]", A::NAME);
    a.close(None, "").unwrap();
    a.events_until_close(conn, T);
}

fn forbidden_headers_and_bad_options_are_rejected_before_any_io<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let a: A = client(config());
    let base = || ConnectOptions::new(peer.url());
    for name in [
        "Referer",
        "referer",
        "Host",
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Protocol",
    ] {
        match a.connect(&base().header(name, "x")) {
            Err(ConnectError::ForbiddenHeader { name: n, .. }) => assert_eq!(n, name),
            other => panic!(
                "[{}] header {name}: expected ForbiddenHeader, got {other:?}",
                A::NAME
            ),
        }
    }
    assert!(matches!(
        a.connect(&base().header("X-Bad", "a\r\nInjected: 1")),
        Err(ConnectError::InvalidHeaderValue { .. })
    ));
    assert!(matches!(
        a.connect(&base().method("POST")),
        Err(ConnectError::UnsupportedMethod { .. })
    ));
    assert!(matches!(
        a.connect(&base().protocol("a").protocol("a")),
        Err(ConnectError::DuplicateProtocol { .. })
    ));
    assert!(matches!(
        a.connect(&ConnectOptions::new("ftp://127.0.0.1/")),
        Err(ConnectError::UnsupportedScheme { .. })
    ));
    assert!(matches!(
        a.connect(&base().timeout(Duration::ZERO)),
        Err(ConnectError::InvalidTimeout)
    ));
    assert!(matches!(
        a.connect(&base().deflate(DeflateOptions::default().server_max_window_bits(Some(7)))),
        Err(ConnectError::InvalidDeflate {
            field: "server_max_window_bits",
            value: 7,
            ..
        })
    ));
    assert!(matches!(
        a.connect(&base().require_tls(true)),
        Err(ConnectError::TlsRequired { .. })
    ));
    assert!(matches!(
        a.connect(&base().allow_host("example.com")),
        Err(ConnectError::HostNotAllowed { .. })
    ));
    assert_eq!(a.state(), ReadyState::Idle);
    assert_eq!(a.current(), None);

    // Prove nothing was dialled: one valid connection afterwards is the first and only one
    // the server accepts.
    let mut a = a;
    let (conn, _) = open(&mut a, &base().allow_host("127.0.0.1"));
    let snapshot = peer.snapshot();
    assert_eq!(
        snapshot.accepted,
        1,
        "[{}] rejected connects must not open a TCP connection: {snapshot:#?}",
        A::NAME
    );
    assert_eq!(
        conn.get(),
        1,
        "[{}] rejected connects use no connection id",
        A::NAME
    );
}

fn subprotocol_is_negotiated_and_reported<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config());
    let (conn, handshake) = open(
        &mut a,
        &ConnectOptions::new(peer.url())
            .protocol("chat.v2")
            .protocol("chat.v1"),
    );
    assert_eq!(
        handshake.protocol.as_deref(),
        Some("chat.v2"),
        "[{}]",
        A::NAME
    );
    let seen = peer.wait_conn(0, "the request", T, |c| c.request.is_some());
    assert_eq!(seen.request.unwrap().protocols, ["chat.v2", "chat.v1"]);
    a.close(None, "").unwrap();
    a.events_until_close(conn, T);
}

fn server_selecting_no_subprotocol_opens_with_none<A: Adapter>() {
    let peer = Peer::start(Mode::SelectNone);
    let mut a: A = client(config());
    let (_, handshake) = open(&mut a, &ConnectOptions::new(peer.url()).protocol("chat"));
    assert_eq!(handshake.protocol, None, "[{}]", A::NAME);
    assert_eq!(a.state(), ReadyState::Open);
}

fn server_selecting_an_unoffered_subprotocol_fails<A: Adapter>() {
    let peer = Peer::start(Mode::SelectProtocol("evil".into()));
    let mut a: A = client(config());
    let conn = a
        .connect(&ConnectOptions::new(peer.url()).protocol("chat"))
        .unwrap();
    expect_connecting(&mut a, conn);
    let events = a.events_until_close(conn, T);
    let error = expect_error_then_close(A::NAME, conn, &events, 1006);
    assert_eq!(
        error,
        ConnectionError::ProtocolNotOffered("evil".into()),
        "[{}]",
        A::NAME
    );
    assert_eq!(a.state(), ReadyState::Closed);
    peer.wait_for("the client to drop the connection", T, |s| conn_ended(s, 0));
    assert_quiet(&mut a);
}

fn http_403_is_an_error_naming_the_status<A: Adapter>() {
    let peer = Peer::start(Mode::HttpStatus(403));
    let mut a: A = client(config());
    let conn = a.connect(&ConnectOptions::new(peer.url())).unwrap();
    expect_connecting(&mut a, conn);
    let events = a.events_until_close(conn, T);
    let error = expect_error_then_close(A::NAME, conn, &events, 1006);
    let ConnectionError::ConnectFailed(e) = &error else {
        panic!("[{}] expected ConnectFailed, got {error:?}", A::NAME)
    };
    assert_eq!(
        e.kind,
        TransportErrorKind::HttpStatus(403),
        "[{}] {e:?}",
        A::NAME
    );
    assert!(
        error.to_string().contains("403"),
        "[{}] the error names the status: {error}",
        A::NAME
    );
    assert_quiet(&mut a);
}

// ----- §3 timeouts and liveness -----

fn handshake_timeout_against_a_stalling_server<A: Adapter>() {
    let peer = Peer::start(Mode::StallHandshake);
    let mut a: A = client(config());
    let started = Instant::now();
    let conn = a
        .connect(&ConnectOptions::new(peer.url()).timeout(SHORT))
        .unwrap();
    expect_connecting(&mut a, conn);
    let events = a.events_until_close(conn, T);
    let elapsed = started.elapsed();
    let error = expect_error_then_close(A::NAME, conn, &events, 1006);
    // The server took the connection and never answered the upgrade: the error says so.
    assert!(
        matches!(
            error,
            ConnectionError::HandshakeTimeout {
                after: SHORT,
                stage: Some(DialStage::Upgrade),
                ..
            }
        ),
        "[{}] {error}",
        A::NAME
    );
    assert!(
        elapsed >= SHORT,
        "[{}] timed out early, after {elapsed:?}",
        A::NAME
    );
    // Late only by far more than a loaded machine is: the default timeout (60 s) was used.
    assert!(
        elapsed < SHORT + LATE,
        "[{}] timed out late, after {elapsed:?}",
        A::NAME
    );
    assert_eq!(a.state(), ReadyState::Closed);
    let seen = peer.wait_conn(0, "the client to cancel the dial", T, |c| c.ended);
    assert!(
        seen.client_went_away && !seen.upgraded,
        "[{}] {seen:#?}",
        A::NAME
    );
}

/// The stages a real dial reports (the stalled upgrade above; the proxy's tunnel in
/// `proxy.rs`): a dial whose TCP connect is never answered, and a `wss://` dial to a server
/// that takes the connection and never answers TLS.
fn a_handshake_timeout_says_where_the_dial_stood<A: Adapter>() {
    let hole = wxsocket_test_server::Blackhole::start().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cases = [
        (format!("ws://{}/", hole.addr()), DialStage::Connecting),
        (
            format!("wss://{}/", silent.local_addr().unwrap()),
            DialStage::Tls,
        ),
    ];
    for (url, stage) in cases {
        let mut a: A = client(config());
        let conn = a
            .connect(&ConnectOptions::new(&url).timeout(SHORT))
            .unwrap();
        expect_connecting(&mut a, conn);
        let events = a.events_until_close(conn, T);
        let error = expect_error_then_close(A::NAME, conn, &events, 1006);
        assert!(
            matches!(
                error,
                ConnectionError::HandshakeTimeout { after: SHORT, stage: Some(s), .. } if s == stage
            ),
            "[{}] {url}: {error}",
            A::NAME
        );
        assert!(
            error.to_string().ends_with(&format!(": {stage}")),
            "[{}] {error}",
            A::NAME
        );
    }
}

fn close_timeout_against_a_server_that_never_answers<A: Adapter>() {
    let peer = Peer::start(Mode::IgnoreClose);
    let mut a: A = client(config().close_timeout(SHORT));
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    let started = Instant::now();
    a.close(Some(4000), "bye").unwrap();
    assert_eq!(a.state(), ReadyState::Closing);
    assert!(
        matches!(a.try_send(Message::text("late")), Err(SendError::Closing(m)) if m == Message::text("late"))
    );
    assert_eq!(
        a.close(None, ""),
        Ok(()),
        "[{}] close while closing is a no-op",
        A::NAME
    );
    let events = a.events_until_close(conn, T);
    let elapsed = started.elapsed();
    let error = expect_error_then_close(A::NAME, conn, &events, 1006);
    assert_eq!(error, ConnectionError::CloseTimeout(SHORT), "[{}]", A::NAME);
    assert!(
        elapsed >= SHORT && elapsed < SHORT + LATE,
        "[{}] {elapsed:?}",
        A::NAME
    );
    let seen = peer.wait_conn(0, "the client to abort", T, |c| c.ended);
    assert_eq!(
        seen.closes,
        [CloseFrame {
            code: Some(4000),
            reason: "bye".into()
        }]
    );
    assert!(
        seen.client_went_away,
        "[{}] the client drops the transport after the close timeout",
        A::NAME
    );
    assert_quiet(&mut a);
}

/// The peer's ping of the scenarios below, `still there?`.
fn ping_still_there() -> Step {
    Step::Frame {
        fin: true,
        rsv: 0,
        opcode: opcode::PING,
        payload: b"still there?".to_vec(),
    }
}

/// An application that took events and then takes no more (busy with the last one, say)
/// still has its peer's pings answered, its events waiting: the input that comes meanwhile
/// is read within the adapter's bound (tokio: 20 ms after the task taking events last
/// read; blocking: 250 ms after it left `recv`). In tokio the task taking events reads
/// what a flood needs while events flow; before a connection's task woken for input read
/// its first pass itself, the ping waited for the hand-back, and without it sat unread for
/// as long as the application took nothing.
fn a_ping_is_answered_while_the_application_takes_no_events<A: Adapter>() {
    let text = |payload: String| Step::Frame {
        fin: true,
        rsv: 0,
        opcode: opcode::TEXT,
        payload: payload.into_bytes(),
    };
    let three = (0..3).map(|n| text(format!("before {n}"))).collect();
    let ping = ping_still_there();
    let peer = Peer::start(Mode::Script(vec![
        Step::Together(three),
        Step::AwaitMessages(1),
        ping,
    ]));
    pong_while_taking_nothing::<A>(&peer, config());
}

/// The application takes the peer's three messages together (the last take found events,
/// so in tokio the task taking events is the one reading), then takes nothing; its message
/// makes the peer go on with its script, whose ping ([`ping_still_there`]) must be answered.
fn pong_while_taking_nothing<A: Adapter>(peer: &Peer, config: SessionConfig) {
    let mut a = A::new(config, TlsRoots::default()).unwrap();
    a.connect(&ConnectOptions::new(peer.url())).unwrap();
    a.events_until("the open and three messages", T, |e| messages(e).len() == 3);
    a.try_send(Message::text("go on")).unwrap();
    let seen = peer.wait_for("the pong", T, |s| {
        s.connections.first().is_some_and(|c| !c.pongs.is_empty())
    });
    assert_eq!(
        seen.connections[0].pongs,
        [b"still there?".to_vec()],
        "[{}]",
        A::NAME
    );
    assert_eq!(a.state(), ReadyState::Open, "[{}]", A::NAME);
}

/// As above, but the ping comes behind a megabyte of messages, more than one read pass
/// ([`wxsocket_wire::link::READ_PASS`]) and well within the receive bounds: the adapter reads
/// on to the ping although the application takes nothing. In tokio a connection's task woken
/// for input reads one pass and leaves the rest to the task taking events, which last found
/// events and so still reads: the rest is the connection's task's again 20 ms after that task
/// last read or first found events (without that hand-back the ping sat unread for as long as
/// the application took nothing). Blocking: the receiving thread's reads come back to the
/// driver thread 250 ms after it left `recv`.
fn a_ping_behind_more_than_a_read_pass_is_answered_while_the_application_takes_no_events<
    A: Adapter,
>() {
    const CHUNK: usize = 64 << 10;
    const BEHIND: usize = (4 * wxsocket_wire::link::READ_PASS) / CHUNK;
    let three = (0..3)
        .map(|n| Step::frame(opcode::TEXT, format!("before {n}").into_bytes()))
        .collect();
    let mut behind: Vec<Step> = (0..BEHIND)
        .map(|n| Step::frame(opcode::BINARY, vec![n as u8; CHUNK]))
        .collect();
    behind.push(ping_still_there());
    let peer = Peer::start(Mode::Script(vec![
        Step::Together(three),
        Step::AwaitMessages(1),
        Step::Together(behind),
    ]));
    pong_while_taking_nothing::<A>(&peer, config().receive_bounds(1000, 64 << 20));
}

/// An application working through a backlog of events (taking them one by one, never
/// finding none) still has its peer's pings answered long before the backlog is gone (tokio:
/// within 20 ms of the ping; blocking: 250 ms). In tokio the task taking events reads only
/// when it finds no event ready; while the hand-back counted from its last take rather than
/// its last read, a ping it was left waited for the whole backlog of 20,000.
fn a_ping_is_answered_while_the_application_works_through_a_backlog<A: Adapter>() {
    const BACKLOG: usize = 20_000;
    let frames = (0..BACKLOG)
        .map(|n| Step::Frame {
            fin: true,
            rsv: 0,
            opcode: opcode::TEXT,
            payload: format!("backlog {n}").into_bytes(),
        })
        .collect();
    let ping = ping_still_there();
    let peer = Peer::start(Mode::Script(vec![
        Step::Together(frames),
        Step::AwaitMessages(1),
        ping,
    ]));
    let config = config().receive_bounds(4 * BACKLOG, 64 << 20);
    let mut a = A::new(config, TlsRoots::default()).unwrap();
    a.connect(&ConnectOptions::new(peer.url())).unwrap();
    // Every message read (less the adapter's batch of events, at most 64, which the
    // backlog does not count).
    let deadline = Instant::now() + T;
    while a.backlog().messages + 64 < BACKLOG {
        assert!(Instant::now() < deadline, "[{}] {:?}", A::NAME, a.backlog());
        std::thread::sleep(Duration::from_millis(1));
    }
    // The application takes events from here on, without ever running out; its message
    // makes the peer ping.
    a.next_event(T).expect("the first event");
    a.try_send(Message::text("ping me")).unwrap();
    let mut taken = 1;
    while peer.snapshot().connections[0].pongs.is_empty() {
        assert!(
            taken < BACKLOG / 2,
            "[{}] the ping unanswered after {taken} of {BACKLOG} events taken",
            A::NAME
        );
        a.next_event(T).expect("an event of the backlog");
        taken += 1;
        std::thread::sleep(Duration::from_micros(100));
    }
    assert_eq!(a.state(), ReadyState::Open, "[{}]", A::NAME);
}

/// The application closes while its peer floods it, and keeps taking events: the close
/// handshake completes through the flood (the peer answers once its flood ends) and the
/// close is clean, 1000. (The flood server once let its close reply go in the middle of its
/// last message, the client never saw it, and the close ended as 1006 in about half the
/// runs.)
fn a_close_during_a_flood_completes_its_handshake<A: Adapter>() {
    let flood = FloodServer::start(Flood::new(32).duration(Duration::from_millis(500)));
    let mut a = A::new(config(), TlsRoots::default()).unwrap();
    let conn = a.connect(&ConnectOptions::new(flood.url())).unwrap();
    a.events_until("the flood", T, |e| messages(e).len() >= 1000);
    a.close(Some(1000), "").unwrap();
    let events = a.events_until_close(conn, T);
    let close = events.last().expect("the close");
    assert!(
        matches!(
            close,
            Event::Close {
                code: 1000,
                clean: true,
                ..
            }
        ),
        "[{}] {close:?}; errors: {:?}",
        A::NAME,
        events
            .iter()
            .filter(|e| matches!(e, Event::Error { .. }))
            .collect::<Vec<_>>()
    );
}

fn keepalive_answered_keeps_the_connection_open<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A =
        client(config().keepalive(Duration::from_millis(40), Duration::from_millis(400)));
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    peer.wait_for("three pings", T, |s| {
        s.connections.first().is_some_and(|c| c.pings >= 3)
    });
    assert_eq!(
        a.state(),
        ReadyState::Open,
        "[{}] pongs keep the connection alive",
        A::NAME
    );
    let id = a.send(Message::text("still here")).unwrap();
    let events = a.events_until("the echo", T, |e| !messages(e).is_empty());
    assert_eq!(completions(&events), [id]);
    assert_eq!(messages(&events), [Message::text("still here")]);
    a.close(None, "").unwrap();
    let events = a.events_until_close(conn, T);
    assert_eq!(events, [close_event(conn, 1000, "", true)], "[{}]", A::NAME);
}

/// A peer that sends one large message slowly and answers no ping meanwhile (a pong would
/// wait behind the rest of the frame anyway): keepalive declares a peer dead when nothing
/// arrives, and the message's bytes are arriving, so it is delivered whole. It used to end
/// the connection with `KeepaliveTimeout` partway through (a user saw a 200 KB message over
/// a 20 KB/s link never arrive). Once the peer falls silent, keepalive still ends it.
fn keepalive_counts_part_of_a_message_as_a_sign_of_life<A: Adapter>() {
    use std::io::{Read, Write};
    const SIZE: usize = 60_000;
    const PIECES: usize = 20;
    let (url, server) = raw_peer("", |mut stream| {
        // Everything the client sends is read and dropped: its pings are never answered.
        let mut reader = stream.try_clone().unwrap();
        let discard = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        });
        let mut frame = vec![0x82, 127];
        frame.extend_from_slice(&(SIZE as u64).to_be_bytes());
        frame.extend_from_slice(&[7; SIZE]);
        // Two seconds in all, twice keepalive's interval and timeout.
        for piece in frame.chunks(frame.len().div_ceil(PIECES)) {
            if stream.write_all(piece).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Then silence, until the client ends the connection.
        discard.join().unwrap();
    });
    // A second of silence ends the connection: ten times the pause between pieces, so a
    // server thread held up on a loaded machine is not taken for silence.
    let keepalive = Duration::from_millis(500);
    let mut a: A = client(config().keepalive(keepalive, keepalive));
    let (conn, _) = open(&mut a, &ConnectOptions::new(url));
    let events = a.events_until_close(conn, T);
    let [Event::Message { message, .. }, rest @ ..] = &events[..] else {
        panic!("[{}] expected the message first: {events:#?}", A::NAME);
    };
    assert_eq!(message.len(), SIZE, "[{}]", A::NAME);
    let error = expect_error_then_close(A::NAME, conn, rest, 1006);
    assert_eq!(
        error,
        ConnectionError::KeepaliveTimeout(keepalive),
        "[{}]",
        A::NAME
    );
    server.join().unwrap();
}

/// The same over `wss://`, where the message's frame is one TLS record that arrives slowly:
/// a record gives no plaintext until it is whole, so the bytes of one still arriving must
/// count too (a user's probe: keepalive ended the connection). A relay passes the peer's
/// bytes on in pieces of 800, every 150 ms (the record takes about 2.4 s).
fn keepalive_counts_part_of_a_tls_record_as_a_sign_of_life<A: Adapter>() {
    use std::io::{Read, Write};
    const SIZE: usize = 12_000;
    let peer = Peer::builder(Mode::Script(vec![Step::Message(Message::binary(vec![
        7;
        SIZE
    ]))]))
    .tls(Tls::Trusted)
    .start();
    let relay = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = peer.url().replace(
        &peer.addr().to_string(),
        &relay.local_addr().unwrap().to_string(),
    );
    let target = peer.addr();
    let relaying = std::thread::spawn(move || {
        let (client, _) = relay.accept().unwrap();
        let server = std::net::TcpStream::connect(target).unwrap();
        let (mut from_client, mut to_server) =
            (client.try_clone().unwrap(), server.try_clone().unwrap());
        let upstream = std::thread::spawn(move || {
            let _ = std::io::copy(&mut from_client, &mut to_server);
            let _ = to_server.shutdown(std::net::Shutdown::Write);
        });
        let (mut from_server, mut to_client) = (server, client);
        let mut piece = [0u8; 800];
        loop {
            match from_server.read(&mut piece) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to_client.write_all(&piece[..n]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(150));
                }
            }
        }
        let _ = to_client.shutdown(std::net::Shutdown::Both);
        upstream.join().unwrap();
    });
    let keepalive = Duration::from_millis(500);
    let config = config()
        .handshake_timeout(Duration::from_secs(20))
        .keepalive(keepalive, keepalive);
    let mut a: A = A::new(config, TlsRoots::only(vec![peer.ca_cert().unwrap()])).unwrap();
    let (conn, _) = open(&mut a, &ConnectOptions::new(url));
    let events = a.events_until("the message", 3 * T, |e| {
        !messages(e).is_empty() || e.iter().any(|e| matches!(e, Event::Close { .. }))
    });
    assert_eq!(
        messages(&events)
            .iter()
            .map(Message::len)
            .collect::<Vec<_>>(),
        [SIZE],
        "[{}] {events:#?}",
        A::NAME
    );
    a.close(None, "").unwrap();
    a.events_until_close(conn, T);
    drop(peer);
    relaying.join().unwrap();
}

/// Over `wss://`, frames and then a TLS record that does not decrypt, read together: the
/// frames are delivered, in order, and then the connection fails naming TLS (1006). rustls
/// had decrypted them before it met the bad record; they were lost before.
fn delivers_what_came_before_a_tls_record_that_does_not_decrypt<A: Adapter>() {
    let peer = Peer::builder(Mode::Script(vec![
        Step::AwaitMessages(1),
        Step::WithBadRecord(vec![
            Step::frame(opcode::TEXT, b"before"),
            Step::frame(opcode::BINARY, [1, 2, 3]),
        ]),
    ]))
    .tls(Tls::Trusted)
    .start();
    let mut a: A = A::new(config(), TlsRoots::only(vec![peer.ca_cert().unwrap()])).unwrap();
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    a.try_send(Message::text("go")).unwrap();
    let events = a.events_until_close(conn, T);
    assert_eq!(
        messages(&events),
        [Message::text("before"), Message::binary(vec![1, 2, 3])],
        "[{}] {events:#?}",
        A::NAME
    );
    // The message that started the script completes, before or after the frames.
    let ending: Vec<Event> = events
        .into_iter()
        .filter(|e| !matches!(e, Event::Message { .. } | Event::SendCompleted { .. }))
        .collect();
    let error = expect_error_then_close(A::NAME, conn, &ending, 1006);
    assert!(
        matches!(&error, ConnectionError::Transport(e) if e.kind == TransportErrorKind::Tls),
        "[{}] {error:?}",
        A::NAME
    );
    assert_quiet(&mut a);
}

// ----- §3 single-socket replacement -----

fn replacement_while_connecting<A: Adapter>() {
    let old_peer = Peer::builder(Mode::Echo).hold_handshake().start();
    let new_peer = Peer::start(Mode::Echo);
    let mut a: A = client(config());
    let old = a.connect(&ConnectOptions::new(old_peer.url())).unwrap();
    let queued = a.try_send(Message::text("never sent")).unwrap();
    old_peer.wait_conn(0, "the old upgrade request", T, |c| c.request.is_some());
    let new = a.connect(&ConnectOptions::new(new_peer.url())).unwrap();
    assert!(new > old);
    let events = a.events_until("the new connection to open", T, |e| {
        e.iter()
            .any(|e| matches!(e, Event::Open { conn, .. } if *conn == new))
    });
    match events.as_slice() {
        [
            Event::Connecting { conn: c0, .. },
            Event::SendFailed {
                conn: c1,
                id,
                reason: SendFailure::Replaced,
                message,
                ..
            },
            Event::Close {
                conn: c2,
                code: 1000,
                reason,
                clean: false,
                ..
            },
            Event::Connecting { conn: c3, .. },
            Event::Open { conn: c4, .. },
        ] if [*c0, *c1, *c2] == [old; 3] && [*c3, *c4] == [new; 2] => {
            assert_eq!(*id, queued);
            assert_eq!(message, &Some(Message::text("never sent")));
            assert_eq!(reason, REPLACED_REASON);
        }
        _ => panic!("[{}] unexpected events {events:#?}", A::NAME),
    }
    let seen = old_peer.wait_conn(0, "the old dial to be cancelled", T, |c| c.ended);
    assert!(
        seen.client_went_away && !seen.upgraded,
        "[{}] {seen:#?}",
        A::NAME
    );
    let id = a.try_send(Message::text("new")).unwrap();
    let events = a.events_until("the echo", T, |e| e.len() >= 2);
    assert!(
        events.iter().all(|e| e.conn() == new),
        "[{}] {events:#?}",
        A::NAME
    );
    assert_eq!(completions(&events), [id]);
}

fn replacement_while_open<A: Adapter>() {
    let old_peer = Peer::start(Mode::Echo);
    let new_peer = Peer::start(Mode::Echo);
    let mut a: A = client(config());
    let (old, _) = open(&mut a, &ConnectOptions::new(old_peer.url()));
    let id = a.try_send(Message::text("old")).unwrap();
    let events = a.events_until("the echo", T, |e| e.len() >= 2);
    assert_eq!(completions(&events), [id]);
    let new = a.connect(&ConnectOptions::new(new_peer.url())).unwrap();
    assert!(
        matches!(a.state(), ReadyState::Connecting | ReadyState::Open),
        "[{}] {:?}",
        A::NAME,
        a.state()
    );
    assert_eq!(a.current(), Some(new));
    let first = a.expect_event("the old connection's close");
    assert_eq!(
        first,
        close_event(old, 1000, REPLACED_REASON, false),
        "[{}]",
        A::NAME
    );
    expect_connecting(&mut a, new);
    match a.expect_event("Open") {
        Event::Open { conn, .. } if conn == new => {}
        other => panic!(
            "[{}] expected Open of the new connection, got {other:#?}",
            A::NAME
        ),
    }
    // The old transport is closed in the background with a close frame.
    let seen = old_peer.wait_conn(0, "the old transport to close", T, |c| c.ended);
    assert_eq!(
        seen.closes,
        [CloseFrame {
            code: Some(1000),
            reason: REPLACED_REASON.into()
        }],
        "[{}]",
        A::NAME
    );
    let id = a.try_send(Message::binary(vec![9; 3])).unwrap();
    let events = a.events_until("the echo", T, |e| e.len() >= 2);
    assert!(
        events.iter().all(|e| e.conn() == new),
        "[{}] nothing of the old connection after the new one's first event: {events:#?}",
        A::NAME
    );
    assert_eq!(completions(&events), [id]);
    a.close(None, "").unwrap();
    let events = a.events_until_close(new, T);
    assert_eq!(events, [close_event(new, 1000, "", true)], "[{}]", A::NAME);
    assert_eq!(new_peer.snapshot().accepted, 1);
}

// ----- §3 close-before-open policies -----

fn close_before_open_after_open<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo).hold_handshake().start();
    let mut a: A = client(config().close_before_open(CloseBeforeOpen::AfterOpen));
    let conn = a.connect(&ConnectOptions::new(peer.url())).unwrap();
    let queued = a.try_send(Message::text("q")).unwrap();
    peer.wait_conn(0, "the upgrade request", T, |c| c.request.is_some());
    assert_eq!(a.close(Some(4001), "later"), Ok(()));
    assert_eq!(
        a.state(),
        ReadyState::Connecting,
        "[{}] the close waits for open",
        A::NAME
    );
    peer.release_handshakes();
    let events = a.events_until_close(conn, T);
    match events.as_slice() {
        [
            Event::Connecting { .. },
            Event::Open { .. },
            Event::SendCompleted { id, .. },
            Event::Close {
                code: 4001,
                reason,
                clean: true,
                ..
            },
        ] if *id == queued => assert_eq!(reason, "later"),
        _ => panic!("[{}] unexpected events {events:#?}", A::NAME),
    }
    let seen = peer.wait_conn(0, "the close frame", T, |c| !c.closes.is_empty());
    assert_eq!(
        seen.messages,
        [Message::text("q")],
        "[{}] the queue is flushed before the close",
        A::NAME
    );
    assert_eq!(
        seen.closes,
        [CloseFrame {
            code: Some(4001),
            reason: "later".into()
        }]
    );
    assert_quiet(&mut a);
}

fn close_before_open_ignore<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo).hold_handshake().start();
    let mut a: A = client(config().close_before_open(CloseBeforeOpen::Ignore));
    let conn = a.connect(&ConnectOptions::new(peer.url())).unwrap();
    expect_connecting(&mut a, conn);
    peer.wait_conn(0, "the upgrade request", T, |c| c.request.is_some());
    assert_eq!(
        a.close(None, ""),
        Err(CloseError::NotOpenYet),
        "[{}]",
        A::NAME
    );
    assert_eq!(a.state(), ReadyState::Connecting);
    peer.release_handshakes();
    match a.expect_event("Open") {
        Event::Open { conn: c, .. } if c == conn => {}
        other => panic!(
            "[{}] the ignored close changed nothing, expected Open, got {other:#?}",
            A::NAME
        ),
    }
    a.close(None, "").unwrap();
    let events = a.events_until_close(conn, T);
    assert_eq!(events, [close_event(conn, 1000, "", true)], "[{}]", A::NAME);
}

// ----- §3 close codes -----

fn client_close_with_code_and_reason<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    let reason = "done here, ünïcode";
    a.close(Some(4321), reason).unwrap();
    let events = a.events_until_close(conn, T);
    assert_eq!(
        events,
        [close_event(conn, 4321, reason, true)],
        "[{}]",
        A::NAME
    );
    let seen = peer.wait_conn(0, "the close frame", T, |c| c.ended);
    assert_eq!(
        seen.closes,
        [CloseFrame {
            code: Some(4321),
            reason: reason.into()
        }]
    );
}

fn server_close_with_code_and_reason<A: Adapter>() {
    let peer = Peer::start(Mode::CloseWith(4444, "server says bye".into()));
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    let events = a.events_until_close(conn, T);
    assert_eq!(
        events,
        [close_event(conn, 4444, "server says bye", true)],
        "[{}]",
        A::NAME
    );
    assert_eq!(a.state(), ReadyState::Closed);
    let seen = peer.wait_conn(0, "the client's answer", T, |c| c.ended);
    assert_eq!(
        seen.closes.len(),
        1,
        "[{}] the client answers the close frame: {seen:#?}",
        A::NAME
    );
    assert_eq!(seen.closes[0].code, Some(4444));
    assert_quiet(&mut a);
}

// ----- §6 misbehaving servers -----

fn misbehaving<A: Adapter>(
    mode: Mode,
    config: SessionConfig,
    kind: TransportErrorKind,
    code: u16,
) -> TransportError {
    let peer = Peer::start(mode.clone());
    let mut a: A = client(config);
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    let events = a.events_until_close(conn, T);
    let error = expect_error_then_close(A::NAME, conn, &events, code);
    let e = transport_error(A::NAME, &error);
    assert_eq!(e.kind, kind, "[{}] {mode:?}: {e:?}", A::NAME);
    assert_eq!(a.state(), ReadyState::Closed);
    peer.wait_for("the connection to end", T, |s| conn_ended(s, 0));
    assert_quiet(&mut a);
    e
}

/// The peer ends TCP (a FIN) in the middle of a message: the error says it closed the
/// connection, not "reset" (tungstenite's text for it, which reads like a TCP reset).
fn abrupt_disconnect_is_1006<A: Adapter>() {
    let e = misbehaving::<A>(Mode::DropMidMessage, config(), TransportErrorKind::Io, 1006);
    assert!(
        e.message
            .contains("the peer closed the connection without the closing handshake"),
        "[{}] {e:?}",
        A::NAME
    );
}

fn invalid_utf8_is_1007<A: Adapter>() {
    misbehaving::<A>(
        Mode::InvalidUtf8,
        config(),
        TransportErrorKind::InvalidUtf8,
        1007,
    );
}

/// A text frame whose first piece holds invalid UTF-8, the rest never sent: the connection
/// fails at once with 1007 (RFC 6455 §8.1; Autobahn 6.4.3–6.4.4), after the message that
/// came in the same read is delivered. tungstenite alone checks the frame only once it is
/// complete, so the client used to wait for the rest for ever.
fn invalid_utf8_fails_before_the_rest_of_its_frame_arrives<A: Adapter>() {
    use std::io::{Read, Write};
    let (url, server) = raw_peer("", |mut stream| {
        // "ok", then the start of a 1,000-byte text frame: "ab" and 0xF4 0x90 (above
        // U+10FFFF), in one write.
        let mut bytes = vec![0x81, 2, b'o', b'k', 0x81, 126];
        bytes.extend_from_slice(&1000u16.to_be_bytes());
        bytes.extend_from_slice(b"ab\xf4\x90");
        stream.write_all(&bytes).unwrap();
        // Read the client's close frame (masked), then end the connection.
        stream.set_read_timeout(Some(T)).unwrap();
        let mut read = Vec::new();
        let mut buf = [0u8; 256];
        while read.len() < 8 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => read.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream.shutdown(std::net::Shutdown::Both);
        match read[..] {
            [0x88, len, m0, m1, _, _, c0, c1, ..] if len & 0x80 != 0 => {
                Some(u16::from_be_bytes([c0 ^ m0, c1 ^ m1]))
            }
            _ => None,
        }
    });
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(url));
    let events = a.events_until_close(conn, T);
    let [Event::Message { message, .. }, rest @ ..] = &events[..] else {
        panic!(
            "[{}] expected the first message first: {events:#?}",
            A::NAME
        );
    };
    assert_eq!(message, &Message::text("ok"), "[{}]", A::NAME);
    let error = expect_error_then_close(A::NAME, conn, rest, 1007);
    let e = transport_error(A::NAME, &error);
    assert_eq!(
        e.kind,
        TransportErrorKind::InvalidUtf8,
        "[{}] {e:?}",
        A::NAME
    );
    assert_eq!(
        server.join().unwrap(),
        Some(1007),
        "[{}] the client's close frame",
        A::NAME
    );
    assert_quiet(&mut a);
}

/// A server that refuses a large message with 1009 and drops the connection at once, its
/// socket still holding what the client sent, so that TCP resets the connection: the
/// client's write fails, and the close frame that came before the reset says why. A user's
/// `wxsocket connect` reported 1006 "Broken pipe" in two runs of three, as the client met
/// the failed write before it read the close frame; a differential probe then found such a
/// close reported clean although our answer never went out.
fn a_close_frame_before_a_reset_says_why_the_write_failed<A: Adapter>() {
    let (id, events) = refused_and_reset::<A>(false);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::SendFailed { id: i, .. } if *i == id)),
        "[{}] the message never went out whole: {events:#?}",
        A::NAME
    );
    // The error comes first, saying why.
    assert!(
        matches!(events.first(), Some(Event::Error { .. })),
        "[{}] {events:#?}",
        A::NAME
    );
}

/// The same with our own close frame waiting behind the message: the peer's close frame
/// crosses it, and the reset keeps ours from going out, so the close is not clean either (a
/// review found it reported clean: the core took the peer's frame for the answer to ours).
fn our_close_behind_a_message_and_the_peers_close_and_reset_is_unclean<A: Adapter>() {
    refused_and_reset::<A>(true);
}

/// An 8 MiB message to a server that reads its frame's header, sends close 1009 "too big"
/// and drops the connection with the rest unread (TCP resets it); with `our_close`, the
/// client closes behind the message before the server's close comes. Our close frame (ours
/// or the answer) waited behind the message and never went out: the close has the server's
/// code, is not clean (RFC 6455 §7.1.4), and comes after an error. The message's id and
/// the events up to the close.
fn refused_and_reset<A: Adapter>(our_close: bool) -> (SendId, Vec<Event>) {
    use std::io::{Read, Write};
    let (closed, wait) = std::sync::mpsc::channel::<()>();
    let (url, server) = raw_peer("", move |mut stream| {
        let mut header = [0u8; 14];
        stream.read_exact(&mut header).unwrap();
        if our_close {
            // Once the client has asked to close (its frame behind the message).
            wait.recv().unwrap();
        }
        stream
            .write_all(&[
                0x88, 0x09, 0x03, 0xF1, b't', b'o', b'o', b' ', b'b', b'i', b'g',
            ])
            .unwrap();
        // Dropped with the client's bytes unread: the connection is reset.
    });
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(url));
    let id = a.try_send(Message::binary(vec![7; 8 << 20])).unwrap();
    if our_close {
        a.close(Some(1000), "bye").unwrap();
        closed.send(()).unwrap();
    }
    let events = a.events_until_close(conn, T);
    server.join().unwrap();
    assert_eq!(
        events.last(),
        Some(&close_event(conn, 1009, "too big", false)),
        "[{}] {events:#?}",
        A::NAME
    );
    assert!(
        events.iter().any(|e| matches!(e, Event::Error { .. })),
        "[{}] {events:#?}",
        A::NAME
    );
    (id, events)
}

/// A server that closes (1000, then its FIN) while a large message of ours is going out,
/// and reads on: the message is finished and the close answered behind it, as Python
/// `websockets` and Node `ws` do (RFC 6455 §5.5.1), and the close is clean. A differential
/// probe found the message cut off at the FIN (send failed), no close frame sent, and the
/// close reported clean, in 12 runs of 12 on both adapters.
fn a_close_frame_and_fin_during_an_upload_let_it_finish_and_are_answered<A: Adapter>() {
    use std::io::{Read, Write};
    const SIZE: usize = 8 << 20;
    let (url, server) = raw_peer("", |mut stream| {
        // Part of the message, then the close and the FIN; then everything to the end.
        let mut received = vec![0u8; 256 << 10];
        stream.read_exact(&mut received).unwrap();
        stream.write_all(&[0x88, 0x02, 0x03, 0xE8]).unwrap();
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        stream.read_to_end(&mut received).unwrap();
        received
    });
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(url));
    let id = a.try_send(Message::binary(vec![7; SIZE])).unwrap();
    let events = a.events_until_close(conn, T);
    let received = server.join().unwrap();
    assert_eq!(completions(&events), [id], "[{}] {events:#?}", A::NAME);
    assert_eq!(
        events.last(),
        Some(&close_event(conn, 1000, "", true)),
        "[{}] {events:#?}",
        A::NAME
    );
    // The message's frame (a 14-byte masked header), then the masked answer, 1000.
    let answer_at = 14 + SIZE;
    assert_eq!(received.len(), answer_at + 8, "[{}]", A::NAME);
    assert_eq!(
        received[answer_at..answer_at + 2],
        [0x88, 0x82],
        "[{}]",
        A::NAME
    );
}

/// A server that closes (1001) while a large message of ours is going out, then stops
/// reading for longer than the close linger (a slow link), then reads on: the client waits
/// for the message and its answer to go out, within the close timeout, and the close is
/// clean. It used to start the linger at the server's close frame, drop the connection two
/// seconds on with the message half sent, and report that close clean.
fn a_peers_close_during_an_upload_longer_than_the_linger_is_answered_behind_it<A: Adapter>() {
    use std::io::{Read, Write};
    // More than the sockets hold while the server does not read (4 MiB of send buffer
    // here, and the receive buffer the first reads let grow).
    const SIZE: usize = 32 << 20;
    let (url, server) = raw_peer("", |mut stream| {
        let mut received = vec![0u8; 14 + SIZE + 8];
        stream.read_exact(&mut received[..256 << 10]).unwrap();
        stream.write_all(&[0x88, 0x02, 0x03, 0xE9]).unwrap();
        // The stall: the scenario itself, not a wait for the client.
        std::thread::sleep(CLOSE_LINGER + Duration::from_millis(500));
        stream.read_exact(&mut received[256 << 10..]).unwrap();
        received
        // Dropped: the server closes TCP once it has the answer.
    });
    let mut a: A = client(config().close_timeout(Duration::from_secs(20)));
    let (conn, _) = open(&mut a, &ConnectOptions::new(url));
    let id = a.try_send(Message::binary(vec![7; SIZE])).unwrap();
    let events = a.events_until_close(conn, Duration::from_secs(20));
    let received = server.join().unwrap();
    assert_eq!(completions(&events), [id], "[{}] {events:#?}", A::NAME);
    assert_eq!(
        events.last(),
        Some(&close_event(conn, 1001, "", true)),
        "[{}] {events:#?}",
        A::NAME
    );
    // The message's frame (a 14-byte masked header), then the masked answer, 1001.
    let answer = &received[14 + SIZE..];
    assert_eq!(answer[..2], [0x88, 0x82], "[{}]", A::NAME);
}

/// A server that closes (1001) while a large message of ours is going out and never reads
/// again: our answer never goes out. At the close timeout the close ends with the server's
/// code, not clean (RFC 6455 §7.1.4), after the timeout's error, and the message is
/// reported failed. It used to end clean when the linger ran out.
fn a_peers_close_whose_answer_never_goes_out_is_unclean<A: Adapter>() {
    use std::io::{Read, Write};
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let (url, server) = raw_peer("", move |mut stream| {
        let mut header = [0u8; 14];
        stream.read_exact(&mut header).unwrap();
        stream.write_all(&[0x88, 0x02, 0x03, 0xE9]).unwrap();
        // Holds the connection, reading nothing, until the client has reported the end.
        wait.recv().unwrap();
    });
    let close_timeout = Duration::from_millis(1500);
    let mut a: A = client(config().close_timeout(close_timeout));
    let (conn, _) = open(&mut a, &ConnectOptions::new(url));
    let started = Instant::now();
    let id = a.try_send(Message::binary(vec![7; 32 << 20])).unwrap();
    let events = a.events_until_close(conn, T);
    let elapsed = started.elapsed();
    done.send(()).unwrap();
    server.join().unwrap();
    assert_eq!(
        events.last(),
        Some(&close_event(conn, 1001, "", false)),
        "[{}] {events:#?}",
        A::NAME
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Error {
                error: ConnectionError::CloseTimeout(_),
                ..
            }
        )),
        "[{}] {events:#?}",
        A::NAME
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::SendFailed { id: failed, .. } if *failed == id)),
        "[{}] {events:#?}",
        A::NAME
    );
    assert!(elapsed >= close_timeout, "[{}] {elapsed:?}", A::NAME);
}

fn oversized_message_is_1009<A: Adapter>() {
    misbehaving::<A>(
        Mode::Oversized(4096),
        config().max_message_size(1024),
        TransportErrorKind::MessageTooBig,
        1009,
    );
}

/// `max_message_size` bounds messages, not control frames (at most 125 bytes): with a limit
/// of 1 byte the server's close frame (a code and a reason) failed the connection as 1009
/// and a command's every close with exit 4 (a README audit).
fn the_smallest_message_limit_still_lets_close_frames_through<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config().max_message_size(1));
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    a.try_send(Message::text("x")).unwrap();
    let events = a.events_until("the echo", T, |e| !messages(e).is_empty());
    assert_eq!(messages(&events), [Message::text("x")], "[{}]", A::NAME);
    close_cleanly(&mut a, conn);
}

fn reserved_opcode_is_1002<A: Adapter>() {
    misbehaving::<A>(
        Mode::Violation(Violation::ReservedOpcode),
        config(),
        TransportErrorKind::Protocol,
        1002,
    );
}

fn reserved_bits_are_1002<A: Adapter>() {
    misbehaving::<A>(
        Mode::Violation(Violation::RsvBits),
        config(),
        TransportErrorKind::Protocol,
        1002,
    );
}

/// RFC 6455 §5.2: the most significant bit of a 64-bit length must be 0. tungstenite
/// alone reads such a length as a message too large (1009); it is a protocol error.
fn a_frame_length_with_its_top_bit_set_is_1002<A: Adapter>() {
    misbehaving::<A>(
        Mode::Violation(Violation::TopBitLength),
        config(),
        TransportErrorKind::Protocol,
        1002,
    );
}

fn masked_server_frame_is_1002<A: Adapter>() {
    misbehaving::<A>(
        Mode::Violation(Violation::MaskedFrame),
        config(),
        TransportErrorKind::Protocol,
        1002,
    );
}

// ----- §6 TLS -----

fn wss_with_a_generated_ca<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo).tls(Tls::Trusted).start();
    let mut a: A = A::new(config(), TlsRoots::only(vec![peer.ca_cert().unwrap()])).unwrap();
    assert!(peer.url().starts_with("wss://"));
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()).require_tls(true));
    let id = a.try_send(Message::text("secret")).unwrap();
    let events = a.events_until("the echo", T, |e| e.len() >= 2);
    assert_eq!(completions(&events), [id]);
    assert_eq!(messages(&events), [Message::text("secret")]);
    a.close(None, "").unwrap();
    let events = a.events_until_close(conn, T);
    assert_eq!(events, [close_event(conn, 1000, "", true)], "[{}]", A::NAME);
    let seen = peer.wait_conn(0, "the close", T, |c| c.ended);
    assert_eq!(seen.messages, [Message::text("secret")]);
}

/// More pipelined data over TLS than the sockets hold, sent while the peer reads nothing:
/// the socket fills up on the way out and TLS records wait for room (the sends stay
/// unwritten, not reported written); once the peer reads again, the records go out as the
/// socket drains while the echoes come back: every message arrives whole and in order,
/// every send completes once.
/// After a clean close over `wss://` the client's last TLS record is `close_notify` (RFC
/// 8446 §6.1), so the server can tell the end from a cut connection (a prober's server
/// logged "EOF without close_notify" after every clean close).
fn wss_ends_with_close_notify<A: Adapter>() {
    use std::io::Read;
    let ca = wxsocket_test_pki::TestCa::generate("close_notify");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("wss://{}/", listener.local_addr().unwrap());
    let server = ca.server_config();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(T)).unwrap();
        let tls = rustls::StreamOwned::new(rustls::ServerConnection::new(server).unwrap(), tcp);
        let mut ws = tungstenite::accept(tls).unwrap();
        // Read until the close handshake is over (tungstenite answers the client's close).
        while ws.read().is_ok() {}
        let _ = ws.flush();
        let tls = ws.get_mut();
        // The server ends TCP first (RFC 6455 §7.1.1); then reads what the client sent last.
        tls.sock.shutdown(std::net::Shutdown::Write).unwrap();
        let end = tls.read(&mut [0; 64]).map_err(|e| e.kind());
        let _ = tx.send(end);
    });
    let mut a: A = A::new(config(), TlsRoots::only(vec![ca.ca_der.clone()])).unwrap();
    let (conn, _) = open(&mut a, &ConnectOptions::new(url).require_tls(true));
    close_cleanly(&mut a, conn);
    assert_eq!(
        rx.recv_timeout(T),
        Ok(Ok(0)),
        "[{}] the server read no close_notify (Err(UnexpectedEof): the client just closed TCP)",
        A::NAME
    );
}

fn wss_carries_more_than_the_sockets_hold<A: Adapter>() {
    const COUNT: usize = 48;
    const SIZE: usize = 256 << 10;
    let peer = Peer::builder(Mode::Echo).tls(Tls::Trusted).start();
    let mut a: A = A::new(config(), TlsRoots::only(vec![peer.ca_cert().unwrap()])).unwrap();
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()).require_tls(true));
    peer.hold_reads();
    let sent: Vec<Message> = (0..COUNT)
        .map(|i| Message::binary(vec![i as u8; SIZE]))
        .collect();
    let ids: Vec<_> = sent
        .iter()
        .map(|m| a.try_send(m.clone()).unwrap())
        .collect();
    // 12 MiB do not fit in the sockets of a peer that does not read: after the client has
    // written what they take, part of it waits, and is not reported written.
    let mut events = Vec::new();
    while let Some(event) = a.next_event(Duration::from_millis(200)) {
        events.push(event);
    }
    let unwritten = a.buffered_amount();
    assert!(
        unwritten > 0 && completions(&events).len() < COUNT,
        "[{}] everything written to a peer that reads nothing ({} of {COUNT} sends \
         completed, {unwritten} bytes buffered)",
        A::NAME,
        completions(&events).len()
    );
    peer.release_reads();
    // The peer was already waiting for the first message when it held its reads: that
    // one it read and echoed.
    let echoed = messages(&events).len();
    events.extend(a.events_until("every echo", T * 4, |e| echoed + messages(e).len() >= COUNT));
    assert_eq!(messages(&events), sent, "[{}]", A::NAME);
    let mut done = completions(&events);
    if done.len() < COUNT {
        let more = a.events_until("every completion", T, |e| {
            done.len() + completions(e).len() >= COUNT
        });
        done.extend(completions(&more));
    }
    assert_eq!(done, ids, "[{}]", A::NAME);
    a.close(None, "").unwrap();
    let events = a.events_until_close(conn, T);
    assert_eq!(events, [close_event(conn, 1000, "", true)], "[{}]", A::NAME);
}

fn wss_with_an_unknown_ca_is_a_clear_tls_error<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo).tls(Tls::UnknownCa).start();
    let mut a: A = A::new(config(), TlsRoots::only(vec![peer.ca_cert().unwrap()])).unwrap();
    let conn = a.connect(&ConnectOptions::new(peer.url())).unwrap();
    expect_connecting(&mut a, conn);
    let events = a.events_until_close(conn, T);
    let error = expect_error_then_close(A::NAME, conn, &events, 1006);
    let e = transport_error(A::NAME, &error);
    assert_eq!(e.kind, TransportErrorKind::Tls, "[{}] {e:?}", A::NAME);
    assert!(
        e.message.to_lowercase().contains("certificate"),
        "[{}] the error says it is about the certificate: {e}",
        A::NAME
    );
    assert!(
        e.message.contains("not signed by a trusted root"),
        "[{}] the error says why in plain words: {e}",
        A::NAME
    );
    let seen = peer.wait_conn(0, "the TLS handshake to fail", T, |c| c.ended);
    assert!(seen.request.is_none());
}

/// `ws://` for a server that speaks only TLS, and `wss://` for one that speaks only plain
/// HTTP: each error says which way the scheme is wrong (they read as an invalid HTTP version
/// and as rustls's "corrupt message of type InvalidContentType").
fn the_wrong_scheme_either_way_is_named<A: Adapter>() {
    use std::io::{Read, Write};
    let tls = Peer::builder(Mode::Echo).tls(Tls::Trusted).start();
    let plain_url = tls.url().replacen("wss://", "ws://", 1);
    // A plain HTTP server answers what it cannot parse (the TLS hello) with a 400.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let tls_url = format!("wss://{}/", listener.local_addr().unwrap());
    let plain = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut hello = [0u8; 512];
        let _ = tcp.read(&mut hello);
        let _ = tcp.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    });
    for (url, kind, words) in [
        (plain_url, TransportErrorKind::Protocol, "answered in TLS"),
        (tls_url, TransportErrorKind::Tls, "did not answer in TLS"),
    ] {
        let mut a: A = A::new(config(), TlsRoots::only(vec![tls.ca_cert().unwrap()])).unwrap();
        let conn = a.connect(&ConnectOptions::new(url)).unwrap();
        expect_connecting(&mut a, conn);
        let events = a.events_until_close(conn, T);
        let error = expect_error_then_close(A::NAME, conn, &events, 1006);
        let e = transport_error(A::NAME, &error);
        assert_eq!(e.kind, kind, "[{}] {e:?}", A::NAME);
        assert!(e.message.contains(words), "[{}] {e}", A::NAME);
    }
    plain.join().unwrap();
}

// ----- caller misuse: clear errors, nothing changes -----

fn invalid_close_code_or_reason_changes_nothing<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config());
    assert_eq!(
        a.close(None, ""),
        Err(CloseError::NotConnected),
        "[{}] close while idle",
        A::NAME
    );
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    for code in [999, 1001, 1005, 1006, 2999, 5000] {
        assert_eq!(
            a.close(Some(code), ""),
            Err(CloseError::InvalidCode(code)),
            "[{}]",
            A::NAME
        );
    }
    let long = "é".repeat(62); // 124 bytes
    assert_eq!(
        a.close(None, &long),
        Err(CloseError::ReasonTooLong(124)),
        "[{}]",
        A::NAME
    );
    assert_eq!(
        a.state(),
        ReadyState::Open,
        "[{}] a refused close changes nothing",
        A::NAME
    );
    let id = a.try_send(Message::text("still open")).unwrap();
    let events = a.events_until("the echo", T, |e| e.len() >= 2);
    assert_eq!(completions(&events), [id], "[{}] {events:#?}", A::NAME);
    assert!(
        peer.snapshot().connections[0].closes.is_empty(),
        "[{}] no close frame went out",
        A::NAME
    );
    let ok_reason = "é".repeat(61) + "x"; // 123 bytes
    a.close(Some(3000), &ok_reason).unwrap();
    let events = a.events_until_close(conn, T);
    assert_eq!(
        events,
        [close_event(conn, 3000, &ok_reason, true)],
        "[{}]",
        A::NAME
    );
    assert_eq!(
        a.close(None, ""),
        Err(CloseError::NotConnected),
        "[{}] close while closed",
        A::NAME
    );
}

fn send_before_connect_hands_the_message_back<A: Adapter>() {
    let mut a: A = client(config());
    let m = Message::text("too early");
    assert_eq!(
        a.try_send(m.clone()),
        Err(SendError::NotConnected(m.clone())),
        "[{}]",
        A::NAME
    );
    assert_eq!(
        a.send(m.clone()),
        Err(SendFailed::Refused(SendError::NotConnected(m))),
        "[{}]",
        A::NAME
    );
    assert_eq!(a.state(), ReadyState::Idle);
    assert_eq!(a.buffered_amount(), 0);
    assert_quiet(&mut a);
}

fn queue_full_and_too_large_hand_the_message_back<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo).hold_handshake().start();
    let mut a: A = client(config().queue_bounds(2, 10).max_message_size(64));
    let conn = a.connect(&ConnectOptions::new(peer.url())).unwrap();
    let first = a.try_send(Message::text("12345")).unwrap();
    let over_bytes = Message::binary(vec![0; 6]);
    assert_eq!(
        a.try_send(over_bytes.clone()),
        Err(SendError::QueueFull(over_bytes)),
        "[{}] the byte bound",
        A::NAME
    );
    let second = a.try_send(Message::text("6789")).unwrap();
    let over_count = Message::text("x");
    assert_eq!(
        a.try_send(over_count.clone()),
        Err(SendError::QueueFull(over_count)),
        "[{}] the count bound",
        A::NAME
    );
    let huge = Message::binary(vec![1; 65]);
    match a.try_send(huge.clone()) {
        Err(SendError::TooLarge {
            message,
            len: 65,
            max: 64,
        }) => assert_eq!(message, huge),
        other => panic!("[{}] expected TooLarge, got {other:?}", A::NAME),
    }
    assert_eq!(a.buffered_amount(), 9);
    peer.release_handshakes();
    let events = a.events_until("open and the queue flushed", T, |e| {
        completions(e).len() == 2
    });
    assert!(
        matches!(
            events.as_slice(),
            [Event::Connecting { .. }, Event::Open { .. }, ..]
        ),
        "[{}] {events:#?}",
        A::NAME
    );
    assert_eq!(completions(&events), [first, second]);
    let seen = peer.wait_conn(0, "two messages", T, |c| c.messages.len() == 2);
    assert_eq!(
        seen.messages,
        [Message::text("12345"), Message::text("6789")]
    );
    a.close(None, "").unwrap();
    a.events_until_close(conn, T);
}

/// A message within `max_message_size` but larger than the queue's and the send buffer's byte
/// bounds (under the defaults: 16 to 64 MiB) is taken alone, when nothing else waits: queued
/// while connecting, and sent once the buffer is empty by the `send` that waits for room,
/// instead of being refused for ever (or waited on for ever).
fn a_message_larger_than_the_send_buffer_is_sent_alone<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo).hold_handshake().start();
    let session = config()
        .queue_bounds(8, 1024)
        .max_buffered_bytes(4096)
        .max_message_size(1 << 20);
    let mut a: A = client(session);
    let conn = a.connect(&ConnectOptions::new(peer.url())).unwrap();
    let big = |byte: u8| Message::binary(vec![byte; 256 << 10]);
    let queued = a
        .try_send(big(1))
        .unwrap_or_else(|e| panic!("[{}] the empty queue refused it: {e:?}", A::NAME));
    assert!(
        matches!(a.try_send(Message::text("x")), Err(SendError::QueueFull(_))),
        "[{}] nothing joins it in the queue",
        A::NAME
    );
    peer.release_handshakes();
    let sent = a
        .send(big(2))
        .unwrap_or_else(|e| panic!("[{}] the awaitable send failed: {e:?}", A::NAME));
    let events = a.events_until("both echoes", T, |e| messages(e).len() == 2);
    assert_eq!(messages(&events), [big(1), big(2)], "[{}]", A::NAME);
    assert_eq!(completions(&events), [queued, sent], "[{}]", A::NAME);
    a.close(None, "").unwrap();
    a.events_until_close(conn, T);
}

/// Send completions stay within `max_untaken_completions` however the sends in flight
/// settle: a send accepted and not settled counts as the completion it will queue. Behind a
/// message the server does not read yet, the application sends empty messages and takes no
/// event: the bound refuses the one past it, and once the server reads, the sends accepted
/// (no more than the bound) all complete. Only the completions already queued used to
/// count: a reviewer's probe had 262,144 accepted (the send buffer's count bound) and
/// queued at once under a bound of 4,096.
fn sends_in_flight_count_toward_the_completion_bound<A: Adapter>() {
    use std::io::Read;
    const BOUND: usize = 100;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (go, read) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        wxsocket_tests::scenario::raw_upgrade(&mut tcp, None).unwrap();
        // Nothing is read until the client's sends are in.
        let _ = read.recv();
        let mut buf = vec![0u8; 64 << 10];
        while matches!(tcp.read(&mut buf), Ok(n) if n > 0) {}
    });
    let mut a: A = client(config().max_untaken_completions(BOUND));
    let (conn, _) = open(&mut a, &ConnectOptions::new(url.as_str()));
    // More than the sockets' buffers hold: the sends behind it stay in flight.
    a.try_send(Message::binary(vec![7; 12 << 20])).unwrap();
    let mut accepted = 1;
    let refused = loop {
        match a.try_send(Message::binary(Vec::new())) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted <= BOUND, "[{}] {accepted} sends accepted", A::NAME);
    };
    assert!(
        matches!(refused, SendError::CompletionsFull(_)),
        "[{}] after {accepted}: {refused:?}",
        A::NAME
    );
    assert_eq!(accepted, BOUND, "[{}]", A::NAME);
    go.send(()).unwrap();
    let events = a.events_until("every completion", T, |e| completions(e).len() == BOUND);
    assert!(events.iter().all(|e| e.conn() == conn), "[{}]", A::NAME);
    a.close(None, "").unwrap();
    a.events_until_close(conn, T);
    drop(a);
    server.join().unwrap();
}

fn dropping_the_handle_closes_cleanly<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config());
    open(&mut a, &ConnectOptions::new(peer.url()));
    a.drop_handles();
    let seen = peer.wait_conn(0, "the client to close", T, |c| c.ended);
    assert_eq!(
        seen.closes.len(),
        1,
        "[{}] dropping the handle sends a close frame: {seen:#?}",
        A::NAME
    );
    assert_eq!(seen.closes[0].code, Some(1000), "[{}]", A::NAME);
    assert!(
        seen.client_went_away,
        "[{}] and the transport is closed",
        A::NAME
    );
}

// ----- §4 tcpNoDelay -----

/// `TCP_NODELAY` is a local socket option the server cannot observe, so it is read back
/// from the client's socket (`socket_info()` of both adapters).
fn tcp_nodelay_is_set_when_asked<A: Adapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()).tcp_no_delay(true));
    assert_eq!(
        a.socket_nodelay(),
        Some(true),
        "[{}] tcpNoDelay: true",
        A::NAME
    );
    a.close(None, "").unwrap();
    a.events_until_close(conn, T);
    open(&mut a, &ConnectOptions::new(peer.url()).tcp_no_delay(false));
    assert_eq!(
        a.socket_nodelay(),
        Some(false),
        "[{}] tcpNoDelay: false (the default)",
        A::NAME
    );
}

// ----- §3 multiple sockets (SocketTask style) -----

/// Two tasks whose peers flood them while the application takes nothing fill the pool
/// (receive bounds 20 per task, 40 for the pool: each task's share is 40 / 2 / 5 = 4, the
/// shared room 20), and a third task still reads: its peer's ping is answered. (The code
/// before the fix fails it whenever the pool is paused when the ping comes, which the wait
/// for a steady count makes nearly always.) A user's
/// multi-service client lost its quiet connection this way: its server's keepalive pings
/// sat unread while the pool paused every connection for the others' backlog.
fn a_quiet_task_reads_on_while_others_fill_the_pool<P: PoolAdapter>() {
    let flood: Vec<Step> = (0..100)
        .map(|n| Step::Message(Message::text(format!("flood {n}"))))
        .collect();
    let busy_peers = [(); 2].map(|_| Peer::start(Mode::Script(flood.clone())));
    let ping = Step::Frame {
        fin: true,
        rsv: 0,
        opcode: opcode::PING,
        payload: b"still there?".to_vec(),
    };
    let quiet_peer = Peer::start(Mode::Script(vec![ping]));
    let config = config()
        .receive_bounds(20, 1 << 20)
        .pool_receive_bounds(40, 1 << 20);
    let mut pool = P::new(config, TlsRoots::default()).unwrap();
    let busy = busy_peers
        .each_ref()
        .map(|peer| pool.connect(&ConnectOptions::new(peer.url())).unwrap());
    // Until the busy tasks have filled the pool and the adapter's batch of events (64)
    // and stopped reading: the pool's count stays the same for 50 ms, above what the
    // shared room's resume leaves (10 beyond the two shares).
    let deadline = Instant::now() + T;
    let (mut last, mut since) = (pool.backlog(), Instant::now());
    while last.messages <= 10 || since.elapsed() < Duration::from_millis(50) {
        assert!(
            Instant::now() < deadline,
            "[{}] the busy tasks never filled the pool: {last:?}",
            P::NAME
        );
        std::thread::sleep(Duration::from_millis(1));
        let now = pool.backlog();
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    let quiet = pool
        .connect(&ConnectOptions::new(quiet_peer.url()))
        .unwrap();
    let seen = quiet_peer.wait_for("the pong", T, |s| {
        s.connections.first().is_some_and(|c| !c.pongs.is_empty())
    });
    assert_eq!(seen.connections[0].pongs, [b"still there?".to_vec()]);
    assert!(
        pool.backlog().messages <= 40,
        "[{}] {:?}",
        P::NAME,
        pool.backlog()
    );
    // Taking the events resumes the busy tasks: every flooded message arrives, in order.
    let events = pool.events_until("every flooded message", T, |e| messages(e).len() == 200);
    for task in &busy {
        let got: Vec<Message> = events
            .iter()
            .filter_map(|e| match e {
                Event::Message { conn, message, .. } if *conn == task.id() => Some(message.clone()),
                _ => None,
            })
            .collect();
        let want: Vec<Message> = (0..100)
            .map(|n| Message::text(format!("flood {n}")))
            .collect();
        assert_eq!(got, want, "[{}]", P::NAME);
    }
    assert_eq!(quiet.state(), ReadyState::Open, "[{}]", P::NAME);
}

/// A task whose peer floods it faster than the application takes the messages leaves the
/// other tasks read: a quiet task's echo arrives while the flood goes on. (The blocking
/// adapter's receiving thread once made the flooding connection's read passes, one waiting
/// each time it came to read, without looking at the other sockets: a quiet connection's
/// messages, pongs and close frame waited for the flood to end, and its keepalive ended it.)
fn a_quiet_task_reads_on_while_another_floods<P: PoolAdapter>() {
    let flood = FloodServer::start(Flood::new(32).duration(Duration::from_secs(60)));
    let echo = Peer::start(Mode::Echo);
    let mut pool = P::new(config(), TlsRoots::default()).unwrap();
    let flooded = pool.connect(&ConnectOptions::new(flood.url())).unwrap();
    let quiet = pool.connect(&ConnectOptions::new(echo.url())).unwrap();
    // Both open, and the flood well under way (the backlog filling and emptying).
    let (mut opened, mut floods) = (0, 0u64);
    let deadline = Instant::now() + T;
    while opened < 2 || floods < 20_000 {
        assert!(
            Instant::now() < deadline,
            "[{}] {opened} opened, {floods} flooded messages",
            P::NAME
        );
        match pool.expect_event("the opens and the flood") {
            Event::Open { .. } => opened += 1,
            Event::Message { conn, .. } => {
                assert_eq!(conn, flooded.id(), "[{}]", P::NAME);
                floods += 1;
            }
            _ => {}
        }
    }
    quiet.try_send(Message::text("still there?")).unwrap();
    let asked = Instant::now();
    loop {
        assert!(
            asked.elapsed() < T,
            "[{}] the quiet task's echo unread after {T:?} of flood ({floods} flooded messages)",
            P::NAME
        );
        match pool.expect_event("the echo") {
            Event::Message { conn, message, .. } if conn == quiet.id() => {
                assert_eq!(message, Message::text("still there?"), "[{}]", P::NAME);
                break;
            }
            Event::Message { .. } => floods += 1,
            _ => {}
        }
    }
    assert!(
        flood.report(Duration::ZERO).is_none(),
        "[{}] the flood ended before the echo came",
        P::NAME
    );
    flood.end_flood();
}

wxsocket_tests::on_both_pools!(
    pool_limit_and_independent_connections,
    a_quiet_task_reads_on_while_others_fill_the_pool,
    a_quiet_task_reads_on_while_another_floods,
    a_pool_without_a_share_for_each_connection_is_refused,
    connections_flooded_at_once_hold_the_pool_bound_and_a_message_each,
    pool_credits_out_at_once_pass_the_bound_by_the_room_at_most
);

/// Four connections each read one small message (each tokio connection task is then left
/// holding the credit its pass was given: its share and a quarter of the shared room), the
/// application taking nothing. The first connection's server then floods alone: its task
/// reports pass after pass, each time given a quarter of what is left of the room, and takes
/// the whole room. The others' servers flood next, and each of their tasks reads on the
/// credit it still holds. Counted in messages: the pool holds at most its bound, the shared
/// room (52) and a message a task, as the docs say (a review found the credits' parts not
/// capped; the same test against a bound alone fails on tokio, 136 of 100).
fn pool_credits_out_at_once_pass_the_bound_by_the_room_at_most<P: PoolAdapter>() {
    const N: usize = 4;
    const BOUND: usize = 100;
    // Shares of 12 messages (100 / 2 / 4), a shared room of 52.
    const ROOM: usize = BOUND - N * (BOUND / 2 / N);
    let frame = [0x82u8, 8, 1, 2, 3, 4, 5, 6, 7, 8];
    let burst = frame.repeat(64);
    let floods = GatedFloods::start(N, &frame, burst);
    let config = config()
        .pool_limit(N)
        .receive_bounds(10_000, 1 << 30)
        .pool_receive_bounds(BOUND, 1 << 30);
    let mut pool = P::new(config, TlsRoots::default()).unwrap();
    let tasks: Vec<_> = (0..N)
        .map(|_| pool.connect(&ConnectOptions::new(&floods.url)).unwrap())
        .collect();
    pool.events_until("every open and first message", T, |e| {
        e.iter()
            .filter(|e| matches!(e, Event::Message { .. }))
            .count()
            == N
    });
    floods.open(0..1);
    let first = until_steady(&mut pool).messages;
    floods.open(1..N);
    let most = until_steady(&mut pool).messages.max(first);
    assert!(
        most <= BOUND + ROOM + N,
        "[{}] the pool held {most} messages (the first connection alone {first}), bound {BOUND}, \
         room {ROOM}",
        P::NAME
    );
    drop(tasks);
}

/// Forty connections whose servers start flooding 64 KiB messages at the same moment,
/// the application taking nothing: the pool holds at most its byte bound (1 MiB) and the
/// message each task reads whole past its credit, and every task gets its messages. (A
/// load review: tokio's connection tasks each read on the credit they were last given,
/// the whole shared room each, and a pool of 50 such connections with a 1 MiB bound held
/// 6.9 MiB; the blocking adapter, which asks before every read, 0.8 MiB.)
fn connections_flooded_at_once_hold_the_pool_bound_and_a_message_each<P: PoolAdapter>() {
    const N: usize = 40;
    const SIZE: usize = 64 << 10;
    const BOUND: usize = 1 << 20;
    // A binary frame of SIZE bytes, over and over.
    let mut frame = vec![0x82, 127];
    frame.extend_from_slice(&(SIZE as u64).to_be_bytes());
    frame.resize(frame.len() + SIZE, 7);
    let floods = GatedFloods::start(N, &[], frame);
    let config = config()
        .pool_limit(N)
        .pool_receive_bounds(4096, BOUND)
        .max_message_size(1 << 20);
    let mut pool = P::new(config, TlsRoots::default()).unwrap();
    let tasks: Vec<_> = (0..N)
        .map(|_| pool.connect(&ConnectOptions::new(&floods.url)).unwrap())
        .collect();
    let opened = pool.events_until("every open", T, |e| {
        e.iter().filter(|e| matches!(e, Event::Open { .. })).count() == N
    });
    assert!(
        messages(&opened).is_empty(),
        "[{}] before the flood",
        P::NAME
    );
    floods.open(0..N);
    let most = until_steady(&mut pool).bytes;
    let allowed = BOUND + N * SIZE;
    assert!(
        most <= allowed,
        "[{}] the pool held {most} bytes, more than its bound and a message a task ({allowed})",
        P::NAME
    );
    // Every task read: each has a message waiting.
    let mut waiting = std::collections::BTreeSet::new();
    while waiting.len() < N {
        match pool.next_event(T) {
            Some(Event::Message { conn, .. }) => {
                waiting.insert(pool.task_of(conn).unwrap_or(conn));
            }
            Some(_) => {}
            None => panic!("[{}] {} of {N} tasks had messages", P::NAME, waiting.len()),
        }
    }
    assert!(
        tasks.iter().all(|t| waiting.contains(&t.id())),
        "[{}]",
        P::NAME
    );
    drop(tasks);
}

/// Waits until the pool's count has stayed the same for 300 ms (every connection stopped
/// reading); returns the most it held meanwhile (messages and bytes, each at its most).
fn until_steady<P: PoolAdapter>(pool: &mut P) -> wxsocket_core::Backlog {
    let deadline = Instant::now() + T;
    let (mut most, mut last, mut since) = (pool.backlog(), pool.backlog(), Instant::now());
    while last.messages == 0 || since.elapsed() < Duration::from_millis(300) {
        assert!(
            Instant::now() < deadline,
            "[{}] never steady: {last:?}",
            P::NAME
        );
        std::thread::sleep(Duration::from_millis(2));
        let now = pool.backlog();
        most.messages = most.messages.max(now.messages);
        most.bytes = most.bytes.max(now.bytes);
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    most
}

/// `n` WebSocket servers on one listener (a thread per connection, after a raw upgrade):
/// each sends `first` at once, then, once its gate opens ([`GatedFloods::open`]), `burst`
/// over and over as fast as its socket takes it, until the floods are dropped (then every
/// thread is joined).
struct GatedFloods {
    url: String,
    addr: std::net::SocketAddr,
    go: std::sync::Arc<Vec<std::sync::atomic::AtomicBool>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl GatedFloods {
    fn start(n: usize, first: &[u8], burst: Vec<u8>) -> GatedFloods {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let url = format!("ws://{addr}/");
        let go: Arc<Vec<AtomicBool>> = Arc::new((0..n).map(|_| AtomicBool::new(false)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let (first, burst) = (Arc::new(first.to_vec()), Arc::new(burst));
        let server = {
            let (go, stop) = (Arc::clone(&go), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut floods = Vec::new();
                for i in 0..n {
                    let Ok((mut tcp, _)) = listener.accept() else {
                        break;
                    };
                    // Woken by the drop of a test that ended before every client came.
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let _ = tcp.set_read_timeout(Some(T));
                    let (go, stop) = (Arc::clone(&go), Arc::clone(&stop));
                    let (first, burst) = (Arc::clone(&first), Arc::clone(&burst));
                    floods.push(std::thread::spawn(move || {
                        use std::io::Write;
                        if wxsocket_tests::scenario::raw_upgrade(&mut tcp, None).is_err()
                            || tcp.write_all(&first).is_err()
                        {
                            return;
                        }
                        while !go[i].load(Ordering::SeqCst) && !stop.load(Ordering::SeqCst) {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        // A short write timeout, so that `stop` is seen while the client
                        // does not read.
                        let _ = tcp.set_write_timeout(Some(Duration::from_millis(50)));
                        let mut rest: &[u8] = &burst;
                        while !stop.load(Ordering::SeqCst) {
                            match tcp.write(rest) {
                                Ok(0) => return,
                                Ok(n) => rest = if n == rest.len() { &burst } else { &rest[n..] },
                                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                                Err(_) => return,
                            }
                        }
                    }));
                }
                for flood in floods {
                    let _ = flood.join();
                }
            })
        };
        GatedFloods {
            url,
            addr,
            go,
            stop,
            server: Some(server),
        }
    }

    /// Opens the gates of these servers (in accept order).
    fn open(&self, which: std::ops::Range<usize>) {
        for gate in &self.go[which] {
            gate.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl Drop for GatedFloods {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        // Wakes an accept still waiting (harmless once every client came).
        let _ = std::net::TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(server) = self.server.take() {
            let _ = server.join();
        }
    }
}

/// A pool whose receive bounds leave a connection no share of its own is refused before any
/// IO, naming the bound (a prober's 5,000-connection pool on the default bounds paused every
/// quiet connection for five flooded ones, and its server dropped 4,893 of them).
fn a_pool_without_a_share_for_each_connection_is_refused<P: PoolAdapter>() {
    let thousands = config().pool_limit(5000);
    let refused = |config| match P::new(config, TlsRoots::default()) {
        Ok(_) => panic!("[{}] accepted", P::NAME),
        Err(e) => e.field(),
    };
    assert_eq!(
        refused(thousands.clone()),
        Some("max_pool_received_messages")
    );
    let few_bytes = thousands.clone().pool_receive_bounds(10_000, 9_999);
    assert_eq!(refused(few_bytes), Some("max_pool_received_bytes"));
    let peer = Peer::start(Mode::Echo);
    let mut pool = P::new(
        thousands.pool_receive_bounds(10_000, 64 << 20),
        TlsRoots::default(),
    )
    .unwrap();
    let task = pool.connect(&ConnectOptions::new(peer.url())).unwrap();
    pool.events_until("the open", T, |e| {
        e.iter()
            .any(|e| matches!(e, Event::Open { conn, .. } if *conn == task.id()))
    });
}

fn pool_limit_and_independent_connections<P: PoolAdapter>() {
    let peer = Peer::start(Mode::Echo);
    let mut pool = P::new(config().pool_limit(2), TlsRoots::default()).unwrap();
    let options = ConnectOptions::new(peer.url());
    let one = pool.connect(&options).unwrap();
    let two = pool.connect(&options).unwrap();
    assert_ne!(one.id(), two.id());
    match pool.connect(&options) {
        Err(ConnectError::TooManyConnections { limit: 2 }) => {}
        other => panic!(
            "[{}] expected TooManyConnections, got {:?}",
            P::NAME,
            other.map(|t| t.id())
        ),
    }
    assert_eq!(pool.live(), 2);
    let events = pool.events_until("both to open", T, |e| {
        e.iter().filter(|e| matches!(e, Event::Open { .. })).count() == 2
    });
    for task in [&one, &two] {
        let own: Vec<&Event> = events.iter().filter(|e| e.conn() == task.id()).collect();
        assert!(
            matches!(
                own.as_slice(),
                [Event::Connecting { .. }, Event::Open { .. }]
            ),
            "[{}] {events:#?}",
            P::NAME
        );
        assert_eq!(task.state(), ReadyState::Open);
    }
    one.try_send(Message::text("to one")).unwrap();
    two.try_send(Message::text("to two")).unwrap();
    let events = pool.events_until("two echoes", T, |e| messages(e).len() == 2);
    for e in &events {
        if let Event::Message { conn, message, .. } = e {
            let want = if *conn == one.id() {
                "to one"
            } else {
                "to two"
            };
            assert_eq!(
                message,
                &Message::text(want),
                "[{}] each echo on its own connection",
                P::NAME
            );
        }
    }
    one.close(Some(4000), "one").unwrap();
    let events = pool.events_until_close(one.id(), T);
    assert!(
        events
            .iter()
            .any(|e| *e == close_event(one.id(), 4000, "one", true)),
        "[{}] {events:#?}",
        P::NAME
    );
    assert!(
        events
            .iter()
            .all(|e| !matches!(e, Event::Close { conn, .. } if *conn == two.id())),
        "[{}] closing one task leaves the other alone",
        P::NAME
    );
    assert_eq!(two.state(), ReadyState::Open);
    assert_eq!(pool.live(), 1);
    let three = pool.connect(&options).unwrap();
    assert!(three.id() > two.id());
    pool.events_until("the third to open", T, |e| {
        e.iter()
            .any(|e| matches!(e, Event::Open { conn, .. } if *conn == three.id()))
    });
    assert_eq!(peer.snapshot().accepted, 3);
}

// ----- edge cases found by an independent peer (issue 23, items 1–5) -----

/// Item 1: 1014 (Bad Gateway, RFC 6455 §7.4.2) is a code a peer may send: it is reported
/// as received (tungstenite 0.30 alone turns it into 1002), and a reconnect policy that
/// lists it retries.
/// A server restarting closes with 1001 and keeps TCP open (as a proxy in front of it may):
/// the client has answered and waits for TCP's end, up to [`CLOSE_LINGER`]. Sends in that
/// window, with a reconnect policy that will retry the close, are accepted and go out first
/// on the next connection, in order; they were refused as "closing".
fn sends_during_a_close_the_policy_retries_go_to_the_next_connection<A: Adapter>() {
    let peer = Peer::builder(Mode::CloseWith(1001, "restarting".into()))
        .keep_tcp_after_close()
        .start();
    let policy =
        ReconnectPolicy::default().backoff(Duration::from_millis(10), Duration::from_millis(10));
    // The close timeout caps the linger: long enough that the window is certainly open.
    let mut a: A = client(
        config()
            .close_timeout(Duration::from_secs(10))
            .reconnect(policy),
    );
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    peer.set_mode(Mode::Echo);
    // The client's answer reached the peer (tungstenite writes it before the session has
    // seen the close frame), and the session is closing: the close goes on until TCP ends.
    peer.wait_conn(0, "the client's answer", T, |c| !c.closes.is_empty());
    let deadline = Instant::now() + T;
    while a.state() != ReadyState::Closing {
        assert!(Instant::now() < deadline, "[{}] {:?}", A::NAME, a.state());
        std::thread::sleep(Duration::from_millis(1));
    }
    let texts: Vec<Message> = (0..3)
        .map(|i| Message::text(format!("during the close {i}")))
        .collect();
    let ids: Vec<SendId> = texts
        .iter()
        .map(|m| {
            a.try_send(m.clone())
                .unwrap_or_else(|e| panic!("[{}] refused: {e:?}", A::NAME))
        })
        .collect();
    let events = a.events_until("the three echoes", T, |e| messages(e).len() >= 3);
    assert_eq!(messages(&events), texts, "[{}] {events:#?}", A::NAME);
    assert_eq!(
        events[0],
        close_event(conn, 1001, "restarting", true),
        "[{}] {events:#?}",
        A::NAME
    );
    let next = a.current().expect("the new connection");
    assert_ne!(next, conn);
    let opened = events.iter().position(|e| matches!(e, Event::Open { .. }));
    let first_echo = events
        .iter()
        .position(|e| matches!(e, Event::Message { .. }));
    assert!(opened < first_echo, "[{}] {events:#?}", A::NAME);
    let mut completed = completions(&events);
    if completed.len() < 3 {
        let left = 3 - completed.len();
        let more = a.events_until("the completions", T, |e| completions(e).len() >= left);
        completed.extend(completions(&more));
    }
    assert_eq!(
        completed,
        ids,
        "[{}] every send completed, in order",
        A::NAME
    );
    let seen = peer.wait_conn(1, "the three messages", T, |c| c.messages.len() >= 3);
    assert_eq!(seen.messages, texts, "[{}]", A::NAME);
    a.close(None, "").unwrap();
    a.events_until_close(next, T);
}

fn close_code_1014_is_reported_and_retried_when_configured<A: Adapter>() {
    let peer = Peer::start(Mode::CloseWith(1014, "bad gateway".into()));
    // Not listed (the default codes): reported, final.
    let mut a: A = client(config().reconnect(ReconnectPolicy::default()));
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    let events = a.events_until_close(conn, T);
    assert_eq!(
        events,
        [close_event(conn, 1014, "bad gateway", true)],
        "[{}]",
        A::NAME
    );
    assert_quiet(&mut a);
    // The client's answer is a normal close, not "protocol violation" (1002), which
    // tungstenite sends for a code it does not know.
    let seen = peer.wait_conn(0, "the client's close frame", T, |c| c.ended);
    assert_eq!(
        seen.closes,
        [CloseFrame {
            code: Some(1000),
            reason: "bad gateway".into()
        }],
        "[{}]",
        A::NAME
    );

    // Listed: the same close is retried; the next connection finds an echo server.
    let policy = ReconnectPolicy::default()
        .retry_close_codes(vec![1014])
        .backoff(Duration::from_millis(10), Duration::from_millis(10));
    let mut a: A = client(config().reconnect(policy));
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    peer.set_mode(Mode::Echo);
    let events = a.events_until("the reconnection to open", T, |e| {
        e.iter().any(|e| matches!(e, Event::Open { .. }))
    });
    assert_eq!(
        events[0],
        close_event(conn, 1014, "bad gateway", true),
        "[{}] {events:#?}",
        A::NAME
    );
    assert!(
        matches!(events[1], Event::Reconnecting { attempt: 1, .. }),
        "[{}] {events:#?}",
        A::NAME
    );
    // The new connection, read before the close: on loopback the close handshake can be
    // over (and `current` None) by the time a read after `close` runs.
    let next = a.current().expect("the new connection");
    a.close(None, "").unwrap();
    a.events_until_close(next, T);
}

/// Item 2: RFC 6455 §11.3.3, `Sec-WebSocket-Accept` "MUST NOT appear more than once in
/// an HTTP response": the connection fails even when the right value comes first.
fn a_repeated_sec_websocket_accept_fails_the_connection<A: Adapter>() {
    for second in ["{accept}", "wrong"] {
        let peer = Peer::builder(Mode::Echo)
            .response_header(format!("Sec-WebSocket-Accept: {second}"))
            .start();
        dial_fails_as_a_protocol_error::<A>(&peer, "repeats Sec-WebSocket-Accept");
    }
}

/// A dial to `peer` fails in the handshake as a protocol error whose message holds `words`:
/// `Error`, then `Close` 1006, and nothing after.
fn dial_fails_as_a_protocol_error<A: Adapter>(peer: &Peer, words: &str) {
    let mut a: A = client(config());
    let conn = a.connect(&ConnectOptions::new(peer.url())).unwrap();
    expect_connecting(&mut a, conn);
    let events = a.events_until_close(conn, T);
    let error = expect_error_then_close(A::NAME, conn, &events, 1006);
    let e = transport_error(A::NAME, &error);
    assert_eq!(e.kind, TransportErrorKind::Protocol, "[{}] {e:?}", A::NAME);
    assert!(e.message.contains(words), "[{}] {e}", A::NAME);
    assert_quiet(&mut a);
}

/// Answers a real server or CDN may give that are still a handshake: interim `1xx` answers
/// before the `101` (RFC 9110 §15.2: a client takes them) and a header folded over two lines
/// (RFC 9112 §5.2: read as spaces). Both failed the dial. A `101` in HTTP/1.0 is not an
/// upgrade (RFC 6455 §4.1) and fails it.
fn interim_answers_and_folded_headers_open_and_http_1_0_does_not<A: Adapter>() {
    let peer = Peer::builder(Mode::Echo)
        .interim_answer("HTTP/1.1 100 Continue\r\n\r\n")
        .interim_answer("HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        .response_header("X-Folded: first\r\n second")
        .start();
    let mut a: A = client(config());
    let (conn, handshake) = open(&mut a, &ConnectOptions::new(peer.url()));
    let folded = handshake.headers.get("x-folded").map(|v| v.as_bytes());
    assert_eq!(folded, Some(&b"first   second"[..]), "[{}]", A::NAME);
    a.send(Message::text("after the interim answers")).unwrap();
    let events = a.events_until("the echo", T, |e| !messages(e).is_empty());
    let echoed = messages(&events);
    assert_eq!(
        echoed,
        [Message::text("after the interim answers")],
        "[{}]",
        A::NAME
    );
    a.close(None, "").unwrap();
    a.events_until_close(conn, T);

    let peer = Peer::builder(Mode::Echo)
        .status_line("HTTP/1.0 101 Switching Protocols")
        .start();
    dial_fails_as_a_protocol_error::<A>(&peer, "not HTTP/1.1");
}

/// Item 3, the client began: RFC 6455 §7.1.4, once both close frames were exchanged the
/// close is clean; the client closes TCP itself after `CLOSE_LINGER` (§7.1.1) instead of
/// waiting out the close timeout and calling the close unclean.
fn both_close_frames_exchanged_is_clean_when_the_server_keeps_tcp_open<A: Adapter>() {
    let close_timeout = Duration::from_secs(10);
    let peer = Peer::builder(Mode::Echo).keep_tcp_after_close().start();
    let mut a: A = client(config().close_timeout(close_timeout));
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    let started = Instant::now();
    a.close(Some(4000), "bye").unwrap();
    let events = a.events_until_close(conn, close_timeout + T);
    let elapsed = started.elapsed();
    assert_eq!(
        events,
        [close_event(conn, 4000, "bye", true)],
        "[{}]",
        A::NAME
    );
    assert!(
        elapsed >= CLOSE_LINGER && elapsed < close_timeout,
        "[{}] {elapsed:?}",
        A::NAME
    );
    let seen = peer.wait_conn(0, "the client to close TCP", T, |c| c.ended);
    assert!(seen.client_went_away, "[{}] {seen:#?}", A::NAME);
    assert_quiet(&mut a);
}

/// Item 3, the server began: the client answers the close frame, waits `CLOSE_LINGER` for
/// the server to close TCP, then closes it itself; the close is clean.
fn a_close_the_server_began_is_clean_when_it_keeps_tcp_open<A: Adapter>() {
    let close_timeout = Duration::from_secs(10);
    let peer = Peer::builder(Mode::CloseWith(4444, "server says bye".into()))
        .keep_tcp_after_close()
        .start();
    let mut a: A = client(config().close_timeout(close_timeout));
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    let started = Instant::now();
    let events = a.events_until_close(conn, close_timeout + T);
    let elapsed = started.elapsed();
    assert_eq!(
        events,
        [close_event(conn, 4444, "server says bye", true)],
        "[{}]",
        A::NAME
    );
    assert!(elapsed < close_timeout, "[{}] {elapsed:?}", A::NAME);
    let seen = peer.wait_conn(0, "the client to close TCP", T, |c| c.ended);
    assert_eq!(seen.closes.len(), 1, "[{}] {seen:#?}", A::NAME);
    assert!(seen.client_went_away, "[{}] {seen:#?}", A::NAME);
    assert_quiet(&mut a);
}

/// A server that sends a frame after its close frame (in the same write), and keeps TCP
/// open: the client answers the close, reports it clean, ignores the late frame, and
/// closes its socket (which it used to keep, open and watched, until the driver stopped).
fn a_frame_after_the_servers_close_frame_still_ends_the_connection<A: Adapter>() {
    let mut close = 4000u16.to_be_bytes().to_vec();
    close.extend_from_slice(b"bye");
    let peer = Peer::builder(Mode::Script(vec![Step::Together(vec![
        Step::frame(opcode::CLOSE, close),
        Step::frame(opcode::TEXT, b"late".to_vec()),
    ])]))
    .keep_tcp_after_close()
    .start();
    let mut a: A = client(config());
    let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
    let events = a.events_until_close(conn, T);
    assert_eq!(
        events,
        [close_event(conn, 4000, "bye", true)],
        "[{}]",
        A::NAME
    );
    let seen = peer.wait_conn(0, "the client to close TCP", T, |c| c.ended);
    assert_eq!(seen.closes.len(), 1, "[{}] {seen:#?}", A::NAME);
    assert!(seen.client_went_away, "[{}] {seen:#?}", A::NAME);
    assert_quiet(&mut a);
}

/// Item 5: a close code the peer may not send (RFC 6455 §7.4.1–2) ends like every other
/// protocol failure: an error event, a close event 1002 that is not clean, and a close
/// frame 1002 to the peer.
fn invalid_peer_close_codes_are_protocol_failures<A: Adapter>() {
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
        let peer = Peer::start(Mode::CloseWith(code, "odd".into()));
        let mut a: A = client(config());
        let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
        let events = a.events_until_close(conn, T);
        let error = expect_error_then_close(A::NAME, conn, &events, 1002);
        let e = transport_error(A::NAME, &error);
        assert_eq!(e.kind, TransportErrorKind::Protocol, "[{}] {code}", A::NAME);
        assert!(
            e.message.contains(&format!("invalid close code {code}")),
            "[{}] {e}",
            A::NAME
        );
        let seen = peer.wait_conn(0, "the client's close frame", T, |c| c.ended);
        assert_eq!(
            seen.closes.first().and_then(|c| c.code),
            Some(1002),
            "[{}] {code}: {seen:#?}",
            A::NAME
        );
        assert_quiet(&mut a);
    }
    // A peer that keeps TCP open after its close frame: the client fails the connection as
    // it does any protocol failure, closing TCP once its close frame is out, not after the
    // close timeout (a prober's `wxsocket connect` took the whole 10 s to exit).
    for code in [1005, 5000] {
        let close_timeout = Duration::from_secs(10);
        let peer = Peer::builder(Mode::CloseWith(code, "odd".into()))
            .keep_tcp_after_close()
            .start();
        let mut a: A = client(config().close_timeout(close_timeout));
        let started = Instant::now();
        let (conn, _) = open(&mut a, &ConnectOptions::new(peer.url()));
        let events = a.events_until_close(conn, T);
        expect_error_then_close(A::NAME, conn, &events, 1002);
        let seen = peer.wait_conn(0, "the client to close TCP", close_timeout + T, |c| {
            c.client_went_away
        });
        let elapsed = started.elapsed();
        assert!(
            elapsed < CLOSE_LINGER,
            "[{}] {code}: TCP closed after {elapsed:?}: {seen:#?}",
            A::NAME
        );
    }
}
