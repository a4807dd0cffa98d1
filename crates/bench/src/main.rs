//! `wxsocket-bench [--quick] [--json FILE]`: both adapters' echo benchmarks in one table
//! (see [`wxsocket_bench::report`]).

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: wxsocket-bench [--quick] [--json FILE]";

fn main() -> ExitCode {
    let mut quick = false;
    let mut json: Option<PathBuf> = None;
    let mut args = std::env::args_os().skip(1);
    let all: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, client, url, messages] = all.as_slice()
        && flag == "--flood-client"
    {
        // The child process of the flood benchmark (see `wxsocket_bench::flood`).
        let messages = messages.parse().unwrap_or(0);
        return match wxsocket_bench::flood::client_main(client, url, messages) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("wxsocket-bench: flood client: {e}");
                ExitCode::from(1)
            }
        };
    }
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--quick") => quick = true,
            Some("--json") => match args.next() {
                Some(file) => json = Some(PathBuf::from(file)),
                None => {
                    eprintln!("wxsocket-bench: error: --json needs a FILE ({USAGE})");
                    return ExitCode::from(2);
                }
            },
            Some("-h" | "--help") => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            _ => {
                eprintln!("wxsocket-bench: error: unknown argument {arg:?} ({USAGE})");
                return ExitCode::from(2);
            }
        }
    }
    wxsocket_bench::report::run(quick, json.as_deref())
}
