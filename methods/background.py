"""Background work started with the app: scheduled messages and expiry purges."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from methods.auth import prune_logins
from methods.context import Services
from methods.files import file_id_of_name
from store.base import StoreError
from methods.messages import fire_due
from store.sql import SqlTx

log = logging.getLogger(__name__)


async def run_scheduler(services: Services) -> None:
    """Fire due scheduled messages; sleep until the next one or until a schedule changes."""
    while True:
        try:
            while await fire_due(services) > 0:
                pass
            nxt = await services.store.read(lambda tx: tx.next_scheduled_time())
        except asyncio.CancelledError:
            raise
        except StoreError:  # database away or disk full: logged once by the store's health
            nxt = None
        except Exception:
            log.exception("scheduler pass failed")
            nxt = None
        # Wake at the due time, on a new schedule, or within a second (other processes'
        # schedules on a shared database are noticed that way).
        delay = 1.0 if nxt is None else min(1.0, max(0.0, nxt - services.now()))
        services.schedule_changed.clear()
        # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that arrives just after the
        # event was set, and shutdown then waits for this loop forever.
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(delay):
                await services.schedule_changed.wait()


PURGE_CHUNK = 200  # rows of each kind per purge transaction (a few ms on the event loop)
UNLINK_CHUNK = 200  # files removed per worker-thread call


def unlink_all(paths: list[str]) -> None:
    """Remove files (in a worker thread); ones already gone are fine."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


async def purge_once(services: Services) -> int:
    """Delete expired messages, their events and unreachable files; files removed."""
    now = services.now()
    ttl = services.limits.message_ttl

    async def purge(tx: SqlTx) -> tuple[list[str], bool]:
        await prune_logins(tx, services, now)
        await tx.delete_idle_sessions(now - services.limits.session_idle)
        return await tx.purge_chunk(now, now - ttl, PURGE_CHUNK)

    async def purge_more(tx: SqlTx) -> tuple[list[str], bool]:
        return await tx.purge_chunk(now, now - ttl, PURGE_CHUNK)

    paths, more = await services.store.write(purge)
    while more:  # bounded rounds, each its own transaction: other requests run in between
        await asyncio.sleep(0)
        chunk, more = await services.store.write(purge_more)
        paths += chunk
    # Sessions may have just expired: forget cached ones, and touches nobody needs.
    if services.session_cache is not None:
        services.session_cache.prune()
    stale = now - services.limits.session_idle
    services.session_touches = {k: t for k, t in services.session_touches.items() if t > stale}
    # Off the loop, in bounded chunks: thousands of unlinks take seconds on a slow disk.
    for start in range(0, len(paths), UNLINK_CHUNK):
        await asyncio.to_thread(unlink_all, paths[start:start + UNLINK_CHUNK])
    if paths:
        log.info("removed %d unreachable files", len(paths))
    return len(paths)


ORPHAN_AGE = 3600.0


async def sweep_orphan_files(services: Services) -> int:
    """Remove files under files/ the database does not know (a crash mid-upload or mid-purge).

    Only files older than an hour: another process sharing the directory may be uploading.
    """
    known = await services.store.read(lambda tx: tx.file_ids())
    cutoff = time.time() - ORPHAN_AGE
    removed = 0
    with os.scandir(services.files_dir) as entries:
        for entry in entries:
            name = entry.name
            file_id = file_id_of_name(name)
            if file_id in known or not entry.is_file() or entry.stat().st_mtime > cutoff:
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed += 1
    if removed:
        log.info("removed %d orphaned files from %s", removed, services.files_dir)
    return removed


async def run_purger(services: Services) -> None:
    """Purge periodically: often enough that expired data does not linger."""
    interval = min(60.0, max(0.5, services.limits.message_ttl / 4))
    try:
        await sweep_orphan_files(services)
    except OSError:
        log.exception("orphan sweep failed")
    while True:
        try:
            await purge_once(services)
        except asyncio.CancelledError:
            raise
        except StoreError:  # logged once by the store's health; the next pass tries again
            pass
        except Exception:
            log.exception("purge failed")
        await asyncio.sleep(interval)
