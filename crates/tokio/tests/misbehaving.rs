//! Servers that break the protocol: each ends in an error event and a close with the
//! documented code, the client's close frame carries that code, and nothing hangs.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;
use wxsocket_tokio::{Client, Config, ConnectOptions, ConnectionError, Event, SessionConfig};

/// Answers the handshake, writes `frames`, then returns the code of the client's close
/// frame (`None` when the connection ended without one).
async fn raw_server(frames: Vec<u8>) -> (String, JoinHandle<Option<u16>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut tcp, _) = listener.accept().await.unwrap();
        raw_accept(&mut tcp).await;
        tcp.write_all(&frames).await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            // A masked frame: header (2), mask (4), payload.
            if buf.len() >= 2 {
                let len = (buf[1] & 0x7f) as usize;
                if buf.len() >= 6 + len {
                    let mask = [buf[2], buf[3], buf[4], buf[5]];
                    let payload: Vec<u8> = buf[6..6 + len]
                        .iter()
                        .enumerate()
                        .map(|(i, b)| b ^ mask[i % 4])
                        .collect();
                    let opcode = buf[0] & 0x0f;
                    buf.drain(..6 + len);
                    if opcode == 0x8 {
                        return (payload.len() >= 2)
                            .then(|| u16::from_be_bytes([payload[0], payload[1]]));
                    }
                    continue;
                }
            }
            match tokio::time::timeout(WAIT, tcp.read(&mut chunk))
                .await
                .unwrap()
            {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    (url, task)
}

async fn run(frames: Vec<u8>, config: Config) -> (Vec<Event>, Option<u16>) {
    let (url, server) = raw_server(frames).await;
    let (client, mut events) = Client::new(config).unwrap();
    client.connect(&ConnectOptions::new(&url)).unwrap();
    let seen = until(&mut events, |e| matches!(e, Event::Close { .. })).await;
    let code = tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
    (seen, code)
}

fn close_of(seen: &[Event]) -> (u16, bool) {
    match seen.last() {
        Some(Event::Close { code, clean, .. }) => (*code, *clean),
        other => panic!("expected a close last: {other:?}"),
    }
}

fn has_error(seen: &[Event]) -> bool {
    seen.iter().any(|e| {
        matches!(
            e,
            Event::Error {
                error: ConnectionError::Transport(_),
                ..
            }
        )
    })
}

#[tokio::test]
async fn invalid_utf8_text_is_1007() {
    let (seen, sent) = run(vec![0x81, 0x02, 0xC3, 0x28], Config::default()).await;
    assert!(has_error(&seen), "{seen:?}");
    assert_eq!(close_of(&seen), (1007, false));
    assert_eq!(
        sent,
        Some(1007),
        "the client's close frame carries the code"
    );
}

#[tokio::test]
async fn oversized_message_is_1009() {
    let mut frame = vec![0x82, 126, 0x08, 0x00]; // binary, 2048 bytes
    frame.extend(std::iter::repeat_n(7u8, 2048));
    let config = Config::default().session(
        SessionConfig::default()
            .max_message_size(1024)
            .queue_bounds(16, 1024)
            .max_buffered_bytes(1024),
    );
    let (seen, sent) = run(frame, config).await;
    assert!(has_error(&seen), "{seen:?}");
    assert_eq!(close_of(&seen), (1009, false));
    assert_eq!(sent, Some(1009));
}

#[tokio::test]
async fn reserved_bits_are_a_protocol_error_1002() {
    let (seen, sent) = run(vec![0xF1, 0x01, b'x'], Config::default()).await;
    assert!(has_error(&seen), "{seen:?}");
    assert_eq!(close_of(&seen), (1002, false));
    assert_eq!(sent, Some(1002));
}

#[tokio::test]
async fn a_good_message_before_a_bad_one_is_still_delivered() {
    let mut frames = vec![0x81, 0x02, b'o', b'k'];
    frames.extend([0x81, 0x01, 0xFF]);
    let (seen, _) = run(frames, Config::default()).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, Event::Message { message, .. } if message.as_bytes() == b"ok"))
    );
    assert_eq!(close_of(&seen).0, 1007);
}
