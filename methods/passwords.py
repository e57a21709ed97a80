"""Password hashing (scrypt in worker threads) behind a gate that bounds and shares it fairly."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import secrets
import time
from collections import deque
from typing import Any, Callable, TypeVar

T = TypeVar("T")

SCRYPT_R, SCRYPT_P = 8, 1  # N is 2 ** --password-cost; every hash records its own
HASH_SLOTS = 2  # scrypt runs at once per process (at --password-cost 14: 16 MiB, ~50 ms each)


FRESH_GAP = 10.0  # seconds without a hash after which an address's next one goes first


class HashGate:
    """At most `slots` password hashes at once, shared fairly.

    Registrations (new accounts' hashes) may take all slots but one, so a login (checking
    an existing account's password) never queues behind a flood of them; waiting logins
    go first. Within each kind, an address that asks after not hashing for `FRESH_GAP`
    seconds (a person logging in now and then) is served first, in arrival order; the
    others, addresses that keep the gate busy, are served the one whose last hash started
    longest ago first. Many addresses flooding the gate one hash at a time therefore do
    not delay an occasional login by more than about one hash; to be served first they
    must pause `FRESH_GAP` seconds between hashes, which keeps their demand small.
    """

    def __init__(self, slots: int = HASH_SLOTS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = max(2, slots)
        self.caps = (self.slots, self.slots - 1)  # [logins, registrations]
        self.running = [0, 0]
        self.clock = clock
        # Per kind: fresh addresses' waiters in arrival order; the others' per address.
        self._fresh: tuple[deque[tuple[str, asyncio.Future[None]]], ...] = (deque(), deque())
        self._queues: tuple[dict[str, deque[asyncio.Future[None]]], ...] = ({}, {})
        self._started = 0  # hashes started so far (a clock that only counts hashes)
        self._last: dict[str, int] = {}  # address -> when its last hash started
        self._ended: dict[str, float] = {}  # address -> when its last hash ended
        self._busy: dict[str, int] = {}  # address -> its hashes running or waiting

    def waiting(self) -> int:
        """Hashes queued behind the busy slots."""
        return (sum(len(q) for queues in self._queues for q in queues.values())
                + sum(len(f) for f in self._fresh))

    async def run(self, address: str, registration: bool, fn: Callable[..., T],
                  *args: Any) -> T:
        """`fn(*args)` in a worker thread once a slot is free.

        The slot stays taken until the thread is done, even if the caller is cancelled
        (a client that hangs up cannot make more hashes run at once than there are slots).
        """
        kind = int(registration)
        fresh = (address not in self._busy
                 and self.clock() - self._ended.get(address, -FRESH_GAP) >= FRESH_GAP)
        self._busy[address] = self._busy.get(address, 0) + 1
        try:
            await self._acquire(address, kind, fresh)
        except BaseException:
            self._idle(address)
            raise
        try:
            work = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except BaseException:
            self._idle(address)
            self._release(kind)
            raise

        def done(_: object) -> None:
            self._idle(address)
            self._release(kind)

        work.add_done_callback(done)
        return await asyncio.shield(work)

    def _idle(self, address: str) -> None:
        """One hash of `address` ended (or never started)."""
        left = self._busy.get(address, 1) - 1
        if left > 0:
            self._busy[address] = left
        else:
            self._busy.pop(address, None)
        now = self.clock()
        self._ended[address] = now
        if len(self._ended) > 10_000:  # forgotten is the same as fresh
            self._ended = {a: t for a, t in self._ended.items() if now - t < FRESH_GAP}

    def _may_start(self, kind: int) -> bool:
        return sum(self.running) < self.slots and self.running[kind] < self.caps[kind]

    async def _acquire(self, address: str, kind: int, fresh: bool) -> None:
        if self._may_start(kind) and not self._queues[kind] and not self._fresh[kind]:
            self.running[kind] += 1
            self._note(address)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queues = self._queues[kind]
        entry = (address, fut)
        if fresh:
            self._fresh[kind].append(entry)
        else:
            queues.setdefault(address, deque()).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(kind)  # the slot was handed over just as we were cancelled
            elif fresh:
                with contextlib.suppress(ValueError):
                    self._fresh[kind].remove(entry)
            else:
                self._forget(queues, address, fut)
            raise

    @staticmethod
    def _forget(queues: dict[str, deque[asyncio.Future[None]]], address: str,
                fut: asyncio.Future[None]) -> None:
        queue = queues.get(address)
        if queue is not None:
            with contextlib.suppress(ValueError):
                queue.remove(fut)
            if not queue:
                del queues[address]

    def _note(self, address: str) -> None:
        """`address` starts a hash now."""
        self._started += 1
        self._last[address] = self._started
        if len(self._last) > 10_000:  # remember only the recent ones (and the waiting)
            recent = self._started - 5_000
            waiting = set(self._queues[0]) | set(self._queues[1])
            self._last = {a: t for a, t in self._last.items() if t > recent or a in waiting}

    def _next(self, kind: int) -> tuple[str, asyncio.Future[None]] | None:
        """The next waiter of `kind`: fresh ones first, then the longest unserved address."""
        fresh = self._fresh[kind]
        if fresh:
            return fresh.popleft()
        queues = self._queues[kind]
        if not queues:
            return None
        address = min(queues, key=lambda a: self._last.get(a, 0))
        queue = queues[address]
        fut = queue.popleft()
        if not queue:
            del queues[address]
        return address, fut

    def _release(self, kind: int) -> None:
        """Free a slot of `kind` and start whoever may go next (logins first)."""
        self.running[kind] -= 1
        for next_kind in range(len(self._queues)):
            while self._may_start(next_kind):
                waiter = self._next(next_kind)
                if waiter is None:
                    break
                address, fut = waiter
                if not fut.done():
                    self.running[next_kind] += 1
                    self._note(address)
                    fut.set_result(None)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(errors="surrogatepass"), salt=salt, n=n, r=r, p=p,
                          dklen=32, maxmem=128 * n * r * p + 1024 * 1024)


async def hash_password(gate: HashGate, address: str, password: str, cost: int) -> str:
    """A salted scrypt hash (N = 2 ** cost) for a new account, computed in a worker thread."""
    salt = secrets.token_bytes(16)
    n = 2 ** cost
    digest = await gate.run(address, True, _scrypt, password, salt, n, SCRYPT_R, SCRYPT_P)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


async def verify_password(gate: HashGate, address: str, password: str, stored: str) -> bool:
    """Whether `password` matches a stored hash (constant-time compare)."""
    try:
        _, n, r, p, salt, digest = stored.split("$")
        expected = base64.b64decode(digest)
        raw_salt = base64.b64decode(salt)
        params = int(n), int(r), int(p)
    except ValueError:
        return False
    actual = await gate.run(address, False, _scrypt, password, raw_salt, *params)
    return hmac.compare_digest(expected, actual)
