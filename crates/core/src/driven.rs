//! The side of a state machine that an IO driver sees. [`crate::Session`], [`crate::Pool`]
//! and [`crate::wx::WxSocket`] all implement it, so an adapter writes its IO loop once.

use crate::backlog::ReadCredit;
use crate::ids::ConnId;
use crate::transport::{Action, TransportEvent};
use std::time::Instant;

/// A sans-IO machine an IO driver runs: feed it transport input and time, carry out its
/// actions, arm one timer. Application events are drained separately, by the type's own
/// `poll_event` (or `dispatch` for the callback surface); taking them can queue an
/// [`Action::ResumeReading`] for a connection paused by flow control, so the driver polls
/// actions again after the application took events, before it waits.
pub trait Driven {
    /// Transport input for connection `conn`.
    fn handle(&mut self, conn: ConnId, event: TransportEvent, now: Instant);
    /// Runs the timers due at `now`.
    fn handle_timeout(&mut self, now: Instant);
    /// The next action for the driver.
    fn poll_action(&mut self) -> Option<Action>;
    /// When `handle_timeout` must next be called.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Closes every connection and makes no new one (see
    /// [`Session::shutdown`](crate::Session::shutdown)); the driver calls it once, when the
    /// application has let go of every handle or asked to shut down, then keeps running until
    /// [`is_drained`](Self::is_drained).
    fn shutdown(&mut self, now: Instant);
    /// After [`shutdown`](Self::shutdown): every transport is finished and every action was
    /// polled, so the driver may stop.
    fn is_drained(&self) -> bool;
    /// How much the driver may read from `conn` before it asks again; zero: reading is
    /// paused until [`Action::ResumeReading`] (flow control, see [`ReadCredit`]).
    fn read_credit(&self, conn: ConnId) -> ReadCredit;
    /// [`read_credit`](Self::read_credit) for a driver whose connections read at the same
    /// time, each on the credit it was last given (a task or thread per connection, as
    /// `wxsocket-tokio`'s): a [`Pool`](crate::Pool) gives each task at most its part of the
    /// room its tasks share, so that the credits out at once add up to that room at most,
    /// not to the room once per task. A driver that asks before every read (one thread for all
    /// connections) uses `read_credit`. For one connection at a time, the same.
    fn concurrent_read_credit(&self, conn: ConnId) -> ReadCredit {
        self.read_credit(conn)
    }
}

macro_rules! driven_by_inherent_methods {
    ($($ty:ty => $concurrent:ident),*) => {$(
        impl Driven for $ty {
            fn handle(&mut self, conn: ConnId, event: TransportEvent, now: Instant) {
                <$ty>::handle(self, conn, event, now)
            }
            fn handle_timeout(&mut self, now: Instant) {
                <$ty>::handle_timeout(self, now)
            }
            fn poll_action(&mut self) -> Option<Action> {
                <$ty>::poll_action(self)
            }
            fn poll_timeout(&self) -> Option<Instant> {
                <$ty>::poll_timeout(self)
            }
            fn shutdown(&mut self, now: Instant) {
                <$ty>::shutdown(self, now)
            }
            fn is_drained(&self) -> bool {
                <$ty>::is_drained(self)
            }
            fn read_credit(&self, conn: ConnId) -> ReadCredit {
                <$ty>::read_credit(self, conn)
            }
            fn concurrent_read_credit(&self, conn: ConnId) -> ReadCredit {
                <$ty>::$concurrent(self, conn)
            }
        }
    )*};
}

driven_by_inherent_methods!(
    crate::Session => read_credit,
    crate::Pool => concurrent_read_credit
);
