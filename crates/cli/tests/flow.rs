//! `wxsocket connect --json` is a consumer like any other (issue 16): when its stdout is a
//! pipe read slowly, it stops taking events, the adapter stops reading, and TCP pushes
//! back on a flooding server; its memory stays bounded and every message is printed, once,
//! in order. The other direction too: when the server does not read, the command stops
//! reading standard input, so a producer piping more than the bound into it waits, and
//! every line still arrives, once, in order. Both adapters, over loopback; the client's
//! memory is read from `/proc/PID/status` while it runs.

mod common;

use common::{bin, with_adapter};
use serde_json::Value;
use std::io::Write;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
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

/// Reads the child's stderr to its end on a thread of its own (so the child never blocks
/// on it); join for the text.
fn read_stderr(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    })
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
        let err = read_stderr(&mut child);
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

/// Accepts one client and does not read until `go` says so; then reads every message until
/// the client's close and returns them (text: their first 8 bytes, the line number, and
/// their length; binary: the bytes, which must add up to standard input).
fn sink_server() -> (
    String,
    mpsc::Sender<()>,
    std::thread::JoinHandle<Vec<tungstenite::Message>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", listener.local_addr().unwrap());
    let (go, held) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut ws = tungstenite::accept(tcp).unwrap();
        let _ = held.recv();
        let mut got = Vec::new();
        loop {
            match ws.read() {
                Ok(m) if m.is_text() || m.is_binary() => got.push(m),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        got
    });
    (url, go, server)
}

/// Samples the peak resident memory (`VmHWM`, KiB) of `pid` every 20 ms until the process
/// is gone; returns the largest seen.
fn watch_peak(pid: u32) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut hwm = 0;
        while let Some((_, peak)) = memory(pid) {
            hwm = hwm.max(peak);
            std::thread::sleep(Duration::from_millis(20));
        }
        hwm
    })
}

#[test]
fn a_server_that_does_not_read_stops_standard_input_and_every_line_arrives_in_order() {
    for (binary, blocking) in [(false, false), (false, true), (true, false), (true, true)] {
        let (url, go, server) = sink_server();
        let mut args = vec!["connect", "--no-linger", url.as_str()];
        if binary {
            args.push("--binary");
        }
        let mut child = Command::new(bin())
            .args(with_adapter(args, blocking))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let peak = watch_peak(pid);
        let err = read_stderr(&mut child);
        // 80 MiB of input, more than the memory bound: lines of SIZE bytes in text mode,
        // the same bytes as one stream in binary mode.
        let written = Arc::new(AtomicU64::new(0));
        let progress = Arc::clone(&written);
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            for n in 0..COUNT {
                let mut line = format!("{n:08}");
                line.extend(std::iter::repeat_n('.', SIZE - 9));
                line.push('\n');
                if stdin.write_all(line.as_bytes()).is_err() {
                    return false;
                }
                progress.fetch_add(line.len() as u64, Ordering::Relaxed);
            }
            true
        });
        // While the server reads nothing, the command must stop reading standard input:
        // the writer stalls (no progress for 500 ms) well before the end.
        let total = COUNT * SIZE as u64;
        let started = Instant::now();
        let (mut last, mut since) = (0, Instant::now());
        let stalled_at = loop {
            std::thread::sleep(Duration::from_millis(50));
            let now = written.load(Ordering::Relaxed);
            if now != last {
                (last, since) = (now, Instant::now());
            } else if since.elapsed() >= Duration::from_millis(500) {
                break now;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "binary={binary} blocking={blocking}: standard input never stopped ({now} of {total} bytes taken)"
            );
        };
        let (_, held_hwm) = memory(pid).expect("the command runs while the server holds");
        go.send(()).unwrap();
        assert!(
            writer.join().unwrap(),
            "the command closed standard input early"
        );
        let Some(status) = common::wait_bounded(&mut child) else {
            panic!("binary={binary} blocking={blocking}: the command did not exit");
        };
        let stderr = err.join().unwrap();
        let got = server.join().unwrap();
        let hwm = peak.join().unwrap().max(held_hwm);
        eprintln!(
            "binary={binary} blocking={blocking}: standard input stopped at {} KiB of {} KiB while the server held (peak RSS {held_hwm} KiB then); peak RSS {hwm} KiB (VmHWM)",
            stalled_at >> 10,
            total >> 10
        );
        assert!(status.success(), "exit {status}; stderr:\n{stderr}");
        assert!(
            stalled_at < total / 2,
            "binary={binary} blocking={blocking}: {stalled_at} of {total} bytes taken while the server read nothing"
        );
        if binary {
            let bytes: Vec<u8> = got.into_iter().flat_map(|m| m.into_data()).collect();
            assert_eq!(bytes.len() as u64, total, "stderr:\n{stderr}");
            for (n, line) in bytes.chunks(SIZE).enumerate() {
                assert_eq!(
                    line[..8],
                    *format!("{n:08}").as_bytes(),
                    "lost or reordered"
                );
                assert_eq!(line[SIZE - 1], b'\n');
            }
        } else {
            assert_eq!(got.len() as u64, COUNT, "stderr:\n{stderr}");
            for (n, m) in got.iter().enumerate() {
                let text = m.to_text().unwrap();
                assert_eq!(text[..8], format!("{n:08}"), "lost or reordered");
                assert_eq!(text.len(), SIZE - 1);
            }
        }
        assert!(
            hwm < MAX_RSS_KIB,
            "binary={binary} blocking={blocking}: peak RSS {hwm} KiB over {MAX_RSS_KIB} KiB"
        );
    }
}
