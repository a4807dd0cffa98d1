//! permessage-deflate at the frame level: what the compressor writes, and what tungstenite
//! reads after the inflater, for every shape of compressed traffic a server may send.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use std::io::{self, Read, Write};
use tungstenite::Message as WsMessage;
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::{Role, WebSocket, WebSocketConfig};
use wxsocket_core::{DeflateOptions, DeflateParams, Message, TransportErrorKind};
use wxsocket_wire::convert::classify;
use wxsocket_wire::deflate::{Compressor, InflateError, Inflater};

const MAX: usize = 1 << 20;

/// A frame as the server writes it (unmasked).
fn wire(frame: Frame) -> Vec<u8> {
    let mut out = Vec::new();
    frame.format(&mut out).unwrap();
    out
}

/// What a server's compressor would send for `message` (the same algorithm as ours).
fn server_frame(c: &mut Compressor, message: Message) -> Vec<u8> {
    match c.encode(message) {
        WsMessage::Frame(f) => wire(f),
        WsMessage::Text(t) => wire(Frame::message(t, OpCode::Data(Data::Text), true)),
        WsMessage::Binary(b) => wire(Frame::message(b, OpCode::Data(Data::Binary), true)),
        other => panic!("{other:?}"),
    }
}

/// Raw compressed payload of `data` (sync flush, tail stripped), from a given compressor.
fn deflate_raw(c: &mut Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1024);
    c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
    out.truncate(out.len() - 4);
    out
}

fn frame(opcode: OpCode, fin: bool, rsv1: bool, payload: Vec<u8>) -> Vec<u8> {
    let mut f = Frame::message(payload, opcode, fin);
    f.header_mut().rsv1 = rsv1;
    wire(f)
}

/// A byte source tungstenite reads from: the inflater's output over `input`, fed in
/// pieces of `step` bytes.
struct Through {
    input: Vec<u8>,
    at: usize,
    step: usize,
    inflater: Inflater,
}

impl Read for Through {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut src = Slow {
            data: &self.input[self.at..],
            step: self.step,
            read: 0,
        };
        let n = self.inflater.read_from(&mut src, buf);
        self.at += src.read;
        n
    }
}

impl Write for Through {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Slow<'a> {
    data: &'a [u8],
    step: usize,
    read: usize,
}

impl Read for Slow<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len() - self.read);
        buf[..n].copy_from_slice(&self.data[self.read..self.read + n]);
        self.read += n;
        Ok(n)
    }
}

/// Everything tungstenite reads from `input` through an inflater, until the end or an
/// error.
fn read_all(
    params: &DeflateParams,
    input: Vec<u8>,
    step: usize,
) -> (Vec<WsMessage>, Option<tungstenite::Error>) {
    let through = Through {
        input,
        at: 0,
        step,
        inflater: Inflater::new(params, MAX),
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX))
        .max_frame_size(Some(MAX));
    let mut ws = WebSocket::from_raw_socket(through, Role::Client, Some(config));
    let mut out = Vec::new();
    loop {
        match ws.read() {
            Ok(m) => out.push(m),
            // The input ran out (without a close handshake).
            Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => return (out, None),
            Err(e) => return (out, Some(e)),
        }
    }
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "{{\"seq\":{i},\"user\":\"alice\",\"text\":\"hello, hello, hello world {}\"}}",
                i % 7
            )
        })
        .collect()
}

#[test]
fn messages_round_trip_with_and_without_context_takeover_in_any_pieces() {
    for no_takeover in [false, true] {
        let params = DeflateParams {
            server_no_context_takeover: no_takeover,
            client_no_context_takeover: no_takeover,
            ..DeflateParams::default()
        };
        let mut server = Compressor::new(&params, &DeflateOptions::default().threshold(0));
        let sent = texts(60);
        let mut input = Vec::new();
        let mut compressed = 0;
        for t in &sent {
            let f = server_frame(&mut server, Message::text(t.clone()));
            assert_eq!(f[0] & 0x40, 0x40, "RSV1 set");
            compressed += f.len();
            input.extend(f);
        }
        let plain: usize = sent.iter().map(|t| t.len() + 2).sum();
        if no_takeover {
            assert!(compressed < plain, "{compressed} < {plain}");
        } else {
            assert!(
                compressed * 3 < plain,
                "context takeover compresses well: {compressed} vs {plain}"
            );
        }
        for step in [1, 3, 7, 64, 100_000] {
            let (got, err) = read_all(&params, input.clone(), step);
            assert!(err.is_none(), "{err:?}");
            let expected: Vec<WsMessage> =
                sent.iter().map(|t| WsMessage::text(t.clone())).collect();
            assert_eq!(got, expected, "step {step}, no_takeover {no_takeover}");
        }
    }
}

#[test]
fn uncompressed_frames_pass_through_byte_for_byte_between_compressed_ones() {
    let params = DeflateParams::default();
    let mut server = Compressor::new(&params, &DeflateOptions::default());
    let mut input = Vec::new();
    input.extend(server_frame(&mut server, Message::text("x".repeat(500))));
    // Short: sent plain.
    let plain = server_frame(&mut server, Message::binary(vec![1, 2, 3]));
    assert_eq!(plain, [0x82, 3, 1, 2, 3]);
    input.extend(&plain);
    input.extend(wire(Frame::ping(b"p".to_vec())));
    // A plain fragmented message with a ping inside.
    input.extend(frame(
        OpCode::Data(Data::Text),
        false,
        false,
        b"ab".to_vec(),
    ));
    input.extend(wire(Frame::ping(b"q".to_vec())));
    input.extend(frame(
        OpCode::Data(Data::Continue),
        true,
        false,
        b"cd".to_vec(),
    ));
    input.extend(server_frame(&mut server, Message::binary(vec![7u8; 4000])));
    let (got, err) = read_all(&params, input, 5);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(
        got,
        [
            WsMessage::text("x".repeat(500)),
            WsMessage::binary(vec![1, 2, 3]),
            WsMessage::Ping(b"p".to_vec().into()),
            WsMessage::Ping(b"q".to_vec().into()),
            WsMessage::text("abcd"),
            WsMessage::binary(vec![7u8; 4000]),
        ]
    );
}

#[test]
fn fragmented_compressed_messages_with_control_frames_between_fragments() {
    let params = DeflateParams::default();
    let mut c = Compress::new(Compression::default(), false);
    let text = "fragmented and compressed, fragmented and compressed. ".repeat(40);
    let payload = deflate_raw(&mut c, text.as_bytes());
    let (a, rest) = payload.split_at(payload.len() / 3);
    let (b, d) = rest.split_at(rest.len() / 2);
    let mut input = Vec::new();
    input.extend(frame(OpCode::Data(Data::Text), false, true, a.to_vec()));
    input.extend(wire(Frame::ping(b"1".to_vec())));
    input.extend(frame(
        OpCode::Data(Data::Continue),
        false,
        false,
        b.to_vec(),
    ));
    input.extend(wire(Frame::pong(b"2".to_vec())));
    input.extend(frame(OpCode::Data(Data::Continue), true, false, d.to_vec()));
    // The context carries over into the next message.
    let second = deflate_raw(&mut c, text.as_bytes());
    assert!(second.len() < payload.len());
    input.extend(frame(OpCode::Data(Data::Binary), true, true, second));
    // An empty compressed message (RFC 7692 §7.2.3.6: a single 0x00 byte).
    input.extend(frame(OpCode::Data(Data::Text), true, true, vec![0x00]));
    for step in [1, 2, 13, 1 << 20] {
        let (got, err) = read_all(&params, input.clone(), step);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(
            got,
            [
                WsMessage::Ping(b"1".to_vec().into()),
                WsMessage::Pong(b"2".to_vec().into()),
                WsMessage::text(text.clone()),
                WsMessage::binary(text.clone().into_bytes()),
                WsMessage::text(""),
            ],
            "step {step}"
        );
    }
}

fn inflate_error(params: &DeflateParams, input: Vec<u8>, max: usize) -> InflateError {
    let mut inflater = Inflater::new(params, max);
    let mut sink = vec![0u8; 1 << 16];
    for piece in input.chunks(4096) {
        if let Err(e) = inflater.feed(piece) {
            // Fails fast, and keeps failing.
            assert!(inflater.feed(b"\x81\x00").is_err());
            return e;
        }
        while inflater.take_output(&mut sink) > 0 {}
    }
    panic!("no error");
}

#[test]
fn a_decompression_bomb_is_too_big_not_out_of_memory() {
    let params = DeflateParams::default();
    let mut c = Compress::new(Compression::best(), false);
    // 64 MiB of zeros: about 64 KiB compressed.
    let mut payload = Vec::new();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..63 {
        payload.reserve(1 << 16);
        c.compress_vec(&zeros, &mut payload, FlushCompress::None)
            .unwrap();
    }
    payload.extend(deflate_raw(&mut c, &zeros));
    assert!(payload.len() < 200_000, "{}", payload.len());
    let input = frame(OpCode::Data(Data::Binary), true, true, payload);
    let e = inflate_error(&params, input, MAX);
    assert_eq!(e.kind, TransportErrorKind::MessageTooBig, "{e}");
    assert!(e.message.contains("maximum of 1048576 bytes"), "{e}");
    // Through tungstenite, the error keeps its kind (close 1009).
    let tungstenite_error = tungstenite::Error::Io(e.into());
    assert_eq!(
        classify(&tungstenite_error).unwrap().kind,
        TransportErrorKind::MessageTooBig
    );
}

/// A compressed frame announcing more bytes than any encoding of a message within the
/// limit is refused when its header comes, as tungstenite refuses a plain one (a prober's
/// server announced 2^63 − 1 bytes and stalled: the client waited for them). A message at
/// the limit that does not compress (stored blocks, a little longer than the message)
/// still passes.
#[test]
fn a_compressed_frame_announcing_too_many_bytes_is_refused_at_its_header() {
    let params = DeflateParams::default();
    // RSV1, FIN, binary; a 64-bit length of 2^63 − 1, and nothing after it.
    let mut header = vec![0xC2, 127];
    header.extend_from_slice(&(u64::MAX >> 1).to_be_bytes());
    let mut inflater = Inflater::new(&params, MAX);
    let e = inflater.feed(&header).unwrap_err();
    assert_eq!(e.kind, TransportErrorKind::MessageTooBig, "{e}");
    assert!(e.message.contains("9223372036854775807 bytes"), "{e}");

    let mut noise = vec![0u8; MAX];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut stored = Compress::new(Compression::none(), false);
    let payload = deflate_raw(&mut stored, &noise);
    assert!(payload.len() > MAX, "{} bytes", payload.len());
    let input = frame(OpCode::Data(Data::Binary), true, true, payload);
    let (got, err) = read_all(&params, input, 1 << 16);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [WsMessage::binary(noise)]);
}

#[test]
fn exactly_the_maximum_inflated_size_is_accepted() {
    let params = DeflateParams::default();
    let mut server = Compressor::new(&params, &DeflateOptions::default());
    let input = server_frame(&mut server, Message::binary(vec![3u8; MAX]));
    let (got, err) = read_all(&params, input, 1 << 16);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, [WsMessage::binary(vec![3u8; MAX])]);
    let mut server = Compressor::new(&params, &DeflateOptions::default());
    let input = server_frame(&mut server, Message::binary(vec![3u8; MAX + 1]));
    assert_eq!(
        inflate_error(&params, input, MAX).kind,
        TransportErrorKind::MessageTooBig
    );
}

#[test]
fn a_message_read_together_with_a_failing_one_is_delivered_first() {
    // One read holds a good message and then one that fails (too big once inflated, or
    // invalid): the good one reaches tungstenite, then the error comes.
    let params = DeflateParams::default();
    let good = Message::binary(vec![3u8; MAX]);
    let failing = [
        (
            Message::binary(vec![4u8; MAX + 1]),
            TransportErrorKind::MessageTooBig,
        ),
        (
            Message::text("not compressed data"),
            TransportErrorKind::Protocol,
        ),
    ];
    for (bad, kind) in failing {
        let mut server = Compressor::new(&params, &DeflateOptions::default());
        let mut input = server_frame(&mut server, good.clone());
        input.extend(match kind {
            TransportErrorKind::MessageTooBig => server_frame(&mut server, bad),
            // RSV1 on a frame whose payload is not DEFLATE data.
            _ => frame(
                OpCode::Data(Data::Text),
                true,
                true,
                vec![0xff, 0xff, 0xff, 0xff, 0xff],
            ),
        });
        assert!(input.len() < 16 * 1024, "one read: {} bytes", input.len());
        let (got, err) = read_all(&params, input.clone(), input.len());
        assert!(
            got.len() == 1 && got[0] == WsMessage::binary(vec![3u8; MAX]),
            "{kind:?}: {} messages before the error, not the good one alone",
            got.len()
        );
        let err = err.expect("the failing message fails");
        assert_eq!(classify(&err).map(|e| e.kind), Some(kind), "{err}");

        // Sans-IO: the failure waits until the output before it has been taken.
        let mut inflater = Inflater::new(&params, MAX);
        inflater.feed_deferred(&input);
        assert!(inflater.has_output());
        assert!(inflater.take_failure().is_none());
        let mut sink = vec![0u8; 1 << 16];
        while inflater.take_output(&mut sink) > 0 {}
        assert_eq!(inflater.take_failure().map(|e| e.kind), Some(kind));
    }
}

#[test]
fn protocol_violations_are_protocol_errors() {
    let params = DeflateParams::default();
    let mut c = Compress::new(Compression::default(), false);
    let good = deflate_raw(&mut c, b"hello hello hello");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("control", {
            let mut f = Frame::ping(b"x".to_vec());
            f.header_mut().rsv1 = true;
            wire(f)
        }),
        ("continuation", {
            let mut v = frame(OpCode::Data(Data::Text), false, true, good.clone());
            v.extend(frame(OpCode::Data(Data::Continue), true, true, vec![0]));
            v
        }),
        (
            "invalid compressed data",
            frame(OpCode::Data(Data::Binary), true, true, vec![0xff; 64]),
        ),
        ("masked", {
            let mut f = Frame::message(good.clone(), OpCode::Data(Data::Text), true);
            f.header_mut().rsv1 = true;
            f.header_mut().mask = Some([1, 2, 3, 4]);
            wire(f)
        }),
        ("before the previous one ended", {
            let mut v = frame(OpCode::Data(Data::Text), false, false, b"a".to_vec());
            v.extend(frame(OpCode::Data(Data::Text), true, true, good.clone()));
            v
        }),
        ("before the compressed one ended", {
            let mut v = frame(OpCode::Data(Data::Text), false, true, good.clone());
            v.extend(frame(OpCode::Data(Data::Text), true, false, b"a".to_vec()));
            v
        }),
        // A compressed frame is taken apart here, not by tungstenite: RSV2 and RSV3 are
        // judged here too (they used to be dropped, and the message delivered).
        ("RSV2 or RSV3", {
            let mut f = Frame::message(good.clone(), OpCode::Data(Data::Text), true);
            f.header_mut().rsv1 = true;
            f.header_mut().rsv2 = true;
            wire(f)
        }),
        ("RSV2 or RSV3", {
            let mut v = frame(OpCode::Data(Data::Text), false, true, good[..4].to_vec());
            let mut f = Frame::message(good[4..].to_vec(), OpCode::Data(Data::Continue), true);
            f.header_mut().rsv3 = true;
            v.extend(wire(f));
            v
        }),
        // RFC 6455 §5.2: a 64-bit length's most significant bit is 0. Compressed or not,
        // such a frame is a protocol error (1002), not a message too large (1009).
        ("most significant bit", {
            vec![0xc1, 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 0xaa]
        }),
        ("most significant bit", {
            vec![0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1, 0xaa]
        }),
    ];
    for (why, input) in cases {
        let e = inflate_error(&params, input, MAX);
        assert_eq!(e.kind, TransportErrorKind::Protocol, "{why}: {e}");
        assert!(
            e.message.contains(why) || why == "masked" && e.message.contains("masked"),
            "{why}: {e}"
        );
    }
    // RSV2 is not ours: it passes to tungstenite, which refuses it.
    let mut f = Frame::ping(b"x".to_vec());
    f.header_mut().rsv2 = true;
    let (_, err) = read_all(&params, wire(f), 1);
    assert!(
        matches!(err, Some(tungstenite::Error::Protocol(_))),
        "{err:?}"
    );
}

#[test]
fn the_compressor_follows_the_agreed_parameters() {
    let long = "abcdefgh".repeat(200);
    // Below the threshold: plain.
    let mut c = Compressor::new(
        &DeflateParams::default(),
        &DeflateOptions::default().threshold(100),
    );
    assert_eq!(c.encode(Message::text("short")), WsMessage::text("short"));
    assert!(
        matches!(c.encode(Message::text(long.clone())), WsMessage::Frame(f) if f.header().rsv1)
    );
    // A 256-byte window cannot be made with zlib: plain, which RFC 7692 always allows.
    let eight = DeflateParams {
        client_max_window_bits: 8,
        ..DeflateParams::default()
    };
    let mut c = Compressor::new(&eight, &DeflateOptions::default());
    assert_eq!(
        c.encode(Message::text(long.clone())),
        WsMessage::text(long.clone())
    );
    // A 512-byte window: what it writes inflates with a 512-byte window.
    let nine = DeflateParams {
        client_max_window_bits: 9,
        ..DeflateParams::default()
    };
    let mut c = Compressor::new(&nine, &DeflateOptions::default());
    let data: Vec<u8> = (0..20_000u32)
        .map(|i| (i % 251) as u8 ^ (i / 700) as u8)
        .collect();
    let WsMessage::Frame(f) = c.encode(Message::binary(data.clone())) else {
        panic!("compressed")
    };
    let mut d = Decompress::new_with_window_bits(false, 9);
    let mut payload = f.payload().to_vec();
    payload.extend([0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(data.len() + 64);
    d.decompress_vec(&payload, &mut out, FlushDecompress::Sync)
        .unwrap();
    assert_eq!(out, data);
    // client_no_context_takeover: every message compresses the same way, from scratch.
    let reset = DeflateParams {
        client_no_context_takeover: true,
        ..DeflateParams::default()
    };
    let mut c = Compressor::new(&reset, &DeflateOptions::default());
    let a = c.encode(Message::text(long.clone()));
    let b = c.encode(Message::text(long.clone()));
    assert_eq!(a, b);
    let mut c = Compressor::new(&DeflateParams::default(), &DeflateOptions::default());
    let a = c.encode(Message::text(long.clone()));
    let b = c.encode(Message::text(long));
    assert_ne!(a, b, "with context takeover the second refers to the first");
}

/// A stream that collects what is written and reads from a prepared buffer.
#[derive(Default)]
struct Pipe {
    read: io::Cursor<Vec<u8>>,
    written: Vec<u8>,
}

impl Read for Pipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read.read(buf)
    }
}

impl Write for Pipe {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn the_server_side_inflates_masked_client_frames_for_a_tungstenite_server() {
    for no_takeover in [false, true] {
        let options = DeflateOptions::default()
            .client_no_context_takeover(no_takeover)
            .threshold(8);
        let (params, answer) =
            wxsocket_core::deflate::accept_offer(&options.offer_header()).unwrap();
        assert_eq!(options.negotiate(&answer).unwrap(), params);
        // The client writes (masked, through tungstenite) ...
        let mut client = WebSocket::from_raw_socket(Pipe::default(), Role::Client, None);
        let mut compressor = Compressor::new(&params, &options);
        let sent = texts(20);
        for t in &sent {
            client
                .send(compressor.encode(Message::text(t.clone())))
                .unwrap();
        }
        client
            .send(compressor.encode(Message::binary(vec![1, 2])))
            .unwrap();
        let wire = std::mem::take(&mut client.get_mut().written);
        assert_eq!(wire[0] & 0xc0, 0xc0, "FIN + RSV1");
        assert_eq!(wire[1] & 0x80, 0x80, "masked");
        // ... and a tungstenite server reads it through the server-side inflater.
        let mut inflater = Inflater::server(&params, MAX);
        let mut plain = Vec::new();
        for piece in wire.chunks(5) {
            inflater.feed(piece).unwrap();
            inflater.drain_output(&mut plain);
        }
        let mut server = WebSocket::from_raw_socket(
            Pipe {
                read: io::Cursor::new(plain),
                written: Vec::new(),
            },
            Role::Server,
            None,
        );
        for t in &sent {
            assert_eq!(server.read().unwrap(), WsMessage::text(t.clone()));
        }
        assert_eq!(server.read().unwrap(), WsMessage::binary(vec![1u8, 2]));
        // The server's answers, compressed on its side, inflate on the client's.
        let mut server_compressor = Compressor::server(&params, 0);
        let frame = server_frame(&mut server_compressor, Message::text(sent[0].clone()));
        let (got, err) = read_all(&params, frame, 3);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, [WsMessage::text(sent[0].clone())]);
    }
    // An unmasked compressed frame is refused on the server side.
    let e = {
        let mut inflater = Inflater::server(&DeflateParams::default(), MAX);
        inflater
            .feed(&frame(OpCode::Data(Data::Text), true, true, vec![0]))
            .unwrap_err()
    };
    assert!(e.message.contains("unmasked"), "{e}");
}

#[test]
fn empty_messages_keep_the_context_in_step() {
    let params = DeflateParams::default();
    let mut server = Compressor::server(&params, 0);
    let mut input = Vec::new();
    let mut expected = Vec::new();
    for text in ["", "", "abc abc abc", "", "abc abc abc"] {
        let f = server_frame(&mut server, Message::text(text));
        // zlib writes nothing for an empty message after a flush: one 0x00 byte is sent.
        if text.is_empty() {
            assert_eq!(f, [0xc1, 0x01, 0x00]);
        }
        input.extend(f);
        expected.push(WsMessage::text(text));
    }
    // Another server may send an empty payload for an empty message: also fine.
    input.extend(frame(OpCode::Data(Data::Binary), true, true, Vec::new()));
    expected.push(WsMessage::binary(Vec::new()));
    input.extend(server_frame(&mut server, Message::text("abc abc abc")));
    expected.push(WsMessage::text("abc abc abc"));
    let (got, err) = read_all(&params, input, 1);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(got, expected);
}

#[test]
fn the_compression_level_trades_size_for_speed_and_inflates_the_same() {
    let params = DeflateParams::default();
    let text: String = (0..200)
        .map(|i| {
            format!(
                "{{\"id\":{i},\"name\":\"user{}\",\"online\":{}}}",
                i % 17,
                i % 3 == 0
            )
        })
        .collect();
    let mut sizes = Vec::new();
    for level in [0, 1, 6, 9] {
        let mut c = Compressor::new(&params, &DeflateOptions::default().level(level));
        let f = match c.encode(Message::text(text.clone())) {
            WsMessage::Frame(f) => f,
            other => panic!("{other:?}"),
        };
        sizes.push(f.payload().len());
        let (got, err) = read_all(&params, wire(f), 1 << 16);
        assert!(err.is_none(), "{err:?}");
        assert_eq!(got, [WsMessage::text(text.clone())], "level {level}");
    }
    assert!(sizes[0] > text.len(), "level 0 stores: {sizes:?}");
    assert!(
        sizes[1] < sizes[0] && sizes[2] < sizes[1] && sizes[3] <= sizes[2],
        "{sizes:?}"
    );
}

#[test]
fn a_server_accepts_from_request_headers_across_several_lines() {
    let mut headers = http::HeaderMap::new();
    headers.append(
        "sec-websocket-extensions",
        "x-webkit-deflate-frame".parse().unwrap(),
    );
    headers.append(
        "sec-websocket-extensions",
        "permessage-deflate; client_max_window_bits; server_no_context_takeover"
            .parse()
            .unwrap(),
    );
    let (params, value) = wxsocket_wire::deflate::accept(&headers).unwrap();
    assert!(params.server_no_context_takeover);
    assert_eq!(value, "permessage-deflate; server_no_context_takeover");
    assert!(wxsocket_wire::deflate::accept(&http::HeaderMap::new()).is_none());
}

/// A highly compressible message (16 MiB of zeros, about 16 KiB on the wire) inflates to
/// its full size while it is taken, and the inflater gives that memory back once it is:
/// what it keeps between messages is bounded whatever came (its output buffer used to keep
/// the largest message's size for the connection's life).
#[test]
fn the_inflater_gives_back_a_large_messages_memory() {
    const BIG: usize = 16 << 20;
    let params = DeflateParams::default();
    let mut server = Compressor::new(&params, &DeflateOptions::default());
    let input = server_frame(&mut server, Message::binary(vec![0u8; BIG]));
    assert!(input.len() < 64 << 10, "{} bytes on the wire", input.len());
    let mut inflater = Inflater::new(&params, BIG + 1);
    let before = inflater.retained();
    inflater.feed_deferred(&input);
    let mut sink = vec![0u8; 1 << 16];
    let mut taken = 0;
    loop {
        let n = inflater.take_output(&mut sink);
        if n == 0 {
            break;
        }
        taken += n;
    }
    assert!(taken > BIG, "the whole frame came out: {taken} bytes");
    assert!(inflater.take_failure().is_none());
    let after = inflater.retained();
    assert!(
        after <= (16 << 10) + 2 * (128 << 10),
        "the inflater keeps {after} bytes after the message ({before} before)"
    );
}

/// A reader is handed a large compressed message in frames as it is inflated, never the
/// message whole: through `read_from` the inflater holds at most a frame's worth of output
/// at any time (it used to inflate one read, up to 16 MiB here, before handing any of it
/// on, then copy it: several short-lived allocations of the message's size per message),
/// and the frames still make up the message exactly, in order.
#[test]
fn a_reader_is_handed_a_large_message_in_frames_as_it_is_inflated() {
    const BIG: usize = 16 << 20;
    let params = DeflateParams::default();
    let mut server = Compressor::new(&params, &DeflateOptions::default());
    let message: Vec<u8> = (0..BIG).map(|i| (i % 251) as u8).collect();
    let input = server_frame(&mut server, Message::binary(message.clone()));
    assert!(input.len() < 256 << 10, "{} bytes on the wire", input.len());
    let mut inflater = Inflater::new(&params, BIG + 1);
    let mut socket = io::Cursor::new(input);
    let mut read = Vec::new();
    let mut buf = vec![0u8; 128 << 10];
    let mut most = 0;
    loop {
        let n = inflater.read_from(&mut socket, &mut buf).unwrap();
        most = most.max(inflater.retained());
        if n == 0 {
            break;
        }
        read.extend_from_slice(&buf[..n]);
    }
    assert!(
        most <= (16 << 10) + 2 * (128 << 10),
        "the inflater held {most} bytes while the message was read"
    );
    // The frames: binary, then continuations, the last with FIN; each about 32 KiB.
    let mut payload = Vec::with_capacity(BIG);
    let mut at = 0;
    let mut frames = 0;
    while at < read.len() {
        let (b0, b1) = (read[at], read[at + 1]);
        assert_eq!(b0 & 0x70, 0, "no RSV bits on a re-emitted frame");
        assert_eq!(
            b0 & 0x0f,
            if frames == 0 { 2 } else { 0 },
            "frame {frames}'s opcode"
        );
        assert_eq!(b1 & 0x80, 0, "unmasked");
        let (len, header) = match b1 & 0x7f {
            126 => (u16::from_be_bytes([read[at + 2], read[at + 3]]) as usize, 4),
            127 => (
                u64::from_be_bytes(read[at + 2..at + 10].try_into().unwrap()) as usize,
                10,
            ),
            n => (n as usize, 2),
        };
        assert!(len <= 64 << 10, "frame {frames} carries {len} bytes");
        payload.extend_from_slice(&read[at + header..at + header + len]);
        at += header + len;
        frames += 1;
        assert_eq!(
            b0 & 0x80 != 0,
            at == read.len(),
            "FIN on the last frame alone"
        );
    }
    assert!(payload == message, "the frames make up the message");
    assert!(frames >= BIG / (64 << 10), "{frames} frames");
}

/// The server's side, read as the CLI's server reads (through `read_from`): a large
/// compressed message from a client, masked, is inflated a frame at a time, the mask
/// carried across the frames, and a tungstenite server reads it whole.
#[test]
fn the_server_side_reads_a_large_masked_message_a_frame_at_a_time() {
    struct Through {
        inflater: Inflater,
        socket: io::Cursor<Vec<u8>>,
        most: usize,
    }
    impl Read for Through {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inflater.read_from(&mut self.socket, buf)?;
            self.most = self.most.max(self.inflater.retained());
            Ok(n)
        }
    }
    impl Write for Through {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    const BIG: usize = 4 << 20;
    let options = DeflateOptions::default();
    let (params, _) = wxsocket_core::deflate::accept_offer(&options.offer_header()).unwrap();
    let mut client = WebSocket::from_raw_socket(Pipe::default(), Role::Client, None);
    let mut compressor = Compressor::new(&params, &options);
    let message: Vec<u8> = (0..BIG).map(|i| (i % 241) as u8).collect();
    for _ in 0..2 {
        client
            .send(compressor.encode(Message::binary(message.clone())))
            .unwrap();
    }
    let wire = std::mem::take(&mut client.get_mut().written);
    assert!(wire.len() < BIG / 8, "{} bytes on the wire", wire.len());
    let through = Through {
        inflater: Inflater::server(&params, BIG),
        socket: io::Cursor::new(wire),
        most: 0,
    };
    let config = WebSocketConfig::default().max_message_size(Some(BIG));
    let mut server = WebSocket::from_raw_socket(through, Role::Server, Some(config));
    for _ in 0..2 {
        assert!(server.read().unwrap() == WsMessage::binary(message.clone()));
    }
    let most = server.get_ref().most;
    assert!(
        most <= (16 << 10) + 2 * (128 << 10),
        "the server's inflater held {most} bytes"
    );
}

fn wire_payload(message: WsMessage) -> Vec<u8> {
    match message {
        WsMessage::Frame(frame) => frame.payload().to_vec(),
        other => panic!("not compressed: {other:?}"),
    }
}

/// zlib's state is made when it is first needed and, without context takeover, let go after
/// each message; a reader's buffers go back when the socket runs dry. A connection that
/// agreed to compression but sends or receives nothing compressed holds none of it (a
/// prober measured 356 KiB per idle connection), and one without context takeover holds
/// none between messages.
#[test]
fn zlib_state_and_buffers_are_held_only_while_needed() {
    let text = "a message long enough to be compressed, and then some more text";
    for takeover in [true, false] {
        let params = DeflateParams {
            client_no_context_takeover: !takeover,
            server_no_context_takeover: !takeover,
            ..DeflateParams::default()
        };
        let mut client = Compressor::new(&params, &DeflateOptions::default());
        assert!(!client.holds_state(), "made before the first message");
        let _ = client.encode(Message::text("short"));
        assert!(
            !client.holds_state(),
            "made for a message under the threshold"
        );
        let _ = client.encode(Message::text(text));
        assert_eq!(client.holds_state(), takeover, "takeover {takeover}");
        let _ = client.encode(Message::text(text));
        assert_eq!(client.holds_state(), takeover, "takeover {takeover}");
        // The third message compresses as it would have with the state kept.
        let again = client.encode(Message::text(text));
        let mut check = Compressor::new(&params, &DeflateOptions::default());
        let first = wire_payload(check.encode(Message::text(text)));
        let second = wire_payload(check.encode(Message::text(text)));
        if !takeover {
            assert_eq!(
                first, second,
                "each message stands alone, also within a batch"
            );
        }
        let third = check.encode(Message::text(text));
        assert_eq!(
            wire_payload(again),
            wire_payload(third),
            "takeover {takeover}: the message after a release compresses as it would have"
        );

        let mut server = Compressor::server(&params, 0);
        let input = [
            server_frame(&mut server, Message::text(text)),
            server_frame(&mut server, Message::text(text)),
        ]
        .concat();
        let mut inflater = Inflater::new(&params, MAX);
        assert!(!inflater.holds_state() && inflater.retained() == 0);
        // Read through a socket that has the two messages and then would block.
        let mut socket = Some(input);
        let mut read = |raw: &mut [u8]| match socket.take() {
            Some(bytes) => {
                raw[..bytes.len()].copy_from_slice(&bytes);
                std::task::Poll::Ready(Ok(bytes.len()))
            }
            None => std::task::Poll::Pending,
        };
        let mut plain = Vec::new();
        let mut buf = [0u8; 256];
        while let std::task::Poll::Ready(n) = inflater.poll_read_from(&mut buf, &mut read) {
            plain.extend_from_slice(&buf[..n.unwrap()]);
        }
        let (header, message) = plain.split_at(2);
        assert_eq!(header, [0x81, text.len() as u8]);
        assert_eq!(&message[..text.len()], text.as_bytes());
        assert_eq!(plain.len(), 2 * (2 + text.len()), "both messages");
        assert_eq!(inflater.holds_state(), takeover, "takeover {takeover}");
        assert_eq!(
            inflater.retained(),
            0,
            "the buffers went back when the socket ran dry"
        );
    }
}

/// A masked frame from the server (RFC 6455 §5.1: the client must fail the connection) is
/// refused also when it continues a compressed message: the inflater takes such frames
/// apart itself, so tungstenite never sees the mask.
#[test]
fn a_masked_continuation_of_a_compressed_message_is_refused() {
    let params = DeflateParams::default();
    let mut c = Compress::new(Compression::default(), false);
    let payload = deflate_raw(&mut c, b"hello hello hello");
    let (first, rest) = payload.split_at(3);
    let mut input = frame(OpCode::Data(Data::Text), false, true, first.to_vec());
    // The continuation, masked with a zero key (its bytes unchanged).
    let mut last = Frame::message(rest.to_vec(), OpCode::Data(Data::Continue), true);
    last.header_mut().mask = Some([0; 4]);
    input.extend(wire(last));
    let e = inflate_error(&params, input, MAX);
    assert_eq!(e.kind, TransportErrorKind::Protocol, "{e}");
    assert!(e.message.contains("masked"), "{e}");
}

/// The bound on a compressed frame's announced length is exact: the longest encoding of a
/// message within the limit (the limit, a quarter of it more, and 1,024 bytes) is waited
/// for; one byte more is refused at the header.
#[test]
fn the_bound_on_an_announced_compressed_length_is_exact() {
    let params = DeflateParams::default();
    let max = 1000;
    let bound = (max + max / 4 + 1024) as u16;
    for (len, refused) in [(bound, false), (bound + 1, true)] {
        // RSV1, FIN, binary; a 16-bit length, and nothing after it.
        let mut header = vec![0xC2, 126];
        header.extend_from_slice(&len.to_be_bytes());
        let mut inflater = Inflater::new(&params, max);
        let fed = inflater.feed(&header);
        assert_eq!(fed.is_err(), refused, "{len} bytes: {fed:?}");
        if let Err(e) = fed {
            assert_eq!(e.kind, TransportErrorKind::MessageTooBig, "{e}");
        }
    }
}
