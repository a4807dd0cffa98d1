//! One connection task: dial (TCP, a proxy's `CONNECT` tunnel when one is in use, optional
//! TLS, the opening handshake), then move bytes both ways until the transport ends,
//! reporting everything to the core.

use crate::driver::{Machine, Reading, Shared};
use bytes::Bytes;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use wxsocket_core::{CloseRequest, ConnId, Message, ReadCredit, SendId, TransportEvent};
use wxsocket_wire::connection::{Connection, DialTarget, TcpSocket};
use wxsocket_wire::dial::{Attempts, Lookups};
use wxsocket_wire::link::{Link, ReadEnd};

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

/// A new connection and where its TCP connection goes ([`Connection::new`]), boxed so that
/// the task's future does not keep them once the connection is open.
pub(crate) type Dialing = Box<(Connection<Socket>, DialTarget)>;

/// The task of connection `dialing`. Dropping it (abort) drops the transport at once.
pub(crate) async fn run<M: Machine>(
    shared: Arc<Shared<M>>,
    dialing: Dialing,
    commands: mpsc::UnboundedReceiver<Command>,
    reading: Arc<Reading>,
) {
    let conn = dialing.0.id();
    let report = Arc::clone(&shared);
    let task = std::panic::AssertUnwindSafe(drive(shared, dialing, commands, reading));
    // A panic (a runtime without its IO driver panics at the first socket) ends the
    // connection as a failure that names it, instead of leaving it to its timeout.
    if let Err(panic) = futures_util::FutureExt::catch_unwind(task).await {
        report_panic(&report, conn, &*panic);
    }
}

/// Ends connection `conn` as failed, naming the panic that ended its work.
fn report_panic<M: Machine>(
    shared: &Arc<Shared<M>>,
    conn: ConnId,
    panic: &(dyn std::any::Any + Send),
) {
    shared.report(
        conn,
        wxsocket_wire::connection::panicked("task", panic),
        true,
    );
}

/// Reads for connection `conn`'s task, from the task taking events ([`Io::poll_for_task`]);
/// waits while the task holds the state. A panic ends the connection as one in its task
/// would, instead of unwinding into the application's wait for events.
pub(crate) fn read_for_task<M: Machine>(shared: &Arc<Shared<M>>, conn: ConnId, io: &SharedIo) {
    let lock = || io.lock().unwrap_or_else(PoisonError::into_inner);
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        lock().poll_for_task(shared, conn)
    }));
    if let Err(panic) = polled {
        let mut io = lock();
        io.ended = true;
        if let Some(socket) = io.connection.socket_mut() {
            socket.waker.wake_by_ref();
        }
        drop(io);
        report_panic(shared, conn, &*panic);
    }
}

/// The connection task's work: the dial, then the open connection until it ends.
async fn drive<M: Machine>(
    shared: Arc<Shared<M>>,
    dialing: Dialing,
    commands: mpsc::UnboundedReceiver<Command>,
    reading: Arc<Reading>,
) {
    let conn = dialing.0.id();
    // Boxed: the dial's future (the connection, TLS, proxy, handshake) is large, and a
    // task's future is allocated once at its largest; boxed, it is freed when the
    // connection is open.
    let Some(io) = Box::pin(open(&shared, dialing, commands, reading)).await else {
        return;
    };
    std::future::poll_fn(|cx| {
        io.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .poll(cx, &shared, conn, false)
    })
    .await;
    let mut io = io.lock().unwrap_or_else(PoisonError::into_inner);
    io.connection.drop_transport();
}

/// Dials `connection` and, once it is open, reports the handshake with the connection's
/// state for writes in place; a failed dial is reported, and gives `None`.
async fn open<M: Machine>(
    shared: &Arc<Shared<M>>,
    dialing: Dialing,
    commands: mpsc::UnboundedReceiver<Command>,
    reading: Arc<Reading>,
) -> Option<SharedIo> {
    let (connection, target) = *dialing;
    let conn = connection.id();
    let mut out = Vec::new();
    let connection = dial(shared, connection, target, &mut out).await;
    if !connection.is_open() {
        shared.report(conn, out, true);
        return None;
    }
    let socket = connection.socket_info();
    let io: SharedIo = Arc::new(Mutex::new(Io {
        connection,
        commands,
        started_in_place: false,
        unanswered: 0,
        batch: Vec::new(),
        credit: ReadCredit::PAUSED,
        reading,
        ended: false,
        #[cfg(test)]
        readers: Vec::new(),
        #[cfg(test)]
        panic_in_place: false,
        #[cfg(test)]
        panic_in_flush: false,
    }));
    // Reporting the handshake makes the core flush its queue: the queued messages are
    // written in place and flushed together, in one write.
    shared.opened(conn, socket, out, Arc::clone(&io));
    Some(io)
}

/// The dial: resolve and connect here, then the tunnel, TLS and the upgrade, as the
/// blocking adapter does them (see [`Connection`]), each time the socket is ready. Returns
/// the connection open, or gone with the failure in `out`.
async fn dial<M: Machine>(
    shared: &Arc<Shared<M>>,
    mut connection: Connection<Socket>,
    target: DialTarget,
    out: &mut Vec<TransportEvent>,
) -> Connection<Socket> {
    let Some(tcp) = connect_tcp(shared, &mut connection, target, out).await else {
        return connection;
    };
    connection.connected(Socket::new(tcp), &shared.tls, out);
    std::future::poll_fn(|cx| {
        if let Some(socket) = connection.socket_mut() {
            socket.set_waker(cx.waker());
        }
        connection.drive(out);
        if connection.is_open() || connection.is_gone() {
            Poll::Ready(())
        } else {
            report_stage(shared, &connection, out);
            Poll::Pending
        }
    })
    .await;
    connection
}

/// Reports the stages the dial entered ([`TransportEvent::Dialing`]) while it goes on; the
/// rest of `out` (its outcome) is reported when the dial ends.
fn report_stage<M: Machine>(
    shared: &Arc<Shared<M>>,
    connection: &Connection<Socket>,
    out: &mut Vec<TransportEvent>,
) {
    if !out.is_empty() && out.iter().all(|e| matches!(e, TransportEvent::Dialing(_))) {
        shared.report(connection.id(), out.drain(..), false);
    }
}

/// Resolves the connection's TCP `target` (unless it is an IP address) and connects to
/// one of its addresses, the attempts paced by [`Attempts`] (an address that drops the
/// attempt does not hold the dial up), marking the end of resolution and of the connect
/// apart (for the open event's profile).
async fn connect_tcp<M: Machine>(
    shared: &Arc<Shared<M>>,
    connection: &mut Connection<Socket>,
    target: DialTarget,
    out: &mut Vec<TransportEvent>,
) -> Option<TcpStream> {
    let resolved = match target.address() {
        Some(addr) => Ok(vec![addr]),
        None => {
            connection.resolving(out);
            report_stage(shared, connection, out);
            lookup(&shared.lookups, target, wxsocket_wire::dial::resolve).await
        }
    };
    let addrs = connection.resolved(resolved, out)?;
    report_stage(shared, connection, out);
    connect_any(connection, addrs, out).await
}

/// A dial waiting for a name lookup: gets its answer.
pub(crate) type LookupWaiter = tokio::sync::oneshot::Sender<io::Result<Vec<SocketAddr>>>;

/// The name lookups a driver has in flight ([`Lookups`]): one per host and port, on the
/// runtime's blocking pool, however often a dial is retried while the resolver is slow (a
/// lookup per dial, as `tokio::net::lookup_host` does, filled the pool with lookups of
/// dials long given up, and every other user of the pool waited behind them).
pub(crate) type SharedLookups = Arc<Mutex<Lookups<LookupWaiter>>>;

/// Resolves `target` with `resolver` on the blocking pool, sharing a lookup of the same
/// host and port already in flight.
async fn lookup(
    lookups: &SharedLookups,
    target: DialTarget,
    resolver: wxsocket_wire::dial::Resolver,
) -> io::Result<Vec<SocketAddr>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let start = {
        let mut in_flight = lookups.lock().unwrap_or_else(PoisonError::into_inner);
        // Dials that were aborted wait no more.
        in_flight.retain(|waiter| !waiter.is_closed());
        in_flight.join(&target, tx)
    };
    if start {
        let answer = Answer {
            lookups: Arc::clone(lookups),
            target,
            addrs: None,
        };
        tokio::task::spawn_blocking(move || {
            let mut answer = answer;
            answer.addrs = Some(resolver(&answer.target));
        });
    }
    rx.await
        .unwrap_or_else(|_| Err(io::Error::other("the name lookup ended without an answer")))
}

/// Hands a lookup's answer to its waiters when dropped: after the lookup, or unanswered if
/// its task never ran (its runtime shutting down), so that no later dial waits for it.
struct Answer {
    lookups: SharedLookups,
    target: DialTarget,
    addrs: Option<io::Result<Vec<SocketAddr>>>,
}

impl Drop for Answer {
    fn drop(&mut self) {
        let waiters = self
            .lookups
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .finish(&self.target);
        let addrs = self
            .addrs
            .take()
            .unwrap_or_else(|| Err(io::Error::other("the name lookup did not run")));
        for waiter in waiters {
            let _ = waiter.send(wxsocket_wire::dial::share(&addrs));
        }
    }
}

/// Connects to one of `addrs`, the attempts paced by [`Attempts`]; `None` when every one
/// failed (reported in `out`).
async fn connect_any(
    connection: &mut Connection<Socket>,
    addrs: Vec<SocketAddr>,
    out: &mut Vec<TransportEvent>,
) -> Option<TcpStream> {
    use futures_util::StreamExt;
    let now = || tokio::time::Instant::now().into_std();
    let mut attempts = Attempts::new(addrs, now());
    // The attempts in progress; those still here when one connects are dropped.
    let mut connecting = futures_util::stream::FuturesUnordered::new();
    loop {
        while let Some(addr) = attempts.next_due(now()) {
            connecting.push(async move { (addr, TcpStream::connect(addr).await) });
        }
        if let Some(failure) = attempts.exhausted() {
            connection.connect_failed(failure, out);
            return None;
        }
        let next = attempts.deadline().map(tokio::time::Instant::from_std);
        tokio::select! {
            Some((addr, result)) = connecting.next() => match result {
                Ok(tcp) => return Some(tcp),
                Err(e) => attempts.failed(addr, e, now()),
            },
            () = tokio::time::sleep_until(next.unwrap_or_else(tokio::time::Instant::now)), if next.is_some() => {}
        }
    }
}

/// The open connection's state between polls.
pub(crate) struct Io {
    /// The WebSocket: frames written and flushed, messages read (written once for both
    /// adapters, see [`Connection`]).
    connection: Connection<Socket>,
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
    /// Woken by the driver when reading may resume or the reads come back to the task;
    /// whether input waits to be read.
    reading: Arc<Reading>,
    /// The connection ended in a poll the task taking events made ([`Self::poll_for_task`]):
    /// the task finishes.
    ended: bool,
    /// The thread of each read pass, for the tests.
    #[cfg(test)]
    readers: Vec<std::thread::ThreadId>,
    /// The next message started in place panics, for the tests (as a frame's mask drawn
    /// from a failing OS random source does).
    #[cfg(test)]
    panic_in_place: bool,
    /// The next flush of what was started in place panics once the socket took it.
    #[cfg(test)]
    panic_in_flush: bool,
}

enum Flow {
    Go,
    /// The transport is gone: `batch` holds the final input (if any) for the core.
    Finished,
    /// The core no longer wants this connection (its command channel closed).
    Dropped,
}

/// The most read passes ([`wxsocket_wire::link::READ_PASS`] bytes or
/// [`wxsocket_wire::connection::MAX_READS`] messages each) one poll of a connection's task
/// makes before it yields.
const PASSES_PER_POLL: usize = 4;

/// The read passes the task taking events makes for a connection each time it runs out of
/// events ([`Io::poll_for_task`]): one, so that what it holds at a time stays small (four,
/// a megabyte of 1 KiB messages taken and freed at a time, made the allocator give its
/// pages back and fault them in again each time, and cost a third more CPU than the
/// connection's task reading them).
const TAKER_PASSES: usize = 1;

impl Io {
    /// One connection's whole life after the handshake, as a hand-written future so
    /// reading and writing are driven together (a blocked write never stops reads, so a
    /// peer that only writes back when read from cannot deadlock us) and every command
    /// already waiting is written with one flush.
    ///
    /// `for_task`: the task taking events makes this poll, with the task's waker
    /// ([`Self::poll_for_task`]); otherwise the task, which leaves its input to the task
    /// taking events while that one reads ([`crate::driver::Reads::Taker`]).
    fn poll<M: Machine>(
        &mut self,
        cx: &mut Context<'_>,
        shared: &Arc<Shared<M>>,
        conn: ConnId,
        for_task: bool,
    ) -> Poll<()> {
        if self.ended {
            return Poll::Ready(());
        }
        if let Some(socket) = self.connection.socket_mut() {
            socket.set_waker(cx.waker());
        }
        if !for_task {
            self.reading.resume.register(cx.waker());
        }
        let mut passes = 0;
        loop {
            let mut progress = false;
            let flow = self.poll_write(cx, &mut progress);
            // Woken for input, the task reads once (it is running already: leaving that
            // to the task taking events would cost both); what a pass left is the taker's.
            let left = !for_task && passes > 0 && self.readable() && shared.taker_reads();
            let flow = match flow {
                Flow::Go if self.readable() && !left && self.may_read(cx, shared, conn) => {
                    passes += 1;
                    self.poll_read(&mut progress)
                }
                other => other,
            };
            match flow {
                Flow::Go => {
                    let unread = left || self.connection.has_more_to_read();
                    let input = !self.batch.is_empty();
                    if input || unread != self.reading.unread.load(Ordering::Relaxed) {
                        let paused = self.credit.is_paused();
                        let (credit, taker) =
                            shared.report_pass(conn, self.batch.drain(..), unread);
                        self.credit = credit;
                        // The reads came back to this task meanwhile, or reading resumed
                        // (which may have marked the connection unread before this report
                        // cleared it): it looks again.
                        progress |= input || (left && !taker) || (paused && !credit.is_paused());
                    }
                    if !progress {
                        return Poll::Pending;
                    }
                    let limit = if for_task {
                        TAKER_PASSES
                    } else {
                        PASSES_PER_POLL
                    };
                    // Once the driver's timer is overdue, the task yields to the driver
                    // too ([`Shared::wake_overdue_timer`]; the task taking events makes
                    // one pass a poll anyway).
                    if passes == limit || (!for_task && shared.wake_overdue_timer()) {
                        // A peer that keeps the reads busy (a flood of frames that complete
                        // nothing, say) must not keep this task from yielding: the runtime's
                        // timers and other tasks go first, then the task comes back. The
                        // task taking events comes back for the rest by itself, the
                        // connection marked unread (even when the pass ended at a credit
                        // the core has since renewed, which no `ResumeReading` announces).
                        if !for_task {
                            cx.waker().wake_by_ref();
                        } else if !self.reading.unread.load(Ordering::Relaxed) {
                            let taker;
                            (self.credit, taker) = shared.report_pass(conn, [], true);
                            if !taker {
                                // The reads went back to the tasks during this pass (the
                                // hand-back woke those marked then): the task reads on.
                                self.reading.resume.wake();
                            }
                        }
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

    /// A poll made by the task taking events, which reads what the connection's task left
    /// to it (or what its last pass left) instead of waiting for the task to read it. The
    /// socket and the command channel still wake the task: the poll uses its waker.
    fn poll_for_task<M: Machine>(&mut self, shared: &Arc<Shared<M>>, conn: ConnId) {
        let Some(waker) = self.connection.socket_mut().map(|s| s.waker.clone()) else {
            return;
        };
        let mut cx = Context::from_waker(&waker);
        // What it logs belongs to the connection, as in its task.
        let span = self.connection.span().clone();
        let _entered = span.enter();
        if !self.ended && self.poll(&mut cx, shared, conn, true).is_ready() {
            self.ended = true;
            waker.wake();
        }
    }

    /// Starts writing a message from the application's thread, if the connection is idle:
    /// nothing waits in the task's command channel (order), no flush of the task's is
    /// pending, the peer has answered every message sent (see `unanswered`), the socket
    /// takes more. Returns the message when it is not started; then it goes through the
    /// task as usual. Call [`Self::flush_in_place`] once every message of the turn is
    /// started.
    pub(crate) fn start_in_place(&mut self, id: SendId, message: Message) -> Option<Message> {
        let Some(link) = self.connection.link() else {
            return Some(message);
        };
        let idle = self.commands.is_empty()
            && (self.unanswered == 0 || self.started_in_place)
            && (!link.needs_flush() || self.started_in_place)
            && link.is_readable()
            && !link.close_sent()
            && !link.wants_write()
            && self.batch.is_empty();
        if !idle {
            return Some(message);
        }
        #[cfg(test)]
        assert!(!std::mem::take(&mut self.panic_in_place), "injected");
        self.connection.send(id, message, &mut self.batch);
        self.started_in_place = true;
        self.unanswered = self.unanswered.saturating_add(1);
        None
    }

    /// The connection's work done in place panicked ([`crate::driver`]'s `lose_to_panic`):
    /// the connection is over and its transport dropped, writing nothing more. Returns the
    /// sends the socket had taken by then, which were written.
    pub(crate) fn end_after_panic(&mut self) -> Vec<SendId> {
        self.ended = true;
        self.connection.abandon_transport();
        self.batch
            .drain(..)
            .filter_map(|event| match event {
                TransportEvent::SendWritten(id) => Some(id),
                _ => None,
            })
            .collect()
    }

    /// Flushes what [`Self::start_in_place`] started. Returns the sends now written, or
    /// `None` when the task must finish (socket full, or a failure it reports): send it
    /// [`Command::Wake`].
    pub(crate) fn flush_in_place(&mut self) -> Option<Vec<SendId>> {
        if !self.started_in_place {
            return Some(Vec::new());
        }
        self.started_in_place = false;
        self.connection.flush(&mut self.batch);
        #[cfg(test)]
        assert!(!std::mem::take(&mut self.panic_in_flush), "injected");
        let only_written = self
            .batch
            .iter()
            .all(|e| matches!(e, TransportEvent::SendWritten(_)));
        if self.connection.needs_flush() || !only_written {
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
        while self
            .connection
            .link()
            .is_some_and(|link| !link.wants_write())
        {
            let command = match self.commands.poll_recv(cx) {
                Poll::Ready(Some(command)) => command,
                Poll::Ready(None) => return Flow::Dropped,
                Poll::Pending => {
                    // Pending with a command queued is tokio's cooperative budget, not an
                    // empty channel: the core's close frame for a read error may be there.
                    if self.commands.is_empty() {
                        self.connection.end_if_unanswered(&mut self.batch);
                    }
                    break;
                }
            };
            *progress = true;
            match command {
                Command::Send(id, message) => {
                    self.unanswered = self.unanswered.saturating_add(1);
                    self.connection.send(id, message, &mut self.batch);
                }
                Command::Ping(payload) => self.connection.ping(payload, &mut self.batch),
                Command::Close(frame) => self.connection.close(&frame, &mut self.batch),
                // The flush below finishes what was started in place.
                Command::Wake => {}
            }
        }
        // Then one flush for all of them (a full socket wakes this task when it drains),
        // which also writes what TLS queued while reading.
        if self.connection.needs_flush() {
            self.started_in_place = false;
            self.connection.flush(&mut self.batch);
        }
        self.flow()
    }

    /// Whether messages can still be read.
    fn readable(&self) -> bool {
        self.connection.link().is_some_and(Link::is_readable)
    }

    /// Whether the transport is gone (then `batch` holds its last input for the core).
    fn flow(&self) -> Flow {
        if self.connection.is_gone() {
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
        self.reading.resume.register(cx.waker());
        self.credit = shared.read_credit(conn);
        if self.credit.is_paused() {
            return false;
        }
        true
    }

    fn poll_read(&mut self, progress: &mut bool) -> Flow {
        #[cfg(test)]
        self.readers.push(std::thread::current().id());
        let before = self.batch.len();
        let end = self
            .connection
            .read(&mut self.credit, false, &mut self.batch);
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
        if end == ReadEnd::Limit {
            // More may wait: the loop comes back, as this made progress.
            *progress = true;
        }
        self.flow()
    }
}

/// The connection's socket as a non-blocking `Read + Write`: each call polls the tokio socket
/// once with the waker of the connection's task, so that "not ready" is `WouldBlock` and wakes
/// the task when the socket is ready again.
pub(crate) struct Socket {
    tcp: TcpStream,
    /// The connection task's waker (set at every poll of the task).
    waker: Waker,
    /// A write failed (the peer reset or closed the connection): reads no longer wait for
    /// the reactor to have seen the socket readable, so that the read after the failure
    /// takes what the socket holds, the peer's close frame among it.
    write_failed: bool,
}

impl Socket {
    fn new(tcp: TcpStream) -> Self {
        Self {
            tcp,
            waker: Waker::noop().clone(),
            write_failed: false,
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

impl TcpSocket for Socket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }
    fn nodelay(&self) -> io::Result<bool> {
        self.tcp.nodelay()
    }
    fn set_nodelay(&self, on: bool) -> io::Result<()> {
        self.tcp.set_nodelay(on)
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn limit_unsent(&self, bytes: u32) -> io::Result<()> {
        wxsocket_wire::connection::limit_unsent(&self.tcp, bytes)
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = self.poll(|s, cx| {
            let mut b = ReadBuf::new(buf);
            s.poll_read(cx, &mut b).map_ok(|()| b.filled().len())
        });
        match read {
            // The reactor may not have seen what the socket holds yet.
            #[cfg(unix)]
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.write_failed => {
                wxsocket_wire::connection::read_now(&self.tcp, buf)
            }
            read => read,
        }
    }
}

impl Socket {
    /// Notes a write that failed (see `write_failed`).
    fn wrote<R>(&mut self, written: io::Result<R>) -> io::Result<R> {
        if written
            .as_ref()
            .is_err_and(|e| e.kind() != io::ErrorKind::WouldBlock)
        {
            self.write_failed = true;
        }
        written
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.poll(|s, cx| s.poll_write(cx, buf));
        self.wrote(written)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        let written = self.poll(|s, cx| s.poll_write_vectored(cx, bufs));
        self.wrote(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        let flushed = self.poll(|s, cx| s.poll_flush(cx));
        self.wrote(flushed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime with two worker threads; `block_on` runs the application on the test's.
    fn two_workers() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A take of events that reads for the application stops at the first pass that gave
    /// events, the other connections' input left to the next take (the connection read
    /// behind them): with 32 connections flooding, a take read each of them once before
    /// it looked, and a close timeout of 100 ms reached the application 0.45–1.5 s late.
    #[test]
    fn a_take_stops_reading_at_the_first_pass_that_gave_events() {
        use crate::{Config, ConnectOptions, Event, SessionConfig, TaskPool};
        const CONNS: usize = 4;
        const N: usize = 5_000;
        let server = wxsocket_test_server::EchoServer::flooding(N, 32).expect("flood server");
        let runtime = two_workers();
        runtime.block_on(async {
            let session = SessionConfig::default().pool_limit(CONNS);
            let (pool, mut events) = TaskPool::new(Config::default().session(session)).unwrap();
            let tasks: Vec<_> = (0..CONNS)
                .map(|_| pool.connect(&ConnectOptions::new(server.url())).unwrap())
                .collect();
            let mut got = 0;
            while got < N * CONNS {
                let next = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
                match next.await.expect("a stall").expect("the events go on") {
                    Event::Message { .. } => got += 1,
                    ended @ (Event::Error { .. } | Event::Close { .. }) => panic!("{ended:?}"),
                    _ => {}
                }
            }
            let hooks = &pool.shared().hooks;
            assert!(
                hooks.takes_of_many.load(Ordering::Relaxed) > 0,
                "no take found the input of several connections left to it"
            );
            assert_eq!(
                hooks.passes_behind_events.load(Ordering::Relaxed),
                0,
                "passes made with events waiting"
            );
            // The connection a take stopped at goes behind the others.
            {
                let mut core = pool.shared().lock();
                for task in &tasks {
                    core.mark_unread(task.id(), true);
                }
                let first = core.unread()[0];
                core.relist_unread(first);
                assert_eq!(core.unread().len(), CONNS, "{:?}", core.unread());
                assert_eq!(core.unread().last(), Some(&first));
            }
            pool.shutdown().await;
        });
    }

    /// While the application takes a flood of events, its own task makes most of the
    /// connection's read passes (the connection's task reads what wakes it and leaves the
    /// passes after a pass's limit to it), instead of every pass
    /// being made on a runtime thread and handed across: receiving 32-byte messages, the
    /// two threads spent a third of the client's CPU waking each other.
    #[test]
    fn the_task_taking_events_reads_a_flood() {
        use crate::{Client, Config, ConnectOptions, Event, SessionConfig};
        const N: usize = 20_000;
        let server = wxsocket_test_server::EchoServer::flooding(N, 32).expect("flood server");
        let runtime = two_workers();
        // `block_on` runs the application on this thread, the connection's task on the
        // runtime's.
        runtime.block_on(async {
            // Bounds that end a pass now and then within the credit the last report gave,
            // which the core has renewed since (the application took events): no
            // `ResumeReading` says so.
            let session = SessionConfig::default().receive_bounds(300, 1 << 20);
            let (client, mut events) = Client::new(Config::default().session(session)).unwrap();
            let conn = client.connect(&ConnectOptions::new(server.url())).unwrap();
            let mut got = 0;
            while got < N {
                let next = tokio::time::timeout(std::time::Duration::from_secs(10), events.next());
                match next
                    .await
                    .expect("a stall")
                    .expect("the events end after the flood")
                {
                    Event::Message { message, .. } => {
                        assert_eq!(message, Message::binary(vec![got as u8; 32]));
                        got += 1;
                    }
                    ended @ (Event::Error { .. } | Event::Close { .. }) => panic!("{ended:?}"),
                    _ => {}
                }
            }
            let listed = client.handle.shared.lock().unread_listed();
            assert!(
                listed <= 1,
                "one connection listed {listed} times as unread"
            );
            let io = client.handle.shared.lock().io_of(conn).expect("open");
            let readers = std::mem::take(&mut io.lock().unwrap().readers);
            let me = std::thread::current().id();
            let mine = readers.iter().filter(|&&t| t == me).count();
            // The connection's task reads until the application first takes events, and
            // whenever it finds none.
            assert!(
                mine * 4 >= readers.len() * 3,
                "{mine} of {} read passes on the application's thread",
                readers.len()
            );
            client.shutdown().await;
        });
    }

    /// Opens a client's connection to `server`, arms a panic in its in-place work with
    /// `arm`, sends one message, and returns that send's outcomes (completed, failed), the
    /// error and the close; then checks that the client goes on with a new connection.
    fn panic_in_place(
        arm: impl FnOnce(&mut Io),
    ) -> (
        usize,
        usize,
        Option<crate::ConnectionError>,
        Option<(u16, bool)>,
    ) {
        use crate::{Client, Config, ConnectOptions, Event, SendFailure};
        let server = wxsocket_test_server::EchoServer::start().expect("echo server");
        two_workers().block_on(async {
            let (client, mut events) = Client::new(Config::default()).unwrap();
            let next = async |events: &mut crate::Events| {
                let next = events.next();
                let next = tokio::time::timeout(std::time::Duration::from_secs(10), next);
                next.await.expect("a stall").expect("events")
            };
            let conn = client.connect(&ConnectOptions::new(server.url())).unwrap();
            while !matches!(next(&mut events).await, Event::Open { .. }) {}
            let io = client.handle.shared.lock().io_of(conn).expect("open");
            arm(&mut io.lock().unwrap());
            let id = client.try_send(Message::text("sent")).expect("accepted");
            let (mut completed, mut failed, mut error, mut close) = (0, 0, None, None);
            while close.is_none() {
                match next(&mut events).await {
                    Event::Error { error: e, .. } => error = Some(e),
                    Event::SendCompleted { id: done, .. } => {
                        assert_eq!(done, id);
                        completed += 1;
                    }
                    Event::SendFailed {
                        id: failed_id,
                        reason,
                        ..
                    } => {
                        assert_eq!((failed_id, reason), (id, SendFailure::ConnectionLost));
                        failed += 1;
                    }
                    Event::Close { code, clean, .. } => close = Some((code, clean)),
                    other => panic!("{other:?}"),
                }
            }
            // The client goes on: a new connection echoes.
            client.connect(&ConnectOptions::new(server.url())).unwrap();
            client.try_send(Message::text("after")).unwrap();
            loop {
                match next(&mut events).await {
                    Event::Message { message, .. } => {
                        break assert_eq!(message, Message::text("after"));
                    }
                    ended @ (Event::Error { .. } | Event::Close { .. }) => panic!("{ended:?}"),
                    _ => {}
                }
            }
            client.shutdown().await;
            (completed, failed, error, close)
        })
    }

    fn names_the_work_panic(error: Option<crate::ConnectionError>) {
        match error {
            Some(crate::ConnectionError::Transport(e)) => assert!(
                e.message
                    .contains("the connection's work panicked: injected"),
                "{e}"
            ),
            other => panic!("{other:?}"),
        }
    }

    /// A panic in a send started in place, on the application's thread (the frame's mask
    /// comes from the OS's random source, which can fail), ends that connection as lost,
    /// naming the panic, and the send fails once; `try_send` returns, and the client goes
    /// on. The panic unwound into `try_send`, with the send accepted and never settled.
    #[test]
    fn a_panic_in_a_send_started_in_place_ends_only_its_connection() {
        let (completed, failed, error, close) = panic_in_place(|io| io.panic_in_place = true);
        names_the_work_panic(error);
        assert_eq!((completed, failed, close), (0, 1, Some((1006, false))));
    }

    /// A panic in the flush of sends started in place, after the socket took them: those
    /// sends were written, and complete as such before the connection ends as lost (they
    /// were failed, although the peer had them).
    #[test]
    fn sends_written_before_a_panic_in_their_flush_complete() {
        let (completed, failed, error, close) = panic_in_place(|io| io.panic_in_flush = true);
        names_the_work_panic(error);
        assert_eq!((completed, failed, close), (1, 0, Some((1006, false))));
    }

    /// A connection that ends right after a read pass stopped at its limit leaves the list
    /// of connections marked unread with its entry. It stayed listed until a take found no
    /// event, which an application that only `try_recv`s never makes: the list grew with the
    /// connections ended (a reviewer's probe: 51 entries after 1,000; here about 40 of the
    /// 60), and kept the hand-back timer going.
    #[test]
    fn ended_connections_leave_the_unread_list() {
        use crate::{Config, ConnectOptions, Event, SessionConfig, TaskPool};
        // A few passes each (256 messages of 1020 bytes is both limits of one),
        // then the server drops the connection.
        let server =
            wxsocket_test_server::EchoServer::flooding_then_ending(600, 1020).expect("server");
        const CONNECTIONS: usize = 60;
        two_workers().block_on(async {
            let session = SessionConfig::default()
                .pool_limit(CONNECTIONS)
                .pool_receive_bounds(1 << 20, 1 << 30);
            let (pool, mut events) = TaskPool::new(Config::default().session(session)).unwrap();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let mut closed = 0;
            for round in 1..=CONNECTIONS / 20 {
                for _ in 0..20 {
                    pool.connect(&ConnectOptions::new(server.url())).unwrap();
                }
                while closed < round * 20 {
                    assert!(std::time::Instant::now() < deadline, "{closed} closed");
                    while let Ok(event) = events.try_recv() {
                        closed += usize::from(matches!(event, Event::Close { .. }));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            let listed = pool.shared().lock().unread_listed();
            assert_eq!(
                listed, 0,
                "{listed} of {CONNECTIONS} ended connections listed"
            );
            pool.shutdown().await;
        });
    }

    /// A loop taking events with `try_recv` until none is ready ends while a flood goes on
    /// (a game's frame): `try_recv` takes what is ready and never reads the socket itself.
    /// When it read what the connection's task left it, one such loop took a whole flood,
    /// 2.4 million messages in 3 s.
    #[test]
    fn a_try_recv_loop_ends_while_a_flood_goes_on() {
        use crate::{Client, Config, ConnectOptions, Event, TryRecvError};
        let server = wxsocket_test_server::EchoServer::flooding(300_000, 32).expect("server");
        let runtime = two_workers();
        let _guard = runtime.enter();
        let (client, mut events) = Client::new(Config::default()).unwrap();
        client.connect(&ConnectOptions::new(server.url())).unwrap();
        let (mut frames, mut total) = (0, 0);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while frames < 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "{frames} frames with messages"
            );
            let mut drained = 0;
            loop {
                match events.try_recv() {
                    Ok(Event::Message { .. }) => drained += 1,
                    Ok(_) => {}
                    Err(TryRecvError::Empty) => break,
                    Err(e) => panic!("{e:?}"),
                }
                assert!(
                    drained < 100_000,
                    "one frame's loop took {drained} messages"
                );
            }
            total += drained;
            if drained > 0 {
                frames += 1;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(total > 0);
        runtime.block_on(client.shutdown());
    }

    /// A connection's task reading a flood of frames that complete nothing (each of its
    /// polls all read passes) wakes the driver task once the driver's timer is overdue,
    /// and yields to it: a worker that is never idle looks at the runtime's timers only
    /// every 61 polls, and with 8 connections flooding, a close timeout of 100 ms reached
    /// the application up to 1.4 s late (release build; passes of about 6 ms). Here the
    /// timer is made overdue by hand: nothing else wakes the driver meanwhile.
    #[test]
    fn a_reading_task_wakes_the_driver_when_its_timer_is_overdue() {
        use crate::{Client, Config, ConnectOptions, Event, SessionConfig};
        use std::time::{Duration, Instant};
        let server = wxsocket_test_server::EchoServer::fragments_without_end().expect("server");
        let runtime = two_workers();
        let _guard = runtime.enter();
        // The server never answers the close of the shutdown.
        let session = SessionConfig::default().close_timeout(Duration::from_millis(100));
        let (client, mut events) = Client::new(Config::default().session(session)).unwrap();
        client.connect(&ConnectOptions::new(server.url())).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        // Events taken without waiting: the connection's task does the reading.
        loop {
            assert!(Instant::now() < deadline, "not open");
            if let Ok(Event::Open { .. }) = events.try_recv() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let shared = &client.handle.shared;
        shared.set_timer_due(Some(shared.epoch));
        let overdue = shared.timer_due.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(10);
        while shared.timer_due.load(Ordering::Relaxed) == overdue {
            assert!(Instant::now() < deadline, "the driver was not woken");
            std::thread::sleep(Duration::from_millis(1));
        }
        runtime.block_on(client.shutdown());
    }

    /// Twenty dials of one host while its lookup takes its time share that lookup: one
    /// call of the resolver, one answer for each (a lookup per dial piled up on the blocking
    /// pool while the resolver was slow); a dial given up waits no more, and the next
    /// lookup of the host starts afresh.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dials_of_one_host_share_its_lookup() {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        static RELEASED: AtomicBool = AtomicBool::new(false);
        fn slow(_: &DialTarget) -> io::Result<Vec<SocketAddr>> {
            CALLS.fetch_add(1, Ordering::SeqCst);
            let limit = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !RELEASED.load(Ordering::SeqCst) && std::time::Instant::now() < limit {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Ok(vec!["127.0.0.1:9".parse().unwrap()])
        }
        let lookups = SharedLookups::default();
        let target = DialTarget {
            host: "slow.test".into(),
            port: 9,
        };
        let given_up = tokio::spawn({
            let (lookups, target) = (Arc::clone(&lookups), target.clone());
            async move { lookup(&lookups, target, slow).await }
        });
        let dials: Vec<_> = (0..20)
            .map(|_| {
                let (lookups, target) = (Arc::clone(&lookups), target.clone());
                tokio::spawn(async move { lookup(&lookups, target, slow).await })
            })
            .collect();
        let waiting = || lookups.lock().unwrap().waiting();
        let limit = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // Until every dial waits and the lookup's thread is in the resolver (it may start
        // after the dials joined).
        while waiting() < 21 || CALLS.load(Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < limit, "{} waiting", waiting());
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        given_up.abort();
        assert_eq!(lookups.lock().unwrap().len(), 1, "one lookup in flight");
        assert_eq!(CALLS.load(Ordering::SeqCst), 1, "one lookup for every dial");
        RELEASED.store(true, Ordering::SeqCst);
        for dial in dials {
            let addrs = dial.await.unwrap().expect("the shared answer");
            assert_eq!(addrs, ["127.0.0.1:9".parse().unwrap()]);
        }
        assert!(lookups.lock().unwrap().is_empty());
        lookup(&lookups, target, slow).await.unwrap();
        assert_eq!(
            CALLS.load(Ordering::SeqCst),
            2,
            "a later dial looks up afresh"
        );
    }

    /// The size of the future an async fn returns, without calling it.
    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// An idle connection costs its task's future, allocated once at its largest: the dial
    /// (TLS, proxy, handshake; over a kilobyte) lives in a boxed future of its own and the
    /// dial state in the boxed `Dialing`, so neither stays for the connection's life.
    #[test]
    fn a_connection_task_keeps_nothing_of_its_dial() {
        let task = future_size(run::<wxsocket_core::Pool>);
        assert!(task <= 192, "the connection task's future is {task} bytes");
        let connection = std::mem::size_of::<Connection<Socket>>();
        assert!(connection <= 96, "a connection is {connection} bytes");
    }

    /// An address that drops the connect (a broken route) does not hold the dial up: the
    /// next address is tried beside it after `ATTEMPT_DELAY` and connects. The dial used to
    /// wait on the first until the handshake timeout.
    #[tokio::test]
    async fn an_address_that_drops_the_connect_does_not_hold_up_the_next() {
        let host = wxsocket_test_server::DeadThenLive::start().unwrap();
        let request = wxsocket_core::ConnectOptions::new(host.url());
        let dialing = Connection::<Socket>::new(
            ConnId::from_raw(1),
            Arc::new(request.validate().unwrap()),
            &wxsocket_wire::proxy::ProxyEnv::empty(),
            Default::default(),
        );
        let (mut connection, _) = dialing.unwrap();
        let mut out = Vec::new();
        let dial = connect_any(&mut connection, host.addrs(), &mut out);
        let limit = std::time::Duration::from_secs(10);
        let tcp = tokio::time::timeout(limit, dial)
            .await
            .expect("connected before the limit")
            .expect("connected");
        assert_eq!(tcp.peer_addr().unwrap(), host.addrs()[1]);
        assert!(out.is_empty(), "{out:?}");
    }
}
