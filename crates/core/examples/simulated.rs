//! The core alone, driven by hand on a simulated clock: what a custom runtime (a game loop,
//! a mini-program engine, a simulator) does. No sockets: the "driver" below answers every
//! action itself, so the whole run loop is visible.
//!
//! `cargo run -p wxsocket-core --example simulated`

use std::time::{Duration, Instant};
use wxsocket_core::*;

fn main() {
    let config =
        SessionConfig::default().keepalive(Duration::from_secs(20), Duration::from_secs(5));
    let mut session = Session::new(config).expect("valid config");
    let mut now = Instant::now();

    let conn = session
        .connect(&ConnectOptions::new("wss://example.com/chat"), now)
        .expect("valid options");
    println!("connecting as connection {conn}");
    session
        .send(Message::text("queued before open"), now)
        .expect("queued");

    // One turn of the run loop: carry out actions, deliver events.
    let turn = |session: &mut Session, now: Instant| {
        while let Some(action) = session.poll_action() {
            println!("driver <- {action:?}");
            match action {
                Action::Dial { conn, .. } => {
                    session.handle(conn, TransportEvent::Opened(Box::default()), now)
                }
                Action::Send { conn, id, message } => {
                    session.handle(conn, TransportEvent::SendWritten(id), now);
                    session.handle(conn, TransportEvent::Message(message), now); // an echo
                }
                Action::Ping { conn, payload } => {
                    session.handle(conn, TransportEvent::Pong(payload), now)
                }
                Action::Close { conn, frame } => {
                    let peer = PeerClose {
                        code: Some(frame.code()),
                        reason: frame.reason().to_owned(),
                    };
                    session.handle(conn, TransportEvent::PeerClosed(peer), now);
                    session.handle(conn, TransportEvent::Closed, now);
                }
                _ => {}
            }
        }
        while let Some(event) = session.poll_event() {
            println!("app    <- {event:?}");
        }
    };
    turn(&mut session, now);

    // Jump the clock to the next deadline: the keepalive ping after 20 s of silence.
    now = session.poll_timeout().expect("keepalive armed");
    session.handle_timeout(now);
    turn(&mut session, now);

    session.close(Some(4000), "bye", now).expect("open");
    turn(&mut session, now);
    assert_eq!(session.state(), ReadyState::Closed);
}
