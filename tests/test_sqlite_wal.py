"""The SQLite WAL stays bounded under a steady stream of commits."""
from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from store.sql import SqlTx
from store.sqlite import SqliteStore


async def _steady_writes(store: SqliteStore, seconds: float) -> int:
    """Commit small transactions back to back, with a reader alongside; the largest WAL."""
    async def create(tx: SqlTx) -> None:
        await tx.db.execute("CREATE TABLE IF NOT EXISTS pad (n INTEGER, body TEXT)")

    await store.write(create)
    wal = Path(str(store.path) + "-wal")
    largest = 0
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        async def add(tx: SqlTx, n: int = n) -> None:
            await tx.db.execute("INSERT INTO pad (n, body) VALUES (?, ?)", n, "x" * 3000)

        await asyncio.gather(*(store.write(add) for _ in range(4)))
        await store.read(lambda tx: tx.db.fetchone("SELECT COUNT(*) FROM pad"))
        n += 1
        if wal.exists():
            largest = max(largest, os.path.getsize(wal))
    return largest


async def test_the_wal_is_truncated_when_checkpoints_cannot_keep_up(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "messenger.db", checkpoint_interval=0.05)
    store.wal_limit = 1 * 2 ** 20
    await store.open()
    try:
        largest = await _steady_writes(store, 4.0)
    finally:
        await store.close()
    # Without truncation the WAL grows by every commit's pages for the whole run (tens of
    # MB here); with it, it stays within a few times the limit.
    assert largest < 6 * 2 ** 20, largest
