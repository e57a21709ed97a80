"""Fixtures: real server processes and real HTTP sessions."""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
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
# "bench": the benchmark runs, heavy but without time bounds, not two at once; "browser":
# a Chromium (a module fixture, a second of CPU to start) per group instead of per worker).
GROUPS = {"node": {"test_openrpc_tools.py": {"*"}}, "bench": {"test_bench.py": {"*"}},
          "browser": {"test_browser.py": {"*"}},
          # One private PostgreSQL cluster (initdb, a module fixture) for these, not one each.
          "faults": {"test_faults.py": {
              "test_postgres_restart_and_terminated_connections",
              "test_dropped_listener_reconnects_and_wakes_every_parked_poll",
              "test_full_disk_answers_507_and_recovers",
              "test_postgres_unreachable_at_start_is_one_line_and_an_exit"}}}
# Groups dealt out, test by test, into this many groups of their own (their names numbered).
SPLIT = {"browser": 2}


def _listed(item: pytest.Item, files: dict[str, set[str]]) -> bool:
    names = files.get(item.path.name, set())
    return "*" in names or getattr(item, "originalname", item.name) in names


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marks added below (xdist_group also when xdist is not loaded)."""
    config.addinivalue_line("markers", "timing: has time or memory bounds; run it alone")
    config.addinivalue_line("markers", "xdist_group(name): run on one xdist worker")
    if hasattr(config.option, "loadgroup"):  # an xdist worker
        config.pluginmanager.register(_GroupIds(), "messenger-group-ids")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With `-m timing` (scripts/test's second round) only TIMING's files are imported: the
    others have nothing to select, and importing them all took seconds of that round."""
    if (config.getoption("markexpr", "") == "timing" and collection_path.suffix == ".py"
            and collection_path.name.startswith("test_")
            and collection_path.name not in TIMING):
        return True
    return None


# First: the marks must be there when xdist (and _GroupIds below) turn them into the
# test ids that --dist loadgroup schedules by.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark TIMING tests `timing` and GROUPS' tests with their xdist group."""
    dealt = dict.fromkeys(SPLIT, 0)
    for item in items:
        if _listed(item, TIMING):
            item.add_marker(pytest.mark.timing)
        for group, files in GROUPS.items():
            if _listed(item, files):
                name = group
                if group in SPLIT:
                    name = f"{group}{dealt[group] % SPLIT[group]}"
                    dealt[group] += 1
                item.add_marker(pytest.mark.xdist_group(name))


class _GroupIds:
    """pytest-xdist 3.8 puts a test's group into its id (`…@group`, what --dist loadgroup
    schedules by) through `item._nodeid`, which pytest 9 no longer reads (it has `_id`): the
    groups were silently ignored. This does the same through `_id`, after xdist's hook."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config,
                                      items: list[pytest.Item]) -> None:
        """Give each grouped test the id xdist's scheduler expects."""
        if not config.getvalue("loadgroup"):
            return
        try:
            from _pytest.nodeid import NodeId  # pytest 9's structured test ids
        except ImportError:  # an older pytest: xdist's own hook did it
            return
        for item in items:
            names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                            for m in item.iter_markers("xdist_group")})
            if names and "@" not in item.nodeid and hasattr(item, "_id"):
                item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")


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


class _Databases:
    """Empty PostgreSQL databases for this test process's tests, made once and reused.

    CREATE DATABASE copies a template through the WAL and DROP DATABASE checkpoints: with
    hundreds of PostgreSQL tests that was a quarter of the suite's CPU. A database a test is
    done with is emptied instead (its connections ended, its public schema dropped and made
    again: a few ms) and serves the next test; the process's databases are dropped when its
    run ends.
    """

    def __init__(self) -> None:
        self.free: list[str] = []
        self.made: list[str] = []
        self.reachable = False

    def take(self) -> str:
        """An empty database's name."""
        if self.free:
            return self.free.pop()
        name = f"messenger_t_{uuid.uuid4().hex[:12]}"
        _in_thread(_pg_admin(f'CREATE DATABASE "{name}"'))
        # A test database need not survive a crash of the machine's PostgreSQL: commits
        # do not wait for the WAL flush (the server's own durability tests use a private
        # cluster with the defaults, tests/test_faults.py).
        _in_thread(_pg_admin(f'ALTER DATABASE "{name}" SET synchronous_commit = off'))
        self.made.append(name)
        return name

    def give_back(self, name: str) -> None:
        """Empty a database for the next test (or drop it if that fails)."""
        try:
            _in_thread(_pg_empty(name))
        except Exception:  # anything left odd: a new one next time
            self.made.remove(name)
            _in_thread(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        else:
            self.free.append(name)

    def drop_all(self) -> None:
        """Drop every database this process made."""
        for name in self.made:
            with contextlib.suppress(Exception):
                _in_thread(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.made.clear()
        self.free.clear()


async def _pg_empty(name: str) -> None:
    """End every other connection to a database and drop everything in it."""
    await _pg_admin("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    f" WHERE datname = '{name}' AND pid <> pg_backend_pid()")
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    conn = await asyncpg.connect(f"{base}/{name}")
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()


_DATABASES = _Databases()


def pytest_sessionfinish() -> None:
    """No test database outlives the run."""
    _DATABASES.drop_all()


@pytest.fixture(params=["sqlite", "postgres"])
def store_flags(request: pytest.FixtureRequest) -> tuple[str, ...]:
    """Server flags for each store: none (SQLite), then PostgreSQL on a `pg_url` database."""
    if request.param == "sqlite":
        return ()
    return ("--store", "postgres", "--database-url", request.getfixturevalue("pg_url"))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """An empty PostgreSQL database for one test (emptied afterwards for the next).

    Skipped when no server is reachable, unless MESSENGER_REQUIRE_PG=1 (CI sets it), which
    turns a missing PostgreSQL into a failure instead.
    """
    if not _DATABASES.reachable:
        if not _in_thread(_pg_available()):
            if os.environ.get("MESSENGER_REQUIRE_PG") == "1":
                pytest.fail(f"PostgreSQL required but not reachable at {PG_ADMIN_URL}")
            pytest.skip(f"no PostgreSQL at {PG_ADMIN_URL}")
        _DATABASES.reachable = True
    name = _DATABASES.take()
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    yield f"{base}/{name}"
    _DATABASES.give_back(name)
