//! The benchmark code the CLI calls works end to end (quick variant): six rows against
//! tungstenite (three cases, with busy-polling and without), both clients echoed every
//! message, and the compressed workload really
//! compressed (fewer bytes on the wire). Rates are not judged here (debug build, shared
//! machine).

#[test]
fn quick_echo_bench_produces_eight_rows() {
    let rows = wxsocket_bench::blocking_echo::run_echo_bench(true).unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
    assert_eq!(
        names,
        [
            "small one-at-a-time",
            "small pipelined",
            "16KiB pipelined",
            "small one-at-a-time, busy-poll off",
            "small pipelined, busy-poll off",
            "16KiB pipelined, busy-poll off",
            "compressed 4KiB JSON pipelined",
            "compressed 4KiB JSON pipelined, level 1",
        ]
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
    assert_eq!(rows[5].size, 16 * 1024);
    assert!(
        rows[..6]
            .iter()
            .all(|r| r.wire.is_none() && r.zlib.is_none())
    );

    for (compressed, level) in rows[6..].iter().zip([6, 1]) {
        assert_eq!(compressed.size, 4 * 1024);
        let wire = compressed.wire.expect("the compressed row counts bytes");
        // Uncompressed, a 4 KiB message and its echo are at least 2 x 4096 bytes on the
        // wire (plus frame headers); compressed, the JSON-like payload takes well under
        // half.
        assert!(wire.uncompressed >= 2.0 * 4096.0, "{compressed}");
        assert!(wire.deflate < wire.uncompressed / 2.0, "{compressed}");
        assert!(compressed.to_string().contains("B/msg deflate"));
        assert!(compressed.to_string().contains("of the zlib limit"));
        let zlib = compressed
            .zlib
            .expect("the zlib limit of the compressed row");
        assert_eq!(zlib.level, level);
        assert!(zlib.limit_per_sec > 0.0 && zlib.share > 0.0, "{compressed}");
    }
    // Level 1 trades bytes for speed: more bytes on the wire than level 6.
    assert!(rows[7].wire.unwrap().deflate > rows[6].wire.unwrap().deflate);
}

#[test]
fn deflate_echo_server_counts_and_still_serves_plain_clients() {
    use wxsocket_blocking::{Client, Config, ConnectOptions, Event, Message};
    let server = wxsocket_bench::blocking_echo::EchoServer::start_deflate().unwrap();
    let wire = server.wire().unwrap();
    let wait = std::time::Duration::from_secs(10);
    for deflate in [false, true] {
        let (client, events) = Client::new(Config::default()).unwrap();
        client
            .connect(&ConnectOptions::new(server.url()).per_message_deflate(deflate))
            .unwrap();
        loop {
            match events.recv_timeout(wait).unwrap() {
                Event::Open { handshake, .. } => {
                    assert_eq!(handshake.deflate.is_some(), deflate);
                    break;
                }
                Event::Close { reason, .. } => panic!("closed: {reason}"),
                _ => {}
            }
        }
        let before = (wire.read(), wire.written());
        let text = "compress me ".repeat(100);
        client.try_send(Message::text(text.clone())).unwrap();
        loop {
            if let Event::Message { message, .. } = events.recv_timeout(wait).unwrap() {
                assert_eq!(message, Message::text(text.clone()));
                break;
            }
        }
        let read = wire.read() - before.0;
        let written = wire.written() - before.1;
        if deflate {
            assert!(read < 100 && written < 100, "{read} {written}");
        } else {
            // 1200 bytes: 2 + 2 header bytes (+ 4 mask bytes from the client).
            assert_eq!((read, written), (1208, 1204));
        }
        client.close(None, "").unwrap();
        while !matches!(events.recv_timeout(wait).unwrap(), Event::Close { .. }) {}
    }
}
