//! Loopback servers for the adapter's own tests: a recording echo server (plain or TLS),
//! and a TCP listener that never answers. Every wait is bounded.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::Message as WsMessage;
use tungstenite::protocol::CloseFrame;
use wxsocket_blocking::{Event, Events};

/// How long any wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// What a server connection saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Saw {
    /// The opening handshake's request headers (lower-case names) and path.
    Request {
        path: String,
        headers: Vec<(String, String)>,
    },
    Message(WsMessage),
    Close(Option<(u16, String)>),
    /// The connection ended (read error or EOF after close) and its socket is closed.
    Ended,
}

/// Per connection: a clone of its socket (to shut it down when the server stops; the
/// connection's thread empties the slot when it ends) and its thread.
type Conns = Arc<Mutex<Vec<(Arc<Mutex<Option<TcpStream>>>, JoinHandle<()>)>>>;

/// A WebSocket echo server on 127.0.0.1 that reports what it saw. With TLS, it serves a
/// certificate for `localhost` and 127.0.0.1 signed by a CA generated at test time.
pub struct Server {
    pub addr: SocketAddr,
    pub saw: Receiver<Saw>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Conns,
}

pub struct Tls {
    pub ca_der: rustls::pki_types::CertificateDer<'static>,
    pub server: Arc<rustls::ServerConfig>,
}

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it.
pub fn tls() -> Tls {
    let ca = wxsocket_test_pki::TestCa::generate("blocking");
    Tls {
        server: ca.server_config(),
        ca_der: ca.ca_der,
    }
}

impl Server {
    /// A plain `ws` echo server.
    pub fn start() -> Self {
        Self::start_with(None, Some("chat"))
    }

    /// A `wss` echo server.
    pub fn start_tls(config: Arc<rustls::ServerConfig>) -> Self {
        Self::start_with(Some(config), Some("chat"))
    }

    /// `protocol`: the sub-protocol selected when the client offers it.
    pub fn start_with(
        tls: Option<Arc<rustls::ServerConfig>>,
        protocol: Option<&'static str>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, saw) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Conns = Arc::default();
        let accept = {
            let stop = Arc::clone(&stop);
            let conns = Arc::clone(&conns);
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let slot = Arc::new(Mutex::new(Some(stream.try_clone().unwrap())));
                    let tx = tx.clone();
                    let tls = tls.clone();
                    let mine = Arc::clone(&slot);
                    let handle = std::thread::spawn(move || {
                        serve(stream, tls, protocol, tx.clone());
                        mine.lock().unwrap().take();
                        let _ = tx.send(Saw::Ended);
                    });
                    let mut conns = conns.lock().unwrap();
                    conns.retain(|(_, h)| !h.is_finished());
                    conns.push((slot, handle));
                }
            })
        };
        Self {
            addr,
            saw,
            stop,
            accept: Some(accept),
            conns,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/echo", self.addr)
    }

    /// The next thing the server saw, within [`WAIT`].
    pub fn next(&self) -> Saw {
        self.saw
            .recv_timeout(WAIT)
            .expect("the server saw nothing in time")
    }

    /// Skips to the first `Saw` matching `pred`.
    pub fn until(&self, pred: impl Fn(&Saw) -> bool) -> Saw {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let saw = self
                .saw
                .recv_timeout(left)
                .expect("the server did not see it in time");
            if pred(&saw) {
                return saw;
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.addr);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }

        for (slot, handle) in std::mem::take(&mut *self.conns.lock().unwrap()) {
            if let Some(stream) = slot.lock().unwrap().as_ref() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            let _ = handle.join();
        }
    }
}

fn serve(
    stream: TcpStream,
    tls: Option<Arc<rustls::ServerConfig>>,
    protocol: Option<&'static str>,
    tx: Sender<Saw>,
) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    match tls {
        None => serve_ws(stream, protocol, tx),
        Some(config) => {
            let Ok(conn) = rustls::ServerConnection::new(config) else {
                return;
            };
            serve_ws(rustls::StreamOwned::new(conn, stream), protocol, tx);
        }
    }
}

#[allow(clippy::result_large_err)]
fn serve_ws<S: Read + Write>(stream: S, protocol: Option<&'static str>, tx: Sender<Saw>) {
    let callback = |req: &tungstenite::handshake::server::Request,
                    mut resp: tungstenite::handshake::server::Response| {
        let headers = req
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        let _ = tx.send(Saw::Request {
            path: req.uri().to_string(),
            headers,
        });
        let offered = req
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(',').any(|p| Some(p.trim()) == protocol))
            .unwrap_or(false);
        if offered {
            resp.headers_mut()
                .insert("sec-websocket-protocol", protocol.unwrap().parse().unwrap());
        }
        Ok(resp)
    };
    let Ok(mut ws) = tungstenite::accept_hdr(stream, callback) else {
        return;
    };
    loop {
        match ws.read() {
            Ok(WsMessage::Close(frame)) => {
                let _ = tx.send(Saw::Close(
                    frame.map(|f: CloseFrame| (u16::from(f.code), f.reason.to_string())),
                ));
            }
            Ok(m @ (WsMessage::Text(_) | WsMessage::Binary(_))) => {
                let _ = tx.send(Saw::Message(m.clone()));
                if ws.send(m).is_err() {
                    break;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

/// A TCP listener that accepts connections and never answers (for handshake timeouts).
pub struct Silent {
    pub addr: SocketAddr,
    listener: TcpListener,
    held: Vec<TcpStream>,
}

impl Silent {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Self {
            addr: listener.local_addr().unwrap(),
            listener,
            held: Vec::new(),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Accepts the next connection (within [`WAIT`]) and keeps it open, unanswered.
    pub fn accept(&mut self) -> TcpStream {
        let listener = self.listener.try_clone().unwrap();
        let (tx, rx) = mpsc::channel();
        // A helper thread so the wait is bounded; it ends with the accept.
        std::thread::spawn(move || {
            let _ = tx.send(listener.accept());
        });
        let (s, _) = rx
            .recv_timeout(WAIT)
            .expect("no connection to accept in time")
            .unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        self.held.push(s.try_clone().unwrap());
        s
    }
}

/// Answers the handshake on a connection held by [`Silent`] and echoes on it, from a
/// thread; the returned receiver sees what the server saw, and the thread is joined on drop.
pub struct Held {
    pub saw: Receiver<Saw>,
    stream: TcpStream,
    thread: Option<JoinHandle<()>>,
}

impl Held {
    pub fn serve(stream: TcpStream) -> Self {
        let (tx, saw) = mpsc::channel();
        let theirs = stream.try_clone().unwrap();
        let thread = std::thread::spawn(move || serve(theirs, None, Some("chat"), tx));
        Self {
            saw,
            stream,
            thread: Some(thread),
        }
    }

    /// Skips to the first `Saw` matching `pred`, within [`WAIT`].
    pub fn until(&self, pred: impl Fn(&Saw) -> bool) -> Saw {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let saw = self
                .saw
                .recv_timeout(left)
                .expect("the server did not see it in time");
            if pred(&saw) {
                return saw;
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The next event within [`WAIT`].
pub fn next(events: &Events) -> Event {
    events.recv_timeout(WAIT).expect("no event in time")
}

/// Events up to and including the first matching `pred`, within [`WAIT`].
pub fn until(events: &Events, pred: impl Fn(&Event) -> bool) -> Vec<Event> {
    let mut seen = Vec::new();
    loop {
        let event = next(events);
        let done = pred(&event);
        seen.push(event);
        if done {
            return seen;
        }
    }
}

pub fn is_open(e: &Event) -> bool {
    matches!(e, Event::Open { .. })
}

pub fn is_close(e: &Event) -> bool {
    matches!(e, Event::Close { .. })
}

pub fn is_message(e: &Event) -> bool {
    matches!(e, Event::Message { .. })
}

/// A thread's voluntary context switches so far (each sleep that ended counts one), from
/// its `/proc/.../status` (Linux).
pub fn voluntary_switches(task: &std::path::Path) -> u64 {
    let status = std::fs::read_to_string(task.join("status")).expect("task status (Linux /proc)");
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .expect("voluntary_ctxt_switches in /proc status")
        .trim()
        .parse()
        .expect("a number")
}

/// The CPU time a thread has used so far, from its `/proc/.../schedstat` (Linux).
pub fn cpu_time(task: &std::path::Path) -> Duration {
    let stat = std::fs::read_to_string(task.join("schedstat")).expect("task schedstat");
    let nanos = stat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("time on CPU in schedstat");
    Duration::from_nanos(nanos)
}

/// The `/proc` directory of the calling thread.
pub fn this_thread() -> std::path::PathBuf {
    std::path::PathBuf::from("/proc/thread-self")
}
