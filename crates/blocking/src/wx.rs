//! The seed's seven calls (SPEC §5) over std threads: [`WxSocket`] with `connect_socket`,
//! `send_socket_message`, `close_socket` and the four `on_socket_*` listeners, built on
//! [`wxsocket_core::wx::WxSocket`].
//!
//! Every callback (listeners and `success` / `fail` / `complete`) runs on the driver thread,
//! in order, outside any lock: a callback may call back into the socket (the seed's
//! pattern of sending inside `onSocketOpen`). Like JavaScript callbacks, they run after the
//! call that caused them has returned.
//!
//! A callback that keeps a clone of the socket keeps the socket alive (a reference
//! cycle); capture a [`WeakWxSocket`] from [`WxSocket::downgrade`] instead when the socket
//! should close once the application drops it.

use crate::Config;
use crate::client::ApiHandle;
use crate::driver::Shared;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
type Handle<M> = ApiHandle<M>;
use wxsocket_core::wx as core_wx;
use wxsocket_core::{ConfigError, ConnId, ConnectOptions, Message, ReadyState, SendId};

pub use wxsocket_core::wx::{CallResult, CloseResult, ErrorResult, MessageResult, OpenResult};

type Core = core_wx::WxSocket;
type Callback = Box<dyn FnOnce(&CallResult) + Send>;

/// The `success` / `fail` / `complete` trio of a call.
#[derive(Default)]
struct Callbacks {
    success: Option<Callback>,
    fail: Option<Callback>,
    complete: Option<Callback>,
}

impl fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callbacks")
            .field("success", &self.success.is_some())
            .field("fail", &self.fail.is_some())
            .field("complete", &self.complete.is_some())
            .finish()
    }
}

/// Wraps `f` so that the core only queues it for the driver thread.
fn deferred(shared: &Arc<Shared<Core>>, f: Callback) -> impl FnOnce(&CallResult) + Send + 'static {
    let shared = Arc::downgrade(shared);
    move |result: &CallResult| {
        let result = result.clone();
        if let Some(shared) = shared.upgrade() {
            shared.defer(Box::new(move || f(&result)));
        }
    }
}

macro_rules! call_type {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* pub $field:ident: $ty:ty),* }) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty,)*
            callbacks: Callbacks,
        }

        impl $name {
            /// Sets the `success` callback.
            pub fn success(mut self, f: impl FnOnce(&CallResult) + Send + 'static) -> Self {
                self.callbacks.success = Some(Box::new(f));
                self
            }
            /// Sets the `fail` callback.
            pub fn fail(mut self, f: impl FnOnce(&CallResult) + Send + 'static) -> Self {
                self.callbacks.fail = Some(Box::new(f));
                self
            }
            /// Sets the `complete` callback (runs after `success` or `fail`).
            pub fn complete(mut self, f: impl FnOnce(&CallResult) + Send + 'static) -> Self {
                self.callbacks.complete = Some(Box::new(f));
                self
            }
        }
    };
}

call_type! {
    /// `wx.connectSocket(OBJECT)`: options and callbacks. `success` means the call was
    /// accepted, not that the socket opened (that is `onSocketOpen`).
    ConnectSocket {
        /// The connect options (`url`, `data`, `header`, `method`, `protocols`,
        /// `tcpNoDelay`, `perMessageDeflate`, `timeout`).
        pub options: ConnectOptions
    }
}

call_type! {
    /// `wx.sendSocketMessage({data})`. `success` runs once the message is written.
    SendSocketMessage {
        /// The message (`data`).
        pub data: Message
    }
}

call_type! {
    /// `wx.closeSocket({code, reason})`.
    CloseSocket {
        /// Close code (1000 when `None`, else 3000–4999).
        pub code: Option<u16>,
        /// Close reason (at most 123 UTF-8 bytes).
        pub reason: String
    }
}

impl ConnectSocket {
    /// A call with these options and no callbacks.
    pub fn new(options: ConnectOptions) -> Self {
        Self {
            options,
            callbacks: Callbacks::default(),
        }
    }
}

impl SendSocketMessage {
    /// A send of `data` with no callbacks.
    pub fn new(data: impl Into<Message>) -> Self {
        Self {
            data: data.into(),
            callbacks: Callbacks::default(),
        }
    }
}

impl CloseSocket {
    /// A normal close (1000) with no reason.
    pub fn new() -> Self {
        Self::with_code(None, "")
    }

    /// A close with a code and reason.
    pub fn with(code: u16, reason: impl Into<String>) -> Self {
        Self::with_code(Some(code), reason)
    }

    fn with_code(code: Option<u16>, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
            callbacks: Callbacks::default(),
        }
    }
}

impl Default for CloseSocket {
    fn default() -> Self {
        Self::new()
    }
}

macro_rules! attach {
    ($shared:expr, $call:expr, $callbacks:expr) => {{
        let mut call = $call;
        let Callbacks {
            success,
            fail,
            complete,
        } = $callbacks;
        if let Some(f) = success {
            call = call.success(deferred($shared, f));
        }
        if let Some(f) = fail {
            call = call.fail(deferred($shared, f));
        }
        if let Some(f) = complete {
            call = call.complete(deferred($shared, f));
        }
        call
    }};
}

/// The seed's socket API over std threads. Cheap to clone, `Send + Sync`; every clone is the
/// same socket. Dropping every clone closes the connection cleanly.
///
/// ```no_run
/// use wxsocket_blocking::wx::{ConnectSocket, SendSocketMessage, WxSocket};
/// use wxsocket_blocking::{Config, ConnectOptions};
///
/// # fn demo() {
/// let wx = WxSocket::new(Config::default()).unwrap();
/// let weak = wx.downgrade();
/// wx.on_socket_open(move |_| {
///     // Runs on the driver thread; calling back into the socket is fine.
///     if let Some(wx) = weak.upgrade() {
///         let _ = wx.send_socket_message(SendSocketMessage::new("hello"));
///     }
/// });
/// wx.on_socket_message(|res| println!("message: {:?}", res.data));
/// wx.connect_socket(ConnectSocket::new(ConnectOptions::new("wss://example.com/ws")))
///     .unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct WxSocket {
    inner: Arc<Handle<Core>>,
}

/// A [`WxSocket`] that does not keep the socket alive; for callbacks that call back into
/// it.
#[derive(Clone)]
pub struct WeakWxSocket {
    inner: Weak<Handle<Core>>,
}

impl fmt::Debug for WeakWxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakWxSocket").finish_non_exhaustive()
    }
}

impl WeakWxSocket {
    /// The socket, if some clone of it still exists.
    pub fn upgrade(&self) -> Option<WxSocket> {
        self.inner.upgrade().map(|inner| WxSocket { inner })
    }
}

impl fmt::Debug for WxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WxSocket")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl WxSocket {
    /// A socket with its own driver thread.
    pub fn new(config: Config) -> Result<WxSocket, ConfigError> {
        let core = Core::new(config.session.clone())?;
        let shared = Shared::start(core, &config, "wx")?;
        // Callbacks are the only output; no event queue is kept.
        shared.events_alive.store(false, Ordering::Release);
        Ok(WxSocket {
            inner: Arc::new(ApiHandle { shared }),
        })
    }

    /// A handle that does not keep the socket alive.
    pub fn downgrade(&self) -> WeakWxSocket {
        WeakWxSocket {
            inner: Arc::downgrade(&self.inner),
        }
    }

    fn shared(&self) -> &Arc<Shared<Core>> {
        &self.inner.shared
    }

    /// Runs a core call, then lets the driver run the callbacks it queued.
    fn call<R>(&self, f: impl FnOnce(&mut Core, std::time::Instant) -> R) -> R {
        let result = self.shared().call(f);
        if self.shared().has_jobs() {
            self.shared().wake();
        }
        result
    }

    /// `wx.connectSocket`. Replaces a connection that exists (the seed's single-socket
    /// rule). Options this adapter cannot honour fail like invalid ones.
    pub fn connect_socket(&self, call: ConnectSocket) -> Result<ConnId, CallResult> {
        let ConnectSocket { options, callbacks } = call;
        let shared = Arc::clone(self.shared());
        // Options this adapter cannot honour (the core accepts them) fail the call here.
        let unsupported = options
            .validate()
            .ok()
            .and_then(|request| wxsocket_wire::check_supported(&request).err());
        if let Some(error) = unsupported {
            let result = CallResult {
                err_msg: format!("connectSocket:fail {error}"),
            };
            for f in [callbacks.fail, callbacks.complete].into_iter().flatten() {
                let r = result.clone();
                shared.defer(Box::new(move || f(&r)));
            }
            shared.wake();
            return Err(result);
        }
        let core_call = attach!(&shared, core_wx::ConnectSocket::new(options), callbacks);
        self.call(|core, now| core.connect_socket(core_call, now))
    }

    /// `wx.sendSocketMessage`. Queued while connecting; `success` once written; `fail` when
    /// refused or when the message can no longer be written.
    pub fn send_socket_message(&self, call: SendSocketMessage) -> Result<SendId, CallResult> {
        let SendSocketMessage { data, callbacks } = call;
        let core_call = attach!(
            self.shared(),
            core_wx::SendSocketMessage::new(data),
            callbacks
        );
        self.call(|core, now| core.send_socket_message(core_call, now))
    }

    /// `wx.closeSocket`.
    pub fn close_socket(&self, call: CloseSocket) -> Result<(), CallResult> {
        let CloseSocket {
            code,
            reason,
            callbacks,
        } = call;
        let base = match code {
            Some(code) => core_wx::CloseSocket::with(code, reason),
            None => core_wx::CloseSocket::new(),
        };
        let core_call = attach!(self.shared(), base, callbacks);
        self.call(|core, now| core.close_socket(core_call, now))
    }

    /// `wx.onSocketOpen`: replaces the previous listener.
    pub fn on_socket_open(&self, f: impl FnMut(&OpenResult) + Send + 'static) {
        let listener = self.listener(f);
        self.call(|core, _| core.on_socket_open(listener));
    }

    /// `wx.onSocketError`: replaces the previous listener.
    pub fn on_socket_error(&self, f: impl FnMut(&ErrorResult) + Send + 'static) {
        let listener = self.listener(f);
        self.call(|core, _| core.on_socket_error(listener));
    }

    /// `wx.onSocketMessage`: replaces the previous listener.
    pub fn on_socket_message(&self, f: impl FnMut(&MessageResult) + Send + 'static) {
        let listener = self.listener(f);
        self.call(|core, _| core.on_socket_message(listener));
    }

    /// `wx.onSocketClose`: replaces the previous listener.
    pub fn on_socket_close(&self, f: impl FnMut(&CloseResult) + Send + 'static) {
        let listener = self.listener(f);
        self.call(|core, _| core.on_socket_close(listener));
    }

    /// The state (`readyState`).
    pub fn state(&self) -> ReadyState {
        self.shared().read(|core| core.session().state())
    }

    /// Bytes accepted but not yet written.
    pub fn buffered_amount(&self) -> usize {
        self.shared().read(|core| core.session().buffered_amount())
    }

    /// A listener for the core that queues `f` for the driver thread.
    fn listener<T: Clone + Send + 'static>(
        &self,
        f: impl FnMut(&T) + Send + 'static,
    ) -> impl FnMut(&T) + Send + 'static {
        let shared = Arc::downgrade(self.shared());
        let f = Arc::new(Mutex::new(f));
        move |value: &T| {
            let value = value.clone();
            let f = Arc::clone(&f);
            if let Some(shared) = shared.upgrade() {
                shared.defer(Box::new(move || {
                    (f.lock().unwrap_or_else(PoisonError::into_inner))(&value);
                }));
            }
        }
    }
}
