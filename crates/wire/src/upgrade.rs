//! The dial after the TCP connect, written once for both adapters over any non-blocking
//! socket (`Read + Write` that says `WouldBlock` instead of waiting): a proxy's `CONNECT`
//! tunnel when one is in use, TLS for `wss://` (rustls driven by hand, so that reading and
//! writing never wait on each other), and the HTTP upgrade ([`crate::ClientHandshake`]).
//! [`Upgrade::drive`] goes as far as the socket allows each time the socket is ready; the
//! adapter only waits for readiness (mio's poller in one, the task's waker in the other).
//!
//! What comes out is the [`Stream`] the WebSocket runs on (see [`crate::link`]) and the
//! server's response ([`crate::HandshakeDone`]).

use crate::dial::{self, DialPlan, ServerName};
use crate::proxy::Tunnel;
use crate::{ClientHandshake, DialTimer, HandshakeDone};
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::task::Poll;
use wxsocket_core::{DialStage, HandshakeRequest, TransportError, TransportErrorKind};

#[cfg(not(feature = "tls"))]
pub use no_tls::ClientConfig;
#[cfg(not(feature = "tls"))]
use no_tls::ClientConnection;
#[cfg(feature = "tls")]
pub use rustls::ClientConfig;
#[cfg(feature = "tls")]
use rustls::ClientConnection;

/// The TLS configuration every `wss` dial of one client uses, from its [`crate::client::Config`]:
/// the trusted roots and the client certificate, if any. A custom root certificate rustls
/// rejects is a [`wxsocket_core::ConfigError`] of the field `tls`, a client certificate or
/// key it refuses (a key that does not match the certificate, a kind of key it cannot sign
/// with) one of the field `client_identity`: the same words in both adapters. Without the
/// `tls` feature there is none to make, and no TLS dial can run (see
/// [`crate::check_request`]).
pub fn client_config(
    config: &crate::client::Config,
) -> Result<Arc<ClientConfig>, wxsocket_core::ConfigError> {
    #[cfg(feature = "tls")]
    {
        // The roots alone first, so each refusal names the field it comes from.
        config.tls.client_config().map_err(|_| {
            wxsocket_core::ConfigError::new(
                "tls",
                "a custom root certificate was rejected by rustls (not a valid X.509 \
                     CA certificate)",
            )
        })?;
        config
            .tls
            .client_config_with(config.client_identity.as_ref())
            .map_err(|e| {
                wxsocket_core::ConfigError::new(
                    "client_identity",
                    crate::tls::identity_refusal(&e).1,
                )
            })
    }
    #[cfg(not(feature = "tls"))]
    {
        let _ = config;
        Ok(Arc::new(ClientConfig))
    }
}

/// A connection's byte stream: the socket, with or without TLS.
pub enum Stream<S> {
    /// `ws://`.
    Plain(S),
    /// `wss://`.
    Tls(Box<TlsStream<S>>),
}

impl<S> Stream<S> {
    /// The socket under the stream.
    pub fn socket(&self) -> &S {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    /// The socket under the stream, mutably.
    pub fn socket_mut(&mut self) -> &mut S {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &mut t.sock,
        }
    }

    /// Whether the stream is TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Whether a TLS stream took bytes off the socket since the last call, plaintext or not
    /// (a record still arriving gives none); always `false` for a plain socket, whose reads
    /// say so themselves.
    pub fn took_bytes(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => std::mem::take(&mut t.took_ciphertext),
        }
    }

    /// Whether a TLS stream wrote bytes to the socket since the last call (its writes take
    /// plaintext into rustls, which says nothing of the socket); always `false` for a plain
    /// socket, whose writes say so themselves.
    pub fn gave_bytes(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => std::mem::take(&mut t.gave_ciphertext),
        }
    }

    /// Whether TLS records wait to be written (a reply rustls queued while reading, or
    /// records a full socket did not take): a flush writes them.
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.wants_write(),
        }
    }
}

impl<S> Stream<S> {
    /// A dial that failed after the server asked for a client certificate: the error says
    /// so, and what was sent. A server that refuses a client's certificate, or the lack of
    /// one, may close without the TLS alert that would say it (Python's asyncio does), or
    /// say it with an alert that does not name the certificate (OpenSSL's `handshake_failure`
    /// under TLS 1.2, Go's `bad_certificate`); and a configured certificate whose key cannot
    /// make any signature the server accepts is not sent at all.
    fn after_client_auth(&self, error: TransportError) -> TransportError {
        #[cfg(feature = "tls")]
        if let Stream::Tls(t) = self {
            use crate::tls::ClientAuth;
            use rustls::AlertDescription as Alert;
            let Some(auth) = t.client_auth else {
                return error;
            };
            let unusable = "the configured one (`client_identity`) was not sent: its key can \
                            make none of the signatures the server accepts";
            let sent = " (it had asked for a client certificate and was sent the configured one \
                        (`client_identity`): it may have refused it)";
            // Why no certificate went out, when none did.
            let why = match auth {
                ClientAuth::Unusable => unusable,
                _ => "none is configured (`client_identity`)",
            };
            let mut error = error;
            match (&error.kind, auth, t.alert) {
                (TransportErrorKind::Connect, ClientAuth::Sent, _) => error.message.push_str(sent),
                (TransportErrorKind::Connect, _, _) => {
                    error.message.push_str(&format!(
                        " (it had asked for a client certificate, and {why}: it may have \
                         refused the connection for want of one)"
                    ));
                }
                // No certificate went out, and the server's alert is its refusal of that,
                // whatever name it gives it.
                (
                    TransportErrorKind::Tls,
                    ClientAuth::NoneConfigured | ClientAuth::Unusable,
                    Some(
                        alert @ (Alert::HandshakeFailure
                        | Alert::CertificateRequired
                        | Alert::BadCertificate
                        | Alert::UnsupportedCertificate
                        | Alert::CertificateUnknown
                        | Alert::AccessDenied),
                    ),
                ) => {
                    error.message = format!(
                        "tls: the server requires a client certificate, and {why} ({})",
                        rustls::Error::AlertReceived(alert)
                    );
                }
                (TransportErrorKind::Tls, ClientAuth::Sent, Some(Alert::HandshakeFailure)) => {
                    error.message.push_str(sent);
                }
                _ => {}
            }
            return error;
        }
        error
    }
}

impl<S: Read + Write> Stream<S> {
    /// Ends a TLS stream's writing with `close_notify` (RFC 8446 §6.1), as far as the socket
    /// takes it without blocking: the socket is about to be closed, and without it the peer
    /// cannot tell our end from a cut connection. Nothing for a plain socket.
    pub fn end_tls(&mut self) {
        if let Stream::Tls(t) = self {
            t.send_close_notify();
        }
    }

    /// Moves the TLS handshake on as far as the socket allows, without application data:
    /// `Ok(true)` once it is complete (at once for a plain socket), `Ok(false)` when the
    /// socket would block. The end of the stream is `UnexpectedEof`.
    pub fn complete_tls(&mut self) -> io::Result<bool> {
        match self {
            Stream::Plain(_) => Ok(true),
            Stream::Tls(t) => t.complete_handshake(),
        }
    }
}

impl<S: Read + Write> Read for Stream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl<S: Read + Write> Write for Stream<S> {
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
pub struct TlsStream<S> {
    conn: ClientConnection,
    sock: S,
    /// Ciphertext came off the socket since [`Stream::took_bytes`] last looked: part of a
    /// record may have arrived without plaintext yet.
    took_ciphertext: bool,
    /// Ciphertext went onto the socket since [`Stream::gave_bytes`] last looked.
    gave_ciphertext: bool,
    /// Whether the server asked for a client certificate, and what it was sent.
    #[cfg(feature = "tls")]
    client_auth: Option<crate::tls::ClientAuth>,
    /// The fatal alert the server sent, if it sent one.
    #[cfg(feature = "tls")]
    alert: Option<rustls::AlertDescription>,
}

impl<S> TlsStream<S> {
    /// A reviewer's test: TLS over `sock` with `conn`, its handshake done elsewhere.
    #[cfg(all(test, feature = "tls"))]
    pub(crate) fn for_tests(conn: ClientConnection, sock: S) -> Self {
        Self {
            conn,
            sock,
            took_ciphertext: false,
            #[cfg(feature = "tls")]
            client_auth: None,
            #[cfg(feature = "tls")]
            alert: None,
            gave_ciphertext: false,
        }
    }

    fn wants_write(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.conn.wants_write();
        #[cfg(not(feature = "tls"))]
        match self.conn {}
    }

    fn is_handshaking(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.conn.is_handshaking();
        #[cfg(not(feature = "tls"))]
        match self.conn {}
    }
}

#[cfg(feature = "tls")]
impl<S: Read + Write> TlsStream<S> {
    /// Writes queued TLS records until none is left or the socket would block.
    fn write_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.sock)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.gave_ciphertext = true;
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
                    let (processed, asked) =
                        crate::tls::asked_for(|| self.conn.process_new_packets());
                    if asked.is_some() {
                        self.client_auth = asked;
                    }
                    if let Err(error) = processed {
                        self.note_alert(&error);
                        let _ = self.try_write_records();
                        return Err(tls_error(error));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Keeps the fatal alert the server sent, for [`Stream::after_client_auth`].
    fn note_alert(&mut self, error: &rustls::Error) {
        if let rustls::Error::AlertReceived(alert) = error {
            self.alert = Some(*alert);
        }
    }

    /// Queues `close_notify` and writes what the socket takes (see [`Stream::end_tls`]).
    fn send_close_notify(&mut self) {
        self.conn.send_close_notify();
        let _ = self.try_write_records();
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
/// [`crate::convert::connect_error`] classifies it as a TLS failure.
#[cfg(feature = "tls")]
fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

#[cfg(feature = "tls")]
impl<S: Read + Write> Read for TlsStream<S> {
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
            self.took_ciphertext |= self.conn.read_tls(&mut self.sock)? > 0;
            if let Err(error) = self.conn.process_new_packets() {
                self.note_alert(&error);
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
impl<S: Read + Write> Write for TlsStream<S> {
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

/// Stand-ins for the rustls names this module uses, when the `tls` feature is off. Their
/// types have no values, so no TLS path can run and the dial is the same in both builds:
/// the adapters refuse a `wss://` URL before any IO ([`crate::check_request`]), and a dial
/// that got here anyway fails naming the feature.
#[cfg(not(feature = "tls"))]
mod no_tls {
    use super::{Read, TlsStream, Write, io};
    use std::sync::Arc;

    /// The message of a TLS dial in a build without TLS.
    pub(super) const NO_TLS: &str = "wss:// needs the `tls` feature of wxsocket-tokio / wxsocket-blocking (wxsocket-wire), which this build left out";

    /// No TLS configuration exists without the `tls` feature.
    #[derive(Debug)]
    pub struct ClientConfig;

    /// A TLS client connection; has no values without the feature.
    pub(super) enum ClientConnection {}

    impl ClientConnection {
        pub(super) fn new(
            _config: Arc<ClientConfig>,
            _name: crate::dial::ServerName<'static>,
        ) -> Result<Self, &'static str> {
            Err(NO_TLS)
        }
    }

    impl<S> TlsStream<S> {
        pub(super) fn complete_handshake(&mut self) -> io::Result<bool> {
            match self.conn {}
        }

        pub(super) fn send_close_notify(&mut self) {
            match self.conn {}
        }
    }

    impl<S> Read for TlsStream<S> {
        fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
            match self.conn {}
        }
    }

    impl<S> Write for TlsStream<S> {
        fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
            match self.conn {}
        }

        fn flush(&mut self) -> io::Result<()> {
            match self.conn {}
        }
    }
}

/// Where an [`Upgrade`] is.
enum Phase<S> {
    /// Connected to a proxy: the exchange that opens the tunnel.
    Tunneling { sock: S, connect: Tunnel },
    /// TLS (if any) and the HTTP upgrade.
    Handshaking {
        stream: Stream<S>,
        handshake: ClientHandshake,
        written: usize,
    },
    /// The dial failed before any IO (the TLS setup): reported by the first drive.
    Failed(TransportError),
    /// Done or failed: nothing more to drive.
    Ended,
}

/// The dial of one connection after its TCP connect (see the module docs).
pub struct Upgrade<S> {
    phase: Phase<S>,
    request: Arc<HandshakeRequest>,
    /// The TLS configuration, for `wss://`.
    tls: Option<Arc<ClientConfig>>,
    /// The name the server's certificate must carry, for `wss://` (a bad name fails the
    /// dial when TLS starts, after the tunnel, as a server would see it).
    server_name: Option<Result<ServerName<'static>, TransportError>>,
    /// The proxy whose tunnel the dial goes through, as its errors name it.
    via: Option<String>,
}

impl<S: Read + Write> Upgrade<S> {
    /// The dial over `sock`, just connected to the plan's TCP target (the server, or the
    /// proxy), for `request`; `tls` is used for `wss://`.
    pub fn new(
        sock: S,
        plan: &DialPlan,
        request: &Arc<HandshakeRequest>,
        tls: &Arc<ClientConfig>,
    ) -> Self {
        let (tls, server_name) = if request.is_tls() {
            (Some(Arc::clone(tls)), Some(plan.tls_server_name()))
        } else {
            (None, None)
        };
        let mut upgrade = Self {
            phase: Phase::Ended,
            request: Arc::clone(request),
            tls,
            server_name,
            via: None,
        };
        upgrade.phase = match plan.tunnel() {
            Some(connect) => Phase::Tunneling { sock, connect },
            None => upgrade.start_handshake(sock).unwrap_or_else(Phase::Failed),
        };
        upgrade
    }

    /// The socket (`None` once the dial ended).
    pub fn socket(&self) -> Option<&S> {
        match &self.phase {
            Phase::Tunneling { sock, .. } => Some(sock),
            Phase::Handshaking { stream, .. } => Some(stream.socket()),
            Phase::Failed(_) | Phase::Ended => None,
        }
    }

    /// The socket, mutably (`None` once the dial ended).
    pub fn socket_mut(&mut self) -> Option<&mut S> {
        match &mut self.phase {
            Phase::Tunneling { sock, .. } => Some(sock),
            Phase::Handshaking { stream, .. } => Some(stream.socket_mut()),
            Phase::Failed(_) | Phase::Ended => None,
        }
    }

    /// Where the dial stands: the proxy's tunnel, TLS, or the upgrade (`None` once it
    /// ended).
    pub fn stage(&self) -> Option<DialStage> {
        match &self.phase {
            Phase::Tunneling { .. } => Some(DialStage::Tunnel),
            Phase::Handshaking {
                stream: Stream::Tls(tls),
                ..
            } if tls.is_handshaking() => Some(DialStage::Tls),
            Phase::Handshaking { .. } => Some(DialStage::Upgrade),
            Phase::Failed(_) | Phase::Ended => None,
        }
    }

    /// The stream of the server's handshake, once the tunnel (if any) is open.
    pub fn stream(&self) -> Option<&Stream<S>> {
        match &self.phase {
            Phase::Handshaking { stream, .. } => Some(stream),
            _ => None,
        }
    }

    /// Moves the dial on as far as the socket allows: `Pending` when it would block (call
    /// again when the socket is ready), else the stream and the server's response (its
    /// profile from `timer`), or the dial's failure.
    pub fn drive(
        &mut self,
        timer: &mut DialTimer,
    ) -> Poll<Result<(Stream<S>, HandshakeDone), TransportError>> {
        loop {
            // Taken out for the step and put back when the socket would block; a finished
            // or failed dial leaves `Ended` behind.
            match std::mem::replace(&mut self.phase, Phase::Ended) {
                Phase::Tunneling {
                    mut sock,
                    mut connect,
                } => match tunnel(&mut sock, &mut connect) {
                    Ok(false) => {
                        self.phase = Phase::Tunneling { sock, connect };
                        return Poll::Pending;
                    }
                    // The tunnel is open: the server's handshake starts inside it.
                    Ok(true) => {
                        self.via = Some(connect.proxy().to_owned());
                        match self.start_handshake(sock) {
                            Ok(phase) => self.phase = phase,
                            Err(error) => return Poll::Ready(Err(error)),
                        }
                    }
                    Err(error) => return Poll::Ready(Err(error)),
                },
                Phase::Handshaking {
                    mut stream,
                    mut handshake,
                    mut written,
                } => {
                    let via = self.via.as_deref();
                    return match handshake_step(
                        &mut stream,
                        &mut handshake,
                        &mut written,
                        timer,
                        via,
                    ) {
                        Ok(None) => {
                            self.phase = Phase::Handshaking {
                                stream,
                                handshake,
                                written,
                            };
                            Poll::Pending
                        }
                        Ok(Some(mut done)) => {
                            done.handshake.profile = timer.finish();
                            Poll::Ready(Ok((stream, done)))
                        }
                        Err(error) => Poll::Ready(Err(stream.after_client_auth(error))),
                    };
                }
                Phase::Failed(error) => return Poll::Ready(Err(error)),
                Phase::Ended => {
                    let closed = dial::handshake_closed("handshake", self.via.as_deref());
                    return Poll::Ready(Err(closed));
                }
            }
        }
    }

    /// TLS (for `wss`, with the server's name, also through a tunnel) and the upgrade.
    fn start_handshake(&mut self, sock: S) -> Result<Phase<S>, TransportError> {
        let stream = match (&self.tls, self.server_name.take()) {
            (Some(config), Some(name)) => {
                let conn = ClientConnection::new(Arc::clone(config), name?).map_err(|e| {
                    TransportError::new(TransportErrorKind::Tls, format!("TLS setup failed: {e}"))
                })?;
                Stream::Tls(Box::new(TlsStream {
                    conn,
                    sock,
                    took_ciphertext: false,
                    #[cfg(feature = "tls")]
                    client_auth: None,
                    #[cfg(feature = "tls")]
                    alert: None,
                    gave_ciphertext: false,
                }))
            }
            _ => Stream::Plain(sock),
        };
        Ok(Phase::Handshaking {
            stream,
            handshake: ClientHandshake::new(&self.request),
            written: 0,
        })
    }
}

/// Writes what the tunnel's exchange has to say and reads the proxy's answers as far as the
/// socket allows: `Ok(true)` once the tunnel is open.
fn tunnel<S: Read + Write>(sock: &mut S, connect: &mut Tunnel) -> Result<bool, TransportError> {
    let mut buf = [0u8; 2048];
    loop {
        while !connect.outgoing().is_empty() {
            match sock.write(connect.outgoing()) {
                Ok(0) => return Err(connect.io_error(&io::ErrorKind::WriteZero.into())),
                Ok(n) => connect.wrote(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(connect.io_error(&e)),
            }
        }
        match sock.read(&mut buf) {
            Ok(0) => return Err(connect.closed_early()),
            Ok(n) => {
                if connect.feed(&buf[..n])? {
                    return Ok(true);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) => return Err(connect.io_error(&e)),
        }
    }
}

/// TLS first, on its own, so that its end is known; the request follows in the same pass,
/// right behind the client's `Finished`; then the response, as far as the socket allows.
fn handshake_step<S: Read + Write>(
    stream: &mut Stream<S>,
    handshake: &mut ClientHandshake,
    written: &mut usize,
    timer: &mut DialTimer,
    via: Option<&str>,
) -> Result<Option<HandshakeDone>, TransportError> {
    match stream.complete_tls() {
        Ok(true) => {
            if stream.is_tls() {
                timer.tls_done();
            }
        }
        Ok(false) => return Ok(None),
        Err(e) => return Err(dial::handshake_failed(&e, "tls", via)),
    }
    let io_error = |e: &io::Error| dial::handshake_failed(e, "handshake", via);
    let request = handshake.request_bytes();
    while *written < request.len() {
        match stream.write(&request[*written..]) {
            Ok(0) => return Err(io_error(&io::ErrorKind::WriteZero.into())),
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(io_error(&e)),
        }
    }
    if *written == request.len() {
        match stream.flush() {
            Ok(()) => timer.request_written(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(io_error(&e)),
        }
    }
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            // With what arrived of the answer, if anything.
            Ok(0) => return Err(handshake.closed_early(via)),
            Ok(n) => {
                if let Some(done) = handshake.feed(&buf[..n])? {
                    return Ok(Some(done));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(handshake.closed_early(via));
            }
            Err(e) => {
                return Err(handshake
                    .failed_early(via, &e)
                    .unwrap_or_else(|| io_error(&e)));
            }
        }
    }
}
