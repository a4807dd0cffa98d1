//! The `wxsocket-bench` command: the echo benchmarks of both adapters ([`crate::tokio_echo`],
//! [`crate::blocking_echo`]) in one
//! table against the plain clients they are built on, and a second table for the
//! permessage-deflate cases (each adapter with compression against itself without),
//! optionally written as JSON.

use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

/// One line of the combined table.
struct Row {
    adapter: &'static str,
    baseline: &'static str,
    case: String,
    messages: usize,
    size: usize,
    ours: f64,
    plain: f64,
    /// The benchmark's own ratio (the median of per-segment ratios, which need not equal
    /// `ours / plain` of the medians).
    ratio: f64,
    /// A compressed case: `ours` is with permessage-deflate, `plain` the same adapter
    /// without; bytes on the wire per message (deflate, uncompressed).
    wire: Option<(f64, f64)>,
    /// A compressed case: the zlib limit of the same run and the share of it reached.
    zlib: Option<crate::zlib::LimitShare>,
    /// The level-6 compressed case: Python `websockets` on the same workload.
    python: Option<crate::python::PythonRow>,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.ratio
    }
}

fn collect(quick: bool) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let started = Instant::now();
    // On a worker (not the thread blocked in `block_on`), as application tasks run, and
    // as `cargo bench -p wxsocket-bench --bench tokio_echo` runs it.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wxsocket-bench-rt")
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let tokio_rows = runtime
        .block_on(runtime.spawn(crate::tokio_echo::run_echo_bench(quick)))
        .map_err(|e| format!("tokio: {e}"))?
        .map_err(|e| format!("tokio: {e}"))?;
    rows.extend(tokio_rows.into_iter().map(|r| Row {
        adapter: "wxsocket-tokio",
        baseline: "tokio-tungstenite",
        case: r.case.clone(),
        messages: r.messages,
        size: r.size,
        ours: r.adapter_per_sec,
        plain: r.plain_per_sec,
        ratio: r.ratio(),
        wire: r.compression.map(|w| (w.deflate, w.uncompressed)),
        zlib: r.zlib,
        python: r.python,
    }));
    eprintln!(
        "wxsocket-tokio cases done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let blocking_rows = crate::blocking_echo::run_echo_bench(quick)
        .map_err(|e| format!("blocking: echo benchmark: {e}"))?;
    eprintln!(
        "wxsocket-blocking cases done in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    rows.extend(blocking_rows.into_iter().map(|r| Row {
        adapter: "wxsocket-blocking",
        baseline: "tungstenite",
        case: r.name.to_owned(),
        messages: r.messages,
        size: r.size,
        ours: r.adapter_msgs_per_sec,
        plain: r.plain_msgs_per_sec,
        ratio: r.ratio(),
        wire: r.wire.map(|w| (w.deflate, w.uncompressed)),
        zlib: r.zlib,
        python: r.python,
    }));
    Ok(rows)
}

fn size(bytes: usize) -> String {
    if bytes >= 1024 && bytes.is_multiple_of(1024) {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{bytes} B")
    }
}

/// The uncompressed rows: each adapter against its plain client.
fn table(rows: &[Row]) -> String {
    let header = [
        "adapter",
        "case",
        "messages",
        "size",
        "wxsocket msg/s",
        "plain client",
        "plain msg/s",
        "ratio",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .filter(|r| r.wire.is_none())
        .map(|r| {
            [
                r.adapter.to_owned(),
                r.case.clone(),
                r.messages.to_string(),
                size(r.size),
                format!("{:.0}", r.ours),
                r.baseline.to_owned(),
                format!("{:.0}", r.plain),
                format!("{:.2}", r.ratio()),
            ]
        })
        .collect();
    // Text columns left-aligned, numbers right-aligned.
    let numeric = [false, false, true, true, true, false, true, true];
    markdown(&header, &numeric, &cells)
}

/// The compressed rows: each adapter with permessage-deflate against itself without.
fn compressed_table(rows: &[Row]) -> String {
    let header = [
        "adapter",
        "case",
        "messages",
        "size",
        "deflate msg/s",
        "no deflate msg/s",
        "ratio",
        "wire B/msg deflate",
        "wire B/msg no deflate",
        "wire ratio",
        "zlib limit msg/s",
        "share of limit",
        "python msg/s",
        "vs python",
    ];
    let cells: Vec<[String; 14]> = rows
        .iter()
        .filter_map(|r| {
            let (deflate, uncompressed) = r.wire?;
            Some([
                r.adapter.to_owned(),
                r.case.clone(),
                r.messages.to_string(),
                size(r.size),
                format!("{:.0}", r.ours),
                format!("{:.0}", r.plain),
                format!("{:.2}", r.ratio()),
                format!("{deflate:.0}"),
                format!("{uncompressed:.0}"),
                format!("{:.2}", deflate / uncompressed),
                r.zlib
                    .map_or("-".to_owned(), |z| format!("{:.0}", z.limit_per_sec)),
                r.zlib
                    .map_or("-".to_owned(), |z| format!("{:.0} %", z.share * 100.0)),
                python_cell(r, |p| p.per_sec().map(|v| format!("{v:.0}"))),
                python_cell(r, |p| p.ratio().map(|v| format!("{v:.2}"))),
            ])
        })
        .collect();
    let numeric = [
        false, false, true, true, true, true, true, true, true, true, true, true, true, true,
    ];
    markdown(&header, &numeric, &cells)
}

/// A Python cell of a compressed row: the figure, `skipped` when the row was skipped (the
/// reason is printed under the table), `-` when the case has no Python run.
fn python_cell(row: &Row, figure: impl Fn(&crate::python::PythonRow) -> Option<String>) -> String {
    match &row.python {
        Some(python) => figure(python).unwrap_or_else(|| "skipped".to_owned()),
        None => "-".to_owned(),
    }
}

/// A Markdown table, columns padded to their widest cell.
fn markdown<const N: usize>(
    header: &[&str; N],
    numeric: &[bool; N],
    cells: &[[String; N]],
) -> String {
    let mut widths = header.map(str::len);
    for row in cells {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let numeric = *numeric;
    let line = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(widths)
            .zip(numeric)
            .map(|((c, w), right)| {
                if right {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        format!("| {} |", parts.join(" | "))
    };
    let mut out = line(&header.map(str::to_owned));
    out.push('\n');
    let rule: Vec<String> = widths
        .iter()
        .zip(numeric)
        .map(|(w, right)| {
            if right {
                format!("{}:", "-".repeat(w.saturating_sub(1).max(1)))
            } else {
                "-".repeat(*w)
            }
        })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for row in cells {
        out.push_str(&line(row));
        out.push('\n');
    }
    out
}

/// The flood rows.
fn flood_table(rows: &[crate::flood::FloodRow]) -> String {
    let cells: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                format!("flood {}", size(r.size)),
                r.clients[0].to_owned(),
                r.messages.to_string(),
                format!("{:.0}", r.per_sec[0]),
                r.clients[1].to_owned(),
                format!("{:.0}", r.per_sec[1]),
                format!("{:.2}", r.ratio()),
                format!("{:.1} MiB", r.peak_rss_kib[0] as f64 / 1024.0),
                format!("{:.1} MiB", r.peak_rss_kib[1] as f64 / 1024.0),
            ]
        })
        .collect();
    let header = [
        "case",
        "adapter",
        "messages",
        "wxsocket msg/s",
        "plain client",
        "plain msg/s",
        "ratio",
        "wxsocket peak RSS",
        "plain peak RSS",
    ];
    let numeric = [false, false, true, true, false, true, true, true, true];
    markdown(&header, &numeric, &cells)
}

/// The delivery acknowledgement rows as a markdown table (the case first, as in the flood
/// and scale tables, so rows are told from the echo table's).
fn ack_table(rows: &[crate::ack::AckRow]) -> String {
    let header = [
        "case",
        "adapter",
        "messages",
        "off msg/s",
        "on msg/s",
        "ratio",
    ];
    let cells: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                format!("ack {} pipelined", size(r.size)),
                r.adapter.to_owned(),
                r.messages.to_string(),
                format!("{:.0}", r.off_per_sec),
                format!("{:.0}", r.on_per_sec),
                format!("{:.2}", r.ratio),
            ]
        })
        .collect();
    markdown(&header, &[false, false, true, true, true, true], &cells)
}

/// Connections of the scale rows of a full run (and `--scale` without a number); a quick
/// run uses [`SCALE_QUICK`].
pub const SCALE_CONNECTIONS: usize = 10_000;

/// Connections of the scale rows of a `--quick` run.
pub const SCALE_QUICK: usize = 1_000;

fn scale_table(rows: &[crate::scale::ScaleRow]) -> String {
    let header = [
        "case",
        "client",
        "RSS per conn",
        "CPU to open, per conn",
        "CPU per event",
    ];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                format!("{} idle", r.connections),
                r.adapter.to_owned(),
                format!("{:.1} KiB", r.rss_per_conn_kib),
                format!("{:.1} µs", r.cpu_us_per_conn_open),
                format!("{:.1} µs", r.cpu_us_per_conn_event),
            ]
        })
        .collect();
    markdown(&header, &[false, false, true, true, true], &cells)
}

fn scale_json(rows: &[crate::scale::ScaleRow]) -> serde_json::Value {
    rows.iter()
        .map(|r| {
            json!({
                "adapter": r.adapter,
                "connections": r.connections,
                "rss_per_conn_kib": r.rss_per_conn_kib,
                "cpu_us_per_conn_open": r.cpu_us_per_conn_open,
                "cpu_us_per_conn_event": r.cpu_us_per_conn_event,
            })
        })
        .collect()
}

/// The scale family: runs it at `counts` and prints its table.
fn scale_rows(counts: &[usize], quick: bool) -> Result<Vec<crate::scale::ScaleRow>, String> {
    let rows = crate::scale::run_scale_bench(counts, if quick { 1 } else { 3 })?;
    println!();
    println!(
        "scale: N idle connections from one process, after {} small echoes each; each client and the echo server in processes of their own",
        crate::scale::ROUNDS
    );
    print!("{}", scale_table(&rows));
    println!(
        "RSS per conn = VmRSS growth over N; CPU = all the client's threads (schedstat), to open N connections over N, and per echo (a send and its echo received); medians over the runs"
    );
    Ok(rows)
}

/// Writes the `--json` file; failure to write is the command's failure.
fn write_json(path: &Path, value: &serde_json::Value) -> ExitCode {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    match std::fs::write(path, text + "\n") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxsocket-bench: error: --json {}: {e}", path.display());
            ExitCode::from(1)
        }
    }
}

/// Only the scale family (`--scale N`): at 1,000 connections and at `n`, so the cost per
/// connection at `n` can be set against 1,000 from the same run.
pub fn run_scale(n: usize, quick: bool, json_file: Option<&Path>) -> ExitCode {
    let started = Instant::now();
    let mut counts = vec![SCALE_QUICK.min(n), n];
    counts.dedup();
    let rows = match scale_rows(&counts, quick) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("wxsocket-bench: scale failed: {e}");
            return ExitCode::from(1);
        }
    };
    println!("{:.1} s in all", started.elapsed().as_secs_f64());
    if let Some(path) = json_file {
        let value = json!({
            "quick": quick,
            "seconds": started.elapsed().as_secs_f64(),
            "scale_rows": scale_json(&rows),
        });
        return write_json(path, &value);
    }
    ExitCode::SUCCESS
}

/// Runs the delivery acknowledgement family and prints its table; `None` (said on stderr)
/// when it failed.
fn ack_rows(quick: bool) -> Option<Vec<crate::ack::AckRow>> {
    let ack = match crate::ack::run_ack_bench(quick) {
        Ok(ack) => ack,
        Err(e) => {
            eprintln!("wxsocket-bench: acknowledgement failed: {e}");
            return None;
        }
    };
    println!();
    println!(
        "delivery acknowledgement: pipelined echo (at most {} in flight) with it on against the same adapter with it off; a round ends when every echo and every outcome arrived",
        crate::ack::WINDOW
    );
    print!("{}", ack_table(&ack));
    println!("msg/s = median over the rounds; ratio = median of on / off over pairs of rounds");
    Some(ack)
}

/// Runs only the delivery acknowledgement family (`wxsocket-bench --ack`).
pub fn run_ack(quick: bool) -> ExitCode {
    exit_code(ack_rows(quick))
}

/// A family run alone succeeded when it gave its rows.
fn exit_code<T>(rows: Option<T>) -> ExitCode {
    if rows.is_some() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Runs the flood family and prints its table; `None` (said on stderr) if it failed.
fn flood_rows(quick: bool) -> Option<Vec<crate::flood::FloodRow>> {
    let flood = match crate::flood::run_flood_bench(quick) {
        Ok(flood) => flood,
        Err(e) => {
            eprintln!("wxsocket-bench: flood failed: {e}");
            return None;
        }
    };
    println!();
    println!(
        "flood: a server writes as fast as the client reads; each client in its own process (peak RSS = its VmHWM)"
    );
    print!("{}", flood_table(&flood));
    println!(
        "msg/s = median over the rounds; ratio = the adapter / the plain client of its stack; RSS = the largest peak over the rounds"
    );
    Some(flood)
}

/// Runs only the flood family (`wxsocket-bench --flood`).
pub fn run_flood(quick: bool) -> ExitCode {
    exit_code(flood_rows(quick))
}

/// Runs both benchmarks and prints one table; `json` also writes the rows there.
pub fn run(quick: bool, json_file: Option<&Path>) -> ExitCode {
    let started = Instant::now();
    eprintln!(
        "wxsocket-bench{}: echo round trips over 127.0.0.1, each adapter against the plain client of its stack{}",
        if quick { " --quick" } else { "" },
        if cfg!(debug_assertions) {
            " (debug build: use `cargo run --release -p wxsocket-bench` for real numbers)"
        } else {
            ""
        }
    );
    let rows = match collect(quick) {
        Ok(rows) => rows,
        Err(e) => {
            eprintln!("wxsocket-bench: failed: {e}");
            return ExitCode::from(1);
        }
    };
    print!("{}", table(&rows));
    println!(
        "msg/s = each client's median over the segments; ratio = median over the segments of wxsocket / plain in the same segment (above 1.00: wxsocket was faster)"
    );
    if rows.iter().any(|r| r.wire.is_some()) {
        println!();
        println!(
            "permessage-deflate: each adapter with compression against itself without, over an echo server that accepts it"
        );
        print!("{}", compressed_table(&rows));
        println!(
            "ratio = deflate against no deflate, as each adapter's benchmark measures it; wire = bytes the server's socket read and wrote per echoed message"
        );
        println!(
            "zlib limit = messages per second one thread compresses and inflates at the case's level (zlib alone, same payloads, measured in the same segments); share = median over the segments of deflate msg/s / the limit"
        );
        for r in &rows {
            match &r.python {
                Some(crate::python::PythonRow::Measured { version, .. }) => println!(
                    "python = Python {version} client on the same workload against the same echo server, in its own process, in the same segments ({}); vs python = median over the segments of deflate msg/s / python msg/s",
                    r.adapter
                ),
                Some(python) => println!(
                    "python ({}): skipped, {}",
                    r.adapter,
                    python.skipped().unwrap_or("not measured")
                ),
                None => {}
            }
        }
    }
    let Some(flood) = flood_rows(quick) else {
        return ExitCode::from(1);
    };
    let Some(ack) = ack_rows(quick) else {
        return ExitCode::from(1);
    };
    let scale_counts: &[usize] = if quick {
        &[SCALE_QUICK]
    } else {
        &[SCALE_QUICK, SCALE_CONNECTIONS]
    };
    let scale = match scale_rows(scale_counts, quick) {
        Ok(scale) => scale,
        Err(e) => {
            eprintln!("wxsocket-bench: scale failed: {e}");
            return ExitCode::from(1);
        }
    };
    println!("{:.1} s in all", started.elapsed().as_secs_f64());
    if let Some(path) = json_file {
        let value = json!({
            "quick": quick,
            "seconds": started.elapsed().as_secs_f64(),
            "rows": rows.iter().filter(|r| r.wire.is_none()).map(|r| json!({
                "adapter": r.adapter,
                "case": r.case,
                "messages": r.messages,
                "size_bytes": r.size,
                "wxsocket_msgs_per_sec": r.ours,
                "plain_client": r.baseline,
                "plain_msgs_per_sec": r.plain,
                "ratio": r.ratio(),
            })).collect::<Vec<_>>(),
            "compressed_rows": rows.iter().filter_map(|r| {
                let (deflate, uncompressed) = r.wire?;
                Some(json!({
                    "adapter": r.adapter,
                    "case": r.case,
                    "messages": r.messages,
                    "size_bytes": r.size,
                    "deflate_msgs_per_sec": r.ours,
                    "uncompressed_msgs_per_sec": r.plain,
                    "ratio": r.ratio(),
                    "wire_bytes_per_msg_deflate": deflate,
                    "wire_bytes_per_msg_uncompressed": uncompressed,
                    "level": r.zlib.map(|z| z.level),
                    "zlib_limit_msgs_per_sec": r.zlib.map(|z| z.limit_per_sec),
                    "zlib_limit_share": r.zlib.map(|z| z.share),
                    "python_msg_per_sec": r.python.as_ref().and_then(|p| p.per_sec()),
                    "python_ratio": r.python.as_ref().and_then(|p| p.ratio()),
                    "python_skipped": r.python.as_ref().and_then(|p| p.skipped()),
                }))
            }).collect::<Vec<_>>(),
            "ack_rows": ack.iter().map(|r| json!({
                "adapter": r.adapter,
                "messages": r.messages,
                "size_bytes": r.size,
                "ack_off_msgs_per_sec": r.off_per_sec,
                "ack_on_msgs_per_sec": r.on_per_sec,
                "ratio": r.ratio,
            })).collect::<Vec<_>>(),
            "flood_rows": flood.iter().map(|r| json!({
                "adapter": r.clients[0],
                "plain_client": r.clients[1],
                "messages": r.messages,
                "size_bytes": r.size,
                "wxsocket_msgs_per_sec": r.per_sec[0],
                "plain_msgs_per_sec": r.per_sec[1],
                "ratio": r.ratio(),
                "wxsocket_peak_rss_kib": r.peak_rss_kib[0],
                "plain_peak_rss_kib": r.peak_rss_kib[1],
            })).collect::<Vec<_>>(),
            "scale_rows": scale_json(&scale),
        });
        return write_json(path, &value);
    }
    ExitCode::SUCCESS
}
