#!/usr/bin/env python3
"""The SOCKS5 proxy of wxsocket's interop tests (tests/tests/interop.rs): `pproxy`
(https://github.com/qwj/python-proxy, pinned in requirements.txt), run as its own command
line runs it, with a lifetime like the other peers'.

    socks5_proxy.py [--lifetime SECONDS] PPROXY-ARGUMENTS...

e.g. `socks5_proxy.py --lifetime 120 -l 'socks5://127.0.0.1:0#alice:pw' -v --auth 0`.
Everything after the lifetime goes to pproxy's `main` unchanged, so what answers the client
is pproxy's own SOCKS5 code. Its output is line-buffered: its first line is
`Serving on ... 127.0.0.1:PORT by socks5`, printed once it listens (port 0: the system
picks one); with `-v`, one line per tunnel it opens (`socks5 CLIENT -> HOST:PORT`) and
per client it turns away (`Unauthorized SOCKS ...`).

The proxy exits when its stdin reaches end of file (the test that started it is gone) and
in any case after --lifetime seconds (default 120).
"""

import os
import sys
import threading


def main():
    args = sys.argv[1:]
    lifetime = 120.0
    if args[:1] == ["--lifetime"]:
        lifetime = float(args[1])
        args = args[2:]
    sys.stdout.reconfigure(line_buffering=True)

    def exit_at_eof():
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=exit_at_eof, daemon=True).start()
    threading.Timer(lifetime, os._exit, (0,)).start()

    from pproxy.server import main as pproxy_main

    pproxy_main(args)
    os._exit(0)


if __name__ == "__main__":
    main()
