//! A chat-style client on wxsocket-tokio: messages sent before the socket opens are queued
//! and flushed in order, each send reports exactly one completion, and the close is clean.
//!
//! `cargo run -p wxsocket-tokio --example tokio_chat [URL]` — without a URL it starts a local
//! echo server (try `cargo run -p wxsocket-cli -- serve` and pass its URL instead).

use wxsocket_tokio::{Client, Config, ConnectOptions, Event};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let local = wxsocket_test_server::EchoServer::start()?;
    let url = std::env::args().nth(1).unwrap_or_else(|| local.url());

    let (client, mut events) = Client::new(Config::default())?;
    client.connect(&ConnectOptions::new(url))?;
    for line in ["hello", "from", "wxsocket"] {
        let id = client.try_send(line)?; // queued: the socket is still connecting
        println!("queued {line:?} as send {id}");
    }
    let mut echoes = 0;
    while let Some(event) = events.next().await {
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
