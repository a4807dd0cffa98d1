//! One connection's transport from its dial plan to its end, written once for both
//! adapters: the dial after the TCP connect ([`Upgrade`]: a proxy's tunnel, TLS, the
//! opening handshake), the open WebSocket ([`Link`]) read within the core's read credit and
//! flushed in batches, and the end. Every step runs until the socket would block and
//! reports what happened as [`TransportEvent`]s; none waits.
//!
//! The adapter keeps what is its runtime's: resolving the [`DialTarget`] [`Connection::new`]
//! gives it and connecting the TCP socket (a resolver thread and mio's non-blocking
//! connect, or tokio's), hands the
//! connected socket to [`Connection::connected`], and calls the connection again when the
//! socket is ready (mio's poller, or the waker of the connection's task).
//!
//! A driver of one's own over any non-blocking socket ([`TcpSocket`]) uses it the same way;
//! every call appends the core's inputs to `out`, to hand to `Session::handle` in order:
//!
//! 1. On `Action::Dial`: [`Connection::new`]; [`Connection::resolving`] if the target is a
//!    name, then [`Connection::resolved`] with the addresses (try them in the order
//!    [`crate::dial::Attempts`] paces) and [`Connection::connected`] with the socket, or
//!    [`Connection::connect_failed`].
//! 2. While dialling, whenever the socket is ready: [`Connection::drive`], until
//!    [`Connection::is_open`] (the `Opened` input is in `out`) or [`Connection::is_gone`].
//! 3. Open: `Action::Send` / `Ping` / `Close` map to [`Connection::send`],
//!    [`Connection::ping`] and [`Connection::close`]; after each batch of actions,
//!    [`Connection::flush`] while [`Connection::needs_flush`]. When the socket is readable
//!    (or [`Connection::has_more_to_read`] says bytes wait already),
//!    [`Connection::read`] within `Session::read_credit`; on `Action::ResumeReading`,
//!    [`Connection::resume_reads`] and read again. Once the actions the inputs caused are
//!    carried out, [`Connection::end_if_unanswered`] ends a connection whose reading failed
//!    with no close frame of the core's to send first.
//! 4. On `Action::Abort`, [`Connection::drop_transport`]. Once [`Connection::is_gone`], its
//!    last inputs are in `out` and the connection can be forgotten.

use crate::client::SocketInfo;
use crate::dial::DialPlan;
use crate::link::{Link, ReadEnd, WRITE_PASS};
use crate::proxy::ProxyEnv;
use crate::upgrade::{ClientConfig, Upgrade};
use crate::{DialTimer, trace};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::Poll;
use tungstenite::protocol::WebSocketConfig;
use wxsocket_core::{
    CloseRequest, ConnId, DialStage, HandshakeRequest, Message, ReadCredit, SendId, TransportError,
    TransportEvent,
};

/// Most messages one [`Connection::read`] takes, so that one busy peer cannot starve the
/// other connections or keep the core's lock: the adapter comes back at once
/// ([`Connection::has_more_to_read`]).
pub const MAX_READS: usize = 256;

/// The most bytes a connection's socket holds that TCP has not sent yet
/// (`TCP_NOTSENT_LOWAT`, set by [`TcpSocket::limit_unsent`]). Without it Linux takes up to
/// 4 MiB into the socket's send buffer, where the driver cannot see them leave: on a slow
/// uplink a large message went out of sight at once, keepalive's and the acknowledgement's
/// pings waited behind it, and a live peer was taken for dead. With it the rest of the
/// message waits in the connection, and its way out is reported
/// ([`TransportEvent::Sending`]). Bytes sent and not yet acknowledged by the peer are not
/// limited (the network's capacity stays in use).
pub const UNSENT_LIMIT: u32 = 64 << 10;

/// What a connection needs of its TCP socket besides non-blocking `Read + Write`
/// (`WouldBlock` when it is not ready): its addresses and `TCP_NODELAY`.
pub trait TcpSocket: Read + Write {
    /// The local address.
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The address connected to.
    fn peer_addr(&self) -> io::Result<SocketAddr>;
    /// Whether `TCP_NODELAY` is set.
    fn nodelay(&self) -> io::Result<bool>;
    /// Sets `TCP_NODELAY`.
    fn set_nodelay(&self, on: bool) -> io::Result<()>;
    /// Limits the bytes the socket holds unsent to `bytes` ([`UNSENT_LIMIT`]), where the
    /// platform can (`TCP_NOTSENT_LOWAT` on Linux and Android). The default does nothing:
    /// a message the socket's buffer takes whole is then out of the driver's sight.
    fn limit_unsent(&self, bytes: u32) -> io::Result<()> {
        let _ = bytes;
        Ok(())
    }
}

/// [`TcpSocket::limit_unsent`] for any socket with a file descriptor.
#[cfg(any(target_os = "linux", target_os = "android"))]
pub fn limit_unsent(socket: &impl std::os::fd::AsFd, bytes: u32) -> io::Result<()> {
    socket2::SockRef::from(socket).set_tcp_notsent_lowat(bytes)
}

/// Reads from `socket` at once, as a non-blocking socket does (`WouldBlock` when it holds
/// nothing), for a driver whose runtime reads a socket only once its reactor has seen it
/// readable (tokio): after a failed write, what the socket already holds is read before
/// the failure is reported (the peer's close frame says why it went).
#[cfg(unix)]
pub fn read_now(socket: &impl std::os::fd::AsFd, buf: &mut [u8]) -> io::Result<usize> {
    (&*socket2::SockRef::from(socket)).read(buf)
}

/// What a panic said, when it said it with a string.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("no message")
}

/// The events that end a connection whose work panicked (`work`: "task", on the thread
/// that ran it), once its transport is dropped: an IO failure naming the panic, then the
/// transport closed. The session then fails or closes it as any lost connection (its
/// unwritten sends failed once, a 1006 close), where an unwinding call would have left it
/// waiting for a transport that is gone.
pub fn panicked(work: &str, panic: &(dyn std::any::Any + Send)) -> [TransportEvent; 2] {
    let error = TransportError::new(
        wxsocket_core::TransportErrorKind::Io,
        format!("the connection's {work} panicked: {}", panic_message(panic)),
    );
    [TransportEvent::Error(error), TransportEvent::Closed]
}

impl TcpSocket for mio::net::TcpStream {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        mio::net::TcpStream::local_addr(self)
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        mio::net::TcpStream::peer_addr(self)
    }
    fn nodelay(&self) -> io::Result<bool> {
        mio::net::TcpStream::nodelay(self)
    }
    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        mio::net::TcpStream::set_nodelay(self, on)
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn limit_unsent(&self, bytes: u32) -> io::Result<()> {
        limit_unsent(self, bytes)
    }
}

/// Where a new connection's TCP connection goes: the proxy, or the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialTarget {
    /// The host to resolve, without the brackets of an IPv6 address.
    pub host: String,
    /// The port to connect to.
    pub port: u16,
}

impl DialTarget {
    /// The address to connect to without resolving, when the host is an IP address.
    ///
    /// ```
    /// use wxsocket_wire::connection::DialTarget;
    /// let target = |host: &str| DialTarget { host: host.into(), port: 80 };
    /// assert_eq!(target("::1").address(), Some("[::1]:80".parse().unwrap()));
    /// assert_eq!(target("example.com").address(), None);
    /// ```
    pub fn address(&self) -> Option<SocketAddr> {
        let ip = self.host.parse::<IpAddr>().ok()?;
        Some(SocketAddr::new(ip, self.port))
    }
}

/// What the dial needs until the connection is open (boxed, and freed when it opens).
struct Dial {
    /// The dial's phases, for the open event's profile; started with the connection.
    timer: DialTimer,
    config: WebSocketConfig,
    /// The stage last reported to the core ([`TransportEvent::Dialing`]).
    stage: Option<DialStage>,
}

impl Dial {
    /// Reports that the dial entered `stage`, unless it was reported already.
    fn enter(&mut self, stage: Option<DialStage>, out: &mut Vec<TransportEvent>) {
        if let Some(stage) = stage
            && self.stage != Some(stage)
        {
            self.stage = Some(stage);
            out.push(TransportEvent::Dialing(stage));
        }
    }
}

enum Phase<S> {
    /// No socket yet: the adapter resolves the plan's target and connects.
    Dialing(Box<(DialPlan, Dial)>),
    /// Connected: a proxy's tunnel, TLS and the HTTP upgrade.
    Upgrading(Box<(Upgrade<S>, Dial)>),
    /// The WebSocket.
    Open(Box<Link<S>>),
    /// The transport is gone; the adapter forgets the connection.
    Gone,
}

/// One connection's transport (see the module docs).
pub struct Connection<S> {
    id: ConnId,
    request: Arc<HandshakeRequest>,
    /// Where the dial goes (the server, or a proxy) and what its failures are called, while
    /// dialling; then the tunnel, TLS and the upgrade; then the WebSocket.
    phase: Phase<S>,
    /// The dial goes through a proxy (HTTP or SOCKS5).
    proxied: bool,
    span: tracing::Span,
    /// The core's read credit ran out: nothing is read until a read is given credit again
    /// ([`Self::read`]) or [`Self::resume_reads`].
    read_paused: bool,
    /// A read stopped before the socket was drained (the per-read limit), reading resumed
    /// after a pause, or the connection has just opened (frames may have come with the
    /// handshake response, which drained the socket): read again without waiting for the
    /// socket.
    more_to_read: bool,
    /// Something was written that still needs a flush.
    dirty: bool,
    /// A ping was written and not yet pushed out past Nagle's algorithm ([`Self::flush`]).
    ping_to_push: bool,
    /// Each flush of the open connection writes [`WRITE_PASS`] bytes at most
    /// ([`Self::pace_writes`]).
    paced: bool,
}

impl<S: TcpSocket> Connection<S> {
    /// Connection `id` for `request`, through the proxy `env` names for it, if any, and
    /// where its TCP connection goes: the adapter resolves and connects to the target, then
    /// calls [`Self::resolved`] and [`Self::connected`] or [`Self::connect_failed`]. A plan
    /// that cannot be made (a bad proxy) is the dial's failure, reported as the core's
    /// `ConnectFailed`.
    pub fn new(
        id: ConnId,
        request: Arc<HandshakeRequest>,
        env: &ProxyEnv,
        config: WebSocketConfig,
    ) -> Result<(Self, DialTarget), TransportEvent> {
        let plan = DialPlan::new(&request, env).map_err(|error| {
            trace::dial_failed(id, &error);
            TransportEvent::ConnectFailed(error)
        })?;
        let dial = Dial {
            timer: DialTimer::start(),
            config,
            stage: None,
        };
        let (host, port) = plan.tcp_target();
        let target = DialTarget {
            host: host.to_owned(),
            port,
        };
        let connection = Self {
            id,
            span: trace::connection_span(id, &request.url),
            request,
            proxied: plan.is_proxied(),
            phase: Phase::Dialing(Box::new((plan, dial))),
            read_paused: false,
            more_to_read: false,
            dirty: false,
            ping_to_push: false,
            paced: false,
        };
        Ok((connection, target))
    }

    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The connection's `tracing` span (conn id, url): enter it whenever working on it.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Whether the WebSocket is open.
    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// Whether the transport is gone (its last events were reported).
    pub fn is_gone(&self) -> bool {
        matches!(self.phase, Phase::Gone)
    }

    /// The open WebSocket.
    pub fn link(&self) -> Option<&Link<S>> {
        match &self.phase {
            Phase::Open(link) => Some(link),
            _ => None,
        }
    }

    /// The open WebSocket, mutably.
    pub fn link_mut(&mut self) -> Option<&mut Link<S>> {
        match &mut self.phase {
            Phase::Open(link) => Some(link),
            _ => None,
        }
    }

    /// The TCP socket, once connected.
    pub fn socket(&self) -> Option<&S> {
        match &self.phase {
            Phase::Upgrading(upgrading) => upgrading.0.socket(),
            Phase::Open(link) => Some(link.wire().stream.socket()),
            Phase::Dialing(_) | Phase::Gone => None,
        }
    }

    /// The TCP socket, mutably (to register it, or set it up for the next operation).
    pub fn socket_mut(&mut self) -> Option<&mut S> {
        match &mut self.phase {
            Phase::Upgrading(upgrading) => upgrading.0.socket_mut(),
            Phase::Open(link) => Some(link.wire_mut().stream.socket_mut()),
            Phase::Dialing(_) | Phase::Gone => None,
        }
    }

    /// The socket's addresses and options, once connected (and, with TLS, once the tunnel
    /// of a proxy, if any, is open).
    pub fn socket_info(&self) -> Option<SocketInfo> {
        let tls = match &self.phase {
            Phase::Upgrading(upgrading) => upgrading.0.stream()?.is_tls(),
            Phase::Open(link) => link.wire().stream.is_tls(),
            Phase::Dialing(_) | Phase::Gone => return None,
        };
        let sock = self.socket()?;
        let info = SocketInfo::new(
            sock.local_addr().ok()?,
            sock.peer_addr().ok()?,
            sock.nodelay().ok()?,
            tls,
        );
        Some(if self.proxied {
            info.through_proxy()
        } else {
            info
        })
    }

    /// The adapter starts resolving the target's host name (not called for an IP
    /// address): the core learns the dial's stage, for a handshake timeout's message.
    pub fn resolving(&mut self, out: &mut Vec<TransportEvent>) {
        if let Phase::Dialing(dialing) = &mut self.phase {
            dialing.1.enter(Some(DialStage::Resolving), out);
        }
    }

    /// The host name was resolved to `addrs` (`Err`: resolving failed). Returns the
    /// addresses to connect to in order, or `None` when the dial failed (reported in `out`).
    pub fn resolved(
        &mut self,
        addrs: io::Result<Vec<SocketAddr>>,
        out: &mut Vec<TransportEvent>,
    ) -> Option<Vec<SocketAddr>> {
        let Phase::Dialing(dialing) = &mut self.phase else {
            return None;
        };
        let (plan, dial) = &mut **dialing;
        let error = match addrs {
            Ok(addrs) if addrs.is_empty() => plan.no_address(),
            Ok(addrs) => {
                dial.timer.resolved();
                dial.enter(Some(DialStage::Connecting), out);
                return Some(addrs);
            }
            Err(e) => plan.resolve_failed(&e),
        };
        self.fail(error, out);
        None
    }

    /// Every address failed to connect; `last` is the last one tried and its error.
    pub fn connect_failed(
        &mut self,
        last: Option<(SocketAddr, io::Error)>,
        out: &mut Vec<TransportEvent>,
    ) {
        let Phase::Dialing(dialing) = &self.phase else {
            return;
        };
        let error = match last {
            Some((addr, e)) => dialing.0.connect_failed(addr, &e),
            None => dialing.0.no_address(),
        };
        self.fail(error, out);
    }

    /// The TCP socket is connected: sets `TCP_NODELAY` if asked for and the limit on unsent
    /// bytes ([`UNSENT_LIMIT`]), then starts the tunnel, TLS (`tls`, for `wss://`) and the
    /// upgrade ([`Self::drive`]).
    pub fn connected(&mut self, sock: S, tls: &Arc<ClientConfig>, out: &mut Vec<TransportEvent>) {
        let Phase::Dialing(dialing) = std::mem::replace(&mut self.phase, Phase::Gone) else {
            return;
        };
        let (plan, mut dial) = *dialing;
        dial.timer.connected();
        if self.request.tcp_no_delay
            && let Err(e) = sock.set_nodelay(true)
        {
            self.fail(DialPlan::socket_failed(&e, "setting TCP_NODELAY"), out);
            return;
        }
        // Not having it costs only sight of what the socket holds (as on other platforms).
        let _ = sock.limit_unsent(UNSENT_LIMIT);
        let upgrade = Upgrade::new(sock, &plan, &self.request, tls);
        self.phase = Phase::Upgrading(Box::new((upgrade, dial)));
        self.drive(out);
    }

    /// Moves the tunnel, TLS and the upgrade on as far as the socket allows; once the
    /// server has answered, the connection is open (`Opened` in `out`), and what came with
    /// the response waits to be read ([`Self::has_more_to_read`]): the core must have seen
    /// `Opened` first, to give the connection its read credit.
    pub fn drive(&mut self, out: &mut Vec<TransportEvent>) {
        let Phase::Upgrading(upgrading) = &mut self.phase else {
            return;
        };
        let (upgrade, dial) = &mut **upgrading;
        let (stream, done) = match upgrade.drive(&mut dial.timer) {
            Poll::Pending => return dial.enter(upgrade.stage(), out),
            Poll::Ready(Err(error)) => return self.fail(error, out),
            Poll::Ready(Ok(done)) => done,
        };
        let config = dial.config;
        let (mut link, handshake) = Link::open(self.id, stream, done, &self.request, config);
        if self.paced {
            link.set_write_pass(WRITE_PASS);
        }
        self.phase = Phase::Open(Box::new(link));
        out.push(TransportEvent::Opened(Box::new(handshake)));
        if tracing::enabled!(target: trace::TARGET, tracing::Level::DEBUG)
            && let Some(socket) = self.socket_info()
        {
            trace::opened(self.id, &socket);
        }
        self.more_to_read = true;
    }

    /// The dial failed: the transport is gone.
    fn fail(&mut self, error: TransportError, out: &mut Vec<TransportEvent>) {
        trace::dial_failed(self.id, &error);
        self.phase = Phase::Gone;
        out.push(TransportEvent::ConnectFailed(error));
    }

    /// Drops the transport at once (abort). An open TLS connection's last record is its
    /// `close_notify`, if the socket takes it.
    pub fn drop_transport(&mut self) {
        if let Phase::Open(link) = &mut self.phase {
            link.wire_mut().stream.end_tls();
        }
        self.abandon_transport();
    }

    /// Drops the transport at once without writing anything more to it (no TLS
    /// `close_notify`): after a panic in the connection's work ([`panicked`]), nothing its
    /// state says is trusted.
    pub fn abandon_transport(&mut self) {
        if let Phase::Open(_) = &self.phase {
            trace::transport_gone(self.id);
        }
        self.phase = Phase::Gone;
        self.more_to_read = false;
        self.read_paused = false;
        self.dirty = false;
    }

    /// Bounds what one flush of the open connection writes to [`WRITE_PASS`]
    /// ([`Link::set_write_pass`]), for a driver that works on many connections under one
    /// lock; a flush that stops there leaves the rest for the next
    /// ([`Self::has_more_to_write`]).
    pub fn pace_writes(&mut self) {
        self.paced = true;
        if let Some(link) = self.link_mut() {
            link.set_write_pass(WRITE_PASS);
        }
    }

    /// Whether the last flush stopped at its pass limit with more to write: flush again
    /// without waiting for the socket, which may take it at once (no readiness will say).
    pub fn has_more_to_write(&self) -> bool {
        self.link()
            .is_some_and(|link| !link.is_gone() && link.write_spent())
    }

    /// Whether reading is paused because the core's read credit ran out.
    pub fn is_read_paused(&self) -> bool {
        self.read_paused
    }

    /// Whether the next read need not wait for the socket (see `more_to_read`).
    pub fn has_more_to_read(&self) -> bool {
        self.more_to_read || self.link().is_some_and(Link::reads_unblocked)
    }

    /// The driver leaves this open connection's read for later, although its socket said it
    /// is readable (a timer fell due while it read others): the next read need not wait for
    /// the socket to say so again ([`Self::has_more_to_read`]).
    pub fn read_later(&mut self) {
        self.more_to_read = self.is_open();
    }

    /// Ends a pause in reading (the core's `ResumeReading`). As data may already wait on
    /// the socket or in the WebSocket's buffer, where no readiness would announce it, the
    /// next read need not wait ([`Self::has_more_to_read`]). Returns whether it was paused.
    pub fn resume_reads(&mut self) -> bool {
        if !self.read_paused {
            return false;
        }
        self.read_paused = false;
        self.more_to_read = self.is_open();
        true
    }

    /// Reads at most [`MAX_READS`] messages within `credit`, the core's [`ReadCredit`] for this
    /// connection (see [`Link::read`]); with `short_read_ends`, only until a short read of
    /// the plain socket (see [`crate::link::Wire::begin_pass`]). A paused connection reads
    /// only once it is given credit again. Once the credit is used up, reading pauses and
    /// the rest stays on the socket, so that TCP pushes back on the peer.
    pub fn read(
        &mut self,
        credit: &mut ReadCredit,
        short_read_ends: bool,
        out: &mut Vec<TransportEvent>,
    ) -> ReadEnd {
        self.more_to_read = false;
        let Phase::Open(link) = &mut self.phase else {
            return ReadEnd::Stopped;
        };
        let was_paused = std::mem::replace(&mut self.read_paused, credit.is_paused());
        if !link.is_readable() {
            return ReadEnd::Stopped;
        }
        let end = if credit.is_paused() {
            link.note_paused();
            ReadEnd::Paused
        } else {
            link.wire_mut().begin_pass(short_read_ends);
            link.read(credit, MAX_READS, out)
        };
        match end {
            ReadEnd::Paused => self.read_paused = true,
            ReadEnd::Limit => self.more_to_read = true,
            _ => {}
        }
        if self.read_paused && !was_paused {
            trace::reading_paused(self.id);
        }
        self.drop_if_gone();
        end
    }

    /// Whether something was written since the last [`Self::flush`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Whether a flush has something to write: frames, replies queued while reading, or
    /// the records TLS queued.
    pub fn needs_flush(&self) -> bool {
        self.dirty
            || self
                .link()
                .is_some_and(|link| link.needs_flush() || link.wire().stream.wants_write())
    }

    /// Flushes what was written; reports every send whose bytes reached the socket.
    ///
    /// A ping, once on the socket, is pushed out at once even without `TCP_NODELAY`: it is a
    /// small write behind data the peer has not acknowledged yet, which Nagle's algorithm
    /// holds until the peer's (delayed) ACK, 40 ms on Linux. Delivery acknowledgement waits
    /// for the pong, so every awaited send took 44 ms. Setting `TCP_NODELAY` pushes what is
    /// pending (Linux), and clearing it again keeps Nagle for the data.
    pub fn flush(&mut self, out: &mut Vec<TransportEvent>) {
        self.dirty = false;
        if let Phase::Open(link) = &mut self.phase {
            link.flush(out);
            if self.ping_to_push && !link.needs_flush() && !link.wire().stream.wants_write() {
                self.ping_to_push = false;
                let sock = link.wire().stream.socket();
                if !self.request.tcp_no_delay && sock.set_nodelay(true).is_ok() {
                    let _ = sock.set_nodelay(false);
                }
            }
            self.drop_if_gone();
        }
    }

    /// Writes a message into the WebSocket's buffer ([`Link::send`]); [`Self::flush`]
    /// writes it out, so that one flush carries everything a turn wrote.
    pub fn send(&mut self, id: SendId, message: Message, out: &mut Vec<TransportEvent>) {
        self.with_link(out, |link, out| link.send(id, message, out));
    }

    /// Writes a ping into the WebSocket's buffer ([`Self::flush`] pushes it out).
    pub fn ping(&mut self, payload: bytes::Bytes, out: &mut Vec<TransportEvent>) {
        self.ping_to_push = true;
        self.with_link(out, |link, out| link.ping(payload, out));
    }

    /// Queues a close frame (after everything written before it).
    pub fn close(&mut self, frame: &CloseRequest, out: &mut Vec<TransportEvent>) {
        self.with_link(out, |link, out| link.close(frame, out));
    }

    /// Whether reading has stopped (a read error, or a frame after the peer's close) and no
    /// close frame of ours was queued: unless the core answers with one, the adapter ends
    /// the connection with [`Self::end_if_unanswered`] once the core has had its turn.
    pub fn is_unanswered(&self) -> bool {
        self.link().is_some_and(|link| {
            !link.is_readable() && !link.close_sent() && !link.ends_when_flushed()
        })
    }

    /// After a read error the core did not answer with a close frame (call it once the
    /// core's actions for the error have been carried out), once nothing is left to write:
    /// the transport ends.
    pub fn end_if_unanswered(&mut self, out: &mut Vec<TransportEvent>) {
        if self.is_unanswered()
            && let Phase::Open(link) = &mut self.phase
            && !link.has_unflushed_sends()
        {
            link.end(out);
            self.drop_if_gone();
        }
    }

    fn with_link(
        &mut self,
        out: &mut Vec<TransportEvent>,
        f: impl FnOnce(&mut Link<S>, &mut Vec<TransportEvent>),
    ) {
        if let Phase::Open(link) = &mut self.phase {
            f(link, out);
            self.dirty = link.needs_flush();
            self.drop_if_gone();
        }
    }

    /// Drops the transport once the link has ended it (its last events are out).
    fn drop_if_gone(&mut self) {
        if matches!(&self.phase, Phase::Open(link) if link.is_gone()) {
            self.drop_transport();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::net::TcpStream;

    /// A dial reports each stage it enters once, in order, for a handshake timeout's
    /// message (the later stages are tested over real IO in the conformance suite).
    #[test]
    fn a_dial_reports_resolving_then_connecting_once_each() {
        let request = wxsocket_core::ConnectOptions::new("ws://example.test/")
            .validate()
            .unwrap();
        let id = ConnId::from_raw(1);
        let config = WebSocketConfig::default();
        let (mut c, target) =
            Connection::<TcpStream>::new(id, Arc::new(request), &ProxyEnv::empty(), config)
                .unwrap();
        assert_eq!(target.address(), None);
        let mut out = Vec::new();
        c.resolving(&mut out);
        c.resolving(&mut out);
        assert_eq!(out, [TransportEvent::Dialing(DialStage::Resolving)]);
        out.clear();
        let addrs = c.resolved(Ok(vec!["127.0.0.1:9".parse().unwrap()]), &mut out);
        assert_eq!(addrs.map(|a| a.len()), Some(1));
        assert_eq!(out, [TransportEvent::Dialing(DialStage::Connecting)]);
    }

    /// A socket that takes every write (unless `full`, or failing with `write_error`) and
    /// records `TCP_NODELAY` changes (and, with `written`, what it took); reads give its
    /// `input`, then `WouldBlock`, or the end of the stream with `eof` (or fail with
    /// `read_error`).
    #[derive(Default)]
    struct Recording {
        nodelay: std::rc::Rc<std::cell::RefCell<Vec<bool>>>,
        written: std::rc::Rc<std::cell::RefCell<Vec<u8>>>,
        input: io::Cursor<Vec<u8>>,
        eof: bool,
        full: bool,
        read_error: Option<io::ErrorKind>,
        write_error: Option<io::ErrorKind>,
    }

    impl Read for Recording {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if let Some(kind) = self.read_error {
                return Err(kind.into());
            }
            match self.input.read(buf)? {
                0 if self.eof => Ok(0),
                0 => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            }
        }
    }

    impl Write for Recording {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(kind) = self.write_error {
                return Err(kind.into());
            }
            if self.full {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.written.borrow_mut().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl TcpSocket for Recording {
        fn local_addr(&self) -> io::Result<SocketAddr> {
            Ok("127.0.0.1:1".parse().unwrap())
        }
        fn peer_addr(&self) -> io::Result<SocketAddr> {
            Ok("127.0.0.1:2".parse().unwrap())
        }
        fn nodelay(&self) -> io::Result<bool> {
            Ok(false)
        }
        fn set_nodelay(&self, on: bool) -> io::Result<()> {
            self.nodelay.borrow_mut().push(on);
            Ok(())
        }
    }

    /// An open connection over a [`Recording`] socket, and its record of `TCP_NODELAY`.
    fn open(
        tcp_no_delay: bool,
    ) -> (
        Connection<Recording>,
        std::rc::Rc<std::cell::RefCell<Vec<bool>>>,
    ) {
        open_over(Recording::default(), tcp_no_delay)
    }

    /// An open connection over a [`Recording`] socket that reads `input`.
    fn reading(input: &[u8]) -> Connection<Recording> {
        let socket = Recording {
            input: io::Cursor::new(input.to_vec()),
            ..Recording::default()
        };
        open_over(socket, false).0
    }

    /// An open connection over `socket`, and its record of `TCP_NODELAY`.
    fn open_over(
        socket: Recording,
        tcp_no_delay: bool,
    ) -> (
        Connection<Recording>,
        std::rc::Rc<std::cell::RefCell<Vec<bool>>>,
    ) {
        use tungstenite::protocol::WebSocketConfig;
        let options =
            wxsocket_core::ConnectOptions::new("ws://example.test/").tcp_no_delay(tcp_no_delay);
        let request = Arc::new(options.validate().unwrap());
        let id = ConnId::from_raw(1);
        let (mut c, _) = Connection::<Recording>::new(
            id,
            request,
            &ProxyEnv::empty(),
            WebSocketConfig::default(),
        )
        .unwrap();
        let record = std::rc::Rc::clone(&socket.nodelay);
        let wire = crate::link::Wire::new(
            crate::upgrade::Stream::Plain(socket),
            crate::incoming::Incoming::new(bytes::Bytes::new(), None),
        );
        let link = Link::new(id, wire, WebSocketConfig::default(), Default::default());
        c.phase = Phase::Open(Box::new(link));
        (c, record)
    }

    /// A ping is pushed past Nagle's algorithm once flushed (`TCP_NODELAY` set and cleared:
    /// with delivery acknowledgement, a user's probe waited 44 ms for each awaited send);
    /// data is not, and a connection with `TCP_NODELAY` on needs no push.
    #[test]
    fn a_flushed_ping_is_pushed_out_without_nodelay() {
        let (mut c, record) = open(false);
        let mut out = Vec::new();
        c.send(SendId::from_raw(1), Message::text("m"), &mut out);
        c.flush(&mut out);
        assert!(record.borrow().is_empty(), "data keeps Nagle");
        c.send(SendId::from_raw(2), Message::text("m"), &mut out);
        c.ping(bytes::Bytes::from_static(b"p"), &mut out);
        c.flush(&mut out);
        assert_eq!(*record.borrow(), [true, false]);
        c.flush(&mut out);
        assert_eq!(record.borrow().len(), 2, "once a ping");

        let (mut c, record) = open(true);
        c.ping(bytes::Bytes::from_static(b"p"), &mut out);
        c.flush(&mut out);
        assert!(record.borrow().is_empty(), "TCP_NODELAY is on already");
    }

    /// An unmasked text frame from the server.
    fn text_frame(text: &str) -> Vec<u8> {
        let mut frame = vec![0x81, text.len() as u8];
        frame.extend_from_slice(text.as_bytes());
        frame
    }

    fn messages(out: &[TransportEvent]) -> usize {
        out.iter()
            .filter(|e| matches!(e, TransportEvent::Message(_)))
            .count()
    }

    /// A target that is an IP address is connected to without resolving; a name is not.
    #[test]
    fn an_ip_address_target_needs_no_resolving() {
        let target = |host: &str| DialTarget {
            host: host.into(),
            port: 80,
        };
        assert_eq!(
            target("127.0.0.1").address(),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(target("::1").address(), Some("[::1]:80".parse().unwrap()));
        assert_eq!(target("localhost").address(), None);
        let request = wxsocket_core::ConnectOptions::new("ws://127.0.0.1:9/")
            .validate()
            .unwrap();
        let (_, target) = Connection::<TcpStream>::new(
            ConnId::from_raw(1),
            Arc::new(request),
            &ProxyEnv::empty(),
            WebSocketConfig::default(),
        )
        .unwrap();
        assert_eq!(target.address(), Some("127.0.0.1:9".parse().unwrap()));
    }

    /// A name that resolves to no address fails the dial at once, as a failed resolve does:
    /// no address to connect to, no `Connecting` stage, the transport gone.
    #[test]
    fn a_name_resolved_to_no_address_fails_the_dial() {
        for addrs in [Ok(vec![]), Err(io::ErrorKind::NotFound.into())] {
            let request = wxsocket_core::ConnectOptions::new("ws://example.test/")
                .validate()
                .unwrap();
            let (mut c, _) = Connection::<TcpStream>::new(
                ConnId::from_raw(1),
                Arc::new(request),
                &ProxyEnv::empty(),
                WebSocketConfig::default(),
            )
            .unwrap();
            let mut out = Vec::new();
            assert_eq!(c.resolved(addrs, &mut out), None);
            assert!(
                matches!(out.as_slice(), [TransportEvent::ConnectFailed(_)]),
                "{out:?}"
            );
            assert!(c.is_gone());
        }
    }

    /// Reading pauses when the core's credit runs out, stays paused while the credit is
    /// none, and once resumed the next read need not wait for the socket (the data is
    /// there already); a read stopped at [`MAX_READS`] reads again without waiting too.
    #[test]
    fn reading_pauses_at_the_credit_and_goes_on_without_waiting_for_the_socket() {
        let mut input = Vec::new();
        for text in ["a", "b", "c"] {
            input.extend(text_frame(text));
        }
        let mut c = reading(&input);
        let mut out = Vec::new();
        assert!(!c.resume_reads(), "not paused");
        assert!(!c.has_more_to_read());
        let mut credit = ReadCredit::new(1, 100);
        assert_eq!(c.read(&mut credit, false, &mut out), ReadEnd::Paused);
        assert_eq!(messages(&out), 1);
        assert!(c.is_read_paused());
        assert!(!c.has_more_to_read(), "paused: only a resume reads again");
        let mut none = ReadCredit::PAUSED;
        assert_eq!(c.read(&mut none, false, &mut out), ReadEnd::Paused);
        assert_eq!(messages(&out), 1, "nothing read without credit");
        assert!(c.is_read_paused());
        assert!(c.resume_reads());
        assert!(!c.is_read_paused());
        assert!(c.has_more_to_read());
        assert!(!c.resume_reads(), "resumed once");
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(c.read(&mut credit, false, &mut out), ReadEnd::Drained);
        assert_eq!(messages(&out), 3);
        assert!(!c.has_more_to_read());
        assert!(!c.is_read_paused());

        let mut input = Vec::new();
        for _ in 0..=MAX_READS {
            input.extend(text_frame("m"));
        }
        let mut c = reading(&input);
        out.clear();
        assert_eq!(c.read(&mut credit, false, &mut out), ReadEnd::Limit);
        assert_eq!(messages(&out), MAX_READS);
        assert!(c.has_more_to_read(), "the rest waits behind the limit");
        assert!(!c.is_read_paused());
        assert_eq!(c.read(&mut credit, false, &mut out), ReadEnd::Drained);
        assert_eq!(messages(&out), MAX_READS + 1);
        assert!(!c.has_more_to_read());
    }

    /// A pong owed for a ping read, which a full socket did not take, needs a flush
    /// although nothing was written through the connection; a send does too.
    #[test]
    fn a_pong_owed_or_a_send_needs_a_flush() {
        let mut c = reading(&[0x89, 0x01, b'p']);
        c.socket_mut().unwrap().full = true;
        let mut out = Vec::new();
        assert!(!c.needs_flush());
        let mut credit = ReadCredit::UNLIMITED;
        c.read(&mut credit, false, &mut out);
        assert!(!c.is_dirty());
        assert!(c.needs_flush(), "the pong");
        c.socket_mut().unwrap().full = false;
        c.flush(&mut out);
        assert!(!c.needs_flush());
        c.send(SendId::from_raw(1), Message::text("m"), &mut out);
        assert!(c.is_dirty() && c.needs_flush());
        c.flush(&mut out);
        assert!(!c.is_dirty() && !c.needs_flush());
    }

    /// A read that failed with an error the core answers with a close frame (text that is
    /// not UTF-8: 1007) leaves the connection unanswered until that close frame is queued:
    /// should the core not send one, the adapter ends the transport, once its sends are out.
    /// A connection that reads fine, or whose close frame was queued, is not unanswered.
    #[test]
    fn a_failed_read_unanswered_ends_the_transport_once_its_sends_are_out() {
        let not_utf8 = [0x81, 0x01, 0xFF];
        let mut c = reading(&not_utf8);
        let mut out = Vec::new();
        assert!(!c.is_unanswered(), "readable");
        c.send(SendId::from_raw(1), Message::text("m"), &mut out);
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(c.read(&mut credit, false, &mut out), ReadEnd::Stopped);
        assert!(c.is_unanswered(), "{out:?}");
        out.clear();
        c.end_if_unanswered(&mut out);
        assert!(
            c.is_open() && out.is_empty(),
            "the send is not out yet: {out:?}"
        );
        c.flush(&mut out);
        c.end_if_unanswered(&mut out);
        assert_eq!(out.last(), Some(&TransportEvent::Closed), "{out:?}");
        assert!(c.is_gone());

        let mut c = reading(&not_utf8);
        c.read(&mut credit, false, &mut out);
        assert!(c.is_unanswered());
        c.close(&CloseRequest::new(None, "").unwrap(), &mut out);
        assert!(!c.is_unanswered(), "our close frame answers it");
    }

    /// With paced writes, a flush stops at [`WRITE_PASS`] and says more is to be written at
    /// once; the last pass says nothing is left.
    #[test]
    fn a_paced_flush_says_when_more_is_to_be_written() {
        let (mut c, _) = open(false);
        c.pace_writes();
        let mut out = Vec::new();
        c.send(
            SendId::from_raw(1),
            Message::binary(vec![0; 2 * WRITE_PASS + 1]),
            &mut out,
        );
        assert!(!c.has_more_to_write());
        let mut passes = 0;
        loop {
            c.flush(&mut out);
            passes += 1;
            if !c.has_more_to_write() {
                break;
            }
            assert!(passes < 10, "{out:?}");
        }
        assert_eq!(passes, 3);
        assert!(
            out.contains(&TransportEvent::SendWritten(SendId::from_raw(1))),
            "{out:?}"
        );
    }

    /// A socket that fails while the dial writes the proxy's `CONNECT` or the upgrade
    /// request, or reads the answer to either, fails the dial at once (naming the proxy,
    /// when there is one): it is no socket that would block, whose dial would then wait for
    /// a readiness that never comes, until the handshake timeout.
    #[test]
    fn a_socket_failing_in_the_dial_fails_it_at_once() {
        use io::ErrorKind::{BrokenPipe, ConnectionReset};
        let tls = crate::upgrade::client_config(&Default::default()).unwrap();
        let proxy = "http://127.0.0.1:3128";
        for (via, read_error, write_error) in [
            (Some(proxy), Some(ConnectionReset), None),
            (Some(proxy), None, Some(BrokenPipe)),
            (None, Some(ConnectionReset), None),
            (None, None, Some(BrokenPipe)),
        ] {
            let mut options = wxsocket_core::ConnectOptions::new("ws://example.test/");
            if let Some(proxy) = via {
                options = options.proxy(proxy);
            }
            let request = Arc::new(options.validate().unwrap());
            let (mut c, target) = Connection::<Recording>::new(
                ConnId::from_raw(1),
                request,
                &ProxyEnv::empty(),
                WebSocketConfig::default(),
            )
            .unwrap();
            assert_eq!(target.port, if via.is_some() { 3128 } else { 80 });
            let socket = Recording {
                read_error,
                write_error,
                ..Recording::default()
            };
            let mut out = Vec::new();
            c.connected(socket, &tls, &mut out);
            let case = format!("{via:?} {read_error:?} {write_error:?}: {out:?}");
            let Some(TransportEvent::ConnectFailed(error)) = out.last() else {
                panic!("{case}");
            };
            assert!(c.is_gone(), "{case}");
            if let Some(proxy) = via {
                assert!(error.message.contains(proxy), "{case}");
            }
        }
    }

    /// The peer's close frame and then its FIN, read while the answer cannot be written yet
    /// (a full socket): the connection is not unanswered (the answer is queued, and the
    /// transport ends once a flush has it out, not before); with the answer written at
    /// once, the FIN ends the transport there and then.
    #[test]
    fn a_close_and_fin_end_the_transport_once_the_answer_is_out() {
        let close_1000 = [0x88, 0x02, 0x03, 0xE8];
        let socket = Recording {
            input: io::Cursor::new(close_1000.to_vec()),
            eof: true,
            full: true,
            ..Recording::default()
        };
        let written = std::rc::Rc::clone(&socket.written);
        let (mut c, _) = open_over(socket, false);
        let mut out = Vec::new();
        let mut credit = ReadCredit::UNLIMITED;
        assert_eq!(c.read(&mut credit, false, &mut out), ReadEnd::Stopped);
        assert!(!c.is_unanswered(), "{out:?}");
        c.end_if_unanswered(&mut out);
        assert!(c.is_open(), "ended before the answer went: {out:?}");
        assert!(c.needs_flush());
        c.socket_mut().unwrap().full = false;
        c.flush(&mut out);
        assert_eq!(written.borrow()[0], 0x88, "the answer, a close frame");
        assert_ended_cleanly(&out);
        assert!(c.is_gone());

        let mut c = reading(&close_1000);
        c.socket_mut().unwrap().eof = true;
        out.clear();
        assert_eq!(c.read(&mut credit, false, &mut out), ReadEnd::Stopped);
        assert_ended_cleanly(&out);
        assert!(c.is_gone());
    }

    /// The peer's close came first, no failure, and the transport's end last.
    fn assert_ended_cleanly(out: &[TransportEvent]) {
        assert!(
            matches!(out.first(), Some(TransportEvent::PeerClosed(_)))
                && out.last() == Some(&TransportEvent::Closed)
                && !out.iter().any(|e| matches!(e, TransportEvent::Error(_))),
            "{out:?}"
        );
    }

    /// `read_now` reads what the socket holds at once (the peer's close frame after a
    /// failed write, on tokio), and says `WouldBlock` on a non-blocking socket that holds
    /// nothing. Over loopback.
    #[cfg(unix)]
    #[test]
    fn read_now_reads_what_the_socket_holds() {
        use std::io::Write as _;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let mut buf = [0u8; 16];
        server.set_nonblocking(true).unwrap();
        let nothing = read_now(&server, &mut buf).unwrap_err();
        assert_eq!(nothing.kind(), io::ErrorKind::WouldBlock);
        client.write_all(b"close").unwrap();
        // Blocking, so that the bytes are there when it reads, without a wait of the
        // test's own.
        server.set_nonblocking(false).unwrap();
        let n = read_now(&server, &mut buf).unwrap();
        assert_eq!(&buf[..n], &b"close"[..n]);
        assert!(n > 0);
    }
}
