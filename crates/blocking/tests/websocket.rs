//! The simple path (`connect`, `WebSocket`) over loopback: the echo server of
//! `wxsocket-test-server` for well-behaved peers, small tungstenite servers on std threads
//! for the rest. Every test body runs under a watchdog ([`bounded`]), so a `recv` or
//! `close` that never returns fails the test instead of hanging it.

use std::io::{self, ErrorKind as IoErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::Message as WsMessage;
use tungstenite::protocol::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use wxsocket_blocking::{
    Closed, Config, ConnectError, ConnectOptions, Error, ErrorKind, Event, Message, ReadyState,
    ReconnectPolicy, SendError, SendFailed, SessionConfig, connect, connect_with,
};
use wxsocket_test_server::EchoServer;

/// How long any single wait in a test may take.
const WAIT: Duration = Duration::from_secs(10);
/// How long a whole test body may take.
const LIMIT: Duration = Duration::from_secs(30);

/// Runs `body` on its own thread and fails if it does not finish within [`LIMIT`] (the
/// thread is then left behind, and the test fails); a panic in it fails the test as is.
fn bounded<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(body());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(value) => {
            thread.join().unwrap();
            value
        }
        Err(RecvTimeoutError::Disconnected) => {
            std::panic::resume_unwind(thread.join().expect_err("the body ended without a value"))
        }
        Err(RecvTimeoutError::Timeout) => panic!("the test did not finish within {LIMIT:?}"),
    }
}

type Ws = tungstenite::WebSocket<TcpStream>;
type Script = Box<dyn FnOnce(Ws) + Send>;

/// A server that serves one script per connection, in the order the connections come;
/// dropping it waits for the scripts (each bounded by socket timeouts of [`WAIT`]).
struct Scripted {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Scripted {
    fn start(scripts: Vec<Script>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            for script in scripts {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                stream.set_read_timeout(Some(WAIT)).unwrap();
                stream.set_write_timeout(Some(WAIT)).unwrap();
                let Ok(ws) = tungstenite::accept(stream) else {
                    return;
                };
                script(ws);
            }
        });
        Self {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Unblocks an accept still waiting for a connection.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Reads until the connection ends (answering pings and the client's close frame).
fn read_to_end(ws: &mut Ws) {
    while ws.read().is_ok() {}
}

/// A script that sends `messages`, closes with `code` and `reason`, waits for the
/// client's close frame, and then says so on `done`.
fn send_then_close(
    messages: &'static [&'static str],
    code: u16,
    reason: &'static str,
    done: Sender<()>,
) -> Script {
    Box::new(move |mut ws: Ws| {
        for text in messages {
            ws.send(WsMessage::text(*text)).unwrap();
        }
        ws.close(Some(CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        }))
        .unwrap();
        read_to_end(&mut ws);
        let _ = done.send(());
    })
}

/// An address on 127.0.0.1 that refuses connections and that no other test can take: the
/// local address of a connected client socket, held (with its peer) until the process
/// exits. Nothing listens on it, so a dial is refused; being bound, it is not handed out
/// again (a port bound and released could be, to a listener of a test running alongside,
/// and the dial would then reach that test's server).
fn closed_port() -> SocketAddr {
    static HELD: std::sync::Mutex<Vec<(TcpListener, TcpStream)>> =
        std::sync::Mutex::new(Vec::new());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let addr = client.local_addr().unwrap();
    HELD.lock().unwrap().push((listener, client));
    addr
}

#[test]
fn echo_round_trips_through_send_and_recv() {
    bounded(|| {
        let server = EchoServer::start().unwrap();
        let mut ws = connect(server.url()).unwrap();
        // `connect` returned once open.
        assert_eq!(ws.client().state(), ReadyState::Open);
        for text in ["one", "two", "three"] {
            ws.send(text).unwrap();
            assert_eq!(ws.recv().unwrap().as_text(), Some(text));
        }
        ws.send(Message::binary(vec![1, 2, 3])).unwrap();
        assert_eq!(ws.recv_timeout(WAIT).unwrap().as_bytes(), [1, 2, 3]);
        // Sent back to back, received through the iterator, in order.
        for n in 0..100 {
            ws.send(format!("m{n}")).unwrap();
        }
        let got: Vec<String> = ws.iter().take(100).map(|m| m.to_string()).collect();
        assert_eq!(got, (0..100).map(|n| format!("m{n}")).collect::<Vec<_>>());
        ws.send("for").unwrap();
        ws.send("end").unwrap();
        let mut seen = Vec::new();
        for message in &mut ws {
            seen.push(message.to_string());
            if message.as_text() == Some("end") {
                break;
            }
        }
        assert_eq!(seen, ["for", "end"]);
        assert_eq!(ws.closed(), None);
        assert_eq!(ws.error(), None);
        let closed = ws.close().unwrap();
        assert_eq!(closed, Closed::new(1000, "", true));
    });
}

#[test]
fn recv_timeout_times_out_and_the_socket_goes_on() {
    bounded(|| {
        let server = EchoServer::start().unwrap();
        let mut ws = connect(server.url()).unwrap();
        // Nothing was sent, so nothing can arrive: the wait runs out.
        let start = Instant::now();
        assert_eq!(
            ws.recv_timeout(Duration::from_millis(50)),
            Err(RecvTimeoutError::Timeout)
        );
        assert!(start.elapsed() >= Duration::from_millis(50));
        ws.send("after").unwrap();
        assert_eq!(ws.recv_timeout(WAIT).unwrap().as_text(), Some("after"));
        assert_eq!(ws.close().unwrap().code, 1000);
    });
}

#[test]
fn connect_to_a_closed_port_fails_with_the_connection_error() {
    bounded(|| {
        let addr = closed_port();
        let error = connect(format!("ws://{addr}/")).unwrap_err();
        assert!(matches!(error, Error::Connection(_)), "{error:?}");
        assert_eq!(error.kind(), ErrorKind::Connection);
        eprintln!("{error}");
    });
}

/// Accepts every dial and drops it before answering the handshake (a failed attempt, which
/// a reconnect policy retries), counting the dials; stops on drop.
struct Dropping {
    addr: SocketAddr,
    dials: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Dropping {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let dials = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (counted, stopped) = (Arc::clone(&dials), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while let Ok((stream, _)) = listener.accept() {
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                counted.fetch_add(1, Ordering::AcqRel);
                drop(stream);
            }
        });
        Self {
            addr,
            dials,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Dropping {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Unblocks the accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `connect_with` a policy of two retries against a server that drops every dial: the
/// dial and exactly two retries reach the server (each counted before the client can see
/// it fail), then the connection error.
#[test]
fn connect_with_a_policy_fails_once_the_policy_gives_up() {
    bounded(|| {
        let server = Dropping::start();
        let policy = ReconnectPolicy::default()
            .backoff(Duration::from_millis(1), Duration::from_millis(5))
            .max_attempts(Some(2));
        let config = Config::default().session(SessionConfig::default().reconnect(policy));
        let error = connect_with(config, format!("ws://{}/", server.addr)).unwrap_err();
        assert!(matches!(error, Error::Connection(_)), "{error:?}");
        assert_eq!(error.kind(), ErrorKind::Connection);
        assert_eq!(server.dials.load(Ordering::Acquire), 3, "dials");
    });
}

/// Which `ConnectError` a case expects.
type Expected = fn(&ConnectError) -> bool;

#[test]
fn an_invalid_url_fails_before_any_io() {
    bounded(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let cases: [(String, Expected); 3] = [
            ("not a url".into(), |e| {
                matches!(e, ConnectError::InvalidUrl { .. })
            }),
            (format!("ftp://{addr}/"), |e| {
                matches!(e, ConnectError::UnsupportedScheme { .. })
            }),
            (format!("ws://{addr}/#fragment"), |e| {
                matches!(e, ConnectError::FragmentInUrl)
            }),
        ];
        for (url, expected) in cases {
            let error = connect(url.as_str()).unwrap_err();
            match &error {
                Error::Options(e) if expected(e) => {}
                other => panic!("{url}: {other:?}"),
            }
            assert_eq!(error.kind(), ErrorKind::Invalid);
        }
        // Nothing was dialled.
        listener.set_nonblocking(true).unwrap();
        let accepted = listener.accept();
        assert_eq!(
            accepted.map(|_| ()).map_err(|e| e.kind()),
            Err(IoErrorKind::WouldBlock)
        );
    });
}

#[test]
fn the_server_closing_hands_out_the_queued_messages_then_none() {
    bounded(|| {
        let (done, server_done) = mpsc::channel();
        let server = Scripted::start(vec![send_then_close(&["a", "b", "c"], 4001, "bye", done)]);
        let mut ws = connect(server.url()).unwrap();
        // The whole close handshake is over before the application reads anything.
        server_done.recv_timeout(WAIT).unwrap();
        let got: Vec<String> = std::iter::from_fn(|| ws.recv())
            .map(|m| m.to_string())
            .collect();
        assert_eq!(got, ["a", "b", "c"]);
        assert_eq!(ws.closed(), Some(&Closed::new(4001, "bye", true)));
        assert_eq!(ws.error(), None);
        // Stays closed.
        assert_eq!(ws.recv(), None);
        assert_eq!(ws.recv_timeout(WAIT), Err(RecvTimeoutError::Disconnected));
        assert_eq!(ws.iter().count(), 0);
        // Closing a closed socket returns how it closed.
        assert_eq!(ws.close().unwrap(), Closed::new(4001, "bye", true));
    });
}

#[test]
fn send_after_the_peer_closed_is_a_closed_error() {
    bounded(|| {
        let (done, server_done) = mpsc::channel();
        let server = Scripted::start(vec![send_then_close(&["a"], 4001, "bye", done)]);
        let mut ws = connect(server.url()).unwrap();
        server_done.recv_timeout(WAIT).unwrap();
        // Before the application has seen the close: refused by the session.
        let error = ws.send("late").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Closed, "{error:?}");
        assert!(
            matches!(
                &error,
                Error::Send(SendFailed::Refused(
                    SendError::NotConnected(_) | SendError::Closing(_)
                ))
            ),
            "{error:?}"
        );
        assert_eq!(ws.recv().unwrap().as_text(), Some("a"));
        assert_eq!(ws.recv(), None);
        // After: the close itself.
        let error = ws.send("later").unwrap_err();
        assert_eq!(error, Error::Closed(Closed::new(4001, "bye", true)));
        assert_eq!(error.kind(), ErrorKind::Closed);
        eprintln!("{error}");
    });
}

#[test]
fn close_returns_a_clean_1000_and_close_with_the_code_given() {
    bounded(|| {
        let server = EchoServer::start().unwrap();
        let ws = connect(server.url()).unwrap();
        assert_eq!(ws.close().unwrap(), Closed::new(1000, "", true));

        let mut ws = connect(server.url()).unwrap();
        // An invalid code is refused and nothing closes.
        let error = ws.close_with(1001, "").unwrap_err();
        assert!(matches!(error, Error::Close(_)), "{error:?}");
        assert_eq!(error.kind(), ErrorKind::Invalid);
        ws.send("still open").unwrap();
        assert_eq!(ws.recv().unwrap().as_text(), Some("still open"));
        // The echo server answers with the same code and reason.
        let closed = ws.close_with(4000, "done").unwrap();
        assert_eq!(closed, Closed::new(4000, "done", true));
        assert_eq!(ws.closed(), Some(&closed));
        assert_eq!(ws.client().state(), ReadyState::Closed);
        assert_eq!(ws.recv(), None);
        // A second close returns the first one's outcome.
        assert_eq!(ws.close_with(1000, "again").unwrap(), closed);
    });
}

#[test]
fn with_a_reconnect_policy_recv_goes_on_after_the_server_drops_the_connection() {
    bounded(|| {
        let first: Script = Box::new(|mut ws: Ws| {
            ws.send(WsMessage::text("first")).unwrap();
            // Dropped without a close frame: the client sees 1006 and dials again.
            ws.get_ref().shutdown(std::net::Shutdown::Both).unwrap();
        });
        let second: Script = Box::new(|mut ws: Ws| {
            ws.send(WsMessage::text("second")).unwrap();
            // Then echo until the client closes.
            loop {
                match ws.read() {
                    Ok(m @ (WsMessage::Text(_) | WsMessage::Binary(_))) => {
                        if ws.send(m).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        let server = Scripted::start(vec![first, second]);
        let policy = ReconnectPolicy::default()
            .backoff(Duration::from_millis(1), Duration::from_millis(10))
            .max_attempts(Some(3));
        let config = Config::default().session(SessionConfig::default().reconnect(policy));
        let mut ws = connect_with(config, server.url()).unwrap();
        assert_eq!(ws.recv().unwrap().as_text(), Some("first"));
        // The drop, the reconnection's events and the new open are skipped.
        assert_eq!(ws.recv().unwrap().as_text(), Some("second"));
        assert_eq!(ws.closed(), None);
        assert!(ws.error().is_some(), "the drop was not recorded");
        eprintln!("the drop: {}", ws.error().unwrap());
        ws.send("third").unwrap();
        assert_eq!(ws.recv().unwrap().as_text(), Some("third"));
        assert_eq!(ws.close().unwrap(), Closed::new(1000, "", true));
    });
}

/// What the flooding server reports.
#[derive(Debug, PartialEq)]
enum Flooded {
    /// Its writes blocked (the client stopped reading) after `sent` messages.
    Blocked { sent: u64 },
    /// Every message was written and the close handshake is done.
    Done,
}

/// A numbered binary message of `size` bytes (the number first, big-endian).
fn numbered(n: u64, size: usize) -> WsMessage {
    let mut data = vec![b'x'; size];
    data[..8].copy_from_slice(&n.to_be_bytes());
    WsMessage::binary(data)
}

/// Floods numbered messages on a non-blocking socket until a write would block, reports
/// it, then writes `extra` more (blocking) and closes with 1000.
fn flood(size: usize, extra: u64, report: Sender<Flooded>) -> Script {
    Box::new(move |mut ws: Ws| {
        ws.get_ref().set_nonblocking(true).unwrap();
        let mut sent = 0;
        loop {
            // The message is in tungstenite's buffer whether or not the flush blocked.
            let result = ws.send(numbered(sent, size));
            sent += 1;
            match result {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("flood: {e}"),
            }
        }
        report.send(Flooded::Blocked { sent }).unwrap();
        ws.get_ref().set_nonblocking(false).unwrap();
        for n in sent..sent + extra {
            ws.send(numbered(n, size)).unwrap();
        }
        ws.close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .unwrap();
        read_to_end(&mut ws);
        report.send(Flooded::Done).unwrap();
    })
}

#[test]
fn a_flood_with_bounded_receive_arrives_whole_and_in_order_through_recv() {
    const SIZE: usize = 1024;
    const EXTRA: u64 = 2000;
    const BOUND: usize = 16;
    bounded(|| {
        let (report, reports) = mpsc::channel();
        let server = Scripted::start(vec![flood(SIZE, EXTRA, report)]);
        let session = SessionConfig::default().receive_bounds(BOUND, 1 << 20);
        let mut ws = connect_with(Config::default().session(session), server.url()).unwrap();
        // The application has read nothing until the server's writes block: the socket
        // buffers are full then (far more than BOUND messages), so the client pauses at
        // the bound, now or on its first read pass, and TCP holds back the rest.
        let Flooded::Blocked { sent } = reports.recv_timeout(WAIT).unwrap() else {
            panic!("the server did not block");
        };
        assert!(sent > BOUND as u64, "the server blocked after {sent}");
        let backlog = ws.client().backlog();
        assert!(backlog.messages <= BOUND, "{backlog:?}");
        let total = sent + EXTRA;
        let mut next = 0u64;
        let mut largest = 0;
        while let Some(message) = ws.recv() {
            assert_eq!(message.as_bytes().len(), SIZE);
            let n = u64::from_be_bytes(message.as_bytes()[..8].try_into().unwrap());
            assert_eq!(n, next, "a message lost or out of order");
            next += 1;
            largest = largest.max(ws.client().backlog().messages);
        }
        assert_eq!(next, total);
        assert!(largest <= BOUND, "backlog reached {largest}");
        assert!(ws.client().stats().read_pauses >= 1, "reading never paused");
        assert_eq!(ws.closed(), Some(&Closed::new(1000, "", true)));
        assert_eq!(reports.recv_timeout(WAIT).unwrap(), Flooded::Done);
        eprintln!(
            "{total} messages of {SIZE} bytes in order (server blocked after {sent}), \
             {} read pauses, largest backlog while reading {largest}",
            ws.client().stats().read_pauses
        );
    });
}

#[test]
fn into_parts_hands_over_the_event_model() {
    bounded(|| {
        let server = EchoServer::start().unwrap();
        let ws = connect(server.url()).unwrap();
        let (client, events) = ws.into_parts();
        client.send("via the client").unwrap();
        // Send completions are off on this path: the echo is the next event.
        match events.recv_timeout(WAIT).unwrap() {
            Event::Message { message, .. } => {
                assert_eq!(message.as_text(), Some("via the client"))
            }
            other => panic!("unexpected {other:?}"),
        }
        client.close(None, "").unwrap();
        loop {
            if let Event::Close { code, clean, .. } = events.recv_timeout(WAIT).unwrap() {
                assert_eq!((code, clean), (1000, true));
                break;
            }
        }
    });
}

#[test]
fn connect_takes_options_as_well_as_a_url() {
    bounded(|| {
        let server = EchoServer::start().unwrap();
        let options = ConnectOptions::new(server.url()).tcp_no_delay(true);
        let mut ws = connect(&options).unwrap();
        assert_eq!(ws.client().socket_info().map(|i| i.nodelay), Some(true));
        ws.send("x").unwrap();
        assert_eq!(ws.recv().unwrap().as_text(), Some("x"));
        ws.close().unwrap();
    });
}

#[test]
fn a_websocket_moves_to_and_is_shared_with_other_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<wxsocket_blocking::WebSocket>();
    send_sync::<wxsocket_blocking::Messages<'static>>();
}

#[test]
fn a_ping_is_answered_by_a_pong_with_its_payload() {
    bounded(|| {
        let server = EchoServer::start().unwrap();
        let mut ws = wxsocket_blocking::connect(server.url()).unwrap();
        ws.ping("are you there").unwrap();
        ws.send("after").unwrap();
        // The pong came before the echo sent after it.
        assert_eq!(ws.recv().unwrap().as_text(), Some("after"));
        assert_eq!(ws.last_pong().map(|p| &p[..]), Some(&b"are you there"[..]));
        let err = ws.ping(vec![0u8; 126]).unwrap_err();
        assert_eq!(err.kind(), wxsocket_blocking::ErrorKind::Invalid);
        let (client, events) = ws.into_parts();
        client.ping("raw").unwrap();
        let pong = events
            .iter()
            .find(|e| matches!(e, wxsocket_blocking::Event::Pong { .. }))
            .unwrap();
        assert_eq!(pong.to_string(), format!("#{} pong (3 bytes)", pong.conn()));
    });
}

/// A server restart as a reconnect policy sees it: the first connection closes cleanly with
/// 1012, the second's handshake waits until told. Between them a ping is "not open yet" (a
/// connection error, not "closed"); after them the socket says a reconnection happened
/// (although no error did) and what the new connection's server answered.
#[test]
fn a_reconnection_after_a_clean_close_is_counted_and_its_handshake_seen() {
    bounded(|| {
        use tungstenite::handshake::server::{Request, Response};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let (go, proceed) = mpsc::channel::<()>();
        // Selects `protocol` from the client's offer.
        let accept = |stream: TcpStream, protocol: &'static str| {
            stream.set_read_timeout(Some(WAIT)).unwrap();
            // tungstenite's callback type: its error is an HTTP response.
            #[allow(clippy::result_large_err)]
            let select = move |_: &Request, mut response: Response| {
                let value = protocol.parse().unwrap();
                response
                    .headers_mut()
                    .insert("sec-websocket-protocol", value);
                Ok(response)
            };
            tungstenite::accept_hdr(stream, select).unwrap()
        };
        let server = std::thread::spawn(move || {
            let mut first = accept(listener.accept().unwrap().0, "chat");
            first.send(WsMessage::text("first")).unwrap();
            first
                .close(Some(CloseFrame {
                    code: CloseCode::Restart,
                    reason: "restarting".into(),
                }))
                .unwrap();
            read_to_end(&mut first);
            let (tcp, _) = listener.accept().unwrap();
            proceed.recv_timeout(WAIT).unwrap();
            let mut second = accept(tcp, "chat2");
            second.send(WsMessage::text("second")).unwrap();
            read_to_end(&mut second);
        });
        let policy = ReconnectPolicy::default()
            .backoff(Duration::from_millis(1), Duration::from_millis(10))
            .max_attempts(Some(3));
        let config = Config::default().session(SessionConfig::default().reconnect(policy));
        let options = ConnectOptions::new(url).protocol("chat").protocol("chat2");
        let mut ws = connect_with(config, options).unwrap();
        assert_eq!(ws.handshake().protocol.as_deref(), Some("chat"));
        assert_eq!(ws.reconnections(), 0);
        assert_eq!(ws.recv().unwrap().as_text(), Some("first"));
        // The second dial waits for its handshake: the socket is connecting again.
        let deadline = Instant::now() + WAIT;
        while ws.client().state() != ReadyState::Connecting {
            assert!(Instant::now() < deadline, "never reconnecting");
            std::thread::sleep(Duration::from_millis(5));
        }
        let refused = ws.ping("still there?").unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Connection, "{refused}");
        assert!(refused.to_string().contains("not open yet"), "{refused}");
        go.send(()).unwrap();
        assert_eq!(ws.recv().unwrap().as_text(), Some("second"));
        assert_eq!(ws.reconnections(), 1);
        assert_eq!(ws.error(), None, "a clean close is no error");
        assert_eq!(ws.handshake().protocol.as_deref(), Some("chat2"));
        ws.ping("now?").unwrap();
        assert_eq!(ws.close().unwrap(), Closed::new(1000, "", true));
        server.join().unwrap();
    });
}

/// `send` to a server that reads nothing blocks for ever once the socket and the send
/// buffer are full; `send_timeout` returns after its timeout. A message accepted but not
/// yet written is `SendPending`; once the buffer has no room for the next one, that one is
/// handed back (kind `Full`) and nothing of it was sent.
#[test]
fn send_timeout_hands_the_message_back_when_the_server_never_reads() {
    bounded(|| {
        const SIZE: usize = 256 << 10;
        let (release, released) = mpsc::channel::<()>();
        let server = Scripted::start(vec![Box::new(move |mut ws: Ws| {
            // Read nothing until the test is done sending, then drain to the close.
            let _ = released.recv_timeout(WAIT);
            read_to_end(&mut ws);
        })]);
        let session = SessionConfig::default()
            .queue_bounds(1024, 1 << 20)
            .max_buffered_bytes(1 << 20);
        let ws = connect_with(Config::default().session(session), server.url()).unwrap();
        let timeout = Duration::from_millis(200);
        let (mut written, mut pending) = (0, 0);
        let handed_back = loop {
            let message = Message::binary(vec![written as u8; SIZE]);
            let start = Instant::now();
            match ws.send_timeout(message.clone(), timeout) {
                Ok(Ok(())) => written += 1,
                Err(still) => {
                    assert!(start.elapsed() >= timeout, "returned before its timeout");
                    assert_eq!(still.timeout, timeout);
                    pending += 1;
                }
                Ok(Err(error)) => {
                    let waited = start.elapsed();
                    assert_eq!(error.kind(), ErrorKind::Full, "{error:?}");
                    assert!(waited >= timeout, "returned before its timeout: {waited:?}");
                    assert!(waited < timeout + WAIT / 2, "waited {waited:?}");
                    let Error::Send(failed) = error else {
                        panic!("not a send error: {error:?}")
                    };
                    assert_eq!(failed.into_message(), Some(message));
                    break written + pending;
                }
            }
            assert!(written + pending < 1000, "the socket never filled");
        };
        eprintln!("{written} written, {pending} pending, message {handed_back} handed back");
        assert!(pending + written >= 1);
        // Once the server reads, the socket goes on as before.
        release.send(()).unwrap();
        ws.send_timeout("after", WAIT).unwrap().unwrap();
        let closed = ws.close().unwrap();
        assert_eq!(closed.code, 1000);
    });
}
