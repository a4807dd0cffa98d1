//! The adaptive read buffer under tungstenite: small while a connection is idle, grown
//! while data streams in, given back when the socket runs dry.
//!
//! tungstenite reads through a buffer of its own, of the configured read size, and
//! zero-fills the free part of it before every read, so whatever that size is stays
//! resident for every connection that has read once: with 32 KiB that was most of the
//! memory of an idle connection (39 KiB each, 2026-12-03). tungstenite's read size is
//! therefore small ([`crate::READ_BUFFER`]), and a [`ReadAhead`] sits between it and the
//! socket:
//!
//! - **Idle, or small messages one at a time**: tungstenite's read goes straight to the
//!   socket, into tungstenite's own small buffer. Nothing else is held.
//! - **Busy**: once a read fills tungstenite's whole request (more may be waiting), the
//!   next reads take up to [`crate::READ_AHEAD`] bytes from the socket at once into a
//!   read-ahead buffer, and tungstenite's small reads are served from it by copying; a
//!   large message costs one socket read per `READ_AHEAD` bytes rather than one per
//!   `READ_BUFFER`.
//! - **Given back**: when a socket read comes back short (the socket is empty) or would
//!   block, the buffer goes back once served, to a small per-thread spare list (so the next
//!   burst neither allocates nor zero-fills it again) or to the allocator.
//!
//! The caller's socket read is a closure, so the same code serves the blocking adapter
//! (`io::Read`, `WouldBlock`) and the tokio one (`poll_read`, `Pending`).

use std::cell::RefCell;
use std::io;
use std::task::Poll;

/// Read-ahead buffers each thread keeps for the next burst.
const SPARES: usize = 4;

thread_local! {
    static SPARE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take_spare() -> Box<[u8]> {
    SPARE
        .try_with(|s| s.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| vec![0; crate::READ_AHEAD].into_boxed_slice())
}

fn give_back(buf: Box<[u8]>) {
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARES {
            s.push(buf);
        }
    });
}

/// One connection's read-ahead (see the [module docs](self)). Holds no memory while the
/// connection is idle.
///
/// ```
/// use std::io::Read;
/// use std::task::Poll;
/// use wxsocket_wire::read_ahead::ReadAhead;
///
/// // A socket with 100 KiB waiting, read as tungstenite does: 4 KiB at a time.
/// let mut socket: &[u8] = &vec![7u8; 100 * 1024];
/// let mut ahead = ReadAhead::default();
/// let mut out = [0u8; 4096];
/// let mut socket_reads = 0;
/// let mut total = 0;
/// loop {
///     let n = ahead.poll_read(&mut out, |buf| {
///         socket_reads += 1;
///         Poll::Ready(socket.read(buf))
///     });
///     match n {
///         Poll::Ready(Ok(0)) => break,
///         Poll::Ready(Ok(n)) => total += n,
///         other => panic!("{other:?}"),
///     }
/// }
/// assert_eq!(total, 100 * 1024);
/// // One small read, then 64 KiB at a time (and the read that finds the end).
/// assert_eq!(socket_reads, 4);
/// assert!(!ahead.holds_buffer(), "given back once the socket ran dry");
/// ```
#[derive(Debug, Default)]
pub struct ReadAhead {
    buf: Option<Box<[u8]>>,
    /// The bytes read ahead and not yet served: `buf[start..end]`.
    start: usize,
    end: usize,
    /// The last socket read filled what it was given: more is probably waiting.
    busy: bool,
}

impl ReadAhead {
    /// Whether a read-ahead buffer is held (only while data streams in).
    pub fn holds_buffer(&self) -> bool {
        self.buf.is_some()
    }

    /// Fills `out` with the next bytes: those read ahead first; otherwise from the socket
    /// through `read` (called only when nothing is read ahead), into `out` itself while
    /// the connection is idle, into the read-ahead buffer while it is busy. `read`'s
    /// `Pending` and errors (`WouldBlock` included) are passed on, and end the busy spell.
    pub fn poll_read(
        &mut self,
        out: &mut [u8],
        read: impl FnOnce(&mut [u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        if self.start < self.end {
            return Poll::Ready(Ok(self.serve(out)));
        }
        if !self.busy || out.is_empty() {
            let polled = read(out);
            if let Poll::Ready(Ok(n)) = polled {
                self.busy = n > 0 && n == out.len();
            }
            return polled;
        }
        let mut buf = self.buf.take().unwrap_or_else(take_spare);
        match read(&mut buf) {
            Poll::Ready(Ok(n)) if n > 0 => {
                // A short read emptied the socket: the buffer goes back once served.
                self.busy = n == buf.len();
                self.buf = Some(buf);
                self.start = 0;
                self.end = n;
                Poll::Ready(Ok(self.serve(out)))
            }
            other => {
                self.busy = false;
                give_back(buf);
                other
            }
        }
    }

    fn serve(&mut self, out: &mut [u8]) -> usize {
        let buf = self
            .buf
            .as_ref()
            .expect("bytes read ahead live in the buffer");
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&buf[self.start..self.start + n]);
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if !self.busy
                && let Some(buf) = self.buf.take()
            {
                give_back(buf);
            }
        }
        n
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            give_back(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A socket that hands out its chunks one per read (as they arrived), then would block.
    struct Chunks(Vec<Vec<u8>>);

    impl Chunks {
        fn read(&mut self, buf: &mut [u8]) -> Poll<io::Result<usize>> {
            let Some(chunk) = self.0.first_mut() else {
                return Poll::Ready(Err(io::ErrorKind::WouldBlock.into()));
            };
            let n = (&chunk[..]).read(buf).unwrap();
            chunk.drain(..n);
            if chunk.is_empty() {
                self.0.remove(0);
            }
            Poll::Ready(Ok(n))
        }
    }

    fn read_all(ahead: &mut ReadAhead, socket: &mut Chunks, size: usize) -> (Vec<u8>, usize) {
        let mut got = Vec::new();
        let mut reads = 0;
        let mut out = vec![0u8; size];
        loop {
            match ahead.poll_read(&mut out, |b| {
                reads += 1;
                socket.read(b)
            }) {
                Poll::Ready(Ok(n)) => got.extend_from_slice(&out[..n]),
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    return (got, reads);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn small_messages_go_straight_through_and_hold_nothing() {
        let mut ahead = ReadAhead::default();
        let mut socket = Chunks(vec![b"hello".to_vec()]);
        let (got, reads) = read_all(&mut ahead, &mut socket, 4096);
        assert_eq!(got, b"hello");
        assert_eq!(reads, 2, "the message, then WouldBlock");
        assert!(!ahead.holds_buffer());
    }

    #[test]
    fn a_stream_is_read_ahead_in_order_and_the_buffer_goes_back_when_it_runs_dry() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut socket = Chunks(vec![data.clone()]);
        let mut ahead = ReadAhead::default();
        let mut out = [0u8; 4096];
        let mut got = Vec::new();
        let mut reads = 0;
        // Read part of it: busy, the buffer is held.
        while got.len() < 100_000 {
            let Poll::Ready(Ok(n)) = ahead.poll_read(&mut out, |b| {
                reads += 1;
                socket.read(b)
            }) else {
                panic!()
            };
            got.extend_from_slice(&out[..n]);
        }
        assert!(ahead.holds_buffer());
        let (rest, more) = read_all(&mut ahead, &mut socket, 4096);
        got.extend_from_slice(&rest);
        reads += more;
        assert_eq!(got, data);
        // One 4 KiB read, then 64 KiB steps (the last short), then WouldBlock.
        assert_eq!(
            reads,
            1 + (300_000 - 4096usize).div_ceil(crate::READ_AHEAD) + 1
        );
        assert!(!ahead.holds_buffer());
    }

    /// A read that fills less than it asked for found the socket drained: the connection
    /// stays idle, and the next read goes straight to the socket with the caller's size (no
    /// read-ahead buffer for small messages one at a time).
    #[test]
    fn a_short_read_keeps_the_next_one_straight() {
        let mut ahead = ReadAhead::default();
        let mut out = [0u8; 16];
        assert!(matches!(
            ahead.poll_read(&mut out, |b| Poll::Ready(Ok(b.len() - 1))),
            Poll::Ready(Ok(15))
        ));
        let mut asked = 0;
        assert!(matches!(
            ahead.poll_read(&mut out, |b| {
                asked = b.len();
                Poll::Ready(Ok(3))
            }),
            Poll::Ready(Ok(3))
        ));
        assert_eq!(asked, 16);
        assert!(!ahead.holds_buffer());
    }

    #[test]
    fn a_pending_socket_ends_the_busy_spell() {
        let mut ahead = ReadAhead::default();
        let mut out = [0u8; 8];
        assert!(matches!(
            ahead.poll_read(&mut out, |b| Poll::Ready(Ok(b.len()))),
            Poll::Ready(Ok(8))
        ));
        assert!(ahead.poll_read(&mut out, |_| Poll::Pending).is_pending());
        assert!(!ahead.holds_buffer());
        // Idle again: the next read goes straight to the socket, with `out`'s size.
        let mut asked = 0;
        let _ = ahead.poll_read(&mut out, |b| {
            asked = b.len();
            Poll::Ready(Ok(1))
        });
        assert_eq!(asked, 8);
    }
}
