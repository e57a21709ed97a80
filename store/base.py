"""The store's interface, and the notifier that wakes parked polls after a commit."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Protocol, TypeVar

from store.sql import SqlTx, Wakeups

T = TypeVar("T")
TxFn = Callable[[SqlTx], Awaitable[T]]


class Waiter:
    """One parked poll: a future re-armed after every wake, and whether it was pushed out."""

    __slots__ = ("future", "session", "evicted")

    def __init__(self, session: str) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.session = session
        self.evicted = False

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

    def __init__(self) -> None:
        # dicts keep insertion order: the first waiter of a user is their oldest poll.
        self._waiters: dict[int, dict[Waiter, None]] = {}

    def register(self, user_id: int, session: str = "", per_session: int = 0,
                 per_user: int = 0) -> Waiter:
        """Park a poll; past a cap, the oldest poll of the session or user is pushed out."""
        waiters = self._waiters.setdefault(user_id, {})
        if per_session:
            same = [w for w in waiters if w.session == session]
            if len(same) >= per_session:
                self._evict(user_id, same[0])
        if per_user and len(waiters) >= per_user:
            self._evict(user_id, next(iter(waiters)))
        waiter = Waiter(session)
        waiters[waiter] = None
        return waiter

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

    def waiting(self, user_id: int) -> int:
        """Parked polls of a user."""
        return len(self._waiters.get(user_id, ()))

    def __bool__(self) -> bool:
        """Whether any poll is parked."""
        return bool(self._waiters)

    def wake(self, wakeups: Wakeups) -> None:
        """Wake the waiters of every user a committed write concerns."""
        if wakeups.everyone:
            targets = list(self._waiters.values())
        else:
            targets = [self._waiters[u] for u in wakeups.users if u in self._waiters]
        for waiters in targets:
            for waiter in waiters:
                waiter.wake()

    def wake_everyone(self) -> None:
        """Wake every parked poll (shutdown)."""
        w = Wakeups()
        w.everyone = True
        self.wake(w)


class Store(Protocol):
    """Persistence and the event stream; one implementation per database."""

    notifier: Notifier

    async def open(self) -> None:
        """Connect and migrate."""
        ...

    async def close(self) -> None:
        """Finish queued writes, then close."""
        ...

    async def write(self, fn: TxFn[T]) -> T:
        """Run `fn` in a write transaction; returns once it is durably committed."""
        ...

    async def read(self, fn: TxFn[T]) -> T:
        """Run `fn` against the latest committed state."""
        ...

    def write_soon(self, fn: TxFn[None]) -> None:
        """Queue a write whose outcome nobody waits for (e.g. moving a read marker)."""
        ...
