//! Receive-only throughput and CPU: a server (a child process of this one, so its CPU is not
//! counted) sends N messages of one size as fast as it can, and a client only receives them.
//! Clients: plain tokio-tungstenite (`tt`), wxsocket-tokio (`wx-tokio`), plain tungstenite
//! (`tung`) and wxsocket-blocking (`wx-blocking`), alternated in the same run. Printed per
//! client: msg/s, MB/s and the process CPU seconds (user + system, from `/proc/self/stat`)
//! per GiB received.
//!
//! `cargo run --release -p wxsocket-bench --example receive -- [rounds] [MiB per size]
//! [text] [only=tt,wx-tokio,...] [sizes=1048576,65536,1024]`

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

const KINDS: [&str; 4] = ["tt", "wx-tokio", "tung", "wx-blocking"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        let size: usize = args[1].parse().unwrap();
        let n: usize = args[2].parse().unwrap();
        serve(size, n, args[3] == "text");
        return;
    }
    let mut rounds = 3;
    let mut mib = 1024usize;
    let mut text = false;
    let mut only: Vec<String> = KINDS.iter().map(|k| k.to_string()).collect();
    let mut sizes = vec![1 << 20, 64 << 10, 1 << 10];
    let mut positional = 0;
    for a in &args {
        if a == "text" {
            text = true;
        } else if let Some(list) = a.strip_prefix("only=") {
            only = list.split(',').map(str::to_owned).collect();
        } else if let Some(list) = a.strip_prefix("sizes=") {
            sizes = list.split(',').map(|s| s.parse().unwrap()).collect();
        } else {
            match positional {
                0 => rounds = a.parse().unwrap(),
                _ => mib = a.parse().unwrap(),
            }
            positional += 1;
        }
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!(
        "{:>8} {:>12} {:>6} {:>12} {:>10} {:>10} {:>8}",
        "size", "client", "round", "msg/s", "MB/s", "cpu s/GiB", "sys %"
    );
    for &size in &sizes {
        // Small messages: fewer bytes, or a round takes minutes.
        let total = if size < 4096 {
            (mib << 20) / 8
        } else {
            mib << 20
        };
        let n = (total / size).max(1);
        let mut results: Vec<(String, Vec<f64>)> = Vec::new();
        for round in 0..rounds {
            for kind in &only {
                let (url, mut child) = spawn_server(size, n, text);
                let r = match kind.as_str() {
                    "tt" => rt.block_on(tt(&url, n)),
                    "wx-tokio" => rt.block_on(wx_tokio(&url, n)),
                    "tung" => tung(&url, n),
                    "wx-blocking" => wx_blocking(&url, n),
                    other => panic!("unknown client {other}"),
                };
                let _ = child.kill();
                let _ = child.wait();
                let bytes = (n * size) as f64;
                let per_gib = r.cpu / (bytes / (1u64 << 30) as f64);
                println!(
                    "{:>8} {:>12} {:>6} {:>12.0} {:>10.0} {:>10.3} {:>8.0}",
                    size,
                    kind,
                    round,
                    n as f64 / r.secs,
                    bytes / r.secs / 1e6,
                    per_gib,
                    100.0 * r.sys / (r.user + r.sys).max(1e-9)
                );
                match results.iter_mut().find(|(k, _)| k == kind) {
                    Some((_, v)) => v.push(per_gib),
                    None => results.push((kind.clone(), vec![per_gib])),
                }
            }
        }
        for (kind, mut v) in results {
            v.sort_by(f64::total_cmp);
            println!(
                "{:>8} {:>12} median cpu s/GiB {:.3} (range {:.3}..{:.3})",
                size,
                kind,
                v[v.len() / 2],
                v[0],
                v[v.len() - 1]
            );
        }
    }
}

struct Run {
    secs: f64,
    cpu: f64,
    user: f64,
    sys: f64,
}

/// This process's CPU seconds so far, from its threads' scheduler statistics (nanoseconds;
/// `/proc/self/stat` counts 10 ms ticks).
fn cpu_exact() -> f64 {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(path) {
            ns += s.split(' ').next().unwrap().parse::<u64>().unwrap();
        }
    }
    ns as f64 / 1e9
}

/// User and system CPU seconds of this process so far (10 ms ticks).
fn cpu() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // After the command name in parentheses: field 3 on; utime and stime are 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let tick = 100.0;
    (
        fields[11].parse::<f64>().unwrap() / tick,
        fields[12].parse::<f64>().unwrap() / tick,
    )
}

struct Meter(Instant, (f64, f64), f64);

impl Meter {
    fn start() -> Self {
        Meter(Instant::now(), cpu(), cpu_exact())
    }
    fn stop(self) -> Run {
        let secs = self.0.elapsed().as_secs_f64();
        let exact = cpu_exact() - self.2;
        let (u, s) = cpu();
        Run {
            secs,
            cpu: exact,
            user: u - self.1.0,
            sys: s - self.1.1,
        }
    }
}

fn spawn_server(size: usize, n: usize, text: bool) -> (String, Child) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--serve",
            &size.to_string(),
            &n.to_string(),
            if text { "text" } else { "binary" },
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (format!("ws://{}/", line.trim()), child)
}

/// The server: one connection, `n` messages as fast as tungstenite writes them, then it
/// waits for the client to go.
fn serve(size: usize, n: usize, text: bool) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    println!("{}", listener.local_addr().unwrap());
    std::io::stdout().flush().unwrap();
    let (stream, _) = listener.accept().unwrap();
    stream.set_nodelay(true).unwrap();
    let mut ws = tungstenite::accept(stream).unwrap();
    let message = if text {
        tungstenite::Message::text("x".repeat(size))
    } else {
        tungstenite::Message::binary(vec![7u8; size])
    };
    for _ in 0..n {
        if ws.write(message.clone()).is_err() {
            return;
        }
    }
    let _ = ws.flush();
    while ws.read().is_ok() {}
}

async fn tt(url: &str, n: usize) -> Run {
    use futures_util::StreamExt;
    let stream =
        tokio::net::TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches('/'))
            .await
            .unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let meter = Meter::start();
    let mut got = 0;
    while got < n {
        match ws.next().await.unwrap().unwrap() {
            tungstenite::Message::Binary(_) | tungstenite::Message::Text(_) => got += 1,
            _ => {}
        }
    }
    meter.stop()
}

fn tung(url: &str, n: usize) -> Run {
    let stream = TcpStream::connect(url.trim_start_matches("ws://").trim_end_matches('/')).unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut ws, _) = tungstenite::client(url, stream).unwrap();
    let meter = Meter::start();
    let mut got = 0;
    while got < n {
        match ws.read().unwrap() {
            tungstenite::Message::Binary(_) | tungstenite::Message::Text(_) => got += 1,
            _ => {}
        }
    }
    meter.stop()
}

async fn wx_tokio(url: &str, n: usize) -> Run {
    use wxsocket_tokio::{Client, Config, ConnectOptions, Event};
    let (client, mut events) = Client::new(Config::default()).unwrap();
    client
        .connect(&ConnectOptions::new(url).tcp_no_delay(true))
        .unwrap();
    while !matches!(events.next().await, Some(Event::Open { .. })) {}
    let meter = Meter::start();
    let mut got = 0;
    while got < n {
        match events.next().await {
            Some(Event::Message { .. }) => got += 1,
            Some(_) => {}
            None => panic!("events ended after {got}"),
        }
    }
    let run = meter.stop();
    client.shutdown().await;
    run
}

fn wx_blocking(url: &str, n: usize) -> Run {
    use wxsocket_blocking::{Client, Config, ConnectOptions, Event};
    let (client, events) = Client::new(Config::default()).unwrap();
    client
        .connect(&ConnectOptions::new(url).tcp_no_delay(true))
        .unwrap();
    while !matches!(events.recv(), Some(Event::Open { .. })) {}
    let meter = Meter::start();
    let mut got = 0;
    while got < n {
        match events.recv() {
            Some(Event::Message { .. }) => got += 1,
            Some(_) => {}
            None => panic!("events ended after {got}"),
        }
    }
    let run = meter.stop();
    client.shutdown();
    run
}
