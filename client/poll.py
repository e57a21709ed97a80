"""The poll loop: long-polls forever as a cancellable task, resuming from its saved cursor."""
from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

from .errors import MessengerError, RpcError, ServerUnavailable
from .models import Event, PollResult

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], Awaitable[None] | None]
"""Called for every event, in order; may be a plain function or a coroutine function."""

MIN_BACKOFF = 0.5
MAX_BACKOFF = 15.0


class Poller(Protocol):
    """What a PollLoop polls: a `MessengerClient`, or anything with its `poll`."""

    async def poll(self, cursor: int | None = None, timeout: float | None = None,
                   limit: int | None = None) -> PollResult: ...


def is_transient(exc: BaseException) -> bool:
    """True when asking again later may succeed: server unreachable or an HTTP 5xx."""
    if isinstance(exc, ServerUnavailable):
        return True
    return isinstance(exc, RpcError) and exc.is_transient


class PollLoop:
    """Long-polls a client's event stream; backs off and reconnects on transient failures.

    The cursor is saved after every batch the consumer has fully handled, so a restarted
    loop resumes where the previous one stopped. Auth and other client errors, and
    cancellation, propagate to the caller; a handler that raises is logged and skipped.
    """

    def __init__(
        self,
        client: Poller,
        handler: EventHandler | None = None,
        *,
        cursor: int | None = None,
        timeout: float | None = None,
        limit: int | None = None,
        min_backoff: float = MIN_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        on_connection_lost: Callable[[MessengerError], None] | None = None,
        on_connection_restored: Callable[[], None] | None = None,
        on_cursor: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.handler = handler
        self.cursor = cursor
        self.timeout = timeout
        self.limit = limit
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.on_connection_lost = on_connection_lost
        self.on_connection_restored = on_connection_restored
        self.on_cursor = on_cursor
        self.connected = True
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    def next_delay(self) -> float:
        """The wait before the next retry: doubling from min_backoff, capped, ±10% jitter."""
        base = min(self.max_backoff, self.min_backoff * 2.0 ** max(0, self.failures - 1))
        return min(self.max_backoff, base * random.uniform(0.9, 1.1))

    async def batches(self) -> AsyncIterator[list[Event]]:
        """Yield every non-empty batch of events; the cursor advances once a batch is handled."""
        while True:
            # After a failure, probe with a poll that answers at once, so a recovered server
            # is noticed (and reported) now rather than when a long wait ends.
            timeout = self.timeout if self.connected else 0
            try:
                result = await self.client.poll(self.cursor, timeout, self.limit)
            except MessengerError as exc:
                if not is_transient(exc):
                    raise
                self.failures += 1
                if self.connected:
                    self.connected = False
                    log.info("poll failed, reconnecting: %s", exc)
                    if self.on_connection_lost is not None:
                        self.on_connection_lost(exc)
                await asyncio.sleep(self.next_delay())
                continue
            self.failures = 0
            if not self.connected:
                self.connected = True
                if self.on_connection_restored is not None:
                    self.on_connection_restored()
            if result["events"]:
                yield result["events"]
            if result["cursor"] != self.cursor:
                self.cursor = result["cursor"]
                if self.on_cursor is not None:
                    self.on_cursor(self.cursor)

    async def run(self) -> None:
        """Poll and call the handler for every event until cancelled or a fatal error."""
        async for batch in self.batches():
            for event in batch:
                if self.handler is not None:
                    await self._handle(self.handler, event)

    @staticmethod
    async def _handle(handler: EventHandler, event: Event) -> None:
        """Call the handler; one that raises is logged and the loop goes on (mautrix style)."""
        try:
            outcome = handler(event)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            log.exception("event handler failed on a %s event (seq %s); going on",
                          event.get("type"), event.get("seq"))

    def start(self) -> asyncio.Task[None]:
        """Run the loop as a task (once); returns it."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="messenger-poll-loop")
        return self._task

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The running task, if started."""
        return self._task

    async def stop(self) -> None:
        """Cancel the task and wait for it to end (its fatal error, if any, is re-raised)."""
        task = self._task
        if task is None:
            return
        if not task.done():
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
