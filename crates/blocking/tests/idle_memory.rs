//! A connection that received a long message keeps nothing of it once idle: letting go of
//! the message gives its memory back. Alone in its test binary, so that the process's
//! resident memory is this test's.

mod common;

use common::{is_close, is_open, next, until};
use wxsocket_blocking::{Client, Config, ConnectOptions, Event, Events, Message};

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
fn round_trip(client: &Client, events: &Events, text: &str) {
    client.send(Message::text(text)).unwrap();
    loop {
        match next(events) {
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
#[test]
fn an_idle_connection_gives_back_a_long_messages_memory() {
    let server = wxsocket_test_server::EchoServer::flooding(1, LONG).unwrap();
    let (client, events) = Client::new(Config::default()).unwrap();
    client.connect(&ConnectOptions::new(server.url())).unwrap();
    until(&events, is_open);
    let payload = loop {
        match next(&events) {
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
    round_trip(&client, &events, "after");
    assert!(
        payload.is_unique(),
        "the connection still shares the long message's allocation"
    );
    let holding = resident();
    drop(payload);
    round_trip(&client, &events, "dropped");
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
    until(&events, is_close);
}
