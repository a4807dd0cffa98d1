#!/usr/bin/env python3
"""Runs the Autobahn TestSuite client cases (kosoku's fuzzing server) against one wxsocket
adapter's echo client, prints the summary, and exits non-zero on a failure.

    autobahn.py CLIENT ADAPTER [--quick] [--include CASE]... [--report FILE]

CLIENT is the echo client binary (tests/src/bin/autobahn_client.rs), ADAPTER `tokio` or
`blocking`. The fuzzing server listens on 127.0.0.1, on a port the system picks, only for
the run; it is stopped when the run ends, whatever happens (and the client is killed if it
is still running).

Every case runs unless --quick or --include narrows the run. --quick (what CI runs) keeps
sections 1 to 10 whole (there is no section 8) and, of the compression sections 12 and
13, each group's cases 1 to 6 (1000 messages of 16 bytes to 8 KiB) and 11 (8 KiB messages
auto-fragmented to 256 bytes): the other cases repeat those with 16 to 128 KiB messages
and take most of the whole suite's time.

A run fails when a case is FAILED or could not be run (ERROR), when its closing handshake
is judged anything but OK or INFORMATIONAL, or when a case is UNIMPLEMENTED that is not in
EXPECTED_UNIMPLEMENTED (none is: the default offer list makes every compression case run).
NON-STRICT and INFORMATIONAL verdicts are allowed and counted; the NON-STRICT ones are
listed.
"""

import argparse
import asyncio
import collections
import faulthandler
import json
import os
import resource
import sys
import time

from kosoku import FailureError, run_fuzzingserver

# Cases not run. None: kosoku 0.1.0 hands an uncompressed echo in the compression cases to
# the case file as a `str` (latin-1 for binary), which breaks the first case of each group
# (16-byte messages) for a client that sends short messages uncompressed; the echo client
# compresses every message instead (tests/src/bin/autobahn_client.rs), so they all run.
EXCLUDED: list = []

# The cases of each compression group that --quick keeps.
QUICK_COMPRESSION_CASES = [1, 2, 3, 4, 5, 6, 11]

# Cases allowed to be UNIMPLEMENTED (a new one fails the run).
EXPECTED_UNIMPLEMENTED: list = []

VERDICTS = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR"]
GOOD_CLOSE = {"OK", "INFORMATIONAL"}


def case_key(case_id):
    return tuple(int(p) for p in case_id.split("."))


# Longest whole run (the full suite takes minutes): past it the run fails instead of hanging.
RUN_LIMIT = 40 * 60
# How long the server may take to hand over the results once the client is done.
RESULT_GRACE = 60


async def run(client, adapter, include):
    """Returns (results, the client's exit status, seconds); results is None when the
    server gave none (the client died, or a limit passed)."""
    async with run_fuzzingserver(include, EXCLUDED or None, host="127.0.0.1", port=0) as server:
        url = f"ws://{server.address}:{server.port}"
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(client, adapter, url)

        async def result():
            try:
                return await server.get_result()
            except FailureError as failure:
                return failure.results

        results_task = asyncio.ensure_future(result())
        exited = asyncio.ensure_future(proc.wait())
        try:
            done, _ = await asyncio.wait(
                {results_task, exited}, timeout=RUN_LIMIT, return_when=asyncio.FIRST_COMPLETED
            )
            if results_task not in done and exited in done:
                # The client is done (or died): the results follow at once, or never.
                await asyncio.wait({results_task}, timeout=RESULT_GRACE)
            results = results_task.result() if results_task.done() else None
            if results is not None:
                await asyncio.wait_for(exited, timeout=RESULT_GRACE)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            results_task.cancel()
        return results, proc.returncode, time.monotonic() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("client")
    parser.add_argument("adapter", choices=["tokio", "blocking"])
    parser.add_argument("--quick", action="store_true", help="the selection CI runs")
    parser.add_argument("--include", action="append", metavar="CASE")
    parser.add_argument("--report", metavar="FILE", help="write every case's verdicts as JSON")
    args = parser.parse_args()

    include = args.include
    if args.quick:
        include = (include or []) + [f"{n}.*" for n in (1, 2, 3, 4, 5, 6, 7, 9, 10)] + [
            f"{section}.{group}.{case}"
            for section, groups in [(12, 5), (13, 7)]
            for group in range(1, groups + 1)
            for case in QUICK_COMPRESSION_CASES
        ]
    results, client_code, seconds = asyncio.run(run(args.client, args.adapter, include))
    agent = f"wxsocket-{args.adapter}"
    if results is None:
        print(
            f"autobahn: {agent}: no results after {seconds:.0f} s "
            f"(the echo client exited with status {client_code})",
            file=sys.stderr,
        )
        return 1
    results = sorted(results, key=lambda r: case_key(r.case_id))
    counts = collections.Counter(r.behavior.value for r in results)
    problems = []
    non_strict = []
    for r in results:
        behavior, close = r.behavior.value, r.behavior_close.value
        if behavior in ("FAILED", "ERROR"):
            problems.append(f"{r.case_id} {behavior}: {r.result}")
        elif behavior == "UNIMPLEMENTED" and r.case_id not in EXPECTED_UNIMPLEMENTED:
            problems.append(f"{r.case_id} UNIMPLEMENTED (new): {r.result}")
        if close not in GOOD_CLOSE:
            problems.append(f"{r.case_id} close {close}: {r.result_close}")
        if behavior == "NON-STRICT":
            non_strict.append(r.case_id)
    if client_code != 0:
        problems.append(f"the echo client exited with status {client_code}")

    summary = " / ".join(f"{v} {counts.get(v, 0)}" for v in VERDICTS)
    cpu = {
        who: resource.getrusage(which).ru_utime + resource.getrusage(which).ru_stime
        for who, which in [("runner", resource.RUSAGE_SELF), ("client", resource.RUSAGE_CHILDREN)]
    }
    print(
        f"autobahn: {agent}: {len(results)} cases in {seconds:.1f} s "
        f"(CPU: runner {cpu['runner']:.1f} s, client {cpu['client']:.1f} s): {summary}"
    )
    if EXCLUDED:
        print(f"autobahn: {agent}: excluded: {' '.join(EXCLUDED)}")
    if non_strict:
        print(f"autobahn: {agent}: NON-STRICT: {' '.join(non_strict)}")
    informational = [r.case_id for r in results if r.behavior.value == "INFORMATIONAL"]
    if informational:
        print(f"autobahn: {agent}: INFORMATIONAL: {' '.join(informational)}")
    if args.report:
        with open(args.report, "w") as f:
            json.dump(
                {
                    r.case_id: {
                        "behavior": r.behavior.value,
                        "behaviorClose": r.behavior_close.value,
                        "result": r.result,
                        "resultClose": r.result_close,
                        "duration_ms": r.duration,
                    }
                    for r in results
                },
                f,
                indent=1,
            )
    for p in problems:
        print(f"autobahn: {agent}: {p}", file=sys.stderr)
    return 1 if problems or not results else 0


if __name__ == "__main__":
    # A crash of the server's native code shows where each thread was.
    faulthandler.enable()
    code = main()
    # Once the verdicts are printed (the server stopped long before), leave without the
    # interpreter's finalization: in one CI run (2026-12-07) the process aborted there, after
    # both summaries were printed with nothing wrong, and failed the step. kosoku's native
    # extension still has threads of its own at that point.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
