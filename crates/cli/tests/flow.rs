//! `wxsocket connect --json` is a consumer like any other (issue 16): when its stdout is a
//! pipe read slowly, it stops taking events, the adapter stops reading, and TCP pushes
//! back on a flooding server; its memory stays bounded and every message is printed, once,
//! in order. Both adapters, over loopback; the client's memory is read from
//! `/proc/PID/status` while it runs.

mod common;

use common::{bin, with_adapter};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Messages the server sends, and their size: 80 MiB in all, more than the bound.
const COUNT: u64 = 5_000;
const SIZE: usize = 16 << 10;
/// The bound the issue sets on the client's resident memory.
const MAX_RSS_KIB: u64 = 64 << 10;

/// Accepts one client and writes `COUNT` numbered messages, then a close frame; returns
/// when the client has taken them all (or the connection failed).
fn flood_server() -> (String, std::thread::JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut ws = tungstenite::accept(tcp).unwrap();
        let mut sent = 0;
        for n in 0..COUNT {
            let mut text = format!("{n:08}");
            text.extend(std::iter::repeat_n('.', SIZE - 8));
            if ws.write(tungstenite::Message::text(text)).is_err() {
                break;
            }
            if n % 64 == 63 && ws.flush().is_err() {
                break;
            }
            sent = n + 1;
        }
        let _ = ws.close(None);
        while ws.read().is_ok() {}
        sent
    });
    (url, server)
}

/// The `VmRSS` and `VmHWM` (peak) of process `pid`, in KiB.
fn memory(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[test]
fn a_slow_stdout_pauses_reading_and_every_message_is_printed_in_order() {
    for blocking in [false, true] {
        let (url, server) = flood_server();
        let mut child = Command::new(bin())
            .args(with_adapter(
                vec!["connect", "--json", url.as_str()],
                blocking,
            ))
            // Standard input stays open until the server's close, then ends the run.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let mut stderr = child.stderr.take().unwrap();
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let started = Instant::now();
        let (mut peak_rss, mut hwm) = (0, 0);
        let mut expected = 0;
        let mut line = String::new();
        let mut closed = false;
        while stdout.read_line(&mut line).unwrap() > 0 {
            // Slow for the first two seconds: one line per millisecond at most.
            if started.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(1));
            }
            if expected % 256 == 0
                && let Some((rss, peak)) = memory(pid)
            {
                peak_rss = peak_rss.max(rss);
                hwm = hwm.max(peak);
            }
            let v: Value = serde_json::from_str(&line).unwrap();
            match v["event"].as_str() {
                Some("message") => {
                    let data = v["data"].as_str().unwrap();
                    let n: u64 = data[..8].parse().unwrap();
                    assert_eq!(n, expected, "lost or reordered (blocking={blocking})");
                    assert_eq!(data.len(), SIZE);
                    expected += 1;
                }
                Some("close") => {
                    closed = true;
                    drop(child.stdin.take());
                }
                _ => {}
            }
            line.clear();
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "still printing after 120 s (blocking={blocking})"
            );
        }
        let status = child.wait().unwrap();
        let stderr = err.join().unwrap();
        let sent = server.join().unwrap();
        eprintln!(
            "blocking={blocking}: {expected} messages of {SIZE} B printed in {:?}; client peak RSS {} KiB (VmHWM {} KiB)",
            started.elapsed(),
            peak_rss,
            hwm
        );
        assert!(closed, "no close event; exit {status}; stderr:\n{stderr}");
        assert_eq!(sent, COUNT);
        assert_eq!(expected, COUNT, "stderr:\n{stderr}");
        assert!(
            hwm < MAX_RSS_KIB,
            "blocking={blocking}: peak RSS {hwm} KiB over {MAX_RSS_KIB} KiB"
        );
    }
}
