"""PostgreSQL backend for several server processes on one database.

Ordering: every write transaction first takes one transaction-scoped advisory lock, so
write batches from all processes commit one after another and event seqs are handed out
in commit order. A reader therefore never sees seq N+1 committed while N may still
commit: there are no gaps to skip over, and a cursor means the same on every process.
Group commit keeps this cheap: one transaction carries every queued write of a process,
and a process waiting for the lock takes the jobs queued meanwhile into that batch.

Wakeups: the committing transaction sends NOTIFY with whom it concerns; every process
LISTENs and wakes its own parked polls. Nothing polls the database in a loop.

Faults: every connection (the writer, the pool's readers, the listener) is replaced when
it dies. While the database cannot be reached, calls fail at once with StoreUnavailable
(503) and `health` logs the outage once. A batch whose connection died before COMMIT runs
again on a new connection; one that died during COMMIT is looked up (`txid_status`), so a
committed batch is never reported as failed. Server-side timeouts end the transaction of a
frozen or partitioned process within seconds, releasing the write lock for the others.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from typing import Any

import asyncpg

from store.base import StoreError, StoreUnavailable, T, TxFn
from store.batch import BatchingStore
from store.coalesce import Coalescer, EventReads
from store.migrations import migrate
from store.models import EventRecord, Session, UserId
from store.pg_db import (
    BUSY_ERRORS, CHANNEL, COMMIT_LOOKUP, CONNECT_TIMEOUT, LISTEN_PING,
    READER_SETTINGS, REFUSED_ERRORS, RETRY_INTERVAL, WRITE_LOCK, WRITER_COMMAND_TIMEOUT,
    WRITER_SETTINGS, MigrationConn, NotCommitted, PgDb, client_keepalive, decode_wakeups,
    XACT_INFO, encode_wakeups, is_lost, keep_analyzed, notify_statements, queue_full,
    reason_of, safe_url,
)
from store.sql import Db, SqlTx, Wakeups, XactInfo

log = logging.getLogger(__name__)


class PostgresStore(BatchingStore):
    """Shared-database store: any process may serve any request."""

    def __init__(self, url: str, pool_size: int = 8) -> None:
        super().__init__()
        self.url = url
        self.pool_size = pool_size
        self.origin = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._pool: Any = None
        self._wconn: Any = None
        self._listener: Any = None
        self._listen_task: asyncio.Task[None] | None = None
        self._analyzer: asyncio.Task[None] | None = None
        self._listener_lost = asyncio.Event()
        self._tx: Any = None
        self._xid: int | None = None  # the open batch's transaction id (for txid_status)
        self._savepoints: list[Any] = []
        self._wake_tasks: set[asyncio.Task[None]] = set()
        self._retry_at = 0.0  # loop time before which connecting is not tried again
        self._notify_full = False  # NOTIFY skipped: the queue is nearly full
        self.event_reads = EventReads(
            lambda asks, now: self.read(lambda tx: tx.read_events_many(asks, now)))
        self.session_reads = Coalescer[str, Session | None](
            lambda hashes, _now: self.read(lambda tx: tx.get_sessions(hashes)))

    async def open(self) -> None:
        """Connect, migrate (once, under a lock), listen, start the writer.

        Raises StoreUnavailable (with the address, never the password) when the database
        cannot be reached: the server says so in one line and exits.
        """
        try:
            self._pool = await asyncpg.create_pool(
                # min_size=0: no background "restore the floor" loop logging tracebacks
                # while the database is away; connections open on demand and are kept.
                self.url, min_size=0, max_size=self.pool_size, timeout=CONNECT_TIMEOUT,
                server_settings=self._settings(READER_SETTINGS, "reader"), init=self._init_reader,
                reset=self._reset_reader)
            conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT,
                                         server_settings=self._settings(READER_SETTINGS, "migrate"))
            try:
                await self._migrate(conn)
            finally:
                await conn.close()
            self._wconn = await self._connect_writer()
            await self._listen()
        except Exception as exc:
            await self._close_connections()
            if isinstance(exc, StoreError) or is_lost(exc):
                raise StoreUnavailable(
                    f"PostgreSQL unreachable at {safe_url(self.url)}: {reason_of(exc)}") from None
            if isinstance(exc, REFUSED_ERRORS):
                raise StoreUnavailable(
                    f"PostgreSQL at {safe_url(self.url)} refused the connection: "
                    f"{reason_of(exc)}") from None
            raise
        self._listen_task = asyncio.create_task(self._keep_listening(), name="pg-listener")
        self._analyzer = asyncio.create_task(keep_analyzed(self), name="pg-analyze")
        self._start_writer()

    @staticmethod
    async def _init_reader(conn: Any) -> None:
        client_keepalive(conn)

    @staticmethod
    async def _reset_reader(conn: Any) -> None:
        """Nothing to undo on a reader given back to the pool: reads set no session state,
        take no session locks and LISTEN on their own connection; a read that needs a
        setting must use SET LOCAL in its transaction. (asyncpg's default reset is one more
        round trip per read; an open transaction is still rolled back.)"""

    @staticmethod
    def _settings(base: dict[str, str], role: str) -> dict[str, str]:
        """Session settings, named so pg_stat_activity shows which process holds what."""
        return {**base, "application_name": f"messenger-{os.getpid()} {role}"}

    # -- connections -----------------------------------------------------------------------
    def _gate(self) -> None:
        """Fail at once right after a failed connect instead of waiting on another."""
        if not self.health.database_ok and asyncio.get_running_loop().time() < self._retry_at:
            raise StoreUnavailable("database unreachable")

    def _unreachable(self, exc: BaseException) -> StoreUnavailable:
        self._retry_at = asyncio.get_running_loop().time() + RETRY_INTERVAL
        return self.health.database_down(reason_of(exc))

    async def _connect_writer(self) -> Any:
        self._gate()
        try:
            conn = await asyncpg.connect(self.url, timeout=CONNECT_TIMEOUT,
                                         server_settings=self._settings(WRITER_SETTINGS, "writer"),
                                         command_timeout=WRITER_COMMAND_TIMEOUT)
        except Exception as exc:
            if is_lost(exc):
                raise self._unreachable(exc) from None
            raise
        client_keepalive(conn)
        self.health.database_up()
        return conn

    def _drop_writer(self) -> None:
        conn, self._wconn = self._wconn, None
        self._tx = None
        self._savepoints.clear()
        if conn is not None:
            conn.terminate()

    def _failure(self, exc: BaseException) -> BaseException:
        if isinstance(exc, StoreError):
            return exc
        if isinstance(exc, NotCommitted):
            return StoreUnavailable("the database connection was lost; nothing was written")
        if isinstance(exc, asyncpg.exceptions.DiskFullError):
            return self.health.disk_full("database")
        if is_lost(exc):
            return self._unreachable(exc)
        if isinstance(exc, BUSY_ERRORS):
            return StoreUnavailable(f"database busy ({type(exc).__name__})")
        return exc

    def _driver_error(self, exc: BaseException) -> bool:
        # Any error from the server aborts the whole transaction, not just the statement.
        return isinstance(exc, (asyncpg.PostgresError, asyncpg.InterfaceError,
                                asyncpg.InternalClientError, OSError, asyncio.TimeoutError))

    def _retryable(self, exc: BaseException) -> bool:
        if is_lost(exc):
            self._drop_writer()
            return True
        return isinstance(exc, NotCommitted)

    # -- the listener ----------------------------------------------------------------------
    async def _listen(self) -> asyncio.Event:
        """Open the LISTEN connection; the returned event is set when it is lost."""
        self._gate()
        try:
            conn = await asyncpg.connect(
                self.url, timeout=CONNECT_TIMEOUT,
                server_settings=self._settings(READER_SETTINGS, "listener"))
        except Exception as exc:
            if is_lost(exc):
                raise self._unreachable(exc) from None
            raise
        client_keepalive(conn)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        self._listener, self._listener_lost = conn, lost
        self.health.database_up()
        return lost

    async def _keep_listening(self) -> None:
        """Watch the LISTEN connection; replace it when it dies, then wake every poll.

        Notifications sent while it was down are lost, so every parked poll re-reads.
        """
        lost = self._listener_lost
        conn = self._listener
        delay = 0.1
        while True:
            try:
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), LISTEN_PING)
                    except asyncio.TimeoutError:
                        await conn.fetchval("SELECT 1", timeout=LISTEN_PING)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.debug("listener ping failed: %s", reason_of(exc))
            log.warning("lost the LISTEN connection; reconnecting")
            conn.terminate()
            while True:
                await asyncio.sleep(delay)
                try:
                    lost = await self._listen()
                except Exception as exc:
                    if not isinstance(self._failure(exc), StoreError):
                        log.exception("LISTEN reconnect failed")
                    delay = min(delay * 2, 1.0)
                    continue
                conn, delay = self._listener, 0.1
                break
            log.warning("listening again; waking every parked poll to re-read")
            everyone = Wakeups()
            everyone.everyone = True
            self.notifier.wake(everyone)

    async def _migrate(self, conn: Any) -> None:
        await migrate(MigrationConn(conn))

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        origin, wakeups = decode_wakeups(payload)
        # Our own commits woke ours already.
        if origin != self.origin and (self.notifier or wakeups.ended):
            task = asyncio.create_task(self.wake(wakeups))
            self._wake_tasks.add(task)
            task.add_done_callback(self._wake_tasks.discard)

    async def close(self) -> None:
        """Drain writes, stop listening, close connections."""
        await self._stop_writer()
        await self.event_reads.close()
        await self.session_reads.close()
        if self._analyzer is not None:
            self._analyzer.cancel()
            await asyncio.gather(self._analyzer, return_exceptions=True)
            self._analyzer = None
        if self._listen_task is not None:
            self._listen_task.cancel()
            await asyncio.gather(self._listen_task, return_exceptions=True)
            self._listen_task = None
        await self._close_connections()

    async def _close_connections(self) -> None:
        for conn in (self._listener, self._wconn):
            if conn is not None:
                try:
                    await conn.close(timeout=2)
                except Exception:  # already dead: nothing to say goodbye to
                    conn.terminate()
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 5)
            except Exception:
                self._pool.terminate()
        self._listener = self._wconn = self._pool = None

    async def read(self, fn: TxFn[T]) -> T:
        """Run `fn` on a pooled connection (again if that connection had died)."""
        return await self._read(fn, gated=True)

    async def _read(self, fn: TxFn[T], gated: bool) -> T:
        for attempt in range(self.pool_size + 1):
            if gated:
                self._gate()
            try:
                # No acquire timeout: a busy pool is not an outage (connecting has its own).
                async with self._pool.acquire() as conn:
                    try:
                        result = await fn(SqlTx(PgDb(conn)))
                    except Exception as exc:
                        if is_lost(exc):  # so that the pool opens a new one
                            with contextlib.suppress(asyncpg.InterfaceError):  # gone already
                                conn.terminate()
                        raise
            except Exception as exc:
                if attempt < self.pool_size and is_lost(exc) and not isinstance(exc, OSError):
                    continue  # a pooled connection the server had ended: the pool replaces it
                error = self._failure(exc)
                if error is exc:
                    raise
                raise error from None
            self.health.database_up()
            return result
        raise AssertionError("unreachable")

    async def write_aside(self, fn: TxFn[T]) -> T:
        """Run one-statement `fn` on a pooled connection (it commits by itself), outside
        the write lock: a chunk of a file does not hold up everyone's messages."""
        return await self.read(fn)

    async def get_session(self, token_hash: str) -> Session | None:
        """The session of a token hash; concurrent lookups share one query."""
        return await self.session_reads.ask(token_hash)

    async def read_events(self, user_id: UserId, after: int, limit: int,
                          now: float) -> list[EventRecord]:
        """The user's events after `after`; the polls woken by one commit read together."""
        return self._saw(await self.event_reads.read(user_id, after, limit, now))

    async def check(self) -> None:
        """Probe the database with a trivial query; the outcome is in `health`."""
        async def ping(tx: SqlTx) -> None:
            await tx.db.fetchone("SELECT 1")
        try:
            await self._read(ping, gated=False)  # a probe really tries
        except StoreError:
            pass

    async def _begin(self) -> Db:
        if self._wconn is None or self._wconn.is_closed():
            self._drop_writer()
            self._wconn = await self._connect_writer()
        conn = self._wconn
        self._tx = conn  # a transaction is open on it
        self._xid = None
        try:
            # Serialize write transactions across processes: seqs commit in order. One
            # round trip (a simple query; each of its statements takes its own snapshot,
            # so the batch sees every batch committed before it got the lock).
            await conn.execute(f"BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})")
        except BaseException:
            await self._rollback()
            raise
        return PgDb(conn)

    async def _savepoint(self) -> None:
        await self._wconn.execute("SAVEPOINT job")

    async def _release(self) -> None:
        await self._wconn.execute("RELEASE SAVEPOINT job")

    async def _rollback_to(self) -> None:
        await self._wconn.execute("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")

    def _learned(self, xact: XactInfo) -> None:
        self._xid = xact.xid
        self._notify_full = queue_full(xact.notify_queue, self._notify_full)

    async def _commit(self, wakeups: Wakeups) -> None:
        # The transaction id tells, should the connection die during COMMIT, whether the
        # batch committed; the NOTIFY queue's usage, whether to NOTIFY. A batch of sends
        # fetched both with their checks; any other batch asks (one round trip). NOTIFY
        # (delivered only if, and when, the transaction commits) goes with the COMMIT.
        if self._xid is None:
            xid, usage = await self._wconn.fetchrow(XACT_INFO)
            self._learned(XactInfo(int(xid), float(usage)))
        payloads = [] if self._notify_full else encode_wakeups(self.origin, wakeups)
        await self._finish(notify_statements(payloads) + "COMMIT")

    async def _finish(self, query: str) -> None:
        """Run `query`, ending in COMMIT; on success or a lost connection the transaction
        is over (found committed or raised NotCommitted), otherwise `_rollback` ends it."""
        try:
            if await self._wconn.execute(query) != "COMMIT":  # it had failed: nothing
                raise NotCommitted()
        except NotCommitted:
            self._tx = None
            raise
        except Exception as exc:
            if isinstance(exc, asyncpg.exceptions.ProgramLimitExceededError):
                # "too many notifications in the NOTIFY queue": rolled back; the next try
                # sees the queue usage and commits without NOTIFY.
                self._tx = None
                raise NotCommitted() from exc
            if not is_lost(exc):
                raise  # e.g. a NOTIFY failed: the transaction is open, `_rollback` ends it
            self._tx = None
            self._drop_writer()
            if not await self._committed(self._xid, exc):
                raise NotCommitted() from exc
            log.warning("the connection died during COMMIT, but the batch had committed")
        self._tx = None
        self.health.database_up()
        self.health.disk_ok("database")

    async def _committed(self, xid: int | None, exc: BaseException) -> bool:
        """Whether the transaction `xid` committed (its connection died during COMMIT)."""
        deadline = asyncio.get_running_loop().time() + COMMIT_LOOKUP
        while True:
            try:
                status = await self.read(
                    lambda tx: tx.db.fetchone("SELECT txid_status($1) AS status", xid))
            except StoreError:
                status = None
            else:
                if status is not None and status[0] != "in progress":
                    return bool(status[0] == "committed")
            if asyncio.get_running_loop().time() > deadline:
                raise self._unreachable(exc)  # cannot tell: 503, and a retry may repeat it
            await asyncio.sleep(0.1)

    async def _rollback(self) -> None:
        self._savepoints.clear()
        tx, self._tx = self._tx, None
        if tx is not None:
            try:
                await tx.execute("ROLLBACK")
            except Exception:  # the connection is gone or stuck: the server rolls back
                self._drop_writer()
