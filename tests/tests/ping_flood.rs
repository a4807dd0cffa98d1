//! A server that floods the client with pings and never reads, on both adapters: the pongs
//! the client owes cannot be written, and it must stop reading instead of queueing them
//! without end (it grew by 20–25 MiB a second). TCP then pushes back on the server.
//!
//! One test in its own binary, so the process's resident memory is this test's: both
//! adapters run one after the other, each measured from its own start.
//!
//! Linux only (`/proc`).

#![cfg(target_os = "linux")]

use std::io::{ErrorKind, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wxsocket_core::{ConnectOptions, ReadyState, SessionConfig};
use wxsocket_tests::adapter::{Adapter, BlockingAdapter, TokioAdapter};
use wxsocket_tests::scenario::{client, open};

/// How long the server floods.
const FLOOD: Duration = Duration::from_secs(3);
/// The last part of the flood, in which a client that stopped reading lets the server write
/// (almost) nothing.
const TAIL: Duration = Duration::from_secs(1);
/// How much the client may grow while flooded: the pongs it owes are bounded at 64 KiB,
/// its read-ahead at 64 KiB; the rest is in the kernel's socket buffers.
const GROWTH: u64 = 16 << 20;
/// A ping the server sends: unmasked, 125 bytes of payload (the most a ping holds).
fn ping() -> Vec<u8> {
    [0x89, 125].into_iter().chain([b'p'; 125]).collect()
}

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("VmRSS")
        * 1024
}

/// What the server saw: pings written in all, and in the flood's last [`TAIL`].
struct Flooded {
    pings: u64,
    in_tail: u64,
}

/// Accepts one client, completes its upgrade, then writes pings for [`FLOOD`] and never
/// reads; keeps the socket open until `done`.
struct PingServer {
    url: String,
    thread: Option<JoinHandle<Flooded>>,
    done: Arc<AtomicBool>,
}

impl PingServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        let done = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&done);
        let thread = std::thread::spawn(move || {
            let (tcp, _) = listener.accept().unwrap();
            tcp.set_nodelay(true).unwrap();
            let mut ws = tungstenite::accept(tcp).expect("the upgrade");
            let tcp = ws.get_mut();
            // A short write timeout: a write the client does not make room for returns.
            tcp.set_write_timeout(Some(Duration::from_millis(20)))
                .unwrap();
            let batch = ping().repeat(64);
            let (pings, in_tail) = (AtomicU64::new(0), AtomicU64::new(0));
            let start = Instant::now();
            let mut rest: &[u8] = &[];
            while start.elapsed() < FLOOD {
                if rest.is_empty() {
                    rest = &batch;
                }
                match tcp.write(rest) {
                    Ok(n) => {
                        let before = (batch.len() - rest.len()) / 127;
                        rest = &rest[n..];
                        let written = (batch.len() - rest.len()) / 127 - before;
                        pings.fetch_add(written as u64, Ordering::Relaxed);
                        if start.elapsed() >= FLOOD - TAIL {
                            in_tail.fetch_add(written as u64, Ordering::Relaxed);
                        }
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) => panic!("the flood's write failed: {e}"),
                }
            }
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Flooded {
                pings: pings.into_inner(),
                in_tail: in_tail.into_inner(),
            }
        });
        Self {
            url,
            thread: Some(thread),
            done,
        }
    }

    /// Lets the connection go (once the flood is over) and says what the server wrote.
    fn finish(mut self) -> Flooded {
        self.done.store(true, Ordering::Release);
        self.thread.take().unwrap().join().unwrap()
    }
}

/// Floods one adapter's client; returns its growth at most and what the server wrote.
fn flood<A: Adapter>() -> (u64, Flooded) {
    let server = PingServer::start();
    let config = SessionConfig::default().close_timeout(Duration::from_millis(500));
    let mut a: A = client(config);
    open(&mut a, &ConnectOptions::new(&server.url));
    let base = rss();
    let most = Arc::new(Mutex::new(0u64));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (most, sampling) = (Arc::clone(&most), Arc::clone(&sampling));
        std::thread::spawn(move || {
            while sampling.load(Ordering::Acquire) {
                let now = rss().saturating_sub(base);
                let mut most = most.lock().unwrap();
                *most = (*most).max(now);
                drop(most);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(FLOOD);
    sampling.store(false, Ordering::Release);
    sampler.join().unwrap();
    // Still open: a peer that pings is alive, whether or not it reads.
    assert_eq!(a.state(), ReadyState::Open, "[{}]", A::NAME);
    let flooded = server.finish();
    a.shutdown();
    let most = *most.lock().unwrap();
    (most, flooded)
}

fn check<A: Adapter>() {
    let (growth, flooded) = flood::<A>();
    eprintln!(
        "[{}] {} pings written, {} in the last {:?}; the client grew by {:.1} MiB at most",
        A::NAME,
        flooded.pings,
        flooded.in_tail,
        TAIL,
        growth as f64 / f64::from(1 << 20)
    );
    assert!(
        flooded.pings > 1_000,
        "[{}] the server wrote only {} pings: no flood to speak of",
        A::NAME,
        flooded.pings
    );
    assert!(
        growth < GROWTH,
        "[{}] the client grew by {} bytes while pinged and not read from",
        A::NAME,
        growth
    );
    // Once its pongs back up, the client stops reading and the server's writes block:
    // in the flood's last second it writes what a few socket buffers hold at most.
    assert!(
        flooded.in_tail * 127 < 4 << 20,
        "[{}] the server wrote {} pings in the flood's last {:?}: the client kept reading",
        A::NAME,
        flooded.in_tail,
        TAIL
    );
}

#[test]
fn a_server_that_pings_and_never_reads_cannot_grow_the_client() {
    check::<TokioAdapter>();
    check::<BlockingAdapter>();
}
