//! Workloads and measures shared by both adapters' echo benchmarks (and the CLI demo and
//! server), so the two measure the same thing.

use std::sync::atomic::{AtomicU64, Ordering};

/// The median of measured rates (the mean of the middle two for an even count; 0 for
/// none), as both benchmarks report over their segments.
///
/// ```
/// use wxsocket_bench::workload::median;
/// assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
/// assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
/// ```
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// A JSON-like text of exactly `size` bytes (for `size` of at least 64): an array of
/// records (ids, names, scores, timestamps, tags) drawn from a generator seeded with
/// `seed`, as an API might send. It compresses about as well as such messages do.
///
/// ```
/// let text = wxsocket_bench::workload::json_like_payload(7, 4096);
/// assert_eq!(text.len(), 4096);
/// assert!(text.starts_with("[{\"id\":") && text.ends_with(']'));
/// ```
pub fn json_like_payload(seed: u64, size: usize) -> String {
    const NAMES: [&str; 8] = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ];
    const TAGS: [&str; 6] = ["new", "vip", "mobile", "web", "beta", "trial"];
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut out = String::from("[");
    loop {
        let r = next();
        let record = format!(
            "{{\"id\":{},\"name\":\"{}-{}\",\"score\":{}.{:02},\"ts\":{},\"active\":{},\"tags\":[\"{}\",\"{}\"]}}",
            r % 1_000_000,
            NAMES[(r >> 20) as usize % NAMES.len()],
            (r >> 24) % 10_000,
            (r >> 32) % 1000,
            (r >> 42) % 100,
            1_700_000_000 + (next() % 100_000_000),
            r & 1 == 0,
            TAGS[(r >> 50) as usize % TAGS.len()],
            TAGS[(r >> 54) as usize % TAGS.len()],
        );
        let separator = usize::from(out.len() > 1);
        if out.len() + separator + record.len() + 1 > size {
            break;
        }
        if separator == 1 {
            out.push(',');
        }
        out.push_str(&record);
    }
    // JSON allows whitespace before the closing bracket.
    while out.len() + 1 < size {
        out.push(' ');
    }
    out.push(']');
    out
}

/// The read buffer of the compressing echo servers (both adapters' benchmarks), in place
/// of tungstenite's default of 128 KiB.
///
/// tungstenite zero-fills its read buffer up to that size before every read. The
/// compressing servers read a few compressed messages at a time (inflated below
/// tungstenite, about 4 KiB each), so a 128 KiB fill per read was ~2 % of the server's
/// CPU, on the same two cores the client needs (DESIGN.md, 2026-12-04).
pub const DEFLATE_SERVER_READ_BUFFER: usize = 16 * 1024;

/// Bytes a server socket read and wrote: raw, as on the wire (compressed where
/// permessage-deflate is in force, frame headers and handshake included). A write is
/// counted as it is handed to the socket, so bytes the peer has read are always counted.
#[derive(Debug, Default)]
pub struct WireCounters {
    read: AtomicU64,
    written: AtomicU64,
}

impl WireCounters {
    /// Bytes read from the socket so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }

    /// Bytes written to the socket so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Bytes read and written.
    pub fn total(&self) -> u64 {
        self.read() + self.written()
    }

    /// Counts `n` bytes read.
    pub fn add_read(&self, n: usize) {
        self.read.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Counts `n` bytes about to be written (counted before the socket takes them, so a
    /// peer never sees bytes not yet counted).
    pub fn add_written(&self, n: u64) {
        self.written.fetch_add(n, Ordering::Relaxed);
    }

    /// Takes back `n` bytes counted by [`add_written`](Self::add_written) that the socket
    /// did not take.
    pub fn take_back_written(&self, n: u64) {
        self.written.fetch_sub(n, Ordering::Relaxed);
    }
}
