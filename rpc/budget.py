"""Process-wide budgets: request body bytes held in memory, file descriptors for
connections, and malloc returning big buffers to the system."""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import resource
from typing import Any

log = logging.getLogger(__name__)


class BodyBudget:
    """Bytes of request bodies held in memory at once, for the whole process.

    A request reserves its body's size before reading it and gives it back when answered;
    past the budget it waits (first fit, so small requests pass big waiters), at most
    `timeout` seconds.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def try_acquire(self, size: int) -> bool:
        """Reserve `size` bytes if they fit now (nobody waiting first); else False."""
        size = min(size, self.capacity)
        if self._waiters or self.used + size > self.capacity:
            return False
        self.used += size
        return True

    async def acquire(self, size: int, timeout: float) -> bool:
        """Reserve `size` bytes (at most the capacity); False if not granted in time."""
        size = min(size, self.capacity)
        if self.used + size <= self.capacity:
            self.used += size
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except BaseException as exc:
            if fut.done() and not fut.cancelled():
                self.release(size)  # granted just as we gave up
            else:
                fut.cancel()
                if entry in self._waiters:
                    self._waiters.remove(entry)
            if isinstance(exc, asyncio.TimeoutError):
                return False
            raise

    def release(self, size: int) -> None:
        """Give back a reservation; wake waiters that fit now."""
        self.used -= min(size, self.capacity)
        still: list[tuple[int, asyncio.Future[None]]] = []
        for size_, fut in self._waiters:
            if fut.done():
                continue
            if self.used + size_ <= self.capacity:
                self.used += size_
                fut.set_result(None)
            else:
                still.append((size_, fut))
        self._waiters = still


def fit_connections_to_descriptors(max_connections: int, reserve: int = 256) -> int:
    """Raise the descriptor limit as far as allowed; the connection cap that fits under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_connections + reserve
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < wanted:
        fitted = max(1, soft - reserve)
        log.warning("only %d file descriptors: --max-connections lowered from %d to %d",
                    soft, max_connections, fitted)
        return fitted
    return max_connections


_libc: Any = None


def _c_library() -> Any:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            _libc = False
    return _libc


def tune_malloc() -> None:
    """Big buffers (answers, bodies) from their own mappings, so freeing them returns the
    memory to the system (glibc's adaptive threshold would keep them in the heap)."""
    libc = _c_library()
    if libc and hasattr(libc, "mallopt"):
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD: fixed, no longer adaptive


def release_memory() -> None:
    """Give freed heap memory back to the system (glibc's malloc_trim)."""
    libc = _c_library()
    if libc and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
