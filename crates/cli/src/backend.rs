//! One synchronous face over the two adapters, so the demo and `connect` are written once.
//!
//! Both `wxsocket_tokio::Client` and `wxsocket_blocking::Client` have the same calls; their
//! events are forwarded (by a thread) into a bounded `std::sync::mpsc` channel that the
//! command's own loop reads.

use std::sync::OnceLock;
use std::sync::mpsc::SyncSender;
use tokio::runtime::Runtime;
use wxsocket_core::{
    CloseError, ConnId, ConnectError, ConnectOptions, Event, Message, ReadyState, SendError, SendId,
};
use wxsocket_tokio::{Config, StartError};

/// Runs `f`, turning a panic on this thread into an error that says what the panic said,
/// without the panic hook's report on stderr (a refusal of the OS that tokio panics at is
/// reported as the command's own error or warning, once). Panics on other threads meanwhile
/// are reported as usual.
pub fn quietly<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> std::io::Result<T> {
    let hook = std::sync::Arc::new(std::panic::take_hook());
    let this = std::thread::current().id();
    let others = std::sync::Arc::clone(&hook);
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != this {
            others(info);
        }
    }));
    let ran = std::panic::catch_unwind(f);
    std::panic::set_hook(Box::new(move |info| hook(info)));
    ran.map_err(|panic| {
        let message = wxsocket_wire::connection::panic_message(&*panic);
        std::io::Error::other(format!("tokio: {message}"))
    })
}

/// The process-wide tokio runtime (two worker threads), created on first use. The tokio
/// adapter, the forwarders and the embedded echo server run on it. Fails when the OS refuses
/// its threads or its poller (out of threads or open files); a later call tries again. (When
/// the OS gives it one worker thread and refuses the second, tokio 1.54 hangs as it unwinds:
/// its blocking pool waits for the first worker, which nothing stops.)
pub fn runtime() -> std::io::Result<&'static Runtime> {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    if let Some(runtime) = RUNTIME.get() {
        return Ok(runtime);
    }
    // tokio panics when the OS refuses a worker thread.
    let built = quietly(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wxsocket-rt")
            .enable_all()
            .build()
    })??;
    // Another thread may have made one meanwhile: the first stays, this one is dropped.
    Ok(RUNTIME.get_or_init(|| built))
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

/// A session handle of either adapter. Dropping it lets the adapter close what is still
/// open; the forwarder then sends the `end` item given to [`Backend::start`].
pub struct Backend {
    inner: Inner,
}

/// Events waiting in the channel to the command's loop: a bounded channel, so a command
/// that cannot write its output fast enough (stdout is a pipe nobody reads) stops taking
/// events, the adapter's own bounds fill, and reading from the server pauses.
pub const EVENT_CHANNEL: usize = 64;

impl Backend {
    /// Starts a session; every event is passed through `wrap` and sent on `tx`, in order,
    /// waiting while the channel is full; when the adapter has finished (every handle gone,
    /// every transport closed), `end` follows.
    pub fn start<T: Send + 'static>(
        kind: Kind,
        config: Config,
        tx: SyncSender<T>,
        wrap: fn(Event) -> T,
        end: Option<T>,
    ) -> Result<Backend, StartError> {
        // The forwarder keeps taking events after the receiver is gone (they are dropped),
        // so that it ends only with the stream, when the adapter has finished.
        let forward = move |next: &mut dyn FnMut() -> Option<Event>| {
            let mut tx = Some(tx);
            while let Some(event) = next() {
                if tx.as_ref().is_some_and(|t| t.send(wrap(event)).is_err()) {
                    tx = None;
                }
            }
            if let (Some(tx), Some(end)) = (tx, end) {
                let _ = tx.send(end);
            }
        };
        let thread_error = |e| StartError::os("start the event thread", &e);
        let inner = match kind {
            Kind::Tokio => {
                let rt = runtime().map_err(|e| StartError::os("start the tokio runtime", &e))?;
                let _entered = rt.enter();
                let (client, mut events) = wxsocket_tokio::Client::new(config)?;
                // A thread of its own, as sending waits while the channel is full.
                std::thread::Builder::new()
                    .name("wxsocket-events".into())
                    .spawn(move || forward(&mut || rt.block_on(events.next())))
                    .map_err(thread_error)?;
                Inner::Tokio(client)
            }
            Kind::Blocking => {
                let (client, events) = wxsocket_blocking::Client::new(config)?;
                std::thread::Builder::new()
                    .name("wxsocket-events".into())
                    .spawn(move || forward(&mut || events.recv()))
                    .map_err(thread_error)?;
                Inner::Blocking(client)
            }
        };
        Ok(Backend { inner })
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
