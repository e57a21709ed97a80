"""SQLite backend: WAL, one writer with group commit, reads on their own connection."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Sequence

from store.base import StoreError, T, TxFn
from store.batch import BatchingStore
from store.migrations import migrate
from store.sql import Db, Row, SqlTx, Wakeups

log = logging.getLogger(__name__)


class SqliteDb:
    """The `Db` adapter over one sqlite3 connection (calls are short; run on the loop)."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def fetchall(self, sql: str, *args: object) -> list[Row]:
        """All rows of a query."""
        return self.conn.execute(sql, args).fetchall()

    async def fetchone(self, sql: str, *args: object) -> Row | None:
        """The first row of a query, or None."""
        row: Row | None = self.conn.execute(sql, args).fetchone()
        return row

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run a statement for each row of arguments."""
        self.conn.executemany(sql, rows)

    async def execute(self, sql: str, *args: object) -> int:
        """Run a statement; rows changed."""
        return self.conn.execute(sql, args).rowcount

    async def insert(self, sql: str, key: str, *args: object) -> int:
        """Insert one row; its rowid (`key` names the column that aliases it)."""
        rowid = self.conn.execute(sql, args).lastrowid
        assert rowid is not None
        return rowid


def _connect(path: Path, power_safe: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # NORMAL (WAL): a commit is in the OS before we reply; a crash or kill -9 of the server
    # loses nothing, power loss may lose the last moments. FULL also fsyncs every commit.
    conn.execute(f"PRAGMA synchronous={'FULL' if power_safe else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


class _Migrations:
    """The migration runner's view of the writer connection (BEGIN IMMEDIATE locks the file)."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    async def execute(self, sql: str) -> None:
        self.conn.execute(sql)

    async def fetch_value(self, sql: str) -> Any:
        return self.conn.execute(sql).fetchone()[0]


def _size(path: Path) -> int:
    """A file's size, 0 when it does not exist."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


class SqliteStore(BatchingStore):
    """The embedded default store: one file, one process."""

    wal_limit = 64 * 2 ** 20  # bytes of WAL past which the writer truncates it
    # New messages reach the search index apart from their sends (`SqlTx.index_messages`):
    # at most this many per write job, at least every this many seconds, and before any
    # search (which therefore finds every message acknowledged before it).
    index_chunk = 500
    index_interval = 0.25

    def __init__(self, path: Path, power_safe: bool = False,
                 checkpoint_interval: float = 1.0) -> None:
        super().__init__()
        self.path = path
        self.power_safe = power_safe
        self.checkpoint_interval = checkpoint_interval
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="sqlite-disk")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._cconn: sqlite3.Connection | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._indexer: asyncio.Task[None] | None = None
        self._indexing: asyncio.Task[None] | None = None  # the index job under way, if any
        self._newest_message = 0  # the highest seq of a committed message
        self._indexed_through = 0  # every message up to this seq is in the search index
        self._changes_at_begin = 0
        # Set by the checkpointer when PASSIVE checkpoints cannot keep up (a steady stream
        # of commits never leaves the WAL fully copied, so it is never restarted and grows
        # without bound); the writer then truncates it before its next batch.
        self._truncate_wal = False

    async def open(self) -> None:
        """Open the connections, migrate, start the writer and the checkpointer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wconn = _connect(self.path, self.power_safe)
        await migrate(_Migrations(self._wconn))
        # Commits never checkpoint (that would put an fsync on the event loop): a
        # background thread copies the WAL into the database file instead.
        self._wconn.execute("PRAGMA wal_autocheckpoint=0")
        self._rconn = _connect(self.path, self.power_safe)
        self._cconn = _connect(self.path, self.power_safe)
        self._indexed_through = self._wconn.execute("SELECT seq FROM search_index").fetchone()[0]
        self._newest_message = self._wconn.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM messages").fetchone()[0]
        self._start_writer()
        self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="checkpoint")
        self._indexer = asyncio.create_task(self._index_loop(), name="search-indexer")

    async def _index_loop(self) -> None:
        pause = self.index_interval
        while True:
            await asyncio.sleep(pause)
            try:
                await self.catch_up_search()
            except Exception:  # a bug: searches still work, on the index as it was
                log.exception("indexing new messages for search failed")
                pause = min(pause * 2, 60.0)
            else:
                pause = self.index_interval

    async def catch_up_search(self) -> None:
        """Index the messages committed so far that the search index lacks, a chunk per
        write job (other writes run between them). Searches and the indexer at the same
        time share each job: however many searches come in, one job at a time is queued.
        Should the disk be full, searches go on with the index as it is (`health` tells;
        the indexer tries again)."""
        target = self._newest_message  # not what is sent meanwhile: a search would chase it
        while target > self._indexed_through:
            if self._indexing is None:
                self._indexing = asyncio.create_task(self._index_chunk())
                self._indexing.add_done_callback(
                    lambda task: task.cancelled() or task.exception())  # seen, if unwaited
            try:
                await asyncio.shield(self._indexing)
            except StoreError:
                return

    async def _index_chunk(self) -> None:
        try:
            through = await self.write(lambda tx: tx.index_messages(self.index_chunk))
            self._indexed_through = max(self._indexed_through, through)
        finally:
            self._indexing = None

    async def _checkpoint_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.checkpoint_interval)
            try:
                await loop.run_in_executor(self._disk, self._checkpoint, "PASSIVE")
            except sqlite3.Error as exc:
                if not _is_full(exc):
                    log.exception("checkpoint failed")
                    continue
                # The WAL keeps every commit meanwhile; the next pass tries again.
                self.health.disk_full("database file (checkpoint)", self.path.parent)
            else:
                self.health.disk_ok("database file (checkpoint)")
                self._truncate_wal = _size(self._wal_path) > self.wal_limit

    @property
    def _wal_path(self) -> Path:
        return self.path.with_name(self.path.name + "-wal")

    async def _truncate_wal_now(self) -> None:
        """Copy the whole WAL into the database and empty it, while no batch is running.

        Called by the writer between batches: writes wait (the event loop does not), and
        reads go on, since the checkpoint runs in the disk thread.
        """
        self._truncate_wal = False
        before = _size(self._wal_path)
        started = time.perf_counter()
        try:
            await asyncio.get_running_loop().run_in_executor(
                self._disk, self._checkpoint, "TRUNCATE")
        except sqlite3.Error as exc:
            log.warning("WAL truncation failed: %s", exc)
            return
        log.info("WAL of %d MB copied and truncated in %.0f ms", before // 2 ** 20,
                 (time.perf_counter() - started) * 1000)

    def _checkpoint(self, mode: str) -> None:
        assert self._cconn is not None
        self._cconn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()

    async def close(self) -> None:
        """Drain the queue, stop the writer, checkpoint, close."""
        if self._indexer is not None:  # what it has not indexed, the next open will
            self._indexer.cancel()
            await asyncio.gather(self._indexer, return_exceptions=True)
        await self._stop_writer()
        if self._checkpointer is not None:
            self._checkpointer.cancel()
            await asyncio.gather(self._checkpointer, return_exceptions=True)
        if self._cconn is not None:
            with contextlib.suppress(sqlite3.Error):
                await asyncio.get_running_loop().run_in_executor(
                    self._disk, self._checkpoint, "TRUNCATE")
        for conn in (self._rconn, self._wconn, self._cconn):
            if conn is not None:
                conn.close()
        self._rconn = self._wconn = self._cconn = None
        self._disk.shutdown(wait=True)

    async def read(self, fn: TxFn[T]) -> T:
        """Run `fn` on the read connection (sees everything committed)."""
        assert self._rconn is not None, "store not open"
        try:
            return await fn(SqlTx(SqliteDb(self._rconn)))
        except sqlite3.Error as exc:  # e.g. no room for a temporary sort file
            raise self._failure(exc) from None

    async def check(self) -> None:
        """Nothing to probe: the database is a local file (disk state is in `health`)."""

    def _driver_error(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.Error)

    def _failure(self, exc: BaseException) -> BaseException:
        if isinstance(exc, sqlite3.Error) and _is_full(exc):
            return self.health.disk_full("database", self.path.parent)
        return exc

    async def _begin(self) -> Db:
        assert self._wconn is not None
        if self._truncate_wal:
            await self._truncate_wal_now()
        self._wconn.execute("BEGIN IMMEDIATE")
        self._changes_at_begin = self._wconn.total_changes
        return SqliteDb(self._wconn)

    async def _savepoint(self) -> None:
        assert self._wconn is not None
        self._wconn.execute("SAVEPOINT job")

    async def _release(self) -> None:
        assert self._wconn is not None
        self._wconn.execute("RELEASE job")

    async def _rollback_to(self) -> None:
        assert self._wconn is not None
        self._wconn.execute("ROLLBACK TO job")
        self._wconn.execute("RELEASE job")

    async def _commit(self, wakeups: Wakeups) -> None:
        assert self._wconn is not None
        await self._commit_now()
        self._newest_message = max(self._newest_message, wakeups.newest_message)
        if self._wconn.total_changes != self._changes_at_begin:  # it wrote, so there is room
            self.health.disk_ok("database")

    async def _commit_now(self) -> None:
        assert self._wconn is not None
        if self.power_safe:
            # The fsync happens here; keep it off the event loop.
            await asyncio.get_running_loop().run_in_executor(
                self._disk, self._wconn.execute, "COMMIT")
        else:
            # Only a write() into the WAL: no measurable gain from a thread (messenger-bench
            # send, interleaved runs), so no thread hop per batch.
            self._wconn.execute("COMMIT")

    async def _rollback(self) -> None:
        if self._wconn is not None and self._wconn.in_transaction:
            self._wconn.execute("ROLLBACK")


def _is_full(exc: sqlite3.Error) -> bool:
    """SQLITE_FULL: "database or disk is full" (the WAL or the database file could not grow)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "is full" in str(exc)
