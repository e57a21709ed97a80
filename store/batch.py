"""Group commit shared by every backend: queued write jobs share one transaction."""
from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from typing import Any

from store.base import Notifier, T, TxFn
from store.models import UserId
from store.sql import Db, SqlTx, Wakeups

log = logging.getLogger(__name__)

MAX_BATCH = 512
Job = tuple[TxFn[Any], "asyncio.Future[Any] | None"]


class BatchingStore(ABC):
    """Runs write jobs one after another inside one transaction per batch.

    Each job gets a savepoint, so a job that fails (a rule said no) leaves nothing
    behind while the others in its batch still commit. Callers are answered, and
    parked polls woken, only after the commit: a reply means the write is durable.
    """

    def __init__(self) -> None:
        self.notifier = Notifier()
        self._queue: deque[Job] = deque()
        self._has_work = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False

    # -- what a backend provides ---------------------------------------------------------
    @abstractmethod
    async def _begin(self) -> Db:
        """Start a write transaction; the connection to run jobs on."""

    @abstractmethod
    async def _savepoint(self) -> None:
        """Open a savepoint for one job."""

    @abstractmethod
    async def _release(self) -> None:
        """Keep the job's work."""

    @abstractmethod
    async def _rollback_to(self) -> None:
        """Undo the job's work."""

    @abstractmethod
    async def _commit(self, wakeups: Wakeups) -> None:
        """Make the batch durable (and tell other processes whom it concerns)."""

    @abstractmethod
    async def _rollback(self) -> None:
        """Abandon the batch after a failed commit."""

    @abstractmethod
    async def read(self, fn: TxFn[T]) -> T:
        """Run `fn` against the latest committed state."""

    async def wake(self, wakeups: Wakeups) -> None:
        """Wake this process's parked polls that a committed write concerns."""
        if not self.notifier:
            return
        if wakeups.chats and not wakeups.everyone:
            for chat_id in wakeups.chats:
                wakeups.users.update(await self._members(chat_id))
        self.notifier.wake(wakeups)

    async def _members(self, chat_id: str) -> list[UserId]:
        return await self.read(lambda tx: tx.member_ids(chat_id))

    # -- the queue -----------------------------------------------------------------------
    def _start_writer(self) -> None:
        self._writer = asyncio.create_task(self._write_loop(), name="store-writer")

    async def _stop_writer(self) -> None:
        self._closing = True
        if self._writer is not None:
            self._has_work.set()
            await self._writer
            self._writer = None

    async def write(self, fn: TxFn[T]) -> T:
        """Queue `fn`; its result once the batch holding it has committed."""
        if self._closing:
            raise RuntimeError("store is closing")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((fn, fut))
        self._has_work.set()
        return await fut

    def write_soon(self, fn: TxFn[None]) -> None:
        """Queue `fn` without waiting for it."""
        if not self._closing:
            self._queue.append((fn, None))
            self._has_work.set()

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._has_work.clear()
                await self._has_work.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
            try:
                await self._run_batch(batch)
            except Exception as exc:  # the database itself failed: fail the whole batch
                log.exception("write batch of %d failed", len(batch))
                for _, fut in batch:
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)

    async def _run_batch(self, batch: list[Job]) -> None:
        outcomes: list[tuple[asyncio.Future[Any] | None, Any, BaseException | None]] = []
        wakeups = Wakeups()
        db = await self._begin()
        try:
            for fn, fut in batch:
                tx = SqlTx(db)
                await self._savepoint()
                try:
                    result = await fn(tx)
                except Exception as exc:  # the job's own failure: undo just this job
                    await self._rollback_to()
                    outcomes.append((fut, None, exc))
                    if fut is None:
                        log.warning("background write failed: %r", exc)
                    continue
                await self._release()
                wakeups.merge(tx.wakeups)
                outcomes.append((fut, result, None))
            await self._commit(wakeups)
        except BaseException:
            await self._rollback()
            raise
        await self.wake(wakeups)
        for fut, result, error in outcomes:
            if fut is None or fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)
