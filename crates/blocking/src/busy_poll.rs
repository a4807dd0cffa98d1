//! Busy-polling in `recv`: a thread that finds no event polls the sockets for a short
//! while before it sleeps, and stops doing so when it does not pay.
//!
//! Sleeping costs a wake-up when the message arrives: on a virtual machine, where an idle
//! CPU halts, tens of microseconds, often more than the rest of a loopback round trip. A
//! thread that polls instead keeps its CPU running and picks the message up at once;
//! for a reply that comes within the budget it trades that much CPU time for latency, as
//! Linux's `SO_BUSY_POLL` and KVM's halt polling do. This module only decides *whether*
//! a wait polls first ([`BusyPoll::should_poll`]); the driver runs the loop.
//!
//! The rule: poll before every wait, until [`MISSES_TO_BACK_OFF`] waits in a row found
//! nothing within the budget (an idle connection, or replies slower than the budget).
//! Then poll only before every [`PROBE_EVERY`]th wait, to notice when replies become fast
//! again; one poll that catches a message resumes polling before every wait. So a
//! request/response loop on a fast link polls and never sleeps, while a connection whose
//! messages come farther apart than the budget burns at most one budget per
//! [`PROBE_EVERY`] waits.

use std::time::Duration;
use wxsocket_core::ConfigError;

/// The default budget on a machine with more than one CPU (on one CPU, polling would only
/// keep the sender from running, so the default there is zero: no polling).
pub const DEFAULT_BUSY_POLL: Duration = Duration::from_micros(50);

/// The largest budget [`crate::Events::set_busy_poll`] takes.
pub const MAX_BUSY_POLL: Duration = Duration::from_millis(1);

/// Misses in a row after which polling backs off to probes.
pub const MISSES_TO_BACK_OFF: u32 = 8;

/// While backed off, every how many waits one polls.
pub const PROBE_EVERY: u32 = 32;

/// The default budget for this machine.
pub(crate) fn default_budget() -> Duration {
    match std::thread::available_parallelism() {
        Ok(n) if n.get() > 1 => DEFAULT_BUSY_POLL,
        _ => Duration::ZERO,
    }
}

/// Checks a budget for [`crate::Events::set_busy_poll`].
pub(crate) fn validate(budget: Duration) -> Result<Duration, ConfigError> {
    if budget > MAX_BUSY_POLL {
        return Err(ConfigError::new("busy_poll", "must be at most 1 ms"));
    }
    Ok(budget)
}

/// The adaptive state of one receiving poller.
#[derive(Debug, Default)]
pub(crate) struct BusyPoll {
    /// Waits in a row whose poll found nothing.
    misses: u32,
    /// Waits without a poll since the last probe (while backed off).
    skipped: u32,
}

impl BusyPoll {
    /// Whether the next wait polls before it sleeps (counts the wait).
    pub fn should_poll(&mut self) -> bool {
        if self.misses < MISSES_TO_BACK_OFF {
            return true;
        }
        self.skipped += 1;
        if self.skipped < PROBE_EVERY {
            return false;
        }
        self.skipped = 0;
        true
    }

    /// The poll found something within its budget.
    pub fn caught(&mut self) {
        self.misses = 0;
        self.skipped = 0;
    }

    /// The poll's budget ran out and the thread went to sleep.
    pub fn missed(&mut self) {
        self.misses = self.misses.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `waits` waits whose poll finds a message iff `hit(i)`; returns how many polled.
    fn run(state: &mut BusyPoll, waits: u32, hit: impl Fn(u32) -> bool) -> u32 {
        let mut polled = 0;
        for i in 0..waits {
            if state.should_poll() {
                polled += 1;
                if hit(i) {
                    state.caught();
                } else {
                    state.missed();
                }
            }
        }
        polled
    }

    #[test]
    fn polls_before_every_wait_while_polling_pays() {
        let mut state = BusyPoll::default();
        assert_eq!(run(&mut state, 1000, |_| true), 1000);
        // Occasional misses (fewer than the back-off count in a row) change nothing.
        assert_eq!(run(&mut state, 1000, |i| i % 4 != 0), 1000);
    }

    #[test]
    fn backs_off_to_probes_when_polls_keep_missing() {
        let mut state = BusyPoll::default();
        let polled = run(&mut state, MISSES_TO_BACK_OFF + 32 * PROBE_EVERY, |_| false);
        // The first misses, then one probe per `PROBE_EVERY` waits.
        assert_eq!(polled, MISSES_TO_BACK_OFF + 32);
    }

    #[test]
    fn a_probe_that_catches_resumes_polling() {
        let mut state = BusyPoll::default();
        run(&mut state, MISSES_TO_BACK_OFF, |_| false);
        assert!(!state.should_poll(), "backed off");
        // Until the next probe, no polling; the probe catches.
        let polled = run(&mut state, PROBE_EVERY - 1, |_| true);
        assert_eq!(polled, 1, "exactly the probe polled");
        assert_eq!(run(&mut state, 100, |_| true), 100);
    }

    #[test]
    fn budgets_over_the_maximum_are_refused_naming_the_field() {
        assert_eq!(validate(MAX_BUSY_POLL), Ok(MAX_BUSY_POLL));
        assert_eq!(validate(Duration::ZERO), Ok(Duration::ZERO));
        let err = validate(MAX_BUSY_POLL + Duration::from_nanos(1)).unwrap_err();
        assert_eq!(err.field, "busy_poll");
    }
}
