//! The end of the clock, for the tests whose simulated clock starts near it (an embedder's
//! may start anywhere).

use std::time::{Duration, Instant};

/// The latest `Instant` there is on this platform (found by halving steps: `Instant`'s
/// range is the platform's).
pub fn last_instant() -> Instant {
    let mut at = Instant::now();
    let mut step = Duration::MAX;
    while !step.is_zero() {
        match at.checked_add(step) {
            Some(later) => at = later,
            None => step /= 2,
        }
    }
    at
}
