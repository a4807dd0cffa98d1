//! `wxsocket-bench [--quick] [--json FILE]`: both adapters' echo benchmarks in one table
//! (see [`wxsocket_bench::report`]); `--scale [N]`: only the scale family
//! ([`wxsocket_bench::scale`]), at 1,000 and N connections; `--ack`: only the delivery
//! acknowledgement family ([`wxsocket_bench::ack`]); `--flood`: only the flood family
//! ([`wxsocket_bench::flood`]).

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: wxsocket-bench [--quick] [--json FILE] [--scale [N] | --ack | --flood]";

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
    // The child processes of the scale benchmark (see `wxsocket_bench::scale`).
    match all.as_slice() {
        [flag, n] if flag == "--scale-server" => {
            return child(wxsocket_bench::scale::server_main(n.parse().unwrap_or(0)));
        }
        [flag, kind, n, addrs] if flag == "--scale-client" => {
            let n = n.parse().unwrap_or(1);
            return child(wxsocket_bench::scale::client_main(kind, n, addrs));
        }
        _ => {}
    }
    let mut scale: Option<usize> = None;
    let mut ack = false;
    let mut flood = false;
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
            Some("--scale") => {
                let n = all
                    .iter()
                    .skip_while(|a| *a != "--scale")
                    .nth(1)
                    .and_then(|n| n.parse().ok());
                if n.is_some() {
                    args.next();
                }
                scale = Some(n.unwrap_or(wxsocket_bench::report::SCALE_CONNECTIONS));
            }
            Some("--ack") => ack = true,
            Some("--flood") => flood = true,
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
    if flood {
        if json.is_some() || scale.is_some() || ack {
            eprintln!(
                "wxsocket-bench: error: --flood runs alone, without --json, --scale or --ack ({USAGE})"
            );
            return ExitCode::from(2);
        }
        return wxsocket_bench::report::run_flood(quick);
    }
    if ack {
        if json.is_some() || scale.is_some() {
            eprintln!(
                "wxsocket-bench: error: --ack runs alone, without --json or --scale ({USAGE})"
            );
            return ExitCode::from(2);
        }
        return wxsocket_bench::report::run_ack(quick);
    }
    if let Some(n) = scale {
        return wxsocket_bench::report::run_scale(n, quick, json.as_deref());
    }
    wxsocket_bench::report::run(quick, json.as_deref())
}

fn child(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wxsocket-bench: scale: {e}");
            ExitCode::from(1)
        }
    }
}
