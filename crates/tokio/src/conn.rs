//! One connection task: dial (TCP, a proxy's `CONNECT` tunnel when one is in use, optional
//! TLS, the opening handshake), then move bytes both ways until the transport ends,
//! reporting everything to the core.

use crate::SocketInfo;
use crate::driver::{Machine, Shared};
use bytes::Bytes;
use futures_util::task::AtomicWaker;
use futures_util::{Sink, Stream};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::Role;
use wxsocket_core::{
    CloseRequest, ConnId, Handshake, HandshakeRequest, Message, ReadCredit, SendId, TransportError,
    TransportEvent,
};
use wxsocket_wire::convert::{classify, close_frame, from_ws};
use wxsocket_wire::dial::{self, DialPlan, Encoder};
use wxsocket_wire::incoming::Incoming;
use wxsocket_wire::proxy::ProxyConnect;
use wxsocket_wire::{ClientHandshake, DialTimer};

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
    let (ws, handshake, socket, encoder) = match Box::pin(dial(&shared, &request)).await {
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
        ws,
        encoder,
        commands,
        unflushed: Vec::new(),
        needs_flush: false,
        started_in_place: false,
        unanswered: 0,
        deferred: None,
        reading: true,
        close_sent: false,
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
    request: &HandshakeRequest,
) -> Result<(WebSocketStream<Transport>, Handshake, SocketInfo, Encoder), TransportError> {
    let mut timer = DialTimer::start();
    let plan = DialPlan::new(request, &shared.proxy_env)?;
    let mut tcp = connect_tcp(&plan, &mut timer).await?;
    let socket_failed = |e: io::Error| DialPlan::socket_failed(&e);
    if request.tcp_no_delay {
        tcp.set_nodelay(true).map_err(socket_failed)?;
    }
    if let Some(connect) = plan.tunnel() {
        tunnel(&mut tcp, connect).await?;
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
    let mut stream = if request.is_tls() {
        let tls = crate::tls::connect(&shared.tls, &plan, tcp).await?;
        timer.tls_done();
        Inner::Tls(Box::new(tls))
    } else {
        Inner::Plain(tcp)
    };
    let mut handshake = ClientHandshake::new(request);
    let failed = |e: io::Error| dial::handshake_failed(&e, "handshake");
    stream
        .write_all(handshake.request_bytes())
        .await
        .map_err(failed)?;
    stream.flush().await.map_err(failed)?;
    timer.request_written();
    let mut buf = vec![0u8; 4096];
    let mut done = loop {
        let n = stream.read(&mut buf).await.map_err(failed)?;
        if n == 0 {
            return Err(dial::handshake_closed("handshake"));
        }
        if let Some(done) = handshake.feed(&buf[..n])? {
            break done;
        }
    };
    done.handshake.profile = timer.finish();
    // The bytes after the response head are served first by the transport. (tungstenite's
    // `from_partially_read` would size its read buffer from them: with an empty tail, every
    // later read would be a few bytes, one syscall per message.) With permessage-deflate,
    // everything the server sends, the tail included, passes through the inflater, on the
    // first read: a failure in it is then a failure of the open connection (1002 / 1009).
    let (inflater, encoder) =
        dial::codecs(&done.handshake, request, shared.ws_config.max_message_size);
    let stream = Transport {
        incoming: Incoming::new(Bytes::from(done.tail), inflater),
        inner: stream,
    };
    let ws = WebSocketStream::from_raw_socket(stream, Role::Client, Some(shared.ws_config)).await;
    Ok((ws, done.handshake, socket, encoder))
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

/// Opens the `CONNECT` tunnel to the server through the proxy (the whole exchange is
/// bounded by the handshake timeout, which aborts this task).
async fn tunnel(tcp: &mut TcpStream, mut connect: ProxyConnect) -> Result<(), TransportError> {
    tcp.write_all(connect.request_bytes())
        .await
        .map_err(|e| connect.io_error(&e))?;
    let mut buf = [0u8; 2048];
    loop {
        let n = tcp.read(&mut buf).await.map_err(|e| connect.io_error(&e))?;
        if n == 0 {
            return Err(connect.closed_early());
        }
        if connect.feed(&buf[..n])? {
            return Ok(());
        }
    }
}

/// The open connection's state between polls.
pub(crate) struct Io {
    /// The connection's id, for the log.
    conn: ConnId,
    ws: WebSocketStream<Transport>,
    /// Compresses outgoing messages when permessage-deflate was agreed.
    encoder: Encoder,
    commands: mpsc::UnboundedReceiver<Command>,
    /// Sends fed to the socket but not yet flushed.
    unflushed: Vec<SendId>,
    needs_flush: bool,
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
    /// A write error met in place, for the task to report.
    deferred: Option<tokio_tungstenite::tungstenite::Error>,
    /// False after a read error (the stream is no longer in sync).
    reading: bool,
    close_sent: bool,
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
        loop {
            let mut progress = false;
            let flow = self.poll_write(cx, &mut progress);
            let flow = match flow {
                Flow::Go if self.reading && self.may_read(cx, shared, conn) => {
                    self.poll_read(cx, &mut progress)
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
    /// takes the frame at once. Returns the message when it is not
    /// started; then it goes through the task as usual. Call [`Self::flush_in_place`] once
    /// every message of the turn is started.
    pub(crate) fn start_in_place(&mut self, id: SendId, message: Message) -> Option<Message> {
        let idle = self.commands.is_empty()
            && (self.unanswered == 0 || self.started_in_place)
            && (!self.needs_flush || self.started_in_place)
            && self.reading
            && !self.close_sent
            && self.deferred.is_none();
        if !idle {
            return Some(message);
        }
        let mut cx = Context::from_waker(Waker::noop());
        if !matches!(
            Pin::new(&mut self.ws).poll_ready(&mut cx),
            Poll::Ready(Ok(()))
        ) {
            return Some(message);
        }
        let item = self.encoder.encode(message);
        if let Err(e) = Pin::new(&mut self.ws).start_send(item) {
            self.deferred = Some(e);
        }
        self.unflushed.push(id);
        self.needs_flush = true;
        self.started_in_place = true;
        self.unanswered = self.unanswered.saturating_add(1);
        if self.deferred.is_none() && self.encoder.flush_due() {
            // Out at once (see `FLUSH_AFTER_COMPRESSED`); the sends are still reported by
            // `flush_in_place`, whose flush then finds little or nothing left to write.
            match Pin::new(&mut self.ws).poll_flush(&mut cx) {
                Poll::Ready(Ok(())) => self.encoder.flushed(),
                Poll::Ready(Err(e)) => self.deferred = Some(e),
                Poll::Pending => {}
            }
        }
        None
    }

    /// Flushes what [`Self::start_in_place`] started. Returns the sends now written, or
    /// `None` when the task must finish (socket full, or an error it reports): send it
    /// [`Command::Wake`].
    pub(crate) fn flush_in_place(&mut self) -> Option<Vec<SendId>> {
        if !self.started_in_place {
            return Some(Vec::new());
        }
        self.started_in_place = false;
        if self.deferred.is_some() {
            return None;
        }
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut self.ws).poll_flush(&mut cx) {
            Poll::Ready(Ok(())) => {
                self.needs_flush = false;
                self.encoder.flushed();
                Some(std::mem::take(&mut self.unflushed))
            }
            Poll::Ready(Err(e)) => {
                self.deferred = Some(e);
                None
            }
            Poll::Pending => None,
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, progress: &mut bool) -> Flow {
        if let Some(e) = self.deferred.take() {
            return self.fail(&e);
        }
        // Feed every command already waiting, while the socket takes them.
        loop {
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return self.fail(&e),
                Poll::Pending => break,
            }
            let command = match self.commands.poll_recv(cx) {
                Poll::Ready(Some(command)) => command,
                Poll::Ready(None) => return Flow::Dropped,
                Poll::Pending => {
                    if !self.reading && !self.close_sent && self.unflushed.is_empty() {
                        // A read error the core did not answer with a close frame: done.
                        return self.finish();
                    }
                    break;
                }
            };
            *progress = true;
            let item = match command {
                Command::Send(id, message) => {
                    self.unflushed.push(id);
                    self.unanswered = self.unanswered.saturating_add(1);
                    self.encoder.encode(message)
                }
                Command::Ping(payload) => WsMessage::Ping(payload),
                Command::Close(frame) => {
                    self.close_sent = true;
                    WsMessage::Close(Some(close_frame(&frame)))
                }
                // The flush below finishes what was started in place.
                Command::Wake => continue,
            };
            if let Err(e) = Pin::new(&mut self.ws).start_send(item) {
                return self.fail(&e);
            }
            self.needs_flush = true;
            if self.encoder.flush_due() {
                // Out before the next message is compressed (see
                // `FLUSH_AFTER_COMPRESSED`); a full socket ends the feeding for now.
                match self.flush(cx) {
                    Poll::Ready(Flow::Go) => {}
                    Poll::Ready(flow) => return flow,
                    Poll::Pending => break,
                }
            }
        }
        // Then one flush for all of them.
        if self.needs_flush {
            match self.flush(cx) {
                Poll::Ready(flow) => return flow,
                Poll::Pending => {}
            }
        }
        Flow::Go
    }

    /// Flushes what was fed; once written, the sends are reported to the core.
    fn flush(&mut self, cx: &mut Context<'_>) -> Poll<Flow> {
        match Pin::new(&mut self.ws).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.needs_flush = false;
                self.started_in_place = false;
                self.encoder.flushed();
                self.batch
                    .extend(self.unflushed.drain(..).map(TransportEvent::SendWritten));
                if self.close_sent && !self.reading {
                    // The close frame after a read error is out; nothing more to read.
                    return Poll::Ready(self.finish());
                }
                Poll::Ready(Flow::Go)
            }
            Poll::Ready(Err(e)) => Poll::Ready(self.fail(&e)),
            Poll::Pending => Poll::Pending,
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

    fn poll_read(&mut self, cx: &mut Context<'_>, progress: &mut bool) -> Flow {
        for _ in 0..READ_BATCH {
            if self.credit.is_paused() {
                break;
            }
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(message))) => {
                    *progress = true;
                    if message.is_text() || message.is_binary() {
                        self.unanswered = self.unanswered.saturating_sub(1);
                    }
                    // tungstenite queues pong and close replies; the next flush sends them.
                    self.needs_flush = true;
                    if let Some(event) = from_ws(message) {
                        if let TransportEvent::Message(message) = &event {
                            self.credit.take(message.len());
                            if self.credit.is_paused() {
                                wxsocket_wire::trace::reading_paused(self.conn);
                            }
                        }
                        // A close frame's code and reason as the peer sent them.
                        self.batch
                            .push(self.ws.get_ref().incoming.close_watch().correct(event));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    *progress = true;
                    let error = classify(&e);
                    if let Some(error) = &error {
                        wxsocket_wire::trace::read_failed(self.conn, error);
                    }
                    return match error {
                        Some(error) if error.kind.sends_close_frame() => {
                            // The core answers with a close frame (1002 / 1007 / 1009); keep
                            // the write side for it, but the stream is no longer readable.
                            self.reading = false;
                            self.batch.push(TransportEvent::Error(error));
                            Flow::Go
                        }
                        Some(error) => {
                            self.batch.push(TransportEvent::Error(error));
                            Flow::Finished
                        }
                        None => self.finish(),
                    };
                }
                Poll::Ready(None) => return self.finish(),
                Poll::Pending => break,
            }
        }
        Flow::Go
    }

    fn fail(&mut self, e: &tokio_tungstenite::tungstenite::Error) -> Flow {
        match classify(e) {
            Some(error) => {
                wxsocket_wire::trace::write_failed(self.conn, &error);
                self.batch.push(TransportEvent::Error(error));
                Flow::Finished
            }
            None => self.finish(),
        }
    }

    fn finish(&mut self) -> Flow {
        self.batch.push(TransportEvent::Closed);
        Flow::Finished
    }
}

/// A TCP stream, with or without TLS.
#[allow(clippy::large_enum_variant)]
enum Inner {
    Plain(TcpStream),
    Tls(Box<crate::tls::TlsStream>),
}

/// The connection's byte stream: the socket, read through [`Incoming`] (the handshake's
/// tail first, the inflater with permessage-deflate, the close watch).
pub(crate) struct Transport {
    incoming: Incoming,
    inner: Inner,
}

macro_rules! inner {
    ($self:expr, $s:ident => $e:expr) => {
        match &mut $self.inner {
            Inner::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Inner::Tls($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        let out = buf.initialize_unfilled();
        let polled = this.incoming.poll_read(out, |b| {
            let mut b = ReadBuf::new(b);
            Pin::new(&mut *inner)
                .poll_read(cx, &mut b)
                .map_ok(|()| b.filled().len())
        });
        polled.map_ok(|n| buf.advance(n))
    }
}

impl AsyncRead for Inner {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Inner::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Inner {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Inner::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_flush(cx),
            Inner::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Inner::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Inner::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        inner!(self.get_mut(), s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        inner!(self.get_mut(), s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Inner::Plain(s) => s.is_write_vectored(),
            Inner::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        inner!(self.get_mut(), s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        inner!(self.get_mut(), s => s.poll_shutdown(cx))
    }
}
