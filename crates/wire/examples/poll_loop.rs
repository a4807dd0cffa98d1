//! A third driver for the sans-IO core: one thread, no async runtime, no poller — the
//! standard library's non-blocking sockets and a `turn(now)` to call once per frame of a
//! game loop or engine tick. It uses only the public API of `wxsocket-core` and
//! `wxsocket-wire`; copy it and change what your runtime does differently.
//!
//! What it leaves out, to stay short: `wss://` (wrap the stream in `rustls::StreamOwned`,
//! configured from `wxsocket_wire::tls`), permessage-deflate (`wxsocket_wire::deflate`),
//! proxies (one set on a connection is refused; the proxy environment is not read), and a
//! non-blocking dial (name resolution and the TCP connect block the turn
//! that dials: each connect bounded by the handshake timeout, resolution by the system
//! resolver's own; fine on a LAN, not for a frame budget — `wxsocket_wire::connection`
//! dials without blocking, and does TLS, deflate and proxies too).
//!
//! Run it against any echo server:
//! `cargo run -p wxsocket-wire --example poll_loop -- ws://127.0.0.1:9001`

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};
use tungstenite::protocol::{Role, WebSocket};
use tungstenite::{Error as WsError, Message as WsMessage};
use wxsocket_core::{
    Action, ConfigError, ConnId, ConnectError, ConnectOptions, DialStage, Event, HandshakeRequest,
    ProxyRoute, SendId, Session, SessionConfig, TransportError, TransportErrorKind, TransportEvent,
};
use wxsocket_wire::convert::{classify, close_frame, connect_error, from_ws, to_ws};
use wxsocket_wire::incoming::Incoming;
use wxsocket_wire::{ClientHandshake, DialTimer};

/// One connection's transport.
enum Conn {
    /// Writing the upgrade request and reading the response.
    Handshaking {
        stream: TcpStream,
        handshake: ClientHandshake,
        written: usize,
        timer: DialTimer,
    },
    /// The WebSocket; `unflushed` are sends written to it whose flush has not completed.
    Open {
        ws: Box<WebSocket<Stream>>,
        unflushed: Vec<SendId>,
        paused: bool,
        close: CloseOut,
    },
}

/// Where our close frame stands (ours, or tungstenite's reply to the peer's): the session
/// gives the server its short linger only once the frame is written.
#[derive(Clone, Copy, PartialEq)]
enum CloseOut {
    None,
    Queued,
    Written,
}

/// What tungstenite reads and writes: the socket, read through [`Incoming`], which serves
/// the bytes that came with the handshake response first and watches every frame, so that
/// a peer's close code reaches the session as it was sent (tungstenite 0.30 turns 1014 and
/// the codes a peer may not send into 1002) and invalid UTF-8 fails at once.
struct Stream {
    sock: TcpStream,
    incoming: Incoming,
    /// The socket gave bytes since the turn's read began (see `TransportEvent::Receiving`).
    received: bool,
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (sock, received) = (&mut self.sock, &mut self.received);
        let polled = self.incoming.poll_read(buf, |out| match sock.read(out) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::task::Poll::Pending,
            Ok(n) => {
                *received |= n > 0;
                std::task::Poll::Ready(Ok(n))
            }
            other => std::task::Poll::Ready(other),
        });
        match polled {
            std::task::Poll::Ready(result) => result,
            std::task::Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.sock.flush()
    }
}

/// The driver: the session plus a transport per connection. The application connects with
/// [`PollLoop::connect`], calls the session's other methods through [`PollLoop::session`], calls
/// [`PollLoop::turn`] every frame, and takes events with [`PollLoop::poll_event`].
pub struct PollLoop {
    session: Session,
    conns: BTreeMap<ConnId, Conn>,
    ws_config: tungstenite::protocol::WebSocketConfig,
}

impl PollLoop {
    /// A driver for a session with this configuration.
    pub fn new(config: SessionConfig) -> Result<Self, ConfigError> {
        let ws_config = wxsocket_wire::websocket_config(&config);
        let session = Session::new(config)?;
        Ok(Self {
            session,
            conns: BTreeMap::new(),
            ws_config,
        })
    }

    /// Dials `options` (the session validates them first). Refuses before any IO what
    /// this driver leaves out: `wss://`, permessage-deflate and a proxy set on the
    /// connection (it reads no proxy environment: the default route goes direct).
    pub fn connect(
        &mut self,
        options: &ConnectOptions,
        now: Instant,
    ) -> Result<ConnId, ConnectError> {
        let request = options.validate()?;
        let unsupported = |option, why| Err(ConnectError::Unsupported { option, why });
        if request.is_tls() {
            return unsupported("url", "this example driver speaks ws:// only");
        }
        if request.per_message_deflate.is_some() {
            return unsupported("perMessageDeflate", "this example driver does not compress");
        }
        if let ProxyRoute::Through(_) = request.proxy {
            return unsupported("proxy", "this example driver connects directly");
        }
        self.session
            .connect_request(std::sync::Arc::new(request), now)
    }

    /// The session, for the application's other calls (`send`, `close`, …; pass them the
    /// same `now` as `turn`).
    pub fn session(&mut self) -> &mut Session {
        &mut self.session
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.session.poll_event()
    }

    /// When the next turn is due at the latest, if the loop wants to sleep between frames
    /// (a socket may have data sooner; a game loop turns every frame anyway).
    pub fn deadline(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }

    /// One turn: carries out what the session asked for, moves the bytes that can move
    /// without blocking, and fires the timers that are due.
    pub fn turn(&mut self, now: Instant) {
        if self.session.poll_timeout().is_some_and(|due| due <= now) {
            self.session.handle_timeout(now);
        }
        self.carry_out(now);
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in ids {
            let inputs = match self.conns.get_mut(&conn) {
                Some(c) => c.make_progress(&self.session, conn, self.ws_config),
                None => continue,
            };
            let gone = inputs
                .iter()
                .any(|e| matches!(e, TransportEvent::Closed | TransportEvent::ConnectFailed(_)));
            if gone {
                self.conns.remove(&conn);
            }
            for input in inputs {
                self.session.handle(conn, input, now);
            }
            // What the inputs asked for (a pong, the close reply, resumed reading).
            self.carry_out(now);
        }
    }

    fn carry_out(&mut self, now: Instant) {
        while let Some(action) = self.session.poll_action() {
            let conn = action.conn();
            let mut inputs = Vec::new();
            match action {
                Action::Dial { request, .. } => {
                    let timeout = request
                        .timeout
                        .unwrap_or(self.session.config().handshake_timeout);
                    match dial(&request, timeout) {
                        Ok(c) => {
                            self.conns.insert(conn, c);
                            // So that a handshake timeout says where the dial stood.
                            inputs.push(TransportEvent::Dialing(DialStage::Upgrade));
                        }
                        Err(e) => inputs.push(TransportEvent::ConnectFailed(e)),
                    }
                }
                Action::Send { id, message, .. } => {
                    if let Some(Conn::Open { ws, unflushed, .. }) = self.conns.get_mut(&conn) {
                        match buffered(ws.write(to_ws(message))) {
                            Ok(()) => unflushed.push(id),
                            Err(e) => inputs.extend(failed(&e)),
                        }
                    }
                }
                Action::Ping { payload, .. } => {
                    if let Some(Conn::Open { ws, .. }) = self.conns.get_mut(&conn)
                        && let Err(e) = buffered(ws.write(WsMessage::Ping(payload)))
                    {
                        inputs.extend(failed(&e));
                    }
                }
                Action::Close { frame, .. } => match self.conns.get_mut(&conn) {
                    Some(Conn::Open {
                        ws, paused, close, ..
                    }) => {
                        // The peer's close frame must be read, whatever the backlog.
                        *paused = false;
                        match buffered(ws.close(Some(close_frame(&frame)))) {
                            Ok(()) => *close = CloseOut::Queued,
                            Err(e) => inputs.extend(failed(&e)),
                        }
                    }
                    // Not open yet: nothing to say goodbye on.
                    Some(Conn::Handshaking { .. }) => {
                        self.conns.remove(&conn);
                        inputs.push(TransportEvent::Closed);
                    }
                    None => {}
                },
                Action::Abort { .. } => {
                    self.conns.remove(&conn);
                }
                Action::ResumeReading { .. } => {
                    if let Some(Conn::Open { paused, .. }) = self.conns.get_mut(&conn) {
                        *paused = false;
                    }
                }
                // A newer core may ask for more; doing nothing is the safe default.
                _ => {}
            }
            if inputs
                .iter()
                .any(|e| matches!(e, TransportEvent::Closed | TransportEvent::Error(_)))
            {
                self.conns.remove(&conn);
            }
            for input in inputs {
                self.session.handle(conn, input, now);
            }
        }
    }
}

/// Resolves and connects (blocking, see the module docs; each connect within `timeout`),
/// then starts the handshake.
fn dial(request: &HandshakeRequest, timeout: Duration) -> Result<Conn, TransportError> {
    let mut timer = DialTimer::start();
    let target = format!("{}:{}", request.host(), request.port());
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|e| connect_error(&e, &target))?
        .collect();
    timer.resolved();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => {
                timer.connected();
                let nonblocking = stream
                    .set_nonblocking(true)
                    .and_then(|()| stream.set_nodelay(request.tcp_no_delay));
                nonblocking.map_err(|e| connect_error(&e, &target))?;
                let handshake = ClientHandshake::new(request);
                return Ok(Conn::Handshaking {
                    stream,
                    handshake,
                    written: 0,
                    timer,
                });
            }
            Err(e) => last = e,
        }
    }
    Err(connect_error(&last, &target))
}

/// A write or close that met a full socket is no failure: tungstenite keeps the frame
/// buffered, and a later turn's flush writes it out.
fn buffered(result: Result<(), WsError>) -> Result<(), WsError> {
    match result {
        Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        other => other,
    }
}

/// The inputs a failed write or flush gives the session: the error, then the end.
fn failed(error: &WsError) -> Vec<TransportEvent> {
    match classify(error) {
        Some(e) => vec![TransportEvent::Error(e), TransportEvent::Closed],
        None => vec![TransportEvent::Closed],
    }
}

impl Conn {
    /// Moves this connection on as far as it goes without blocking; returns the session's
    /// inputs.
    fn make_progress(
        &mut self,
        session: &Session,
        conn: ConnId,
        ws_config: tungstenite::protocol::WebSocketConfig,
    ) -> Vec<TransportEvent> {
        let mut inputs = Vec::new();
        if let Conn::Handshaking {
            stream,
            handshake,
            written,
            timer,
        } = self
        {
            match progress_handshake(stream, handshake, written, timer) {
                Ok(None) => return inputs,
                Ok(Some(done)) => {
                    let mut handshake = done.handshake;
                    handshake.profile = timer.finish();
                    let stream = Stream {
                        sock: stream.try_clone().expect("a socket clone"),
                        incoming: Incoming::new(done.tail.into(), None),
                        received: false,
                    };
                    let ws = WebSocket::from_raw_socket(stream, Role::Client, Some(ws_config));
                    *self = Conn::Open {
                        ws: Box::new(ws),
                        unflushed: Vec::new(),
                        paused: false,
                        close: CloseOut::None,
                    };
                    // Frames that came with the response are read on the next turn, once
                    // the session knows the connection is open (and its read credit).
                    inputs.push(TransportEvent::Opened(Box::new(handshake)));
                    return inputs;
                }
                Err(e) => {
                    inputs.push(TransportEvent::ConnectFailed(e));
                    return inputs;
                }
            }
        }
        let Conn::Open {
            ws,
            unflushed,
            paused,
            close,
        } = self
        else {
            return inputs;
        };
        // Write: one flush for everything written since the last turn.
        match ws.flush() {
            Ok(()) => {
                inputs.extend(unflushed.drain(..).map(TransportEvent::SendWritten));
                if *close == CloseOut::Queued {
                    *close = CloseOut::Written;
                    inputs.push(TransportEvent::CloseWritten);
                }
            }
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => {
                inputs.extend(failed(&e));
                return inputs;
            }
        }
        // Read, within the credit the session gives (flow control: at the bound, leave the
        // rest on the socket so that TCP pushes back on the peer).
        let mut credit = session.read_credit(conn);
        let reported = inputs.len();
        ws.get_mut().received = false;
        while !*paused {
            if credit.is_paused() {
                *paused = true;
                break;
            }
            match ws.read() {
                Ok(message) => {
                    // The close code as the peer sent it (see `Stream`).
                    let watch = ws.get_ref().incoming.frame_watch();
                    if let Some(input) = from_ws(message).map(|input| watch.correct(input)) {
                        match &input {
                            TransportEvent::Message(m) => *paused = !credit.take(m.len()),
                            // tungstenite queued the reply (unless it answered ours).
                            TransportEvent::PeerClosed(_) if *close == CloseOut::None => {
                                *close = CloseOut::Queued;
                            }
                            _ => {}
                        }
                        inputs.push(input);
                    }
                }
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    // Part of a large message came: the peer is alive (for keepalive).
                    if inputs.len() == reported && ws.get_ref().received {
                        inputs.push(TransportEvent::Receiving);
                    }
                    break;
                }
                Err(e) => {
                    inputs.extend(failed(&e));
                    break;
                }
            }
        }
        inputs
    }
}

/// Writes the upgrade request and reads the response head, without blocking.
fn progress_handshake(
    stream: &mut TcpStream,
    handshake: &mut ClientHandshake,
    written: &mut usize,
    timer: &mut DialTimer,
) -> Result<Option<wxsocket_wire::HandshakeDone>, TransportError> {
    let io_error = |e: io::Error| TransportError::new(TransportErrorKind::Io, e.to_string());
    while *written < handshake.request_bytes().len() {
        match stream.write(&handshake.request_bytes()[*written..]) {
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(io_error(e)),
        }
        if *written == handshake.request_bytes().len() {
            timer.request_written();
        }
    }
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Err(io_error(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => {
                if let Some(done) = handshake.feed(&buf[..n])? {
                    return Ok(Some(done));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(io_error(e)),
        }
    }
}

/// Echo three messages and close: the loop a game would run once per frame.
#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or("ws://127.0.0.1:9001".into());
    let mut driver = PollLoop::new(SessionConfig::default())?;
    driver.connect(&ConnectOptions::new(url), Instant::now())?;
    let mut echoes = 0;
    loop {
        let now = Instant::now();
        driver.turn(now);
        while let Some(event) = driver.poll_event() {
            println!("{event}");
            match event {
                Event::Open { .. } => {
                    for text in ["one", "two", "three"] {
                        driver.session().send(text.into(), now)?;
                    }
                }
                Event::Message { .. } => {
                    echoes += 1;
                    if echoes == 3 {
                        driver.session().close(None, "", now)?;
                    }
                }
                Event::Close { .. } => return Ok(()),
                _ => {}
            }
        }
        std::thread::sleep(Duration::from_millis(1)); // the rest of the frame
    }
}
