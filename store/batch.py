"""Group commit shared by every backend: queued write jobs share one transaction."""
from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from typing import Any

from store.base import Health, Notifier, StoreError, T, TxFn
from store.models import EventRecord, UserId
from store.sql import Db, Row, SqlTx, Wakeups

log = logging.getLogger(__name__)

MAX_BATCH = 512
Job = tuple[TxFn[Any], "asyncio.Future[Any] | None"]


class _NeedsSavepoints(Exception):
    """A job failed after writing: the batch was rolled back, to run again carefully."""


class WriteWatch:
    """A `Db` that notes whether a job has written anything (any statement but a SELECT)."""

    __slots__ = ("db", "dialect", "wrote")

    def __init__(self, db: Db) -> None:
        self.db = db
        self.dialect = db.dialect
        self.wrote = False

    def _note(self, sql: str) -> None:
        if not self.wrote and not sql.lstrip()[:6].upper() == "SELECT":
            self.wrote = True

    async def fetchall(self, sql: str, *args: object) -> list[Row]:
        """All rows of a query."""
        self._note(sql)
        return await self.db.fetchall(sql, *args)

    async def fetchone(self, sql: str, *args: object) -> Row | None:
        """The first row of a query, or None."""
        self._note(sql)
        return await self.db.fetchone(sql, *args)

    async def execute(self, sql: str, *args: object) -> int:
        """Run a statement (counted as a write, whatever it is)."""
        self.wrote = True
        return await self.db.execute(sql, *args)


class BatchingStore(ABC):
    """Runs write jobs one after another inside one transaction per batch.

    A job that fails (a rule said no) leaves nothing behind while the others in its batch
    still commit. Savepoints cost a round trip each, so a batch first runs without them:
    a job failing before its first write leaves nothing to undo. Should a job fail after
    writing (or on a database error, which aborts a PostgreSQL transaction), the batch is
    rolled back and run again with a savepoint per job. Callers are answered, and parked
    polls woken, only after the commit: a reply means the write is durable.
    """

    def __init__(self) -> None:
        self.notifier = Notifier()
        self.health = Health()
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

    def _failure(self, exc: BaseException) -> BaseException:
        """A driver's exception as the store error callers get (noting it in `health`)."""
        return exc

    def _driver_error(self, exc: BaseException) -> bool:
        """Whether `exc` came from the database driver (the transaction may be unusable)."""
        return True

    def _retryable(self, exc: BaseException) -> bool:
        """Whether a failed batch certainly did not commit and may simply run again
        (a backend also forgets a connection that died here)."""
        return False

    async def wake(self, wakeups: Wakeups) -> None:
        """Wake this process's parked polls that a committed write concerns."""
        for session in wakeups.ended:
            self.notifier.end_session(session)
        wakeups.ended = set()
        if not self.notifier:
            return
        if wakeups.chats and not wakeups.everyone:
            try:
                for chat_id in wakeups.chats:
                    wakeups.users.update(await self._members(chat_id))
            except Exception as exc:  # members unknown: everyone here re-reads instead
                if not isinstance(self._failure(exc), StoreError):
                    log.exception("resolving whom to wake failed")
                wakeups.everyone = True
        self.notifier.wake(wakeups)

    async def read_events(self, user_id: UserId, after: int, limit: int,
                          now: float) -> list[EventRecord]:
        """The user's events after `after`, oldest first (see `SqlTx.read_events`)."""
        return await self.read(lambda tx: tx.read_events(user_id, after, limit, now))

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
            await self._run_with_retry(batch)

    async def _run_with_retry(self, batch: list[Job]) -> None:
        """Run a batch; once more if its connection died before it could commit."""
        careful = False
        attempt = 0
        while True:
            try:
                await self._run_batch(batch, careful)
                return
            except _NeedsSavepoints:  # rolled back: nothing written; again, job by job
                careful = True
                continue
            except Exception as exc:  # the database itself failed: fail the whole batch
                retryable = self._retryable(exc)
                if attempt == 0 and retryable:
                    log.info("write batch of %d lost its connection; running it again",
                             len(batch))
                    attempt += 1
                    continue
                error = self._failure(exc)
                if not isinstance(error, StoreError):
                    log.exception("write batch of %d failed", len(batch))
                for _, fut in batch:
                    if fut is not None and not fut.done():
                        fut.set_exception(error)
                return

    async def _run_batch(self, batch: list[Job], careful: bool = False) -> None:
        outcomes: list[tuple[asyncio.Future[Any] | None, Any, BaseException | None]] = []
        wakeups = Wakeups()
        db = await self._begin()
        try:
            for fn, fut in batch:
                if careful:
                    tx = SqlTx(db)
                    await self._savepoint()
                    try:
                        result = await fn(tx)
                    except Exception as exc:  # the job's own failure: undo just this job
                        await self._rollback_to()
                        outcomes.append((fut, None, self._failure(exc)))
                        continue
                    await self._release()
                else:
                    watched = WriteWatch(db)
                    tx = SqlTx(watched)
                    try:
                        result = await fn(tx)
                    except Exception as exc:
                        if watched.wrote or self._driver_error(exc):
                            raise _NeedsSavepoints() from exc
                        outcomes.append((fut, None, self._failure(exc)))  # nothing to undo
                        continue
                wakeups.merge(tx.wakeups)
                outcomes.append((fut, result, None))
            await self._commit(wakeups)
        except BaseException:
            await self._rollback()
            raise
        # Committed: answer the callers first, so nothing after this point (such as the
        # read that resolves whom to wake) can turn a durable write into a reported failure.
        for fut, result, error in outcomes:
            if fut is None:
                if error is not None and not isinstance(error, StoreError):
                    log.warning("background write failed: %r", error)
            elif fut.done():
                continue
            elif error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)
        try:
            await self.wake(wakeups)
        except Exception:  # never let it look like the (committed) batch failed
            log.exception("waking polls after a commit failed")
            everyone = Wakeups()
            everyone.everyone = True
            self.notifier.wake(everyone)
