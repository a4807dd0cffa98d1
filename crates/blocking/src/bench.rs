//! The echo benchmark: this adapter versus a plain blocking tungstenite client doing the
//! same work against the same local echo server, in one run.
//!
//! Workloads (both clients set `TCP_NODELAY`, and flush every message):
//! - `small one-at-a-time`: a 32-byte text message, wait for its echo, repeat;
//! - `small pipelined`: 32-byte text messages in windows of [`PIPELINE_WINDOW`]: send a
//!   window, then read its echoes;
//! - `16KiB pipelined`: 16 KiB binary messages in windows of [`LARGE_WINDOW`].
//!
//! Each workload is cut into [`SEGMENTS`] segments (4 when `quick`); each segment runs
//! once with each client, alternating which goes first, so both see the same machine
//! load. A row reports the median rate of each client over the segments and the median
//! of the per-segment ratios, which a busy machine disturbs far less than one long run.
//! `cargo bench -p wxsocket-blocking` prints the table; [`run_echo_bench`] returns it for
//! other front ends (the CLI).
//!
//! ```no_run
//! for row in wxsocket_blocking::bench::run_echo_bench(true).unwrap() {
//!     println!("{row}");
//! }
//! ```

use crate::{Client, Config, ConnectOptions, Event, Events, Message};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tungstenite::Message as WsMessage;

/// Messages in flight per window in the small pipelined workload.
pub const PIPELINE_WINDOW: usize = 100;
/// Messages in flight per window in the 16 KiB workload.
pub const LARGE_WINDOW: usize = 8;
/// Segments each workload is cut into (a full run).
pub const SEGMENTS: usize = 20;

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
    /// Echoed messages per second, plain blocking tungstenite client (median segment).
    pub plain_msgs_per_sec: f64,
    /// Echoed messages per second, this adapter (median segment).
    pub adapter_msgs_per_sec: f64,
    /// Median over the segments of `adapter / plain` (1.0: as fast as the plain client).
    pub ratio: f64,
}

impl BenchRow {
    /// `adapter / plain`: the median of the per-segment ratios.
    pub fn ratio(&self) -> f64 {
        self.ratio
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

impl fmt::Display for BenchRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
                        let handle =
                            std::thread::Builder::new()
                                .name("echo-conn".into())
                                .spawn(move || {
                                    echo(stream);
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

/// Runs the three workloads against one local echo server and returns one row each.
/// `quick` runs a tenth of the messages in 4 segments (a few seconds in all, for smoke
/// tests and demos); a full run takes about ten seconds.
pub fn run_echo_bench(quick: bool) -> io::Result<Vec<BenchRow>> {
    let server = EchoServer::start()?;
    let (scale, segments) = if quick { (10, 4) } else { (1, SEGMENTS) };
    let small = Message::text("x".repeat(32));
    let large = Message::binary(vec![7u8; 16 * 1024]);
    let workloads: [(&'static str, usize, usize, Message); 3] = [
        ("small one-at-a-time", 20_000 / scale, 1, small.clone()),
        ("small pipelined", 200_000 / scale, PIPELINE_WINDOW, small),
        ("16KiB pipelined", 20_000 / scale, LARGE_WINDOW, large),
    ];
    let mut plain = PlainClient::connect(&server)?;
    let adapter = AdapterClient::connect(&server)?;
    let mut rows = Vec::new();
    for (name, messages, window, message) in workloads {
        // A short warm-up of each, then the measured segments.
        plain.run(&message, window.min(messages), window)?;
        adapter.run(&message, window.min(messages), window)?;
        let per_segment = (messages / segments).max(window);
        let (mut plain_rates, mut adapter_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for segment in 0..segments {
            let (p, a) = if segment % 2 == 0 {
                let p = rate(per_segment, || plain.run(&message, per_segment, window))?;
                (
                    p,
                    rate(per_segment, || adapter.run(&message, per_segment, window))?,
                )
            } else {
                let a = rate(per_segment, || adapter.run(&message, per_segment, window))?;
                (
                    rate(per_segment, || plain.run(&message, per_segment, window))?,
                    a,
                )
            };
            plain_rates.push(p);
            adapter_rates.push(a);
            ratios.push(a / p);
        }
        rows.push(BenchRow {
            name,
            messages: per_segment * segments,
            size: message.len(),
            plain_msgs_per_sec: median(plain_rates),
            adapter_msgs_per_sec: median(adapter_rates),
            ratio: median(ratios),
        });
    }
    plain.close();
    adapter.close();
    Ok(rows)
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
    fn connect(server: &EchoServer) -> io::Result<Self> {
        let (client, events) = Client::new(Config::default()).map_err(io::Error::other)?;
        client
            .connect(&ConnectOptions::new(server.url()).tcp_no_delay(true))
            .map_err(io::Error::other)?;
        loop {
            match events
                .recv_timeout(STUCK)
                .map_err(|_| stuck("no open event"))?
            {
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
                    .send(message.clone())
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
    for row in rows {
        println!("{row}");
    }
}
