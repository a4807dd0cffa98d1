"""The Python `websockets` client of wxsocket-bench's permessage-deflate rows.

Run by `wxsocket_bench::python` (crates/bench/src/python.rs), which reads its stdout:

    python deflate_client.py URL LEVEL WINDOW

stdin: first a JSON array of the payloads (text messages, sent in turn), then one line per
run: a number N (N echoes, at most WINDOW in flight, every echo checked) or `quit`.
stdout: `ready` once connected with permessage-deflate in force, then `rate R` (messages
per second) for each run; `skip REASON` when `websockets` cannot be imported, `error
REASON` on any failure (exit status 1).

The offer is permessage-deflate with context takeover, window 15 both ways and zlib at
LEVEL, memLevel 8 (websockets' default offer asks for a 4 KiB window and memLevel 5,
which compresses less; the Rust clients use window 15 and zlib's default memLevel 8).
"""

import asyncio
import json
import sys
import time

try:
    from websockets.asyncio.client import connect
    from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
    import websockets
except Exception as e:  # noqa: BLE001 - any import failure means the row is skipped
    print(f"skip python websockets not importable: {e}", flush=True)
    sys.exit(0)


async def main():
    url, level, window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    loop = asyncio.get_running_loop()
    readline = lambda: loop.run_in_executor(None, sys.stdin.readline)  # noqa: E731
    payloads = json.loads(await readline())
    factory = ClientPerMessageDeflateFactory(
        server_max_window_bits=15,
        client_max_window_bits=15,
        compress_settings={"level": level, "memLevel": 8},
    )
    async with connect(
        url,
        extensions=[factory],
        compression=None,
        ping_interval=None,
        max_size=None,
        max_queue=window,
    ) as ws:
        if not ws.protocol.extensions:
            raise RuntimeError("permessage-deflate was not agreed")
        print(f"ready websockets {websockets.__version__}", flush=True)
        at = 0
        while True:
            line = (await readline()).strip()
            if line in ("", "quit"):
                return
            n = int(line)
            credits = asyncio.Semaphore(window)

            async def send(start):
                for k in range(n):
                    await credits.acquire()
                    await ws.send(payloads[(start + k) % len(payloads)])

            started = time.perf_counter()
            sender = asyncio.create_task(send(at))
            for k in range(n):
                echo = await ws.recv()
                if echo != payloads[(at + k) % len(payloads)]:
                    raise RuntimeError(f"echo {k} differs from the message sent")
                credits.release()
            await sender
            rate = n / (time.perf_counter() - started)
            at += n
            print(f"rate {rate}", flush=True)


try:
    asyncio.run(main())
except Exception as e:  # noqa: BLE001 - reported to the benchmark, which fails the row
    print(f"error {type(e).__name__}: {e}", flush=True)
    sys.exit(1)
