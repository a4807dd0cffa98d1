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
    /// Why reading failed, kept until the plaintext decrypted before it is read.
    #[cfg(feature = "tls")]
    failed: Option<rustls::Error>,
}

impl<S> TlsStream<S> {
    /// A reviewer's test: TLS over `sock` with `conn`, its handshake done elsewhere.
    #[cfg(all(test, feature = "tls"))]
    pub(crate) fn for_tests(conn: ClientConnection, sock: S) -> Self {
        Self {
            conn,
            sock,
            took_ciphertext: false,
            gave_ciphertext: false,
            client_auth: None,
            alert: None,
            failed: None,
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
            if let Some(error) = &self.failed {
                return Err(tls_error(error.clone()));
            }
            // No plaintext buffered: pull TLS records from the socket. `WouldBlock` goes
            // back to the caller; Ok(0) (TCP EOF) makes the reader above report the end.
            self.took_ciphertext |= self.conn.read_tls(&mut self.sock)? > 0;
            if let Err(error) = self.conn.process_new_packets() {
                self.note_alert(&error);
                // Send the alert rustls queued, best effort.
                let _ = self.try_write_records();
                // The records before the one that failed were decrypted: the reader above
                // returns their plaintext first, and this error once it is read.
                self.failed = Some(error);
                continue;
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
                // A driver's mistake, not the server's doing: said as such.
                Phase::Ended => {
                    let message = "the dial had ended already (`drive` after it was ready)";
                    return Poll::Ready(Err(TransportError::new(
                        TransportErrorKind::Connect,
                        message,
                    )));
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
                    gave_ciphertext: false,
                    #[cfg(feature = "tls")]
                    client_auth: None,
                    #[cfg(feature = "tls")]
                    alert: None,
                    #[cfg(feature = "tls")]
                    failed: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ProxyEnv;
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};
    use wxsocket_core::ConnectOptions;

    /// A non-blocking socket of a test. Reads give `input` (at most `read_chunk` bytes
    /// each), then `WouldBlock`, or once it is read, the end of the stream (`eof`) or
    /// `read_error`. Writes take at most `room` bytes (`None`: all), then `WouldBlock`, or
    /// fail with `write_error`; an empty write takes nothing (`Ok(0)`), as a socket's does.
    /// A flush fails with `flush_error`, if set.
    #[derive(Default)]
    struct Socket {
        input: VecDeque<u8>,
        read_chunk: Option<usize>,
        eof: bool,
        read_error: Option<io::ErrorKind>,
        written: Vec<u8>,
        room: Option<usize>,
        /// The room each turn of the peer ([`Server::answer`]) gives back.
        turn_room: Option<usize>,
        write_error: Option<io::ErrorKind>,
        flush_error: Option<io::ErrorKind>,
    }

    impl Read for Socket {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return match self.read_error {
                    Some(kind) => Err(kind.into()),
                    None if self.eof => Ok(0),
                    None => Err(io::ErrorKind::WouldBlock.into()),
                };
            }
            let n = buf
                .len()
                .min(self.input.len())
                .min(self.read_chunk.unwrap_or(usize::MAX));
            for (slot, byte) in buf.iter_mut().zip(self.input.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
        }
    }

    impl Write for Socket {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if let Some(kind) = self.write_error {
                return Err(kind.into());
            }
            if buf.is_empty() {
                return Ok(0);
            }
            if self.room == Some(0) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.room.map_or(buf.len(), |room| room.min(buf.len()));
            if let Some(room) = &mut self.room {
                *room -= n;
            }
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            match self.flush_error {
                Some(kind) => Err(kind.into()),
                None => Ok(()),
            }
        }
    }

    fn request(url: &str) -> Arc<HandshakeRequest> {
        Arc::new(ConnectOptions::new(url).validate().unwrap())
    }

    /// The dial of `request` over `sock` (no proxy from the environment), with a TLS
    /// configuration that trusts `ca` (the webpki roots without one).
    fn upgrade(
        sock: Socket,
        request: &Arc<HandshakeRequest>,
        tls: &Arc<ClientConfig>,
    ) -> Upgrade<Socket> {
        let plan = DialPlan::new(request, &ProxyEnv::empty()).unwrap();
        Upgrade::new(sock, &plan, request, tls)
    }

    fn no_tls() -> Arc<ClientConfig> {
        client_config(&Default::default()).unwrap()
    }

    /// A timer whose dial began a minute ago, so that a mark it takes is a minute or more
    /// and one it never takes is zero.
    fn timer() -> DialTimer {
        let start = Instant::now().checked_sub(Duration::from_secs(60));
        DialTimer::started_at(start.expect("a clock a minute old"))
    }

    /// The server's `101` to the upgrade request `request` (its accept key derived from the
    /// request's), then `tail`.
    fn switching(request: &[u8], tail: &[u8]) -> Vec<u8> {
        let text = std::str::from_utf8(request).unwrap();
        let key = text
            .lines()
            .find_map(|line| line.strip_prefix("Sec-WebSocket-Key: "))
            .expect("a key in the request");
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        let mut answer = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        answer.extend_from_slice(tail);
        answer
    }

    /// The index of the end of the first HTTP head in `bytes` (past its blank line).
    fn head_end(bytes: &[u8]) -> Option<usize> {
        bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map(|i| i + 4)
    }

    /// What a dial came to, and the stages it said it was at between its drives (each
    /// once, in order).
    type Dialed = (
        Result<(Stream<Socket>, HandshakeDone), TransportError>,
        Vec<DialStage>,
    );

    /// Drives `up` until it ends, `peer` answering (over the socket) between drives.
    fn dial_with(
        up: &mut Upgrade<Socket>,
        timer: &mut DialTimer,
        mut peer: impl FnMut(&mut Socket),
    ) -> Dialed {
        let mut stages = Vec::new();
        for _ in 0..1000 {
            match up.drive(timer) {
                Poll::Ready(result) => {
                    assert!(up.socket().is_none() && up.stage().is_none());
                    return (result, stages);
                }
                Poll::Pending => {
                    // The socket the driver waits on for readiness.
                    assert!(up.socket().is_some(), "no socket while the dial is on");
                    let stage = up.stage().expect("a stage while the dial is on");
                    if stages.last() != Some(&stage) {
                        stages.push(stage);
                    }
                    let sock = up.socket_mut().expect("a socket while the dial is on");
                    sock.room = sock.turn_room;
                    peer(sock);
                }
            }
        }
        panic!("the dial never ended");
    }

    /// A `ws://` dial over a socket that takes 7 bytes a turn and gives 5 a read: the
    /// request goes out whole and once, in order, the answer is read in pieces, the dial
    /// says it is at the upgrade until it ends, and the frames that came behind the answer
    /// are kept for the connection. The request's end is marked in the profile once it is
    /// out (and flushed), and there is no TLS mark.
    #[test]
    fn a_plain_dial_writes_the_request_whole_over_a_slow_socket() {
        let request = request("ws://example.test/chat");
        let expected = ClientHandshake::new(&request).request_bytes().len();
        let sock = Socket {
            read_chunk: Some(5),
            turn_room: Some(7),
            room: Some(7),
            ..Socket::default()
        };
        let mut up = upgrade(sock, &request, &no_tls());
        assert_eq!(up.stage(), Some(DialStage::Upgrade));
        assert!(matches!(up.stream(), Some(Stream::Plain(_))));
        let mut turns = 0;
        let mut answered = false;
        let mut timer = timer();
        let (dialed, stages) = dial_with(&mut up, &mut timer, |sock| {
            turns += 1;
            assert!(sock.written.len() <= 7 * turns, "more than the socket took");
            if !answered && sock.written.len() == expected {
                answered = true;
                sock.input.extend(switching(&sock.written, b"\x81\x02hi"));
            }
        });
        let (mut stream, done) = dialed.unwrap();
        assert_eq!(stages, [DialStage::Upgrade]);
        assert!(answered, "the request went out whole");
        let written = &stream.socket().written;
        assert_eq!(written.len(), expected);
        assert!(written.starts_with(b"GET /chat HTTP/1.1\r\nHost: example.test\r\n"));
        assert_eq!(head_end(written), Some(written.len()));
        assert!(turns >= expected / 7, "{turns} turns");
        let mut behind = done.tail.clone();
        behind.extend(stream.socket_mut().input.drain(..));
        assert_eq!(behind, b"\x81\x02hi", "the frames behind the answer");
        assert!(!stream.is_tls() && !stream.wants_write());
        // Vectored writes reach the socket too, as far as they say.
        let slices = [io::IoSlice::new(b"ab"), io::IoSlice::new(b"cd")];
        let n = stream.write_vectored(&slices).unwrap();
        let written = &stream.socket().written;
        assert!(n >= 2 && written[expected..] == b"abcd"[..n], "{n}");
        let profile = done.handshake.profile;
        assert_eq!(profile.tls, None);
        assert!(
            profile.request_written >= Duration::from_secs(60),
            "{profile:?}"
        );
        // Driven again once ended: a driver's mistake, which says so.
        let Poll::Ready(Err(error)) = up.drive(&mut timer) else {
            panic!("a dial that ended is ready");
        };
        assert!(error.message.contains("ended already"), "{error}");
    }

    /// Through an HTTP proxy over a socket that takes 6 bytes a turn and gives 4 a read:
    /// the `CONNECT` goes out whole, then (once the proxy's answer came, read in pieces)
    /// the upgrade request inside the tunnel; the dial says it is at the tunnel until the
    /// tunnel is open, then at the upgrade.
    #[test]
    fn a_dial_through_a_proxy_opens_the_tunnel_then_upgrades_over_a_slow_socket() {
        let request = Arc::new(
            ConnectOptions::new("ws://example.test/")
                .proxy("http://127.0.0.1:3128")
                .validate()
                .unwrap(),
        );
        let sock = Socket {
            read_chunk: Some(4),
            turn_room: Some(6),
            room: Some(6),
            ..Socket::default()
        };
        let mut up = upgrade(sock, &request, &no_tls());
        assert_eq!(up.stage(), Some(DialStage::Tunnel));
        assert!(up.stream().is_none(), "no stream before the tunnel is open");
        let connect = b"CONNECT example.test:80 HTTP/1.1\r\nHost: example.test:80\r\n\r\n";
        let (mut tunneled, mut answered) = (false, false);
        let (dialed, stages) = dial_with(&mut up, &mut timer(), |sock| {
            if !tunneled && sock.written == connect {
                tunneled = true;
                sock.input
                    .extend(b"HTTP/1.1 200 Connection established\r\n\r\n".iter());
            }
            let request = &sock.written[sock.written.len().min(connect.len())..];
            if !answered && head_end(request) == Some(request.len()) {
                answered = true;
                sock.input.extend(switching(request, b""));
            }
        });
        let (stream, done) = dialed.unwrap();
        assert_eq!(stages, [DialStage::Tunnel, DialStage::Upgrade]);
        assert!(tunneled && answered);
        let written = &stream.socket().written;
        assert!(written.starts_with(connect));
        assert!(written[connect.len()..].starts_with(b"GET / HTTP/1.1\r\n"));
        assert!(done.tail.is_empty());
    }

    /// A socket that fails during the upgrade fails the dial there and then, saying how:
    /// a flush that fails, a reset (not a close), the end of the stream before the answer
    /// or in the middle of it (with what came).
    #[test]
    fn a_socket_failing_in_the_upgrade_fails_the_dial_saying_how() {
        use io::ErrorKind::{BrokenPipe, ConnectionReset, UnexpectedEof};
        let request = request("ws://example.test/");
        let status = "HTTP/1.1 101 Switching Protocols\r\n";
        let cases = [
            (None, Some(BrokenPipe), false, "", "handshake: "),
            (Some(ConnectionReset), None, false, "", "handshake: "),
            (
                None,
                None,
                true,
                "",
                "handshake: the server closed the connection before answering",
            ),
            (
                Some(UnexpectedEof),
                None,
                false,
                status,
                "handshake: the server closed the connection in the middle of its answer \
                 (34 bytes in): `HTTP/1.1 101 Switching Protocols`",
            ),
            (
                Some(ConnectionReset),
                None,
                false,
                status,
                "handshake: the server reset the connection in the middle of its answer \
                 (34 bytes in): `HTTP/1.1 101 Switching Protocols`",
            ),
        ];
        for (read_error, flush_error, eof, input, says) in cases {
            let sock = Socket {
                input: input.bytes().collect(),
                read_error,
                flush_error,
                eof,
                ..Socket::default()
            };
            let mut up = upgrade(sock, &request, &no_tls());
            let case = format!("{read_error:?} {flush_error:?} {eof} {input:?}");
            let Poll::Ready(Err(error)) = up.drive(&mut timer()) else {
                panic!("{case}: the dial goes on");
            };
            assert!(error.message.starts_with(says), "{case}: {error}");
            if let Some(kind) = read_error.filter(|_| input.is_empty()).or(flush_error) {
                let text = io::Error::from(kind).to_string();
                assert!(error.message.contains(&text), "{case}: {error}");
                assert!(!error.message.contains("closed"), "{case}: {error}");
            }
        }
    }

    /// The same during TLS: a reset or a write that fails ends the dial there and then,
    /// as does the end of the stream, each named as TLS's failure.
    #[cfg(feature = "tls")]
    #[test]
    fn a_socket_failing_in_tls_fails_the_dial_saying_how() {
        use io::ErrorKind::{BrokenPipe, ConnectionReset};
        let ca = wxsocket_test_pki::TestCa::generate("failing");
        let request = request("wss://localhost/");
        let cases = [
            (Some(ConnectionReset), None, false, "tls: "),
            (None, Some(BrokenPipe), false, "tls: "),
            (
                None,
                None,
                true,
                "tls: the server closed the connection before answering",
            ),
        ];
        for (read_error, write_error, eof, says) in cases {
            let sock = Socket {
                read_error,
                write_error,
                eof,
                ..Socket::default()
            };
            let mut up = upgrade(sock, &request, &trusting(&ca, false));
            let case = format!("{read_error:?} {write_error:?} {eof}");
            let Poll::Ready(Err(error)) = up.drive(&mut timer()) else {
                panic!("{case}: the dial goes on");
            };
            assert!(error.message.starts_with(says), "{case}: {error}");
            if let Some(kind) = read_error.or(write_error) {
                let text = io::Error::from(kind).to_string();
                assert!(error.message.contains(&text), "{case}: {error}");
            }
        }
    }

    /// The server's end of `wss://` dials, in memory: rustls's server side over what the
    /// client wrote to the socket, answering the upgrade request with a `101` (and `tail`)
    /// once it came whole. A server that refuses the client's TLS sends its alert and
    /// closes, or with `silent`, closes without one (as Python's asyncio does).
    #[cfg(feature = "tls")]
    struct TlsServer {
        conn: rustls::ServerConnection,
        /// What it decrypted of the client's plaintext.
        plain: Vec<u8>,
        tail: Vec<u8>,
        answered: bool,
        refused: Option<rustls::Error>,
        silent: bool,
    }

    #[cfg(feature = "tls")]
    impl TlsServer {
        fn new(config: Arc<rustls::ServerConfig>) -> Self {
            Self {
                conn: rustls::ServerConnection::new(config).unwrap(),
                plain: Vec::new(),
                tail: Vec::new(),
                answered: false,
                refused: None,
                silent: false,
            }
        }

        /// One turn: takes what the client wrote, and gives it what the server says.
        fn turn(&mut self, sock: &mut Socket) {
            let written = std::mem::take(&mut sock.written);
            let mut records = &written[..];
            let mut buf = [0u8; 4096];
            while !records.is_empty() && self.refused.is_none() {
                self.conn.read_tls(&mut records).unwrap();
                if let Err(error) = self.conn.process_new_packets() {
                    self.refused = Some(error);
                }
                while let Ok(n @ 1..) = self.conn.reader().read(&mut buf) {
                    self.plain.extend_from_slice(&buf[..n]);
                }
            }
            if !self.answered && head_end(&self.plain) == Some(self.plain.len()) {
                self.answered = true;
                let answer = switching(&self.plain, &self.tail);
                self.conn.writer().write_all(&answer).unwrap();
            }
            if self.refused.is_some() {
                sock.eof = true;
                if self.silent {
                    return;
                }
            }
            let mut out = Vec::new();
            while self.conn.wants_write() {
                self.conn.write_tls(&mut out).unwrap();
            }
            sock.input.extend(out);
        }

        /// Takes what the client wrote since the last turn, and says whether its
        /// `close_notify` came.
        fn closed_by_client(&mut self, sock: &mut Socket) -> bool {
            self.turn(sock);
            matches!(self.conn.reader().read(&mut [0u8; 16]), Ok(0))
        }
    }

    /// A client configuration trusting `ca` only, presenting its client certificate with
    /// `identity`.
    #[cfg(feature = "tls")]
    fn trusting(ca: &wxsocket_test_pki::TestCa, identity: bool) -> Arc<ClientConfig> {
        let tls = crate::tls::TlsRoots::only(vec![ca.ca_der.clone()]);
        let mut config = crate::client::Config::new().tls(tls);
        if identity {
            let key = rustls_pki_types::PrivatePkcs8KeyDer::from(ca.client_key.clone());
            config = config.client_identity(crate::tls::ClientIdentity::new(
                ca.client_chain.clone(),
                key.into(),
            ));
        }
        client_config(&config).unwrap()
    }

    /// A `wss://` dial over a socket that takes 100 bytes a turn and gives 60 a read: TLS
    /// completes first (the dial says so until it has), then the request goes out inside
    /// it, whole, and the answer and the frame behind it are read. The profile has the TLS
    /// mark. The stream then carries the connection's bytes both ways, those written while
    /// the socket is full once it is flushed, and its end is TLS's `close_notify`.
    #[cfg(feature = "tls")]
    #[test]
    fn a_tls_dial_completes_tls_then_upgrades_over_a_slow_socket() {
        let ca = wxsocket_test_pki::TestCa::generate("upgrade");
        let mut server = TlsServer::new(ca.server_config());
        server.tail = b"\x81\x02hi".to_vec();
        let sock = Socket {
            read_chunk: Some(60),
            turn_room: Some(100),
            room: Some(100),
            ..Socket::default()
        };
        let request = request("wss://localhost/tls");
        let mut up = upgrade(sock, &request, &trusting(&ca, false));
        assert_eq!(up.stage(), Some(DialStage::Tls));
        let (dialed, stages) = dial_with(&mut up, &mut timer(), |sock| server.turn(sock));
        let (mut stream, done) = dialed.unwrap();
        assert_eq!(stages, [DialStage::Tls, DialStage::Upgrade]);
        assert!(server.answered, "the server has the request");
        assert!(
            server
                .plain
                .starts_with(b"GET /tls HTTP/1.1\r\nHost: localhost\r\n")
        );
        assert_eq!(head_end(&server.plain), Some(server.plain.len()));
        let profile = done.handshake.profile;
        assert!(
            profile.tls.is_some_and(|t| t >= Duration::from_secs(60)),
            "{profile:?}"
        );
        assert!(
            profile.request_written >= Duration::from_secs(60),
            "{profile:?}"
        );
        assert!(stream.is_tls());
        // What came from the socket and went to it, each said once.
        assert!(stream.took_bytes() && !stream.took_bytes());
        assert!(stream.gave_bytes() && !stream.gave_bytes());

        // The frame behind the answer, whether it came with it or not.
        let mut behind = done.tail.clone();
        let mut buf = [0u8; 64];
        loop {
            match stream.read(&mut buf) {
                Ok(n) if n > 0 => behind.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                other => panic!("{other:?}"),
            }
            if behind.len() >= 4 {
                break;
            }
        }
        assert_eq!(behind, b"\x81\x02hi");

        // Written while the socket is full: queued, and out with the flush.
        stream.socket_mut().room = Some(0);
        assert_eq!(stream.write(b"one frame").unwrap(), 9);
        assert!(stream.wants_write(), "records wait for the socket");
        assert!(!stream.gave_bytes());
        stream.socket_mut().room = None;
        stream.flush().unwrap();
        assert!(!stream.wants_write() && stream.gave_bytes());
        let before = server.plain.len();
        server.turn(stream.socket_mut());
        assert_eq!(&server.plain[before..], b"one frame");

        // More than rustls holds while the socket is full: it takes what it can, refuses
        // the rest while it cannot make room, and takes more once it can; nothing is lost
        // or sent twice.
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        stream.socket_mut().room = Some(0);
        let first = stream.write(&data).unwrap();
        assert!(first > 0 && first < data.len(), "{first}");
        let full = stream.write(&data[first..]).unwrap_err();
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock);
        stream.socket_mut().room = None;
        let second = stream.write(&data[first..]).unwrap();
        assert!(second > 0);
        stream.flush().unwrap();
        let before = server.plain.len();
        server.turn(stream.socket_mut());
        assert!(server.plain[before..] == data[..first + second]);

        stream.end_tls();
        assert!(server.closed_by_client(stream.socket_mut()));
    }

    /// A server that requires a client certificate, when the client has none (or one the
    /// server refuses): its refusal names what was wrong, whether it came as the TLS alert
    /// that says so or as a close without a word. That the server asked is known only
    /// because TLS is completed on its own, before the request goes out.
    #[cfg(feature = "tls")]
    #[test]
    fn a_server_refusing_the_client_certificate_says_so() {
        let ca = wxsocket_test_pki::TestCa::generate("mutual");
        let other = wxsocket_test_pki::TestCa::generate("stranger");
        let request = request("wss://localhost/");
        let none = "the server requires a client certificate, and none is configured \
                    (`client_identity`)";
        let closed = "(it had asked for a client certificate, and none is configured \
                      (`client_identity`): it may have refused the connection for want of one)";
        let sent = "(it had asked for a client certificate and was sent the configured one \
                    (`client_identity`): it may have refused it)";
        for (identity, silent, kind, says) in [
            (false, false, TransportErrorKind::Tls, none),
            (false, true, TransportErrorKind::Connect, closed),
            (true, true, TransportErrorKind::Connect, sent),
        ] {
            // With an identity, the server trusts another CA than the client's.
            let server_ca = if identity { &other } else { &ca };
            let mut server = TlsServer::new(server_ca.server_config_requiring_clients());
            server.silent = silent;
            let mut config = trusting(&ca, identity);
            if identity {
                // The client trusts the server's certificate, of the other CA.
                let tls = crate::tls::TlsRoots::only(vec![other.ca_der.clone()]);
                let key = rustls_pki_types::PrivatePkcs8KeyDer::from(ca.client_key.clone());
                let identity = crate::tls::ClientIdentity::new(ca.client_chain.clone(), key.into());
                config = client_config(
                    &crate::client::Config::new()
                        .tls(tls)
                        .client_identity(identity),
                )
                .unwrap();
            }
            let mut up = upgrade(Socket::default(), &request, &config);
            let (dialed, _) = dial_with(&mut up, &mut timer(), |sock| server.turn(sock));
            let case = format!("identity {identity}, silent {silent}");
            let error = dialed.err().unwrap_or_else(|| panic!("{case}: dialled"));
            assert!(server.refused.is_some(), "{case}: {error}");
            assert_eq!(error.kind, kind, "{case}: {error}");
            assert!(error.message.contains(says), "{case}: {error}");
        }
    }

    /// A TLS 1.2 server that refuses a client for want of a certificate with
    /// `handshake_failure` (as OpenSSL does), an alert that names no certificate: the
    /// error says what it is about, as the server had asked for one and none was sent.
    #[cfg(feature = "tls")]
    #[test]
    fn a_handshake_failure_for_want_of_a_client_certificate_says_so() {
        let ca = wxsocket_test_pki::TestCa::generate("openssl");
        let tls12 = ca.server_config_requiring_clients_on(&[&rustls::version::TLS12]);
        let mut server = TlsServer::new(tls12);
        // Its own alert is not sent: OpenSSL's is, in the clear (before its
        // ChangeCipherSpec): fatal, handshake_failure.
        server.silent = true;
        let mut alerted = false;
        let request = request("wss://localhost/");
        let mut up = upgrade(Socket::default(), &request, &trusting(&ca, false));
        let (dialed, _) = dial_with(&mut up, &mut timer(), |sock| {
            server.turn(sock);
            if server.refused.is_some() && !alerted {
                alerted = true;
                sock.input
                    .extend([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
            }
        });
        let error = dialed.err().expect("refused");
        assert!(alerted, "{error}");
        assert_eq!(error.kind, TransportErrorKind::Tls, "{error}");
        assert_eq!(
            error.message,
            format!(
                "tls: the server requires a client certificate, and none is configured \
                 (`client_identity`) ({})",
                rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure)
            )
        );
    }

    /// What a failed dial says after the server asked for a client certificate, for each
    /// failure, what was sent, and the server's alert.
    #[cfg(feature = "tls")]
    #[test]
    fn a_failure_after_a_request_for_a_client_certificate_says_what_was_sent() {
        use crate::tls::ClientAuth::{NoneConfigured, Sent, Unusable};
        use TransportErrorKind::{Connect, Tls};
        use rustls::AlertDescription as Alert;
        let ca = wxsocket_test_pki::TestCa::generate("auth");
        let conn = ClientConnection::new(trusting(&ca, false), "localhost".try_into().unwrap());
        let mut stream = Stream::Tls(Box::new(TlsStream::for_tests(
            conn.unwrap(),
            Socket::default(),
        )));
        let closed = "tls: the server closed the connection before answering";
        let alerted = |alert| format!("tls: {}", rustls::Error::AlertReceived(alert));
        let unusable = "the configured one (`client_identity`) was not sent: its key can make \
                        none of the signatures the server accepts";
        let none = "none is configured (`client_identity`)";
        let sent = " (it had asked for a client certificate and was sent the configured one \
                    (`client_identity`): it may have refused it)";
        let cases = [
            (Connect, None, None, closed.to_owned()),
            (Connect, Some(Sent), None, format!("{closed}{sent}")),
            (
                Connect,
                Some(NoneConfigured),
                None,
                format!(
                    "{closed} (it had asked for a client certificate, and {none}: it may \
                     have refused the connection for want of one)"
                ),
            ),
            (
                Connect,
                Some(Unusable),
                None,
                format!(
                    "{closed} (it had asked for a client certificate, and {unusable}: it \
                     may have refused the connection for want of one)"
                ),
            ),
            (
                Tls,
                Some(NoneConfigured),
                Some(Alert::CertificateRequired),
                format!(
                    "tls: the server requires a client certificate, and {none} ({})",
                    rustls::Error::AlertReceived(Alert::CertificateRequired)
                ),
            ),
            (
                Tls,
                Some(Unusable),
                Some(Alert::HandshakeFailure),
                format!(
                    "tls: the server requires a client certificate, and {unusable} ({})",
                    rustls::Error::AlertReceived(Alert::HandshakeFailure)
                ),
            ),
            (
                Tls,
                Some(Sent),
                Some(Alert::HandshakeFailure),
                format!("{}{sent}", alerted(Alert::HandshakeFailure)),
            ),
            // An alert that is not about the certificate, or a certificate that was sent
            // and refused by name: the alert says it all.
            (
                Tls,
                Some(NoneConfigured),
                Some(Alert::DecodeError),
                alerted(Alert::DecodeError),
            ),
            (
                Tls,
                Some(Sent),
                Some(Alert::BadCertificate),
                alerted(Alert::BadCertificate),
            ),
        ];
        for (kind, auth, alert, expected) in cases {
            let Stream::Tls(tls) = &mut stream else {
                unreachable!()
            };
            tls.client_auth = auth;
            tls.alert = alert;
            let message = match alert {
                Some(alert) => alerted(alert),
                None => closed.to_owned(),
            };
            let error = stream.after_client_auth(TransportError::new(kind, message));
            assert_eq!(error.kind, kind);
            assert_eq!(error.message, expected, "{kind:?} {auth:?} {alert:?}");
        }
    }
}
