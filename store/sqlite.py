"""SQLite backend: WAL, one writer coroutine with group commit, reads on their own connection."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from store.base import Notifier, T, TxFn
from store.migrations import MIGRATIONS, render
from store.sql import Row, SqlTx, Wakeups

log = logging.getLogger(__name__)

MAX_BATCH = 512


class SqliteDb:
    """The `Db` adapter over one sqlite3 connection (calls are short; run on the loop)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def fetchall(self, sql: str, *args: object) -> list[Row]:
        """All rows of a query."""
        return self.conn.execute(sql, args).fetchall()

    async def fetchone(self, sql: str, *args: object) -> Row | None:
        """The first row of a query, or None."""
        row: Row | None = self.conn.execute(sql, args).fetchone()
        return row

    async def execute(self, sql: str, *args: object) -> int:
        """Run a statement; rows changed."""
        return self.conn.execute(sql, args).rowcount


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk before we reply, so even power loss keeps acknowledged writes.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class SqliteStore:
    """The embedded default store: one file, one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.notifier = Notifier()
        self._queue: deque[tuple[TxFn[object], asyncio.Future[object] | None]] = deque()
        self._has_work = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._closing = False

    async def open(self) -> None:
        """Open both connections, migrate, start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wconn = _connect(self.path)
        self._migrate(self._wconn)
        self._rconn = _connect(self.path)
        self._writer = asyncio.create_task(self._write_loop(), name="sqlite-writer")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        current = row[0] or 0
        for version, sql in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                for stmt in render(sql, "sqlite"):
                    conn.execute(stmt)
                conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("database migrated to version %d", version)
        conn.execute(
            "INSERT INTO chats (chat_id, kind, title, owner_id, created_at)"
            " VALUES ('general', 'general', 'General', NULL, strftime('%s','now'))"
            " ON CONFLICT DO NOTHING")

    async def close(self) -> None:
        """Drain the queue, stop the writer, checkpoint and close."""
        self._closing = True
        if self._writer is not None:
            self._has_work.set()
            await self._writer
            self._writer = None
        for conn in (self._rconn, self._wconn):
            if conn is not None:
                conn.close()
        self._rconn = self._wconn = None
        self._committer.shutdown(wait=True)

    async def write(self, fn: TxFn[T]) -> T:
        """Queue `fn`; returns its result after the batch holding it has committed."""
        if self._closing:
            raise RuntimeError("store is closing")
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((fn, fut))  # type: ignore[arg-type]
        self._has_work.set()
        return await fut

    def write_soon(self, fn: TxFn[None]) -> None:
        """Queue `fn` without waiting for it."""
        if not self._closing:
            self._queue.append((fn, None))
            self._has_work.set()

    async def read(self, fn: TxFn[T]) -> T:
        """Run `fn` on the read connection (sees everything committed)."""
        assert self._rconn is not None, "store not open"
        return await fn(SqlTx(SqliteDb(self._rconn)))

    async def _write_loop(self) -> None:
        assert self._wconn is not None
        conn = self._wconn
        db = SqliteDb(conn)
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._has_work.clear()
                await self._has_work.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), MAX_BATCH))]
            outcomes: list[tuple[asyncio.Future[object] | None, object, BaseException | None]]
            outcomes = []
            wakeups = Wakeups()
            conn.execute("BEGIN IMMEDIATE")
            for fn, fut in batch:
                tx = SqlTx(db)
                conn.execute("SAVEPOINT job")
                try:
                    result = await fn(tx)
                except Exception as exc:  # the job's own failure: undo just this job
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    outcomes.append((fut, None, exc))
                    if fut is None and not isinstance(exc, _Expected):
                        log.error("background write failed", exc_info=exc)
                    continue
                conn.execute("RELEASE job")
                wakeups.merge(tx.wakeups)
                outcomes.append((fut, result, None))
            try:
                # The fsync happens here; keep it off the event loop.
                await loop.run_in_executor(self._committer, conn.execute, "COMMIT")
            except Exception as exc:
                log.exception("commit failed; %d writes rolled back", len(batch))
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                for fut, _, _ in outcomes:
                    if fut is not None and not fut.done():
                        fut.set_exception(exc)
                continue
            self.notifier.wake(wakeups)
            for fut, result, error in outcomes:
                if fut is None or fut.done():
                    continue
                if error is not None:
                    fut.set_exception(error)
                else:
                    fut.set_result(result)


class _Expected(Exception):
    """Marker base for failures that need no log line."""
