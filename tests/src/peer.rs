//! A scriptable WebSocket test server ([`Peer`]) for the conformance suites.
//!
//! The peer listens on `127.0.0.1:0`, serves every connection on its own std thread (so it
//! serves the tokio and the blocking adapter alike), and records what it saw: the handshake
//! request, the messages, pings and close frames each connection received, and when each
//! connection ended. Its frames are written by hand rather than by a WebSocket library, so
//! it can misbehave on purpose (invalid UTF-8, reserved opcodes, RSV bits, masked server
//! frames, oversized messages, a TCP drop in the middle of a frame, a close frame it never
//! answers). For reconnection tests it can also restart like a server would: close every
//! connection with a code ([`Peer::close_all`]) or drop them ([`Peer::drop_all`]), stop
//! listening and listen again on the same port, change its mode for later connections and
//! hold later handshakes. Dropping the peer shuts every connection down, joins every thread
//! and frees the port.
//!
//! Waiting is deterministic: [`Peer::wait_for`] blocks on a condition variable until the
//! record satisfies a predicate, with a timeout.

use bytes::Bytes;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wxsocket_core::{Message, Utf8Payload};

/// Largest frame payload the peer reads (the suites never send more).
const MAX_FRAME: u64 = 16 << 20;
/// How long the peer waits for the client's end of the TCP connection after it answered a
/// close frame, before it closes the connection itself.
const LINGER_AFTER_CLOSE: Duration = Duration::from_secs(2);

/// How the peer breaks the WebSocket protocol in [`Mode::Violation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// A data frame with the reserved opcode 0x3.
    ReservedOpcode,
    /// A text frame with RSV1..RSV3 set although no extension was negotiated.
    RsvBits,
    /// A frame masked by the server (RFC 6455 §5.1: a client must fail the connection).
    MaskedFrame,
}

/// What the peer does with each connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Accepts (selecting the first offered sub-protocol, if any), echoes text and binary
    /// messages, answers pings and close frames.
    Echo,
    /// Like [`Mode::Echo`] but always answers with this sub-protocol, offered or not.
    SelectProtocol(String),
    /// Like [`Mode::Echo`] but never selects a sub-protocol, even when some are offered.
    SelectNone,
    /// Answers the upgrade request with this HTTP status (e.g. 403) and closes.
    HttpStatus(u16),
    /// Reads the upgrade request and never answers it (until the client goes away).
    StallHandshake,
    /// Accepts and echoes, but never answers a close frame (keeps reading until the client
    /// drops the TCP connection).
    IgnoreClose,
    /// Accepts, then answers nothing at all: no echo, no pong, no close (it keeps reading
    /// and recording).
    Silent,
    /// Accepts, then sends a text frame whose payload is not UTF-8 (client should fail
    /// with 1007).
    InvalidUtf8,
    /// Accepts, then sends one binary message of this many bytes (bigger than the client's
    /// maximum: 1009).
    Oversized(usize),
    /// Accepts, then sends a frame that breaks the protocol (1002).
    Violation(Violation),
    /// Accepts, then closes with this code and reason, and completes the close handshake.
    CloseWith(u16, String),
    /// Accepts, then sends the first bytes of a 100-byte binary frame and drops the TCP
    /// connection (1006).
    DropMidMessage,
}

/// TLS setup of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Tls {
    /// Plain `ws://`.
    None,
    /// `wss://` with a certificate for `127.0.0.1` and `localhost` signed by a CA generated
    /// at start; [`Peer::ca_cert`] is that CA.
    Trusted,
    /// `wss://` with a certificate signed by a CA that [`Peer::ca_cert`] is *not*: a client
    /// trusting only `ca_cert` must reject it.
    UnknownCa,
}

/// A close frame the peer received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// Its code, `None` when the frame had no body.
    pub code: Option<u16>,
    /// Its reason.
    pub reason: String,
}

/// The upgrade request of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The request method.
    pub method: String,
    /// The request target (path and query).
    pub target: String,
    /// Every header, in order, as sent.
    pub headers: Vec<(String, String)>,
    /// The sub-protocols offered (`Sec-WebSocket-Protocol`, split on commas).
    pub protocols: Vec<String>,
}

impl Request {
    /// The first value of a header (name compared ASCII case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a header is present.
    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// What the peer saw on one TCP connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Connection {
    /// The upgrade request, once read.
    pub request: Option<Request>,
    /// Whether the peer answered the upgrade with 101.
    pub upgraded: bool,
    /// Data messages received, in order.
    pub messages: Vec<Message>,
    /// Pings received.
    pub pings: usize,
    /// Close frames received, in order.
    pub closes: Vec<CloseFrame>,
    /// Whether the connection is over (the client went away or the peer closed it).
    pub ended: bool,
    /// Whether the client ended the TCP connection (EOF or reset seen by the peer) rather
    /// than the peer closing it on its own.
    pub client_went_away: bool,
    /// Why the connection ended, when it was an error (TLS failure, reset, bad frame).
    pub error: Option<String>,
}

/// Everything the peer saw so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// TCP connections accepted.
    pub accepted: usize,
    /// One entry per accepted connection, in accept order.
    pub connections: Vec<Connection>,
}

impl Snapshot {
    /// Every data message received, over all connections, in accept order.
    pub fn all_messages(&self) -> Vec<Message> {
        self.connections
            .iter()
            .flat_map(|c| c.messages.iter().cloned())
            .collect()
    }
}

/// A CA generated at test time and a server certificate it signed (for 127.0.0.1 and
/// localhost), in DER for rustls servers and PEM for the interop peers.
pub struct TestCa {
    /// The CA certificate a client should trust.
    pub ca_der: CertificateDer<'static>,
    /// The server's certificate chain.
    pub server_chain: Vec<CertificateDer<'static>>,
    /// The server's private key (PKCS#8 DER).
    pub server_key: Vec<u8>,
    /// The server certificate, PEM.
    pub cert_pem: String,
    /// The server's private key, PEM.
    pub key_pem: String,
}

impl TestCa {
    /// Generates a CA named after `name` and a server certificate signed by it.
    pub fn generate(name: &str) -> Self {
        let ca_key = rcgen::KeyPair::generate().expect("generate CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("wxsocket test CA {name}"),
        );
        ca_params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-sign CA");
        let leaf_key = rcgen::KeyPair::generate().expect("generate server key");
        let mut leaf_params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("server params");
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wxsocket test server");
        leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let leaf = leaf_params
            .signed_by(&leaf_key, &ca)
            .expect("sign server cert");
        Self {
            ca_der: ca.der().clone(),
            server_chain: vec![leaf.der().clone()],
            server_key: leaf_key.serialize_der(),
            cert_pem: leaf.pem(),
            key_pem: leaf_key.serialize_pem(),
        }
    }

    fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone()));
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(self.server_chain.clone(), key)
            .expect("server certificate");
        Arc::new(config)
    }
}

struct State {
    snapshot: Snapshot,
    stop: bool,
    /// Whether upgrade requests may be answered (see [`PeerBuilder::hold_handshake`]).
    released: bool,
    /// The mode of connections accepted from now on (see [`Peer::set_mode`]).
    mode: Mode,
    /// Set by [`Peer::stop_listening`]: the accept thread closes its listener.
    pause: bool,
    /// Whether a listener is open (the accept thread clears it once it closed one).
    listening: bool,
    /// A listener bound by [`Peer::listen_again`], for the accept thread to take.
    next_listener: Option<TcpListener>,
    /// Clones of every accepted socket, shut down when the peer is dropped (`None` once
    /// [`Peer::drop_all`] dropped it).
    sockets: Vec<Option<TcpStream>>,
    /// Per connection: the lock every frame write takes, and what was written.
    writers: Vec<Arc<Mutex<Writer>>>,
    handlers: Vec<JoinHandle<()>>,
}

/// What the peer wrote on one connection, guarded by the lock its writes take (so a close
/// frame from [`Peer::close_all`] never lands inside a frame of the connection's thread).
#[derive(Default)]
struct Writer {
    /// The 101 response was written.
    upgraded: bool,
    /// The peer sent its own close frame ([`Peer::close_all`]): no data, pong or second
    /// close frame follows.
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking handler thread must not hide what it recorded.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, index: usize, f: impl FnOnce(&mut Connection)) {
        let mut state = self.lock();
        f(&mut state.snapshot.connections[index]);
        drop(state);
        self.changed.notify_all();
    }

    fn stopped(&self) -> bool {
        self.lock().stop
    }
}

/// Builds a [`Peer`].
#[derive(Debug, Clone)]
pub struct PeerBuilder {
    mode: Mode,
    tls: Tls,
    hold: bool,
}

impl PeerBuilder {
    /// Sets the TLS setup (default [`Tls::None`]).
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// Holds every upgrade request unanswered until [`Peer::release_handshakes`] is called,
    /// so a test can act while the client is certainly still connecting.
    pub fn hold_handshake(mut self) -> Self {
        self.hold = true;
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    pub fn start(self) -> Peer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (tls_config, ca_cert) = match self.tls {
            Tls::None => (None, None),
            Tls::Trusted => {
                let ca = TestCa::generate("trusted");
                (Some(ca.server_config()), Some(ca.ca_der.clone()))
            }
            Tls::UnknownCa => {
                let signer = TestCa::generate("unknown");
                let trusted = TestCa::generate("trusted");
                (Some(signer.server_config()), Some(trusted.ca_der.clone()))
            }
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                snapshot: Snapshot::default(),
                stop: false,
                released: !self.hold,
                mode: self.mode.clone(),
                pause: false,
                listening: true,
                next_listener: None,
                sockets: Vec::new(),
                writers: Vec::new(),
                handlers: Vec::new(),
            }),
            changed: Condvar::new(),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("peer-accept-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared, tls_config))
                .expect("spawn the peer's accept thread")
        };
        Peer {
            addr,
            tls: self.tls,
            ca_cert,
            shared,
            acceptor: Some(acceptor),
        }
    }
}

/// A scriptable WebSocket server on `127.0.0.1:0`; see the module docs.
///
/// ```
/// use wxsocket_tests::peer::{Mode, Peer};
/// let peer = Peer::start(Mode::Echo);
/// assert!(peer.url().starts_with("ws://127.0.0.1:"));
/// assert_eq!(peer.snapshot().accepted, 0);
/// ```
pub struct Peer {
    addr: SocketAddr,
    tls: Tls,
    ca_cert: Option<CertificateDer<'static>>,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Peer {
    /// A plain `ws://` peer in this mode.
    pub fn start(mode: Mode) -> Peer {
        Self::builder(mode).start()
    }

    /// A builder, for TLS and held handshakes.
    pub fn builder(mode: Mode) -> PeerBuilder {
        PeerBuilder {
            mode,
            tls: Tls::None,
            hold: false,
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL to connect to: `ws://127.0.0.1:PORT/` or `wss://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        let scheme = if self.tls == Tls::None { "ws" } else { "wss" };
        format!("{scheme}://{}/", self.addr)
    }

    /// The CA certificate (DER) a client should trust: the one that signed the server's
    /// certificate for [`Tls::Trusted`], an unrelated one for [`Tls::UnknownCa`], `None`
    /// for plain `ws://`.
    pub fn ca_cert(&self) -> Option<CertificateDer<'static>> {
        self.ca_cert.clone()
    }

    /// What the peer saw so far.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.lock().snapshot.clone()
    }

    /// Lets held upgrade requests be answered (see [`PeerBuilder::hold_handshake`]).
    pub fn release_handshakes(&self) {
        self.shared.lock().released = true;
        self.shared.changed.notify_all();
    }

    /// Holds upgrade requests arriving from now on unanswered until
    /// [`Peer::release_handshakes`] (like [`PeerBuilder::hold_handshake`], but later).
    pub fn hold_handshakes(&self) {
        self.shared.lock().released = false;
    }

    /// Sets the mode of the connections accepted from now on (current ones keep theirs).
    pub fn set_mode(&self, mode: Mode) {
        self.shared.lock().mode = mode;
    }

    /// Closes the listening socket, so dials are refused until [`Peer::listen_again`];
    /// current connections go on. Returns once the listener is closed. A dial that races
    /// with this may be accepted and dropped at once without being recorded.
    pub fn stop_listening(&self) {
        {
            let mut state = self.shared.lock();
            assert!(state.listening, "peer {}: not listening", self.addr);
            state.pause = true;
        }
        // Wake the accept thread, which is blocked in accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut state = self.shared.lock();
        while state.listening {
            let now = Instant::now();
            assert!(
                now < deadline,
                "peer {}: the listener was not closed",
                self.addr
            );
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Listens on the same address again (after [`Peer::stop_listening`]); dials succeed
    /// from the moment this returns.
    pub fn listen_again(&self) {
        let listener = TcpListener::bind(self.addr)
            .unwrap_or_else(|e| panic!("peer {}: cannot listen again: {e}", self.addr));
        let mut state = self.shared.lock();
        assert!(!state.listening, "peer {}: already listening", self.addr);
        state.next_listener = Some(listener);
        state.listening = true;
        drop(state);
        self.shared.changed.notify_all();
    }

    /// Starts the close handshake on every current connection with this code and reason,
    /// as a server restarting would (plain `ws://` only). The connections then answer the
    /// client's close frame and end as usual; connections still in their handshake are
    /// dropped. Returns how many close frames were sent.
    pub fn close_all(&self, code: u16, reason: &str) -> usize {
        assert_eq!(self.tls, Tls::None, "close_all writes plain frames");
        let frame = encode_frame(true, 0, opcode::CLOSE, &close_payload(code, reason), None);
        let lines = self.lines();
        let mut sent = 0;
        for (mut socket, writer, ended) in lines {
            if ended {
                continue;
            }
            let mut w = writer.lock().unwrap_or_else(|e| e.into_inner());
            if !w.upgraded {
                let _ = socket.shutdown(Shutdown::Both);
            } else if !w.closed {
                w.closed = true;
                if socket.write_all(&frame).is_ok() {
                    sent += 1;
                }
            }
        }
        sent
    }

    /// Drops every current connection abruptly, as a server process that dies would: TCP
    /// shut down and the socket closed (data arriving later is answered with a reset), no
    /// close frame.
    pub fn drop_all(&self) {
        let sockets: Vec<TcpStream> = {
            let mut state = self.shared.lock();
            state.sockets.iter_mut().filter_map(Option::take).collect()
        };
        for socket in sockets {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }

    /// Every connection's socket, writer and whether it ended.
    fn lines(&self) -> Vec<(TcpStream, Arc<Mutex<Writer>>, bool)> {
        let state = self.shared.lock();
        state
            .sockets
            .iter()
            .zip(&state.writers)
            .zip(&state.snapshot.connections)
            .filter_map(|((s, w), c)| Some((s.as_ref()?.try_clone().ok()?, Arc::clone(w), c.ended)))
            .collect()
    }

    /// Waits until `ready` holds for the record and returns it; panics after `timeout` with
    /// `what` and everything the peer saw.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&Snapshot) -> bool,
    ) -> Snapshot {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if ready(&state.snapshot) {
                return state.snapshot.clone();
            }
            let now = Instant::now();
            if now >= deadline {
                panic!(
                    "peer {}: timed out after {timeout:?} waiting for {what}; it saw {:#?}",
                    self.addr, state.snapshot
                );
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until connection `index` exists and satisfies `ready`.
    pub fn wait_conn(
        &self,
        index: usize,
        what: &str,
        timeout: Duration,
        ready: impl Fn(&Connection) -> bool,
    ) -> Connection {
        let snap = self.wait_for(what, timeout, |s| {
            s.connections.get(index).is_some_and(&ready)
        });
        snap.connections[index].clone()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stop = true;
            for socket in state.sockets.iter().flatten() {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        self.shared.changed.notify_all();
        // Wake the accept thread, which is blocked in accept().
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let handlers = {
            let mut state = self.shared.lock();
            for socket in state.sockets.iter().flatten() {
                let _ = socket.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut state.handlers)
        };
        for handler in handlers {
            let _ = handler.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>, tls: Option<Arc<rustls::ServerConfig>>) {
    let mut listener = Some(listener);
    loop {
        let Some(current) = listener.take() else {
            // Not listening (see `Peer::stop_listening`): wait for a new listener.
            let mut state = shared.lock();
            loop {
                if state.stop {
                    return;
                }
                if let Some(next) = state.next_listener.take() {
                    listener = Some(next);
                    break;
                }
                state = shared
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
            continue;
        };
        if shared.stopped() {
            return;
        }
        accept_until_paused(&current, &shared, &tls);
        drop(current);
        let mut state = shared.lock();
        if state.stop {
            return;
        }
        state.pause = false;
        state.listening = false;
        drop(state);
        shared.changed.notify_all();
    }
}

/// Accepts connections until the peer stops or pauses.
fn accept_until_paused(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tls: &Option<Arc<rustls::ServerConfig>>,
) {
    for stream in listener.incoming() {
        {
            let state = shared.lock();
            if state.stop || state.pause {
                return;
            }
        }
        let Ok(stream) = stream else { continue };
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let mut state = shared.lock();
        let index = state.snapshot.connections.len();
        state.snapshot.accepted += 1;
        state.snapshot.connections.push(Connection::default());
        state.sockets.push(Some(clone));
        let writer = Arc::new(Mutex::new(Writer::default()));
        state.writers.push(Arc::clone(&writer));
        let handler = {
            let shared = Arc::clone(shared);
            let mode = state.mode.clone();
            let tls = tls.clone();
            std::thread::Builder::new()
                .name(format!("peer-conn-{index}"))
                .spawn(move || {
                    let io = match tls {
                        Some(config) => match rustls::ServerConnection::new(config) {
                            Ok(conn) => Io::Tls(Box::new(rustls::StreamOwned::new(conn, stream))),
                            Err(e) => {
                                shared.update(index, |c| {
                                    c.ended = true;
                                    c.error = Some(e.to_string());
                                });
                                return;
                            }
                        },
                        None => Io::Plain(stream),
                    };
                    let mut handler = Handler {
                        io,
                        shared,
                        index,
                        mode,
                        writer,
                    };
                    let outcome = handler.run();
                    let _ = handler.io.tcp().shutdown(Shutdown::Both);
                    handler.shared.update(index, |c| {
                        c.ended = true;
                        match outcome {
                            Ok(End::ClientWentAway) => c.client_went_away = true,
                            Ok(End::ByPeer) => {}
                            Err(e) => {
                                c.client_went_away = true;
                                c.error = Some(e.to_string());
                            }
                        }
                    });
                })
                .expect("spawn a peer connection thread")
        };
        state.handlers.push(handler);
        drop(state);
        shared.changed.notify_all();
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls(s) => &s.sock,
        }
    }

    /// Ends the peer's side of the byte stream (TLS close_notify, then TCP FIN).
    fn shutdown_write(&mut self) {
        if let Io::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
        let _ = self.tcp().shutdown(Shutdown::Write);
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(buf),
            Io::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.write(buf),
            Io::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls(s) => s.flush(),
        }
    }
}

/// How a connection ended without an IO error.
enum End {
    /// EOF from the client.
    ClientWentAway,
    /// The peer closed it (after a close handshake, a drop on purpose, an HTTP error).
    ByPeer,
}

/// One received frame.
struct Frame {
    fin: bool,
    opcode: u8,
    payload: Vec<u8>,
}

mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Writes one frame as a server: unmasked unless `mask` is given.
fn encode_frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(if fin { 0x80 } else { 0 } | (rsv & 0x7) << 4 | (opcode & 0xF));
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// How a held handshake ended.
enum Held {
    Released,
    Stopping,
    ClientGone,
}

struct Handler {
    io: Io,
    shared: Arc<Shared>,
    index: usize,
    mode: Mode,
    writer: Arc<Mutex<Writer>>,
}

impl Handler {
    fn record(&self, f: impl FnOnce(&mut Connection)) {
        self.shared.update(self.index, f);
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        self.io.write_all(bytes)?;
        self.io.flush()
    }

    /// Sends a frame unless the peer already sent its close frame ([`Peer::close_all`]).
    fn send_unless_closed(&mut self, bytes: &[u8]) -> io::Result<()> {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if w.closed {
            return Ok(());
        }
        self.io.write_all(bytes)?;
        self.io.flush()
    }

    fn run(&mut self) -> io::Result<End> {
        let Some(request) = self.read_request()? else {
            return Ok(End::ClientWentAway);
        };
        let key = request
            .header("sec-websocket-key")
            .unwrap_or_default()
            .to_owned();
        let offered = request.protocols.clone();
        self.record(|c| c.request = Some(request));
        match self.wait_released() {
            Held::Released => {}
            Held::Stopping => return Ok(End::ByPeer),
            Held::ClientGone => return Ok(End::ClientWentAway),
        }
        let protocol = match &self.mode {
            Mode::HttpStatus(status) => {
                let status = *status;
                self.send(format!("HTTP/1.1 {status} Refused By Test Peer\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())?;
                self.io.shutdown_write();
                return self.drain_until_eof();
            }
            Mode::StallHandshake => return self.drain_until_eof(),
            Mode::SelectProtocol(p) => Some(p.clone()),
            Mode::SelectNone => None,
            _ => offered.first().cloned(),
        };
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nX-Test-Peer: wxsocket\r\n"
        );
        if let Some(p) = &protocol {
            response.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        response.push_str("\r\n");
        {
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            self.io.write_all(response.as_bytes())?;
            self.io.flush()?;
            w.upgraded = true;
        }
        self.record(|c| c.upgraded = true);

        // Modes that speak first.
        match self.mode.clone() {
            Mode::InvalidUtf8 => self.send(&encode_frame(
                true,
                0,
                opcode::TEXT,
                &[b'o', b'k', 0xFF, 0xFE],
                None,
            ))?,
            Mode::Oversized(n) => {
                self.send(&encode_frame(true, 0, opcode::BINARY, &vec![0x5A; n], None))?
            }
            Mode::Violation(v) => {
                let frame = match v {
                    Violation::ReservedOpcode => encode_frame(true, 0, 0x3, b"??", None),
                    Violation::RsvBits => encode_frame(true, 0b111, opcode::TEXT, b"rsv", None),
                    Violation::MaskedFrame => {
                        encode_frame(true, 0, opcode::TEXT, b"masked", Some([1, 2, 3, 4]))
                    }
                };
                self.send(&frame)?;
            }
            Mode::CloseWith(code, reason) => {
                self.send(&encode_frame(
                    true,
                    0,
                    opcode::CLOSE,
                    &close_payload(code, &reason),
                    None,
                ))?;
                // Wait for the client's answer, then close first (RFC 6455 §7.1.1).
                return self.frames(false, true, true);
            }
            Mode::DropMidMessage => {
                let frame = encode_frame(true, 0, opcode::BINARY, &[7; 100], None);
                self.send(&frame[..12])?;
                // The TCP connection ends in the middle of the frame, without a close
                // frame. (A FIN rather than a reset: a reset may discard the 101 response
                // before the client read it, and the test would race.)
                let _ = self.io.tcp().shutdown(Shutdown::Both);
                return Ok(End::ByPeer);
            }
            _ => {}
        }
        match self.mode {
            Mode::Echo | Mode::SelectProtocol(_) | Mode::SelectNone => {
                self.frames(true, true, true)
            }
            Mode::IgnoreClose => self.frames(true, true, false),
            Mode::Silent => self.frames(false, false, false),
            // After misbehaving: no echo, but a polite close handshake.
            _ => self.frames(false, true, true),
        }
    }

    /// Waits until handshakes are released, noticing meanwhile when the client goes away
    /// (it checks the socket every few milliseconds without consuming anything).
    fn wait_released(&self) -> Held {
        let mut state = self.shared.lock();
        loop {
            if state.stop {
                return Held::Stopping;
            }
            if state.released {
                return Held::Released;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, Duration::from_millis(5))
                .unwrap_or_else(|e| e.into_inner())
                .0;
            let tcp = self.io.tcp();
            if tcp.set_nonblocking(true).is_ok() {
                let mut b = [0u8; 1];
                let gone = matches!(tcp.peek(&mut b), Ok(0))
                    || matches!(tcp.peek(&mut b), Err(e) if e.kind() != io::ErrorKind::WouldBlock);
                let _ = tcp.set_nonblocking(false);
                if gone {
                    return Held::ClientGone;
                }
            }
        }
    }

    /// Reads the upgrade request; `None` on EOF before it was complete.
    fn read_request(&mut self) -> io::Result<Option<Request>> {
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        loop {
            // Read byte-wise after the first chunk boundary would be exact, but clients do
            // not send frames before the 101 arrives, so reading chunks is safe.
            let n = self.io.read(&mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(_)) => {
                    let headers: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_owned(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let protocols = headers
                        .iter()
                        .filter(|(n, _)| n.eq_ignore_ascii_case("sec-websocket-protocol"))
                        .flat_map(|(_, v)| v.split(','))
                        .map(|p| p.trim().to_owned())
                        .filter(|p| !p.is_empty())
                        .collect();
                    return Ok(Some(Request {
                        method: req.method.unwrap_or_default().to_owned(),
                        target: req.path.unwrap_or_default().to_owned(),
                        headers,
                        protocols,
                    }));
                }
                Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => {}
                Ok(httparse::Status::Partial) => {
                    return Err(io::Error::other("request head too large"));
                }
                Err(e) => return Err(io::Error::other(format!("bad request: {e}"))),
            }
        }
    }

    /// Reads and discards until the client goes away.
    fn drain_until_eof(&mut self) -> io::Result<End> {
        let mut chunk = [0u8; 1024];
        loop {
            if self.io.read(&mut chunk)? == 0 {
                return Ok(End::ClientWentAway);
            }
        }
    }

    fn read_frame(&mut self) -> io::Result<Option<Frame>> {
        let mut head = [0u8; 2];
        match self.io.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let fin = head[0] & 0x80 != 0;
        let opcode = head[0] & 0x0F;
        let masked = head[1] & 0x80 != 0;
        let len = match head[1] & 0x7F {
            126 => {
                let mut b = [0u8; 2];
                self.io.read_exact(&mut b)?;
                u64::from(u16::from_be_bytes(b))
            }
            127 => {
                let mut b = [0u8; 8];
                self.io.read_exact(&mut b)?;
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        if len > MAX_FRAME {
            return Err(io::Error::other(format!(
                "frame of {len} bytes is too large for the test peer"
            )));
        }
        let mut key = [0u8; 4];
        if masked {
            self.io.read_exact(&mut key)?;
        } else {
            return Err(io::Error::other("client frame is not masked"));
        }
        let mut payload = vec![0u8; len as usize];
        self.io.read_exact(&mut payload)?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= key[i % 4];
        }
        Ok(Some(Frame {
            fin,
            opcode,
            payload,
        }))
    }

    /// The frame loop after the handshake.
    fn frames(&mut self, echo: bool, answer_ping: bool, answer_close: bool) -> io::Result<End> {
        let mut partial: Option<(u8, Vec<u8>)> = None;
        loop {
            let Some(frame) = self.read_frame()? else {
                return Ok(End::ClientWentAway);
            };
            match frame.opcode {
                opcode::TEXT | opcode::BINARY | opcode::CONTINUATION => {
                    let (op, mut data) = match (frame.opcode, partial.take()) {
                        (opcode::CONTINUATION, Some(p)) => p,
                        (opcode::CONTINUATION, None) => {
                            return Err(io::Error::other("continuation without a start"));
                        }
                        (op, _) => (op, Vec::new()),
                    };
                    data.extend_from_slice(&frame.payload);
                    if !frame.fin {
                        partial = Some((op, data));
                        continue;
                    }
                    let message = if op == opcode::TEXT {
                        match Utf8Payload::try_from(Bytes::from(data.clone())) {
                            Ok(t) => Message::Text(t),
                            Err(_) => return Err(io::Error::other("client sent invalid UTF-8")),
                        }
                    } else {
                        Message::Binary(Bytes::from(data.clone()))
                    };
                    self.record(|c| c.messages.push(message));
                    if echo {
                        self.send_unless_closed(&encode_frame(true, 0, op, &data, None))?;
                    }
                }
                opcode::PING => {
                    self.record(|c| c.pings += 1);
                    if answer_ping {
                        let pong = encode_frame(true, 0, opcode::PONG, &frame.payload, None);
                        self.send_unless_closed(&pong)?;
                    }
                }
                opcode::PONG => {}
                opcode::CLOSE => {
                    let close = match frame.payload.len() {
                        0 | 1 => CloseFrame {
                            code: None,
                            reason: String::new(),
                        },
                        _ => CloseFrame {
                            code: Some(u16::from_be_bytes([frame.payload[0], frame.payload[1]])),
                            reason: String::from_utf8_lossy(&frame.payload[2..]).into_owned(),
                        },
                    };
                    let answered = matches!(self.mode, Mode::CloseWith(..)) || self.writer().closed;
                    self.record(|c| c.closes.push(close.clone()));
                    if !answer_close {
                        continue;
                    }
                    if !answered {
                        let reply = match close.code {
                            Some(code) => close_payload(code, &close.reason),
                            None => Vec::new(),
                        };
                        // The client may already be gone (it failed the connection).
                        let _ = self.send(&encode_frame(true, 0, opcode::CLOSE, &reply, None));
                    }
                    // The server closes the TCP connection first (RFC 6455 §7.1.1); wait a
                    // little for the client's side so "client went away" is recorded when
                    // it does close.
                    self.io.shutdown_write();
                    let _ = self.io.tcp().set_read_timeout(Some(LINGER_AFTER_CLOSE));
                    let mut chunk = [0u8; 256];
                    return match self.io.read(&mut chunk) {
                        Ok(0) => Ok(End::ClientWentAway),
                        _ => Ok(End::ByPeer),
                    };
                }
                other => {
                    return Err(io::Error::other(format!(
                        "client sent reserved opcode {other:#x}"
                    )));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tungstenite::Message as Ws;

    const T: Duration = Duration::from_secs(5);

    fn client(
        peer: &Peer,
        protocols: &str,
    ) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>> {
        use tungstenite::client::IntoClientRequest;
        let mut req = peer.url().into_client_request().unwrap();
        req.headers_mut().insert("x-custom", "yes".parse().unwrap());
        if !protocols.is_empty() {
            req.headers_mut()
                .insert("sec-websocket-protocol", protocols.parse().unwrap());
        }
        tungstenite::connect(req).map(|(ws, _)| ws).unwrap()
    }

    #[test]
    fn echo_records_everything() {
        let peer = Peer::start(Mode::Echo);
        let mut ws = client(&peer, "a, b");
        ws.send(Ws::text("hi")).unwrap();
        assert_eq!(ws.read().unwrap(), Ws::text("hi"));
        ws.send(Ws::binary(vec![1, 2, 3])).unwrap();
        assert_eq!(ws.read().unwrap(), Ws::binary(vec![1, 2, 3]));
        ws.close(Some(tungstenite::protocol::CloseFrame {
            code: 4001.into(),
            reason: "done".into(),
        }))
        .unwrap();
        loop {
            if ws.read().is_err() {
                break;
            }
        }
        drop(ws);
        let conn = peer.wait_conn(0, "end", T, |c| c.ended);
        let req = conn.request.unwrap();
        assert_eq!(req.protocols, ["a", "b"]);
        assert_eq!(req.header("X-Custom"), Some("yes"));
        assert_eq!(
            conn.messages,
            [Message::text("hi"), Message::binary(vec![1, 2, 3])]
        );
        assert_eq!(
            conn.closes,
            [CloseFrame {
                code: Some(4001),
                reason: "done".into()
            }]
        );
        assert!(conn.client_went_away);
    }

    #[test]
    fn http_status_and_close_with() {
        let peer = Peer::start(Mode::HttpStatus(403));
        let err = tungstenite::connect(peer.url()).unwrap_err();
        assert!(matches!(err, tungstenite::Error::Http(r) if r.status() == 403));
        let peer = Peer::start(Mode::CloseWith(4321, "bye".into()));
        let mut ws = client(&peer, "");
        match ws.read().unwrap() {
            Ws::Close(Some(f)) => {
                assert_eq!(u16::from(f.code), 4321);
                assert_eq!(f.reason.as_str(), "bye");
            }
            other => panic!("{other:?}"),
        }
        while ws.read().is_ok() {}
        drop(ws);
        let conn = peer.wait_conn(0, "end", T, |c| c.ended);
        assert_eq!(conn.closes[0].code, Some(4321));
    }

    #[test]
    fn misbehaviour_is_seen_by_tungstenite() {
        for (mode, check) in [
            (Mode::InvalidUtf8, "Utf8"),
            (Mode::Oversized(100_000), "Capacity"),
            (Mode::Violation(Violation::ReservedOpcode), "Protocol"),
            (Mode::Violation(Violation::RsvBits), "Protocol"),
            (Mode::Violation(Violation::MaskedFrame), "Protocol"),
            (Mode::DropMidMessage, ""),
        ] {
            let peer = Peer::start(mode.clone());
            let mut ws = {
                use tungstenite::client::IntoClientRequest;
                let req = peer.url().into_client_request().unwrap();
                let stream = TcpStream::connect(peer.addr()).unwrap();
                let cfg = tungstenite::protocol::WebSocketConfig::default()
                    .max_message_size(Some(1000))
                    .max_frame_size(Some(1000));
                tungstenite::client::client_with_config(req, stream, Some(cfg))
                    .unwrap()
                    .0
            };
            let err = ws.read().unwrap_err();
            assert!(format!("{err:?}").contains(check), "{mode:?}: {err:?}");
        }
    }

    #[test]
    fn tls_trusted_and_unknown() {
        for (tls, ok) in [(Tls::Trusted, true), (Tls::UnknownCa, false)] {
            let peer = Peer::builder(Mode::Echo).tls(tls).start();
            let mut roots = rustls::RootCertStore::empty();
            roots.add(peer.ca_cert().unwrap()).unwrap();
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
            let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
            let tcp = TcpStream::connect(peer.addr()).unwrap();
            let stream = rustls::StreamOwned::new(conn, tcp);
            let result = tungstenite::client(peer.url(), stream);
            assert_eq!(result.is_ok(), ok, "{tls:?}");
            if let Ok((mut ws, _)) = result {
                ws.send(Ws::text("tls")).unwrap();
                assert_eq!(ws.read().unwrap(), Ws::text("tls"));
            }
            drop(peer);
        }
    }

    #[test]
    fn drop_frees_stalled_connections() {
        let peer = Peer::start(Mode::StallHandshake);
        let mut tcp = TcpStream::connect(peer.addr()).unwrap();
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        peer.wait_conn(0, "request", T, |c| c.request.is_some());
        let addr = peer.addr();
        drop(peer);
        tcp.set_read_timeout(Some(T)).unwrap();
        let mut b = [0u8; 8];
        assert_eq!(tcp.read(&mut b).unwrap_or(0), 0);
        assert!(TcpStream::connect(addr).is_err());
    }
}
