//! The echo client the Autobahn TestSuite's fuzzing server tests (`scripts/autobahn`).
//!
//! ```text
//! autobahn_client tokio|blocking ws://127.0.0.1:PORT
//! ```
//!
//! It speaks the fuzzing server's client protocol: `/getCaseCount` answers with the number
//! of cases; for each case it connects to `/runCase?case=N&agent=AGENT` and echoes every
//! message back (text as text, binary as binary) until the connection closes; at the end
//! `/updateReports?agent=AGENT` tells the server the run is over. Everything goes through
//! one adapter's public client, with the default permessage-deflate offer, so the verdicts
//! are those of the library as an application uses it. The agent is `wxsocket-tokio` or
//! `wxsocket-blocking`.
//!
//! One local choice differs from the default: every message is compressed, however short
//! (`threshold(0)`; by default messages under 32 bytes go out uncompressed, which RFC 7692
//! allows). kosoku 0.1.0 hands an uncompressed echo in a compression case (12.x, 13.x) to
//! the case file as a `str` (latin-1 for binary), which the case file cannot hash or
//! compare, so the first case of each group (16-byte messages) would fail on the runner's
//! side whatever the client did. Compressing them too keeps those cases in the run.
//!
//! Exits 0 once every case ran (the verdicts are the server's to judge), 1 when a case
//! did not end within the per-event limit, 2 on a usage error.

use std::process::ExitCode;
use std::time::Duration;
use wxsocket_core::{ConnectOptions, DeflateOptions, Event, Message, SessionConfig};
use wxsocket_tests::adapter::{Adapter, BlockingAdapter, TokioAdapter};
use wxsocket_wire::tls::TlsRoots;

/// Longest wait for the next event of a case (the slowest cases, 9.x on a loaded machine
/// with an unoptimised build, take seconds per message).
const EVENT_LIMIT: Duration = Duration::from_secs(120);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [adapter, base] = args.as_slice() else {
        eprintln!("usage: autobahn_client tokio|blocking ws://HOST:PORT");
        return ExitCode::from(2);
    };
    let base = base.trim_end_matches('/');
    let outcome = match adapter.as_str() {
        "tokio" => run::<TokioAdapter>(base, "wxsocket-tokio"),
        "blocking" => run::<BlockingAdapter>(base, "wxsocket-blocking"),
        other => {
            eprintln!("autobahn_client: unknown adapter {other:?} (tokio or blocking)");
            return ExitCode::from(2);
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autobahn_client [{adapter}]: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run<A: Adapter>(base: &str, agent: &str) -> Result<(), String> {
    // Room for the suite's largest messages (16 MiB in 9.x) and their echoes in flight.
    let config = SessionConfig::default()
        .max_message_size(32 << 20)
        .max_buffered_bytes(64 << 20);
    let mut a = A::new(config, TlsRoots::default()).map_err(|e| e.to_string())?;
    let count = match session(&mut a, &format!("{base}/getCaseCount"), false)?.as_slice() {
        [Message::Text(t)] => t
            .as_str()
            .trim()
            .parse::<u32>()
            .map_err(|e| format!("case count {:?}: {e}", t.as_str()))?,
        other => return Err(format!("expected the case count, got {other:?}")),
    };
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={agent}");
        session(&mut a, &url, true).map_err(|e| format!("case {case}: {e}"))?;
    }
    session(
        &mut a,
        &format!("{base}/updateReports?agent={agent}"),
        false,
    )?;
    eprintln!("autobahn_client: {agent} ran {count} cases");
    Ok(())
}

/// One connection to `url`, until it closes; with `echo`, every message is sent back.
/// Returns the messages received.
fn session<A: Adapter>(a: &mut A, url: &str, echo: bool) -> Result<Vec<Message>, String> {
    let mut options = ConnectOptions::new(url);
    if echo {
        // The default offer; every message compressed, the shortest included (see the
        // module docs).
        options = options.deflate(DeflateOptions::default().threshold(0));
    }
    let conn = a.connect(&options).map_err(|e| e.to_string())?;
    let mut received = Vec::new();
    loop {
        match a.next_event(EVENT_LIMIT) {
            Some(Event::Message {
                conn: c, message, ..
            }) if c == conn => {
                if echo {
                    // Refused only once the connection is closing: nothing to echo then.
                    let _ = a.try_send(message.clone());
                }
                received.push(message);
            }
            Some(Event::Close { conn: c, .. }) if c == conn => return Ok(received),
            Some(_) => {}
            None => return Err(format!("no event within {EVENT_LIMIT:?}")),
        }
    }
}
