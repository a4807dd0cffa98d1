//! A connection that received a long message keeps nothing of it once idle: letting go of
//! the message gives its memory back. Alone in its test binary, so that the process's
//! resident memory is this test's.

mod common;

use common::{next, until_open};
use wxsocket_tokio::{Client, Config, ConnectOptions, Event, Message};

/// The long message: over glibc's largest mmap threshold (32 MiB), so that its allocation
/// is mapped on its own and freeing it returns it to the system at once.
const LONG: usize = 40 << 20;

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

/// Sends `text` and waits for its echo.
async fn round_trip(client: &Client, events: &mut wxsocket_tokio::Events, text: &str) {
    client.send(Message::text(text)).await.unwrap();
    loop {
        match next(events).await {
            Event::Message { message, .. } if message.as_text() == Some(text) => return,
            Event::Close { .. } => panic!("closed"),
            _ => {}
        }
    }
}

/// tungstenite reads a frame into a buffer reserved for the whole frame and hands the
/// payload out as a slice of it, and kept that buffer for the next frames: a connection
/// that once received a 40 MiB message held 40 MiB for the rest of its life, even after
/// the application let go of the message. Now the message the application holds is the
/// only owner of its memory once the connection is idle, and dropping it gives the memory
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_gives_back_a_long_messages_memory() {
    let server = wxsocket_test_server::EchoServer::flooding(1, LONG).unwrap();
    let (client, mut events) = Client::new(Config::default()).unwrap();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    until_open(&mut events).await;
    let payload = loop {
        match next(&mut events).await {
            Event::Message {
                message: Message::Binary(payload),
                ..
            } => break payload,
            Event::Close { .. } => panic!("closed"),
            _ => {}
        }
    };
    assert_eq!(payload.len(), LONG);
    assert!(
        payload.iter().all(|&b| b == 0),
        "the flood's first message is zeros"
    );
    // The server has finished writing (and freed its copy) once it echoes; the connection
    // has read its socket dry and flushed since the long message.
    round_trip(&client, &mut events, "after").await;
    assert!(
        payload.is_unique(),
        "the connection still shares the long message's allocation"
    );
    let holding = resident();
    drop(payload);
    round_trip(&client, &mut events, "dropped").await;
    let after = resident();
    let freed = holding.saturating_sub(after);
    eprintln!(
        "resident memory: {} KiB holding the message, {} KiB after letting go",
        holding >> 10,
        after >> 10
    );
    assert!(
        freed >= (LONG as u64) * 3 / 4,
        "letting go of a {LONG}-byte message freed {} KiB ({} KiB before, {} KiB after)",
        freed >> 10,
        holding >> 10,
        after >> 10
    );
    client.close(None, "").unwrap();
    common::until_close(&mut events).await;
}
