//! A chat-style client on wxsocket-blocking (no async runtime): the same session model as
//! the tokio adapter, with events from an iterator.
//!
//! `cargo run -p wxsocket-blocking --example blocking_chat [URL]` — without a URL it starts a
//! local echo server.

use wxsocket_blocking::{Client, Config, ConnectOptions, Event};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let local = wxsocket_test_server::EchoServer::start()?;
    let url = std::env::args().nth(1).unwrap_or_else(|| local.url());

    let (client, events) = Client::new(Config::default())?;
    client.connect(&ConnectOptions::new(url))?;
    for line in ["hello", "from", "wxsocket"] {
        let id = client.try_send(line)?; // queued: the socket is still connecting
        println!("queued {line:?} as send {id}");
    }
    let mut echoes = 0;
    for event in &events {
        match event {
            Event::Open { conn, .. } => println!("{conn}: open; the queue is flushed in order"),
            Event::SendCompleted { id, .. } => println!("send {id} written"),
            Event::Message { message, .. } => {
                println!("echo: {message:?}");
                echoes += 1;
                if echoes == 3 {
                    client.close(Some(4000), "bye")?;
                }
            }
            Event::Close {
                code,
                reason,
                clean,
                ..
            } => {
                println!("closed: {code} {reason:?} clean={clean}");
                break;
            }
            other => println!("{other:?}"),
        }
    }
    Ok(())
}
