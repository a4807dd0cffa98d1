//! [`DialTimer`]: the clock behind [`wxsocket_core::OpenProfile`], written once for every
//! driver so that the adapters measure the same points of a dial.

use std::time::{Duration, Instant};
use wxsocket_core::OpenProfile;

/// Marks the end of each phase of one dial, as an offset from its start, and gives the
/// [`OpenProfile`] the driver reports with the handshake.
///
/// A driver creates it when it begins the dial (it received `Action::Dial`) and calls, in
/// order, [`resolved`](Self::resolved) when the host name's addresses are known (at once for
/// an IP address), [`connected`](Self::connected) when a TCP connect succeeded (to the
/// proxy, through one), [`tls_done`](Self::tls_done) when the TLS handshake completed
/// (`wss://` only), [`request_written`](Self::request_written) when the upgrade request
/// was written and flushed, and [`finish`](Self::finish) when the `101` response was read
/// and accepted. Each mark keeps its first time; a phase never marked ends where the
/// previous one did, so the offsets never decrease.
///
/// ```
/// use wxsocket_wire::DialTimer;
/// let mut timer = DialTimer::start();
/// timer.resolved();
/// timer.connected();
/// timer.request_written();
/// let profile = timer.finish();
/// assert_eq!(profile.tls, None);
/// assert!(profile.resolved <= profile.connected);
/// assert!(profile.request_written <= profile.response_received);
/// ```
#[derive(Debug, Clone)]
pub struct DialTimer {
    start: Instant,
    resolved: Option<Duration>,
    connected: Option<Duration>,
    tls: Option<Duration>,
    request_written: Option<Duration>,
}

impl DialTimer {
    /// A timer for a dial that begins now.
    pub fn start() -> Self {
        Self::started_at(Instant::now())
    }

    /// A timer for a dial that began at `start`.
    pub fn started_at(start: Instant) -> Self {
        Self {
            start,
            resolved: None,
            connected: None,
            tls: None,
            request_written: None,
        }
    }

    /// When the dial began.
    pub fn started(&self) -> Instant {
        self.start
    }

    fn mark(start: Instant, slot: &mut Option<Duration>) {
        if slot.is_none() {
            *slot = Some(start.elapsed());
        }
    }

    /// The host name was resolved (or needed no resolving).
    pub fn resolved(&mut self) {
        Self::mark(self.start, &mut self.resolved);
    }

    /// The TCP connection is established.
    pub fn connected(&mut self) {
        Self::mark(self.start, &mut self.connected);
    }

    /// The TLS handshake completed.
    pub fn tls_done(&mut self) {
        Self::mark(self.start, &mut self.tls);
    }

    /// The upgrade request was written and flushed.
    pub fn request_written(&mut self) {
        Self::mark(self.start, &mut self.request_written);
    }

    /// The response was received now: the whole profile.
    pub fn finish(&self) -> OpenProfile {
        let response = self.start.elapsed();
        let resolved = self.resolved.unwrap_or_default();
        let connected = self.connected.unwrap_or(resolved).max(resolved);
        let tls = self.tls.map(|t| t.max(connected));
        let request = self
            .request_written
            .unwrap_or(tls.unwrap_or(connected))
            .max(tls.unwrap_or(connected));
        OpenProfile::new(resolved, connected, tls, request, response.max(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_keep_their_first_time_and_stay_ordered() {
        // A dial that began 5 ms ago, without sleeping.
        let start = Instant::now()
            .checked_sub(Duration::from_millis(5))
            .expect("the clock is past its origin");
        let mut timer = DialTimer::started_at(start);
        timer.resolved();
        let first = timer.resolved;
        timer.resolved();
        assert_eq!(timer.resolved, first);
        timer.tls_done();
        // `connected` and `request_written` were never marked: they end with the phase
        // before them.
        let p = timer.finish();
        assert_eq!(p.connected, p.resolved);
        assert_eq!(p.request_written, p.tls.unwrap());
        assert!(p.resolved >= Duration::from_millis(5));
        assert!(p.tls.unwrap() >= p.resolved);
        assert!(p.response_received >= p.request_written);
        assert!(p.response_received <= start.elapsed());
    }
}
