//! Deadlines: a time plus a duration, without the panic of `Instant + Duration` on a clock
//! near its end (an embedder's simulated clock may start anywhere).

use std::time::{Duration, Instant};

/// `now + wait`, or the latest instant there is when that does not exist: the deadline
/// then never passes, where the addition would panic.
pub(crate) fn after(now: Instant, wait: Duration) -> Instant {
    now.checked_add(wait).unwrap_or_else(|| latest(now))
}

/// How late a timer may run and still be taken as on time (a loaded machine, a loop that
/// turns ten times a second): past it, or past the timer's own wait when that is shorter,
/// the driver was not running when the timer was due (see [`late`]).
pub(crate) const LATE: Duration = Duration::from_secs(1);

/// Whether a timeout's timer due at `deadline` (its wait `wait`) runs at `now` late: the
/// driver was not running when it was due (a suspended process, a stalled loop), so the
/// peer's answer may be waiting unread, however short or long the stall, and the timeout
/// waits once more from `now` instead of failing the peer (once per wait: a driver that is
/// always late still ends it a timeout later). The timeouts that wait for the peer take
/// it: keepalive's pong, the acknowledgement's, the handshake's and the close's. The
/// close linger, the reconnect delay and a teardown (a connection whose close event came,
/// closing in the background) do not: nothing the peer may have sent changes what the
/// application hears of them.
pub(crate) fn late(deadline: Instant, now: Instant, wait: Duration) -> bool {
    now.saturating_duration_since(deadline) > wait.min(LATE)
}

/// The latest instant after `now` (found by halving steps: `Instant`'s range is the
/// platform's).
#[cold]
fn latest(now: Instant) -> Instant {
    let mut at = now;
    let mut step = Duration::MAX;
    while !step.is_zero() {
        match at.checked_add(step) {
            Some(later) => at = later,
            None => step /= 2,
        }
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_past_the_end_of_the_clock_is_its_last_instant() {
        let now = Instant::now();
        assert_eq!(
            after(now, Duration::from_secs(5)),
            now + Duration::from_secs(5)
        );
        let last = latest(now);
        assert!(last > now);
        assert_eq!(last.checked_add(Duration::from_nanos(1)), None);
        let near = last - Duration::from_secs(1);
        assert_eq!(after(near, Duration::from_secs(60)), last);
    }
}
