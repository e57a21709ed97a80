"""The long-poll use case: a user's events after a cursor, waiting for news if there is none.

One implementation behind both GET /poll (rpc/app.py) and the `events.poll` method.
"""
from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Any, TypedDict

import orjson

import schemas
from methods import errors
from methods.base import Result, UserMethod
from methods.context import Caller, Request, Services
from store.base import StoreError
from store.models import EventRecord

# From the schema that validates both GET /poll's query and events.poll's params.
DEFAULT_LIMIT: int = schemas.defs()["$defs"]["poll_limit"]["default"]
STORE_RETRY = 1.0  # seconds a parked poll waits before reading again while the store is away


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
               limit: int, stop: asyncio.Event | None = None,
               budget: int | None = None) -> PollAnswer:
    """Acknowledge up to `cursor`, then return the events after it (waiting up to `timeout`);
    the answer fits `budget` bytes (--max-response unless less is left, as in a batch)."""
    store = services.store
    ack: asyncio.Task[None] | None = None
    if cursor is None:
        user = await store.read(lambda tx: tx.get_user(caller.user_id))
        assert user is not None
        cursor = user.read_seq
    else:
        # A cursor the server never issued would acknowledge events the client never got.
        issued = await store.issued_seq(at_least=cursor)
        if cursor > issued:
            raise errors.invalid_params(
                f"cursor {cursor} is beyond the newest event ({issued}); nothing was acknowledged",
                "/cursor")
        # Committed while we read or wait; the answer goes out only once it is durable.
        ack = asyncio.create_task(store.move_read_marker(caller.user_id, cursor))
    try:
        return await _wait_for_events(services, caller, cursor, timeout, limit, stop,
                                      services.limits.max_response if budget is None
                                      else min(budget, services.limits.max_response))
    finally:
        if ack is not None:
            # The database went away meanwhile: the marker moves with a later poll instead
            # (the events are simply delivered again), so the answer need not fail.
            with contextlib.suppress(StoreError):
                await ack


async def _wait_for_events(services: Services, caller: Caller, after: int, timeout: float,
                           limit: int, stop: asyncio.Event | None,
                           budget: int) -> PollAnswer:
    store = services.store
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    limits = services.limits
    waiter = store.notifier.register(caller.user_id, caller.token_hash,
                                     limits.polls_per_session, limits.polls_per_user)
    try:
        while True:
            if waiter.ended:  # session.disconnect (or an eviction) while we were parked
                raise errors.unauthorized("the session ended")
            # Arm before reading, so a commit between the read and the wait still wakes us.
            woken = waiter.arm()
            wait_at_most: float | None = None
            try:
                events = await store.read_events(caller.user_id, after, limit + 1, services.now())
            except StoreError:
                # The database is away: stay parked and look again soon (a reconnect of the
                # listener also wakes every poll); at the deadline the answer is empty.
                events, wait_at_most = [], STORE_RETRY
            if events:
                more = len(events) > limit
                events = events[:limit]
                fitting = within_budget(events, budget)
                return PollAnswer(fitting, fitting[-1].seq, more or len(fitting) < len(events))
            remaining = deadline - loop.time()
            if (remaining <= 0 or waiter.evicted or store.notifier.stopping
                    or (stop is not None and stop.is_set())):
                return PollAnswer([], after, False)
            await asyncio.wait([woken], timeout=remaining if wait_at_most is None
                               else min(remaining, wait_at_most))
    finally:
        store.notifier.discard(caller.user_id, waiter)


# Bytes an answer adds around each event ({"seq":N, ... },) and around the list itself.
EVENT_OVERHEAD = 32
ANSWER_OVERHEAD = 1024


def within_budget(events: list[EventRecord], budget: int) -> list[EventRecord]:
    """The longest prefix of `events` whose answer fits in `budget` bytes (at least one).

    `--max-response` bounds poll answers like /rpc answers: what does not fit is simply
    left for the next poll (`more` is true and the cursor stops before it).
    """
    used = ANSWER_OVERHEAD
    for count, event in enumerate(events):
        used += len(event.body) + EVENT_OVERHEAD
        if used > budget and count > 0:
            return events[:count]
    return events


class PollParams(TypedDict, total=False):
    """events.poll's params (and GET /poll's query, numbers parsed, after validation)."""

    cursor: int
    timeout: float
    limit: int


async def poll_params(services: Services, caller: Caller, params: PollParams,
                      stop: asyncio.Event | None = None,
                      budget: int | None = None) -> PollAnswer:
    """A poll from validated params (`events.poll`'s, or GET /poll's query as numbers)."""
    cursor = params.get("cursor")
    timeout = params.get("timeout")
    return await poll(services, caller, None if cursor is None else int(cursor),
                      clamp_timeout(services, None if timeout is None else float(timeout)),
                      int(params.get("limit", DEFAULT_LIMIT)), stop, budget)


def answer_view(answer: PollAnswer) -> dict[str, Any]:
    """A poll answer as JSON values (GET /poll writes the same shape from the stored bytes)."""
    return {"events": [{"seq": e.seq, **orjson.loads(e.body)} for e in answer.events],
            "cursor": answer.cursor, "more": answer.more}


class EventsPoll(UserMethod[PollParams]):
    """GET /poll as a JSON-RPC method: acknowledge up to the cursor, answer what follows."""

    name = "events.poll"

    async def call(self, services: Services, caller: Caller, params: PollParams,
                   request: Request) -> Result:
        return answer_view(await poll_params(services, caller, params,
                                             budget=request.response_budget))


METHODS = (EventsPoll,)
