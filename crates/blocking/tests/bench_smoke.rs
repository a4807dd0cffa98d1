//! The benchmark code the CLI calls works end to end (quick variant): three rows, both
//! clients echoed every message. Rates are not judged here (debug build, shared machine).

#[test]
fn quick_echo_bench_produces_three_rows() {
    let rows = wxsocket_blocking::bench::run_echo_bench(true).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        ["small one-at-a-time", "small pipelined", "16KiB pipelined"]
    );
    for row in &rows {
        assert!(
            row.plain_msgs_per_sec > 0.0 && row.adapter_msgs_per_sec > 0.0,
            "{row}"
        );
        assert!(row.ratio().is_finite() && row.ratio() > 0.0, "{row}");
        assert!(row.to_string().contains(row.name));
    }
    assert_eq!(rows[2].size, 16 * 1024);
}
