//! `wxsocket-bench --quick --json FILE`: one table with both adapters, a second with the
//! compressed cases, and the same rows as JSON.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `wxsocket-bench ARGS` to its end (at most `wait`): status, stdout lines, stderr.
fn run(args: &[&str], wait: Duration) -> (std::process::ExitStatus, Vec<String>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxsocket-bench"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wxsocket-bench");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        stdout.read_to_string(&mut s).map(|_| s)
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let deadline = Instant::now() + wait;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wxsocket-bench did not finish within {wait:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = out.join().unwrap().unwrap();
    let err = err.join().unwrap().unwrap();
    (status, out.lines().map(str::to_owned).collect(), err)
}

#[test]
fn quick_bench_prints_one_table_and_writes_json() {
    let file = std::env::temp_dir().join(format!("wxsocket-bench-{}.json", std::process::id()));
    let path = file.to_str().unwrap().to_owned();
    // A debug build on a shared machine is slow; the 60 s promise is for release builds.
    let (status, lines, stderr) = run(&["--quick", "--json", &path], Duration::from_secs(240));
    assert!(status.success(), "{stderr}");
    // The first table: each adapter against its plain client.
    let rows: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("| wxsocket-") && !l.contains("compressed"))
        .collect();
    assert!(
        lines[0].contains("wxsocket msg/s")
            && lines[0].contains("plain msg/s")
            && lines[0].contains("ratio")
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("wxsocket-tokio") && r.contains("tokio-tungstenite"))
    );
    assert!(
        rows.iter()
            .any(|r| r.contains("wxsocket-blocking") && r.contains("| tungstenite"))
    );
    // The second: each adapter with permessage-deflate against itself without.
    let header = lines
        .iter()
        .position(|l| l.contains("deflate msg/s") && l.contains("wire B/msg deflate"))
        .expect("the compressed table");
    assert!(header > rows.len());
    let compressed: Vec<&String> = lines[header..]
        .iter()
        .filter(|l| l.starts_with("| wxsocket-") && l.contains("compressed"))
        .collect();
    assert_eq!(compressed.len(), 4, "{lines:?}");
    assert!(lines[header].contains("zlib limit msg/s") && lines[header].contains("share of limit"));

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let _ = std::fs::remove_file(&file);
    assert_eq!(json["quick"], true);
    let json_rows = json["rows"].as_array().unwrap();
    assert_eq!(json_rows.len(), rows.len());
    for row in json_rows {
        let ours = row["wxsocket_msgs_per_sec"].as_f64().unwrap();
        let plain = row["plain_msgs_per_sec"].as_f64().unwrap();
        assert!(ours > 0.0 && plain > 0.0, "{row}");
        assert!(row["case"].is_string() && row["messages"].as_u64().unwrap() > 0);
        same_ratio_as_the_table(row, &rows);
    }
    let json_compressed = json["compressed_rows"].as_array().unwrap();
    let adapters: Vec<&str> = json_compressed
        .iter()
        .map(|r| r["adapter"].as_str().unwrap())
        .collect();
    assert_eq!(
        adapters,
        [
            "wxsocket-tokio",
            "wxsocket-tokio",
            "wxsocket-blocking",
            "wxsocket-blocking"
        ]
    );
    let levels: Vec<u64> = json_compressed
        .iter()
        .map(|r| r["level"].as_u64().unwrap())
        .collect();
    assert_eq!(levels, [6, 1, 6, 1]);
    for row in json_compressed {
        let deflate = row["deflate_msgs_per_sec"].as_f64().unwrap();
        let plain = row["uncompressed_msgs_per_sec"].as_f64().unwrap();
        assert!(deflate > 0.0 && plain > 0.0, "{row}");
        same_ratio_as_the_table(row, &compressed);
        assert_eq!(row["size_bytes"], 4096);
        // Really compressed: a 4 KiB message and its echo take at least 8 KiB on the wire
        // uncompressed, well under half of that compressed.
        let wire_deflate = row["wire_bytes_per_msg_deflate"].as_f64().unwrap();
        let wire_plain = row["wire_bytes_per_msg_uncompressed"].as_f64().unwrap();
        assert!(wire_plain >= 8192.0, "{row}");
        assert!(wire_deflate < wire_plain / 2.0, "{row}");
        // The zlib limit of the same run, and the share of it reached (a share, so
        // above 0; a busy machine can push it past 1 only by slowing the limit's own
        // segment, so it is not bounded above here).
        let share = row["zlib_limit_share"].as_f64().unwrap();
        assert!(share.is_finite() && share > 0.0, "{row}");
        assert!(
            row["zlib_limit_msgs_per_sec"].as_f64().unwrap() > 0.0,
            "{row}"
        );
    }
    // The scale family: each client at 1,000 idle connections, in the table and as JSON.
    let scale: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("| 1000 idle "))
        .collect();
    assert_eq!(scale.len(), 3, "{lines:?}");
    let json_scale = json["scale_rows"].as_array().unwrap();
    let clients: Vec<&str> = json_scale
        .iter()
        .map(|r| r["adapter"].as_str().unwrap())
        .collect();
    assert_eq!(
        clients,
        [
            "wxsocket-tokio TaskPool",
            "wxsocket-blocking TaskPool",
            "tokio-tungstenite"
        ]
    );
    for row in json_scale {
        assert_eq!(row["connections"], 1000, "{row}");
        for field in [
            "rss_per_conn_kib",
            "cpu_us_per_conn_open",
            "cpu_us_per_conn_event",
        ] {
            let v = row[field].as_f64().unwrap();
            assert!(v.is_finite() && v > 0.0, "{field}: {row}");
        }
        let client = row["adapter"].as_str().unwrap();
        assert!(
            scale.iter().any(|l| l.contains(&format!(" {client} "))),
            "no table line for {client}"
        );
    }
    check_ack_rows(&lines, &json);
}

/// The delivery acknowledgement rows: each adapter, small and 16 KiB messages, in the table
/// and as JSON.
fn check_ack_rows(lines: &[String], json: &serde_json::Value) {
    let table: Vec<&String> = lines.iter().filter(|l| l.starts_with("| ack ")).collect();
    assert_eq!(table.len(), 4, "{lines:?}");
    let rows = json["ack_rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for row in rows {
        let (off, on) = (
            row["ack_off_msgs_per_sec"].as_f64().unwrap(),
            row["ack_on_msgs_per_sec"].as_f64().unwrap(),
        );
        assert!(off > 0.0 && on > 0.0, "{row}");
        let ratio = row["ratio"].as_f64().unwrap();
        assert!(ratio.is_finite() && ratio > 0.0, "{row}");
        let adapter = row["adapter"].as_str().unwrap();
        assert!(
            table
                .iter()
                .any(|l| l.contains(adapter) && l.contains(&format!("{ratio:.2}"))),
            "no table line for {row}"
        );
    }
}

/// The JSON row's ratio (the benchmark's median of per-segment ratios, not the quotient of
/// the two median rates) is positive and is the one the table printed for that row.
fn same_ratio_as_the_table(row: &serde_json::Value, table: &[&String]) {
    let ratio = row["ratio"].as_f64().unwrap();
    assert!(ratio.is_finite() && ratio > 0.0, "{row}");
    let (adapter, case) = (
        row["adapter"].as_str().unwrap(),
        row["case"].as_str().unwrap(),
    );
    let line = table
        .iter()
        .find(|l| l.contains(&format!(" {adapter} ")) && l.contains(&format!(" {case} ")))
        .unwrap_or_else(|| panic!("no table line for {adapter} / {case}"));
    assert!(
        line.contains(&format!(" {ratio:.2} |")),
        "table line {line} does not show ratio {ratio:.2}"
    );
}

#[test]
fn a_bad_argument_is_a_usage_error_naming_it() {
    for (args, named) in [(&["--json"][..], "--json"), (&["--fast"][..], "--fast")] {
        let (status, stdout, stderr) = run(args, Duration::from_secs(30));
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout:?}");
        assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
        assert!(
            stderr.contains("error") && stderr.contains(named),
            "{stderr:?}"
        );
    }
}

#[test]
fn flood_alone_prints_only_its_table() {
    let (status, lines, stderr) = run(&["--flood", "--quick"], Duration::from_secs(120));
    assert!(status.success(), "{stderr}");
    let rows: Vec<&String> = lines.iter().filter(|l| l.starts_with("| flood ")).collect();
    // Two sizes for each adapter against the plain client of its stack.
    assert_eq!(rows.len(), 4, "{lines:?}");
    for (row, pair) in rows.iter().zip([
        ["wxsocket-tokio", "tokio-tungstenite"],
        ["wxsocket-tokio", "tokio-tungstenite"],
        ["wxsocket-blocking", "tungstenite"],
        ["wxsocket-blocking", "tungstenite"],
    ]) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!([cells[2], cells[5]], pair, "{row}");
        let ratio: f64 = cells[7].parse().expect("a ratio");
        assert!(ratio > 0.0, "{row}");
    }
    assert!(
        !lines.iter().any(|l| l.starts_with("| wxsocket-")),
        "no other family: {lines:?}"
    );
    let (status, _, stderr) = run(&["--flood", "--ack"], Duration::from_secs(30));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--flood"), "{stderr}");
}
