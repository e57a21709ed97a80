"""SQLite backend: WAL, one writer with group commit, reads on their own connection."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from store.base import T, TxFn
from store.batch import BatchingStore
from store.migrations import MIGRATIONS, render
from store.sql import Db, Row, SqlTx, Wakeups

log = logging.getLogger(__name__)


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


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the file to the newest schema version and make sure the general chat exists."""
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
    conn.execute("INSERT INTO chats (chat_id, kind, title, owner_id, created_at)"
                 " VALUES ('general', 'general', 'General', NULL, ?) ON CONFLICT DO NOTHING",
                 (time.time(),))


class SqliteStore(BatchingStore):
    """The embedded default store: one file, one process."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None

    async def open(self) -> None:
        """Open both connections, migrate, start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wconn = _connect(self.path)
        migrate(self._wconn)
        self._rconn = _connect(self.path)
        self._start_writer()

    async def close(self) -> None:
        """Drain the queue, stop the writer, close."""
        await self._stop_writer()
        for conn in (self._rconn, self._wconn):
            if conn is not None:
                conn.close()
        self._rconn = self._wconn = None
        self._committer.shutdown(wait=True)

    async def read(self, fn: TxFn[T]) -> T:
        """Run `fn` on the read connection (sees everything committed)."""
        assert self._rconn is not None, "store not open"
        return await fn(SqlTx(SqliteDb(self._rconn)))

    async def _begin(self) -> Db:
        assert self._wconn is not None
        self._wconn.execute("BEGIN IMMEDIATE")
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
        # The fsync happens here; keep it off the event loop.
        await asyncio.get_running_loop().run_in_executor(
            self._committer, self._wconn.execute, "COMMIT")

    async def _rollback(self) -> None:
        if self._wconn is not None and self._wconn.in_transaction:
            self._wconn.execute("ROLLBACK")
