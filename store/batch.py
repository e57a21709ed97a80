"""Group commit shared by every backend: queued write jobs share one transaction."""
from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections import deque
from typing import Any, Sequence

from store.base import Health, Notifier, StoreError, T, TxFn
from store.models import EventRecord, Session, UserId
from store.sql import Db, DeferredSends, Row, SendKey, SqlTx, Wakeups, XactInfo

log = logging.getLogger(__name__)

MAX_BATCH = 512
Job = tuple[TxFn[Any], "asyncio.Future[Any] | None", "SendKey | None"]
# What a send writes that leaves other sends' prefetched answers (author, chat, membership)
# true: its event and message, the quota, file links. Anything else makes them stale.
_SEND_WRITES = ("WITH e AS (INSERT INTO events", "INSERT INTO message_files",
                "DELETE FROM quota", "INSERT INTO quota")


class _NeedsSavepoints(Exception):
    """A job failed after writing: the batch was rolled back, to run again carefully."""


class WriteWatch:
    """A `Db` that notes whether a job has written anything (any statement but a SELECT)."""

    __slots__ = ("db", "dialect", "wrote", "wrote_more")

    def __init__(self, db: Db) -> None:
        self.db = db
        self.dialect = db.dialect
        self.wrote = False
        self.wrote_more = False  # wrote something a send does not write (`_SEND_WRITES`)

    def _note(self, sql: str) -> None:
        if not sql.lstrip()[:6].upper() == "SELECT":
            self._wrote(sql)

    def _wrote(self, sql: str) -> None:
        self.wrote = True
        if not self.wrote_more and not sql.lstrip().startswith(_SEND_WRITES):
            self.wrote_more = True

    async def fetchall(self, sql: str, *args: object) -> list[Row]:
        """All rows of a query."""
        self._note(sql)
        return await self.db.fetchall(sql, *args)

    async def fetchone(self, sql: str, *args: object) -> Row | None:
        """The first row of a query, or None."""
        self._note(sql)
        return await self.db.fetchone(sql, *args)

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run a statement once per row (counted as a write)."""
        self._wrote(sql)
        await self.db.executemany(sql, rows)

    async def execute(self, sql: str, *args: object) -> int:
        """Run a statement (counted as a write, whatever it is)."""
        self._wrote(sql)
        return await self.db.execute(sql, *args)

    async def insert(self, sql: str, key: str, *args: object) -> int:
        """Insert one row (a write); its key."""
        self._wrote(sql)
        return await self.db.insert(sql, key, *args)


class _Markers:
    """Read markers to move in one write job; joinable until the job starts."""

    __slots__ = ("seqs", "started", "task")

    def __init__(self) -> None:
        self.seqs: dict[UserId, int] = {}
        self.started = False
        self.task: asyncio.Future[None] | None = None

    async def job(self, tx: SqlTx) -> None:
        self.started = True  # a batch run again writes the same markers
        await tx.set_read_markers(self.seqs)


def _seen(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()


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
        self._markers: _Markers | None = None  # read markers waiting for their write
        self._issued_known = 0  # a seq this process has seen handed out (they only grow)

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

    def _learned(self, xact: XactInfo) -> None:
        """The open batch's transaction, as a query of the batch fetched it along."""

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

    async def move_read_marker(self, user_id: UserId, seq: int) -> None:
        """Move the user's read marker forward to `seq` (at most the newest event); returns
        once durable. Markers moved at about the same time are written in one statement."""
        pending = self._markers
        if pending is None or pending.started:
            pending = self._markers = _Markers()
            pending.task = asyncio.ensure_future(self.write(pending.job))
            pending.task.add_done_callback(_seen)  # every poll may have gone meanwhile
        pending.seqs[user_id] = max(seq, pending.seqs.get(user_id, seq))
        task = pending.task
        assert task is not None
        await asyncio.shield(task)

    async def write_aside(self, fn: TxFn[T]) -> T:
        """Run one-statement `fn` outside the queue if the backend can (here: in it)."""
        return await self.write(fn)

    async def catch_up_search(self) -> None:
        """Nothing to do where each message is indexed as it is stored."""

    async def get_session(self, token_hash: str) -> Session | None:
        """The session a token hash names (see `SqlTx.get_session`)."""
        return await self.read(lambda tx: tx.get_session(token_hash))

    async def read_events(self, user_id: UserId, after: int, limit: int,
                          now: float) -> list[EventRecord]:
        """The user's events after `after`, oldest first (see `SqlTx.read_events`)."""
        return self._saw(await self.read(lambda tx: tx.read_events(user_id, after, limit, now)))

    def _saw(self, events: list[EventRecord]) -> list[EventRecord]:
        if events and events[-1].seq > self._issued_known:
            self._issued_known = events[-1].seq
        return events

    async def issued_seq(self, at_least: int = 0) -> int:
        """The highest seq handed out (`SqlTx.issued_seq`), or without asking the database
        a lower bound that is at least `at_least` when this process has seen one."""
        if at_least and self._issued_known >= at_least:
            return self._issued_known
        issued = await self.read(lambda tx: tx.issued_seq())
        self._issued_known = max(self._issued_known, issued)
        return issued

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

    async def write(self, fn: TxFn[T], prefetch: SendKey | None = None) -> T:
        """Queue `fn`; its result once the batch holding it has committed.

        `prefetch`: `fn` is a send that starts with `SqlTx.prefetch_send` of this key; on
        PostgreSQL the sends of a batch then fetch that together, in one round trip.
        """
        if self._closing:
            raise RuntimeError("store is closing")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((fn, fut, prefetch))
        self._has_work.set()
        return await fut

    def write_soon(self, fn: TxFn[None]) -> None:
        """Queue `fn` without waiting for it."""
        if not self._closing:
            self._queue.append((fn, None, None))
            self._has_work.set()

    async def _write_loop(self) -> None:
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._has_work.clear()
                await self._has_work.wait()
                continue
            await self._run_with_retry()

    def _take(self, batch: list[Job]) -> None:
        """Move the queued jobs (up to MAX_BATCH) into `batch`, if it has none yet."""
        if not batch:
            batch.extend(self._queue.popleft()
                         for _ in range(min(len(self._queue), MAX_BATCH)))

    async def _run_with_retry(self) -> None:
        """Run a batch; once more if its connection died before it could commit.

        The batch is what is queued once the transaction has begun: while `_begin` waits
        (for another process's batch to release the write lock), jobs keep joining it.
        """
        batch: list[Job] = []
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
                self._take(batch)  # `_begin` failed: the jobs waiting now get the error
                if attempt == 0 and retryable:
                    log.info("write batch of %d lost its connection; running it again",
                             len(batch))
                    attempt += 1
                    continue
                error = self._failure(exc)
                if not isinstance(error, StoreError):
                    log.exception("write batch of %d failed", len(batch))
                for _, fut, _ in batch:
                    if fut is not None and not fut.done():
                        fut.set_exception(error)
                return

    async def _flush(self, db: Db, deferred: DeferredSends) -> None:
        try:
            await SqlTx(db).flush_sends(deferred)
        except Exception as exc:  # e.g. two sends with one retry key: again, carefully
            raise _NeedsSavepoints() from exc

    async def _run_batch(self, batch: list[Job], careful: bool = False) -> None:
        outcomes: list[tuple[asyncio.Future[Any] | None, Any, BaseException | None]] = []
        wakeups = Wakeups()
        db = await self._begin()
        try:
            self._take(batch)
            memos: dict[int, dict[tuple[object, ...], Any]] = {}
            if not careful and db.dialect == "postgres":
                # Sends first (any order of one batch's jobs is an order they could have
                # come in), their checks fetched together.
                batch = ([j for j in batch if j[2] is not None]
                         + [j for j in batch if j[2] is None])
                keys = [j[2] for j in batch if j[2] is not None]
                if len(keys) > 1:
                    try:
                        fetched = await SqlTx(db).prefetch_sends(keys)
                    except Exception as exc:  # the careful run fetches nothing ahead
                        raise _NeedsSavepoints() from exc
                    memos = dict(enumerate(fetched.memos))
                    if fetched.xact is not None:
                        self._learned(fetched.xact)
            stale = False  # a job wrote what the prefetched answers may depend on
            sent: set[tuple[object, ...]] = set()
            deferred = DeferredSends()  # the sends' messages, written before anything else
            for index, (fn, fut, key) in enumerate(batch):
                if key is None and (deferred.messages or deferred.files):
                    await self._flush(db, deferred)
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
                    memo = memos.get(index)
                    if memo is not None and key is not None and not stale \
                            and (key[0], key[2]) not in sent:
                        tx.preload(memo, deferred)
                    marks = len(deferred.messages), len(deferred.files)
                    try:
                        result = await fn(tx)
                    except Exception as exc:
                        if watched.wrote or self._driver_error(exc):
                            raise _NeedsSavepoints() from exc
                        del deferred.messages[marks[0]:], deferred.files[marks[1]:]
                        outcomes.append((fut, None, self._failure(exc)))  # nothing to undo
                        continue
                    finally:
                        stale = stale or watched.wrote_more
                        if key is not None and key[2] is not None:  # the retry key may
                            # now name a message (or no longer do)
                            sent.add((key[0], key[2]))
                wakeups.merge(tx.wakeups)
                outcomes.append((fut, result, None))
            if deferred.messages or deferred.files:
                await self._flush(db, deferred)
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
