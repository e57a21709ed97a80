"""The real app served in the test's own event loop, with a clock the test moves.

Rule tests (lifetimes, quota windows, bans, schedules, idle sessions) use it instead of a
server subprocess and real sleeps: everything else is as real as in `ServerProcess` -- the
app of `rpc.app.create_app`, a real SQLite file (or PostgreSQL), a real TCP socket, and the
`tests.support.Api` client over HTTP. Only time is injected: `Services.clock` is a
`FakeClock`, which runs with the wall clock plus an offset that `advance()` grows.
"""
from __future__ import annotations

import time
from pathlib import Path

from aiohttp import web

from methods.background import purge_once
from methods.context import Services
from methods.messages import fire_due
from rpc.app import SERVICES, create_app
from rpc.settings import parse_settings
from tests.support import TEST_DEFAULTS


class FakeClock:
    """Wall-clock time plus an offset the test moves forward (never back)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`."""
        assert seconds >= 0, "time does not run backwards"
        self.offset += seconds


class InProcessServer:
    """The app on 127.0.0.1:<free port>, with the flags `messenger-server` would get."""

    def __init__(self, data_dir: Path, *args: str, clock: FakeClock | None = None) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.clock = clock or FakeClock()
        self.port = 0
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def services(self) -> Services:
        """The running app's services (store, limits, clock)."""
        assert self.runner is not None, "not running"
        return self.runner.app[SERVICES]

    def now(self) -> float:
        """The server's current time."""
        return self.clock()

    async def start(self) -> "InProcessServer":
        """Open the store and listen (on the same port again after a restart)."""
        settings = parse_settings(["--port", str(self.port), "--data-dir", str(self.data_dir),
                                   *TEST_DEFAULTS, *self.args])
        runner = web.AppRunner(create_app(settings, clock=self.clock), shutdown_timeout=5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self.runner = runner
        self.port = runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Graceful shutdown: parked polls answer, background tasks end, the store closes."""
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()

    async def restart(self) -> None:
        """Stop, then start on the same port, data and clock."""
        await self.stop()
        await self.start()

    async def advance(self, seconds: float) -> None:
        """Move the clock; the scheduler wakes at once to send what is due by then.

        Expired rows are not purged here (reads must hide them by themselves): `purge()`.
        """
        self.clock.advance(seconds)
        self.services.schedule_changed.set()

    async def advance_to(self, when: float) -> None:
        """Move the clock to `when` (seconds since the epoch), if that is ahead."""
        await self.advance(max(0.0, when - self.clock()))

    async def purge(self) -> int:
        """One pass of the background purger (it would run every min(60, ttl/4) s)."""
        return await purge_once(self.services)

    async def fire_due(self) -> int:
        """One pass of the scheduler; scheduled messages handled."""
        return await fire_due(self.services)
