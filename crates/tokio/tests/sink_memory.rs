//! What the `Sink` holds for its unsettled sends is bounded: a producer that pushes hundreds
//! of thousands of messages through `send_all`, with nobody taking the events, does not grow
//! the client's memory with them. Alone in its test binary, so that the process's resident
//! memory is this test's.

mod common;

use common::{WAIT, until_open};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wxsocket_tokio::{Client, Config, ConnectOptions, Message, SessionConfig};

/// Messages in the warm-up (the buffers and queues reach their working size) and in the
/// measured run. A sink that kept something per message sent would grow by tens of
/// megabytes over the run (a channel per message: about 120 bytes each).
const WARM_UP: u64 = 50_000;
const MEASURED: u64 = 400_000;
/// The send buffer's bound: at most one message in flight per 64 bytes of it (16,384),
/// whatever their size, so what the driver holds for them stays near a megabyte or two.
const BUFFER: usize = 1 << 20;
/// How much the resident memory may grow over the measured run.
const GROWTH_BOUND: u64 = 8 << 20;

/// The process's resident memory, in bytes (`VmRSS` of `/proc/self/status`).
fn resident() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kib << 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sinks_unsettled_sends_stay_bounded_over_a_long_send_all() {
    // A server that reads every message as fast as it comes and counts them.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = common::accept(tcp).await.unwrap();
        let mut count = 0u64;
        while let Some(Ok(message)) = ws.next().await {
            match message {
                WsMessage::Binary(_) => count += 1,
                WsMessage::Close(_) => break,
                _ => {}
            }
        }
        count
    });
    let session = SessionConfig::default()
        .queue_bounds(1024, BUFFER)
        .max_buffered_bytes(BUFFER);
    let (mut client, mut events) = Client::new(Config::default().session(session)).unwrap();
    client.connect(&ConnectOptions::new(&url)).unwrap();
    until_open(&mut events).await;
    // Nobody takes the events: their completions are dropped as they come, so only the
    // sink's own list could hold on to the sends.
    drop(events);
    send_all(&mut client, WARM_UP).await;
    let before = resident();
    send_all(&mut client, MEASURED).await;
    let after = resident();
    client.close(None, "").unwrap();
    let received = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    assert_eq!(received, WARM_UP + MEASURED, "every message arrived");
    let growth = after.saturating_sub(before);
    assert!(
        growth < GROWTH_BOUND,
        "resident memory grew by {} KiB over {MEASURED} messages ({} KiB before)",
        growth >> 10,
        before >> 10
    );
    eprintln!(
        "resident memory: {} KiB before, {} KiB after {MEASURED} messages",
        before >> 10,
        after >> 10
    );
}

/// Sends `n` small messages through the client's `Sink`, waiting for room as it goes.
async fn send_all(client: &mut Client, n: u64) {
    let message = Message::binary(vec![7u8; 16]);
    let mut all = futures_util::stream::iter((0..n).map(|_| Ok(message.clone())));
    tokio::time::timeout(WAIT * 6, client.send_all(&mut all))
        .await
        .expect("send_all did not finish")
        .expect("a message failed");
}
