"""`messenger-bench`: throughput, fan-out latency, idle memory and connect rate.

It measures a running server (`--server URL`), or starts a fresh `messenger-server` on a
temporary data directory (`--spawn`) and/or the bundled bare-aiohttp floor app
(`--floor`), so both can be compared in one run. Every scenario prints one JSON line and
a readable table; the load generator's own CPU is reported beside the server's so a
reader can see which side was the bottleneck.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

import aiohttp

from client.api import MessengerClient
from client.bench_datascale import datascale
from client.bench_soak import soak
from client.errors import MessengerError

CLK_TCK = os.sysconf("SC_CLK_TCK")
PASSWORD = "bench password"


@dataclass
class Target:
    """A server under test: its URL and, when known, its process."""

    name: str
    url: str
    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None
    workdir: str | None = None
    # Several processes of one deployment (PostgreSQL): users are spread over them.
    more_urls: list[str] = field(default_factory=list)
    more_pids: list[int] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        """Every process's URL, the first one first."""
        return [self.url, *self.more_urls]

    @property
    def pids(self) -> list[int]:
        """Every known process id."""
        return [p for p in [self.pid, *self.more_pids] if p is not None]

    def stop(self) -> None:
        """Stop a process we started."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.proc = None
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_ready(target: Target) -> None:
    """Wait until a started target answers; stop it (and clean up) if it never does."""
    proc = target.proc
    assert proc is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            code = proc.returncode
            target.stop()
            raise SystemExit(f"{target.url}: server exited with {code}")
        try:
            with urllib.request.urlopen(target.url + "/openrpc.json", timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    target.stop()
    raise SystemExit(f"{target.url}: server did not start")


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
           "--register-limit", "1000000", *extra]
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


def cpu_seconds(pids: list[int]) -> float | None:
    """CPU time (user + system) the processes have used so far."""
    if not pids:
        return None
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def rss_kib(pid: int | None) -> int | None:
    """Resident memory of a process in KiB."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Meter:
    """Wall time and the CPU share of the generator and the server over a window."""

    pids: list[int]
    wall: float = field(default_factory=time.perf_counter)
    client_cpu: float = field(default_factory=time.process_time)
    server_cpu: float | None = None

    def __post_init__(self) -> None:
        self.server_cpu = cpu_seconds(self.pids)

    def read(self) -> dict[str, Any]:
        """Elapsed seconds and CPU use as % of one core."""
        elapsed = max(time.perf_counter() - self.wall, 1e-6)
        out: dict[str, Any] = {
            "seconds": round(elapsed, 3),
            "client_cpu_pct": round(100 * (time.process_time() - self.client_cpu) / elapsed, 1)}
        now = cpu_seconds(self.pids)
        if now is not None and self.server_cpu is not None:
            out["server_cpu_pct"] = round(100 * (now - self.server_cpu) / elapsed, 1)
        return out


def percentile(values: list[float], pct: float) -> float:
    """The pct-th percentile (nearest rank) of values, 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(pct / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def ms(seconds: float) -> float:
    """Seconds as milliseconds, rounded."""
    return round(seconds * 1000, 1)


async def gather_limited(n: int, make: Callable[[int], Awaitable[Any]],
                         concurrency: int) -> list[Any]:
    """Run make(0..n-1) with at most `concurrency` at once."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Any:
        async with gate:
            return await make(i)

    return await asyncio.gather(*[one(i) for i in range(n)])


class Bench:
    """Scenarios against one target, sharing one HTTP connection pool."""

    def __init__(self, target: Target, http: aiohttp.ClientSession, tag: str) -> None:
        self.target = target
        self.http = http
        self.tag = tag

    def client(self, token: str | None = None, index: int = 0) -> MessengerClient:
        """A library client on the shared pool (the index picks one of several processes)."""
        urls = self.target.urls
        return MessengerClient(urls[index % len(urls)], token=token, session=self.http,
                               request_timeout=120)

    async def users(self, n: int, prefix: str) -> list[MessengerClient]:
        """n freshly registered users (connects run in parallel; each is one KDF run)."""
        async def connect(i: int) -> MessengerClient:
            c = self.client(index=i)
            await c.connect(f"{prefix}{self.tag}_{i}"[:32], PASSWORD, client="bench")
            return c
        result: list[MessengerClient] = await gather_limited(n, connect, 16)
        return result

    async def group(self, owner: MessengerClient, members: list[MessengerClient],
                    names: list[str]) -> str:
        """A group chat of all of them."""
        first = names[:100]
        chat = await owner.create_chat("bench", [n for n in first if n != names[0]])
        chat_id: str = chat["chat"]["chat_id"]
        for name in names[100:]:
            await owner.invite(chat_id, name)
        return chat_id

    async def send(self, senders: int, duration: float) -> dict[str, Any]:
        """C senders post to one group chat for T seconds: acks/s and latency."""
        clients = await self.users(senders, "s")
        names = [f"s{self.tag}_{i}"[:32] for i in range(senders)]
        chat_id = await self.group(clients[0], clients, names)
        latencies: list[float] = []
        errors = 0
        meter = Meter(self.target.pids)
        deadline = time.perf_counter() + duration

        async def sender(c: MessengerClient, i: int) -> None:
            nonlocal errors
            n = 0
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    await c.send(chat_id=chat_id, text=f"bench {i}.{n}")
                except MessengerError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - t0)
                n += 1

        await asyncio.gather(*[sender(c, i) for i, c in enumerate(clients)])
        usage = meter.read()
        return {"scenario": "send", "target": self.target.name, "senders": senders,
                "acks": len(latencies), "errors": errors,
                "acks_per_s": round(len(latencies) / max(usage["seconds"], 0.001), 1),
                "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99)),
                **usage}

    async def send_wrk(self, senders: int, duration: float) -> dict[str, Any]:
        """The send scenario with wrk as the load generator (when Python is the bottleneck)."""
        wrk = shutil.which("wrk")
        if wrk is None:
            raise SystemExit("--wrk needs wrk on PATH (apt-get install wrk)")
        clients = await self.users(senders, "w")
        names = [f"w{self.tag}_{i}"[:32] for i in range(senders)]
        chat_id = await self.group(clients[0], clients, names)
        with tempfile.NamedTemporaryFile("w", suffix=".tokens", delete=False) as f:
            f.write(chat_id + "\n" + "\n".join(c.token or "" for c in clients) + "\n")
        script = os.path.join(os.path.dirname(__file__), "bench_send.lua")
        meter = Meter(self.target.pids)
        proc = await asyncio.create_subprocess_exec(
            wrk, "-t2", f"-c{senders}", f"-d{int(duration)}s", "--latency", "-s", script,
            self.target.url, "--", f.name, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        usage = meter.read()
        os.unlink(f.name)
        text = out.decode()
        row: dict[str, Any] = {"scenario": "send", "target": self.target.name,
                               "generator": "wrk", "senders": senders}
        for line in text.splitlines():
            parts = line.split()
            if line.startswith("Requests/sec:"):
                row["acks_per_s"] = float(parts[1])
            elif parts[:1] == ["50%"]:
                row["p50_ms"] = _wrk_ms(parts[1])
            elif parts[:1] == ["99%"]:
                row["p99_ms"] = _wrk_ms(parts[1])
            elif line.startswith("rpc_errors"):
                row["errors"] = int(parts[1])
        usage.pop("client_cpu_pct", None)  # wrk is another process
        return {**row, **usage}

    async def fanout(self, pollers: int, users: int, messages: int,
                     interval: float) -> dict[str, Any]:
        """P parked polls in one chat; M sends: latency from each send's reply to each poll."""
        users = max(2, min(users, pollers + 1))
        clients = await self.users(users, "f")
        names = [f"f{self.tag}_{i}"[:32] for i in range(users)]
        chat_id = await self.group(clients[0], clients, names)
        sender, listeners = clients[0], clients[1:]
        replied: dict[str, float] = {}
        received: dict[str, list[float]] = {}
        parked = 0
        stop = asyncio.Event()

        async def poller(c: MessengerClient) -> None:
            nonlocal parked
            body = await c.poll(timeout=0, limit=1000)
            while body["more"] or body["events"]:
                body = await c.poll(body["cursor"], timeout=0, limit=1000)
            cursor = body["cursor"]
            parked += 1
            while not stop.is_set():
                try:
                    body = await c.poll(cursor, timeout=30, limit=1000)
                except MessengerError:
                    return
                now = time.perf_counter()
                for e in body["events"]:
                    if e["type"] == "message":
                        received.setdefault(e["message"]["message_id"], []).append(now)
                cursor = body["cursor"]

        tasks = [asyncio.create_task(poller(listeners[i % len(listeners)]))
                 for i in range(pollers)]
        while parked < pollers:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # let the last polls park on the server
        meter = Meter(self.target.pids)
        for i in range(messages):
            r = await sender.send(chat_id=chat_id, text=f"fanout {i}")
            replied[r["message"]["message_id"]] = time.perf_counter()
            await asyncio.sleep(interval)
        deadline = time.perf_counter() + 10
        while time.perf_counter() < deadline and sum(
                len(received.get(m, [])) for m in replied) < pollers * messages:
            await asyncio.sleep(0.05)
        usage = meter.read()
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        latencies = [t - replied[m] for m in replied for t in received.get(m, [])]
        delivered = len(latencies) / (pollers * messages)
        return {"scenario": "fanout", "target": self.target.name, "pollers": pollers,
                "users": users, "messages": messages, "delivered": round(delivered, 4),
                "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99)),
                "max_ms": ms(max(latencies, default=0.0)), **usage}

    async def idle(self, polls: int, users: int) -> dict[str, Any]:
        """Server memory held by P parked polls."""
        clients = await self.users(max(1, min(users, polls)), "i")
        await asyncio.sleep(0.5)
        before = rss_kib(self.target.pid)
        answered = 0

        async def park(c: MessengerClient) -> None:
            nonlocal answered
            try:
                # Catch up first: a poll parks only when nothing is waiting after its cursor.
                body = await c.poll(timeout=0, limit=1000)
                while body["more"] or body["events"]:
                    body = await c.poll(body["cursor"], timeout=0, limit=1000)
                await c.poll(cursor=body["cursor"], timeout=60)
                answered += 1
            except MessengerError:
                answered += 1

        tasks = [asyncio.create_task(park(clients[i % len(clients)])) for i in range(polls)]
        await asyncio.sleep(3 + polls / 2000)
        after = rss_kib(self.target.pid)
        held = polls - answered
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        out: dict[str, Any] = {"scenario": "idle", "target": self.target.name, "polls": polls,
                               "held": held}
        if before is not None and after is not None:
            out.update(rss_before_kib=before, rss_after_kib=after,
                       kib_per_poll=round((after - before) / polls, 2))
        return out

    async def connect(self, count: int, concurrency: int) -> dict[str, Any]:
        """Connects per second (each runs the password KDF once)."""
        meter = Meter(self.target.pids)
        latencies: list[float] = []

        async def one(i: int) -> None:
            t0 = time.perf_counter()
            c = self.client(index=i)
            await c.connect(f"c{self.tag}_{i}"[:32], PASSWORD)
            latencies.append(time.perf_counter() - t0)

        await gather_limited(count, one, concurrency)
        usage = meter.read()
        return {"scenario": "connect", "target": self.target.name, "connects": count,
                "connects_per_s": round(count / max(usage["seconds"], 0.001), 1),
                "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99)),
                **usage}


def _wrk_ms(text: str) -> float:
    """wrk's latency ("512.00us", "3.21ms", "1.02s") in milliseconds."""
    for suffix, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(suffix):
            return round(float(text[: -len(suffix)]) * factor, 2)
    return float(text)


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
            targets.append(spawn_messenger(args.server_arg))
    except BaseException:
        for target in targets:  # e.g. the floor started, then the server failed to
            target.stop()
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
                                                 args.interval)
                    elif scenario == "idle":
                        row = await bench.idle(args.idle_polls, args.users)
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
            target.stop()
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
    args = p.parse_args(argv)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
