//! Echo benchmark: wxsocket-tokio against a plain tokio-tungstenite client, one local echo
//! server, one run. `cargo bench -p wxsocket-bench --bench tokio_echo` (add `-- --quick` for a shorter run;
//! `WXSOCKET_BENCH_RUNTIME=current_thread` to run the clients on a single-thread runtime).

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let current_thread =
        std::env::var("WXSOCKET_BENCH_RUNTIME").is_ok_and(|v| v == "current_thread");
    let runtime = if current_thread {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let started = std::time::Instant::now();
    // Run on a worker (not the thread blocked in `block_on`), as application tasks do.
    let result = runtime
        .block_on(
            async move { tokio::spawn(wxsocket_bench::tokio_echo::run_echo_bench(quick)).await },
        )
        .expect("benchmark task");
    match result {
        Ok(rows) => {
            println!(
                "echo benchmark ({} runtime for the clients{})\n",
                if current_thread {
                    "current-thread"
                } else {
                    "multi-thread, 2 workers"
                },
                if quick { ", quick" } else { "" }
            );
            print!("{}", wxsocket_bench::tokio_echo::table(&rows));
            println!("\n(total {:.1} s)", started.elapsed().as_secs_f64());
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
