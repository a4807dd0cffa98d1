//! Profiling aid for the permessage-deflate rows: one compressed case alone (for `perf`,
//! `strace -c` or repeated runs), or the zlib limit on one thread against two threads
//! running it at once (what the client and its echo server do on a 2-core machine).
//! `probe-tokio` / `probe-blocking`: one connection's run with each thread's CPU time and
//! run-queue wait (`/proc/self/task/*/schedstat`) per message.
//! `cargo run --release -p wxsocket-bench --example deflate -- tokio|blocking|limit|probe-tokio|probe-blocking [messages] [segments] [level]`

use std::time::Instant;
use wxsocket_bench::workload::json_like_payload;
use wxsocket_bench::zlib::Limit;

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "tokio".into());
    let n: usize = args.next().map_or(3_000, |a| a.parse().unwrap());
    let segments: usize = args.next().map_or(4, |a| a.parse().unwrap());
    let level: u32 = args.next().map_or(6, |a| a.parse().unwrap());
    match what.as_str() {
        "tokio" => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let row = runtime
                .block_on(runtime.spawn(wxsocket_bench::tokio_echo::compressed_case(
                    n, segments, level,
                )))
                .unwrap()
                .unwrap();
            let z = row.zlib.unwrap();
            println!(
                "tokio {:.0} msg/s, limit {:.0}, share {:.2}, python {:?}",
                row.adapter_per_sec, z.limit_per_sec, z.share, row.python
            );
        }
        "blocking" => {
            let row =
                wxsocket_bench::blocking_echo::compressed_workload(n * segments, segments, level)
                    .unwrap();
            let z = row.zlib.unwrap();
            println!(
                "blocking {:.0} msg/s, limit {:.0}, share {:.2}, python {:?}",
                row.adapter_msgs_per_sec, z.limit_per_sec, z.share, row.python
            );
        }
        "limit" => {
            let payloads: Vec<Vec<u8>> = (0..64)
                .map(|seed| json_like_payload(seed, 4096).into_bytes())
                .collect();
            for threads in [1, 2, 1, 2] {
                let start = Instant::now();
                let rates: Vec<f64> = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..threads)
                        .map(|_| {
                            s.spawn(|| {
                                let mut limit = Limit::new(level);
                                limit.rate(&payloads, 64);
                                limit.rate(&payloads, n)
                            })
                        })
                        .collect();
                    handles.into_iter().map(|h| h.join().unwrap()).collect()
                });
                println!(
                    "{threads} thread(s): {:?} msg/s each ({:.2} s)",
                    rates.iter().map(|r| r.round()).collect::<Vec<_>>(),
                    start.elapsed().as_secs_f64()
                );
            }
        }
        "probe-tokio" => probe_tokio(n, level),
        "probe-blocking" => probe_blocking(n, level),
        other => panic!("unknown case {other}"),
    }
}

/// Each thread's name, nanoseconds on a CPU and nanoseconds waiting for one.
fn threads() -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let path = entry.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(path.join("schedstat")).unwrap_or_default();
        let mut fields = stat
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        out.push((
            format!("{}/{}", name.trim(), entry.file_name().to_string_lossy()),
            fields.next().unwrap_or(0),
            fields.next().unwrap_or(0),
        ));
    }
    out
}

fn report(before: &[(String, u64, u64)], secs: f64, n: usize) {
    let after = threads();
    let mut total = 0.0;
    for (name, cpu, wait) in &after {
        let (c0, w0) = before
            .iter()
            .find(|b| &b.0 == name)
            .map_or((0, 0), |b| (b.1, b.2));
        let cpu = (cpu - c0) as f64 / 1e3 / n as f64;
        let wait = (wait - w0) as f64 / 1e3 / n as f64;
        total += cpu;
        if cpu > 0.5 {
            println!(
                "  {name:28} {cpu:6.1} µs/msg on CPU, {wait:6.1} µs/msg waiting for a CPU, busy {:3.0} %",
                cpu * n as f64 / 1e6 / secs * 100.0
            );
        }
    }
    println!(
        "  {n} msgs in {secs:.3} s = {:.0} msg/s; all threads {total:.1} µs/msg, wall {:.1} µs/msg",
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
}

fn json_payloads() -> Vec<String> {
    (0..64).map(|seed| json_like_payload(seed, 4096)).collect()
}

fn probe_tokio(n: usize, level: u32) {
    use wxsocket_tokio::{Client, Config, ConnectOptions, Event, Message, SessionConfig};
    let (_tokio_server, _blocking_server, url) = server(level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime
        .block_on(runtime.spawn(async move {
            let payloads: Vec<Message> = json_payloads().into_iter().map(Message::text).collect();
            let session = SessionConfig::default()
                .queue_bounds(1 << 20, 256 << 20)
                .max_buffered_bytes(256 << 20);
            let (client, mut events) = Client::new(Config::default().session(session)).unwrap();
            let options = ConnectOptions::new(url)
                .tcp_no_delay(true)
                .deflate(wxsocket_core::DeflateOptions::default().level(level));
            client.connect(&options).unwrap();
            while !matches!(events.next().await, Some(Event::Open { .. })) {}
            for round in 0..4 {
                let before = threads();
                let start = Instant::now();
                let (mut sent, mut received) = (0, 0);
                while received < n {
                    while sent < n && sent - received < 64 {
                        match client.try_send(payloads[sent % 64].clone()) {
                            Ok(_) => sent += 1,
                            Err(e) if e.is_full() => break,
                            Err(e) => panic!("{e}"),
                        }
                    }
                    if let Some(Event::Message { message, .. }) = events.next().await {
                        assert!(message == payloads[received % 64]);
                        received += 1;
                    }
                }
                let secs = start.elapsed().as_secs_f64();
                println!("tokio round {round}");
                report(&before, secs, n);
            }
        }))
        .unwrap();
}

fn probe_blocking(n: usize, level: u32) {
    use wxsocket_blocking::{Client, Config, ConnectOptions, Event, Message};
    let (_tokio_server, _blocking_server, url) = server(level);
    let payloads: Vec<Message> = json_payloads().into_iter().map(Message::text).collect();
    let (client, events) = Client::new(Config::default()).unwrap();
    let options = ConnectOptions::new(url)
        .tcp_no_delay(true)
        .deflate(wxsocket_core::DeflateOptions::default().level(level));
    client.connect(&options).unwrap();
    while !matches!(events.recv(), Some(Event::Open { .. })) {}
    for round in 0..4 {
        let before = threads();
        let start = Instant::now();
        let (mut sent, mut received) = (0, 0);
        while received < n {
            while sent < n && sent - received < 64 {
                match client.try_send(payloads[sent % 64].clone()) {
                    Ok(_) => sent += 1,
                    Err(e) if e.is_full() => break,
                    Err(e) => panic!("{e}"),
                }
            }
            if let Some(Event::Message { message, .. }) = events.recv() {
                assert!(message == payloads[received % 64]);
                received += 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!("blocking round {round}");
        report(&before, secs, n);
    }
}

/// The echo server: the tokio one, or the blocking one with `SERVER=blocking`.
fn server(
    level: u32,
) -> (
    Option<wxsocket_bench::tokio_echo::EchoServer>,
    Option<wxsocket_bench::blocking_echo::EchoServer>,
    String,
) {
    if std::env::var("SERVER").is_ok_and(|s| s == "blocking") {
        let s = wxsocket_bench::blocking_echo::EchoServer::start_deflate_at_level(level).unwrap();
        let url = s.url();
        (None, Some(s), url)
    } else {
        let s = wxsocket_bench::tokio_echo::EchoServer::start_deflate_at_level(level).unwrap();
        let url = s.url();
        (Some(s), None, url)
    }
}
