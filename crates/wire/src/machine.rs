//! What a driver runs: a [`Driven`] machine of the core — a [`Session`], a [`Pool`] or a
//! [`WxSocket`] — and how its output for the application leaves it: events taken by the
//! adapter's `Events`, or callbacks the driver runs. Both adapters drive these three
//! through this one trait.

use wxsocket_core::wx::{PendingCallback, WxSocket};
use wxsocket_core::{Completion, Driven, Event, Pool, Session};

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
