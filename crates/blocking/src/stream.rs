//! The byte stream under one open connection: the non-blocking TCP socket, plain or wrapped
//! in rustls ([`wxsocket_wire::upgrade::Stream`]), read through [`Incoming`]. It reports
//! `WouldBlock` instead of blocking, which the connection code handles by waiting for the
//! next readiness event.

use mio::net::TcpStream;
use std::io::{self, Read, Write};
use std::task::Poll;
use wxsocket_wire::incoming::Incoming;

/// A non-blocking client stream.
pub(crate) type Stream = wxsocket_wire::upgrade::Stream<TcpStream>;

/// What tungstenite reads and writes on an open connection: the stream, read through
/// [`Incoming`] (the handshake's tail first, the inflater with permessage-deflate, the close
/// watch).
pub(crate) struct Wire {
    pub(crate) stream: Stream,
    pub(crate) incoming: Incoming,
    /// Set for a read pass that a readiness event started without the peer's end of the
    /// stream in it: a short read from the plain socket then means the socket is empty,
    /// and the pass ends there instead of paying one more `recv` to see `WouldBlock`.
    /// (Edge-triggered readiness reports every later arrival, a FIN included, as a new
    /// event; a FIN that was already there is in this event's read-closed flag, and then
    /// the pass reads on to the end.) Not with permessage-deflate, whose reads fill the
    /// inflater's buffer rather than tungstenite's.
    short_read_ends: bool,
    /// A short read ended this pass (see `short_read_ends`).
    drained: bool,
}

impl Wire {
    /// The transport under `stream`, reading through `incoming`.
    pub(crate) fn new(stream: Stream, incoming: Incoming) -> Self {
        Self {
            stream,
            incoming,
            short_read_ends: false,
            drained: false,
        }
    }

    /// Starts a read pass: with `short_read_ends`, one that ends at a short read.
    pub(crate) fn begin_pass(&mut self, short_read_ends: bool) {
        self.short_read_ends = short_read_ends;
        self.drained = false;
    }
}

impl wxsocket_wire::link::Watched for Wire {
    fn close_watch(&self) -> &wxsocket_wire::convert::CloseWatch {
        self.incoming.close_watch()
    }
}

impl Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let (stream, drained) = (&mut self.stream, &mut self.drained);
        let short_read_ends = self.short_read_ends && !self.incoming.is_inflating();
        // The read-ahead and the inflater call the socket only once what they hold is
        // served.
        let polled = self.incoming.poll_read(buf, |buf| {
            if *drained {
                return Poll::Ready(Err(io::ErrorKind::WouldBlock.into()));
            }
            let n = match stream.read(buf) {
                Ok(n) => n,
                Err(e) => return Poll::Ready(Err(e)),
            };
            if short_read_ends && n > 0 && n < buf.len() && matches!(stream, Stream::Plain(_)) {
                *drained = true;
            }
            Poll::Ready(Ok(n))
        });
        match polled {
            Poll::Ready(result) => result,
            Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
        }
    }
}

impl Write for Wire {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.stream.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.flush()
    }
}
