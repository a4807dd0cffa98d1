//! One connection task: dial (TCP, a proxy's `CONNECT` tunnel when one is in use, optional
//! TLS, the opening handshake), then move bytes both ways until the transport ends,
//! reporting everything to the core.

use crate::SocketInfo;
use crate::driver::{Machine, Shared};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use wxsocket_core::{
    CloseRequest, ConnId, Handshake, HandshakeRequest, Message, ReadCredit, SendId, TransportError,
    TransportEvent,
};
use wxsocket_wire::DialTimer;
use wxsocket_wire::dial::DialPlan;
use wxsocket_wire::link::{Link, ReadEnd};
use wxsocket_wire::upgrade::Upgrade;

/// Work for a connection task, from the core's actions.
#[derive(Debug)]
pub(crate) enum Command {
    Send(SendId, Message),
    Ping(Bytes),
    Close(CloseRequest),
    /// Frames were started in place ([`Io::start_in_place`]) and the socket did not take
    /// them all: the task finishes the flush (and reports the sends written).
    Wake,
}

/// An open connection's state, shared by its task and the driver: an application thread
/// that sends while the connection is idle writes the frame itself ([`Io::start_in_place`],
/// [`Io::flush_in_place`]), sparing the hand-over to the task and back.
pub(crate) type SharedIo = Arc<Mutex<Io>>;

/// Most messages read before the batch is reported (keeps batches and lock holds short).
const READ_BATCH: usize = 256;

/// The task of connection `conn`. Dropping it (abort) drops the transport at once.
pub(crate) async fn run<M: Machine>(
    shared: Arc<Shared<M>>,
    conn: ConnId,
    request: Arc<HandshakeRequest>,
    commands: mpsc::UnboundedReceiver<Command>,
    resume: Arc<AtomicWaker>,
) {
    // Boxed: the dial's future (TLS, proxy, handshake) is large, and a task's future is
    // allocated once at its largest; boxed, it is freed when the connection is open.
    let (link, handshake, socket) = match Box::pin(dial(&shared, conn, &request)).await {
        Ok(done) => done,
        Err(error) => {
            wxsocket_wire::trace::dial_failed(conn, &error);
            shared.report(conn, [TransportEvent::ConnectFailed(error)], true);
            return;
        }
    };
    wxsocket_wire::trace::opened(conn, &socket);
    let io: SharedIo = Arc::new(Mutex::new(Io {
        conn,
        link,
        commands,
        started_in_place: false,
        unanswered: 0,
        batch: Vec::new(),
        credit: ReadCredit::PAUSED,
        resume,
    }));
    // Reporting the handshake makes the core flush its queue: the queued messages are
    // written in place and flushed together, in one write.
    shared.opened(conn, socket, handshake, Arc::clone(&io));
    std::future::poll_fn(|cx| {
        io.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .poll(cx, &shared, conn)
    })
    .await;
    wxsocket_wire::trace::transport_gone(conn);
}

async fn dial<M: Machine>(
    shared: &Shared<M>,
    conn: ConnId,
    request: &Arc<HandshakeRequest>,
) -> Result<(Link<Socket>, Handshake, SocketInfo), TransportError> {
    let mut timer = DialTimer::start();
    let plan = DialPlan::new(request, &shared.proxy_env)?;
    let tcp = connect_tcp(&plan, &mut timer).await?;
    let socket_failed = |e: io::Error| DialPlan::socket_failed(&e);
    if request.tcp_no_delay {
        tcp.set_nodelay(true).map_err(socket_failed)?;
    }
    let socket = SocketInfo::new(
        tcp.local_addr().map_err(socket_failed)?,
        tcp.peer_addr().map_err(socket_failed)?,
        tcp.nodelay().map_err(socket_failed)?,
        request.is_tls(),
    );
    let socket = if plan.is_proxied() {
        socket.through_proxy()
    } else {
        socket
    };
    // The tunnel, TLS and the upgrade, as the blocking adapter does them (see
    // `wxsocket_wire::upgrade`), each time the socket is ready.
    let mut upgrade = Upgrade::new(Socket::new(tcp), &plan, request, &shared.tls);
    let (stream, done) = std::future::poll_fn(|cx| {
        if let Some(socket) = upgrade.socket_mut() {
            socket.set_waker(cx.waker());
        }
        upgrade.drive(&mut timer)
    })
    .await?;
    let (link, handshake) = Link::open(conn, stream, done, request, shared.ws_config);
    Ok((link, handshake, socket))
}

/// Resolves the plan's TCP target (unless it is an IP address) and connects to its
/// addresses in order, as `TcpStream::connect` would, but marking the end of resolution and
/// of the connect on `timer` apart.
async fn connect_tcp(plan: &DialPlan, timer: &mut DialTimer) -> Result<TcpStream, TransportError> {
    let (host, port) = plan.tcp_target();
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| plan.resolve_failed(&e))?
            .collect(),
    };
    timer.resolved();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(tcp) => {
                timer.connected();
                return Ok(tcp);
            }
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        Some((addr, e)) => plan.connect_failed(addr, &e),
        None => plan.no_address(),
    })
}

/// The open connection's state between polls.
pub(crate) struct Io {
    /// The connection's id, for the log.
    conn: ConnId,
    /// The WebSocket: frames written and flushed, messages read (written once for both
    /// adapters, see [`Link`]).
    link: Link<Socket>,
    commands: mpsc::UnboundedReceiver<Command>,
    /// The unflushed frames were started in place in this core turn (the task is not
    /// waiting on a flush of its own, whose waker an in-place flush would replace).
    started_in_place: bool,
    /// Messages sent that the peer has not yet matched with a message of its own
    /// (saturating at zero). At zero the application takes turns with the peer (request,
    /// answer; or the peer talks more than it does) and its next send is written in place,
    /// for the lowest latency. With messages outstanding (a burst, or a window of sends in
    /// flight) sends go through the task, which batches them into few writes while the
    /// application goes on.
    unanswered: u32,
    /// Input for the core, reported once per round under one lock.
    batch: Vec<TransportEvent>,
    /// How many more messages (and bytes) the core takes before reading pauses (flow
    /// control); refreshed at every report.
    credit: ReadCredit,
    /// Woken by the driver when reading may resume after a pause.
    resume: Arc<AtomicWaker>,
}

enum Flow {
    Go,
    /// The transport is gone: `batch` holds the final input (if any) for the core.
    Finished,
    /// The core no longer wants this connection (its command channel closed).
    Dropped,
}

impl Io {
    /// One connection's whole life after the handshake, as a hand-written future so
    /// reading and writing are driven together (a blocked write never stops reads, so a
    /// peer that only writes back when read from cannot deadlock us) and every command
    /// already waiting is written with one flush.
    fn poll<M: Machine>(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Arc<Shared<M>>,
        conn: ConnId,
    ) -> Poll<()> {
        self.link
            .wire_mut()
            .stream
            .socket_mut()
            .set_waker(cx.waker());
        loop {
            let mut progress = false;
            let flow = self.poll_write(cx, &mut progress);
            let flow = match flow {
                Flow::Go if self.link.is_readable() && self.may_read(cx, shared, conn) => {
                    self.poll_read(&mut progress)
                }
                other => other,
            };
            match flow {
                Flow::Go => {
                    if !self.batch.is_empty() {
                        self.credit = shared.report(conn, self.batch.drain(..), false);
                        progress = true;
                    }
                    if !progress {
                        return Poll::Pending;
                    }
                }
                Flow::Finished => {
                    shared.report(conn, self.batch.drain(..), true);
                    return Poll::Ready(());
                }
                Flow::Dropped => return Poll::Ready(()),
            }
        }
    }

    /// Starts writing a message from the application's thread, if the connection is idle:
    /// nothing waits in the task's command channel (order), no flush of the task's is
    /// pending, the peer has answered every message sent (see `unanswered`), the socket
    /// takes more. Returns the message when it is not started; then it goes through the
    /// task as usual. Call [`Self::flush_in_place`] once every message of the turn is
    /// started.
    pub(crate) fn start_in_place(&mut self, id: SendId, message: Message) -> Option<Message> {
        let idle = self.commands.is_empty()
            && (self.unanswered == 0 || self.started_in_place)
            && (!self.link.needs_flush() || self.started_in_place)
            && self.link.is_readable()
            && !self.link.close_sent()
            && !self.link.wants_write()
            && self.batch.is_empty();
        if !idle {
            return Some(message);
        }
        self.link.send(id, message, &mut self.batch);
        self.started_in_place = true;
        self.unanswered = self.unanswered.saturating_add(1);
        None
    }

    /// Flushes what [`Self::start_in_place`] started. Returns the sends now written, or
    /// `None` when the task must finish (socket full, or a failure it reports): send it
    /// [`Command::Wake`].
    pub(crate) fn flush_in_place(&mut self) -> Option<Vec<SendId>> {
        if !self.started_in_place {
            return Some(Vec::new());
        }
        self.started_in_place = false;
        self.link.flush(&mut self.batch);
        let only_written = self
            .batch
            .iter()
            .all(|e| matches!(e, TransportEvent::SendWritten(_)));
        if self.link.needs_flush() || !only_written {
            // The task reports everything in order (the sends written before a failure
            // first) and finishes the flush.
            return None;
        }
        Some(
            self.batch
                .drain(..)
                .filter_map(|e| match e {
                    TransportEvent::SendWritten(id) => Some(id),
                    _ => None,
                })
                .collect(),
        )
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, progress: &mut bool) -> Flow {
        // Feed every command already waiting, while the socket takes them.
        while !self.link.is_gone() && !self.link.wants_write() {
            let command = match self.commands.poll_recv(cx) {
                Poll::Ready(Some(command)) => command,
                Poll::Ready(None) => return Flow::Dropped,
                Poll::Pending => {
                    if !self.link.is_readable()
                        && !self.link.close_sent()
                        && !self.link.has_unflushed_sends()
                    {
                        // A read error the core did not answer with a close frame: done.
                        self.link.end(&mut self.batch);
                    }
                    break;
                }
            };
            *progress = true;
            match command {
                Command::Send(id, message) => {
                    self.unanswered = self.unanswered.saturating_add(1);
                    self.link.send(id, message, &mut self.batch);
                }
                Command::Ping(payload) => self.link.ping(payload, &mut self.batch),
                Command::Close(frame) => self.link.close(&frame, &mut self.batch),
                // The flush below finishes what was started in place.
                Command::Wake => {}
            }
        }
        // Then one flush for all of them (a full socket wakes this task when it drains),
        // which also writes what TLS queued while reading.
        let tls_pending = self.link.wire().stream.wants_write();
        if (self.link.needs_flush() || tls_pending) && !self.link.is_gone() {
            self.started_in_place = false;
            self.link.flush(&mut self.batch);
        }
        if self.link.is_gone() {
            Flow::Finished
        } else {
            Flow::Go
        }
    }

    /// Whether the core takes more messages now. When its credit is used up, the task
    /// asks again (the application may have taken events since), and otherwise waits for
    /// the driver's resume: the socket is not read, so TCP pushes back on the peer.
    fn may_read<M: Machine>(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Arc<Shared<M>>,
        conn: ConnId,
    ) -> bool {
        if !self.credit.is_paused() {
            return true;
        }
        // Registered before asking, so a resume in between is not missed.
        self.resume.register(cx.waker());
        self.credit = shared.read_credit(conn);
        if self.credit.is_paused() {
            return false;
        }
        true
    }

    fn poll_read(&mut self, progress: &mut bool) -> Flow {
        let before = self.batch.len();
        let end = self
            .link
            .read(&mut self.credit, READ_BATCH, &mut self.batch);
        let read = &self.batch[before..];
        if !read.is_empty() {
            *progress = true;
        }
        let messages = read
            .iter()
            .filter(|e| matches!(e, TransportEvent::Message(_)))
            .count();
        self.unanswered = self
            .unanswered
            .saturating_sub(u32::try_from(messages).unwrap_or(u32::MAX));
        match end {
            ReadEnd::Paused => wxsocket_wire::trace::reading_paused(self.conn),
            // More may wait: the loop comes back, as this made progress.
            ReadEnd::Limit => *progress = true,
            _ => {}
        }
        if self.link.is_gone() {
            Flow::Finished
        } else {
            Flow::Go
        }
    }
}

/// The connection's socket as a non-blocking `Read + Write`: each call polls the tokio socket
/// once with the waker of the connection's task, so that "not ready" is `WouldBlock` and wakes
/// the task when the socket is ready again.
pub(crate) struct Socket {
    tcp: TcpStream,
    /// The connection task's waker (set at every poll of the task).
    waker: Waker,
}

impl Socket {
    fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            waker: Waker::noop().clone(),
        }
    }

    /// The waker of the task that polls this socket.
    fn set_waker(&mut self, waker: &Waker) {
        self.waker.clone_from(waker);
    }

    /// One poll of the socket with the task's waker, `Pending` as `WouldBlock`.
    fn poll<R>(
        &mut self,
        f: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> io::Result<R> {
        let mut cx = Context::from_waker(&self.waker);
        match f(Pin::new(&mut self.tcp), &mut cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.poll(|s, cx| {
            let mut b = ReadBuf::new(buf);
            s.poll_read(cx, &mut b).map_ok(|()| b.filled().len())
        })
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.poll(|s, cx| s.poll_write(cx, buf))
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.poll(|s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.poll(|s, cx| s.poll_flush(cx))
    }
}
