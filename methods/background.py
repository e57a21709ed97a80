"""Background work started with the app: scheduled messages and expiry purges."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time

from methods.context import Services
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
        except Exception:
            log.exception("scheduler pass failed")
            nxt = None
        # Wake at the due time, on a new schedule, or within a second (other processes'
        # schedules on a shared database are noticed that way).
        delay = 1.0 if nxt is None else min(1.0, max(0.0, nxt - services.now()))
        services.schedule_changed.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(services.schedule_changed.wait(), timeout=delay)


async def purge_once(services: Services) -> int:
    """Delete expired messages, their events and unreachable files; files removed."""
    now = services.now()
    ttl = services.limits.message_ttl

    async def purge(tx: SqlTx) -> list[str]:
        await tx.prune_login_failures(now - services.limits.login_window)
        await tx.delete_idle_sessions(now - services.limits.session_idle)
        return await tx.purge_expired(now, now - ttl)

    paths = await services.store.write(purge)
    # Sessions may have just expired: forget cached ones, and touches nobody needs.
    if services.session_cache is not None:
        services.session_cache.prune()
    stale = now - services.limits.session_idle
    services.session_touches = {k: t for k, t in services.session_touches.items() if t > stale}
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
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
            file_id = name[1:-5] if name.startswith(".") and name.endswith(".part") else name
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
        except Exception:
            log.exception("purge failed")
        await asyncio.sleep(interval)
