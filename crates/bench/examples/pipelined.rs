//! Profiling aid for the "small, pipelined" row: this adapter's pipelined loop alone, for
//! `perf record`, against the bench's echo server in this process.
//! `cargo run --release -p wxsocket-bench --example pipelined -- [messages] [rounds]`

use std::time::Instant;
use wxsocket_bench::tokio_echo::EchoServer;
use wxsocket_tokio::{Client, Config, ConnectOptions, Event, Message, SessionConfig};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(400_000, |a| a.parse().unwrap());
    let rounds: usize = args.next().map_or(5, |a| a.parse().unwrap());
    let server = EchoServer::start().unwrap();
    let session = SessionConfig::default()
        .queue_bounds(1 << 20, 256 << 20)
        .max_buffered_bytes(256 << 20);
    let (client, mut events) = Client::new(Config::default().session(session)).unwrap();
    client
        .connect(&ConnectOptions::new(server.url()).tcp_no_delay(true))
        .unwrap();
    while !matches!(events.next().await, Some(Event::Open { .. })) {}
    let message = Message::text("x".repeat(32));
    for _ in 0..rounds {
        let start = Instant::now();
        let (mut sent, mut received) = (0, 0);
        while received < n {
            while sent < n {
                match client.try_send(message.clone()) {
                    Ok(_) => sent += 1,
                    Err(e) if e.is_full() => break,
                    Err(e) => panic!("{e}"),
                }
            }
            if let Some(Event::Message { .. }) = events.next().await {
                received += 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        println!("{:.0} msg/s", n as f64 / secs);
    }
}
