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
//! answering dials and answer again on the same port, change its mode for later connections and
//! hold later handshakes. Dropping the peer shuts every connection down, joins every thread
//! and frees the port.
//!
//! permessage-deflate (RFC 7692): with [`PeerBuilder::deflate_answer`] the peer answers
//! every upgrade with that `Sec-WebSocket-Extensions` value and, when it is a valid
//! permessage-deflate answer, speaks the extension with the parameters it names (see
//! [`deflate`]): client frames with RSV1 are inflated (each [`Received`] message says
//! whether it arrived compressed and its size on the wire), echoes and scripted messages
//! go out compressed. [`Mode::Script`] sends scripted frames, well-formed or not
//! (fragmented compressed messages with a ping in between, RSV1 where it is not allowed,
//! invalid DEFLATE data, decompression bombs).
//!
//! Waiting is deterministic: [`Peer::wait_for`] blocks on a condition variable until the
//! record satisfies a predicate, with a timeout.

use bytes::Bytes;
use rustls::pki_types::CertificateDer;
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
    /// A binary frame whose 64-bit length has its most significant bit set (RFC 6455
    /// §5.2 requires it to be 0); one payload byte follows. tungstenite alone takes it for
    /// a message too large.
    TopBitLength,
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
    /// Accepts, sends these steps in order, then behaves like [`Mode::Echo`]. A step whose
    /// write fails ends the script (recorded in [`Connection::write_error`]) and the peer
    /// goes on reading what the client sent.
    Script(Vec<Step>),
}

/// One scripted send of [`Mode::Script`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// A message in one frame, compressed (RSV1) when permessage-deflate was agreed.
    Message(Message),
    /// A message in one frame, never compressed.
    Uncompressed(Message),
    /// A message, compressed when permessage-deflate was agreed, split into `fragments`
    /// frames (RSV1 on the first only); with `ping`, a ping with payload `mid-message`
    /// goes between the first and the second fragment.
    Fragmented {
        /// The message.
        message: Message,
        /// How many frames (at least 1).
        fragments: usize,
        /// Whether a ping goes after the first fragment.
        ping: bool,
    },
    /// A frame written exactly as given (server frames are unmasked). A compressed payload
    /// made with [`deflate::compress`] is not known to the peer's compressor: send no
    /// compressed [`Step::Message`] after it unless the peer resets its context.
    Frame {
        /// FIN bit.
        fin: bool,
        /// RSV1..RSV3 as a 3-bit number (RSV1 = 0b100).
        rsv: u8,
        /// The opcode (see [`opcode`]).
        opcode: u8,
        /// The payload.
        payload: Vec<u8>,
    },
    /// Several [`Step::Frame`]s (only those) written in one write, so they reach the client
    /// together, in one read.
    Together(Vec<Step>),
    /// Several [`Step::Frame`]s (only those) and after them a TLS record that does not
    /// decrypt (application data no key encrypted, as a corrupted or forged record is), all
    /// in one write to the socket, so the client reads them together: it must deliver the
    /// frames, then fail the connection. On a [`Tls`] peer only.
    WithBadRecord(Vec<Step>),
    /// Several [`Step::Frame`]s (only those) written in the same write as the 101 response,
    /// so the client reads them together with the response head. Only as the first step.
    WithResponse(Vec<Step>),
    /// Waits until the client sent this many data messages on the connection (counted
    /// from the start; they are recorded, not echoed), so what follows certainly arrives
    /// after the client saw the handshake complete.
    AwaitMessages(usize),
    /// A message in one uncompressed frame, written in `pieces` parts with `pause` after
    /// each: a peer that sends a large message slowly, as over a slow link.
    Trickle {
        /// The message.
        message: Message,
        /// How many parts (at least 1).
        pieces: usize,
        /// The pause after each part.
        pause: Duration,
    },
    /// A binary message with RSV1 whose payload inflates to `zeros` zero bytes (see
    /// [`deflate::bomb`]), split into `fragments` frames.
    Bomb {
        /// The inflated size.
        zeros: usize,
        /// How many frames (at least 1).
        fragments: usize,
    },
}

impl Step {
    /// A whole frame ([`Step::Frame`]: FIN set, no RSV bit) of `opcode` (see [`opcode`])
    /// carrying `payload`.
    ///
    /// ```
    /// use wxsocket_testkit::peer::{Step, opcode};
    /// assert_eq!(
    ///     Step::frame(opcode::TEXT, "hi"),
    ///     Step::Frame { fin: true, rsv: 0, opcode: opcode::TEXT, payload: b"hi".to_vec() }
    /// );
    /// ```
    pub fn frame(opcode: u8, payload: impl Into<Vec<u8>>) -> Step {
        Step::Frame {
            fin: true,
            rsv: 0,
            opcode,
            payload: payload.into(),
        }
    }
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
    /// As [`Tls::Trusted`], and the peer requires a client certificate signed by the same
    /// CA (mutual TLS): [`Peer::client_pki`] holds one.
    ClientCertificate,
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
    /// Data messages received, in order (inflated when they arrived compressed).
    pub messages: Vec<Message>,
    /// The same messages with how they travelled.
    pub received: Vec<Received>,
    /// Pings received.
    pub pings: usize,
    /// The payloads of the pongs received, in order.
    pub pongs: Vec<Vec<u8>>,
    /// The permessage-deflate parameters the peer applied ([`PeerBuilder::deflate_answer`]).
    pub deflate: Option<deflate::Agreed>,
    /// Why a scripted step could not be written ([`Mode::Script`]).
    pub write_error: Option<String>,
    /// Close frames received, in order.
    pub closes: Vec<CloseFrame>,
    /// Whether the connection is over (the client went away or the peer closed it).
    pub ended: bool,
    /// Whether the client ended the TCP connection (EOF or reset seen by the peer) rather
    /// than the peer closing it on its own.
    pub client_went_away: bool,
    /// Why the connection ended, when it was an error (TLS failure, reset, bad frame).
    pub error: Option<String>,
    /// The certificate the client presented (the first of its chain, DER), once the upgrade
    /// request was read over TLS; `None` when it presented none.
    pub client_certificate: Option<Vec<u8>>,
    /// The TLS key exchange group the handshake agreed on, once the upgrade request was read
    /// over TLS ([`PeerBuilder::tls_key_exchange`]).
    pub tls_key_exchange: Option<rustls::NamedGroup>,
}

/// One data message the peer received, and how it travelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The message (inflated).
    pub message: Message,
    /// Whether it arrived compressed (RSV1 on its first frame).
    pub compressed: bool,
    /// Its payload bytes on the wire, over all its frames.
    pub wire_size: usize,
    /// How many frames it came in.
    pub frames: usize,
    /// The longest LZ77 back-reference in its compressed data (0 when uncompressed): at
    /// most the client's window, 2^`client_max_window_bits`.
    pub max_distance: usize,
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

pub use wxsocket_test_pki::TestCa;

struct State {
    snapshot: Snapshot,
    stop: bool,
    /// Whether upgrade requests may be answered (see [`PeerBuilder::hold_handshake`]).
    released: bool,
    /// Whether open connections stop reading frames (see [`Peer::hold_reads`]).
    reads_held: bool,
    /// The mode of connections accepted from now on (see [`Peer::set_mode`]).
    mode: Mode,
    /// The extension answer of connections accepted from now on.
    deflate_answer: Option<String>,
    quirks: Quirks,
    /// Set by [`Peer::stop_listening`], cleared by [`Peer::listen_again`]: the accept
    /// thread drops every connection it accepts. The listener itself stays open, so the
    /// port stays ours (a port closed and bound again may meanwhile be taken).
    pause: bool,
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
    key_exchange: Vec<rustls::NamedGroup>,
    hold: bool,
    deflate_answer: Option<String>,
    quirks: Quirks,
}

/// Ways the peer departs from an ordinary server, set on the [`PeerBuilder`].
#[derive(Debug, Clone, Default)]
struct Quirks {
    /// Header lines added to every 101 response (`{accept}` is the right accept value).
    response_headers: Vec<String>,
    /// Interim answers (whole heads) written before the 101.
    interim_answers: Vec<String>,
    /// The 101 response's status line, when not the usual one.
    status_line: Option<String>,
    /// After the close handshake, keep the TCP connection open until the client closes it.
    keep_tcp_after_close: bool,
    /// Wait this long after reading an upgrade request (and its release, when held)
    /// before answering it.
    delay_response: Option<Duration>,
}

impl PeerBuilder {
    /// Sets the TLS setup (default [`Tls::None`]).
    pub fn tls(mut self, tls: Tls) -> Self {
        self.tls = tls;
        self
    }

    /// With [`Tls::Trusted`], agrees only to these TLS key exchange groups, in this order of
    /// preference (default: the provider's own, post-quantum X25519MLKEM768 first). A client
    /// whose first key share is not among them must retry its hello with one that is.
    ///
    /// # Panics
    /// In [`Self::start`], when set with another [`Tls`] setup.
    pub fn tls_key_exchange(mut self, groups: &[rustls::NamedGroup]) -> Self {
        self.key_exchange = groups.to_vec();
        self
    }

    /// Holds every upgrade request unanswered until [`Peer::release_handshakes`] is called,
    /// so a test can act while the client is certainly still connecting.
    pub fn hold_handshake(mut self) -> Self {
        self.hold = true;
        self
    }

    /// Answers every upgrade with `Sec-WebSocket-Extensions: {answer}`, offered or not
    /// (default: no extension, whatever the client offers). When the answer is one valid
    /// permessage-deflate, the peer applies the parameters it names ([`deflate::Agreed`]):
    /// it inflates the client's RSV1 messages and compresses what it sends.
    pub fn deflate_answer(mut self, answer: impl Into<String>) -> Self {
        self.deflate_answer = Some(answer.into());
        self
    }

    /// Adds the header line `line` (without CRLF) to every 101 response; `{accept}` in it
    /// is replaced by the right `Sec-WebSocket-Accept` value (to repeat that header).
    pub fn response_header(mut self, line: impl Into<String>) -> Self {
        self.quirks.response_headers.push(line.into());
        self
    }

    /// Writes `head` (a whole interim answer such as `"HTTP/1.1 100 Continue\r\n\r\n"`)
    /// before every 101 response, in the same write.
    pub fn interim_answer(mut self, head: impl Into<String>) -> Self {
        self.quirks.interim_answers.push(head.into());
        self
    }

    /// Starts every 101 response with `line` (without CRLF) instead of
    /// `HTTP/1.1 101 Switching Protocols`.
    pub fn status_line(mut self, line: impl Into<String>) -> Self {
        self.quirks.status_line = Some(line.into());
        self
    }

    /// Answers every upgrade request `delay` after reading it (after its release, when
    /// held): a slow server, for the open event's timing profile.
    pub fn delay_response(mut self, delay: Duration) -> Self {
        self.quirks.delay_response = Some(delay);
        self
    }

    /// After the close handshake (whoever began it) the peer keeps the TCP connection open
    /// until the client closes it, instead of closing it first (RFC 6455 §7.1.1 asks the
    /// server to); [`Connection::client_went_away`] records that the client did.
    pub fn keep_tcp_after_close(mut self) -> Self {
        self.quirks.keep_tcp_after_close = true;
        self
    }

    /// Binds `127.0.0.1:0` and starts serving.
    pub fn start(self) -> Peer {
        check_mode(&self.mode);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        assert!(
            self.key_exchange.is_empty() || self.tls == Tls::Trusted,
            "key exchange groups are set with Tls::Trusted only"
        );
        let (tls_config, pki) = match self.tls {
            Tls::None => (None, None),
            Tls::Trusted => {
                let ca = TestCa::generate("trusted");
                (
                    Some(ca.server_config_with_groups(&self.key_exchange)),
                    Some(ca),
                )
            }
            Tls::UnknownCa => {
                let signer = TestCa::generate("unknown");
                let trusted = TestCa::generate("trusted");
                (Some(signer.server_config()), Some(trusted))
            }
            Tls::ClientCertificate => {
                let ca = TestCa::generate("mutual");
                (Some(ca.server_config_requiring_clients()), Some(ca))
            }
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                snapshot: Snapshot::default(),
                stop: false,
                released: !self.hold,
                reads_held: false,
                mode: self.mode.clone(),
                deflate_answer: self.deflate_answer.clone(),
                quirks: self.quirks.clone(),
                pause: false,
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
            pki,
            shared,
            acceptor: Some(acceptor),
        }
    }
}

/// A scriptable WebSocket server on `127.0.0.1:0`; see the module docs.
///
/// ```
/// use wxsocket_testkit::peer::{Mode, Peer};
/// let peer = Peer::start(Mode::Echo);
/// assert!(peer.url().starts_with("ws://127.0.0.1:"));
/// assert_eq!(peer.snapshot().accepted, 0);
/// ```
pub struct Peer {
    addr: SocketAddr,
    tls: Tls,
    pki: Option<TestCa>,
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
            key_exchange: Vec::new(),
            hold: false,
            deflate_answer: None,
            quirks: Quirks::default(),
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
        self.pki.as_ref().map(|ca| ca.ca_der.clone())
    }

    /// The test CA behind [`Self::ca_cert`], with the client certificate it signed: the one
    /// a [`Tls::ClientCertificate`] peer accepts (`None` for plain `ws://`).
    pub fn client_pki(&self) -> Option<&TestCa> {
        self.pki.as_ref()
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

    /// Stops reading frames on every open connection (after the frame each is reading)
    /// until [`Peer::release_reads`]: what the client writes meanwhile fills the TCP
    /// socket, and its writes wait for room.
    pub fn hold_reads(&self) {
        self.shared.lock().reads_held = true;
    }

    /// Lets connections read frames again (see [`Peer::hold_reads`]).
    pub fn release_reads(&self) {
        self.shared.lock().reads_held = false;
        self.shared.changed.notify_all();
    }

    /// Sets the mode of the connections accepted from now on (current ones keep theirs).
    pub fn set_mode(&self, mode: Mode) {
        check_mode(&mode);
        self.shared.lock().mode = mode;
    }

    /// Sets the extension answer of the connections accepted from now on (see
    /// [`PeerBuilder::deflate_answer`]; `None`: no extension).
    pub fn set_deflate_answer(&self, answer: Option<&str>) {
        self.shared.lock().deflate_answer = answer.map(str::to_owned);
    }

    /// Stops answering: from when this returns until [`Peer::listen_again`], every dial is
    /// accepted and dropped at once, unrecorded (the client's handshake fails); current
    /// connections go on. The listening socket stays open, so no one else can take the
    /// port meanwhile.
    pub fn stop_listening(&self) {
        let mut state = self.shared.lock();
        assert!(!state.pause, "peer {}: not listening", self.addr);
        state.pause = true;
    }

    /// Answers dials again (after [`Peer::stop_listening`]), from the moment this returns.
    pub fn listen_again(&self) {
        let mut state = self.shared.lock();
        assert!(state.pause, "peer {}: already listening", self.addr);
        state.pause = false;
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
    if !shared.stopped() {
        accept_until_stopped(&listener, &shared, &tls);
    }
}

/// Accepts connections until the peer stops; while it is paused, drops them.
fn accept_until_stopped(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    tls: &Option<Arc<rustls::ServerConfig>>,
) {
    for stream in listener.incoming() {
        let paused = {
            let state = shared.lock();
            if state.stop {
                return;
            }
            state.pause
        };
        let Ok(stream) = stream else { continue };
        if paused {
            let _ = stream.shutdown(Shutdown::Both);
            continue;
        }
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
            let deflate_answer = state.deflate_answer.clone();
            let quirks = state.quirks.clone();
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
                        deflate_answer,
                        quirks,
                        compressor: None,
                        inflater: None,
                        partial: None,
                        received: 0,
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
    /// RSV1..RSV3 as a 3-bit number (RSV1 = 0b100).
    rsv: u8,
    opcode: u8,
    payload: Vec<u8>,
}

/// Frame opcodes (RFC 6455 §5.2), for [`Step::Frame`].
pub mod opcode {
    /// Continuation frame.
    pub const CONTINUATION: u8 = 0x0;
    /// Text frame.
    pub const TEXT: u8 = 0x1;
    /// Binary frame.
    pub const BINARY: u8 = 0x2;
    /// Close frame.
    pub const CLOSE: u8 = 0x8;
    /// Ping frame.
    pub const PING: u8 = 0x9;
    /// Pong frame.
    pub const PONG: u8 = 0xA;
}

/// RSV1: the message is compressed (RFC 7692 §6).
const RSV1: u8 = 0b100;

/// A message being received across frames.
struct Partial {
    opcode: u8,
    data: Vec<u8>,
    compressed: bool,
    frames: usize,
}

/// Writes one frame as a server: unmasked unless `mask` is given.
/// Refuses, in the test's own thread, a script the peer could not play as written:
/// [`Step::WithResponse`] anywhere but first would never be sent.
fn check_mode(mode: &Mode) {
    if let Mode::Script(steps) = mode {
        assert!(
            !steps
                .iter()
                .skip(1)
                .any(|s| matches!(s, Step::WithResponse(_))),
            "Step::WithResponse goes only first in a script"
        );
    }
}

/// The bytes of several [`Step::Frame`]s, for one write.
fn frame_bytes(frames: &[Step]) -> Vec<u8> {
    let mut bytes = Vec::new();
    for frame in frames {
        let Step::Frame {
            fin,
            rsv,
            opcode,
            payload,
        } = frame
        else {
            panic!("only frames go together, not {frame:?}");
        };
        bytes.extend(encode_frame(*fin, *rsv, *opcode, payload, None));
    }
    bytes
}

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

/// The opcode of a data message.
fn message_opcode(message: &Message) -> u8 {
    if message.is_text() {
        opcode::TEXT
    } else {
        opcode::BINARY
    }
}

/// `payload` cut into `n` (at least one) parts of nearly equal size.
fn split(payload: &[u8], n: usize) -> Vec<&[u8]> {
    let n = n.max(1);
    let size = payload.len().div_ceil(n).max(1);
    let mut parts: Vec<&[u8]> = payload.chunks(size).collect();
    while parts.len() < n {
        parts.push(&[]);
    }
    parts
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
    /// The `Sec-WebSocket-Extensions` answer to send.
    deflate_answer: Option<String>,
    quirks: Quirks,
    /// Set once permessage-deflate was agreed.
    compressor: Option<deflate::Compressor>,
    inflater: Option<deflate::Inflater>,
    /// The data message being received across frames.
    partial: Option<Partial>,
    /// How many data messages were received.
    received: usize,
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

    /// Encrypts `bytes` and writes their records with a bad one behind them, in one write
    /// ([`Step::WithBadRecord`]).
    fn send_with_bad_record(&mut self, bytes: &[u8]) -> io::Result<()> {
        let w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if w.closed {
            return Ok(());
        }
        let Io::Tls(tls) = &mut self.io else {
            panic!("Step::WithBadRecord needs a TLS peer");
        };
        tls.flush()?;
        tls.conn.writer().write_all(bytes)?;
        let mut records = Vec::new();
        while tls.conn.wants_write() {
            tls.conn.write_tls(&mut records)?;
        }
        // Type application data, TLS 1.2 on the wire, 32 bytes.
        records.extend([0x17, 0x03, 0x03, 0x00, 0x20]);
        records.extend([0x5a; 32]);
        tls.sock.write_all(&records)
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
        let (client_certificate, tls_key_exchange) = match &self.io {
            Io::Tls(tls) => (
                tls.conn
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| cert.to_vec()),
                tls.conn
                    .negotiated_key_exchange_group()
                    .map(|group| group.name()),
            ),
            Io::Plain(_) => (None, None),
        };
        self.record(|c| {
            c.request = Some(request);
            c.client_certificate = client_certificate;
            c.tls_key_exchange = tls_key_exchange;
        });
        match self.wait_released() {
            Held::Released => {}
            Held::Stopping => return Ok(End::ByPeer),
            Held::ClientGone => return Ok(End::ClientWentAway),
        }
        if let Some(delay) = self.quirks.delay_response {
            // The behaviour under test (a slow server), not a wait for something.
            std::thread::sleep(delay);
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
        let mut response = self.quirks.interim_answers.concat();
        let status = self.quirks.status_line.as_deref();
        response.push_str(status.unwrap_or("HTTP/1.1 101 Switching Protocols"));
        response.push_str(&format!(
            "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\nX-Test-Peer: wxsocket\r\n"
        ));
        if let Some(p) = &protocol {
            response.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        for line in &self.quirks.response_headers {
            response.push_str(&line.replace("{accept}", &accept));
            response.push_str("\r\n");
        }
        let agreed = self
            .deflate_answer
            .as_deref()
            .and_then(deflate::Agreed::parse);
        if let Some(answer) = &self.deflate_answer {
            response.push_str(&format!("Sec-WebSocket-Extensions: {answer}\r\n"));
        }
        if let Some(agreed) = agreed {
            self.compressor = Some(deflate::Compressor::new(agreed));
            self.inflater = Some(deflate::Inflater::new(agreed));
        }
        response.push_str("\r\n");
        let mut response = response.into_bytes();
        if let Mode::Script(steps) = &self.mode
            && let Some(Step::WithResponse(frames)) = steps.first()
        {
            response.extend(frame_bytes(frames));
        }
        {
            let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            self.io.write_all(&response)?;
            self.io.flush()?;
            w.upgraded = true;
        }
        self.record(|c| {
            c.upgraded = true;
            c.deflate = agreed;
        });

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
                    Violation::TopBitLength => {
                        let mut frame = vec![0x80 | opcode::BINARY, 127];
                        frame.extend_from_slice(&(1u64 << 63 | 1).to_be_bytes());
                        frame.push(0xaa);
                        frame
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
            Mode::Script(steps) => {
                for step in &steps {
                    if let Step::AwaitMessages(n) = step {
                        while self.received < *n {
                            if let Some(end) = self.frame(false, true, true)? {
                                return Ok(end);
                            }
                        }
                    } else if let Err(e) = self.play(step) {
                        self.record(|c| c.write_error = Some(format!("{step:?}: {e}")));
                        break;
                    }
                }
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
            Mode::Echo | Mode::SelectProtocol(_) | Mode::SelectNone | Mode::Script(_) => {
                self.frames(true, true, true)
            }
            Mode::IgnoreClose => self.frames(true, true, false),
            Mode::Silent => self.frames(false, false, false),
            // After misbehaving: no echo, but a polite close handshake.
            _ => self.frames(false, true, true),
        }
    }

    /// Waits while reads are held ([`Peer::hold_reads`]), or until the peer stops.
    fn wait_reads_released(&self) {
        let mut state = self.shared.lock();
        while state.reads_held && !state.stop {
            state = self
                .shared
                .changed
                .wait(state)
                .unwrap_or_else(|e| e.into_inner());
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
        let rsv = (head[0] >> 4) & 0x7;
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
            rsv,
            opcode,
            payload,
        }))
    }

    /// Sends one scripted step.
    fn play(&mut self, step: &Step) -> io::Result<()> {
        match step {
            Step::Message(m) => self.send_message(m, true),
            Step::Uncompressed(m) => self.send_message(m, false),
            Step::Fragmented {
                message,
                fragments,
                ping,
            } => {
                let (payload, rsv) = match &mut self.compressor {
                    Some(c) => (c.message(message.as_bytes()), RSV1),
                    None => (message.as_bytes().to_vec(), 0),
                };
                let frames = split(&payload, *fragments);
                let last = frames.len() - 1;
                for (i, part) in frames.into_iter().enumerate() {
                    let (op, rsv) = match i {
                        0 => (message_opcode(message), rsv),
                        _ => (opcode::CONTINUATION, 0),
                    };
                    self.send_unless_closed(&encode_frame(i == last, rsv, op, part, None))?;
                    if i == 0 && *ping {
                        let ping = encode_frame(true, 0, opcode::PING, b"mid-message", None);
                        self.send_unless_closed(&ping)?;
                    }
                }
                Ok(())
            }
            Step::Frame {
                fin,
                rsv,
                opcode,
                payload,
            } => self.send_unless_closed(&encode_frame(*fin, *rsv, *opcode, payload, None)),
            Step::Together(frames) => self.send_unless_closed(&frame_bytes(frames)),
            Step::WithBadRecord(frames) => self.send_with_bad_record(&frame_bytes(frames)),
            // Written with the 101 response (`check_mode`: only as the first step).
            Step::WithResponse(_) => Ok(()),
            Step::AwaitMessages(_) => unreachable!("the script loop waits itself"),
            Step::Trickle {
                message,
                pieces,
                pause,
            } => {
                let frame =
                    encode_frame(true, 0, message_opcode(message), message.as_bytes(), None);
                for part in split(&frame, *pieces) {
                    self.send_unless_closed(part)?;
                    std::thread::sleep(*pause);
                }
                Ok(())
            }
            Step::Bomb { zeros, fragments } => {
                let bomb = deflate::bomb(*zeros);
                let frames = split(&bomb, *fragments);
                let last = frames.len() - 1;
                let mut bytes = Vec::with_capacity(bomb.len() + 14 * frames.len());
                for (i, part) in frames.into_iter().enumerate() {
                    let (op, rsv) = match i {
                        0 => (opcode::BINARY, RSV1),
                        _ => (opcode::CONTINUATION, 0),
                    };
                    bytes.extend(encode_frame(i == last, rsv, op, part, None));
                }
                self.send_unless_closed(&bytes)
            }
        }
    }

    /// Sends a data message in one frame, compressed when `compress` and permessage-deflate
    /// was agreed.
    fn send_message(&mut self, message: &Message, compress: bool) -> io::Result<()> {
        let op = message_opcode(message);
        let frame = match &mut self.compressor {
            Some(c) if compress => {
                encode_frame(true, RSV1, op, &c.message(message.as_bytes()), None)
            }
            _ => encode_frame(true, 0, op, message.as_bytes(), None),
        };
        self.send_unless_closed(&frame)
    }

    /// The frame loop after the handshake.
    fn frames(&mut self, echo: bool, answer_ping: bool, answer_close: bool) -> io::Result<End> {
        loop {
            self.wait_reads_released();
            if let Some(end) = self.frame(echo, answer_ping, answer_close)? {
                return Ok(end);
            }
        }
    }

    /// Reads and handles one frame; `Some` when the connection is over.
    fn frame(
        &mut self,
        echo: bool,
        answer_ping: bool,
        answer_close: bool,
    ) -> io::Result<Option<End>> {
        let Some(frame) = self.read_frame()? else {
            return Ok(Some(End::ClientWentAway));
        };
        let control = frame.opcode & 0x8 != 0;
        if frame.rsv & !RSV1 != 0 || (control && frame.rsv != 0) {
            return Err(io::Error::other(format!(
                "client set RSV bits {:#05b} on a frame with opcode {:#x}",
                frame.rsv, frame.opcode
            )));
        }
        match frame.opcode {
            opcode::TEXT | opcode::BINARY | opcode::CONTINUATION => {
                let compressed = frame.rsv & RSV1 != 0;
                let mut p = match (frame.opcode, self.partial.take()) {
                    (opcode::CONTINUATION, _) if compressed => {
                        return Err(io::Error::other("client set RSV1 on a continuation frame"));
                    }
                    (opcode::CONTINUATION, Some(p)) => p,
                    (opcode::CONTINUATION, None) => {
                        return Err(io::Error::other("continuation without a start"));
                    }
                    (_, Some(_)) => {
                        return Err(io::Error::other(
                            "a new message began before the previous one ended",
                        ));
                    }
                    (op, None) => {
                        if compressed && self.inflater.is_none() {
                            return Err(io::Error::other(
                                "client set RSV1 without permessage-deflate agreed",
                            ));
                        }
                        Partial {
                            opcode: op,
                            data: Vec::new(),
                            compressed,
                            frames: 0,
                        }
                    }
                };
                p.data.extend_from_slice(&frame.payload);
                p.frames += 1;
                if !frame.fin {
                    self.partial = Some(p);
                    return Ok(None);
                }
                let wire_size = p.data.len();
                let (data, max_distance) = match &mut self.inflater {
                    Some(inflater) if p.compressed => {
                        inflater.message(&p.data).map_err(io::Error::other)?
                    }
                    _ => (p.data, 0),
                };
                let message = if p.opcode == opcode::TEXT {
                    match Utf8Payload::try_from(Bytes::from(data)) {
                        Ok(t) => Message::Text(t),
                        Err(_) => return Err(io::Error::other("client sent invalid UTF-8")),
                    }
                } else {
                    Message::Binary(Bytes::from(data))
                };
                let received = Received {
                    message: message.clone(),
                    compressed: p.compressed,
                    wire_size,
                    frames: p.frames,
                    max_distance,
                };
                self.received += 1;
                self.record(|c| {
                    c.messages.push(received.message.clone());
                    c.received.push(received);
                });
                if echo {
                    self.send_message(&message, true)?;
                }
            }
            opcode::PING => {
                self.record(|c| c.pings += 1);
                if answer_ping {
                    let pong = encode_frame(true, 0, opcode::PONG, &frame.payload, None);
                    self.send_unless_closed(&pong)?;
                }
            }
            opcode::PONG => self.record(|c| c.pongs.push(frame.payload)),
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
                    return Ok(None);
                }
                if !answered {
                    let reply = match close.code {
                        Some(code) => close_payload(code, &close.reason),
                        None => Vec::new(),
                    };
                    // The client may already be gone (it failed the connection).
                    let _ = self.send(&encode_frame(true, 0, opcode::CLOSE, &reply, None));
                }
                if self.quirks.keep_tcp_after_close {
                    // Only the client can end it now (or the peer's drop).
                    return self.drain_until_eof().map(Some);
                }
                // The server closes the TCP connection first (RFC 6455 §7.1.1); wait a
                // little for the client's side so "client went away" is recorded when
                // it does close.
                self.io.shutdown_write();
                let _ = self.io.tcp().set_read_timeout(Some(LINGER_AFTER_CLOSE));
                let mut chunk = [0u8; 256];
                return match self.io.read(&mut chunk) {
                    Ok(0) => Ok(Some(End::ClientWentAway)),
                    _ => Ok(Some(End::ByPeer)),
                };
            }
            other => {
                return Err(io::Error::other(format!(
                    "client sent reserved opcode {other:#x}"
                )));
            }
        }
        Ok(None)
    }
}

/// permessage-deflate (RFC 7692) as the peer speaks it: the answer it agreed to
/// ([`Agreed`](deflate::Agreed)), one-shot helpers for scripted frames
/// ([`compress`](deflate::compress), [`bomb`](deflate::bomb),
/// [`dangling_reference`](deflate::dangling_reference)) and the per-connection codecs.
///
/// The peer compresses with `flate2` when its window is the full 32 KiB, and with its own
/// small LZ77 encoder (fixed Huffman codes) when the answer limited
/// `server_max_window_bits`: that encoder uses every distance up to exactly 2^N, so a
/// client inflating with a smaller window than agreed fails. Client data is inflated with
/// `flate2` and again with an independent inflater that also measures the longest
/// back-reference, so a test can check the client honoured `client_max_window_bits`.
///
/// ```
/// use wxsocket_testkit::peer::deflate::{compress, inflate};
/// let data = b"hello hello hello hello hello hello";
/// let wire = compress(data);
/// assert!(wire.len() < data.len());
/// assert_eq!(inflate(&wire).unwrap(), data);
/// ```
pub mod deflate {
    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};

    /// What a sync flush ends with, removed from every message on the wire (RFC 7692
    /// §7.2.1) and appended again before inflating.
    pub const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
    /// The largest message the peer inflates.
    const INFLATE_LIMIT: usize = 64 << 20;
    /// The largest window (and the one a decompressor keeps for context takeover).
    const MAX_WINDOW: usize = 1 << 15;

    /// The permessage-deflate parameters of the peer's answer, as the peer applies them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Agreed {
        /// The peer resets its compressor after each message.
        pub server_no_context_takeover: bool,
        /// The peer resets its decompressor after each message (so a client that keeps
        /// its context fails to be understood).
        pub client_no_context_takeover: bool,
        /// The peer's LZ77 window is 2^N bytes (15 unless the answer says less).
        pub server_max_window_bits: u8,
        /// `client_max_window_bits` as the answer gave it (the peer inflates any window;
        /// tests compare it with [`super::Received::max_distance`]).
        pub client_max_window_bits: Option<u8>,
    }

    impl Agreed {
        /// Reads an answer the peer sends; `None` when it is not exactly one
        /// `permessage-deflate` with well-formed parameters (the client must then fail the
        /// connection, and the peer does not compress).
        pub fn parse(answer: &str) -> Option<Agreed> {
            let mut extensions = answer.split(',').map(str::trim).filter(|e| !e.is_empty());
            let extension = extensions.next()?;
            if extensions.next().is_some() {
                return None;
            }
            let mut parts = extension.split(';').map(str::trim);
            if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
                return None;
            }
            let mut agreed = Agreed {
                server_no_context_takeover: false,
                client_no_context_takeover: false,
                server_max_window_bits: 15,
                client_max_window_bits: None,
            };
            let bits = |v: &str| v.parse::<u8>().ok().filter(|b| (8..=15).contains(b));
            let mut seen = Vec::new();
            for part in parts {
                let (key, value) = match part.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"'))),
                    None => (part, None),
                };
                let key = key.to_ascii_lowercase();
                if seen.contains(&key) {
                    return None;
                }
                match (key.as_str(), value) {
                    ("server_no_context_takeover", None) => {
                        agreed.server_no_context_takeover = true
                    }
                    ("client_no_context_takeover", None) => {
                        agreed.client_no_context_takeover = true
                    }
                    ("server_max_window_bits", Some(v)) => agreed.server_max_window_bits = bits(v)?,
                    ("client_max_window_bits", Some(v)) => {
                        agreed.client_max_window_bits = Some(bits(v)?)
                    }
                    _ => return None,
                }
                seen.push(key);
            }
            Some(agreed)
        }
    }

    /// `data` as one compressed message with a fresh context: raw DEFLATE, sync flush, the
    /// 4-byte tail removed. Valid as any message of a connection (it refers to nothing
    /// before it), but the peer's own compressor does not know it was sent.
    pub fn compress(data: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::default(), false);
        flate_message(&mut c, data)
    }

    /// One message through a flate2 compressor: sync flush, tail removed. An empty message
    /// is the single byte 0x00 (RFC 7692 §7.2.3.6): zlib writes nothing at all for a flush
    /// right after a flush, which would leave the receiver inside a stored block.
    fn flate_message(c: &mut Compress, data: &[u8]) -> Vec<u8> {
        if data.is_empty() {
            return vec![0x00];
        }
        strip_tail(sync_flush(c, data))
    }

    /// Inflates one compressed message with a fresh context (the tail appended).
    pub fn inflate(data: &[u8]) -> Result<Vec<u8>, String> {
        let mut d = Decompress::new(false);
        flate_inflate(&mut d, data, INFLATE_LIMIT)
    }

    /// A compressed message that inflates to `zeros` zero bytes (a decompression bomb:
    /// about 1 KiB on the wire per MiB inflated). Built once per size and cached.
    pub fn bomb(zeros: usize) -> Arc<Vec<u8>> {
        static CACHE: OnceLock<Mutex<HashMap<usize, Arc<Vec<u8>>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(b) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&zeros) {
            return Arc::clone(b);
        }
        // Compressing 100 MiB every time would be slow: after the first MiB the window is
        // all zeros, so one MiB compressed in that state can be repeated as often as
        // needed (each piece ends on a byte boundary with a sync flush and refers only to
        // zeros).
        const CHUNK: usize = 1 << 20;
        let chunk = vec![0u8; CHUNK];
        let mut c = Compress::new(Compression::best(), false);
        let mut out = Vec::new();
        let mut left = zeros;
        let mut warm: Option<Vec<u8>> = None;
        while left > 0 {
            let n = left.min(CHUNK);
            if n == CHUNK
                && let Some(piece) = &warm
            {
                out.extend_from_slice(piece);
            } else {
                let piece = sync_flush(&mut c, &chunk[..n]);
                out.extend_from_slice(&piece);
                if n == CHUNK && zeros - left > 0 {
                    warm = Some(piece);
                }
            }
            left -= n;
        }
        if zeros == 0 {
            out = sync_flush(&mut c, &[]);
        }
        let bomb = Arc::new(strip_tail(out));
        cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(zeros, Arc::clone(&bomb));
        bomb
    }

    /// `data` compressed as one complete DEFLATE stream ending in a final block (BFINAL set)
    /// instead of a sync flush, as RFC 7692 §7.2.3.4 allows a sender to; the receiver's
    /// appended tail then lies after the end of the stream. Valid only where the receiver
    /// resets its context after each message (`server_no_context_takeover`), or as a
    /// connection's first compressed message.
    pub fn compress_final(data: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let done = c.total_in() as usize;
            let status = c
                .compress_vec(&data[done..], &mut out, FlushCompress::Finish)
                .expect("deflate into a Vec");
            if status == Status::StreamEnd {
                return out;
            }
        }
    }

    /// A compressed message whose first token copies 3 bytes from 100 bytes before the
    /// start of the stream: invalid for a fresh context ("distance too far back").
    pub fn dangling_reference() -> Vec<u8> {
        let mut w = BitWriter::default();
        w.put(0, 1); // BFINAL = 0
        w.put(1, 2); // fixed Huffman codes
        put_match(&mut w, 3, 100);
        put_litlen(&mut w, 256);
        w.put(0, 3); // the empty stored block of the sync flush
        w.finish()
    }

    fn strip_tail(mut out: Vec<u8>) -> Vec<u8> {
        assert!(out.ends_with(&TAIL), "a sync flush ends with 00 00 ff ff");
        out.truncate(out.len() - TAIL.len());
        out
    }

    /// Compresses `data` and sync-flushes (the tail kept).
    fn sync_flush(c: &mut Compress, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let start = c.total_in();
        loop {
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(1024));
            }
            let done = (c.total_in() - start) as usize;
            c.compress_vec(&data[done..], &mut out, FlushCompress::Sync)
                .expect("deflate into a Vec");
            let done = (c.total_in() - start) as usize;
            if done == data.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }

    /// Inflates one message's payload (the tail appended) with `d`'s context.
    fn flate_inflate(d: &mut Decompress, data: &[u8], limit: usize) -> Result<Vec<u8>, String> {
        let input = [data, &TAIL[..]].concat();
        let mut out = Vec::with_capacity(data.len() * 4 + 64);
        let start_in = d.total_in();
        loop {
            if out.capacity() - out.len() < 1024 {
                out.reserve(out.capacity().max(4096));
            }
            let done = (d.total_in() - start_in) as usize;
            let room = out.capacity() - out.len();
            let before = out.len();
            let status = d
                .decompress_vec(&input[done..], &mut out, FlushDecompress::Sync)
                .map_err(|e| format!("invalid compressed data: {e}"))?;
            if out.len() > limit {
                return Err(format!("a message inflates to more than {limit} bytes"));
            }
            let done_now = (d.total_in() - start_in) as usize;
            let produced = out.len() - before;
            if status == Status::StreamEnd {
                // BFINAL: the rest (at least the appended tail) is outside the stream.
                d.reset(false);
                return Ok(out);
            }
            if done_now == input.len() && produced < room {
                return Ok(out);
            }
            if done_now == done && produced == 0 {
                return Err("invalid compressed data: no progress".into());
            }
        }
    }

    /// Compresses what the peer sends on one connection.
    pub(super) struct Compressor {
        agreed: Agreed,
        flate: Compress,
        /// The window of what was sent, for the own encoder (windows below 2^15).
        history: Vec<u8>,
    }

    impl Compressor {
        pub(super) fn new(agreed: Agreed) -> Self {
            Self {
                agreed,
                flate: Compress::new(Compression::default(), false),
                history: Vec::new(),
            }
        }

        /// One message, compressed (tail removed), in this connection's context.
        pub(super) fn message(&mut self, data: &[u8]) -> Vec<u8> {
            let bits = self.agreed.server_max_window_bits;
            if bits >= 15 {
                let out = flate_message(&mut self.flate, data);
                if self.agreed.server_no_context_takeover {
                    self.flate.reset();
                }
                out
            } else {
                let window = 1usize << bits;
                let out = lz77_fixed(&self.history, data, window);
                if self.agreed.server_no_context_takeover {
                    self.history.clear();
                } else {
                    self.history.extend_from_slice(data);
                    let excess = self.history.len().saturating_sub(window);
                    self.history.drain(..excess);
                }
                out
            }
        }
    }

    /// Inflates what the client sends on one connection.
    pub(super) struct Inflater {
        agreed: Agreed,
        flate: Decompress,
        /// The last 32 KiB inflated, for the checking inflater.
        history: Vec<u8>,
    }

    impl Inflater {
        pub(super) fn new(agreed: Agreed) -> Self {
            Self {
                agreed,
                flate: Decompress::new(false),
                history: Vec::new(),
            }
        }

        /// One message's payload inflated, and the longest back-reference it used.
        pub(super) fn message(&mut self, data: &[u8]) -> Result<(Vec<u8>, usize), String> {
            let (checked, max_distance) = checked_inflate(&self.history, data, INFLATE_LIMIT)
                .map_err(|e| format!("invalid compressed data from the client: {e}"))?;
            let out = flate_inflate(&mut self.flate, data, INFLATE_LIMIT)?;
            if out != checked {
                return Err(format!(
                    "test peer bug: flate2 inflated {} bytes, the checking inflater {}",
                    out.len(),
                    checked.len()
                ));
            }
            if self.agreed.client_no_context_takeover {
                self.flate.reset(false);
                self.history.clear();
            } else {
                self.history.extend_from_slice(&out);
                let excess = self.history.len().saturating_sub(MAX_WINDOW);
                self.history.drain(..excess);
            }
            Ok((out, max_distance))
        }
    }

    // ----- DEFLATE by hand (RFC 1951): fixed-Huffman LZ77 encoder, checking inflater -----

    const LBASE: [u16; 29] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
        131, 163, 195, 227, 258,
    ];
    const LEXT: [u8; 29] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
    ];
    const DBASE: [u16; 30] = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
        2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
    ];
    const DEXT: [u8; 30] = [
        0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
        13, 13,
    ];

    #[derive(Default)]
    struct BitWriter {
        out: Vec<u8>,
        acc: u64,
        n: u32,
    }

    impl BitWriter {
        /// `bits` bits of `v`, least significant first.
        fn put(&mut self, v: u32, bits: u32) {
            self.acc |= u64::from(v) << self.n;
            self.n += bits;
            while self.n >= 8 {
                self.out.push(self.acc as u8);
                self.acc >>= 8;
                self.n -= 8;
            }
        }

        /// A Huffman code: most significant bit first.
        fn put_code(&mut self, code: u32, len: u32) {
            let reversed = code.reverse_bits() >> (32 - len);
            self.put(reversed, len);
        }

        fn finish(mut self) -> Vec<u8> {
            if self.n > 0 {
                self.out.push(self.acc as u8);
            }
            self.out
        }
    }

    /// A literal/length symbol with the fixed code (RFC 1951 §3.2.6).
    fn put_litlen(w: &mut BitWriter, sym: u32) {
        match sym {
            0..=143 => w.put_code(0x30 + sym, 8),
            144..=255 => w.put_code(0x190 + sym - 144, 9),
            256..=279 => w.put_code(sym - 256, 7),
            _ => w.put_code(0xC0 + sym - 280, 8),
        }
    }

    fn put_match(w: &mut BitWriter, len: usize, dist: usize) {
        let li = LBASE
            .iter()
            .rposition(|&b| usize::from(b) <= len)
            .expect("len >= 3");
        put_litlen(w, 257 + li as u32);
        w.put((len - usize::from(LBASE[li])) as u32, u32::from(LEXT[li]));
        let di = DBASE
            .iter()
            .rposition(|&b| usize::from(b) <= dist)
            .expect("dist >= 1");
        w.put_code(di as u32, 5);
        w.put((dist - usize::from(DBASE[di])) as u32, u32::from(DEXT[di]));
    }

    /// `data` compressed as one sync-flushed fixed-Huffman block (tail removed), matching
    /// against `history` (what was sent before) and itself, with distances up to `window`.
    /// Among matches of equal length the farthest wins, so distances reach the window's
    /// edge whenever the data allows.
    fn lz77_fixed(history: &[u8], data: &[u8], window: usize) -> Vec<u8> {
        let buf = [history, data].concat();
        let start = history.len();
        let key = |p: usize| [buf[p], buf[p + 1], buf[p + 2]];
        let mut chains: HashMap<[u8; 3], Vec<usize>> = HashMap::new();
        let insert = |chains: &mut HashMap<[u8; 3], Vec<usize>>, p: usize| {
            if p + 3 <= buf.len() {
                chains.entry(key(p)).or_default().push(p);
            }
        };
        for p in start.saturating_sub(window)..start {
            insert(&mut chains, p);
        }
        let mut w = BitWriter::default();
        w.put(0, 1);
        w.put(1, 2);
        let mut i = start;
        while i < buf.len() {
            let (mut best_len, mut best_dist) = (0, 0);
            if i + 3 <= buf.len()
                && let Some(candidates) = chains.get(&key(i))
            {
                for &j in candidates.iter().rev().take(128) {
                    let dist = i - j;
                    if dist > window {
                        break;
                    }
                    let mut len = 0;
                    while len < 258 && i + len < buf.len() && buf[j + len] == buf[i + len] {
                        len += 1;
                    }
                    if len >= best_len {
                        best_len = len;
                        best_dist = dist;
                    }
                }
            }
            if best_len >= 3 {
                put_match(&mut w, best_len, best_dist);
                for p in i..i + best_len {
                    insert(&mut chains, p);
                }
                i += best_len;
            } else {
                put_litlen(&mut w, u32::from(buf[i]));
                insert(&mut chains, i);
                i += 1;
            }
        }
        put_litlen(&mut w, 256);
        w.put(0, 3); // BFINAL = 0, stored: the empty block whose 00 00 ff ff is removed
        w.finish()
    }

    struct BitReader<'a> {
        data: &'a [u8],
        pos: usize,
        acc: u64,
        n: u32,
    }

    impl BitReader<'_> {
        fn bits(&mut self, need: u32) -> Result<u32, String> {
            while self.n < need {
                let b = *self
                    .data
                    .get(self.pos)
                    .ok_or("the data ends inside a block")?;
                self.pos += 1;
                self.acc |= u64::from(b) << self.n;
                self.n += 8;
            }
            let v = (self.acc & ((1u64 << need) - 1)) as u32;
            self.acc >>= need;
            self.n -= need;
            Ok(v)
        }

        /// Skips to the next byte boundary.
        fn align(&mut self) {
            let drop = self.n % 8;
            self.acc >>= drop;
            self.n -= drop;
        }

        fn at_end(&self) -> bool {
            self.pos == self.data.len() && self.n == 0
        }
    }

    /// A canonical Huffman code: how many codes of each length, symbols in code order.
    struct Huffman {
        counts: [u16; 16],
        symbols: Vec<u16>,
    }

    impl Huffman {
        fn new(lengths: &[u8]) -> Result<Self, String> {
            let mut counts = [0u16; 16];
            for &l in lengths {
                counts[usize::from(l)] += 1;
            }
            counts[0] = 0;
            let mut left: i32 = 1;
            for &c in &counts[1..] {
                left = (left << 1) - i32::from(c);
                if left < 0 {
                    return Err("over-subscribed Huffman code".into());
                }
            }
            let mut offsets = [0u16; 16];
            for len in 1..15 {
                offsets[len + 1] = offsets[len] + counts[len];
            }
            let mut symbols = vec![0u16; lengths.len()];
            for (sym, &l) in lengths.iter().enumerate() {
                if l != 0 {
                    symbols[usize::from(offsets[usize::from(l)])] = sym as u16;
                    offsets[usize::from(l)] += 1;
                }
            }
            Ok(Self { counts, symbols })
        }

        fn decode(&self, r: &mut BitReader<'_>) -> Result<u16, String> {
            let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
            for len in 1..16 {
                code |= r.bits(1)? as i32;
                let count = i32::from(self.counts[len]);
                if code - first < count {
                    return Ok(self.symbols[(index + code - first) as usize]);
                }
                index += count;
                first = (first + count) << 1;
                code <<= 1;
            }
            Err("invalid Huffman code".into())
        }
    }

    /// Inflates `data` (the tail appended) after `history`, independently of flate2;
    /// returns what it inflated and the longest back-reference distance used.
    fn checked_inflate(
        history: &[u8],
        data: &[u8],
        limit: usize,
    ) -> Result<(Vec<u8>, usize), String> {
        let input = [data, &TAIL[..]].concat();
        let mut r = BitReader {
            data: &input,
            pos: 0,
            acc: 0,
            n: 0,
        };
        let mut out = history.to_vec();
        let base = out.len();
        let mut max_distance = 0;
        loop {
            let last = r.bits(1)? == 1;
            match r.bits(2)? {
                0 => {
                    r.align();
                    let len = r.bits(16)?;
                    let nlen = r.bits(16)?;
                    if len != !nlen & 0xffff {
                        return Err("stored block length does not match its complement".into());
                    }
                    for _ in 0..len {
                        out.push(r.bits(8)? as u8);
                    }
                }
                1 => {
                    let mut lengths = [0u8; 288];
                    lengths[..144].fill(8);
                    lengths[144..256].fill(9);
                    lengths[256..280].fill(7);
                    lengths[280..].fill(8);
                    let lit = Huffman::new(&lengths)?;
                    let dist = Huffman::new(&[5u8; 30])?;
                    codes(
                        &mut r,
                        &lit,
                        &dist,
                        &mut out,
                        &mut max_distance,
                        base + limit,
                    )?;
                }
                2 => {
                    let (lit, dist) = dynamic_tables(&mut r)?;
                    codes(
                        &mut r,
                        &lit,
                        &dist,
                        &mut out,
                        &mut max_distance,
                        base + limit,
                    )?;
                }
                _ => return Err("reserved block type 3".into()),
            }
            if out.len() - base > limit {
                return Err(format!("a message inflates to more than {limit} bytes"));
            }
            if last || r.at_end() {
                break;
            }
        }
        out.drain(..base);
        Ok((out, max_distance))
    }

    fn dynamic_tables(r: &mut BitReader<'_>) -> Result<(Huffman, Huffman), String> {
        const ORDER: [usize; 19] = [
            16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
        ];
        let nlen = r.bits(5)? as usize + 257;
        let ndist = r.bits(5)? as usize + 1;
        let ncode = r.bits(4)? as usize + 4;
        if nlen > 286 || ndist > 30 {
            return Err("bad dynamic block counts".into());
        }
        let mut code_lengths = [0u8; 19];
        for &i in &ORDER[..ncode] {
            code_lengths[i] = r.bits(3)? as u8;
        }
        let lencode = Huffman::new(&code_lengths)?;
        let mut lengths = vec![0u8; nlen + ndist];
        let mut i = 0;
        while i < nlen + ndist {
            let sym = lencode.decode(r)?;
            if sym < 16 {
                lengths[i] = sym as u8;
                i += 1;
                continue;
            }
            let (value, repeat) = match sym {
                16 => {
                    let prev = *lengths[..i]
                        .last()
                        .ok_or("repeat with no previous length")?;
                    (prev, 3 + r.bits(2)? as usize)
                }
                17 => (0, 3 + r.bits(3)? as usize),
                _ => (0, 11 + r.bits(7)? as usize),
            };
            if i + repeat > nlen + ndist {
                return Err("too many code lengths".into());
            }
            lengths[i..i + repeat].fill(value);
            i += repeat;
        }
        if lengths[256] == 0 {
            return Err("no end-of-block code".into());
        }
        Ok((
            Huffman::new(&lengths[..nlen])?,
            Huffman::new(&lengths[nlen..])?,
        ))
    }

    fn codes(
        r: &mut BitReader<'_>,
        lit: &Huffman,
        dist: &Huffman,
        out: &mut Vec<u8>,
        max_distance: &mut usize,
        cap: usize,
    ) -> Result<(), String> {
        loop {
            let sym = usize::from(lit.decode(r)?);
            match sym {
                0..=255 => out.push(sym as u8),
                256 => return Ok(()),
                _ => {
                    let li = sym - 257;
                    if li >= 29 {
                        return Err("bad length symbol".into());
                    }
                    let len = usize::from(LBASE[li]) + r.bits(u32::from(LEXT[li]))? as usize;
                    let di = usize::from(dist.decode(r)?);
                    if di >= 30 {
                        return Err("bad distance symbol".into());
                    }
                    let d = usize::from(DBASE[di]) + r.bits(u32::from(DEXT[di]))? as usize;
                    if d > out.len() {
                        return Err(format!(
                            "distance {d} reaches before the start of the window"
                        ));
                    }
                    if d > MAX_WINDOW {
                        return Err(format!("distance {d} is beyond a 32 KiB window"));
                    }
                    *max_distance = (*max_distance).max(d);
                    for _ in 0..len {
                        out.push(out[out.len() - d]);
                    }
                    if out.len() > cap {
                        return Err("the message inflates too far".into());
                    }
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        /// Deterministic pseudo-random bytes.
        fn noise(n: usize, seed: u32) -> Vec<u8> {
            let mut x = seed.wrapping_mul(2_654_435_761).max(1);
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x >> 24) as u8
                })
                .collect()
        }

        #[test]
        fn answers_parse_as_the_peer_applies_them() {
            let a = Agreed::parse("permessage-deflate").unwrap();
            assert_eq!(a.server_max_window_bits, 15);
            assert!(!a.server_no_context_takeover && !a.client_no_context_takeover);
            let a = Agreed::parse(
                "Permessage-Deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=\"9\"; client_max_window_bits=8",
            )
            .unwrap();
            assert!(a.server_no_context_takeover && a.client_no_context_takeover);
            assert_eq!(a.server_max_window_bits, 9);
            assert_eq!(a.client_max_window_bits, Some(8));
            for bad in [
                "",
                "x-webkit-deflate-frame",
                "permessage-deflate, permessage-deflate",
                "permessage-deflate; foo",
                "permessage-deflate; server_max_window_bits=16",
                "permessage-deflate; server_max_window_bits",
                "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            ] {
                assert_eq!(Agreed::parse(bad), None, "{bad:?}");
            }
        }

        #[test]
        fn one_shot_helpers_round_trip() {
            let data = noise(5000, 1).repeat(3);
            let wire = compress(&data);
            assert!(wire.len() < data.len() / 2);
            assert_eq!(inflate(&wire).unwrap(), data);
            assert_eq!(checked_inflate(&[], &wire, 1 << 20).unwrap().0, data);
            let err = inflate(&dangling_reference()).unwrap_err();
            assert!(err.contains("invalid"), "{err}");
            assert!(checked_inflate(&[], &dangling_reference(), 100).is_err());
            assert!(inflate(&[0xff; 8]).is_err());
            let last = compress_final(&data);
            assert_eq!(inflate(&last).unwrap(), data);
            assert_eq!(checked_inflate(&[], &last, 1 << 20).unwrap().0, data);
        }

        #[test]
        fn empty_messages_keep_the_contexts_in_step() {
            let agreed = Agreed::parse("permessage-deflate").unwrap();
            let mut c = Compressor::new(agreed);
            let mut d = Inflater::new(agreed);
            for msg in [&b""[..], b"", b"x", b"", b"", b"hello hello hello", b""] {
                let wire = c.message(msg);
                assert!(!wire.is_empty());
                assert_eq!(d.message(&wire).unwrap().0, msg);
            }
            assert_eq!(compress(b""), [0x00]);
            // A compressed message with no payload at all is not a DEFLATE block sequence.
            assert!(d.message(&[]).is_err());
        }

        #[test]
        fn a_bomb_is_small_and_inflates_to_zeros() {
            let zeros = 5 << 20 | 12345;
            let b = bomb(zeros);
            assert!(b.len() < zeros / 500, "{} bytes", b.len());
            let out = inflate(&b).unwrap();
            assert_eq!(out.len(), zeros);
            assert!(out.iter().all(|&z| z == 0));
            assert!(Arc::ptr_eq(&b, &bomb(zeros)));
        }

        #[test]
        fn the_own_encoder_uses_the_whole_window_and_no_more() {
            for bits in [8u8, 9, 10, 12, 14] {
                let window = 1usize << bits;
                let agreed = Agreed {
                    server_no_context_takeover: false,
                    client_no_context_takeover: false,
                    server_max_window_bits: bits,
                    client_max_window_bits: None,
                };
                let mut c = Compressor::new(agreed);
                let mut d = Inflater::new(agreed);
                // zlib itself, with exactly that window (it has no 256-byte one).
                let mut zlib = (bits > 8).then(|| Decompress::new_with_window_bits(false, bits));
                let block = noise(window, u32::from(bits));
                let mut longest = 0;
                for (i, msg) in [
                    block.clone(),
                    block.clone(),
                    [&block[..], &block[..]].concat(),
                    b"tiny".to_vec(),
                    Vec::new(),
                    noise(3 * window + 7, 99),
                ]
                .iter()
                .enumerate()
                {
                    let wire = c.message(msg);
                    let (out, max) = d.message(&wire).unwrap();
                    assert_eq!(&out, msg, "bits {bits}, message {i}");
                    assert!(max <= window, "bits {bits}: distance {max}");
                    longest = longest.max(max);
                    if let Some(z) = &mut zlib {
                        assert_eq!(&flate_inflate(z, &wire, 1 << 20).unwrap(), msg);
                    }
                    if i == 1 {
                        assert!(wire.len() < msg.len() / 4, "the repeat refers back");
                    }
                }
                assert_eq!(longest, window, "bits {bits}: the window's edge is used");
            }
        }

        #[test]
        fn contexts_follow_the_agreement() {
            let msg = noise(2000, 7);
            for no_takeover in [false, true] {
                let agreed = Agreed {
                    server_no_context_takeover: no_takeover,
                    client_no_context_takeover: no_takeover,
                    server_max_window_bits: 15,
                    client_max_window_bits: None,
                };
                let mut c = Compressor::new(agreed);
                let mut d = Inflater::new(agreed);
                let first = c.message(&msg);
                let second = c.message(&msg);
                assert_eq!(second.len() < first.len() / 4, !no_takeover);
                assert_eq!(d.message(&first).unwrap().0, msg);
                assert_eq!(d.message(&second).unwrap().0, msg);
                assert_eq!(d.message(&compress(&msg)).unwrap().0, msg);
            }
            // A peer that resets its inflater cannot read a client that kept its context.
            let keep = Agreed {
                server_no_context_takeover: false,
                client_no_context_takeover: false,
                server_max_window_bits: 15,
                client_max_window_bits: None,
            };
            let mut c = Compressor::new(keep);
            let mut d = Inflater::new(Agreed {
                client_no_context_takeover: true,
                ..keep
            });
            d.message(&c.message(&msg)).unwrap();
            assert!(d.message(&c.message(&msg)).is_err());
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
            (Mode::Violation(Violation::TopBitLength), "Capacity"),
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
                rustls::crypto::aws_lc_rs::default_provider(),
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

    /// A client speaking permessage-deflate by hand: upgrade with an offer, one compressed
    /// and one plain message, each echoed compressed.
    #[test]
    fn deflate_echo_by_hand() {
        let peer = Peer::builder(Mode::Echo)
            .deflate_answer("permessage-deflate; server_no_context_takeover")
            .start();
        let mut tcp = TcpStream::connect(peer.addr()).unwrap();
        tcp.set_read_timeout(Some(T)).unwrap();
        tcp.write_all(
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(
            head.contains(
                "\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n"
            ),
            "{head}"
        );
        let text = b"hello hello hello hello hello hello";
        let compressed = deflate::compress(text);
        let frames = [
            encode_frame(true, RSV1, opcode::TEXT, &compressed, Some([1, 2, 3, 4])),
            encode_frame(true, 0, opcode::BINARY, b"plain", Some([5, 6, 7, 8])),
        ];
        for frame in &frames {
            tcp.write_all(frame).unwrap();
        }
        for want in [&text[..], b"plain"] {
            let mut h = [0u8; 2];
            tcp.read_exact(&mut h).unwrap();
            assert_eq!(h[0] & 0x40, 0x40, "echoed compressed");
            let mut payload = vec![0u8; usize::from(h[1])];
            tcp.read_exact(&mut payload).unwrap();
            // server_no_context_takeover: each echo inflates on its own.
            assert_eq!(deflate::inflate(&payload).unwrap(), want);
        }
        let conn = peer.wait_conn(0, "two messages", T, |c| c.received.len() == 2);
        assert_eq!(
            conn.deflate,
            deflate::Agreed::parse("permessage-deflate; server_no_context_takeover")
        );
        assert!(conn.received[0].compressed);
        assert_eq!(conn.received[0].wire_size, compressed.len());
        assert_eq!(
            conn.received[0].message,
            Message::text("hello hello hello hello hello hello")
        );
        assert!(!conn.received[1].compressed);
        assert_eq!(conn.messages[1], Message::binary(&b"plain"[..]));
        // RSV1 on a ping is an error the peer records.
        tcp.write_all(&encode_frame(true, RSV1, opcode::PING, b"", Some([0; 4])))
            .unwrap();
        let conn = peer.wait_conn(0, "the end", T, |c| c.ended);
        assert!(conn.error.unwrap().contains("RSV"));
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
