//! A WebSocket server that records every text message it reads, for the delivery
//! acknowledgement tests (`tests/tests/ack.rs`), which kill it with SIGKILL and start it
//! again on the same listening socket.
//!
//! ```text
//! record_server < LISTENING-SOCKET
//! ```
//!
//! Its standard input is a listening TCP socket (the test keeps it open between restarts,
//! so the port stays the test's and connections wait in its backlog while no server runs).
//! It serves one connection at a time and prints each text message on its own line on
//! standard output, flushed, **before reading the next frame**: a pong it sends answers a
//! ping that came after every message already printed (tungstenite sends the pong on the
//! next read), so an acknowledged message is a recorded one.

use std::io::Write;
use std::net::TcpListener;
use std::os::fd::AsFd;
use tungstenite::Message;

fn main() {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .expect("standard input is not a file descriptor");
    let listener = TcpListener::from(fd);
    let mut out = std::io::stdout().lock();
    loop {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let Ok(mut ws) = tungstenite::accept(stream) else {
            continue;
        };
        while let Ok(message) = ws.read() {
            if let Message::Text(text) = message
                && writeln!(out, "{}", text.as_str())
                    .and_then(|()| out.flush())
                    .is_err()
            {
                return;
            }
        }
    }
}
