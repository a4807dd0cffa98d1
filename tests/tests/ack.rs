//! Delivery acknowledged by the peer (SPEC §8, issue 19) over real sockets, on both
//! adapters: a client sends a numbered message every 2 ms while its server process is
//! killed with SIGKILL and started again three times. The server (`record_server`) prints
//! each message before it reads the next frame, so what it printed is what it read.
//!
//! With acknowledgement on, the record holds every number at least once, every number the
//! client saw delivered is in it, and every number in it twice is one the client marked as
//! a possible duplicate. With it off, the test shows what can be lost: messages reported
//! written (`SendCompleted`) that the server never read.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wxsocket_core::{
    Acknowledgement, ConnectOptions, Event, Message, ReconnectPolicy, SendError, SendFailure,
    SendId, SessionConfig,
};
use wxsocket_tests::adapter::Adapter;
use wxsocket_tests::scenario::raw_peer;
use wxsocket_wire::tls::TlsRoots;

wxsocket_tests::on_both_adapters!(
    acknowledged_messages_survive_three_sigkills,
    without_acknowledgement_written_messages_can_be_lost,
    a_peer_that_never_pongs_fills_the_send_buffer_and_no_more,
    the_ack_timeout_waits_while_reading_is_paused,
    a_close_right_after_sending_delivers_through_its_barrier_ping,
    crossing_close_frames_deliver_nothing_unproven,
    a_peer_that_streams_but_never_answers_a_ping_times_out,
    a_peer_that_takes_100_messages_per_connection_still_gets_them_all,
    a_peer_that_never_acknowledges_is_given_up_after_max_attempts,
    pongs_a_peer_that_never_reads_makes_up_deliver_nothing,
);

/// Messages sent, one every [`PACE`].
const MESSAGES: u64 = 1200;
const PACE: Duration = Duration::from_millis(2);
/// The server is killed after these many messages were sent.
const KILLS: [u64; 3] = [300, 600, 900];
/// How long the server stays down.
const DOWN: Duration = Duration::from_millis(50);
/// How long everything may take after the last send.
const SETTLE: Duration = Duration::from_secs(20);

/// The recording server: a child process serving the test's listening socket.
struct Recorder {
    listener: TcpListener,
    child: Option<Child>,
    reader: Option<JoinHandle<()>>,
    record: Arc<Mutex<Vec<u64>>>,
}

impl Recorder {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut recorder = Self {
            listener,
            child: None,
            reader: None,
            record: Arc::default(),
        };
        recorder.spawn();
        recorder
    }

    fn url(&self) -> String {
        format!("ws://{}/record", self.listener.local_addr().unwrap())
    }

    fn spawn(&mut self) {
        let socket = OwnedFd::from(self.listener.try_clone().unwrap());
        let mut child = Command::new(env!("CARGO_BIN_EXE_record_server"))
            .stdin(Stdio::from(socket))
            .stdout(Stdio::piped())
            .spawn()
            .expect("record_server did not start");
        let stdout = child.stdout.take().unwrap();
        let record = Arc::clone(&self.record);
        self.reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                record.lock().unwrap().push(line.parse().expect("a number"));
            }
        }));
        self.child = Some(child);
    }

    /// SIGKILL: the process gets no chance to close anything; what it printed stays printed.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
    }

    fn record(&self) -> Vec<u64> {
        self.record.lock().unwrap().clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What the client saw of its sends.
#[derive(Default)]
struct Outcomes {
    number: BTreeMap<SendId, u64>,
    delivered: BTreeMap<u64, bool>,
    written: BTreeSet<u64>,
    failed: BTreeMap<u64, SendFailure>,
    /// Final outcomes per send (must end at exactly one each).
    count: BTreeMap<SendId, u32>,
}

impl Outcomes {
    fn take(&mut self, event: Event) {
        match event {
            Event::SendDelivered { id, duplicate, .. } => {
                *self.count.entry(id).or_default() += 1;
                self.delivered.insert(self.number[&id], duplicate);
            }
            Event::SendCompleted { id, .. } => {
                *self.count.entry(id).or_default() += 1;
                self.written.insert(self.number[&id]);
            }
            Event::SendFailed { id, reason, .. } => {
                *self.count.entry(id).or_default() += 1;
                self.failed.insert(self.number[&id], reason);
            }
            _ => {}
        }
    }

    fn settled(&self) -> bool {
        self.count.len() == self.number.len()
    }
}

/// Sends [`MESSAGES`] numbered messages through the kills and restarts, then waits until
/// every send has its outcome; returns the outcomes and the server's record.
fn run<A: Adapter>(session: SessionConfig) -> (Outcomes, Vec<u64>) {
    let mut server = Recorder::start();
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .seed(19);
    let mut client = A::new(session.reconnect(policy), TlsRoots::default()).unwrap();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    let mut outcomes = Outcomes::default();
    for n in 0..MESSAGES {
        if KILLS.contains(&n) {
            server.kill();
            std::thread::sleep(DOWN);
            server.spawn();
        }
        let mut message = Message::text(n.to_string());
        loop {
            match client.try_send(message) {
                Ok(id) => {
                    outcomes.number.insert(id, n);
                    break;
                }
                // Bounded buffer: wait for room, taking events meanwhile.
                Err(
                    SendError::QueueFull(m)
                    | SendError::BufferFull(m)
                    | SendError::CompletionsFull(m),
                ) => {
                    message = m;
                    if let Some(event) = client.next_event(PACE) {
                        outcomes.take(event);
                    }
                }
                Err(e) => panic!("[{}] send {n} refused: {e}", A::NAME),
            }
        }
        while let Some(event) = client.try_event() {
            outcomes.take(event);
        }
        std::thread::sleep(PACE);
    }
    let deadline = Instant::now() + SETTLE;
    while !outcomes.settled() {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_event(left) {
            Some(event) => outcomes.take(event),
            None => panic!(
                "[{}] {} of {} sends have no outcome after {SETTLE:?}",
                A::NAME,
                outcomes.number.len() - outcomes.count.len(),
                outcomes.number.len()
            ),
        }
    }
    client.close(None, "done").unwrap();
    for (id, count) in &outcomes.count {
        assert_eq!(*count, 1, "[{}] {id:?} had {count} outcomes", A::NAME);
    }
    drop(client);
    server.kill();
    (outcomes, server.record())
}

fn acknowledged_messages_survive_three_sigkills<A: Adapter>() {
    // Barriers 100 ms apart, so that each kill finds messages unacknowledged (dozens, at
    // a message every 2 ms) and their resending is exercised: with the default 1 ms, and
    // barrier pings no longer held by Nagle's algorithm, the last message before a kill is
    // often acknowledged already.
    let ack = Acknowledgement::new()
        .delay(Duration::from_millis(100))
        .timeout(Duration::from_secs(2));
    let (outcomes, record) = run::<A>(SessionConfig::default().acknowledge(ack));
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for n in &record {
        *seen.entry(*n).or_default() += 1;
    }
    assert!(
        outcomes.written.is_empty(),
        "SendCompleted with acknowledgement on"
    );
    assert!(
        outcomes.failed.is_empty(),
        "[{}] failed sends: {:?}",
        A::NAME,
        outcomes.failed
    );
    for n in 0..MESSAGES {
        assert!(
            seen.contains_key(&n),
            "[{}] {n} never reached the server",
            A::NAME
        );
        assert!(
            outcomes.delivered.contains_key(&n),
            "[{}] {n} not delivered",
            A::NAME
        );
    }
    let twice: Vec<_> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, _)| *n)
        .collect();
    for n in &twice {
        assert_eq!(
            outcomes.delivered.get(n),
            Some(&true),
            "[{}] {n} arrived twice but was not marked as a possible duplicate",
            A::NAME
        );
    }
    let marked = outcomes.delivered.values().filter(|d| **d).count();
    assert!(
        marked > 0,
        "[{}] three kills and nothing was resent",
        A::NAME
    );
    eprintln!(
        "[{}] acknowledgement on: {MESSAGES} sent, all delivered, {marked} resent (marked), {} arrived twice",
        A::NAME,
        twice.len()
    );
}

fn without_acknowledgement_written_messages_can_be_lost<A: Adapter>() {
    let (outcomes, record) = run::<A>(SessionConfig::default());
    let recorded: BTreeSet<u64> = record.iter().copied().collect();
    assert!(outcomes.delivered.is_empty());
    // Nothing is resent without acknowledgement: no number arrives twice.
    assert_eq!(recorded.len(), record.len(), "a message arrived twice");
    // What a written message is worth: the ones the server never read.
    let lost: Vec<_> = outcomes.written.difference(&recorded).collect();
    for n in &recorded {
        assert!(
            outcomes.written.contains(n),
            "[{}] {n} arrived but was not reported written",
            A::NAME
        );
    }
    eprintln!(
        "[{}] acknowledgement off: {} written, {} failed, {} written but never read by the server: {lost:?}",
        A::NAME,
        outcomes.written.len(),
        outcomes.failed.len(),
        lost.len()
    );
}

/// A peer that reads everything and answers nothing: the messages it read stay
/// unacknowledged, so they keep their room in the send buffer. Sends are refused at the
/// buffer's bound (nothing grows past it, however long the peer stays quiet), and at the
/// ack timeout every one of them fails as `MaybeDelivered`, handed back.
fn a_peer_that_never_pongs_fills_the_send_buffer_and_no_more<A: Adapter>() {
    use wxsocket_core::{ConnectionError, ReadyState};
    use wxsocket_tests::peer::{Mode, Peer};
    const BOUND: usize = 64 << 10;
    const SIZE: usize = 1 << 10;
    let timeout = Duration::from_secs(2);
    let peer = Peer::start(Mode::Silent);
    let session = SessionConfig::default()
        .queue_bounds(64, BOUND)
        .max_buffered_bytes(BOUND)
        .acknowledge(Acknowledgement::new().timeout(timeout));
    let mut client = A::new(session, TlsRoots::default()).unwrap();
    let (conn, _) = wxsocket_tests::scenario::open(&mut client, &ConnectOptions::new(peer.url()));
    let mut accepted = 0;
    loop {
        match client.try_send(Message::binary(vec![accepted as u8; SIZE])) {
            Ok(_) => accepted += 1,
            Err(e) if e.is_full() => break,
            Err(e) => panic!("[{}] refused: {e}", A::NAME),
        }
        assert!(
            client.buffered_amount() <= BOUND,
            "[{}] past the bound",
            A::NAME
        );
    }
    assert!(
        accepted * SIZE <= BOUND,
        "[{}] {accepted} KiB accepted",
        A::NAME
    );
    assert!(
        accepted >= BOUND / SIZE - 1,
        "[{}] only {accepted} accepted",
        A::NAME
    );
    // The peer reads them all: written, and still holding their room.
    peer.wait_for("every message read", EVENT_WAIT, |s| {
        s.connections
            .first()
            .is_some_and(|c| c.messages.len() == accepted)
    });
    assert!(
        client.buffered_amount() > BOUND - SIZE,
        "[{}] room came back",
        A::NAME
    );
    assert!(
        matches!(client.try_send(Message::text("more")), Err(e) if e.is_full()),
        "[{}] a send was accepted past the bound",
        A::NAME
    );
    // No pong ever comes: every message fails, handed back, then the connection ends.
    let (mut failed, mut ack_timeout, mut close) = (0, false, None);
    let deadline = Instant::now() + timeout + EVENT_WAIT;
    while close.is_none() && Instant::now() < deadline {
        match client.next_event(Duration::from_millis(100)) {
            Some(Event::SendFailed {
                reason: SendFailure::MaybeDelivered,
                message: Some(_),
                ..
            }) => failed += 1,
            Some(Event::SendDelivered { .. }) => panic!("[{}] delivered without a pong", A::NAME),
            Some(Event::Error {
                error: ConnectionError::AckTimeout(_),
                ..
            }) => ack_timeout = true,
            Some(Event::Close { code, .. }) => close = Some(code),
            _ => {}
        }
    }
    assert!(ack_timeout, "[{}] no AckTimeout", A::NAME);
    assert_eq!(failed, accepted, "[{}] not every message failed", A::NAME);
    assert!(close.is_some(), "[{}] the connection did not end", A::NAME);
    assert_eq!(client.state(), ReadyState::Closed);
    assert_eq!(client.buffered_amount(), 0);
    let _ = conn;
}

/// A peer that accepts every connection, reads every message and answers no ping: each
/// connection ends at the ack timeout and the messages are resent to the next one. Those
/// connections acknowledged nothing, so they do not end the run of reconnect attempts, and
/// `max_attempts` ends it: two retries, three connections, then every message fails as
/// `MaybeDelivered`, once. (Each open used to start the count afresh, and the messages went
/// round for ever with no outcome.)
fn a_peer_that_never_acknowledges_is_given_up_after_max_attempts<A: Adapter>() {
    use wxsocket_tests::peer::{Mode, Peer};
    let peer = Peer::start(Mode::Silent);
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .max_attempts(Some(2));
    let session = SessionConfig::default()
        .acknowledge(Acknowledgement::new().timeout(Duration::from_millis(300)))
        .reconnect(policy);
    let mut client = A::new(session, TlsRoots::default()).unwrap();
    wxsocket_tests::scenario::open(&mut client, &ConnectOptions::new(peer.url()));
    let ids: Vec<SendId> = (0..3)
        .map(|i| client.try_send(Message::text(format!("m{i}"))).unwrap())
        .collect();
    let (mut failed, mut attempts, mut closes) = (Vec::new(), Vec::new(), 0);
    let deadline = Instant::now() + EVENT_WAIT;
    while failed.len() < ids.len() || closes < 3 {
        assert!(
            Instant::now() < deadline,
            "[{}] still going after {EVENT_WAIT:?}: {closes} closes, retries {attempts:?}",
            A::NAME
        );
        match client.next_event(Duration::from_millis(100)) {
            Some(Event::SendFailed {
                id,
                reason: SendFailure::MaybeDelivered,
                ..
            }) => failed.push(id),
            Some(Event::SendFailed { id, reason, .. }) => {
                panic!("[{}] {id:?} failed as {reason:?}", A::NAME)
            }
            Some(Event::SendDelivered { .. }) => panic!("[{}] delivered without a pong", A::NAME),
            Some(Event::Reconnecting { attempt, .. }) => attempts.push(attempt),
            Some(Event::Close { .. }) => closes += 1,
            _ => {}
        }
    }
    assert_eq!(
        failed,
        ids,
        "[{}] each message fails once, in order",
        A::NAME
    );
    assert_eq!(attempts, [1, 2], "[{}]", A::NAME);
    // Nothing more: no fourth connection.
    assert!(client.next_event(Duration::from_millis(300)).is_none());
    let seen = peer.snapshot();
    assert_eq!(seen.connections.len(), 3, "[{}]", A::NAME);
    for c in &seen.connections {
        assert_eq!(
            c.messages.len(),
            3,
            "[{}] each connection read them",
            A::NAME
        );
    }
}

/// While the application leaves its messages untaken, reading pauses at the receive bound
/// and the peer's pong waits on the socket behind the backlog: the ack timeout must not end
/// the connection for it. The peer floods 1,000 messages before it reads the client's one
/// (then echoes it and answers the barrier ping); the application is busy for three ack
/// timeouts, then takes everything.
fn the_ack_timeout_waits_while_reading_is_paused<A: Adapter>() {
    use wxsocket_tests::peer::{Mode, Peer, Step};
    const FLOOD: usize = 1000;
    let timeout = Duration::from_millis(500);
    let script = (0..FLOOD)
        .map(|i| Step::Message(Message::text(i.to_string())))
        .collect();
    let peer = Peer::start(Mode::Script(script));
    let session = SessionConfig::default()
        .receive_bounds(10, 1 << 20)
        .acknowledge(Acknowledgement::new().timeout(timeout));
    let mut client = A::new(session, TlsRoots::default()).unwrap();
    wxsocket_tests::scenario::open(&mut client, &ConnectOptions::new(peer.url()));
    let id = client.try_send(Message::text("mine")).unwrap();
    // The application is busy: it takes no events for three ack timeouts.
    std::thread::sleep(3 * timeout);
    let (mut received, mut delivered) = (Vec::new(), false);
    let deadline = Instant::now() + EVENT_WAIT;
    while !(delivered && received.len() == FLOOD + 1) && Instant::now() < deadline {
        match client.next_event(Duration::from_millis(100)) {
            Some(Event::Message { message, .. }) => received.push(message),
            Some(Event::SendDelivered { id: got, .. }) if got == id => delivered = true,
            Some(
                event @ (Event::Error { .. } | Event::Close { .. } | Event::SendFailed { .. }),
            ) => {
                panic!("[{}] {event:?} after {} messages", A::NAME, received.len())
            }
            _ => {}
        }
    }
    let mut expected: Vec<_> = (0..FLOOD).map(|i| Message::text(i.to_string())).collect();
    expected.push(Message::text("mine"));
    assert_eq!(
        received,
        expected,
        "[{}] messages lost or reordered",
        A::NAME
    );
    assert!(delivered, "[{}] the send was not delivered", A::NAME);
}

/// The send outcomes and the close code of a client closing, until its close event.
fn outcomes_until_closed<A: Adapter>(client: &mut A) -> (Vec<SendId>, Vec<SendId>, u16) {
    let (mut delivered, mut failed) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + EVENT_WAIT;
    while Instant::now() < deadline {
        match client.next_event(Duration::from_millis(100)) {
            Some(Event::SendDelivered { id, .. }) => delivered.push(id),
            Some(Event::SendFailed {
                id,
                reason: SendFailure::MaybeDelivered,
                message: Some(_),
                ..
            }) => failed.push(id),
            Some(Event::Close { code, .. }) => return (delivered, failed, code),
            Some(Event::SendFailed { id, reason, .. }) => {
                panic!("[{}] {id}: {reason:?}", A::NAME)
            }
            _ => {}
        }
    }
    panic!("[{}] no close event within {EVENT_WAIT:?}", A::NAME)
}

/// A close straight after sending, before the session's own barrier is due: the barrier
/// ping that goes just before the close frame is answered before the close frame is, and
/// its pong delivers every message.
fn a_close_right_after_sending_delivers_through_its_barrier_ping<A: Adapter>() {
    use wxsocket_tests::peer::{Mode, Peer};
    let peer = Peer::start(Mode::Echo);
    let ack = Acknowledgement::new()
        .delay(Duration::from_secs(30))
        .timeout(Duration::from_secs(30));
    let mut client: A = acknowledging_client(ack, &peer.url());
    let ids: Vec<SendId> = (0..3)
        .map(|i| client.try_send(Message::text(format!("m{i}"))).unwrap())
        .collect();
    client.close(None, "bye").unwrap();
    let (delivered, failed, code) = outcomes_until_closed(&mut client);
    assert_eq!(delivered, ids, "[{}] delivered", A::NAME);
    assert!(failed.is_empty(), "[{}] failed: {failed:?}", A::NAME);
    assert_eq!(code, 1000, "[{}] close code", A::NAME);
    let snapshot = peer.snapshot();
    let conn = snapshot.connections.first().expect("a connection");
    assert_eq!(conn.messages.len(), 3, "[{}] the peer read them", A::NAME);
}

/// Close frames that cross: the peer sends its own close frame once ours is in its socket,
/// unread. It is no answer to ours, and the peer, closing, answers no ping: nothing proves
/// the messages read, so each fails as `MaybeDelivered`, handed back (they were reported
/// delivered on the peer's close frame alone until 2026-12-04), although the peer does read
/// them afterwards here. The peer is a raw server, so that it can wait (peeking) until the
/// client's frames are all in its socket before it sends its close frame.
fn crossing_close_frames_deliver_nothing_unproven<A: Adapter>() {
    use std::io::{Read, Write};
    use wxsocket_core::ReadyState;
    let (url, server) = raw_peer("cross", |mut stream| {
        stream
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let deadline = Instant::now() + EVENT_WAIT;
        let mut buf = vec![0u8; 4096];
        // Wait until the client's close frame is in the socket, reading nothing.
        loop {
            let n = stream.peek(&mut buf).unwrap_or(0);
            if client_frames(&buf[..n]).iter().any(|(op, _)| *op == 0x8) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the client's close frame never came"
            );
            std::thread::sleep(Duration::from_millis(1)); // a poll, not a wait for an event
        }
        // The server's own close frame (1001), sent without reading the client's.
        stream.write_all(&[0x88, 0x02, 0x03, 0xE9]).unwrap();
        // Then it reads what the client sent, and answers nothing (it is closing).
        let mut read = Vec::new();
        while !client_frames(&read).iter().any(|(op, _)| *op == 0x8) {
            assert!(
                Instant::now() < deadline,
                "the client's frames were not read"
            );
            if let Ok(n) = stream.read(&mut buf) {
                read.extend_from_slice(&buf[..n]);
            }
        }
        let _ = stream.shutdown(std::net::Shutdown::Both);
        client_frames(&read)
            .into_iter()
            .filter(|(op, _)| *op == 0x1)
            .map(|(_, payload)| String::from_utf8(payload).unwrap())
            .collect::<Vec<_>>()
    });
    let mut client: A = acknowledging_client(
        Acknowledgement::new().timeout(Duration::from_secs(30)),
        &url,
    );
    let ids: Vec<SendId> = (0..3)
        .map(|i| client.try_send(Message::text(format!("m{i}"))).unwrap())
        .collect();
    client.close(None, "bye").unwrap();
    assert_eq!(client.state(), ReadyState::Closing);
    let (delivered, failed, code) = outcomes_until_closed(&mut client);
    assert!(
        delivered.is_empty(),
        "[{}] delivered: {delivered:?}",
        A::NAME
    );
    assert_eq!(failed, ids, "[{}] failed as MaybeDelivered", A::NAME);
    assert_eq!(code, 1001, "[{}] the peer's close code", A::NAME);
    assert_eq!(
        server.join().unwrap(),
        ["m0", "m1", "m2"],
        "[{}] the peer read the messages",
        A::NAME
    );
}

/// A raw WebSocket peer on loopback at `/path`: it accepts one client, answers its
/// handshake (tungstenite), then runs `serve` on the socket itself, so that a test can
/// write frames and read bytes as no well-behaved peer would. Returns the URL and the
/// peer's thread.
/// A peer that reads 100 messages per connection (answering pings as tungstenite does), then
/// ends it (its FIN after its pongs), while the client has 300 to deliver: a reconnect's
/// resent backlog gets a barrier at least every 64 messages, so every connection
/// acknowledges some and the backlog shrinks. With one barrier after the whole backlog, no
/// connection acknowledged anything once it was over 100, and the client resent it for ever.
fn a_peer_that_takes_100_messages_per_connection_still_gets_them_all<A: Adapter>() {
    const PER_CONNECTION: usize = 100;
    const TOTAL: usize = 300;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("ws://{addr}/");
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = std::thread::spawn({
        let done = Arc::clone(&done);
        move || {
            let mut connections = 0;
            loop {
                let (tcp, _) = listener.accept().unwrap();
                if done.load(std::sync::atomic::Ordering::SeqCst) {
                    return connections;
                }
                connections += 1;
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let Ok(mut ws) = tungstenite::accept(tcp) else {
                    continue;
                };
                let mut read = 0;
                while read < PER_CONNECTION {
                    match ws.read() {
                        Ok(m) if m.is_text() || m.is_binary() => read += 1,
                        Ok(_) => {}
                        Err(_) => break,
                    }
                    let _ = ws.flush();
                }
                // The pongs are out; end the connection, then read to the client's end so
                // that nothing unread turns the close into a reset.
                let tcp = ws.get_mut();
                let _ = tcp.shutdown(std::net::Shutdown::Write);
                let _ = std::io::copy(tcp, &mut std::io::sink());
            }
        }
    });
    let policy = ReconnectPolicy::default()
        .backoff(Duration::from_millis(5), Duration::from_millis(20))
        .carry_queue(true);
    let session = SessionConfig::default()
        .acknowledge(Acknowledgement::new())
        .reconnect(policy);
    let mut client = A::new(session, TlsRoots::default()).unwrap();
    wxsocket_tests::scenario::open(&mut client, &ConnectOptions::new(&url));
    let sent: BTreeSet<SendId> = (0..TOTAL)
        .map(|i| client.try_send(Message::text(format!("m{i}"))).unwrap())
        .collect();
    let mut delivered = BTreeSet::new();
    let deadline = Instant::now() + SETTLE;
    while delivered.len() < TOTAL {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_event(left) {
            Some(Event::SendDelivered { id, .. }) => {
                delivered.insert(id);
            }
            Some(Event::SendFailed { id, reason, .. }) => {
                panic!("[{}] send {id:?} failed: {reason:?}", A::NAME)
            }
            Some(_) => {}
            None => panic!(
                "[{}] {} of {TOTAL} delivered after {SETTLE:?}",
                A::NAME,
                delivered.len()
            ),
        }
    }
    assert_eq!(delivered, sent, "[{}]", A::NAME);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    client.shutdown();
    // Wakes the server's accept, which then returns.
    drop(std::net::TcpStream::connect(addr));
    let connections = server.join().unwrap();
    assert!(connections >= 3, "[{}] {connections} connections", A::NAME);
}

/// A client with delivery acknowledgement `ack`, open to `url`.
fn acknowledging_client<A: Adapter>(ack: Acknowledgement, url: &str) -> A {
    let mut client = A::new(
        SessionConfig::default().acknowledge(ack),
        TlsRoots::default(),
    )
    .unwrap();
    wxsocket_tests::scenario::open(&mut client, &ConnectOptions::new(url));
    client
}

/// The complete frames a client wrote at the start of `bytes` (masked, payloads under 126
/// bytes, as in the tests that use it): opcode and unmasked payload each.
fn client_frames(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while let [b0, b1, m0, m1, m2, m3, after @ ..] = rest {
        let len = usize::from(b1 & 0x7f);
        if len >= 126 || after.len() < len {
            break;
        }
        let mask = [*m0, *m1, *m2, *m3];
        let payload = after[..len]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4]);
        frames.push((b0 & 0x0f, payload.collect()));
        rest = &after[len..];
    }
    frames
}

/// A peer that sends a message every 20 ms and never answers a ping (against RFC 6455
/// §5.5.2; it reads and discards everything): each message extends the wait for the
/// barrier's pong, but not past eight timeouts, so the connection ends in `AckTimeout`
/// and the message fails as `MaybeDelivered`. It used to be extended for ever.
fn a_peer_that_streams_but_never_answers_a_ping_times_out<A: Adapter>() {
    use std::io::{Read, Write};
    use wxsocket_core::ConnectionError;
    // One second: only a stall of the writer or the client longer than that on a loaded
    // machine could end the wait before the stream extends it (the cap is eight seconds).
    let timeout = Duration::from_secs(1);
    let wait = 2 * EVENT_WAIT;
    let (url, server) = raw_peer("stream", move |mut writer| {
        let mut reader = writer.try_clone().unwrap();
        let discard = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
        });
        let until = Instant::now() + wait;
        // A text frame "data", unmasked, until the client goes away.
        while Instant::now() < until && writer.write_all(b"\x81\x04data").is_ok() {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = writer.shutdown(std::net::Shutdown::Both);
        discard.join().unwrap();
    });
    let mut client: A = acknowledging_client(Acknowledgement::new().timeout(timeout), &url);
    let sent = Instant::now();
    let id = client.try_send(Message::text("mine")).unwrap();
    let (mut streamed, mut timed_out, mut failed) = (0, None, false);
    let deadline = sent + wait;
    while Instant::now() < deadline {
        match client.next_event(Duration::from_millis(100)) {
            Some(Event::Message { .. }) => streamed += 1,
            Some(Event::Error {
                error: ConnectionError::AckTimeout(_),
                ..
            }) => timed_out = Some(sent.elapsed()),
            Some(Event::SendFailed {
                id: got,
                reason: SendFailure::MaybeDelivered,
                ..
            }) if got == id => failed = true,
            Some(Event::SendDelivered { .. }) => panic!("[{}] delivered without a pong", A::NAME),
            Some(Event::Close { .. }) => break,
            _ => {}
        }
    }
    let timed_out = timed_out.unwrap_or_else(|| {
        panic!(
            "[{}] no AckTimeout within {wait:?} ({streamed} messages streamed)",
            A::NAME
        )
    });
    assert!(failed, "[{}] the message did not fail", A::NAME);
    // The stream extended the wait past one timeout (the cap is eight after the ping).
    assert!(
        timed_out > 2 * timeout && streamed > 20,
        "[{}] timed out after {timed_out:?}, {streamed} messages streamed",
        A::NAME
    );
    drop(client);
    server.join().unwrap();
}

/// A peer that never reads and sends pongs nobody asked for, with the payloads a barrier
/// ping would have if they were the counter alone (`wxsocket-ack 1` to `5`), or the counter
/// and a guess: nothing is delivered, and the message fails as `MaybeDelivered` after the
/// acknowledgement timeout (a reviewer's probe saw both messages `delivered` by such pongs,
/// on both adapters).
fn pongs_a_peer_that_never_reads_makes_up_deliver_nothing<A: Adapter>() {
    use std::io::Write;
    use wxsocket_core::ConnectionError;
    let timeout = Duration::from_millis(500);
    let (url, server) = raw_peer("pongs", move |mut writer| {
        let until = Instant::now() + EVENT_WAIT;
        let guesses: Vec<Vec<u8>> = (1..=5)
            .map(|n| format!("wxsocket-ack {n}"))
            .chain(["wxsocket-ack 1 0000000000000000".to_owned()])
            .map(|payload| {
                let mut frame = vec![0x8a, payload.len() as u8];
                frame.extend_from_slice(payload.as_bytes());
                frame
            })
            .collect();
        // Unmasked pongs, every 20 ms, until the client goes away; nothing is read.
        'sending: while Instant::now() < until {
            for frame in &guesses {
                if writer.write_all(frame).is_err() {
                    break 'sending;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let mut client: A = acknowledging_client(Acknowledgement::new().timeout(timeout), &url);
    let id = client.try_send(Message::text("mine")).unwrap();
    let (mut timed_out, mut failed) = (false, false);
    let deadline = Instant::now() + EVENT_WAIT;
    while Instant::now() < deadline && !(timed_out && failed) {
        match client.next_event(Duration::from_millis(100)) {
            Some(Event::Error {
                error: ConnectionError::AckTimeout(_),
                ..
            }) => timed_out = true,
            Some(Event::SendFailed {
                id: got,
                reason: SendFailure::MaybeDelivered,
                ..
            }) if got == id => failed = true,
            Some(Event::SendDelivered { .. }) => {
                panic!("[{}] delivered by a pong the peer made up", A::NAME)
            }
            _ => {}
        }
    }
    assert!(
        timed_out && failed,
        "[{}] timed out: {timed_out}, failed: {failed}",
        A::NAME
    );
    drop(client);
    server.join().unwrap();
}

/// How long the peer or the client may take to do what is awaited.
const EVENT_WAIT: Duration = Duration::from_secs(10);
