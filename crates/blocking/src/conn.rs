//! One connection's transport: TCP connect, a proxy's `CONNECT` tunnel when one is in use,
//! TLS and the opening handshake, then the WebSocket, all on a non-blocking socket
//! registered with the driver's poller. Every
//! operation runs until the socket would block and reports what happened as
//! [`TransportEvent`]s; it never waits.

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use tungstenite::protocol::WebSocketConfig;
use wxsocket_core::{
    CloseRequest, ConnId, HandshakeRequest, Message, ReadCredit, SendId, TransportError,
    TransportErrorKind, TransportEvent,
};
use wxsocket_wire::DialTimer;
use wxsocket_wire::dial::DialPlan;
use wxsocket_wire::link::{Link, ReadEnd};
use wxsocket_wire::upgrade::{ClientConfig, Upgrade};

/// Most messages read from one connection in one pass, so one busy peer cannot starve the
/// others; the driver comes back at once (zero poll timeout) when a pass stops early.
const MAX_READS_PER_PASS: usize = 256;

/// What every connection operation needs from the driver.
pub(crate) struct Ctx<'a> {
    /// The driver thread's poller: every socket, readable and writable.
    pub registry: &'a Registry,
    /// The receivers' poller: every socket, readable only (see `driver`).
    pub receivers: Option<&'a Registry>,
    pub tls: &'a Arc<ClientConfig>,
    pub ws_config: WebSocketConfig,
}

impl Ctx<'_> {
    fn register(&self, sock: &mut TcpStream, token: Token) -> io::Result<()> {
        self.registry
            .register(sock, token, Interest::READABLE | Interest::WRITABLE)?;
        #[cfg(unix)]
        if let Some(receivers) = self.receivers {
            use std::os::fd::AsRawFd;
            let fd = sock.as_raw_fd();
            if let Err(e) =
                receivers.register(&mut mio::unix::SourceFd(&fd), token, Interest::READABLE)
            {
                let _ = self.registry.deregister(sock);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Adds the socket to the receivers' poller again (readable only), after a pause in
    /// reading took it out. Returns whether it is registered there now.
    fn register_receiver(&self, sock: &mut TcpStream, token: Token) -> io::Result<bool> {
        #[cfg(unix)]
        if let Some(receivers) = self.receivers {
            use std::os::fd::AsRawFd;
            let fd = sock.as_raw_fd();
            receivers.register(&mut mio::unix::SourceFd(&fd), token, Interest::READABLE)?;
            return Ok(true);
        }
        let _ = (sock, token);
        Ok(false)
    }

    /// Removes the socket from the receivers' poller.
    fn deregister_receiver(&self, sock: &mut TcpStream) {
        #[cfg(unix)]
        if let Some(receivers) = self.receivers {
            use std::os::fd::AsRawFd;
            let fd = sock.as_raw_fd();
            let _ = receivers.deregister(&mut mio::unix::SourceFd(&fd));
        }
        let _ = sock;
    }

    /// Removes the socket from the receivers' poller if it is `in_receivers`, and from the
    /// driver's if it is `in_driver` (see [`Conn::sync_interest`]).
    fn deregister(&self, sock: &mut TcpStream, in_driver: bool, in_receivers: bool) {
        if in_receivers {
            self.deregister_receiver(sock);
        }
        if in_driver {
            let _ = self.registry.deregister(sock);
        }
    }
}

enum Phase {
    /// The host name is being resolved on a helper thread.
    Resolving,
    /// A non-blocking TCP connect is in progress; `rest` are the addresses still to try.
    Connecting {
        sock: TcpStream,
        addr: SocketAddr,
        rest: VecDeque<SocketAddr>,
    },
    /// Connected: a proxy's tunnel, TLS and the HTTP upgrade (see [`Upgrade`]).
    Upgrading(Box<Upgrade<TcpStream>>),
    /// The WebSocket (see [`Link`]).
    Open(Box<Link<TcpStream>>),
    /// The transport is gone; the driver removes the connection.
    Gone,
}

/// How far a read pass reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadPass {
    /// Until the socket reports `WouldBlock` (or the stream ends): for passes no readiness
    /// event started, and for events that carry the peer's end of the stream.
    ToTheEnd,
    /// Until a read returns less than it asked for (the socket is empty): for a pass
    /// started by a readiness event without read-closed (see `Wire::begin_pass`).
    UntilShortRead,
}

impl ReadPass {
    /// The pass a readiness event calls for.
    pub(crate) fn for_event(event: &mio::event::Event) -> Self {
        if event.is_read_closed() || event.is_error() {
            ReadPass::ToTheEnd
        } else {
            ReadPass::UntilShortRead
        }
    }
}

/// One connection's transport.
pub(crate) struct Conn {
    pub id: ConnId,
    request: Arc<HandshakeRequest>,
    /// Where the dial goes (the server, or a proxy) and what its failures are called.
    plan: DialPlan,
    phase: Phase,
    /// Stopped reading before the socket was drained (see [`MAX_READS_PER_PASS`]), or
    /// reading resumed after a pause: the driver comes back for another pass at once.
    pub read_ready: bool,
    /// The machine's read credit ran out (flow control, [`ReadCredit`]): nothing is read
    /// and neither poller watches the socket for reads until [`Conn::resume_reads`].
    read_paused: bool,
    /// The socket is registered with the receivers' poller (see [`Ctx::register`]).
    in_receivers: bool,
    /// Something was written that still needs a flush.
    pub dirty: bool,
    /// The driver thread's poller should watch the socket for reads. Off once input came
    /// while the reads were handed to a thread in `recv` (see [`Conn::set_driver_reads`]).
    driver_reads: bool,
    /// What the driver thread's poller watches the socket for (`None`: not registered
    /// there); see [`Conn::sync_interest`].
    interest: Option<Interest>,
    /// The dial's phases, for the open event's profile; started with the connection (the
    /// driver creates it when it carries out the dial).
    timer: DialTimer,
    /// The connection's `tracing` span; the driver enters it whenever it works on the
    /// connection.
    pub span: tracing::Span,
}

/// `u64` key of a connection, also its poller token.
pub(crate) fn key(id: ConnId) -> u64 {
    id.get()
}

fn token(id: ConnId) -> Token {
    // Connection ids start at 1 and grow by one; they never reach the waker's token.
    Token(id.get() as usize)
}

impl Conn {
    pub fn new(id: ConnId, request: Arc<HandshakeRequest>, plan: DialPlan) -> Self {
        Self {
            id,
            plan,
            phase: Phase::Resolving,
            read_ready: false,
            read_paused: false,
            in_receivers: false,
            dirty: false,
            driver_reads: true,
            interest: None,
            timer: DialTimer::start(),
            span: wxsocket_wire::trace::connection_span(id, &request.url),
            request,
        }
    }

    /// The host (without brackets) and port to resolve and connect to: the proxy's, or the
    /// server's.
    pub fn dial_target(&self) -> (String, u16) {
        let (host, port) = self.plan.tcp_target();
        (host.to_owned(), port)
    }

    pub fn is_gone(&self) -> bool {
        matches!(self.phase, Phase::Gone)
    }

    pub fn is_open(&self) -> bool {
        matches!(self.phase, Phase::Open(_))
    }

    /// Whether reading is paused because the machine's read credit ran out.
    pub fn is_read_paused(&self) -> bool {
        self.read_paused
    }

    /// Ends a pause in reading (`Action::ResumeReading`): both pollers watch the socket
    /// again (from [`Self::sync_interest`]) and, as data may already wait on the socket or
    /// in the WebSocket's buffer where no new readiness event would announce it, the
    /// driver makes a pass at once ([`Self::read_ready`]). Returns whether it was paused.
    pub fn resume_reads(&mut self) -> bool {
        if !self.read_paused {
            return false;
        }
        self.read_paused = false;
        self.read_ready = self.is_open();
        true
    }

    /// Addresses and options of the socket, once connected.
    pub fn socket_info(&mut self) -> Option<crate::SocketInfo> {
        let (sock, tls) = match &mut self.phase {
            Phase::Upgrading(upgrade) => {
                // None while still in the proxy's tunnel.
                let tls = upgrade.stream()?.is_tls();
                (upgrade.socket_mut()?, tls)
            }
            Phase::Open(link) => {
                let stream = &mut link.wire_mut().stream;
                let tls = stream.is_tls();
                (stream.socket_mut(), tls)
            }
            Phase::Resolving | Phase::Connecting { .. } | Phase::Gone => {
                return None;
            }
        };
        let info = crate::SocketInfo::new(
            sock.local_addr().ok()?,
            sock.peer_addr().ok()?,
            sock.nodelay().ok()?,
            tls,
        );
        Some(if self.plan.is_proxied() {
            info.through_proxy()
        } else {
            info
        })
    }

    /// The TCP socket, once there is one.
    fn tcp(&mut self) -> Option<&mut TcpStream> {
        match &mut self.phase {
            Phase::Connecting { sock, .. } => Some(sock),
            Phase::Upgrading(upgrade) => upgrade.socket_mut(),
            Phase::Open(link) => Some(link.wire_mut().stream.socket_mut()),
            Phase::Resolving | Phase::Gone => None,
        }
    }

    /// Lets the driver thread's poller watch this socket for reads, or not.
    ///
    /// A thread that sleeps in `recv` watches the sockets itself and reads what arrives;
    /// if the driver thread's poller watched them too, every message would also wake the
    /// driver thread, and on an otherwise idle machine that second wake-up costs more than
    /// the rest of the round trip (see the crate docs). So while the reads are handed to a
    /// receiving thread, the driver turns its reads off on each socket that has input
    /// (woken once for it), and turns them back on when it takes the reads back, once
    /// nobody has received for `driver::HANDBACK_GRACE` (or catches up earlier, before a
    /// due timer or for `try_recv`). Only the sockets that had input change, whatever the
    /// number of connections. The poller change takes effect in [`Self::sync_interest`].
    pub fn set_driver_reads(&mut self, on: bool) {
        self.driver_reads = on;
    }

    /// Brings the pollers' interest in an open connection's socket in line with what the
    /// driver must watch: the driver's poller watches reads unless a receiving thread
    /// watches them or reading is paused, and writability only while a flush waits for
    /// room; the receivers' poller watches reads unless reading is paused. (Polling is
    /// edge-triggered, and re-arming an interest in a socket that is ready at that moment
    /// raises an event at once; an interest in writability, always ready but rarely
    /// needed, would wake the driver on every re-arm.) Re-arming reads on a socket with
    /// data waiting wakes the driver at once, so nothing that arrives while the interest
    /// is off waits. A paused socket is in neither poller for reads, so a peer that keeps
    /// sending to it wakes nobody.
    ///
    /// Connecting and handshaking sockets keep both interests, as registered.
    pub fn sync_interest(&mut self, ctx: &Ctx<'_>) -> io::Result<()> {
        let reads = !self.read_paused;
        let wants_write = matches!(&self.phase, Phase::Open(link) if link.wants_write());
        let want = match (&self.phase, self.driver_reads && reads, wants_write) {
            (Phase::Open(_), true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (Phase::Open(_), true, false) => Some(Interest::READABLE),
            (Phase::Open(_), false, true) => Some(Interest::WRITABLE),
            (Phase::Open(_), false, false) => None,
            _ => return Ok(()),
        };
        let want_receivers = reads && ctx.receivers.is_some();
        if want == self.interest && want_receivers == self.in_receivers {
            return Ok(());
        }
        let (current, token, in_receivers) = (self.interest, token(self.id), self.in_receivers);
        let Some(sock) = self.tcp() else {
            return Ok(());
        };
        match (in_receivers, want_receivers) {
            (true, false) => ctx.deregister_receiver(sock),
            (false, true) => {
                ctx.register_receiver(sock, token)?;
            }
            _ => {}
        }
        self.in_receivers = want_receivers;
        let Some(sock) = self.tcp() else {
            return Ok(());
        };
        match (current, want) {
            (None, Some(interest)) => ctx.registry.register(sock, token, interest)?,
            (Some(_), Some(interest)) => ctx.registry.reregister(sock, token, interest)?,
            (Some(_), None) => ctx.registry.deregister(sock)?,
            (None, None) => {}
        }
        self.interest = want;
        Ok(())
    }

    /// The driver's poller could not take the socket: the connection cannot be driven.
    pub fn poller_failed(
        &mut self,
        ctx: &Ctx<'_>,
        error: &io::Error,
        out: &mut Vec<TransportEvent>,
    ) {
        self.drop_transport(ctx);
        out.push(TransportEvent::Error(TransportError::new(
            TransportErrorKind::Io,
            format!("the OS poller refused the socket: {error}"),
        )));
        out.push(TransportEvent::Closed);
    }

    /// Drops the transport at once (abort), deregistering the socket first.
    pub fn drop_transport(&mut self, ctx: &Ctx<'_>) {
        if matches!(self.phase, Phase::Open(_)) {
            wxsocket_wire::trace::transport_gone(self.id);
        }
        let in_driver = self.interest.take().is_some();
        let in_receivers = std::mem::take(&mut self.in_receivers);
        if let Some(sock) = self.tcp() {
            ctx.deregister(sock, in_driver, in_receivers);
        }
        self.phase = Phase::Gone;
        self.read_ready = false;
        self.read_paused = false;
        self.dirty = false;
    }

    pub fn fail_dial(
        &mut self,
        ctx: &Ctx<'_>,
        error: TransportError,
        out: &mut Vec<TransportEvent>,
    ) {
        wxsocket_wire::trace::dial_failed(self.id, &error);
        self.drop_transport(ctx);
        out.push(TransportEvent::ConnectFailed(error));
    }

    /// Starts the TCP connect with the resolved addresses.
    pub fn connect(
        &mut self,
        ctx: &Ctx<'_>,
        addrs: io::Result<Vec<SocketAddr>>,
        out: &mut Vec<TransportEvent>,
    ) {
        match addrs {
            Ok(addrs) if addrs.is_empty() => {
                let error = self.plan.no_address();
                self.fail_dial(ctx, error, out);
            }
            Ok(addrs) => {
                self.timer.resolved();
                self.try_addresses(ctx, addrs.into(), None, out);
            }
            Err(e) => {
                let error = self.plan.resolve_failed(&e);
                self.fail_dial(ctx, error, out);
            }
        }
    }

    fn try_addresses(
        &mut self,
        ctx: &Ctx<'_>,
        mut rest: VecDeque<SocketAddr>,
        mut last: Option<(SocketAddr, io::Error)>,
        out: &mut Vec<TransportEvent>,
    ) {
        while let Some(addr) = rest.pop_front() {
            let attempt = TcpStream::connect(addr).and_then(|mut sock| {
                ctx.register(&mut sock, token(self.id))?;
                Ok(sock)
            });
            match attempt {
                Ok(sock) => {
                    self.interest = Some(Interest::READABLE | Interest::WRITABLE);
                    self.in_receivers = ctx.receivers.is_some();
                    self.phase = Phase::Connecting { sock, addr, rest };
                    return;
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        let error = match last {
            Some((addr, e)) => self.plan.connect_failed(addr, &e),
            None => self.plan.no_address(),
        };
        self.fail_dial(ctx, error, out);
    }

    /// The socket is ready (or failed): move the connection on as far as it goes, reading
    /// an open connection within `credit` (the machine's [`ReadCredit`] for it).
    pub fn on_ready(
        &mut self,
        ctx: &Ctx<'_>,
        pass: ReadPass,
        credit: ReadCredit,
        out: &mut Vec<TransportEvent>,
    ) {
        match &mut self.phase {
            Phase::Connecting { .. } => self.finish_connect(ctx, out),
            Phase::Upgrading(_) => self.drive_upgrade(ctx, out),
            Phase::Open(_) => {
                self.read_pass(ctx, pass, credit, out);
                self.flush(ctx, out);
            }
            Phase::Resolving | Phase::Gone => {}
        }
    }

    fn finish_connect(&mut self, ctx: &Ctx<'_>, out: &mut Vec<TransportEvent>) {
        let Phase::Connecting { sock, addr, .. } = &mut self.phase else {
            return;
        };
        let addr = *addr;
        let failure = match sock.take_error() {
            Ok(Some(e)) | Err(e) => Some(e),
            Ok(None) => match sock.peer_addr() {
                Ok(_) => None,
                // Not connected yet: a spurious wake-up; wait for the next event.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => Some(e),
            },
        };
        let Phase::Connecting { mut sock, rest, .. } =
            std::mem::replace(&mut self.phase, Phase::Gone)
        else {
            unreachable!()
        };
        if let Some(e) = failure {
            ctx.deregister(&mut sock, true, std::mem::take(&mut self.in_receivers));
            drop(sock);
            self.try_addresses(ctx, rest, Some((addr, e)), out);
            return;
        }
        self.timer.connected();
        if self.request.tcp_no_delay
            && let Err(e) = sock.set_nodelay(true)
        {
            ctx.deregister(&mut sock, true, std::mem::take(&mut self.in_receivers));
            self.fail_dial(ctx, DialPlan::socket_failed(&e), out);
            return;
        }
        let upgrade = Upgrade::new(sock, &self.plan, &self.request, ctx.tls);
        self.phase = Phase::Upgrading(Box::new(upgrade));
        self.drive_upgrade(ctx, out);
    }

    /// Moves the tunnel, TLS and the upgrade on as far as the socket allows; once the
    /// server has answered, the connection is open.
    fn drive_upgrade(&mut self, ctx: &Ctx<'_>, out: &mut Vec<TransportEvent>) {
        let Phase::Upgrading(upgrade) = &mut self.phase else {
            return;
        };
        let (stream, done) = match upgrade.drive(&mut self.timer) {
            Poll::Pending => return,
            Poll::Ready(Err(error)) => {
                self.fail_dial(ctx, error, out);
                return;
            }
            Poll::Ready(Ok(done)) => done,
        };
        let (link, handshake) = Link::open(self.id, stream, done, &self.request, ctx.ws_config);
        self.phase = Phase::Open(Box::new(link));
        out.push(TransportEvent::Opened(Box::new(handshake)));
        if tracing::enabled!(target: wxsocket_wire::trace::TARGET, tracing::Level::DEBUG)
            && let Some(socket) = self.socket_info()
        {
            wxsocket_wire::trace::opened(self.id, &socket);
        }
        // Frames may have come with the handshake response, and the socket has been
        // drained: no further readiness event will come for them. The driver reads them as
        // soon as the machine has seen `Opened` (only then does it know the connection's
        // read credit).
        self.read_ready = true;
    }

    /// Reads messages until the socket would block, or with [`ReadPass::UntilShortRead`]
    /// until a short read (or the per-pass limit), and never more than `credit` allows:
    /// once the messages read use it up (control frames are free), reading pauses until
    /// [`Self::resume_reads`], leaving the rest on the socket so that TCP pushes back on
    /// the peer. A pass that starts without credit reads nothing and pauses.
    fn read_pass(
        &mut self,
        ctx: &Ctx<'_>,
        pass: ReadPass,
        mut credit: ReadCredit,
        out: &mut Vec<TransportEvent>,
    ) {
        self.read_ready = false;
        let Phase::Open(link) = &mut self.phase else {
            return;
        };
        if self.read_paused || !link.is_readable() {
            return;
        }
        if credit.is_paused() {
            self.read_paused = true;
            return;
        }
        link.wire_mut().begin_pass(pass == ReadPass::UntilShortRead);
        match link.read(&mut credit, MAX_READS_PER_PASS, out) {
            ReadEnd::Paused => self.read_paused = true,
            ReadEnd::Limit => self.read_ready = true,
            _ => {}
        }
        self.drop_if_gone(ctx);
    }

    /// Drops the transport once the link has ended it (its last events are out).
    fn drop_if_gone(&mut self, ctx: &Ctx<'_>) {
        if matches!(&self.phase, Phase::Open(link) if link.is_gone()) {
            self.drop_transport(ctx);
        }
    }

    /// Flushes what was written; reports every send whose bytes reached the socket.
    pub fn flush(&mut self, ctx: &Ctx<'_>, out: &mut Vec<TransportEvent>) {
        // Cleared whatever the phase: the driver flushes until no connection is dirty.
        self.dirty = false;
        let Phase::Open(link) = &mut self.phase else {
            return;
        };
        link.flush(out);
        self.drop_if_gone(ctx);
    }

    /// Runs `f` on the open connection's link (nothing before it is open): what it writes
    /// is flushed by the driver once it has carried out every queued action (batching).
    fn with_link(
        &mut self,
        ctx: &Ctx<'_>,
        out: &mut Vec<TransportEvent>,
        f: impl FnOnce(&mut Link<TcpStream>, &mut Vec<TransportEvent>),
    ) {
        let Phase::Open(link) = &mut self.phase else {
            return;
        };
        f(link, out);
        self.dirty = link.needs_flush();
        self.drop_if_gone(ctx);
    }

    /// Buffers a message ([`Link::send`]).
    pub fn send(
        &mut self,
        ctx: &Ctx<'_>,
        id: SendId,
        message: Message,
        out: &mut Vec<TransportEvent>,
    ) {
        self.with_link(ctx, out, |link, out| link.send(id, message, out));
    }

    pub fn ping(&mut self, ctx: &Ctx<'_>, payload: bytes::Bytes, out: &mut Vec<TransportEvent>) {
        self.with_link(ctx, out, |link, out| link.ping(payload, out));
    }

    /// Queues a close frame (after everything written before it).
    pub fn close(&mut self, ctx: &Ctx<'_>, frame: &CloseRequest, out: &mut Vec<TransportEvent>) {
        self.with_link(ctx, out, |link, out| link.close(frame, out));
    }
}
