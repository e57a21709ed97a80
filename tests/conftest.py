"""Fixtures: real server processes and real HTTP sessions."""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Coroutine, Iterator, TypeVar

import aiohttp
import asyncpg
import pytest

from tests.support import Api, ServerProcess

T = TypeVar("T")


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


PG_ADMIN_URL = os.environ.get("MESSENGER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def _in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on its own loop (usable from sync fixtures)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _pg_available() -> bool:
    try:
        conn = await asyncpg.connect(PG_ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, asyncio.TimeoutError):
        return False
    await conn.close()
    return True


async def _pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test (dropped afterwards).

    Skipped when no server is reachable, unless MESSENGER_REQUIRE_PG=1 (CI sets it), which
    turns a missing PostgreSQL into a failure instead.
    """
    if not _in_thread(_pg_available()):
        if os.environ.get("MESSENGER_REQUIRE_PG") == "1":
            pytest.fail(f"PostgreSQL required but not reachable at {PG_ADMIN_URL}")
        pytest.skip(f"no PostgreSQL at {PG_ADMIN_URL}")
    name = f"messenger_t_{uuid.uuid4().hex[:12]}"
    _in_thread(_pg_admin(f'CREATE DATABASE "{name}"'))
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    yield f"{base}/{name}"
    _in_thread(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
