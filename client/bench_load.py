"""The load scenarios of `messenger-bench`: send (or send with wrk), fanout, idle, connect."""
from __future__ import annotations

import asyncio
import math
import os
import shutil
import tempfile
import time
from typing import Any

import aiohttp

from client.api import MessengerClient
from client.bench_common import (
    PASSWORD,
    Meter,
    Target,
    gather_limited,
    ms,
    percentile,
    rss_kib,
)
from client.errors import MessengerError


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
            # wrk counts whole seconds ("-d0s" ran nothing and printed no figures)
            wrk, "-t2", f"-c{senders}", f"-d{max(1, math.ceil(duration))}s", "--latency",
            "-s", script, self.target.url, "--", f.name, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
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
        if "acks_per_s" not in row or "errors" not in row:
            raise SystemExit(f"wrk exited with {proc.returncode} and printed no figures: "
                             f"{(err or out).decode(errors='replace').strip()[-500:]}")
        usage.pop("client_cpu_pct", None)  # wrk is another process
        return {**row, **usage}

    async def fanout(self, pollers: int, users: int, messages: int, interval: float,
                     settle: float | None = None) -> dict[str, Any]:
        """P parked polls in one chat; M sends: latency from each send's reply to each poll.

        `settle`: seconds the polls get to park before the first send (default 1)."""
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
        await asyncio.sleep(1.0 if settle is None else settle)  # let the last polls park
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

    async def idle(self, polls: int, users: int, settle: float | None = None) -> dict[str, Any]:
        """Server memory held by P parked polls.

        `settle`: seconds the polls get to park before the RSS is read (default
        3 + P/2000; a sixth of it, at most 0.5, before the first RSS reading)."""
        wait = 3 + polls / 2000 if settle is None else settle
        clients = await self.users(max(1, min(users, polls)), "i")
        await asyncio.sleep(min(0.5, wait / 6))
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
        await asyncio.sleep(wait)
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
