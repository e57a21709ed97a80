"""Concurrent reads of many requests answered by few queries.

A commit that concerns a thousand parked polls wakes them all in one loop iteration, and
each asks for its events after its cursor. Asked one by one, that is a thousand queries
through a pool of a few connections. Here the asks that arrive while no query has started
yet join one batch: identical asks (same user, cursor and limit) share one answer, and
the distinct ones go to the database together (one round trip, one snapshot).

Correctness: an ask only ever joins a batch whose query has not started, so the answer
reflects every commit before the ask (a poll that was woken reads after the wake).
The same holds for the session lookups of those polls' next requests.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Generic, Hashable, Sequence, TypeVar

from store.models import EventRecord, UserId

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
Ask = tuple[UserId, int, int]  # user, after, limit

MAX_ASKS = 500  # distinct asks per query
MAX_QUERIES = 2  # batch queries running at once (the pool serves other reads too)


class _Batch(Generic[K, V]):
    __slots__ = ("asks", "now", "closed")

    def __init__(self, now: float) -> None:
        self.asks: dict[K, asyncio.Future[V]] = {}
        self.now = now
        self.closed = False  # its query has started (or it is full): no more joiners


def _retrieve(fut: asyncio.Future[V]) -> None:
    """Mark a failed future's error as seen (every asker may have gone meanwhile)."""
    if not fut.cancelled():
        fut.exception()


class Coalescer(Generic[K, V]):
    """Batches and deduplicates asks; `run_many` answers one batch's asks in order."""

    def __init__(self, run_many: Callable[[Sequence[K], float], Awaitable[list[V]]]) -> None:
        self._run_many = run_many
        self._open: _Batch[K, V] | None = None
        self._slots = asyncio.Semaphore(MAX_QUERIES)
        self._tasks: set[asyncio.Task[None]] = set()
        self.queries = 0  # batch queries run (for tests and benchmarks)
        self.asks = 0  # asks answered

    async def ask(self, ask: K, now: float = 0.0) -> V:
        """The answer to `ask`, from a query that starts after this call."""
        batch = self._open
        if batch is None or batch.closed or len(batch.asks) >= MAX_ASKS:
            if batch is not None:
                batch.closed = True
            batch = self._open = _Batch[K, V](now)
            task = asyncio.create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        batch.now = max(batch.now, now)  # nothing expired by the latest asker's clock
        fut = batch.asks.get(ask)
        if fut is None:
            fut = batch.asks[ask] = asyncio.get_running_loop().create_future()
            fut.add_done_callback(_retrieve)
        self.asks += 1
        # shield: one asker giving up (its poll was cancelled) must not cancel the others'.
        return await asyncio.shield(fut)

    async def _run(self, batch: _Batch[K, V]) -> None:
        try:
            async with self._slots:
                batch.closed = True  # from here on, asks go to a new batch
                if self._open is batch:
                    self._open = None
                asks = list(batch.asks)
                self.queries += 1
                results = await self._run_many(asks, batch.now)
        except BaseException as exc:
            for fut in batch.asks.values():
                if not fut.done():
                    if isinstance(exc, Exception):
                        fut.set_exception(exc)
                    else:
                        fut.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for ask, result in zip(asks, results):
            fut = batch.asks[ask]
            if not fut.done():
                fut.set_result(result)

    async def close(self) -> None:
        """Wait for the queries under way."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class EventReads(Coalescer[Ask, list[EventRecord]]):
    """`read_events` asks of concurrent polls."""

    async def read(self, user_id: UserId, after: int, limit: int,
                   now: float) -> list[EventRecord]:
        """The user's events after `after` (at most `limit`), as `SqlTx.read_events`."""
        return await self.ask((user_id, after, limit), now)
