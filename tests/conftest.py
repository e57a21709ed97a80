"""Fixtures: real server processes and real HTTP sessions."""
from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator, Callable, Iterator

import aiohttp
import pytest

from tests.support import Api, ServerProcess


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers with extra flags (e.g. short TTLs); all are stopped afterwards."""
    started: list[ServerProcess] = []

    def start(*args: str, data_dir: Path | None = None) -> ServerProcess:
        proc = ServerProcess(data_dir or tmp_path / f"data{len(started)}", *args)
        started.append(proc.start())
        return proc

    yield start
    for proc in started:
        if proc.proc is not None:
            proc.stop()


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """A fresh server with default settings."""
    return server_factory()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """An HTTP client session."""
    # No keep-alive: tests restart servers, and a pooled connection would then be stale.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


@pytest.fixture
def api(http: aiohttp.ClientSession, server: ServerProcess) -> Callable[[], Api]:
    """Make logged-out test clients of the default server."""
    return lambda: Api(http, server.url)
