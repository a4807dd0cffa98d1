//! The flood benchmark (flow control): a server writes numbered messages as fast as the
//! client takes them, and the client, an application that reads every message, counts them.
//! Each client runs in a child process of its own (`wxsocket-bench --flood-client …`), so
//! its peak resident memory (`VmHWM` in `/proc/self/status`) is its own: each adapter
//! against the plain client of its stack (`wxsocket-tokio` against `tokio-tungstenite`,
//! `wxsocket-blocking` against `tungstenite`), alternating, in the same run.

use futures_util::StreamExt;
use std::io::BufRead;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The clients compared: each adapter and the plain client of its stack.
pub const PAIRS: [[&str; 2]; 2] = [
    ["wxsocket-tokio", "tokio-tungstenite"],
    ["wxsocket-blocking", "tungstenite"],
];

/// One case: both clients' medians.
#[derive(Debug, Clone)]
pub struct FloodRow {
    /// The adapter and the plain client it is measured against.
    pub clients: [&'static str; 2],
    /// Messages per run.
    pub messages: u64,
    /// Bytes per message.
    pub size: usize,
    /// Messages per second, median over the rounds: the adapter's, the plain client's.
    pub per_sec: [f64; 2],
    /// Peak resident memory of the client process in KiB, largest over the rounds.
    pub peak_rss_kib: [u64; 2],
}

impl FloodRow {
    /// The adapter's throughput over the plain client's.
    pub fn ratio(&self) -> f64 {
        self.per_sec[0] / self.per_sec[1]
    }
}

/// Runs every case (`quick`: fewer messages and rounds).
pub fn run_flood_bench(quick: bool) -> Result<Vec<FloodRow>, String> {
    let rounds = if quick { 1 } else { 3 };
    let cases: [(u64, usize); 2] = if quick {
        [(50_000, 32), (500, 64 << 10)]
    } else {
        [(400_000, 32), (4_000, 64 << 10)]
    };
    let mut rows = Vec::new();
    for clients in PAIRS {
        for (messages, size) in cases {
            let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
            let mut peaks = [0u64; 2];
            for _ in 0..rounds {
                for (i, client) in clients.iter().enumerate() {
                    let (rate, peak) = one_run(client, messages, size)?;
                    rates[i].push(rate);
                    peaks[i] = peaks[i].max(peak);
                }
            }
            rows.push(FloodRow {
                clients,
                messages,
                size,
                per_sec: [median(&mut rates[0]), median(&mut rates[1])],
                peak_rss_kib: peaks,
            });
        }
    }
    Ok(rows)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One client run against a fresh server: (messages per second, peak RSS in KiB).
fn one_run(client: &str, messages: u64, size: usize) -> Result<(f64, u64), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let url = format!(
        "ws://{}/",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let server = std::thread::spawn(move || serve(listener, messages, size));
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let output = Command::new(exe)
        .args(["--flood-client", client, &url, &messages.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("flood client: {e}"))?;
    let served = server.join().map_err(|_| "flood server panicked")?;
    if served != messages {
        return Err(format!("the server sent {served} of {messages} messages"));
    }
    let line = output
        .stdout
        .lines()
        .next()
        .and_then(Result::ok)
        .ok_or("no report from the flood client")?;
    let mut fields = line.split_whitespace().map(str::parse::<f64>);
    match (fields.next(), fields.next()) {
        (Some(Ok(secs)), Some(Ok(peak))) => Ok((messages as f64 / secs, peak as u64)),
        _ => Err(format!("flood client ({client}) reported {line:?}")),
    }
}

/// The server: one client, `messages` numbered messages written as fast as it takes them
/// (flushed every 64), then a close. Returns how many were written.
fn serve(listener: TcpListener, messages: u64, size: usize) -> u64 {
    let Ok((tcp, _)) = listener.accept() else {
        return 0;
    };
    let _ = tcp.set_write_timeout(Some(Duration::from_secs(60)));
    let Ok(mut ws) = tungstenite::accept(tcp) else {
        return 0;
    };
    let mut payload = vec![b'.'; size.max(8)];
    let mut sent = 0;
    for n in 0..messages {
        payload[..8].copy_from_slice(format!("{:08}", n % 100_000_000).as_bytes());
        if ws
            .write(tungstenite::Message::binary(payload.clone()))
            .is_err()
        {
            break;
        }
        if n % 64 == 63 && ws.flush().is_err() {
            break;
        }
        sent = n + 1;
    }
    let _ = ws.close(None);
    while ws.read().is_ok() {}
    sent
}

/// The child process: reads `messages` messages from `url` with `client`, then prints the
/// seconds it took (from the first message) and its peak RSS in KiB.
pub fn client_main(client: &str, url: &str, messages: u64) -> Result<(), String> {
    let secs = match client {
        "wxsocket-blocking" => wxsocket_blocking_reads(url, messages)?,
        "tungstenite" => tungstenite_reads(url, messages)?,
        _ => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                match client {
                    "wxsocket-tokio" => wxsocket_reads(url, messages).await,
                    "tokio-tungstenite" => plain_reads(url, messages).await,
                    other => Err(format!("unknown flood client {other}")),
                }
            })?
        }
    };
    println!("{secs} {}", peak_rss_kib().unwrap_or(0));
    Ok(())
}

fn wxsocket_blocking_reads(url: &str, messages: u64) -> Result<f64, String> {
    use wxsocket_blocking::{Client, Config, ConnectOptions};
    let (client, events) = Client::new(Config::default()).map_err(|e| e.to_string())?;
    client
        .connect(&ConnectOptions::new(url))
        .map_err(|e| e.to_string())?;
    let mut seen = Seen::default();
    while seen.wants(messages) {
        seen.take(events.recv())?;
    }
    let _ = client.close(None, "");
    Ok(seen.secs())
}

fn tungstenite_reads(url: &str, messages: u64) -> Result<f64, String> {
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let (mut ws, _) = tungstenite::client(url, tcp).map_err(|e| e.to_string())?;
    let mut seen = 0;
    let mut started = None;
    while seen < messages {
        match ws.read() {
            Ok(tungstenite::Message::Binary(b)) => {
                started.get_or_insert_with(Instant::now);
                check(&b, seen)?;
                seen += 1;
            }
            Ok(_) => {}
            Err(e) => return Err(format!("after {seen}: {e}")),
        }
    }
    let secs = started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let _ = ws.close(None);
    Ok(secs)
}

async fn wxsocket_reads(url: &str, messages: u64) -> Result<f64, String> {
    use wxsocket_tokio::{Client, Config, ConnectOptions};
    let (client, mut events) = Client::new(Config::default()).map_err(|e| e.to_string())?;
    client
        .connect(&ConnectOptions::new(url))
        .map_err(|e| e.to_string())?;
    let mut seen = Seen::default();
    while seen.wants(messages) {
        seen.take(events.next().await)?;
    }
    let _ = client.close(None, "");
    Ok(seen.secs())
}

async fn plain_reads(url: &str, messages: u64) -> Result<f64, String> {
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches('/')
        .to_owned();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let mut seen = 0;
    let mut started = None;
    while seen < messages {
        match ws.next().await {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Binary(b))) => {
                started.get_or_insert_with(Instant::now);
                check(&b, seen)?;
                seen += 1;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(format!("after {seen}: {e}")),
            None => return Err(format!("ended after {seen}")),
        }
    }
    let secs = started.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let _ = ws.close(None).await;
    Ok(secs)
}

/// What a wxsocket client (either adapter) has read so far: its messages, checked in order,
/// and when the first came.
#[derive(Default)]
struct Seen {
    messages: u64,
    started: Option<Instant>,
}

impl Seen {
    /// Whether fewer than `messages` came.
    fn wants(&self, messages: u64) -> bool {
        self.messages < messages
    }

    /// The next event of the stream.
    fn take(&mut self, event: Option<wxsocket_blocking::Event>) -> Result<(), String> {
        use wxsocket_blocking::Event;
        match event {
            Some(Event::Message { message, .. }) => {
                self.started.get_or_insert_with(Instant::now);
                check(message.as_bytes(), self.messages)?;
                self.messages += 1;
                Ok(())
            }
            Some(Event::Close { code, reason, .. }) => {
                Err(format!("closed after {}: {code} {reason}", self.messages))
            }
            Some(_) => Ok(()),
            None => Err("events ended".into()),
        }
    }

    /// Seconds from the first message.
    fn secs(&self) -> f64 {
        self.started.map_or(0.0, |t| t.elapsed().as_secs_f64())
    }
}

/// The message numbered `n`, in order.
fn check(bytes: &[u8], n: u64) -> Result<(), String> {
    let got = std::str::from_utf8(&bytes[..8])
        .ok()
        .and_then(|s| s.parse::<u64>().ok());
    if got == Some(n % 100_000_000) {
        Ok(())
    } else {
        Err(format!("message {n} arrived as {got:?}"))
    }
}

/// `VmHWM` of this process, in KiB.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
