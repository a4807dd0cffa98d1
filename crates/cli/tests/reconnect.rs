//! `wxsocket connect --reconnect…` over real IO: a server that restarts, one that refuses,
//! one that rejects the handshake; the `--reconnect-*` options taking effect.

mod common;

use common::{Mode, Proc, TestServer, event, with_adapter};
use serde_json::Value;
use std::time::{Duration, Instant};

fn events_of(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// Runs the command with `args` and no input to its end: its exit code, its `--json` events,
/// its stderr, how long it took.
fn run_to_end(args: Vec<&str>, blocking: bool) -> (Option<i32>, Vec<Value>, String, Duration) {
    let started = Instant::now();
    let (status, stdout, stderr) = common::run_bytes(&with_adapter(args, blocking), b"");
    let took = started.elapsed();
    let lines: Vec<String> = String::from_utf8(stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    (status.code(), events_of(&lines), stderr, took)
}

fn opens(events: &[Value]) -> usize {
    events.iter().filter(|v| event(v) == "open").count()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events.iter().map(event).collect()
}

/// Waits for connection `conn`'s close, then shows no reconnection is pending: the command
/// ends on its own, with its input still open (during a backoff it would wait to retry).
/// Returns every event of the run; the process must exit with `code`, the status of the
/// last connection (these tests asserted "always 0" before `connect` had exit statuses).
fn finish_after_final_close(mut proc: Proc, conn: u64, code: i32) -> Vec<Value> {
    proc.expect_json("final close", |v| event(v) == "close" && v["conn"] == conn);
    // No retry is left: the command ends on its own, its input still open.
    let (status, lines, stderr) = proc.exit();
    assert_eq!(status.code(), Some(code), "exit {status}: {stderr}");
    events_of(&lines)
}

fn reconnect_after_service_restart(blocking: bool) {
    let server = TestServer::start(Mode::CloseFirstWith(1012), false);
    let mut proc = Proc::spawn(&with_adapter(
        vec!["connect", server.url(), "--json", "--reconnect"],
        blocking,
    ));
    let close = proc.expect_json("first close", |v| event(v) == "close");
    assert_eq!(close["conn"], 1);
    assert_eq!(close["code"], 1012);
    let again = proc.expect_json("reconnecting", |v| event(v) == "reconnecting");
    assert_eq!(again["conn"], 2);
    assert_eq!(again["attempt"], 1);
    assert!(again["delay_ms"].as_u64().unwrap() <= 100);
    assert!(again["error"].is_string());
    proc.expect_json("second open", |v| event(v) == "open" && v["conn"] == 2);
    proc.write("back");
    proc.expect_json("echo", |v| event(v) == "message" && v["data"] == "back");
    let (status, lines, _) = proc.finish();
    assert!(status.success());
    let events = events_of(&lines);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "close");
    assert_eq!(last["conn"], 2);
    assert_eq!(last["code"], 1000);
    assert_eq!(server.seen().len(), 2);
}

#[test]
fn reconnect_after_service_restart_tokio() {
    reconnect_after_service_restart(false);
}

#[test]
fn reconnect_after_service_restart_blocking() {
    reconnect_after_service_restart(true);
}

/// The end of input against a server that closes every connection (1012) right after it
/// opens: the end-of-input wait ends at `--linger-max` counted from the first open, not
/// from each. It used to start again at every open, and the command never exited.
/// (`--reconnect-max` is high so that the wait's end, not the attempts, ends it: each
/// connection ends well within the policy's `min_uptime`, so the run of attempts goes on.)
fn linger_max_ends_the_wait_across_reconnections(blocking: bool) {
    let server = TestServer::start(Mode::CloseEachWith(1012), false);
    let args = vec![
        "connect",
        server.url(),
        "--json",
        "--reconnect-max",
        "1000",
        "--reconnect-base",
        "10",
        "--linger-max",
        "500",
    ];
    let (status, events, stderr, took) = run_to_end(args, blocking);
    let opens = opens(&events);
    assert!(opens >= 2, "{opens} opens: {events:?}\n{stderr}");
    assert!(took >= Duration::from_millis(500), "{took:?}");
    assert!(
        took < Duration::from_secs(8),
        "blocking={blocking}: exited after {took:?}"
    );
    // The status is the last connection's: almost always the retry the wait's end cancelled
    // (never made: 3). Should the end fall in the instant a connection is open, it is that
    // connection's close, 1012 (4) or our 1000 crossing it (0).
    assert!(matches!(status, Some(3 | 4 | 0)), "{status:?}: {stderr}");
}

/// A server that closes every connection (1012) right after it opens: each connection
/// ends within `--reconnect-min-uptime` (default 5 s), so it continues the row of retries and
/// `--reconnect-max 2` ends it after three connections; with 0 every open ends the row and
/// only the end-of-input wait (`--linger-max`) stops the command.
fn min_uptime_decides_whether_a_brief_connection_ends_the_row(blocking: bool) {
    for (min_uptime, max_opens) in [(None, Some(3)), (Some("0"), None)] {
        let server = TestServer::start(Mode::CloseEachWith(1012), false);
        let mut args = vec![
            "connect",
            server.url(),
            "--json",
            "--reconnect-max",
            "2",
            "--reconnect-base",
            "10",
            "--linger-max",
            "1500",
        ];
        if let Some(ms) = min_uptime {
            args.extend(["--reconnect-min-uptime", ms]);
        }
        let (_, events, stderr, took) = run_to_end(args, blocking);
        let opens = opens(&events);
        match max_opens {
            Some(n) => {
                assert_eq!(opens, n, "blocking={blocking}: {events:?}\n{stderr}");
                assert!(took < Duration::from_millis(1500), "{took:?}");
            }
            None => {
                assert!(opens > 3, "blocking={blocking}: {opens} opens\n{stderr}");
                assert!(took >= Duration::from_millis(1500), "{took:?}");
            }
        }
    }
}

#[test]
fn min_uptime_decides_whether_a_brief_connection_ends_the_row_tokio() {
    min_uptime_decides_whether_a_brief_connection_ends_the_row(false);
}

#[test]
fn min_uptime_decides_whether_a_brief_connection_ends_the_row_blocking() {
    min_uptime_decides_whether_a_brief_connection_ends_the_row(true);
}

#[test]
fn linger_max_ends_the_wait_across_reconnections_tokio() {
    linger_max_ends_the_wait_across_reconnections(false);
}

#[test]
fn linger_max_ends_the_wait_across_reconnections_blocking() {
    linger_max_ends_the_wait_across_reconnections(true);
}

/// `--reconnect-max 2` against a port that refuses: the first connection and exactly two
/// retries, each announced by one `reconnecting`, with delays under the base and the cap;
/// then nothing more.
fn reconnect_max_gives_up(blocking: bool) {
    let url = format!("ws://127.0.0.1:{}/", common::closed_port());
    let proc = Proc::spawn(&with_adapter(
        vec![
            "connect",
            &url,
            "--json",
            "--reconnect-max",
            "2",
            "--reconnect-base",
            "10",
            "--reconnect-cap",
            "15",
        ],
        blocking,
    ));
    // Exit 3: the last connection could not be made (refused).
    let events = finish_after_final_close(proc, 3, 3);
    assert_eq!(
        kinds(&events),
        [
            "connecting",
            "error",
            "close",
            "reconnecting",
            "connecting",
            "error",
            "close",
            "reconnecting",
            "connecting",
            "error",
            "close"
        ]
    );
    let retries: Vec<&Value> = events
        .iter()
        .filter(|v| event(v) == "reconnecting")
        .collect();
    for (i, (retry, ceiling)) in retries.iter().zip([10, 15]).enumerate() {
        assert_eq!(retry["conn"], i as u64 + 2);
        assert_eq!(retry["attempt"], i as u64 + 1);
        let delay = retry["delay_ms"].as_u64().unwrap();
        assert!(delay <= ceiling, "attempt {}: {delay} ms", i + 1);
        let error = retry["error"].as_str().unwrap();
        assert!(error.starts_with("connect failed"), "{error}");
    }
    for close in events.iter().filter(|v| event(v) == "close") {
        assert_eq!(close["code"], 1006);
    }
}

#[test]
fn reconnect_max_gives_up_tokio() {
    reconnect_max_gives_up(false);
}

#[test]
fn reconnect_max_gives_up_blocking() {
    reconnect_max_gives_up(true);
}

/// The delays (`delay_ms`) of a run against a refusing port with these extra options and
/// `--reconnect-max N`.
fn delays_of(extra: &[&str], n: usize) -> Vec<u64> {
    let url = format!("ws://127.0.0.1:{}/", common::closed_port());
    let max = n.to_string();
    let mut args = vec!["connect", &url, "--json", "--reconnect-max", &max];
    args.extend_from_slice(extra);
    let proc = Proc::spawn(&args);
    let events = finish_after_final_close(proc, n as u64 + 1, 3);
    let delays: Vec<u64> = events
        .iter()
        .filter(|v| event(v) == "reconnecting")
        .map(|v| v["delay_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(delays.len(), n, "{events:?}");
    delays
}

/// The jitter the core documents, written out here rather than taken from it: SplitMix64
/// from the seed, attempt N's delay uniform in `[0, ceiling(N)]` nanoseconds (a draw of 0
/// counts as 1 ns), shown in whole milliseconds.
fn expected_delays(seed: u64, ceilings_ms: &[u64]) -> Vec<u64> {
    let mut state = seed;
    ceilings_ms
        .iter()
        .map(|ceiling| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let nanos = (z % (ceiling * 1_000_000 + 1)).max(1);
            nanos / 1_000_000
        })
        .collect()
}

/// `--reconnect-seed` fixes the jitter: the delays are exactly the ones the documented
/// generator draws from that seed under `min(cap, base × 2^(N−1))` (default cap: 30 s, far
/// above these), and another seed draws others.
#[test]
fn reconnect_seed_fixes_the_delays() {
    let ceilings = [50, 100, 200, 400];
    let seven = delays_of(&["--reconnect-base", "50", "--reconnect-seed", "7"], 4);
    assert_eq!(seven, expected_delays(7, &ceilings));
    let eight = delays_of(&["--reconnect-base", "50", "--reconnect-seed", "8"], 4);
    assert_eq!(eight, expected_delays(8, &ceilings));
    assert_ne!(seven, eight);
}

/// `--reconnect-cap` bounds the ceiling: with base 100 and cap 150 the ceilings are 100,
/// 150, 150, 150 ms (without the cap: 100, 200, 400, 800), and with the seed fixed the
/// delays are exactly the ones drawn under those ceilings.
#[test]
fn reconnect_cap_bounds_the_ceiling() {
    let capped = [100, 150, 150, 150];
    let uncapped = [100, 200, 400, 800];
    for blocking in [false, true] {
        let args = with_adapter(
            vec![
                "--reconnect-base",
                "100",
                "--reconnect-cap",
                "150",
                "--reconnect-seed",
                "3",
            ],
            blocking,
        );
        let delays = delays_of(&args, 4);
        assert_eq!(delays, expected_delays(3, &capped), "blocking: {blocking}");
        // The seed tells the two apart: the cap is what made the difference.
        assert_ne!(delays, expected_delays(3, &uncapped));
    }
}

/// A message queued while connecting, then a handshake the server rejects with 503 (which
/// is retried), with one retry allowed: with `--reconnect-no-carry` the message fails when
/// the first attempt fails; by default it is carried to the retry and fails only when that
/// one fails too.
fn queued_send_across_a_retry(carry: bool) -> Vec<Value> {
    let server = TestServer::start(Mode::Reject(503), true);
    let mut args = vec![
        "connect",
        server.url(),
        "--json",
        "--reconnect-max",
        "1",
        "--reconnect-base",
        "10",
    ];
    if !carry {
        args.push("--reconnect-no-carry");
    }
    let mut proc = Proc::spawn(&args);
    proc.expect_json("connecting", |v| event(v) == "connecting");
    proc.write("queued");
    // Commands run in order: once this refusal is printed, the message was queued on
    // connection 1, whose handshake the server is holding.
    proc.write("/close 1001");
    proc.expect_json("call_failed", |v| event(v) == "call_failed");
    server.release();
    // Exit 3: the handshake was rejected.
    let events = finish_after_final_close(proc, 2, 3);
    let error = events
        .iter()
        .find(|v| event(v) == "error")
        .and_then(|v| v["error"].as_str())
        .unwrap();
    assert!(error.contains("503"), "{error}");
    assert_eq!(server.seen().len(), 2);
    events
}

#[test]
fn reconnect_no_carry_fails_queued_sends_at_once() {
    let events = queued_send_across_a_retry(false);
    assert_eq!(
        kinds(&events),
        [
            "connecting",
            "call_failed",
            "error",
            "send_failed",
            "close",
            "reconnecting",
            "connecting",
            "error",
            "close"
        ]
    );
    assert_eq!(events[3]["conn"], 1);
    assert_eq!(events[3]["id"], 1);
}

#[test]
fn reconnect_carries_queued_sends_by_default() {
    let events = queued_send_across_a_retry(true);
    assert_eq!(
        kinds(&events),
        [
            "connecting",
            "call_failed",
            "error",
            "close",
            "reconnecting",
            "connecting",
            "error",
            "send_failed",
            "close"
        ]
    );
    assert_eq!(events[7]["conn"], 2);
    assert_eq!(events[7]["id"], 1);
}

/// A handshake rejected with 403 is final under `--reconnect`, and retried with
/// `--reconnect-on-4xx` (which implies `--reconnect`).
#[test]
fn reconnect_on_4xx() {
    let server = TestServer::start(Mode::Reject(403), false);
    let proc = Proc::spawn(&["connect", server.url(), "--json", "--reconnect"]);
    // Exit 3: the handshake was rejected.
    let events = finish_after_final_close(proc, 1, 3);
    assert_eq!(kinds(&events), ["connecting", "error", "close"]);
    let error = events[1]["error"].as_str().unwrap();
    assert!(error.contains("403"), "{error}");

    let proc = Proc::spawn(&[
        "connect",
        server.url(),
        "--json",
        "--reconnect-on-4xx",
        "--reconnect-max",
        "1",
    ]);
    let events = finish_after_final_close(proc, 2, 3);
    assert_eq!(
        kinds(&events),
        [
            "connecting",
            "error",
            "close",
            "reconnecting",
            "connecting",
            "error",
            "close"
        ]
    );
    assert_eq!(server.seen().len(), 3);
}

/// Which close codes from the server are retried: `--reconnect-codes 4000` (implying
/// `--reconnect`) retries an application code the default list does not have, and
/// `--reconnect-codes none` stops the default 1012 from being retried.
#[test]
fn reconnect_codes() {
    let server = TestServer::start(Mode::CloseFirstWith(4000), false);
    let mut proc = Proc::spawn(&[
        "connect",
        server.url(),
        "--json",
        "--reconnect-codes",
        "4000",
    ]);
    let close = proc.expect_json("first close", |v| event(v) == "close");
    assert_eq!(
        (close["conn"].as_u64(), close["code"].as_u64()),
        (Some(1), Some(4000))
    );
    let again = proc.expect_json("reconnecting", |v| event(v) == "reconnecting");
    assert_eq!(again["conn"], 2);
    proc.expect_json("second open", |v| event(v) == "open" && v["conn"] == 2);
    drop(proc);

    // The default list has 1001, 1011, 1012, 1013, not 4000.
    let server = TestServer::start(Mode::CloseFirstWith(4000), false);
    let proc = Proc::spawn(&["connect", server.url(), "--json", "--reconnect"]);
    // Exit 4: the server closed with a code other than 1000/1001.
    let events = finish_after_final_close(proc, 1, 4);
    assert_eq!(kinds(&events), ["connecting", "open", "close"]);
    assert_eq!(events[2]["code"], 4000);

    let server = TestServer::start(Mode::CloseFirstWith(1012), false);
    let proc = Proc::spawn(&[
        "connect",
        server.url(),
        "--json",
        "--reconnect",
        "--reconnect-codes",
        "none",
    ]);
    let events = finish_after_final_close(proc, 1, 4);
    assert_eq!(kinds(&events), ["connecting", "open", "close"]);
    assert_eq!(events[2]["code"], 1012);
}

/// `/close` during a backoff cancels the reconnection: the waiting connection gets one
/// close event, the message queued for it fails, and nothing is dialled again.
#[test]
fn close_during_backoff_cancels_it() {
    let url = format!("ws://127.0.0.1:{}/", common::closed_port());
    // A delay drawn from [0, 24 h]: the backoff is certainly still running below.
    let mut proc = Proc::spawn(&[
        "connect",
        &url,
        "--json",
        "--reconnect-base",
        "86400000",
        "--reconnect-seed",
        "1",
    ]);
    let retry = proc.expect_json("reconnecting", |v| event(v) == "reconnecting");
    assert!(retry["delay_ms"].as_u64().unwrap() > 60_000, "{retry}");
    proc.write("queued");
    proc.write("/close");
    let close = proc.expect_json("close", |v| event(v) == "close" && v["conn"] == 2);
    assert_eq!(close["reason"], "reconnection cancelled");
    assert_eq!(close["code"], 1006, "no connection to close: {close}");
    let (status, lines, _) = proc.finish();
    // Exit 3 (was 0 before exit statuses): the last connection was never made.
    assert_eq!(status.code(), Some(3));
    let events = events_of(&lines);
    assert_eq!(
        kinds(&events),
        [
            "connecting",
            "error",
            "close",
            "reconnecting",
            "send_failed",
            "close"
        ]
    );
    assert_eq!(
        (events[4]["conn"].as_u64(), events[4]["id"].as_u64()),
        (Some(2), Some(1))
    );
}

/// `wxsocket connect --reconnect --ack URL` with the line `hello` and then the end of input,
/// against a server that closes the first connection with 1012 right after its handshake:
/// the end of input waits for the retry instead of giving up (which cancelled the
/// reconnection and failed the line), the line goes out again on the next connection, its
/// echo is printed, and the run ends cleanly.
#[test]
fn end_of_input_waits_for_a_reconnection() {
    for blocking in [false, true] {
        let server = TestServer::start(Mode::CloseFirstWith(1012), true);
        let mut proc = Proc::spawn(&with_adapter(
            vec![
                "connect",
                server.url(),
                "--reconnect",
                "--reconnect-base",
                "10",
                "--ack",
                "--json",
            ],
            blocking,
        ));
        proc.expect_json("connecting", |v| event(v) == "connecting");
        proc.write("hello");
        // Commands run in order: once this refusal is printed, `hello` was queued on
        // connection 1, whose handshake the server is holding.
        proc.write("/close 1001");
        proc.expect_json("call_failed", |v| event(v) == "call_failed");
        proc.close_stdin();
        server.release();
        let (status, lines, stderr) = proc.finish();
        assert_eq!(
            status.code(),
            Some(0),
            "blocking={blocking}: {stderr} {lines:?}"
        );
        let events = events_of(&lines);
        assert!(
            events
                .iter()
                .any(|v| event(v) == "message" && v["conn"] == 2 && v["data"] == "hello"),
            "blocking={blocking}: no echo on the retry: {events:?}"
        );
        assert!(server.seen().len() >= 2, "blocking={blocking}: no retry");
    }
}
