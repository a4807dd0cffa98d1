//! The seven socket calls of WeChat's `wx.connectSocket` API, by their snake_case names,
//! with `success` / `fail` / `complete` callbacks and WeChat's error messages. Written once
//! here, over [`Session`], with no IO, so both adapters expose the same surface.
//!
//! WeChat's surface has no word for what it lacks: with a reconnect policy, each connection
//! that ends calls `onSocketError` (when it failed) and `onSocketClose`, and the next dial
//! is not announced (there is no `Reconnecting` callback); a `fail` callback gets WeChat's
//! `errMsg` only, not the message that was not sent. An application that needs either uses
//! the session's events ([`Session`], or an adapter's `Client`) instead.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use std::time::Instant;
//! use wxsocket_core::wx::*;
//! use wxsocket_core::{ConnectOptions, Message, SessionConfig};
//!
//! let log = Arc::new(Mutex::new(Vec::new()));
//! let mut wx = WxSocket::new(SessionConfig::default()).unwrap();
//! let l = log.clone();
//! wx.on_socket_open(move |_| l.lock().unwrap().push("open".to_string()));
//!
//! // sendSocketMessage before connectSocket fails in WeChat's words.
//! let l = log.clone();
//! let sent = wx.send_socket_message(
//!     SendSocketMessage::new(Message::text("hi")).fail(move |r| l.lock().unwrap().push(r.err_msg.clone())),
//!     Instant::now(),
//! );
//! assert!(sent.is_err());
//! assert_eq!(log.lock().unwrap()[0], "sendSocketMessage:fail WebSocket is not connected");
//!
//! let l = log.clone();
//! wx.connect_socket(
//!     ConnectSocket::new(ConnectOptions::new("wss://example.com")).success(move |r| l.lock().unwrap().push(r.err_msg.clone())),
//!     Instant::now(),
//! )
//! .unwrap();
//! assert_eq!(log.lock().unwrap()[1], "connectSocket:ok");
//! ```

use crate::driven::Driven;
use crate::error::ConfigError;
use crate::event::Event;
use crate::ids::{ConnId, SendId};
use crate::message::Message;
use crate::request::{ConnectOptions, HandshakeRequest};
use crate::session::Session;
use crate::transport::{Action, TransportEvent};
use crate::{ConnectError, ConnectionError, SessionConfig};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// What a `success` / `fail` / `complete` callback receives: `errMsg` as WeChat writes it,
/// `"<api>:ok"` or `"<api>:fail <reason>"`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallResult {
    /// `connectSocket:ok`, `sendSocketMessage:fail WebSocket is not connected`, …
    pub err_msg: String,
}

impl CallResult {
    fn ok(api: &str) -> Self {
        Self {
            err_msg: format!("{api}:ok"),
        }
    }

    fn fail(api: &str, reason: impl fmt::Display) -> Self {
        Self {
            err_msg: format!("{api}:fail {reason}"),
        }
    }

    /// Whether the call succeeded.
    pub fn is_ok(&self) -> bool {
        self.err_msg.ends_with(":ok")
    }
}

impl fmt::Display for CallResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.err_msg)
    }
}

/// A failed call's result is the error of the adapters' `connect_socket`,
/// `send_socket_message` and `close_socket`, so `?` takes it into `Box<dyn Error>`.
impl std::error::Error for CallResult {}

/// A one-shot callback of a call.
pub type Callback = Box<dyn FnOnce(&CallResult) + Send>;

/// The `success` / `fail` / `complete` trio of a call. `complete` runs after either.
#[derive(Default)]
pub struct Callbacks {
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

impl Callbacks {
    /// `success` or `fail`, then `complete`, as one job (none when no callback is set).
    /// The callback that does not run goes with the job and is dropped when it has run: a
    /// driver runs jobs outside its lock, and dropping a callback may drop the last handle
    /// of the socket, whose drop takes that lock.
    fn finish(self, result: &CallResult) -> Option<Job> {
        let Callbacks {
            success,
            fail,
            complete,
        } = self;
        let (first, unused) = if result.is_ok() {
            (success, fail)
        } else {
            (fail, success)
        };
        if first.is_none() && complete.is_none() && unused.is_none() {
            return None;
        }
        let result = result.clone();
        Some(Box::new(move || {
            // `complete` runs whatever `success` or `fail` did, a panic included; the panic
            // then goes on to whoever runs the job (a driver logs it and runs the next).
            let first = first
                .map(|f| std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&result))));
            if let Some(f) = complete {
                f(&result);
            }
            drop(unused);
            if let Some(Err(panic)) = first {
                std::panic::resume_unwind(panic);
            }
        }))
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A callback that is due, handed out by a deferred [`WxSocket`]
/// ([`WxSocket::poll_callback`]) so the driver can run it outside its lock.
pub struct PendingCallback(Job);

impl PendingCallback {
    /// Runs the callback.
    pub fn run(self) {
        (self.0)()
    }
}

impl fmt::Debug for PendingCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingCallback")
    }
}

macro_rules! with_callbacks {
    ($ty:ty) => {
        impl $ty {
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

/// `wx.connectSocket(OBJECT)`: the options and callbacks. `success` means the call was
/// accepted, not that the socket opened (that is `onSocketOpen`).
#[derive(Debug)]
pub struct ConnectSocket {
    /// The connect options (`url`, `data`, `header`, `method`, `protocols`, `tcpNoDelay`,
    /// `perMessageDeflate`, `timeout`).
    pub options: ConnectOptions,
    callbacks: Callbacks,
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
with_callbacks!(ConnectSocket);

/// `wx.sendSocketMessage({data})`. `success` runs once the message is written to the socket.
#[derive(Debug)]
pub struct SendSocketMessage {
    /// The message (`data`).
    pub data: Message,
    callbacks: Callbacks,
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
with_callbacks!(SendSocketMessage);

/// `wx.closeSocket({code, reason})`.
#[derive(Debug, Default)]
pub struct CloseSocket {
    /// Close code (1000 when `None`, else 3000–4999).
    pub code: Option<u16>,
    /// Close reason (at most 123 UTF-8 bytes).
    pub reason: String,
    callbacks: Callbacks,
}

impl CloseSocket {
    /// A normal close (1000) with no reason.
    pub fn new() -> Self {
        Self::default()
    }

    /// A close with a code and reason.
    pub fn with(code: u16, reason: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            reason: reason.into(),
            callbacks: Callbacks::default(),
        }
    }
}
with_callbacks!(CloseSocket);

/// What `onSocketOpen` receives. Fields may be added (it is `#[non_exhaustive]`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenResult {
    /// The connection.
    pub conn: ConnId,
    /// The response headers (`res.header`).
    pub header: http::HeaderMap,
    /// The negotiated sub-protocol.
    pub protocol: Option<String>,
    /// The permessage-deflate parameters in force, when `perMessageDeflate` was agreed.
    pub deflate: Option<crate::DeflateParams>,
    /// How long each phase of the dial took (`res.profile`, as the newer
    /// `SocketTask.onOpen` reports it; see [`crate::OpenProfile`] for WeChat's names).
    pub profile: crate::OpenProfile,
}

/// What `onSocketMessage` receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MessageResult {
    /// The connection.
    pub conn: ConnId,
    /// The message (`res.data`).
    pub data: Message,
}

/// What `onSocketError` receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErrorResult {
    /// The connection.
    pub conn: ConnId,
    /// A readable message (`res.errMsg`).
    pub err_msg: String,
    /// The structured error.
    pub error: ConnectionError,
}

/// What `onSocketClose` receives.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseResult {
    /// The connection.
    pub conn: ConnId,
    /// Close code.
    pub code: u16,
    /// Close reason.
    pub reason: String,
    /// Whether the close handshake completed.
    pub clean: bool,
}

/// A listener slot, shared so a deferred call can reach it after the driver's lock is
/// released. The slot exists from the start, empty, and setting a listener puts the function
/// in it: a call queued before that reaches the listener set when it runs (the first one
/// too), so after `on_socket_message(new)` returns the old listener is never called again.
type Listener<T> = Arc<ListenerCell<T>>;

type ListenerFn<T> = Box<dyn FnMut(&T) + Send>;

/// One listener, whose calls never nest and never wait: a call that comes while the
/// listener runs (from inside it, when the listener makes its driver run the due
/// callbacks, or from another thread) is queued, and the running call makes it when the
/// listener returns, in order. The calls queued are jobs the socket had already made, so
/// this holds no more than they did.
struct ListenerCell<T> {
    state: Mutex<ListenerState<T>>,
}

struct ListenerState<T> {
    /// The listener. While a call runs it is out of here (with the call), and what is here
    /// is a listener set meanwhile, which replaces it when the call returns.
    f: Option<ListenerFn<T>>,
    running: bool,
    later: VecDeque<T>,
}

/// A running call's listener, put back when the call ends (by a panic too) unless another
/// was set meanwhile.
struct Running<'a, T> {
    cell: &'a ListenerCell<T>,
    f: Option<ListenerFn<T>>,
}

impl<T> Drop for Running<'_, T> {
    fn drop(&mut self) {
        // Only after a panic: a call that returns hands its listener back itself.
        let Some(f) = self.f.take() else {
            return;
        };
        let mut state = self.cell.lock();
        state.running = false;
        let old = match state.f {
            Some(_) => Some(f),
            None => state.f.replace(f),
        };
        drop(state);
        // A replaced listener is dropped outside the lock.
        drop(old);
    }
}

impl<T> ListenerCell<T> {
    /// An empty slot: calls made before a listener is set are dropped when they run.
    fn empty() -> Listener<T> {
        Arc::new(Self {
            state: Mutex::new(ListenerState {
                f: None,
                running: false,
                later: VecDeque::new(),
            }),
        })
    }

    /// Sets the listener, replacing the one before (if any).
    fn set(&self, f: impl FnMut(&T) + Send + 'static) {
        let old = self.lock().f.replace(Box::new(f));
        // Dropped outside the lock: a listener's captures may hold anything.
        drop(old);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ListenerState<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls the listener with `value`, after the calls queued before it (one left queued by
    /// a call that panicked included); while another call runs, queues it for that one.
    fn call(&self, value: T) {
        let (f, mut value) = {
            let mut state = self.lock();
            state.later.push_back(value);
            if state.running {
                return;
            }
            let Some(f) = state.f.take() else {
                return state.later.clear();
            };
            state.running = true;
            let value = state.later.pop_front().expect("the value just queued");
            (f, value)
        };
        let mut running = Running {
            cell: self,
            f: Some(f),
        };
        loop {
            if let Some(f) = running.f.as_mut() {
                f(&value);
            }
            let mut state = self.lock();
            // A listener set while this call ran takes the next calls.
            let old = state.f.take().and_then(|new| running.f.replace(new));
            let next = state.later.pop_front();
            if next.is_none() {
                // Handed back under the same lock that found nothing queued, so a call
                // queued after this one's last look is not left behind.
                state.f = running.f.take();
                state.running = false;
            }
            drop(state);
            drop(old);
            match next {
                Some(next) => value = next,
                None => return,
            }
        }
    }
}

/// WeChat's socket API over one [`Session`]. Calls return at once (their callbacks for an
/// immediate result run inside the call); listeners and send callbacks run in
/// [`dispatch`](Self::dispatch), which the driver calls after every turn. Dispatching takes
/// the session's events, and taking received messages frees room under the receive bounds:
/// a connection paused for flow control then gets [`Action::ResumeReading`], so the driver
/// carries out actions again after `dispatch` (while `self.session().has_output()`), or
/// that connection is never read again by a driver that waits for its next timer or a
/// readable socket.
///
/// A listener's calls never nest and never wait, as in JavaScript: an event due while its
/// listener runs (a driver that runs due callbacks from inside a listener, or on another
/// thread) is handed to the listener when the running call returns, in order.
pub struct WxSocket {
    session: Session,
    on_open: Listener<OpenResult>,
    on_error: Listener<ErrorResult>,
    on_message: Listener<MessageResult>,
    on_close: Listener<CloseResult>,
    /// Callbacks of sends accepted and not yet completed.
    sends: HashMap<SendId, Callbacks>,
    /// `Some` in deferred mode: due callbacks wait here for [`WxSocket::poll_callback`].
    deferred: Option<VecDeque<Job>>,
    /// Options the IO driver cannot honour fail `connectSocket` like invalid ones.
    connect_check: Option<ConnectCheck>,
}

/// Most callbacks waiting for the driver in deferred mode ([`WxSocket::dispatch`]).
pub const MAX_DUE_CALLBACKS: usize = 256;

/// A driver's check of a validated request (e.g. an option it does not implement, a proxy
/// it cannot use).
pub type ConnectCheck = Box<dyn Fn(&HandshakeRequest) -> Result<(), ConnectError> + Send>;

impl fmt::Debug for WxSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WxSocket")
            .field("session", &self.session)
            .field("pending_send_callbacks", &self.sends.len())
            .finish_non_exhaustive()
    }
}

const CONNECT: &str = "connectSocket";
const SEND: &str = "sendSocketMessage";
const CLOSE: &str = "closeSocket";

impl WxSocket {
    /// A socket surface over a new session. `send_completions(false)` is refused (field
    /// `send_completions`): every send reports to its `success` / `fail` / `complete`
    /// callbacks, which are run from the send's completion.
    pub fn new(config: SessionConfig) -> Result<Self, ConfigError> {
        if !config.send_completions {
            return Err(ConfigError::new(
                "send_completions",
                "a wx socket runs every send's success/fail/complete callbacks from \
                          its completion, so completions cannot be turned off",
            ));
        }
        Ok(Self {
            session: Session::new(config)?,
            on_open: ListenerCell::empty(),
            on_error: ListenerCell::empty(),
            on_message: ListenerCell::empty(),
            on_close: ListenerCell::empty(),
            sends: HashMap::new(),
            deferred: None,
            connect_check: None,
        })
    }

    /// A socket whose callbacks are not run in place but queued, for a driver that holds
    /// the socket behind a lock: it takes them with [`poll_callback`](Self::poll_callback)
    /// and runs them after releasing the lock, so a callback may call back into the socket
    /// (WeChat's pattern of sending inside `onSocketOpen`). As in JavaScript, callbacks
    /// then never run inside the call that caused them. A driver that runs them on another
    /// thread may run them before that call has returned to its caller, though: a `success`
    /// may run before the caller's next statement (store what it needs before the call).
    pub fn deferred(config: SessionConfig) -> Result<Self, ConfigError> {
        let mut socket = Self::new(config)?;
        socket.deferred = Some(VecDeque::new());
        Ok(socket)
    }

    /// Makes `connect_socket` also refuse what `check` refuses, before any IO.
    pub fn set_connect_check(
        &mut self,
        check: impl Fn(&HandshakeRequest) -> Result<(), ConnectError> + Send + 'static,
    ) {
        self.connect_check = Some(Box::new(check));
    }

    /// The next due callback of a deferred socket (always `None` otherwise). Call
    /// [`dispatch`](Self::dispatch) first so the session's events become callbacks.
    pub fn poll_callback(&mut self) -> Option<PendingCallback> {
        self.deferred.as_mut()?.pop_front().map(PendingCallback)
    }

    /// Whether a deferred socket has callbacks waiting.
    pub fn has_callbacks(&self) -> bool {
        self.deferred.as_ref().is_some_and(|q| !q.is_empty())
    }

    /// Runs `job` now, or queues it in deferred mode.
    fn emit(&mut self, job: Option<Job>) {
        match (job, &mut self.deferred) {
            (Some(job), Some(queue)) => queue.push_back(job),
            (Some(job), None) => job(),
            (None, _) => {}
        }
    }

    /// The session underneath (state, buffered amount, …).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Records a transcript of the session underneath ([`Session::start_recording`]): the calls
    /// it is given, the transport input, the timers and the events it hands out, which the
    /// callbacks are made from. A replay ([`transcript::replay`](crate::transcript::replay))
    /// gives those events; it runs no callback. A connect refused before the session sees it
    /// (by the driver's check: an option it does not implement) is not in the transcript.
    pub fn start_recording(
        &mut self,
        redaction: crate::transcript::Redaction,
        sink: impl FnMut(&str) + Send + 'static,
    ) {
        self.session.start_recording(redaction, sink);
    }

    /// `wx.connectSocket`. Replaces a connection that exists (WeChat's single-socket rule).
    pub fn connect_socket(
        &mut self,
        call: ConnectSocket,
        now: Instant,
    ) -> Result<ConnId, CallResult> {
        let check = &self.connect_check;
        let result = call
            .options
            .validate()
            .and_then(|request| {
                if let Some(check) = check {
                    check(&request)?;
                }
                Ok(request)
            })
            .and_then(|request| self.session.connect_request(Arc::new(request), now));
        let outcome = match &result {
            Ok(_) => CallResult::ok(CONNECT),
            Err(e) => CallResult::fail(CONNECT, e),
        };
        let job = call.callbacks.finish(&outcome);
        self.emit(job);
        result.map_err(|_| outcome)
    }

    /// What the reconnect policy dials from its next attempt on (not a WeChat call: a
    /// reconnect policy is this library's; see [`Session::reconnect_with`]), refused as
    /// `connect_socket` refuses options, the driver's check included. No callback runs.
    pub fn reconnect_with(
        &mut self,
        options: &ConnectOptions,
        now: Instant,
    ) -> Result<(), ConnectError> {
        let request = options.validate()?;
        if let Some(check) = &self.connect_check {
            check(&request)?;
        }
        self.session.reconnect_with_request(Arc::new(request), now)
    }

    /// `wx.sendSocketMessage`. Queued while connecting; `success` once written (with
    /// delivery acknowledgement on, [`crate::Acknowledgement`], once the peer acknowledged
    /// it); `fail` at once when refused, or later when the message can no longer be written.
    pub fn send_socket_message(
        &mut self,
        call: SendSocketMessage,
        now: Instant,
    ) -> Result<SendId, CallResult> {
        match self.session.send(call.data, now) {
            Ok(id) => {
                self.sends.insert(id, call.callbacks);
                Ok(id)
            }
            Err(e) => {
                let outcome = CallResult::fail(SEND, e);
                let job = call.callbacks.finish(&outcome);
                self.emit(job);
                Err(outcome)
            }
        }
    }

    /// `wx.closeSocket`.
    pub fn close_socket(&mut self, call: CloseSocket, now: Instant) -> Result<(), CallResult> {
        let result = self.session.close(call.code, &call.reason, now);
        let outcome = match &result {
            Ok(()) => CallResult::ok(CLOSE),
            Err(e) => CallResult::fail(CLOSE, e),
        };
        let job = call.callbacks.finish(&outcome);
        self.emit(job);
        result.map_err(|_| outcome)
    }

    /// `wx.onSocketOpen`: replaces the previous listener, for every event from now on,
    /// those already dispatched and not yet run included (the replaced one is not called
    /// again; a call of it running now finishes).
    pub fn on_socket_open(&mut self, f: impl FnMut(&OpenResult) + Send + 'static) {
        self.on_open.set(f);
    }

    /// `wx.onSocketError`.
    pub fn on_socket_error(&mut self, f: impl FnMut(&ErrorResult) + Send + 'static) {
        self.on_error.set(f);
    }

    /// `wx.onSocketMessage`.
    pub fn on_socket_message(&mut self, f: impl FnMut(&MessageResult) + Send + 'static) {
        self.on_message.set(f);
    }

    /// `wx.onSocketClose`.
    pub fn on_socket_close(&mut self, f: impl FnMut(&CloseResult) + Send + 'static) {
        self.on_close.set(f);
    }

    /// Runs the listeners and send callbacks for every event the session has produced, in
    /// order. Returns how many events were handled.
    ///
    /// A callback run in place (a socket not [`deferred`](Self::deferred)) that panics
    /// unwinds out of `dispatch` (or out of the call that ran it); the events after it stay in
    /// the session, and the next `dispatch` goes on from there. A send's `complete` still
    /// runs when its `success` or `fail` panics.
    pub fn dispatch(&mut self) -> usize {
        let mut n = 0;
        // In deferred mode, at most `MAX_DUE_CALLBACKS` wait: the rest of the events stay
        // in the session, whose receive bounds then pause reading (flow control); the
        // driver dispatches again after running the callbacks.
        while self
            .deferred
            .as_ref()
            .is_none_or(|q| q.len() < MAX_DUE_CALLBACKS)
            && let Some(event) = self.session.poll_event()
        {
            n += 1;
            self.deliver(event);
        }
        n
    }

    fn deliver(&mut self, event: Event) {
        // A job even while no listener is set: one set before the job runs (from inside
        // another callback, say) takes the event, as a listener registered while an earlier
        // event is handled in JavaScript hears the next.
        fn call<T: Send + 'static>(listener: &Listener<T>, value: T) -> Option<Job> {
            let f = Arc::clone(listener);
            Some(Box::new(move || f.call(value)))
        }
        let job = match event {
            Event::Open { conn, handshake } => call(
                &self.on_open,
                OpenResult {
                    conn,
                    header: handshake.headers,
                    protocol: handshake.protocol,
                    deflate: handshake.deflate,
                    profile: handshake.profile,
                },
            ),
            Event::Message { conn, message } => call(
                &self.on_message,
                MessageResult {
                    conn,
                    data: message,
                },
            ),
            Event::Error { conn, error } => call(
                &self.on_error,
                ErrorResult {
                    conn,
                    err_msg: error.to_string(),
                    error,
                },
            ),
            Event::Close {
                conn,
                code,
                reason,
                clean,
            } => call(
                &self.on_close,
                CloseResult {
                    conn,
                    code,
                    reason,
                    clean,
                },
            ),
            // With delivery acknowledgement on, `success` means acknowledged by the peer.
            Event::SendCompleted { id, .. } | Event::SendDelivered { id, .. } => self
                .sends
                .remove(&id)
                .and_then(|cbs| cbs.finish(&CallResult::ok(SEND))),
            Event::SendFailed { id, reason, .. } => self
                .sends
                .remove(&id)
                .and_then(|cbs| cbs.finish(&CallResult::fail(SEND, reason))),
            Event::Connecting { .. } | Event::Reconnecting { .. } | Event::Pong { .. } => None,
        };
        self.emit(job);
    }
}

impl Driven for WxSocket {
    fn handle(&mut self, conn: ConnId, event: TransportEvent, now: Instant) {
        self.session.handle(conn, event, now);
    }
    fn handle_timeout(&mut self, now: Instant) {
        self.session.handle_timeout(now);
    }
    fn poll_action(&mut self) -> Option<Action> {
        self.session.poll_action()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.session.poll_timeout()
    }
    fn shutdown(&mut self, now: Instant) {
        self.session.shutdown(now);
    }
    fn is_drained(&self) -> bool {
        self.session.is_drained()
    }
    fn read_credit(&self, conn: ConnId) -> crate::ReadCredit {
        self.session.read_credit(conn)
    }
}
