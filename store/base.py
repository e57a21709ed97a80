"""The store's interface, and the notifier that wakes parked polls after a commit."""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, Protocol, TypeVar

from store.sql import SqlTx, Wakeups

T = TypeVar("T")
TxFn = Callable[[SqlTx], Awaitable[T]]


class Notifier:
    """Per-user sets of waiting futures; carries no payloads, only "look again"."""

    def __init__(self) -> None:
        self._waiters: dict[int, set[asyncio.Future[None]]] = {}

    def register(self, user_id: int) -> asyncio.Future[None]:
        """A future that completes at the next write concerning the user."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(user_id, set()).add(fut)
        return fut

    def discard(self, user_id: int, fut: asyncio.Future[None]) -> None:
        """Forget a waiter (its poll answered, timed out or was cancelled)."""
        waiters = self._waiters.get(user_id)
        if waiters is not None:
            waiters.discard(fut)
            if not waiters:
                del self._waiters[user_id]

    def waiting(self, user_id: int) -> int:
        """Parked polls of a user."""
        return len(self._waiters.get(user_id, ()))

    @property
    def total_waiting(self) -> int:
        """All parked polls."""
        return sum(len(w) for w in self._waiters.values())

    def wake(self, wakeups: Wakeups) -> None:
        """Wake the waiters of every user a committed write concerns."""
        if wakeups.everyone:
            targets = list(self._waiters.values())
        else:
            targets = [self._waiters[u] for u in wakeups.users if u in self._waiters]
        for waiters in targets:
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

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
