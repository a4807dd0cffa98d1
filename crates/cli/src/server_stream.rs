//! The socket of a `wxsocket serve` connection as tokio-tungstenite's server side reads and
//! writes it: raw bytes counted in both directions, and, once permessage-deflate is agreed,
//! the client's compressed frames inflated before tungstenite reads them.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
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
    /// From the end of the handshake on ([`Self::watch_frames`]).
    close: Option<CloseWatch>,
}

/// Follows the frame headers of what tungstenite reads (masked client frames) for the code
/// of the client's first close frame as it was on the wire: tungstenite hands a code the
/// client may not send (1005, 999, 5000…) on as its own answer, 1002, which would read as
/// the client's.
#[derive(Debug, Default)]
struct CloseWatch {
    /// The header being read: 2 bytes, 8 of length, 4 of mask at most.
    header: [u8; 14],
    header_len: usize,
    /// The current frame's masking key.
    key: [u8; 4],
    /// Payload bytes of the current frame still to come, and how many came already.
    remaining: u64,
    offset: u64,
    /// The current frame is the first close frame.
    in_close: bool,
    code: [u8; 2],
    code_len: usize,
    /// The first close frame was read whole.
    done: bool,
}

impl CloseWatch {
    fn header_needed(&self) -> usize {
        wxsocket_wire::convert::header_len(&self.header[..self.header_len])
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && !self.done {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining).map_or(bytes.len(), |r| r.min(bytes.len()));
                if self.in_close {
                    for (at, byte) in (self.offset..).zip(&bytes[..n]) {
                        if self.code_len < 2 {
                            self.code[self.code_len] = byte ^ self.key[(at % 4) as usize];
                            self.code_len += 1;
                        }
                    }
                }
                self.remaining -= n as u64;
                self.offset += n as u64;
                bytes = &bytes[n..];
                self.done = self.in_close && self.remaining == 0;
                continue;
            }
            while self.header_len < self.header_needed() && !bytes.is_empty() {
                let n = (self.header_needed() - self.header_len).min(bytes.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
                self.header_len += n;
                bytes = &bytes[n..];
            }
            let needed = self.header_needed();
            if self.header_len < needed {
                return;
            }
            // Unmasked (a frame tungstenite refuses anyway): the bytes as they are.
            self.key = match self.header[1] & 0x80 {
                0 => [0; 4],
                _ => [
                    self.header[needed - 4],
                    self.header[needed - 3],
                    self.header[needed - 2],
                    self.header[needed - 1],
                ],
            };
            self.header_len = 0;
            self.offset = 0;
            self.remaining = wxsocket_wire::convert::payload_len(&self.header[..needed]);
            self.in_close = self.header[0] & 0x0f == 0x8;
            self.done = self.in_close && self.remaining == 0;
        }
    }

    /// The code of the client's first close frame as sent, once it was read whole
    /// (`None` for a close frame without one).
    fn code(&self) -> Option<u16> {
        (self.done && self.code_len == 2).then(|| u16::from_be_bytes(self.code))
    }
}

impl<S> ServerStream<S> {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: S, counters: Arc<WireCounters>) -> Self {
        Self {
            inner,
            inflater: None,
            counters,
            close: None,
        }
    }

    /// From now on, follows the frames tungstenite reads for [`Self::client_close_code`].
    /// Call it right after the handshake, as [`Self::inflate`].
    pub fn watch_frames(&mut self) {
        self.close = Some(CloseWatch::default());
    }

    /// The code of the client's first close frame as it was on the wire, once tungstenite
    /// has read the frame whole (`None` before, or for a frame without a code).
    pub fn client_close_code(&self) -> Option<u16> {
        self.close.as_ref()?.code()
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
        let before = buf.filled().len();
        let Some(inflater) = &mut this.inflater else {
            let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
            this.counters.add_read(buf.filled().len() - before);
            if let Some(close) = &mut this.close {
                close.feed(&buf.filled()[before..]);
            }
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
        let polled = polled.map_ok(|n| buf.advance(n));
        if let Some(close) = &mut this.close {
            close.feed(&buf.filled()[before..]);
        }
        polled
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

/// A served connection's socket: plain TCP, or TLS over it (`serve --tls-cert`).
pub enum Socket {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_flush(cx),
            Socket::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CloseWatch;

    /// A masked frame of `opcode` with `payload`, its length in the 16-bit form when
    /// `long`.
    fn frame(opcode: u8, payload: &[u8], key: [u8; 4], long: bool) -> Vec<u8> {
        let mut out = vec![0x80 | opcode];
        if long {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        } else {
            out.push(0x80 | payload.len() as u8);
        }
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    /// The first close frame's code is read through the mask, after other frames, however
    /// the bytes are split; it is known only once the frame is whole.
    #[test]
    fn the_first_close_code_is_read_through_the_mask_in_any_split() {
        let mut wire = frame(0x2, &[9; 300], [5, 6, 7, 8], true);
        wire.extend(frame(0x9, b"ping", [1, 1, 1, 1], false));
        wire.extend(frame(0x8, &[0x13, 0x88, b'x'], [1, 2, 3, 4], false));
        // The first close frame ends where the second (8 bytes) begins.
        let first_close_end = wire.len();
        wire.extend(frame(0x8, &[0x03, 0xe8], [0, 0, 0, 0], false));
        for split in [1, 2, 3, 7, 64, wire.len()] {
            let mut watch = CloseWatch::default();
            for (n, piece) in wire.chunks(split).enumerate() {
                watch.feed(piece);
                if (n + 1) * split < first_close_end {
                    assert_eq!(watch.code(), None, "split {split}: before the close");
                }
            }
            assert_eq!(watch.code(), Some(5000), "split {split}");
        }
        let mut watch = CloseWatch::default();
        watch.feed(&frame(0x8, &[], [1, 2, 3, 4], false));
        assert_eq!(watch.code(), None, "a close frame without a code");
    }
}
