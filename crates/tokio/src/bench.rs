//! The echo benchmark (issue 3): this adapter against a plain tokio-tungstenite client doing
//! the same work, over one local echo server, in one run. `cargo bench -p wxsocket-tokio`
//! prints the table; the `wxsocket bench` command calls [`run_echo_bench`] too.
//!
//! Cases (messages per second, best of the runs; ratio = adapter / plain):
//!
//! | case | what both clients do |
//! |---|---|
//! | `small, one at a time` | send a 32-byte text message, wait for its echo, repeat (latency) |
//! | `small, pipelined` | send every message at once while reading the echoes; plain sends with `SinkExt::send` (a flush per message, the usual way) |
//! | `small, pipelined vs hand-batched` | as above, but plain feeds and flushes only when it has to wait (hand-written batching) |
//! | `16 KiB, one at a time` | 16 KiB binary messages, one round trip each |
//! | `16 KiB, pipelined` | 16 KiB binary messages, at most 64 in flight |
//!
//! Both clients set `TCP_NODELAY`; the server runs on its own thread and runtime and echoes
//! with `StreamExt::forward` (it flushes whenever its input runs dry).
//!
//! ```no_run
//! # async fn demo() -> Result<(), wxsocket_tokio::bench::BenchError> {
//! let rows = wxsocket_tokio::bench::run_echo_bench(true).await?;
//! println!("{}", wxsocket_tokio::bench::table(&rows));
//! # Ok(()) }
//! ```

use crate::{Client, Config, ConnectOptions, Event, Events, Message, SessionConfig};
use futures_util::{SinkExt, StreamExt, TryStreamExt, future};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, oneshot};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// A benchmark could not run (server, connection or protocol failure).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("echo benchmark: {0}")]
pub struct BenchError(pub String);

fn fail(what: impl std::fmt::Display) -> BenchError {
    BenchError(what.to_string())
}

/// One line of the result table.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BenchRow {
    /// The case's name.
    pub case: String,
    /// Messages echoed per run.
    pub messages: usize,
    /// Payload size in bytes.
    pub size: usize,
    /// Messages per second through this adapter (best run).
    pub adapter_per_sec: f64,
    /// Messages per second through the plain tokio-tungstenite client (best run).
    pub plain_per_sec: f64,
}

impl BenchRow {
    /// `adapter_per_sec / plain_per_sec`: above 1.0 means the adapter was faster.
    pub fn ratio(&self) -> f64 {
        self.adapter_per_sec / self.plain_per_sec
    }
}

/// The rows as a Markdown table.
pub fn table(rows: &[BenchRow]) -> String {
    let mut out = String::from(
        "| case | messages | size | wxsocket-tokio msg/s | tokio-tungstenite msg/s | ratio |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} B | {:.0} | {:.0} | {:.2} |\n",
            r.case,
            r.messages,
            r.size,
            r.adapter_per_sec,
            r.plain_per_sec,
            r.ratio()
        ));
    }
    out
}

/// A WebSocket echo server on `127.0.0.1`, on its own thread and runtime; it stops when
/// dropped. Text and binary messages come back as they were sent.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    /// Binds `127.0.0.1:0` and starts serving.
    pub fn start() -> std::io::Result<EchoServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wxsocket-echo".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::pin!(stopped);
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                if let Ok((stream, _)) = accepted {
                                    tokio::spawn(echo(stream));
                                }
                            }
                        }
                    }
                });
            })?;
        Ok(EchoServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `ws://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

async fn echo(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await
    else {
        return;
    };
    let (write, read) = ws.split();
    let _ = read
        .try_filter(|m| future::ready(m.is_text() || m.is_binary()))
        .forward(write)
        .await;
}

const SMALL: usize = 32;
const LARGE: usize = 16 * 1024;
const LARGE_WINDOW: usize = 64;
/// Bound on any single wait, so a broken run fails instead of hanging.
const WAIT: Duration = Duration::from_secs(30);

fn payload(size: usize, text: bool) -> (Message, WsMessage) {
    if text {
        let s = "x".repeat(size);
        (Message::text(s.clone()), WsMessage::text(s))
    } else {
        let b = bytes::Bytes::from(vec![0xA5u8; size]);
        (Message::binary(b.clone()), WsMessage::binary(b))
    }
}

/// Runs every case against a fresh local echo server and returns one row per case.
/// `quick` uses fewer messages and one run per client (a few seconds in all); otherwise
/// each client runs three times and the best run counts.
pub async fn run_echo_bench(quick: bool) -> Result<Vec<BenchRow>, BenchError> {
    let server = EchoServer::start().map_err(fail)?;
    let url = server.url();
    let runs = if quick { 1 } else { 3 };
    let scale = if quick { 4 } else { 1 };
    let cases: [(&str, usize, usize, Option<usize>, bool); 5] = [
        ("small, one at a time", 5_000 / scale, SMALL, Some(1), false),
        ("small, pipelined", 20_000 / scale, SMALL, None, false),
        (
            "small, pipelined vs hand-batched",
            20_000 / scale,
            SMALL,
            None,
            true,
        ),
        (
            "16 KiB, one at a time",
            2_000 / scale,
            LARGE,
            Some(1),
            false,
        ),
        (
            "16 KiB, pipelined",
            4_000 / scale,
            LARGE,
            Some(LARGE_WINDOW),
            false,
        ),
    ];
    let mut rows = Vec::new();
    for (case, n, size, window, hand_batched) in cases {
        let (ours, theirs) = payload(size, size == SMALL);
        let mut best_ours = 0f64;
        let mut best_plain = 0f64;
        for _ in 0..runs {
            let secs = adapter_run(&url, n, &ours, window).await?;
            best_ours = best_ours.max(n as f64 / secs);
            let secs = plain_run(&url, n, &theirs, window, hand_batched).await?;
            best_plain = best_plain.max(n as f64 / secs);
        }
        rows.push(BenchRow {
            case: case.to_owned(),
            messages: n,
            size,
            adapter_per_sec: best_ours,
            plain_per_sec: best_plain,
        });
    }
    Ok(rows)
}

async fn next_event(events: &mut Events) -> Result<Event, BenchError> {
    match tokio::time::timeout(WAIT, events.next()).await {
        Ok(Some(Event::Close { code, reason, .. })) => {
            Err(fail(format!("closed: {code} {reason}")))
        }
        Ok(Some(Event::Error { error, .. })) => Err(fail(error)),
        Ok(Some(event)) => Ok(event),
        Ok(None) => Err(fail("event stream ended")),
        Err(_) => Err(fail("timed out waiting for an event")),
    }
}

/// Seconds for `n` echoes through this adapter, at most `window` in flight (`None`: all).
async fn adapter_run(
    url: &str,
    n: usize,
    message: &Message,
    window: Option<usize>,
) -> Result<f64, BenchError> {
    let session = SessionConfig::default()
        .queue_bounds(1 << 20, 256 << 20)
        .max_buffered_bytes(256 << 20);
    let (client, mut events) = Client::new(Config::default().session(session)).map_err(fail)?;
    client
        .connect(&ConnectOptions::new(url).tcp_no_delay(true))
        .map_err(fail)?;
    while !matches!(next_event(&mut events).await?, Event::Open { .. }) {}
    let window = window.unwrap_or(n);
    let start = Instant::now();
    let (mut sent, mut received) = (0, 0);
    while received < n {
        while sent < n && sent - received < window {
            client.send_nowait(message.clone()).map_err(fail)?;
            sent += 1;
        }
        if let Event::Message { .. } = next_event(&mut events).await? {
            received += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    client.close(None, "").map_err(fail)?;
    while !matches!(events.next().await, Some(Event::Close { .. }) | None) {}
    Ok(secs)
}

/// The same work with a plain tokio-tungstenite client.
async fn plain_run(
    url: &str,
    n: usize,
    message: &WsMessage,
    window: Option<usize>,
    hand_batched: bool,
) -> Result<f64, BenchError> {
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let tcp = TcpStream::connect(addr).await.map_err(fail)?;
    tcp.set_nodelay(true).map_err(fail)?;
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, tcp, Some(ws_config()))
        .await
        .map_err(fail)?;
    let is_data = |m: &WsMessage| m.is_text() || m.is_binary();
    if window == Some(1) {
        let start = Instant::now();
        for _ in 0..n {
            ws.send(message.clone()).await.map_err(fail)?;
            loop {
                match tokio::time::timeout(WAIT, ws.next()).await {
                    Ok(Some(Ok(m))) if is_data(&m) => break,
                    Ok(Some(Ok(_))) => continue,
                    other => return Err(fail(format!("plain client: {other:?}"))),
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let _ = ws.close(None).await;
        return Ok(secs);
    }
    let window = window.unwrap_or(n);
    let credits = Arc::new(Semaphore::new(window));
    let (mut sink, mut stream) = ws.split();
    let start = Instant::now();
    let reader = tokio::spawn({
        let credits = Arc::clone(&credits);
        async move {
            let mut received = 0;
            while received < n {
                match tokio::time::timeout(WAIT, stream.next()).await {
                    Ok(Some(Ok(m))) if is_data(&m) => {
                        received += 1;
                        credits.add_permits(1);
                    }
                    Ok(Some(Ok(_))) => {}
                    other => return Err(fail(format!("plain reader: {other:?}"))),
                }
            }
            Ok(start.elapsed().as_secs_f64())
        }
    });
    for _ in 0..n {
        match credits.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => {
                if hand_batched {
                    sink.flush().await.map_err(fail)?;
                }
                credits.acquire().await.map_err(fail)?.forget();
            }
        }
        if hand_batched {
            sink.feed(message.clone()).await.map_err(fail)?;
        } else {
            sink.send(message.clone()).await.map_err(fail)?;
        }
    }
    sink.flush().await.map_err(fail)?;
    let secs = reader.await.map_err(fail)??;
    let _ = sink.close().await;
    Ok(secs)
}
