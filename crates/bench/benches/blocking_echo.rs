//! `cargo bench -p wxsocket-bench --bench blocking_echo`: the echo benchmark of [`wxsocket_bench::blocking_echo`],
//! this adapter versus a plain blocking tungstenite client, printed as a table.

fn main() {
    // `cargo test --benches` passes no `--bench`; run the quick variant then.
    let quick = !std::env::args().any(|a| a == "--bench")
        || std::env::var_os("WXSOCKET_BENCH_QUICK").is_some();
    match wxsocket_bench::blocking_echo::run_echo_bench(quick) {
        Ok(rows) => wxsocket_bench::blocking_echo::print_table(&rows),
        Err(e) => {
            eprintln!("echo benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
