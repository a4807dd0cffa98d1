//! The single-socket handle ([`Client`]) and the event stream ([`Events`]).

use crate::driver::{self, Handle, Machine, Shared, Taken};
use crate::{Config, SendFailed, TryRecvError};
use futures_util::Sink;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use tokio::sync::oneshot;
use wxsocket_core::{Event, FailedSend, Message, SendError, SendFailure, SendId, Session};
use wxsocket_wire::events::EventBatch;

/// A handle to one WebSocket session, the one-socket-at-a-time model of `wx.connectSocket`: a new
/// [`connect`](Self::connect) replaces the current connection.
///
/// Cheap to clone, `Send + Sync`. Every call returns at once; what happens on the network
/// arrives as [`Event`]s on the [`Events`] stream returned with it. When every clone and the
/// `Events` are dropped, the connection is closed cleanly (close frame 1000, bounded by the
/// close timeout) and every task and socket is released, on the runtime's tasks: a program
/// that returns from `main` (so drops the runtime) right after dropping them cuts that
/// short, the messages not yet written fail and the server sees the TCP connection reset.
/// Await [`shutdown`](Self::shutdown) first.
pub struct Client {
    pub(crate) handle: Arc<Handle<Session>>,
    /// This handle's state as a [`Sink`].
    sink: SinkState,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.handle.shared.forget_room(&mut self.sink.room);
        if let Some(message) = self.sink.pending.take()
            && let Err(refused) = self.try_send(message)
        {
            tracing::warn!(
                error = %refused,
                "a message given to the Sink was dropped unsent: the sink was not flushed"
            );
        }
    }
}

impl Clone for Client {
    /// Another handle to the same session; as a [`Sink`] it starts empty.
    fn clone(&self) -> Self {
        Self {
            handle: Arc::clone(&self.handle),
            sink: SinkState::default(),
        }
    }
}

wxsocket_wire::client_debug!();

impl Client {
    /// A client over a new session, driven on the current tokio runtime (call it inside
    /// one, built with its time and IO drivers: otherwise
    /// [`StartError::Config`](crate::StartError::Config) with the field `runtime`).
    /// The configuration is checked first.
    ///
    /// A runtime without its time or IO driver is found out by making a timer and a socket
    /// on it and catching the panic tokio raises for them. So the error comes with tokio's
    /// panic message, which the panic hook prints (on stderr, by default) before `new`
    /// returns; and in a program built with `panic = "abort"` there is no error to return:
    /// the process aborts there. Outside any runtime no panic is involved.
    pub fn new(config: Config) -> Result<(Client, Events), crate::StartError> {
        let session = config.client_session()?;
        let handle = driver::start(session, &config, true)?;
        let events = Events::new(Box::new(Arc::clone(&handle.shared)));
        let client = Client {
            handle,
            sink: SinkState::default(),
        };
        Ok((client, events))
    }

    /// `wx.sendSocketMessage` without waiting: the message is queued (while connecting) or
    /// handed to the connection. Its completion arrives later as
    /// [`Event::SendCompleted`] or [`Event::SendFailed`] with the returned id.
    pub fn try_send(&self, message: impl Into<Message>) -> Result<SendId, SendError> {
        let message = message.into();
        self.handle
            .shared
            .call(|core, now| core.machine.send(message, now))
    }

    /// Sends and waits until the message is written to the socket, or for the reason it
    /// never will be. When the core has no room for it (the queue while connecting, the
    /// send buffer, or the bound on completions the application has not taken), it first
    /// waits for room, so a fast sender is paced by the network instead of refused. The
    /// completion event is still delivered on [`Events`] (unless
    /// `SessionConfig::send_completions` is off). With delivery acknowledgement on
    /// (`SessionConfig::acknowledge`), it waits until the peer acknowledged the message
    /// (`Event::SendDelivered`) instead of until it was written.
    ///
    /// Cancel safety: dropping the future while it waits for room drops the message
    /// unsent (it was never accepted); once accepted, the message is written whatever
    /// happens to the future, and its completion event says how it ended, under an id the
    /// dropped future never returned. To match outcomes to messages whatever is cancelled,
    /// use [`try_send`](Self::try_send), which returns the id at once (or hands the
    /// message back when there is no room).
    pub async fn send(&self, message: impl Into<Message>) -> Result<SendId, SendFailed> {
        send_waiting(&self.handle.shared, message.into(), |s, m, now| {
            s.send(m, now)
        })
        .await
    }

    /// Shuts the whole driver down (every clone's, not only this one's) and waits until
    /// it has ended: an open connection is closed with 1000 and its close handshake
    /// finished (bounded by the close timeout), a dial in progress is aborted whatever the
    /// close-before-open policy (queued messages fail as cancelled, close 1006), a
    /// reconnect delay is cancelled. The events of that ending arrive on [`Events`], which
    /// then ends. Afterwards `connect` fails with [`ConnectError::ShutDown`](crate::ConnectError::ShutDown). Dropping
    /// every handle does the same without waiting.
    pub async fn shutdown(&self) {
        self.handle.shared.shutdown().await;
    }

    wxsocket_wire::client_calls!();
}

/// The awaitable send of every handle: waits for room in the core, then for the write.
pub(crate) async fn send_waiting<M: Machine>(
    shared: &Arc<Shared<M>>,
    message: Message,
    mut send: impl FnMut(&mut M, Message, std::time::Instant) -> Result<SendId, SendError>,
) -> Result<SendId, SendFailed> {
    /// Gives the ticket back when the send is dropped while it waits for room.
    struct Waiting<'a, M: Machine>(&'a Shared<M>, driver::RoomTicket);
    impl<M: Machine> Drop for Waiting<'_, M> {
        fn drop(&mut self) {
            self.0.forget_room(&mut self.1);
        }
    }
    // A send refused at once would never yield: a loop that retries it would hold its
    // worker for ever (and a runtime being dropped waits for that worker). Like tokio's own
    // channels, it takes part in the task's cooperative budget.
    tokio::task::consume_budget().await;
    let mut slot = Some(message);
    let mut done = None;
    let mut waiting = Waiting(shared, driver::RoomTicket::default());
    let id = std::future::poll_fn(|cx| {
        let waiter = || {
            let (tx, rx) = oneshot::channel();
            done = Some(rx);
            driver::Waiter::Send(tx)
        };
        shared.poll_send(cx, &mut waiting.1, &mut slot, waiter, &mut send)
    })
    .await?;
    drop(waiting);
    wait_send(id, done.expect("a waiter was registered")).await
}

async fn wait_send(
    id: SendId,
    done: oneshot::Receiver<driver::SendResult>,
) -> Result<SendId, SendFailed> {
    match done.await {
        Ok(Ok(())) => Ok(id),
        Ok(Err(failed)) => Err(SendFailed::Failed(failed)),
        // The driver is gone (runtime shut down): the message was not confirmed written.
        Err(_) => Err(SendFailed::Failed(
            FailedSend::new(SendFailure::ConnectionLost, None).with_id(id),
        )),
    }
}

/// Every [`Event`] of a [`Client`] or [`crate::TaskPool`], in order: a
/// [`Stream`](futures_core::Stream), or [`next`](Self::next).
///
/// Events wait in the core until taken here, and the core bounds them: when the received
/// messages not yet taken reach `SessionConfig::receive_bounds` (default 1024 messages or
/// 16 MiB), the connection stops reading until the application takes half of them, and
/// TCP pushes back on the server. Nothing is dropped; a slow consumer slows the peer.
///
/// While it finds events ready, the task waiting here also makes the read passes a flood
/// needs when it runs out (see the crate's "How it runs"); a connection's own task reads when
/// the stream waits with nothing to take, or input has waited 20 ms for it (the
/// application is busy elsewhere, or works through a backlog of events).
///
/// Dropping it while handles live only stops the events (they are taken and dropped as
/// they come, so nothing accumulates). When the last handle is dropped, the connections
/// are closed; the stream delivers their last events (each `Close`) and then ends with
/// `None`.
pub struct Events {
    source: Box<dyn EventSource>,
    /// Taken from the core, not yet handed out (at most one batch; the rest stay in the
    /// core, under its bounds).
    ready: EventBatch,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("ready", &self.ready.len())
            .finish()
    }
}

/// The core behind an [`Events`], whatever its machine.
trait EventSource: Send + Sync {
    /// Moves up to one batch of events into `into`; with none, registers `waker`.
    fn take(&self, waker: Option<&Waker>, into: &mut EventBatch) -> Taken;
    /// The application let go of its events: from now on they are dropped as they come.
    fn detach(&self);
}

impl<M: Machine> EventSource for Arc<Shared<M>> {
    fn take(&self, waker: Option<&Waker>, into: &mut EventBatch) -> Taken {
        self.take_events(waker, into)
    }

    fn detach(&self) {
        self.detach_events();
    }
}

impl Events {
    fn new(source: Box<dyn EventSource>) -> Self {
        Self {
            source,
            ready: EventBatch::default(),
        }
    }

    pub(crate) fn of<M: Machine>(shared: &Arc<Shared<M>>) -> Self {
        Self::new(Box::new(Arc::clone(shared)))
    }

    /// The next event; `None` when the stream has ended. Cancel safe.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(Some(cx))).await
    }

    /// The next event if one is ready, without waiting; `None` both when none is ready
    /// yet and when the stream has ended ([`try_recv`](Self::try_recv) tells them apart).
    pub fn try_next(&mut self) -> Option<Event> {
        self.try_recv().ok()
    }

    /// [`next`](Self::next) under the blocking adapter's name (`Events::recv` there), so
    /// that a program moves between the adapters by adding or removing `.await`. Cancel
    /// safe.
    pub async fn recv(&mut self) -> Option<Event> {
        self.next().await
    }

    /// The next event if one is ready, without waiting: [`TryRecvError::Empty`] when none
    /// is ready yet, [`TryRecvError::Disconnected`] when the stream has ended (the driver
    /// has stopped and every event was taken), as the blocking adapter's `try_recv`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use wxsocket_tokio::{Client, Config, TryRecvError};
    /// let (client, mut events) = Client::new(Config::default()).unwrap();
    /// assert_eq!(events.try_recv(), Err(TryRecvError::Empty));
    /// client.shutdown().await;
    /// assert_eq!(events.try_recv(), Err(TryRecvError::Disconnected));
    /// # }
    /// ```
    pub fn try_recv(&mut self) -> Result<Event, TryRecvError> {
        match self.poll_event(None) {
            Poll::Ready(Some(event)) => Ok(event),
            Poll::Ready(None) => Err(TryRecvError::Disconnected),
            Poll::Pending => Err(TryRecvError::Empty),
        }
    }

    fn poll_event(&mut self, cx: Option<&mut Context<'_>>) -> Poll<Option<Event>> {
        if self.ready.is_empty() {
            match self.source.take(cx.map(|cx| cx.waker()), &mut self.ready) {
                Taken::Some => {}
                Taken::Empty => return Poll::Pending,
                Taken::Ended => return Poll::Ready(None),
            }
        }
        Poll::Ready(self.ready.pop())
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.source.detach();
    }
}

impl futures_core::Stream for Events {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.poll_event(Some(cx))
    }
}

/// A [`Client`]'s state as a [`Sink`]: the message `start_send` took, and the sends
/// accepted and not yet known to be written (what `poll_flush` waits for), counted.
#[derive(Default)]
struct SinkState {
    pending: Option<Message>,
    sends: Arc<driver::SinkSends>,
    /// The pending message's place among the sends waiting for room.
    room: driver::RoomTicket,
}

impl SinkState {
    /// The first failure not reported yet, as the sink's error.
    fn take_failure(&mut self) -> Result<(), SendFailed> {
        match self.sends.take_seen() {
            Some(reason) => Err(SendFailed::Failed(FailedSend::new(reason, None))),
            None => Ok(()),
        }
    }
}

impl Client {
    /// Hands the pending message to the core, waiting for room.
    fn push_pending(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), SendFailed>> {
        if self.sink.pending.is_none() {
            return Poll::Ready(Ok(()));
        }
        let shared = &self.handle.shared;
        let sink = &mut self.sink;
        let waiter = || sink.sends.waiter();
        let sent = shared.poll_send(
            cx,
            &mut sink.room,
            &mut sink.pending,
            waiter,
            |s, m, now| s.send(m, now),
        );
        match sent {
            Poll::Ready(Ok(_)) => Poll::Ready(Ok(())),
            Poll::Ready(Err(refused)) => Poll::Ready(Err(SendFailed::Refused(refused))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A `Client` is a [`Sink`] of messages (e.g. `SinkExt::send_all` from a stream):
/// `poll_ready` waits for room in the core's bounds, so a fast producer is paced by the
/// network; `poll_flush` waits until every message sent through this handle is written.
/// A message that could not be written (e.g. the connection was lost, even if a reconnect
/// sent the later ones) fails the sink with [`SendFailed::Failed`] and its reason: at the
/// next `poll_flush`, or at the next `poll_ready` once a later message was handed over; the
/// failures until then are reported together, once. However many messages go through it, a
/// sink holds no memory for them: each costs an entry in the driver while it is in flight,
/// within the core's send bounds.
/// Closing the sink only flushes it: the connection stays open (other clones may use it;
/// close it with [`Client::close`]). A message the core refuses for good (not connected,
/// closing, too large) fails the sink with [`SendFailed::Refused`], which hands it back.
///
/// Cancel safety: a message given to `start_send` is accepted by the core at once when
/// there is room (then it is written, and its completion event says how it ended);
/// otherwise this handle holds it until `poll_ready` / `poll_flush` find room. A handle
/// dropped while it holds one makes a last attempt to send it and, if that is refused,
/// reports the loss with a `tracing` warning: flush a sink before dropping it.
impl Sink<Message> for Client {
    type Error = SendFailed;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendFailed>> {
        // As `send`: a loop retrying a refused send through the sink must yield too.
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        let this = self.get_mut();
        ready!(this.push_pending(cx))?;
        coop.made_progress();
        Poll::Ready(this.sink.take_failure())
    }

    fn start_send(self: Pin<&mut Self>, item: Message) -> Result<(), SendFailed> {
        let this = self.get_mut();
        debug_assert!(this.sink.pending.is_none(), "start_send without poll_ready");
        // Handed to the core at once when it has room; otherwise held until the next
        // `poll_ready` / `poll_flush` finds room.
        let shared = &this.handle.shared;
        let sends = &this.sink.sends;
        let result = shared.call(|core, now| {
            let id = core.machine.send(item, now)?;
            core.out.waiters.insert(id, sends.waiter());
            Ok::<_, SendError>(())
        });
        match result {
            Ok(()) => {}
            Err(refused) if refused.is_full() => this.sink.pending = Some(refused.into_message()),
            Err(refused) => return Err(SendFailed::Refused(refused)),
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendFailed>> {
        let this = self.get_mut();
        ready!(this.push_pending(cx))?;
        let settled = ready!(this.sink.sends.poll_settled(cx));
        Poll::Ready(settled.map_err(|reason| SendFailed::Failed(FailedSend::new(reason, None))))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), SendFailed>> {
        self.poll_flush(cx)
    }
}

const _: fn() = || {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Client>();
    fn is_sink<T: Sink<Message>>() {}
    is_sink::<Client>();
    assert_send_sync::<Events>();
    fn is_machine<M: Machine>() {}
    is_machine::<Session>();
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectOptions, SessionConfig};
    use std::time::Duration;

    /// A runtime on the test's own thread (deterministic: nothing runs beside the test).
    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Sends cancelled while they wait for room leave nothing behind in the driver: each
    /// takes its waker out as it is dropped (20,000 of them used to stay, each keeping its
    /// task's memory, until room freed, which a peer that never reads never frees).
    #[test]
    fn sends_cancelled_while_waiting_for_room_leave_nothing_behind() {
        current_thread().block_on(async {
            // Accepts TCP and never answers the upgrade: the queue before open stays full.
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("ws://{}/", listener.local_addr().unwrap());
            let config = Config::default().session(SessionConfig::default().queue_bounds(1, 1024));
            let (client, _events) = Client::new(config).unwrap();
            client.connect(&ConnectOptions::new(url)).unwrap();
            client.try_send("fills the queue").unwrap();
            let waiting = || client.handle.shared.lock().out.waiting_for_room();
            // Each in a task of its own, with a waker of its own.
            for _ in 0..200 {
                let client = client.clone();
                let cancelled = tokio::spawn(async move {
                    tokio::time::timeout(Duration::ZERO, client.send("no room"))
                        .await
                        .is_err()
                });
                assert!(cancelled.await.unwrap(), "the send was not waiting");
            }
            assert_eq!(waiting(), 0, "cancelled sends left their wakers");
            // A sink's pending message waits under one ticket, given back with the handle.
            let mut sink = client.clone();
            futures_util::SinkExt::feed(&mut sink, Message::text("pending"))
                .await
                .unwrap();
            let flush = futures_util::SinkExt::flush(&mut sink);
            assert!(tokio::time::timeout(Duration::ZERO, flush).await.is_err());
            assert_eq!(waiting(), 1, "the sink waits for room");
            drop(sink);
            assert_eq!(waiting(), 0, "a dropped sink left its waker");
            drop(listener);
        });
    }

    /// The events stream is woken once the core's lock is free, so its thread does not
    /// wake only to wait for the lock the waking thread still holds.
    #[test]
    fn the_events_stream_is_woken_with_the_core_unlocked() {
        struct Probe {
            shared: Arc<Shared<Session>>,
            /// Whether the lock was held, at each wake.
            locked: std::sync::Mutex<Vec<bool>>,
        }
        impl std::task::Wake for Probe {
            fn wake(self: Arc<Self>) {
                self.wake_by_ref();
            }
            fn wake_by_ref(self: &Arc<Self>) {
                let locked = self.shared.is_locked();
                self.locked.lock().unwrap().push(locked);
            }
        }
        current_thread().block_on(async {
            let (client, mut events) = Client::new(Config::default()).unwrap();
            let probe = Arc::new(Probe {
                shared: Arc::clone(&client.handle.shared),
                locked: Default::default(),
            });
            let waker = Waker::from(Arc::clone(&probe));
            let mut cx = Context::from_waker(&waker);
            assert!(events.poll_event(Some(&mut cx)).is_pending());
            // Queues the `Connecting` event under the lock, which wakes the stream.
            client
                .connect(&ConnectOptions::new("ws://127.0.0.1:9/"))
                .unwrap();
            assert_eq!(*probe.locked.lock().unwrap(), [false]);
            assert!(matches!(
                events.poll_event(Some(&mut cx)),
                Poll::Ready(Some(Event::Connecting { .. }))
            ));
            client.shutdown().await;
        });
    }

    /// A turn that unwinds (a panicking waker of a send waiting for room, here) still
    /// wakes the events stream: its waker has left the core, and no later turn would find
    /// it (a reviewer's probe: woken 0 times, events waiting).
    #[test]
    fn a_turn_that_unwinds_still_wakes_the_events_stream() {
        struct Counter(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Counter {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        struct Panics;
        impl std::task::Wake for Panics {
            fn wake(self: Arc<Self>) {
                panic!("a room waker that panics");
            }
        }
        current_thread().block_on(async {
            let (client, mut events) = Client::new(Config::default()).unwrap();
            let woken = Arc::new(Counter(Default::default()));
            let waker = Waker::from(Arc::clone(&woken));
            let mut cx = Context::from_waker(&waker);
            assert!(events.poll_event(Some(&mut cx)).is_pending());
            let panics = Waker::from(Arc::new(Panics));
            let mut ticket = crate::driver::RoomTicket::default();
            client
                .handle
                .shared
                .lock()
                .out
                .wait_for_room(&mut ticket, &panics);
            // `connect` queues an event and frees room: the room waker panics first.
            let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                client.connect(&ConnectOptions::new("ws://127.0.0.1:9/"))
            }));
            assert!(unwound.is_err(), "the turn did not unwind");
            assert_eq!(woken.0.load(std::sync::atomic::Ordering::SeqCst), 1);
            assert!(matches!(
                events.poll_event(Some(&mut cx)),
                Poll::Ready(Some(Event::Connecting { .. }))
            ));
        });
    }
}
