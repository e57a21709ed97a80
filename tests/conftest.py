"""Fixtures: real server processes and real HTTP sessions."""
from __future__ import annotations

import asyncio
import concurrent.futures
import os
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Coroutine, Iterator, TypeVar

import aiohttp
import asyncpg
import pytest

from tests.inproc import InProcessServer
from tests.support import Api, ServerProcess

T = TypeVar("T")
InProcFactory = Callable[..., Awaitable[InProcessServer]]


# Tests with time or memory bounds (latency, loop stalls, RSS, thread order): marked
# `timing`. scripts/test runs everything else in parallel (pytest-xdist) first, then these
# alone, one at a time, so that no other test of the suite competes with them.
TIMING = {
    "test_accounts.py": {"test_a_login_stays_quick_during_a_registration_flood",
                         "test_hash_gate_keeps_a_slot_for_logins_and_lets_addresses_take_turns"},
    "test_core.py": {"test_parked_poll_wakes_quickly_on_send"},
    "test_faults.py": {"test_frozen_process_does_not_hold_the_others_writes"},
    "test_files.py": {"test_memory_stays_flat_while_uploads_stream"},
    "test_open_network.py": {"test_the_purge_never_stalls_the_loop",
                             "test_amplification_batches_keep_rss_and_latency_bounded",
                             "test_bodies_in_memory_are_bounded_in_total",
                             "test_big_answers_built_at_once_share_one_memory_budget",
                             "test_the_read_deadline_spares_a_request_being_handled",
                             "test_an_occasional_login_stays_fast_while_60_addresses_log_in",
                             "test_idle_keep_alive_connections_make_room_at_the_cap",
                             "test_answers_nobody_reads_are_aborted_and_their_memory_returned",
                             "test_connection_caps_refuse_at_once",
                             "test_connection_cap_fits_the_descriptor_limit"},
    "test_scaleout.py": {"test_message_through_one_process_wakes_polls_on_the_other"},
    "test_throttle.py": {"test_poll_wakeup_latency_during_a_login_flood"},
}


# xdist groups: the tests of a group run on one worker, one after another ("node": the
# module fixture that may run `npm ci` in tests/node must not run in two workers at once;
# "bench": the benchmark runs, heavy but without time bounds, not two at once).
GROUPS = {"node": {"test_openrpc_tools.py": {"*"}}, "bench": {"test_bench.py": {"*"}}}


def _listed(item: pytest.Item, files: dict[str, set[str]]) -> bool:
    names = files.get(item.path.name, set())
    return "*" in names or getattr(item, "originalname", item.name) in names


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marks added below (xdist_group also when xdist is not loaded)."""
    config.addinivalue_line("markers", "timing: has time or memory bounds; run it alone")
    config.addinivalue_line("markers", "xdist_group(name): run on one xdist worker")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark TIMING tests `timing` and GROUPS' tests with their xdist group."""
    for item in items:
        if _listed(item, TIMING):
            item.add_marker(pytest.mark.timing)
        for group, files in GROUPS.items():
            if _listed(item, files):
                item.add_marker(pytest.mark.xdist_group(group))


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
async def inproc_factory(tmp_path: Path) -> AsyncIterator[InProcFactory]:
    """Start in-process servers (the real app in this loop, a FakeClock); all stopped after."""
    started: list[InProcessServer] = []

    async def start(*args: str, data_dir: Path | None = None) -> InProcessServer:
        server = InProcessServer(data_dir or tmp_path / f"inproc{len(started)}", *args)
        started.append(server)
        return await server.start()

    yield start
    for server in started:
        await server.stop()


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
