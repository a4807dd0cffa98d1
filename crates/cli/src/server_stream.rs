//! The socket of a `wxsocket serve` connection as tokio-tungstenite's server side reads and
//! writes it: raw bytes counted in both directions, and, once permessage-deflate is agreed,
//! the client's compressed frames inflated before tungstenite reads them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wxsocket_core::{Message, TransportEvent};
use wxsocket_wire::deflate::Inflater;

/// Bytes a server socket read and wrote: raw, as on the wire (compressed where
/// permessage-deflate is in force, frame headers and handshake included). A write is
/// counted as it is handed to the socket, so bytes the peer has read are always counted.
#[derive(Debug, Default)]
pub struct WireCounters {
    read: AtomicU64,
    written: AtomicU64,
}

impl WireCounters {
    /// Bytes read from the socket so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Bytes written to the socket so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    fn add_read(&self, n: usize) {
        self.read.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn add_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    fn take_back_written(&self, n: u64) {
        self.written.fetch_sub(n, Ordering::Relaxed);
    }
}

/// A server's socket: counts the raw bytes ([`WireCounters`]) and, once permessage-deflate
/// is agreed ([`inflate`](Self::inflate)), passes what the client sends through a
/// server-side [`Inflater`], so the client's compressed messages reach tungstenite as plain
/// frames. Replies are compressed with `wxsocket_wire::deflate::Compressor::server`, whose
/// frames tungstenite writes as they are.
pub struct ServerStream<S> {
    inner: S,
    inflater: Option<Box<Inflater>>,
    counters: Arc<WireCounters>,
}

impl<S> ServerStream<S> {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: S, counters: Arc<WireCounters>) -> Self {
        Self {
            inner,
            inflater: None,
            counters,
        }
    }

    /// From now on, reads pass through `inflater` (made with `Inflater::server`). The
    /// handshake runs uncompressed; call this right after it (the client sends no frame
    /// before it has the server's answer).
    pub fn inflate(&mut self, inflater: Inflater) {
        self.inflater = Some(Box::new(inflater));
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ServerStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(inflater) = &mut this.inflater else {
            let before = buf.filled().len();
            let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
            this.counters.add_read(buf.filled().len() - before);
            return polled;
        };
        let (inner, counters) = (&mut this.inner, &this.counters);
        let polled = inflater.poll_read_from(buf.initialize_unfilled(), |raw| {
            let mut raw = ReadBuf::new(raw);
            let polled = Pin::new(&mut *inner).poll_read(cx, &mut raw);
            let n = raw.filled().len();
            counters.add_read(n);
            polled.map_ok(|()| n)
        });
        polled.map_ok(|n| buf.advance(n))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ServerStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Counted before the write (and corrected after), so the count is complete by the
        // time the peer can have read the bytes.
        let offered = buf.len() as u64;
        this.counters.add_written(offered);
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        let unwritten = match &polled {
            Poll::Ready(Ok(n)) => offered - *n as u64,
            _ => offered,
        };
        this.counters.take_back_written(unwritten);
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A text or binary message read by a tungstenite server, as the core's message (for
/// `Compressor::encode`); `None` for anything else.
pub fn core_message(message: WsMessage) -> Option<Message> {
    match wxsocket_wire::convert::from_ws(message)? {
        TransportEvent::Message(m) => Some(m),
        _ => None,
    }
}
