//! The zlib limit of the compressed cases: how many messages per second one thread can
//! compress and inflate with the workspace's zlib (flate2 with the zlib-rs backend) and
//! nothing else, on the same payloads and with the same parameters as a client with
//! permessage-deflate (raw DEFLATE, a 32 KiB window, context takeover, a sync flush per
//! message).
//!
//! A pipelined echo client compresses every message it sends and inflates every echo; the
//! echo is the same payload, so compressing a payload and inflating the result is one
//! message's share of a client's CPU that no implementation can avoid. Its inverse is the
//! most messages per second a client with one core can reach; the compressed rows report
//! what share of it each adapter reached in the same run ([`Limit`]).
//!
//! ```
//! use wxsocket_bench::zlib::Limit;
//! let payloads: Vec<Vec<u8>> = (0..4)
//!     .map(|seed| wxsocket_bench::workload::json_like_payload(seed, 4096).into_bytes())
//!     .collect();
//! let mut limit = Limit::new(6);
//! let per_sec = limit.rate(&payloads, 8);
//! assert!(per_sec > 0.0);
//! // Each message became a few hundred bytes (JSON-like text compresses well).
//! assert!(limit.compressed_bytes_per_message() < 2048.0);
//! ```

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::time::Instant;

/// A compressor and an inflater, as a client and its server keep them for one connection
/// (their contexts carry over from message to message); see the [module docs](self).
pub struct Limit {
    compress: Compress,
    decompress: Decompress,
    compressed: Vec<u8>,
    inflated: Vec<u8>,
    /// The next payload to send (the payloads are sent in turn).
    at: usize,
    /// Messages and compressed bytes so far.
    messages: u64,
    bytes: u64,
}

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limit")
            .field("messages", &self.messages)
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl Limit {
    /// A fresh pair of contexts at compression `level` (0-9), window 15.
    pub fn new(level: u32) -> Self {
        Self {
            compress: Compress::new_with_window_bits(Compression::new(level.min(9)), false, 15),
            decompress: Decompress::new_with_window_bits(false, 15),
            compressed: Vec::new(),
            inflated: Vec::new(),
            at: 0,
            messages: 0,
            bytes: 0,
        }
    }

    /// Compresses and inflates `n` messages, `payloads` in turn (carrying on where the
    /// last call stopped); returns messages per second. Panics if a message does not
    /// inflate back to itself (the benchmark would measure nothing real).
    pub fn rate(&mut self, payloads: &[Vec<u8>], n: usize) -> f64 {
        let start = Instant::now();
        for _ in 0..n {
            let payload = &payloads[self.at % payloads.len()];
            self.at += 1;
            self.one(payload);
        }
        n as f64 / start.elapsed().as_secs_f64()
    }

    /// Compressed bytes per message so far (the sync flush's empty block included, as
    /// the peer sees it before the 4-byte tail is stripped).
    pub fn compressed_bytes_per_message(&self) -> f64 {
        self.bytes as f64 / self.messages.max(1) as f64
    }

    fn one(&mut self, payload: &[u8]) {
        self.compressed.clear();
        self.compressed.reserve(payload.len() + 64);
        let start = self.compress.total_in();
        loop {
            let done = (self.compress.total_in() - start) as usize;
            let _ = self.compress.compress_vec(
                &payload[done..],
                &mut self.compressed,
                FlushCompress::Sync,
            );
            let done = (self.compress.total_in() - start) as usize;
            // A sync flush is complete once a call returns with output space left.
            if done == payload.len() && self.compressed.len() < self.compressed.capacity() {
                break;
            }
            self.compressed.reserve(self.compressed.capacity());
        }
        self.inflated.clear();
        self.inflated.reserve(payload.len() + 64);
        let mut done = 0;
        loop {
            let before = self.decompress.total_in();
            let result = self.decompress.decompress_vec(
                &self.compressed[done..],
                &mut self.inflated,
                FlushDecompress::Sync,
            );
            assert!(result.is_ok(), "zlib limit: {result:?}");
            done += (self.decompress.total_in() - before) as usize;
            if done == self.compressed.len() && self.inflated.len() < self.inflated.capacity() {
                break;
            }
            self.inflated.reserve(self.inflated.capacity());
        }
        assert!(
            self.inflated == payload,
            "zlib limit: a message did not inflate back to itself"
        );
        self.messages += 1;
        self.bytes += self.compressed.len() as u64;
    }
}

/// A compressed case's standing against the zlib limit measured in the same run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitShare {
    /// The compression level of the case (and of the limit).
    pub level: u32,
    /// The zlib limit, messages per second (median over the case's segments).
    pub limit_per_sec: f64,
    /// The median over the segments of the adapter's rate with compression / the zlib
    /// limit measured right before it, in the same segment (1.0: the adapter reached the
    /// limit).
    pub share: f64,
}
