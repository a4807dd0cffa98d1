//! The seedable source of reconnect jitter and of the random part of acknowledgement's
//! barrier payloads (SplitMix64): small, fast, and the same sequence for the same seed on
//! every platform, so property tests and fuzz runs replay exactly.

use std::time::Duration;

/// SplitMix64's increment (2^64 divided by the golden ratio, made odd).
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

#[derive(Debug, Clone)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The seed of stream `stream` of a family sharing `seed` (a pool's tasks), so that
    /// each stream draws differently and the family still replays from the one seed.
    pub(crate) fn stream_seed(seed: u64, stream: u64) -> u64 {
        seed ^ stream.wrapping_mul(GOLDEN_GAMMA)
    }

    /// The next draw, uniform over `u64`.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, ceiling]` at nanosecond resolution.
    pub(crate) fn up_to(&mut self, ceiling: Duration) -> Duration {
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.next() % nanos.saturating_add(1).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two families with different seeds never share a stream's seed: for a given stream
    /// the map from the family's seed is one to one (two pools seeded differently do not
    /// draw the same jitter for the same task).
    #[test]
    fn different_seeds_give_every_stream_a_different_seed() {
        for stream in [1u64, 2, 7, 1 << 40] {
            let mask = stream.wrapping_mul(GOLDEN_GAMMA);
            for (a, b) in [(0, mask), (mask, u64::MAX), (0, u64::MAX), (1, 2)] {
                assert_ne!(
                    Jitter::stream_seed(a, stream),
                    Jitter::stream_seed(b, stream),
                    "stream {stream}: seeds {a:#x} and {b:#x}"
                );
            }
        }
        assert_ne!(Jitter::stream_seed(9, 1), Jitter::stream_seed(9, 2));
    }
}
