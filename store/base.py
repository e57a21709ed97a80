"""The store's interface, and the notifier that wakes parked polls after a commit."""
from __future__ import annotations

import asyncio
import errno
import logging
import os
from pathlib import Path
from typing import Awaitable, Callable, Protocol, TypeVar

from store.models import EventRecord, Session, UserId
from store.sql import SendKey, SqlTx, Wakeups

T = TypeVar("T")
TxFn = Callable[[SqlTx], Awaitable[T]]

health_log = logging.getLogger("store.health")

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
FREE_ENOUGH = 1024 * 1024  # bytes free on a full filesystem before /health calls it ok again


class StoreError(Exception):
    """The store could not do its work for reasons outside the request (rpc maps it)."""


class StoreUnavailable(StoreError):
    """The database cannot be reached for now (restart, failover, network); nothing was written."""

    def __init__(self, reason: str = "database unreachable", retry_after: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class DiskFull(StoreError):
    """Out of disk space; nothing was written."""


def is_no_space(exc: BaseException) -> bool:
    """Whether an OS error means the filesystem (or the user's quota) is full."""
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


class Health:
    """What the process knows about its database and disk; logs each change of state once.

    Failures are noted where they happen (a backend's connection, an upload's write) and
    cleared by the next success, so an outage costs two log lines, not one per request.
    """

    def __init__(self) -> None:
        self.database_ok = True
        self._full: dict[str, Path | None] = {}  # what ran out of space -> its directory

    def database_down(self, reason: str) -> StoreUnavailable:
        """Note the database unreachable; the error to raise."""
        if self.database_ok:
            self.database_ok = False
            health_log.error("database unreachable (%s); answering 503 until it is back",
                             reason[:200])
        return StoreUnavailable(reason)

    def database_up(self) -> None:
        """Note the database reachable again."""
        if not self.database_ok:
            self.database_ok = True
            health_log.warning("database reachable again")

    def disk_full(self, where: str, directory: Path | None = None) -> DiskFull:
        """Note a write refused for lack of space; the error to raise."""
        if where not in self._full:
            self._full[where] = directory
            health_log.error("out of disk space writing the %s; answering 507 until space "
                             "is free", where)
        return DiskFull(f"out of disk space ({where})")

    def disk_ok(self, where: str) -> None:
        """Note a write that succeeded: space is available again."""
        if where in self._full:
            del self._full[where]
            health_log.warning("disk space available again for the %s", where)

    @property
    def disk(self) -> str:
        """`ok`, or `full` while the last write of something failed for lack of space."""
        for where, directory in list(self._full.items()):
            if directory is not None and _free_bytes(directory) >= FREE_ENOUGH:
                self.disk_ok(where)
        return "full" if self._full else "ok"


def _free_bytes(directory: Path) -> int:
    try:
        st = os.statvfs(directory)
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


class Waiter:
    """One parked poll: a future re-armed after every wake, and whether it was pushed out."""

    __slots__ = ("future", "session", "evicted", "ended")

    def __init__(self, session: str) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.session = session
        self.evicted = False
        self.ended = False  # its session was ended (disconnect, eviction): answer 401

    def arm(self) -> asyncio.Future[None]:
        """A pending future for the next wake (registering happens before reading)."""
        if self.future.done():
            self.future = asyncio.get_running_loop().create_future()
        return self.future

    def wake(self) -> None:
        """Tell the poll to look again."""
        if not self.future.done():
            self.future.set_result(None)


class Notifier:
    """Per-user parked polls; carries no payloads, only "look again"."""

    # Sessions ended lately, remembered for a while so that a poll which authenticated just
    # before its session ended, and parks just after, still learns about it.
    ENDED_MEMORY = 120.0
    ENDED_MAX = 4096

    def __init__(self) -> None:
        # dicts keep insertion order: the first waiter of a user is their oldest poll.
        self._waiters: dict[int, dict[Waiter, None]] = {}
        # The same waiters by session, so that ending one costs its own polls, not everyone's.
        self._sessions: dict[str, dict[Waiter, None]] = {}
        self._ended: dict[str, float] = {}  # token hash -> loop time it ended
        self.stopping = False  # the server is shutting down: parked polls answer now

    def register(self, user_id: int, session: str = "", per_session: int = 0,
                 per_user: int = 0) -> Waiter:
        """Park a poll; past a cap, the oldest poll of the session or user is pushed out."""
        waiters = self._waiters.setdefault(user_id, {})
        if per_session:
            same = self._sessions.get(session, {})
            if len(same) >= per_session:
                self._evict(user_id, next(iter(same)))
        if per_user and len(waiters) >= per_user:
            self._evict(user_id, next(iter(waiters)))
        waiters = self._waiters.setdefault(user_id, {})  # eviction may have emptied it
        waiter = Waiter(session)
        waiter.ended = bool(session) and session in self._ended
        waiters[waiter] = None
        self._sessions.setdefault(session, {})[waiter] = None
        return waiter

    def end_session(self, session: str) -> None:
        """A session ended: its parked polls answer at once (401), and so does any poll of it
        that parks in the next minutes."""
        now = asyncio.get_running_loop().time()
        self._ended.pop(session, None)
        self._ended[session] = now  # insertion order is age order: prune from the front
        while self._ended and (len(self._ended) > self.ENDED_MAX
                               or next(iter(self._ended.values())) < now - self.ENDED_MEMORY):
            del self._ended[next(iter(self._ended))]
        for waiter in self._sessions.get(session, ()):
            waiter.ended = True
            waiter.wake()

    def _evict(self, user_id: int, waiter: Waiter) -> None:
        waiter.evicted = True
        waiter.wake()
        self.discard(user_id, waiter)

    def discard(self, user_id: int, waiter: Waiter) -> None:
        """Forget a waiter (its poll answered, timed out or was cancelled)."""
        waiters = self._waiters.get(user_id)
        if waiters is not None:
            waiters.pop(waiter, None)
            if not waiters:
                del self._waiters[user_id]
        same = self._sessions.get(waiter.session)
        if same is not None:
            same.pop(waiter, None)
            if not same:
                del self._sessions[waiter.session]

    def recently_ended(self, session: str) -> bool:
        """Whether a session (token hash) ended lately, here or (told by NOTIFY) elsewhere."""
        return session in self._ended

    def waiting(self, user_id: int) -> int:
        """Parked polls of a user."""
        return len(self._waiters.get(user_id, ()))

    def __bool__(self) -> bool:
        """Whether any poll is parked."""
        return bool(self._waiters)

    def wake(self, wakeups: Wakeups) -> None:
        """Wake the waiters of every user a committed write concerns."""
        for session in wakeups.ended:
            self.end_session(session)
        if wakeups.everyone:
            targets = list(self._waiters.values())
        else:
            targets = [self._waiters[u] for u in wakeups.users if u in self._waiters]
        for waiters in targets:
            for waiter in waiters:
                waiter.wake()

    def wake_everyone(self) -> None:
        """Wake every parked poll (shutdown)."""
        self.stopping = True
        w = Wakeups()
        w.everyone = True
        self.wake(w)


class Store(Protocol):
    """Persistence and the event stream; one implementation per database."""

    notifier: Notifier
    health: Health

    async def open(self) -> None:
        """Connect and migrate."""
        ...

    async def check(self) -> None:
        """Probe the database now (for /health); the outcome is in `health`."""
        ...

    async def close(self) -> None:
        """Finish queued writes, then close."""
        ...

    async def write(self, fn: TxFn[T], prefetch: SendKey | None = None) -> T:
        """Run `fn` in a write transaction; returns once it is durably committed.
        `prefetch`: `fn` is a send starting with `SqlTx.prefetch_send` of this key."""
        ...

    async def read(self, fn: TxFn[T]) -> T:
        """Run `fn` against the latest committed state."""
        ...

    def write_soon(self, fn: TxFn[None]) -> None:
        """Queue a write whose outcome nobody waits for (e.g. moving a read marker)."""
        ...

    async def move_read_marker(self, user_id: UserId, seq: int) -> None:
        """Move the user's read marker forward to `seq` (at most the newest event); returns
        once durable (many polls' markers share one write)."""
        ...

    async def get_session(self, token_hash: str) -> Session | None:
        """The session a token hash names; concurrent lookups may share one query."""
        ...

    async def write_aside(self, fn: TxFn[T]) -> T:
        """Run `fn`, one statement (such as a chunk of a file's bytes), outside the ordered
        write queue where the backend can: big writes that nothing reads in order."""
        ...

    async def issued_seq(self, at_least: int = 0) -> int:
        """The highest seq handed out, or a lower bound of it that is at least `at_least`
        when the process knows one without asking the database."""
        ...

    async def catch_up_search(self) -> None:
        """Make every message committed so far findable by `SqlTx.search_messages` (where
        the search index is written apart from the messages)."""
        ...

    async def read_events(self, user_id: UserId, after: int, limit: int,
                          now: float) -> list[EventRecord]:
        """`SqlTx.read_events` on the latest committed state; concurrent polls' reads may
        be answered together (one query for many woken polls)."""
        ...
