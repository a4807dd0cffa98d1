//! The public types both adapters' clients expose, defined once so `wxsocket-tokio` and
//! `wxsocket-blocking` cannot drift apart (each re-exports them).

use crate::proxy::ProxyEnv;
use crate::tls::{ClientIdentity, TlsRoots};
use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use wxsocket_core::transcript::Redaction;
use wxsocket_core::{ConfigError, FailedSend, Message, SendError, Session, SessionConfig};

/// Configuration of a client, task pool or wx socket: the session's policies and bounds,
/// the certificate authorities `wss` trusts, and the certificate it presents when a server
/// asks for one.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct Config {
    /// Close-before-open policy, queue and buffer bounds, timeouts, keepalive, maximum
    /// message size, pool limit, reconnection.
    pub session: SessionConfig,
    /// Trusted CAs for `wss` (webpki roots by default, plus any custom ones).
    pub tls: TlsRoots,
    /// The certificate and key every `wss` connection presents to a server that asks for a
    /// client certificate (mutual TLS). `None` (the default): none, and such a server
    /// refuses the connection (a TLS error that says so). A reconnection may resume the TLS
    /// session, and a server that resumes it does not ask again.
    pub client_identity: Option<ClientIdentity>,
    /// The proxy variables for connections whose `proxy` option is the default
    /// ([`wxsocket_core::ProxyOption::Environment`]). `None` (the default): the process
    /// environment, read once when the client is created.
    pub proxy_env: Option<ProxyEnv>,
    /// Record a transcript of the client's session here
    /// ([`wxsocket_core::transcript`]): every input, replayable exactly. `None` (the
    /// default): no recording. The `Client` and the `wx` socket of each adapter record
    /// (the wx socket's session: its transport input, timers and the events its callbacks
    /// are made from); a `TaskPool` refuses it (field `record`), as a transcript holds one
    /// session.
    pub record: Option<Recording>,
}

impl Config {
    /// The defaults: [`SessionConfig::default`] and the webpki roots.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the session configuration.
    pub fn session(mut self, session: SessionConfig) -> Self {
        self.session = session;
        self
    }

    /// Sets the trusted certificate authorities.
    pub fn tls(mut self, tls: TlsRoots) -> Self {
        self.tls = tls;
        self
    }

    /// Presents this certificate to `wss` servers that ask for one (mutual TLS). The key
    /// is checked against the certificate when the client is created (field
    /// `client_identity`).
    pub fn client_identity(mut self, identity: ClientIdentity) -> Self {
        self.client_identity = Some(identity);
        self
    }

    /// Uses these proxy variables instead of the process environment
    /// ([`ProxyEnv::empty`]: ignore the environment).
    pub fn proxy_env(mut self, env: ProxyEnv) -> Self {
        self.proxy_env = Some(env);
        self
    }

    /// Records a transcript of the client's session to `recording` (one client per
    /// recording: two clients writing to one would interleave their lines). A `TaskPool`
    /// made with it is refused.
    pub fn record(mut self, recording: Recording) -> Self {
        self.record = Some(recording);
        self
    }

    /// The pool a `TaskPool` runs: [`Self::session`] checked, and no recording asked
    /// for (a transcript holds one session; the pool's would be lost without a word).
    pub fn pool(&self) -> Result<wxsocket_core::Pool, ConfigError> {
        if self.record.is_some() {
            return Err(ConfigError::new(
                "record",
                "a task pool cannot be recorded (a transcript holds one session): \
                 record a Client, or each connection's own Client",
            ));
        }
        wxsocket_core::Pool::new(self.session.clone())
    }

    /// The session a `Client` runs: [`Self::session`] checked, with the transcript
    /// recording of [`Self::record`] attached before its first input.
    pub fn client_session(&self) -> Result<Session, ConfigError> {
        let mut session = Session::new(self.session.clone())?;
        if let Some(recording) = &self.record {
            recording.attach(&mut session);
        }
        Ok(session)
    }

    /// The proxy variables a client created now uses: [`Self::proxy_env`], or the process
    /// environment read at this call.
    pub fn resolve_proxy_env(&self) -> ProxyEnv {
        self.proxy_env
            .clone()
            .unwrap_or_else(ProxyEnv::from_process)
    }
}

/// Where a client writes its transcript ([`Config::record`]): a writer shared by the
/// session's recording sink, one line per input. Write errors do not disturb the session:
/// the first one stops the recording and is kept for [`error`](Self::error).
///
/// ```
/// # use wxsocket_wire::reexports::{Config, HeaderName, Recording};
/// # let dir = std::env::temp_dir().join(format!("wxsocket-doc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir)?;
/// # let bug_jsonl = dir.join("bug.jsonl");
/// let recording = Recording::to_file(&bug_jsonl)?
///     .redact(HeaderName::from_static("x-api-key"));
/// let config = Config::new().record(recording);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Recording {
    out: Arc<Mutex<Out>>,
    redaction: Redaction,
}

struct Out {
    writer: Box<dyn Write + Send>,
    error: Option<io::Error>,
}

impl fmt::Debug for Recording {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recording")
            .field("redaction", &self.redaction)
            .finish_non_exhaustive()
    }
}

impl Recording {
    /// Records to `writer`, line by line as inputs arrive (wrap a file in a
    /// [`io::LineWriter`] so that a crash loses nothing, or use [`to_file`](Self::to_file)).
    /// Secrets are redacted as [`Redaction::default`] says.
    pub fn to_writer(writer: impl Write + Send + 'static) -> Self {
        Self {
            out: Arc::new(Mutex::new(Out {
                writer: Box::new(writer),
                error: None,
            })),
            redaction: Redaction::default(),
        }
    }

    /// Creates (or truncates) the file at `path` and records to it, each line written
    /// through as it is recorded.
    pub fn to_file(path: impl AsRef<Path>) -> io::Result<Self> {
        let file = std::fs::File::create(path)?;
        Ok(Self::to_writer(io::LineWriter::new(file)))
    }

    /// Also redacts the values of header `name` (besides `Authorization`, `Cookie`,
    /// `Proxy-Authorization` and `Set-Cookie`).
    pub fn redact(mut self, name: http::HeaderName) -> Self {
        self.redaction = self.redaction.header(name);
        self
    }

    /// Also redacts the value of URL query parameter `name` (besides
    /// [`QUERY_DEFAULTS`](wxsocket_core::transcript::QUERY_DEFAULTS)).
    pub fn redact_query(mut self, name: &str) -> Self {
        self.redaction = self.redaction.query(name);
        self
    }

    /// Replaces the redaction list.
    pub fn redaction(mut self, redaction: Redaction) -> Self {
        self.redaction = redaction;
        self
    }

    /// Starts `session` recording here (adapters call it right after creating the
    /// session, before its first input).
    pub fn attach(&self, session: &mut Session) {
        session.start_recording(self.redaction.clone(), self.sink());
    }

    /// Starts the session of wx core `socket` recording here (as [`Self::attach`]).
    pub fn attach_wx(&self, socket: &mut wxsocket_core::wx::WxSocket) {
        socket.start_recording(self.redaction.clone(), self.sink());
    }

    /// The session's sink: each line to the writer, until a write fails.
    fn sink(&self) -> impl FnMut(&str) + Send + 'static {
        let out = Arc::clone(&self.out);
        move |line| {
            let mut out = out.lock().unwrap_or_else(PoisonError::into_inner);
            if out.error.is_some() {
                return;
            }
            let written = out
                .writer
                .write_all(line.as_bytes())
                .and_then(|()| out.writer.write_all(b"\n"));
            if let Err(e) = written {
                out.error = Some(e);
            }
        }
    }

    /// Flushes the writer (a client's session flushes nothing itself).
    pub fn flush(&self) -> io::Result<()> {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.writer.flush()
    }

    /// The write error that stopped the recording, if one did.
    pub fn error(&self) -> Option<String> {
        let out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        out.error.as_ref().map(ToString::to_string)
    }
}

/// Why a client, task pool or wx socket could not start. Nothing was dialled either way.
///
/// ```
/// # use wxsocket_wire::reexports::{ConfigError, StartError};
/// let refused = std::io::Error::from_raw_os_error(24); // EMFILE on Linux
/// let error = StartError::os("create the OS poller", &refused);
/// assert!(error.is_temporary());
/// assert_eq!(error.raw_os_error(), Some(24));
/// assert!(error.to_string().starts_with("could not create the OS poller: "));
/// let invalid = StartError::from(ConfigError::new("tls", "no usable roots"));
/// assert!(!invalid.is_temporary());
/// assert_eq!(invalid.field(), Some("tls"));
/// assert_eq!(invalid.to_string(), "tls: no usable roots");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A configuration value is out of range, or the adapter cannot run where it was
    /// called (the tokio adapter outside a runtime with timers and IO): the field is named,
    /// and the same call fails the same way until it is fixed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The operating system refused what the driver needs, most often because the process
    /// is out of open files or threads (`ulimit -n`, `ulimit -u`). Nothing is wrong with the
    /// configuration: the same call may succeed once the process has freed some.
    #[error("could not {needed}: {message}")]
    #[non_exhaustive]
    Os {
        /// What the driver could not get: "create the OS poller", "start the driver
        /// thread", …
        needed: &'static str,
        /// What the OS said, as [`std::io::Error`] displays it.
        message: String,
        /// Its kind.
        kind: io::ErrorKind,
        /// Its OS error code (`EMFILE`, `EAGAIN`, …), when it has one.
        raw_os_error: Option<i32>,
    },
}

impl StartError {
    /// The OS refused what the driver `needed` with `error`.
    pub fn os(needed: &'static str, error: &io::Error) -> Self {
        StartError::Os {
            needed,
            message: error.to_string(),
            kind: error.kind(),
            raw_os_error: error.raw_os_error(),
        }
    }

    /// Whether the same call may succeed later without a change to the configuration (the
    /// OS refused a resource), rather than failing the same way until it is fixed.
    pub fn is_temporary(&self) -> bool {
        matches!(self, StartError::Os { .. })
    }

    /// The field at fault, when the configuration is.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            StartError::Config(invalid) => Some(invalid.field),
            _ => None,
        }
    }

    /// The OS error code, when the OS refused something.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            StartError::Os { raw_os_error, .. } => *raw_os_error,
            _ => None,
        }
    }
}

/// Why a send that waits for its completion did not confirm a write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendFailed {
    /// The send was refused at once (not connected, closing, queue or buffer full, too
    /// large); the message is in the error.
    #[error(transparent)]
    Refused(#[from] SendError),
    /// The message was accepted but will never be written (connection lost, replaced, …):
    /// why, and the message when it never left the session, as in the `SendFailed` event.
    /// (A tokio `Sink` reports its failures together, without their messages.)
    #[error(transparent)]
    Failed(FailedSend),
}

impl SendFailed {
    /// The message handed back: a refused one always, a failed one when it never left the
    /// session.
    ///
    /// ```
    /// # use wxsocket_wire::reexports::{FailedSend, Message, SendError, SendFailed, SendFailure};
    /// let refused = SendFailed::Refused(SendError::NotConnected(Message::text("a")));
    /// assert_eq!(refused.into_message(), Some(Message::text("a")));
    /// let queued = FailedSend::new(SendFailure::ConnectFailed, Some(Message::text("b")));
    /// assert_eq!(SendFailed::Failed(queued).into_message(), Some(Message::text("b")));
    /// let written = FailedSend::new(SendFailure::ConnectionLost, None);
    /// assert_eq!(SendFailed::Failed(written).into_message(), None);
    /// ```
    pub fn into_message(self) -> Option<Message> {
        match self {
            SendFailed::Refused(refused) => Some(refused.into_message()),
            SendFailed::Failed(failed) => failed.message,
        }
    }
}

/// A connection's TCP socket as the OS reports it, read back after the dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketInfo {
    /// The local address.
    pub local_addr: SocketAddr,
    /// The server's address (the proxy's, through a proxy).
    pub peer_addr: SocketAddr,
    /// Whether `TCP_NODELAY` is set (as the socket reports it).
    pub nodelay: bool,
    /// Whether the connection uses TLS.
    pub tls: bool,
    /// Whether the connection tunnels through an HTTP or SOCKS5 proxy (then `peer_addr` is
    /// the proxy's address).
    pub proxied: bool,
}

impl SocketInfo {
    /// What a driver read back from its socket.
    pub fn new(local_addr: SocketAddr, peer_addr: SocketAddr, nodelay: bool, tls: bool) -> Self {
        Self {
            local_addr,
            peer_addr,
            nodelay,
            tls,
            proxied: false,
        }
    }

    /// The same socket, marked as tunnelling through a proxy.
    pub fn through_proxy(mut self) -> Self {
        self.proxied = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use wxsocket_core::{ConnectOptions, Session};

    /// A writer that fails after `ok` writes.
    struct Failing {
        ok: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.ok == 0 {
                return Err(io::Error::other("disk full"));
            }
            self.ok -= 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_write_error_stops_the_recording_not_the_session() {
        let recording = Recording::to_writer(Failing { ok: 3 });
        let mut session = Session::new(SessionConfig::default()).unwrap();
        recording.attach(&mut session);
        let now = Instant::now();
        for _ in 0..3 {
            session
                .connect(&ConnectOptions::new("ws://127.0.0.1:9"), now)
                .unwrap();
            while session.poll_action().is_some() {}
            while session.poll_event().is_some() {}
        }
        assert_eq!(recording.error().as_deref(), Some("disk full"));
        assert_eq!(session.current().map(|c| c.get()), Some(3));
    }
}
