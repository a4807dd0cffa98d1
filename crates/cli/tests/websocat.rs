//! The "Coming from websocat" table of crates/cli/README.md: every `wxsocket` one-liner in
//! it is run here, as written (through `sh -c`, with the port of the README replaced by a
//! test server's), and does what the table says.

mod common;

use common::{Mode, Proc, TestServer, bin, run_program};
use std::path::{Path, PathBuf};
use std::process::Stdio;

const README: &str = include_str!("../README.md");

/// The `wxsocket` column of the table, unescaped (`\|` is `|`).
fn table_commands() -> Vec<String> {
    let section = README
        .split("### Coming from websocat")
        .nth(1)
        .expect("the README has the websocat table");
    section
        .lines()
        .skip_while(|l| !l.starts_with("| websocat"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            let cell = cells[1].trim();
            cell.trim_matches('`').replace("\\|", "|")
        })
        .collect()
}

/// A directory for the files of one command.
fn work_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("websocat-table-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `command` (a README line) with `sh -c` in `dir`, `wxsocket` being the built
/// binary and the README's `ws://127.0.0.1:9001/` being `url`; standard input `input`.
fn run_line(command: &str, url: &str, dir: &Path, input: &[u8]) -> (i32, Vec<u8>, String) {
    let shell = command.replace("ws://127.0.0.1:9001/", url).replacen(
        "wxsocket ",
        &format!("'{}' ", bin()),
        1,
    );
    let stdin_file = dir.join("stdin");
    std::fs::write(&stdin_file, input).unwrap();
    let script = format!("cd '{}' && {shell}", dir.display());
    let (status, stdout, stderr) = run_program(
        "sh",
        &["-c", &script],
        Stdio::from(std::fs::File::open(&stdin_file).unwrap()),
    );
    (status.code().unwrap_or(-1), stdout, stderr)
}

#[test]
fn every_wxsocket_line_of_the_websocat_table_works() {
    let commands = table_commands();
    assert_eq!(commands.len(), 11, "{commands:?}");
    for command in &commands {
        assert!(
            command.contains("wxsocket connect") || command.contains("wxsocket serve"),
            "{command}"
        );
        let name = format!(
            "{:x}",
            command.len() * 31 + command.bytes().map(usize::from).sum::<usize>()
        );
        let dir = work_dir(&name);
        if command.starts_with("wxsocket serve") {
            // Started on a free port instead of 9001, then used by a client.
            let args: Vec<&str> = command
                .strip_prefix("wxsocket ")
                .unwrap()
                .split_whitespace()
                .map(|a| {
                    if a == "127.0.0.1:9001" {
                        "127.0.0.1:0"
                    } else {
                        a
                    }
                })
                .collect();
            let mut server = Proc::spawn(&args);
            let first = server.expect("listening line", |l| l.contains("ws://"));
            let url = first
                .split_whitespace()
                .find(|w| w.starts_with("ws://"))
                .unwrap()
                .to_owned();
            let (code, stdout, stderr) = run_line(
                "wxsocket connect ws://127.0.0.1:9001/",
                &url,
                &dir,
                b"ping\n",
            );
            assert_eq!(
                (code, stdout.as_slice()),
                (0, &b"ping\n"[..]),
                "{command}: {stderr}"
            );
            if command.contains("--broadcast") {
                server.expect("broadcast", |l| l.contains("message sent"));
            }
            continue;
        }
        let server = TestServer::start(Mode::Echo, false);
        let url = server.url();
        if command.contains("-b --raw-output") {
            let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
            std::fs::write(dir.join("in.bin"), &bytes).unwrap();
            let (code, stdout, stderr) = run_line(command, url, &dir, b"");
            assert_eq!(code, 0, "{command}: {stderr}");
            assert!(stdout.is_empty());
            let out = std::fs::read(dir.join("out.bin")).unwrap();
            assert!(
                out == bytes,
                "{command}: {} bytes back of {}",
                out.len(),
                bytes.len()
            );
            continue;
        }
        let (code, stdout, stderr) = run_line(command, url, &dir, b"one\ntwo\n");
        assert_eq!(code, 0, "{command}: {stderr}");
        let stdout = String::from_utf8(stdout).unwrap();
        let expected = if command.starts_with("echo hello") {
            "hello\n"
        } else if command.contains(" -1 ") {
            "one\n"
        } else {
            "one\ntwo\n"
        };
        assert_eq!(stdout, expected, "{command}: {stderr}");
        if command.contains(" -q ") {
            assert_eq!(stderr, "", "{command}");
        }
        let seen = server.seen();
        let header = |name: &str| {
            seen[0]
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if command.contains("-H 'Authorization") {
            assert_eq!(header("authorization").as_deref(), Some("Bearer t0k3n"));
        }
        if command.contains("-p chat") {
            assert_eq!(header("sec-websocket-protocol").as_deref(), Some("chat"));
        }
    }
}
