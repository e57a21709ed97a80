"""Password hashing (scrypt in worker threads) behind a gate that bounds and shares it fairly."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import secrets
from collections import deque
from typing import Any, Callable, TypeVar

T = TypeVar("T")

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1
HASH_SLOTS = 2  # scrypt runs at once per process (each uses 16 MiB and a core for ~50 ms)


class HashGate:
    """At most `slots` password hashes at once, shared fairly.

    Registrations (new accounts' hashes) may take all slots but one, so a login (checking
    an existing account's password) never queues behind a flood of them; waiting logins
    go first, and within each kind client addresses take turns, so one address flooding
    logins delays another address's login by about one hash.
    """

    def __init__(self, slots: int = HASH_SLOTS) -> None:
        self.slots = max(2, slots)
        self.caps = (self.slots, self.slots - 1)  # [logins, registrations]
        self.running = [0, 0]
        # Per kind: address -> its waiters, addresses in turn order.
        self._queues: tuple[dict[str, deque[asyncio.Future[None]]], ...] = ({}, {})

    def waiting(self) -> int:
        """Hashes queued behind the busy slots."""
        return sum(len(q) for queues in self._queues for q in queues.values())

    async def run(self, address: str, registration: bool, fn: Callable[..., T],
                  *args: Any) -> T:
        """`fn(*args)` in a worker thread once a slot is free.

        The slot stays taken until the thread is done, even if the caller is cancelled
        (a client that hangs up cannot make more hashes run at once than there are slots).
        """
        kind = int(registration)
        await self._acquire(address, kind)
        try:
            work = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        except BaseException:
            self._release(kind)
            raise
        work.add_done_callback(lambda _: self._release(kind))
        return await asyncio.shield(work)

    def _may_start(self, kind: int) -> bool:
        return sum(self.running) < self.slots and self.running[kind] < self.caps[kind]

    async def _acquire(self, address: str, kind: int) -> None:
        if self._may_start(kind) and not self._queues[kind]:
            self.running[kind] += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queues = self._queues[kind]
        queues.setdefault(address, deque()).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(kind)  # the slot was handed over just as we were cancelled
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

    def _release(self, kind: int) -> None:
        """Free a slot of `kind` and start whoever may go next (logins first, in turn)."""
        self.running[kind] -= 1
        for next_kind, queues in enumerate(self._queues):
            while queues and self._may_start(next_kind):
                address = next(iter(queues))
                queue = queues.pop(address)
                fut = queue.popleft()
                if queue:
                    queues[address] = queue  # to the back of the turn order
                if not fut.done():
                    self.running[next_kind] += 1
                    fut.set_result(None)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode(errors="surrogatepass"), salt=salt, n=n, r=r, p=p,
                          dklen=32, maxmem=128 * n * r * p + 1024 * 1024)


async def hash_password(gate: HashGate, address: str, password: str) -> str:
    """A salted scrypt hash for a new account, computed in a worker thread."""
    salt = secrets.token_bytes(16)
    digest = await gate.run(address, True, _scrypt, password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


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
