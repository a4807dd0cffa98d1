//! One connection on the driver thread: the non-blocking TCP connect (mio), the socket's
//! registration with the pollers, and the shared [`Connection`] (upgrade, WebSocket, reads
//! within credit) for the rest. Every operation runs until the socket would block and
//! reports what happened as [`TransportEvent`]s; it never waits.

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};
use std::io;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Instant;
use wxsocket_core::{ConnId, ReadCredit, TransportError, TransportErrorKind, TransportEvent};
use wxsocket_wire::connection::Connection;
use wxsocket_wire::dial::Attempts;
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

/// The non-blocking TCP connects in progress, paced by [`Attempts`]: each socket is in the
/// driver's poller (only), under the connection's token.
struct Connecting {
    socks: Vec<(TcpStream, SocketAddr)>,
    attempts: Attempts,
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
    /// Boxed: an open connection keeps only the pointer's room.
    connecting: Option<Box<Connecting>>,
    /// The socket is registered with the receivers' poller (see [`Conn::sync_interest`]).
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
    pub fn new(mut connection: Connection<TcpStream>) -> Self {
        // The driver works under the client's lock: a large write goes out a pass at a
        // time, the other connections and the application's calls in between.
        connection.pace_writes();
        Self {
            connection,
            connecting: None,
            in_receivers: false,
            driver_reads: true,
            interest: None,
        }
    }

    /// The TCP socket, once connected.
    fn tcp(&mut self) -> Option<&mut TcpStream> {
        self.connection.socket_mut()
    }

    /// When the next connection attempt is due, while the TCP connect goes on.
    pub fn next_attempt(&self) -> Option<Instant> {
        self.connecting.as_ref()?.attempts.deadline()
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
        // A flush stopped at its pass limit is flushed again without waiting
        // (`Connection::has_more_to_write`): the socket may well be writable.
        let writes = link.wants_write() && !link.write_spent();
        let want = match (self.driver_reads && reads, writes) {
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
        self.deregister(ctx);
        self.connection.drop_transport();
    }

    /// Drops the transport after a panic in its work, writing nothing more to it
    /// ([`Connection::abandon_transport`]).
    pub fn abandon_transport(&mut self, ctx: &Ctx<'_>) {
        self.deregister(ctx);
        self.connection.abandon_transport();
    }

    /// Takes the socket (and any connect attempts' sockets) off the pollers.
    fn deregister(&mut self, ctx: &Ctx<'_>) {
        let in_driver = self.interest.take().is_some();
        let in_receivers = std::mem::take(&mut self.in_receivers);
        if let Some(sock) = self.tcp() {
            ctx.deregister(sock, in_driver, in_receivers);
        }
        for (mut sock, _) in self.connecting.take().into_iter().flat_map(|c| c.socks) {
            let _ = ctx.registry.deregister(&mut sock);
        }
    }

    /// Starts the TCP connect with the resolved addresses.
    pub fn connect(
        &mut self,
        ctx: &Ctx<'_>,
        addrs: io::Result<Vec<SocketAddr>>,
        out: &mut Vec<TransportEvent>,
    ) {
        if let Some(addrs) = self.connection.resolved(addrs, out) {
            let now = Instant::now();
            let attempts = Attempts::new(addrs, now);
            self.connecting = Some(Box::new(Connecting {
                socks: Vec::new(),
                attempts,
            }));
            self.start_attempts(ctx, now, out);
        }
    }

    /// Starts the connection attempts that are due (see [`Attempts`]); fails the dial once
    /// every attempt failed.
    pub fn start_attempts(&mut self, ctx: &Ctx<'_>, now: Instant, out: &mut Vec<TransportEvent>) {
        let token = token(self.id());
        let Some(connecting) = &mut self.connecting else {
            return;
        };
        while let Some(addr) = connecting.attempts.next_due(now) {
            let attempt = TcpStream::connect(addr).and_then(|mut sock| {
                ctx.registry
                    .register(&mut sock, token, Interest::READABLE | Interest::WRITABLE)?;
                Ok(sock)
            });
            match attempt {
                Ok(sock) => connecting.socks.push((sock, addr)),
                Err(e) => connecting.attempts.failed(addr, e, now),
            }
        }
        if let Some(failure) = connecting.attempts.exhausted() {
            self.connecting = None;
            self.connection.connect_failed(failure, out);
        }
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

    /// One of the connect attempts' sockets is ready (the event does not say which): the
    /// first connected wins and the others are dropped; the failed ones make room for the
    /// next address.
    fn finish_connect(&mut self, ctx: &Ctx<'_>, out: &mut Vec<TransportEvent>) {
        let Some(connecting) = &mut self.connecting else {
            return;
        };
        let now = Instant::now();
        let mut at = 0;
        while at < connecting.socks.len() {
            let sock = &connecting.socks[at].0;
            let failure = match sock.take_error() {
                Ok(Some(e)) | Err(e) => e,
                Ok(None) => match sock.peer_addr() {
                    Ok(_) => {
                        let (sock, _) = connecting.socks.swap_remove(at);
                        for (mut other, _) in
                            self.connecting.take().into_iter().flat_map(|c| c.socks)
                        {
                            let _ = ctx.registry.deregister(&mut other);
                        }
                        // Registered with the driver's poller, for reads and writes, as an
                        // open connection's socket starts (see `sync_interest`).
                        self.interest = Some(Interest::READABLE | Interest::WRITABLE);
                        return self.connection.connected(sock, ctx.tls, out);
                    }
                    // Not connected yet (or a wake-up for another socket).
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                        at += 1;
                        continue;
                    }
                    Err(e) => e,
                },
            };
            let (mut sock, addr) = connecting.socks.swap_remove(at);
            let _ = ctx.registry.deregister(&mut sock);
            connecting.attempts.failed(addr, failure, now);
        }
        self.start_attempts(ctx, now, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wxsocket_core::DialStage;

    /// An open connection keeps nothing of its dial but a pointer's room (the dial's state
    /// inline made every connection 208 bytes).
    #[test]
    fn a_connection_keeps_little_of_its_dial() {
        let size = std::mem::size_of::<Conn>();
        assert!(size <= 96, "a connection is {size} bytes");
    }

    /// An address that drops the connect (a broken route) does not hold the dial up: the
    /// next address is tried beside it after `ATTEMPT_DELAY` (the driver's timer calls
    /// `start_attempts`) and connects. The dial used to wait on the first until the
    /// handshake timeout.
    #[test]
    fn an_address_that_drops_the_connect_does_not_hold_up_the_next() {
        let host = wxsocket_test_server::DeadThenLive::start().unwrap();
        let request = Arc::new(
            wxsocket_core::ConnectOptions::new(host.url())
                .validate()
                .unwrap(),
        );
        let env = wxsocket_wire::proxy::ProxyEnv::empty();
        let (connection, _) =
            Connection::new(ConnId::from_raw(1), request, &env, Default::default()).unwrap();
        let mut poll = mio::Poll::new().unwrap();
        let registry = poll.registry().try_clone().unwrap();
        let tls = wxsocket_wire::upgrade::client_config(&Default::default()).unwrap();
        let ctx = Ctx {
            registry: &registry,
            receivers: None,
            tls: &tls,
        };
        let mut conn = Conn::new(connection);
        let mut out = Vec::new();
        conn.connect(&ctx, Ok(host.addrs()), &mut out);
        let limit = Instant::now() + Duration::from_secs(10);
        let mut events = mio::Events::with_capacity(8);
        while conn.connecting.is_some() {
            assert!(Instant::now() < limit, "not connected within the limit");
            let timeout = conn
                .next_attempt()
                .map(|at| at.saturating_duration_since(Instant::now()));
            poll.poll(&mut events, timeout.or(Some(Duration::from_millis(100))))
                .unwrap();
            if events.is_empty() {
                conn.start_attempts(&ctx, Instant::now(), &mut out);
            } else {
                conn.on_ready(&ctx, ReadPass::ToTheEnd, ReadCredit::UNLIMITED, &mut out);
            }
        }
        // No failure: only the stages the dial went through.
        let stages = [DialStage::Connecting, DialStage::Upgrade].map(TransportEvent::Dialing);
        assert_eq!(out, stages);
        let peer = conn.connection.socket().map(|s| s.peer_addr().unwrap());
        assert_eq!(peer, Some(host.addrs()[1]));
        conn.drop_transport(&ctx);
    }
}
