"""PostgreSQL backend for several server processes on one database.

Ordering: every write transaction first takes one transaction-scoped advisory lock, so
write batches from all processes commit one after another and event seqs are handed out
in commit order. A reader therefore never sees seq N+1 committed while N may still
commit: there are no gaps to skip over, and a cursor means the same on every process.
Group commit keeps this cheap: one transaction carries every queued write of a process.

Wakeups: the committing transaction sends NOTIFY with whom it concerns; every process
LISTENs and wakes its own parked polls. Nothing polls the database in a loop.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from typing import Any

import asyncpg
import orjson

from store.base import T, TxFn
from store.batch import BatchingStore
from store.migrations import MIGRATIONS, render
from store.sql import Db, Row, SqlTx, Wakeups

log = logging.getLogger(__name__)

CHANNEL = "messenger_events"
WRITE_LOCK = 0x6D657373  # "mess": the write-order lock
MIGRATE_LOCK = 0x6D696772  # "migr"
_PLACEHOLDER = re.compile(r"\?")


def to_pg(sql: str) -> str:
    """`?` placeholders to `$1, $2, ...` (our SQL never has `?` inside literals)."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class PgDb:
    """The `Db` adapter over one asyncpg connection."""

    _cache: dict[str, str] = {}

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def _sql(self, sql: str) -> str:
        converted = self._cache.get(sql)
        if converted is None:
            converted = self._cache[sql] = to_pg(sql)
        return converted

    async def fetchall(self, sql: str, *args: object) -> list[Row]:
        """All rows of a query."""
        rows: list[Row] = await self.conn.fetch(self._sql(sql), *args)
        return rows

    async def fetchone(self, sql: str, *args: object) -> Row | None:
        """The first row of a query, or None."""
        row: Row | None = await self.conn.fetchrow(self._sql(sql), *args)
        return row

    async def execute(self, sql: str, *args: object) -> int:
        """Run a statement; rows changed (from the command tag)."""
        tag: str = await self.conn.execute(self._sql(sql), *args)
        last = tag.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0


def encode_wakeups(origin: str, wakeups: Wakeups) -> str | None:
    """The NOTIFY payload: the origin process and whom the commit concerns."""
    if not (wakeups.everyone or wakeups.users or wakeups.chats):
        return None
    body = {"o": origin, "e": wakeups.everyone, "u": sorted(wakeups.users),
            "c": sorted(wakeups.chats)}
    payload = orjson.dumps(body).decode()
    if len(payload) > 7000:  # NOTIFY payloads are small: wake everyone instead
        payload = orjson.dumps({"o": origin, "e": True, "u": [], "c": []}).decode()
    return payload


def decode_wakeups(payload: str) -> tuple[str, Wakeups]:
    """Inverse of `encode_wakeups`."""
    body = orjson.loads(payload)
    w = Wakeups()
    w.everyone = bool(body["e"])
    w.users = {int(u) for u in body["u"]}
    w.chats = set(body["c"])
    return str(body["o"]), w


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
        self._tx: Any = None
        self._savepoints: list[Any] = []
        self._wake_tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        """Connect, migrate (once, under a lock), listen, start the writer."""
        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.pool_size)
        self._wconn = await asyncpg.connect(self.url)
        await self._migrate()
        self._listener = await asyncpg.connect(self.url)
        await self._listener.add_listener(CHANNEL, self._on_notify)
        self._start_writer()

    async def _migrate(self) -> None:
        conn = self._wconn
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM schema_version")
            for version, sql in enumerate(MIGRATIONS, start=1):
                if version <= current:
                    continue
                for stmt in render(sql, "postgres"):
                    await conn.execute(stmt)
                await conn.execute("INSERT INTO schema_version (version) VALUES ($1)", version)
                log.info("database migrated to version %d", version)
            await conn.execute(
                "INSERT INTO chats (chat_id, kind, title, owner_id, created_at)"
                " VALUES ('general', 'general', 'General', NULL, $1) ON CONFLICT DO NOTHING",
                time.time())

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        origin, wakeups = decode_wakeups(payload)
        if origin != self.origin and self.notifier:  # our own commits woke ours already
            task = asyncio.create_task(self.wake(wakeups))
            self._wake_tasks.add(task)
            task.add_done_callback(self._wake_tasks.discard)

    async def close(self) -> None:
        """Drain writes, stop listening, close connections."""
        await self._stop_writer()
        if self._listener is not None:
            await self._listener.close()
        if self._wconn is not None:
            await self._wconn.close()
        if self._pool is not None:
            await self._pool.close()
        self._listener = self._wconn = self._pool = None

    async def read(self, fn: TxFn[T]) -> T:
        """Run `fn` on a pooled connection."""
        async with self._pool.acquire() as conn:
            return await fn(SqlTx(PgDb(conn)))

    async def _begin(self) -> Db:
        self._tx = self._wconn.transaction()
        await self._tx.start()
        # Serialize write transactions across processes: seqs commit in order.
        await self._wconn.execute("SELECT pg_advisory_xact_lock($1)", WRITE_LOCK)
        return PgDb(self._wconn)

    async def _savepoint(self) -> None:
        sp = self._wconn.transaction()
        await sp.start()
        self._savepoints.append(sp)

    async def _release(self) -> None:
        await self._savepoints.pop().commit()

    async def _rollback_to(self) -> None:
        await self._savepoints.pop().rollback()

    async def _commit(self, wakeups: Wakeups) -> None:
        payload = encode_wakeups(self.origin, wakeups)
        if payload is not None:
            # Delivered to listeners only if, and when, the transaction commits.
            await self._wconn.execute("SELECT pg_notify($1, $2)", CHANNEL, payload)
        await self._tx.commit()
        self._tx = None

    async def _rollback(self) -> None:
        self._savepoints.clear()
        if self._tx is not None:
            try:
                await self._tx.rollback()
            except asyncpg.PostgresError:
                log.exception("rollback failed")
            self._tx = None


async def reset_database(url: str) -> None:
    """Drop every table of ours (tests use this to start from nothing)."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
    finally:
        await conn.close()
