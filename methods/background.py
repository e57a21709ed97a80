"""Background work started with the app: scheduled messages and expiry purges."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os

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
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    if paths:
        log.info("removed %d unreachable files", len(paths))
    return len(paths)


async def run_purger(services: Services) -> None:
    """Purge periodically: often enough that expired data does not linger."""
    interval = min(60.0, max(0.5, services.limits.message_ttl / 4))
    while True:
        try:
            await purge_once(services)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("purge failed")
        await asyncio.sleep(interval)
