#!/usr/bin/env python3
"""A scripted WebSocket server on the Python `websockets` library (server side), for
wxsocket's interop tests (tests/tests/interop.rs).

It listens on 127.0.0.1, port 0, and prints the port as the first line on stdout. After
that it reports what it saw, one event a line on stdout (flushed at once):

    open PATH                  a connection was accepted (PATH includes the query)
    protocols NAME,NAME...     the sub-protocols the client offered, as the library
                               parsed its Sec-WebSocket-Protocol header (only when it
                               offered some)
    extensions VALUE           the Sec-WebSocket-Extensions header of the server's answer
                               (`extensions none` without one), once the handshake is done
    received KIND LEN HOW      a text or binary message of LEN bytes (inflated) arrived;
                               HOW is `compressed` when its first frame had RSV1 set (the
                               sender deflated it), else `plain`
    sent KIND LEN HOW          the server sent a message of LEN bytes, deflated or not
                               (reported for the echoes and the scripted deflate messages)
    frame OPCODE FIN LEN       (on /fragmented only) the server sent a frame: OPCODE
                               text, binary, cont, ping, pong or close; FIN 1 or 0; LEN
                               payload bytes. Reported as the library writes the frame,
                               so the lines are in wire order
    client_cert NAME           (with --client-ca) the common name of the certificate the
                               client presented, after `open`
    ping                       the client pinged
    pong PAYLOAD               the client answered our ping
    closed CODE REASON         the connection ended; CODE and REASON of the client's close
                               frame (1005 when it had no code), `closed none` when the
                               client sent no close frame

What it does is chosen by the request path:

    /echo                      echoes text and binary messages (any size up to 64 MiB)
    /protocol/NAME             selects sub-protocol NAME if the client offered it, else
                               none; then echoes (every other path selects none)
    /headers                   sends the request headers as one JSON text message (names
                               lower-cased, keys sorted, compact), then echoes
    /fragmented                sends a text and a binary message in several fragments each
                               (with the library's fragmenting send, a ping between two
                               fragments of the text), reports the pong, then echoes
    /ping                      pings the client with payload "are you there" and reports
                               the pong, then echoes
    /close/CODE[/REASON]       closes at once with CODE and the URL-decoded REASON
    /drop-mid-message          sends the first bytes of a 100-byte binary frame and drops
                               the TCP connection
    /silent                    answers nothing at all: no echo, no pong (it still reports
                               the pings it receives)

Every other path answers a permessage-deflate offer with no extension; these accept it
(RFC 7692), with the library deflating what it sends and inflating what it gets:

    /deflate                   the library's default settings (those of
                               `compression="deflate"`: context takeover, window bits 12
                               both ways unless the offer asks for less); echoes
    /deflate-no-context        server_no_context_takeover and client_no_context_takeover;
                               echoes
    /deflate-window-bits       server_max_window_bits=10 and client_max_window_bits=10;
                               echoes
    /deflate-fragmented        library defaults; sends the text "compressed one, compressed
                               two, compressed three" deflated in fragments with the ping
                               "between fragments" after the first fragment (the library
                               ends it with an empty final fragment), then the binary
                               00 01 02 03 ff deflated in fragments, then the text "plain
                               after compressed" as one uncompressed frame (RSV1 clear,
                               written by hand: the library deflates every message once
                               the extension is on); reports the pong to the ping, then
                               echoes
    /deflate-large/SIZE        library defaults; sends one text message of SIZE bytes "x",
                               deflated, then echoes
    /deflate-large-coalesced/SIZE
                               the same, the message leaving in one TCP write with the
                               handshake answer (so the client reads both at once)

`--tls CERT KEY` serves wss:// with that certificate chain and key (PEM files).
`--client-ca CA` (with --tls) requires a client certificate signed by the CA of that PEM
file (mutual TLS).

The server exits when its stdin reaches end of file (the test that started it is gone) and
in any case after --lifetime seconds.
"""

import argparse
import asyncio
import json
import os
import ssl
import sys
import threading
import urllib.parse

from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.base import Extension, ServerExtensionFactory
from websockets.extensions.permessage_deflate import (
    ServerPerMessageDeflateFactory,
    enable_server_permessage_deflate,
)
from websockets.frames import Frame, Opcode

PEER_PING_PAYLOAD = b"are you there"


def emit(*parts):
    print(" ".join(str(p) for p in parts), flush=True)


def route_of(connection):
    path = connection.request.path.split("?", 1)[0]
    return [urllib.parse.unquote(p) for p in path.split("/")[1:]]


def select_subprotocol(connection, offered):
    if offered:
        emit("protocols", ",".join(offered))
    route = route_of(connection)
    if len(route) == 2 and route[0] == "protocol" and route[1] in offered:
        return route[1]
    return None


def deflate_factory(name):
    """The permessage-deflate settings of a deflate path, or None to refuse the offer."""
    if name in ("deflate", "deflate-fragmented", "deflate-large", "deflate-large-coalesced"):
        return enable_server_permessage_deflate(None)[0]
    if name == "deflate-no-context":
        return ServerPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True
        )
    if name == "deflate-window-bits":
        return ServerPerMessageDeflateFactory(
            server_max_window_bits=10, client_max_window_bits=10
        )
    return None


class Watched(Extension):
    """Wraps the negotiated extension to note, for each data message, whether its first
    frame had RSV1 set: as it arrived (before inflating) and as it leaves (after
    deflating)."""

    def __init__(self, inner, connection):
        self.inner = inner
        self.name = inner.name
        self.connection = connection

    def decode(self, frame, *, max_size=None):
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.connection.wx_received_rsv1.append(frame.rsv1)
        return self.inner.decode(frame, max_size=max_size)

    def encode(self, frame):
        frame = self.inner.encode(frame)
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
            self.connection.wx_sent_rsv1.append(frame.rsv1)
        return frame


class WatchedFactory(ServerExtensionFactory):
    def __init__(self, inner, connection):
        self.inner = inner
        self.name = inner.name
        self.connection = connection

    def process_request_params(self, params, accepted_extensions):
        response, extension = self.inner.process_request_params(params, accepted_extensions)
        return response, Watched(extension, self.connection)


def how(rsv1_queue):
    """`compressed` or `plain` for the oldest message not reported yet."""
    return "compressed" if rsv1_queue and rsv1_queue.pop(0) else "plain"


def kind_and_length(message):
    if isinstance(message, str):
        return "text", len(message.encode())
    return "binary", len(message)


async def send_reported(ws, message):
    """Sends one message (or the fragments of one) and reports it."""
    await ws.send(message)
    if isinstance(message, (str, bytes)):
        kind, length = kind_and_length(message)
    else:
        parts = [kind_and_length(m) for m in message]
        kind, length = parts[0][0], sum(n for _, n in parts)
    emit("sent", kind, length, how(ws.wx_sent_rsv1))


def coalesce_answer_with_next_write(transport):
    """Holds the next write (the handshake answer) until the one after it, then writes both
    at once."""
    held = []

    def write(data):
        if not held:
            held.append(bytes(data))
        else:
            del transport.write  # the transport's own method again
            transport.write(held[0] + bytes(data))

    transport.write = write


def report_frames_sent(protocol):
    """Reports every frame the library writes from now on (`frame OPCODE FIN LEN`)."""
    send_frame = protocol.send_frame

    def reporting_send_frame(frame):
        opcode = "cont" if frame.opcode is Opcode.CONT else frame.opcode.name.lower()
        emit("frame", opcode, int(frame.fin), len(frame.data))
        send_frame(frame)

    protocol.send_frame = reporting_send_frame


def process_request(connection, request):
    """Runs before the handshake is answered: reports the connection, picks the extensions
    of the path and watches pings from the very first frame on."""
    emit("open", request.path)
    peer = connection.transport.get_extra_info("peercert")
    if peer:
        names = dict(item[0] for item in peer["subject"])
        emit("client_cert", names.get("commonName", "?"))
    name = (route_of(connection) or [""])[0]
    silent = name == "silent"
    connection.wx_received_rsv1 = []
    connection.wx_sent_rsv1 = []
    factory = deflate_factory(name)
    if factory is not None:
        connection.protocol.available_extensions = [WatchedFactory(factory, connection)]
    if name == "deflate-large-coalesced":
        coalesce_answer_with_next_write(connection.transport)
    protocol = connection.protocol
    if name == "fragmented":
        report_frames_sent(protocol)
    recv_frame = protocol.recv_frame

    def watching_recv_frame(frame):
        if frame.opcode is Opcode.PING:
            emit("ping")
            if silent:
                # The library answers every ping itself; a silent peer must not.
                return
        recv_frame(frame)

    protocol.recv_frame = watching_recv_frame
    return None


async def echo(ws):
    async for message in ws:
        emit("received", *kind_and_length(message), how(ws.wx_received_rsv1))
        await send_reported(ws, message)


async def fragmented_with_a_ping(ws):
    pong = []

    async def fragments():
        yield "compressed one, "
        pong.append(await ws.ping(b"between fragments"))
        yield "compressed two, "
        yield "compressed three"

    await ws.send(fragments())
    text = "compressed one, compressed two, compressed three"
    emit("sent", "text", len(text), how(ws.wx_sent_rsv1))
    await send_reported(ws, [b"\x00\x01", b"\x02", b"\x03\xff"])
    # The library deflates every message once the extension is on: the plain one is
    # framed by the library but written past the extension (in order: the sends above
    # are already in the transport's buffer).
    plain = "plain after compressed"
    frame = Frame(Opcode.TEXT, plain.encode())
    ws.transport.write(frame.serialize(mask=False))
    emit("sent", "text", len(plain), "plain")
    await asyncio.wait_for(pong[0], timeout=10)
    emit("pong", "between fragments")


async def handle(ws):
    route = route_of(ws)
    name = route[0] if route else ""
    emit("extensions", ws.response.headers.get("Sec-WebSocket-Extensions", "none"))
    if name == "headers":
        headers = {}
        for key, value in ws.request.headers.raw_items():
            key = key.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        await ws.send(json.dumps(headers, sort_keys=True, separators=(",", ":")))
        await echo(ws)
    elif name == "fragmented":
        pong = []

        async def fragments():
            yield "fragment one, "
            pong.append(await ws.ping(b"between fragments"))
            yield "fragment two, "
            yield "fragment three"

        await ws.send(fragments())
        await ws.send([b"\x00\x01", b"\x02", b"\x03\xff"])
        await asyncio.wait_for(pong[0], timeout=10)
        emit("pong", "between fragments")
        await echo(ws)
    elif name == "ping":
        pong = await ws.ping(PEER_PING_PAYLOAD)
        await asyncio.wait_for(pong, timeout=10)
        emit("pong", PEER_PING_PAYLOAD.decode())
        await echo(ws)
    elif name == "close":
        code = int(route[1])
        reason = route[2] if len(route) > 2 else ""
        await ws.close(code, reason)
    elif name == "drop-mid-message":
        # Header of an unmasked binary frame announcing 100 bytes, then only 10 of them.
        ws.transport.write(bytes([0x82, 100]) + bytes(10))
        ws.transport.close()
    elif name == "silent":
        await ws.wait_closed()
    elif name == "deflate-fragmented":
        await fragmented_with_a_ping(ws)
        await echo(ws)
    elif name in ("deflate-large", "deflate-large-coalesced"):
        await send_reported(ws, "x" * int(route[1]))
        await echo(ws)
    else:
        await echo(ws)


async def handler(ws):
    try:
        await handle(ws)
    except ConnectionClosed:
        pass
    finally:
        await ws.wait_closed()
        received = ws.protocol.close_rcvd
        if received is None:
            emit("closed", "none")
        else:
            emit("closed", int(received.code), received.reason)


def exit_with_parent(lifetime):
    def wait_for_eof():
        try:
            sys.stdin.buffer.read()
        finally:
            os._exit(0)

    threading.Thread(target=wait_for_eof, daemon=True).start()
    timer = threading.Timer(lifetime, lambda: os._exit(0))
    timer.daemon = True
    timer.start()


async def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--client-ca", metavar="CA")
    parser.add_argument("--lifetime", type=float, default=300.0)
    args = parser.parse_args()
    exit_with_parent(args.lifetime)
    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls[0], args.tls[1])
        if args.client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(args.client_ca)
    async with serve(
        handler,
        "127.0.0.1",
        0,
        ssl=context,
        select_subprotocol=select_subprotocol,
        process_request=process_request,
        compression=None,
        ping_interval=None,
        max_size=64 * 2**20,
        close_timeout=5,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(port, flush=True)
        await server.serve_forever()


if __name__ == "__main__":
    sys.stdout.reconfigure(encoding="utf-8")
    asyncio.run(main())
