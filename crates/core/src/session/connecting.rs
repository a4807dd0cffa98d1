//! Connecting: dialling or in the opening handshake. Sends are queued; the handshake's
//! outcome opens the connection or fails it (then, with a policy, a reconnect delay);
//! `close` follows the close-before-open policy.

use super::Conn;
use super::context::{Cause, Context, Ending, Next, Run};
use super::open::Open;
use crate::ack::Acks;
use crate::close::{ABNORMAL, CloseRequest, NORMAL};
use crate::config::CloseBeforeOpen;
use crate::deadline::{after, late};
use crate::error::{CloseError, ConnectionError, SendFailure};
use crate::event::Event;
use crate::ids::ConnId;
use crate::message::Message;
use crate::queue::SendQueue;
use crate::request::HandshakeRequest;
use crate::state::State;
use crate::transport::{
    Action, DialStage, Handshake, TransportError, TransportErrorKind, TransportEvent,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct Connecting {
    pub(super) id: ConnId,
    request: Arc<HandshakeRequest>,
    pub(super) queue: SendQueue<Message>,
    timeout: Duration,
    pub(super) deadline: Instant,
    /// `AfterOpen` policy: the close asked for before open.
    pub(super) close_after_open: Option<CloseRequest>,
    /// Which consecutive reconnect attempt this dial is (0: the application's `connect`).
    attempt: u32,
    /// Where the dial stands, as the driver last reported it.
    stage: Option<DialStage>,
    /// The timeout was restarted once, its timer having run late.
    restarted: bool,
}

// Every state's handlers take the state boxed, as the session keeps it (one pointer moves
// per input); clippy's lint only weighs this struct's size.
#[allow(clippy::boxed_local)]
impl Connecting {
    /// Starts connection `id`: its `Connecting` event, the `Dial` action, the handshake timer.
    pub(super) fn dial(
        cx: &mut Context,
        id: ConnId,
        request: Arc<HandshakeRequest>,
        queue: SendQueue<Message>,
        attempt: u32,
        now: Instant,
    ) -> Box<Self> {
        let timeout = request.timeout.unwrap_or(cx.config.handshake_timeout);
        let url = cx.url_of(&request);
        cx.emit(Event::Connecting { conn: id, url });
        cx.actions.push_back(Action::Dial {
            conn: id,
            request: Arc::clone(&request),
        });
        Box::new(Connecting {
            id,
            request,
            queue,
            timeout,
            deadline: after(now, timeout),
            close_after_open: None,
            attempt,
            stage: None,
            restarted: false,
        })
    }

    /// Input from the driver for this connection.
    #[inline(never)] // rare: keeps the per-message path (`Session::step`) small
    pub(super) fn on_event(
        mut self: Box<Self>,
        cx: &mut Context,
        event: TransportEvent,
        now: Instant,
    ) -> Next {
        match event {
            TransportEvent::Opened(handshake) => self.on_opened(cx, handshake, now),
            TransportEvent::ConnectFailed(error) | TransportEvent::Error(error) => {
                self.fail(cx, ConnectionError::ConnectFailed(error), now)
            }
            TransportEvent::Closed => {
                let error = TransportError::new(
                    TransportErrorKind::Connect,
                    "connection closed during the handshake",
                );
                self.fail(cx, ConnectionError::ConnectFailed(error), now)
            }
            TransportEvent::Dialing(stage) => {
                self.stage = Some(stage);
                Conn::Connecting(self).into()
            }
            _ => {
                cx.stats.unexpected_inputs += 1;
                Conn::Connecting(self).into()
            }
        }
    }

    /// The handshake timer.
    pub(super) fn on_timeout(mut self: Box<Self>, cx: &mut Context, now: Instant) -> Next {
        if self.deadline > now {
            return Conn::Connecting(self).into();
        }
        if !self.restarted && late(self.deadline, now, self.timeout) {
            // The driver was not running when the timeout passed (a suspended process, an
            // application in the background, a stalled loop): the server's answer may be
            // waiting unread, or the dial may not have gone on at all, so the timeout runs
            // once more from now, as keepalive's does.
            self.restarted = true;
            self.deadline = after(now, self.timeout);
            return Conn::Connecting(self).into();
        }
        let timeout = ConnectionError::HandshakeTimeout {
            after: self.timeout,
            stage: self.stage,
        };
        self.fail(cx, timeout, now)
    }

    /// `close` before open, as the [`CloseBeforeOpen`] policy says.
    pub(super) fn close(
        mut self: Box<Self>,
        cx: &mut Context,
        request: CloseRequest,
    ) -> (Next, Result<(), CloseError>) {
        match cx.config.close_before_open {
            CloseBeforeOpen::Ignore => (Conn::Connecting(self).into(), Err(CloseError::NotOpenYet)),
            CloseBeforeOpen::AfterOpen => {
                self.close_after_open.get_or_insert(request);
                (Conn::Connecting(self).into(), Ok(()))
            }
            CloseBeforeOpen::Abort => (
                self.abort(cx, "closed before the connection opened"),
                Ok(()),
            ),
        }
    }

    /// `shutdown`: the dial is aborted whatever the close-before-open policy.
    pub(super) fn shutdown(self: Box<Self>, cx: &mut Context) -> Next {
        self.abort(cx, "shut down before the connection opened")
    }

    /// `connect`: a new connection replaces this one.
    pub(super) fn replace(self: Box<Self>, cx: &mut Context) {
        cx.actions.push_back(Action::Abort { conn: self.id });
        let replaced = Ending {
            code: NORMAL,
            reason: super::REPLACED_REASON,
            clean: false,
        };
        cx.end(self.id, self.queue, SendFailure::Replaced, false, replaced);
    }

    /// The dial is aborted; its queued messages fail as cancelled, close event 1006.
    fn abort(self: Box<Self>, cx: &mut Context, reason: &str) -> Next {
        cx.actions.push_back(Action::Abort { conn: self.id });
        let ending = Ending {
            code: ABNORMAL,
            reason,
            clean: false,
        };
        cx.end(self.id, self.queue, SendFailure::Cancelled, false, ending);
        Conn::Closed.into()
    }

    #[inline(never)] // rare: keeps the per-message path (`Session::step`) small
    fn on_opened(
        self: Box<Self>,
        cx: &mut Context,
        handshake: Box<Handshake>,
        now: Instant,
    ) -> Next {
        if let Some(p) = &handshake.protocol
            && !self.request.protocols.contains(p)
        {
            let error = ConnectionError::ProtocolNotOffered(p.clone());
            return self.fail(cx, error, now);
        }
        if handshake.deflate.is_some() && self.request.per_message_deflate.is_none() {
            return self.fail(cx, ConnectionError::DeflateNotOffered, now);
        }
        let Connecting {
            id,
            request,
            mut queue,
            close_after_open,
            attempt,
            ..
        } = *self;
        cx.emit(Event::Open {
            conn: id,
            handshake,
        });
        let acks = cx.config.acknowledge.map(|a| Acks::new(a, id));
        let run = Run {
            attempt,
            opened: now,
            closing_since: None,
        };
        let mut open = Open::new(id, request, acks, run);
        open.touch(&cx.config, now);
        // The queue is flushed, in order, before anything sent after open (messages resent
        // after a drop first). It fits the buffer because max_queued_bytes <=
        // max_buffered_bytes, and resent ones fitted the previous connection's buffer.
        for (send, message) in queue.drain() {
            open.hand_over(cx, send, message, now);
        }
        match close_after_open {
            Some(request) => Next {
                via: Some(State::Open),
                conn: Conn::Closing(open.begin_close(cx, request, now)),
            },
            None => Conn::Open(open).into(),
        }
    }

    /// A connection that never opened failed: error event, queue failed (or kept for the
    /// next attempt), close 1006, then a reconnect if the policy says so.
    #[inline(never)] // rare: keeps the per-message path (`Session::step`) small
    fn fail(self: Box<Self>, cx: &mut Context, error: ConnectionError, now: Instant) -> Next {
        let cause = match &error {
            // `AfterOpen`: the application already asked to close this socket.
            _ if self.close_after_open.is_some() => Cause::Application,
            ConnectionError::ConnectFailed(e) => Cause::Dial(Some(e.kind)),
            ConnectionError::ProtocolNotOffered(_) | ConnectionError::DeflateNotOffered => {
                Cause::Mismatch
            }
            _ => Cause::Dial(None),
        };
        let not_before = match &error {
            ConnectionError::ConnectFailed(e) => e.retry_after,
            _ => None,
        };
        let Connecting {
            id,
            request,
            queue,
            attempt,
            ..
        } = *self;
        let reason = error.to_string();
        cx.emit(Event::Error { conn: id, error });
        cx.actions.push_back(Action::Abort { conn: id });
        let retry = cx.retry(cause, attempt.saturating_add(1));
        let carry = retry && cx.carries_queue();
        let (failed, carried) = if carry {
            (SendQueue::default(), queue)
        } else {
            (queue, SendQueue::default())
        };
        let ending = Ending {
            code: ABNORMAL,
            reason: &reason,
            clean: false,
        };
        cx.end(id, failed, SendFailure::ConnectFailed, false, ending);
        let last_error = || reason;
        cx.reconnect(
            retry,
            request,
            carried,
            attempt.saturating_add(1),
            last_error,
            not_before,
            now,
        )
    }
}
