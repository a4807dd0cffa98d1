#!/usr/bin/env python3
"""A scripted WebSocket server on the Python `websockets` library (server side), for
wxsocket's interop tests (tests/tests/interop.rs).

It listens on 127.0.0.1, port 0, and prints the port as the first line on stdout. After
that it reports what it saw, one event a line on stdout (flushed at once):

    open PATH                  a connection was accepted (PATH includes the query)
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
    /fragmented                sends a text and a binary message in several fragments each,
                               then echoes
    /ping                      pings the client with payload "are you there" and reports
                               the pong, then echoes
    /close/CODE[/REASON]       closes at once with CODE and the URL-decoded REASON
    /drop-mid-message          sends the first bytes of a 100-byte binary frame and drops
                               the TCP connection
    /silent                    answers nothing at all: no echo, no pong (it still reports
                               the pings it receives)

`--tls CERT KEY` serves wss:// with that certificate chain and key (PEM files).

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
from websockets.frames import Opcode

PEER_PING_PAYLOAD = b"are you there"


def emit(*parts):
    print(" ".join(str(p) for p in parts), flush=True)


def route_of(connection):
    path = connection.request.path.split("?", 1)[0]
    return [urllib.parse.unquote(p) for p in path.split("/")[1:]]


def select_subprotocol(connection, offered):
    route = route_of(connection)
    if len(route) == 2 and route[0] == "protocol" and route[1] in offered:
        return route[1]
    return None


def process_request(connection, request):
    """Runs before the handshake is answered: reports the connection and watches pings
    from the very first frame on."""
    emit("open", request.path)
    silent = route_of(connection)[:1] == ["silent"]
    protocol = connection.protocol
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
        await ws.send(message)


async def handle(ws):
    route = route_of(ws)
    name = route[0] if route else ""
    if name == "headers":
        headers = {}
        for key, value in ws.request.headers.raw_items():
            key = key.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        await ws.send(json.dumps(headers, sort_keys=True, separators=(",", ":")))
        await echo(ws)
    elif name == "fragmented":
        await ws.send(["fragment one, ", "fragment two, ", "fragment three"])
        await ws.send([b"\x00\x01", b"\x02", b"\x03\xff"])
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
    parser.add_argument("--lifetime", type=float, default=300.0)
    args = parser.parse_args()
    exit_with_parent(args.lifetime)
    context = None
    if args.tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls[0], args.tls[1])
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
