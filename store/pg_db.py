"""PostgreSQL plumbing of `PostgresStore`: settings, error kinds, the `Db` adapter over an
asyncpg connection, the NOTIFY payload and the migration runner's connection."""
from __future__ import annotations

import asyncio
import contextlib
from functools import partial
import logging
import re
import socket
from typing import Any, AsyncIterator, Sequence
from urllib.parse import urlsplit

import asyncpg
import orjson

from store.base import Store, StoreError
from store.sql import Row, SqlTx, Wakeups

log = logging.getLogger(__name__)

CHANNEL = "messenger_events"
WRITE_LOCK = 0x6D657373  # "mess": the write-order lock
MIGRATE_LOCK = 0x6D696772  # "migr"
_PLACEHOLDER = re.compile(r"\?")

CONNECT_TIMEOUT = 3.0  # seconds to open a connection before the database counts as unreachable
RETRY_INTERVAL = 0.5  # after a failed connect, calls fail at once for this long
LISTEN_PING = 2.0  # the listener checks its (otherwise silent) connection this often
COMMIT_LOOKUP = 3.0  # seconds to find out whether a COMMIT whose connection died took effect
ANALYZE_EVERY = 10.0  # seconds between looks at how much the tables changed (autovacuum off)
ANALYZED = ("events", "messages", "members", "users", "sessions", "files", "file_chunks")
NOTIFY_FULL = 0.5  # NOTIFY queue usage past which commits stop sending NOTIFY
MAX_NOTIFY = 2000  # bytes of a NOTIFY payload; a bigger one becomes "wake everyone"
# Server side: the server notices a vanished client (keepalives), ends the transaction of a
# frozen one (idle_in_transaction_session_timeout) and its hold on the write lock with it.
_KEEPALIVE = {"tcp_keepalives_idle": "5", "tcp_keepalives_interval": "2",
              "tcp_keepalives_count": "3", "tcp_user_timeout": "10000"}
WRITER_SETTINGS = {**_KEEPALIVE, "idle_in_transaction_session_timeout": "1500",
                   "lock_timeout": "5000", "statement_timeout": "15000"}
READER_SETTINGS = {**_KEEPALIVE, "idle_in_transaction_session_timeout": "10000"}
WRITER_COMMAND_TIMEOUT = 20.0  # client side, past statement_timeout


def is_lost(exc: BaseException) -> bool:
    """Whether the connection is gone (closed, refused, terminated, timed out): replace it."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        return False  # statement_timeout: the connection itself is fine
    if isinstance(exc, asyncpg.InterfaceError):
        return "closed" in str(exc)
    # InternalClientError: the driver's state went astray when the server ended the
    # connection under a query ("cannot switch to state ..."); the connection is useless.
    return isinstance(exc, (OSError, asyncpg.InternalClientError, asyncpg.PostgresConnectionError,
                            asyncpg.exceptions.OperatorInterventionError,
                            asyncpg.exceptions.IdleInTransactionSessionTimeoutError))


BUSY_ERRORS = (asyncpg.QueryCanceledError, asyncpg.exceptions.LockNotAvailableError,
               asyncpg.exceptions.TooManyConnectionsError,
               asyncpg.exceptions.ReadOnlySQLTransactionError)


REFUSED_ERRORS = (asyncpg.exceptions.InvalidAuthorizationSpecificationError,  # user, password
                  asyncpg.exceptions.InvalidCatalogNameError)  # no such database


def reason_of(exc: BaseException) -> str:
    """An exception as one short line for the log."""
    return f"{type(exc).__name__}: {exc}"[:200]


def sql_literal(text: str) -> str:
    """`text` as an SQL string literal, whatever `standard_conforming_strings` says."""
    return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


# A write transaction's id and the NOTIFY queue's usage (see `XactInfo`), as columns.
XACT_INFO = "SELECT txid_current(), pg_notification_queue_usage()"


def notify_statements(payloads: list[str]) -> str:
    """NOTIFY of each payload, as statements to send ahead of COMMIT in one simple query."""
    return "".join(f"SELECT pg_notify('{CHANNEL}', {sql_literal(p)}); " for p in payloads)


def queue_full(usage: float, was_full: bool) -> bool:
    """Whether the NOTIFY queue is too full to NOTIFY (`usage` 0..1), saying so when that
    changes. A full queue would make COMMIT itself fail (a stalled listener fills it); a
    skipped NOTIFY only delays the other processes' polls (they answer at their timeout)."""
    full = usage >= NOTIFY_FULL
    if full != was_full:
        if full:
            log.error("the NOTIFY queue is %.0f%% full (a listening process is stalled); "
                      "commits go on without waking other processes' polls", usage * 100)
        else:
            log.warning("the NOTIFY queue has room again; waking other processes resumed")
    return full


def safe_url(url: str) -> str:
    """The database URL without its password (for the log)."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}{parts.path}"


def client_keepalive(conn: Any) -> None:
    """Client-side TCP keepalives: a silent partition ends the connection in seconds."""
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 2)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 10_000)
    except (OSError, AttributeError):  # not Linux: the server-side timeouts still hold
        pass


async def analyze(table: str, tx: SqlTx) -> None:
    """Refresh the planner's statistics of one table."""
    await tx.db.execute(f"ANALYZE {table}")


class NotCommitted(Exception):
    """The batch's connection died and its transaction certainly did not commit."""


def to_pg(sql: str) -> str:
    """`?` placeholders to `$1, $2, ...` (our SQL never has `?` inside literals)."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class PgDb:
    """The `Db` adapter over one asyncpg connection."""

    dialect = "postgres"

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

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run a statement for each row of arguments, pipelined: one round trip."""
        await self.conn.executemany(self._sql(sql), rows)

    async def execute(self, sql: str, *args: object) -> int:
        """Run a statement; rows changed (from the command tag)."""
        tag: str = await self.conn.execute(self._sql(sql), *args)
        last = tag.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def insert(self, sql: str, key: str, *args: object) -> int:
        """Insert one row; its `key` column (RETURNING)."""
        value: int = await self.conn.fetchval(self._sql(f"{sql} RETURNING {key}"), *args)
        return value


ENDED_PER_NOTIFY = 100  # ended sessions per NOTIFY payload (under PostgreSQL's 8000 bytes)


def encode_wakeups(origin: str, wakeups: Wakeups) -> list[str]:
    """The NOTIFY payloads of a commit (none when it concerns nobody): the origin process
    and whom the commit concerns, in one payload unless that passes MAX_NOTIFY."""
    if not (wakeups.everyone or wakeups.users or wakeups.chats or wakeups.ended):
        return []
    ended = sorted(wakeups.ended)
    payload = orjson.dumps({"o": origin, "e": wakeups.everyone, "u": sorted(wakeups.users),
                            "c": sorted(wakeups.chats), "s": ended}).decode()
    if len(payload) <= MAX_NOTIFY:
        return [payload]
    # Keep the shared NOTIFY queue light: the first payload wakes everyone. Ended sessions
    # (64 hex characters each) go ENDED_PER_NOTIFY to a payload: more than that in one
    # commit (disconnects, --max-sessions evictions) is rare.
    return [orjson.dumps({"o": origin, "e": i == 0, "u": [], "c": [],
                          "s": ended[i:i + ENDED_PER_NOTIFY]}).decode()
            for i in range(0, max(len(ended), 1), ENDED_PER_NOTIFY)]


def decode_wakeups(payload: str) -> tuple[str, Wakeups]:
    """Inverse of `encode_wakeups`."""
    body = orjson.loads(payload)
    w = Wakeups()
    w.everyone = bool(body["e"])
    w.users = {int(u) for u in body["u"]}
    w.chats = set(body["c"])
    w.ended = {str(s) for s in body.get("s", ())}
    return str(body["o"]), w


class MigrationConn:
    """The migration runner's view of a connection: one transaction under the advisory
    lock, so processes starting together migrate one after the other."""

    dialect = "postgres"

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self.conn.transaction():
            await self.conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATE_LOCK)
            yield

    async def execute(self, sql: str) -> None:
        await self.conn.execute(sql)

    async def fetch_value(self, sql: str) -> Any:
        return await self.conn.fetchval(sql)


async def keep_analyzed(store: Store) -> None:
    """Where autovacuum is off, keep the planner's statistics of the growing tables fresh
    as autoanalyze would (ANALYZE past 10% changed rows): with none, PostgreSQL takes a
    100,000-message chat for an empty one and sorts all of it to show a page."""
    try:
        on = await store.read(lambda tx: tx.db.fetchone("SHOW autovacuum"))
    except StoreError:
        on = None
    if on is not None and on[0] == "on":
        return
    while True:
        await asyncio.sleep(ANALYZE_EVERY)
        try:
            stale = await store.read(lambda tx: tx.db.fetchall(
                "SELECT relname FROM pg_stat_user_tables WHERE relname = ANY(?::text[])"
                " AND n_mod_since_analyze > 50 + 0.1 * n_live_tup", list(ANALYZED)))
            for (table,) in stale:
                if table in ANALYZED:  # a fixed list: never a name from elsewhere
                    await store.read(partial(analyze, table))
        except StoreError:
            continue
        except Exception:
            log.exception("refreshing planner statistics failed")
