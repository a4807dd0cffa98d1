//! What a driver runs: a [`Driven`] machine of the core — a [`Session`], a [`Pool`] or a
//! [`WxSocket`] — and how its output for the application leaves it: events taken by the
//! adapter's `Events`, or callbacks the driver runs. Both adapters drive these three
//! through this one trait.

use std::collections::VecDeque;
use std::time::Instant;
use wxsocket_core::wx::{PendingCallback, WxSocket};
use wxsocket_core::{
    Completion, ConnId, Driven, Event, Pool, Session, TransportError, TransportErrorKind,
    TransportEvent,
};

/// A machine a driver can run: the [`Driven`] side (shutdown included) plus its output for
/// the application. Event machines ([`Session`], [`Pool`]) keep their events for the
/// adapter's `Events`; the callback machine ([`WxSocket`]) turns its events into callbacks
/// the driver runs outside any lock.
pub trait Machine: Driven + Send + 'static {
    /// The next event for the application (none for a callback machine).
    fn next_event(&mut self) -> Option<Event> {
        None
    }

    /// Whether events wait for the application.
    fn has_events(&self) -> bool {
        false
    }

    /// Takes events, in order, onto the back of `into` for as long as `admit` accepts the
    /// next one (as [`Session::poll_events_into`]); returns how many it took (none for a
    /// callback machine). What the adapters fill their event batches with.
    fn take_events(
        &mut self,
        into: &mut VecDeque<Event>,
        admit: impl FnMut(&Event) -> bool,
    ) -> usize {
        let _ = (into, admit);
        0
    }

    /// The next send outcome, for the sends a caller waits for (kept once
    /// [`Machine::track_completions`] was called, whether or not the application takes
    /// its events).
    fn poll_completion(&mut self) -> Option<Completion> {
        None
    }

    /// Makes the machine keep send outcomes for [`Machine::poll_completion`].
    fn track_completions(&mut self) {}

    /// Lets a callback machine turn its events into due callbacks (a bounded number at a
    /// time; see [`Machine::needs_dispatch`]).
    fn dispatch(&mut self) {}

    /// Whether due callbacks wait for the driver.
    fn has_callbacks(&self) -> bool {
        false
    }

    /// The due callbacks, in order, for the driver to run outside any lock.
    fn take_callbacks(&mut self) -> Vec<PendingCallback> {
        Vec::new()
    }

    /// Whether a callback machine still holds events that [`Machine::dispatch`] has not
    /// turned into callbacks yet.
    fn needs_dispatch(&self) -> bool {
        false
    }

    /// The callbacks due, after turning the events waiting into callbacks (a bounded
    /// number at a time: call it again until it gives none).
    fn due_callbacks(&mut self) -> Vec<PendingCallback> {
        self.dispatch();
        self.take_callbacks()
    }
}

macro_rules! event_machine {
    ($($ty:ty),*) => {$(
        impl Machine for $ty {
            fn next_event(&mut self) -> Option<Event> {
                self.poll_event()
            }
            fn has_events(&self) -> bool {
                <$ty>::has_events(self)
            }
            fn take_events(
                &mut self,
                into: &mut VecDeque<Event>,
                admit: impl FnMut(&Event) -> bool,
            ) -> usize {
                self.poll_events_into(into, admit)
            }
            fn poll_completion(&mut self) -> Option<Completion> {
                <$ty>::poll_completion(self)
            }
            fn track_completions(&mut self) {
                <$ty>::track_completions(self, true)
            }
        }
    )*};
}

event_machine!(Session, Pool);

impl Machine for WxSocket {
    fn dispatch(&mut self) {
        WxSocket::dispatch(self);
    }
    fn has_callbacks(&self) -> bool {
        WxSocket::has_callbacks(self)
    }
    fn take_callbacks(&mut self) -> Vec<PendingCallback> {
        std::iter::from_fn(|| self.poll_callback()).collect()
    }
    fn needs_dispatch(&self) -> bool {
        self.session().has_events()
    }
}

/// Runs due callbacks in order, outside any lock. A callback that panics is logged and the
/// next runs: one bad listener does not take the driver down with it.
pub fn run_callbacks(callbacks: Vec<PendingCallback>) {
    for callback in callbacks {
        let run = std::panic::AssertUnwindSafe(|| callback.run());
        if std::panic::catch_unwind(run).is_err() {
            tracing::debug!(target: crate::trace::TARGET, "a callback panicked; the driver goes on");
        }
    }
}

/// Runs the callbacks left once the driver has finished (`onSocketClose` of the shutdown's
/// close, the `fail` of every send it ended, say) until none come; `take` gives
/// [`Machine::due_callbacks`], so events not yet turned into callbacks are not left behind.
/// A callback may still call into the machine (a handle in it); what that queues is taken
/// here too, and a call after the driver has ended runs its own callbacks.
pub fn run_last_callbacks(mut take: impl FnMut() -> Vec<PendingCallback>) {
    loop {
        let callbacks = take();
        if callbacks.is_empty() {
            break;
        }
        run_callbacks(callbacks);
    }
}

/// A driver's own state besides its connections: the deadline its one timer is armed for,
/// and whether the machine was shut down. Both adapters' drivers decide from it when to
/// wake, and when to end.
#[derive(Debug, Default)]
pub struct Lifecycle {
    armed: Option<Instant>,
    shutting_down: bool,
}

impl Lifecycle {
    /// Shuts `machine` down, once (the last handle went, or `shutdown` was called): the core
    /// closes every open connection, aborts every dial and arms the teardown deadlines.
    /// Returns whether this call did it.
    pub fn shut_down<M: Machine>(&mut self, machine: &mut M, now: Instant) -> bool {
        if self.shutting_down {
            return false;
        }
        self.shutting_down = true;
        machine.shutdown(now);
        true
    }

    /// The driver can carry out nothing any more: its runtime was shut down under it, or
    /// its OS poller failed. The machine is shut down (so nothing reconnects, and every dial
    /// is aborted as by any shutdown), then each transport in `open` (those the machine was
    /// told are open) is reported failed with `why` and closed, so each connection ends in
    /// its documented events (an error, close 1006, its unsent messages failed) instead of
    /// waiting for IO that will never come. The actions this produces are dropped, as
    /// nothing can carry them out; the machine is then drained.
    pub fn driver_lost<M: Machine>(
        &mut self,
        machine: &mut M,
        open: impl IntoIterator<Item = ConnId>,
        why: &str,
        now: Instant,
    ) {
        self.shut_down(machine, now);
        let error = TransportError::new(TransportErrorKind::Io, why);
        for conn in open {
            crate::trace::transport_gone(conn);
            machine.handle(conn, TransportEvent::Error(error.clone()), now);
            machine.handle(conn, TransportEvent::Closed, now);
        }
        while machine.poll_action().is_some() {}
    }

    /// Whether the machine was shut down and is drained: the driver drops the transports
    /// left, runs the last callbacks ([`run_last_callbacks`]) and ends.
    pub fn finished<M: Machine>(&self, machine: &M) -> bool {
        self.shutting_down && machine.is_drained()
    }

    /// Whether the machine's next deadline comes before the one the timer is armed for: a
    /// sleeping driver must wake to arm it earlier.
    pub fn timer_late<M: Machine>(&self, machine: &M) -> bool {
        machine
            .poll_timeout()
            .is_some_and(|due| self.armed.is_none_or(|armed| due < armed))
    }

    /// Records the deadline the timer is armed for (`None`: none).
    pub fn arm(&mut self, deadline: Option<Instant>) {
        self.armed = deadline;
    }

    /// The deadline the timer is armed for.
    pub fn armed(&self) -> Option<Instant> {
        self.armed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use wxsocket_core::{ConnectOptions, Message, ReconnectPolicy, SessionConfig};

    /// The timer is late when the machine's next deadline comes before the armed one (or
    /// none is armed); shutdown happens once, and the driver is finished only once the
    /// machine was shut down and is drained.
    #[test]
    fn the_lifecycle_wakes_for_an_earlier_deadline_and_shuts_down_once() {
        let now = Instant::now();
        let mut session = Session::new(SessionConfig::default()).unwrap();
        let mut lifecycle = Lifecycle::default();
        assert!(
            !lifecycle.timer_late(&session),
            "no deadline, nothing to arm"
        );
        session
            .connect(&ConnectOptions::new("ws://127.0.0.1:9"), now)
            .unwrap();
        let due = session.poll_timeout().expect("the dial's deadline");
        assert!(lifecycle.timer_late(&session), "nothing armed");
        lifecycle.arm(Some(due));
        assert!(!lifecycle.timer_late(&session));
        lifecycle.arm(Some(due + Duration::from_secs(1)));
        assert!(lifecycle.timer_late(&session), "armed later than due");
        assert_eq!(lifecycle.armed(), Some(due + Duration::from_secs(1)));

        assert!(!lifecycle.finished(&session), "not shut down");
        assert!(lifecycle.shut_down(&mut session, now));
        assert!(!lifecycle.shut_down(&mut session, now), "only once");
        while session.poll_action().is_some() {}
        while session.poll_event().is_some() {}
        assert!(session.is_drained(), "the dial was aborted");
        assert!(lifecycle.finished(&session));
    }

    /// A driver that can carry out nothing more (its runtime or poller gone) ends every
    /// connection: the open one as lost, with an error and close 1006, its unsent message
    /// failed, no reconnect although the policy asks for one; the dial aborted, as by
    /// shutdown. The machine is then drained, so the driver may end.
    #[test]
    fn a_lost_driver_ends_every_connection_as_lost_and_reconnects_none() {
        let now = Instant::now();
        let config = SessionConfig::default().reconnect(ReconnectPolicy::default());
        let mut pool = Pool::new(config).unwrap();
        let open = pool
            .connect(&ConnectOptions::new("ws://127.0.0.1:9/a"), now)
            .unwrap();
        let dialling = pool
            .connect(&ConnectOptions::new("ws://127.0.0.1:9/b"), now)
            .unwrap();
        pool.handle(open, TransportEvent::Opened(Box::default()), now);
        while pool.poll_action().is_some() {}
        let unsent = pool.send(open, Message::text("unsent"), now).unwrap();
        while pool.poll_event().is_some() {}
        let mut lifecycle = Lifecycle::default();

        lifecycle.driver_lost(&mut pool, [open], "gone", now);

        let events: Vec<Event> = std::iter::from_fn(|| pool.poll_event()).collect();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Error { conn: c, .. } if *c == open)),
            "{events:#?}"
        );
        for conn in [open, dialling] {
            assert!(
                events.iter().any(|e| matches!(e,
                    Event::Close { conn: c, code: 1006, .. } if *c == conn)),
                "{conn}: {events:#?}"
            );
        }
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::SendFailed { id, .. } if *id == unsent)),
            "the unsent message is reported failed: {events:#?}"
        );
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::Reconnecting { .. } | Event::Connecting { .. })),
            "{events:#?}"
        );
        assert!(pool.is_drained());
        assert!(lifecycle.finished(&pool));
        assert_eq!(pool.poll_action(), None);
    }
}
