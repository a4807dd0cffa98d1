//! Backoff: waiting out a reconnect delay. No transport exists; the application sees
//! `Connecting` (sends are queued). Its timer dials; `close`, `shutdown` and `connect`
//! cancel it. Transport input never reaches it (nothing was dialled for its connection).

use super::Conn;
use super::connecting::Connecting;
use super::context::{Context, Ending, Next};
use crate::close::{ABNORMAL, NORMAL};
use crate::deadline::after;
use crate::error::SendFailure;
use crate::event::Event;
use crate::ids::ConnId;
use crate::message::Message;
use crate::queue::SendQueue;
use crate::request::HandshakeRequest;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(super) struct Backoff {
    /// The connection the next dial will be.
    pub(super) id: ConnId,
    request: Arc<HandshakeRequest>,
    pub(super) queue: SendQueue<Message>,
    attempt: u32,
    pub(super) deadline: Instant,
    /// The attempt already waited once for untaken notices ([`crate::RECONNECT_HOLD_NOTICES`]).
    held: bool,
}

// Every state's handlers take the state boxed, as the session keeps it (one pointer moves
// per input); clippy's lint only weighs this struct's size.
#[allow(clippy::boxed_local)]
impl Backoff {
    /// Reconnection: the `Reconnecting` event, then a delay with full jitter.
    pub(super) fn start(
        cx: &mut Context,
        request: Arc<HandshakeRequest>,
        queue: SendQueue<Message>,
        attempt: u32,
        last_error: String,
        not_before: Option<Duration>,
        now: Instant,
    ) -> Box<Self> {
        let policy = cx
            .config
            .reconnect
            .as_ref()
            .expect("a reconnect delay only with a policy");
        // Never zero: like every other deadline, a backoff ends after the time it began
        // (the dial then comes from the next timer), even when the jitter draws 0.
        let delay = cx
            .jitter
            .up_to(policy.ceiling(attempt))
            .max(not_before.unwrap_or_default().min(policy.cap))
            .max(Duration::from_nanos(1));
        let id = cx.ids.conn();
        cx.emit(Event::Reconnecting {
            conn: id,
            attempt,
            delay,
            last_error,
            unreported: 0,
            unreported_opened: 0,
        });
        Box::new(Backoff {
            id,
            request,
            queue,
            attempt,
            deadline: after(now, delay),
            held: false,
        })
    }

    /// The delay is over: dial, unless the application has left too many notices untaken
    /// ([`crate::RECONNECT_HOLD_NOTICES`]) and the attempt has not waited for them yet:
    /// then wait once more.
    pub(super) fn on_timeout(mut self: Box<Self>, cx: &mut Context, now: Instant) -> Next {
        if self.deadline > now {
            return Conn::Backoff(self).into();
        }
        if !self.held && cx.notices_untaken() >= crate::RECONNECT_HOLD_NOTICES {
            let policy = cx
                .config
                .reconnect
                .as_ref()
                .expect("a reconnect delay only with a policy");
            let wait = policy
                .ceiling(self.attempt)
                .max(crate::RECONNECT_HOLD_DELAY);
            self.deadline = after(now, wait);
            self.held = true;
            return Conn::Backoff(self).into();
        }
        let Backoff {
            id,
            request,
            queue,
            attempt,
            ..
        } = *self;
        // The application may have given the attempts a new request (a fresh token).
        let request = cx.next_request.take().unwrap_or(request);
        Conn::Connecting(Connecting::dial(cx, id, request, queue, attempt, now)).into()
    }

    /// `close` or `shutdown`: the reconnection is cancelled. No connection is there to
    /// close, so the close event is 1006 whatever the application's code, as when a dial
    /// is aborted (and as a browser's `close()` of a socket still connecting ends).
    pub(super) fn cancelled(self: Box<Self>, cx: &mut Context) -> Next {
        self.cancel(
            cx,
            ABNORMAL,
            SendFailure::Cancelled,
            "reconnection cancelled",
        )
    }

    /// `connect`: a new connection replaces the one this delay would dial.
    pub(super) fn replace(self: Box<Self>, cx: &mut Context) {
        self.cancel(cx, NORMAL, SendFailure::Replaced, super::REPLACED_REASON);
    }

    fn cancel(
        self: Box<Self>,
        cx: &mut Context,
        code: u16,
        failure: SendFailure,
        reason: &str,
    ) -> Next {
        let Backoff { id, queue, .. } = *self;
        let ending = Ending {
            code,
            reason,
            clean: false,
        };
        cx.end(id, queue, failure, false, ending);
        Conn::Closed.into()
    }
}
