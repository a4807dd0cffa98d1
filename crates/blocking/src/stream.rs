//! The byte stream under one connection: a non-blocking TCP socket, plain or wrapped in
//! rustls. Both report `WouldBlock` instead of blocking, which the connection code
//! handles by waiting for the next readiness event.

use mio::net::TcpStream;
#[cfg(not(feature = "tls"))]
use no_tls as rustls;
use std::io::{self, Read, Write};
use std::task::Poll;
use wxsocket_wire::incoming::Incoming;

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

/// A non-blocking client stream.
pub(crate) enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    /// The socket, for (de)registration with the poller.
    pub(crate) fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut t.sock,
        }
    }

    /// Moves the TLS handshake on as far as the socket allows, without application data:
    /// `Ok(true)` once it is complete (at once for a plain socket), `Ok(false)` when the
    /// socket would block. The end of the stream is `UnexpectedEof`.
    pub(crate) fn complete_tls(&mut self) -> io::Result<bool> {
        match self {
            Stream::Plain(_) => Ok(true),
            #[cfg(feature = "tls")]
            Stream::Tls(t) => t.complete_handshake(),
            #[cfg(not(feature = "tls"))]
            Stream::Tls(t) => match t.conn {},
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write_vectored(bufs),
            Stream::Tls(t) => t.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// rustls over a non-blocking socket.
///
/// `rustls::StreamOwned` is not used because it refuses to read while TLS records are
/// waiting to be written (`complete_prior_io`), which can deadlock two peers that both
/// write more than the socket buffers hold; here reading and writing are independent.
pub(crate) struct TlsStream {
    pub(crate) conn: rustls::ClientConnection,
    pub(crate) sock: TcpStream,
}

#[cfg(feature = "tls")]
impl TlsStream {
    /// Writes queued TLS records until none is left or the socket would block.
    fn write_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.sock)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }

    /// The handshake part of [`Stream::complete_tls`].
    fn complete_handshake(&mut self) -> io::Result<bool> {
        loop {
            self.try_write_records()?;
            if !self.conn.is_handshaking() {
                return Ok(true);
            }
            if self.conn.wants_write() {
                // The socket is full: the next writable event comes back here.
                return Ok(false);
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {
                    if let Err(error) = self.conn.process_new_packets() {
                        let _ = self.try_write_records();
                        return Err(tls_error(error));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Like `write_records`, but a full socket is not an error (the records stay queued
    /// and the next flush or writable event sends them).
    fn try_write_records(&mut self) -> io::Result<()> {
        match self.write_records() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }
}

/// A TLS failure as an IO error that still carries the `rustls::Error`, so
/// `wxsocket_wire::convert::connect_error` classifies it as a TLS failure.
#[cfg(feature = "tls")]
fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

#[cfg(feature = "tls")]
impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                // Ok(0) after close_notify: a clean end of the stream.
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // No plaintext buffered: pull TLS records from the socket. `WouldBlock` goes
            // back to the caller; Ok(0) (TCP EOF) makes the reader above report the end.
            self.conn.read_tls(&mut self.sock)?;
            if let Err(error) = self.conn.process_new_packets() {
                // Send the alert rustls queued, best effort.
                let _ = self.try_write_records();
                return Err(tls_error(error));
            }
            // Handshake messages, key updates or alerts may be waiting to go out.
            self.try_write_records()?;
        }
    }
}

#[cfg(feature = "tls")]
impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut n = self.conn.writer().write(buf)?;
        if n == 0 {
            // rustls's buffer is at its limit: make room, then try once more.
            self.write_records()?;
            n = self.conn.writer().write(buf)?;
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        self.try_write_records()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.writer().flush()?;
        self.write_records()
    }
}

/// Stand-ins for the rustls names the connection code uses, when the `tls` feature is off.
/// Their types have no values, so no TLS path can run and the connection code is the same
/// in both builds: `connect` refuses a `wss://` URL before any IO
/// ([`wxsocket_wire::check_request`]), and a dial that got here anyway fails naming the
/// feature.
#[cfg(not(feature = "tls"))]
pub(crate) mod no_tls {
    use std::convert::Infallible;
    use std::sync::Arc;
    use wxsocket_wire::tls::TlsRoots;

    const NO_TLS: &str =
        "wss:// needs the `tls` feature of wxsocket-blocking, which this build left out";

    /// No TLS configuration exists without the feature.
    #[derive(Debug)]
    pub(crate) struct ClientConfig;

    /// `TlsRoots::client_config` of the `tls` build.
    pub(crate) trait ClientConfigExt {
        fn client_config(&self) -> Result<Arc<ClientConfig>, Infallible>;
    }

    impl ClientConfigExt for TlsRoots {
        fn client_config(&self) -> Result<Arc<ClientConfig>, Infallible> {
            Ok(Arc::new(ClientConfig))
        }
    }

    /// A TLS client connection; has no values without the feature.
    pub(crate) enum ClientConnection {}

    impl ClientConnection {
        pub(crate) fn new(
            _config: Arc<ClientConfig>,
            _name: wxsocket_wire::dial::ServerName<'static>,
        ) -> Result<Self, &'static str> {
            Err(NO_TLS)
        }
    }

    impl std::io::Read for super::TlsStream {
        fn read(&mut self, _buf: &mut [u8]) -> std::io::Result<usize> {
            match self.conn {}
        }
    }

    impl std::io::Write for super::TlsStream {
        fn write(&mut self, _buf: &[u8]) -> std::io::Result<usize> {
            match self.conn {}
        }

        fn flush(&mut self) -> std::io::Result<()> {
            match self.conn {}
        }
    }
}
