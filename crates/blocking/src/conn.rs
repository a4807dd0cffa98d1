//! One connection on the driver thread: the non-blocking TCP connect (mio), the socket's
//! registration with the pollers, and the shared [`Connection`] (upgrade, WebSocket, reads
//! within credit) for the rest. Every operation runs until the socket would block and
//! reports what happened as [`TransportEvent`]s; it never waits.

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use wxsocket_core::{ConnId, ReadCredit, TransportError, TransportErrorKind, TransportEvent};
use wxsocket_wire::connection::Connection;
use wxsocket_wire::upgrade::ClientConfig;

/// What every connection operation needs from the driver.
pub(crate) struct Ctx<'a> {
    /// The driver thread's poller: every socket, readable and writable.
    pub registry: &'a Registry,
    /// The receivers' poller: every socket, readable only (see `driver`).
    pub receivers: Option<&'a Registry>,
    pub tls: &'a Arc<ClientConfig>,
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

/// A non-blocking TCP connect in progress.
struct Connecting {
    sock: TcpStream,
    addr: SocketAddr,
    /// The addresses still to try.
    rest: VecDeque<SocketAddr>,
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

/// One connection: the shared [`Connection`] (which it derefs to), its connect in
/// progress, and what the pollers watch its socket for.
pub(crate) struct Conn {
    connection: Connection<TcpStream>,
    /// The TCP connect in progress (none while resolving, and once connected).
    connecting: Option<Connecting>,
    /// The socket is registered with the receivers' poller (see [`Ctx::register`]).
    in_receivers: bool,
    /// The driver thread's poller should watch the socket for reads. Off once input came
    /// while the reads were handed to a thread in `recv` (see [`Conn::set_driver_reads`]).
    driver_reads: bool,
    /// What the driver thread's poller watches the socket for (`None`: not registered
    /// there); see [`Conn::sync_interest`].
    interest: Option<Interest>,
}

impl Deref for Conn {
    type Target = Connection<TcpStream>;
    fn deref(&self) -> &Connection<TcpStream> {
        &self.connection
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Connection<TcpStream> {
        &mut self.connection
    }
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
    pub fn new(connection: Connection<TcpStream>) -> Self {
        Self {
            connection,
            connecting: None,
            in_receivers: false,
            driver_reads: true,
            interest: None,
        }
    }

    /// The TCP socket, once there is one.
    fn tcp(&mut self) -> Option<&mut TcpStream> {
        match &mut self.connecting {
            Some(connecting) => Some(&mut connecting.sock),
            None => self.connection.socket_mut(),
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
    /// Connecting and handshaking sockets keep both interests, as registered; a socket
    /// the connection dropped (a failed dial, the transport's end) left both pollers as it
    /// was closed.
    pub fn sync_interest(&mut self, ctx: &Ctx<'_>) -> io::Result<()> {
        if self.connection.is_gone() {
            self.interest = None;
            self.in_receivers = false;
            return Ok(());
        }
        let Some(link) = self.connection.link() else {
            return Ok(());
        };
        let reads = !self.connection.is_read_paused();
        let want = match (self.driver_reads && reads, link.wants_write()) {
            (true, true) => Some(Interest::READABLE | Interest::WRITABLE),
            (true, false) => Some(Interest::READABLE),
            (false, true) => Some(Interest::WRITABLE),
            (false, false) => None,
        };
        let want_receivers = reads && ctx.receivers.is_some();
        if want == self.interest && want_receivers == self.in_receivers {
            return Ok(());
        }
        let (current, token, in_receivers) = (self.interest, token(self.id()), self.in_receivers);
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
        let in_driver = self.interest.take().is_some();
        let in_receivers = std::mem::take(&mut self.in_receivers);
        if let Some(sock) = self.tcp() {
            ctx.deregister(sock, in_driver, in_receivers);
        }
        self.connecting = None;
        self.connection.drop_transport();
    }

    /// Starts the TCP connect with the resolved addresses.
    pub fn connect(
        &mut self,
        ctx: &Ctx<'_>,
        addrs: io::Result<Vec<SocketAddr>>,
        out: &mut Vec<TransportEvent>,
    ) {
        if let Some(addrs) = self.connection.resolved(addrs, out) {
            self.try_addresses(ctx, addrs.into(), None, out);
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
                ctx.register(&mut sock, token(self.id()))?;
                Ok(sock)
            });
            match attempt {
                Ok(sock) => {
                    self.interest = Some(Interest::READABLE | Interest::WRITABLE);
                    self.in_receivers = ctx.receivers.is_some();
                    self.connecting = Some(Connecting { sock, addr, rest });
                    return;
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        self.connection.connect_failed(last, out);
    }

    /// The socket is ready (or failed): move the connection on as far as it goes, reading
    /// an open connection within `credit` (the machine's [`ReadCredit`] for it).
    pub fn on_ready(
        &mut self,
        ctx: &Ctx<'_>,
        pass: ReadPass,
        mut credit: ReadCredit,
        out: &mut Vec<TransportEvent>,
    ) {
        if self.connecting.is_some() {
            self.finish_connect(ctx, out);
        } else if self.connection.is_open() {
            if !self.connection.is_read_paused() {
                self.connection
                    .read(&mut credit, pass == ReadPass::UntilShortRead, out);
            }
            self.connection.flush(out);
        } else {
            self.connection.drive(out);
        }
    }

    fn finish_connect(&mut self, ctx: &Ctx<'_>, out: &mut Vec<TransportEvent>) {
        let Some(Connecting { sock, addr, .. }) = &mut self.connecting else {
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
        let Some(Connecting { mut sock, rest, .. }) = self.connecting.take() else {
            return;
        };
        match failure {
            Some(e) => {
                ctx.deregister(&mut sock, true, std::mem::take(&mut self.in_receivers));
                self.interest = None;
                drop(sock);
                self.try_addresses(ctx, rest, Some((addr, e)), out);
            }
            None => self.connection.connected(sock, ctx.tls, out),
        }
    }
}
