//! A flooding WebSocket server ([`FloodServer`]) for the flow-control suite
//! (`tests/flow.rs`).
//!
//! The server listens on `127.0.0.1:0`, accepts one client (tungstenite does the server
//! handshake; with [`Flood::deflate`] it accepts the client's permessage-deflate offer) and
//! then writes numbered binary messages as fast as its socket takes them, for a duration or
//! up to a number of messages. Message `n` is [`payload`]`(n, size)`: `n` as 8 big-endian
//! bytes, then filler that compresses to almost nothing, so a receiver can check order and
//! completeness with [`check`].
//!
//! Its socket has a short write timeout ([`WRITE_SLICE`]), so the server sees when TCP
//! pushes back: a write that does not finish within the timeout is a *stall*, and
//! consecutive ones are one stall. [`FloodReport`] says how many messages went out, how long
//! the writes were stalled in all and at most, and whether the server was stalled when the
//! flood ended (the client not reading).
//!
//! When the flood ends the server stops starting messages but keeps the connection open:
//! it finishes the message it was in the middle of (so every message counted in
//! [`FloodReport::sent`] arrives whole once the client reads), answers pings and the
//! client's close frame, and ends when the client goes away. Dropping the server shuts the
//! connection down and joins every thread.
//!
//! Compressed messages: the filler is compressed once per connection by the server's side
//! of the agreement ([`wxsocket_wire::deflate::Compressor::server`], a fresh context, so it
//! refers to nothing before it); each message is a stored DEFLATE block holding the 8-byte
//! number followed by that compressed filler. Every message is therefore valid with or
//! without context takeover, costs the server a copy instead of a compression, and
//! inflates to `size` bytes from well under 1 % of that on the wire: compressed input
//! that must be bounded after inflation.
//!
//! ```
//! use std::time::Duration;
//! use wxsocket_tests::flood::{Flood, FloodServer, check, payload};
//!
//! let server = FloodServer::start(Flood::new(32).max_messages(3));
//! assert!(server.url().starts_with("ws://127.0.0.1:"));
//! // Nobody connected: no report yet.
//! assert!(server.report(Duration::from_millis(10)).is_none());
//! assert_eq!(check(7, 32, &payload(7, 32)), Ok(()));
//! ```

use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wxsocket_core::{DeflateParams, Message};

/// The socket's write timeout: a write that makes no progress for this long counts as
/// stalled, and the flood's deadline is noticed at most this late.
pub const WRITE_SLICE: Duration = Duration::from_millis(20);
/// Bytes of the sequence number at the start of every payload.
pub const SEQ_LEN: usize = 8;
/// How much the server hands its socket per write when messages are small.
const BATCH: usize = 64 << 10;
/// How long the client may take to send its upgrade request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// What the filler repeats (short, so it compresses to almost nothing).
const PATTERN: &[u8] = b"wxsocket flood filler, ";

/// What a [`FloodServer`] sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flood {
    size: usize,
    duration: Duration,
    max_messages: Option<u64>,
    deflate: bool,
}

impl Flood {
    /// Messages of `size` payload bytes (at least [`SEQ_LEN`]), for 5 s, uncompressed.
    pub fn new(size: usize) -> Self {
        assert!(size >= SEQ_LEN, "a flood message holds an 8-byte number");
        Self {
            size,
            duration: Duration::from_secs(5),
            max_messages: None,
            deflate: false,
        }
    }

    /// Floods for this long (measured from the end of the handshake).
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// Stops after this many messages even when the duration is not over.
    pub fn max_messages(mut self, messages: u64) -> Self {
        self.max_messages = Some(messages);
        self
    }

    /// Accepts a permessage-deflate offer and sends every message compressed (the server
    /// fails the flood when the client offers none).
    pub fn deflate(mut self, on: bool) -> Self {
        self.deflate = on;
        self
    }
}

/// What the server observed while it flooded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FloodReport {
    /// Messages the server started writing; each arrives whole once the client reads (the
    /// one in progress when the flood ended is finished afterwards).
    pub sent: u64,
    /// Their bytes on the wire (frame headers included, compressed when compressed).
    pub wire_bytes: u64,
    /// How long the flood lasted, from the end of the handshake.
    pub flooded: Duration,
    /// When the writes first stalled, from the start of the flood (`None`: never).
    pub first_stall: Option<Duration>,
    /// Stalls: runs of writes that did not finish within [`WRITE_SLICE`].
    pub stalls: u64,
    /// Their total length.
    pub stalled: Duration,
    /// The longest one.
    pub longest_stall: Duration,
    /// The length of the stall still going on when the flood ended (zero when the last
    /// write had finished): how long the client had not made room at the end.
    pub stalled_at_end: Duration,
    /// The permessage-deflate agreement, when the flood was compressed.
    pub deflate: Option<DeflateParams>,
    /// Why the flood ended before its duration (a write failed, the handshake failed,
    /// the server was dropped); `None` when it ran its course or was ended on purpose.
    pub error: Option<String>,
}

/// The payload of message `seq`: `seq` as 8 big-endian bytes, then filler up to `size`.
pub fn payload(seq: u64, size: usize) -> Vec<u8> {
    let mut out = filler(size).to_vec();
    out[..SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
    out
}

/// Checks that `bytes` is the payload of message `seq` of `size` bytes; the error says
/// what differs (for a wrong number: which one arrived).
pub fn check(seq: u64, size: usize, bytes: &[u8]) -> Result<(), String> {
    if bytes.len() != size {
        return Err(format!(
            "message {seq}: {} bytes, expected {size}",
            bytes.len()
        ));
    }
    let got = u64::from_be_bytes(bytes[..SEQ_LEN].try_into().expect("8 bytes"));
    if got != seq {
        return Err(format!("expected message {seq}, got message {got}"));
    }
    let expected = filler(size);
    if bytes[SEQ_LEN..] != expected[SEQ_LEN..] {
        let at = (SEQ_LEN..size)
            .find(|&i| bytes[i] != expected[i])
            .unwrap_or(size);
        return Err(format!("message {seq}: filler differs at byte {at}"));
    }
    Ok(())
}

/// `size` bytes of the repeating pattern (the first [`SEQ_LEN`] are overwritten by the
/// number). Built once per size, so checking a megabyte is one comparison.
fn filler(size: usize) -> Arc<Vec<u8>> {
    static CACHE: OnceLock<Mutex<HashMap<usize, Arc<Vec<u8>>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let made = cache.entry(size).or_insert_with(|| {
        let mut bytes = PATTERN.repeat(size / PATTERN.len() + 1);
        bytes.truncate(size);
        Arc::new(bytes)
    });
    Arc::clone(made)
}

/// State shared by the server's threads and its handle.
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The server is being dropped: every thread ends.
    stop: bool,
    /// Stop starting messages ([`FloodServer::end_flood`]).
    end_flood: bool,
    /// The accepted socket, shut down on drop.
    socket: Option<TcpStream>,
    report: Option<FloodReport>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopped(&self) -> bool {
        self.lock().stop
    }

    /// Whether the flood should end now (ended on purpose, or the server is dropped).
    fn flood_over(&self) -> bool {
        let state = self.lock();
        state.stop || state.end_flood
    }

    fn publish(&self, report: FloodReport) {
        self.lock().report = Some(report);
        self.changed.notify_all();
    }
}

/// A server on `127.0.0.1:0` that floods its one client; see the module docs.
pub struct FloodServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FloodServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloodServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FloodServer {
    /// Binds `127.0.0.1:0` and waits for the one client it floods.
    pub fn start(flood: Flood) -> FloodServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("flood-{}", addr.port()))
                .spawn(move || serve(listener, &shared, &flood))
                .expect("spawn the flood thread")
        };
        FloodServer {
            addr,
            shared,
            thread: Some(thread),
        }
    }

    /// `ws://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// Ends the flood now (the report follows as if its duration were over).
    pub fn end_flood(&self) {
        self.shared.lock().end_flood = true;
        self.shared.changed.notify_all();
    }

    /// The report, once the flood ended; waits up to `timeout` for it (`None`: still
    /// flooding, or no client yet).
    pub fn report(&self, timeout: Duration) -> Option<FloodReport> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if let Some(report) = &state.report {
                return Some(report.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for FloodServer {
    fn drop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.stop = true;
            if let Some(socket) = &state.socket {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        self.shared.changed.notify_all();
        // Wakes the thread if it is still in accept() (refused if it accepted already).
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accepts one client, floods it, reports, then keeps the connection until the server is
/// dropped.
fn serve(listener: TcpListener, shared: &Arc<Shared>, flood: &Flood) {
    let stream = loop {
        match listener.accept() {
            _ if shared.stopped() => return,
            Ok((stream, _)) => break stream,
            Err(_) => continue,
        }
    };
    drop(listener);
    let result = handshake(stream, shared, flood).and_then(|(stream, params)| {
        Connection::new(stream, flood, params).map_err(|e| e.to_string())
    });
    let mut conn = match result {
        Ok(conn) => conn,
        Err(error) => {
            shared.publish(FloodReport {
                error: Some(error),
                ..FloodReport::default()
            });
            return;
        }
    };
    let reader = {
        let read = conn.stream.try_clone().expect("clone the flood socket");
        let writer = Arc::clone(&conn.writer);
        let shared = Arc::clone(shared);
        std::thread::Builder::new()
            .name("flood-reader".into())
            .spawn(move || answer_client(read, &writer, &shared))
            .expect("spawn the flood reader")
    };
    // One hold of the writer for the flood and the rest of its last message: the reader's
    // close reply, waiting for it, went in between and landed inside that message, and the
    // client never saw the close frame (its close ended as 1006).
    let writer = Arc::clone(&conn.writer);
    let whole_frames = writer.lock().unwrap_or_else(|e| e.into_inner());
    let report = conn.flood(shared, flood);
    shared.publish(report);
    conn.finish(shared);
    drop(whole_frames);
    // Keep the connection open (the reader answers pings and the close frame) until the
    // server is dropped.
    let mut state = shared.lock();
    while !state.stop {
        state = shared
            .changed
            .wait(state)
            .unwrap_or_else(|e| e.into_inner());
    }
    drop(state);
    let _ = reader.join();
}

/// The server handshake; with deflate, the agreed parameters.
fn handshake(
    stream: TcpStream,
    shared: &Shared,
    flood: &Flood,
) -> Result<(TcpStream, Option<DeflateParams>), String> {
    let keep = stream.try_clone().map_err(|e| e.to_string())?;
    shared.lock().socket = Some(keep.try_clone().map_err(|e| e.to_string())?);
    if shared.stopped() {
        return Err("the server was dropped".into());
    }
    stream
        .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut agreed = None;
    #[allow(clippy::result_large_err)] // the callback type tungstenite asks for
    let callback = |request: &tungstenite::handshake::server::Request,
                    mut response: tungstenite::handshake::server::Response| {
        if flood.deflate
            && let Some((params, value)) = wxsocket_wire::deflate::accept(request.headers())
        {
            response
                .headers_mut()
                .insert("sec-websocket-extensions", value);
            agreed = Some(params);
        }
        Ok(response)
    };
    // The client sends nothing before the 101 answer, so tungstenite has read no frame
    // bytes: the socket's clone carries on from here.
    let ws = tungstenite::accept_hdr(stream, callback)
        .map_err(|e| format!("server handshake failed: {e}"))?;
    drop(ws);
    if flood.deflate && agreed.is_none() {
        return Err("the client offered no permessage-deflate the server accepts".into());
    }
    Ok((keep, agreed))
}

/// The flooded connection.
struct Connection {
    stream: TcpStream,
    /// Taken by whoever writes a whole frame (the flood, or the reader's pong and close).
    writer: Arc<Mutex<()>>,
    /// One message's frame; all have the same length.
    frame: Vec<u8>,
    /// Where the sequence number lies in `frame`.
    seq_at: usize,
    params: Option<DeflateParams>,
    /// The bytes of the message in progress when the flood ended, still to be written.
    rest: Vec<u8>,
}

impl Connection {
    fn new(stream: TcpStream, flood: &Flood, params: Option<DeflateParams>) -> io::Result<Self> {
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(Some(WRITE_SLICE))?;
        stream.set_nodelay(true)?;
        let (frame, seq_at) = match &params {
            None => {
                let mut frame = frame_header(false, flood.size);
                let seq_at = frame.len();
                frame.extend_from_slice(&filler(flood.size));
                (frame, seq_at)
            }
            Some(params) => {
                let body = compressed_body(params, flood.size);
                let mut frame = frame_header(true, body.len());
                let seq_at = frame.len() + STORED_HEAD.len();
                frame.extend_from_slice(&body);
                (frame, seq_at)
            }
        };
        Ok(Self {
            stream,
            writer: Arc::new(Mutex::new(())),
            frame,
            seq_at,
            params,
            rest: Vec::new(),
        })
    }

    /// Writes messages until the duration is over, the count is reached or the flood is
    /// ended; measures the stalls. The caller holds the writer.
    fn flood(&mut self, shared: &Shared, flood: &Flood) -> FloodReport {
        let len = self.frame.len();
        let per_batch = (BATCH / len).max(1);
        let mut batch = self.frame.repeat(per_batch);
        let start = Instant::now();
        let deadline = start + flood.duration;
        let limit = flood.max_messages.unwrap_or(u64::MAX);
        let mut report = FloodReport {
            deflate: self.params,
            ..FloodReport::default()
        };
        let mut next = 0u64;
        let mut stall: Option<Instant> = None;
        let end_stall = |report: &mut FloodReport, began: Instant, now: Instant| {
            let length = now - began;
            report.stalls += 1;
            report.stalled += length;
            report.longest_stall = report.longest_stall.max(length);
            report.first_stall.get_or_insert(began - start);
            length
        };
        'flood: while next < limit && Instant::now() < deadline && !shared.flood_over() {
            let count = (limit - next).min(per_batch as u64) as usize;
            for i in 0..count {
                let at = i * len + self.seq_at;
                batch[at..at + SEQ_LEN].copy_from_slice(&(next + i as u64).to_be_bytes());
            }
            let bytes = &batch[..count * len];
            let mut done = 0;
            while done < bytes.len() {
                let began = Instant::now();
                let result = (&self.stream).write(&bytes[done..]);
                let now = Instant::now();
                match result {
                    Ok(0) => {
                        report.error = Some("the socket took no bytes".into());
                        break 'flood;
                    }
                    Ok(n) => {
                        done += n;
                        report.wire_bytes += n as u64;
                        if done < bytes.len() {
                            // Timed out part of the way: the socket is full.
                            stall.get_or_insert(began);
                        } else if let Some(since) = stall.take() {
                            end_stall(&mut report, since, now);
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        stall.get_or_insert(began);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => {
                        report.error = Some(format!("write failed: {e}"));
                        break 'flood;
                    }
                }
                if done < bytes.len() && (now >= deadline || shared.flood_over()) {
                    // Keep the message in progress; later ones are not started.
                    let into = done % len;
                    if into > 0 {
                        self.rest = bytes[done..done - into + len].to_vec();
                    }
                    report.sent = next + done.div_ceil(len) as u64;
                    break 'flood;
                }
            }
            next += count as u64;
            report.sent = next;
        }
        let end = Instant::now();
        if let Some(since) = stall.take() {
            report.stalled_at_end = end_stall(&mut report, since, end);
        }
        report.flooded = end - start;
        if report.error.is_none() && shared.stopped() {
            report.error = Some("the server was dropped".into());
        }
        report
    }

    /// Writes the rest of the message in progress when the flood ended (as the client
    /// makes room), unless the server is dropped first. The caller holds the writer.
    fn finish(&mut self, shared: &Shared) {
        let rest = std::mem::take(&mut self.rest);
        let _ = write_all(&self.stream, &rest, shared);
    }
}

/// Writes all of `bytes` through the write timeouts, until done or the server is dropped.
fn write_all(mut stream: &TcpStream, mut bytes: &[u8], shared: &Shared) -> io::Result<()> {
    while !bytes.is_empty() {
        match stream.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
        if shared.stopped() {
            return Err(ErrorKind::ConnectionAborted.into());
        }
    }
    Ok(())
}

/// A non-final stored DEFLATE block of [`SEQ_LEN`] bytes: header byte (BFINAL 0, BTYPE
/// 00, padding), LEN and NLEN, little-endian (RFC 1951 §3.2.4).
const STORED_HEAD: [u8; 5] = [0x00, SEQ_LEN as u8, 0x00, !(SEQ_LEN as u8), 0xff];

/// A compressed message body (without the number, which goes in the stored block's
/// 8 bytes): the stored block, then the filler compressed with a fresh context.
fn compressed_body(params: &DeflateParams, size: usize) -> Vec<u8> {
    let mut compressor = wxsocket_wire::deflate::Compressor::server(params, 0);
    let rest = filler(size)[SEQ_LEN..].to_vec();
    let filler = match compressor.encode(Message::binary(rest)) {
        tungstenite::Message::Frame(frame) => frame.into_payload(),
        other => panic!(
            "the agreement {params:?} leaves the server no window to compress with ({other:?})"
        ),
    };
    let mut body = STORED_HEAD.to_vec();
    body.extend_from_slice(&[0; SEQ_LEN]);
    body.extend_from_slice(&filler);
    body
}

/// A server frame header: FIN, binary, RSV1 when compressed, unmasked.
fn frame_header(compressed: bool, len: usize) -> Vec<u8> {
    let mut out = vec![0x80 | if compressed { 0x40 } else { 0 } | 0x2];
    match len {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xFFFF => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out
}

/// Reads the client's frames until it goes away: answers pings and the close frame (once
/// the flood has let go of the socket), ignores the rest.
fn answer_client(mut read: TcpStream, writer: &Mutex<()>, shared: &Shared) {
    while let Ok((opcode, payload)) = read_frame(&mut read) {
        let reply = match opcode {
            0x9 => frame_bytes(0xA, &payload),
            0x8 => frame_bytes(0x8, &payload),
            _ => continue,
        };
        let _whole_frame = writer.lock().unwrap_or_else(|e| e.into_inner());
        if write_all(&read, &reply, shared).is_err() {
            return;
        }
        if opcode == 0x8 {
            // After the close handshake the server ends the TCP connection first (RFC
            // 6455 §7.1.1).
            let _ = read.shutdown(Shutdown::Write);
            return;
        }
    }
}

/// An unmasked control frame (FIN set).
fn frame_bytes(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode, payload.len() as u8];
    out.extend_from_slice(payload);
    out
}

/// One client frame: its opcode and unmasked payload (at most 1 MiB: the flood's client
/// sends nothing but control frames).
fn read_frame(read: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    read.read_exact(&mut head)?;
    let opcode = head[0] & 0x0F;
    let len = match head[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            read.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            read.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    if len > 1 << 20 {
        return Err(io::Error::new(
            ErrorKind::InvalidData,
            "client frame too big",
        ));
    }
    let mut mask = [0u8; 4];
    if head[1] & 0x80 != 0 {
        read.read_exact(&mut mask)?;
    }
    let mut payload = vec![0u8; len as usize];
    read.read_exact(&mut payload)?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Ok((opcode, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::deflate;

    #[test]
    fn payloads_check_their_number_and_filler() {
        for size in [8, 32, 1000] {
            let p = payload(41, size);
            assert_eq!(p.len(), size);
            assert_eq!(check(41, size, &p), Ok(()));
            assert!(check(42, size, &p).unwrap_err().contains("got message 41"));
            assert!(check(41, size + 1, &p).is_err());
            if size > SEQ_LEN {
                let mut bad = p.clone();
                bad[size - 1] ^= 1;
                assert!(check(41, size, &bad).unwrap_err().contains("filler"));
            }
        }
    }

    #[test]
    fn header_lengths() {
        assert_eq!(frame_header(false, 32), [0x82, 32]);
        assert_eq!(frame_header(true, 300), [0xC2, 126, 1, 44]);
        assert_eq!(
            frame_header(false, 1 << 20),
            [0x82, 127, 0, 0, 0, 0, 0, 0x10, 0, 0]
        );
    }

    /// A compressed flood message inflates (with a fresh context, as every message may) to
    /// the payload, from a tiny fraction of its size.
    #[test]
    fn compressed_messages_inflate_to_the_payload() {
        let size = 1 << 20;
        let mut body = compressed_body(&DeflateParams::default(), size);
        assert!(body.len() < size / 100, "{} bytes on the wire", body.len());
        for seq in [0u64, 7, u64::MAX] {
            let at = STORED_HEAD.len();
            body[at..at + SEQ_LEN].copy_from_slice(&seq.to_be_bytes());
            let plain = deflate::inflate(&body).unwrap();
            assert_eq!(check(seq, size, &plain), Ok(()));
        }
    }

    /// The whole server against a tungstenite client: a counted flood arrives in order,
    /// and the report counts it.
    #[test]
    fn a_counted_flood_arrives_in_order() {
        let server = FloodServer::start(Flood::new(100).max_messages(5000));
        let (mut ws, _) = tungstenite::connect(server.url()).unwrap();
        let report = server.report(Duration::from_secs(5)).expect("a report");
        assert_eq!(report.sent, 5000);
        assert_eq!(report.wire_bytes, 5000 * 102);
        assert_eq!(report.error, None);
        for seq in 0..5000 {
            match ws.read().unwrap() {
                tungstenite::Message::Binary(b) => assert_eq!(check(seq, 100, &b), Ok(())),
                other => panic!("{other:?}"),
            }
        }
        ws.close(None).unwrap();
        // The server answers the close frame and ends the connection.
        while ws.read().is_ok() {}
    }

    /// A client that does not read: the flood stalls and says so, ends on time, and the
    /// message it was writing is finished once the client reads.
    #[test]
    fn a_client_that_does_not_read_stalls_the_flood() {
        let flood = Flood::new(1 << 20).duration(Duration::from_millis(600));
        let server = FloodServer::start(flood);
        let (mut ws, _) = tungstenite::connect(server.url()).unwrap();
        let report = server.report(Duration::from_secs(5)).expect("a report");
        assert_eq!(report.error, None);
        assert!(report.flooded >= Duration::from_millis(600), "{report:?}");
        assert!(report.flooded < Duration::from_secs(2), "{report:?}");
        assert!(
            report.stalled_at_end >= Duration::from_millis(300),
            "{report:?}"
        );
        assert!(report.sent > 0 && report.sent < 100, "{report:?}");
        for seq in 0..report.sent {
            match ws.read().unwrap() {
                tungstenite::Message::Binary(b) => {
                    assert_eq!(check(seq, 1 << 20, &b), Ok(()));
                }
                other => panic!("{other:?}"),
            }
        }
        drop(ws);
    }
}
