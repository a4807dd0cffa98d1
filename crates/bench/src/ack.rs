//! Delivery acknowledgement's cost (SPEC §8): pipelined echo throughput of each adapter
//! with acknowledgement on against the same adapter with it off, in the same run.
//!
//! A client keeps up to [`WINDOW`] messages in flight (sent, not yet echoed) and sends
//! a fixed number of messages of each size; a round ends once every echo and every send's outcome
//! (`SendCompleted` off, `SendDelivered` on) arrived, so the cost of waiting for the last
//! acknowledgement is included. Rounds alternate off and on against one echo server; the
//! ratio is the median of the per-pair ratios.

use crate::workload::median;
use std::time::{Duration, Instant};
use wxsocket_core::{Acknowledgement, ConnectOptions, Event, Message, SessionConfig};

/// Messages in flight at most.
pub const WINDOW: usize = 64;

/// One line of the acknowledgement table.
#[derive(Debug, Clone)]
pub struct AckRow {
    /// `wxsocket-tokio` or `wxsocket-blocking`.
    pub adapter: &'static str,
    /// Messages per round.
    pub messages: usize,
    /// Payload bytes per message.
    pub size: usize,
    /// Median messages per second with acknowledgement off.
    pub off_per_sec: f64,
    /// Median messages per second with it on.
    pub on_per_sec: f64,
    /// Median of on / off over the pairs of rounds.
    pub ratio: f64,
}

fn session(ack: bool) -> SessionConfig {
    let session = SessionConfig::default();
    if ack {
        session.acknowledge(Acknowledgement::new())
    } else {
        session
    }
}

/// Counts one round's progress; `Err` on anything a clean round does not produce.
#[derive(Default)]
struct Round {
    sent: usize,
    echoed: usize,
    settled: usize,
}

impl Round {
    fn take(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Message { .. } => self.echoed += 1,
            Event::SendCompleted { .. } | Event::SendDelivered { .. } => self.settled += 1,
            Event::SendFailed { reason, .. } => return Err(format!("a send failed: {reason}")),
            Event::Error { error, .. } => return Err(format!("connection error: {error}")),
            Event::Close { code, .. } => return Err(format!("closed with {code}")),
            _ => {}
        }
        Ok(())
    }

    fn done(&self, n: usize) -> bool {
        self.echoed == n && self.settled == n
    }
}

async fn tokio_round(url: &str, ack: bool, n: usize, size: usize) -> Result<Duration, String> {
    use wxsocket_tokio::{Client, Config};
    let (client, mut events) =
        Client::new(Config::new().session(session(ack))).map_err(|e| e.to_string())?;
    client
        .connect(&ConnectOptions::new(url))
        .map_err(|e| e.to_string())?;
    loop {
        match events.next().await {
            Some(Event::Open { .. }) => break,
            Some(Event::Connecting { .. }) => {}
            other => return Err(format!("before open: {other:?}")),
        }
    }
    let payload = Message::binary(vec![7u8; size]);
    let started = Instant::now();
    let mut round = Round::default();
    while !round.done(n) {
        while round.sent < n && round.sent - round.echoed < WINDOW {
            client
                .try_send(payload.clone())
                .map_err(|e| format!("send refused: {e}"))?;
            round.sent += 1;
        }
        let event = events.next().await.ok_or("the events ended")?;
        round.take(event)?;
        while let Some(event) = events.try_next() {
            round.take(event)?;
        }
    }
    let elapsed = started.elapsed();
    client.close(None, "").map_err(|e| e.to_string())?;
    while let Some(event) = events.next().await {
        if matches!(event, Event::Close { .. }) {
            break;
        }
    }
    Ok(elapsed)
}

fn blocking_round(url: &str, ack: bool, n: usize, size: usize) -> Result<Duration, String> {
    use wxsocket_blocking::{Client, Config};
    let (client, events) =
        Client::new(Config::new().session(session(ack))).map_err(|e| e.to_string())?;
    client
        .connect(&ConnectOptions::new(url))
        .map_err(|e| e.to_string())?;
    loop {
        match events.recv() {
            Some(Event::Open { .. }) => break,
            Some(Event::Connecting { .. }) => {}
            other => return Err(format!("before open: {other:?}")),
        }
    }
    let payload = Message::binary(vec![7u8; size]);
    let started = Instant::now();
    let mut round = Round::default();
    while !round.done(n) {
        while round.sent < n && round.sent - round.echoed < WINDOW {
            client
                .try_send(payload.clone())
                .map_err(|e| format!("send refused: {e}"))?;
            round.sent += 1;
        }
        let event = events.recv().ok_or("the events ended")?;
        round.take(event)?;
        while let Ok(event) = events.try_recv() {
            round.take(event)?;
        }
    }
    let elapsed = started.elapsed();
    client.close(None, "").map_err(|e| e.to_string())?;
    while let Some(event) = events.recv() {
        if matches!(event, Event::Close { .. }) {
            break;
        }
    }
    Ok(elapsed)
}

/// The acknowledgement rows: each adapter, small and 16 KiB messages, `rounds` pairs.
pub fn run_ack_bench(quick: bool) -> Result<Vec<AckRow>, String> {
    let rounds = if quick { 3 } else { 7 };
    let cases: [(usize, usize); 2] = if quick {
        [(5_000, 32), (1_000, 16 << 10)]
    } else {
        [(20_000, 32), (4_000, 16 << 10)]
    };
    let server = crate::tokio_echo::EchoServer::start().map_err(|e| e.to_string())?;
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut rows = Vec::new();
    for adapter in ["wxsocket-tokio", "wxsocket-blocking"] {
        for (messages, size) in cases {
            let round = |ack: bool| -> Result<Duration, String> {
                if adapter == "wxsocket-tokio" {
                    let url = url.clone();
                    runtime
                        .block_on(
                            runtime
                                .spawn(async move { tokio_round(&url, ack, messages, size).await }),
                        )
                        .map_err(|e| e.to_string())?
                } else {
                    blocking_round(&url, ack, messages, size)
                }
            };
            // One warm-up pair, not counted.
            round(false)?;
            round(true)?;
            let (mut off, mut on, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..rounds {
                let a = messages as f64 / round(false)?.as_secs_f64();
                let b = messages as f64 / round(true)?.as_secs_f64();
                off.push(a);
                on.push(b);
                ratios.push(b / a);
            }
            rows.push(AckRow {
                adapter,
                messages,
                size,
                off_per_sec: median(off),
                on_per_sec: median(on),
                ratio: median(ratios),
            });
        }
    }
    Ok(rows)
}
