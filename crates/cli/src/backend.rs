//! One synchronous face over the two adapters, so the demo and `connect` are written once.
//!
//! Both `wxsocket_tokio::Client` and `wxsocket_blocking::Client` have the same calls; their
//! events are forwarded (a tokio task, or a thread) into a `std::sync::mpsc` channel that
//! the command's own loop reads.

use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::Duration;
use tokio::runtime::Runtime;
use wxsocket_core::{
    CloseError, ConfigError, ConnId, ConnectError, ConnectOptions, Event, Message, ReadyState,
    SendError, SendId, SessionConfig,
};
use wxsocket_tokio::TlsRoots;

/// The process-wide tokio runtime (two worker threads), created on first use. The tokio
/// adapter, the forwarders and the embedded echo server run on it.
pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wxsocket-rt")
            .enable_all()
            .build()
            .expect("cannot start the tokio runtime")
    })
}

/// Which adapter drives the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `wxsocket-tokio`.
    Tokio,
    /// `wxsocket-blocking`.
    Blocking,
}

impl Kind {
    /// The adapter's crate name.
    pub fn crate_name(self) -> &'static str {
        match self {
            Kind::Tokio => "wxsocket-tokio",
            Kind::Blocking => "wxsocket-blocking",
        }
    }
}

enum Inner {
    Tokio(wxsocket_tokio::Client),
    Blocking(wxsocket_blocking::Client),
}

/// A session handle of either adapter.
pub struct Backend {
    inner: Inner,
    /// Disconnected once the adapter's event stream has ended: every handle is gone and
    /// every transport closed (the forwarder holds the sender until then).
    finished: Receiver<()>,
}

impl Backend {
    /// Starts a session; every event is passed through `wrap` and sent on `tx`, in order.
    pub fn start<T: Send + 'static>(
        kind: Kind,
        session: SessionConfig,
        tls: TlsRoots,
        tx: Sender<T>,
        wrap: fn(Event) -> T,
    ) -> Result<Backend, ConfigError> {
        // The forwarder keeps taking events after the receiver is gone (they are dropped),
        // so that it ends only with the stream, when the adapter has finished.
        let (finishing, finished) = mpsc::channel::<()>();
        let forward = move |event: Event, tx: &mut Option<Sender<T>>| {
            if tx.as_ref().is_some_and(|t| t.send(wrap(event)).is_err()) {
                *tx = None;
            }
        };
        let inner = match kind {
            Kind::Tokio => {
                let rt = runtime();
                let _entered = rt.enter();
                let config = wxsocket_tokio::Config::default().session(session).tls(tls);
                let (client, mut events) = wxsocket_tokio::Client::new(config)?;
                rt.spawn(async move {
                    let _finishing = finishing;
                    let mut tx = Some(tx);
                    while let Some(event) = events.next().await {
                        forward(event, &mut tx);
                    }
                });
                Inner::Tokio(client)
            }
            Kind::Blocking => {
                let config = wxsocket_blocking::Config::default()
                    .session(session)
                    .tls(tls);
                let (client, events) = wxsocket_blocking::Client::new(config)?;
                std::thread::Builder::new()
                    .name("wxsocket-events".into())
                    .spawn(move || {
                        let _finishing = finishing;
                        let mut tx = Some(tx);
                        for event in events {
                            forward(event, &mut tx);
                        }
                    })
                    .map_err(|_| ConfigError {
                        field: "thread",
                        problem: "cannot start the event thread",
                    })?;
                Inner::Blocking(client)
            }
        };
        Ok(Backend { inner, finished })
    }

    /// Drops the session handle, so the adapter closes what is still open, and waits at
    /// most `limit` until it has finished: every transport closed, including sockets that
    /// were replaced and are still finishing their close handshake in the background. A
    /// process that exits without this can cut a close frame off. Returns whether the
    /// adapter finished in time (its own bound is the close timeout).
    pub fn shutdown(self, limit: Duration) -> bool {
        let Backend { inner, finished } = self;
        drop(inner);
        matches!(
            finished.recv_timeout(limit),
            Err(RecvTimeoutError::Disconnected)
        )
    }

    /// `wx.connectSocket`.
    pub fn connect(&self, options: &ConnectOptions) -> Result<ConnId, ConnectError> {
        match &self.inner {
            Inner::Tokio(c) => c.connect(options),
            Inner::Blocking(c) => c.connect(options),
        }
    }

    /// `wx.sendSocketMessage` (completion arrives as an event).
    pub fn send(&self, message: Message) -> Result<SendId, SendError> {
        match &self.inner {
            Inner::Tokio(c) => c.try_send(message),
            Inner::Blocking(c) => c.try_send(message),
        }
    }

    /// `wx.closeSocket`.
    pub fn close(&self, code: Option<u16>, reason: &str) -> Result<(), CloseError> {
        match &self.inner {
            Inner::Tokio(c) => c.close(code, reason),
            Inner::Blocking(c) => c.close(code, reason),
        }
    }

    /// `readyState`.
    pub fn state(&self) -> ReadyState {
        match &self.inner {
            Inner::Tokio(c) => c.state(),
            Inner::Blocking(c) => c.state(),
        }
    }

    /// The connection in progress, if any.
    pub fn current(&self) -> Option<ConnId> {
        match &self.inner {
            Inner::Tokio(c) => c.current(),
            Inner::Blocking(c) => c.current(),
        }
    }

    /// The current connection's socket as the OS reports it (addresses, `TCP_NODELAY`).
    pub fn socket_info(&self) -> Option<wxsocket_tokio::SocketInfo> {
        match &self.inner {
            Inner::Tokio(c) => c.socket_info(),
            Inner::Blocking(c) => c.socket_info(),
        }
    }
}
