//! The scale benchmark: what each idle connection costs when one process holds many.
//!
//! An echo server runs in a child process (`wxsocket-bench --scale-server`), listening on
//! several loopback addresses (127.0.0.1–4, so ports do not run short). Each client runs
//! in a child process of its own (`wxsocket-bench --scale-client KIND N ADDRS`), so its
//! memory and CPU time are its own: it opens N connections (at most [`WINDOW`] dialling at
//! a time), then every connection echoes one small message, [`ROUNDS`] times, and the
//! client reports
//!
//! - resident memory per connection: `VmRSS` (`/proc/self/status`) after the echoes,
//!   less `VmRSS` before the first connection, over N;
//! - CPU per connection to open: CPU time of all the client's threads
//!   (`/proc/self/task/*/schedstat`, nanoseconds) spent opening, over N;
//! - CPU per event: CPU time spent on the echo rounds, over N × [`ROUNDS`] (one event is
//!   a send and the echo received).
//!
//! The clients: `wxsocket-tokio`'s `TaskPool`, `wxsocket-blocking`'s `TaskPool`, and plain
//! `tokio-tungstenite` (default configuration, one task per connection), in one run. Both
//! processes raise their open-file limit to the hard limit first (with `prlimit(1)`, so
//! the crate needs no `unsafe`), or fail saying which limit is too low.

use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The clients compared: the name in the table, the name on the child's command line.
pub const CLIENTS: [(&str, &str); 3] = [
    ("wxsocket-tokio TaskPool", "tokio-pool"),
    ("wxsocket-blocking TaskPool", "blocking-pool"),
    ("tokio-tungstenite", "tokio-tungstenite"),
];

/// Echo rounds after the connections are open.
pub const ROUNDS: usize = 3;

/// Most connections dialling at once (the server's listen backlog is 1024).
pub const WINDOW: usize = 256;

/// Loopback addresses the server listens on.
const ADDRESSES: usize = 4;

/// A child that has not finished by then is stuck: it exits with an error.
const CHILD_DEADLINE: Duration = Duration::from_secs(180);

/// One client at one number of connections: medians over the rounds.
#[derive(Debug, Clone)]
pub struct ScaleRow {
    /// The client, as in [`CLIENTS`].
    pub adapter: &'static str,
    /// Connections held at once.
    pub connections: usize,
    /// Resident memory per idle connection, KiB.
    pub rss_per_conn_kib: f64,
    /// CPU time per connection to open it, µs.
    pub cpu_us_per_conn_open: f64,
    /// CPU time per echo (a send and its echo received), µs.
    pub cpu_us_per_conn_event: f64,
}

/// Runs every client at every count in `counts`, `runs` times each (medians).
pub fn run_scale_bench(counts: &[usize], runs: usize) -> Result<Vec<ScaleRow>, String> {
    let mut rows = Vec::new();
    for &n in counts {
        let mut server = Server::start(n)?;
        let mut samples: Vec<[Vec<f64>; 3]> = vec![Default::default(); CLIENTS.len()];
        for _ in 0..runs {
            for (i, (_, kind)) in CLIENTS.iter().enumerate() {
                let got = server.client(kind, n)?;
                for (m, v) in got.into_iter().enumerate() {
                    samples[i][m].push(v);
                }
            }
        }
        server.stop();
        for (i, (name, _)) in CLIENTS.iter().enumerate() {
            let [rss, open, event] = &mut samples[i];
            rows.push(ScaleRow {
                adapter: name,
                connections: n,
                rss_per_conn_kib: median(rss),
                cpu_us_per_conn_open: median(open),
                cpu_us_per_conn_event: median(event),
            });
        }
    }
    Ok(rows)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The echo server child.
struct Server {
    child: std::process::Child,
    addrs: String,
}

impl Server {
    fn start(n: usize) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["--scale-server", &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("scale server: {e}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped");
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("scale server: {e}"))?;
        if line.trim().is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            return Err("scale server: it did not start (see above)".into());
        }
        Ok(Self {
            child,
            addrs: line.trim().to_owned(),
        })
    }

    /// One client run: [RSS KiB, open µs, event µs] per connection.
    fn client(&mut self, kind: &str, n: usize) -> Result<[f64; 3], String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let output = Command::new(exe)
            .args(["--scale-client", kind, &n.to_string(), &self.addrs])
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("scale client {kind}: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let values: Vec<f64> = text
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        match (output.status.success(), values.as_slice()) {
            (true, &[rss, open, event]) => Ok([rss, open, event]),
            _ => Err(format!(
                "scale client {kind} with {n} connections failed ({}): {text}",
                output.status
            )),
        }
    }

    fn stop(mut self) {
        // Closing its stdin ends the server.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Exits the process with an error if it is still running after [`CHILD_DEADLINE`].
fn watchdog(what: &'static str) {
    std::thread::spawn(move || {
        std::thread::sleep(CHILD_DEADLINE);
        eprintln!("wxsocket-bench: {what}: no result after {CHILD_DEADLINE:?}, giving up");
        std::process::exit(3);
    });
}

/// Raises the soft limit on open files to the hard limit when `need` is above it.
pub fn raise_fd_limit(need: u64) -> Result<(), String> {
    let (soft, hard) = fd_limits()?;
    if soft >= need {
        return Ok(());
    }
    if hard < need {
        return Err(format!(
            "{need} open files are needed, but the hard limit is {hard} (raise it, e.g. `ulimit -Hn {need}` as root, or run with fewer connections)"
        ));
    }
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={hard}:{hard}"),
        ])
        .status()
        .map_err(|e| {
            format!("raising the open-file limit from {soft} to {hard} with prlimit(1): {e}")
        })?;
    let (soft, _) = fd_limits()?;
    if !status.success() || soft < need {
        return Err(format!(
            "{need} open files are needed; the soft limit is {soft} and prlimit(1) could not raise it (run `ulimit -n {hard}` first)"
        ));
    }
    Ok(())
}

fn fd_limits() -> Result<(u64, u64), String> {
    let limits = std::fs::read_to_string("/proc/self/limits").map_err(|e| e.to_string())?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .ok_or("no open-file limit in /proc/self/limits")?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    let mut next = || -> u64 {
        match fields.next() {
            Some("unlimited") => u64::MAX,
            Some(v) => v.parse().unwrap_or(0),
            None => 0,
        }
    };
    Ok((next(), next()))
}

/// Resident memory of this process, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time of every thread of this process, nanoseconds (the clients' threads all live
/// to the end of the measurement, so none is lost).
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// What a client measured: CPU at the three points, memory before and after.
struct Marks {
    rss_before: u64,
    cpu_before: u64,
    cpu_opened: u64,
    cpu_echoed: u64,
    rss_after: u64,
}

impl Marks {
    fn start() -> Self {
        Self {
            rss_before: rss_kib(),
            cpu_before: cpu_ns(),
            cpu_opened: 0,
            cpu_echoed: 0,
            rss_after: 0,
        }
    }

    fn report(&self, n: usize) {
        let n = n as f64;
        println!(
            "{:.2} {:.2} {:.2}",
            self.rss_after.saturating_sub(self.rss_before) as f64 / n,
            (self.cpu_opened - self.cpu_before) as f64 / 1e3 / n,
            (self.cpu_echoed - self.cpu_opened) as f64 / 1e3 / n / ROUNDS as f64,
        );
    }
}

/// The server child's main: `--scale-server N`. Prints its addresses on one line, then
/// echoes every text and binary message until its stdin closes.
pub fn server_main(n: usize) -> Result<(), String> {
    raise_fd_limit(n as u64 + 256)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut addrs = Vec::new();
        for i in 1..=ADDRESSES {
            let listener =
                tokio::net::TcpListener::bind(("127.0.0.".to_owned() + &i.to_string(), 0))
                    .await
                    .map_err(|e| format!("bind 127.0.0.{i}: {e}"))?;
            addrs.push(
                listener
                    .local_addr()
                    .map_err(|e| e.to_string())?
                    .to_string(),
            );
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(echo(stream));
                }
            });
        }
        println!("{}", addrs.join(","));
        // Ends when the parent closes stdin (or dies).
        tokio::task::spawn_blocking(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
        })
        .await
        .map_err(|e| e.to_string())
    })
}

async fn echo(stream: tokio::net::TcpStream) {
    // A small read buffer: the server holds as many connections as the client.
    let config = tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
            return;
        }
    }
}

/// The client child's main: `--scale-client KIND N ADDRS` (comma-separated). Prints
/// "RSS-KiB open-µs event-µs" per connection.
pub fn client_main(kind: &str, n: usize, addrs: &str) -> Result<(), String> {
    watchdog("scale client");
    raise_fd_limit(n as u64 + 256)?;
    let urls: Vec<String> = addrs.split(',').map(|a| format!("ws://{a}/")).collect();
    let marks = match kind {
        "tokio-pool" => tokio_runtime()?.block_on(tokio_pool(n, &urls))?,
        "blocking-pool" => blocking_pool(n, &urls)?,
        "tokio-tungstenite" => tokio_runtime()?.block_on(tokio_tungstenite_clients(n, &urls))?,
        other => return Err(format!("unknown scale client {other:?}")),
    };
    marks.report(n);
    Ok(())
}

fn tokio_runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

/// A pool for `n` connections: the receive bounds grow with the limit, so that each
/// connection keeps a share (256 messages and 256 KiB beyond the defaults' 16 connections'
/// worth).
fn session(n: usize) -> wxsocket_core::SessionConfig {
    let bound = (n + 16) * 256;
    wxsocket_core::SessionConfig::default()
        .pool_limit(n)
        .pool_receive_bounds(bound, bound << 10)
}

/// What one pool event means to the measurement.
enum Seen {
    Open,
    Echo,
    Other,
}

fn seen(event: wxsocket_core::Event) -> Result<Seen, String> {
    use wxsocket_core::Event;
    match event {
        Event::Open { .. } => Ok(Seen::Open),
        Event::Message { .. } => Ok(Seen::Echo),
        Event::Error { conn, error, .. } => Err(format!("connection {conn}: {error}")),
        Event::Close { conn, code, .. } => Err(format!("connection {conn} closed ({code})")),
        _ => Ok(Seen::Other),
    }
}

async fn tokio_pool(n: usize, urls: &[String]) -> Result<Marks, String> {
    use wxsocket_core::{ConnectOptions, Message};
    let (pool, mut events) =
        wxsocket_tokio::TaskPool::new(wxsocket_tokio::Config::default().session(session(n)))
            .map_err(|e| e.to_string())?;
    let mut marks = Marks::start();
    let mut tasks = Vec::with_capacity(n);
    let mut opened = 0;
    while opened < n {
        while tasks.len() < n && tasks.len() - opened < WINDOW {
            let url = &urls[tasks.len() % urls.len()];
            tasks.push(
                pool.connect(&ConnectOptions::new(url))
                    .map_err(|e| e.to_string())?,
            );
        }
        let event = events.next().await.ok_or("events ended")?;
        if let Seen::Open = seen(event)? {
            opened += 1;
        }
    }
    marks.cpu_opened = cpu_ns();
    for _ in 0..ROUNDS {
        for task in &tasks {
            task.try_send(Message::text("hello"))
                .map_err(|e| e.to_string())?;
        }
        let mut echoed = 0;
        while echoed < n {
            let event = events.next().await.ok_or("events ended")?;
            if let Seen::Echo = seen(event)? {
                echoed += 1;
            }
        }
    }
    marks.cpu_echoed = cpu_ns();
    marks.rss_after = rss_kib();
    Ok(marks)
}

fn blocking_pool(n: usize, urls: &[String]) -> Result<Marks, String> {
    use wxsocket_core::{ConnectOptions, Message};
    let (pool, events) =
        wxsocket_blocking::TaskPool::new(wxsocket_blocking::Config::default().session(session(n)))
            .map_err(|e| e.to_string())?;
    let mut marks = Marks::start();
    let mut tasks = Vec::with_capacity(n);
    let mut opened = 0;
    while opened < n {
        while tasks.len() < n && tasks.len() - opened < WINDOW {
            let url = &urls[tasks.len() % urls.len()];
            tasks.push(
                pool.connect(&ConnectOptions::new(url))
                    .map_err(|e| e.to_string())?,
            );
        }
        let event = events.recv().ok_or("events ended")?;
        if let Seen::Open = seen(event)? {
            opened += 1;
        }
    }
    marks.cpu_opened = cpu_ns();
    for _ in 0..ROUNDS {
        for task in &tasks {
            task.try_send(Message::text("hello"))
                .map_err(|e| e.to_string())?;
        }
        let mut echoed = 0;
        while echoed < n {
            let event = events.recv().ok_or("events ended")?;
            if let Seen::Echo = seen(event)? {
                echoed += 1;
            }
        }
    }
    marks.cpu_echoed = cpu_ns();
    marks.rss_after = rss_kib();
    Ok(marks)
}

/// Plain tokio-tungstenite, default configuration: one task per connection, which opens
/// it, then echoes a message at each round and otherwise waits reading.
async fn tokio_tungstenite_clients(n: usize, urls: &[String]) -> Result<Marks, String> {
    use tokio::sync::{mpsc, watch};
    use tungstenite::Message;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Result<bool, String>>();
    let (round_tx, round_rx) = watch::channel(0usize);
    let mut marks = Marks::start();
    let mut dialled = 0;
    let mut opened = 0;
    while opened < n {
        while dialled < n && dialled - opened < WINDOW {
            let url = urls[dialled % urls.len()].clone();
            let seen = seen_tx.clone();
            let mut rounds = round_rx.clone();
            tokio::spawn(async move {
                let addr = url
                    .trim_start_matches("ws://")
                    .trim_end_matches('/')
                    .to_owned();
                let connected = match tokio::net::TcpStream::connect(addr).await {
                    Ok(tcp) => {
                        let _ = tcp.set_nodelay(true);
                        tokio_tungstenite::client_async(url.as_str(), tcp).await
                    }
                    Err(e) => Err(e.into()),
                };
                let mut ws = match connected {
                    Ok((ws, _)) => ws,
                    Err(e) => {
                        let _ = seen.send(Err(format!("connect {url}: {e}")));
                        return;
                    }
                };
                let _ = seen.send(Ok(false));
                loop {
                    tokio::select! {
                        changed = rounds.changed() => {
                            if changed.is_err() || ws.send(Message::text("hello")).await.is_err() {
                                return;
                            }
                        }
                        message = ws.next() => match message {
                            Some(Ok(m)) if m.is_text() => {
                                let _ = seen.send(Ok(true));
                            }
                            Some(Ok(_)) => {}
                            _ => return,
                        }
                    }
                }
            });
            dialled += 1;
        }
        if !seen_rx.recv().await.ok_or("clients ended")?? {
            opened += 1;
        }
    }
    marks.cpu_opened = cpu_ns();
    for round in 1..=ROUNDS {
        round_tx.send(round).map_err(|e| e.to_string())?;
        let mut echoed = 0;
        while echoed < n {
            if seen_rx.recv().await.ok_or("clients ended")?? {
                echoed += 1;
            }
        }
    }
    marks.cpu_echoed = cpu_ns();
    marks.rss_after = rss_kib();
    Ok(marks)
}
