"""The `datascale` benchmark: does a request's cost stay flat as stored data grows?

One writer fills a group chat with messages that one reader never reads; at each size
(1,000 and then 100,000 messages by default, in the same run) the reader times
`session.status`, a backlog poll (no cursor: everything unacknowledged), the newest page of
`messages.history` and, where the server has it, `messages.search` for a word that every
message contains; the writer times 8 sends made at once (each with its `client_msg_id`, as
the client library sends them, and so do the fillers; sends made at once may share one write
batch). Meanwhile a pinger fetches `/openrpc.json` every 10 ms: its worst wait is the longest
the event loop was stalled for everybody else.
"""
from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from client.api import new_client_msg_id
from client.bench_common import PASSWORD

BATCH = 100  # sends per JSON-RPC batch while seeding (the server's default --max-batch)
REPEAT = 15  # timed calls per request kind and size
SENDS_AT_ONCE = 8  # concurrent sends in one timed "send"


@dataclass
class Pinger:
    """Fetches a cheap page every `interval` seconds and keeps the worst latency seen."""

    http: aiohttp.ClientSession
    url: str
    interval: float = 0.01
    worst: float = 0.0
    samples: list[float] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            t0 = time.perf_counter()
            async with self.http.get(self.url + "/openrpc.json") as resp:
                await resp.read()
            took = time.perf_counter() - t0
            self.samples.append(took)
            self.worst = max(self.worst, took)
            await asyncio.sleep(self.interval)

    def reset(self) -> None:
        """Forget what was seen so far (seeding is not what is being measured)."""
        self.worst = 0.0
        self.samples.clear()

    def start(self) -> None:
        """Begin pinging."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop pinging."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


class RawClient:
    """Just enough JSON-RPC for seeding in batches and timing single calls."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.token: str | None = None
        self._ids = 0

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        """One call; its result, or RuntimeError with the error."""
        self._ids += 1
        body = {"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params or {}}
        async with self.http.post(self.url + "/rpc", data=orjson.dumps(body),
                                  headers=self._headers()) as resp:
            doc = orjson.loads(await resp.read())
        if "error" in doc:
            raise RuntimeError(f"{method}: {doc['error']}")
        return doc["result"]

    async def batch(self, calls: list[tuple[str, dict[str, Any]]]) -> int:
        """A batch of calls; how many failed."""
        body = []
        for method, params in calls:
            self._ids += 1
            body.append({"jsonrpc": "2.0", "id": self._ids, "method": method, "params": params})
        async with self.http.post(self.url + "/rpc", data=orjson.dumps(body),
                                  headers=self._headers()) as resp:
            doc = orjson.loads(await resp.read())
        answers = doc if isinstance(doc, list) else [doc]
        return sum(1 for a in answers if "error" in a)

    async def poll_backlog(self) -> int:
        """GET /poll without a cursor: the unacknowledged backlog's first page (moves nothing)."""
        async with self.http.get(self.url + "/poll", params={"timeout": "0", "limit": "100"},
                                 headers=self._headers()) as resp:
            doc = orjson.loads(await resp.read())
        return len(doc["events"])


async def _timed(make: Any, repeat: int = REPEAT) -> float:
    """Median seconds of `repeat` sequential awaits of make()."""
    took = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await make()
        took.append(time.perf_counter() - t0)
    return statistics.median(took)


async def datascale(http: aiohttp.ClientSession, url: str, tag: str, target: str,
                    sizes: tuple[int, ...] = (1000, 100_000)) -> dict[str, Any]:
    """Seed one chat up to each size and time the reader's requests at each; ratios last."""
    writer, reader = RawClient(http, url), RawClient(http, url)
    names = (f"dw{tag}"[:32], f"dr{tag}"[:32])
    for client, name in zip((writer, reader), names):
        result = await client.call("session.connect", {"username": name, "password": PASSWORD})
        client.token = result["token"]
    chat = await writer.call("chats.create", {"title": "datascale", "members": [names[1]]})
    chat_id = chat["chat"]["chat_id"]
    discover = await reader.call("rpc.discover")
    has_search = any(m["name"] == "messages.search" for m in discover["methods"])
    pinger = Pinger(http, url)
    pinger.start()
    row: dict[str, Any] = {"scenario": "datascale", "target": target}
    stored = 0
    seed_errors = 0
    try:
        for size in sizes:
            t0 = time.perf_counter()
            while stored < size:
                n = min(BATCH, size - stored)
                seed_errors += await writer.batch([
                    ("messages.send", {"chat_id": chat_id,
                                       "text": f"datascale filler number {stored + i} here",
                                       "client_msg_id": f"{tag}-{stored + i}"[-64:]})
                    for i in range(n)])
                stored += n
            row[f"seed_{size}_s"] = round(time.perf_counter() - t0, 1)
            await asyncio.sleep(1.0)  # let background work (checkpoints) settle
            pinger.reset()
            timings = {
                "status": await _timed(lambda: reader.call("session.status")),
                "backlog_poll": await _timed(reader.poll_backlog),
                "history": await _timed(lambda: reader.call(
                    "messages.history", {"chat_id": chat_id, "limit": 50})),
            }
            if has_search:
                timings["search"] = await _timed(lambda: reader.call(
                    "messages.search", {"query": "filler", "chat_id": chat_id, "limit": 20}))
            timings["send"] = await _timed(lambda: asyncio.gather(*[
                writer.call("messages.send", {"chat_id": chat_id, "text": "timed send",
                                              "client_msg_id": new_client_msg_id()})
                for _ in range(SENDS_AT_ONCE)]))
            for kind, seconds in timings.items():
                row[f"{kind}_{size}_ms"] = round(seconds * 1000, 2)
            row[f"stall_{size}_ms"] = round(pinger.worst * 1000, 1)
    finally:
        await pinger.stop()
    small, large = sizes[0], sizes[-1]
    for kind in ("status", "backlog_poll", "history", "search", "send"):
        a, b = row.get(f"{kind}_{small}_ms"), row.get(f"{kind}_{large}_ms")
        if a and b is not None:
            row[f"{kind}_ratio"] = round(b / a, 2)
    row["worst_stall_ms"] = max(row[f"stall_{s}_ms"] for s in sizes)
    row["seed_errors"] = seed_errors
    return row
