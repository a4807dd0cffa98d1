//! Helpers every scenario file shares (conformance, interop, reconnect): building a client,
//! the usual event sequences, and picking events apart.

use crate::adapter::Adapter;
use std::time::Duration;
use wxsocket_core::{
    ConnId, ConnectOptions, ConnectionError, Event, Handshake, Message, SendId, SessionConfig,
};
use wxsocket_wire::tls::TlsRoots;

/// An adapter client with `config` and the default roots.
pub fn client<A: Adapter>(config: SessionConfig) -> A {
    A::new(config, TlsRoots::default())
        .unwrap_or_else(|e| panic!("[{}] config rejected: {e}", A::NAME))
}

/// Sends `text` and waits for its echo (from an echoing peer): the connection has then
/// read its socket dry and flushed since what came before.
pub fn round_trip<A: Adapter>(a: &mut A, text: &str) {
    a.try_send(Message::text(text))
        .unwrap_or_else(|e| panic!("[{}] send refused: {e}", A::NAME));
    a.events_until("the echo", crate::adapter::EVENT_TIMEOUT, |seen| {
        seen.iter()
            .any(|e| matches!(e, Event::Message { message, .. } if message.as_text() == Some(text)))
    });
}

/// Connects and expects exactly `Connecting` then `Open` of the new connection.
pub fn open<A: Adapter>(a: &mut A, options: &ConnectOptions) -> (ConnId, Handshake) {
    let conn = a
        .connect(options)
        .unwrap_or_else(|e| panic!("[{}] connect refused: {e}", A::NAME));
    expect_connecting(a, conn);
    match a.expect_event("Open") {
        Event::Open {
            conn: c, handshake, ..
        } if c == conn => (conn, *handshake),
        other => panic!("[{}] expected Open of {conn}, got {other:#?}", A::NAME),
    }
}

/// Expects the `Connecting` event of `conn` next.
pub fn expect_connecting<A: Adapter>(a: &mut A, conn: ConnId) {
    match a.expect_event("Connecting") {
        Event::Connecting { conn: c, .. } if c == conn => {}
        other => panic!(
            "[{}] expected Connecting of {conn}, got {other:#?}",
            A::NAME
        ),
    }
}

/// The close event `conn` should end with.
pub fn close_event(conn: ConnId, code: u16, reason: &str, clean: bool) -> Event {
    Event::close(conn, code, reason, clean)
}

/// Closes with 1000 and expects the connection `conn` to end cleanly: `Close` 1000, clean,
/// last. Returns the events up to it.
pub fn close_cleanly<A: Adapter>(a: &mut A, conn: ConnId) -> Vec<Event> {
    a.close(None, "done")
        .unwrap_or_else(|e| panic!("[{}] close: {e}", A::NAME));
    let events = a.events_until_close(conn, crate::adapter::EVENT_TIMEOUT);
    assert!(
        matches!(
            events.last(),
            Some(Event::Close {
                code: 1000,
                clean: true,
                ..
            })
        ),
        "[{}] {events:#?}",
        A::NAME
    );
    events
}

/// Asserts `events` is exactly `[Error, Close { code, clean: false }]` of `conn`, the close
/// saying why; returns the error.
pub fn expect_error_then_close(
    name: &str,
    conn: ConnId,
    events: &[Event],
    code: u16,
) -> ConnectionError {
    match events {
        [
            Event::Error {
                conn: c1, error, ..
            },
            Event::Close {
                conn: c2,
                code: got,
                clean: false,
                reason,
                ..
            },
        ] if *c1 == conn && *c2 == conn && *got == code => {
            assert!(
                !reason.is_empty(),
                "[{name}] the close event should say why: {events:#?}"
            );
            error.clone()
        }
        _ => panic!(
            "[{name}] expected exactly [Error, Close {{ code: {code}, clean: false }}] of {conn}, got {events:#?}"
        ),
    }
}

/// No further event within `quiet` (only after the last expected event of a scenario, to
/// catch duplicates or a late dial; it never waits *for* something).
pub fn assert_quiet_for<A: Adapter>(a: &mut A, quiet: Duration, what: &str) {
    if let Some(extra) = a.next_event(quiet) {
        panic!("[{}] {what}: unexpected event {extra:#?}", A::NAME);
    }
}

/// [`assert_quiet_for`] with a 50 ms grace period.
pub fn assert_quiet<A: Adapter>(a: &mut A) {
    assert_quiet_for(
        a,
        Duration::from_millis(50),
        "after the last expected event",
    );
}

/// The ids of the `SendCompleted` events, in order.
pub fn completions(events: &[Event]) -> Vec<SendId> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::SendCompleted { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

/// The messages of the `Message` events, in order.
pub fn messages(events: &[Event]) -> Vec<Message> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// A port on 127.0.0.1 that refuses connections and that no other test can take: the
/// local port of a connected client socket, held (with its peer) until the process exits.
/// Nothing listens on it, so a dial is refused; being bound, it is not handed out again
/// (a port bound and released could be, to a listener of a test running alongside).
pub fn closed_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<(std::net::TcpListener, std::net::TcpStream)>> =
        std::sync::Mutex::new(Vec::new());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let client = std::net::TcpStream::connect(listener.local_addr().expect("local address"))
        .expect("connect to our own listener");
    let port = client.local_addr().expect("local address").port();
    HELD.lock().unwrap().push((listener, client));
    port
}

/// A WebSocket server of one connection on 127.0.0.1 that does whatever `serve` does with
/// the socket once the upgrade is done (tungstenite's), for scenarios that write raw frames:
/// its URL (with `path`), and its thread, whose result `serve` returns.
pub fn raw_peer<T: Send + 'static>(
    path: &str,
    serve: impl FnOnce(std::net::TcpStream) -> T + Send + 'static,
) -> (String, std::thread::JoinHandle<T>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/{path}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let ws = tungstenite::accept(tcp).unwrap();
        serve(ws.get_ref().try_clone().unwrap())
    });
    (url, server)
}

/// A server whose socket takes `rate` bytes a second (it reads in 16 KiB pieces): a slow
/// uplink. It answers pings as it reads them (tungstenite) and reports each message's
/// length. With `tls`, it serves `wss://` with a certificate of that CA.
pub fn slow_reader(
    rate: usize,
    tls: Option<&wxsocket_test_pki::TestCa>,
) -> (String, std::sync::mpsc::Receiver<usize>) {
    use std::io::Read;
    struct Throttled(std::net::TcpStream, usize);
    impl Read for Throttled {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(16 << 10);
            // The behaviour under test (a slow link), not a wait for something.
            std::thread::sleep(Duration::from_secs_f64(n as f64 / self.1 as f64));
            self.0.read(&mut buf[..n])
        }
    }
    impl std::io::Write for Throttled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            self.0.flush()
        }
    }
    fn serve<S: std::io::Read + std::io::Write>(stream: S, tx: std::sync::mpsc::Sender<usize>) {
        let config = tungstenite::protocol::WebSocketConfig::default()
            .max_message_size(None)
            .max_frame_size(None);
        let Ok(mut ws) = tungstenite::accept_with_config(stream, Some(config)) else {
            return;
        };
        while let Ok(message) = ws.read() {
            if message.is_binary() && tx.send(message.len()).is_err() {
                return;
            }
        }
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://{}/", listener.local_addr().unwrap());
    let server = tls.map(|ca| ca.server_config());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        let slow = Throttled(tcp, rate);
        match server {
            None => serve(slow, tx),
            Some(config) => {
                let tls = rustls::ServerConnection::new(config).unwrap();
                serve(rustls::StreamOwned::new(tls, slow), tx);
            }
        }
    });
    (url, rx)
}

/// The server's side of the upgrade on a raw socket, for servers that then write frames by
/// hand: reads the client's request head and answers 101, with `extensions` as the
/// `Sec-WebSocket-Extensions` answer when given. The stream is left at the client's first
/// frame.
pub fn raw_upgrade(
    tcp: &mut (impl std::io::Read + std::io::Write),
    extensions: Option<&str>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    let key = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("sec-websocket-key")
                .then(|| value.trim().to_owned())
        })
        .ok_or_else(|| std::io::Error::other("no Sec-WebSocket-Key"))?;
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {accept}\r\n"
    );
    if let Some(extensions) = extensions {
        answer.push_str(&format!("Sec-WebSocket-Extensions: {extensions}\r\n"));
    }
    answer.push_str("\r\n");
    tcp.write_all(answer.as_bytes())
}
