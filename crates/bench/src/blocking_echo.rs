//! The echo benchmark: this adapter versus a plain blocking tungstenite client doing the
//! same work against the same local echo server, in one run.
//!
//! Workloads (both clients set `TCP_NODELAY`, and flush every message):
//! - `small one-at-a-time`: a 32-byte text message, wait for its echo, repeat;
//! - `small pipelined`: 32-byte text messages in windows of [`PIPELINE_WINDOW`]: send a
//!   window, then read its echoes;
//! - `16KiB pipelined`: 16 KiB binary messages in windows of [`LARGE_WINDOW`];
//! - the same three again with the adapter's busy-polling turned off
//!   ([`Events::set_busy_poll`]`(Duration::ZERO)`), to show what it contributes (the
//!   plain client never polls; these rows compare the two doing exactly the same waits);
//! - `compressed 4KiB JSON pipelined`: this adapter with permessage-deflate against the
//!   same adapter without it (not against tungstenite, which has no compression), 4 KiB
//!   JSON-like text messages (64 different ones, in turn; every echo is checked), at most
//!   [`JSON_WINDOW`] in flight (a sliding window, as the tokio benchmark's), over an echo
//!   server that accepts the offer ([`EchoServer::start_deflate_at_level`]), writes each
//!   echo as it is produced and counts the bytes its socket reads and writes
//!   ([`BenchRow::wire`]); with the zlib limit measured in the same segments and the
//!   share of it reached ([`BenchRow::zlib`], see [`crate::zlib`]), and the Python
//!   `websockets` client on the same workload in the same segments ([`BenchRow::python`],
//!   see [`crate::python`]);
//! - `compressed 4KiB JSON pipelined, level 1`: the same at compression level 1 (the
//!   fast option).
//!
//! Each workload runs against a fresh echo server and is cut into [`SEGMENTS`] segments
//! (4 when `quick`); in each, both clients connect afresh and run once, alternating which
//! goes first, so both see the same machine load, and each client runs unmeasured for
//! [`WARM_UP`] right before its run (switching clients disturbs the machine for a while;
//! the warm-up measures each in its steady state). A row reports the median rate of each
//! client over the segments and the median of the per-segment ratios, which a busy machine
//! disturbs far less than one long run.
//! `cargo bench -p wxsocket-bench --bench blocking_echo` prints the table; [`run_echo_bench`] returns it for
//! other front ends (the CLI).
//!
//! ```no_run
//! for row in wxsocket_bench::blocking_echo::run_echo_bench(true).unwrap() {
//!     println!("{row}");
//! }
//! ```

use crate::python::{PythonRow, PythonSegments};
use crate::workload::median;
pub use crate::workload::{WireCounters, json_like_payload};
use crate::zlib::{Limit, LimitShare};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::Message as WsMessage;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use wxsocket_blocking::{Client, Config, ConnectOptions, DeflateOptions, Event, Events, Message};
use wxsocket_core::TransportEvent;
use wxsocket_wire::deflate::{Compressor, Inflater};

/// Messages in flight per window in the small pipelined workload.
pub const PIPELINE_WINDOW: usize = 100;
/// Messages in flight per window in the 16 KiB workload.
pub const LARGE_WINDOW: usize = 8;
/// Most messages in flight in the compressed workload (a sliding window: a message is
/// sent as soon as an echo frees room).
pub const JSON_WINDOW: usize = 64;
/// Segments each workload is cut into (a full run).
pub const SEGMENTS: usize = 20;
/// The unmeasured run of a client before each of its segments (a fifth of it when
/// `quick`); see [`run_echo_bench`].
pub const WARM_UP: Duration = Duration::from_millis(100);
/// The compressed workload's message size.
const JSON_SIZE: usize = 4 * 1024;
/// Different JSON-like messages sent in turn (so no message repeats within deflate's
/// 32 KiB window).
const JSON_VARIANTS: u64 = 64;
/// The largest message the echo server takes (tungstenite's default; the inflater's limit).
const MAX_MESSAGE: usize = 64 << 20;

/// How long any single wait in the benchmark may take before it is declared stuck.
const STUCK: Duration = Duration::from_secs(10);

/// One workload's result.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRow {
    /// The workload.
    pub name: &'static str,
    /// Messages echoed per run.
    pub messages: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Echoed messages per second, plain blocking tungstenite client (median segment); in
    /// the compressed workload, this adapter without compression.
    pub plain_msgs_per_sec: f64,
    /// Echoed messages per second, this adapter (median segment); in the compressed
    /// workload, with permessage-deflate.
    pub adapter_msgs_per_sec: f64,
    /// Median over the segments of `adapter / plain` (1.0: as fast as the plain client).
    pub ratio: f64,
    /// Set for the compressed workload: the bytes on the wire of both clients.
    pub wire: Option<WireBytes>,
    /// Set for the compressed workload: the zlib limit measured in the same segments, and
    /// the share of it the adapter reached.
    pub zlib: Option<LimitShare>,
    /// Set for the level-6 compressed workload: the Python `websockets` client on the same
    /// workload in the same segments, or why it was skipped.
    pub python: Option<PythonRow>,
}

/// Bytes on the wire per echoed message (the message and its echo, frame headers
/// included), as counted by the echo server's socket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WireBytes {
    /// With permessage-deflate.
    pub deflate: f64,
    /// Without compression.
    pub uncompressed: f64,
}

impl BenchRow {
    /// `adapter / plain`: the median of the per-segment ratios.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }
}

impl fmt::Display for BenchRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(wire) = self.wire {
            write!(
                f,
                "{:<20} {:>8} msgs  no deflate {:>10.0} msg/s  deflate {:>10.0} msg/s  ratio {:.3}  wire {:.0} B/msg deflate, {:.0} B/msg without",
                self.name,
                self.messages,
                self.plain_msgs_per_sec,
                self.adapter_msgs_per_sec,
                self.ratio(),
                wire.deflate,
                wire.uncompressed
            )?;
            if let Some(zlib) = self.zlib {
                write!(
                    f,
                    "  {:.0} % of the zlib limit ({:.0} msg/s at level {})",
                    zlib.share * 100.0,
                    zlib.limit_per_sec,
                    zlib.level
                )?;
            }
            return Ok(());
        }
        write!(
            f,
            "{:<20} {:>8} msgs  plain {:>10.0} msg/s  wxsocket-blocking {:>10.0} msg/s  ratio {:.3}",
            self.name,
            self.messages,
            self.plain_msgs_per_sec,
            self.adapter_msgs_per_sec,
            self.ratio()
        )
    }
}

/// A WebSocket echo server on 127.0.0.1 (std threads, one per connection, tungstenite).
/// Echoes text and binary messages; stops and joins its threads when dropped.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    wire: Option<Arc<WireCounters>>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    conns: Conns,
}

/// Per connection: a clone of its socket (emptied by the connection's thread when it
/// ends) to shut it down when the server stops, and the thread.
type Conns = Arc<Mutex<Vec<(Arc<Mutex<Option<TcpStream>>>, JoinHandle<()>)>>>;

impl EchoServer {
    /// Binds 127.0.0.1 on a free port and starts accepting.
    pub fn start() -> io::Result<Self> {
        Self::spawn(None)
    }

    /// Like [`start`](Self::start), but the server accepts permessage-deflate offers
    /// (compressing its echoes, inflating the client's messages) and counts the bytes its
    /// sockets read and write ([`wire`](Self::wire)).
    pub fn start_deflate() -> io::Result<Self> {
        Self::start_deflate_at_level(6)
    }

    /// [`start_deflate`](Self::start_deflate) compressing the echoes at zlib `level`
    /// (6 there), as a client at that level compresses its messages.
    pub fn start_deflate_at_level(level: u32) -> io::Result<Self> {
        Self::spawn(Some((Arc::default(), level)))
    }

    fn spawn(deflate: Option<(Arc<WireCounters>, u32)>) -> io::Result<Self> {
        let wire = deflate.as_ref().map(|(wire, _)| Arc::clone(wire));
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let conns: Conns = Arc::default();
        let accept = {
            let stop = Arc::clone(&stop);
            let conns = Arc::clone(&conns);
            std::thread::Builder::new()
                .name("echo-accept".into())
                .spawn(move || {
                    for stream in listener.incoming() {
                        if stop.load(Ordering::Acquire) {
                            break;
                        }
                        let Ok(stream) = stream else { continue };
                        let Ok(peer) = stream.try_clone() else {
                            continue;
                        };
                        let slot = Arc::new(Mutex::new(Some(peer)));
                        let mine = Arc::clone(&slot);
                        let deflate = deflate.clone();
                        let handle =
                            std::thread::Builder::new()
                                .name("echo-conn".into())
                                .spawn(move || {
                                    match deflate {
                                        None => echo(stream),
                                        Some((wire, level)) => echo_deflate(stream, wire, level),
                                    }
                                    mine.lock().unwrap_or_else(|e| e.into_inner()).take();
                                });
                        if let Ok(handle) = handle {
                            let mut conns = conns.lock().unwrap_or_else(|e| e.into_inner());
                            // Forget connections that have ended.
                            conns.retain(|(_, h)| !h.is_finished());
                            conns.push((slot, handle));
                        }
                    }
                })?
        };
        Ok(Self {
            addr,
            wire,
            stop,
            accept: Some(accept),
            conns,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    /// The bytes all its connections read and wrote, for a server made with
    /// [`start_deflate`](Self::start_deflate).
    pub fn wire(&self) -> Option<&WireCounters> {
        self.wire.as_deref()
    }
}

/// A server's socket as a tungstenite server should use it: counts the raw bytes in both
/// directions ([`WireCounters`]) and, once permessage-deflate is agreed
/// ([`inflate`](Self::inflate)), passes what the client sends through a server-side
/// [`Inflater`], so the client's compressed messages reach tungstenite as plain frames.
/// The handshake runs on it uncompressed; enable the inflater right after it (the client
/// sends no frame before it has the server's answer).
pub struct ServerStream<S> {
    inner: S,
    inflater: Option<Box<Inflater>>,
    counters: Arc<WireCounters>,
}

impl<S> fmt::Debug for ServerStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStream")
            .field("inflating", &self.inflater.is_some())
            .field("counters", &self.counters)
            .finish()
    }
}

impl<S> ServerStream<S> {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: S, counters: Arc<WireCounters>) -> Self {
        Self {
            inner,
            inflater: None,
            counters,
        }
    }

    /// From now on, reads pass through `inflater` (made with `Inflater::server`).
    pub fn inflate(&mut self, inflater: Inflater) {
        self.inflater = Some(Box::new(inflater));
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Counts what `inner` reads.
struct CountingReader<'a, R> {
    inner: &'a mut R,
    counters: &'a WireCounters,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counters.add_read(n);
        Ok(n)
    }
}

impl<S: Read> Read for ServerStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut counting = CountingReader {
            inner: &mut self.inner,
            counters: &self.counters,
        };
        match &mut self.inflater {
            None => counting.read(buf),
            Some(inflater) => inflater.read_from(&mut counting, buf),
        }
    }
}

impl<S: Write> Write for ServerStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Counted before the write (and corrected after), so the count is complete by the
        // time the peer can have read the bytes.
        let offered = buf.len() as u64;
        self.counters.add_written(offered);
        let written = self.inner.write(buf);
        let unwritten = match &written {
            Ok(n) => offered - *n as u64,
            Err(_) => offered,
        };
        self.counters.take_back_written(unwritten);
        written
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Unblock `accept`.
        let _ = TcpStream::connect(self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let conns = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|e| e.into_inner()));
        for (slot, handle) in conns {
            if let Some(stream) = slot.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
            let _ = handle.join();
        }
    }
}

fn echo(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    loop {
        match ws.read() {
            Ok(message @ (WsMessage::Text(_) | WsMessage::Binary(_))) => {
                if ws.send(message).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// The echo of [`EchoServer::start_deflate`]: accepts a permessage-deflate offer with
/// everything it asks for, compresses the echoes (32-byte threshold, as the client's
/// default) and counts the socket's bytes.
fn echo_deflate(stream: TcpStream, counters: Arc<WireCounters>, level: u32) {
    let _ = stream.set_nodelay(true);
    let mut agreed = None;
    #[allow(clippy::result_large_err)] // the callback type tungstenite asks for
    let callback = |request: &Request, mut response: Response| {
        if let Some((params, value)) = wxsocket_wire::deflate::accept(request.headers()) {
            response
                .headers_mut()
                .insert("sec-websocket-extensions", value);
            agreed = Some(params);
        }
        Ok::<Response, ErrorResponse>(response)
    };
    // A smaller read buffer than tungstenite's default (see
    // `workload::DEFLATE_SERVER_READ_BUFFER`).
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(crate::workload::DEFLATE_SERVER_READ_BUFFER);
    let Ok(mut ws) = tungstenite::accept_hdr_with_config(
        ServerStream::new(stream, counters),
        callback,
        Some(config),
    ) else {
        return;
    };
    let mut compressor = agreed.map(|params| {
        ws.get_mut().inflate(Inflater::server(&params, MAX_MESSAGE));
        Compressor::server_at_level(&params, DeflateOptions::default().threshold, level)
    });
    loop {
        match ws.read() {
            Ok(message @ (WsMessage::Text(_) | WsMessage::Binary(_))) => {
                let reply = match (
                    &mut compressor,
                    wxsocket_wire::convert::from_ws(message.clone()),
                ) {
                    (Some(c), Some(TransportEvent::Message(m))) => c.encode(m),
                    _ => message,
                };
                if ws.send(reply).is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

/// Runs the three workloads, each against a fresh local echo server, with busy-polling
/// and then without it, and returns one row each; then the compressed workload against a
/// server that accepts permessage-deflate (its row last, with [`BenchRow::wire`] set).
/// `quick` runs a tenth of the messages in 4 segments (a few seconds in all, for smoke
/// tests and demos); a full run takes about a minute.
pub fn run_echo_bench(quick: bool) -> io::Result<Vec<BenchRow>> {
    let (scale, segments, warm_up) = if quick {
        (10, 4, WARM_UP / 5)
    } else {
        (1, SEGMENTS, WARM_UP)
    };
    let small = Message::text("x".repeat(32));
    let large = Message::binary(vec![7u8; 16 * 1024]);
    // (name, messages, window, message, busy-polling on)
    let workloads: [(&'static str, usize, usize, &Message, bool); 6] = [
        ("small one-at-a-time", 20_000 / scale, 1, &small, true),
        (
            "small pipelined",
            200_000 / scale,
            PIPELINE_WINDOW,
            &small,
            true,
        ),
        (
            "16KiB pipelined",
            100_000 / scale,
            LARGE_WINDOW,
            &large,
            true,
        ),
        (
            "small one-at-a-time, busy-poll off",
            20_000 / scale,
            1,
            &small,
            false,
        ),
        (
            "small pipelined, busy-poll off",
            200_000 / scale,
            PIPELINE_WINDOW,
            &small,
            false,
        ),
        (
            "16KiB pipelined, busy-poll off",
            100_000 / scale,
            LARGE_WINDOW,
            &large,
            false,
        ),
    ];
    let mut rows = Vec::new();
    for (name, messages, window, message, busy_poll) in workloads {
        // A fresh server for every workload, so no earlier workload's history shapes
        // this one's figures (as in the tokio bench, where one shared server did).
        let server = EchoServer::start()?;
        let per_segment = (messages / segments).max(window);
        let (mut plain_rates, mut adapter_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for segment in 0..segments {
            // Fresh connections for every segment: what earlier traffic left (kernel
            // buffer sizes among it) cannot shape its figures, and the rate of one
            // connection, which on the VM this was developed on stayed 20-30 % above or
            // below another's for its whole life, is one sample of many.
            let mut plain = PlainClient::connect(&server)?;
            let adapter = AdapterClient::connect(&server, None)?;
            if !busy_poll {
                adapter
                    .events
                    .set_busy_poll(Duration::ZERO)
                    .map_err(io::Error::other)?;
            }
            let mut plain_rate = || {
                measured(warm_up, window, per_segment, |n| {
                    plain.run(message, n, window)
                })
            };
            let adapter_rate = || {
                measured(warm_up, window, per_segment, |n| {
                    adapter.run(message, n, window)
                })
            };
            let (p, a) = if segment % 2 == 0 {
                let p = plain_rate()?;
                (p, adapter_rate()?)
            } else {
                let a = adapter_rate()?;
                (plain_rate()?, a)
            };
            plain_rates.push(p);
            adapter_rates.push(a);
            ratios.push(a / p);
            plain.close();
            adapter.close();
        }
        rows.push(BenchRow {
            name,
            messages: per_segment * segments,
            size: message.len(),
            plain_msgs_per_sec: median(plain_rates),
            adapter_msgs_per_sec: median(adapter_rates),
            ratio: median(ratios),
            wire: None,
            zlib: None,
            python: None,
        });
    }
    rows.push(compressed_workload(20_000 / scale, segments, PYTHON_LEVEL)?);
    // Level 1 compresses several times faster: more messages for as long a segment.
    rows.push(compressed_workload(60_000 / scale, segments, 1)?);
    Ok(rows)
}

/// The compressed workload at compression `level`: one adapter client with
/// permessage-deflate, one without, in interleaved segments as the others, each segment
/// after the zlib limit ([`Limit`], on this thread, over a quarter as many messages); the
/// server's byte counts over each segment give the bytes on the wire. The share of the
/// limit is the median over the segments of the compressed rate / the limit. Each
/// measured run follows four windows of its client unmeasured (a warm-up, as the other
/// workloads have). At
/// [`PYTHON_LEVEL`], each segment then runs the Python `websockets` client for as many
/// echoes over one connection of its own ([`crate::python`]).
pub fn compressed_workload(messages: usize, segments: usize, level: u32) -> io::Result<BenchRow> {
    let server = EchoServer::start_deflate_at_level(level)?;
    let wire = server
        .wire()
        .ok_or_else(|| io::Error::other("no wire counters"))?;
    let payloads: Vec<Message> = (0..JSON_VARIANTS)
        .map(|seed| Message::text(json_like_payload(seed, JSON_SIZE)))
        .collect();
    let raw: Vec<Vec<u8>> = payloads.iter().map(|m| m.as_bytes().to_vec()).collect();
    let mut limit = Limit::new(level);
    let plain = AdapterClient::connect(&server, None)?;
    let deflate = AdapterClient::connect(&server, Some(level))?;
    let window = JSON_WINDOW;
    // Warm-up (which also starts both clients' message cycles, and fills the limit's
    // window).
    let (mut plain_at, mut deflate_at) = (0, 0);
    plain.run_checked(&payloads, &mut plain_at, window, window)?;
    deflate.run_checked(&payloads, &mut deflate_at, window, window)?;
    limit.rate(&raw, raw.len());
    let per_segment = (messages / segments).max(window);
    // Python `websockets` on the same workload, at the issue's level (6) only.
    let mut python = (level == PYTHON_LEVEL).then(|| {
        let texts: Vec<&str> = payloads
            .iter()
            .map(|m| std::str::from_utf8(m.as_bytes()).unwrap_or_default())
            .collect();
        PythonSegments::start(&server.url(), level, window, &texts)
    });
    let (mut plain_rates, mut deflate_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut limits, mut shares) = (Vec::new(), Vec::new());
    let (mut plain_bytes, mut deflate_bytes) = (0u64, 0u64);
    let measure = |client: &AdapterClient, at: &mut usize, bytes: &mut u64| {
        // Unmeasured first, as every other workload warms up before its run: switching
        // from one client to the other leaves a transient (DESIGN.md, 2026-12-04).
        client.run_checked(&payloads, at, 4 * window, window)?;
        let before = wire.total();
        let r = rate(per_segment, || {
            client.run_checked(&payloads, at, per_segment, window)
        })?;
        *bytes += wire.total() - before;
        io::Result::Ok(r)
    };
    for segment in 0..segments {
        let zlib = limit.rate(&raw, (per_segment / 4).max(raw.len()));
        let (p, d) = if segment % 2 == 0 {
            let p = measure(&plain, &mut plain_at, &mut plain_bytes)?;
            (p, measure(&deflate, &mut deflate_at, &mut deflate_bytes)?)
        } else {
            let d = measure(&deflate, &mut deflate_at, &mut deflate_bytes)?;
            (measure(&plain, &mut plain_at, &mut plain_bytes)?, d)
        };
        if let Some(python) = &mut python {
            python.segment(per_segment, d);
        }
        plain_rates.push(p);
        deflate_rates.push(d);
        ratios.push(d / p);
        limits.push(zlib);
        shares.push(d / zlib);
    }
    plain.close();
    deflate.close();
    let total = (per_segment * segments) as f64;
    Ok(BenchRow {
        name: match level {
            6 => "compressed 4KiB JSON pipelined",
            _ => "compressed 4KiB JSON pipelined, level 1",
        },
        messages: per_segment * segments,
        size: JSON_SIZE,
        plain_msgs_per_sec: median(plain_rates),
        adapter_msgs_per_sec: median(deflate_rates),
        ratio: median(ratios),
        wire: Some(WireBytes {
            deflate: deflate_bytes as f64 / total,
            uncompressed: plain_bytes as f64 / total,
        }),
        zlib: Some(LimitShare {
            level,
            limit_per_sec: median(limits),
            share: median(shares),
        }),
        python: python.map(PythonSegments::row),
    })
}

/// The compression level whose compressed workload is also run by Python `websockets`
/// (the issue's workload).
pub const PYTHON_LEVEL: u32 = 6;

/// Runs `run(window)` unmeasured for at least `warm_up`, then returns the rate of
/// `run(messages)`. Switching from one client to the other leaves the machine in a
/// transient state for tens of milliseconds (on the 2-core VM this was developed on, the
/// next client's round trips ran 4–5 times faster at first, then settled, whichever client
/// it was); the warm-up lets each client be measured in its own steady state, as an
/// application that uses one client would see it.
fn measured(
    warm_up: Duration,
    window: usize,
    messages: usize,
    mut run: impl FnMut(usize) -> io::Result<()>,
) -> io::Result<f64> {
    let start = Instant::now();
    while start.elapsed() < warm_up {
        run(window)?;
    }
    rate(messages, || run(messages))
}

fn rate(messages: usize, run: impl FnOnce() -> io::Result<()>) -> io::Result<f64> {
    let start = Instant::now();
    run()?;
    Ok(messages as f64 / start.elapsed().as_secs_f64())
}

fn stuck(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("echo benchmark: {what}"))
}

/// The baseline: tungstenite's own blocking client on a blocking `TcpStream`.
struct PlainClient {
    ws: tungstenite::WebSocket<TcpStream>,
}

impl PlainClient {
    fn connect(server: &EchoServer) -> io::Result<Self> {
        let stream = TcpStream::connect(server.addr())?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(STUCK))?;
        let (ws, _) = tungstenite::client(server.url(), stream)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self { ws })
    }

    fn run(&mut self, message: &Message, messages: usize, window: usize) -> io::Result<()> {
        let ws_message = wxsocket_wire::convert::to_ws(message.clone());
        let mut done = 0;
        while done < messages {
            let n = window.min(messages - done);
            for _ in 0..n {
                self.ws.send(ws_message.clone()).map_err(io::Error::other)?;
            }
            let mut got = 0;
            while got < n {
                match self.ws.read().map_err(io::Error::other)? {
                    WsMessage::Text(_) | WsMessage::Binary(_) => got += 1,
                    _ => {}
                }
            }
            done += n;
        }
        Ok(())
    }

    fn close(mut self) {
        let _ = self.ws.close(None);
        while self.ws.read().is_ok() {}
    }
}

/// This adapter, one `Client` and its `Events`.
struct AdapterClient {
    client: Client,
    events: Events,
}

impl AdapterClient {
    /// Connects, offering permessage-deflate at this compression level if `deflate` is
    /// set; fails unless compression is in force exactly when offered.
    fn connect(server: &EchoServer, deflate: Option<u32>) -> io::Result<Self> {
        let (client, events) = Client::new(Config::default()).map_err(io::Error::other)?;
        let mut options = ConnectOptions::new(server.url()).tcp_no_delay(true);
        if let Some(level) = deflate {
            options = options.deflate(DeflateOptions::default().level(level));
        }
        client.connect(&options).map_err(io::Error::other)?;
        loop {
            match events
                .recv_timeout(STUCK)
                .map_err(|_| stuck("no open event"))?
            {
                Event::Open { handshake, .. }
                    if handshake.deflate.is_some() != deflate.is_some() =>
                {
                    return Err(io::Error::other(format!(
                        "permessage-deflate expected {}, agreed {:?}",
                        if deflate.is_some() { "on" } else { "off" },
                        handshake.deflate
                    )));
                }
                Event::Open { .. } => return Ok(Self { client, events }),
                Event::Close { reason, .. } => {
                    return Err(io::Error::other(format!("connect failed: {reason}")));
                }
                _ => {}
            }
        }
    }

    fn run(&self, message: &Message, messages: usize, window: usize) -> io::Result<()> {
        let mut done = 0;
        while done < messages {
            let n = window.min(messages - done);
            for _ in 0..n {
                self.client
                    .try_send(message.clone())
                    .map_err(io::Error::other)?;
            }
            let mut got = 0;
            while got < n {
                match self
                    .events
                    .recv_timeout(STUCK)
                    .map_err(|_| stuck("no echo"))?
                {
                    Event::Message { .. } => got += 1,
                    Event::Close { reason, .. } => {
                        return Err(io::Error::other(format!("connection closed: {reason}")));
                    }
                    _ => {}
                }
            }
            done += n;
        }
        Ok(())
    }

    /// `messages` echoes with at most `window` in flight (a sliding window: another
    /// message goes out as soon as an echo frees room), sending `payloads` in turn from
    /// index `*at` on; checks that every echo is the message sent.
    fn run_checked(
        &self,
        payloads: &[Message],
        at: &mut usize,
        messages: usize,
        window: usize,
    ) -> io::Result<()> {
        let (mut sent, mut got) = (0, 0);
        while got < messages {
            while sent < messages && sent - got < window {
                let payload = &payloads[(*at + sent) % payloads.len()];
                match self.client.try_send(payload.clone()) {
                    Ok(_) => sent += 1,
                    // No room (the send buffer, or completions not taken yet): take
                    // events first, as a pipelining application does.
                    Err(e) if e.is_full() => break,
                    Err(e) => return Err(io::Error::other(e)),
                }
            }
            match self
                .events
                .recv_timeout(STUCK)
                .map_err(|_| stuck("no echo"))?
            {
                Event::Message { message, .. } => {
                    if message != payloads[(*at + got) % payloads.len()] {
                        return Err(io::Error::other(
                            "echo benchmark: an echo differs from the message sent",
                        ));
                    }
                    got += 1;
                }
                Event::Close { reason, .. } => {
                    return Err(io::Error::other(format!("connection closed: {reason}")));
                }
                _ => {}
            }
        }
        *at += messages;
        Ok(())
    }

    fn close(self) {
        if self.client.close(None, "").is_ok() {
            while let Ok(event) = self.events.recv_timeout(STUCK) {
                if matches!(event, Event::Close { .. }) {
                    break;
                }
            }
        }
    }
}

/// Prints the rows as the benchmark's table.
pub fn print_table(rows: &[BenchRow]) {
    println!(
        "echo benchmark: plain blocking tungstenite vs wxsocket-blocking (medians over interleaved segments)"
    );
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        println!("load average: {}", load.join(" "));
    }
    for row in rows.iter().filter(|r| r.wire.is_none()) {
        println!("{row}");
    }
    if rows.iter().any(|r| r.wire.is_some()) {
        println!(
            "permessage-deflate: wxsocket-blocking with compression vs without (wire = bytes the server's socket read and wrote per echoed message)"
        );
        for row in rows.iter().filter(|r| r.wire.is_some()) {
            println!("{row}");
        }
    }
}
