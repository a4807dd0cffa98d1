//! The IO driver, written once for every [`Driven`] machine (`Session`, `Pool`, `WxSocket`).
//!
//! Whoever touches the core carries out what it asks for, under the same lock: an
//! application call, a connection task reporting transport input, or the driver task when
//! a deadline passes. Carrying out an action never blocks (spawn a task, push a command to a
//! connection's channel, abort a task), so the lock is only held for core calls. The driver
//! task owns the one timer, runs the wx-style callbacks outside the lock, and shuts
//! everything down when the last handle is dropped.

use crate::conn::{self, Command, SharedIo};
use crate::{Config, SocketInfo};
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use wxsocket_core::wx::PendingCallback;
use wxsocket_core::{
    Action, ConfigError, ConnId, Driven, Event, SendFailure, SendId, TransportEvent,
};

/// A machine the driver can run: the [`Driven`] side (shutdown included) plus how its
/// application events are delivered.
pub(crate) trait Machine: Driven + Send + 'static {
    /// Hands every ready application event on. Returns whether the driver task must run
    /// (deferred callbacks are waiting).
    fn deliver(&mut self, out: &mut Outbox) -> bool;
    /// The callbacks that are due, in order, for the driver task to run outside the lock
    /// (none for machines that deliver through [`Outbox`]).
    fn take_callbacks(&mut self) -> Vec<PendingCallback> {
        Vec::new()
    }
}

impl Machine for wxsocket_core::Session {
    fn deliver(&mut self, out: &mut Outbox) -> bool {
        while let Some(event) = self.poll_event() {
            out.deliver(event);
        }
        false
    }
}

impl Machine for wxsocket_core::Pool {
    fn deliver(&mut self, out: &mut Outbox) -> bool {
        while let Some(event) = self.poll_event() {
            out.deliver(event);
        }
        false
    }
}

impl Machine for wxsocket_core::wx::WxSocket {
    fn deliver(&mut self, _out: &mut Outbox) -> bool {
        // The deferred core queues listeners and send callbacks; the driver task runs them.
        self.dispatch();
        self.has_callbacks()
    }

    fn take_callbacks(&mut self) -> Vec<PendingCallback> {
        std::iter::from_fn(|| self.poll_callback()).collect()
    }
}

/// Completion of an awaitable send.
pub(crate) type SendResult = Result<(), SendFailure>;

/// Where application events go: the [`crate::Events`] channel, and the waiters of
/// awaitable sends.
pub(crate) struct Outbox {
    events: Option<mpsc::UnboundedSender<Event>>,
    pub(crate) waiters: HashMap<SendId, oneshot::Sender<SendResult>>,
}

impl Outbox {
    fn deliver(&mut self, event: Event) {
        match &event {
            _ if self.waiters.is_empty() => {}
            Event::SendCompleted { id, .. } => {
                if let Some(waiter) = self.waiters.remove(id) {
                    let _ = waiter.send(Ok(()));
                }
            }
            Event::SendFailed { id, reason, .. } => {
                if let Some(waiter) = self.waiters.remove(id) {
                    let _ = waiter.send(Err(*reason));
                }
            }
            _ => {}
        }
        if let Some(tx) = &self.events
            && tx.send(event).is_err()
        {
            // The application dropped its `Events`: stop producing them.
            self.events = None;
        }
    }
}

/// One live connection task.
struct ConnEntry {
    commands: mpsc::UnboundedSender<Command>,
    task: AbortHandle,
    socket: Option<SocketInfo>,
    /// Once open: the connection's state, for writes in place.
    io: Option<SharedIo>,
}

/// Everything behind the lock.
pub(crate) struct Core<M> {
    pub(crate) machine: M,
    pub(crate) out: Outbox,
    conns: HashMap<ConnId, ConnEntry>,
    /// The deadline the driver task sleeps until.
    armed: Option<Instant>,
    /// Set once the machine was shut down (the last handle went, or `shutdown` was called).
    shutting_down: bool,
    /// Connections with frames started in place during this turn, to flush at its end.
    in_place: Vec<ConnId>,
}

impl<M: Machine> Core<M> {
    /// Carries out every action and delivers every event. Returns whether the driver task
    /// must look (earlier deadline, callbacks to run, shutdown progress).
    pub(crate) fn turn(&mut self, shared: &Arc<Shared<M>>, now: Instant) -> bool {
        loop {
            while let Some(action) = self.machine.poll_action() {
                self.execute(shared, action);
            }
            if self.in_place.is_empty() {
                break;
            }
            self.flush_in_place(now);
        }
        let mut wake = self.machine.deliver(&mut self.out);
        if let Some(deadline) = self.machine.poll_timeout() {
            wake |= self.armed.is_none_or(|armed| deadline < armed);
        }
        wake | self.finished()
    }

    /// Shut down and drained: the driver task may end.
    fn finished(&self) -> bool {
        self.shutting_down && self.machine.is_drained()
    }

    /// Flushes the frames started in place this turn, one flush per connection (so a
    /// batch of sends, e.g. the queue flushed on open, goes out in one write), and reports
    /// the sends written; what the socket did not take, the connection's task finishes.
    fn flush_in_place(&mut self, now: Instant) {
        for conn in std::mem::take(&mut self.in_place) {
            let Some(entry) = self.conns.get(&conn) else {
                continue;
            };
            let flushed = entry
                .io
                .as_ref()
                .and_then(|io| io.try_lock().ok().map(|mut io| io.flush_in_place()));
            match flushed {
                Some(Some(written)) => {
                    for id in written {
                        self.machine
                            .handle(conn, TransportEvent::SendWritten(id), now);
                    }
                }
                // Not taken at once, or the task holds the state: the task finishes.
                _ => {
                    let _ = entry.commands.send(Command::Wake);
                }
            }
        }
    }

    fn execute(&mut self, shared: &Arc<Shared<M>>, action: Action) {
        let conn = action.conn();
        let command = match action {
            Action::Dial { conn, request } => {
                tracing::debug!(%conn, url = %request.url, "dial");
                let (tx, rx) = mpsc::unbounded_channel();
                let task = shared
                    .runtime
                    .spawn(conn::run(Arc::clone(shared), conn, request, rx));
                self.conns.insert(
                    conn,
                    ConnEntry {
                        commands: tx,
                        task: task.abort_handle(),
                        socket: None,
                        io: None,
                    },
                );
                return;
            }
            Action::Abort { conn } => {
                tracing::debug!(%conn, "abort");
                if let Some(entry) = self.conns.remove(&conn) {
                    entry.task.abort();
                }
                return;
            }
            Action::Send { id, message, .. } => {
                let entry = self.conns.get(&conn);
                let io = entry.and_then(|e| e.io.as_ref());
                // The task may hold the state (it is reading or writing): then it gets the
                // message as a command, after whatever it is doing.
                let message = match io.map(|io| io.try_lock()) {
                    Some(Ok(mut io)) => io.start_in_place(id, message),
                    _ => Some(message),
                };
                match message {
                    None => {
                        if !self.in_place.contains(&conn) {
                            self.in_place.push(conn);
                        }
                        return;
                    }
                    Some(message) => Command::Send(id, message),
                }
            }
            Action::Ping { payload, .. } => Command::Ping(payload),
            Action::Close { frame, .. } => {
                tracing::debug!(%conn, code = frame.code(), "close");
                Command::Close(frame)
            }
            other => {
                tracing::debug!(?other, "action not understood by this driver");
                return;
            }
        };
        match self.conns.get(&conn) {
            Some(entry) => {
                let _ = entry.commands.send(command);
            }
            // The transport already ended and said so; the core knows.
            None => tracing::debug!(%conn, "action for a finished connection"),
        }
    }

    /// The socket details of a connection, once it is dialled.
    pub(crate) fn socket_info(&self, conn: ConnId) -> Option<SocketInfo> {
        self.conns.get(&conn).and_then(|e| e.socket)
    }
}

/// What the handles, the connection tasks and the driver task share.
pub(crate) struct Shared<M> {
    core: Mutex<Core<M>>,
    wake: Notify,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) tls: Arc<crate::tls::ClientConfig>,
    /// The proxy variables, read when the client was created (`conn::dial`).
    pub(crate) proxy_env: wxsocket_wire::proxy::ProxyEnv,
    pub(crate) ws_config: WebSocketConfig,
    /// Set by the driver task when it has ended; `exited` is notified then.
    ended: AtomicBool,
    exited: Notify,
}

impl<M: Machine> Shared<M> {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Core<M>> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the core with the current time, then carries out what it produced.
    pub(crate) fn call<R>(self: &Arc<Self>, f: impl FnOnce(&mut Core<M>, Instant) -> R) -> R {
        let now = Instant::now();
        let (result, wake) = {
            let mut core = self.lock();
            let result = f(&mut core, now);
            let wake = core.turn(self, now);
            (result, wake)
        };
        if wake {
            self.wake.notify_one();
        }
        result
    }

    /// Transport input from a connection task. `finished`: the task ends after this, so
    /// its entry goes (and actions still aimed at it are dropped).
    pub(crate) fn report(
        self: &Arc<Self>,
        conn: ConnId,
        events: impl IntoIterator<Item = wxsocket_core::TransportEvent>,
        finished: bool,
    ) {
        self.call(|core, now| {
            if finished {
                core.conns.remove(&conn);
            }
            for event in events {
                core.machine.handle(conn, event, now);
            }
        });
    }

    /// The dial succeeded: record the socket details, then report the handshake.
    pub(crate) fn opened(
        self: &Arc<Self>,
        conn: ConnId,
        socket: SocketInfo,
        handshake: wxsocket_core::Handshake,
        io: SharedIo,
    ) {
        self.call(|core, now| {
            if let Some(entry) = core.conns.get_mut(&conn) {
                entry.socket = Some(socket);
                entry.io = Some(io);
            }
            core.machine.handle(
                conn,
                wxsocket_core::TransportEvent::Opened(Box::new(handshake)),
                now,
            );
        });
    }

    /// The machine's due callbacks, taken under the lock (none for most machines).
    fn take_callbacks(&self) -> Vec<PendingCallback> {
        self.lock().machine.take_callbacks()
    }

    /// Shuts the machine down (once): the core closes every connection and says when it
    /// is drained; the driver task then ends.
    pub(crate) fn begin_shutdown(self: &Arc<Self>) {
        self.call(|core, now| {
            if !core.shutting_down {
                core.shutting_down = true;
                core.machine.shutdown(now);
            }
        });
        self.wake.notify_one();
    }

    /// Shuts down and waits until the driver task has ended.
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        self.begin_shutdown();
        loop {
            let exited = self.exited.notified();
            if self.ended.load(Ordering::Acquire) {
                return;
            }
            exited.await;
        }
    }
}

/// Keeps the driver alive: every handle (`Client` clones, `TaskPool`, `SocketTask`s,
/// `WxSocket` clones) holds one `Arc` of it; when the last goes, the driver closes every
/// connection and ends (the event stream then ends too).
pub(crate) struct Handle<M: Machine> {
    pub(crate) shared: Arc<Shared<M>>,
}

impl<M: Machine> Drop for Handle<M> {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
    }
}

/// Starts the driver task for `machine` on the current tokio runtime.
pub(crate) fn start<M: Machine>(
    machine: M,
    config: &Config,
    events: bool,
) -> Result<(Arc<Handle<M>>, mpsc::UnboundedReceiver<Event>), ConfigError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError {
        field: "runtime",
        problem: "must be called from inside a tokio runtime",
    })?;
    let tls = crate::tls::client_config(&config.tls)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let tx = events.then_some(tx);
    let shared = Arc::new(Shared {
        core: Mutex::new(Core {
            machine,
            out: Outbox {
                events: tx,
                waiters: HashMap::new(),
            },
            conns: HashMap::new(),
            armed: None,
            shutting_down: false,
            in_place: Vec::new(),
        }),
        wake: Notify::new(),
        runtime: runtime.clone(),
        tls,
        proxy_env: config.resolve_proxy_env(),
        ws_config: wxsocket_wire::websocket_config(&config.session),
        ended: AtomicBool::new(false),
        exited: Notify::new(),
    });
    runtime.spawn(drive(Arc::clone(&shared)));
    Ok((Arc::new(Handle { shared }), rx))
}

/// The driver task: the one timer, the wx-style callbacks, and shutdown.
async fn drive<M: Machine>(shared: Arc<Shared<M>>) {
    let sleep = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(sleep);
    loop {
        let (armed, callbacks, finished) = {
            let mut core = shared.lock();
            let now = Instant::now();
            if core.machine.poll_timeout().is_some_and(|t| t <= now) {
                core.machine.handle_timeout(now);
            }
            core.turn(&shared, now);
            let callbacks = core.machine.take_callbacks();
            let finished = core.finished();
            if finished {
                // The core has ended every connection and asked for every abort it wants;
                // a task still here has nothing left to report.
                for (conn, entry) in core.conns.drain() {
                    tracing::debug!(%conn, "shutdown: connection task ended");
                    entry.task.abort();
                }
            }
            let next = core.machine.poll_timeout();
            core.armed = next;
            (next, callbacks, finished)
        };
        run(callbacks);
        if finished {
            break;
        }
        if let Some(deadline) = armed {
            sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
        }
        tokio::select! {
            biased;
            _ = shared.wake.notified() => {}
            _ = &mut sleep, if armed.is_some() => {}
        }
    }
    shared.lock().out.events = None;
    // The last callbacks (e.g. `onSocketClose` of the shutdown close). Every handle is gone,
    // so they cannot call into the socket any more and this ends.
    loop {
        let callbacks = shared.take_callbacks();
        if callbacks.is_empty() {
            break;
        }
        run(callbacks);
    }
    shared.ended.store(true, Ordering::Release);
    shared.exited.notify_waiters();
    tracing::debug!("driver finished");
}

/// Runs wx-style callbacks in order, outside the lock; a panicking one does not take the
/// driver down.
fn run(callbacks: Vec<PendingCallback>) {
    for callback in callbacks {
        if catch_unwind(AssertUnwindSafe(|| callback.run())).is_err() {
            tracing::debug!("a wx-style callback panicked; the driver goes on");
        }
    }
}
