"""The `soak` benchmark: a mixed load for a long time; do memory and descriptors stay flat?

Senders post to a group chat, pollers follow it, a connector logs in and out again and again,
an uploader uploads and attaches small files, and a reader pages history. Every `--sample`
seconds the server's RSS and open file descriptors are read from /proc; growth is measured
from the end of the warm-up (the first fifth of the run) to the end.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from client.api import MessengerClient
from client.bench_common import PASSWORD, rss_kib
from client.errors import MessengerError


def open_fds(pid: int | None) -> int | None:
    """Open file descriptors of a process."""
    if pid is None:
        return None
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


async def soak(make_client: Any, pid: int | None, tag: str, target: str, duration: float,
               sample: float, senders: int = 8, pollers: int = 50) -> dict[str, Any]:
    """Run the mixed load for `duration` seconds; RSS and fd growth after warm-up."""
    async def login(name: str) -> MessengerClient:
        c: MessengerClient = make_client()
        await c.connect(name[:32], PASSWORD, client="soak")
        return c

    writers = [await login(f"ks{tag}_{i}") for i in range(senders)]
    readers = [await login(f"kr{tag}_{i}") for i in range(4)]
    names = [f"kr{tag}_{i}"[:32] for i in range(4)]
    names += [f"ks{tag}_{i}"[:32] for i in range(1, senders)]
    chat = await writers[0].create_chat("soak", names)
    chat_id = chat["chat"]["chat_id"]
    counts = {"sends": 0, "polled": 0, "connects": 0, "uploads": 0, "pages": 0, "errors": 0}
    deadline = time.monotonic() + duration
    samples: list[tuple[float, int | None, int | None]] = []

    async def sender(c: MessengerClient, i: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            try:
                await c.send(chat_id=chat_id, text=f"soak {i}.{n}")
                counts["sends"] += 1
            except MessengerError:
                counts["errors"] += 1
            n += 1
            await asyncio.sleep(0.01)

    async def poller(c: MessengerClient) -> None:
        body = await c.poll(timeout=0, limit=1000)
        cursor = body["cursor"]
        while time.monotonic() < deadline:
            try:
                body = await c.poll(cursor, timeout=5, limit=1000)
            except MessengerError:
                counts["errors"] += 1
                await asyncio.sleep(0.5)
                continue
            counts["polled"] += len(body["events"])
            cursor = body["cursor"]

    async def connector() -> None:
        n = 0
        while time.monotonic() < deadline:
            try:
                c = await login(f"kc{tag}_{n % 20}")
                await c.disconnect()
                await c.close()
                counts["connects"] += 1
            except MessengerError:
                counts["errors"] += 1
            n += 1
            await asyncio.sleep(0.2)

    async def uploader(c: MessengerClient) -> None:
        n = 0
        while time.monotonic() < deadline:
            try:
                f = await c.upload(os.urandom(32 * 1024), name=f"soak{n}.bin")
                await c.send(chat_id=chat_id, text="file", attachments=[f["file_id"]])
                counts["uploads"] += 1
            except MessengerError:
                counts["errors"] += 1
            n += 1
            await asyncio.sleep(0.5)

    async def pager(c: MessengerClient) -> None:
        while time.monotonic() < deadline:
            try:
                await c.history(chat_id, limit=50)
                counts["pages"] += 1
            except MessengerError:
                counts["errors"] += 1
            await asyncio.sleep(0.1)

    async def sampler() -> None:
        start = time.monotonic()
        while time.monotonic() < deadline:
            samples.append((time.monotonic() - start, rss_kib(pid), open_fds(pid)))
            await asyncio.sleep(sample)
        samples.append((time.monotonic() - start, rss_kib(pid), open_fds(pid)))

    tasks = [sender(c, i) for i, c in enumerate(writers)]
    tasks += [poller(readers[i % len(readers)]) for i in range(pollers)]
    tasks += [connector(), uploader(writers[0]), pager(readers[0]), sampler()]
    await asyncio.gather(*tasks)
    row: dict[str, Any] = {"scenario": "soak", "target": target, "seconds": duration, **counts}
    warm = [s for s in samples if s[0] >= duration / 5]
    if pid is not None and len(warm) >= 2 and warm[0][1] and warm[-1][1]:
        first, last = warm[0], warm[-1]
        row.update(rss_warm_kib=first[1], rss_end_kib=last[1],
                   rss_growth_pct=round(100 * ((last[1] or 0) - (first[1] or 0))
                                        / (first[1] or 1), 1),
                   rss_max_kib=max(s[1] or 0 for s in warm),
                   fds_warm=first[2], fds_end=last[2],
                   fds_growth_pct=round(100 * ((last[2] or 0) - (first[2] or 0))
                                        / max(first[2] or 1, 1), 1))
    for c in writers + readers:
        await c.close()
    return row
