//! Flow control over loopback (SPEC §7): a client that does not take its events stops
//! reading, so the server's writes block; a waiting send waits for room instead of being
//! refused. Servers are plain tungstenite (or raw frames) on std threads; every wait is
//! bounded.

mod common;

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::Message as WsMessage;
use tungstenite::protocol::{Role, WebSocket};
use wxsocket_blocking::wx::{ConnectSocket, WxSocket};
use wxsocket_blocking::{
    Client, Config, ConnectOptions, Event, Events, Message, ReadyState, SendError, SendFailed,
    SessionConfig, TaskPool,
};

/// How long any wait in a test may take.
const WAIT: Duration = Duration::from_secs(20);

/// How long the flooding server's writes must stay refused before it reports `Blocked`.
const STALLED: Duration = Duration::from_millis(300);

/// What the flooding server is told to do once its writes block.
enum Cmd {
    /// Write again until the socket refuses, and say how many more messages it took.
    Probe,
    /// Write (blocking) until `total` messages are sent, then serve the close handshake
    /// (answering pings meanwhile).
    Finish { total: u64 },
}

/// What the flooding server reports.
#[derive(Debug, PartialEq)]
enum Report {
    /// Non-blocking writes were refused for `STALLED` after `sent` whole messages.
    Blocked { sent: u64 },
    /// The socket refused again after `more` messages (a few at most, if the client's
    /// kernel compacted its receive queue; many if the client read on).
    Probed { more: u64 },
    /// Every message up to `total` is written.
    Finished { total: u64 },
    /// The connection ended (close handshake done, or an error).
    Ended,
}

/// A server that floods numbered binary messages of `size` bytes (the number first, 8
/// bytes big-endian) as fast as the socket takes them, on a non-blocking socket, until its
/// writes stay refused (`STALLED`).
struct Flood {
    addr: SocketAddr,
    cmd: Sender<Cmd>,
    reports: Receiver<Report>,
    thread: Option<JoinHandle<()>>,
}

impl Flood {
    fn start(size: usize) -> Self {
        assert!(size >= 8);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (cmd, cmd_rx) = mpsc::channel();
        let (report, reports) = mpsc::channel();
        let thread = std::thread::spawn(move || flood(listener, size, cmd_rx, report));
        Self {
            addr,
            cmd,
            reports,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/flood", self.addr)
    }

    fn report(&self) -> Report {
        self.reports
            .recv_timeout(WAIT)
            .expect("the flooding server did not report in time")
    }

    /// Waits until the server's writes block; returns how many messages it sent.
    fn blocked(&self) -> u64 {
        match self.report() {
            Report::Blocked { sent } => sent,
            other => panic!("expected the server's writes to block, got {other:?}"),
        }
    }

    /// How many more messages the server could write since it blocked.
    fn probe(&self) -> u64 {
        self.cmd.send(Cmd::Probe).unwrap();
        match self.report() {
            Report::Probed { more } => more,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Lets the server write up to `total` messages (at least the one it had begun, so
    /// at least `sent + 1` for the `sent` it reported blocked at); returns that count. The
    /// server reports `Finished` once they are all written, which may take the client
    /// reading them.
    fn finish(&self, sent: u64, total: u64) -> u64 {
        self.cmd.send(Cmd::Finish { total }).unwrap();
        total.max(sent + 1)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        // Unblocks a server still waiting for a command or a connection.
        let (cmd, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.cmd, cmd));
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A server-to-client frame (unmasked, FIN, binary).
fn frame(n: u64, size: usize) -> Vec<u8> {
    let mut out = vec![0x82];
    match size {
        0..=125 => out.push(size as u8),
        126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(size as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(size as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&n.to_be_bytes());
    out.resize(out.len() + size - 8, b'x');
    out
}

fn flood(listener: TcpListener, size: usize, cmd: Receiver<Cmd>, report: Sender<Report>) {
    let Ok((mut stream, _)) = listener.accept() else {
        return;
    };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    // The handshake on a clone; the client sends nothing after it, so nothing is lost
    // with the clone's WebSocket.
    if tungstenite::accept(stream.try_clone().unwrap()).is_err() {
        return;
    }
    stream.set_nonblocking(true).unwrap();
    let mut sent = 0u64;
    let mut pending = frame(sent, size);
    let mut at = 0;
    // Flood until the socket has refused for `STALLED` without a break: one refusal
    // only says the client is slower than this loop for a moment (seen on a loaded CI
    // machine), a refusal that lasts says the client stopped reading.
    let mut refused_since: Option<Instant> = None;
    loop {
        match stream.write(&pending[at..]) {
            Ok(n) => {
                refused_since = None;
                at += n;
                if at == pending.len() {
                    sent += 1;
                    pending = frame(sent, size);
                    at = 0;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let since = *refused_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= STALLED {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    if report.send(Report::Blocked { sent }).is_err() {
        return;
    }
    loop {
        match cmd.recv_timeout(WAIT) {
            Ok(Cmd::Probe) => {
                let before = sent;
                loop {
                    match stream.write(&pending[at..]) {
                        Ok(n) => {
                            at += n;
                            if at == pending.len() {
                                sent += 1;
                                pending = frame(sent, size);
                                at = 0;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(_) => return,
                    }
                }
                let _ = report.send(Report::Probed {
                    more: sent - before,
                });
            }
            Ok(Cmd::Finish { total }) => {
                stream.set_nonblocking(false).unwrap();
                if stream.write_all(&pending[at..]).is_err() {
                    return;
                }
                sent += 1;
                while sent < total {
                    if stream.write_all(&frame(sent, size)).is_err() {
                        return;
                    }
                    sent += 1;
                }
                let _ = report.send(Report::Finished { total: sent });
                break;
            }
            Err(_) => return,
        }
    }
    // Every frame was written whole, so tungstenite can take the connection over: it
    // answers pings and the client's close frame.
    let mut ws = WebSocket::from_raw_socket(stream, Role::Server, None);
    while ws.read().is_ok() {}
    let _ = report.send(Report::Ended);
}

/// The flooding server's messages, where the test does not vary them.
const SIZE: usize = 32;

/// The server, blocked, could write only `more` more messages of `size` bytes later: what
/// the client's kernel lets through when it compacts its receive queue (some 250 KB seen),
/// not what a client that reads on would take (everything).
fn assert_blocked(more: u64, size: usize) {
    let bytes = more as usize * (size + 10);
    assert!(
        bytes <= 1 << 20,
        "the server wrote {more} more messages ({bytes} bytes): the client read on"
    );
}

/// The number a flood message carries.
fn number(message: &Message) -> u64 {
    u64::from_be_bytes(message.as_bytes()[..8].try_into().unwrap())
}

fn config(session: SessionConfig) -> Config {
    Config::default().session(session)
}

/// Takes events until `Open`.
fn until_open(events: &Events) {
    loop {
        match events.recv_timeout(WAIT).expect("no Open in time") {
            Event::Open { .. } => return,
            Event::Connecting { .. } => {}
            other => panic!("unexpected event before open: {other:?}"),
        }
    }
}

/// Takes events until `total` numbered messages arrived, checking that each comes once
/// and in order, from `first`; calls `each` after every message. Returns the largest
/// backlog `sample` reported.
fn read_numbered(
    events: &Events,
    first: u64,
    total: u64,
    mut sample: impl FnMut() -> usize,
) -> usize {
    let mut next = first;
    let mut max = 0;
    let deadline = Instant::now() + WAIT;
    while next < total {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Message { message, .. }) => {
                assert_eq!(number(&message), next, "a message lost or out of order");
                next += 1;
                max = max.max(sample());
            }
            Ok(other) => panic!("unexpected event while reading: {other:?}"),
            Err(e) => panic!("only {next} of {total} messages arrived: {e:?}"),
        }
    }
    max
}

/// Takes events until the close event, which must be a clean 1000.
fn until_clean_close(events: &Events) {
    loop {
        match events.recv_timeout(WAIT).expect("no Close in time") {
            Event::Close { code, clean, .. } => {
                assert_eq!((code, clean), (1000, true), "the close was not clean");
                return;
            }
            Event::Message { .. } => {}
            other => panic!("unexpected event before the close: {other:?}"),
        }
    }
}

/// Floods a client that does not take its events: the session's backlog stays within
/// the bound, reading pauses, the server's writes block and stay blocked; then every
/// message arrives once, in order.
fn flood_pauses_reading(size: usize, messages: usize, bytes: usize, extra: u64) {
    let server = Flood::start(size);
    let session = SessionConfig::default().receive_bounds(messages, bytes);
    let (client, events) = Client::new(config(session)).unwrap();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    until_open(&events);

    let mut sent = server.blocked();
    let backlog = client.backlog();
    assert!(
        backlog.messages <= messages,
        "{} messages waiting, bound {messages}",
        backlog.messages
    );
    assert!(
        backlog.bytes <= bytes + size,
        "{} bytes waiting",
        backlog.bytes
    );
    assert!(client.stats().read_pauses >= 1, "reading never paused");
    assert_eq!(client.state(), ReadyState::Open);
    let more = server.probe();
    assert_blocked(more, size);
    sent += more;
    // Still paused: nothing more was taken in.
    assert_eq!(client.backlog(), backlog);

    let total = server.finish(sent, sent + extra);
    let max = read_numbered(&events, 0, total, || client.backlog().messages);
    assert!(max <= messages, "backlog reached {max}, bound {messages}");
    assert!(client.stats().read_pauses >= 1);
    eprintln!(
        "{size}-byte messages, bound {messages}/{bytes}: server blocked after {sent} \
         (probe: {more} more), {total} read in order, {} pauses, largest backlog while \
         reading {max}",
        client.stats().read_pauses
    );
    assert_eq!(server.report(), Report::Finished { total });
    client.close(None, "done").unwrap();
    until_clean_close(&events);
    assert_eq!(server.report(), Report::Ended);
}

#[test]
fn a_flood_of_small_messages_pauses_reading_at_the_message_bound() {
    flood_pauses_reading(SIZE, 100, 1 << 20, 2000);
}

#[test]
fn a_flood_of_large_messages_pauses_reading_at_the_byte_bound() {
    flood_pauses_reading(64 << 10, 1000, 1 << 20, 200);
}

#[test]
fn keepalive_does_not_end_a_paused_connection() {
    let server = Flood::start(SIZE);
    // A short interval, and a pong timeout a loaded machine's scheduling cannot run past
    // (once reading resumes, the server's pongs must be read in time).
    let interval = Duration::from_millis(50);
    let timeout = Duration::from_millis(300);
    let session = SessionConfig::default()
        .receive_bounds(100, 1 << 20)
        .keepalive(interval, timeout);
    let (client, events) = Client::new(config(session)).unwrap();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    until_open(&events);
    let mut sent = server.blocked();
    let (backlog, pauses) = (client.backlog(), client.stats().read_pauses);
    // The paused connection outlives three keepalive intervals and timeouts, although no
    // pong could be read meanwhile.
    std::thread::sleep((interval + timeout) * 3);
    assert_eq!(client.state(), ReadyState::Open);
    // It stayed paused all along.
    assert_eq!(client.backlog(), backlog);
    assert_eq!(client.stats().read_pauses, pauses);
    let more = server.probe();
    assert_blocked(more, SIZE);
    sent += more;
    let total = server.finish(sent, sent + 500);
    read_numbered(&events, 0, total, || 0);
    assert_eq!(client.state(), ReadyState::Open);
    // Alive after reading: the server answers the keepalive pings now (two periods).
    std::thread::sleep((interval + timeout) * 2);
    assert_eq!(client.state(), ReadyState::Open);
    client.close(None, "done").unwrap();
    until_clean_close(&events);
}

#[test]
fn close_while_paused_finishes_the_close_handshake() {
    let server = Flood::start(SIZE);
    let session = SessionConfig::default().receive_bounds(100, 1 << 20);
    let (client, events) = Client::new(config(session)).unwrap();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    until_open(&events);
    server.blocked();
    assert!(client.stats().read_pauses >= 1);
    client.close(None, "bye").unwrap();
    // The server writes only what it had begun, then answers the close; the client reads
    // (and discards) everything before the server's close frame.
    server.finish(0, 0);
    // Messages received before the close are still delivered, in order, then the close.
    let mut next = 0;
    loop {
        match events.recv_timeout(WAIT).expect("no Close in time") {
            Event::Message { message, .. } => {
                assert_eq!(number(&message), next);
                next += 1;
            }
            Event::Close { code, clean, .. } => {
                assert_eq!((code, clean), (1000, true));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        next <= 100 + 64,
        "{next} messages delivered after the close"
    );
    assert!(matches!(server.report(), Report::Finished { .. }));
    assert_eq!(server.report(), Report::Ended);
}

#[test]
fn dropping_events_while_paused_discards_the_backlog_and_reads_on() {
    let server = Flood::start(SIZE);
    let session = SessionConfig::default().receive_bounds(100, 1 << 20);
    let (client, events) = Client::new(config(session)).unwrap();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    until_open(&events);
    let sent = server.blocked();
    assert!(client.stats().read_pauses >= 1);
    drop(events);
    // Nobody will take the events: they are discarded, and reading goes on, so the
    // server writes everything.
    let total = server.finish(sent, sent + 2000);
    assert_eq!(server.report(), Report::Finished { total });
    assert_eq!(client.backlog().messages, 0);
    assert_eq!(client.state(), ReadyState::Open);
    client.close(None, "done").unwrap();
    assert_eq!(server.report(), Report::Ended);
}

#[test]
fn a_task_pool_pauses_each_task_at_its_bound() {
    let server = Flood::start(SIZE);
    let session = SessionConfig::default().receive_bounds(50, 1 << 20);
    let (pool, events) = TaskPool::new(config(session)).unwrap();
    let task = pool.connect(&ConnectOptions::new(server.url())).unwrap();
    until_open(&events);
    let mut sent = server.blocked();
    assert!(pool.backlog().messages <= 50, "{:?}", pool.backlog());
    let more = server.probe();
    assert_blocked(more, SIZE);
    sent += more;
    let total = server.finish(sent, sent + 500);
    let max = read_numbered(&events, 0, total, || pool.backlog().messages);
    assert!(max <= 50, "backlog reached {max}");
    task.close(None, "done").unwrap();
    until_clean_close(&events);
}

/// The callback surface dispatches a bounded number of callbacks at a time (the rest of
/// the events wait in the session, which pauses reading); a flood still reaches the
/// listener whole and in order, across many dispatches.
#[test]
fn a_flood_reaches_a_slow_wx_listener_whole_and_in_order() {
    let server = Flood::start(SIZE);
    let session = SessionConfig::default().receive_bounds(100, 1 << 20);
    let wx = WxSocket::new(config(session)).unwrap();
    let (opened, open_rx) = mpsc::channel();
    wx.on_socket_open(move |_| {
        let _ = opened.send(());
    });
    // The listener blocks (on the driver thread) while 1000 numbers wait for the test.
    let (numbers, received) = mpsc::sync_channel(1000);
    wx.on_socket_message(move |res| {
        let _ = numbers.send(number(&res.data));
    });
    wx.connect_socket(ConnectSocket::new(ConnectOptions::new(server.url())))
        .unwrap();
    open_rx.recv_timeout(WAIT).unwrap();
    let sent = server.blocked();
    let total = server.finish(sent, sent + 2000);
    for expected in 0..total {
        let n = received
            .recv_timeout(WAIT)
            .expect("a message did not arrive");
        assert_eq!(n, expected, "a message lost or out of order");
    }
    assert_eq!(wx.state(), ReadyState::Open);
    wx.shutdown();
}

/// A server that reads nothing until its gate opens, then reads every message and
/// reports it (binary payloads), until the connection ends.
struct GatedReader {
    addr: SocketAddr,
    gate: Option<Sender<()>>,
    got: Receiver<Vec<u8>>,
    thread: Option<JoinHandle<()>>,
}

impl GatedReader {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (gate, gate_rx) = mpsc::channel::<()>();
        let (tx, got) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            stream.set_read_timeout(Some(WAIT)).unwrap();
            let Ok(mut ws) = tungstenite::accept(stream) else {
                return;
            };
            if gate_rx.recv_timeout(WAIT).is_err() {
                return;
            }
            loop {
                match ws.read() {
                    Ok(WsMessage::Binary(b)) => {
                        let _ = tx.send(b.to_vec());
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        Self {
            addr,
            gate: Some(gate),
            got,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/sink", self.addr)
    }

    fn open_gate(&mut self) {
        self.gate.take().unwrap().send(()).unwrap();
    }

    fn next(&self) -> Vec<u8> {
        self.got.recv_timeout(WAIT).expect("the server got nothing")
    }
}

impl Drop for GatedReader {
    fn drop(&mut self) {
        self.gate.take();
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A numbered binary message of `size` bytes.
fn numbered(n: u64, size: usize) -> Message {
    let mut data = vec![b'y'; size];
    data[..8].copy_from_slice(&n.to_be_bytes());
    Message::binary(data)
}

/// Sends numbered messages of `size` bytes through `try_send` until one is refused (the
/// server reads nothing, so the buffer fills); returns the refused message.
fn fill_buffer(
    try_send: impl Fn(Message) -> Result<wxsocket_blocking::SendId, SendError>,
    size: usize,
) -> Message {
    let mut accepted = 0u64;
    loop {
        match try_send(numbered(accepted, size)) {
            Ok(_) => accepted += 1,
            Err(e) => return e.into_message(),
        }
        assert!(accepted < 1000, "the buffer never filled");
    }
}

/// Runs `send` on a thread of its own, returning once that thread has slept (in the
/// wait for room); its result says whether it succeeded, how many times the thread slept
/// and woke meanwhile (voluntary context switches), and how long it took.
fn counting_wake_ups(
    send: impl FnOnce() -> bool + Send + 'static,
) -> JoinHandle<(bool, u64, Duration)> {
    let (started, start) = mpsc::channel();
    let waiting = std::thread::spawn(move || {
        let me = common::this_thread();
        let task = std::path::Path::new("/proc").join(std::fs::read_link(&me).unwrap());
        let before = common::voluntary_switches(&me);
        started.send((task, before)).unwrap();
        let start = Instant::now();
        let sent = send();
        (
            sent,
            common::voluntary_switches(&me) - before,
            start.elapsed(),
        )
    });
    // Returns once the send sleeps in its wait for room, before the caller starts its other
    // threads. What is counted is then that wait, not also a first attempt delayed by
    // threads that take the lock in a loop (std's mutex lets them barge in: a first
    // attempt lost the lock up to 200 times to the other task's 2,000 sends, sleeping
    // each time; 3 runs in 10).
    let (task, before) = start.recv().unwrap();
    let deadline = Instant::now() + WAIT;
    let waits = || common::voluntary_switches(&task) > before && in_timed_wait(&task);
    while !waits() && !waiting.is_finished() {
        assert!(Instant::now() < deadline, "the send never waited for room");
        std::thread::yield_now();
    }
    waiting
}

/// Whether the thread sleeps in a wait with a time limit, as the wait for room does (a
/// condition variable's `wait_timeout`); a thread waiting for a mutex waits without one.
/// `/proc/.../syscall` shows the call and its arguments: `futex`'s fourth is the timeout.
fn in_timed_wait(task: &std::path::Path) -> bool {
    #[cfg(target_arch = "x86_64")]
    const FUTEX: &str = "202";
    #[cfg(target_arch = "aarch64")]
    const FUTEX: &str = "98";
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    return true;
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        let Ok(call) = std::fs::read_to_string(task.join("syscall")) else {
            return false;
        };
        let args: Vec<&str> = call.split_whitespace().collect();
        args.first() == Some(&FUTEX) && args.get(4).is_some_and(|timeout| *timeout != "0x0")
    }
}

/// A small send buffer: 1 MiB (and the queue before open within it).
fn small_buffer() -> SessionConfig {
    SessionConfig::default()
        .queue_bounds(1024, 1 << 20)
        .max_buffered_bytes(1 << 20)
        .send_completions(false)
}

#[test]
fn send_waits_for_room_instead_of_failing_with_buffer_full() {
    const COUNT: u64 = 64;
    const SIZE: usize = 256 << 10;
    let mut server = GatedReader::start();
    let (client, events) = Client::new(config(small_buffer())).unwrap();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    until_open(&events);
    let (full_tx, full_rx) = mpsc::channel();
    let sender = {
        let client = client.clone();
        std::thread::spawn(move || {
            let mut waited = 0;
            for n in 0..COUNT {
                let message = numbered(n, SIZE);
                let message = match client.try_send(message) {
                    Ok(_) => continue,
                    Err(e) => {
                        assert!(e.is_full(), "refused for good: {e}");
                        waited += 1;
                        let _ = full_tx.send(n);
                        e.into_message()
                    }
                };
                if let Err(e) = client.send(message) {
                    panic!("message {n} failed: {e}");
                }
                assert!(client.buffered_amount() <= 1 << 20);
            }
            waited
        })
    };
    // The buffer is full while the server reads nothing: the sender now waits in `send`.
    let first_full = full_rx.recv_timeout(WAIT).expect("the buffer never filled");
    assert!(client.buffered_amount() <= 1 << 20);
    server.open_gate();
    for n in 0..COUNT {
        let data = server.next();
        assert_eq!(data.len(), SIZE);
        assert_eq!(u64::from_be_bytes(data[..8].try_into().unwrap()), n);
    }
    let waited = sender.join().unwrap();
    eprintln!("buffer first full at message {first_full}; {waited} sends waited for room");
    assert!(waited >= 1);
    client.close(None, "done").unwrap();
    until_clean_close(&events);
}

#[test]
fn send_timeout_hands_the_message_back_when_no_room_comes() {
    const SIZE: usize = 256 << 10;
    let mut server = GatedReader::start();
    let (client, events) = Client::new(config(small_buffer())).unwrap();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    until_open(&events);
    // Fill the buffer: `try_send` fails at once with the message handed back.
    let mut accepted = 0u64;
    let refused = loop {
        let message = numbered(accepted, SIZE);
        match client.try_send(message.clone()) {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert!(matches!(e, SendError::BufferFull(_)), "{e}");
                assert_eq!(e.into_message(), message);
                break message;
            }
        }
        assert!(accepted < 1000, "the buffer never filled");
    };
    let timeout = Duration::from_millis(300);
    let start = Instant::now();
    match client.send_timeout(refused.clone(), timeout) {
        Ok(Err(SendFailed::Refused(SendError::BufferFull(message)))) => {
            assert_eq!(message, refused, "a different message came back");
        }
        other => panic!("expected the message back, got {other:?}"),
    }
    assert!(start.elapsed() >= timeout, "it did not wait");
    // Room comes once the server reads: the same message is accepted and written.
    server.open_gate();
    let id = client
        .send_timeout(refused, WAIT)
        .expect("not written in time")
        .expect("refused");
    for n in 0..=accepted {
        let data = server.next();
        assert_eq!(u64::from_be_bytes(data[..8].try_into().unwrap()), n);
    }
    let _ = id;
    client.close(None, "done").unwrap();
    until_clean_close(&events);
}

/// A send waiting for room when the application closes the connection is refused at once
/// (`Closing`, its message handed back), as a new send is; no room will come for it there.
/// (Tokio's waited out the close timeout, and said "not connected"; both now do this.)
#[test]
fn a_send_waiting_for_room_is_refused_when_the_application_closes() {
    const SIZE: usize = 256 << 10;
    let server = GatedReader::start();
    let (client, events) = Client::new(config(small_buffer())).unwrap();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    until_open(&events);
    let refused = fill_buffer(|m| client.try_send(m), SIZE);
    let waiting = {
        let client = client.clone();
        let refused = refused.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            (client.send(refused), start.elapsed())
        })
    };
    // The send is waiting for room (the server reads nothing) when the close comes.
    std::thread::sleep(Duration::from_millis(100));
    assert!(!waiting.is_finished(), "the send did not wait for room");
    client.close(None, "done").unwrap();
    let (result, waited) = waiting.join().unwrap();
    match result {
        Err(SendFailed::Refused(SendError::Closing(message))) => assert_eq!(message, refused),
        other => panic!("expected a refusal while closing, got {other:?}"),
    }
    assert!(waited < Duration::from_secs(5), "refused after {waited:?}");
    drop(server);
}

/// A send waiting for room sleeps until something that may free room happens, not at
/// every message the connection receives: against a server that reads nothing and sends
/// without pause while another thread receives, the waiting thread woke about 30,000
/// times in 2 s (a prober), each time retrying in vain.
#[test]
fn a_send_waiting_for_room_sleeps_while_messages_arrive() {
    const SIZE: usize = 256 << 10;
    const MESSAGES: u64 = 40_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            stream.set_write_timeout(Some(WAIT)).unwrap();
            let mut ws = tungstenite::accept(stream).unwrap();
            let message = WsMessage::binary(vec![b'x'; 100]);
            // Reads nothing; writes until told to stop, then drops the connection.
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                if ws.send(message.clone()).is_err() {
                    return;
                }
            }
        })
    };
    let (client, events) = Client::new(config(small_buffer())).unwrap();
    client.connect(&ConnectOptions::new(url)).unwrap();
    until_open(&events);
    let refused = fill_buffer(|m| client.try_send(m), SIZE);
    let waiting = {
        let client = client.clone();
        counting_wake_ups(move || client.send(refused).is_ok())
    };
    let deadline = Instant::now() + WAIT;
    let mut received = 0u64;
    while received < MESSAGES {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Message { .. }) => received += 1,
            Ok(_) => {}
            Err(e) => panic!("{received} messages by the deadline: {e}"),
        }
    }
    assert!(!waiting.is_finished(), "the send did not wait for room");
    client.close(None, "done").unwrap();
    let (sent, woke, waited) = waiting.join().unwrap();
    assert!(!sent, "room came for the send");
    // What may wake it: a retry every 100 ms whatever happens, and the lock taken.
    let allowed = 20 + 3 * waited.as_millis() as u64 / 100;
    eprintln!("{received} messages in {waited:?}; the waiting send woke {woke} times");
    assert!(
        woke <= allowed,
        "the waiting send woke {woke} times in {waited:?} ({received} messages received)"
    );
    stop.store(true, std::sync::atomic::Ordering::Release);
    server.join().unwrap();
}

/// A pool's task waiting for room sleeps while another task's sends are written: only a
/// send written on its own connection can free its room (it woke for every write of the
/// other task, 46,000 times in 2 s, a prober).
#[test]
fn a_task_waiting_for_room_sleeps_while_another_task_sends() {
    const SIZE: usize = 256 << 10;
    const SENDS: usize = 2_000;
    let stuck_server = GatedReader::start();
    let busy_server = wxsocket_test_server::EchoServer::start().unwrap();
    // The stuck server never answers the close: the shutdown waits out the close timeout.
    let session = small_buffer().close_timeout(Duration::from_millis(200));
    let (pool, events) = TaskPool::new(config(session)).unwrap();
    let stuck = pool
        .connect(&ConnectOptions::new(stuck_server.url()))
        .unwrap();
    until_open(&events);
    let busy = pool
        .connect(&ConnectOptions::new(busy_server.url()))
        .unwrap();
    until_open(&events);
    let refused = fill_buffer(|m| stuck.try_send(m), SIZE);
    let waiting = counting_wake_ups(move || {
        let sent = stuck.send(refused).is_ok();
        drop(stuck);
        sent
    });
    // The echoes are taken as they come, so that reading never pauses.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                let _ = events.recv_timeout(Duration::from_millis(10));
            }
        })
    };
    for n in 0..SENDS {
        busy.send(Message::text(format!("busy {n}")))
            .unwrap_or_else(|e| panic!("busy send {n}: {e}"));
    }
    assert!(!waiting.is_finished(), "the send did not wait for room");
    pool.shutdown();
    let (sent, woke, waited) = waiting.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Release);
    receiver.join().unwrap();
    assert!(!sent, "room came for the send");
    // What may wake it: a retry every 100 ms whatever happens, and the lock taken.
    let allowed = 20 + 3 * waited.as_millis() as u64 / 100;
    eprintln!("{SENDS} sends of another task in {waited:?}; the waiting send woke {woke} times");
    assert!(
        woke <= allowed,
        "the waiting send woke {woke} times in {waited:?} while another task sent {SENDS}"
    );
}

#[test]
fn send_waits_until_completions_are_taken() {
    let mut server = GatedReader::start();
    server.open_gate();
    let session = SessionConfig::default().max_untaken_completions(4);
    let (client, events) = Client::new(config(session)).unwrap();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    until_open(&events);
    // Nobody takes the completions: after a batch of them and the bound, sends are refused.
    let mut accepted = 0u64;
    let refused = loop {
        match client.try_send(numbered(accepted, 16)) {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert!(matches!(e, SendError::CompletionsFull(_)), "{e}");
                break e.into_message();
            }
        }
        assert!(accepted < 10_000, "completions never filled up");
    };
    assert_eq!(client.backlog().completions, 4);
    let sender = {
        let client = client.clone();
        std::thread::spawn(move || client.send(refused))
    };
    // Taking the events makes room; the waiting send then goes through.
    let mut completed = 0;
    while completed < accepted + 1 {
        match events
            .recv_timeout(WAIT)
            .expect("a completion did not arrive")
        {
            Event::SendCompleted { .. } => completed += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    sender.join().unwrap().expect("the waiting send failed");
    for n in 0..=accepted {
        let data = server.next();
        assert_eq!(u64::from_be_bytes(data[..8].try_into().unwrap()), n);
    }
    client.close(None, "done").unwrap();
    until_clean_close(&events);
}

/// An application that receives a little, then sends for a while without receiving (the
/// reads stay with its thread meanwhile, up to 250 ms): a send that runs the keepalive timer
/// first reads the pong that came, so a peer that answers every ping is never taken for
/// dead (a prober's keepalive of 100 ms / 50 ms ended 17–24 of 42 such bursts against an
/// echo server; the driver thread's own timer always caught up first).
#[test]
fn keepalive_sees_the_pong_when_the_application_sends_without_receiving() {
    let server = wxsocket_test_server::EchoServer::start().unwrap();
    // The pong's timeout ends within the 250 ms the reads stay with a busy sender, with
    // room for a loaded machine's scheduling.
    let session = SessionConfig::default()
        .keepalive(Duration::from_millis(100), Duration::from_millis(100))
        .send_completions(false);
    let (client, events) = Client::new(config(session)).unwrap();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    until_open(&events);
    for burst in 0..10 {
        // Receive for a moment: the reads are handed to this thread.
        let until = Instant::now() + Duration::from_millis(2);
        while Instant::now() < until {
            match events.recv_timeout(Duration::from_millis(1)) {
                Ok(Event::Error { error, .. }) => panic!("burst {burst}: {error}"),
                Ok(close @ Event::Close { .. }) => panic!("burst {burst}: {close:?}"),
                _ => {}
            }
        }
        // Then send without receiving for longer than interval + timeout.
        let until = Instant::now() + Duration::from_millis(240);
        while Instant::now() < until {
            let _ = client.try_send("x");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(client.state(), ReadyState::Open, "burst {burst}");
    }
    client.close(None, "done").unwrap();
}
