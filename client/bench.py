"""`messenger-bench`: throughput, fan-out latency, idle memory and connect rate.

It measures a running server (`--server URL`), or starts a fresh `messenger-server` on a
temporary data directory (`--spawn`) and/or the bundled bare-aiohttp floor app
(`--floor`), so both can be compared in one run. Every scenario prints one JSON line and
a readable table; the load generator's own CPU is reported beside the server's so a
reader can see which side was the bottleneck.

The scenarios live beside this module: bench_load.py (send, fanout, idle, connect),
bench_datascale.py and bench_soak.py; bench_common.py has what they share.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

import aiohttp

from client.bench_common import Target
from client.bench_common import free_port as _free_port
from client.bench_common import wait_ready as _wait_ready
from client.bench_datascale import datascale
from client.bench_load import Bench
from client.bench_soak import soak


def spawn_messenger(extra: Sequence[str]) -> Target:
    """A fresh messenger-server on a temporary data directory."""
    workdir = tempfile.mkdtemp(prefix="messenger-bench-")
    port = _free_port()
    # Parked-poll caps are raised so the idle and fan-out scenarios can share sessions
    # (each connect costs one deliberate KDF run; 10,000 of them would take minutes).
    # Every simulated client connects from 127.0.0.1: the per-address caps meant for the
    # open internet (connections, registrations) are raised to the bench's sizes.
    cmd = [sys.executable, "-m", "rpc.server", "--port", str(port), "--data-dir", workdir,
           "--log-level", "WARNING", "--polls-per-user", "100000",
           "--polls-per-session", "100000", "--login-max-failures", "1000000",
           "--max-connections", "30000", "--max-connections-per-address", "30000",
           "--register-limit", "1000000", "--send-limit", "1000000000", *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(
        os.path.join(workdir, "server.log"), "wb"))
    target = Target("messenger", f"http://127.0.0.1:{port}", proc, proc.pid, workdir)
    _wait_ready(target)
    return target


def spawn_floor() -> Target:
    """The bare-aiohttp floor app."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "client.floor", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = Target("floor", f"http://127.0.0.1:{port}", proc, proc.pid)
    _wait_ready(target)
    return target


def table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of result rows."""
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    lines = ["  ".join(k.ljust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r.get(k, "")).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


COMPARE = {"send": ("acks_per_s", "higher"), "fanout": ("p99_ms", "lower"),
           "datascale": ("worst_stall_ms", "lower"), "soak": ("rss_growth_pct", "lower"),
           "idle": ("kib_per_poll", "lower"), "connect": ("connects_per_s", "higher")}


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every requested scenario on every requested target."""
    targets: list[Target] = []
    try:
        if args.floor:
            targets.append(spawn_floor())
        if args.spawn:
            first = spawn_messenger(args.server_arg)
            targets.append(first)
            for _ in range(args.processes - 1):  # one deployment: users spread over all
                more = spawn_messenger(args.server_arg)
                first.more_spawned.append(more)
                first.more_urls.append(more.url)
                first.more_pids.extend(more.pids)
    except BaseException:
        for target in targets:  # e.g. the floor started, then the server failed to
            target.stop(args.stop_wait)
        raise
    if args.server:
        urls = [u.rstrip("/") for u in args.server]
        pids = args.server_pid or []
        targets.append(Target("server", urls[0], pid=pids[0] if pids else None,
                              more_urls=urls[1:], more_pids=pids[1:]))
    if not targets:
        raise SystemExit("nothing to measure: give --server URL, --spawn and/or --floor")
    results: list[dict[str, Any]] = []
    tag = format(int(time.time() * 1000) % 10 ** 8, "x")
    try:
        for scenario in args.scenarios:
            for target in targets:
                if scenario in ("datascale", "soak") and target.name == "floor":
                    continue  # the floor stores nothing: there is no data to scale
                connector = aiohttp.TCPConnector(limit=0)
                async with aiohttp.ClientSession(connector=connector) as http:
                    bench = Bench(target, http, f"{tag}{scenario[0]}{target.name[0]}")
                    if scenario == "send" and args.wrk:
                        row = await bench.send_wrk(args.senders, args.duration)
                    elif scenario == "send":
                        row = await bench.send(args.senders, args.duration)
                    elif scenario == "fanout":
                        row = await bench.fanout(args.pollers, args.users, args.messages,
                                                 args.interval, args.settle)
                    elif scenario == "idle":
                        row = await bench.idle(args.idle_polls, args.users, args.settle)
                    elif scenario == "soak":
                        row = await soak(bench.client, target.pid, bench.tag, target.name,
                                         args.soak_seconds, args.soak_sample)
                    elif scenario == "datascale":
                        row = await datascale(http, target.url, bench.tag, target.name,
                                              tuple(args.datascale_sizes))
                    else:
                        row = await bench.connect(args.connects, args.concurrency)
                print(json.dumps(row), flush=True)
                results.append(row)
            rows = [r for r in results if r["scenario"] == scenario]
            print(table(rows), flush=True)
            by_target = {r["target"]: r for r in rows}
            if "floor" in by_target and "messenger" in by_target:
                key, _ = COMPARE[scenario]
                floor, real = by_target["floor"].get(key), by_target["messenger"].get(key)
                if floor and real is not None:
                    print(f"{scenario}: messenger/floor {key} = {real / floor:.2f}", flush=True)
            print(flush=True)
    finally:
        for target in targets:
            target.stop(args.stop_wait)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `messenger-bench`."""
    p = argparse.ArgumentParser(prog="messenger-bench", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("scenarios", nargs="*", default=["send", "fanout", "idle", "connect"],
                   choices=["send", "fanout", "idle", "connect", "datascale", "soak"],
                   metavar="SCENARIO", help="send, fanout, idle, connect, datascale, soak")
    p.add_argument("--server", action="append",
                   help="measure a running server at this URL; repeat it for several "
                        "processes of one deployment (users are spread over them)")
    p.add_argument("--server-pid", type=int, action="append",
                   help="its PID, to report its CPU and memory (repeat with --server)")
    p.add_argument("--spawn", action="store_true",
                   help="start a fresh messenger-server on a temporary data dir")
    p.add_argument("--processes", type=int, default=1,
                   help="--spawn: server processes on one database (needs --store postgres)")
    p.add_argument("--floor", action="store_true",
                   help="also start the bare-aiohttp floor app and compare")
    p.add_argument("--server-arg", action="append", default=[],
                   help="extra flag for the spawned server (repeatable)")
    p.add_argument("--senders", type=int, default=32, help="send: concurrent senders")
    p.add_argument("--wrk", action="store_true",
                   help="send: generate the load with wrk (client/bench_send.lua)")
    p.add_argument("--duration", type=float, default=10, help="send: seconds")
    p.add_argument("--pollers", type=int, default=1000, help="fanout: parked polls")
    p.add_argument("--users", type=int, default=100,
                   help="fanout/idle: distinct users the polls are spread over")
    p.add_argument("--messages", type=int, default=10, help="fanout: messages sent")
    p.add_argument("--interval", type=float, default=0.2, help="fanout: seconds between sends")
    p.add_argument("--idle-polls", type=int, default=1000, help="idle: parked polls")
    p.add_argument("--connects", type=int, default=64, help="connect: connects")
    p.add_argument("--concurrency", type=int, default=8, help="connect: at once")
    p.add_argument("--datascale-sizes", type=int, nargs="+", default=[1000, 100_000],
                   help="datascale: stored messages at which requests are timed")
    p.add_argument("--soak-seconds", type=float, default=600, help="soak: seconds")
    p.add_argument("--soak-sample", type=float, default=10,
                   help="soak: seconds between RSS and descriptor samples")
    p.add_argument("--settle", type=float, default=None,
                   help="fanout, idle: seconds the polls get to park before measuring "
                        "(default: 1 for fanout, 3 + polls/2000 for idle)")
    p.add_argument("--stop-wait", type=float, default=10,
                   help="seconds a started target gets to exit after SIGTERM before SIGKILL "
                        "(the floor keeps parked polls to their timeout)")
    args = p.parse_args(argv)
    if args.processes < 1:
        p.error("--processes must be at least 1")
    if args.processes > 1 and not any("postgres" in a for a in args.server_arg):
        p.error("several processes share one database: give --server-arg=--store "
                "--server-arg=postgres and its --database-url")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
