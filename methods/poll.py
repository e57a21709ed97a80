"""The long-poll use case: a user's events after a cursor, waiting for news if there is none."""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from methods.context import Caller, Services
from store.models import EventRecord
from store.sql import SqlTx


@dataclass(frozen=True)
class PollAnswer:
    """Events after the cursor (serialized), the new cursor, and whether more are waiting."""

    events: list[EventRecord]
    cursor: int
    more: bool


def clamp_timeout(services: Services, requested: float | None) -> float:
    """The wait a poll gets: the default, cut to the maximum, jittered ±10% when long."""
    limits = services.limits
    wanted = limits.poll_timeout if requested is None else requested
    timeout = max(0.0, min(wanted, limits.poll_timeout_max))
    if timeout >= 5:
        # Jitter so polls parked together do not all come back at once.
        timeout = min(limits.poll_timeout_max, timeout * random.uniform(0.9, 1.1))
    return timeout


async def poll(services: Services, caller: Caller, cursor: int | None, timeout: float,
               limit: int, stop: asyncio.Event | None = None) -> PollAnswer:
    """Acknowledge up to `cursor`, then return the events after it (waiting up to `timeout`)."""
    store = services.store
    ack: asyncio.Task[None] | None = None
    if cursor is None:
        user = await store.read(lambda tx: tx.get_user(caller.user_id))
        assert user is not None
        cursor = user.read_seq
    else:
        acked = cursor

        async def move_marker(tx: SqlTx) -> None:
            await tx.set_read_marker(caller.user_id, min(acked, await tx.last_seq()))

        # Committed while we read or wait; the answer goes out only once it is durable.
        ack = asyncio.create_task(store.write(move_marker))
    try:
        return await _wait_for_events(services, caller, cursor, timeout, limit, stop)
    finally:
        if ack is not None:
            await ack


async def _wait_for_events(services: Services, caller: Caller, after: int, timeout: float,
                           limit: int, stop: asyncio.Event | None) -> PollAnswer:
    store = services.store
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    limits = services.limits
    waiter = store.notifier.register(caller.user_id, caller.token_hash,
                                     limits.polls_per_session, limits.polls_per_user)
    try:
        while True:
            # Arm before reading, so a commit between the read and the wait still wakes us.
            woken = waiter.arm()
            events = await store.read(
                lambda tx: tx.read_events(caller.user_id, after, limit + 1, services.now()))
            if events:
                more = len(events) > limit
                events = events[:limit]
                return PollAnswer(events, events[-1].seq, more)
            remaining = deadline - loop.time()
            if remaining <= 0 or waiter.evicted or (stop is not None and stop.is_set()):
                return PollAnswer([], after, False)
            await asyncio.wait([woken], timeout=remaining)
    finally:
        store.notifier.discard(caller.user_id, waiter)
