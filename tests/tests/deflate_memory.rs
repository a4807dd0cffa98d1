//! What permessage-deflate costs a connection in memory, measured as the process's resident
//! memory over many connections (`VmRSS` of `/proc/self/status`). Alone in its test binary,
//! with one test that runs the adapters one after the other, so that the process's memory
//! is this test's.
//!
//! The server echoes the client's frames as they are, the compressed ones still compressed
//! (unmasked, RSV1 kept), so it holds no compression state of its own: only the client's
//! is measured. With no context takeover both ways each compressed message stands alone,
//! so the echo is one the client can inflate.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wxsocket_core::{ConnectOptions, DeflateOptions, Event, Message, SessionConfig};
use wxsocket_tests::adapter::{BlockingPool, EVENT_TIMEOUT, PoolAdapter, Task, TokioPool};
use wxsocket_tests::scenario::raw_upgrade;
use wxsocket_wire::tls::TlsRoots;

/// Connections per measurement: enough that what one holds shows above the noise (zlib's
/// state, about 350 KiB a connection before it was made lazily, is 70 MB over these).
const CONNECTIONS: usize = 200;
/// The most a connection may add to the process's resident memory, in KiB. Without
/// compression a connection holds about 10 KiB (the README's figure); zlib's compression
/// state alone is about 320 KiB, its inflate state about 40 KiB.
const PER_CONNECTION_KIB: u64 = 64;

/// The process's resident memory, in KiB.
fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// A server answering every offer with `answer` and echoing each frame as it came (a
/// client's frames unmasked); one thread per connection, stopped on drop.
struct EchoFrames {
    url: String,
    stop: Arc<AtomicBool>,
}

impl EchoFrames {
    fn start(answer: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::Acquire) {
                    return;
                }
                let Ok(stream) = stream else { return };
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let _ = serve(stream, answer);
                    })
                    .unwrap();
            }
        });
        Self { url, stop }
    }
}

impl Drop for EchoFrames {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = TcpStream::connect(self.url.trim_start_matches("ws://").trim_end_matches('/'));
    }
}

/// One connection: the handshake, then every frame echoed unmasked until the client's
/// close frame, which is echoed too (the close handshake), or the end of the stream.
fn serve(mut tcp: TcpStream, answer: &str) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(60)))?;
    raw_upgrade(&mut tcp, Some(answer))?;
    loop {
        let mut header = [0u8; 2];
        tcp.read_exact(&mut header)?;
        let len = match header[1] & 0x7f {
            126 => {
                let mut n = [0u8; 2];
                tcp.read_exact(&mut n)?;
                u16::from_be_bytes(n) as usize
            }
            127 => {
                let mut n = [0u8; 8];
                tcp.read_exact(&mut n)?;
                u64::from_be_bytes(n) as usize
            }
            n => n as usize,
        };
        let mut mask = [0u8; 4];
        tcp.read_exact(&mut mask)?;
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload)?;
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
        let mut frame = vec![header[0]];
        match len {
            n if n < 126 => frame.push(n as u8),
            n if n <= 0xffff => {
                frame.push(126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(&payload);
        tcp.write_all(&frame)?;
        if header[0] & 0x0f == 0x8 {
            return Ok(());
        }
    }
}

/// Opens [`CONNECTIONS`] connections on a pool of `P` with `deflate` offered, has each
/// echo `messages` messages of 1 KiB (compressed on the way out and back), waits for the
/// echoes, and returns how much the process's resident memory grew per connection, in
/// KiB, with all of them still open.
fn kib_per_connection<P: PoolAdapter>(
    answer: &'static str,
    deflate: DeflateOptions,
    messages: usize,
) -> u64 {
    let server = EchoFrames::start(answer);
    let session = SessionConfig::default().pool_limit(CONNECTIONS);
    let mut pool = P::new(session, TlsRoots::default()).unwrap();
    let options = ConnectOptions::new(&server.url).deflate(deflate);
    let before = resident_kib();
    let tasks: Vec<P::Task> = (0..CONNECTIONS)
        .map(|_| pool.connect(&options).unwrap())
        .collect();
    let mut opened = 0;
    let mut echoed = 0;
    let text: String = "the quick brown fox jumps over the lazy dog; "
        .chars()
        .cycle()
        .take(1024)
        .collect();
    while opened < CONNECTIONS || echoed < CONNECTIONS * messages {
        let event = pool
            .next_event(EVENT_TIMEOUT)
            .unwrap_or_else(|| panic!("[{}] {opened} opened, {echoed} echoed", P::NAME));
        match event {
            Event::Open {
                conn, handshake, ..
            } => {
                assert!(handshake.deflate.is_some(), "compression was agreed");
                opened += 1;
                let task = tasks.iter().find(|t| t.current() == Some(conn)).unwrap();
                for _ in 0..messages {
                    task.try_send(Message::text(text.as_str())).unwrap();
                }
            }
            Event::Message { message, .. } => {
                assert_eq!(message.as_text(), Some(text.as_str()));
                echoed += 1;
            }
            Event::Error { error, .. } => panic!("[{}] {error}", P::NAME),
            Event::Close { code, reason, .. } => panic!("[{}] closed {code} {reason}", P::NAME),
            _ => {}
        }
    }
    // The last reads have found the sockets dry by now; a moment for the drivers to settle.
    std::thread::sleep(Duration::from_millis(200));
    let grown = resident_kib().saturating_sub(before);
    drop(tasks);
    drop(pool);
    drop(server);
    grown / CONNECTIONS as u64
}

fn both_ways_without_context() -> DeflateOptions {
    DeflateOptions::default()
        .client_no_context_takeover(true)
        .server_no_context_takeover(true)
}

#[test]
fn a_deflate_connection_holds_no_zlib_state_it_does_not_need() {
    const WITH_CONTEXT: &str = "permessage-deflate";
    const WITHOUT: &str =
        "permessage-deflate; client_no_context_takeover; server_no_context_takeover";
    let mut report = Vec::new();
    for adapter in ["tokio", "blocking"] {
        let measure = |answer, deflate, messages| match adapter {
            "tokio" => kib_per_connection::<TokioPool>(answer, deflate, messages),
            _ => kib_per_connection::<BlockingPool>(answer, deflate, messages),
        };
        // Agreed with context takeover, but nothing sent yet: no zlib state is made.
        let idle = measure(WITH_CONTEXT, DeflateOptions::default(), 0);
        // Without context takeover, each message's state is let go after it.
        let used = measure(WITHOUT, both_ways_without_context(), 3);
        report.push(format!(
            "{adapter}: idle {idle} KiB, after 3 echoes without context {used} KiB"
        ));
        assert!(
            idle <= PER_CONNECTION_KIB && used <= PER_CONNECTION_KIB,
            "per connection: {report:?}"
        );
    }
    eprintln!("{report:?}");
}
